//! Network namespaces: open handles, named namespaces under /run/netns, and
//! running a closure inside a namespace on a thread of its own.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

mod find;
pub use find::find;

pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace. The (device, inode) pair identifies it for as
/// long as it lives, whatever name or path led to it.
#[derive(Debug)]
pub struct NsHandle {
    fd: OwnedFd,
    pub inode: u64,
    pub dev: u64,
}

impl NsHandle {
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        // A file that is not a network namespace would make setns fail later
        // with a confusing error; ask nsfs what it is now.
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on an fd we own; no pointer argument.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a network namespace",
            ));
        }
        Ok(NsHandle {
            fd: file.into(),
            inode: meta.ino(),
            dev: meta.dev(),
        })
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(NsHandle {
            fd: self.fd.try_clone()?,
            inode: self.inode,
            dev: self.dev,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// A stable identity string: `ns:<dev>:<inode>`.
    pub fn identity(&self) -> String {
        format!("ns:{}:{}", self.dev, self.inode)
    }

    /// The namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14): unlike its
    /// inode number, which the kernel hands to a new namespace once this
    /// one is freed, never reused while the machine runs. None on older
    /// kernels.
    pub fn cookie(&self) -> Option<u64> {
        const SO_NETNS_COOKIE: libc::c_int = 71;
        self.run(|| {
            // SAFETY: a socket this closure owns, closed before it returns;
            // getsockopt writes at most `len` bytes into `cookie`.
            unsafe {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return None;
                }
                let mut cookie: u64 = 0;
                let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
                let r = libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&mut cookie as *mut u64).cast(),
                    &mut len,
                );
                libc::close(fd);
                (r == 0).then_some(cookie)
            }
        })
        .ok()
        .flatten()
    }

    pub fn same_as(&self, other: &NsHandle) -> bool {
        self.inode == other.inode && self.dev == other.dev
    }

    /// Run `f` with the calling thread inside this namespace, then return
    /// to the namespace it was in. Sockets opened by `f` stay bound to this
    /// namespace for their whole life. (Entering and leaving costs two
    /// syscalls; a helper thread costs a clone and a cross-CPU wakeup, more
    /// than the rest of an attach's namespace work.)
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = NsHandle::current()?;
        self.enter()?;
        let out = f();
        if let Err(e) = home.enter() {
            // Going on in the wrong namespace would apply host changes to a
            // container: there is no safe way forward.
            eprintln!("plumb: cannot return to the host network namespace: {e}");
            std::process::abort();
        }
        Ok(out)
    }

    /// Move the calling thread into this namespace (for good with
    /// `--host-netns`, or for the duration of [`NsHandle::run`]).
    pub fn enter(&self) -> io::Result<()> {
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
    }
}

impl AsFd for NsHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The namespace of process `pid`.
pub fn proc_ns(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// When process `pid` started (clock ticks after boot), if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count the fields
    // after its closing one (the state is field 3, the start time 22).
    let after = stat.rsplit_once(") ")?.1;
    after.split(' ').nth(22 - 3)?.parse().ok()
}

pub fn named_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether a named namespace (`/run/netns/NAME`) exists.
pub fn exists_named(name: &str) -> bool {
    named_path(name).exists()
}

/// Create a named namespace the way `ip netns add` does: a new namespace
/// made on a thread of its own and bind-mounted on /run/netns/NAME.
/// Returns false when the name already exists.
pub fn create_named(name: &str) -> io::Result<bool> {
    let path = named_path(name);
    if path.exists() {
        return Ok(false);
    }
    ensure_run_dir()?;
    File::options().write(true).create_new(true).open(&path)?;
    let target = path.clone();
    let made = std::thread::spawn(move || -> io::Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(io::Error::from)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(true)
}

/// Remove a named namespace; the namespace itself dies with its last user.
pub fn delete_named(name: &str) -> io::Result<()> {
    let path = named_path(name);
    if !path.exists() {
        return Ok(());
    }
    let _ = umount2(&path, MntFlags::MNT_DETACH);
    std::fs::remove_file(&path)
}

/// /run/netns must be a shared mount point so that namespaces bound there
/// stay visible to processes in other mount namespaces (as iproute2 does).
fn ensure_run_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = mount(
        None::<&str>,
        NETNS_RUN_DIR,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    );
    if shared.is_err() {
        // Not a mount point yet: bind it onto itself, then share it.
        mount(
            Some(NETNS_RUN_DIR),
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Write a sysctl (`net/ipv4/ip_forward`) inside the namespace of the
/// calling thread: /proc/sys/net follows the namespace of the thread that
/// opens it.
pub fn write_sysctl(key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{key}");
    let current = std::fs::read_to_string(&path)?;
    if current.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace made on a thread of its own, kept open.
    fn new_namespace() -> NsHandle {
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET).unwrap();
            NsHandle::current().unwrap()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn cookies_tell_namespaces_apart_for_good() {
        let here = NsHandle::current().unwrap();
        let cookie = here.cookie().expect("a kernel with SO_NETNS_COOKIE");
        assert_eq!(here.cookie(), Some(cookie), "stable");
        let other = new_namespace();
        assert_ne!(other.cookie(), Some(cookie));
    }

    #[test]
    fn an_attachment_is_not_in_a_namespace_that_only_has_its_inode() {
        let ns = new_namespace();
        let mut a: crate::model::Attachment = serde_json::from_value(serde_json::json!({
            "network": "lan", "target": "x", "netns": ns.identity(), "ifname": "eth0",
            "host_ifname": "pv0", "mac": [2, 0, 0, 0, 0, 1], "addresses": [], "gateways": [],
            "routes": [], "mtu": 1500, "default_route": "keep",
        }))
        .unwrap();
        assert!(a.is_in(&ns), "no cookie recorded: the inode decides");
        a.netns_cookie = ns.cookie();
        assert!(a.is_in(&ns));
        a.netns_cookie = ns.cookie().map(|c| c + 1);
        assert!(
            !a.is_in(&ns),
            "a namespace that got the inode of a freed one"
        );
    }
}
