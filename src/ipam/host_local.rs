//! Host-local IPAM inside the store's transaction: every allocation is a row
//! (network, address) with a primary key, so two processes can never hold
//! the same address, and a cursor per subnet makes the next allocation start
//! after the last one (O(1) in the common case, like CNI's host-local).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rusqlite::{OptionalExtension, Transaction, params};

use crate::error::{Error, Result};
use crate::model::{Network, SubnetSpec, check_usable};

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The addresses that dynamic allocation may hand out in a subnet: the
/// range (or whole subnet) without the network address, the IPv4
/// broadcast and the gateway.
#[derive(Debug, Clone, Copy)]
struct Pool {
    first: u128,
    last: u128,
    v4: bool,
}

impl Pool {
    fn of(sub: &SubnetSpec) -> Pool {
        let area = sub.ip_range.unwrap_or(sub.subnet);
        let v4 = area.addr().is_ipv4();
        let mut first = to_u128(area.network());
        let mut last = to_u128(area.broadcast());
        // Never the subnet's network or broadcast address, even when a range
        // starts or ends there.
        if first == to_u128(sub.subnet.network()) {
            first += 1;
        }
        if v4 && last == to_u128(sub.subnet.broadcast()) {
            last -= 1;
        }
        Pool { first, last, v4 }
    }

    fn size(&self) -> u128 {
        if self.last < self.first {
            0
        } else {
            self.last - self.first + 1
        }
    }
}

fn is_taken(tx: &Transaction, network: &str, ip: IpAddr) -> Result<Option<String>> {
    Ok(tx
        .prepare_cached("SELECT owner FROM allocations WHERE network = ?1 AND address = ?2")?
        .query_row(params![network, ip.to_string()], |r| r.get(0))
        .optional()?)
}

fn record(tx: &Transaction, network: &str, ip: IpAddr, owner: &str) -> Result<()> {
    tx.prepare_cached("INSERT INTO allocations (network, address, owner) VALUES (?1, ?2, ?3)")?
        .execute(params![network, ip.to_string(), owner])?;
    Ok(())
}

/// Reserve a specific address (static request, gateway, aux, host address).
pub fn reserve(
    tx: &Transaction,
    net: &Network,
    ip: IpAddr,
    owner: &str,
    field: &str,
) -> Result<IpNet> {
    let sub = net.subnet_for(&ip).ok_or_else(|| {
        Error::invalid(
            field,
            ip,
            format!("is outside every subnet of network `{}`", net.name),
        )
    })?;
    check_usable(field, &sub.subnet, ip)?;
    if let Some(holder) = is_taken(tx, &net.name, ip)? {
        return Err(Error::invalid(
            field,
            ip,
            format!("is already in use on network `{}` (by {holder})", net.name),
        ));
    }
    record(tx, &net.name, ip, owner)?;
    Ok(IpNet::new(ip, sub.subnet.prefix_len()).expect("prefix of a valid subnet"))
}

/// Hand out the next free address of a subnet.
pub fn allocate(tx: &Transaction, net: &Network, sub: &SubnetSpec, owner: &str) -> Result<IpNet> {
    let pool = Pool::of(sub);
    let key = sub.subnet.to_string();
    let cursor: Option<String> = tx
        .prepare_cached("SELECT last FROM cursors WHERE network = ?1 AND subnet = ?2")?
        .query_row(params![net.name, key], |r| r.get(0))
        .optional()?;
    let start = cursor
        .and_then(|c| c.parse::<IpAddr>().ok())
        .map(to_u128)
        .filter(|c| *c >= pool.first && *c <= pool.last)
        .map(|c| if c == pool.last { pool.first } else { c + 1 })
        .unwrap_or(pool.first);
    let gateway = sub.gateway.map(to_u128);
    // Each failed probe hits a distinct address in use, so this loop ends
    // after at most (addresses in use + 1) probes even in a /64.
    let mut candidate = start;
    for _ in 0..pool.size() {
        let ip = from_u128(candidate, pool.v4);
        if Some(candidate) != gateway && is_taken(tx, &net.name, ip)?.is_none() {
            record(tx, &net.name, ip, owner)?;
            tx.prepare_cached(
                "INSERT INTO cursors (network, subnet, last) VALUES (?1, ?2, ?3)
                 ON CONFLICT (network, subnet) DO UPDATE SET last = excluded.last",
            )?
            .execute(params![net.name, key, ip.to_string()])?;
            return Ok(IpNet::new(ip, sub.subnet.prefix_len()).expect("prefix of a valid subnet"));
        }
        candidate = if candidate == pool.last {
            pool.first
        } else {
            candidate + 1
        };
    }
    let area = sub.ip_range.unwrap_or(sub.subnet);
    Err(Error::Ipam {
        network: net.name.clone(),
        reason: format!("no free address left in {area} (pool exhausted)"),
    })
}

/// Release everything an owner holds on any network.
pub fn release(tx: &Transaction, owner: &str) -> Result<()> {
    tx.execute("DELETE FROM allocations WHERE owner = ?1", params![owner])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkSpec;
    use rusqlite::Connection;

    fn setup(subnet: &str, range: Option<&str>) -> (Connection, Network) {
        let conn = Connection::open_in_memory().unwrap();
        let net = NetworkSpec {
            name: "n".into(),
            driver: "bridge".into(),
            subnet: vec![subnet.into()],
            ip_range: range.into_iter().map(String::from).collect(),
            ..Default::default()
        }
        .validate()
        .unwrap();
        conn.execute_batch(
            "CREATE TABLE allocations (network TEXT, address TEXT, owner TEXT, PRIMARY KEY (network, address));
             CREATE TABLE cursors (network TEXT, subnet TEXT, last TEXT, PRIMARY KEY (network, subnet));",
        )
        .unwrap();
        (conn, net)
    }

    #[test]
    fn skips_network_gateway_and_broadcast_until_exhausted() {
        let (mut conn, net) = setup("10.0.0.0/29", None);
        let tx = conn.transaction().unwrap();
        let got: Vec<String> = (0..5)
            .map(|i| {
                allocate(&tx, &net, &net.subnets[0], &format!("c{i}"))
                    .unwrap()
                    .addr()
                    .to_string()
            })
            .collect();
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let err = allocate(&tx, &net, &net.subnets[0], "c6")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pool exhausted"), "{err}");
    }

    #[test]
    fn range_limits_allocation_and_release_frees() {
        let (mut conn, net) = setup("10.0.0.0/24", Some("10.0.0.128/30"));
        let tx = conn.transaction().unwrap();
        let a = allocate(&tx, &net, &net.subnets[0], "a").unwrap();
        assert_eq!(a.to_string(), "10.0.0.128/24");
        for o in ["b", "c", "d"] {
            allocate(&tx, &net, &net.subnets[0], o).unwrap();
        }
        assert!(allocate(&tx, &net, &net.subnets[0], "e").is_err());
        release(&tx, "b").unwrap();
        assert_eq!(
            allocate(&tx, &net, &net.subnets[0], "e")
                .unwrap()
                .addr()
                .to_string(),
            "10.0.0.129"
        );
    }

    #[test]
    fn static_requests_are_checked() {
        let (mut conn, net) = setup("10.0.0.0/24", None);
        let tx = conn.transaction().unwrap();
        reserve(&tx, &net, "10.0.0.50".parse().unwrap(), "a", "--ip").unwrap();
        let taken = reserve(&tx, &net, "10.0.0.50".parse().unwrap(), "b", "--ip")
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains("--ip `10.0.0.50`") && taken.contains("already in use"),
            "{taken}"
        );
        let outside = reserve(&tx, &net, "10.0.1.5".parse().unwrap(), "b", "--ip")
            .unwrap_err()
            .to_string();
        assert!(outside.contains("outside"), "{outside}");
        assert!(reserve(&tx, &net, "10.0.0.255".parse().unwrap(), "b", "--ip").is_err());
        // Dynamic allocation steps over the static one.
        for _ in 0..60 {
            let ip = allocate(&tx, &net, &net.subnets[0], "x").unwrap();
            assert_ne!(ip.addr().to_string(), "10.0.0.50");
        }
    }

    #[test]
    fn ipv6_skips_anycast_and_gateway() {
        let (mut conn, net) = setup("fd00:10::/64", None);
        let tx = conn.transaction().unwrap();
        let a = allocate(&tx, &net, &net.subnets[0], "a").unwrap();
        assert_eq!(a.to_string(), "fd00:10::2/64");
    }
}
