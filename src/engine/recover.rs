//! Recovery: what a plumb process killed half way through a change left
//! (an intent whose holder died) is taken away, and what plumb can tell by
//! its name or number as its own (host veths, routing rules and tables)
//! but no record justifies is deleted.
//!
//! Every process that changes anything first recovers what dead ones left
//! (one read of the small `intents` table), so a leftover never meets the
//! next change as a conflict, an address handed out twice or an interface
//! name taken; `gc`, `restore` and the daemon (at start and in its
//! reconcile loop) do it too, and sweep orphans.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::Transaction;

use super::Engine;
use crate::error::{Error, Result};
use crate::policy::routing;
use crate::store;
use crate::store::intent::{self, Action, Intent, Subject};

/// What a recovery did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Changes finished or undone, and orphans removed, one line each.
    pub done: Vec<String>,
    /// What could not be recovered, and why (tried again next time).
    pub errors: Vec<String>,
}

impl Engine {
    /// Finish or undo every change whose process died: an attach or a
    /// create is undone, a detach or a removal finished.
    pub fn recover(&mut self) -> Result<Recovery> {
        let recovery = self.recover_stale()?;
        intent::forget_dead_holders(self.store.read(), &self.store.dir)?;
        Ok(recovery)
    }

    /// [`Engine::recover`] before a change: what cannot be recovered now
    /// is said and left for later, and the change goes on.
    pub fn recover_quietly(&mut self) {
        match self.recover_stale() {
            Ok(r) => {
                for line in r.done {
                    tracing::info!("{line}");
                }
                for line in r.errors {
                    tracing::warn!("recovery: {line}");
                }
            }
            Err(e) => tracing::warn!("recovery: {e}"),
        }
    }

    fn recover_stale(&mut self) -> Result<Recovery> {
        let mut report = Recovery::default();
        let stale: Vec<Intent> = intent::intents(self.store.read())?
            .into_iter()
            .filter(|i| !self.store.holder_alive(i))
            .collect();
        if stale.is_empty() {
            return Ok(report);
        }
        let claimed = self.take_over(&stale)?;
        crate::failpoint::hit("recovery: intents taken over");
        self.delete_ports_together(&claimed);
        for i in claimed {
            let verb = match i.action {
                Action::Create => "undid",
                Action::Remove => "finished",
            };
            match self.carry_out(&i) {
                Ok(()) => report
                    .done
                    .push(format!("{verb} the {i}, left by a plumb process that died")),
                Err(e) => report.errors.push(format!("the {i}: {e}")),
            }
        }
        Ok(report)
    }

    /// Hand the dead holders' intents to this process, in one commit; those
    /// another process took first are its own.
    fn take_over(&mut self, stale: &[Intent]) -> Result<Vec<Intent>> {
        let holder = self.store.holder()?;
        self.store.write(|tx| {
            let mut taken = Vec::new();
            for i in stale {
                if let Some(cur) = intent::get(tx, i.subject, &i.key)?
                    && cur.holder == i.holder
                {
                    intent::reassign(tx, &cur, &holder)?;
                    taken.push(i.clone());
                }
            }
            Ok(taken)
        })
    }

    /// Delete the host ends of the bridge attachments among `taken` in one
    /// kernel request (a thousand of them in a fraction of a second rather
    /// than half a minute); each then finds its own gone. Best effort: what
    /// fails here is deleted one by one after.
    fn delete_ports_together(&mut self, taken: &[Intent]) {
        let mut ports = Vec::new();
        for i in taken.iter().filter(|i| i.subject == Subject::Attachment) {
            let Ok(Some(a)) = store::attachment(self.store.read(), &i.key) else {
                continue;
            };
            let bridged = store::get_network(self.store.read(), &a.network)
                .ok()
                .flatten()
                .is_some_and(|n| n.network.bridge().is_some());
            if bridged {
                ports.push(a.host_ifname);
            }
        }
        if ports.len() > 1
            && let Err(e) = self.host.delete_links_together(&ports, DOOMED_GROUP)
        {
            tracing::warn!("delete {} bridge ports together: {e}", ports.len());
        }
    }

    /// Carry out one intent this process took over, as its dead holder
    /// would have; on failure it goes back to that holder, for the next
    /// recovery, in this process or another, to try again.
    fn carry_out(&mut self, i: &Intent) -> Result<()> {
        let done = match i.subject {
            Subject::Attachment => match store::attachment(self.store.read(), &i.key)? {
                Some(a) => self.finish_detach(&a),
                None => self
                    .store
                    .write(|tx| intent::delete(tx, Subject::Attachment, &i.key)),
            },
            Subject::Network => self.finish_network_removal(&i.key).map(drop),
            Subject::Shim => {
                let known = store::host_extras::shims(self.store.read())?
                    .into_iter()
                    .find(|s| s.name == i.key);
                match known {
                    Some(s) => self.finish_shim_removal(&s),
                    None => self
                        .store
                        .write(|tx| intent::delete(tx, Subject::Shim, &i.key)),
                }
            }
            Subject::Egress => {
                let known = store::host_extras::egress_rules(self.store.read())?
                    .into_iter()
                    .find(|r| r.source.to_string() == i.key);
                match known {
                    Some(r) => self.finish_egress_removal(&r),
                    None => self
                        .store
                        .write(|tx| intent::delete(tx, Subject::Egress, &i.key)),
                }
            }
            Subject::HostRoute => {
                let known = store::host_routes(self.store.read())?
                    .into_iter()
                    .find(|r| r.dest == i.key);
                match known {
                    Some(r) => self.finish_host_route_removal(&r),
                    None => self
                        .store
                        .write(|tx| intent::delete(tx, Subject::HostRoute, &i.key)),
                }
            }
        };
        if done.is_err() {
            let dead = i.holder.clone();
            let _ = self
                .store
                .write(|tx| match intent::get(tx, i.subject, &i.key)? {
                    Some(cur) => intent::reassign(tx, &cur, &dead),
                    None => Ok(()),
                });
        }
        done
    }

    /// Record the intent to take `key` away, or take over one a dead
    /// process left on it (whose work this change then finishes); one a
    /// live process holds is refused.
    pub(super) fn claim(&mut self, subject: Subject, key: &str, action: Action) -> Result<()> {
        let holder = self.store.holder()?;
        let dir = self.store.dir.clone();
        self.store
            .record(|tx| match intent::get(tx, subject, key)? {
                Some(i) if i.holder != holder && intent::holder_alive(&dir, &i.holder) => {
                    Err(under_way(&i))
                }
                Some(i) => intent::reassign(tx, &i, &holder),
                None => intent::insert(tx, subject, key, action, &holder),
            })
    }

    /// Run repair `f` with no change starting while it looks at the
    /// records and acts on them (see `store::gate`).
    pub(super) fn as_repair<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.store.begin_repair()?;
        let out = f(self);
        self.store.end_repair();
        out
    }

    /// Keys of `subject` a change is under way on (recovery has run, so
    /// their holders live).
    /// Whether a live plumb process is making or removing network `name`
    /// now (an attach to it would be refused until it ends).
    pub fn network_under_way(&self, name: &str) -> Result<bool> {
        Ok(self.busy(Subject::Network)?.contains(name))
    }

    pub(super) fn busy(&self, subject: Subject) -> Result<HashSet<String>> {
        Ok(intent::intents(self.store.read())?
            .into_iter()
            .filter(|i| i.subject == subject)
            .map(|i| i.key)
            .collect())
    }

    /// Delete what plumb can tell by its name or number as its own but no
    /// record justifies (left by a plumb older than intents, or by a store
    /// that was lost): host veth ends named `pv` and 12 hex digits, routing
    /// rules and tables in plumb's ranges ([`routing::orphans`]). The
    /// kernel is listed before records are read, so a change in progress
    /// (whose record is committed before its kernel objects are made) is
    /// never taken for an orphan.
    pub fn sweep_orphans(&mut self) -> Result<Vec<String>> {
        let links = self
            .host
            .links()
            .map_err(|e| Error::kernel("list host links", e))?;
        let mut removed = Vec::new();
        for link in links {
            if !is_plumb_veth_name(&link.name) || link.kind.as_deref() != Some("veth") {
                continue;
            }
            if store::attachment(self.store.read(), &link.name)?.is_some() {
                continue;
            }
            match self.host.delete_link_by_name(&link.name) {
                Ok(_) => removed.push(format!("interface {}, which no attachment has", link.name)),
                Err(e) => {
                    return Err(Error::kernel(format!("delete orphan {}", link.name), e));
                }
            }
        }
        let kernel = |e| Error::kernel("list routing rules and tables", e);
        let rules = self.host.rules().map_err(kernel)?;
        let tables = self.host.tables_in_use().map_err(kernel)?;
        let allocated = store::route_tables(self.store.read())?;
        let (stray_rules, stray_tables) = routing::orphans(&rules, &tables, &allocated);
        for r in stray_rules {
            match self.host.del_rule(&r) {
                Err(e) if !e.is(libc::ENOENT) => {
                    return Err(Error::kernel(
                        format!("delete orphan rule {}", r.priority),
                        e,
                    ));
                }
                _ => removed.push(format!(
                    "routing rule {} (table {}), which no network or attachment has",
                    r.priority, r.table
                )),
            }
        }
        for t in stray_tables {
            routing::flush_table(&mut self.host, t)?;
            removed.push(format!(
                "the routes of table {t}, which no network or attachment has"
            ));
        }
        Ok(removed)
    }
}

/// The link group bridge ports are put in to be deleted together
/// ("plm" and a zero).
const DOOMED_GROUP: u32 = 0x706c_6d00;

/// A change on `key` must wait for one a live process is making on it.
pub(super) fn settled(tx: &Transaction, dir: &Path, subject: Subject, key: &str) -> Result<()> {
    match intent::get(tx, subject, key)? {
        Some(i) if intent::holder_alive(dir, &i.holder) => Err(under_way(&i)),
        _ => Ok(()),
    }
}

fn under_way(i: &Intent) -> Error {
    Error::Conflict(format!(
        "the {i} is under way in another plumb process; try again when it ends"
    ))
}

/// `pv` + 12 lowercase hex digits: [`crate::names::host_veth_name`].
fn is_plumb_veth_name(name: &str) -> bool {
    name.len() == 14
        && name.starts_with("pv")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plumbs_veth_names_are_taken_for_its_own() {
        let mine = crate::names::host_veth_name("lan", "ns:4:1", "eth0");
        assert!(is_plumb_veth_name(&mine));
        for other in [
            "pv",
            "pvABCDEF012345",
            "pv0123456789abc",
            "veth0",
            "pv0123456789ag",
        ] {
            assert!(!is_plumb_veth_name(other), "{other}");
        }
    }
}
