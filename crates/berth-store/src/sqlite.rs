//! The embedded store: SQLite in WAL mode under the state directory. Writes are a few
//! hundred microseconds, so calls run inline under a mutex instead of on a thread pool.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use berth_model::image::ImageRecord;
use berth_model::network::Network;
use berth_model::volume::Volume;
use berth_model::Instance;
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;

use crate::{StateStore, StoreError, StoreResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    doc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id  TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS networks (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    doc  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

pub struct SqliteStore {
    path: String,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        // WAL keeps readers and the writer apart; NORMAL sync is durable across a daemon
        // crash (the case that matters here), fsyncing at checkpoints only.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            path: path.display().to_string(),
            conn: Mutex::new(conn),
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))?;
        f(&conn)
    }
}

fn decode<T: DeserializeOwned>(doc: &str) -> StoreResult<T> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

#[async_trait]
impl StateStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite {}", self.path)
    }

    async fn insert_instance(&self, instance: &Instance) -> StoreResult<()> {
        let doc = encode(instance)?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO instances (id, name, doc) VALUES (?1, ?2, ?3)",
                params![instance.id, instance.name, doc],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::NameTaken(instance.name.clone())
                } else {
                    e.into()
                }
            })?;
            Ok(())
        })
    }

    async fn update_instance(&self, instance: &Instance) -> StoreResult<()> {
        let doc = encode(instance)?;
        self.with_conn(|conn| {
            let changed = conn.execute(
                "UPDATE instances SET name = ?2, doc = ?3 WHERE id = ?1",
                params![instance.id, instance.name, doc],
            )?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    kind: "instance",
                    key: instance.id.clone(),
                });
            }
            Ok(())
        })
    }

    async fn get_instance(&self, id: &str) -> StoreResult<Instance> {
        self.with_conn(|conn| {
            let doc: Option<String> = conn
                .query_row("SELECT doc FROM instances WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            match doc {
                Some(doc) => decode(&doc),
                None => Err(StoreError::NotFound {
                    kind: "instance",
                    key: id.to_string(),
                }),
            }
        })
    }

    async fn find_instance(&self, key: &str) -> StoreResult<Instance> {
        self.with_conn(|conn| {
            let exact: Option<String> = conn
                .query_row("SELECT doc FROM instances WHERE id = ?1 OR name = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?;
            if let Some(doc) = exact {
                return decode(&doc);
            }
            let not_found = || StoreError::NotFound {
                kind: "instance",
                key: key.to_string(),
            };
            // Only hex prefixes can be id prefixes; this also keeps LIKE wildcards out.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(not_found());
            }
            let mut stmt = conn.prepare("SELECT doc FROM instances WHERE id LIKE ?1 || '%' LIMIT 2")?;
            let docs: Vec<String> = stmt
                .query_map([key.to_ascii_lowercase()], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            match docs.as_slice() {
                [doc] => decode(doc),
                [] => Err(not_found()),
                _ => Err(StoreError::Ambiguous(key.to_string())),
            }
        })
    }

    async fn list_instances(&self) -> StoreResult<Vec<Instance>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT doc FROM instances")?;
            let docs: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            let mut instances: Vec<Instance> = docs.iter().map(|d| decode(d)).collect::<Result<_, _>>()?;
            instances.sort_by_key(|i| std::cmp::Reverse(i.created_at));
            Ok(instances)
        })
    }

    async fn delete_instance(&self, id: &str) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.execute("DELETE FROM instances WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    async fn put_image(&self, image: &ImageRecord) -> StoreResult<()> {
        let doc = encode(image)?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO images (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                params![image.id, doc],
            )?;
            Ok(())
        })
    }

    async fn get_image(&self, id: &str) -> StoreResult<ImageRecord> {
        self.with_conn(|conn| {
            let doc: Option<String> = conn
                .query_row("SELECT doc FROM images WHERE id = ?1", [id], |row| row.get(0))
                .optional()?;
            match doc {
                Some(doc) => decode(&doc),
                None => Err(StoreError::NotFound {
                    kind: "image",
                    key: id.to_string(),
                }),
            }
        })
    }

    async fn list_images(&self) -> StoreResult<Vec<ImageRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT doc FROM images")?;
            let docs: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            let mut images: Vec<ImageRecord> = docs.iter().map(|d| decode(d)).collect::<Result<_, _>>()?;
            images.sort_by_key(|i| std::cmp::Reverse(i.created_at));
            Ok(images)
        })
    }

    async fn delete_image(&self, id: &str) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.execute("DELETE FROM images WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    async fn put_network(&self, network: &Network) -> StoreResult<()> {
        let doc = encode(network)?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO networks (name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                params![network.name, doc],
            )?;
            Ok(())
        })
    }

    async fn list_networks(&self) -> StoreResult<Vec<Network>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT doc FROM networks ORDER BY name")?;
            let docs: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            docs.iter().map(|d| decode(d)).collect()
        })
    }

    async fn delete_network(&self, name: &str) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.execute("DELETE FROM networks WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    async fn put_volume(&self, volume: &Volume) -> StoreResult<()> {
        let doc = encode(volume)?;
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO volumes (name, doc) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET doc = excluded.doc",
                params![volume.name, doc],
            )?;
            Ok(())
        })
    }

    async fn get_volume(&self, name: &str) -> StoreResult<Volume> {
        self.with_conn(|conn| {
            let doc: Option<String> = conn
                .query_row("SELECT doc FROM volumes WHERE name = ?1", [name], |row| row.get(0))
                .optional()?;
            match doc {
                Some(doc) => decode(&doc),
                None => Err(StoreError::NotFound {
                    kind: "volume",
                    key: name.to_string(),
                }),
            }
        })
    }

    async fn list_volumes(&self) -> StoreResult<Vec<Volume>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT doc FROM volumes ORDER BY name")?;
            let docs: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            docs.iter().map(|d| decode(d)).collect()
        })
    }

    async fn delete_volume(&self, name: &str) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.execute("DELETE FROM volumes WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        self.with_conn(|conn| {
            Ok(conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
                .optional()?)
        })
    }

    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}
