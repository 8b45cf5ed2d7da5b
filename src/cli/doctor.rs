//! `plumb doctor`: how plumb stands with the other tools on this host, as
//! JSON: for IPv4 and IPv6, which iptables backend holds the filter table
//! (iptables-nft, legacy x_tables, both, none), whether Docker's chains are
//! there, where plumb's accepts belong and whether they are all in place;
//! and whether a daemon runs to keep published ports bound.

use serde_json::json;

use super::print_json;
use crate::daemon::protocol::Daemon;
use crate::engine::Engine;
use crate::error::Result;
use crate::policy::iptables;

pub fn run(engine: &Engine, plumbd: &Daemon) -> Result<()> {
    let networks: Vec<_> = engine.networks()?.into_iter().map(|n| n.network).collect();
    let daemon = crate::daemon::protocol::is_running(plumbd.socket);
    print_json(&json!({
        "iptables": iptables::report(&networks)?,
        "daemon": daemon,
        "published_ports_held": daemon,
    }));
    Ok(())
}
