//! Source policy routing: a network (or one attachment) with an egress
//! interface gets a routing table of its own, holding a default route out of
//! that interface, and two rules per source of the egress gateway's family
//! (the network's subnets, or the attachment's addresses):
//!   P:   from SOURCE lookup main suppress_prefixlength 0
//!   P+1: from SOURCE lookup TABLE
//! The first lets the main table answer for everything but its default
//! route (the bridge's own subnet, other networks, the LAN); the second
//! sends the rest out of the chosen uplink.
//!
//! Table ids and priorities are plumb's: allocated in the store, never one
//! that `/etc/iproute2/rt_tables` names or the kernel already uses.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use ipnet::IpNet;
use rusqlite::Transaction;

use crate::error::{Error, Result};
use crate::model::{Attachment, AttachmentEgress, Egress, Network};
use crate::netlink::{Netlink, Rule};
use crate::store;
use crate::undo::UndoLog;

const TABLES: RangeInclusive<u32> = 20_000..=29_999;
/// Rule priorities come in pairs, below the main table's 32766.
const PRIORITIES: RangeInclusive<u32> = 10_000..=19_998;
const MAIN_TABLE: u32 = 254;

/// The routing table and first rule priority a network or attachment owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    pub table: u32,
    pub priority: u32,
}

impl From<&AttachmentEgress> for Allocation {
    fn from(e: &AttachmentEgress) -> Self {
        Allocation {
            table: e.table,
            priority: e.priority,
        }
    }
}

/// Whose table it is.
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Network(&'a str),
    /// By host interface name.
    Attachment(&'a str),
}

/// The sources a network's rules select: its subnets.
pub fn network_sources(net: &Network) -> Vec<IpNet> {
    net.subnets.iter().map(|s| s.subnet).collect()
}

/// The sources an attachment's rules select: its addresses.
pub fn attachment_sources(a: &Attachment) -> Vec<IpNet> {
    a.addresses.iter().map(|n| IpNet::from(n.addr())).collect()
}

/// Tables named by the system's iproute2 configuration.
fn named_tables() -> HashSet<u32> {
    let mut files = vec![
        "/etc/iproute2/rt_tables".to_string(),
        "/usr/share/iproute2/rt_tables".to_string(),
        "/usr/lib/iproute2/rt_tables".to_string(),
    ];
    for dir in [
        "/etc/iproute2/rt_tables.d",
        "/usr/share/iproute2/rt_tables.d",
    ] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            files.extend(entries.flatten().map(|e| e.path().display().to_string()));
        }
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Take a free table and priority pair for `owner`, in the store.
pub fn allocate(tx: &Transaction, nl: &mut Netlink, owner: Owner) -> Result<Allocation> {
    let a = free(tx, nl, None)?;
    match owner {
        Owner::Network(n) => store::insert_route_table(tx, n, a.table, a.priority)?,
        Owner::Attachment(host_ifname) => {
            store::insert_attachment_route_table(tx, host_ifname, a.table, a.priority)?
        }
    }
    Ok(a)
}

/// A table and a pair of rule priorities nobody uses (not the kernel, not
/// iproute2's configuration, not the store): the pair at `priority` if
/// asked for (`--priority`), else the first free one of plumb's range.
pub fn free(tx: &Transaction, nl: &mut Netlink, priority: Option<u32>) -> Result<Allocation> {
    let kernel = |e| Error::kernel("list routing tables and rules", e);
    let taken = store::route_tables(tx)?;
    let mut tables: HashSet<u32> = named_tables();
    tables.extend(nl.tables_in_use().map_err(kernel)?);
    tables.extend(taken.iter().map(|(t, _)| *t));
    let rules = nl.rules().map_err(kernel)?;
    tables.extend(rules.iter().map(|r| r.table));
    let mut prios: HashSet<u32> = rules.iter().map(|r| r.priority).collect();
    prios.extend(taken.iter().flat_map(|(_, p)| [*p, *p + 1]));
    let table = TABLES
        .clone()
        .find(|t| !tables.contains(t))
        .ok_or_else(|| Error::Conflict("no free routing table in 20000-29999".into()))?;
    let pair_free = |p: &u32| !prios.contains(p) && !prios.contains(&(p + 1));
    let priority = match priority {
        // Between the local table's rule (0) and the main table's (32766).
        Some(p) if !(1..=32764).contains(&p) => {
            return Err(Error::invalid(
                "--priority",
                p,
                "rule priorities go from 1 to 32764 (the rule pair takes it and the next)",
            ));
        }
        Some(p) if !pair_free(&p) => {
            return Err(Error::invalid(
                "--priority",
                p,
                format!("a rule at {p} or {} exists already", p + 1),
            ));
        }
        Some(p) => p,
        None => PRIORITIES
            .clone()
            .step_by(2)
            .find(pair_free)
            .ok_or_else(|| Error::Conflict("no free rule priorities in 10000-19999".into()))?,
    };
    Ok(Allocation { table, priority })
}

/// What of plumb's policy routing no allocation justifies (an older plumb
/// killed half way, a lost store): rules at its priorities that select its
/// tables or the main table without its default (plumb's pair), and its
/// tables that still hold routes and that no other rule selects. `allocated` must be read after `rules`
/// and `tables` were listed: an allocation is committed before its rules
/// are made, so a change under way is never taken for an orphan.
pub fn orphans(rules: &[Rule], tables: &[u32], allocated: &[(u32, u32)]) -> (Vec<Rule>, Vec<u32>) {
    let owned_priority = |p: u32| allocated.iter().any(|(_, a)| p == *a || p == a + 1);
    let (stray_rules, kept): (Vec<Rule>, Vec<Rule>) = rules.iter().cloned().partition(|r| {
        (PRIORITIES.contains(&r.priority) || r.priority == PRIORITIES.end() + 1)
            && (TABLES.contains(&r.table) || (r.table == MAIN_TABLE && r.suppress_default))
            && !owned_priority(r.priority)
    });
    // A table a rule that stays selects is that rule's owner's.
    let mut stray_tables: Vec<u32> = tables
        .iter()
        .copied()
        .filter(|t| {
            TABLES.contains(t)
                && !allocated.iter().any(|(a, _)| a == t)
                && !kept.iter().any(|r| r.table == *t)
        })
        .collect();
    stray_tables.sort_unstable();
    stray_tables.dedup();
    (stray_rules, stray_tables)
}

/// Remove an orphaned table's default routes (the only routes plumb puts
/// in its tables).
pub fn flush_table(nl: &mut Netlink, table: u32) -> Result<()> {
    for any in ["0.0.0.0/0", "::/0"] {
        let dest: IpNet = any.parse().expect("literal");
        match nl.del_table_route(table, dest) {
            Err(e) if !(e.is(libc::ESRCH) || e.is(libc::ENOENT)) => {
                return Err(Error::kernel(format!("flush table {table}"), e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The rules an allocation stands for.
fn rules(sources: &[IpNet], e: &Egress, a: Allocation) -> Vec<Rule> {
    let v6 = e.gateway.map(|g| g.is_ipv6());
    sources
        .iter()
        .filter(|s| v6.is_none_or(|v6| s.addr().is_ipv6() == v6))
        .flat_map(|s| {
            [
                Rule {
                    priority: a.priority,
                    table: MAIN_TABLE,
                    source: Some(*s),
                    suppress_default: true,
                },
                Rule {
                    priority: a.priority + 1,
                    table: a.table,
                    source: Some(*s),
                    suppress_default: false,
                },
            ]
        })
        .collect()
}

/// The default routes of the table: via the gateway, or out of the device
/// for each family the sources have.
fn defaults(sources: &[IpNet], e: &Egress) -> Vec<(IpNet, Option<IpAddr>)> {
    let any = |v6: bool| -> IpNet {
        if v6 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .expect("literal")
    };
    match e.gateway {
        Some(g) => vec![(any(g.is_ipv6()), Some(g))],
        None => {
            let mut v: Vec<bool> = sources.iter().map(|s| s.addr().is_ipv6()).collect();
            v.sort();
            v.dedup();
            v.into_iter().map(|v6| (any(v6), None)).collect()
        }
    }
}

/// Put the table's default route and the rules in place, each with its
/// undo (network create, attach).
pub fn install(
    nl: &mut Netlink,
    sources: &[IpNet],
    e: &Egress,
    a: Allocation,
    undo: &mut UndoLog,
) -> Result<()> {
    let link = nl
        .link_by_name(&e.interface)
        .map_err(|err| Error::kernel(format!("look up {}", e.interface), err))?
        .ok_or_else(|| {
            Error::invalid(
                "--egress-interface",
                &e.interface,
                "no such interface on the host",
            )
        })?;
    for (dest, via) in defaults(sources, e) {
        nl.add_table_route(a.table, dest, via, link.index)
            .map_err(|err| {
                Error::kernel(
                    format!("default route out of {} in table {}", e.interface, a.table),
                    err,
                )
            })?;
        let table = a.table;
        undo.push(
            format!("remove the default route of table {table}"),
            move |nl| {
                nl.del_table_route(table, dest).map_err(|err| {
                    Error::kernel(format!("remove the default route of table {table}"), err)
                })
            },
        );
    }
    for r in rules(sources, e, a) {
        nl.add_rule(&r).map_err(|err| {
            Error::kernel(format!("add rule {} for {:?}", r.priority, r.source), err)
        })?;
        undo.push(format!("remove rule {}", r.priority), move |nl| {
            nl.del_rule(&r)
                .map_err(|err| Error::kernel(format!("remove rule {}", r.priority), err))
        });
    }
    Ok(())
}

/// Take the rules and the table's routes away (network rm, detach); what is
/// already gone is fine.
pub fn remove(nl: &mut Netlink, sources: &[IpNet], e: &Egress, a: Allocation) -> Vec<Error> {
    let mut errors = Vec::new();
    for r in rules(sources, e, a) {
        if let Err(err) = nl.del_rule(&r)
            && !err.is(libc::ENOENT)
        {
            errors.push(Error::kernel(format!("remove rule {}", r.priority), err));
        }
    }
    for (dest, _) in defaults(sources, e) {
        if let Err(err) = nl.del_table_route(a.table, dest)
            && !err.is(libc::ESRCH)
            && !err.is(libc::ENOENT)
        {
            errors.push(Error::kernel(
                format!("remove the default route of table {}", a.table),
                err,
            ));
        }
    }
    errors
}

/// Put back what the kernel lost: rules deleted, the default route gone
/// with its interface going down (the kernel flushes it) and now up again,
/// or its address changed. Returns what it repaired; `whose` names the
/// owner in those lines.
pub fn repair(
    nl: &mut Netlink,
    whose: &str,
    sources: &[IpNet],
    e: &Egress,
    a: Allocation,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let kernel = |what: String| move |err| Error::kernel(what, err);
    let present = nl.rules().map_err(kernel("list rules".into()))?;
    for r in rules(sources, e, a) {
        if !present.contains(&r) {
            nl.add_rule(&r)
                .map_err(kernel(format!("add rule {}", r.priority)))?;
            done.push(format!("rule {} of {whose}", r.priority));
        }
    }
    let Some(link) = nl
        .link_by_name(&e.interface)
        .map_err(kernel(format!("look up {}", e.interface)))?
        .filter(|l| l.up)
    else {
        return Ok(done); // down or gone: nothing to route through yet
    };
    for (dest, via) in defaults(sources, e) {
        let v6 = dest.addr().is_ipv6();
        if !nl
            .table_has_default(a.table, v6)
            .map_err(kernel("list routes".into()))?
        {
            match nl.add_table_route(a.table, dest, via, link.index) {
                Ok(()) => done.push(format!(
                    "default route of table {} via {}",
                    a.table, e.interface
                )),
                // Not routable yet (no carrier, no address for the
                // gateway): the next round tries again.
                Err(err) if err.is(libc::ENETUNREACH) || err.is(libc::ENETDOWN) => {}
                Err(err) => {
                    return Err(Error::kernel(
                        format!("default route of table {}", a.table),
                        err,
                    ));
                }
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_plumbs_rules_and_tables_that_no_allocation_has() {
        let rule = |priority, table, suppress_default| Rule {
            priority,
            table,
            source: Some("10.1.0.0/24".parse().unwrap()),
            suppress_default,
        };
        let rules = [
            rule(10_000, MAIN_TABLE, true),
            rule(10_001, 20_000, false),
            rule(10_002, MAIN_TABLE, true),
            rule(10_003, 20_001, false),
            // A user's rules: another range, or the main table plainly.
            rule(9_000, 20_005, false),
            rule(10_004, MAIN_TABLE, false),
            rule(10_006, 100, false),
            rule(9_001, 20_008, false),
        ];
        let (stray, tables) = orphans(
            &rules,
            &[20_000, 20_001, 20_007, 20_008, 100],
            &[(20_000, 10_000)],
        );
        assert_eq!(
            stray.iter().map(|r| r.priority).collect::<Vec<_>>(),
            [10_002, 10_003]
        );
        assert_eq!(tables, [20_001, 20_007]);
    }
}
