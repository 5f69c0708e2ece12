//! Push to and pull from a real OCI Distribution registry (Debian's docker-registry on
//! 127.0.0.1, started here).

use crate::common::registry::Registry;
use crate::common::{stderr, Daemon};

#[test]
fn push_then_pull_round_trips_through_a_registry() {
    let registry = Registry::start();
    let reference = format!("127.0.0.1:{}/berth/busybox:test", registry.port);
    let d = Daemon::with_busybox();
    d.ok(&["image", "tag", "busybox", &reference]);
    let pushed = d.run(&["image", "push", "--insecure", &reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // A second daemon (another host, in effect) pulls and runs it.
    let other = Daemon::start();
    let pulled = other.run(&["image", "pull", "--insecure", &reference]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let original: serde_json::Value = serde_json::from_str(&d.ok(&["image", "inspect", "busybox"])).unwrap();
    let copy: serde_json::Value = serde_json::from_str(&other.ok(&["image", "inspect", &reference])).unwrap();
    assert_eq!(
        original["id"], copy["id"],
        "the pulled image has the same config digest"
    );
    assert_eq!(other.ok(&["run", "--rm", &reference, "echo", "pulled"]), "pulled\n");

    // Pulling again finds every blob present.
    let again = other.run(&["image", "pull", "--insecure", &reference]);
    assert!(again.status.success());
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));

    // Errors name the problem: unknown repository, unreachable registry.
    let missing = other.run(&[
        "image",
        "pull",
        "--insecure",
        &format!("127.0.0.1:{}/nope/none:1", registry.port),
    ]);
    assert!(!missing.status.success());
    let unreachable = other.run(&["image", "pull", "--insecure", "127.0.0.1:1/x/y:1"]);
    assert!(!unreachable.status.success());
    assert!(stderr(&unreachable).contains("127.0.0.1:1"), "{}", stderr(&unreachable));
}

/// A registry client for hand-made content: pushes blobs and manifests as given, so the
/// test controls exactly what a (hostile) registry serves.
mod push {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use sha2::{Digest, Sha256};

    pub fn digest(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    /// One HTTP/1.1 request; returns the status and the headers.
    fn request(port: u16, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, reply)
    }

    pub fn blob(port: u16, repository: &str, data: &[u8]) -> String {
        let (status, reply) = request(
            port,
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            "application/octet-stream",
            b"",
        );
        assert_eq!(status, 202, "{reply}");
        let location = reply
            .lines()
            .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
            .unwrap()
            .trim()
            .to_string();
        let path = location
            .split_once(&format!(":{port}"))
            .map(|(_, p)| p.to_string())
            .unwrap_or(location);
        let digest = digest(data);
        let separator = if path.contains('?') { '&' } else { '?' };
        let (status, reply) = request(
            port,
            "PUT",
            &format!("{path}{separator}digest={digest}"),
            "application/octet-stream",
            data,
        );
        assert_eq!(status, 201, "{reply}");
        digest
    }

    pub fn manifest(port: u16, repository: &str, tag: &str, manifest: &[u8]) {
        let (status, reply) = request(
            port,
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            "application/vnd.oci.image.manifest.v1+json",
            manifest,
        );
        assert_eq!(status, 201, "{reply}");
    }

    /// Pushes an image of one layer (as given) whose config lists `diff_id`; `config_padding`
    /// and `manifest_padding` bytes of annotation make the documents as large as wanted.
    pub fn image(
        port: u16,
        repository: &str,
        layer: &[u8],
        diff_id: &str,
        config_padding: usize,
        manifest_padding: usize,
    ) {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"], "Labels": {"padding": "x".repeat(config_padding)}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        })
        .to_string();
        let config_digest = blob(port, repository, config.as_bytes());
        let layer_digest = blob(port, repository, layer);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
            "annotations": {"padding": "x".repeat(manifest_padding)},
        })
        .to_string();
        self::manifest(port, repository, "1", manifest.as_bytes());
    }
}

/// A gzip'd tar of one file of `size` zero bytes, and the digest of the uncompressed tar.
fn zeros_layer(size: u64) -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    tar.append_data(&mut header, "zeros", std::io::Read::take(std::io::repeat(0), size))
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = push::digest(&tar);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &tar).unwrap();
    (gzip.finish().unwrap(), diff_id)
}

#[test]
fn oversized_manifests_configs_and_decompression_bombs_are_refused() {
    let registry = Registry::start();
    let port = registry.port;
    let d = Daemon::start_with_config("[images]\nmax_document_size = \"64k\"\nmax_layer_size = \"8m\"\n");
    let (small, small_diff_id) = zeros_layer(1 << 20);
    let (bomb, bomb_diff_id) = zeros_layer(64 << 20);
    assert!(bomb.len() < 1 << 20, "a small download: {} bytes", bomb.len());
    push::image(port, "hostile/manifest", &small, &small_diff_id, 0, 100 << 10);
    push::image(port, "hostile/config", &small, &small_diff_id, 100 << 10, 0);
    push::image(port, "hostile/bomb", &bomb, &bomb_diff_id, 0, 0);
    push::image(port, "fine/image", &small, &small_diff_id, 0, 0);

    let pull = |repository: &str| {
        d.run(&[
            "image",
            "pull",
            "--insecure",
            &format!("127.0.0.1:{port}/{repository}:1"),
        ])
    };
    let cases = [
        ("hostile/manifest", "the manifest of"),
        ("hostile/config", "the config of"),
        ("hostile/bomb", "a layer unpacks to more than 8MiB"),
    ];
    for (repository, expected) in cases {
        let refused = pull(repository);
        assert!(!refused.status.success(), "{repository} was pulled");
        let message = stderr(&refused);
        eprintln!("{repository}: {}", message.trim());
        assert!(message.contains(expected), "{repository}: {message}");
        assert!(
            message.contains("max_"),
            "{repository}: the error names the setting: {message}"
        );
    }
    // Nothing of them was kept: no image, no unpacked layer, no half-written file.
    assert_eq!(d.ok(&["image", "ls", "-q"]).trim(), "");
    let layers = std::fs::read_dir(d.state.join("images/layers")).unwrap().count();
    assert_eq!(layers, 0);
    let leftovers = std::fs::read_dir(d.state.join("images/tmp")).unwrap().count();
    assert_eq!(leftovers, 0);
    // The same bounds let a genuine image through.
    let fine = pull("fine/image");
    assert!(fine.status.success(), "{}", stderr(&fine));
}
