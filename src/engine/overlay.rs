//! A cluster network's overlay, programmed from the cluster's record of
//! the other hosts' containers (the daemon's cluster task reads it).

use super::Engine;
use crate::driver::overlay::{self, Remote};
use crate::error::{Error, Result};
use crate::store;

impl Engine {
    /// Make cluster network `network`'s overlay reach exactly `remotes`
    /// (the containers of the other hosts); what it changed.
    pub fn program_overlay(&mut self, network: &str, remotes: &[Remote]) -> Result<Vec<String>> {
        let net = store::require_network(self.store.read(), network)?.network;
        let Some(o) = net.bridge().and_then(|b| b.overlay.clone()) else {
            return Err(Error::Conflict(format!(
                "network `{network}` has no overlay"
            )));
        };
        self.as_repair(|e| overlay::program(&mut e.host, &o, remotes))
    }
}
