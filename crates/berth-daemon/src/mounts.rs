//! An instance's mounts at create: `-v`, `--mount` and `--tmpfs` parsed into one list (first,
//! so a malformed flag is refused before anything is made), then — last, beside volume
//! creation — bind sources created where `-v` asks, checked and canonicalized on this host.
//! Volumes among the mounts go on to `Engine::resolve_volumes`.

use std::path::{Path, PathBuf};

use berth_model::api::CreateInstanceRequest;
use berth_model::mount::{
    parse_mount_flag, parse_tmpfs_flag, parse_volume_flag, InstanceMount, MountKind, MountRequest,
};
use berth_model::volume::VolumeMount;
use berth_model::InstanceKind;

use crate::error::{EngineError, EngineResult};

/// One parsed mount with the flag and text it came from, for errors that name them.
struct PlannedMount {
    field: &'static str,
    flag: &'static str,
    text: String,
    request: MountRequest,
}

impl PlannedMount {
    /// A refusal of this mount: one line naming its flag and text.
    fn refuse(&self, message: impl std::fmt::Display) -> EngineError {
        EngineError::invalid(self.field, format!("{} {}: {message}", self.flag, self.text))
    }
}

/// The mounts of a create request, parsed and checked against each other; nothing on the
/// host was touched yet.
pub struct MountPlan {
    mounts: Vec<PlannedMount>,
}

/// Where a VM is given its mounts: by berth's guest agent, which only image-booted VMs run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MountHost {
    Container,
    VmWithAgent,
    /// A VM booting its own disk through firmware: nobody inside mounts anything for berth.
    VmFirmware,
}

impl MountPlan {
    /// Parses every mount flag of `request`; refuses duplicate targets and mounts over an
    /// instance-store disk.
    pub fn parse(
        request: &CreateInstanceRequest,
        host: MountHost,
        instance_storage_disks: usize,
    ) -> EngineResult<Self> {
        type Parser = fn(&str) -> Result<MountRequest, String>;
        let sources: [(&'static str, &'static str, &[String], Parser); 3] = [
            ("volumes", "-v", &request.volumes, parse_volume_flag),
            ("mounts", "--mount", &request.mounts, parse_mount_flag),
            ("tmpfs", "--tmpfs", &request.tmpfs, parse_tmpfs_flag),
        ];
        let mut mounts: Vec<PlannedMount> = Vec::new();
        for (field, flag, texts, parse) in sources {
            for text in texts {
                let request = parse(text).map_err(|m| EngineError::invalid(field, m))?;
                if let Some(earlier) = mounts.iter().find(|m| m.request.target() == request.target()) {
                    return Err(EngineError::invalid(
                        field,
                        format!(
                            "{flag} {text}: {} is already mounted by {} {}; give each target one mount",
                            request.target(),
                            earlier.flag,
                            earlier.text
                        ),
                    ));
                }
                if (0..instance_storage_disks).any(|i| request.target() == format!("/mnt/instance-store{i}")) {
                    return Err(EngineError::invalid(
                        field,
                        format!(
                            "{flag} {text}: {} is the instance type's instance-store disk; pick another target",
                            request.target()
                        ),
                    ));
                }
                mounts.push(PlannedMount {
                    field,
                    flag,
                    text: text.clone(),
                    request,
                });
            }
        }
        let plan = MountPlan { mounts };
        if host != MountHost::Container {
            plan.check_for_vm(host)?;
        }
        Ok(plan)
    }

    fn check_for_vm(&self, host: MountHost) -> EngineResult<()> {
        for mount in &self.mounts {
            if host == MountHost::VmFirmware && !matches!(mount.request, MountRequest::Volume(_)) {
                return Err(mount.refuse(
                    "a VM booting its own disk has no berth guest agent to mount host paths or tmpfs; attach a volume (-v NAME:/path) instead",
                ));
            }
            if matches!(mount.request, MountRequest::Bind { .. }) && !berth_vm::virtiofs::available() {
                return Err(mount.refuse(format!(
                    "a VM shares host paths through virtiofs, and {} is missing; install qemu-system-common",
                    berth_vm::virtiofs::VIRTIOFSD
                )));
            }
        }
        Ok(())
    }

    /// Creates the missing host directories `-v` asks for and resolves every bind source to
    /// its canonical path. All sources are checked before any directory is made, so a refusal
    /// leaves nothing behind. Returns the volumes (for `resolve_volumes`) and the mounts to
    /// record. Blocking: host paths may sit on slow file systems.
    pub fn realize(self, kind: InstanceKind) -> EngineResult<(Vec<VolumeMount>, Vec<InstanceMount>)> {
        for mount in &self.mounts {
            if let MountRequest::Bind {
                source, create_source, ..
            } = &mount.request
            {
                check_source(Path::new(source), *create_source, kind).map_err(|m| mount.refuse(m))?;
            }
        }
        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        for mount in self.mounts {
            match &mount.request {
                MountRequest::Volume(volume) => volumes.push(volume.clone()),
                MountRequest::Bind {
                    source,
                    target,
                    read_only,
                    ..
                } => mounts.push(InstanceMount {
                    kind: MountKind::Bind,
                    source: create_and_canonicalize(Path::new(source)).map_err(|m| mount.refuse(m))?,
                    target: target.clone(),
                    read_only: *read_only,
                    tmpfs: None,
                }),
                MountRequest::Tmpfs {
                    target,
                    options,
                    read_only,
                } => mounts.push(InstanceMount {
                    kind: MountKind::Tmpfs,
                    source: String::new(),
                    target: target.clone(),
                    read_only: *read_only,
                    tmpfs: Some(options.clone()),
                }),
            }
        }
        Ok((volumes, mounts))
    }
}

/// A bind source must exist unless `-v` may create it (Docker's rule), and be a directory
/// for a VM (virtiofs shares directories).
fn check_source(source: &Path, may_create: bool, kind: InstanceKind) -> Result<(), String> {
    match std::fs::metadata(source) {
        Ok(meta) if kind == InstanceKind::Vm && !meta.is_dir() => Err(format!(
            "{} is not a directory; a VM shares directories (through virtiofs), not single files",
            source.display()
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "bind source path does not exist: {}; create it first (-v creates missing directories)",
            source.display()
        )),
        Err(e) => Err(format!("cannot use {}: {e}", source.display())),
    }
}

/// The canonical form of `source` (symlinks resolved, so the record says what is mounted),
/// made a directory first if it does not exist.
fn create_and_canonicalize(source: &Path) -> Result<String, String> {
    if std::fs::symlink_metadata(source).is_err() {
        // 0755 as Docker makes them, not with the daemon's private umask.
        crate::create_traversable_dir(source)
            .map_err(|e| format!("creating the host directory {}: {e}", source.display()))?;
    }
    let canonical: PathBuf =
        std::fs::canonicalize(source).map_err(|e| format!("resolving {}: {e}", source.display()))?;
    canonical
        .into_os_string()
        .into_string()
        .map_err(|path| format!("the host path {} is not UTF-8", PathBuf::from(path).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(volumes: &[&str], mounts: &[&str], tmpfs: &[&str]) -> CreateInstanceRequest {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        serde_json::from_value(serde_json::json!({
            "image": "busybox",
            "volumes": strings(volumes),
            "mounts": strings(mounts),
            "tmpfs": strings(tmpfs),
        }))
        .unwrap()
    }

    fn refusal(request: &CreateInstanceRequest, host: MountHost, disks: usize) -> (String, String) {
        let error = MountPlan::parse(request, host, disks).err().expect("refused");
        (error.field.unwrap_or_default(), error.message)
    }

    #[test]
    fn targets_are_unique_across_flags() {
        let clash = request(&["data:/x"], &["type=tmpfs,dst=//x/"], &[]);
        let (field, message) = refusal(&clash, MountHost::Container, 0);
        assert_eq!(field, "mounts");
        assert!(message.contains("/x is already mounted by -v data:/x"), "{message}");
        let store = request(&[], &[], &["/mnt/instance-store1"]);
        let (field, message) = refusal(&store, MountHost::Container, 2);
        assert_eq!(field, "tmpfs");
        assert!(message.contains("instance-store disk"), "{message}");
        assert!(MountPlan::parse(&store, MountHost::Container, 1).is_ok());
    }

    #[test]
    fn firmware_vms_take_volumes_only() {
        let (field, message) = refusal(&request(&[], &[], &["/t"]), MountHost::VmFirmware, 0);
        assert_eq!(field, "tmpfs");
        assert!(message.contains("no berth guest agent"), "{message}");
        assert!(MountPlan::parse(&request(&["data:/d"], &[], &[]), MountHost::VmFirmware, 0).is_ok());
    }

    #[test]
    fn realize_checks_every_source_before_making_any() {
        let dir = std::env::temp_dir().join(format!("berth-mounts-test-{}", std::process::id()));
        let made = dir.join("made");
        let plan = MountPlan::parse(
            &request(
                &[&format!("{}:/a", made.display())],
                &[&format!("type=bind,src={},dst=/b", dir.join("absent").display())],
                &[],
            ),
            MountHost::Container,
            0,
        )
        .unwrap();
        let error = plan.realize(InstanceKind::Container).expect_err("refused");
        assert!(
            error.message.contains("bind source path does not exist"),
            "{}",
            error.message
        );
        assert!(!made.exists(), "a refused plan made a directory");

        let plan = MountPlan::parse(
            &request(&[&format!("{}:/a:ro", made.display())], &[], &["/t"]),
            MountHost::Container,
            0,
        )
        .unwrap();
        let (volumes, mounts) = plan.realize(InstanceKind::Container).unwrap();
        assert!(volumes.is_empty() && made.is_dir());
        assert_eq!(
            mounts[0].source,
            std::fs::canonicalize(&made).unwrap().to_str().unwrap()
        );
        assert!(mounts[0].read_only);
        assert_eq!(mounts[1].kind, MountKind::Tmpfs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
