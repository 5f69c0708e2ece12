//! Mounts of host paths, volumes and tmpfs into instances, parsed from Docker's three
//! spellings (`-v SRC:DST[:MODE]`, `--mount type=...,src=...,dst=...`, `--tmpfs DST[:OPTS]`)
//! into one typed request, and the bind and tmpfs mounts an instance record keeps.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::quantity::ByteSize;
use crate::volume::VolumeMount;

/// The kinds of mount an instance records in `spec.mounts` (volumes live in `spec.volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host path (a directory for VMs, shared through virtiofs).
    Bind,
    /// A memory-backed filesystem, empty at every start.
    Tmpfs,
}

/// A bind or tmpfs mount of an instance, as recorded at create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceMount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Binds: the host path, canonicalized by the daemon at create. Empty for tmpfs.
    #[serde(default)]
    pub source: String,
    /// Where the instance sees it: absolute, without `..`.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    /// Size, mode and flags of a tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

impl InstanceMount {
    /// Mount options of a tmpfs as mount(8) takes them: flags, then `size=` and `mode=`.
    pub fn tmpfs_mount_options(&self) -> Vec<String> {
        let options = self.tmpfs.clone().unwrap_or_default();
        let mut all: Vec<String> = options.flags.clone();
        if self.read_only {
            all.push("ro".into());
        }
        if let Some(size) = options.size_bytes {
            all.push(format!("size={size}"));
        }
        if let Some(mode) = options.mode {
            all.push(format!("mode={mode:o}"));
        }
        all
    }
}

/// What a tmpfs is mounted with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TmpfsOptions {
    /// The most it holds; writes beyond get ENOSPC. Unbounded (half the memory, the
    /// kernel's default) when absent; the pages count against the instance's memory limit.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Permission bits of its root (1777 when absent).
    #[serde(default)]
    pub mode: Option<u32>,
    /// Mount flags after Docker's defaults (`noexec`, `nosuid`, `nodev`) were merged with
    /// the user's (`exec` drops `noexec`, and so on).
    #[serde(default)]
    pub flags: Vec<String>,
}

/// One mount an instance asks for, whichever flag spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRequest {
    Bind {
        /// Absolute host path, as given (the daemon canonicalizes it).
        source: String,
        target: String,
        read_only: bool,
        /// `-v` creates a missing host directory; `--mount type=bind` refuses it (Docker's way).
        create_source: bool,
    },
    Volume(VolumeMount),
    Tmpfs {
        target: String,
        options: TmpfsOptions,
        read_only: bool,
    },
}

impl MountRequest {
    pub fn target(&self) -> &str {
        match self {
            MountRequest::Bind { target, .. } | MountRequest::Tmpfs { target, .. } => target,
            MountRequest::Volume(volume) => &volume.path,
        }
    }
}

/// The target of a mount, cleaned (`//a/./b/` is `/a/b`): absolute, no `..`, not `/`, not
/// inside `/proc` (runc refuses those too: the kernel's files there must stay the kernel's).
pub fn clean_target(target: &str) -> Result<String, String> {
    if !target.starts_with('/') {
        return Err(format!(
            "the target '{target}' must be absolute: a path in the instance such as /data"
        ));
    }
    if target.contains('\0') || target.len() > 4096 {
        return Err("the target must be a path of at most 4096 bytes without NUL".into());
    }
    let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!("the target '{target}' must not contain '..'"));
    }
    if parts.is_empty() {
        return Err("the target cannot be '/' (the instance's root)".into());
    }
    if parts[0] == "proc" {
        return Err(format!(
            "the target '{target}' is inside /proc, which berth does not mount over"
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The three ways Docker spells "host path or volume name" for `-v`: an absolute path is a
/// bind, a volume name is a volume, anything else (a relative path) is refused.
fn is_volume_name(text: &str) -> bool {
    crate::instance::validate_object_name("volume", text).is_ok()
}

fn relative_source_error(source: &str) -> String {
    format!(
        "'{source}' is neither an absolute host path nor a volume name; give host paths absolute (for example $PWD/{}), volume names as [a-zA-Z0-9][a-zA-Z0-9_.-]*",
        source.trim_start_matches("./")
    )
}

/// Propagation of a bind: berth's runtime mounts binds private (Docker's default, `rprivate`),
/// so only that is accepted; shared and slave would be silently wrong.
fn check_propagation(value: &str) -> Result<(), String> {
    match value {
        "private" | "rprivate" => Ok(()),
        "shared" | "rshared" | "slave" | "rslave" => Err(format!(
            "propagation '{value}' is not supported: berth mounts binds private (rprivate); drop it"
        )),
        other => Err(format!(
            "'{other}' is not a propagation mode (Docker's are rprivate, private, rshared, shared, rslave, slave)"
        )),
    }
}

/// `-v SOURCE:TARGET[:MODE]` (Docker's `Binds`). MODE is a comma list of `ro`/`rw`, `z`/`Z`
/// (SELinux relabelling: accepted and ignored, this host has no SELinux), a propagation
/// (`rprivate`/`private`), `nocopy` (volumes; berth never copies image content into a
/// volume) and `consistent`/`cached`/`delegated` (no meaning on Linux, ignored).
pub fn parse_volume_flag(text: &str) -> Result<MountRequest, String> {
    let fail = |message: String| format!("-v {text}: {message}");
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] if target.starts_with('/') => {
            return Err(fail(
                "anonymous volumes are not supported; name the volume (-v NAME:/path) or give a host path (-v /host/path:/path)".into(),
            ))
        }
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(fail("use HOST-PATH:PATH[:ro] or VOLUME:PATH[:ro]".into())),
    };
    if source.is_empty() {
        return Err(fail("the source (host path or volume name) is empty".into()));
    }
    let target = clean_target(target).map_err(fail)?;
    let is_bind = source.starts_with('/');
    if !is_bind && !is_volume_name(source) {
        return Err(fail(relative_source_error(source)));
    }
    let mut read_only = None;
    let (mut label, mut propagation, mut copy, mut consistency) = (false, false, false, false);
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        let seen = match option {
            "ro" | "rw" => read_only.replace(option == "ro").is_some(),
            "z" | "Z" => std::mem::replace(&mut label, true),
            "nocopy" if is_bind => return Err(fail("nocopy applies to volumes, not host paths".into())),
            "nocopy" => std::mem::replace(&mut copy, true),
            "consistent" | "cached" | "delegated" => std::mem::replace(&mut consistency, true),
            _ if option.contains("private") || option.contains("shared") || option.contains("slave") => {
                if !is_bind {
                    return Err(fail(format!(
                        "propagation '{option}' applies to host paths, not volumes"
                    )));
                }
                check_propagation(option).map_err(fail)?;
                std::mem::replace(&mut propagation, true)
            }
            other => {
                return Err(fail(format!(
                    "unknown option '{other}'; use ro or rw (also z, Z, rprivate, nocopy)"
                )))
            }
        };
        if seen {
            return Err(fail(format!("'{option}' conflicts with another option of its kind")));
        }
    }
    let read_only = read_only.unwrap_or(false);
    Ok(if is_bind {
        MountRequest::Bind {
            source: source.to_string(),
            target,
            read_only,
            create_source: true,
        }
    } else {
        MountRequest::Volume(VolumeMount {
            volume: source.to_string(),
            path: target,
            read_only,
            source: String::new(),
            format: String::new(),
            host_path: String::new(),
        })
    })
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool, String> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(format!("{key}={other}: use true or false")),
    }
}

fn parse_mode(value: &str) -> Result<u32, String> {
    match u32::from_str_radix(value, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "mode '{value}' is not octal permission bits (for example 1777 or 700)"
        )),
    }
}

fn parse_tmpfs_size(value: &str) -> Result<u64, String> {
    let size: ByteSize = value.parse().map_err(|e| format!("size: {e}"))?;
    if size.bytes() < 4096 {
        return Err(format!(
            "size '{value}' is below one page (4k); omit it for a tmpfs without a size limit"
        ));
    }
    Ok(size.bytes())
}

/// Docker's tmpfs defaults, then the user's flags: each flag replaces its opposite.
fn merge_tmpfs_flags(user: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = vec!["noexec".into(), "nosuid".into(), "nodev".into()];
    for flag in user {
        let opposite = flag
            .strip_prefix("no")
            .map(str::to_string)
            .unwrap_or(format!("no{flag}"));
        flags.retain(|f| f != &opposite && f != flag);
        flags.push(flag.to_string());
    }
    flags
}

const TMPFS_FLAGS: &[&str] = &[
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "strictatime",
];

/// `--tmpfs PATH[:OPTIONS]`, OPTIONS as mount(8) spells them: `size=64m`, `mode=1770`,
/// `ro`/`rw`, `exec`/`noexec`, `suid`/`nosuid`, `dev`/`nodev` and the atime flags.
/// Defaults are Docker's: `noexec,nosuid,nodev`, no size limit, mode 1777.
pub fn parse_tmpfs_flag(text: &str) -> Result<MountRequest, String> {
    let fail = |message: String| format!("--tmpfs {text}: {message}");
    let (target, options) = text.split_once(':').unwrap_or((text, ""));
    let target = clean_target(target).map_err(fail)?;
    let mut tmpfs = TmpfsOptions::default();
    let mut read_only = false;
    let mut flags = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", value)) => tmpfs.size_bytes = Some(parse_tmpfs_size(value).map_err(fail)?),
            Some(("mode", value)) => tmpfs.mode = Some(parse_mode(value).map_err(fail)?),
            None if option == "ro" || option == "rw" => read_only = option == "ro",
            None if TMPFS_FLAGS.contains(&option) => flags.push(option),
            _ => {
                return Err(fail(format!(
                    "unknown option '{option}'; use size=SIZE, mode=OCTAL, ro, exec, suid, dev (or their no- forms)"
                )))
            }
        }
    }
    tmpfs.flags = merge_tmpfs_flags(&flags);
    Ok(MountRequest::Tmpfs {
        target,
        options: tmpfs,
        read_only,
    })
}

const MOUNT_KEYS: &str = "type, source (src), target (dst, destination), readonly (ro), bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode";

/// The fields of one `--mount` value: comma-separated `key=value` pairs, quoted as CSV
/// (`"src=/a,b"`), as Docker reads them.
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let record = match records.next() {
        Some(record) => record.map_err(|e| format!("not comma-separated key=value pairs: {e}"))?,
        None => return Err("empty; use type=bind,source=/host/path,target=/path".into()),
    };
    if records.next().is_some() {
        return Err("must be one line".into());
    }
    Ok(record.iter().map(str::to_string).collect())
}

/// `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly][,...]` as Docker reads
/// it. The type defaults to volume; keys of one type are refused on another.
pub fn parse_mount_flag(text: &str) -> Result<MountRequest, String> {
    let fail = |message: String| format!("--mount {text}: {message}");
    let (mut kind, mut source, mut target) = ("volume".to_string(), None::<String>, None::<String>);
    let mut read_only = false;
    let mut tmpfs = TmpfsOptions::default();
    // Type-specific keys, checked against the type once all are read.
    let mut typed_keys: Vec<(&'static str, String)> = Vec::new();
    for field in csv_fields(text).map_err(fail)? {
        let (key, value) = match field.split_once('=') {
            Some((key, value)) => (key.to_ascii_lowercase(), Some(value.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let required = || {
            value
                .clone()
                .ok_or_else(|| fail(format!("'{key}' needs a value ({key}=...)")))
        };
        match key.as_str() {
            "type" => kind = required()?,
            "source" | "src" => source = Some(required()?),
            "target" | "dst" | "destination" => target = Some(required()?),
            "readonly" | "ro" => read_only = parse_bool(&key, value.as_deref()).map_err(fail)?,
            "consistency" => {}
            "bind-propagation" => {
                check_propagation(&required()?).map_err(fail)?;
                typed_keys.push(("bind", key.clone()));
            }
            "volume-nocopy" => {
                parse_bool(&key, value.as_deref()).map_err(fail)?;
                typed_keys.push(("volume", key.clone()));
            }
            "tmpfs-size" => {
                tmpfs.size_bytes = Some(parse_tmpfs_size(&required()?).map_err(fail)?);
                typed_keys.push(("tmpfs", key.clone()));
            }
            "tmpfs-mode" => {
                tmpfs.mode = Some(parse_mode(&required()?).map_err(fail)?);
                typed_keys.push(("tmpfs", key.clone()));
            }
            other => return Err(fail(format!("unknown key '{other}'; --mount knows {MOUNT_KEYS}"))),
        }
    }
    if !matches!(kind.as_str(), "bind" | "volume" | "tmpfs") {
        return Err(fail(format!(
            "type '{kind}' is not supported; use type=bind, type=volume or type=tmpfs"
        )));
    }
    if let Some((wanted, key)) = typed_keys.iter().find(|(wanted, _)| *wanted != kind) {
        return Err(fail(format!("'{key}' applies to type={wanted}, not type={kind}")));
    }
    let target = match target {
        Some(target) => clean_target(&target).map_err(fail)?,
        None => return Err(fail("a target is required (target=/path in the instance)".into())),
    };
    match (kind.as_str(), source) {
        ("tmpfs", Some(_)) => Err(fail("type=tmpfs takes no source".into())),
        ("tmpfs", None) => {
            tmpfs.flags = merge_tmpfs_flags(&[]);
            Ok(MountRequest::Tmpfs {
                target,
                options: tmpfs,
                read_only,
            })
        }
        ("bind", None) => Err(fail("type=bind needs source=/host/path".into())),
        ("bind", Some(source)) if !source.starts_with('/') => Err(fail(format!(
            "the bind source '{source}' must be an absolute host path (for example $PWD/{})",
            source.trim_start_matches("./")
        ))),
        ("bind", Some(source)) => Ok(MountRequest::Bind {
            source,
            target,
            read_only,
            create_source: false,
        }),
        (_, None) => Err(fail(
            "anonymous volumes are not supported; name the volume with source=NAME".into(),
        )),
        (_, Some(source)) if !is_volume_name(&source) => Err(fail(relative_source_error(&source))),
        (_, Some(source)) => Ok(MountRequest::Volume(VolumeMount {
            volume: source,
            path: target,
            read_only,
            source: String::new(),
            format: String::new(),
            host_path: String::new(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, target: &str, read_only: bool, create_source: bool) -> MountRequest {
        MountRequest::Bind {
            source: source.into(),
            target: target.into(),
            read_only,
            create_source,
        }
    }

    #[test]
    fn volume_flag_as_docker_reads_it() {
        assert_eq!(
            parse_volume_flag("/srv/data:/data").unwrap(),
            bind("/srv/data", "/data", false, true)
        );
        assert_eq!(
            parse_volume_flag("/srv:/data/:ro,Z").unwrap(),
            bind("/srv", "/data", true, true)
        );
        assert_eq!(
            parse_volume_flag("/srv://a/./b:rw,rprivate").unwrap(),
            bind("/srv", "/a/b", false, true)
        );
        match parse_volume_flag("data:/var/lib/db:ro,nocopy").unwrap() {
            MountRequest::Volume(v) => assert_eq!(
                (v.volume.as_str(), v.path.as_str(), v.read_only),
                ("data", "/var/lib/db", true)
            ),
            other => panic!("{other:?}"),
        }
        for (text, expected) in [
            ("./data:/data", "absolute"),
            ("data/x:/data", "absolute"),
            ("~/x:/data", "absolute"),
            ("/srv:relative", "must be absolute"),
            ("/srv:/", "cannot be '/'"),
            ("/srv:/a/../etc", "'..'"),
            ("/srv:/proc/sys", "/proc"),
            ("/srv:/x:rx", "unknown option 'rx'"),
            ("/srv:/x:ro,rw", "conflicts"),
            ("/srv:/x:rshared", "not supported"),
            ("/srv:/x:nocopy", "volumes"),
            ("data:/x:rprivate", "host paths"),
            ("/data", "anonymous"),
            (":/x", "empty"),
            ("a:b:c:d", "HOST-PATH:PATH"),
        ] {
            let error = parse_volume_flag(text).unwrap_err();
            assert!(error.starts_with(&format!("-v {text}: ")), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'));
        }
    }

    #[test]
    fn mount_flag_as_docker_reads_it() {
        assert_eq!(
            parse_mount_flag("type=bind,source=/srv,target=/data,readonly").unwrap(),
            bind("/srv", "/data", true, false)
        );
        assert_eq!(
            parse_mount_flag("type=bind,src=/srv,dst=/data,ro=false,bind-propagation=rprivate").unwrap(),
            bind("/srv", "/data", false, false)
        );
        assert_eq!(
            parse_mount_flag("\"type=bind\",\"src=/a,b\",destination=/x").unwrap(),
            bind("/a,b", "/x", false, false)
        );
        match parse_mount_flag("src=v,dst=/x,volume-nocopy").unwrap() {
            MountRequest::Volume(v) => assert_eq!((v.volume.as_str(), v.path.as_str()), ("v", "/x")),
            other => panic!("{other:?}"),
        }
        match parse_mount_flag("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap() {
            MountRequest::Tmpfs { options, .. } => {
                assert_eq!(options.size_bytes, Some(1 << 20));
                assert_eq!(options.mode, Some(0o1770));
            }
            other => panic!("{other:?}"),
        }
        for (text, expected) in [
            ("type=bind,dst=/x", "needs source"),
            ("type=bind,src=rel,dst=/x", "absolute"),
            ("type=bind,src=/a", "target is required"),
            ("type=tmpfs,src=/a,dst=/x", "no source"),
            ("type=tmpfs,dst=/x,bind-propagation=rprivate", "applies to type=bind"),
            ("type=bind,src=/a,dst=/x,tmpfs-size=1m", "applies to type=tmpfs"),
            ("type=image,src=a,dst=/x", "not supported"),
            ("type=bind,src=/a,dst=/x,color=red", "unknown key 'color'"),
            ("type=bind,src=/a,dst=/x,readonly=maybe", "true or false"),
            ("type=volume,dst=/x", "anonymous"),
            ("type=tmpfs,dst=/x,tmpfs-mode=99", "octal"),
            ("type=tmpfs,dst=/x,tmpfs-size=lots", "size"),
            ("type=bind,src=/a,dst=/", "'/'"),
            ("", "empty"),
        ] {
            let error = parse_mount_flag(text).unwrap_err();
            assert!(error.starts_with("--mount "), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'));
        }
    }

    #[test]
    fn tmpfs_flag_merges_docker_defaults() {
        match parse_tmpfs_flag("/scratch:size=1m,exec,mode=700").unwrap() {
            MountRequest::Tmpfs {
                target,
                options,
                read_only,
            } => {
                assert_eq!(target, "/scratch");
                assert_eq!(options.size_bytes, Some(1 << 20));
                assert_eq!(options.mode, Some(0o700));
                assert_eq!(options.flags, vec!["nosuid", "nodev", "exec"]);
                assert!(!read_only);
                let mount = InstanceMount {
                    kind: MountKind::Tmpfs,
                    source: String::new(),
                    target,
                    read_only,
                    tmpfs: Some(options),
                };
                assert_eq!(
                    mount.tmpfs_mount_options(),
                    vec!["nosuid", "nodev", "exec", "size=1048576", "mode=700"]
                );
            }
            other => panic!("{other:?}"),
        }
        for (text, expected) in [
            ("scratch", "absolute"),
            ("/x:size=0", "below one page"),
            ("/x:uid=5", "unknown option 'uid=5'"),
            ("/x:mode=rwx", "octal"),
        ] {
            let error = parse_tmpfs_flag(text).unwrap_err();
            assert!(error.starts_with(&format!("--tmpfs {text}: ")), "{error}");
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
