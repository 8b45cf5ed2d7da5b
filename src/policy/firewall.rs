//! plumb's nftables state: one table, `inet plumb`, that plumb alone owns,
//! rendered from the store and swapped in as one atomic batch. Per-network
//! rules only: attaching a container never touches nftables.
//!
//! Docker (and anything using iptables-nft) may set the `FORWARD` policy of
//! `table ip filter` to DROP. A drop verdict in any base chain is final, so
//! an accept in our own table cannot override it: we add our own accept
//! rules at the head of that chain, tagged with a comment, and remove
//! exactly those on the next sync.

use std::fmt::Write;

use crate::error::Result;
use crate::model::{BridgeMode, BridgeOptions, Network};
use crate::nft::Nft;

pub const TABLE: &str = "plumb";
const TAG: &str = "plumb";

/// The bridge networks among `networks`: the only ones with rules today.
fn bridges(networks: &[Network]) -> impl Iterator<Item = (&Network, &BridgeOptions)> {
    networks.iter().filter_map(|n| n.bridge().map(|b| (n, b)))
}

/// Render the whole `inet plumb` table for these networks.
pub fn render(networks: &[Network]) -> String {
    let mut nat = String::new();
    for (net, b) in bridges(networks).filter(|(_, b)| b.mode == BridgeMode::Nat) {
        for sub in &net.subnets {
            let family = if sub.subnet.addr().is_ipv4() {
                "ip"
            } else {
                "ip6"
            };
            let out = match &b.uplink {
                Some(uplink) => format!("oifname \"{}\"", uplink.name),
                None => format!("oifname != \"{}\"", b.bridge),
            };
            let _ = writeln!(
                nat,
                "    {family} saddr {} {out} masquerade comment \"{}\"",
                sub.subnet, net.name
            );
        }
    }
    let mut text = format!("add table inet {TABLE}\ndelete table inet {TABLE}\n");
    if !nat.is_empty() {
        let _ = write!(
            text,
            "table inet {TABLE} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{nat}  }}\n}}\n"
        );
    }
    text
}

/// Make the kernel's `inet plumb` table and the FORWARD accepts match `networks`.
pub fn sync(networks: &[Network]) -> Result<()> {
    let mut nft = Nft::new()?;
    let mut batch = render(networks);
    batch.push_str(&foreign_forward_rules(&mut nft, networks)?);
    nft.run(&batch)?;
    Ok(())
}

/// Whether the kernel still holds what `sync` put there: our table (when
/// there is anything to put in it) and our accepts in every `FORWARD`
/// chain of `ip/ip6 filter` (when there are bridges). False after an
/// `nft flush ruleset`, or a Docker restart that rebuilt its chains.
pub fn in_place(networks: &[Network]) -> Result<bool> {
    let mut nft = Nft::new()?;
    let wants_table = render(networks).contains('{');
    if wants_table && nft.list_json(&format!("table inet {TABLE}")).is_err() {
        return Ok(false);
    }
    if bridges(networks).next().is_some() {
        for family in ["ip", "ip6"] {
            if let Ok(listing) = nft.list_json(&format!("chain {family} filter FORWARD"))
                && tagged_rule_handles(&listing).is_empty()
            {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Remove everything plumb put into nftables.
pub fn clear() -> Result<()> {
    sync(&[])
}

/// Commands that drop our old accepts from `ip/ip6 filter FORWARD` and add
/// the current ones, when such chains exist.
fn foreign_forward_rules(nft: &mut Nft, networks: &[Network]) -> Result<String> {
    let mut out = String::new();
    for family in ["ip", "ip6"] {
        let Ok(listing) = nft.list_json(&format!("chain {family} filter FORWARD")) else {
            continue;
        };
        for handle in tagged_rule_handles(&listing) {
            let _ = writeln!(out, "delete rule {family} filter FORWARD handle {handle}");
        }
        out.push_str(&forward_accepts(family, networks));
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
        "insert rule {family} filter FORWARD iifname {all} accept comment \"{TAG}\""
    );
    out
}

fn tagged_rule_handles(listing: &serde_json::Value) -> Vec<u64> {
    let Some(items) = listing.get("nftables").and_then(|v| v.as_array()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule.get("comment").and_then(|c| c.as_str()) == Some(TAG))
        .filter_map(|rule| rule.get("handle").and_then(|h| h.as_u64()))
        .collect()
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

    #[test]
    fn nat_networks_masquerade_and_others_do_not() {
        let text = render(&[
            net("a", "10.1.0.0/24", "nat", None),
            net("b", "10.2.0.0/24", "routed", None),
            net("c", "fd00::/64", "nat", Some("eth9")),
        ]);
        assert!(
            text.contains("ip saddr 10.1.0.0/24 oifname != \"pl-a\" masquerade"),
            "{text}"
        );
        assert!(
            text.contains("ip6 saddr fd00::/64 oifname \"eth9\" masquerade"),
            "{text}"
        );
        assert!(!text.contains("10.2.0.0"), "{text}");
        assert!(text.starts_with("add table inet plumb\ndelete table inet plumb\n"));
    }

    #[test]
    fn no_nat_network_means_no_table() {
        let text = render(&[net("b", "10.2.0.0/24", "routed", None)]);
        assert_eq!(text, "add table inet plumb\ndelete table inet plumb\n");
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
            2,
            "no inbound accept for NAT only"
        );
        assert!(forward_accepts("ip6", &[]).is_empty());
    }

    #[test]
    fn finds_only_tagged_rules() {
        let listing = serde_json::json!({"nftables": [
            {"metainfo": {}},
            {"rule": {"handle": 5, "comment": "plumb"}},
            {"rule": {"handle": 6}},
            {"rule": {"handle": 7, "comment": "docker"}}
        ]});
        assert_eq!(tagged_rule_handles(&listing), vec![5]);
    }
}
