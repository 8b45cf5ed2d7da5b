//! Container references: what a user types to name a network namespace.
//! Adding a kind (Docker, Podman, ...) means a variant here and its
//! resolver; the engine only ever sees the resulting namespace handle and
//! what to record of the target ([`Opened`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{ContainerRef, NsProcess};
use crate::netns::{NsHandle, named_path, proc_ns};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A named namespace under /run/netns (`NAME` or `netns:NAME`).
    Named(String),
    /// A namespace file anywhere (`/proc/123/ns/net`, a bind mount, ...).
    Path(PathBuf),
    /// The namespace of a running process (`pid:N`).
    Pid(u32),
    /// A Docker container's (`docker:NAME`, `docker:ID`, `docker:IDPREFIX`).
    Docker(String),
    /// What a CNI runtime added for its container (`cni:ID`, or one
    /// interface: `cni:ID/IFNAME`): a name for attachments, not a namespace
    /// to attach.
    Cni {
        container_id: String,
        ifname: Option<String>,
    },
}

/// A target opened: its namespace and what an attachment records of it.
#[derive(Debug)]
pub struct Opened {
    pub ns: NsHandle,
    /// The target as recorded: as typed, but a container by its full ID.
    pub name: String,
    pub container: Option<ContainerRef>,
    /// A process in the namespace, to find it again without the target.
    pub process: Option<NsProcess>,
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
        if let Some(reference) = s.strip_prefix("docker:") {
            // Docker's own rule for names, which IDs also follow.
            let ok = !reference.is_empty()
                && reference.len() <= 255
                && reference
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(bad(
                    "expected docker:NAME or docker:ID (letters, digits, `_`, `.`, `-`)",
                ));
            }
            return Ok(Target::Docker(reference.to_string()));
        }
        if let Some(rest) = s.strip_prefix("cni:") {
            let (id, ifname) = match rest.split_once('/') {
                Some((id, ifname)) => (id, Some(ifname.to_string())),
                None => (rest, None),
            };
            if id.is_empty() || ifname.as_deref() == Some("") {
                return Err(bad("expected cni:CONTAINERID or cni:CONTAINERID/IFNAME"));
            }
            return Ok(Target::Cni {
                container_id: id.to_string(),
                ifname,
            });
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
                "unknown target kind (known: NAME, netns:NAME, /path/to/ns, pid:N, docker:NAME, cni:ID)",
            ));
        }
        Ok(Target::Named(name.to_string()))
    }

    /// Open the namespace, once; everything after works on the handle.
    pub fn resolve(&self) -> Result<NsHandle> {
        Ok(self.open()?.ns)
    }

    /// Open the namespace and say what to record of the target (a
    /// container is asked of Docker, once).
    pub fn open(&self) -> Result<Opened> {
        let path = match self {
            Target::Docker(reference) => return self.open_container(reference),
            Target::Cni { .. } => {
                return Err(Error::Target {
                    target: self.to_string(),
                    reason: "a CNI runtime's container is attached by its runtime (ADD)".into(),
                });
            }
            Target::Named(name) => named_path(name),
            Target::Path(p) => p.clone(),
            Target::Pid(pid) => proc_ns(*pid),
        };
        let ns = self.open_path(&path)?;
        let process = match self {
            Target::Pid(pid) => NsProcess::of(*pid),
            _ => None,
        };
        Ok(Opened {
            ns,
            name: self.to_string(),
            container: None,
            process,
        })
    }

    fn open_container(&self, reference: &str) -> Result<Opened> {
        let c = crate::docker::inspect(reference).map_err(|e| match e {
            Error::Docker { .. } => Error::Target {
                target: self.to_string(),
                reason: e.to_string(),
            },
            e => e,
        })?;
        let Some(pid) = c.pid else {
            return Err(Error::Target {
                target: self.to_string(),
                reason: format!("container {} is not running", c.name),
            });
        };
        Ok(Opened {
            ns: self.open_path(&proc_ns(pid))?,
            name: format!("docker:{}", c.id),
            process: NsProcess::of(pid),
            container: Some(ContainerRef {
                id: c.id,
                name: c.name,
            }),
        })
    }

    fn open_path(&self, path: &Path) -> Result<NsHandle> {
        let handle = NsHandle::open(path).map_err(|e| Error::Target {
            target: self.to_string(),
            reason: match (self, e.kind()) {
                (Target::Named(_), std::io::ErrorKind::NotFound) => format!(
                    "no network namespace named so ({} does not exist)",
                    path.display()
                ),
                (Target::Pid(_), std::io::ErrorKind::NotFound) => "no such process".to_string(),
                (Target::Docker(_), std::io::ErrorKind::NotFound) => {
                    "its process ended as it was looked up".to_string()
                }
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
            Target::Docker(r) => write!(f, "docker:{r}"),
            Target::Cni {
                container_id,
                ifname: None,
            } => write!(f, "cni:{container_id}"),
            Target::Cni {
                container_id,
                ifname: Some(i),
            } => write!(f, "cni:{container_id}/{i}"),
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
        assert_eq!(
            Target::parse("docker:web_1").unwrap(),
            Target::Docker("web_1".into())
        );
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "pid:x",
            "pid:0",
            "docker:",
            "docker:a/b",
            "podman:web",
            "a/b",
            "netns:",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
