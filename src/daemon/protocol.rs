//! The daemon's local API: one JSON request per connection, one JSON reply,
//! over a Unix socket only root can open. The CLI side is synchronous, so
//! commands that never need the daemon never start a runtime.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::AttachSpec;

pub const DEFAULT_SOCKET: &str = "/run/plumb/plumbd.sock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Attach to a DHCP network: the daemon runs the client.
    Attach { spec: Box<AttachSpec> },
    /// Detach (releasing any lease first).
    Detach {
        target: String,
        network: Option<String>,
    },
    /// Remove attachments whose namespace is gone, releasing their leases.
    Gc,
    /// Re-create what the kernel lost, then resume every lease.
    Restore,
    /// The leases the daemon keeps.
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(Value),
    Error(String),
}

/// Whether a daemon answers on `socket`.
pub fn is_running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Send one request and wait for its reply (an attach may wait for a DHCP
/// server as long as the daemon's acquire timeout).
pub fn call(socket: &Path, req: &Request) -> Result<Value> {
    let err = |reason: String| Error::Daemon {
        socket: socket.display().to_string(),
        reason,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        err(format!(
            "not reachable ({e}); start it with `plumb daemon` or `systemctl start plumbd`"
        ))
    })?;
    let mut line = serde_json::to_string(req).map_err(|e| err(e.to_string()))?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| err(format!("send: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(|e| err(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| err(format!("receive: {e}")))?;
    match serde_json::from_str::<Reply>(&answer) {
        Ok(Reply::Ok(v)) => Ok(v),
        // The daemon's error text already says what failed.
        Ok(Reply::Error(e)) => Err(Error::Conflict(e)),
        Err(_) if answer.is_empty() => Err(err("closed the connection without an answer".into())),
        Err(e) => Err(err(format!("bad answer: {e}"))),
    }
}
