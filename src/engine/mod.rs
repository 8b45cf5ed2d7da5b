//! The engine: one API for every front end. Each change runs under a store
//! write transaction (so parallel plumb processes serialize on it) and an
//! undo log (so a failure leaves the kernel as it was); the store commits
//! only after the kernel work succeeded.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use rusqlite::{Connection, Transaction};

use crate::driver::bridge::{self, HostState};
use crate::driver::{self, kinds, parent};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ipam::dhcp::Lease;
use crate::ipam::dhcp::v6::Lease6;
use crate::ipam::host_local;
use crate::model::{
    AttachRequest, Attachment, AttachmentEgress, BridgeMode, DefaultRoute, DhcpBinding, Egress,
    Ipam, LeaseState, Network, NetworkSpec, Publish, RateLimit, ReplacedRoute, RouteSpec, overlaps,
    validate_ifname,
};
use crate::names;
use crate::netlink::nftable::Edit;
use crate::netlink::{Netlink, NfFamily, NfNetlink};
use crate::netns::{self, NsHandle};
use crate::policy::antispoof;
use crate::policy::elements::{self, Element};
use crate::policy::legacy;
use crate::policy::ports::{self, Holds};
use crate::policy::{firewall, routing};
use crate::store::intent::{self, Action, Subject};
use crate::store::{self, HostRoute, Store, StoredAttachment, StoredNetwork};
use crate::target::{Opened, Target};
use crate::undo::UndoLog;

pub mod docker_ipam;
mod docker_networks;
mod egress;
pub use egress::EgressRequest;
mod host_shims;
mod overlay;
pub use overlay::free_in_block;
mod policy;
mod recover;
mod restore;
mod staged;
pub use recover::Recovery;
use recover::settled;
pub use restore::RestoreReport;
use staged::Placement;
pub use staged::arrived_in;

pub struct NetworkDetails {
    pub stored: StoredNetwork,
    pub host_state: HostState,
    pub routing: Option<routing::Allocation>,
    pub attachments: Vec<StoredAttachment>,
    /// The Docker network it is (plumb's Docker driver), and its endpoints.
    pub docker: Option<(String, Vec<store::docker::Endpoint>)>,
    /// A cluster network's address blocks, as this host last saw them.
    pub blocks: Vec<store::host_extras::Block>,
}

pub struct Engine {
    store: Store,
    host: Netlink,
    host_ns: NsHandle,
    /// The daemon's bound host ports, which publishing adds to; without
    /// it (a plumb on its own) ports are checked and not held.
    holds: Option<Arc<Mutex<Holds>>>,
}

impl Engine {
    pub fn open(state_dir: &Path) -> Result<Self> {
        let store = Store::open(state_dir)?;
        let host = Netlink::open().map_err(|e| Error::kernel("open netlink socket", e))?;
        let host_ns =
            NsHandle::current().map_err(|e| Error::io("open the host network namespace", e))?;
        Ok(Engine {
            store,
            host,
            host_ns,
            holds: None,
        })
    }

    /// Keep the host ports this engine publishes bound in `holds`.
    pub fn hold_ports_in(&mut self, holds: Arc<Mutex<Holds>>) {
        self.holds = Some(holds);
    }

    /// Hold exactly the host ports the store says are published; what
    /// could not be held, one line each.
    pub fn reconcile_port_holds(&self) -> Result<Vec<String>> {
        let Some(holds) = &self.holds else {
            return Ok(Vec::new());
        };
        let published: Vec<Publish> = store::published_attachments(self.store.read())?
            .into_iter()
            .flat_map(|a| a.publish)
            .collect();
        Ok(ports::lock(holds).reconcile(&published))
    }

    /// For an engine a long-lived process keeps: commits leave the WAL to
    /// grow until [`Engine::checkpoint_store`] (see [`Store::defer_checkpoints`]).
    pub fn defer_checkpoints(&mut self) {
        self.store.defer_checkpoints();
    }

    /// Checkpoint the store's WAL when it holds more than `above` bytes.
    pub fn checkpoint_store(&self, above: u64) -> Result<()> {
        self.store.checkpoint(above).map(drop)
    }

    /// Run a change: store transaction + undo log; commit both or neither.
    fn change<T>(
        &mut self,
        f: impl FnOnce(&Transaction, &mut Netlink, &mut UndoLog) -> Result<T>,
    ) -> Result<T> {
        let host = &mut self.host;
        let mut undo = UndoLog::default();
        match self.store.write(|tx| f(tx, host, &mut undo)) {
            Ok(v) => Ok(v),
            Err(e) => Err(undo.rollback(&mut self.host, e)),
        }
    }

    // ---- networks ----

    pub fn network_create(&mut self, spec: &NetworkSpec, owner: Option<&str>) -> Result<Network> {
        let net = spec.validate()?;
        self.recover_quietly();
        let holder = self.store.holder()?;
        let host = &mut self.host;
        // The intent: the network's record, its reserved addresses, its
        // routing table and what its driver will find and change on the
        // host, committed before the host is touched.
        let egress = self.store.record(|tx| {
            if store::get_network(tx, &net.name)?.is_some() {
                return Err(Error::NetworkExists(net.name.clone()));
            }
            for other in &store::networks(tx)? {
                check_conflicts(&net, &other.network)?;
            }
            store::insert_network(tx, &net, owner)?;
            for addr in &net.host_addresses {
                host_local::reserve(tx, &net, addr.addr(), "host", "gateway/host address")?;
            }
            for (key, ip) in &net.aux_addresses {
                host_local::reserve(
                    tx,
                    &net,
                    *ip,
                    &format!("aux:{key}"),
                    &format!("--aux-address {key}"),
                )?;
            }
            if let Some(p) = net.kind.parent()
                && p.vlan.is_some()
                && host
                    .link_by_name(&p.name)
                    .map_err(|e| Error::kernel(format!("look up parent {}", p.name), e))?
                    .is_none()
            {
                store::insert_vlan_link(tx, &p.name)?;
            }
            if let Some(state) = kinds::of(&net.kind).plan(host)? {
                store::set_host_state(tx, &net.name, &state)?;
            }
            let egress = match &net.egress {
                Some(_) => Some(routing::allocate(
                    tx,
                    host,
                    routing::Owner::Network(&net.name),
                )?),
                None => None,
            };
            intent::insert(tx, Subject::Network, &net.name, Action::Create, &holder)?;
            Ok(egress)
        })?;
        let mut undo = UndoLog::default();
        if let Err(e) = self.build_network(&net, egress, &mut undo) {
            let e = undo.rollback(&mut self.host, e);
            return Err(match self.finish_network_removal(&net.name) {
                Ok(_) => e,
                Err(f) => Error::Conflict(format!(
                    "{e}\n  and what is left of it stays until the next plumb command removes it: {f}"
                )),
            });
        }
        Ok(net)
    }

    /// The kernel's part of a network create, after its intent: parent,
    /// driver, egress routing; then plumb's firewall, written whole under
    /// the store's write lock (a rewrite then holds every attachment
    /// committed before it, and an attach adds its elements after its own
    /// commit).
    fn build_network(
        &mut self,
        net: &Network,
        egress: Option<routing::Allocation>,
        undo: &mut UndoLog,
    ) -> Result<()> {
        let host = &mut self.host;
        if let Some(p) = net.kind.parent() {
            parent::ensure(host, p, undo)?;
        }
        let state = kinds::of(&net.kind).create(host, net, undo)?;
        if let (Some(e), Some(a)) = (&net.egress, egress) {
            routing::install(host, &routing::network_sources(net), e, a, undo)?;
        }
        self.store.write(|tx| {
            if let Some(state) = &state {
                store::set_host_state(tx, &net.name, state)?;
            }
            firewall::sync(&firewall::Ruleset::load(tx)?)?;
            intent::delete(tx, Subject::Network, &net.name)
        })
    }

    pub fn network_rm(&mut self, name: &str, force: bool) -> Result<Vec<Attachment>> {
        self.recover_quietly();
        store::require_network(self.store.read(), name)?;
        if store::docker::network_named(self.store.read(), name)?.is_some() {
            return Err(Error::Conflict(format!(
                "network `{name}` is Docker's (made by plumb's Docker driver): `docker network rm {name}`"
            )));
        }
        let attached = store::attachments_of_network(self.store.read(), name)?;
        if !attached.is_empty() && !force {
            let list: Vec<String> = attached
                .iter()
                .map(|a| format!("{}:{}", a.attachment.target, a.attachment.ifname))
                .collect();
            return Err(Error::Conflict(format!(
                "network `{name}` has {} attachment(s) ({}); detach them or use --force",
                attached.len(),
                list.join(", ")
            )));
        }
        let naming: Vec<String> = store::policies(self.store.read())?
            .into_iter()
            .filter(|p| p.policy.names_network(name))
            .map(|p| p.id.to_string())
            .collect();
        if !naming.is_empty() && !force {
            return Err(Error::Conflict(format!(
                "network `{name}` is named by policy rule(s) {}; remove them (plumb policy rm {}) or use --force",
                naming.join(", "),
                naming.join(" ")
            )));
        }
        self.claim(Subject::Network, name, Action::Remove)?;
        let done = self.finish_network_removal(name);
        if let Err(e) = &done
            && store::get_network(self.store.read(), name)?.is_some()
        {
            tracing::debug!("network removal stopped: {e}");
            let _ = self
                .store
                .write(|tx| intent::delete(tx, Subject::Network, name));
        }
        done
    }

    /// Take a network away with everything on it, whatever of it is there
    /// (`network rm --force`, a failed create, and recovery of a create or
    /// a removal that stopped half way): its attachments, its host side
    /// as recorded (a bridge the user brought stays), its VLAN parent if
    /// plumb made it and no other network uses it, the policy rules naming
    /// it; its records and intent go in the last commit.
    fn finish_network_removal(&mut self, name: &str) -> Result<Vec<Attachment>> {
        let Some(stored) = store::get_network(self.store.read(), name)? else {
            self.store
                .write(|tx| intent::delete(tx, Subject::Network, name))?;
            return Ok(Vec::new());
        };
        let attached = store::attachments_of_network(self.store.read(), name)?;
        let mut errors = Vec::new();
        for a in &attached {
            if let Err(e) = self.detach_one(a) {
                errors.push(e.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(Error::Conflict(format!(
                "network `{name}` stays: its attachments could not all be detached: {}",
                errors.join("; ")
            )));
        }
        failpoint::hit("network removal: attachments detached");
        let state = store::host_state(self.store.read(), name)?;
        let table = store::route_table(self.store.read(), name)?;
        let net = &stored.network;
        if let (Some(e), Some((table, priority))) = (&net.egress, table) {
            let a = routing::Allocation { table, priority };
            errors.extend(
                routing::remove(&mut self.host, &routing::network_sources(net), e, a)
                    .into_iter()
                    .map(|e| e.to_string()),
            );
        }
        let mut removed = kinds::of(&net.kind).remove(&mut self.host, net, &state);
        // A VLAN plumb made goes with the last network on it.
        let vlan = net.kind.parent().map(|p| p.name.clone());
        let release_vlan = match &vlan {
            Some(v) => {
                store::is_vlan_link(self.store.read(), v)?
                    && !store::networks(self.store.read())?.iter().any(|n| {
                        n.network.name != name
                            && n.network.kind.parent().is_some_and(|p| &p.name == v)
                    })
            }
            None => false,
        };
        if let (true, Some(v)) = (release_vlan, &vlan)
            && let Err(e) = self.host.delete_link_by_name(v)
        {
            removed.push(Error::kernel(format!("delete VLAN {v}"), e));
        }
        errors.extend(removed.into_iter().map(|e| e.to_string()));
        failpoint::hit("network removal: host side removed");
        self.store.write(|tx| {
            for p in store::policies(tx)? {
                if p.policy.names_network(name) {
                    store::delete_policy(tx, p.id)?;
                }
            }
            store::delete_network(tx, name)?;
            if let (true, Some(v)) = (release_vlan, &vlan) {
                store::delete_vlan_link(tx, v)?;
            }
            firewall::sync(&firewall::Ruleset::load(tx)?)?;
            intent::delete(tx, Subject::Network, name)
        })?;
        if !errors.is_empty() {
            return Err(Error::Conflict(format!(
                "network `{name}` removed from the store, but: {}",
                errors.join("; ")
            )));
        }
        Ok(attached.into_iter().map(|a| a.attachment).collect())
    }

    pub fn networks(&self) -> Result<Vec<StoredNetwork>> {
        store::networks(self.store.read())
    }

    pub fn network(&self, name: &str) -> Result<StoredNetwork> {
        store::require_network(self.store.read(), name)
    }

    /// A network with what its driver did on the host, its routing table
    /// and its attachments.
    pub fn network_details(&self, name: &str) -> Result<NetworkDetails> {
        let conn = self.store.read();
        Ok(NetworkDetails {
            stored: store::require_network(conn, name)?,
            host_state: store::host_state(conn, name)?,
            routing: store::route_table(conn, name)?
                .map(|(table, priority)| routing::Allocation { table, priority }),
            attachments: store::attachments_of_network(conn, name)?,
            docker: match store::docker::network_named(conn, name)? {
                Some(id) => {
                    let endpoints = store::docker::endpoints_of(conn, &id)?;
                    Some((id, endpoints))
                }
                None => None,
            },
            blocks: store::host_extras::cluster_blocks(conn, name)?,
        })
    }

    /// Write plumb's nftables state again when someone removed it (an
    /// `nft flush ruleset`, an `iptables -F`, Docker rebuilding its
    /// chains), and the legacy backend's accepts apart from it (a failure
    /// there, which may last, never makes the nftables tables be written
    /// again); true if it did.
    pub fn repair_firewall(&mut self) -> Result<bool> {
        // Looked at without the gate (twice a second, in the daemon): only
        // a repair takes it, and looks again under it.
        let wanted = self.wanted_firewall()?;
        if firewall::in_place(&wanted)? && legacy::accepts_in_place(&wanted.networks)? {
            return Ok(false);
        }
        self.as_repair(Self::repair_firewall_now)
    }

    /// What decides whether plumb's tables are wanted; the members of
    /// their sets (every attachment) are read only when one must be
    /// written.
    fn wanted_firewall(&self) -> Result<firewall::Ruleset> {
        let conn = self.store.read();
        Ok(firewall::Ruleset {
            networks: store::networks(conn)?
                .into_iter()
                .map(|n| n.network)
                .collect(),
            policies: store::policies(conn)?,
            egress: firewall::masquerading(conn)?,
            ..Default::default()
        })
    }

    fn repair_firewall_now(&mut self) -> Result<bool> {
        let wanted = self.wanted_firewall()?;
        let conn = self.store.read();
        let mut repaired = false;
        if !firewall::in_place(&wanted)? {
            firewall::sync_tables(&firewall::Ruleset::load(conn)?)?;
            repaired = true;
        }
        if !legacy::accepts_in_place(&wanted.networks)? {
            legacy::sync_accepts(&wanted.networks)?;
            repaired = true;
        }
        Ok(repaired)
    }

    /// Put back the egress routing of every network and attachment that
    /// has one (rules deleted, default routes flushed by an interface going
    /// down and up); what it repaired, one line each.
    pub fn repair_egress(&mut self) -> Result<Vec<String>> {
        self.as_repair(Self::repair_egress_now)
    }

    fn repair_egress_now(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        // Those a change is under way on are its maker's.
        let busy_networks = self.busy(Subject::Network)?;
        let busy_attachments = self.busy(Subject::Attachment)?;
        for n in store::networks(self.store.read())? {
            let net = n.network;
            if busy_networks.contains(&net.name) {
                continue;
            }
            if let (Some(e), Some((table, priority))) = (
                &net.egress,
                store::route_table(self.store.read(), &net.name)?,
            ) {
                let a = routing::Allocation { table, priority };
                let whose = format!("network {}", net.name);
                let sources = routing::network_sources(&net);
                done.extend(routing::repair(&mut self.host, &whose, &sources, e, a)?);
            }
        }
        for s in store::attachments_with_egress(self.store.read())? {
            let a = s.attachment;
            if busy_attachments.contains(&a.host_ifname) {
                continue;
            }
            if let Some(own) = &a.egress {
                let whose = format!("{} on {}", a.target, a.network);
                let sources = routing::attachment_sources(&a);
                done.extend(routing::repair(
                    &mut self.host,
                    &whose,
                    &sources,
                    &own.egress,
                    own.into(),
                )?);
            }
        }
        done.extend(self.repair_egress_rules()?);
        Ok(done)
    }

    // ---- attachments ----

    pub fn attach(
        &mut self,
        target: &str,
        req: &AttachRequest,
        owner: Option<&str>,
    ) -> Result<Attachment> {
        let opened = Target::parse(target)?.open()?;
        self.attach_link(Placement::Inside(opened), req, owner, Ipam::HostLocal)
    }

    /// [`Engine::attach`] to a target opened already (the daemon's, which
    /// knows a container's process from Docker's event).
    pub fn attach_opened(
        &mut self,
        opened: Opened,
        req: &AttachRequest,
        owner: Option<&str>,
    ) -> Result<Attachment> {
        self.attach_link(Placement::Inside(opened), req, owner, Ipam::HostLocal)
    }

    /// First half of a DHCP attach, for the daemon that runs the client
    /// next: the interface exists and is up, without addresses, and is
    /// recorded as acquiring (so a daemon killed now leaves a trace that its
    /// successor cleans up). [`Engine::apply_lease`] finishes it.
    pub fn attach_dhcp_link(
        &mut self,
        opened: Opened,
        req: &AttachRequest,
        owner: Option<&str>,
    ) -> Result<Attachment> {
        self.attach_link(Placement::Inside(opened), req, owner, Ipam::Dhcp)
    }

    fn attach_link(
        &mut self,
        placement: Placement,
        req: &AttachRequest,
        owner: Option<&str>,
        ipam: Ipam,
    ) -> Result<Attachment> {
        // A host device returns to the host: its undo needs the namespace.
        let host_ns = self
            .host_ns
            .try_clone()
            .map_err(|e| Error::io("keep the host namespace open", e))?;
        let (ns, target_name, container, process, staged) = match placement {
            Placement::Inside(Opened {
                ns,
                name,
                container,
                process,
            }) => (ns, name, container, process, None),
            Placement::Staged { endpoint } => {
                let ns = host_ns
                    .try_clone()
                    .map_err(|e| Error::io("keep the host namespace open", e))?;
                let target = crate::model::staged_target(&endpoint);
                (ns, target, None, None, Some(endpoint))
            }
        };
        tracing::debug!(target = %target_name, network = %req.network, "attach");
        if staged.is_none() && ns.same_as(&self.host_ns) {
            return Err(Error::Target {
                target: target_name,
                reason: "is the host's own network namespace".into(),
            });
        }
        // A staged interface has no namespace until it is moved.
        let (netns_id, netns_cookie) = match &staged {
            Some(e) => (crate::model::staged_netns(e), None),
            None => (ns.identity(), ns.cookie()),
        };
        // What a container's MAC follows: the container, which keeps it
        // across restarts (each a new namespace); an endpoint's, the
        // endpoint.
        let mac_key = match (&container, &staged) {
            (Some(c), _) => format!("docker:{}", c.id),
            (None, Some(_)) => target_name.clone(),
            (None, None) => netns_id.clone(),
        };
        // One socket inside the target serves the whole attach.
        let mut inner = Netlink::open_in(&ns)
            .map_err(|e| Error::kernel(format!("open netlink in target {target_name}"), e))?;
        self.recover_quietly();
        let holder = self.store.holder()?;
        let dir = self.store.dir.clone();
        let published_by_daemon = self.holds.is_some();
        let host = &mut self.host;
        // The intent: the whole attachment (names, MAC, addresses, host
        // ports, routing table) is decided and committed before the kernel
        // is touched.
        let (net, mut attachment) = self.store.record(|tx| {
            let net = store::require_network(tx, &req.network)?.network;
            settled(tx, &dir, Subject::Network, &net.name)?;
            check_ipam(&net, req, ipam)?;
            // A runtime's aliases are kept whatever the network (Podman
            // gives every container some); a user's would do nothing.
            if !net.serve_dns
                && req.spec.cni_container.is_none()
                && let Some(a) = req.aliases.first()
            {
                return Err(Error::invalid(
                    "--alias",
                    a,
                    format!(
                        "network `{}` has no DNS of plumb's (create it with --serve-dns)",
                        net.name
                    ),
                ));
            }
            let existing = match staged {
                Some(_) => Vec::new(),
                None => store::attachments_of_target(tx, Some(&netns_id), &target_name)?,
            };
            if let Some(a) = existing.iter().find(|a| a.attachment.network == net.name) {
                return Err(Error::Conflict(format!(
                    "target `{target_name}` is already attached to network `{}` as {}",
                    net.name, a.attachment.ifname
                )));
            }
            let ifname = match (&staged, &req.ifname) {
                // A host device is its own staged interface.
                (Some(_), _) if let Some(d) = kinds::of(&net.kind).device() => d.to_string(),
                (Some(endpoint), _) => {
                    let n = kinds::staged_ifname(&net.kind, endpoint);
                    let taken = inner
                        .link_by_name(&n)
                        .map_err(|e| Error::kernel("look up links on the host", e))?;
                    if taken.is_some() {
                        return Err(Error::Conflict(format!(
                            "interface {n} of endpoint {endpoint} is already on the host"
                        )));
                    }
                    n
                }
                (None, Some(n)) => {
                    // Checked here for every driver: moving an interface in
                    // under a taken name moves it and then fails the rename.
                    let in_kernel = inner
                        .link_by_name(n)
                        .map_err(|e| Error::kernel("look up links in the target", e))?;
                    if in_kernel.is_some() || existing.iter().any(|a| &a.attachment.ifname == n) {
                        return Err(Error::invalid(
                            "--ifname",
                            n,
                            format!("is already used in target `{target_name}`"),
                        ));
                    }
                    n.clone()
                }
                (None, None) => free_ifname(&mut inner, &existing)?,
            };
            validate_ifname("--ifname", &ifname)?;
            // Who the LAN's DHCP server sees: a CNI runtime's container is
            // the same client whatever namespace each of its starts gets.
            let identity = match &req.spec.cni_container {
                Some(id) => format!("cni:{id}/{ifname}"),
                None => target_name.clone(),
            };
            let mut attachment = Attachment {
                network: net.name.clone(),
                target: target_name.clone(),
                netns: netns_id.clone(),
                netns_cookie,
                host_ifname: kinds::host_ifname(&net, &netns_id, &ifname),
                mac: req.mac.unwrap_or(crate::model::Mac(match ipam {
                    Ipam::HostLocal => names::container_mac(&net.name, &mac_key, &ifname),
                    Ipam::Dhcp => names::dhcp_mac(&names::host_identity(), &net.name, &identity),
                })),
                mtu: req.mtu.or(net.mtu).unwrap_or(1500),
                ifname,
                addresses: Vec::new(),
                gateways: Vec::new(),
                routes: net
                    .routes
                    .iter()
                    .chain(req.routes.iter())
                    .cloned()
                    .collect(),
                default_route: req.default_route,
                device_default_route: false,
                replaced_defaults: match req.default_route {
                    DefaultRoute::Replace if staged.is_none() => default_routes(&mut inner)?,
                    _ => Vec::new(),
                },
                host_addresses: Vec::new(),
                dhcp: (ipam == Ipam::Dhcp).then(|| {
                    // A container is known on the LAN by its name (a
                    // staged one's, once known: see set_dhcp_identity).
                    let hostname = match &container {
                        Some(c) => names::container_hostname(&c.name),
                        None => names::dhcp_hostname(&target_name),
                    };
                    dhcp_binding(&net, req, &identity, hostname)
                }),
                publish: req.publish.clone(),
                rate: req.rate,
                labels: req.labels.clone(),
                allow_spoofing: req.allow_spoofing,
                egress: None,
                container: container.clone(),
                process,
                cni: req
                    .spec
                    .cni_container
                    .clone()
                    .map(|container_id| crate::model::CniRef { container_id }),
                names: dns_names(req, &target_name, container.as_ref()),
            };
            let holder_key = store::attachment_owner(&attachment.host_ifname);
            if ipam == Ipam::HostLocal {
                // A container started again gets the addresses it had.
                let parked = match &container {
                    Some(c) if req.ips.is_empty() => {
                        store::adopt_parked(tx, &c.id, &net.name, &holder_key)?
                    }
                    Some(c) => {
                        store::release_parked(tx, &c.id, Some(&net.name))?;
                        Vec::new()
                    }
                    None => Vec::new(),
                };
                attachment.addresses = assign_addresses(tx, &net, &req.ips, &parked, &holder_key)?;
                attachment.gateways = gateways_for(&net, &attachment.addresses);
                if req.mac.is_none()
                    && let Some(mac) = kinds::of(&net.kind).mac_for(&attachment.addresses)
                {
                    attachment.mac = mac;
                }
            }
            let driver = kinds::of(&net.kind);
            if let Some(device) = driver.device()
                && let Some(holder) = store::attachments_of_network(tx, &net.name)?.first()
            {
                return Err(Error::Conflict(format!(
                    "device {device} is already attached to target `{}`",
                    holder.attachment.target
                )));
            }
            driver.inspect(host, &mut attachment)?;
            if !attachment.addresses.is_empty() {
                check_routes(&attachment)?;
            }
            store::insert_attachment(tx, &attachment, owner)?;
            if !attachment.publish.is_empty() {
                reserve_ports(tx, &net, &attachment, published_by_daemon)?;
            }
            if let Some(e) = &req.egress {
                attachment.egress = Some(allocate_egress(tx, host, &net, &attachment, e)?);
                store::update_attachment(tx, &attachment)?;
            }
            intent::insert(
                tx,
                Subject::Attachment,
                &attachment.host_ifname,
                Action::Create,
                &holder,
            )?;
            tracing::debug!(ifname = %attachment.ifname, "addresses reserved");
            Ok((net, attachment))
        })?;
        let mut undo = UndoLog::default();
        let planned = attachment.clone();
        let done = self
            .plug_attachment(
                &net,
                staged.is_none().then_some((&ns, &mut inner)),
                &host_ns,
                &mut attachment,
                &mut undo,
            )
            .and_then(|()| {
                self.store.write(|tx| {
                    // What the driver learned from the kernel (a parent's MAC).
                    if attachment != planned {
                        store::update_attachment(tx, &attachment)?;
                    }
                    intent::delete(tx, Subject::Attachment, &attachment.host_ifname)
                })
            });
        if let Err(e) = done {
            let e = undo.rollback(&mut self.host, e);
            let forgotten = self.store.write(|tx| {
                store::delete_attachment(tx, &attachment)?;
                intent::delete(tx, Subject::Attachment, &attachment.host_ifname)
            });
            return Err(match forgotten {
                Ok(()) => e,
                Err(f) => Error::Conflict(format!(
                    "{e}\n  and its record stays until the next plumb command removes it: {f}"
                )),
            });
        }
        tracing::debug!("kernel configured");
        Ok(attachment)
    }

    /// The kernel's part of an attach, after its intent is committed: set
    /// elements, interface, published ports, container guard, own uplink.
    /// `inside`: the target's namespace and a socket in it; None for a
    /// staged interface, made on the host.
    fn plug_attachment(
        &mut self,
        net: &Network,
        mut inside: Option<(&NsHandle, &mut Netlink)>,
        host_ns: &NsHandle,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        // The port's guard is there before the port: a bridge lets the
        // frames of a port that is in none of its sets pass unchecked.
        let added = filter_elements(self.store.read(), net, a)?;
        if !added.is_empty() {
            elements::apply(&[], &added)?;
            undo.push(
                format!("take {} out of nftables sets", a.target),
                move |_| elements::withdraw(&added),
            );
        }
        // A DHCP interface comes up bare: its routes need the lease's
        // address, and go on with it.
        let later = match &a.dhcp {
            Some(_) => std::mem::take(&mut a.routes),
            None => Vec::new(),
        };
        let plugged = match &mut inside {
            None => stage(&mut self.host, host_ns, net, a, undo),
            Some((ns, inner)) => plug(&mut self.host, inner, ns, host_ns, net, a, undo),
        };
        a.routes.extend(later);
        plugged?;
        if !a.publish.is_empty() {
            open_ports(a, self.holds.as_ref(), undo)?;
        }
        // A staged interface is guarded once it is in its namespace.
        if let Some((ns, _)) = inside
            && antispoof::guards_container(net, a)
        {
            guard_container(ns, a)?;
            let (ns, done) = (
                ns.try_clone()
                    .map_err(|e| Error::io("keep the namespace open", e))?,
                a.clone(),
            );
            undo.push(
                format!("remove the guard table of {}", a.target),
                move |_| unguard_container(&ns, &done),
            );
        }
        if let Some(own) = &a.egress {
            let sources = routing::attachment_sources(a);
            routing::install(&mut self.host, &sources, &own.egress, own.into(), undo)?;
        }
        Ok(())
    }

    /// Put a DHCP lease on its attachment's interface (address, default
    /// route, option 121 and the attachment's routes, MTU) and record it. A
    /// renewal that changes nothing touches only the store. The attachment
    /// is read again under the write lock: the DHCPv4 and DHCPv6 tasks of
    /// one attachment each change their own part of it.
    pub fn apply_lease(&mut self, a: &Attachment, lease: &Lease) -> Result<Attachment> {
        let ns = attached_ns(a).ok_or_else(|| gone(a))?;
        let mut inner = Netlink::open_in(&ns)
            .map_err(|e| Error::kernel(format!("open netlink in target {}", a.target), e))?;
        self.change(|tx, _host, undo| {
            let cur = store::attachment(tx, &a.host_ifname)?.ok_or_else(|| gone(a))?;
            let (next, old) = leased(&cur, lease)?;
            let unchanged = old.as_ref().is_some_and(|o| same_addressing(o, lease))
                && next.mtu == cur.mtu
                && cur.addresses == next.addresses;
            if !unchanged {
                if let Some(o) = &old {
                    driver::remove_addressing(&mut inner, &v4_part(&cur), &lease_routes(o))?;
                }
                let extra = lease_routes(lease);
                let want = v4_part(&next);
                driver::install_addressing(&mut inner, &want, &extra)?;
                let ns = ns
                    .try_clone()
                    .map_err(|e| Error::io("keep the namespace open", e))?;
                undo.push(
                    format!("remove the lease's addresses from {}", want.ifname),
                    move |_| {
                        let mut nl = Netlink::open_in(&ns)
                            .map_err(|e| Error::kernel("open netlink in target", e))?;
                        driver::remove_addressing(&mut nl, &want, &extra)
                    },
                );
            }
            move_filters(tx, &cur, &next)?;
            store::update_attachment(tx, &next)?;
            Ok(next)
        })
    }

    /// Take a lost lease's addresses and routes off its interface (expiry,
    /// NAK) and record the attachment in `state`, without a lease.
    pub fn drop_lease(&mut self, a: &Attachment, state: LeaseState) -> Result<Attachment> {
        let ns = attached_ns(a);
        self.store.write(|tx| {
            let cur = store::attachment(tx, &a.host_ifname)?.ok_or_else(|| gone(a))?;
            let mut next = cur.clone();
            let binding = next.dhcp.as_mut().ok_or_else(|| not_dhcp(a))?;
            let old = binding.lease.take();
            binding.state = state;
            if let (Some(ns), Some(old)) = (&ns, &old) {
                let mut inner = Netlink::open_in(ns).map_err(|e| {
                    Error::kernel(format!("open netlink in target {}", a.target), e)
                })?;
                driver::remove_addressing(&mut inner, &v4_part(&cur), &lease_routes(old))?;
            }
            next.addresses.retain(|x| x.addr().is_ipv6());
            next.gateways.retain(|g| g.is_ipv6());
            move_filters(tx, &cur, &next)?;
            store::update_attachment(tx, &next)?;
            Ok(next)
        })
    }

    /// Record a DHCP attachment's state (renewing, rebinding) alone.
    pub fn set_lease_state(&mut self, a: &Attachment, state: LeaseState) -> Result<Attachment> {
        self.store.write(|tx| {
            let mut next = store::attachment(tx, &a.host_ifname)?.ok_or_else(|| gone(a))?;
            next.dhcp.as_mut().ok_or_else(|| not_dhcp(a))?.state = state;
            store::update_attachment(tx, &next)?;
            Ok(next)
        })
    }

    /// Put a DHCPv6 lease's address on the interface (a /128: the on-link
    /// prefix comes from router advertisements) and record it; `None` takes
    /// the previous one off (expiry, refusal).
    pub fn set_lease6(&mut self, a: &Attachment, lease: Option<&Lease6>) -> Result<Attachment> {
        let ns = attached_ns(a).ok_or_else(|| gone(a))?;
        let mut inner = Netlink::open_in(&ns)
            .map_err(|e| Error::kernel(format!("open netlink in target {}", a.target), e))?;
        self.store.write(|tx| {
            let cur = store::attachment(tx, &a.host_ifname)?.ok_or_else(|| gone(a))?;
            let mut next = cur.clone();
            let binding = next.dhcp.as_mut().ok_or_else(|| not_dhcp(a))?;
            let old = std::mem::replace(&mut binding.lease6, lease.cloned());
            let link = inner
                .link_by_name(&a.ifname)
                .map_err(|e| Error::kernel(format!("look up {}", a.ifname), e))?
                .ok_or_else(|| gone(a))?;
            let old_addr = old.map(|o| IpNet::from(IpAddr::V6(o.address)));
            let new_addr = lease.map(|l| IpNet::from(IpAddr::V6(l.address)));
            if old_addr != new_addr {
                if let Some(o) = old_addr {
                    match inner.del_address(link.index, o) {
                        Err(e) if !e.is(libc::EADDRNOTAVAIL) => {
                            return Err(Error::kernel(format!("remove {o}"), e));
                        }
                        _ => {}
                    }
                    next.addresses.retain(|x| *x != o);
                }
                if let Some(n) = new_addr {
                    match inner.add_address(link.index, n) {
                        Err(e) if !e.is(libc::EEXIST) => {
                            return Err(Error::kernel(format!("add {n} to {}", a.ifname), e));
                        }
                        _ => {}
                    }
                    next.addresses.push(n);
                }
            }
            move_filters(tx, &cur, &next)?;
            store::update_attachment(tx, &next)?;
            Ok(next)
        })
    }

    /// Remove one attachment as recorded (the daemon's way back out of a
    /// failed DHCP attach, and of a container that went away).
    pub fn detach_attachment(&mut self, a: &Attachment) -> Result<()> {
        let stored = store::attachments(self.store.read())?
            .into_iter()
            .find(|s| s.attachment.host_ifname == a.host_ifname);
        match stored {
            Some(s) => self.detach_one(&s),
            None => Ok(()),
        }
    }

    /// Attachments whose namespace is gone (the container died, its netns
    /// file was removed): what `gc` removes.
    pub fn gone_attachments(&self) -> Result<Vec<Attachment>> {
        // One that a change is under way on is that change's.
        let busy = self.busy(Subject::Attachment)?;
        Ok(self
            .attachments()?
            .into_iter()
            .map(|s| s.attachment)
            .filter(|a| {
                !busy.contains(&a.host_ifname) && !a.is_staged() && attached_ns(a).is_none()
            })
            .collect())
    }

    /// Detach a target from one network or all; detaching what is not
    /// attached succeeds with an empty list.
    pub fn detach(&mut self, target: &str, network: Option<&str>) -> Result<Vec<Attachment>> {
        let parsed = Target::parse(target)?;
        if let Some(n) = network {
            store::require_network(self.store.read(), n)?;
        }
        let found = self.recorded_of(&parsed)?.1;
        // Docker's endpoints on plumb networks are Docker's to remove.
        let mut ours = Vec::new();
        let mut dockers = Vec::new();
        for a in found
            .iter()
            .filter(|a| network.is_none_or(|n| a.attachment.network == n))
        {
            match store::docker::is_endpoint(self.store.read(), &a.attachment.host_ifname)? {
                true => dockers.push(&a.attachment),
                false => ours.push(a.clone()),
            }
        }
        if let (true, Some(a)) = (ours.is_empty(), dockers.first()) {
            let container = a
                .container
                .as_ref()
                .map_or(a.target.as_str(), |c| c.name.as_str());
            return Err(Error::Conflict(format!(
                "{} on network `{}` is Docker's endpoint: `docker network disconnect {} {container}`",
                a.shown_target(),
                a.network,
                a.network,
            )));
        }
        // Detaching a container also ends its declaration (or the next
        // start would attach it again) and frees what it had parked.
        if let Target::Docker(reference) = &parsed {
            let mut ids: Vec<String> = found
                .iter()
                .filter_map(|s| s.attachment.container.as_ref().map(|c| c.id.clone()))
                .collect();
            if ids.is_empty() {
                ids = store::declarations(self.store.read(), None)?
                    .into_iter()
                    .filter(|d| d.id == *reference || d.name == *reference)
                    .map(|d| d.id)
                    .collect();
            }
            ids.dedup();
            self.store.write(|tx| {
                for id in &ids {
                    store::forget_declarations(tx, id, network)?;
                    store::release_parked(tx, id, network)?;
                }
                Ok(())
            })?;
        }
        let mut done = Vec::new();
        for a in ours {
            self.detach_one(&a)?;
            done.push(a.attachment);
        }
        Ok(done)
    }

    fn detach_one(&mut self, a: &StoredAttachment) -> Result<()> {
        let key = &a.attachment.host_ifname;
        self.claim(Subject::Attachment, key, Action::Remove)?;
        let done = self.finish_detach(&a.attachment);
        if done.is_err() {
            // The record stays as it is, attached; `restore` puts back
            // whatever of it is gone.
            let _ = self
                .store
                .write(|tx| intent::delete(tx, Subject::Attachment, key));
        }
        done
    }

    /// Take an attachment away, whatever of it is there: the second half
    /// of a detach, and what recovery does to an attach or a detach that
    /// stopped half way. Its record and intent go in the last commit.
    fn finish_detach(&mut self, a: &Attachment) -> Result<()> {
        let a_net = store::require_network(self.store.read(), &a.network)?.network;
        let ns = attached_ns(a);
        // The interface goes first: until it does, its guard stays.
        kinds::of(&a_net.kind).detach(&mut self.host, ns.as_ref(), &self.host_ns, a)?;
        failpoint::hit("detach: interface removed");
        if !a.replaced_defaults.is_empty()
            && let Some(ns) = &ns
        {
            put_back_defaults(ns, a);
        }
        // An ifb shaping what a non-veth interface received stays in the
        // container unless taken away.
        if a.rate.is_some_and(|r| r.ingress.is_some())
            && !kinds::of(&a_net.kind).has_host_port()
            && let Some(ns) = &ns
            && let Ok(mut nl) = Netlink::open_in(ns)
        {
            let _ = nl.delete_link_by_name(&names::ifb_name(&a.ifname));
        }
        if !a.publish.is_empty() {
            if let Err(e) = firewall::unpublish(a) {
                tracing::warn!(target = %a.target, "unpublish: {e}");
            }
            for p in &a.publish {
                ports::forget_flows(p);
            }
        }
        if let Some(own) = &a.egress {
            let sources = routing::attachment_sources(a);
            for e in routing::remove(&mut self.host, &sources, &own.egress, own.into()) {
                tracing::warn!(target = %a.target, "egress routing: {e}");
            }
        }
        if antispoof::guards_container(&a_net, a)
            && let Some(ns) = &ns
            && let Err(e) = unguard_container(ns, a)
        {
            tracing::warn!(target = %a.target, "guard table: {e}");
        }
        failpoint::hit("detach: host side removed");
        self.store.write(|tx| {
            elements::withdraw(&filter_elements(tx, &a_net, a)?)?;
            store::delete_attachment(tx, a)?;
            intent::delete(tx, Subject::Attachment, &a.host_ifname)
        })?;
        // The daemon's held ports go only once the store no longer has
        // them: its policy thread binds again any port the store says is
        // published.
        if let Some(holds) = &self.holds {
            for p in &a.publish {
                ports::lock(holds).release(p);
            }
        }
        Ok(())
    }

    /// The attachment a CNI runtime added for `container_id` as `ifname`.
    pub fn cni_attachment(&self, container_id: &str, ifname: &str) -> Result<Option<Attachment>> {
        Ok(store::attachments_of_cni(self.store.read(), container_id)?
            .into_iter()
            .map(|s| s.attachment)
            .find(|a| a.ifname == ifname))
    }

    pub fn attachments(&self) -> Result<Vec<StoredAttachment>> {
        store::attachments(self.store.read())
    }

    /// One attachment by its host interface name.
    pub fn attachment(&self, host_ifname: &str) -> Result<Option<Attachment>> {
        store::attachment(self.store.read(), host_ifname)
    }

    /// A target's attachments; those taking IPv6 from router
    /// advertisements show the addresses and router the kernel has now.
    pub fn attachments_of(&self, target: &str) -> Result<Vec<StoredAttachment>> {
        let (ns, mut found) = self.recorded_of(&Target::parse(target)?)?;
        if let Some(ns) = &ns {
            for s in found.iter_mut() {
                if s.attachment.dhcp.as_ref().is_some_and(|b| b.slaac) {
                    add_autoconf_ipv6(ns, &mut s.attachment);
                }
            }
        }
        Ok(found)
    }

    // ---- Docker containers ----

    /// The attachments of container `id` (its full ID), from the records
    /// alone: the daemon's view as it follows Docker, which it never asks
    /// back.
    pub fn container_attachments(&self, id: &str) -> Result<Vec<Attachment>> {
        let conn = self.store.read();
        let mut out = Vec::new();
        for s in store::attachments_of_container(conn, id)? {
            let a = s.attachment;
            // Docker's own endpoints come and go with Docker's calls.
            if a.container.as_ref().is_some_and(|c| c.id == id)
                && !store::docker::is_endpoint(conn, &a.host_ifname)?
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Keep `req` as the declaration of `a`'s container (when `a` is a
    /// container's and `req` says so), once the attach went through: one
    /// that failed leaves nothing to carry out at the next start.
    pub fn declare(&mut self, a: &Attachment, req: &AttachRequest) -> Result<()> {
        let (Some(c), Some(source)) = (&a.container, req.declare_as) else {
            return Ok(());
        };
        let mut spec = (*req.spec).clone();
        spec.target = a.target.clone();
        let d = store::Declared {
            id: c.id.clone(),
            name: c.name.clone(),
            spec,
            source: source.to_string(),
        };
        self.store.write(|tx| store::declare(tx, &d))
    }

    /// What containers declare, one of them or all.
    pub fn declarations(&self, id: Option<&str>) -> Result<Vec<store::Declared>> {
        store::declarations(self.store.read(), id)
    }

    /// A container is gone for good: its declarations, parked addresses
    /// and errors go too (its attachments must be detached first).
    pub fn forget_container(&mut self, id: &str) -> Result<()> {
        self.store.write(|tx| {
            store::forget_declarations(tx, id, None)?;
            store::release_parked(tx, id, None)?;
            store::set_container_errors(tx, id, "", &[])
        })
    }

    pub fn rename_container(&mut self, id: &str, name: &str) -> Result<()> {
        self.store.write(|tx| store::rename_container(tx, id, name))
    }

    pub fn set_container_errors(&mut self, id: &str, name: &str, errors: &[String]) -> Result<()> {
        self.store
            .write(|tx| store::set_container_errors(tx, id, name, errors))
    }

    /// What is wrong with containers' declarations: (id, name, errors).
    pub fn container_errors(&self) -> Result<Vec<(String, String, Vec<String>)>> {
        store::container_errors(self.store.read())
    }

    /// The records of a target, and its namespace if it can be opened. A
    /// container is found by its ID, an ID prefix or its name as recorded,
    /// stopped or gone; Docker is asked only about a name no record has
    /// (a container renamed while no daemon watched).
    fn recorded_of(&self, target: &Target) -> Result<(Option<NsHandle>, Vec<StoredAttachment>)> {
        let conn = self.store.read();
        if let Target::Docker(reference) = target {
            let mut found = store::attachments_of_container(conn, reference)?;
            if found.is_empty()
                && let Ok(c) = crate::docker::inspect(reference)
            {
                found = store::attachments_of_container(conn, &c.id)?;
            }
            let ns = found.first().and_then(|s| attached_ns(&s.attachment));
            return Ok((ns, found));
        }
        if let Target::Cni {
            container_id,
            ifname,
        } = target
        {
            let found: Vec<StoredAttachment> = store::attachments_of_cni(conn, container_id)?
                .into_iter()
                .filter(|s| ifname.as_ref().is_none_or(|i| *i == s.attachment.ifname))
                .collect();
            let ns = found.first().and_then(|s| attached_ns(&s.attachment));
            return Ok((ns, found));
        }
        let ns = target.resolve().ok();
        let netns_id = ns.as_ref().map(|ns| ns.identity());
        let found = store::attachments_of_target(conn, netns_id.as_deref(), &target.to_string())?;
        Ok((ns, found))
    }

    // ---- host side of a lab ----

    /// Add a route on the host to a subnet behind a router (a container).
    pub fn host_route_add(&mut self, route: &RouteSpec, owner: Option<&str>) -> Result<()> {
        self.recover_quietly();
        let holder = self.store.holder()?;
        let dest = route.dest.to_string();
        let host = &mut self.host;
        self.store.record(|tx| {
            if store::host_routes(tx)?.iter().any(|r| r.dest == dest) {
                return Err(Error::invalid(
                    "host route",
                    route,
                    "a host route to this destination is already managed by plumb",
                ));
            }
            // A route that is there already is someone else's: refused now,
            // it is never plumb's to delete (on a rollback or a recovery).
            let present = host
                .routes(route.dest.addr().is_ipv6())
                .map_err(|e| Error::kernel("list host routes", e))?
                .iter()
                .any(|r| r.dest == route.dest);
            if present {
                return Err(Error::invalid(
                    "host route",
                    route,
                    "a route to this destination exists on the host already, and is not plumb's",
                ));
            }
            store::insert_host_route(
                tx,
                &HostRoute {
                    dest: dest.clone(),
                    via: route.via.to_string(),
                    owner: owner.map(String::from),
                },
            )?;
            intent::insert(tx, Subject::HostRoute, &dest, Action::Create, &holder)
        })?;
        let added = self
            .host
            .add_route(route.dest, Some(route.via), None, false)
            .map_err(|e| Error::kernel(format!("add host route {route}"), e));
        failpoint::hit("host route added");
        let done = match added {
            Ok(()) => self
                .store
                .write(|tx| intent::delete(tx, Subject::HostRoute, &dest))
                .map_err(|e| (e, true)),
            Err(e) => Err((e, false)),
        };
        if let Err((e, added)) = done {
            // Only what this add made goes: a refusal (EEXIST: a route
            // that came meanwhile) leaves the kernel's as it is.
            if added {
                let _ = self.host.del_route(route.dest, Some(route.via), None);
            }
            self.store.write(|tx| {
                store::delete_host_route(tx, &dest)?;
                intent::delete(tx, Subject::HostRoute, &dest)
            })?;
            return Err(e);
        }
        Ok(())
    }

    pub fn host_route_rm(&mut self, dest: &IpNet) -> Result<bool> {
        self.recover_quietly();
        let known = store::host_routes(self.store.read())?
            .into_iter()
            .find(|r| r.dest == dest.to_string());
        let Some(known) = known else { return Ok(false) };
        self.claim(Subject::HostRoute, &known.dest, Action::Remove)?;
        self.finish_host_route_removal(&known)?;
        Ok(true)
    }

    /// Delete a host route plumb added, if the kernel has it, and its record.
    fn finish_host_route_removal(&mut self, known: &HostRoute) -> Result<()> {
        let route = known
            .dest
            .parse::<IpNet>()
            .ok()
            .zip(known.via.parse::<IpAddr>().ok());
        if let Some((dest, via)) = route {
            match self.host.del_route(dest, Some(via), None) {
                Ok(()) => {}
                Err(e) if e.is(libc::ESRCH) => {}
                Err(e) => return Err(Error::kernel(format!("remove host route {dest}"), e)),
            }
        }
        failpoint::hit("host route removed");
        self.store.write(|tx| {
            store::delete_host_route(tx, &known.dest)?;
            intent::delete(tx, Subject::HostRoute, &known.dest)
        })
    }

    pub fn host_routes(&self) -> Result<Vec<HostRoute>> {
        store::host_routes(self.store.read())
    }

    // ---- namespaces plumb creates (lab hosts) ----

    pub fn namespace_create(
        &mut self,
        name: &str,
        forwarding: bool,
        owner: Option<&str>,
    ) -> Result<bool> {
        crate::model::validate_name("namespace name", name)?;
        // One that exists is someone else's (or this file's from before):
        // never recorded as plumb's, never deleted by it.
        if netns::exists_named(name) {
            return Ok(false);
        }
        // The record comes first: a process killed before the namespace is
        // made leaves a record that `down` removes, never a namespace no
        // record knows.
        self.store
            .write(|tx| store::insert_namespace(tx, name, owner))?;
        failpoint::hit("namespace recorded");
        let created = match netns::create_named(name) {
            Ok(created) => created,
            Err(e) => {
                let _ = self.store.write(|tx| store::delete_namespace(tx, name));
                return Err(Error::io(format!("create namespace {name}"), e));
            }
        };
        if !created {
            // Made by someone else in between: theirs.
            self.store.write(|tx| store::delete_namespace(tx, name))?;
            return Ok(false);
        }
        if forwarding && let Err(e) = enable_forwarding_in(name) {
            let _ = self.namespace_delete(name);
            return Err(e);
        }
        Ok(true)
    }

    /// Delete a namespace plumb created, detaching it first.
    pub fn namespace_delete(&mut self, name: &str) -> Result<()> {
        self.detach(name, None)?;
        netns::delete_named(name).map_err(|e| Error::io(format!("delete namespace {name}"), e))?;
        self.store.write(|tx| store::delete_namespace(tx, name))
    }

    pub fn namespaces(&self) -> Result<Vec<(String, Option<String>)>> {
        store::namespaces(self.store.read())
    }
}

/// Two networks that cannot live side by side: same bridge, overlapping
/// subnets, one uplink enslaved twice.
pub(crate) fn check_conflicts(net: &Network, other: &Network) -> Result<()> {
    for sub in &net.subnets {
        if let Some(o) = other
            .subnets
            .iter()
            .find(|o| overlaps(&o.subnet, &sub.subnet))
        {
            return Err(Error::invalid(
                "--subnet",
                sub.subnet,
                format!("overlaps {} of network `{}`", o.subnet, other.name),
            ));
        }
    }
    if let (Some(mine), Some(theirs)) = (net.bridge(), other.bridge()) {
        if mine.bridge == theirs.bridge {
            return Err(Error::invalid(
                "--bridge",
                &mine.bridge,
                format!("is already used by network `{}`", other.name),
            ));
        }
        if let (Some(a), Some(b)) = (&mine.uplink, &theirs.uplink)
            && a.name == b.name
            && mine.mode == BridgeMode::Bridged
        {
            return Err(Error::invalid(
                "--uplink",
                &a.name,
                format!("is already the uplink of network `{}`", other.name),
            ));
        }
    }
    Ok(())
}

/// The namespace an attachment lives in, if it still exists (a name that
/// now leads to another namespace does not count).
/// Add the global IPv6 addresses and the IPv6 default router the kernel
/// learned from router advertisements (best effort: this is a view).
fn add_autoconf_ipv6(ns: &NsHandle, a: &mut Attachment) {
    let Ok(mut nl) = Netlink::open_in(ns) else {
        return;
    };
    let Ok(Some(link)) = nl.link_by_name(&a.ifname) else {
        return;
    };
    let link_local: IpNet = "fe80::/10".parse().expect("literal");
    for addr in nl.addresses(link.index).unwrap_or_default() {
        if addr.addr().is_ipv6()
            && !link_local.contains(&addr.addr())
            && !a.addresses.contains(&addr)
        {
            a.addresses.push(addr);
        }
    }
    if let Some(gw) = nl
        .routes(true)
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.dest.prefix_len() == 0 && r.oif == Some(link.index))
        .and_then(|r| r.via)
        && !a.gateways.contains(&gw)
    {
        a.gateways.push(gw);
    }
}

/// An attachment's own uplink: a table and rule priorities for the rules
/// selecting its addresses (nat and routed bridges, where the host routes
/// its traffic), recorded with the attachment.
fn allocate_egress(
    tx: &Transaction,
    host: &mut Netlink,
    net: &Network,
    a: &Attachment,
    e: &Egress,
) -> Result<AttachmentEgress> {
    if !kinds::of(&net.kind).routed_by_host() {
        return Err(Error::invalid(
            "--egress-interface",
            &e.interface,
            "only nat and routed bridge networks leave through the host's routing",
        ));
    }
    let alloc = routing::allocate(tx, host, routing::Owner::Attachment(&a.host_ifname))?;
    Ok(AttachmentEgress {
        egress: e.clone(),
        table: alloc.table,
        priority: alloc.priority,
    })
}

/// The set elements an attachment puts into rules already written: its
/// addresses in the sets of the policy selectors that name it (one indexed
/// lookup per selector), and the guard and shield of its bridge port.
fn filter_elements(conn: &Connection, net: &Network, a: &Attachment) -> Result<Vec<Element>> {
    let keys = store::used_selectors(conn, &a.selector_keys())?;
    let mut out = firewall::selector_elements(&keys, a);
    if net.bridge().is_some() {
        out.extend(antispoof::bridge_port_elements(a));
    }
    Ok(out)
}

/// Write the guard table inside the container's own namespace (macvlan).
fn guard_container(ns: &NsHandle, a: &Attachment) -> Result<()> {
    nf_in(ns, a)?
        .edit(&[Edit::Replace(antispoof::container_table(a))])
        .map_err(|e| Error::kernel(format!("write the guard table of {}", a.target), e))
}

/// Whether the guard table is in the container's namespace.
fn guard_in_place(ns: &NsHandle, a: &Attachment) -> Result<bool> {
    nf_in(ns, a)?
        .table_exists(NfFamily::Netdev, antispoof::TABLE)
        .map_err(|e| Error::kernel(format!("look for the guard table of {}", a.target), e))
}

fn unguard_container(ns: &NsHandle, a: &Attachment) -> Result<()> {
    nf_in(ns, a)?
        .edit(&[Edit::Delete {
            family: NfFamily::Netdev,
            name: antispoof::TABLE.into(),
        }])
        .map_err(|e| Error::kernel(format!("remove the guard table of {}", a.target), e))
}

/// An nfnetlink socket inside `a`'s namespace.
fn nf_in(ns: &NsHandle, a: &Attachment) -> Result<NfNetlink> {
    NfNetlink::open_in(ns)
        .map_err(|e| Error::kernel(format!("open nfnetlink in target {}", a.target), e))
}

/// The attachment's addresses changed (a DHCP lease came, went or moved):
/// its set elements and its container guard follow, in one batch each.
fn move_filters(tx: &Transaction, old: &Attachment, new: &Attachment) -> Result<()> {
    if old.addresses == new.addresses {
        return Ok(());
    }
    let net = store::require_network(tx, &new.network)?.network;
    elements::apply(
        &filter_elements(tx, &net, old)?,
        &filter_elements(tx, &net, new)?,
    )?;
    if antispoof::guards_container(&net, new)
        && let Some(ns) = attached_ns(new)
    {
        guard_container(&ns, new)?;
    }
    Ok(())
}

/// Reserve an attachment's host ports in the store, refusing a port
/// another plumb attachment, another tool's DNAT rule or (without a daemon
/// to hold it) a socket has.
fn reserve_ports(
    tx: &Transaction,
    net: &Network,
    a: &Attachment,
    held_by_daemon: bool,
) -> Result<()> {
    let first = a.publish[0];
    if !net.bridge().is_some_and(|b| b.mode == BridgeMode::Nat) {
        return Err(Error::invalid(
            "--publish",
            first,
            format!(
                "network `{}` is not a nat network; its containers are reachable as they are",
                net.name
            ),
        ));
    }
    if firewall::published_address(a).is_none() {
        return Err(Error::invalid(
            "--publish",
            first,
            "the attachment has no IPv4 address",
        ));
    }
    let foreign = ports::foreign_dnat()?;
    for p in &a.publish {
        if let Some(holder) = store::publish_conflict(tx, p)? {
            return Err(Error::invalid(
                "--publish",
                p,
                format!(
                    "host port {}/{} is already published by `{holder}`",
                    p.host_port, p.proto
                ),
            ));
        }
        ports::check_dnat(p, &foreign)?;
        if !held_by_daemon {
            ports::check_sockets(p)?;
            tracing::warn!(
                "--publish {p}: no plumb daemon runs to keep host port {}/{} bound, so \
                 another program may still bind it",
                p.host_port,
                p.proto
            );
        }
    }
    store::insert_publications(tx, a)
}

/// Forward an attachment's reserved host ports: the daemon binds them
/// (`holds`), the nftables maps get their elements (no rule changes), and
/// UDP flows still going to whoever had a port before are forgotten.
fn open_ports(a: &Attachment, holds: Option<&Arc<Mutex<Holds>>>, undo: &mut UndoLog) -> Result<()> {
    if let Some(holds) = holds {
        for p in &a.publish {
            ports::lock(holds).hold(p)?;
            let (holds, p) = (holds.clone(), *p);
            undo.push(format!("let host port {} go", p.host_port), move |_| {
                ports::lock(&holds).release(&p);
                Ok(())
            });
        }
    }
    firewall::publish(a)?;
    let done = a.clone();
    undo.push(format!("unpublish the ports of {}", a.target), move |_| {
        firewall::unpublish(&done)
    });
    for p in &a.publish {
        ports::forget_flows(p);
    }
    Ok(())
}

/// Create an attachment's interface with its driver and configure it
/// inside the target.
fn plug(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    host_ns: &NsHandle,
    net: &Network,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let at = kinds::Plug {
        host,
        inner,
        ns,
        host_ns,
    };
    kinds::of(&net.kind).attach(at, net, a, undo)?;
    if let Some(r) = a.rate {
        shape_host(host, net, a, r)?;
        shape_inside(inner, ns, net, a, r, undo)?;
    }
    Ok(())
}

/// Create an attachment's interface on the host under its staged name, for
/// Docker to move into the container: what [`plug`] does but configuring it
/// inside, which Docker does with the addresses and routes it was given.
fn stage(
    host: &mut Netlink,
    host_ns: &NsHandle,
    net: &Network,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let driver = kinds::of(&net.kind);
    driver.stage(host, host_ns, net, a, undo)?;
    // A host device keeps the alias its owner gave it; its MAC is its own.
    if driver.device().is_none() {
        let index = link_index(host, &a.ifname)?;
        host.set_alias(index, &names::staged_alias(&a.host_ifname))
            .map_err(|e| Error::kernel(format!("tag {}", a.ifname), e))?;
    }
    if let Some(r) = a.rate {
        shape_host(host, net, a, r)?;
    }
    Ok(())
}

/// Rate limits as token buckets. What the container sends is shaped on its
/// own interface, whatever the driver. What it receives is shaped on the
/// host end of its veth ([`shape_host`]), or, where there is none
/// (macvlan, ipvlan, host device), on an ifb inside the container that its
/// interface's incoming traffic is redirected to ([`shape_inside`]).
/// Qdiscs go with their interfaces (and are lost when one changes
/// namespace); the ifb has an undo of its own.
fn shape_host(host: &mut Netlink, net: &Network, a: &Attachment, r: RateLimit) -> Result<()> {
    let (Some(bps), true) = (r.ingress, kinds::of(&net.kind).has_host_port()) else {
        return Ok(());
    };
    let i = link_index(host, &a.host_ifname)?;
    host.set_rate(i, bps, r.burst)
        .map_err(|e| Error::kernel(format!("limit {} to {bps} bit/s", a.host_ifname), e))
}

fn link_index(nl: &mut Netlink, name: &str) -> Result<u32> {
    nl.link_by_name(name)
        .map_err(|e| Error::kernel(format!("look up {name}"), e))?
        .map(|l| l.index)
        .ok_or_else(|| Error::Conflict(format!("{name} vanished")))
}

/// The container's side of [`shape_host`].
fn shape_inside(
    inner: &mut Netlink,
    ns: &NsHandle,
    net: &Network,
    a: &Attachment,
    r: RateLimit,
    undo: &mut UndoLog,
) -> Result<()> {
    let inside =
        |what: String| move |e| Error::kernel(format!("in target {}: {what}", a.target), e);
    if let Some(bps) = r.egress {
        let i = link_index(inner, &a.ifname)?;
        inner
            .set_rate(i, bps, r.burst)
            .map_err(inside(format!("limit {} to {bps} bit/s", a.ifname)))?;
    }
    let Some(bps) = r.ingress else { return Ok(()) };
    if kinds::of(&net.kind).has_host_port() {
        return Ok(());
    }
    let ifb = names::ifb_name(&a.ifname);
    match inner.create_ifb(&ifb) {
        Err(e) if e.is(libc::EEXIST) => {} // a restore finding it
        r => {
            r.map_err(inside(format!("create {ifb}")))?;
            let (target, name) = (
                ns.try_clone()
                    .map_err(|e| Error::io("keep the target namespace open", e))?,
                ifb.clone(),
            );
            undo.push(format!("delete {ifb} in the target"), move |_| {
                let mut nl = Netlink::open_in(&target)
                    .map_err(|e| Error::kernel("open netlink in the target", e))?;
                nl.delete_link_by_name(&name)
                    .map(drop)
                    .map_err(|e| Error::kernel(format!("delete {name}"), e))
            });
        }
    }
    let ifb_index = link_index(inner, &ifb)?;
    inner
        .set_up(ifb_index)
        .map_err(inside(format!("set {ifb} up")))?;
    inner
        .set_rate(ifb_index, bps, r.burst)
        .map_err(inside(format!("limit {ifb} to {bps} bit/s")))?;
    let i = link_index(inner, &a.ifname)?;
    inner.redirect_ingress(i, ifb_index).map_err(inside(format!(
        "redirect what {} receives to {ifb}",
        a.ifname
    )))
}

/// A network takes the attach path of its IPAM: host-local here, DHCP
/// through the daemon.
pub fn check_ipam(net: &Network, req: &AttachRequest, ipam: Ipam) -> Result<()> {
    match (net.ipam, ipam) {
        (Ipam::Dhcp, Ipam::HostLocal) => Err(Error::Conflict(format!(
            "network `{}` gets its addresses by DHCP, which the plumb daemon runs: attach through it",
            net.name
        ))),
        (Ipam::HostLocal, Ipam::Dhcp) => Err(Error::Conflict(format!(
            "network `{}` does not use DHCP",
            net.name
        ))),
        (Ipam::Dhcp, _) => match req.ips.first() {
            Some(ip) => Err(Error::invalid(
                "--ip",
                ip,
                format!(
                    "network `{}` gets its addresses from the LAN's DHCP server",
                    net.name
                ),
            )),
            None => Ok(()),
        },
        (Ipam::HostLocal, _) => match &req.hostname {
            Some(h) => Err(Error::invalid(
                "--hostname",
                h,
                format!(
                    "names a DHCP client; network `{}` does not use DHCP",
                    net.name
                ),
            )),
            None => Ok(()),
        },
    }
}

/// Who a new DHCP attachment is to the LAN's server.
/// The names a network's DNS answers with an attachment's addresses: its
/// host name (`--hostname`, else a container's or a named namespace's
/// name), then its aliases.
fn dns_names(
    req: &AttachRequest,
    target: &str,
    container: Option<&crate::model::ContainerRef>,
) -> Vec<String> {
    let own: Option<String> = match (&req.hostname, container, Target::parse(target)) {
        (Some(h), _, _) => Some(h.clone()),
        (None, Some(c), _) => Some(c.name.clone()),
        (None, None, Ok(Target::Named(n))) => Some(n),
        _ => None,
    };
    let mut names: Vec<String> = own
        .and_then(|n| crate::model::dns_name("name", &n).ok())
        .into_iter()
        .collect();
    for a in &req.aliases {
        if !names.contains(a) {
            names.push(a.clone());
        }
    }
    names
}

fn dhcp_binding(net: &Network, req: &AttachRequest, target: &str, hostname: String) -> DhcpBinding {
    let mut b = DhcpBinding {
        hostname: String::new(),
        fqdn: None,
        client_id: String::new(),
        state: LeaseState::Acquiring,
        lease: None,
        mtu_from_lease: req.mtu.is_none() && net.mtu.is_none(),
        slaac: net.slaac,
        lease6: None,
        for_docker: false,
    };
    set_dhcp_identity(
        &mut b,
        net,
        target,
        req.hostname.clone().unwrap_or(hostname),
    );
    b
}

/// Who a DHCP client is on the LAN: its host name (with the network's
/// domain) and its client identifier, from this host, the network and the
/// target.
pub(crate) fn set_dhcp_identity(
    b: &mut DhcpBinding,
    net: &Network,
    target: &str,
    hostname: String,
) {
    let host = names::host_identity();
    b.fqdn = net.domain.as_ref().map(|d| format!("{hostname}.{d}"));
    b.hostname = hostname;
    b.client_id = crate::ipam::dhcp::hex(&names::dhcp_client_id(&host, &net.name, target));
}

/// The IPv4 side of a DHCP attachment: what a DHCPv4 lease put on it.
fn v4_part(a: &Attachment) -> Attachment {
    let mut v4 = a.clone();
    v4.addresses.retain(|x| x.addr().is_ipv4());
    v4.gateways.retain(|g| g.is_ipv4());
    v4
}

/// DHCP attachment `cur` as lease `lease` makes it (its addresses,
/// gateway, MTU), with the lease it held before.
fn leased(cur: &Attachment, lease: &Lease) -> Result<(Attachment, Option<Lease>)> {
    let mut next = cur.clone();
    let binding = next.dhcp.as_mut().ok_or_else(|| not_dhcp(cur))?;
    let old = binding.lease.replace(lease.clone());
    binding.state = LeaseState::Bound;
    if binding.mtu_from_lease
        && let Some(mtu) = lease.mtu
    {
        next.mtu = u32::from(mtu);
    }
    next.addresses.retain(|x| x.addr().is_ipv6());
    next.addresses.insert(0, IpNet::V4(lease.address));
    next.gateways.retain(|g| g.is_ipv6());
    next.gateways.extend(lease.gateway().map(IpAddr::V4));
    Ok((next, old))
}

/// Option 121 routes, as the attachment's route type.
pub(crate) fn lease_routes(lease: &Lease) -> Vec<RouteSpec> {
    lease
        .static_routes()
        .map(|(dest, via)| RouteSpec {
            dest: IpNet::V4(*dest),
            via: IpAddr::V4(*via),
        })
        .collect()
}

/// Whether two leases put the same things on the interface.
fn same_addressing(a: &Lease, b: &Lease) -> bool {
    a.address == b.address && a.gateway() == b.gateway() && a.routes == b.routes && a.mtu == b.mtu
}

pub(crate) fn gone(a: &Attachment) -> Error {
    Error::Target {
        target: a.target.clone(),
        reason: format!("its namespace {} is gone", a.netns),
    }
}

fn not_dhcp(a: &Attachment) -> Error {
    Error::Conflict(format!(
        "{} on network `{}` has no DHCP lease",
        a.ifname, a.network
    ))
}

/// The namespace of an attachment, if it still exists anywhere: by its
/// target's path, by the process recorded with it, or else by a search of
/// every process, mount and descriptor ([`netns::find`]). None proves it
/// gone. Docker is never asked: a container's namespace is its process's.
pub fn attached_ns(a: &Attachment) -> Option<NsHandle> {
    if a.is_staged() {
        return None;
    }
    let ours = |ns: NsHandle| a.is_in(&ns).then_some(ns);
    if let Ok(t) = Target::parse(&a.target)
        && !matches!(t, Target::Docker(_) | Target::Cni { .. })
        && let Some(ns) = t.resolve().ok().and_then(ours)
    {
        return Some(ns);
    }
    if let Some(p) = a.process
        && p.alive()
        && let Some(ns) = NsHandle::open(&netns::proc_ns(p.pid)).ok().and_then(ours)
    {
        return Some(ns);
    }
    netns::find(&a.netns).and_then(ours)
}

/// Make a named namespace a router.
fn enable_forwarding_in(name: &str) -> Result<()> {
    let ns = Target::Named(name.into()).resolve()?;
    ns.run(|| -> std::io::Result<()> {
        netns::write_sysctl("net/ipv4/ip_forward", "1")?;
        netns::write_sysctl("net/ipv6/conf/all/forwarding", "1")
    })
    .and_then(|r| r)
    .map_err(|e| Error::io(format!("enable forwarding in namespace {name}"), e))
}

/// The target's default routes now (what `--default-route replace` is
/// about to take the place of).
fn default_routes(inner: &mut Netlink) -> Result<Vec<ReplacedRoute>> {
    let kernel = |e| Error::kernel("list routes in the target", e);
    let links = inner.links().map_err(kernel)?;
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in inner.routes(v6).map_err(kernel)? {
            let dev = links.iter().find(|l| Some(l.index) == r.oif);
            if r.dest.prefix_len() == 0
                && let Some(dev) = dev
            {
                out.push(ReplacedRoute {
                    v6,
                    via: r.via,
                    dev: dev.name.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Give the target back the default routes an attachment replaced, where
/// their interfaces are still there and nothing took their place since.
fn put_back_defaults(ns: &NsHandle, a: &Attachment) {
    let Ok(mut nl) = Netlink::open_in(ns) else {
        return;
    };
    for r in &a.replaced_defaults {
        let has_default = nl
            .routes(r.v6)
            .unwrap_or_default()
            .iter()
            .any(|x| x.dest.prefix_len() == 0);
        let Ok(Some(dev)) = nl.link_by_name(&r.dev) else {
            continue;
        };
        if has_default {
            continue;
        }
        let any: IpNet = if r.v6 { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .expect("literal");
        if let Err(e) = nl.add_route(any, r.via, Some(dev.index), false) {
            tracing::warn!(target = %a.target, "put back the default route via {}: {e}", r.dev);
        }
    }
}

/// The first `ethN` that is neither in the namespace nor recorded for it.
fn free_ifname(inner: &mut Netlink, existing: &[StoredAttachment]) -> Result<String> {
    let links = inner
        .links()
        .map_err(|e| Error::kernel("list links in the target namespace", e))?;
    (0..4096)
        .map(|i| format!("eth{i}"))
        .find(|n| {
            !links.iter().any(|l| &l.name == n)
                && !existing.iter().any(|a| &a.attachment.ifname == n)
        })
        .ok_or_else(|| Error::Conflict("no free ethN interface name in the target".into()))
}

/// Static requests first (one per family), then one dynamic address for
/// every subnet family not covered.
fn assign_addresses(
    tx: &Transaction,
    net: &Network,
    ips: &[IpAddr],
    owned: &[IpAddr],
    owner: &str,
) -> Result<Vec<IpNet>> {
    let mut out: Vec<IpNet> = owned
        .iter()
        .filter_map(|ip| IpNet::new(*ip, net.subnet_for(ip)?.subnet.prefix_len()).ok())
        .collect();
    // A cluster network's addresses are this host's blocks'.
    let blocks = match net.bridge().is_some_and(|b| b.overlay.is_some()) {
        true => Some(store::host_extras::cluster_blocks(tx, &net.name)?),
        false => None,
    };
    for ip in ips {
        if let Some(blocks) = &blocks {
            check_in_own_block(net, blocks, *ip)?;
        }
        out.push(host_local::reserve(tx, net, *ip, owner, "--ip")?);
    }
    for sub in &net.subnets {
        let v4 = sub.subnet.addr().is_ipv4();
        if out.iter().any(|a: &IpNet| a.addr().is_ipv4() == v4) {
            continue;
        }
        out.push(match &blocks {
            Some(blocks) => allocate_in_blocks(tx, net, sub, blocks, owner)?,
            None => host_local::allocate(tx, net, sub, owner)?,
        });
    }
    Ok(out)
}

/// A static address on a cluster network is this host's to give: in one of
/// its blocks.
fn check_in_own_block(
    net: &Network,
    blocks: &[store::host_extras::Block],
    ip: IpAddr,
) -> Result<()> {
    match blocks.iter().find(|b| b.block.contains(&ip)) {
        Some(b) if b.mine => Ok(()),
        Some(b) => Err(Error::invalid(
            "--ip",
            ip,
            format!(
                "is in block {} of host `{}` of network `{}`",
                b.block, b.host, net.name
            ),
        )),
        None => Err(Error::invalid(
            "--ip",
            ip,
            format!(
                "is in no block of this host on network `{}` (its blocks: {})",
                net.name,
                blocks
                    .iter()
                    .filter(|b| b.mine)
                    .map(|b| b.block.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The next free address of `sub` in this host's blocks.
fn allocate_in_blocks(
    tx: &Transaction,
    net: &Network,
    sub: &crate::model::SubnetSpec,
    blocks: &[store::host_extras::Block],
    owner: &str,
) -> Result<IpNet> {
    for b in blocks
        .iter()
        .filter(|b| b.mine && sub.subnet.contains(&b.block.network()))
    {
        let in_block = crate::model::SubnetSpec {
            ip_range: Some(b.block),
            ..sub.clone()
        };
        match host_local::allocate(tx, net, &in_block, owner) {
            Ok(a) => return Ok(a),
            Err(Error::Ipam { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Ipam {
        network: net.name.clone(),
        reason: format!(
            "no free address in this host's blocks of {} (a daemon joined to the cluster claims another when it attaches)",
            sub.subnet
        ),
    })
}

/// The gateways of the subnets an attachment has addresses in, except
/// when the attachment *is* the gateway (a router container).
fn gateways_for(net: &Network, addrs: &[IpNet]) -> Vec<IpAddr> {
    addrs
        .iter()
        .filter_map(|a| {
            net.subnet_for(&a.addr())
                .and_then(|s| s.gateway)
                .filter(|gw| *gw != a.addr())
        })
        .collect()
}

/// Routes must go through a gateway the attachment can reach directly.
fn check_routes(a: &Attachment) -> Result<()> {
    for r in &a.routes {
        if !a.addresses.iter().any(|addr| addr.contains(&r.via)) {
            return Err(Error::invalid(
                "--route",
                r,
                format!("gateway {} is not on any subnet of {}", r.via, a.ifname),
            ));
        }
    }
    Ok(())
}
