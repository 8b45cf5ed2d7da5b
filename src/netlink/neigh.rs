//! Static neighbour and forwarding-database entries (RTM_NEWNEIGH) on an
//! overlay's VXLAN device: a remote container's MAC is sent to its host's
//! VTEP (an FDB entry of the device's own, NTF_SELF), and its address
//! resolves to that MAC without an ARP or ND exchange crossing the
//! overlay (a neighbour entry the device answers from, with `proxy` on).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NlResult};

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn message(family: AddressFamily, index: u32, self_entry: bool) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.kind = RouteType::Unspec;
    if self_entry {
        m.header.flags = NeighbourFlags::Own;
    }
    m
}

fn mac_of(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
        _ => None,
    })
}

fn ip_of(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        // An FDB entry's (family AF_BRIDGE) comes as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

impl Netlink {
    /// The permanent FDB entries of device `index` itself: (MAC, VTEP).
    pub fn fdb(&mut self, index: u32) -> NlResult<Vec<([u8; 6], Option<IpAddr>)>> {
        let answers = self.dump(RouteNetlinkMessage::GetNeighbour(message(
            AddressFamily::Bridge,
            0,
            false,
        )))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.ifindex == index
                        && n.header.state == NeighbourState::Permanent
                        && n.header.flags.contains(NeighbourFlags::Own) =>
                {
                    Some((mac_of(&n)?, ip_of(&n)))
                }
                _ => None,
            })
            .collect())
    }

    /// Send `mac` on device `index` to the VTEP `dst` (replacing where it
    /// went before).
    pub fn fdb_set(&mut self, index: u32, mac: [u8; 6], dst: IpAddr) -> NlResult<()> {
        let mut m = message(AddressFamily::Bridge, index, true);
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(address(dst)));
        self.execute(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn fdb_del(&mut self, index: u32, mac: [u8; 6], dst: Option<IpAddr>) -> NlResult<()> {
        let mut m = message(AddressFamily::Bridge, index, true);
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        if let Some(dst) = dst {
            m.attributes
                .push(NeighbourAttribute::Destination(address(dst)));
        }
        self.execute(RouteNetlinkMessage::DelNeighbour(m), 0)
    }

    /// The permanent neighbour entries of device `index`: (address, MAC).
    pub fn neighbours(&mut self, index: u32) -> NlResult<Vec<(IpAddr, [u8; 6])>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let answers =
                self.dump(RouteNetlinkMessage::GetNeighbour(message(family, 0, false)))?;
            out.extend(answers.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n)
                    if n.header.ifindex == index && n.header.state == NeighbourState::Permanent =>
                {
                    Some((ip_of(&n)?, mac_of(&n)?))
                }
                _ => None,
            }));
        }
        Ok(out)
    }

    /// `ip` on device `index` is `mac`, for good.
    pub fn neighbour_set(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> NlResult<()> {
        let mut m = message(family(&ip), index, false);
        m.attributes
            .push(NeighbourAttribute::Destination(address(ip)));
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.execute(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
    }

    pub fn neighbour_del(&mut self, index: u32, ip: IpAddr) -> NlResult<()> {
        let mut m = message(family(&ip), index, false);
        m.attributes
            .push(NeighbourAttribute::Destination(address(ip)));
        self.execute(RouteNetlinkMessage::DelNeighbour(m), 0)
    }
}
