//! Image layers are hostile: whatever a (compressed) tar holds, unpacking writes only below
//! the layer's root. The root sits in a fresh directory of its own; after every input that
//! directory must hold nothing but the root.
#![no_main]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let jail = PathBuf::from(format!("/tmp/berth-fuzz-unpack-{}-{n}", std::process::id()));
    let root = jail.join("root");
    std::fs::create_dir_all(&root).expect("create fuzz root");
    // A bound like the daemon's [images] max_layer_size, small enough for a fuzzer.
    let _ = berth_image::unpack::unpack_layer(data, &root, 64 << 20);
    let outside: Vec<_> = std::fs::read_dir(&jail)
        .expect("read jail")
        .flatten()
        .map(|e| e.file_name())
        .filter(|name| name != "root")
        .collect();
    assert!(
        outside.is_empty(),
        "unpacking wrote outside the layer root: {outside:?}"
    );
    // Layers may hold read-only directories: make everything writable, then remove it.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(&jail)
        .status();
    std::fs::remove_dir_all(&jail).expect("remove fuzz root");
});
