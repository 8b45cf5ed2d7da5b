//! `plumb shim`: the host's way onto a macvlan LAN it does not own (Docker's
//! macvlan networks, most of all). A macvlan parent never passes traffic
//! between itself and its macvlans, so the host cannot reach containers on
//! one; a shim is a macvlan of the host's own on the same parent, in bridge
//! mode, holding one address alone, with a route to where the containers
//! are. The kernel deletes it with its parent; repair makes it again when
//! the parent is back.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::link::MacVlanMode;
use serde::{Deserialize, Serialize};

use super::kernel;
use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::undo::UndoLog;

/// One shim, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shim {
    pub id: u32,
    /// Its interface on the host.
    pub name: String,
    pub parent: String,
    pub address: IpAddr,
    /// Where the containers are.
    pub routes: Vec<IpNet>,
    /// The Docker network it was made for, if any (`docker-network:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

impl Shim {
    /// Its address, alone.
    fn host_address(&self) -> IpNet {
        IpNet::from(self.address)
    }
}

/// One subnet of a Docker network, as its IPAM config says it.
#[derive(Debug, Clone, Default)]
pub struct DockerSubnet {
    pub subnet: IpNet,
    pub ip_range: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    /// `--aux-address`: addresses Docker keeps for others.
    pub aux: BTreeMap<String, IpAddr>,
}

/// What a shim for a Docker network with these subnets routes to, for
/// `address`: the `--ip-range` of the subnet it is in, or the whole subnet
/// when it has none. An address Docker could hand out (in the range, or
/// anywhere in a subnet without one, and not an `--aux-address`) is
/// refused, naming the range.
pub fn docker_routes(
    network: &str,
    subnets: &[DockerSubnet],
    address: IpAddr,
) -> Result<Vec<IpNet>> {
    let sub = subnets
        .iter()
        .find(|s| s.subnet.contains(&address))
        .ok_or_else(|| {
            let all: Vec<String> = subnets.iter().map(|s| s.subnet.to_string()).collect();
            Error::invalid(
                "--address",
                address,
                format!(
                    "is in no subnet of Docker network {network} ({})",
                    all.join(", ")
                ),
            )
        })?;
    if sub.gateway == Some(address) {
        return Err(Error::invalid(
            "--address",
            address,
            format!("is the gateway of Docker network {network}"),
        ));
    }
    // Docker keeps its --aux-addresses out of what it hands out, inside
    // the range or not (the field's recipe reserves the range's last one).
    let reserved = sub.aux.values().any(|a| *a == address);
    match sub.ip_range {
        Some(range) if range.contains(&address) && !reserved => Err(Error::invalid(
            "--address",
            address,
            format!(
                "Docker hands out the addresses of {network}'s --ip-range {range}: take one outside it (reserve it with --aux-address)"
            ),
        )),
        Some(range) => Ok(vec![range]),
        None if reserved => Ok(vec![sub.subnet]),
        None => Err(Error::invalid(
            "--address",
            address,
            format!(
                "Docker hands out every address of {} on {network} but its --aux-address ones: reserve this one with --aux-address, or give the network an --ip-range",
                sub.subnet
            ),
        )),
    }
}

/// Make the shim: the macvlan on its parent, its address, up, its routes;
/// each with its undo.
pub fn create(nl: &mut Netlink, shim: &Shim, undo: &mut UndoLog) -> Result<()> {
    let parent = nl
        .link_by_name(&shim.parent)
        .map_err(kernel(format!("look up {}", shim.parent)))?
        .ok_or_else(|| Error::invalid("--parent", &shim.parent, "no such interface on the host"))?;
    nl.create_macvlan(
        &shim.name,
        parent.index,
        MacVlanMode::Bridge,
        None,
        None,
        None,
    )
    .map_err(kernel(format!(
        "create shim {} on {}",
        shim.name, shim.parent
    )))?;
    let name = shim.name.clone();
    undo.push(format!("delete shim {name}"), move |nl| {
        nl.delete_link_by_name(&name)
            .map(drop)
            .map_err(kernel(format!("delete shim {name}")))
    });
    finish(nl, shim)
}

/// Give an existing shim its address, its link state and its routes (what
/// the kernel has already is kept).
fn finish(nl: &mut Netlink, shim: &Shim) -> Result<()> {
    let link = nl
        .link_by_name(&shim.name)
        .map_err(kernel(format!("look up shim {}", shim.name)))?
        .ok_or_else(|| Error::Conflict(format!("shim {} vanished", shim.name)))?;
    let have = nl
        .addresses(link.index)
        .map_err(kernel(format!("list the addresses of {}", shim.name)))?;
    if !have.contains(&shim.host_address()) {
        nl.add_address(link.index, shim.host_address())
            .map_err(kernel(format!("add {} to {}", shim.address, shim.name)))?;
    }
    if !link.up {
        nl.set_up(link.index)
            .map_err(kernel(format!("set {} up", shim.name)))?;
    }
    for route in &shim.routes {
        match nl.add_route(*route, None, Some(link.index), false) {
            Ok(()) => {}
            Err(e) if e.is(libc::EEXIST) => {
                let ours = nl
                    .routes(route.addr().is_ipv6())
                    .map_err(kernel("list host routes".into()))?
                    .iter()
                    .any(|r| r.dest == *route && r.oif == Some(link.index));
                if !ours {
                    return Err(Error::invalid(
                        "--route",
                        route,
                        "the host routes it elsewhere already (give the containers' part with --route)",
                    ));
                }
            }
            Err(e) => return Err(kernel(format!("route {route} to {}", shim.name))(e)),
        }
    }
    Ok(())
}

/// Take the shim away (its address and routes go with it).
pub fn remove(nl: &mut Netlink, shim: &Shim) -> Result<()> {
    nl.delete_link_by_name(&shim.name)
        .map(drop)
        .map_err(kernel(format!("delete shim {}", shim.name)))
}

/// Put back what the kernel lost: the whole shim when its parent came back
/// without it, its address, state or routes otherwise. Nothing while the
/// parent is away.
pub fn repair(nl: &mut Netlink, shim: &Shim) -> Result<Option<String>> {
    let parent = nl
        .link_by_name(&shim.parent)
        .map_err(kernel(format!("look up {}", shim.parent)))?;
    if parent.is_none() {
        return Ok(None);
    }
    let exists = nl
        .link_by_name(&shim.name)
        .map_err(kernel(format!("look up shim {}", shim.name)))?;
    match exists {
        None => {
            let mut undo = UndoLog::default();
            match create(nl, shim, &mut undo) {
                Ok(()) => Ok(Some(format!("shim {} on {}", shim.name, shim.parent))),
                Err(e) => Err(undo.rollback(nl, e)),
            }
        }
        Some(link) => {
            let routes_before = nl
                .routes(shim.address.is_ipv6())
                .map_err(kernel("list host routes".into()))?
                .iter()
                .filter(|r| r.oif == Some(link.index))
                .count();
            let addrs_before = nl
                .addresses(link.index)
                .map_err(kernel(format!("list the addresses of {}", shim.name)))?;
            finish(nl, shim)?;
            let changed = !link.up
                || !addrs_before.contains(&shim.host_address())
                || routes_before < shim.routes.len();
            Ok(changed.then(|| format!("shim {}'s address, state or routes", shim.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lan() -> DockerSubnet {
        DockerSubnet {
            subnet: "192.168.1.0/24".parse().unwrap(),
            ip_range: Some("192.168.1.192/27".parse().unwrap()),
            gateway: Some("192.168.1.1".parse().unwrap()),
            aux: BTreeMap::from([("host".to_string(), "192.168.1.223".parse().unwrap())]),
        }
    }

    #[test]
    fn a_shim_routes_to_the_range_docker_hands_out_and_never_takes_from_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let range = ["192.168.1.192/27".parse::<IpNet>().unwrap()];
        assert_eq!(
            docker_routes("mynet", &[lan()], ip("192.168.1.250")).unwrap(),
            range
        );
        // The field's recipe: the range's last address, kept by --aux-address.
        assert_eq!(
            docker_routes("mynet", &[lan()], ip("192.168.1.223")).unwrap(),
            range
        );
        let err = docker_routes("mynet", &[lan()], ip("192.168.1.200"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--ip-range 192.168.1.192/27"), "{err}");
        let err = docker_routes("mynet", &[lan()], ip("192.168.1.1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway"), "{err}");
        let err = docker_routes("mynet", &[lan()], ip("10.0.0.1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("192.168.1.0/24"), "{err}");
        // Without a range: an --aux-address alone, and the whole subnet.
        let whole = DockerSubnet {
            ip_range: None,
            ..lan()
        };
        assert_eq!(
            docker_routes("mynet", std::slice::from_ref(&whole), ip("192.168.1.223")).unwrap(),
            ["192.168.1.0/24".parse::<IpNet>().unwrap()]
        );
        let err = docker_routes("mynet", &[whole], ip("192.168.1.100"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--aux-address"), "{err}");
    }
}
