//! Declarative topologies (`plumb up FILE` / `plumb down FILE`): networks,
//! lab namespaces, attachments, host routes and firewall rules. Everything `up` creates is
//! tagged with the topology's owner tag, so `down` removes exactly that and
//! a second `up` finds it all in place and changes nothing.

use std::path::Path;

use serde::Deserialize;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{AttachSpec, NetworkSpec, RouteSpec, validate_name};
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
        // Each network, and each against the file's others: a second one
        // that could never be made is refused before the first is.
        let mut networks: Vec<crate::model::Network> = Vec::new();
        for (i, n) in self.network.iter().enumerate() {
            let at = || format!("[[network]] #{} `{}`", i + 1, n.name);
            let net = n.validate().map_err(|e| ctx(at(), e))?;
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
            a.validate().map_err(|e| {
                ctx(
                    format!("[[attach]] #{} `{}` -> `{}`", i + 1, a.target, a.network),
                    e,
                )
            })?;
            crate::target::Target::parse(&a.target)
                .map_err(|e| ctx(format!("[[attach]] #{}", i + 1), e))?;
        }
        for (i, r) in self.host_route.iter().enumerate() {
            RouteSpec::parse("to/via", &format!("{} via {}", r.to, r.via))
                .map_err(|e| ctx(format!("[[host_route]] #{}", i + 1), e))?;
        }
        Ok(())
    }

    /// Bring the topology up; on failure, take back what this run made.
    pub fn up(&self, engine: &mut Engine, owner: &str) -> Result<Summary> {
        let mut made: Vec<Made> = Vec::new();
        match self.apply(engine, owner, &mut made) {
            Ok(summary) => Ok(summary),
            Err(e) => {
                let undone: Vec<String> = made.iter().rev().map(|m| m.undo(engine)).collect();
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

    fn apply(&self, engine: &mut Engine, owner: &str, made: &mut Vec<Made>) -> Result<Summary> {
        let mut summary = Summary::default();
        for spec in &self.network {
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
        for spec in &self.attach {
            let attached = engine.attachments_of(&spec.target)?;
            if attached
                .iter()
                .any(|a| a.attachment.network == spec.network)
            {
                continue;
            }
            let req = spec.validate()?;
            let a = engine.attach(&spec.target, &req, Some(owner))?;
            made.push(Made::Attachment(spec.target.clone(), spec.network.clone()));
            let addrs: Vec<String> = a.addresses.iter().map(|x| x.to_string()).collect();
            summary.changes.push(format!(
                "attached {} to {} as {} ({})",
                spec.target,
                spec.network,
                a.ifname,
                addrs.join(", ")
            ));
        }
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
        Ok(summary)
    }

    /// Remove everything tagged with `owner`, in reverse order of creation,
    /// or nothing: what would stop it half way (another's attachment or
    /// rule on one of its networks) is found first.
    pub fn down(engine: &mut Engine, owner: &str) -> Result<Summary> {
        Self::check_down(engine, owner)?;
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
        for a in engine
            .attachments()?
            .into_iter()
            .filter(|a| a.owner.as_deref() == Some(owner))
        {
            match engine.detach(&a.attachment.target, Some(&a.attachment.network)) {
                Ok(_) => summary.changes.push(format!(
                    "detached {} from {}",
                    a.attachment.target, a.attachment.network
                )),
                Err(e) => errors.push(e.to_string()),
            }
        }
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
        if errors.is_empty() {
            Ok(summary)
        } else {
            Err(Error::Conflict(errors.join("\n")))
        }
    }
}

impl Topology {
    /// What keeps `owner`'s networks from going: attachments and rules
    /// that are not the file's (those of the namespaces it made go with
    /// them).
    fn check_down(engine: &mut Engine, owner: &str) -> Result<()> {
        let mine = |o: &Option<String>| o.as_deref() == Some(owner);
        let networks: Vec<String> = engine
            .networks()?
            .into_iter()
            .filter(|n| mine(&n.owner))
            .map(|n| n.network.name)
            .collect();
        let namespaces: Vec<String> = engine
            .namespaces()?
            .into_iter()
            .filter(|(_, o)| mine(o))
            .map(|(n, _)| n)
            .collect();
        let mut blockers = Vec::new();
        for a in engine.attachments()? {
            let a_owned = mine(&a.owner) || namespaces.contains(&a.attachment.target);
            if networks.contains(&a.attachment.network) && !a_owned {
                blockers.push(format!(
                    "{} is attached to network `{}` and is not this file's; detach it first",
                    a.attachment.target, a.attachment.network
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
        if blockers.is_empty() {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "nothing was removed:\n  {}",
                blockers.join("\n  ")
            )))
        }
    }
}

/// Something one `up` run created, to take back if the run fails.
enum Made {
    Network(String),
    Namespace(String),
    Attachment(String, String),
    HostRoute(RouteSpec),
    Policy(i64),
}

impl Made {
    fn undo(&self, engine: &mut Engine) -> String {
        let (what, result) = match self {
            Made::Network(n) => (
                format!("remove network {n}"),
                engine.network_rm(n, true).map(drop),
            ),
            Made::Namespace(n) => (format!("delete namespace {n}"), engine.namespace_delete(n)),
            Made::Attachment(t, n) => (
                format!("detach {t} from {n}"),
                engine.detach(t, Some(n)).map(drop),
            ),
            Made::HostRoute(r) => (
                format!("remove host route {r}"),
                engine.host_route_rm(&r.dest).map(drop),
            ),
            Made::Policy(id) => (format!("remove rule {id}"), engine.policy_rm(&[*id])),
        };
        match result {
            Ok(()) => what,
            Err(e) => format!("FAILED to {what}: {e}"),
        }
    }
}
