//! A topology file's cluster part: the `[cluster]` table (the etcd the
//! cluster lives in, as `--cluster-store` and its options say it), the
//! file's vxlan `[[network]]` entries (defined once in the cluster, made on
//! each host by that host's daemon, never by `up` itself) and its
//! `[[cluster.policy]]` rules (every host's daemon applies them).
//!
//! The cluster part is the file's by what it declares, not by a tag: one
//! file is meant to be brought up on every host of the cluster. `up`
//! defines what is missing and takes back, on failure, what that run
//! defined; `down` removes it once no host has containers on the file's
//! cluster networks, and leaves it, saying who uses it, until then.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Made, Summary, Topology};
use crate::cluster::{ClusterStore, Endpoint, as_a_host_makes_it, names_network, spec_words};
use crate::cluster_rules::ClusterView;
use crate::error::{Error, Result};
use crate::model::{Mac, Network, NetworkSpec};
use crate::policy::rules::{Policy, PolicySpec};

/// The `[cluster]` table: what `--cluster-store` and its options give on
/// the command line, with the same checks (PLUMB_CLUSTER_PASSWORD too).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTable {
    /// `etcd://HOST:PORT[,HOST:PORT…]`, or `etcds://…` over TLS.
    #[serde(default)]
    pub store: Option<String>,
    /// The cluster's name in the store.
    #[serde(default = "default_name")]
    pub name: String,
    /// The CA (PEM) trusted for an etcds:// store's certificate; a relative
    /// path is from the file's directory, as are the others.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM) an etcds:// store asks for, with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// A user of etcd's authentication; the password comes from
    /// PLUMB_CLUSTER_PASSWORD or `password_file`, never the file.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `[[cluster.policy]]`: rules for the whole cluster, as `plumb policy
    /// add --cluster-store` takes them.
    #[serde(default)]
    pub policy: Vec<PolicySpec>,
}

fn default_name() -> String {
    "default".into()
}

/// The options of `--cluster-*` as the table's keys.
const KEYS: [(&str, &str); 7] = [
    ("--cluster-store", "store"),
    ("--cluster-name", "name"),
    ("--cluster-ca", "ca"),
    ("--cluster-cert", "cert"),
    ("--cluster-key", "key"),
    ("--cluster-user", "user"),
    ("--cluster-password-file", "password_file"),
];

impl ClusterTable {
    /// What can be checked without reading a file or asking the store:
    /// the store is given and well formed, the name valid.
    pub(super) fn validate(&self) -> std::result::Result<(), String> {
        let Some(url) = &self.store else {
            return Err(
                "[cluster] store: missing: the cluster's etcd, etcd://HOST:PORT[,HOST:PORT…] (etcds://… over TLS)"
                    .into(),
            );
        };
        ClusterStore::parse(url, &self.name)
            .map(drop)
            .map_err(|e| in_file_words(e).to_string())
    }
}

/// An error about a `--cluster-*` option (a bad value, or the store's
/// refusal with a hint at the option to look at) said with the `[cluster]`
/// table's keys instead: `--cluster-key` is `[cluster] key`.
pub fn in_file_words(e: Error) -> Error {
    let words = |text: &str| {
        KEYS.iter().fold(text.to_string(), |t, (option, key)| {
            t.replace(option, &format!("[cluster] {key}"))
        })
    };
    match e {
        Error::Invalid {
            field,
            value,
            reason,
        } => Error::Invalid {
            field: words(&field),
            value,
            reason: words(&reason),
        },
        Error::Cluster { store, reason } => Error::Cluster {
            store,
            reason: words(&reason),
        },
        Error::RolledBack { cause, undone } => Error::RolledBack {
            cause: Box::new(in_file_words(*cause)),
            undone,
        },
        e => e,
    }
}

/// A vxlan `[[network]]` entry as each host will make it; it needs the
/// file's `[cluster]`.
pub(super) fn check_network(n: &NetworkSpec, in_a_cluster: bool) -> Result<Network> {
    if !in_a_cluster {
        return Err(Error::invalid(
            "driver",
            &n.driver,
            "a vxlan network is a cluster's: it needs `[cluster] store`, the etcd it is defined in (each host's daemon makes it)",
        ));
    }
    if let Some(vtep) = &n.vtep {
        return Err(Error::invalid(
            "vtep",
            vtep,
            "is each host's own tunnel end, which its daemon fills in; leave it out",
        ));
    }
    as_a_host_makes_it(n.clone())
}

/// The store of the file's `[cluster]` table, as the front end read it.
pub(super) fn store_of<'s>(
    topo: &Topology,
    store: Option<&'s ClusterStore>,
) -> Result<&'s ClusterStore> {
    store.ok_or_else(|| {
        Error::Conflict(format!(
            "the file has a [cluster] table, with store `{}`, and no store was opened for it",
            topo.cluster
                .as_ref()
                .and_then(|c| c.store.as_deref())
                .unwrap_or_default()
        ))
    })
}

fn rules_of(topo: &Topology) -> &[PolicySpec] {
    topo.cluster.as_ref().map_or(&[], |c| &c.policy)
}

/// Ids the file's rules are counted in under while only checked (past any
/// revision etcd will reach), to be named as the entries they are.
const CHECKED: i64 = i64::MAX / 2;

/// A `[[cluster.policy]]` entry's error, naming the entry, and the file's
/// other entries by theirs.
fn rule_error(i: usize, count: usize, e: Error) -> Error {
    let mut text = e.to_string();
    for k in (0..count).rev() {
        text = text.replace(
            &format!("rule {}", CHECKED + k as i64),
            &format!("[[cluster.policy]] #{}", k + 1),
        );
    }
    Error::Conflict(format!("[[cluster.policy]] #{}: {text}", i + 1))
}

/// Before `up` changes anything: the file's rules that are not in the
/// cluster yet, checked as every host will read them, against the
/// cluster's networks (the file's own included) and rules. Returns the
/// names of the cluster's networks, the file's included.
pub(super) fn check_up(topo: &Topology, store: &ClusterStore) -> Result<Vec<String>> {
    let specs: Vec<NetworkSpec> = topo.cluster_networks().cloned().collect();
    let rules = rules_of(topo);
    store.call(async |client| {
        let mut view = ClusterView::read(store, client, &specs).await?;
        for (i, spec) in rules.iter().enumerate() {
            if view.find(spec).is_some() {
                continue;
            }
            let policy = view
                .check(spec)
                .map_err(|e| rule_error(i, rules.len(), e))?;
            view.count_in(CHECKED + i as i64, policy);
        }
        Ok(view.networks.iter().map(|n| n.name.clone()).collect())
    })
}

/// Define the file's cluster networks the cluster does not have; one it
/// has as the file says is no change, another of the name or the VNI is
/// the store's refusal.
pub(super) fn define(
    topo: &Topology,
    store: &ClusterStore,
    made: &mut Vec<Made>,
    summary: &mut Summary,
) -> Result<()> {
    store.call(async |client| {
        for (i, spec) in topo.network.iter().enumerate() {
            if !super::is_cluster_network(spec) {
                continue;
            }
            if store.network(client, &spec.name).await?.as_ref() == Some(spec) {
                continue;
            }
            store.define(client, spec).await.map_err(|e| {
                Error::Conflict(format!("[[network]] #{} `{}`: {e}", i + 1, spec.name))
            })?;
            made.push(Made::ClusterNetwork(spec.name.clone()));
            summary.changes.push(format!(
                "defined network {} in cluster {}",
                spec.name, store.name
            ));
        }
        Ok(())
    })
}

/// Add the file's rules the cluster does not have (checked again: the
/// cluster may have changed since [`check_up`]).
pub(super) fn add_rules(
    topo: &Topology,
    store: &ClusterStore,
    made: &mut Vec<Made>,
    summary: &mut Summary,
) -> Result<()> {
    let rules = rules_of(topo);
    if rules.is_empty() {
        return Ok(());
    }
    store.call(async |client| {
        let mut view = ClusterView::read(store, client, &[]).await?;
        for (i, spec) in rules.iter().enumerate() {
            if view.find(spec).is_some() {
                continue;
            }
            let policy: Policy = view
                .check(spec)
                .map_err(|e| rule_error(i, rules.len(), e))?;
            let id = store
                .add_policy(client, spec)
                .await
                .map_err(|e| rule_error(i, rules.len(), e))?;
            made.push(Made::ClusterRule(id));
            summary
                .changes
                .push(format!("added cluster rule {id}: {policy}"));
            view.count_in(id, policy);
        }
        Ok(())
    })
}

/// The endpoints on the file's cluster networks.
fn on_networks(topo: &Topology, endpoints: Vec<(Endpoint, i64)>) -> Vec<Endpoint> {
    endpoints
        .into_iter()
        .map(|(e, _)| e)
        .filter(|e| topo.cluster_networks().any(|n| n.name == e.network))
        .collect()
}

/// Before `down` changes anything: if the cluster part is to go (no host
/// but this one, whose containers `ours` are, has containers on the
/// file's cluster networks), a cluster rule that is not the file's and
/// names one of them stops it all. Returns what stops it.
pub(super) fn check_down(
    topo: &Topology,
    store: &ClusterStore,
    ours: &[(String, Mac)],
) -> Result<Vec<String>> {
    if topo.cluster_networks().next().is_none() {
        return Ok(Vec::new());
    }
    let rules = rules_of(topo);
    store.call(async |client| {
        let others = on_networks(topo, store.endpoints(client).await?)
            .into_iter()
            .filter(|e| !ours.contains(&(e.network.clone(), e.mac)))
            .count();
        if others > 0 {
            // The cluster part stays: nothing of it is in the way.
            return Ok(Vec::new());
        }
        let mut blockers = Vec::new();
        for (id, spec) in store.policies(client).await? {
            if rules.contains(&spec) {
                continue;
            }
            if let Some(n) = topo.cluster_networks().find(|n| names_network(&spec, &n.name)) {
                blockers.push(format!(
                    "cluster rule {id} ({}) names network `{}` and is not this file's; remove it first (plumb policy rm {id} --cluster-store …)",
                    spec_words(&spec),
                    n.name
                ));
            }
        }
        Ok(blockers)
    })
}

/// After this host's part went: the file's cluster rules and networks
/// removed if no host has containers on them, else one line saying who
/// has.
pub(super) fn take_down(
    topo: &Topology,
    store: &ClusterStore,
    summary: &mut Summary,
    errors: &mut Vec<String>,
) {
    let rules = rules_of(topo);
    let done = store.call(async |client| {
        // The host's daemon withdrew what it detached before it answered.
        let holders = on_networks(topo, store.endpoints(client).await?);
        // In the file's order.
        let in_cluster: Vec<String> = store
            .networks(client)
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect();
        let defined: Vec<String> = topo
            .cluster_networks()
            .map(|c| c.name.clone())
            .filter(|n| in_cluster.contains(n))
            .collect();
        if !holders.is_empty() {
            summary.changes.push(left(&store.name, &defined, &holders));
            return Ok(());
        }
        let present: Vec<(i64, PolicySpec)> = store
            .policies(client)
            .await?
            .into_iter()
            .filter(|(_, s)| rules.contains(s))
            .collect();
        if !present.is_empty() {
            let ids: Vec<i64> = present.iter().map(|(id, _)| *id).collect();
            match store.remove_policies(client, &ids).await {
                Ok(()) => summary.changes.extend(
                    present
                        .iter()
                        .map(|(id, s)| format!("removed cluster rule {id}: {}", spec_words(s))),
                ),
                // A network a rule names cannot go.
                Err(e) => return Err(e),
            }
        }
        for name in defined {
            match store.undefine(client, &name).await {
                Ok(()) => summary.changes.push(format!(
                    "removed network {name} from cluster {}",
                    store.name
                )),
                Err(e) => errors.push(format!("network `{name}` of cluster {}: {e}", store.name)),
            }
        }
        Ok(())
    });
    if let Err(e) = done {
        errors.push(e.to_string());
    }
}

/// Undo a definition of this run's: network `name` removed from the
/// cluster (the daemon withdrew the containers the rollback detached
/// before it answered).
pub(super) fn undefine(store: &ClusterStore, name: &str) -> Result<()> {
    store.call(async |client| store.undefine(client, name).await)
}

/// `left network t1 in cluster default: host h2 has containers on it`:
/// the file's networks in the cluster (`defined`), the hosts of `holders`
/// and, if not all of them, the networks they are on.
fn left(cluster: &str, defined: &[String], holders: &[Endpoint]) -> String {
    let mut hosts: Vec<&str> = holders.iter().map(|e| e.host.as_str()).collect();
    hosts.sort();
    hosts.dedup();
    let mut held: Vec<&str> = Vec::new();
    for e in holders {
        if !held.contains(&e.network.as_str()) {
            held.push(&e.network);
        }
    }
    let networks: Vec<&str> = match defined.is_empty() {
        true => held.clone(),
        false => defined.iter().map(String::as_str).collect(),
    };
    let all = networks.iter().all(|n| held.contains(n));
    let whose = match hosts.len() {
        1 => format!("host {} has", hosts[0]),
        _ => format!("hosts {} have", hosts.join(", ")),
    };
    let on = match (all, networks.len()) {
        (true, 1) => "it".to_string(),
        (true, _) => "them".to_string(),
        (false, _) => held.join(", "),
    };
    let networks = match networks.len() {
        1 => format!("network {}", networks[0]),
        _ => format!("networks {}", networks.join(", ")),
    };
    format!("left {networks} in cluster {cluster}: {whose} containers on {on}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(network: &str, host: &str) -> Endpoint {
        Endpoint {
            network: network.into(),
            host: host.into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            addresses: Vec::new(),
            vtep: "10.250.0.2".parse().unwrap(),
            selectors: Vec::new(),
        }
    }

    #[test]
    fn what_is_left_says_the_networks_and_who_uses_them() {
        let t1 = ["t1".to_string()];
        assert_eq!(
            left("default", &t1, &[on("t1", "h2"), on("t1", "h2")]),
            "left network t1 in cluster default: host h2 has containers on it"
        );
        let both = ["t1".to_string(), "t2".to_string()];
        assert_eq!(
            left("prod", &both, &[on("t2", "h3"), on("t1", "h2")]),
            "left networks t1, t2 in cluster prod: hosts h2, h3 have containers on them"
        );
        assert_eq!(
            left("prod", &both, &[on("t2", "h3")]),
            "left networks t1, t2 in cluster prod: host h3 has containers on t2"
        );
    }

    #[test]
    fn a_rule_names_a_network_by_its_name_or_as_network() {
        let rule = |scope: &str, from: Option<&str>| PolicySpec {
            scope: scope.into(),
            action: "allow".into(),
            from: from.map(String::from),
            ..Default::default()
        };
        assert!(names_network(&rule("t1", None), "t1"));
        assert!(names_network(&rule("t2", Some("network:t1")), "t1"));
        assert!(!names_network(&rule("t2", Some("10.0.0.0/8")), "t1"));
        assert!(!names_network(&rule("tenant:t1", None), "t1"));
    }
}
