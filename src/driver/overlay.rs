//! The overlay of a cluster network: on each host, the network's bridge
//! with a VXLAN device on it, one VNI per network. Nothing floods and
//! nothing is learnt: each remote container's MAC has a static FDB entry
//! to its host's VTEP, and its address a static neighbour entry the
//! device answers ARP and ND from (`proxy`), programmed from the cluster's
//! record ([`program`]). The gateway is every host's own: each bridge holds
//! it with the same MAC (the network's), so containers leave by their host.

use std::collections::HashSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::kernel;
use crate::error::{Error, Result};
use crate::model::Mac;
use crate::netlink::{LinkInfo, Netlink};
use crate::undo::UndoLog;

/// The standard VXLAN port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// What VXLAN adds to a frame: the outer IPv4 (20 bytes) or IPv6 (40)
/// header, UDP (8), VXLAN (8) and the inner Ethernet header (14).
pub fn overhead(ipv6_underlay: bool) -> u32 {
    if ipv6_underlay { 70 } else { 50 }
}

/// A bridge network's overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlay {
    pub vni: u32,
    /// This host's end of the tunnels.
    pub vtep: IpAddr,
    pub port: u16,
    /// The VXLAN device on the bridge.
    pub device: String,
    /// The prefix length of the address blocks hosts claim (IPv4; IPv6
    /// blocks hold as many addresses).
    pub block: u8,
}

impl Overlay {
    /// The blocks of `subnet` hosts claim, in order.
    pub fn blocks_of(&self, subnet: ipnet::IpNet) -> Vec<ipnet::IpNet> {
        subnet
            .subnets(self.block_prefix(subnet))
            .map(|s| s.collect())
            .unwrap_or_default()
    }

    /// The block of `subnet` that `ip` (in it) is in.
    pub fn block_of(&self, subnet: ipnet::IpNet, ip: IpAddr) -> Option<ipnet::IpNet> {
        ipnet::IpNet::new(ip, self.block_prefix(subnet))
            .ok()
            .map(|b| b.trunc())
            .filter(|b| subnet.contains(&b.network()))
    }

    fn block_prefix(&self, subnet: ipnet::IpNet) -> u8 {
        match subnet {
            ipnet::IpNet::V4(_) => self.block,
            ipnet::IpNet::V6(_) => 128 - (32 - self.block),
        }
        .max(subnet.prefix_len())
    }
}

/// The MAC of a container on a cluster network with `addresses`: its
/// IPv4 address's four bytes after 02:50, as Docker's overlay does. An
/// address that moves to another host keeps its MAC, so the ARP caches of
/// the containers that talked to it stay right and only the hosts' FDBs
/// change, which their daemons do. None without an IPv4 address (the
/// container keeps a MAC of its own).
pub fn container_mac(addresses: &[ipnet::IpNet]) -> Option<Mac> {
    addresses.iter().find_map(|a| match a.addr() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            Some(Mac([0x02, 0x50, a, b, c, d]))
        }
        IpAddr::V6(_) => None,
    })
}

/// A container on another host, as the overlay reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub mac: Mac,
    pub addresses: Vec<IpAddr>,
    pub vtep: IpAddr,
}

/// Make the VXLAN device on `bridge` and set it up.
pub fn create(
    nl: &mut Netlink,
    o: &Overlay,
    mtu: Option<u32>,
    bridge: &LinkInfo,
    undo: &mut UndoLog,
) -> Result<()> {
    nl.create_vxlan(&o.device, o.vni, o.vtep, o.port, mtu, bridge.index)
        .map_err(kernel(format!(
            "create VXLAN device {} (VNI {})",
            o.device, o.vni
        )))?;
    let name = o.device.clone();
    undo.push(format!("delete VXLAN device {name}"), move |nl| {
        nl.delete_link_by_name(&name)
            .map(drop)
            .map_err(kernel(format!("delete VXLAN device {name}")))
    });
    let link = nl
        .link_by_name(&o.device)
        .map_err(kernel(format!("look up {}", o.device)))?
        .ok_or_else(|| Error::Conflict(format!("VXLAN device {} vanished", o.device)))?;
    // The bridge would learn remote MACs from what the tunnel brings in,
    // and keep them after the cluster forgot them.
    nl.set_port_not_learning(link.index)
        .map_err(kernel(format!("stop the bridge learning on {}", o.device)))?;
    nl.set_up(link.index)
        .map_err(kernel(format!("set {} up", o.device)))
}

/// Whether the device is there, up, on `bridge`.
pub fn in_place(nl: &mut Netlink, o: &Overlay, bridge: &LinkInfo) -> bool {
    nl.link_by_name(&o.device)
        .ok()
        .flatten()
        .is_some_and(|l| l.up && l.controller == Some(bridge.index))
}

/// Take the device away (its FDB and neighbour entries go with it).
pub fn remove(nl: &mut Netlink, o: &Overlay) -> Vec<Error> {
    match nl.delete_link_by_name(&o.device) {
        Ok(_) => Vec::new(),
        Err(e) => vec![Error::kernel(
            format!("delete VXLAN device {}", o.device),
            e,
        )],
    }
}

/// Make the device's FDB and neighbour entries exactly `remotes`' (each
/// MAC to its VTEP, each address to its MAC); what it changed.
pub fn program(nl: &mut Netlink, o: &Overlay, remotes: &[Remote]) -> Result<Vec<String>> {
    let link = nl
        .link_by_name(&o.device)
        .map_err(kernel(format!("look up {}", o.device)))?
        .ok_or_else(|| Error::Conflict(format!("VXLAN device {} is missing", o.device)))?;
    let mut done = Vec::new();
    let want_fdb: HashSet<([u8; 6], IpAddr)> = remotes.iter().map(|r| (r.mac.0, r.vtep)).collect();
    let want_neigh: HashSet<(IpAddr, [u8; 6])> = remotes
        .iter()
        .flat_map(|r| r.addresses.iter().map(move |a| (*a, r.mac.0)))
        .collect();
    let have_fdb = nl
        .fdb(link.index)
        .map_err(kernel(format!("list the FDB of {}", o.device)))?;
    for (mac, dst) in &have_fdb {
        if !dst.is_some_and(|d| want_fdb.contains(&(*mac, d))) {
            nl.fdb_del(link.index, *mac, *dst).map_err(kernel(format!(
                "remove FDB entry {} from {}",
                Mac(*mac),
                o.device
            )))?;
            done.push(format!("forgot {} on {}", Mac(*mac), o.device));
        }
    }
    for (mac, vtep) in &want_fdb {
        if !have_fdb.contains(&(*mac, Some(*vtep))) {
            nl.fdb_set(link.index, *mac, *vtep).map_err(kernel(format!(
                "send {} to {vtep} on {}",
                Mac(*mac),
                o.device
            )))?;
            done.push(format!("{} via {vtep} on {}", Mac(*mac), o.device));
        }
    }
    let have_neigh = nl
        .neighbours(link.index)
        .map_err(kernel(format!("list the neighbours of {}", o.device)))?;
    for (ip, mac) in &have_neigh {
        if !want_neigh.contains(&(*ip, *mac)) {
            nl.neighbour_del(link.index, *ip)
                .map_err(kernel(format!("remove neighbour {ip} from {}", o.device)))?;
        }
    }
    for (ip, mac) in &want_neigh {
        if !have_neigh.contains(&(*ip, *mac)) {
            nl.neighbour_set(link.index, *ip, *mac)
                .map_err(kernel(format!("resolve {ip} on {}", o.device)))?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containers_mac_is_its_ipv4_address_and_ipv6_alone_decides_none() {
        let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
        let both = [net("fd00::7/64"), net("10.100.1.7/16")];
        assert_eq!(container_mac(&both), Some(Mac([2, 0x50, 10, 100, 1, 7])));
        assert_ne!(container_mac(&[net("10.100.1.8/16")]), container_mac(&both));
        assert_eq!(container_mac(&[net("fd00::7/64")]), None);
        // Locally administered unicast.
        assert_eq!(container_mac(&both).unwrap().0[0] & 0b11, 0b10);
    }

    #[test]
    fn blocks_cut_a_subnet_in_order_and_ipv6_ones_hold_as_many_addresses() {
        let o = Overlay {
            vni: 1,
            vtep: "10.0.0.1".parse().unwrap(),
            port: VXLAN_PORT,
            device: "vx-t".into(),
            block: 26,
        };
        let v4 = o.blocks_of("10.100.0.0/24".parse().unwrap());
        assert_eq!(v4.len(), 4);
        assert_eq!(v4[1], "10.100.0.64/26".parse::<ipnet::IpNet>().unwrap());
        // A subnet smaller than a block is one block.
        assert_eq!(o.blocks_of("10.1.0.0/28".parse().unwrap()).len(), 1);
        let v6 = o.blocks_of("fd00::/120".parse().unwrap());
        assert_eq!(v6[0], "fd00::/122".parse::<ipnet::IpNet>().unwrap());
    }
}
