//! Firewall rules as data: `plumb policy add/ls/rm` and topology files.
//! Each change checks the rule against the networks and every other rule,
//! then renders plumb's table again in one atomic batch; a failure leaves
//! the previous ruleset and the store as they were.

use crate::error::{Error, Result};
use crate::policy::firewall;
use crate::policy::rules::{self, PolicySpec, StoredPolicy};
use crate::store;

use super::Engine;

impl Engine {
    /// Add a rule; refused when it names what does not exist, or repeats,
    /// contradicts or shadows another rule.
    pub fn policy_add(&mut self, spec: &PolicySpec, owner: Option<&str>) -> Result<StoredPolicy> {
        let mut added = self.policy_add_all(std::slice::from_ref(spec), owner)?;
        Ok(added.remove(0))
    }

    /// Add rules in one transaction and one render of the table (a
    /// topology file's): each is checked against the rules before it, and
    /// if one is refused none is added.
    pub fn policy_add_all(
        &mut self,
        specs: &[PolicySpec],
        owner: Option<&str>,
    ) -> Result<Vec<StoredPolicy>> {
        self.change(|tx, _, undo| {
            let previous = firewall::Ruleset::load(tx)?;
            let mut all = previous.policies.clone();
            let mut added = Vec::new();
            for spec in specs {
                let policy = spec.resolve(&previous.networks)?;
                rules::check_new(&policy, &all, &previous.networks)?;
                let stored = StoredPolicy {
                    id: store::insert_policy(tx, &policy, owner)?,
                    policy,
                    owner: owner.map(String::from),
                };
                all.push(stored.clone());
                added.push(stored);
            }
            let next = firewall::Ruleset {
                policies: all,
                ..previous.clone()
            };
            firewall::sync_rules(&next)?;
            undo.push("restore the previous nftables ruleset", move |_| {
                firewall::sync_rules(&previous)
            });
            Ok(added)
        })
    }

    /// Remove rules by id, all or none.
    pub fn policy_rm(&mut self, ids: &[i64]) -> Result<()> {
        self.change(|tx, _, undo| {
            let previous = firewall::Ruleset::load(tx)?;
            for id in ids {
                if !store::delete_policy(tx, *id)? {
                    return Err(Error::invalid("policy id", id, "no such rule"));
                }
            }
            let mut next = previous.clone();
            next.policies.retain(|p| !ids.contains(&p.id));
            firewall::sync_rules(&next)?;
            undo.push("restore the previous nftables ruleset", move |_| {
                firewall::sync_rules(&previous)
            });
            Ok(())
        })
    }

    /// Every rule, in the order they were added.
    pub fn policies(&self) -> Result<Vec<StoredPolicy>> {
        store::policies(self.store.read())
    }
}
