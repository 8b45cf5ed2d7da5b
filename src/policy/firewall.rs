//! plumb's nftables state: the tables `inet plumb` (NAT, published ports,
//! isolation, the user's rules) and `bridge plumb` (anti-spoofing), which
//! plumb alone owns, built from the store as nf_tables expressions (the
//! ones nft compiles the rules in the comments to) and swapped in as one
//! kernel transaction over nfnetlink. Rules are per network and per user rule: attaching a container
//! only adds elements to their sets and maps (`elements`).
//!
//! Where iptables' `FORWARD` chains drop by default (Docker sets that),
//! the bridges' traffic also needs plain accepts there (`iptables`); they
//! are written in the same transaction as the tables.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::model::{Attachment, BridgeMode, BridgeOptions, Network, Proto as ModelProto};
use crate::netlink::nftable::{
    self, Base, Chain, CmpOp, CtKey, Edit, Expr, Hook, MetaKey, Rule, Set, Table, Verdict,
};
use crate::netlink::{Element as NlElement, Field, NetlinkError, NfFamily, NfNetlink, set_key};
use crate::policy::egress::EgressRule;
use crate::policy::elements::{self, Element, Key};
use crate::policy::rules::{Action, Proto, Selector, StoredPolicy, tenant_networks};
use crate::policy::{antispoof, iptables, legacy};
use crate::store;

pub const TABLE: &str = "plumb";

/// The bridge networks among `networks`: the only ones with rules today.
fn bridges(networks: &[Network]) -> impl Iterator<Item = (&Network, &BridgeOptions)> {
    networks.iter().filter_map(|n| n.bridge().map(|b| (n, b)))
}

/// Everything plumb's tables are built from.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub networks: Vec<Network>,
    /// Attachments with published ports.
    pub published: Vec<Attachment>,
    pub policies: Vec<StoredPolicy>,
    /// The addresses of the attachments each attachment selector would
    /// name, whether or not a rule uses it: a change of rules needs no
    /// new read of the attachments.
    pub members: BTreeMap<String, Vec<IpAddr>>,
    /// Attachments on bridge networks, whose ports the bridge table guards
    /// or shields.
    pub ports: Vec<Attachment>,
    /// The egress rules plumb masquerades for.
    pub egress: Vec<EgressRule>,
}

impl Ruleset {
    /// The ruleset the store describes.
    pub fn load(conn: &Connection) -> Result<Self> {
        let networks: Vec<Network> = store::networks(conn)?
            .into_iter()
            .map(|n| n.network)
            .collect();
        let mut members: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let mut ports = Vec::new();
        for a in store::attachments(conn)?.into_iter().map(|s| s.attachment) {
            for key in a.selector_keys() {
                members
                    .entry(key)
                    .or_default()
                    .extend(a.addresses.iter().map(|n| n.addr()));
            }
            let net = networks.iter().find(|n| n.name == a.network);
            if net.is_some_and(|n| n.bridge().is_some()) {
                ports.push(a);
            }
        }
        for (key, address) in store::host_extras::cluster_selectors(conn)? {
            members.entry(key).or_default().push(address);
        }
        Ok(Ruleset {
            networks,
            published: store::published_attachments(conn)?,
            policies: store::policies(conn)?,
            members,
            ports,
            egress: masquerading(conn)?,
        })
    }
}

/// The egress rules whose sources plumb NATs.
pub fn masquerading(conn: &Connection) -> Result<Vec<EgressRule>> {
    Ok(store::host_extras::egress_rules(conn)?
        .into_iter()
        .filter(|r| r.masquerade)
        .collect())
}

/// plumb's two tables: `bridge plumb` when there are bridge networks, and
/// `inet plumb` when it has anything to hold; each replaced whole, or
/// deleted.
fn tables(r: &Ruleset) -> Vec<Edit> {
    let bridge = if bridges(&r.networks).next().is_some() {
        Edit::Replace(antispoof::bridge_table(&r.ports))
    } else {
        Edit::Delete {
            family: NfFamily::Bridge,
            name: antispoof::TABLE.into(),
        }
    };
    vec![bridge, inet_edit(r)]
}

fn inet_edit(r: &Ruleset) -> Edit {
    match inet_table(r) {
        Some(t) => Edit::Replace(t),
        None => Edit::Delete {
            family: NfFamily::Inet,
            name: TABLE.into(),
        },
    }
}

/// The `inet plumb` table, unless it would be empty: the address sets of
/// the rules' attachment selectors, the forward chain, and NAT.
///
/// Published ports live in two maps, keyed by protocol and port (all host
/// addresses) or by host address, protocol and port; the DNAT rules that
/// read them are written once, so publishing a port adds map elements and
/// never a rule. Answers from the host itself go through the output hook;
/// connections from 127.0.0.1 (the bridge has route_localnet) and from a
/// container to its own network's published port (hairpin) are
/// masqueraded so the answers come back the same way.
fn inet_table(r: &Ruleset) -> Option<Table> {
    let mut sets = address_sets(r);
    let mut chains: Vec<Chain> = forward(r).into_iter().collect();
    if let Some((maps, nat_chains)) = nat(&r.networks, &r.egress) {
        let start = sets.len();
        sets.extend(maps);
        let published: Vec<Element> = r.published.iter().flat_map(publish_elements).collect();
        elements::fill(&mut sets[start..], &published);
        chains.extend(nat_chains);
    }
    if sets.is_empty() && chains.is_empty() {
        return None;
    }
    Some(Table {
        family: NfFamily::Inet,
        name: TABLE.into(),
        sets,
        chains,
    })
}

fn hook(kind: &'static str, number: u32, priority: i32) -> Option<Hook> {
    Some(Hook {
        kind,
        number,
        priority,
        device: None,
    })
}

/// `iifname`/`oifname` is one of `names`.
fn ifname_in(key: MetaKey, names: &[&str]) -> [Expr; 2] {
    let keys = names.iter().map(|n| ifname(n)).collect();
    [
        Expr::Meta(key),
        Expr::one_of(nftable::TYPE_IFNAME, 16, keys),
    ]
}

/// An interface name as `meta iifname` loads it.
fn ifname(name: &str) -> Vec<u8> {
    set_key(&[Field::Ifname(name)])
}

/// The checks of `ct state established,related` or `ct status dnat`: a
/// mask of the key's bits, not zero.
fn ct_any(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct(key),
        Expr::And(bits.to_ne_bytes().to_vec()),
        Expr::Cmp(CmpOp::Neq, vec![0; 4]),
    ]
}

/// `ct status & BITS == 0`: none of the key's bits.
fn ct_none(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct(key),
        Expr::And(bits.to_ne_bytes().to_vec()),
        Expr::eq(&[0; 4]),
    ]
}

const CT_ESTABLISHED_RELATED: u32 = 0x2 | 0x4;
const IPS_DST_NAT: u32 = 0x20;

/// The IP family a match implies; an inet table checks it (`meta
/// nfproto`) before the first address of a rule.
fn ip_family(ip: &IpAddr) -> NfFamily {
    if ip.is_ipv4() {
        NfFamily::Ip
    } else {
        NfFamily::Ip6
    }
}

fn nfproto(family: NfFamily) -> [Expr; 2] {
    [Expr::Meta(MetaKey::Nfproto), Expr::eq(&[family as u8])]
}

/// The source (`from`) or destination address is in `net`, without the
/// family check. A prefix of whole bytes loads only those bytes, as nft
/// does; any other is masked.
fn address_in(net: &IpNet, from: bool) -> Vec<Expr> {
    let (bytes, mask) = match net {
        IpNet::V4(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
        IpNet::V6(n) => (n.network().octets().to_vec(), n.netmask().octets().to_vec()),
    };
    let (offset, _) = address_field(ip_family(&net.addr()), from);
    let prefix = u32::from(net.prefix_len());
    if prefix > 0 && prefix % 8 == 0 {
        let len = prefix / 8;
        return vec![
            Expr::payload(Base::Network, offset, len),
            Expr::eq(&bytes[..len as usize]),
        ];
    }
    vec![
        Expr::payload(Base::Network, offset, bytes.len() as u32),
        Expr::And(mask),
        Expr::eq(&bytes),
    ]
}

/// The source or destination address is in the named set.
fn address_in_set(family: NfFamily, set: &str, from: bool) -> Vec<Expr> {
    let (offset, len) = address_field(family, from);
    vec![Expr::payload(Base::Network, offset, len), Expr::in_set(set)]
}

/// Where the source (`from`) or destination address of `family` (ip or
/// ip6) sits in the network header, and its length.
fn address_field(family: NfFamily, from: bool) -> (u32, u32) {
    match (family, from) {
        (NfFamily::Ip, true) => (12, 4),
        (NfFamily::Ip, false) => (16, 4),
        (_, true) => (8, 16),
        (_, false) => (24, 16),
    }
}

/// Port publishing and masquerade, when there are NAT bridges: the maps
/// and the nat chains; the masquerade of egress rules that ask for it.
fn nat(networks: &[Network], egress: &[EgressRule]) -> Option<(Vec<Set>, Vec<Chain>)> {
    let nat_bridges: Vec<(&Network, &BridgeOptions)> = bridges(networks)
        .filter(|(_, b)| b.mode == BridgeMode::Nat)
        .collect();
    let masquerade = |parts: &[&[Expr]]| {
        let mut exprs = parts.concat();
        exprs.push(Expr::Masquerade);
        Rule::new(exprs)
    };
    let mut post = Vec::new();
    // SOURCE oifname UPLINK masquerade
    for rule in egress {
        for source in super::egress::routable(&rule.egress, &rule.applied) {
            let family = nfproto(ip_family(&source.addr()));
            let out = [
                Expr::Meta(MetaKey::Oifname),
                Expr::eq(&ifname(&rule.egress.interface)),
            ];
            post.push(
                masquerade(&[&family, &address_in(&source, true), &out])
                    .commented(format!("egress {}", rule.id)),
            );
        }
    }
    if nat_bridges.is_empty() {
        let chain = Chain {
            name: "postrouting".into(),
            hook: hook("nat", NF_INET_POST_ROUTING, PRIORITY_SRCNAT),
            rules: post,
        };
        return (!chain.rules.is_empty()).then(|| (Vec::new(), vec![chain]));
    }
    // Into a cluster network sources stay as they are: each host holds
    // its gateway, so an answer to the gateway's address would end at the
    // answering host; it goes to the sender, through that host's routing.
    for (net, b) in bridges(networks).filter(|(_, b)| b.overlay.is_some()) {
        post.push(
            Rule::new(vec![
                Expr::Meta(MetaKey::Oifname),
                Expr::eq(&ifname(&b.bridge)),
                Expr::Verdict(Verdict::Accept),
            ])
            .commented(format!("{} keeps sources", net.name)),
        );
    }
    let ct_dnat = ct_any(CtKey::Status, IPS_DST_NAT);
    for (net, b) in &nat_bridges {
        for sub in &net.subnets {
            let family = nfproto(ip_family(&sub.subnet.addr()));
            let out = match &b.uplink {
                Some(uplink) => Expr::eq(&ifname(&uplink.name)),
                None => Expr::Cmp(CmpOp::Neq, ifname(&b.bridge)),
            };
            let from = address_in(&sub.subnet, true);
            // SUBNET oifname [!=] OUT masquerade
            post.push(
                masquerade(&[&family, &from, &[Expr::Meta(MetaKey::Oifname), out]])
                    .commented(&net.name),
            );
            // SUBNET to SUBNET, to a published port: hairpin
            post.push(
                masquerade(&[&family, &from, &address_in(&sub.subnet, false), &ct_dnat])
                    .commented(format!("{} hairpin", net.name)),
            );
        }
    }
    let localhost = IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8));
    post.push(
        masquerade(&[
            &nfproto(NfFamily::Ip),
            &address_in(&localhost, true),
            &ct_dnat,
        ])
        .commented("localhost"),
    );
    let dport = Expr::payload(Base::Transport, 2, 2);
    // fib daddr type local meta l4proto { tcp, udp } dnat ip to KEY map @MAP
    let dnat = || {
        let local = [
            Expr::FibDaddrType,
            Expr::eq(&RTN_LOCAL.to_ne_bytes()),
            Expr::Meta(MetaKey::L4Proto),
            Expr::one_of(
                nftable::TYPE_INET_PROTO,
                1,
                vec![vec![libc::IPPROTO_TCP as u8], vec![libc::IPPROTO_UDP as u8]],
            ),
        ];
        let by_address = [
            &local[..],
            &nfproto(NfFamily::Ip),
            &[
                Expr::Concat(vec![
                    Expr::payload(Base::Network, 16, 4),
                    Expr::Meta(MetaKey::L4Proto),
                    dport.clone(),
                ]),
                Expr::MapLookup("publish_addr".into()),
                Expr::Dnat4,
            ],
        ]
        .concat();
        let any_address = [
            &local[..],
            &[
                Expr::Concat(vec![Expr::Meta(MetaKey::L4Proto), dport.clone()]),
                Expr::MapLookup("publish".into()),
                Expr::Dnat4,
            ],
        ]
        .concat();
        vec![Rule::new(by_address), Rule::new(any_address)]
    };
    let t = nftable::concat_type;
    let (addr, proto, port) = (
        nftable::TYPE_IPADDR,
        nftable::TYPE_INET_PROTO,
        nftable::TYPE_INET_SERVICE,
    );
    let maps = vec![
        // type inet_proto . inet_service : ipv4_addr . inet_service
        Set::new("publish", t(&[proto, port]), 8, nftable::MAP_CONCAT)
            .mapping_to(t(&[addr, port]), 8),
        // type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
        Set::new(
            "publish_addr",
            t(&[addr, proto, port]),
            12,
            nftable::MAP_CONCAT,
        )
        .mapping_to(t(&[addr, port]), 8),
    ];
    let chains = vec![
        Chain {
            name: "prerouting".into(),
            hook: hook("nat", NF_INET_PRE_ROUTING, PRIORITY_DSTNAT),
            rules: dnat(),
        },
        Chain {
            name: "output".into(),
            hook: hook("nat", NF_INET_LOCAL_OUT, PRIORITY_DSTNAT),
            rules: dnat(),
        },
        Chain {
            name: "postrouting".into(),
            hook: hook("nat", NF_INET_POST_ROUTING, PRIORITY_SRCNAT),
            rules: post,
        },
    ];
    Some((maps, chains))
}

const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;
/// `filter - 1`: before the filter chains of others at the same hook.
const PRIORITY_FORWARD: i32 = -1;
const RTN_LOCAL: u32 = 2;

/// The name of the sets (`NAME4`, `NAME6`) holding the addresses an
/// attachment selector names.
pub fn selector_set(key: &str) -> String {
    format!("a{}", &crate::names::short_hash(&["selector", key])[..12])
}

/// One pair of address sets per attachment selector the rules use; an
/// attach adds its addresses to them, no rule changes.
fn address_sets(r: &Ruleset) -> Vec<Set> {
    let keys: BTreeSet<String> = r
        .policies
        .iter()
        .flat_map(|p| [&p.policy.from, &p.policy.to])
        .filter_map(|s| s.set_key())
        .collect();
    let mut out = Vec::new();
    for key in keys {
        let name = selector_set(&key);
        let addrs = r.members.get(&key).map(Vec::as_slice).unwrap_or_default();
        let userdata = nftable::with_comment(nftable::KEY_BIG_ENDIAN, &key);
        for (suffix, ty, len, v4) in [
            ("4", nftable::TYPE_IPADDR, 4, true),
            ("6", nftable::TYPE_IP6ADDR, 16, false),
        ] {
            let mut set = Set::new(&format!("{name}{suffix}"), ty, len, &userdata);
            set.elements = addrs
                .iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(|a| NlElement::address(*a))
                .collect();
            out.push(set);
        }
    }
    out
}

/// The forward chain: answers first, then traffic within one network
/// (forwarded here when br_netfilter sends bridged frames through the IP
/// hooks), then what comes from outside into a NAT network other than to a
/// published port (dropped, whatever a rule allows), then the user's rules
/// in evaluation order, then the defaults (published ports reachable,
/// traffic between plumb networks dropped). Written once per rule and per
/// network, never per container; the per-network matches are set lookups,
/// not a rule per network.
fn forward(r: &Ruleset) -> Option<Chain> {
    let names: Vec<&str> = bridges(&r.networks)
        .map(|(_, b)| b.bridge.as_str())
        .collect();
    let nat: Vec<&str> = bridges(&r.networks)
        .filter(|(_, b)| b.mode == BridgeMode::Nat)
        .map(|(_, b)| b.bridge.as_str())
        .collect();
    let policy = policy_rules(r);
    if names.len() < 2 && policy.is_empty() && nat.is_empty() {
        return None;
    }
    let accept = Expr::Verdict(Verdict::Accept);
    let mut rules = vec![Rule::new(
        [
            &ct_any(CtKey::State, CT_ESTABLISHED_RELATED)[..],
            std::slice::from_ref(&accept),
        ]
        .concat(),
    )];
    if !names.is_empty() {
        // iifname . oifname { "A" . "A", ... } accept: a set even of one.
        let pairs = names
            .iter()
            .map(|n| [ifname(n), ifname(n)].concat())
            .collect();
        let ifname = nftable::TYPE_IFNAME;
        rules.push(
            Rule::new(vec![
                Expr::Concat(vec![
                    Expr::Meta(MetaKey::Iifname),
                    Expr::Meta(MetaKey::Oifname),
                ]),
                Expr::In {
                    key_type: nftable::concat_type(&[ifname, ifname]),
                    key_len: 32,
                    keys: pairs,
                    invert: false,
                },
                accept.clone(),
            ])
            .commented("within a network"),
        );
    }
    if !nat.is_empty() {
        // oifname NAT iifname != ALL ct status & dnat == 0 drop
        let exprs = [
            &ifname_in(MetaKey::Oifname, &nat)[..],
            &[
                Expr::Meta(MetaKey::Iifname),
                Expr::none_of(
                    nftable::TYPE_IFNAME,
                    16,
                    names.iter().map(|n| ifname(n)).collect(),
                ),
            ],
            &ct_none(CtKey::Status, IPS_DST_NAT),
            &[Expr::Verdict(Verdict::Drop)],
        ]
        .concat();
        rules.push(Rule::new(exprs).commented("nat networks: published ports only"));
    }
    rules.extend(policy);
    rules.push(Rule::new(
        [&ct_any(CtKey::Status, IPS_DST_NAT)[..], &[accept]].concat(),
    ));
    if names.len() >= 2 {
        let exprs = [
            &ifname_in(MetaKey::Iifname, &names)[..],
            &ifname_in(MetaKey::Oifname, &names),
            &[Expr::Verdict(Verdict::Drop)],
        ]
        .concat();
        rules.push(Rule::new(exprs).commented("networks are isolated"));
    }
    Some(Chain {
        name: "forward".into(),
        hook: hook("filter", NF_INET_FORWARD, PRIORITY_FORWARD),
        rules,
    })
}

/// One match of a selector: its expressions, and the IP family it implies
/// (whose check the rule puts before its first address).
struct Match {
    family: Option<NfFamily>,
    exprs: Vec<Expr>,
}

/// How selector `s` matches as a source (`from`) or destination: plumb
/// bridges by interface, other networks and CIDRs by address, attachments
/// by their address sets. Empty when it names nothing that exists.
fn matches(s: &Selector, from: bool, networks: &[Network]) -> Vec<Match> {
    let key = if from {
        MetaKey::Iifname
    } else {
        MetaKey::Oifname
    };
    let cidr = |c: &IpNet| Match {
        family: Some(ip_family(&c.addr())),
        exprs: address_in(c, from),
    };
    let of_networks = |nets: Vec<&Network>| {
        let bridges: Vec<&str> = nets
            .iter()
            .filter_map(|n| n.bridge())
            .map(|b| b.bridge.as_str())
            .collect();
        let mut out: Vec<Match> = nets
            .iter()
            .filter(|n| n.bridge().is_none())
            .flat_map(|n| n.subnets.iter().map(|s| cidr(&s.subnet)))
            .collect();
        if !bridges.is_empty() {
            out.push(Match {
                family: None,
                exprs: ifname_in(key, &bridges).to_vec(),
            });
        }
        out
    };
    match s {
        Selector::Any => vec![Match {
            family: None,
            exprs: Vec::new(),
        }],
        Selector::Network(n) => of_networks(networks.iter().filter(|x| x.name == *n).collect()),
        Selector::Tenant(t) => of_networks(tenant_networks(networks, t)),
        Selector::Cidr(c) => vec![cidr(c)],
        Selector::Attachment(_) | Selector::Label(_) => {
            let name = selector_set(&s.to_string());
            [(NfFamily::Ip, "4"), (NfFamily::Ip6, "6")]
                .map(|(family, suffix)| Match {
                    family: Some(family),
                    exprs: address_in_set(family, &format!("{name}{suffix}"), from),
                })
                .into()
        }
    }
}

/// The user's rules, in evaluation order (see `rules`).
fn policy_rules(r: &Ruleset) -> Vec<Rule> {
    let mut sorted: Vec<&StoredPolicy> = r.policies.iter().collect();
    sorted.sort_by_key(|p| p.policy.order(p.id));
    let mut out = Vec::new();
    for sp in sorted {
        let p = &sp.policy;
        let verdict = Expr::Verdict(match p.action {
            Action::Allow => Verdict::Accept,
            Action::Deny => Verdict::Drop,
        });
        for f in matches(&p.from, true, &r.networks) {
            for t in matches(&p.to, false, &r.networks) {
                let family = match (f.family, t.family) {
                    (Some(a), Some(b)) if a != b => continue,
                    (a, b) => a.or(b),
                };
                let mut exprs = Vec::new();
                let mut family_checked = false;
                for m in [&f, &t] {
                    if let (Some(family), false) = (m.family, family_checked) {
                        exprs.extend(nfproto(family));
                        family_checked = true;
                    }
                    exprs.extend(m.exprs.iter().cloned());
                }
                exprs.extend(proto_match(p.proto, family));
                match p.ports {
                    None => {}
                    Some((lo, hi)) if lo == hi => exprs.extend([
                        Expr::payload(Base::Transport, 2, 2),
                        Expr::eq(&lo.to_be_bytes()),
                    ]),
                    Some((lo, hi)) => exprs.extend([
                        Expr::payload(Base::Transport, 2, 2),
                        Expr::Cmp(CmpOp::Gte, lo.to_be_bytes().to_vec()),
                        Expr::Cmp(CmpOp::Lte, hi.to_be_bytes().to_vec()),
                    ]),
                }
                exprs.push(verdict.clone());
                out.push(Rule::new(exprs).commented(format!("policy {}", sp.id)));
            }
        }
    }
    out
}

/// `meta l4proto P`; ICMP is the family's own, or either without one.
fn proto_match(proto: Option<Proto>, family: Option<NfFamily>) -> Vec<Expr> {
    const ICMP: u8 = libc::IPPROTO_ICMP as u8;
    const ICMPV6: u8 = libc::IPPROTO_ICMPV6 as u8;
    let number = match (proto, family) {
        (None, _) => return Vec::new(),
        (Some(Proto::Icmp), Some(NfFamily::Ip)) => ICMP,
        (Some(Proto::Icmp), Some(_)) => ICMPV6,
        (Some(Proto::Icmp), None) => {
            return vec![
                Expr::Meta(MetaKey::L4Proto),
                Expr::one_of(nftable::TYPE_INET_PROTO, 1, vec![vec![ICMP], vec![ICMPV6]]),
            ];
        }
        (Some(Proto::Tcp), _) => libc::IPPROTO_TCP as u8,
        (Some(Proto::Udp), _) => libc::IPPROTO_UDP as u8,
    };
    vec![Expr::Meta(MetaKey::L4Proto), Expr::eq(&[number])]
}

/// The IPv4 address a published port of `a` is forwarded to.
pub fn published_address(a: &Attachment) -> Option<std::net::IpAddr> {
    a.addresses.iter().map(|n| n.addr()).find(|ip| ip.is_ipv4())
}

/// The map elements forwarding the published ports of `a`.
fn publish_elements(a: &Attachment) -> Vec<Element> {
    let Some(to) = published_address(a) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in &a.publish {
        let proto = Key::Proto(match p.proto {
            ModelProto::Tcp => libc::IPPROTO_TCP as u8,
            ModelProto::Udp => libc::IPPROTO_UDP as u8,
        });
        for i in 0..p.count {
            let (hp, cp) = (Key::Port(p.host_port + i), Key::Port(p.port + i));
            let data = vec![Key::Ip(to), cp];
            out.push(match p.host_ip {
                None => Element::inet_map("publish", vec![proto.clone(), hp], data),
                Some(ip) => Element::inet_map(
                    "publish_addr",
                    vec![Key::Ip(ip.into()), proto.clone(), hp],
                    data,
                ),
            });
        }
    }
    out
}

/// Forward `a`'s published ports: map elements added, one batch.
pub fn publish(a: &Attachment) -> Result<()> {
    elements::apply(&[], &publish_elements(a))
}

/// Stop forwarding `a`'s published ports (those that are forwarded).
pub fn unpublish(a: &Attachment) -> Result<()> {
    elements::withdraw(&publish_elements(a))
}

/// The elements putting `a`'s addresses into the sets of the attachment
/// selectors `keys` (those that name it and that rules use).
pub fn selector_elements(keys: &[String], a: &Attachment) -> Vec<Element> {
    keys.iter()
        .flat_map(|key| {
            a.addresses
                .iter()
                .map(move |addr| selector_element(key, addr.addr()))
        })
        .collect()
}

/// The element putting `address` into the set of selector `key` (of its
/// family).
pub fn selector_element(key: &str, address: IpAddr) -> Element {
    let suffix = if address.is_ipv4() { "4" } else { "6" };
    Element::inet(
        format!("{}{suffix}", selector_set(key)),
        vec![Key::Ip(address)],
    )
}

/// Write `inet plumb` again after the user's rules changed (the networks,
/// and so the guard table and the FORWARD accepts, did not).
pub fn sync_rules(r: &Ruleset) -> Result<()> {
    nf_tables()?.edit(&[inet_edit(r)]).map_err(writing)
}

/// Make the kernel's tables and the accepts in iptables-nft's chains match
/// `r`, in one transaction; then the legacy backend's accepts, where it is
/// in use. Those are not in nftables' transaction: a failure there (no
/// iptables-legacy, the xtables lock held) leaves plumb's tables right and
/// is said, not undone.
pub fn sync(r: &Ruleset) -> Result<()> {
    sync_tables(r)?;
    if let Err(e) = legacy::sync_accepts(&r.networks) {
        tracing::warn!("legacy iptables: {e}");
    }
    Ok(())
}

/// The nftables part of [`sync`]: one transaction.
pub fn sync_tables(r: &Ruleset) -> Result<()> {
    let mut nf = nf_tables()?;
    let mut edits = tables(r);
    edits.extend(iptables::edits(&mut nf, &r.networks)?);
    nf.edit(&edits).map_err(writing)
}

fn writing(e: NetlinkError) -> Error {
    Error::kernel("write plumb's nftables tables", e)
}

/// Whether the kernel still holds what `sync_tables` put there: our table
/// (when there is anything to put in it), the bridge table, and our
/// accepts in iptables-nft's chains. False after an `nft flush ruleset`, an `iptables -F`,
/// or a Docker restart that rebuilt its chains. The daemon asks twice a
/// second, so the kernel is asked directly: a few small messages, whatever
/// the sets hold.
pub fn in_place(r: &Ruleset) -> Result<bool> {
    // Without a bridge or a masquerading egress rule plumb puts nothing
    // into nftables: nothing to check.
    let has_bridges = bridges(&r.networks).next().is_some();
    if !has_bridges && r.egress.is_empty() {
        return Ok(true);
    }
    let mut nf = nf_tables()?;
    let wants_table = inet_table(r).is_some();
    if wants_table && !nf.table_exists(NfFamily::Inet, TABLE).map_err(asking)? {
        return Ok(false);
    }
    if !has_bridges {
        return Ok(true);
    }
    if !nf
        .table_exists(NfFamily::Bridge, antispoof::TABLE)
        .map_err(asking)?
    {
        return Ok(false);
    }
    iptables::in_place(&mut nf, &r.networks)
}

fn nf_tables() -> Result<NfNetlink> {
    NfNetlink::open().map_err(|e| Error::kernel("open an nfnetlink socket", e))
}

fn asking(e: NetlinkError) -> Error {
    Error::kernel("ask nf_tables what it holds", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkSpec;

    fn net(name: &str, subnet: &str, mode: &str, uplink: Option<&str>) -> Network {
        NetworkSpec {
            name: name.into(),
            driver: "bridge".into(),
            subnet: vec![subnet.into()],
            mode: Some(mode.into()),
            uplink: uplink.map(String::from),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn ruleset(networks: Vec<Network>) -> Ruleset {
        Ruleset {
            networks,
            ..Default::default()
        }
    }

    fn chain<'t>(t: &'t Table, name: &str) -> &'t Chain {
        t.chains.iter().find(|c| c.name == name).unwrap()
    }

    fn commented<'c>(c: &'c Chain, comment: &str) -> &'c Rule {
        let found = c
            .rules
            .iter()
            .find(|r| r.comment.as_deref() == Some(comment));
        found.unwrap_or_else(|| panic!("no rule {comment} in {}", c.name))
    }

    fn has(r: &Rule, e: &Expr) -> bool {
        r.exprs.contains(e)
    }

    #[test]
    fn nat_networks_masquerade_and_others_do_not() {
        let t = inet_table(&ruleset(vec![
            net("a", "10.1.0.0/24", "nat", None),
            net("b", "10.2.0.0/24", "routed", None),
            net("c", "fd00::/64", "nat", Some("eth9")),
        ]))
        .unwrap();
        let post = chain(&t, "postrouting");
        let comments: Vec<_> = post.rules.iter().map(|r| r.comment.as_deref()).collect();
        let expected = ["a", "a hairpin", "c", "c hairpin", "localhost"];
        assert_eq!(comments, expected.map(Some));
        // ip saddr 10.1.0.0/24 oifname != "pl-a" masquerade
        let a = commented(post, "a");
        assert!(has(a, &Expr::eq(&[10, 1, 0])));
        assert!(has(a, &Expr::Cmp(CmpOp::Neq, ifname("pl-a"))));
        assert_eq!(a.exprs.last(), Some(&Expr::Masquerade));
        // ip6 saddr fd00::/64 oifname "eth9" masquerade
        let c = commented(post, "c");
        assert_eq!(c.exprs[..2], nfproto(NfFamily::Ip6));
        assert!(has(c, &Expr::payload(Base::Network, 8, 8)));
        assert!(has(c, &Expr::eq(&ifname("eth9"))));
        // The hairpin: source and destination in the subnet, to a
        // published port.
        let hairpin = commented(post, "a hairpin");
        assert!(has(hairpin, &Expr::payload(Base::Network, 16, 3)));
        assert!(has(hairpin, &Expr::Ct(CtKey::Status)));
        let prerouting = chain(&t, "prerouting");
        assert!(prerouting.rules.iter().all(|r| has(r, &Expr::Dnat4)));
        let names: Vec<_> = t.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["publish", "publish_addr"]);
    }

    #[test]
    fn a_routed_network_alone_needs_only_the_guard_table() {
        let edits = tables(&ruleset(vec![net("b", "10.2.0.0/24", "routed", None)]));
        assert!(matches!(&edits[0], Edit::Replace(t) if t.family == NfFamily::Bridge));
        assert!(matches!(
            &edits[1],
            Edit::Delete {
                family: NfFamily::Inet,
                ..
            }
        ));
        let none = tables(&ruleset(Vec::new()));
        assert!(
            none.iter().all(|e| matches!(e, Edit::Delete { .. })),
            "no network, no table"
        );
    }

    #[test]
    fn a_prefix_of_whole_bytes_is_a_shorter_load_and_any_other_a_mask() {
        let cidr = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(
            address_in(&cidr("192.168.6.0/23"), false),
            [
                Expr::payload(Base::Network, 16, 4),
                Expr::And(vec![255, 255, 254, 0]),
                Expr::eq(&[192, 168, 6, 0]),
            ]
        );
        assert_eq!(
            address_in(&cidr("fd00::/8"), true),
            [Expr::payload(Base::Network, 8, 1), Expr::eq(&[0xfd])]
        );
        // /0 matches any address of the family, as nft writes it.
        assert_eq!(
            address_in(&cidr("0.0.0.0/0"), true)[1],
            Expr::And(vec![0; 4])
        );
    }
}
