//! Importing every supported format, layers with whiteouts, image tags and removal.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::common::{busybox_tar, stderr, temp_dir, Daemon};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[test]
fn compressed_rootfs_tarballs_import() {
    let d = Daemon::start();
    let dir = temp_dir("bt-compress");
    let plain = std::fs::read(busybox_tar()).unwrap();
    let gz = dir.join("rootfs.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    encoder.write_all(&plain).unwrap();
    encoder.finish().unwrap();
    let zst = dir.join("rootfs.tar.zst");
    std::fs::write(&zst, zstd::encode_all(&plain[..], 3).unwrap()).unwrap();
    d.ok(&["image", "import", "--tag", "bb:gz", gz.to_str().unwrap()]);
    d.ok(&["image", "import", "--tag", "bb:zst", zst.to_str().unwrap()]);
    let images: serde_json::Value = serde_json::from_str(&d.ok(&["image", "ls", "--json"])).unwrap();
    let media: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["layers"][0]["media_type"].as_str().unwrap())
        .collect();
    assert!(
        media.iter().any(|m| m.ends_with("+gzip")) && media.iter().any(|m| m.ends_with("+zstd")),
        "{media:?}"
    );
    // Same content, so the same diff_id: the layer was unpacked once and is shared.
    assert_eq!(std::fs::read_dir(d.state.join("images/layers")).unwrap().count(), 1);
    assert_eq!(d.ok(&["run", "--rm", "bb:zst", "echo", "zstd ok"]), "zstd ok\n");
    std::fs::remove_dir_all(dir).ok();
}

/// A tar of the given (name, content) files; names ending in '/' are directories.
fn layer_tar(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, name, std::io::empty()).unwrap();
        } else {
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            builder.append_data(&mut header, name, content.as_bytes()).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

/// An OCI layout with several layers (gzip-compressed), tagged `name`.
fn layered_layout(dir: &Path, layers: &[Vec<u8>], name: &str) -> std::path::PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(layer).unwrap();
        let compressed = encoder.finish().unwrap();
        let digest = sha256_hex(&compressed);
        std::fs::write(blobs.join(&digest), &compressed).unwrap();
        descriptors.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{digest}"), "size": compressed.len()}));
    }
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo default-cmd"], "Env": ["FROM_IMAGE=yes", "PATH=/bin"], "WorkingDir": "/work"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}).to_string();
    let config_digest = sha256_hex(config.as_bytes());
    std::fs::write(blobs.join(&config_digest), &config).unwrap();
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": descriptors}).to_string();
    let manifest_digest = sha256_hex(manifest.as_bytes());
    std::fs::write(blobs.join(&manifest_digest), &manifest).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(layout.join("index.json"), serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{manifest_digest}"), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": name}}]}).to_string()).unwrap();
    layout
}

#[test]
fn layers_apply_whiteouts_and_opaque_dirs_and_config_is_honoured() {
    let d = Daemon::start();
    let dir = temp_dir("bt-layers");
    let base = std::fs::read(busybox_tar()).unwrap();
    let second = layer_tar(&[
        ("data/", ""),
        ("data/keep", "kept"),
        ("data/drop", "dropped"),
        ("cache/", ""),
        ("cache/old", "old"),
    ]);
    let third = layer_tar(&[
        ("data/.wh.drop", ""),
        ("cache/", ""),
        ("cache/.wh..wh..opq", ""),
        ("cache/new", "new"),
        ("work/", ""),
    ]);
    let layout = layered_layout(&dir, &[base, second, third], "example.com/layered:1");
    d.ok(&["image", "import", layout.to_str().unwrap()]);
    let out = d.ok(&[
        "run",
        "--rm",
        "example.com/layered:1",
        "ls /data; ls /cache; echo $FROM_IMAGE; pwd",
    ]);
    assert_eq!(out, "keep\nnew\nyes\n/work\n");
    // Cmd from the image when no command is given (Entrypoint + Cmd).
    assert_eq!(d.ok(&["run", "--rm", "example.com/layered:1"]), "default-cmd\n");
    // --entrypoint replaces the image's Entrypoint and drops its Cmd.
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/echo",
            "example.com/layered:1",
            "override"
        ]),
        "override\n"
    );
    // Writes go to the container's own layer, never to the shared image layers.
    d.ok(&["run", "--rm", "example.com/layered:1", "echo changed > /data/keep"]);
    assert_eq!(
        d.ok(&["run", "--rm", "example.com/layered:1", "cat /data/keep"]),
        "kept"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn podman(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(args)
        .output()
        .expect("podman (installed by scripts/install-deps.sh)")
}

#[test]
fn docker_save_and_oci_archives_from_podman_import() {
    let d = Daemon::start();
    let dir = temp_dir("bt-podman");
    let imported = podman(
        &dir,
        &["import", busybox_tar().to_str().unwrap(), "localhost/podbox:v2"],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    for (format, file) in [("docker-archive", "docker.tar"), ("oci-archive", "oci.tar")] {
        let path = dir.join(file);
        let saved = podman(
            &dir,
            &[
                "save",
                "--format",
                format,
                "-o",
                path.to_str().unwrap(),
                "localhost/podbox:v2",
            ],
        );
        assert!(saved.status.success(), "{}", String::from_utf8_lossy(&saved.stderr));
        let tag = format!("from-{format}:latest");
        d.ok(&["image", "import", "--tag", &tag, path.to_str().unwrap()]);
        assert_eq!(d.ok(&["run", "--rm", &tag, "echo", format]), format!("{format}\n"));
    }
    // docker save archives carry their own tags.
    let path = dir.join("docker.tar");
    let d2 = Daemon::start();
    d2.ok(&["image", "import", path.to_str().unwrap()]);
    assert!(
        d2.ok(&["image", "ls"]).contains("localhost/podbox:v2"),
        "{}",
        d2.ok(&["image", "ls"])
    );
    let _ = podman(&dir, &["rmi", "-a", "-f"]);
    let _ = Command::new("umount")
        .arg("-l")
        .arg(dir.join("root/overlay"))
        .stderr(std::process::Stdio::null())
        .status();
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tags_and_removal() {
    let d = Daemon::with_busybox();
    d.ok(&["image", "tag", "busybox", "registry.example:5000/tools/bb:1.0"]);
    let listing = d.ok(&["image", "ls"]);
    assert!(
        listing.contains("busybox:latest") && listing.contains("registry.example:5000/tools/bb:1.0"),
        "{listing}"
    );
    d.ok(&["create", "--name", "user", "busybox", "true"]);
    // Removing one of two tags only untags.
    assert!(d
        .ok(&["image", "rm", "registry.example:5000/tools/bb:1.0"])
        .contains("untagged"));
    // The last tag of an image an instance uses is refused.
    let refused = d.run(&["image", "rm", "busybox"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("used by instance user"),
        "{}",
        stderr(&refused)
    );
    d.ok(&["rm", "user"]);
    assert!(d.ok(&["image", "rm", "busybox"]).contains("deleted"));
    assert_eq!(d.ok(&["image", "ls", "-q"]).trim(), "");
    // Blobs and layers went with it.
    assert_eq!(std::fs::read_dir(d.state.join("images/layers")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(d.state.join("images/blobs/sha256")).unwrap().count(),
        0
    );
}
