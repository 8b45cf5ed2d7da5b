//! Finding a network namespace by its identity wherever it is still held,
//! to prove it gone before anything of it is removed. A namespace lives
//! while a process is in it, a mount (in any mount namespace) binds it, or
//! a file descriptor holds it open; a path that no longer leads there (a
//! container restarted under a new pid, a bind mount in another mount
//! namespace than this process's) proves nothing.
//!
//! This walks /proc, so it is the slow way, for when the quick ones (the
//! target's path, a process recorded with the attachment) failed. This
//! process's own descriptors do not count: the daemon's lease tasks hold
//! the namespaces they serve, and would keep every one alive.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::NsHandle;

/// The namespace whose identity is `ns:DEV:INODE`, if it still exists.
pub fn find(identity: &str) -> Option<NsHandle> {
    let (dev, ino) = parse(identity)?;
    let pids = pids();
    let opened = |path: &Path| {
        NsHandle::open(path)
            .ok()
            .filter(|ns| ns.dev == dev && ns.inode == ino)
    };
    // A process in it.
    for pid in &pids {
        let path = super::proc_ns(*pid);
        if is(&path, dev, ino)
            && let Some(ns) = opened(&path)
        {
            return Some(ns);
        }
    }
    // A mount binding it, seen once per mount namespace.
    let mut seen_mount_ns = std::collections::HashSet::new();
    for pid in &pids {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let Ok(mnt) = std::fs::metadata(proc.join("ns/mnt")) else {
            continue;
        };
        if !seen_mount_ns.insert((mnt.dev(), mnt.ino())) {
            continue;
        }
        let Ok(mountinfo) = std::fs::read_to_string(proc.join("mountinfo")) else {
            continue;
        };
        for point in nsfs_mount_points(&mountinfo) {
            let path = proc.join("root").join(point.trim_start_matches('/'));
            if is(&path, dev, ino)
                && let Some(ns) = opened(&path)
            {
                return Some(ns);
            }
        }
    }
    // A descriptor of another process.
    let me = std::process::id();
    let link = format!("net:[{ino}]");
    for pid in pids.iter().filter(|&&p| p != me) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str())
                && let Some(ns) = opened(&fd.path())
            {
                return Some(ns);
            }
        }
    }
    None
}

fn parse(identity: &str) -> Option<(u64, u64)> {
    let mut parts = identity.strip_prefix("ns:")?.split(':');
    let dev = parts.next()?.parse().ok()?;
    let ino = parts.next()?.parse().ok()?;
    Some((dev, ino))
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `path` leads to the namespace (dev, ino), by stat alone.
fn is(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The mount points of nsfs mounts in a mountinfo text (field 5 is the
/// mount point, the file system type follows the ` - ` separator; octal
/// escapes such as `\040` stand for spaces).
fn nsfs_mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            if rest.split(' ').next()? != "nsfs" {
                return None;
            }
            Some(unescape(fields.split(' ').nth(4)?))
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nsfs_mount_points() {
        let text = "\
36 25 0:4 net:[4026532281] /run/netns/a\\040b rw shared:5 - nsfs nsfs rw
37 25 0:22 / /run rw,nosuid shared:6 - tmpfs tmpfs rw
38 25 0:4 net:[4026532999] /var/run/docker/netns/8ab54b426c38 rw - nsfs nsfs rw";
        assert_eq!(
            nsfs_mount_points(text),
            ["/run/netns/a b", "/var/run/docker/netns/8ab54b426c38"]
        );
    }

    #[test]
    fn parses_identities() {
        assert_eq!(parse("ns:4:4026531840"), Some((4, 4026531840)));
        assert_eq!(parse("4:5"), None);
        assert_eq!(parse("ns:x:5"), None);
    }

    #[test]
    fn finds_this_threads_namespace_and_not_a_made_up_one() {
        let here = NsHandle::current().unwrap();
        let found = find(&here.identity()).expect("the namespace this test runs in");
        assert!(found.same_as(&here));
        assert!(find(&format!("ns:{}:1", here.dev)).is_none());
    }
}
