//! berth's container driver: an overlayfs rootfs over the image's shared layers, an OCI
//! runtime spec with Docker's defaults, cgroup limits (v1 or v2, chosen at start-up), and
//! libcontainer workloads run under a berth supervisor.

pub mod cgroups;
pub mod mount_view;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_program;
pub mod spec;
pub mod workload;

use std::fs;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use berth_image::{user, ImageStore};
use berth_model::api::{ExecRequest, InstanceStats};
use berth_model::driver::{DriverError, DriverFingerprint, InstanceDriver, SupervisorConfig, Workload};
use berth_model::image::ImageRecord;
use berth_model::instance::short_id;
use berth_model::mount::MountKind;
use berth_model::{Instance, InstanceKind, Limits};

use crate::cgroups::Cgroups;
use crate::rootfs::RootfsPaths;
use crate::spec::ExtraMount;

pub struct ContainerDriver {
    images: ImageStore,
    cgroups: Cgroups,
    runtime_root: PathBuf,
    netns_dir: PathBuf,
    seccomp_programs: seccomp_program::ProgramCache,
}

impl ContainerDriver {
    /// `netns_dir` is where the daemon pins the network namespaces it prepares; every
    /// instance cgroup of this node lives under `cgroup_parent` in each hierarchy.
    pub fn new(
        images: ImageStore,
        runtime_root: PathBuf,
        netns_dir: PathBuf,
        cgroup_parent: &str,
    ) -> Result<Self, DriverError> {
        fs::create_dir_all(&runtime_root)
            .map_err(|e| DriverError::host(format!("creating {}", runtime_root.display()), e))?;
        let cgroups = Cgroups::detect(cgroup_parent)?;
        cgroups.prepare_cpuset_parent();
        Ok(ContainerDriver {
            images,
            cgroups,
            runtime_root,
            netns_dir,
            seccomp_programs: Default::default(),
        })
    }

    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The name of an instance in the runtime and in cgroups: short enough for socket paths.
    pub fn runtime_name(instance: &Instance) -> String {
        short_id(&instance.id).to_string()
    }

    /// Host PIDs of every process of a running container.
    pub fn pids(&self, instance: &Instance) -> Vec<u32> {
        self.cgroups.pids(&Self::runtime_name(instance))
    }
}

/// Creates `relative` under `root` unless a symlink is on the way (the runtime then resolves
/// it inside the container; following it here could touch the host).
fn ensure_dir_in_root(root: &Path, relative: &str) {
    let mut path = root.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return;
        }
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => return,
            Err(_) => {
                if fs::create_dir(&path).is_err() {
                    return;
                }
                // As Docker makes it, not with the daemon's private umask.
                let _ = fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755));
            }
        }
    }
}

#[async_trait]
impl InstanceDriver for ContainerDriver {
    fn kind(&self) -> InstanceKind {
        InstanceKind::Container
    }

    fn fingerprint(&self) -> DriverFingerprint {
        DriverFingerprint {
            kind: Some(InstanceKind::Container),
            available: true,
            details: vec![
                ("cgroup".into(), self.cgroups.describe()),
                ("runtime".into(), "libcontainer (youki) 0.7, in-process".into()),
            ],
        }
    }

    async fn prepare_start(
        &self,
        instance: &Instance,
        image: Option<&ImageRecord>,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError> {
        let image = image.ok_or_else(|| DriverError::invalid("image", "a container needs an image"))?;
        if let Some(size) = instance.spec.disk_bytes {
            rootfs::mount_sized_layer(dir, size)?;
        }
        let paths = RootfsPaths::new(dir);
        let lower_dirs = self
            .images
            .lower_dirs(image)
            .map_err(|e| DriverError::Other(e.to_string()))?;
        for lower in &lower_dirs {
            if !lower.is_dir() {
                return Err(DriverError::Other(format!(
                    "layer {} of image {} is missing; pull or import the image again",
                    lower.display(),
                    instance.spec.image
                )));
            }
        }
        let upper_layer = if instance.spec.auto_remove {
            rootfs::UpperLayer::Throwaway
        } else {
            rootfs::UpperLayer::Kept
        };
        rootfs::mount_overlay(&paths, &lower_dirs, upper_layer)?;
        let result = async {
            let user = user::resolve_user(&paths.mountpoint, &instance.spec.process.user)
                .await
                .map_err(|message| DriverError::invalid("user", message))?;
            let working_dir = &instance.spec.process.working_dir;
            if !working_dir.is_empty() {
                ensure_dir_in_root(&paths.mountpoint, working_dir);
            }
            let etc_dir = dir.join("etc");
            spec::write_etc_files(&etc_dir, &instance.spec.hostname, instance.address.as_ref())?;
            let mut mounts = mount_instance_storage(instance, dir)?;
            // Volumes: the daemon has their filesystems mounted on the host.
            for volume in &instance.spec.volumes {
                // Records from before `host_path` existed: local volumes, mounted beside the image.
                let host_path = match volume.host_path.as_str() {
                    "" => Path::new(&volume.source).with_file_name("mnt"),
                    path => PathBuf::from(path),
                };
                mounts.push(ExtraMount::Bind {
                    source: host_path,
                    target: volume.path.clone(),
                    read_only: volume.read_only,
                });
            }
            mounts.extend(host_mounts(instance)?);
            prepare_mount_targets(&paths.mountpoint, &mounts)?;
            let name = Self::runtime_name(instance);
            let mut runtime_spec = spec::build_spec(&spec::SpecInputs {
                instance,
                user: &user,
                resources: self.cgroups.resources_at_creation(&instance.limits)?,
                cgroups_path: &self.cgroups.path_for(&name),
                etc_dir: &etc_dir,
                mounts,
                network_namespace: instance
                    .address
                    .as_ref()
                    .map(|_| self.netns_dir.join(short_id(&instance.id))),
                new_network_namespace: instance.spec.network != "host",
            })?;
            self.seccomp_programs
                .install(&mut runtime_spec, &dir.join("bundle"))
                .map_err(DriverError::Other)?;
            let config_path = dir.join("bundle/config.json");
            runtime_spec
                .save(&config_path)
                .map_err(|e| DriverError::Other(format!("writing {}: {e}", config_path.display())))?;
            Ok(SupervisorConfig {
                workload: Workload::Container {
                    container_id: name,
                    bundle: dir.join("bundle"),
                    runtime_root: self.runtime_root.clone(),
                    cgroup_parent: self.cgroups.parent().to_string(),
                },
                tty: instance.spec.process.tty,
                open_stdin: instance.spec.process.open_stdin,
                log_path: Some(dir.join("container.log")),
                log_limits: Default::default(),
                exit_path: dir.join("exit.json"),
                socket_path: dir.join("supervisor.sock"),
                fence: None,
            })
        }
        .await;
        if result.is_err() {
            let _ = rootfs::unmount(&paths);
            let _ = release_instance_storage(instance, dir, true);
        }
        result
    }

    async fn release(&self, instance: &Instance, dir: &Path, keep_instance_storage: bool) -> Result<(), DriverError> {
        // Runtime state and the cgroup are the supervisor's to remove (after it reported the
        // exit, so removing them here would race with it); see `reclaim`.
        rootfs::unmount(&RootfsPaths::new(dir))?;
        release_instance_storage(instance, dir, keep_instance_storage)
    }

    async fn reclaim(&self, instance: &Instance) -> Result<(), DriverError> {
        let name = Self::runtime_name(instance);
        let state = self.runtime_root.join(&name);
        if state.exists() {
            fs::remove_dir_all(&state).map_err(|e| DriverError::host(format!("removing {}", state.display()), e))?;
        }
        self.cgroups.remove(&name);
        Ok(())
    }

    async fn remove(&self, instance: &Instance, dir: &Path) -> Result<(), DriverError> {
        self.release(instance, dir, false).await?;
        // Nothing is mounted in it any more: moved aside now, deleted in the background.
        berth_storage::discard::remove_dir_soon(dir)
            .map_err(|e| DriverError::host(format!("removing {}", dir.display()), e))
    }

    async fn update_limits(&self, instance: &Instance, limits: &Limits) -> Result<(), DriverError> {
        self.cgroups.apply_limits(&Self::runtime_name(instance), limits)
    }

    async fn pause(&self, instance: &Instance) -> Result<(), DriverError> {
        self.cgroups.set_frozen(&Self::runtime_name(instance), true)
    }

    async fn resume(&self, instance: &Instance) -> Result<(), DriverError> {
        self.cgroups.set_frozen(&Self::runtime_name(instance), false)
    }

    async fn stats(&self, instance: &Instance) -> Result<InstanceStats, DriverError> {
        let mut stats = self.cgroups.stats(&Self::runtime_name(instance))?;
        stats.id = instance.id.clone();
        stats.name = instance.name.clone();
        Ok(stats)
    }

    async fn prepare_exec(
        &self,
        instance: &Instance,
        request: &ExecRequest,
        dir: &Path,
    ) -> Result<SupervisorConfig, DriverError> {
        fs::create_dir_all(dir).map_err(|e| DriverError::host(format!("creating {}", dir.display()), e))?;
        let rootfs = RootfsPaths::new(dir.parent().and_then(Path::parent).unwrap_or(dir)).mountpoint;
        let user_spec = request
            .user
            .clone()
            .unwrap_or_else(|| instance.spec.process.user.clone());
        let user = user::resolve_user(&rootfs, &user_spec)
            .await
            .map_err(|message| DriverError::invalid("user", message))?;
        let mut env = spec::process_env(instance, &user.home);
        for pair in &request.env {
            let key = pair.split('=').next().unwrap_or_default();
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(pair.clone());
        }
        // A session with a terminal gets TERM like the container's own with one (Docker's).
        if request.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        Ok(SupervisorConfig {
            workload: Workload::ContainerExec {
                container_id: Self::runtime_name(instance),
                runtime_root: self.runtime_root.clone(),
                args: request.command.clone(),
                env,
                working_dir: request.working_dir.clone(),
                uid: Some(user.uid),
                gid: Some(user.gid),
            },
            tty: request.tty,
            open_stdin: request.open_stdin,
            log_path: None,
            log_limits: Default::default(),
            exit_path: dir.join("exit.json"),
            socket_path: dir.join("supervisor.sock"),
            fence: None,
        })
    }
}

/// Host paths (`-v /host:/path`, `--mount type=bind`) and tmpfs of a container. A host path
/// that went away since create is refused here, with what to do, rather than by the runtime.
fn host_mounts(instance: &Instance) -> Result<Vec<ExtraMount>, DriverError> {
    instance
        .spec
        .mounts
        .iter()
        .map(|mount| match mount.kind {
            MountKind::Bind => {
                let source = PathBuf::from(&mount.source);
                if fs::symlink_metadata(&source).is_err() {
                    return Err(DriverError::invalid(
                        "mounts",
                        format!(
                            "the host path {} (mounted at {}) no longer exists; create it again or remove the instance",
                            mount.source, mount.target
                        ),
                    ));
                }
                Ok(ExtraMount::Bind {
                    source,
                    target: mount.target.clone(),
                    read_only: mount.read_only,
                })
            }
            MountKind::Tmpfs => Ok(ExtraMount::Tmpfs {
                target: mount.target.clone(),
                options: mount.tmpfs_mount_options(),
            }),
        })
        .collect()
}

/// Makes the directories mounts land on, resolved inside the rootfs as the runtime resolves
/// them (an image's symlink cannot point outside it), so that a target the image makes
/// impossible (a symlink to a path it lacks, a file on the way) is refused here with its name.
fn prepare_mount_targets(rootfs: &Path, mounts: &[ExtraMount]) -> Result<(), DriverError> {
    let root = pathrs::Root::open(rootfs).map_err(|e| DriverError::Other(format!("opening the rootfs: {e}")))?;
    for mount in mounts {
        let target = Path::new(mount.target());
        // A file is bound onto a file, which the runtime creates; its directory must exist.
        let directory = match mount {
            ExtraMount::Bind { source, .. } if !source.is_dir() => target.parent().unwrap_or(Path::new("/")),
            _ => target,
        };
        mkdir_all_in_root(&root, directory).map_err(|e| {
            DriverError::invalid(
                "mounts",
                format!(
                    "cannot mount at {}: resolving {} inside the image failed ({e}): a symlink or file of the image is in the way; pick another target",
                    mount.target(),
                    directory.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// `mkdir -p` of `directory` inside the rootfs (symlinks resolved as the container sees
/// them), leaving what it made 0755 as Docker does: the daemon's private umask would make
/// them 0700, so a non-root container user could not reach its own mounts.
fn mkdir_all_in_root(root: &pathrs::Root, directory: &Path) -> Result<(), pathrs::error::Error> {
    use std::os::unix::fs::PermissionsExt;
    let mut missing = Vec::new();
    let mut prefix = PathBuf::from("/");
    for part in directory
        .components()
        .skip_while(|c| matches!(c, std::path::Component::RootDir))
    {
        prefix.push(part);
        if missing.is_empty() && root.resolve(&prefix).is_ok() {
            continue;
        }
        missing.push(prefix.clone());
    }
    root.mkdir_all(directory, &fs::Permissions::from_mode(0o755))?;
    for made in missing {
        let handle = root.resolve(&made)?;
        let dir = handle.reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY)?;
        // fchmod on the directory the handle resolved: no path is walked again.
        let _ = dir.set_permissions(fs::Permissions::from_mode(0o755));
    }
    Ok(())
}

/// Instance storage of a container: one thin ext4 image per disk of its type, mounted on
/// the host and bound to /mnt/instance-store0, 1, ... Returns the binds for the spec.
fn mount_instance_storage(instance: &Instance, dir: &Path) -> Result<Vec<ExtraMount>, DriverError> {
    let mut binds = Vec::new();
    for (index, size) in instance.spec.instance_storage_bytes.iter().enumerate() {
        let image = dir.join(format!("instance-store/{index}.img"));
        let mountpoint = dir.join(format!("instance-store/{index}"));
        if !image.exists() {
            berth_storage::create_ext4_image(&image, *size).map_err(|e| DriverError::Other(e.to_string()))?;
        }
        berth_storage::mount_image(&image, &mountpoint, false).map_err(|e| DriverError::Other(e.to_string()))?;
        binds.push(ExtraMount::Bind {
            source: mountpoint,
            target: format!("/mnt/instance-store{index}"),
            read_only: false,
        });
    }
    Ok(binds)
}

/// Unmounts instance storage; unless `keep` (a restart), wipes it as EC2 does on stop.
fn release_instance_storage(instance: &Instance, dir: &Path, keep: bool) -> Result<(), DriverError> {
    for index in 0..instance.spec.instance_storage_bytes.len() {
        berth_storage::unmount(&dir.join(format!("instance-store/{index}")))
            .map_err(|e| DriverError::Other(e.to_string()))?;
        if !keep {
            let _ = fs::remove_file(dir.join(format!("instance-store/{index}.img")));
        }
    }
    Ok(())
}

/// The supervisor-side workload for a container `SupervisorConfig`; `None` for kinds this
/// driver does not run.
pub fn workload_for(workload: &Workload) -> Option<Box<dyn berth_shim::Workload>> {
    match workload {
        Workload::Container {
            container_id,
            bundle,
            runtime_root,
            cgroup_parent,
        } => Some(Box::new(workload::ContainerWorkload::new(
            container_id.clone(),
            bundle.clone(),
            runtime_root.clone(),
            Cgroups::detect(cgroup_parent).ok(),
        ))),
        Workload::ContainerExec {
            container_id,
            runtime_root,
            args,
            env,
            working_dir,
            uid,
            gid,
        } => Some(Box::new(workload::ExecWorkload::new(
            container_id.clone(),
            runtime_root.clone(),
            args.clone(),
            env.clone(),
            working_dir.clone(),
            *uid,
            *gid,
        ))),
        Workload::Process { .. } | Workload::Vm { .. } => None,
    }
}
