//! `berth logs`: an instance's log as attach-stream frames. The rotated files are read
//! oldest first, then the current one; `--tail N` finds where the last N records start by
//! reading backwards from the end, so memory stays bounded whatever the log's size; `-f`
//! keeps following across rotations: the old file is read to its end, then the files
//! rotated since and the new one. A follower more than `max-file` rotations behind loses
//! what was deleted meanwhile, as with Docker.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_model::api::LogsParams;
use berth_model::stream::{encode_frame, FrameKind};
use berth_model::Instance;
use berth_shim::rotating::log_files_oldest_first;
use berth_shim::LogRecord;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::engine::Engine;

const BLOCK: usize = 64 * 1024;

/// A log record as a frame of the stream it came from; `None` for what is not a record.
fn log_frame(line: &[u8], timestamps: bool) -> Option<Vec<u8>> {
    let record: LogRecord = serde_json::from_slice(line).ok()?;
    let kind = if record.s == "stderr" {
        FrameKind::Stderr
    } else {
        FrameKind::Stdout
    };
    let text = if timestamps {
        format!(
            "{} {}",
            record.t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            record.d
        )
    } else {
        record.d
    };
    Some(encode_frame(kind, text.as_bytes()))
}

/// Where the last `tail` complete records of `files` (oldest first) begin: the index of
/// the file and the offset in it. Reads backwards in blocks, counting newlines only.
fn tail_start(files: &mut [File], tail: usize) -> std::io::Result<(usize, u64)> {
    // The newline that ends the record just before the last `tail` ones is the
    // (tail + 1)-th from the end; bytes after the last newline are an unfinished record.
    let mut newlines_wanted = tail.saturating_add(1);
    let mut block = vec![0u8; BLOCK];
    for index in (0..files.len()).rev() {
        let file = &mut files[index];
        let mut end = file.metadata()?.len();
        while end > 0 {
            let start = end.saturating_sub(BLOCK as u64);
            let length = (end - start) as usize;
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut block[..length])?;
            for (position, byte) in block[..length].iter().enumerate().rev() {
                if *byte == b'\n' {
                    newlines_wanted -= 1;
                    if newlines_wanted == 0 {
                        return Ok((index, start + position as u64 + 1));
                    }
                }
            }
            end = start;
        }
    }
    Ok((0, 0))
}

/// Opens the log's files as they are now, positioned where reading should start.
fn open_log(path: &Path, tail: Option<usize>) -> std::io::Result<Vec<File>> {
    let mut files: Vec<File> = log_files_oldest_first(path)
        .iter()
        .filter_map(|p| File::open(p).ok())
        .collect();
    let (first, offset) = match tail {
        Some(tail) => tail_start(&mut files, tail)?,
        None => (0, 0),
    };
    let mut files = files.split_off(first.min(files.len()));
    // The backwards scan moved every file's position: the first starts at `offset`, the
    // rest at their beginnings.
    for (index, file) in files.iter_mut().enumerate() {
        file.seek(SeekFrom::Start(if index == 0 { offset } else { 0 }))?;
    }
    Ok(files)
}

/// After the log's current file (inode `inode`) was rotated away: the files written since,
/// oldest first, and the current one. Rotation shifts files to higher numbers, so the newer
/// ones are those after `inode`'s; when it fell off the end, every file left is newer.
fn open_newer_than(path: &Path, inode: u64) -> (Vec<File>, Option<File>) {
    let mut names = log_files_oldest_first(path);
    names.pop();
    let mut rotated: Vec<File> = names.iter().filter_map(|p| File::open(p).ok()).collect();
    let position = rotated
        .iter()
        .position(|f| f.metadata().map(|m| m.ino()).ok() == Some(inode));
    let newer = match position {
        Some(position) => rotated.split_off(position + 1),
        None => rotated,
    };
    (newer, File::open(path).ok())
}

/// True once a new file took the place of `file` at `path` (the log was rotated).
async fn replaced(path: &Path, file: &tokio::fs::File) -> bool {
    match (tokio::fs::metadata(path).await, file.metadata().await) {
        (Ok(current), Ok(open)) => current.ino() != open.ino() || current.dev() != open.dev(),
        // Between a rotation's rename and the new file: it was replaced.
        (Err(_), Ok(_)) => true,
        _ => false,
    }
}

/// Streams the log at `path` of `instance` into `sender` as `params` ask.
pub async fn stream_log(
    engine: Arc<Engine>,
    instance: Instance,
    path: PathBuf,
    params: LogsParams,
    sender: mpsc::Sender<Bytes>,
) -> Option<()> {
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || open_log(&path, params.tail.map(|n| n as usize)))
            .await
            .ok()?
            .ok()?
    };
    // Without a current file (not started yet), only following has anything to wait for.
    let mut files: std::collections::VecDeque<tokio::fs::File> =
        opened.into_iter().map(tokio::fs::File::from_std).collect();
    let mut current = files.pop_back();
    let mut pending: Vec<u8> = Vec::new();
    let mut buffer = vec![0u8; BLOCK];
    loop {
        let mut progressed = false;
        // The older files first, then the current one, to their ends.
        let reading_older = !files.is_empty();
        let file = match files.front_mut() {
            Some(file) => Some(file),
            None => current.as_mut(),
        };
        if let Some(file) = file {
            loop {
                let n = file.read(&mut buffer).await.ok()?;
                if n == 0 {
                    break;
                }
                progressed = true;
                pending.extend_from_slice(&buffer[..n]);
                // The complete records of this read go out as one chunk of frames.
                let mut frames = Vec::new();
                let mut consumed = 0;
                while let Some(newline) = pending[consumed..].iter().position(|b| *b == b'\n') {
                    if let Some(frame) = log_frame(&pending[consumed..consumed + newline], params.timestamps) {
                        frames.extend_from_slice(&frame);
                    }
                    consumed += newline + 1;
                }
                pending.drain(..consumed);
                if !frames.is_empty() {
                    sender.send(Bytes::from(frames)).await.ok()?;
                }
            }
        }
        if reading_older {
            // Records are never split across files: what is left is no record.
            files.pop_front();
            pending.clear();
            continue;
        }
        if !params.follow {
            return Some(());
        }
        match current.take() {
            // Rotated away: it is read to its end (what was written before the rename), then
            // the file now at the path.
            Some(file) if replaced(&path, &file).await => {
                let inode = file.metadata().await.ok()?.ino();
                files.push_back(file);
                let path = path.clone();
                let (newer, now_current) = tokio::task::spawn_blocking(move || open_newer_than(&path, inode))
                    .await
                    .ok()?;
                files.extend(newer.into_iter().map(tokio::fs::File::from_std));
                current = now_current.map(tokio::fs::File::from_std);
                continue;
            }
            Some(file) => current = Some(file),
            None => {
                current = tokio::fs::File::open(&path).await.ok();
                if current.is_some() {
                    continue;
                }
            }
        }
        if !progressed {
            let active = engine
                .store
                .get_instance(&instance.id)
                .await
                .map(|i| i.state.is_active())
                .unwrap_or(false);
            if !active {
                return Some(());
            }
            if sender.is_closed() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_start_counts_complete_records_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        std::fs::write(berth_shim::rotating::rotated_path(&path, 1), "a\nb\n").unwrap();
        std::fs::write(&path, "c\nd\npartial").unwrap();
        let read_from = |tail| {
            let mut text = String::new();
            for mut file in open_log(&path, Some(tail)).unwrap() {
                file.read_to_string(&mut text).unwrap();
            }
            text
        };
        assert_eq!(read_from(1), "d\npartial");
        assert_eq!(read_from(2), "c\nd\npartial");
        assert_eq!(read_from(3), "b\nc\nd\npartial");
        assert_eq!(read_from(10), "a\nb\nc\nd\npartial");
        assert_eq!(read_from(0), "partial");
    }
}
