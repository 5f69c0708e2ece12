//! Labels of networks and volumes. berth keeps labels on instances only, but Compose marks
//! the networks and volumes it creates (`com.docker.compose.project`) and finds them by
//! them again, so the gateway keeps these in a small JSON file of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Network,
    Volume,
    /// The driver options a volume was created with, which Docker shows as its `Options`
    /// (Compose compares them with the file's `driver_opts`).
    VolumeOptions,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Book {
    #[serde(default)]
    networks: BTreeMap<String, Labels>,
    #[serde(default)]
    volumes: BTreeMap<String, Labels>,
    #[serde(default)]
    volume_options: BTreeMap<String, Labels>,
}

impl Book {
    fn of(&mut self, object: Object) -> &mut BTreeMap<String, Labels> {
        match object {
            Object::Network => &mut self.networks,
            Object::Volume => &mut self.volumes,
            Object::VolumeOptions => &mut self.volume_options,
        }
    }
}

pub struct LabelBook {
    path: PathBuf,
    book: Mutex<Book>,
}

impl LabelBook {
    /// Reads the file; a missing or unreadable one starts empty (labels are a convenience,
    /// never a reason to refuse service).
    pub fn open(path: PathBuf) -> Self {
        let book = std::fs::read(&path)
            .ok()
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default();
        LabelBook {
            path,
            book: Mutex::new(book),
        }
    }

    pub fn get(&self, object: Object, name: &str) -> Labels {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        book.of(object).get(name).cloned().unwrap_or_default()
    }

    /// Records the labels of a new object (none: forgets any an older one of the name had).
    pub fn set(&self, object: Object, name: &str, labels: Labels) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if labels.is_empty() {
            book.of(object).remove(name);
        } else {
            book.of(object).insert(name.to_string(), labels);
        }
        self.save(&book);
    }

    pub fn forget(&self, object: Object, name: &str) {
        self.set(object, name, Labels::new());
    }

    /// Written to a new file and renamed over the old one: a crash never leaves half a file.
    fn save(&self, book: &Book) {
        let temporary = self.path.with_extension("json.new");
        let result = serde_json::to_vec_pretty(book)
            .map_err(std::io::Error::other)
            .and_then(|data| std::fs::write(&temporary, data))
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), error = %e, "saving the labels of networks and volumes");
        }
    }
}
