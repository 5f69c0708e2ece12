//! Hostile image archives are refused and nothing is written outside the image store;
//! device nodes are skipped with a warning.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::common::{stderr, stdout, temp_dir, Daemon};

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str, u32, u32),
}

/// Writes a tar with names exactly as given (the tar crate's builder would refuse them).
fn raw_tar(path: &Path, entries: &[Entry<'_>]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match entry {
            Entry::File(name, data) => (name, tar::EntryType::Regular, data, None),
            Entry::Dir(name) => (name, tar::EntryType::Directory, b"", None),
            Entry::Symlink(name, target) => (name, tar::EntryType::Symlink, b"", Some(target)),
            Entry::Hardlink(name, target) => (name, tar::EntryType::Link, b"", Some(target)),
            Entry::CharDevice(name, major, minor) => {
                header.set_device_major(*major).unwrap();
                header.set_device_minor(*minor).unwrap();
                (name, tar::EntryType::Char, b"", None)
            }
        };
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.finish().unwrap();
}

fn assert_refused(d: &Daemon, archive: &Path, expected: &str) {
    let output = d.run(&["image", "import", archive.to_str().unwrap()]);
    assert!(
        !output.status.success(),
        "import of a hostile archive succeeded: {}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains(expected),
        "expected '{expected}' in: {}",
        stderr(&output)
    );
    assert_eq!(
        d.ok(&["image", "ls", "-q"]).trim(),
        "",
        "a refused archive left an image"
    );
    let tmp = std::fs::read_dir(d.state.join("images/tmp")).unwrap().count();
    assert_eq!(tmp, 0, "a refused archive left work files");
}

#[test]
fn path_traversal_and_absolute_paths_are_refused() {
    let d = Daemon::start();
    let dir = temp_dir("bt-evil");
    let outside = dir.join("escaped");
    let archive = dir.join("dotdot.tar");
    let climb = format!("{}{}", "../".repeat(12), outside.strip_prefix("/").unwrap().display());
    raw_tar(&archive, &[Entry::Dir("bin"), Entry::File(&climb, b"pwned")]);
    assert_refused(&d, &archive, "contains '..'");
    assert!(!outside.exists());

    let archive = dir.join("absolute.tar");
    raw_tar(&archive, &[Entry::File(outside.to_str().unwrap(), b"pwned")]);
    assert_refused(&d, &archive, "absolute path");
    assert!(!outside.exists());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn symlink_and_hardlink_escapes_are_refused() {
    let d = Daemon::start();
    let dir = temp_dir("bt-evil");
    let target = dir.join("target");
    std::fs::create_dir_all(&target).unwrap();

    // A symlink to a host directory, then a file written "through" it.
    let archive = dir.join("through-symlink.tar");
    raw_tar(
        &archive,
        &[
            Entry::Symlink("evil", target.to_str().unwrap()),
            Entry::File("evil/pwned", b"x"),
        ],
    );
    assert_refused(&d, &archive, "goes through the symlink");
    assert!(!target.join("pwned").exists());

    // A relative symlink that climbs out of the root.
    let archive = dir.join("climbing-symlink.tar");
    raw_tar(
        &archive,
        &[
            Entry::Dir("etc"),
            Entry::Symlink("etc/shadow", "../../../../etc/shadow"),
        ],
    );
    assert_refused(&d, &archive, "points outside the image root");

    // Hard links to files outside, directly or through a symlink.
    let archive = dir.join("hardlink.tar");
    raw_tar(&archive, &[Entry::Hardlink("passwd", "../../../../../../etc/passwd")]);
    assert_refused(&d, &archive, "..");
    let archive = dir.join("hardlink-via-symlink.tar");
    raw_tar(
        &archive,
        &[Entry::Symlink("s", "/etc"), Entry::Hardlink("passwd", "s/passwd")],
    );
    assert_refused(&d, &archive, "goes through the symlink");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn device_nodes_are_skipped_with_a_warning() {
    let d = Daemon::with_busybox();
    let dir = temp_dir("bt-dev");
    let archive = dir.join("with-device.tar");
    raw_tar(
        &archive,
        &[
            Entry::Dir("dev2"),
            Entry::CharDevice("dev2/sda", 8, 0),
            Entry::File("dev2/ok", b"fine"),
        ],
    );
    let output = d.run(&["image", "import", "--tag", "devices", archive.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("skipped device node 'dev2/sda'"),
        "{}",
        stderr(&output)
    );
    let layer_root = std::fs::read_dir(d.state.join("images/layers")).unwrap();
    let mut found_ok = false;
    for layer in layer_root.flatten() {
        assert!(!layer.path().join("dev2/sda").exists(), "device node was created");
        found_ok |= layer.path().join("dev2/ok").exists();
    }
    assert!(found_ok);
    std::fs::remove_dir_all(dir).ok();
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An OCI layout directory with one layer; `corrupt` makes a blob's content differ from
/// its digest.
fn oci_layout(dir: &Path, layer: &[u8], corrupt: bool) -> PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let layer_digest = sha256_hex(layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]}
    })
    .to_string();
    let config_digest = sha256_hex(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{layer_digest}"), "size": layer.len()}]
    })
    .to_string();
    let manifest_digest = sha256_hex(manifest.as_bytes());
    let mut stored_layer = layer.to_vec();
    if corrupt {
        stored_layer.extend_from_slice(b"tampered");
    }
    std::fs::write(blobs.join(&layer_digest), stored_layer).unwrap();
    std::fs::write(blobs.join(&config_digest), &config).unwrap();
    std::fs::write(blobs.join(&manifest_digest), &manifest).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "localhost/layout-test:v1"}}]
    });
    let mut file = std::fs::File::create(layout.join("index.json")).unwrap();
    file.write_all(index.to_string().as_bytes()).unwrap();
    layout
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let d = Daemon::start();
    let dir = temp_dir("bt-digest");
    let layer = std::fs::read(crate::common::busybox_tar()).unwrap();
    let layout = oci_layout(&dir, &layer, true);
    assert_refused(&d, &layout, "digest mismatch");

    // The same layout, intact, imports and runs under the name its index gives.
    std::fs::remove_dir_all(&layout).unwrap();
    let layout = oci_layout(&dir, &layer, false);
    d.ok(&["image", "import", layout.to_str().unwrap()]);
    assert!(d.ok(&["image", "ls"]).contains("localhost/layout-test:v1"));
    assert_eq!(
        d.ok(&["run", "--rm", "localhost/layout-test:v1", "echo", "layout ok"]),
        "layout ok\n"
    );
    std::fs::remove_dir_all(dir).ok();
}
