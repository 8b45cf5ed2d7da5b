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

impl Engine {
    /// Mirror the cluster's address blocks of `network`.
    pub fn set_cluster_blocks(
        &mut self,
        network: &str,
        blocks: &[store::host_extras::Block],
    ) -> Result<()> {
        self.store
            .write(|tx| store::host_extras::set_cluster_blocks(tx, network, blocks))
    }

    /// How many addresses this host's blocks of `network` have free.
    pub fn free_in_own_blocks(&self, network: &str) -> Result<u128> {
        let conn = self.store.read();
        let net = store::require_network(conn, network)?.network;
        let mut stmt = conn.prepare_cached("SELECT address FROM allocations WHERE network = ?1")?;
        let taken: Vec<std::net::IpAddr> = stmt
            .query_map([network], |r| r.get::<_, String>(0))?
            .filter_map(|a| a.ok()?.parse().ok())
            .collect();
        let mut free = 0u128;
        for b in store::host_extras::cluster_blocks(conn, network)?
            .into_iter()
            .filter(|b| b.mine)
        {
            let Some(sub) = net
                .subnets
                .iter()
                .find(|s| s.subnet.contains(&b.block.network()))
            else {
                continue;
            };
            let size: u128 = 1u128 << (b.block.max_prefix_len() - b.block.prefix_len());
            let unusable = [
                Some(sub.subnet.network()),
                Some(sub.subnet.broadcast()),
                sub.gateway,
            ]
            .into_iter()
            .flatten()
            .filter(|a| b.block.contains(a))
            .count() as u128;
            let used = taken.iter().filter(|a| b.block.contains(*a)).count() as u128;
            free += size.saturating_sub(unusable + used);
        }
        Ok(free)
    }
}
