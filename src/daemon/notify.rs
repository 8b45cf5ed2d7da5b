//! systemd's readiness protocol (`Type=notify`, sd_notify(3)): the unit
//! orders dockerd after plumb, and with this dockerd starts only once
//! plumb's sockets are bound, not when its process is merely running (it
//! restores the host first, and dockerd gives a missing plugin about 30 s).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Say READY=1 to the service manager, if one listens.
pub fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        // `@name` is an abstract socket.
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(&path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)
    })();
    match sent {
        Ok(_) => tracing::debug!("told the service manager plumb is ready"),
        Err(e) => tracing::warn!("NOTIFY_SOCKET {}: {e}", path.to_string_lossy()),
    }
}
