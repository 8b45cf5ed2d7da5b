//! Container references: what a user types to name a network namespace.
//! Adding a kind (Docker, Podman, ...) means a variant here and its
//! resolver; the engine only ever sees the resulting namespace handle.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::netns::{NsHandle, named_path};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A named namespace under /run/netns (`NAME` or `netns:NAME`).
    Named(String),
    /// A namespace file anywhere (`/proc/123/ns/net`, a bind mount, ...).
    Path(PathBuf),
    /// The namespace of a running process (`pid:N`).
    Pid(u32),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target> {
        let bad = |reason: &str| Error::invalid("target", s, reason);
        if s.is_empty() {
            return Err(bad("empty target"));
        }
        if let Some(pid) = s.strip_prefix("pid:") {
            let pid: u32 = pid
                .parse()
                .map_err(|_| bad("expected pid:N with N a process id"))?;
            if pid == 0 {
                return Err(bad("pid 0 is not a process"));
            }
            return Ok(Target::Pid(pid));
        }
        if s.starts_with('/') {
            return Ok(Target::Path(PathBuf::from(s)));
        }
        let name = s.strip_prefix("netns:").unwrap_or(s);
        if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 255
        {
            return Err(bad(
                "a namespace name cannot be empty or contain `/` (use an absolute path for files)",
            ));
        }
        if s.contains(':') && !s.starts_with("netns:") {
            return Err(bad(
                "unknown target kind (known: NAME, netns:NAME, /path/to/ns, pid:N)",
            ));
        }
        Ok(Target::Named(name.to_string()))
    }

    fn path(&self) -> PathBuf {
        match self {
            Target::Named(name) => named_path(name),
            Target::Path(p) => p.clone(),
            Target::Pid(pid) => Path::new("/proc").join(pid.to_string()).join("ns/net"),
        }
    }

    /// Open the namespace, once; everything after works on the handle.
    pub fn resolve(&self) -> Result<NsHandle> {
        let path = self.path();
        let handle = NsHandle::open(&path).map_err(|e| Error::Target {
            target: self.to_string(),
            reason: match (self, e.kind()) {
                (Target::Named(_), std::io::ErrorKind::NotFound) => format!(
                    "no network namespace named so ({} does not exist)",
                    path.display()
                ),
                (Target::Pid(_), std::io::ErrorKind::NotFound) => "no such process".to_string(),
                (_, std::io::ErrorKind::InvalidInput) => {
                    format!("{} is not a network namespace", path.display())
                }
                _ => format!("cannot open {}: {e}", path.display()),
            },
        })?;
        Ok(handle)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Named(n) => f.write_str(n),
            Target::Path(p) => write!(f, "{}", p.display()),
            Target::Pid(pid) => write!(f, "pid:{pid}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(Target::parse("web").unwrap(), Target::Named("web".into()));
        assert_eq!(
            Target::parse("netns:web").unwrap(),
            Target::Named("web".into())
        );
        assert_eq!(
            Target::parse("/proc/1/ns/net").unwrap(),
            Target::Path("/proc/1/ns/net".into())
        );
        assert_eq!(Target::parse("pid:42").unwrap(), Target::Pid(42));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["", "pid:x", "pid:0", "docker:web", "a/b", "netns:"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
