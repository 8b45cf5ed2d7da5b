//! The daemon's local API: one JSON request per connection, one JSON reply,
//! over a Unix socket only root can open. The CLI side is synchronous, so
//! commands that never need the daemon never start a runtime.
//!
//! Every request carries its [`Scope`]: a daemon answers only commands that
//! share its state directory and host network namespace. One started for
//! another (a test's fake host, another state directory) says so, and the
//! command does its work by itself or, if only a daemon can do it, fails
//! naming both scopes.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::AttachSpec;
use crate::netns::NsHandle;

pub const DEFAULT_SOCKET: &str = "/run/plumb/plumbd.sock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Attach; on a DHCP network the daemon also runs the client.
    Attach {
        spec: Box<AttachSpec>,
        /// The identity of the namespace a name or path led the client to:
        /// the daemon finds it by that where the name or path does not
        /// lead there (it runs in another mount namespace).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<String>,
        /// What the attachment belongs to (a topology file's
        /// `topology:NAME`), as `plumb down` finds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Detach (releasing any lease first).
    Detach {
        target: String,
        network: Option<String>,
    },
    /// Make cluster network `network` on this host if the cluster has it
    /// and the host does not (an on-demand network), before an attach
    /// that needs it here (a CNI ADD).
    Bring { network: String },
    /// Remove attachments whose namespace is gone, releasing their leases.
    Gc,
    /// Re-create what the kernel lost, then resume every lease.
    Restore,
    /// The leases the daemon keeps.
    Status,
}

/// Where a command or a daemon works: the state directory (canonical) and
/// the host network namespace (`ns:DEV:INODE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub state_dir: PathBuf,
    pub netns: String,
}

impl Scope {
    /// The scope of the calling thread with `state_dir`.
    pub fn current(state_dir: &Path) -> Result<Scope> {
        let ns =
            NsHandle::current().map_err(|e| Error::io("open the host network namespace", e))?;
        Ok(Scope {
            state_dir: std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.into()),
            netns: ns.identity(),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state directory {} in network namespace {}",
            self.state_dir.display(),
            self.netns
        )
    }
}

/// A request line as the daemon reads it, checked as far as it can be
/// without the daemon's state: JSON of an [`Envelope`], and an attach's
/// options valid. The error says what is wrong, for the reply.
pub fn parse_request(line: &str) -> std::result::Result<Envelope, String> {
    let call: Envelope = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    if let Request::Attach { spec, .. } = &call.request {
        crate::target::Target::parse(&spec.target).map_err(|e| e.to_string())?;
        crate::model::validate_name("network", &spec.network).map_err(|e| e.to_string())?;
        spec.validate().map_err(|e| e.to_string())?;
    }
    Ok(call)
}

/// What goes over the socket: a request and who asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub scope: Scope,
    pub request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    Ok(Value),
    Error(String),
    /// The daemon serves another scope (this one) and did nothing.
    OtherScope(Scope),
}

/// Whether a daemon answers on `socket` (whatever scope it serves).
pub fn is_running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// The daemon as one command sees it: the socket it would answer on and
/// the state directory the command works in.
pub struct Daemon<'a> {
    pub socket: &'a Path,
    pub state_dir: &'a Path,
}

/// Why a request was not served.
enum Unserved {
    Unreachable(std::io::Error),
    OtherScope { daemon: Scope, ours: Scope },
}

impl Daemon<'_> {
    /// Ask the daemon, if one serving this command's scope answers; `None`
    /// when none does, for the command to do the work itself.
    pub fn try_call(&self, req: &Request) -> Result<Option<Value>> {
        match self.exchange(req)? {
            Ok(v) => Ok(Some(v)),
            Err(Unserved::Unreachable(_)) => Ok(None),
            Err(Unserved::OtherScope { daemon, ours }) => {
                tracing::debug!("the daemon serves {daemon}, not {ours}; working alone");
                Ok(None)
            }
        }
    }

    /// Ask the daemon (an attach may wait for a DHCP server as long as its
    /// acquire timeout); an error says why none could answer.
    pub fn call(&self, req: &Request) -> Result<Value> {
        match self.exchange(req)? {
            Ok(v) => Ok(v),
            Err(Unserved::Unreachable(e)) => Err(self.error(format!(
                "not reachable ({e}); start it with `plumb daemon` or `systemctl start plumbd`"
            ))),
            Err(Unserved::OtherScope { daemon, ours }) => Err(self.error(format!(
                "serves {daemon}, not this command's {ours}; start one with --state-dir and \
                 --socket of its own there"
            ))),
        }
    }

    fn error(&self, reason: String) -> Error {
        Error::Daemon {
            socket: self.socket.display().to_string(),
            reason,
        }
    }

    fn exchange(&self, req: &Request) -> Result<std::result::Result<Value, Unserved>> {
        let mut stream = match UnixStream::connect(self.socket) {
            Ok(s) => s,
            Err(e) => return Ok(Err(Unserved::Unreachable(e))),
        };
        let envelope = Envelope {
            scope: Scope::current(self.state_dir)?,
            request: req.clone(),
        };
        let mut line = serde_json::to_string(&envelope).map_err(|e| self.error(e.to_string()))?;
        line.push('\n');
        stream
            .write_all(line.as_bytes())
            .map_err(|e| self.error(format!("send: {e}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(300)))
            .map_err(|e| self.error(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(|e| self.error(format!("receive: {e}")))?;
        match serde_json::from_str::<Reply>(&answer) {
            Ok(Reply::Ok(v)) => Ok(Ok(v)),
            // The daemon's error text already says what failed.
            Ok(Reply::Error(e)) => Err(Error::Conflict(e)),
            Ok(Reply::OtherScope(daemon)) => Ok(Err(Unserved::OtherScope {
                daemon,
                ours: envelope.scope,
            })),
            Err(_) if answer.is_empty() => {
                Err(self.error("closed the connection without an answer".into()))
            }
            Err(e) => Err(self.error(format!("bad answer: {e}"))),
        }
    }
}
