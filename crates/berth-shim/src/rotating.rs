//! A log file with a size cap, rotated as Docker's log drivers rotate theirs: `path` is
//! written, `path.1` is the newest rotated file and `path.{max_files - 1}` the oldest; what
//! falls off the end is deleted. Files are private (0600): they hold whatever the workload
//! printed, secrets included.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_model::log::{LogLimits, MAX_LOG_FILES};

/// `path.N`, the N-th newest rotated file of the log at `path`.
pub fn rotated_path(path: &Path, index: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Every file of the log at `path` that exists, oldest first, the current one last. Gaps
/// are skipped, not taken for the end: a rotation in progress leaves one for a moment.
pub fn log_files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..MAX_LOG_FILES)
        .map(|index| rotated_path(path, index))
        .filter(|rotated| rotated.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    files
}

pub struct RotatingFile {
    path: PathBuf,
    limits: LogLimits,
    file: BufWriter<File>,
    /// Bytes in the current file, buffered ones included.
    size: u64,
}

fn open_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    // A log made before logs were private keeps its old mode otherwise.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

impl RotatingFile {
    /// Opens (appends to) the log at `path`. Rotated files beyond `limits` (left by
    /// larger caps) are removed.
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<Self> {
        let file = open_private(path)?;
        let size = file.metadata()?.len();
        // Listing the directory once is cheaper than trying every possible name (one system
        // call each, on every start).
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        for entry in fs::read_dir(parent)?.flatten() {
            let entry_name = entry.file_name();
            let index = entry_name
                .to_str()
                .and_then(|n| n.strip_prefix(name.as_str()))
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(|index| index.parse::<u32>().ok());
            if index.is_some_and(|index| index >= limits.max_files.max(1) && index < MAX_LOG_FILES) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(RotatingFile {
            path: path.to_path_buf(),
            limits,
            file: BufWriter::new(file),
            size,
        })
    }

    /// Appends `record` whole; when it would not fit, the file is rotated first, so a
    /// record is never split across files. A file exceeds the cap only by a single record
    /// larger than the cap (never, with records of at most `MIN_LOG_FILE_BYTES`).
    pub fn write_record(&mut self, record: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.limits.max_size_bytes {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    /// Appends a byte stream (a console), cut at the cap.
    pub fn write_stream(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.limits.max_size_bytes {
                self.rotate()?;
            }
            let room = (self.limits.max_size_bytes - self.size).min(data.len() as u64) as usize;
            self.file.write_all(&data[..room])?;
            self.size += room as u64;
            data = &data[room..];
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Shifts `path.N` to `path.N+1` (dropping the oldest), `path` to `path.1`, and starts
    /// an empty `path`. Readers that hold the old file open keep reading it to its end.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let keep = self.limits.max_files.max(1);
        if keep == 1 {
            fs::remove_file(&self.path)?;
        } else {
            for index in (1..keep - 1).rev() {
                let older = rotated_path(&self.path, index);
                if older.exists() {
                    fs::rename(&older, rotated_path(&self.path, index + 1))?;
                }
            }
            fs::rename(&self.path, rotated_path(&self.path, 1))?;
        }
        self.file = BufWriter::new(open_private(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_size_bytes: u64, max_files: u32) -> LogLimits {
        LogLimits {
            max_size_bytes,
            max_files,
        }
    }

    #[test]
    fn rotates_records_within_the_caps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut log = RotatingFile::open(&path, limits(1000, 3)).unwrap();
        for n in 0..100 {
            log.write_record(format!("{n:099}\n").as_bytes()).unwrap();
        }
        log.flush().unwrap();
        let files = log_files_oldest_first(&path);
        assert_eq!(files.len(), 3);
        let mut text = String::new();
        for file in &files {
            let data = fs::read_to_string(file).unwrap();
            assert!(data.len() <= 1000, "{} has {} bytes", file.display(), data.len());
            text.push_str(&data);
        }
        // The newest records, in order, none split.
        let numbers: Vec<u32> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(numbers.last(), Some(&99));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn streams_are_cut_at_the_cap_and_one_file_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut log = RotatingFile::open(&path, limits(100, 1)).unwrap();
        log.write_stream(&[b'x'; 250]).unwrap();
        log.flush().unwrap();
        assert_eq!(log_files_oldest_first(&path), vec![path.clone()]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 50);
        // Smaller caps on reopening drop rotated files beyond them.
        drop(log);
        let mut log = RotatingFile::open(&path, limits(100, 4)).unwrap();
        log.write_stream(&[b'y'; 400]).unwrap();
        drop(log);
        assert_eq!(log_files_oldest_first(&path).len(), 4);
        RotatingFile::open(&path, limits(100, 2)).unwrap();
        assert_eq!(log_files_oldest_first(&path).len(), 2);
    }
}
