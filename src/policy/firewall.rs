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
use crate::model::{BridgeMode, Network};
use crate::nft::Nft;

pub const TABLE: &str = "plumb";
const TAG: &str = "plumb";

/// Render the whole `inet plumb` table for these networks.
pub fn render(networks: &[Network]) -> String {
    let mut nat = String::new();
    for net in networks.iter().filter(|n| n.mode == BridgeMode::Nat) {
        for sub in &net.subnets {
            let family = if sub.subnet.addr().is_ipv4() {
                "ip"
            } else {
                "ip6"
            };
            let out = match &net.uplink {
                Some(uplink) => format!("oifname \"{uplink}\""),
                None => format!("oifname != \"{}\"", net.bridge),
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
        let v4 = family == "ip";
        let bridges: Vec<&str> = networks
            .iter()
            .filter(|n| {
                n.subnets.iter().any(|s| s.subnet.addr().is_ipv4() == v4)
                    || n.mode == BridgeMode::Bridged
            })
            .map(|n| n.bridge.as_str())
            .collect();
        if bridges.is_empty() {
            continue;
        }
        let set = |names: &[&str]| {
            format!(
                "{{ {} }}",
                names
                    .iter()
                    .map(|b| format!("\"{b}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        // Inserted at the head, so listed in reverse of evaluation order.
        let inbound: Vec<&str> = networks
            .iter()
            .filter(|n| n.mode != BridgeMode::Nat && bridges.contains(&n.bridge.as_str()))
            .map(|n| n.bridge.as_str())
            .collect();
        if !inbound.is_empty() {
            let _ = writeln!(
                out,
                "insert rule {family} filter FORWARD oifname {} accept comment \"{TAG}\"",
                set(&inbound)
            );
        }
        let _ = writeln!(
            out,
            "insert rule {family} filter FORWARD oifname {} ct state established,related accept comment \"{TAG}\"",
            set(&bridges)
        );
        let _ = writeln!(
            out,
            "insert rule {family} filter FORWARD iifname {} accept comment \"{TAG}\"",
            set(&bridges)
        );
    }
    Ok(out)
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
