//! The daemon's ear on the host's links: the kernel's notifications say
//! when a bridge, a port, an uplink, an address or a route plumb made went
//! away or went down, and what plumb made is repaired within a second (a 100 ms
//! quiet period gathers a burst: a bridge deleted takes its ports off with
//! it). Notifications lost to an overflowing queue make a whole restore.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Repeated, open_engine, supervise};
use crate::engine::RestoreReport;
use crate::error::{Error, Result};
use crate::netlink::monitor::{Change, Monitor};
use crate::policy::ports::Holds;

/// How long the kernel must be quiet before a burst of changes is acted on.
const SETTLE: Duration = Duration::from_millis(100);
/// How long a burst is gathered at most.
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);

/// Start the watcher thread, with an engine of its own.
pub fn watch(state_dir: &Path, holds: &Arc<std::sync::Mutex<Holds>>) -> Result<()> {
    let (state_dir, holds) = (state_dir.to_path_buf(), holds.clone());
    supervise::thread("links", move || {
        let mut monitor =
            Monitor::open().map_err(|e| Error::kernel("listen to the host's link changes", e))?;
        let mut engine = open_engine(&state_dir, &holds)?;
        let mut errors = Repeated::default();
        loop {
            crate::failpoint::panic_once("links");
            let mut changes =
                gather(&mut monitor).map_err(|e| Error::kernel("read link notifications", e))?;
            changes.sort_unstable();
            changes.dedup();
            let report = if changes.contains(&Change::Unknown) {
                engine.restore()
            } else {
                let names: Vec<String> = changes
                    .into_iter()
                    .filter_map(|c| match c {
                        Change::Link(n) => Some(n),
                        _ => None,
                    })
                    .collect();
                engine.repair_links(&names).and_then(|mut r| {
                    // Lab routes and the default routes of egress tables,
                    // after any change: the kernel drops an interface's
                    // IPv4 routes when it goes down without a word.
                    engine.repair_host_routes(&mut r)?;
                    r.repaired.extend(engine.repair_egress()?);
                    // A parent that came back, without its shims.
                    r.repaired.extend(engine.repair_shims()?);
                    Ok(r)
                })
            };
            match report {
                Ok(r) => {
                    errors.ended("repair");
                    log(&r);
                }
                Err(e) => {
                    let _ = errors.failed("repair", &e.to_string());
                }
            }
        }
    })
}

/// Wait for a change, then for the kernel to be quiet for [`SETTLE`], or
/// [`SETTLE_AT_MOST`] at most (a router whose routes never stop changing
/// still gets its repairs).
fn gather(monitor: &mut Monitor) -> crate::netlink::NlResult<Vec<Change>> {
    let mut changes = Vec::new();
    while changes.is_empty() {
        changes = monitor.wait(Duration::from_secs(60))?;
    }
    let deadline = std::time::Instant::now() + SETTLE_AT_MOST;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(changes);
        }
        let more = monitor.wait(SETTLE.min(left))?;
        if more.is_empty() {
            return Ok(changes);
        }
        changes.extend(more);
    }
}

fn log(r: &RestoreReport) {
    for line in &r.repaired {
        tracing::info!("repaired {line}");
    }
    for line in &r.removed {
        tracing::info!("removed {line}: its namespace is gone");
    }
    for line in &r.errors {
        tracing::warn!("repair: {line}");
    }
}
