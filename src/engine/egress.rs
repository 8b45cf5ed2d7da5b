//! `plumb egress` rules: recorded (with an intent) before the kernel is
//! touched, made to match their record by [`egress::converge`], and taken
//! away whole. A rule whose Docker source changed is recorded anew and
//! converged again; the repair that runs after link changes and twice a
//! second in the daemon converges every rule no change is under way on.

use ipnet::IpNet;

use super::Engine;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::model::Egress;
use crate::policy::egress::{self, EgressRule, Source};
use crate::policy::{firewall, routing};
use crate::store;
use crate::store::intent::{self, Action, Subject};

/// What `plumb egress add` asks for.
pub struct EgressRequest {
    pub source: Source,
    pub uplink: Egress,
    /// `--priority`: the rule pair's, instead of plumb's first free one.
    pub priority: Option<u32>,
    /// What the source stands for now.
    pub applied: Vec<IpNet>,
    pub masquerade: bool,
}

impl Engine {
    /// Send `req.source` (now standing for `req.applied`) out of its uplink.
    pub fn egress_add(&mut self, req: EgressRequest, owner: Option<&str>) -> Result<EgressRule> {
        let EgressRequest {
            source,
            uplink,
            priority,
            applied,
            masquerade,
        } = req;
        self.recover_quietly();
        crate::model::validate_ifname("--interface", &uplink.interface)?;
        let link = self
            .host
            .link_by_name(&uplink.interface)
            .map_err(|e| Error::kernel(format!("look up {}", uplink.interface), e))?;
        if link.is_none() {
            return Err(Error::invalid(
                "--interface",
                &uplink.interface,
                "no such interface on the host",
            ));
        }
        if let (Some(g), Source::Cidr(net)) = (uplink.gateway, &source)
            && g.is_ipv6() != net.addr().is_ipv6()
        {
            return Err(Error::invalid(
                "--gateway",
                g,
                format!("is not of the family of {net}"),
            ));
        }
        let holder = self.store.holder()?;
        let key = source.to_string();
        let host = &mut self.host;
        let rule = self.store.record(|tx| {
            if let Some(r) = store::host_extras::egress_rules(tx)?
                .into_iter()
                .find(|r| r.source == source)
            {
                return Err(Error::invalid(
                    "SOURCE",
                    &key,
                    format!(
                        "leaves by {} already (egress rule {}; remove it first)",
                        r.egress.interface, r.id
                    ),
                ));
            }
            let a = routing::free(tx, host, priority)?;
            let mut rule = EgressRule {
                id: 0,
                source: source.clone(),
                egress: uplink.clone(),
                table: a.table,
                priority: a.priority,
                applied: applied.clone(),
                masquerade,
            };
            store::host_extras::insert_egress_rule(tx, &mut rule, owner)?;
            intent::insert(tx, Subject::Egress, &key, Action::Create, &holder)?;
            Ok(rule)
        })?;
        let made = egress::converge(&mut self.host, &rule);
        failpoint::hit("egress converged");
        let done = made.and_then(|_| {
            self.store.write(|tx| {
                if rule.masquerade {
                    firewall::sync_tables(&firewall::Ruleset::load(tx)?)?;
                }
                intent::delete(tx, Subject::Egress, &key)
            })
        });
        if let Err(e) = done {
            let _ = self.finish_egress_removal(&rule);
            return Err(e);
        }
        Ok(rule)
    }

    /// Remove the rule of ID or source `key`; None when there is none.
    pub fn egress_rm(&mut self, key: &str) -> Result<Option<EgressRule>> {
        self.recover_quietly();
        let found = store::host_extras::egress_rules(self.store.read())?
            .into_iter()
            .find(|r| r.id.to_string() == key || r.source.to_string() == key);
        let Some(rule) = found else { return Ok(None) };
        self.claim(Subject::Egress, &rule.source.to_string(), Action::Remove)?;
        self.finish_egress_removal(&rule)?;
        Ok(Some(rule))
    }

    /// Take a rule's kernel objects away, then its record and intent.
    pub(super) fn finish_egress_removal(&mut self, rule: &EgressRule) -> Result<()> {
        if let Some(e) = egress::remove(&mut self.host, rule).into_iter().next() {
            return Err(e);
        }
        failpoint::hit("egress removed");
        let key = rule.source.to_string();
        self.store.write(|tx| {
            store::host_extras::delete_egress_rule(tx, rule.id)?;
            if rule.masquerade {
                firewall::sync_tables(&firewall::Ruleset::load(tx)?)?;
            }
            intent::delete(tx, Subject::Egress, &key)
        })
    }

    pub fn egress_rules(&self) -> Result<Vec<EgressRule>> {
        store::host_extras::egress_rules(self.store.read())
    }

    /// Rule `id` now stands for `applied` (its Docker source changed):
    /// recorded, then the kernel made to match. False when nothing changed
    /// or the rule is gone or being changed by another process.
    pub fn egress_follow(&mut self, id: u32, applied: Vec<IpNet>) -> Result<bool> {
        let busy = self.busy(Subject::Egress)?;
        let updated = self.store.write(|tx| {
            let Some(mut rule) = store::host_extras::egress_rules(tx)?
                .into_iter()
                .find(|r| r.id == id)
            else {
                return Ok(None);
            };
            if rule.applied == applied || busy.contains(&rule.source.to_string()) {
                return Ok(None);
            }
            rule.applied = applied;
            store::host_extras::update_egress_rule(tx, &rule)?;
            if rule.masquerade {
                firewall::sync_tables(&firewall::Ruleset::load(tx)?)?;
            }
            Ok(Some(rule))
        })?;
        let Some(rule) = updated else {
            return Ok(false);
        };
        // As a repair: read again with no change starting meanwhile (an
        // `egress rm` may have taken it since).
        self.as_repair(|e| {
            let busy = e.busy(Subject::Egress)?;
            let current = store::host_extras::egress_rules(e.store.read())?
                .into_iter()
                .find(|r| r.id == rule.id && !busy.contains(&r.source.to_string()));
            match current {
                Some(r) => egress::converge(&mut e.host, &r).map(drop),
                None => Ok(()),
            }
        })?;
        Ok(true)
    }

    /// Converge every egress rule no change is under way on.
    pub(super) fn repair_egress_rules(&mut self) -> Result<Vec<String>> {
        let busy = self.busy(Subject::Egress)?;
        let mut done = Vec::new();
        for rule in store::host_extras::egress_rules(self.store.read())? {
            if !busy.contains(&rule.source.to_string()) {
                done.extend(egress::converge(&mut self.host, &rule)?);
            }
        }
        Ok(done)
    }
}
