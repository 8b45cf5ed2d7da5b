use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::RouteMessageBuilder;

use super::{Netlink, NetlinkError, NlResult};

/// A route in the main table as plumb sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dest: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
}

fn bad(e: impl std::fmt::Display) -> NetlinkError {
    NetlinkError::Decode(e.to_string())
}

/// Tables above 255 travel in RTA_TABLE; the header then says 252
/// (RT_TABLE_COMPAT), as iproute2 does.
fn set_table(msg: &mut RouteMessage, table: u32) {
    msg.header.table = if table < 256 { table as u8 } else { 252 };
    msg.attributes
        .retain(|a| !matches!(a, RouteAttribute::Table(_)));
    msg.attributes.push(RouteAttribute::Table(table));
}

fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn route_message(dest: IpNet, via: Option<IpAddr>, oif: Option<u32>) -> NlResult<RouteMessage> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.addr(), dest.prefix_len())
        .map_err(bad)?;
    if let Some(via) = via {
        b = b.gateway(via).map_err(bad)?;
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(oif) = oif {
        b = b.output_interface(oif);
    }
    Ok(b.protocol(RouteProtocol::Static).build())
}

impl Netlink {
    /// Add a route; with `replace`, an existing route to the same
    /// destination is replaced instead of refused.
    pub fn add_route(
        &mut self,
        dest: IpNet,
        via: Option<IpAddr>,
        oif: Option<u32>,
        replace: bool,
    ) -> NlResult<()> {
        let flags = if replace {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        self.execute(
            RouteNetlinkMessage::NewRoute(route_message(dest, via, oif)?),
            flags,
        )
    }

    pub fn del_route(
        &mut self,
        dest: IpNet,
        via: Option<IpAddr>,
        oif: Option<u32>,
    ) -> NlResult<()> {
        let mut msg = route_message(dest, via, oif)?;
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        self.execute(RouteNetlinkMessage::DelRoute(msg), 0)
    }

    /// Add a route to routing table `table` (policy routing).
    pub fn add_table_route(
        &mut self,
        table: u32,
        dest: IpNet,
        via: Option<IpAddr>,
        oif: u32,
    ) -> NlResult<()> {
        let mut msg = route_message(dest, via, Some(oif))?;
        set_table(&mut msg, table);
        self.execute(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_table_route(&mut self, table: u32, dest: IpNet) -> NlResult<()> {
        let mut msg = route_message(dest, None, None)?;
        set_table(&mut msg, table);
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        self.execute(RouteNetlinkMessage::DelRoute(msg), 0)
    }

    /// The routing tables that hold any route, both families.
    pub fn tables_in_use(&mut self) -> NlResult<Vec<u32>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            for m in self.dump(RouteNetlinkMessage::GetRoute(req))? {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    out.push(table_of(&r));
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Whether `table` has a default route of the family of `v6`.
    pub fn table_has_default(&mut self, table: u32, v6: bool) -> NlResult<bool> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        Ok(self
            .dump(RouteNetlinkMessage::GetRoute(req))?
            .into_iter()
            .any(|m| matches!(m, RouteNetlinkMessage::NewRoute(r) if table_of(&r) == table && r.header.destination_prefix_length == 0)))
    }

    /// Routes of the main table of one family.
    pub fn routes(&mut self, ipv6: bool) -> NlResult<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let answers = self.dump(RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewRoute(r) = m else {
                continue;
            };
            if r.header.table != 254 {
                continue;
            }
            let mut dest: Option<IpAddr> = None;
            let mut via = None;
            let mut oif = None;
            for attr in &r.attributes {
                match attr {
                    RouteAttribute::Destination(a) => dest = route_addr(a),
                    RouteAttribute::Gateway(a) => via = route_addr(a),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let unspecified: IpAddr = if ipv6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let dest = IpNet::new(
                dest.unwrap_or(unspecified),
                r.header.destination_prefix_length,
            );
            if let Ok(dest) = dest {
                out.push(Route { dest, via, oif });
            }
        }
        Ok(out)
    }
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}
