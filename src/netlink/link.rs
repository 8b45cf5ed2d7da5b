use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, Inet6IfaceFlags, InfoBridge, InfoBridgePort,
    InfoKind, InfoPortData, InfoPortKind, IpVlanFlags, IpVlanMode, LinkAttribute, LinkFlags,
    LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::{
    LinkBridge, LinkIpVlan, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan,
    LinkVxlan,
};

use super::{Netlink, NetlinkError, NlResult};
use crate::netns::NsHandle;

/// What plumb needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub up: bool,
    pub controller: Option<u32>,
    pub kind: Option<String>,
    /// IFLA_IFALIAS: a tag that stays with the link through a move to
    /// another namespace and a rename.
    pub alias: Option<String>,
    /// The last router advertisement set the managed flag: addresses come
    /// from DHCPv6.
    pub ra_managed: bool,
}

impl LinkInfo {
    pub(super) fn from_message(msg: LinkMessage) -> Self {
        let mut info = LinkInfo {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            controller: None,
            kind: None,
            alias: None,
            ra_managed: false,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => info.name = n,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    info.mac = Some([a[0], a[1], a[2], a[3], a[4], a[5]])
                }
                LinkAttribute::Mtu(m) => info.mtu = m,
                LinkAttribute::IfAlias(a) if !a.is_empty() => info.alias = Some(a),
                LinkAttribute::Controller(c) => info.controller = Some(c),
                LinkAttribute::AfSpecUnspec(specs) => {
                    for spec in specs {
                        if let AfSpecUnspec::Inet6(attrs) = spec {
                            for a in attrs {
                                if let AfSpecInet6::Flags(f) = a {
                                    info.ra_managed = f.contains(Inet6IfaceFlags::RaManaged);
                                }
                            }
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let NlLinkInfo::Kind(k) = i {
                            info.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// IFLA_AF_SPEC asking for no IPv6 address generation on a link.
fn no_ipv6_address() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

impl Netlink {
    /// The link called `name`, or None.
    pub fn link_by_name(&mut self, name: &str) -> NlResult<Option<LinkInfo>> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.get(RouteNetlinkMessage::GetLink(msg)) {
            Ok(answers) => Ok(answers.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn links(&mut self) -> NlResult<Vec<LinkInfo>> {
        let answers = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(LinkInfo::from_message(l)),
                _ => None,
            })
            .collect())
    }

    /// Create a bridge; fails with EEXIST when the name is taken.
    /// The MAC is set explicitly: a bridge with an assigned address does not
    /// recompute it from its ports, which otherwise costs every port join
    /// a walk over all ports (and changes the gateway's MAC under the
    /// containers' feet whenever a port with a lower MAC joins).
    pub fn create_bridge(
        &mut self,
        name: &str,
        mac: [u8; 6],
        mtu: Option<u32>,
        multicast_snooping: bool,
    ) -> NlResult<()> {
        let mut b = LinkBridge::new(name)
            .address(mac.to_vec())
            .append_info_data(InfoBridge::MulticastSnooping(multicast_snooping));
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.execute(
            RouteNetlinkMessage::NewLink(b.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Create a veth pair: `host` stays here with MAC `host_mac` (else a
    /// random one), enslaved to `controller` and down; `peer` is created
    /// directly inside `peer_ns` with its MAC and MTU, so it never exists in
    /// the host namespace under a name that could clash. Both ends are left
    /// down, for the caller to configure.
    #[allow(clippy::too_many_arguments)]
    pub fn create_veth(
        &mut self,
        host: &str,
        host_mac: Option<[u8; 6]>,
        controller: u32,
        peer: &str,
        peer_ns: &NsHandle,
        peer_mac: [u8; 6],
        mtu: u32,
    ) -> NlResult<()> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(peer_mac.to_vec())
            .mtu(mtu)
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .build();
        let mut builder = LinkVeth::new(host, peer)
            .set_info_data(netlink_packet_route::link::InfoData::Veth(
                netlink_packet_route::link::InfoVeth::Peer(peer_msg),
            ))
            .mtu(mtu)
            .controller(controller);
        if let Some(mac) = host_mac {
            builder = builder.address(mac.to_vec());
        }
        let msg = builder.build();
        self.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Create a macvlan on `parent` (a link here), down, with its MAC and
    /// MTU: here, or straight inside `target`.
    pub fn create_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
        target: Option<&NsHandle>,
    ) -> NlResult<()> {
        let mut b = LinkMacVlan::new(name, parent, mode);
        if let Some(ns) = target {
            b = b.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        if let Some(mac) = mac {
            b = b.address(mac.to_vec());
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.execute(
            RouteNetlinkMessage::NewLink(b.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Create an ipvlan on `parent` (a link here), down (it has the
    /// parent's MAC): here, or straight inside `target`.
    pub fn create_ipvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: IpVlanMode,
        flags: IpVlanFlags,
        mtu: Option<u32>,
        target: Option<&NsHandle>,
    ) -> NlResult<()> {
        let mut b = LinkIpVlan::new(name, parent, mode).flag(flags);
        if let Some(ns) = target {
            b = b.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.execute(
            RouteNetlinkMessage::NewLink(b.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Create VXLAN device `name` for `vni`, its tunnels from `local` on
    /// UDP `port`, on bridge `controller`, down: no learning (its FDB is
    /// programmed) and ARP/ND answered from its neighbour table (`proxy`).
    pub fn create_vxlan(
        &mut self,
        name: &str,
        vni: u32,
        local: std::net::IpAddr,
        port: u16,
        mtu: Option<u32>,
        controller: u32,
    ) -> NlResult<()> {
        let mut b = LinkVxlan::new(name, vni)
            .port(port)
            .learning(false)
            .proxy(true);
        b = match local {
            std::net::IpAddr::V4(v4) => b.local(v4),
            std::net::IpAddr::V6(v6) => b.local6(v6),
        };
        let mut b = b.controller(controller);
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        self.execute(
            RouteNetlinkMessage::NewLink(b.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Create the 802.1q sub-interface `name` with `id` on `base`, down.
    pub fn create_vlan(&mut self, name: &str, base: u32, id: u16) -> NlResult<()> {
        let msg = LinkVlan::new(name, base, id).build();
        self.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Move a link into `ns` and give it its final name there, in one
    /// request: the name is checked in the target only, so it may exist here.
    pub fn move_to_netns(&mut self, index: u32, ns: &NsHandle, name: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_fd().as_raw_fd())
            .name(name.to_string())
            .build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&mut self, index: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// `set_up` for a link known by name only (one request, no lookup).
    pub fn set_up_by_name(&mut self, name: &str) -> NlResult<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Bring a link up with no IPv6 address generated for it (no
    /// link-local address, so no duplicate address detection or MLD).
    pub fn set_up_without_ipv6_address(&mut self, index: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(no_ipv6_address())
            .up()
            .build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_down(&mut self, index: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).down().build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// An ifb: a device that sends what is redirected to it, so that a
    /// qdisc on it shapes another device's incoming traffic.
    pub fn create_ifb(&mut self, name: &str) -> NlResult<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(
                InfoKind::Ifb,
            )]));
        self.execute(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Mark a bridge port isolated: it forwards only to non-isolated ports
    /// (the bridge itself, an uplink), never to another isolated one.
    pub fn set_port_isolated(&mut self, index: u32) -> NlResult<()> {
        self.set_port(index, InfoBridgePort::Isolated(true))
    }

    /// Have the bridge learn no MAC from what arrives on port `index` (an
    /// overlay's device, whose remote MACs are programmed).
    pub fn set_port_not_learning(&mut self, index: u32) -> NlResult<()> {
        self.set_port(index, InfoBridgePort::Learning(false))
    }

    fn set_port(&mut self, index: u32, setting: InfoBridgePort) -> NlResult<()> {
        let attr = LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![setting])),
        ]);
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(attr)
            .build();
        // Port (slave) data is read by RTM_NEWLINK on an existing link only;
        // RTM_SETLINK ignores IFLA_LINKINFO.
        self.execute(RouteNetlinkMessage::NewLink(msg), 0)
    }

    pub fn set_controller(&mut self, index: u32, controller: Option<u32>) -> NlResult<()> {
        let b = LinkUnspec::new_with_index(index);
        let b = match controller {
            Some(c) => b.controller(c),
            None => b.nocontroller(),
        };
        self.execute(RouteNetlinkMessage::SetLink(b.build()), 0)
    }

    /// Delete the links named `names` (those that exist) in one go: each
    /// is put in `group`, then the group is deleted with one request. One
    /// link at a time, the kernel waits for RCU grace periods for each
    /// (about 25 ms); a group waits once for all of them. `group` must be
    /// one nothing else uses.
    pub fn delete_links_together(&mut self, names: &[String], group: u32) -> NlResult<()> {
        let mut any = false;
        for name in names {
            let msg = LinkUnspec::new_with_name(name)
                .append_extra_attribute(LinkAttribute::Group(group))
                .build();
            match self.execute(RouteNetlinkMessage::SetLink(msg), 0) {
                Ok(()) => any = true,
                Err(e) if e.is(libc::ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
        if !any {
            return Ok(());
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group));
        self.execute(RouteNetlinkMessage::DelLink(msg), 0)
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Make bridge `index` pass its bridged IPv4 and IPv6 frames through
    /// the IP hooks (br_netfilter, this bridge alone), where conntrack
    /// sees them.
    pub fn set_bridge_nf_call(&mut self, index: u32) -> NlResult<()> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Bridge),
            NlLinkInfo::Data(netlink_packet_route::link::InfoData::Bridge(vec![
                InfoBridge::NfCallIpTables(true),
                InfoBridge::NfCallIp6Tables(true),
            ])),
        ]));
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_alias(&mut self, index: u32, alias: &str) -> NlResult<()> {
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> NlResult<()> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.execute(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Delete a link by name; a link that is already gone is not an error.
    pub fn delete_link_by_name(&mut self, name: &str) -> NlResult<bool> {
        let msg = LinkUnspec::new_with_name(name).build();
        match self.execute(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The kind of a link (`bridge`, `veth`, ...), if the kernel says.
    pub fn is_bridge(link: &LinkInfo) -> bool {
        link.kind.as_deref() == Some(&InfoKind::Bridge.to_string())
    }
}

/// ENODEV and friends, for "the thing is not there".
pub fn is_gone(e: &NetlinkError) -> bool {
    matches!(
        e.errno(),
        Some(libc::ENODEV) | Some(libc::ESRCH) | Some(libc::ENOENT) | Some(libc::EADDRNOTAVAIL)
    )
}
