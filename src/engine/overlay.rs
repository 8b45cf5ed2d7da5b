//! A cluster network's overlay, programmed from the cluster's record of
//! the other hosts' containers (the daemon's cluster task reads it).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Engine;
use crate::driver::overlay::{self, Remote};
use crate::error::{Error, Result};
use crate::model::SubnetSpec;
use crate::policy::{elements, firewall};
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
    /// Mirror the other hosts' containers on cluster networks, by the
    /// policy selectors naming them, into the store and the sets of the
    /// selectors rules use; true if anything changed.
    pub fn set_cluster_selectors(&mut self, members: BTreeSet<(String, IpAddr)>) -> Result<bool> {
        let (gone, new) = self.store.write(|tx| {
            let old = store::host_extras::cluster_selectors(tx)?;
            if old == members {
                return Ok((Vec::new(), Vec::new()));
            }
            store::host_extras::set_cluster_selectors(tx, &members)?;
            let gone: Vec<_> = old.difference(&members).cloned().collect();
            let new: Vec<_> = members.difference(&old).cloned().collect();
            Ok((gone, new))
        })?;
        if gone.is_empty() && new.is_empty() {
            return Ok(false);
        }
        let keys: Vec<String> = gone.iter().chain(&new).map(|(k, _)| k.clone()).collect();
        let used = store::used_selectors(self.store.read(), &keys)?;
        let elements = |pairs: &[(String, IpAddr)]| -> Vec<_> {
            pairs
                .iter()
                .filter(|(k, _)| used.contains(k))
                .map(|(k, a)| firewall::selector_element(k, *a))
                .collect()
        };
        elements::withdraw(&elements(&gone))?;
        elements::apply(&[], &elements(&new))?;
        Ok(true)
    }

    /// Mirror the cluster's address blocks of `network`.
    pub fn set_cluster_blocks(
        &mut self,
        network: &str,
        blocks: &[store::host_extras::Block],
    ) -> Result<()> {
        // Unchanged, as at nearly every pass: no write.
        let mirrored = store::host_extras::cluster_blocks(self.store.read(), network)?;
        if mirrored.len() == blocks.len() && blocks.iter().all(|b| mirrored.contains(b)) {
            return Ok(());
        }
        self.store
            .write(|tx| store::host_extras::set_cluster_blocks(tx, network, blocks))
    }

    /// Per subnet of `network`, how many addresses this host's blocks of
    /// it have free.
    pub fn free_in_own_blocks(&self, network: &str) -> Result<Vec<(IpNet, u128)>> {
        let conn = self.store.read();
        let net = store::require_network(conn, network)?.network;
        let taken = allocated(conn, network)?;
        let blocks = store::host_extras::cluster_blocks(conn, network)?;
        Ok(net
            .subnets
            .iter()
            .map(|sub| {
                let free = blocks
                    .iter()
                    .filter(|b| b.mine && sub.subnet.contains(&b.block.network()))
                    .map(|b| free_in_block(b.block, sub, &taken))
                    .sum();
                (sub.subnet, free)
            })
            .collect())
    }

    /// The addresses taken on `network` on this host: all of them, and
    /// those given to containers (not the host's, nor `--aux-address`es).
    pub fn allocated_on(&self, network: &str) -> Result<(Vec<IpAddr>, Vec<IpAddr>)> {
        let conn = self.store.read();
        Ok((allocated(conn, network)?, given_out(conn, network)?))
    }

    /// Stop giving out addresses of `block` of `network`, if none here is
    /// in it: true if so. In one transaction with the check, so an attach
    /// either took an address of it first (and it stays) or finds it gone.
    pub fn give_up_block(&mut self, network: &str, block: IpNet) -> Result<bool> {
        self.store.write(|tx| {
            if given_out(tx, network)?.iter().any(|a| block.contains(a)) {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM cluster_blocks WHERE network = ?1 AND block = ?2",
                rusqlite::params![network, block.to_string()],
            )?;
            Ok(true)
        })
    }
}

fn allocated(conn: &rusqlite::Connection, network: &str) -> Result<Vec<IpAddr>> {
    let mut stmt = conn.prepare_cached("SELECT address FROM allocations WHERE network = ?1")?;
    let rows = stmt.query_map([network], |r| r.get::<_, String>(0))?;
    Ok(rows.filter_map(|a| a.ok()?.parse().ok()).collect())
}

fn given_out(conn: &rusqlite::Connection, network: &str) -> Result<Vec<IpAddr>> {
    let mut stmt = conn.prepare_cached(
        "SELECT address FROM allocations WHERE network = ?1 \
         AND owner != 'host' AND owner NOT LIKE 'aux:%'",
    )?;
    let rows = stmt.query_map([network], |r| r.get::<_, String>(0))?;
    Ok(rows.filter_map(|a| a.ok()?.parse().ok()).collect())
}

/// The addresses of `block` (of subnet `sub`) neither taken nor the
/// subnet's own (network, broadcast, gateway).
pub fn free_in_block(block: IpNet, sub: &SubnetSpec, taken: &[IpAddr]) -> u128 {
    let size: u128 = 1u128 << (block.max_prefix_len() - block.prefix_len());
    let unusable = [
        Some(sub.subnet.network()),
        Some(sub.subnet.broadcast()),
        sub.gateway,
    ]
    .into_iter()
    .flatten()
    .filter(|a| block.contains(a) && !taken.contains(a))
    .count() as u128;
    let used = taken.iter().filter(|a| block.contains(*a)).count() as u128;
    size.saturating_sub(unusable + used)
}
