//! OCI documents from a registry or an archive: manifests, indexes and image configs parse
//! or fail with an error, never a panic; a parsed index yields a platform or an error.
#![no_main]

use berth_image::oci;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = oci::parse_manifest(data);
    if let Ok(index) = oci::parse_index(data) {
        let _ = oci::pick_platform(&index);
    }
    if let Ok(config) = oci::ImageConfigDocument::parse(data) {
        let _ = config.diff_ids();
        let _ = config.runtime_config();
    }
});
