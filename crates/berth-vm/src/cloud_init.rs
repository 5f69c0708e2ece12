//! cloud-init's NoCloud seed for VMs that boot a distribution image: a small FAT disk
//! labelled `cidata` holding `meta-data` (instance id, hostname, SSH keys), `network-config`
//! (the instance's berth address, matched by MAC) and the user's `user-data`. It is made at
//! each start from the record, so a moved or restarted VM gets its current address.

use std::io::Write;
use std::path::Path;

use berth_model::instance::CloudInit;
use berth_model::network::InstanceAddress;

use crate::VmError;

/// The largest user-data accepted (cloud-init's own NoCloud limit is far above; a seed is
/// configuration, not payload).
pub const MAX_USER_DATA_BYTES: usize = 64 << 10;

/// The seed disk's size: FAT12 with room for the three files.
const SEED_BYTES: u64 = 2 << 20;

/// Checks what a user gives: `Err((field, message))` naming the flag and the fix.
pub fn validate(cloud_init: &CloudInit) -> Result<(), (&'static str, String)> {
    if let Some(user_data) = &cloud_init.user_data {
        if user_data.len() > MAX_USER_DATA_BYTES {
            return Err((
                "cloud_init",
                format!(
                    "--cloud-init: the user-data is {} bytes, at most {MAX_USER_DATA_BYTES}; fetch bigger payloads from inside the guest",
                    user_data.len()
                ),
            ));
        }
        if user_data.starts_with("#!") {
            // A script: cloud-init runs it as is.
        } else if user_data.starts_with("#cloud-config") {
            if let Err(e) = serde_yaml::from_str::<serde_yaml::Value>(user_data) {
                return Err((
                    "cloud_init",
                    format!("--cloud-init: the #cloud-config user-data is not YAML ({e}); fix the file"),
                ));
            }
        } else {
            return Err((
                "cloud_init",
                "--cloud-init: user-data must start with #cloud-config (YAML) or #! (a script), as cloud-init requires"
                    .to_string(),
            ));
        }
    }
    for key in &cloud_init.ssh_keys {
        let mut fields = key.split_whitespace();
        let kind = fields.next().unwrap_or("");
        let body = fields.next().unwrap_or("");
        let known = kind.starts_with("ssh-") || kind.starts_with("ecdsa-sha2-") || kind.starts_with("sk-");
        let base64 = !body.is_empty()
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
        if !known || !base64 || key.contains('\n') || key.len() > 16 << 10 {
            return Err((
                "ssh_key",
                format!(
                    "--ssh-key: '{}' is not an OpenSSH public key (TYPE BASE64 [COMMENT], as in ~/.ssh/id_ed25519.pub)",
                    crate::import::shown(key)
                ),
            ));
        }
    }
    Ok(())
}

/// A YAML string scalar: JSON's quoting is valid YAML and escapes everything.
fn quoted(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into())
}

fn meta_data(cloud_init: &CloudInit, instance_id: &str, hostname: &str) -> String {
    let mut text = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quoted(instance_id),
        quoted(hostname)
    );
    if !cloud_init.ssh_keys.is_empty() {
        text.push_str("public-keys:\n");
        for key in &cloud_init.ssh_keys {
            text.push_str(&format!("  - {}\n", quoted(key.trim())));
        }
    }
    text
}

/// Network config version 2: the berth address, its gateway as router and DNS server.
fn network_config(address: &InstanceAddress) -> String {
    format!(
        "version: 2\nethernets:\n  berth0:\n    match:\n      macaddress: {mac}\n    addresses:\n      - {ip}/{prefix}\n    routes:\n      - to: 0.0.0.0/0\n        via: {gateway}\n    nameservers:\n      addresses:\n        - {gateway}\n",
        mac = quoted(&address.mac.to_ascii_lowercase()),
        ip = address.address,
        prefix = address.prefix,
        gateway = address.gateway,
    )
}

/// Writes the seed disk at `path` (replacing an older one).
pub fn write_seed(
    path: &Path,
    cloud_init: &CloudInit,
    instance_id: &str,
    hostname: &str,
    address: Option<&InstanceAddress>,
) -> Result<(), VmError> {
    let failed = |e: std::io::Error| VmError::Setup(format!("writing the cloud-init seed {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(failed)?;
    file.set_len(SEED_BYTES).map_err(failed)?;
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new().volume_label(*b"CIDATA     "),
    )
    .map_err(failed)?;
    let filesystem = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(failed)?;
    let root = filesystem.root_dir();
    let user_data = cloud_init
        .user_data
        .clone()
        .unwrap_or_else(|| "#cloud-config\n{}\n".to_string());
    let mut files = vec![
        ("meta-data", meta_data(cloud_init, instance_id, hostname)),
        ("user-data", user_data),
    ];
    if let Some(address) = address {
        files.push(("network-config", network_config(address)));
    }
    for (name, content) in files {
        let mut entry = root.create_file(name).map_err(failed)?;
        entry.truncate().map_err(failed)?;
        entry.write_all(content.as_bytes()).map_err(failed)?;
        entry.flush().map_err(failed)?;
    }
    drop(root);
    filesystem.unmount().map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_must_be_cloud_config_yaml_or_a_script() {
        let with = |text: &str| CloudInit {
            user_data: Some(text.to_string()),
            ssh_keys: Vec::new(),
        };
        assert!(validate(&with("#cloud-config\nhostname: a\n")).is_ok());
        assert!(validate(&with("#!/bin/sh\necho hi\n")).is_ok());
        let (_, message) = validate(&with("#cloud-config\nhostname: [unclosed\n")).unwrap_err();
        assert!(message.contains("is not YAML"), "{message}");
        let (_, message) = validate(&with("hostname: a\n")).unwrap_err();
        assert!(message.contains("must start with #cloud-config"), "{message}");
        let keys = CloudInit {
            user_data: None,
            ssh_keys: vec!["not a key".into()],
        };
        assert_eq!(validate(&keys).unwrap_err().0, "ssh_key");
    }

    #[test]
    fn the_seed_is_a_fat_disk_labelled_cidata() {
        let dir = std::env::temp_dir().join(format!("berth-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cidata.img");
        let cloud_init = CloudInit {
            user_data: Some("#cloud-config\nhostname: seeded\n".into()),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB key".into()],
        };
        let address = InstanceAddress {
            network: "default".into(),
            address: "10.89.0.5".into(),
            prefix: 24,
            gateway: "10.89.0.1".into(),
            mac: "52:54:00:12:34:56".into(),
        };
        write_seed(&path, &cloud_init, "i-1", "web", Some(&address)).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let filesystem = fatfs::FileSystem::new(file, fatfs::FsOptions::new()).unwrap();
        assert_eq!(filesystem.volume_label().trim(), "CIDATA");
        let mut meta = String::new();
        std::io::Read::read_to_string(&mut filesystem.root_dir().open_file("meta-data").unwrap(), &mut meta).unwrap();
        assert!(
            meta.contains("local-hostname: \"web\"") && meta.contains("ssh-ed25519"),
            "{meta}"
        );
        let mut network = String::new();
        std::io::Read::read_to_string(
            &mut filesystem.root_dir().open_file("network-config").unwrap(),
            &mut network,
        )
        .unwrap();
        assert!(
            network.contains("10.89.0.5/24") && network.contains("via: 10.89.0.1"),
            "{network}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
