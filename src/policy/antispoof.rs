//! Anti-spoofing: a container sends only from the MAC and addresses plumb
//! gave it (IPv4, IPv6, ARP, neighbour discovery) and sends no router
//! advertisements. `--allow-spoofing` opts an attachment out (routers, VPN
//! endpoints).
//!
//! Bridge networks: one `bridge plumb` table in the host, written once; its
//! chain checks frames entering the bridge from a guarded port against sets
//! keyed by that port's name, so an attach adds set elements and nothing
//! else. The container cannot touch it.
//!
//! Macvlan networks: frames from a macvlan go to the wire (or straight to a
//! sibling, in bridge mode) without passing any host hook that still knows
//! which child sent them, so the filter sits on the container's own
//! interface, a `netdev plumb` table with an egress hook in its namespace.
//! It holds against containers without CAP_NET_ADMIN (Docker's default),
//! which cannot remove it.
//!
//! The same table shields statically addressed bridge ports from router
//! advertisements, and IPv4-only ones from IPv6 altogether, on their way
//! out of the bridge: their interfaces then need no sysctl (a first lookup
//! under /proc/sys/net in a namespace costs the kernel time that grows with
//! the number of namespaces).
//!
//! Always allowed: DHCP requests from 0.0.0.0, ARP probes (sender 0.0.0.0,
//! RFC 5227), duplicate address detection and MLD from `::`, and the
//! interface's EUI-64 link-local address. On DHCP networks taking SLAAC
//! addresses (which plumb does not choose), IPv6 sources are not checked:
//! only the MAC is.

use std::net::{IpAddr, Ipv6Addr};

use crate::model::{Attachment, Network, NetworkKind};
use crate::netlink::nftable::{self, Chain, Hook, Rule, Set, Table};
use crate::netlink::{Element as SetElement, NfFamily};
use crate::policy::elements::{self, Element, Key};

pub const TABLE: &str = "plumb";

/// Whether `a` gets a guard table in its own namespace (a macvlan that may
/// not spoof); bridge ports are guarded in the host by elements.
pub fn guards_container(net: &Network, a: &Attachment) -> bool {
    !a.allow_spoofing && matches!(net.kind, NetworkKind::Macvlan(_))
}

/// The link-local address the kernel derives from `mac` (EUI-64, the
/// default address generation mode).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Whether IPv6 sources go unchecked (SLAAC addresses plumb did not give).
fn slaac(a: &Attachment) -> bool {
    a.dhcp.as_ref().is_some_and(|d| d.slaac)
}

/// The IPv4 and IPv6 sources `a` may use.
pub fn sources(a: &Attachment) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (v4, mut v6): (Vec<IpAddr>, Vec<IpAddr>) = a
        .addresses
        .iter()
        .map(|n| n.addr())
        .partition(|ip| ip.is_ipv4());
    v6.push(IpAddr::V6(link_local(a.mac.0)));
    (v4, v6)
}

/// The host's `bridge plumb` table, with the elements of every guarded
/// port in `ports`, as nft compiles the checks (`nft --debug=netlink`).
pub fn bridge_table(ports: &[Attachment]) -> Table {
    use nftable::{Base::*, CmpOp::*, Expr, MetaKey::*, Verdict::*};
    let ifname = nftable::TYPE_IFNAME;
    let by_port = |name: &str, other: u32, len: u32, userdata: &[u8]| {
        let key_type = nftable::concat_type(&[ifname, other]);
        Set::new(name, key_type, 16 + len, userdata)
    };
    let port_set = |name: &str| Set::new(name, ifname, 16, nftable::KEY_HOST_ENDIAN);
    let mut sets = vec![
        port_set("guarded"),
        by_port("macs", nftable::TYPE_ETHERADDR, 8, nftable::KEY_CONCAT),
        by_port("addr4", nftable::TYPE_IPADDR, 4, nftable::KEY_CONCAT),
        by_port("addr6", nftable::TYPE_IP6ADDR, 16, nftable::KEY_CONCAT),
        by_port(
            "target6",
            nftable::TYPE_INTEGER,
            16,
            nftable::TYPEOF_IIFNAME_TH_64_128,
        ),
        port_set("slaac"),
        port_set("no_ra"),
        port_set("no_ipv6"),
    ];
    let elements: Vec<Element> = ports.iter().flat_map(bridge_port_elements).collect();
    elements::fill(&mut sets, &elements);

    // nft checks the ethertype of `arp`, `icmpv6` and `ether type` matches
    // in the frame, and that of `ip`/`ip6` address matches in skb->protocol.
    let ether_type = |t: u16| [Expr::payload(Link, 12, 2), Expr::eq(&t.to_be_bytes())];
    let protocol = |t: u16| [Expr::Meta(Protocol), Expr::eq(&t.to_be_bytes())];
    let port_and = |e: Expr| Expr::Concat(vec![Expr::Meta(Iifname), e]);
    let icmpv6 = [Expr::Meta(L4Proto), Expr::eq(&[IPPROTO_ICMPV6])];
    let icmpv6_type = |t: u8| [Expr::payload(Transport, 0, 1), Expr::eq(&[t])];
    let drop = Expr::Verdict(Drop);
    let rule = |parts: &[&[Expr]]| Rule::new(parts.concat());
    // The checks, by the sender's port; `container_table` makes the same
    // ones on a macvlan's own egress.
    let guard = vec![
        // iifname . ether saddr != @macs drop
        rule(&[&[
            port_and(Expr::payload(Link, 6, 6)),
            Expr::not_in("macs"),
            drop.clone(),
        ]]),
        // iifname . arp saddr ether != @macs drop
        rule(&[
            &ether_type(ETH_P_ARP),
            &[
                port_and(Expr::payload(Network, 8, 6)),
                Expr::not_in("macs"),
                drop.clone(),
            ],
        ]),
        // arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @addr4 drop
        rule(&[
            &ether_type(ETH_P_ARP),
            &[Expr::payload(Network, 14, 4), Expr::Cmp(Neq, vec![0; 4])],
            &[
                port_and(Expr::payload(Network, 14, 4)),
                Expr::not_in("addr4"),
                drop.clone(),
            ],
        ]),
        // ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
        rule(&[
            &protocol(ETH_P_IP),
            &[Expr::payload(Network, 12, 4), Expr::eq(&[0; 4])],
            &[Expr::Meta(L4Proto), Expr::eq(&[IPPROTO_UDP])],
            &[
                Expr::payload(Transport, 0, 4),
                Expr::eq(&[0, 68, 0, 67]),
                Expr::Verdict(Accept),
            ],
        ]),
        // iifname . ip saddr != @addr4 drop
        rule(&[
            &protocol(ETH_P_IP),
            &[
                port_and(Expr::payload(Network, 12, 4)),
                Expr::not_in("addr4"),
                drop.clone(),
            ],
        ]),
        // icmpv6 type nd-router-advert drop
        rule(&[
            &ether_type(ETH_P_IPV6),
            &icmpv6,
            &icmpv6_type(ND_ROUTER_ADVERT),
            std::slice::from_ref(&drop),
        ]),
        // ether type ip6 iifname @slaac accept
        rule(&[
            &ether_type(ETH_P_IPV6),
            &[
                Expr::Meta(Iifname),
                Expr::in_set("slaac"),
                Expr::Verdict(Accept),
            ],
        ]),
        // ip6 saddr :: icmpv6 type { nd-neighbor-solicit,
        // mld-listener-report, mld2-listener-report } accept
        rule(&[
            &protocol(ETH_P_IPV6),
            &[Expr::payload(Network, 8, 16), Expr::eq(&[0; 16])],
            &icmpv6,
            &[
                Expr::payload(Transport, 0, 1),
                unspecified_source_icmpv6(),
                Expr::Verdict(Accept),
            ],
        ]),
        // iifname . ip6 saddr != @addr6 drop
        rule(&[
            &protocol(ETH_P_IPV6),
            &[
                port_and(Expr::payload(Network, 8, 16)),
                Expr::not_in("addr6"),
                drop.clone(),
            ],
        ]),
        // icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @target6 drop
        rule(&[
            &ether_type(ETH_P_IPV6),
            &icmpv6,
            &icmpv6_type(ND_NEIGHBOR_ADVERT),
            &[
                port_and(Expr::payload(Transport, 8, 16)),
                Expr::not_in("target6"),
                drop.clone(),
            ],
        ]),
    ];
    let postrouting = vec![
        // oifname @no_ipv6 ether type ip6 drop
        rule(&[
            &[Expr::Meta(Oifname), Expr::in_set("no_ipv6")],
            &ether_type(ETH_P_IPV6),
            std::slice::from_ref(&drop),
        ]),
        // oifname @no_ra icmpv6 type nd-router-advert drop
        rule(&[
            &[Expr::Meta(Oifname), Expr::in_set("no_ra")],
            &ether_type(ETH_P_IPV6),
            &icmpv6,
            &icmpv6_type(ND_ROUTER_ADVERT),
            &[drop],
        ]),
    ];
    let hook = |number, priority| {
        Some(Hook {
            kind: "filter",
            number,
            priority,
            device: None,
        })
    };
    Table {
        family: NfFamily::Bridge,
        name: TABLE.into(),
        sets,
        chains: vec![
            Chain {
                name: "prerouting".into(),
                hook: hook(NF_BR_PRE_ROUTING, -300),
                rules: vec![Rule::new(vec![
                    Expr::Meta(Iifname),
                    Expr::in_set("guarded"),
                    Expr::Verdict(Jump("guard".into())),
                ])],
            },
            Chain {
                name: "guard".into(),
                hook: None,
                rules: guard,
            },
            Chain {
                name: "postrouting".into(),
                hook: hook(NF_BR_POST_ROUTING, 0),
                rules: postrouting,
            },
        ],
    }
}

/// The ICMPv6 types a port may send from `::`: neighbour solicitations
/// (duplicate address detection) and MLD reports.
fn unspecified_source_icmpv6() -> nftable::Expr {
    nftable::Expr::In {
        key_type: nftable::TYPE_ICMP6_TYPE,
        key_len: 1,
        keys: vec![vec![135], vec![131], vec![143]],
        invert: false,
    }
}

/// Whether the host's bridge table keeps router advertisements (and, for
/// an IPv4-only attachment, all IPv6) from `a`'s bridge port, so that its
/// interface needs no sysctl: statically addressed attachments, whose
/// IPv6 plumb sets alone. DHCP ones may take SLAAC addresses.
pub fn shielded(a: &Attachment) -> bool {
    a.dhcp.is_none()
}

/// The set elements of one bridge port: its guard, unless it may spoof,
/// and its IPv6 shield.
pub fn bridge_port_elements(a: &Attachment) -> Vec<Element> {
    let mut out = if a.allow_spoofing {
        Vec::new()
    } else {
        port_elements(a)
    };
    if shielded(a) {
        let port = || Key::Ifname(a.host_ifname.clone());
        out.push(Element::bridge("no_ra", vec![port()]));
        if !a.addresses.iter().any(|n| n.addr().is_ipv6()) {
            out.push(Element::bridge("no_ipv6", vec![port()]));
        }
    }
    out
}

/// The set elements of one guarded bridge port.
fn port_elements(a: &Attachment) -> Vec<Element> {
    let port = || Key::Ifname(a.host_ifname.clone());
    let (v4, v6) = sources(a);
    let mut out = vec![
        Element::bridge("guarded", vec![port()]),
        Element::bridge("macs", vec![port(), Key::Ether(a.mac.0)]),
    ];
    out.extend(
        v4.iter()
            .map(|ip| Element::bridge("addr4", vec![port(), Key::Ip(*ip)])),
    );
    for ip in &v6 {
        out.push(Element::bridge("addr6", vec![port(), Key::Ip(*ip)]));
        out.push(Element::bridge("target6", vec![port(), Key::Raw(*ip)]));
    }
    if slaac(a) {
        out.push(Element::bridge("slaac", vec![port()]));
    }
    out
}

/// The `netdev plumb` table inside a macvlan container, replaced whole
/// (its addresses change only with a DHCP lease): the checks of the
/// bridge's guard chain, on the container's own egress (the MAC and
/// addresses its own, no port in the keys), as the expressions
/// nft compiles them to (`nft --debug=netlink`).
pub fn container_table(a: &Attachment) -> Table {
    use nftable::{Base::*, CmpOp::*, Expr, MetaKey::*, Verdict::*};
    let (v4, v6) = sources(a);
    let mac = a.mac.0.to_vec();
    let set = |name: &str, key_type, key_len, userdata, ips: &[IpAddr]| Set {
        elements: ips.iter().map(|ip| SetElement::address(*ip)).collect(),
        ..Set::new(name, key_type, key_len, userdata)
    };
    let (payload, not_in, is) = (Expr::payload, Expr::not_in, Expr::eq);
    let protocol = |ethertype: u16| [Expr::Meta(Protocol), is(&ethertype.to_be_bytes())];
    let (arp, ip, ip6) = (
        protocol(ETH_P_ARP),
        protocol(ETH_P_IP),
        protocol(ETH_P_IPV6),
    );
    let icmpv6 = [Expr::Meta(L4Proto), is(&[IPPROTO_ICMPV6])];
    let icmpv6_type = payload(Transport, 0, 1);
    let rule = |parts: &[&[Expr]]| Rule::new(parts.concat());
    let mut rules = vec![
        // ether saddr != MAC drop
        rule(&[
            &[Expr::Meta(IifType), is(&ARPHRD_ETHER.to_ne_bytes())],
            &[
                payload(Link, 6, 6),
                Expr::Cmp(Neq, mac.clone()),
                Expr::Verdict(Drop),
            ],
        ]),
        // arp saddr ether != MAC drop
        rule(&[
            &arp,
            &[
                payload(Network, 8, 6),
                Expr::Cmp(Neq, mac),
                Expr::Verdict(Drop),
            ],
        ]),
        // arp saddr ip != 0.0.0.0 arp saddr ip != @addr4 drop
        rule(&[
            &arp,
            &[payload(Network, 14, 4), Expr::Cmp(Neq, vec![0; 4])],
            &[
                payload(Network, 14, 4),
                not_in("addr4"),
                Expr::Verdict(Drop),
            ],
        ]),
        // ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
        rule(&[
            &ip,
            &[payload(Network, 12, 4), is(&[0; 4])],
            &[Expr::Meta(L4Proto), is(&[IPPROTO_UDP])],
            &[
                payload(Transport, 0, 4),
                is(&[0, 68, 0, 67]),
                Expr::Verdict(Accept),
            ],
        ]),
        // ip saddr != @addr4 drop
        rule(&[
            &ip,
            &[
                payload(Network, 12, 4),
                not_in("addr4"),
                Expr::Verdict(Drop),
            ],
        ]),
        // icmpv6 type nd-router-advert drop
        rule(&[
            &ip6,
            &icmpv6,
            &[
                icmpv6_type.clone(),
                is(&[ND_ROUTER_ADVERT]),
                Expr::Verdict(Drop),
            ],
        ]),
    ];
    if slaac(a) {
        // meta protocol ip6 accept
        rules.push(rule(&[&ip6, &[Expr::Verdict(Accept)]]));
    }
    rules.extend([
        // ip6 saddr :: icmpv6 type { nd-neighbor-solicit, mld-listener-report,
        // mld2-listener-report } accept
        rule(&[
            &ip6,
            &[payload(Network, 8, 16), is(&[0; 16])],
            &icmpv6,
            &[
                icmpv6_type.clone(),
                unspecified_source_icmpv6(),
                Expr::Verdict(Accept),
            ],
        ]),
        // ip6 saddr != @addr6 drop
        rule(&[
            &ip6,
            &[
                payload(Network, 8, 16),
                not_in("addr6"),
                Expr::Verdict(Drop),
            ],
        ]),
        // icmpv6 type nd-neighbor-advert @th,64,128 != @target6 drop
        rule(&[
            &ip6,
            &icmpv6,
            &[icmpv6_type, is(&[ND_NEIGHBOR_ADVERT])],
            &[
                payload(Transport, 8, 16),
                not_in("target6"),
                Expr::Verdict(Drop),
            ],
        ]),
    ]);
    Table {
        family: NfFamily::Netdev,
        name: TABLE.into(),
        sets: vec![
            set(
                "addr4",
                nftable::TYPE_IPADDR,
                4,
                nftable::KEY_BIG_ENDIAN,
                &v4,
            ),
            set(
                "addr6",
                nftable::TYPE_IP6ADDR,
                16,
                nftable::KEY_BIG_ENDIAN,
                &v6,
            ),
            set(
                "target6",
                nftable::TYPE_INTEGER,
                16,
                nftable::TYPEOF_TH_64_128,
                &v6,
            ),
        ],
        chains: vec![Chain {
            name: "egress".into(),
            hook: Some(Hook {
                kind: "filter",
                number: NF_NETDEV_EGRESS,
                priority: 0,
                device: Some(a.ifname.clone()),
            }),
            rules,
        }],
    }
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ARPHRD_ETHER: u16 = 1;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const ND_ROUTER_ADVERT: u8 = 134;
const ND_NEIGHBOR_ADVERT: u8 = 136;
const NF_NETDEV_EGRESS: u32 = 1;
const NF_BR_PRE_ROUTING: u32 = 0;
const NF_BR_POST_ROUTING: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_eui64() {
        assert_eq!(
            link_local([0x02, 0x42, 0xac, 0x11, 0x00, 0x02]),
            "fe80::42:acff:fe11:2".parse::<Ipv6Addr>().unwrap()
        );
    }
}
