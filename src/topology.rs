//! Declarative topologies (`plumb up FILE` / `plumb down FILE`): networks,
//! lab namespaces, attachments, host routes and firewall rules, and a
//! cluster's part (see [`cluster`]): vxlan networks and rules for every
//! host. Everything `up` creates on this host is tagged with the topology's
//! owner tag (the host's daemon tags what it attaches for the file), so
//! `down` removes exactly that, and a second `up` finds it all in place and
//! changes nothing.

pub mod cluster;

use std::path::Path;

use serde::Deserialize;

use self::cluster::ClusterTable;
use crate::cluster::ClusterStore;
use crate::daemon::protocol::{Daemon, Request};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{AttachSpec, Mac, NetworkSpec, RouteSpec, validate_name};
use crate::policy::rules::PolicySpec;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Names the topology in owner tags; defaults to the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub network: Vec<NetworkSpec>,
    #[serde(default)]
    pub namespace: Vec<NamespaceSpec>,
    #[serde(default)]
    pub attach: Vec<AttachSpec>,
    #[serde(default)]
    pub host_route: Vec<HostRouteSpec>,
    /// Firewall rules, as `plumb policy add` takes them.
    #[serde(default)]
    pub policy: Vec<PolicySpec>,
    /// The cluster the file's vxlan networks and `[[cluster.policy]]`
    /// rules are in.
    #[serde(default)]
    pub cluster: Option<ClusterTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    pub name: String,
    /// Turn on IP forwarding inside (a router).
    #[serde(default)]
    pub forwarding: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRouteSpec {
    pub to: String,
    pub via: String,
}

/// What `up` or `down` did, for the user.
#[derive(Debug, Default)]
pub struct Summary {
    pub changes: Vec<String>,
}

/// A topology file larger than this is refused unread: the largest lab
/// is a few hundred lines.
const MAX_TOPOLOGY_BYTES: u64 = 4 << 20;

/// The text of a regular file of at most MAX_TOPOLOGY_BYTES: a FIFO or a
/// device (which could block or never end) is refused before reading.
fn read_topology_file(path: &Path) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Without O_NONBLOCK, opening a FIFO waits for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_TOPOLOGY_BYTES {
        return Err(format!(
            "{} bytes: a topology file is at most {} MiB",
            meta.len(),
            MAX_TOPOLOGY_BYTES >> 20
        ));
    }
    let mut text = String::new();
    // A file growing meanwhile is still read no further than the limit.
    file.take(MAX_TOPOLOGY_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOPOLOGY_BYTES {
        return Err(format!(
            "a topology file is at most {} MiB",
            MAX_TOPOLOGY_BYTES >> 20
        ));
    }
    Ok(text)
}

impl Topology {
    pub fn load(path: &Path) -> Result<(Topology, String)> {
        let file = path.display().to_string();
        let text = read_topology_file(path).map_err(|reason| Error::Topology {
            file: file.clone(),
            reason,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "topology".into());
        Self::parse(&text, &file, &stem)
    }

    /// Parse and check a topology file's text (`file` names it in errors;
    /// `stem` is its name when the file gives none). Returns the topology
    /// and the owner tag of what it makes.
    pub fn parse(text: &str, file: &str, stem: &str) -> Result<(Topology, String)> {
        let file = file.to_string();
        let topo: Topology = toml::from_str(text).map_err(|e| Error::Topology {
            file: file.clone(),
            reason: e.to_string().trim_end().to_string(),
        })?;
        let name = topo.name.clone().unwrap_or_else(|| stem.to_string());
        validate_name("topology name", &name).map_err(|e| Error::Topology {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        topo.validate(&file)?;
        Ok((topo, format!("topology:{name}")))
    }

    /// Check every entry before anything is touched.
    fn validate(&self, file: &str) -> Result<()> {
        let ctx = |what: String, e: Error| Error::Topology {
            file: file.into(),
            reason: format!("{what}: {e}"),
        };
        if let Some(c) = &self.cluster {
            c.validate().map_err(|reason| Error::Topology {
                file: file.into(),
                reason,
            })?;
        }
        // Each network, and each against the file's others: a second one
        // that could never be made is refused before the first is. A
        // cluster network is checked as each host will make it.
        let mut networks: Vec<crate::model::Network> = Vec::new();
        for (i, n) in self.network.iter().enumerate() {
            let at = || format!("[[network]] #{} `{}`", i + 1, n.name);
            let net = match is_cluster_network(n) {
                true => {
                    cluster::check_network(n, self.cluster.is_some()).map_err(|e| ctx(at(), e))?
                }
                false => n.validate().map_err(|e| ctx(at(), e))?,
            };
            for other in &networks {
                if other.name == net.name {
                    return Err(ctx(
                        at(),
                        Error::invalid("name", &net.name, "appears twice in the file"),
                    ));
                }
                crate::engine::check_conflicts(&net, other).map_err(|e| ctx(at(), e))?;
            }
            networks.push(net);
        }
        for (i, ns) in self.namespace.iter().enumerate() {
            validate_name("name", &ns.name)
                .map_err(|e| ctx(format!("[[namespace]] #{}", i + 1), e))?;
        }
        for (i, a) in self.attach.iter().enumerate() {
            a.validate().map_err(|e| ctx(attach_entry(i, a), e))?;
            crate::target::Target::parse(&a.target)
                .map_err(|e| ctx(format!("[[attach]] #{}", i + 1), e))?;
        }
        for (i, r) in self.host_route.iter().enumerate() {
            RouteSpec::parse("to/via", &format!("{} via {}", r.to, r.via))
                .map_err(|e| ctx(format!("[[host_route]] #{}", i + 1), e))?;
        }
        Ok(())
    }

    /// The file's cluster networks (its vxlan `[[network]]` entries).
    fn cluster_networks(&self) -> impl Iterator<Item = &NetworkSpec> {
        self.network.iter().filter(|n| is_cluster_network(n))
    }

    /// Bring the topology up on this host: attachments through `daemon`
    /// when one serves this host, the cluster part in `store` (the file's
    /// `[cluster]`, read and checked). On failure, take back what this run
    /// did, the cluster's part included.
    pub fn up(
        &self,
        engine: &mut Engine,
        daemon: &Daemon,
        store: Option<&ClusterStore>,
        owner: &str,
    ) -> Result<Summary> {
        let mut host = Host {
            engine,
            daemon,
            store,
        };
        // What needs the host's daemon or the cluster is checked before
        // anything changes.
        let plan = self.plan_up(&mut host)?;
        let mut made: Vec<Made> = Vec::new();
        match self.apply(&mut host, &plan, owner, &mut made) {
            Ok(summary) => Ok(summary),
            Err(e) => {
                let undone: Vec<String> = made.iter().rev().map(|m| m.undo(&mut host)).collect();
                Err(Error::RolledBack {
                    cause: Box::new(e),
                    undone: if undone.is_empty() {
                        "nothing".into()
                    } else {
                        undone.join("; ")
                    },
                })
            }
        }
    }

    /// Whether the daemon serves, and the cluster's part checked: the
    /// file's cluster rules against the cluster's networks (its own
    /// included) and rules, and no attach to a cluster network without the
    /// daemon, which alone claims its addresses in the cluster.
    fn plan_up(&self, host: &mut Host) -> Result<Plan> {
        let through_daemon = match self.attach.is_empty() {
            true => false,
            false => host.daemon.try_call(&Request::Status)?.is_some(),
        };
        let mut cluster_nets: Vec<String> =
            self.cluster_networks().map(|n| n.name.clone()).collect();
        // Those this host has from a daemon's making.
        for n in host.engine.networks()? {
            if n.network.bridge().is_some_and(|b| b.overlay.is_some()) {
                cluster_nets.push(n.network.name);
            }
        }
        if self.cluster.is_some() {
            let store = cluster::store_of(self, host.store)?;
            cluster_nets.extend(cluster::check_up(self, store)?);
        }
        if !through_daemon {
            for (i, a) in self.attach.iter().enumerate() {
                if cluster_nets.contains(&a.network) {
                    return Err(Error::Conflict(format!(
                        "{}: `{}` is a cluster network: an attach to it goes through the host's daemon, which must run joined to the cluster (`plumb daemon --cluster-store …`, or `systemctl start plumbd` with PLUMB_CLUSTER_STORE in /etc/default/plumbd), and none serves this host; nothing was changed",
                        attach_entry(i, a),
                        a.network
                    )));
                }
            }
        }
        Ok(Plan { through_daemon })
    }

    fn apply(
        &self,
        host: &mut Host,
        plan: &Plan,
        owner: &str,
        made: &mut Vec<Made>,
    ) -> Result<Summary> {
        let mut summary = Summary::default();
        if self.cluster.is_some() {
            let store = cluster::store_of(self, host.store)?;
            cluster::define(self, store, made, &mut summary)?;
        }
        let engine = &mut *host.engine;
        for spec in self.network.iter().filter(|n| !is_cluster_network(n)) {
            let wanted = spec.validate()?;
            match engine.network(&spec.name) {
                Ok(existing) if existing.network == wanted => {}
                Ok(_) => {
                    return Err(Error::Conflict(format!(
                        "network `{}` exists with a different configuration; remove it or change the file",
                        spec.name
                    )));
                }
                Err(Error::UnknownNetwork(_)) => {
                    engine.network_create(spec, Some(owner))?;
                    made.push(Made::Network(spec.name.clone()));
                    summary
                        .changes
                        .push(format!("created network {}", spec.name));
                }
                Err(e) => return Err(e),
            }
        }
        for ns in &self.namespace {
            if engine.namespace_create(&ns.name, ns.forwarding, Some(owner))? {
                made.push(Made::Namespace(ns.name.clone()));
                summary
                    .changes
                    .push(format!("created namespace {}", ns.name));
            }
        }
        for (i, spec) in self.attach.iter().enumerate() {
            let attached = host.engine.attachments_of(&spec.target)?;
            if attached
                .iter()
                .any(|a| a.attachment.network == spec.network)
            {
                continue;
            }
            let at = |e: Error| Error::Conflict(format!("{}: {e}", attach_entry(i, spec)));
            let (ifname, addrs) = match plan.through_daemon {
                // The daemon claims a cluster network's addresses and
                // makes it here if it is not yet.
                true => {
                    let listed = crate::cli::attach_as(
                        host.daemon,
                        spec.clone(),
                        Some(&mut *host.engine),
                        Some(owner),
                    )
                    .map_err(at)?;
                    let addrs = listed["Addresses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect::<Vec<_>>();
                    (
                        listed["IfName"].as_str().unwrap_or_default().to_string(),
                        addrs,
                    )
                }
                false => {
                    let req = spec.validate()?;
                    let a = host
                        .engine
                        .attach(&spec.target, &req, Some(owner))
                        .map_err(at)?;
                    let addrs = a.addresses.iter().map(|x| x.to_string()).collect();
                    (a.ifname, addrs)
                }
            };
            made.push(Made::Attachment {
                target: spec.target.clone(),
                network: spec.network.clone(),
            });
            summary.changes.push(format!(
                "attached {} to {} as {ifname} ({})",
                spec.target,
                spec.network,
                addrs.join(", ")
            ));
        }
        let engine = &mut *host.engine;
        for r in &self.host_route {
            let route = RouteSpec::parse("to/via", &format!("{} via {}", r.to, r.via))?;
            if engine
                .host_routes()?
                .iter()
                .any(|h| h.dest == route.dest.to_string())
            {
                continue;
            }
            engine.host_route_add(&route, Some(owner))?;
            made.push(Made::HostRoute(route.clone()));
            summary.changes.push(format!("added host route {route}"));
        }
        // Rules name networks, which exist only now; the missing ones go in
        // as one batch.
        let networks: Vec<_> = engine.networks()?.into_iter().map(|n| n.network).collect();
        let present = engine.policies()?;
        let mut missing = Vec::new();
        for (i, spec) in self.policy.iter().enumerate() {
            let rule = spec
                .resolve(&networks)
                .map_err(|e| Error::Conflict(format!("[[policy]] #{}: {e}", i + 1)))?;
            if !present.iter().any(|p| p.policy == rule) {
                missing.push(spec.clone());
            }
        }
        if !missing.is_empty() {
            for added in engine.policy_add_all(&missing, Some(owner))? {
                made.push(Made::Policy(added.id));
                summary
                    .changes
                    .push(format!("added rule {}: {}", added.id, added.policy));
            }
        }
        if self.cluster.is_some() {
            let store = cluster::store_of(self, host.store)?;
            cluster::add_rules(self, store, made, &mut summary)?;
        }
        Ok(summary)
    }

    /// Take this host's part away: everything tagged with `owner` (its
    /// attachments through `daemon` when one serves) and the attachments of
    /// the namespaces it made, in reverse order of creation, or nothing:
    /// what would stop it half way
    /// (another's attachment or rule on one of its networks) is found
    /// first. Then the cluster's part, once no host has containers on the
    /// file's cluster networks (else it says which do).
    pub fn down(
        &self,
        engine: &mut Engine,
        daemon: &Daemon,
        store: Option<&ClusterStore>,
        owner: &str,
    ) -> Result<Summary> {
        let host = Host {
            engine,
            daemon,
            store,
        };
        let ours = self.ours(host.engine, owner)?;
        let mut blockers = self.check_down(host.engine, owner, &ours)?;
        let cluster_store = match &self.cluster {
            Some(_) => Some(cluster::store_of(self, host.store)?),
            None => None,
        };
        if let Some(store) = cluster_store {
            let macs: Vec<(String, Mac)> =
                ours.iter().map(|a| (a.network.clone(), a.mac)).collect();
            blockers.extend(cluster::check_down(self, store, &macs)?);
        }
        if !blockers.is_empty() {
            return Err(Error::Conflict(format!(
                "nothing was removed:\n  {}",
                blockers.join("\n  ")
            )));
        }
        let engine = &mut *host.engine;
        let mut summary = Summary::default();
        let mut errors = Vec::new();
        let rules: Vec<i64> = engine
            .policies()?
            .into_iter()
            .filter(|p| p.owner.as_deref() == Some(owner))
            .map(|p| p.id)
            .collect();
        if !rules.is_empty() {
            match engine.policy_rm(&rules) {
                Ok(()) => summary
                    .changes
                    .extend(rules.iter().map(|id| format!("removed rule {id}"))),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for r in engine
            .host_routes()?
            .into_iter()
            .filter(|r| r.owner.as_deref() == Some(owner))
        {
            let dest = r.dest.parse().map_err(|_| {
                Error::Conflict(format!("stored host route {} is unreadable", r.dest))
            })?;
            match engine.host_route_rm(&dest) {
                Ok(_) => summary
                    .changes
                    .push(format!("removed host route {} via {}", r.dest, r.via)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        // Through the daemon when one serves: it releases their leases and
        // withdraws them from the cluster.
        for a in &ours {
            match crate::cli::detach_from(host.daemon, &a.target, Some(&a.network)) {
                Ok(_) => {
                    summary
                        .changes
                        .push(format!("detached {} from {}", a.target, a.network));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let engine = &mut *host.engine;
        for (name, _) in engine
            .namespaces()?
            .into_iter()
            .filter(|(_, o)| o.as_deref() == Some(owner))
        {
            match engine.namespace_delete(&name) {
                Ok(()) => summary.changes.push(format!("deleted namespace {name}")),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for n in engine
            .networks()?
            .into_iter()
            .filter(|n| n.owner.as_deref() == Some(owner))
        {
            match engine.network_rm(&n.network.name, false) {
                Ok(_) => summary
                    .changes
                    .push(format!("removed network {}", n.network.name)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Some(store) = cluster_store {
            cluster::take_down(self, store, &mut summary, &mut errors);
        }
        if errors.is_empty() {
            Ok(summary)
        } else {
            Err(Error::Conflict(errors.join("\n")))
        }
    }

    /// The attachments of this host that are the file's: tagged with
    /// `owner` (the daemon tags those it attaches for the file too), or of
    /// a namespace the file made.
    fn ours(&self, engine: &Engine, owner: &str) -> Result<Vec<Ours>> {
        let namespaces: Vec<String> = engine
            .namespaces()?
            .into_iter()
            .filter(|(_, o)| o.as_deref() == Some(owner))
            .map(|(n, _)| n)
            .collect();
        Ok(engine
            .attachments()?
            .into_iter()
            .filter(|s| {
                s.owner.as_deref() == Some(owner) || namespaces.contains(&s.attachment.target)
            })
            .map(|s| Ours {
                target: s.attachment.target,
                network: s.attachment.network,
                mac: s.attachment.mac,
            })
            .collect())
    }

    /// What keeps `owner`'s networks from going: attachments and rules
    /// that are not the file's.
    fn check_down(&self, engine: &Engine, owner: &str, ours: &[Ours]) -> Result<Vec<String>> {
        let mine = |o: &Option<String>| o.as_deref() == Some(owner);
        let networks: Vec<String> = engine
            .networks()?
            .into_iter()
            .filter(|n| mine(&n.owner))
            .map(|n| n.network.name)
            .collect();
        let mut blockers = Vec::new();
        for a in engine.attachments()? {
            let a = a.attachment;
            let a_owned = ours
                .iter()
                .any(|o| o.target == a.target && o.network == a.network);
            if networks.contains(&a.network) && !a_owned {
                blockers.push(format!(
                    "{} is attached to network `{}` and is not this file's; detach it first",
                    a.target, a.network
                ));
            }
        }
        for p in engine.policies()? {
            if !mine(&p.owner)
                && let Some(n) = networks.iter().find(|n| p.policy.names_network(n))
            {
                blockers.push(format!(
                    "rule {} ({}) names network `{n}` and is not this file's; remove it first",
                    p.id, p.policy
                ));
            }
        }
        Ok(blockers)
    }
}

/// A vxlan network: the cluster's, not this host's alone.
fn is_cluster_network(n: &NetworkSpec) -> bool {
    n.driver == "vxlan"
}

/// How errors name an `[[attach]]` entry.
fn attach_entry(i: usize, a: &AttachSpec) -> String {
    format!("[[attach]] #{} `{}` -> `{}`", i + 1, a.target, a.network)
}

/// What `up` and `down` work with.
struct Host<'a, 'd> {
    engine: &'a mut Engine,
    /// This host's daemon, when one serves it.
    daemon: &'a Daemon<'d>,
    /// The store of the file's `[cluster]` table.
    store: Option<&'a ClusterStore>,
}

/// What `up` found out before changing anything.
struct Plan {
    /// A daemon serves this host: attachments go through it.
    through_daemon: bool,
}

/// An attachment of the file's on this host.
struct Ours {
    target: String,
    network: String,
    mac: Mac,
}

/// Something one `up` run did, to take back if the run fails.
enum Made {
    ClusterNetwork(String),
    Network(String),
    Namespace(String),
    Attachment { target: String, network: String },
    HostRoute(RouteSpec),
    Policy(i64),
    ClusterRule(i64),
}

impl Made {
    fn undo(&self, host: &mut Host) -> String {
        let engine = &mut *host.engine;
        let (what, result) = match self {
            Made::ClusterNetwork(n) => (
                format!("remove network {n} from the cluster"),
                host.store
                    .ok_or_else(|| Error::Conflict("no cluster store".into()))
                    .and_then(|s| cluster::undefine(s, n)),
            ),
            Made::Network(n) => (
                format!("remove network {n}"),
                engine.network_rm(n, true).map(drop),
            ),
            Made::Namespace(n) => (format!("delete namespace {n}"), engine.namespace_delete(n)),
            // Through the daemon if it made it.
            Made::Attachment { target, network } => (
                format!("detach {target} from {network}"),
                crate::cli::detach_from(host.daemon, target, Some(network)).map(drop),
            ),
            Made::HostRoute(r) => (
                format!("remove host route {r}"),
                engine.host_route_rm(&r.dest).map(drop),
            ),
            Made::Policy(id) => (format!("remove rule {id}"), engine.policy_rm(&[*id])),
            Made::ClusterRule(id) => (
                format!("remove cluster rule {id}"),
                host.store
                    .ok_or_else(|| Error::Conflict("no cluster store".into()))
                    .and_then(|s| s.call(async |client| s.remove_policies(client, &[*id]).await)),
            ),
        };
        match result {
            Ok(()) => what,
            Err(e) => format!("FAILED to {what}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        Topology::parse(text, "t.toml", "t")
            .map(|_| ())
            .expect_err("refused")
            .to_string()
    }

    const T1: &str = r#"
[[network]]
name = "t1"
driver = "vxlan"
vni = 4100
subnet = ["10.100.0.0/16"]
"#;

    const CLUSTER: &str = r#"
[cluster]
store = "etcd://10.250.0.10:2379"
"#;

    #[test]
    fn a_cluster_file_parses_with_its_table_networks_and_rules() {
        let text = format!(
            "{CLUSTER}name = \"prod\"\nca = \"ca.pem\"\n\n[[cluster.policy]]\nscope = \"t1\"\naction = \"deny\"\nfrom = \"10.9.0.0/16\"\n{T1}"
        );
        // `name` after the table's store is the cluster's, not the file's.
        let (topo, owner) = Topology::parse(&text, "t.toml", "t").unwrap();
        assert_eq!(owner, "topology:t");
        let c = topo.cluster.as_ref().unwrap();
        assert_eq!(c.store.as_deref(), Some("etcd://10.250.0.10:2379"));
        assert_eq!(c.name, "prod");
        assert_eq!(c.ca.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(c.policy.len(), 1);
        assert_eq!(c.policy[0].scope, "t1");
        assert_eq!(topo.cluster_networks().count(), 1);
        let (topo, _) = Topology::parse(&format!("{CLUSTER}{T1}"), "t.toml", "t").unwrap();
        assert_eq!(topo.cluster.unwrap().name, "default");
    }

    #[test]
    fn a_vxlan_network_needs_the_cluster_table() {
        let err = refused(T1);
        assert!(
            err.contains("[[network]] #1 `t1`") && err.contains("[cluster] store"),
            "{err}"
        );
    }

    #[test]
    fn the_cluster_table_is_checked_by_key() {
        let err = refused(&format!("{CLUSTER}stor = \"x\"\n{T1}"));
        assert!(err.contains("unknown field `stor`"), "{err}");
        let err = refused(&format!("[cluster]\nname = \"prod\"\n{T1}"));
        assert!(err.contains("[cluster] store: missing"), "{err}");
        let err = refused(&format!("[cluster]\nstore = \"consul://x:1\"\n{T1}"));
        assert!(err.contains("[cluster] store `consul://x:1`"), "{err}");
        let err = refused(&format!("{CLUSTER}name = \"a/b\"\n{T1}"));
        assert!(err.contains("[cluster] name `a/b`"), "{err}");
        let err = refused(&format!(
            "{CLUSTER}\n[[cluster.policy]]\nscope = \"t1\"\naction = \"allow\"\nsource = \"x\"\n{T1}"
        ));
        assert!(err.contains("unknown field `source`"), "{err}");
    }

    #[test]
    fn a_cluster_network_is_checked_as_a_host_makes_it_and_against_the_others() {
        let err = refused(&format!("{CLUSTER}{T1}vtep = \"10.0.0.1\"\n"));
        assert!(err.contains("[[network]] #1 `t1`: vtep"), "{err}");
        let err = refused(&format!("{CLUSTER}{}", T1.replace("4100", "0")));
        assert!(
            err.contains("[[network]] #1 `t1`") && err.contains("VNI"),
            "{err}"
        );
        let err = refused(&format!(
            "{CLUSTER}{T1}\n[[network]]\nname = \"lan\"\nsubnet = [\"10.100.1.0/24\"]\n"
        ));
        assert!(
            err.contains("[[network]] #2 `lan`") && err.contains("overlaps"),
            "{err}"
        );
    }

    #[test]
    fn cluster_option_errors_are_said_with_the_tables_keys() {
        let e = in_file_words_of(Error::invalid(
            "--cluster-cert",
            "c.pem",
            "needs --cluster-key (the certificate's private key)",
        ));
        assert_eq!(
            e,
            "[cluster] cert `c.pem`: needs [cluster] key (the certificate's private key)"
        );
        let e = in_file_words_of(Error::Cluster {
            store: "https://e:2379".into(),
            reason: "connect: UnknownIssuer (name its CA with --cluster-ca)".into(),
        });
        assert!(e.ends_with("(name its CA with [cluster] ca)"), "{e}");
    }

    #[test]
    fn the_cluster_example_parses() {
        let text = include_str!("../examples/cluster.toml");
        let (topo, owner) = Topology::parse(text, "cluster.toml", "cluster").unwrap();
        assert_eq!(owner, "topology:shop");
        assert_eq!(topo.cluster_networks().count(), 2);
        assert_eq!(topo.cluster.unwrap().policy.len(), 1);
    }

    fn in_file_words_of(e: Error) -> String {
        cluster::in_file_words(e).to_string()
    }
}
