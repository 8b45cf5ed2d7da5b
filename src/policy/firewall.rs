//! plumb's nftables state: the tables `inet plumb` (NAT, published ports,
//! isolation, the user's rules) and `bridge plumb` (anti-spoofing), which
//! plumb alone owns, rendered from the store and swapped in as one atomic
//! batch. Rules are per network and per user rule: attaching a container
//! only adds elements to their sets and maps (`elements`).
//!
//! Docker (and anything using iptables-nft) may set the `FORWARD` policy of
//! `table ip filter` to DROP. A drop verdict in any base chain is final, so
//! an accept in our own table cannot override it: we add our own accept
//! rules at the head of that chain, tagged with a comment, and remove
//! exactly those on the next sync.

use std::fmt::Write;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::model::{Attachment, BridgeMode, BridgeOptions, Network, Proto as ModelProto};
use crate::netlink::{NetlinkError, NfFamily, NfNetlink};
use crate::nft::Nft;
use crate::policy::antispoof;
use crate::policy::elements::{self, Element, Key, elements_text};
use crate::policy::rules::{Action, Proto, Selector, StoredPolicy, tenant_networks};
use crate::store;

pub const TABLE: &str = "plumb";
const TAG: &str = "plumb";

/// The bridge networks among `networks`: the only ones with rules today.
fn bridges(networks: &[Network]) -> impl Iterator<Item = (&Network, &BridgeOptions)> {
    networks.iter().filter_map(|n| n.bridge().map(|b| (n, b)))
}

/// Everything the `inet plumb` table is rendered from.
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
        Ok(Ruleset {
            networks,
            published: store::published_attachments(conn)?,
            policies: store::policies(conn)?,
            members,
            ports,
        })
    }
}

/// Render the whole `inet plumb` table.
///
/// Published ports live in two maps, keyed by protocol and port (all host
/// addresses) or by host address, protocol and port; the DNAT rules that
/// read them are written once, so publishing a port adds map elements and
/// never a rule. Answers from the host itself go through the output hook;
/// connections from 127.0.0.1 (the bridge has route_localnet) and from a
/// container to its own network's published port (hairpin) are
/// masqueraded so the answers come back the same way.
pub fn render(r: &Ruleset) -> String {
    let mut text = format!(
        "add table bridge {t}\ndelete table bridge {t}\n",
        t = antispoof::TABLE
    );
    if bridges(&r.networks).next().is_some() {
        let ports: Vec<&Attachment> = r.ports.iter().collect();
        text.push_str(&antispoof::bridge_table(&ports));
    }
    text + &render_inet(r)
}

/// The `inet plumb` table alone: all that a change of rules touches.
fn render_inet(r: &Ruleset) -> String {
    let mut text = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    let body = [address_sets(r), forward(r), nat(&r.networks)].concat();
    if body.is_empty() {
        return text;
    }
    let _ = write!(text, "table inet {TABLE} {{\n{body}}}\n");
    if !nat(&r.networks).is_empty() {
        for a in &r.published {
            text.push_str(&elements_text("add", &publish_elements(a)));
        }
    }
    text
}

/// Port publishing and masquerade, when there are NAT bridges.
fn nat(networks: &[Network]) -> String {
    let nat_bridges: Vec<(&Network, &BridgeOptions)> = bridges(networks)
        .filter(|(_, b)| b.mode == BridgeMode::Nat)
        .collect();
    if nat_bridges.is_empty() {
        return String::new();
    }
    let mut post = String::new();
    for (net, b) in &nat_bridges {
        for sub in &net.subnets {
            let family = family_of(&sub.subnet.addr());
            let out = match &b.uplink {
                Some(uplink) => format!("oifname \"{}\"", uplink.name),
                None => format!("oifname != \"{}\"", b.bridge),
            };
            let _ = writeln!(
                post,
                "    {family} saddr {} {out} masquerade comment \"{}\"",
                sub.subnet, net.name
            );
            let _ = writeln!(
                post,
                "    {family} saddr {sub} {family} daddr {sub} ct status dnat masquerade comment \"{} hairpin\"",
                net.name,
                sub = sub.subnet
            );
        }
    }
    let _ = writeln!(
        post,
        "    ip saddr 127.0.0.0/8 ct status dnat masquerade comment \"localhost\""
    );
    let dnat = "    fib daddr type local meta l4proto { tcp, udp } dnat ip to ip daddr . meta l4proto . th dport map @publish_addr\n    fib daddr type local meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @publish\n";
    format!(
        "  map publish {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}\n  map publish_addr {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{post}  }}\n"
    )
}

fn family_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

/// The name of the sets (`NAME4`, `NAME6`) holding the addresses an
/// attachment selector names.
pub fn selector_set(key: &str) -> String {
    format!("a{}", &crate::names::short_hash(&["selector", key])[..12])
}

/// One pair of address sets per attachment selector the rules use; an
/// attach adds its addresses to them, no rule changes.
fn address_sets(r: &Ruleset) -> String {
    let keys: BTreeSet<String> = r
        .policies
        .iter()
        .flat_map(|p| [&p.policy.from, &p.policy.to])
        .filter_map(|s| s.set_key())
        .collect();
    let mut out = String::new();
    for key in keys {
        let name = selector_set(&key);
        let addrs = r.members.get(&key).map(Vec::as_slice).unwrap_or_default();
        for (suffix, ty, v4) in [("4", "ipv4_addr", true), ("6", "ipv6_addr", false)] {
            let elems: Vec<String> = addrs
                .iter()
                .filter(|a| a.is_ipv4() == v4)
                .map(|a| a.to_string())
                .collect();
            let elems = if elems.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", elems.join(", "))
            };
            let _ = writeln!(
                out,
                "  set {name}{suffix} {{ type {ty}; comment \"{key}\";{elems} }}"
            );
        }
    }
    out
}

/// The forward chain: answers first, then traffic within one network
/// (forwarded here when br_netfilter sends bridged frames through the IP
/// hooks), then the user's rules in evaluation order, then the defaults
/// (published ports reachable, traffic between plumb networks dropped).
/// Written once per rule and per network, never per container; the
/// per-network matches are set lookups, not a rule per network.
fn forward(r: &Ruleset) -> String {
    let names: Vec<String> = bridges(&r.networks)
        .map(|(_, b)| format!("\"{}\"", b.bridge))
        .collect();
    let rules = policy_rules(r);
    if names.len() < 2 && rules.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = names.iter().map(|n| format!("{n} . {n}")).collect();
    let mut chain = String::from(
        "  chain forward {\n    type filter hook forward priority filter - 1; policy accept;\n    ct state established,related accept\n",
    );
    if !pairs.is_empty() {
        let _ = writeln!(
            chain,
            "    iifname . oifname {{ {} }} accept comment \"within a network\"",
            pairs.join(", ")
        );
    }
    chain.push_str(&rules);
    chain.push_str("    ct status dnat accept\n");
    if names.len() >= 2 {
        let all = names.join(", ");
        let _ = writeln!(
            chain,
            "    iifname {{ {all} }} oifname {{ {all} }} drop comment \"networks are isolated\""
        );
    }
    chain.push_str("  }\n");
    chain
}

/// One match of a selector: its text and the IP family it implies.
struct Match {
    family: Option<&'static str>,
    text: String,
}

/// How selector `s` matches as a source (`from`) or destination: plumb
/// bridges by interface, other networks and CIDRs by address, attachments
/// by their address sets. Empty when it names nothing that exists.
fn matches(s: &Selector, from: bool, networks: &[Network]) -> Vec<Match> {
    let (ifname, addr) = if from {
        ("iifname", "saddr")
    } else {
        ("oifname", "daddr")
    };
    let cidr = |c: &IpNet| {
        let family = family_of(&c.addr());
        Match {
            family: Some(family),
            text: format!("{family} {addr} {c}"),
        }
    };
    let of_networks = |nets: Vec<&Network>| {
        let bridges: Vec<String> = nets
            .iter()
            .filter_map(|n| n.bridge())
            .map(|b| format!("\"{}\"", b.bridge))
            .collect();
        let mut out: Vec<Match> = nets
            .iter()
            .filter(|n| n.bridge().is_none())
            .flat_map(|n| n.subnets.iter().map(|s| cidr(&s.subnet)))
            .collect();
        if !bridges.is_empty() {
            out.push(Match {
                family: None,
                text: format!("{ifname} {{ {} }}", bridges.join(", ")),
            });
        }
        out
    };
    match s {
        Selector::Any => vec![Match {
            family: None,
            text: String::new(),
        }],
        Selector::Network(n) => of_networks(networks.iter().filter(|x| x.name == *n).collect()),
        Selector::Tenant(t) => of_networks(tenant_networks(networks, t)),
        Selector::Cidr(c) => vec![cidr(c)],
        Selector::Attachment(_) | Selector::Label(_) => {
            let name = selector_set(&s.to_string());
            vec![
                Match {
                    family: Some("ip"),
                    text: format!("ip {addr} @{name}4"),
                },
                Match {
                    family: Some("ip6"),
                    text: format!("ip6 {addr} @{name}6"),
                },
            ]
        }
    }
}

/// The user's rules, in evaluation order (see `rules`).
fn policy_rules(r: &Ruleset) -> String {
    let mut sorted: Vec<&StoredPolicy> = r.policies.iter().collect();
    sorted.sort_by_key(|p| p.policy.order(p.id));
    let mut out = String::new();
    for sp in sorted {
        let p = &sp.policy;
        let verdict = match p.action {
            Action::Allow => "accept",
            Action::Deny => "drop",
        };
        for f in matches(&p.from, true, &r.networks) {
            for t in matches(&p.to, false, &r.networks) {
                let family = match (f.family, t.family) {
                    (Some(a), Some(b)) if a != b => continue,
                    (a, b) => a.or(b),
                };
                let proto = match (p.proto, family) {
                    (None, _) => String::new(),
                    (Some(Proto::Icmp), Some("ip")) => "meta l4proto icmp".into(),
                    (Some(Proto::Icmp), Some(_)) => "meta l4proto ipv6-icmp".into(),
                    (Some(Proto::Icmp), None) => "meta l4proto { icmp, ipv6-icmp }".into(),
                    (Some(proto), _) => format!("meta l4proto {proto}"),
                };
                let ports = match p.ports {
                    None => String::new(),
                    Some((lo, hi)) if lo == hi => format!("th dport {lo}"),
                    Some((lo, hi)) => format!("th dport {lo}-{hi}"),
                };
                let words: Vec<&str> = [f.text.as_str(), &t.text, &proto, &ports]
                    .into_iter()
                    .filter(|w| !w.is_empty())
                    .collect();
                let _ = writeln!(
                    out,
                    "    {} {verdict} comment \"policy {}\"",
                    words.join(" "),
                    sp.id
                );
            }
        }
    }
    out
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

/// Stop forwarding `a`'s published ports.
pub fn unpublish(a: &Attachment) -> Result<()> {
    elements::apply(&publish_elements(a), &[])
}

/// The elements putting `a`'s addresses into the sets of the attachment
/// selectors `keys` (those that name it and that rules use).
pub fn selector_elements(keys: &[String], a: &Attachment) -> Vec<Element> {
    let mut out = Vec::new();
    for key in keys {
        let name = selector_set(key);
        for addr in &a.addresses {
            let suffix = if addr.addr().is_ipv4() { "4" } else { "6" };
            out.push(Element::inet(
                format!("{name}{suffix}"),
                vec![Key::Ip(addr.addr())],
            ));
        }
    }
    out
}

/// Render `inet plumb` again after the user's rules changed (the networks,
/// and so the guard table and the FORWARD accepts, did not).
pub fn sync_rules(r: &Ruleset) -> Result<()> {
    Nft::new()?.run(&render_inet(r)).map(drop)
}

/// Make the kernel's tables and the FORWARD accepts match.
pub fn sync(r: &Ruleset) -> Result<()> {
    let mut batch = render(r);
    batch.push_str(&foreign_forward_rules(&mut nf_tables()?, &r.networks)?);
    Nft::new()?.run(&batch)?;
    Ok(())
}

/// Whether the kernel still holds what `sync` put there: our table (when
/// there is anything to put in it) and our accepts in every `FORWARD`
/// chain of `ip/ip6 filter` (when there are bridges). False after an
/// `nft flush ruleset`, or a Docker restart that rebuilt its chains. The
/// daemon asks twice a second, so the kernel is asked directly: a few
/// small messages, whatever the sets hold.
pub fn in_place(r: &Ruleset) -> Result<bool> {
    // Without a bridge plumb puts nothing into nftables: nothing to check.
    if bridges(&r.networks).next().is_none() {
        return Ok(true);
    }
    let mut nf = nf_tables()?;
    let wants_table = render(r).contains(&format!("table inet {TABLE} {{"));
    if wants_table && !nf.table_exists(NfFamily::Inet, TABLE).map_err(asking)? {
        return Ok(false);
    }
    if !nf
        .table_exists(NfFamily::Bridge, antispoof::TABLE)
        .map_err(asking)?
    {
        return Ok(false);
    }
    for family in [NfFamily::Ip, NfFamily::Ip6] {
        if nf
            .chain_exists(family, "filter", "FORWARD")
            .map_err(asking)?
            && our_forward_rules(&mut nf, family)?.is_empty()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn nf_tables() -> Result<NfNetlink> {
    NfNetlink::open().map_err(|e| Error::kernel("open an nfnetlink socket", e))
}

fn asking(e: NetlinkError) -> Error {
    Error::kernel("ask nf_tables what it holds", e)
}

/// The handles of our accepts in `family filter FORWARD`.
fn our_forward_rules(nf: &mut NfNetlink, family: NfFamily) -> Result<Vec<u64>> {
    nf.rules_commented(family, "filter", "FORWARD", TAG)
        .map_err(asking)
}

/// Commands that drop our old accepts from `ip/ip6 filter FORWARD` and add
/// the current ones, when such chains exist.
fn foreign_forward_rules(nf: &mut NfNetlink, networks: &[Network]) -> Result<String> {
    let mut out = String::new();
    for (family, name) in [(NfFamily::Ip, "ip"), (NfFamily::Ip6, "ip6")] {
        if !nf
            .chain_exists(family, "filter", "FORWARD")
            .map_err(asking)?
        {
            continue;
        }
        for handle in our_forward_rules(nf, family)? {
            let _ = writeln!(out, "delete rule {name} filter FORWARD handle {handle}");
        }
        out.push_str(&forward_accepts(name, networks));
    }
    Ok(out)
}

/// The accepts for one family: anything leaving a plumb bridge, answers
/// coming back to one, and new connections into routed and bridged networks
/// (a NAT network is reached only through its masquerade).
fn forward_accepts(family: &str, networks: &[Network]) -> String {
    let set = |nets: &mut dyn Iterator<Item = (&Network, &BridgeOptions)>| {
        let names: Vec<String> = nets.map(|(_, b)| format!("\"{}\"", b.bridge)).collect();
        (!names.is_empty()).then(|| format!("{{ {} }}", names.join(", ")))
    };
    let Some(all) = set(&mut bridges(networks)) else {
        return String::new();
    };
    let mut out = String::new();
    // Inserted at the head, so written in reverse of evaluation order.
    if let Some(inbound) = set(&mut bridges(networks).filter(|(_, b)| b.mode != BridgeMode::Nat)) {
        let _ = writeln!(
            out,
            "insert rule {family} filter FORWARD oifname {inbound} accept comment \"{TAG}\""
        );
    }
    let _ = writeln!(
        out,
        "insert rule {family} filter FORWARD oifname {all} ct state established,related accept comment \"{TAG}\""
    );
    let _ = writeln!(
        out,
        "insert rule {family} filter FORWARD oifname {all} ct status dnat accept comment \"{TAG}\""
    );
    let _ = writeln!(
        out,
        "insert rule {family} filter FORWARD iifname {all} accept comment \"{TAG}\""
    );
    out
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

    #[test]
    fn nat_networks_masquerade_and_others_do_not() {
        let text = render(&ruleset(vec![
            net("a", "10.1.0.0/24", "nat", None),
            net("b", "10.2.0.0/24", "routed", None),
            net("c", "fd00::/64", "nat", Some("eth9")),
        ]));
        assert!(
            text.contains("ip saddr 10.1.0.0/24 oifname != \"pl-a\" masquerade"),
            "{text}"
        );
        assert!(
            text.contains("ip6 saddr fd00::/64 oifname \"eth9\" masquerade"),
            "{text}"
        );
        assert!(!text.contains("10.2.0.0"), "{text}");
        assert!(text.contains("add table inet plumb\ndelete table inet plumb\n"));
    }

    #[test]
    fn a_routed_network_alone_needs_only_the_guard_table() {
        let text = render(&ruleset(vec![net("b", "10.2.0.0/24", "routed", None)]));
        assert!(!text.contains("table inet plumb {"), "{text}");
        assert!(text.contains("table bridge plumb {"), "{text}");
        let none = render(&ruleset(Vec::new()));
        assert!(!none.contains('{'), "no network, no table: {none}");
    }

    #[test]
    fn forward_accepts_cover_every_bridge_and_inbound_only_without_nat() {
        let nets = [
            net("a", "10.1.0.0/24", "nat", None),
            net("b", "10.2.0.0/24", "routed", None),
        ];
        let text = forward_accepts("ip", &nets);
        assert!(
            text.contains("iifname { \"pl-a\", \"pl-b\" } accept"),
            "{text}"
        );
        assert!(
            text.contains("oifname { \"pl-a\", \"pl-b\" } ct state established,related accept"),
            "{text}"
        );
        assert!(text.contains("oifname { \"pl-b\" } accept"), "{text}");
        assert_eq!(
            forward_accepts("ip", &nets[..1]).lines().count(),
            3,
            "no inbound accept for NAT only"
        );
        assert!(forward_accepts("ip6", &[]).is_empty());
    }
}
