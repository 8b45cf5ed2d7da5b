//! plumb's accepts in the chains iptables owns.
//!
//! Docker (and anything using iptables) may set the `FORWARD` policy of
//! `filter` to DROP. A drop in any base chain is final, so an accept in
//! plumb's own table cannot undo it: the traffic of plumb's bridges needs
//! accepts in iptables' own chains. Those tables belong to iptables-nft,
//! which reads every rule back to print `iptables -S` and `iptables-save`
//! and refuses the whole table when one rule holds an expression it does
//! not know. So each accept is exactly what
//! `iptables -I CHAIN -i|-o BRIDGE -m comment --comment "plumb network NAME" -j ACCEPT`
//! writes: an interface compare, the xt comment match, a counter and the
//! verdict; one rule per bridge and direction, no sets, no conntrack. They
//! grant nothing plumb's own table denies: `inet plumb` sees the traffic
//! first and decides (isolation, the user's rules, NAT networks reached
//! only through published ports).
//!
//! The accepts go where Docker says users' rules belong: `DOCKER-USER`
//! when it exists (Docker jumps there first, before its own chains, and
//! never flushes it), else the head of `FORWARD`. Where neither `filter`
//! nor `FORWARD` exists nothing is added: nothing drops there.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Network;
use crate::netlink::nftable::{CmpOp, Edit, Expr, MetaKey, NF_ACCEPT, Rule, Verdict};
use crate::netlink::{Listed, ListedRule, NetlinkError, NfFamily, NfNetlink};
use crate::policy::legacy;

/// What every accept's comment starts with; the network's name follows.
pub const COMMENT: &str = "plumb network ";
/// The comment of the accepts plumb wrote before they were iptables' own
/// (with conntrack expressions and sets): found to be replaced.
const OLD_COMMENT: &str = "plumb";
pub const TABLE: &str = "filter";
pub const DOCKER_USER: &str = "DOCKER-USER";
pub const FORWARD: &str = "FORWARD";
// How the accepts read back (`Listed` keeps nf_tables' numbers).
const NFT_META_IIFNAME: u32 = MetaKey::Iifname as u32;
const NFT_META_OIFNAME: u32 = MetaKey::Oifname as u32;
const NFT_CMP_EQ: u32 = CmpOp::Eq as u32;

/// One accept: traffic entering a plumb bridge (`-o`) or leaving it (`-i`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Accept {
    pub bridge: String,
    /// `-o BRIDGE`: into the network; else `-i BRIDGE`: out of it.
    pub inbound: bool,
    pub network: String,
}

impl Accept {
    /// The rule as `iptables -S` prints it (without `-A CHAIN`).
    pub fn iptables_args(&self) -> Vec<String> {
        let dir = if self.inbound { "-o" } else { "-i" };
        vec![
            dir.into(),
            self.bridge.clone(),
            "-m".into(),
            "comment".into(),
            "--comment".into(),
            format!("{COMMENT}{}", self.network),
            "-j".into(),
            "ACCEPT".into(),
        ]
    }

    /// The expressions iptables-nft 1.8 writes for it, in its order.
    fn rule(&self) -> Rule {
        let mut name = self.bridge.as_bytes().to_vec();
        // iptables compares the name and its NUL: an exact match (without
        // the NUL it would be `-i BRIDGE+`, a prefix).
        name.push(0);
        Rule::iptables(vec![
            Expr::Meta(self.key()),
            Expr::eq(&name),
            Expr::XtComment(format!("{COMMENT}{}", self.network)),
            Expr::Counter,
            Expr::Verdict(Verdict::Accept),
        ])
    }

    fn key(&self) -> MetaKey {
        if self.inbound {
            MetaKey::Oifname
        } else {
            MetaKey::Iifname
        }
    }

    /// The accept a listed rule is, if it is one of ours in its exact
    /// shape (as written here, or as iptables-restore writes it back).
    fn read(r: &ListedRule) -> Option<Accept> {
        let network = r.comment.as_deref()?.strip_prefix(COMMENT)?;
        let [
            Listed::Meta(key),
            Listed::Cmp {
                op: NFT_CMP_EQ,
                data,
            },
            rest @ ..,
        ] = &r.exprs[..]
        else {
            return None;
        };
        let inbound = match *key {
            NFT_META_OIFNAME => true,
            NFT_META_IIFNAME => false,
            _ => return None,
        };
        let bridge = std::str::from_utf8(data.strip_suffix(&[0])?).ok()?;
        match rest {
            [
                Listed::Match { name, .. },
                Listed::Counter,
                Listed::Verdict(NF_ACCEPT),
            ] if name == "comment" => {}
            _ => return None,
        }
        Some(Accept {
            bridge: bridge.into(),
            inbound,
            network: network.into(),
        })
    }
}

/// Whether a listed rule is one plumb wrote, in any shape.
fn is_ours(r: &ListedRule) -> bool {
    r.comment.as_deref().is_some_and(is_plumbs_comment)
}

/// Whether a rule's comment marks it as plumb's (an accept's, or one of
/// the accepts plumb wrote before), in nftables or a legacy table.
pub fn is_plumbs_comment(comment: &str) -> bool {
    comment == OLD_COMMENT || comment.starts_with(COMMENT)
}

/// The accepts `networks` need, sorted: two per bridge.
pub fn wanted(networks: &[Network]) -> Vec<Accept> {
    let mut out: Vec<Accept> = networks
        .iter()
        .filter_map(|n| n.bridge().map(|b| (n, b)))
        .flat_map(|(n, b)| {
            [false, true].map(|inbound| Accept {
                bridge: b.bridge.clone(),
                inbound,
                network: n.name.clone(),
            })
        })
        .collect();
    out.sort();
    out
}

/// The chain the accepts belong in, in one family's `filter` table, if
/// there is one to put them in.
pub fn chain_for(nf: &mut NfNetlink, family: NfFamily) -> Result<Option<&'static str>> {
    for chain in [DOCKER_USER, FORWARD] {
        if nf.chain_exists(family, TABLE, chain).map_err(asking)? {
            return Ok(Some(chain));
        }
    }
    Ok(None)
}

const FAMILIES: [NfFamily; 2] = [NfFamily::Ip, NfFamily::Ip6];

/// plumb's rules in one family's `filter` table (in chain order), each
/// with the accept it is if it has the exact shape of one, and the chain
/// the accepts belong in; nothing when there is none.
fn ours(nf: &mut NfNetlink, family: NfFamily) -> Result<(Option<&'static str>, Vec<Ours>)> {
    let Some(chain) = chain_for(nf, family)? else {
        return Ok((None, Vec::new()));
    };
    let rules = nf.rules(family, TABLE, None).map_err(asking)?;
    let ours = rules
        .into_iter()
        .filter(is_ours)
        .map(|r| {
            let accept = Accept::read(&r).filter(|_| r.chain == chain);
            (r, accept)
        })
        .collect();
    Ok((Some(chain), ours))
}

/// A rule of plumb's, and the accept it is where it belongs.
type Ours = (ListedRule, Option<Accept>);

/// The edits that make `ip/ip6 filter` hold exactly the accepts
/// `networks` need, in the chain they belong in: plumb's other rules there
/// (misplaced, misshapen, no longer wanted, repeated) go; those in place
/// stay where they are; the missing ones go just before the first that
/// stays (so a rule the user put above plumb's stays above), or at the
/// head of the chain.
pub fn edits(nf: &mut NfNetlink, networks: &[Network]) -> Result<Vec<Edit>> {
    let wanted = wanted(networks);
    let mut out = Vec::new();
    for family in FAMILIES {
        let (Some(chain), ours) = ours(nf, family)? else {
            continue;
        };
        let mut kept: Vec<Accept> = Vec::new();
        let mut first_kept = None;
        for (r, accept) in ours {
            match accept {
                Some(a) if wanted.contains(&a) && !kept.contains(&a) => {
                    first_kept.get_or_insert(r.handle);
                    kept.push(a);
                }
                _ => out.push(Edit::Remove {
                    family,
                    table: TABLE.into(),
                    chain: r.chain,
                    handle: r.handle,
                }),
            }
        }
        let missing = wanted.iter().filter(|a| !kept.contains(a));
        // Each goes just before the same rule, so they keep their order;
        // at the head, the last inserted is listed first.
        let missing: Vec<&Accept> = match first_kept {
            Some(_) => missing.collect(),
            None => missing.rev().collect(),
        };
        for a in missing {
            out.push(Edit::Insert {
                family,
                table: TABLE.into(),
                chain: chain.into(),
                before: first_kept,
                rule: a.rule(),
            });
        }
    }
    Ok(out)
}

/// Where plumb's accepts stand in one family: the chain they belong in and
/// those found there; `misplaced` counts ours elsewhere or misshapen.
pub struct Found {
    pub chain: Option<&'static str>,
    pub accepts: Vec<Accept>,
    pub misplaced: usize,
}

pub fn found(nf: &mut NfNetlink, family: NfFamily) -> Result<Found> {
    let (chain, ours) = ours(nf, family)?;
    let total = ours.len();
    let mut accepts: Vec<Accept> = ours.into_iter().filter_map(|(_, a)| a).collect();
    accepts.sort();
    Ok(Found {
        chain,
        misplaced: total - accepts.len(),
        accepts,
    })
}

/// Whether every family holds exactly the accepts `networks` need, in the
/// chain they belong in: false after `iptables -F`, an `iptables-restore`
/// of an older save, or Docker creating `DOCKER-USER` after plumb wrote
/// them into `FORWARD`.
pub fn in_place(nf: &mut NfNetlink, networks: &[Network]) -> Result<bool> {
    let wanted = wanted(networks);
    for family in FAMILIES {
        let f = found(nf, family)?;
        if f.chain.is_some() && (f.misplaced > 0 || f.accepts != wanted) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What `plumb doctor` says of one family: which backend holds iptables'
/// filter table, whether Docker's chains are there, where plumb's accepts
/// belong and whether they are all there.
#[derive(Debug, Serialize)]
pub struct Report {
    pub family: &'static str,
    /// "nftables" (iptables-nft), "legacy" (x_tables), both, or "none".
    pub backend: &'static str,
    pub docker: bool,
    /// Where the accepts belong (iptables-nft's chain), if anywhere.
    pub chain: Option<&'static str>,
    pub legacy_chain: Option<&'static str>,
    pub accepts_wanted: usize,
    pub accepts_found: usize,
    pub misplaced: usize,
    pub in_place: bool,
    /// What went wrong reading the legacy tables, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_error: Option<String>,
}

pub fn report(networks: &[Network]) -> Result<Vec<Report>> {
    let mut nf = NfNetlink::open().map_err(|e| Error::kernel("open an nfnetlink socket", e))?;
    let wanted = wanted(networks);
    let mut out = Vec::new();
    for (family, legacy) in FAMILIES.into_iter().zip([legacy::V4, legacy::V6]) {
        let f = found(&mut nf, family)?;
        let docker = nf.chain_exists(family, TABLE, "DOCKER").map_err(asking)?
            || nf
                .chain_exists(family, TABLE, DOCKER_USER)
                .map_err(asking)?;
        let mut r = Report {
            family: legacy.name,
            backend: if f.chain.is_some() {
                "nftables"
            } else {
                "none"
            },
            docker,
            chain: f.chain,
            legacy_chain: None,
            accepts_wanted: if f.chain.is_some() { wanted.len() } else { 0 },
            accepts_found: f.accepts.len(),
            misplaced: f.misplaced,
            in_place: f.chain.is_none() || (f.misplaced == 0 && f.accepts == wanted),
            legacy_error: None,
        };
        if legacy.in_use("filter") {
            r.backend = if f.chain.is_some() { "both" } else { "legacy" };
            match legacy.save("filter") {
                Ok(saved) => {
                    r.docker |= saved.has_docker();
                    r.legacy_chain = Some(saved.accept_chain());
                    r.accepts_wanted += wanted.len();
                    r.accepts_found += saved.ours().count();
                }
                Err(e) => r.legacy_error = Some(e.to_string()),
            }
            r.in_place &= legacy::accepts_in_place(networks).unwrap_or(false);
        }
        out.push(r);
    }
    Ok(out)
}

fn asking(e: NetlinkError) -> Error {
    Error::kernel("list the rules of iptables' filter tables", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(chain: &str, comment: &str, exprs: Vec<Listed>) -> ListedRule {
        ListedRule {
            table: TABLE.into(),
            chain: chain.into(),
            handle: 7,
            comment: Some(comment.into()),
            exprs,
        }
    }

    fn shape(key: u32, name: &[u8]) -> Vec<Listed> {
        vec![
            Listed::Meta(key),
            Listed::Cmp {
                op: NFT_CMP_EQ,
                data: name.to_vec(),
            },
            Listed::Match {
                name: "comment".into(),
                info: vec![0; 256],
            },
            Listed::Counter,
            Listed::Verdict(NF_ACCEPT),
        ]
    }

    #[test]
    fn an_accept_is_read_back_only_in_its_exact_shape() {
        let ok = listed(FORWARD, "plumb network lan", shape(7, b"pl-lan\0"));
        assert_eq!(
            Accept::read(&ok),
            Some(Accept {
                bridge: "pl-lan".into(),
                inbound: true,
                network: "lan".into(),
            })
        );
        // `-o pl-lan+` (no NUL), another key, another verdict, a missing
        // counter, another comment: not ours as written.
        let prefix = listed(FORWARD, "plumb network lan", shape(7, b"pl-lan"));
        let other_key = listed(FORWARD, "plumb network lan", shape(1, b"pl-lan\0"));
        let mut drop = shape(6, b"pl-lan\0");
        drop[4] = Listed::Verdict(0);
        let mut no_counter = shape(6, b"pl-lan\0");
        no_counter.remove(3);
        let old = listed(FORWARD, "plumb", shape(6, b"pl-lan\0"));
        for r in [
            prefix,
            other_key,
            listed(FORWARD, "plumb network lan", drop),
            listed(FORWARD, "plumb network lan", no_counter),
            old.clone(),
        ] {
            assert_eq!(Accept::read(&r), None, "{r:?}");
        }
        assert!(is_ours(&old));
        assert!(!is_ours(&listed(FORWARD, "plumber", shape(6, b"x\0"))));
    }

    #[test]
    fn each_bridge_gets_an_accept_each_way_and_other_drivers_none() {
        use crate::model::NetworkSpec;
        let spec = |name: &str, driver: &str, subnet: &str| NetworkSpec {
            name: name.into(),
            driver: driver.into(),
            subnet: vec![subnet.into()],
            parent: (driver == "macvlan").then(|| "eth0".into()),
            ..Default::default()
        };
        let nets = [
            spec("a", "bridge", "10.1.0.0/24").validate().unwrap(),
            spec("m", "macvlan", "10.2.0.0/24").validate().unwrap(),
        ];
        let w = wanted(&nets);
        assert_eq!(w.len(), 2);
        assert!(w.iter().all(|a| a.network == "a"));
        assert_eq!(
            w[1].iptables_args().join(" "),
            format!(
                "-o {} -m comment --comment plumb network a -j ACCEPT",
                w[1].bridge
            )
        );
        assert!(wanted(&[]).is_empty());
    }
}
