//! Resolves `--user` (`name`, `uid`, `name:group`, `uid:gid`) against the container's own
//! /etc/passwd and /etc/group, as Docker does.

use std::fs;
use std::path::Path;

/// The identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Reads a file of the rootfs without following a symlink out of it: image files must
/// not make berth read the host's files.
fn read_rootfs_file(rootfs: &Path, relative: &str) -> Option<String> {
    let mut path = rootfs.to_path_buf();
    for part in relative.split('/') {
        path.push(part);
        let meta = fs::symlink_metadata(&path).ok()?;
        if meta.file_type().is_symlink() {
            return None;
        }
    }
    fs::read_to_string(&path).ok()
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd_entries(rootfs: &Path) -> Vec<PasswdEntry> {
    read_rootfs_file(rootfs, "etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) of /etc/group.
fn group_entries(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    read_rootfs_file(rootfs, "etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 3 {
                return None;
            }
            let members = fields
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            Some((fields[0].to_string(), fields[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `spec` ("" means root). The error names what could not be found.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd_entries(rootfs);
    let (uid, mut gid, home, name) = if user_part.is_empty() {
        (0, 0, "/root".to_string(), Some("root".to_string()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        match passwd.iter().find(|e| e.uid == uid) {
            Some(entry) => (uid, entry.gid, entry.home.clone(), Some(entry.name.clone())),
            None => (uid, 0, "/".to_string(), None),
        }
    } else {
        let entry = passwd.iter().find(|e| e.name == user_part).ok_or_else(|| {
            format!(
                "user: no user '{user_part}' in the image's /etc/passwd; use a numeric uid or a name the image defines"
            )
        })?;
        (entry.uid, entry.gid, entry.home.clone(), Some(entry.name.clone()))
    };
    let groups = group_entries(rootfs);
    if let Some(group) = group_part.filter(|g| !g.is_empty()) {
        gid = match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == group)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| format!("user: no group '{group}' in the image's /etc/group"))?,
        };
    }
    let additional_gids = match &name {
        Some(name) => groups
            .iter()
            .filter(|(_, g, members)| *g != gid && members.iter().any(|m| m == name))
            .map(|(_, g, _)| *g)
            .collect(),
        None => Vec::new(),
    };
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_users() {
        let dir = std::env::temp_dir().join(format!("berth-user-test-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(dir.join("etc/group"), "root:x:0:\nwww:x:33:\nadm:x:4:www\n").unwrap();
        let www = resolve_user(&dir, "www").unwrap();
        assert_eq!((www.uid, www.gid, www.additional_gids.clone()), (33, 33, vec![4]));
        assert_eq!(resolve_user(&dir, "1000:adm").unwrap().gid, 4);
        assert_eq!(resolve_user(&dir, "").unwrap().uid, 0);
        assert!(resolve_user(&dir, "nobody").is_err());
        assert!(resolve_user(&dir, "www:nogroup").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
