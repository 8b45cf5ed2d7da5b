//! A cluster's rules as every host will read them: checked against the
//! cluster's networks (as a host makes them) and its other rules before one
//! is added, by `plumb policy add --cluster-store` and by a topology file's
//! `[[cluster.policy]]` entries alike.

use etcd_client::Client;

use crate::cluster::{ClusterStore, as_a_host_makes_it};
use crate::error::Result;
use crate::model::{Network, NetworkSpec};
use crate::policy::rules::{Policy, PolicySpec, StoredPolicy, check_new};

/// The cluster's networks and rules, read once, for checking new rules.
pub struct ClusterView {
    /// Every cluster network as a host makes it.
    pub networks: Vec<Network>,
    /// The cluster's rules, oldest first: (id, rule as written).
    pub rules: Vec<(i64, PolicySpec)>,
    /// The rules that apply, resolved, with rules counted in by
    /// [`ClusterView::count_in`].
    resolved: Vec<StoredPolicy>,
}

impl ClusterView {
    /// Read the cluster's networks and rules; `also` are networks about to
    /// be defined (a topology file's), counted as if they were there (the
    /// cluster's own definition wins over one of the same name).
    pub async fn read(
        store: &ClusterStore,
        client: &mut Client,
        also: &[NetworkSpec],
    ) -> Result<ClusterView> {
        let mut specs = store.networks(client).await?;
        for spec in also {
            if !specs.iter().any(|s| s.name == spec.name) {
                specs.push(spec.clone());
            }
        }
        let networks = specs
            .into_iter()
            .map(as_a_host_makes_it)
            .collect::<Result<Vec<_>>>()?;
        let rules = store.policies(client).await?;
        // A rule that no longer resolves (its network went) applies to
        // nothing, and so contradicts nothing.
        let resolved = rules
            .iter()
            .filter_map(|(id, s)| {
                Some(StoredPolicy {
                    id: *id,
                    policy: s.resolve(&networks).ok()?,
                    owner: None,
                })
            })
            .collect();
        Ok(ClusterView {
            networks,
            rules,
            resolved,
        })
    }

    /// The id of a rule of the cluster written exactly as `spec`.
    pub fn find(&self, spec: &PolicySpec) -> Option<i64> {
        self.rules
            .iter()
            .find(|(_, s)| s == spec)
            .map(|(id, _)| *id)
    }

    /// `spec` as every host will read it: refused, naming the word at
    /// fault, if it could not apply or contradicts a rule of the view.
    pub fn check(&self, spec: &PolicySpec) -> Result<Policy> {
        let policy = spec.resolve(&self.networks)?;
        check_new(&policy, &self.resolved, &self.networks)?;
        Ok(policy)
    }

    /// Count `policy` in as rule `id`, evaluated after those of the view
    /// (a rule about to be added, for the next one's check).
    pub fn count_in(&mut self, id: i64, policy: Policy) {
        self.resolved.push(StoredPolicy {
            id,
            policy,
            owner: None,
        });
    }
}
