//! What plumb's Docker network driver keeps: Docker's networks (the plumb
//! network each one is, once Docker's name for it is known) and endpoints
//! (the attach each one asked for, and its attachment once made); and what
//! its IPAM driver keeps: pools and the addresses handed out of them.

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::error::{Error, Result};
use crate::model::{AttachSpec, NetworkSpec};

/// A Docker network on plumb's driver.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerNetwork {
    /// Docker's network ID.
    pub id: String,
    /// The plumb network, once made (it takes Docker's name for it).
    pub name: Option<String>,
    /// What Docker's CreateNetwork asked for (its name a placeholder).
    pub spec: NetworkSpec,
}

/// A Docker endpoint on a plumb network.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub spec: AttachSpec,
    /// The attachment, once made.
    pub host_ifname: Option<String>,
    /// Where Docker moves its interface (Join's sandbox key), once joined.
    pub sandbox: Option<String>,
}

fn json<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Conflict(format!("{what}: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Conflict(format!("stored {what}: {e}")))
}

pub fn insert_network(tx: &Transaction, n: &DockerNetwork) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO docker_networks (id, name, spec) VALUES (?1, ?2, ?3)",
        params![n.id, n.name, json("network spec", &n.spec)?],
    )?;
    Ok(())
}

type NetworkRow = (String, Option<String>, String);

fn network_row(r: &rusqlite::Row) -> rusqlite::Result<NetworkRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn to_network((id, name, spec): NetworkRow) -> Result<DockerNetwork> {
    Ok(DockerNetwork {
        id,
        name,
        spec: parse("network spec", &spec)?,
    })
}

pub fn network(conn: &Connection, id: &str) -> Result<Option<DockerNetwork>> {
    conn.query_row(
        "SELECT id, name, spec FROM docker_networks WHERE id = ?1",
        params![id],
        network_row,
    )
    .optional()?
    .map(to_network)
    .transpose()
}

pub fn networks(conn: &Connection) -> Result<Vec<DockerNetwork>> {
    conn.prepare_cached("SELECT id, name, spec FROM docker_networks ORDER BY id")?
        .query_map([], network_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(to_network)
        .collect()
}

/// The Docker network that plumb network `name` is, if any.
pub fn network_named(conn: &Connection, name: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT id FROM docker_networks WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn delete_network(tx: &Transaction, id: &str) -> Result<()> {
    tx.execute("DELETE FROM docker_networks WHERE id = ?1", params![id])?;
    Ok(())
}

pub fn insert_endpoint(tx: &Transaction, e: &Endpoint) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO docker_endpoints (id, network_id, spec, host_ifname, sandbox)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            e.id,
            e.network_id,
            json("endpoint spec", &e.spec)?,
            e.host_ifname,
            e.sandbox
        ],
    )?;
    Ok(())
}

type EndpointRow = (String, String, String, Option<String>, Option<String>);

fn endpoint_row(r: &rusqlite::Row) -> rusqlite::Result<EndpointRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_endpoint((id, network_id, spec, host_ifname, sandbox): EndpointRow) -> Result<Endpoint> {
    Ok(Endpoint {
        id,
        network_id,
        spec: parse("endpoint spec", &spec)?,
        host_ifname,
        sandbox,
    })
}

pub fn endpoint(conn: &Connection, id: &str) -> Result<Option<Endpoint>> {
    conn.query_row(
        "SELECT id, network_id, spec, host_ifname, sandbox FROM docker_endpoints WHERE id = ?1",
        params![id],
        endpoint_row,
    )
    .optional()?
    .map(to_endpoint)
    .transpose()
}

pub fn endpoints_of(conn: &Connection, network_id: &str) -> Result<Vec<Endpoint>> {
    conn.prepare_cached(
        "SELECT id, network_id, spec, host_ifname, sandbox FROM docker_endpoints
         WHERE network_id = ?1 ORDER BY id",
    )?
    .query_map(params![network_id], endpoint_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?
    .into_iter()
    .map(to_endpoint)
    .collect()
}

pub fn endpoints(conn: &Connection) -> Result<Vec<Endpoint>> {
    conn.prepare_cached(
        "SELECT id, network_id, spec, host_ifname, sandbox FROM docker_endpoints ORDER BY id",
    )?
    .query_map([], endpoint_row)?
    .collect::<rusqlite::Result<Vec<_>>>()?
    .into_iter()
    .map(to_endpoint)
    .collect()
}

/// Record where Docker moves endpoint `id`'s interface (None: nowhere).
pub fn set_sandbox(tx: &Transaction, id: &str, sandbox: Option<&str>) -> Result<()> {
    tx.execute(
        "UPDATE docker_endpoints SET sandbox = ?2 WHERE id = ?1",
        params![id, sandbox],
    )?;
    Ok(())
}

/// Whether attachment `host_ifname` is a Docker endpoint's.
pub fn is_endpoint(conn: &Connection, host_ifname: &str) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM docker_endpoints WHERE host_ifname = ?1",
            params![host_ifname],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Forget the endpoint whose attachment is `host_ifname`, if any.
pub fn forget_endpoint_of(tx: &Transaction, host_ifname: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM docker_endpoints WHERE host_ifname = ?1",
        params![host_ifname],
    )?;
    Ok(())
}

pub fn delete_endpoint(tx: &Transaction, id: &str) -> Result<()> {
    tx.execute("DELETE FROM docker_endpoints WHERE id = ?1", params![id])?;
    Ok(())
}

/// A pool of plumb's IPAM driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub id: String,
    pub pool: IpNet,
    /// `--ip-range`: where endpoints' addresses come from.
    pub sub_pool: Option<IpNet>,
    /// The Docker network whose subnet it is, once created.
    pub network_id: Option<String>,
}

/// The lease the LAN's DHCP server gave for an address of a DHCP pool, and
/// who asked for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolLease {
    /// The MAC Docker chose for the endpoint.
    pub mac: crate::model::Mac,
    /// Option 61, hex.
    pub client_id: String,
    pub lease: crate::ipam::dhcp::Lease,
}

fn cidr(what: &str, s: &str) -> Result<IpNet> {
    s.parse()
        .map_err(|_| Error::Conflict(format!("stored {what} `{s}` is not a CIDR")))
}

type PoolRow = (String, String, Option<String>, Option<String>);

const POOL_COLUMNS: &str = "SELECT id, pool, sub_pool, network_id FROM docker_pools";

fn pool_row(r: &rusqlite::Row) -> rusqlite::Result<PoolRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_pool((id, pool, sub, network_id): PoolRow) -> Result<Pool> {
    Ok(Pool {
        id,
        pool: cidr("pool", &pool)?,
        sub_pool: sub.map(|s| cidr("sub-pool", &s)).transpose()?,
        network_id,
    })
}

pub fn pool(conn: &Connection, id: &str) -> Result<Option<Pool>> {
    conn.query_row(
        &format!("{POOL_COLUMNS} WHERE id = ?1"),
        params![id],
        pool_row,
    )
    .optional()?
    .map(to_pool)
    .transpose()
}

pub fn pools(conn: &Connection) -> Result<Vec<Pool>> {
    conn.prepare_cached(&format!("{POOL_COLUMNS} ORDER BY id"))?
        .query_map([], pool_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(to_pool)
        .collect()
}

/// Pool `id` is the subnet of Docker network `network_id`.
pub fn set_pool_network(tx: &Transaction, id: &str, network_id: &str) -> Result<()> {
    tx.execute(
        "UPDATE docker_pools SET network_id = ?2 WHERE id = ?1",
        params![id, network_id],
    )?;
    Ok(())
}

/// One more network uses pool `p` (recorded if new).
pub fn hold_pool(tx: &Transaction, p: &Pool) -> Result<()> {
    tx.execute(
        "INSERT INTO docker_pools (id, pool, sub_pool, refs) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (id) DO UPDATE SET refs = refs + 1",
        params![p.id, p.pool.to_string(), p.sub_pool.map(|s| s.to_string())],
    )?;
    Ok(())
}

/// One network less uses pool `id`; the last one takes it and its
/// addresses away.
pub fn release_pool(tx: &Transaction, id: &str) -> Result<()> {
    tx.execute(
        "UPDATE docker_pools SET refs = refs - 1 WHERE id = ?1",
        params![id],
    )?;
    tx.execute(
        "DELETE FROM docker_pool_addresses WHERE pool_id = ?1
         AND (SELECT refs FROM docker_pools WHERE id = ?1) <= 0",
        params![id],
    )?;
    tx.execute(
        "DELETE FROM docker_pools WHERE id = ?1 AND refs <= 0",
        params![id],
    )?;
    Ok(())
}

/// The addresses `sql` lists for `key` (unparsable ones left out).
fn addresses(conn: &Connection, sql: &str, key: &str) -> Result<Vec<IpAddr>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(params![key], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect())
}

pub fn pool_addresses(conn: &Connection, id: &str) -> Result<Vec<IpAddr>> {
    addresses(
        conn,
        "SELECT address FROM docker_pool_addresses WHERE pool_id = ?1",
        id,
    )
}

/// Hand out `address` of pool `id` (again: Docker's gateway request).
pub fn take_address(tx: &Transaction, id: &str, address: IpAddr) -> Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO docker_pool_addresses (pool_id, address) VALUES (?1, ?2)",
        params![id, address.to_string()],
    )?;
    Ok(())
}

/// Hand out `address` of DHCP pool `id`, leased as `lease` says.
pub fn take_leased_address(
    tx: &Transaction,
    id: &str,
    address: IpAddr,
    lease: &PoolLease,
) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO docker_pool_addresses (pool_id, address, lease) VALUES (?1, ?2, ?3)",
        params![id, address.to_string(), json("pool lease", lease)?],
    )?;
    Ok(())
}

/// The lease of `address` of DHCP pool `id`, if it has one.
pub fn pool_lease(conn: &Connection, id: &str, address: IpAddr) -> Result<Option<PoolLease>> {
    conn.query_row(
        "SELECT lease FROM docker_pool_addresses WHERE pool_id = ?1 AND address = ?2",
        params![id, address.to_string()],
        |r| r.get::<_, Option<String>>(0),
    )
    .optional()?
    .flatten()
    .map(|l| parse("pool lease", &l))
    .transpose()
}

pub fn give_back_address(tx: &Transaction, id: &str, address: IpAddr) -> Result<()> {
    tx.execute(
        "DELETE FROM docker_pool_addresses WHERE pool_id = ?1 AND address = ?2",
        params![id, address.to_string()],
    )?;
    Ok(())
}

/// The addresses plumb has allocated on network `network` (its host's,
/// reserved ones, attachments').
pub fn allocated(conn: &Connection, network: &str) -> Result<Vec<IpAddr>> {
    addresses(
        conn,
        "SELECT address FROM allocations WHERE network = ?1",
        network,
    )
}
