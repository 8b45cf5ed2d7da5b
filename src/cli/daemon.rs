use std::path::Path;
use std::time::Duration;

use clap::Args;

use crate::daemon::protocol::{Daemon, Request};
use crate::daemon::{self, Options};
use crate::engine::Engine;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Seconds an attach waits for a DHCP server before it is rolled back.
    #[arg(long, default_value_t = 20)]
    pub dhcp_timeout: u64,
    /// Seconds between checks for namespaces that went away.
    #[arg(long, default_value_t = 2)]
    pub reconcile_interval: u64,
    /// Serve Docker as the network driver of this name (`docker network
    /// create -d NAME`), on /run/docker/plugins/NAME.sock; `none`: not.
    #[arg(long, default_value = "plumb", value_name = "NAME|none")]
    pub docker_plugin: String,
    /// Where the resolvers are that plumb's DNS forwards names it does not
    /// know to (its `nameserver` lines).
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: std::path::PathBuf,
}

pub fn run(state_dir: &Path, socket: &Path, args: DaemonArgs) -> Result<()> {
    for (field, v) in [
        ("--dhcp-timeout", args.dhcp_timeout),
        ("--reconcile-interval", args.reconcile_interval),
    ] {
        if v == 0 || v > 3600 {
            return Err(Error::invalid(field, v, "must be 1 to 3600 seconds"));
        }
    }
    let docker_plugin = match args.docker_plugin.as_str() {
        "none" => None,
        name => {
            crate::model::validate_name("--docker-plugin", name)?;
            Some(name.to_string())
        }
    };
    daemon::run(Options {
        docker_plugin,
        state_dir: state_dir.to_path_buf(),
        socket: socket.to_path_buf(),
        acquire_timeout: Duration::from_secs(args.dhcp_timeout),
        reconcile_interval: Duration::from_secs(args.reconcile_interval),
        resolv_conf: args.resolv_conf,
    })
}

/// Undo or finish what dead plumb processes left half done, delete
/// orphaned interfaces, then remove the attachments whose namespace is gone
/// (through a daemon when one runs: their DHCP leases are its to release).
pub fn gc(engine: &mut Engine, daemon: &Daemon) -> Result<()> {
    let recovery = engine.recover()?;
    let orphans = engine.sweep_orphans()?;
    for line in &recovery.done {
        outln!("{line}");
    }
    for o in &orphans {
        outln!("removed {o}");
    }
    let removed: Vec<(String, String, String)> = if let Some(v) = daemon.try_call(&Request::Gc)? {
        super::listed_keys(&v)
    } else {
        let mut out = Vec::new();
        for a in engine.gone_attachments()? {
            engine.detach_attachment(&a)?;
            out.push((a.target, a.network, a.ifname));
        }
        out
    };
    for (target, network, ifname) in &removed {
        outln!("removed {target} from {network} ({ifname}): its namespace is gone");
    }
    if !recovery.errors.is_empty() {
        return Err(Error::Conflict(format!(
            "recovery incomplete (tried again by the next plumb command):\n  {}",
            recovery.errors.join("\n  ")
        )));
    }
    if removed.is_empty() && recovery.done.is_empty() && orphans.is_empty() {
        outln!("nothing to remove");
    }
    Ok(())
}

/// Through a daemon of this scope when one runs (its lease tasks must learn
/// of the new interfaces), else here.
pub fn restore(engine: &mut Engine, daemon: &Daemon) -> Result<()> {
    let report = if let Some(v) = daemon.try_call(&Request::Restore)? {
        serde_json::from_value(v)
            .map_err(|e| Error::Conflict(format!("daemon answered an unreadable report: {e}")))?
    } else {
        engine.restore()?
    };
    for line in &report.repaired {
        outln!("restored {line}");
    }
    for line in &report.removed {
        outln!("removed {line}: its namespace is gone");
    }
    if report.repaired.is_empty() && report.removed.is_empty() && report.errors.is_empty() {
        outln!("nothing to restore");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "restore incomplete:\n  {}",
            report.errors.join("\n  ")
        )))
    }
}
