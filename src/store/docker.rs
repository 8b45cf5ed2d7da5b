//! What plumb's Docker network driver keeps: Docker's networks (the plumb
//! network each one is, once Docker's name for it is known) and endpoints
//! (the attach each one asked for, and its attachment once made).

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

pub fn network(conn: &Connection, id: &str) -> Result<Option<DockerNetwork>> {
    let row: Option<(String, Option<String>, String)> = conn
        .query_row(
            "SELECT id, name, spec FROM docker_networks WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(id, name, spec)| {
        Ok(DockerNetwork {
            id,
            name,
            spec: parse("network spec", &spec)?,
        })
    })
    .transpose()
}

pub fn networks(conn: &Connection) -> Result<Vec<DockerNetwork>> {
    let rows = conn
        .prepare_cached("SELECT id, name, spec FROM docker_networks ORDER BY id")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, name, spec)| {
            Ok(DockerNetwork {
                id,
                name,
                spec: parse("network spec", &spec)?,
            })
        })
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

pub fn delete_endpoint(tx: &Transaction, id: &str) -> Result<()> {
    tx.execute("DELETE FROM docker_endpoints WHERE id = ?1", params![id])?;
    Ok(())
}
