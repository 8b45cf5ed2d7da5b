//! Docker's networks and endpoints on plumb's remote driver, as plumb
//! networks and staged attachments. Docker's CreateNetwork does not say the
//! network's name: the network is recorded then (its options checked
//! against every plumb network), and made once the daemon has asked Docker
//! its name ([`Engine::name_docker_network`]).

use super::*;
use crate::model::{AttachSpec, NetworkSpec};
use crate::store::docker::{self as records, DockerNetwork, Endpoint};

/// The owner tag of a plumb network made for Docker network `id`.
fn owner_of(id: &str) -> String {
    format!("docker-network:{id}")
}

impl Engine {
    /// Record Docker network `id` as `spec` asks, refusing what `plumb
    /// network create` would refuse now (a bad option, a subnet that
    /// overlaps another network's, a parent that is taken).
    pub fn docker_network_create(&mut self, id: &str, spec: &NetworkSpec) -> Result<()> {
        let net = spec.validate()?;
        self.store.record(|tx| {
            for other in &store::networks(tx)? {
                check_conflicts(&net, &other.network)?;
            }
            // Docker's networks not made yet (their names not known) too.
            for other in records::networks(tx)? {
                if other.name.is_none()
                    && other.id != id
                    && let Ok(n) = other.spec.validate()
                {
                    check_conflicts(&net, &n)?;
                }
            }
            records::insert_network(
                tx,
                &DockerNetwork {
                    id: id.to_string(),
                    name: None,
                    spec: spec.clone(),
                },
            )
        })
    }

    /// Record Docker network `id` as cluster network `name`, which this
    /// host's daemon made: Docker's containers join it, and removing it
    /// from Docker leaves it to the cluster.
    pub fn docker_network_on_cluster(&mut self, id: &str, name: &str) -> Result<()> {
        let net = match store::get_network(self.store.read(), name)? {
            Some(n) if n.network.bridge().is_some_and(|b| b.overlay.is_some()) => n.network,
            _ => {
                return Err(Error::invalid(
                    "-o cluster-network",
                    name,
                    "this host has no cluster network of that name (define it with `plumb network create NAME --driver vxlan … --cluster-store …`; the daemon makes it)",
                ));
            }
        };
        if let Some(other) = records::network_named(self.store.read(), name)? {
            if other == id {
                return Ok(());
            }
            return Err(Error::invalid(
                "-o cluster-network",
                name,
                format!("is Docker network {other} already"),
            ));
        }
        self.store.write(|tx| {
            records::insert_network(
                tx,
                &DockerNetwork {
                    id: id.to_string(),
                    name: Some(net.name.clone()),
                    spec: NetworkSpec {
                        name: net.name.clone(),
                        driver: "vxlan".into(),
                        ..Default::default()
                    },
                },
            )
        })
    }

    pub fn docker_network(&self, id: &str) -> Result<Option<DockerNetwork>> {
        records::network(self.store.read(), id)
    }

    /// Docker's networks that are not plumb networks yet.
    pub fn unnamed_docker_networks(&self) -> Result<Vec<String>> {
        Ok(records::networks(self.store.read())?
            .into_iter()
            .filter(|n| n.name.is_none())
            .map(|n| n.id)
            .collect())
    }

    /// Make Docker network `id` the plumb network `name` (Docker's name for
    /// it; with its ID's first digits when a plumb network has that name
    /// already). The plumb network's name is returned.
    pub fn name_docker_network(&mut self, id: &str, name: &str) -> Result<String> {
        let Some(mut dn) = records::network(self.store.read(), id)? else {
            return Err(Error::Conflict(format!(
                "Docker network {id} is not plumb's"
            )));
        };
        if let Some(n) = dn.name {
            return Ok(n);
        }
        let owner = owner_of(id);
        let ours = |e: &Engine, n: &str| -> Result<Option<bool>> {
            Ok(store::get_network(e.store.read(), n)?
                .map(|s| s.owner.as_deref() == Some(owner.as_str())))
        };
        let mut chosen = name.to_string();
        if crate::model::validate_name("network", &chosen).is_err()
            || ours(self, &chosen)? == Some(false)
        {
            chosen = format!("docker-{}", crate::model::short_docker_id(id));
        }
        // A daemon killed after the create and before the record keeps a
        // network that is this one's.
        if ours(self, &chosen)? != Some(true) {
            dn.spec.name = chosen.clone();
            self.network_create(&dn.spec, Some(&owner))?;
        }
        dn.name = Some(chosen.clone());
        self.store.write(|tx| records::insert_network(tx, &dn))?;
        Ok(chosen)
    }

    /// Docker removes network `id`: the plumb network goes, unless plumb's
    /// own attachments or rules are on it. Docker does not take no for an
    /// answer (dockerd 20.10 forgets the network whatever its driver says):
    /// the plumb network then stays as plumb's alone, and the error says
    /// why, for Docker's log and plumb's.
    pub fn docker_network_delete(&mut self, id: &str) -> Result<()> {
        let Some(dn) = records::network(self.store.read(), id)? else {
            return Ok(());
        };
        // Endpoints Docker left (their containers died with it) go first.
        for e in records::endpoints_of(self.store.read(), id)? {
            self.docker_endpoint_delete(&e.id)?;
        }
        // A network Docker did not make (a cluster's) stays as it is.
        let made_for_docker = match &dn.name {
            Some(name) => store::get_network(self.store.read(), name)?
                .is_some_and(|n| n.owner.as_deref() == Some(owner_of(id).as_str())),
            None => false,
        };
        let kept = match &dn.name {
            Some(name) if made_for_docker => self.still_used(name)?,
            _ => None,
        };
        // Docker's no more: what is left of it is plumb's alone.
        self.store.write(|tx| records::delete_network(tx, id))?;
        if !made_for_docker {
            return Ok(());
        }
        if kept.is_none()
            && let Some(name) = &dn.name
            && store::get_network(self.store.read(), name)?.is_some()
        {
            self.network_rm(name, false)?;
        }
        match kept {
            Some(why) => Err(Error::Conflict(why)),
            None => Ok(()),
        }
    }

    /// Why plumb network `name` stays when Docker removes it, if it does:
    /// what `plumb network rm` would refuse, said for Docker's user.
    fn still_used(&self, name: &str) -> Result<Option<String>> {
        let attached: Vec<String> = store::attachments_of_network(self.store.read(), name)?
            .iter()
            .map(|a| a.attachment.shown_target())
            .collect();
        if !attached.is_empty() {
            return Ok(Some(format!(
                "network `{name}` stays a plumb network: plumb attachments are on it ({}); \
                 `plumb detach` them, then `plumb network rm {name}`",
                attached.join(", ")
            )));
        }
        let naming: Vec<String> = store::policies(self.store.read())?
            .into_iter()
            .filter(|p| p.policy.names_network(name))
            .map(|p| p.id.to_string())
            .collect();
        if !naming.is_empty() {
            return Ok(Some(format!(
                "network `{name}` stays a plumb network: plumb policy rules {} name it; \
                 `plumb policy rm {}`, then `plumb network rm {name}`",
                naming.join(", "),
                naming.join(" ")
            )));
        }
        Ok(None)
    }

    /// Docker's endpoint `endpoint` on plumb network `network` (Docker's
    /// `network_id`): its attachment staged on the host.
    pub fn docker_endpoint_create(
        &mut self,
        endpoint: &str,
        network_id: &str,
        spec: &AttachSpec,
    ) -> Result<Attachment> {
        if let Some(e) = records::endpoint(self.store.read(), endpoint)?
            && let Some(host_ifname) = &e.host_ifname
            && let Some(a) = store::attachment(self.store.read(), host_ifname)?
        {
            return Ok(a);
        }
        let req = spec.validate()?;
        let net = store::require_network(self.store.read(), &req.network)?.network;
        if let Some(mac) = req.mac
            && !kinds::of(&net.kind).own_mac()
        {
            return Err(Error::invalid(
                "--mac",
                mac,
                format!(
                    "network `{}` is ipvlan: its containers have their parent's MAC",
                    net.name
                ),
            ));
        }
        let record = |e: &mut Engine, host_ifname: Option<String>| {
            e.store.write(|tx| {
                records::insert_endpoint(
                    tx,
                    &Endpoint {
                        id: endpoint.to_string(),
                        network_id: network_id.to_string(),
                        spec: spec.clone(),
                        host_ifname,
                        sandbox: None,
                    },
                )
            })
        };
        // Recorded first: a daemon killed in the stage leaves an endpoint
        // that Docker's DeleteEndpoint finds.
        let planned = names_of_staged(self, &req.network, endpoint)?;
        record(self, planned.clone())?;
        match self.stage(endpoint, &req) {
            Ok(a) if planned.as_ref() == Some(&a.host_ifname) => Ok(a),
            Ok(a) => {
                record(self, Some(a.host_ifname.clone()))?;
                Ok(a)
            }
            Err(e) => {
                let _ = self
                    .store
                    .write(|tx| records::delete_endpoint(tx, endpoint));
                Err(e)
            }
        }
    }

    /// Docker's endpoint `endpoint`, with its attachment if made.
    pub fn docker_endpoint(
        &self,
        endpoint: &str,
    ) -> Result<Option<(Endpoint, Option<Attachment>)>> {
        records::endpoint(self.store.read(), endpoint)?
            .map(|e| self.with_attachment(e))
            .transpose()
    }

    fn with_attachment(&self, e: Endpoint) -> Result<(Endpoint, Option<Attachment>)> {
        let a = match &e.host_ifname {
            Some(h) => store::attachment(self.store.read(), h)?,
            None => None,
        };
        Ok((e, a))
    }

    /// Docker joined endpoint `endpoint` to the sandbox at `sandbox` (its
    /// interface goes there); Leave clears it ([`Engine::unstage`]).
    pub fn join_endpoint(&mut self, endpoint: &str, sandbox: &str) -> Result<()> {
        self.store
            .write(|tx| records::set_sandbox(tx, endpoint, Some(sandbox)))
    }

    /// Every Docker endpoint with its attachment, if made.
    pub fn docker_endpoints(&self) -> Result<Vec<(Endpoint, Option<Attachment>)>> {
        records::endpoints(self.store.read())?
            .into_iter()
            .map(|e| self.with_attachment(e))
            .collect()
    }

    /// The attachments of `target` that `plumb detach` takes: not Docker's
    /// endpoints, which Docker removes.
    pub fn detachable_of(&self, target: &str) -> Result<Vec<StoredAttachment>> {
        let mut ours = Vec::new();
        for s in self.attachments_of(target)? {
            if !self.is_docker_endpoint(&s.attachment.host_ifname)? {
                ours.push(s);
            }
        }
        Ok(ours)
    }

    /// Whether the interfaces of network `name` have MACs of their own
    /// (Docker sets the one it is told on the interface).
    pub fn network_has_own_macs(&self, name: &str) -> Result<bool> {
        let net = store::require_network(self.store.read(), name)?.network;
        Ok(kinds::of(&net.kind).own_mac())
    }

    /// Whether attachment `host_ifname` is a Docker endpoint's (Docker
    /// removes it, not plumb's recovery).
    pub fn is_docker_endpoint(&self, host_ifname: &str) -> Result<bool> {
        records::is_endpoint(self.store.read(), host_ifname)
    }

    /// Docker removes endpoint `endpoint`: its attachment goes, whatever of
    /// it is left. Removing one that is gone succeeds.
    pub fn docker_endpoint_delete(&mut self, endpoint: &str) -> Result<()> {
        if let Some((_, Some(a))) = self.docker_endpoint(endpoint)? {
            let net = store::require_network(self.store.read(), &a.network)?.network;
            self.detach_attachment(&a)?;
            // A macvlan or ipvlan recorded in its container that Docker
            // moved back to the host anyway (a Leave that failed or came
            // while it was being finished) is there under its staged name.
            let driver = kinds::of(&net.kind);
            if !driver.has_host_port() && driver.device().is_none() {
                let staged = names::staged_name(endpoint);
                self.host
                    .delete_link_by_name(&staged)
                    .map_err(|e| Error::kernel(format!("delete {staged}"), e))?;
            }
        }
        self.store
            .write(|tx| records::delete_endpoint(tx, endpoint))
    }
}

impl Engine {
    /// Docker's container `id` (`name`, first process `pid`) has these
    /// endpoints: those on plumb networks become its attachments (target
    /// `docker:ID`), found through its process, and a DHCP one not yet
    /// leased asks as the container. Docker still owns them: they go with
    /// Docker's Leave and DeleteEndpoint, not with the container's death or
    /// `plumb detach`.
    pub fn adopt_endpoints(
        &mut self,
        id: &str,
        name: &str,
        pid: u32,
        endpoints: &[String],
    ) -> Result<()> {
        let container = crate::model::ContainerRef {
            id: id.to_string(),
            name: name.to_string(),
        };
        let process = crate::model::NsProcess::of(pid);
        for endpoint in endpoints {
            let Some((_, Some(a))) = self.docker_endpoint(endpoint)? else {
                continue;
            };
            if a.container.as_ref() == Some(&container) {
                continue;
            }
            self.store.write(|tx| {
                // As it is now: its finish may have been recorded meanwhile.
                let Some(mut now) = store::attachment(tx, &a.host_ifname)? else {
                    return Ok(());
                };
                // Known by the container from now on (`plumb inspect
                // docker:NAME`), found through its process.
                now.target = format!("docker:{id}");
                now.container = Some(container.clone());
                now.process = process;
                // A DHCP client that has no lease yet is the container's:
                // the LAN's server gives it the same lease at each start.
                if let Some(b) = now.dhcp.as_mut()
                    && b.lease.is_none()
                {
                    let net = store::require_network(tx, &now.network)?.network;
                    let target = format!("docker:{id}");
                    let hostname = names::container_hostname(name);
                    super::set_dhcp_identity(b, &net, &target, hostname);
                }
                store::update_attachment(tx, &now)
            })?;
        }
        Ok(())
    }
}

/// The host name of the attachment [`Engine::stage`] makes for `endpoint`
/// on `network`. A host device's is the device's, which another endpoint
/// may be trying to take: it is recorded once this one has it (None).
fn names_of_staged(e: &Engine, network: &str, endpoint: &str) -> Result<Option<String>> {
    let net = store::require_network(e.store.read(), network)?.network;
    if kinds::of(&net.kind).device().is_some() {
        return Ok(None);
    }
    let netns = crate::model::staged_netns(endpoint);
    let ifname = kinds::staged_ifname(&net.kind, endpoint);
    Ok(Some(kinds::host_ifname(&net, &netns, &ifname)))
}
