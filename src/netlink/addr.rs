use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use rtnetlink::AddressMessageBuilder;

use super::{Netlink, NlResult};

fn address_message(index: u32, addr: IpNet) -> AddressMessage {
    match addr {
        IpNet::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a.addr(), a.prefix_len())
            .build(),
        IpNet::V6(a) => {
            let mut m = AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(a.addr(), a.prefix_len())
                .build();
            // Addresses plumb assigns are unique by construction (IPAM); skip
            // duplicate address detection so they are usable at once.
            m.header.flags |= AddressHeaderFlags::Nodad;
            m
        }
    }
}

impl Netlink {
    /// Add an address; EEXIST when it is already there.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> NlResult<()> {
        self.execute(
            RouteNetlinkMessage::NewAddress(address_message(index, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_address(&mut self, index: u32, addr: IpNet) -> NlResult<()> {
        self.execute(
            RouteNetlinkMessage::DelAddress(address_message(index, addr)),
            0,
        )
    }

    /// Global addresses of a link (link-local IPv6 excluded).
    pub fn addresses(&mut self, index: u32) -> NlResult<Vec<IpNet>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Unspec;
        let answers = self.dump(RouteNetlinkMessage::GetAddress(req))?;
        let mut out = Vec::new();
        for m in answers {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            if a.header.index != index {
                continue;
            }
            let ip = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                if let IpAddr::V6(v6) = ip
                    && v6.segments()[0] & 0xffc0 == 0xfe80
                {
                    continue;
                }
                if let Ok(net) = IpNet::new(ip, a.header.prefix_len) {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }
}
