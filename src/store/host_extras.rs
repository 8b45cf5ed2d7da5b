//! `plumb egress` rules and `plumb shim`s in the store (see
//! [`crate::policy::egress`], [`crate::driver::host_shim`]), and what the
//! daemon mirrors of a cluster (address blocks, other hosts' containers).

use std::collections::BTreeSet;
use std::net::IpAddr;

use rusqlite::{Connection, Transaction, params};

use super::{decode, encode};
use crate::driver::host_shim::Shim;
use crate::error::Result;
use crate::policy::egress::EgressRule;

pub fn egress_rules(conn: &Connection) -> Result<Vec<EgressRule>> {
    let mut stmt = conn.prepare_cached("SELECT data FROM egress_rules ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|data| decode(&data?)).collect()
}

/// Record `rule` under a new ID, which is returned (and set in it).
pub fn insert_egress_rule(
    tx: &Transaction,
    rule: &mut EgressRule,
    owner: Option<&str>,
) -> Result<u32> {
    let next: u32 = tx.query_row(
        "SELECT COALESCE(MAX(id), 0) + 1 FROM egress_rules",
        [],
        |r| r.get(0),
    )?;
    rule.id = next;
    tx.execute(
        "INSERT INTO egress_rules (id, source, data, table_id, priority, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![next, rule.source.to_string(), encode(rule), rule.table, rule.priority, owner],
    )?;
    Ok(next)
}

pub fn update_egress_rule(tx: &Transaction, rule: &EgressRule) -> Result<()> {
    tx.execute(
        "UPDATE egress_rules SET data = ?2 WHERE id = ?1",
        params![rule.id, encode(rule)],
    )?;
    Ok(())
}

pub fn delete_egress_rule(tx: &Transaction, id: u32) -> Result<()> {
    tx.execute("DELETE FROM egress_rules WHERE id = ?1", params![id])?;
    Ok(())
}

pub fn shims(conn: &Connection) -> Result<Vec<Shim>> {
    let mut stmt = conn.prepare_cached("SELECT data FROM shims ORDER BY id")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|data| decode(&data?)).collect()
}

/// Record `shim` under a new ID, set in it.
pub fn insert_shim(tx: &Transaction, shim: &mut Shim, owner: Option<&str>) -> Result<()> {
    shim.id = tx.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM shims", [], |r| {
        r.get(0)
    })?;
    tx.execute(
        "INSERT INTO shims (id, name, data, owner) VALUES (?1, ?2, ?3, ?4)",
        params![shim.id, shim.name, encode(shim), owner],
    )?;
    Ok(())
}

pub fn delete_shim(tx: &Transaction, id: u32) -> Result<()> {
    tx.execute("DELETE FROM shims WHERE id = ?1", params![id])?;
    Ok(())
}

/// A cluster network's address block, as the cluster's store said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub block: ipnet::IpNet,
    pub host: String,
    pub mine: bool,
}

pub fn cluster_blocks(conn: &Connection, network: &str) -> Result<Vec<Block>> {
    let mut stmt = conn.prepare_cached(
        "SELECT block, host, mine FROM cluster_blocks WHERE network = ?1 ORDER BY block",
    )?;
    let rows = stmt.query_map(params![network], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (block, host, mine) = row?;
        if let Ok(block) = block.parse() {
            out.push(Block { block, host, mine });
        }
    }
    Ok(out)
}

/// Mirror the cluster's blocks of `network`.
pub fn set_cluster_blocks(tx: &Transaction, network: &str, blocks: &[Block]) -> Result<()> {
    tx.execute(
        "DELETE FROM cluster_blocks WHERE network = ?1",
        params![network],
    )?;
    for b in blocks {
        tx.execute(
            "INSERT INTO cluster_blocks (network, block, host, mine) VALUES (?1, ?2, ?3, ?4)",
            params![network, b.block.to_string(), b.host, b.mine],
        )?;
    }
    Ok(())
}

/// The other hosts' containers' addresses, by the selectors naming them.
pub fn cluster_selectors(conn: &Connection) -> Result<BTreeSet<(String, IpAddr)>> {
    let mut stmt = conn.prepare_cached("SELECT selector, address FROM cluster_selectors")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = BTreeSet::new();
    for row in rows {
        let (selector, address) = row?;
        if let Ok(address) = address.parse() {
            out.insert((selector, address));
        }
    }
    Ok(out)
}

pub fn set_cluster_selectors(tx: &Transaction, members: &BTreeSet<(String, IpAddr)>) -> Result<()> {
    tx.execute("DELETE FROM cluster_selectors", [])?;
    let mut stmt =
        tx.prepare_cached("INSERT INTO cluster_selectors (selector, address) VALUES (?1, ?2)")?;
    for (selector, address) in members {
        stmt.execute(params![selector, address.to_string()])?;
    }
    Ok(())
}
