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
use crate::driver::{self, host_device, ipvlan, macvlan, parent};
use crate::error::{Error, Result};
use crate::ipam::dhcp::Lease;
use crate::ipam::dhcp::v6::Lease6;
use crate::ipam::host_local;
use crate::model::{
    AttachRequest, Attachment, AttachmentEgress, BridgeMode, DhcpBinding, Egress, Ipam, LeaseState,
    Network, NetworkKind, NetworkSpec, Publish, RateLimit, RouteSpec, overlaps, validate_ifname,
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
use crate::store::{self, HostRoute, Store, StoredAttachment, StoredNetwork};
use crate::target::Target;
use crate::undo::UndoLog;

mod policy;
mod restore;
pub use restore::RestoreReport;

pub struct NetworkDetails {
    pub stored: StoredNetwork,
    pub host_state: HostState,
    pub routing: Option<routing::Allocation>,
    pub attachments: Vec<StoredAttachment>,
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
        self.change(|tx, host, undo| {
            if store::get_network(tx, &net.name)?.is_some() {
                return Err(Error::NetworkExists(net.name.clone()));
            }
            let others = store::networks(tx)?;
            for other in &others {
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
                && parent::ensure(host, p, undo)?
            {
                store::insert_vlan_link(tx, &p.name)?;
            }
            let state = match &net.kind {
                NetworkKind::Bridge(b) => bridge::create(host, &net, b, undo)?,
                NetworkKind::Macvlan(m) => {
                    macvlan::create(host, &net, m, undo)?;
                    HostState::default()
                }
                NetworkKind::Ipvlan(i) => {
                    ipvlan::create(host, &net, i, undo)?;
                    HostState::default()
                }
                NetworkKind::HostDevice(d) => {
                    host_device::create(host, d)?;
                    HostState::default()
                }
            };
            store::set_host_state(tx, &net.name, &state)?;
            if let Some(e) = &net.egress {
                let a = routing::allocate(tx, host, routing::Owner::Network(&net.name))?;
                routing::install(host, &routing::network_sources(&net), e, a, undo)?;
            }
            let next = firewall::Ruleset::load(tx)?;
            let mut previous = next.clone();
            previous.networks.retain(|n| n.name != net.name);
            firewall::sync(&next)?;
            undo.push("restore the previous nftables ruleset", move |_| {
                firewall::sync(&previous)
            });
            Ok(net.clone())
        })
    }

    pub fn network_rm(&mut self, name: &str, force: bool) -> Result<Vec<Attachment>> {
        let stored = store::require_network(self.store.read(), name)?;
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
        let naming: Vec<i64> = store::policies(self.store.read())?
            .into_iter()
            .filter(|p| p.policy.names_network(name))
            .map(|p| p.id)
            .collect();
        if !naming.is_empty() && !force {
            let ids: Vec<String> = naming.iter().map(i64::to_string).collect();
            return Err(Error::Conflict(format!(
                "network `{name}` is named by policy rule(s) {}; remove them (plumb policy rm {}) or use --force",
                ids.join(", "),
                ids.join(" ")
            )));
        }
        let mut errors = Vec::new();
        for a in &attached {
            if let Err(e) = self.detach_one(a) {
                errors.push(e.to_string());
            }
        }
        let state = store::host_state(self.store.read(), name)?;
        let table = store::route_table(self.store.read(), name)?;
        let net = &stored.network;
        let vlan = net.kind.parent().map(|p| p.name.clone());
        let release_vlan = self.store.write(|tx| {
            for id in &naming {
                store::delete_policy(tx, *id)?;
            }
            store::delete_network(tx, name)?;
            let rest = store::networks(tx)?;
            // A VLAN plumb made goes with the last network on it.
            let release = match &vlan {
                Some(v) => {
                    store::is_vlan_link(tx, v)?
                        && !rest
                            .iter()
                            .any(|n| n.network.kind.parent().is_some_and(|p| &p.name == v))
                }
                None => false,
            };
            if release {
                store::delete_vlan_link(tx, vlan.as_deref().unwrap_or_default())?;
            }
            firewall::sync(&firewall::Ruleset::load(tx)?)?;
            Ok(release)
        })?;
        if let (Some(e), Some((table, priority))) = (&net.egress, table) {
            let a = routing::Allocation { table, priority };
            errors.extend(
                routing::remove(&mut self.host, &routing::network_sources(net), e, a)
                    .into_iter()
                    .map(|e| e.to_string()),
            );
        }
        let mut removed = match &net.kind {
            NetworkKind::Bridge(b) => bridge::remove(&mut self.host, net, b, &state),
            NetworkKind::Macvlan(m) => macvlan::remove(&mut self.host, net, m),
            NetworkKind::Ipvlan(i) => ipvlan::remove(&mut self.host, net, i),
            NetworkKind::HostDevice(_) => Vec::new(),
        };
        if let (true, Some(v)) = (release_vlan, &vlan)
            && let Err(e) = self.host.delete_link_by_name(v)
        {
            removed.push(Error::kernel(format!("delete VLAN {v}"), e));
        }
        errors.extend(removed.into_iter().map(|e| e.to_string()));
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
        })
    }

    /// Write plumb's nftables state again when someone removed it (an
    /// `nft flush ruleset`, an `iptables -F`, Docker rebuilding its
    /// chains), and the legacy backend's accepts apart from it (a failure
    /// there, which may last, never makes the nftables tables be written
    /// again); true if it did.
    pub fn repair_firewall(&mut self) -> Result<bool> {
        let conn = self.store.read();
        // What decides whether a table is wanted; the members of its sets
        // (every attachment) are read only when it must be written.
        let wanted = firewall::Ruleset {
            networks: store::networks(conn)?
                .into_iter()
                .map(|n| n.network)
                .collect(),
            policies: store::policies(conn)?,
            ..Default::default()
        };
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
        let mut done = Vec::new();
        for n in store::networks(self.store.read())? {
            let net = n.network;
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
        Ok(done)
    }

    // ---- attachments ----

    pub fn attach(
        &mut self,
        target: &str,
        req: &AttachRequest,
        owner: Option<&str>,
    ) -> Result<Attachment> {
        self.attach_link(target, req, owner, Ipam::HostLocal)
    }

    /// First half of a DHCP attach, for the daemon that runs the client
    /// next: the interface exists and is up, without addresses, and is
    /// recorded as acquiring (so a daemon killed now leaves a trace that its
    /// successor cleans up). [`Engine::apply_lease`] finishes it.
    pub fn attach_dhcp_link(
        &mut self,
        target: &str,
        req: &AttachRequest,
        owner: Option<&str>,
    ) -> Result<Attachment> {
        self.attach_link(target, req, owner, Ipam::Dhcp)
    }

    fn attach_link(
        &mut self,
        target: &str,
        req: &AttachRequest,
        owner: Option<&str>,
        ipam: Ipam,
    ) -> Result<Attachment> {
        let parsed = Target::parse(target)?;
        tracing::debug!(target, network = %req.network, "attach");
        let ns = parsed.resolve()?;
        if ns.same_as(&self.host_ns) {
            return Err(Error::Target {
                target: target.into(),
                reason: "is the host's own network namespace".into(),
            });
        }
        let netns_id = ns.identity();
        let target_name = parsed.to_string();
        // A host device returns to the host: its undo needs the namespace.
        let host_ns = self
            .host_ns
            .try_clone()
            .map_err(|e| Error::io("keep the host namespace open", e))?;
        // One socket inside the target serves the whole attach.
        let mut inner = Netlink::open_in(&ns)
            .map_err(|e| Error::kernel(format!("open netlink in target {target_name}"), e))?;
        let holds = self.holds.clone();
        self.change(|tx, host, undo| {
            let net = store::require_network(tx, &req.network)?.network;
            check_ipam(&net, req, ipam)?;
            let existing = store::attachments_of_target(tx, Some(&netns_id), &target_name)?;
            if let Some(a) = existing.iter().find(|a| a.attachment.network == net.name) {
                return Err(Error::Conflict(format!(
                    "target `{target_name}` is already attached to network `{}` as {}",
                    net.name, a.attachment.ifname
                )));
            }
            let ifname = match &req.ifname {
                Some(n) => {
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
                None => free_ifname(&mut inner, &existing)?,
            };
            validate_ifname("--ifname", &ifname)?;
            let mut attachment = Attachment {
                network: net.name.clone(),
                target: target_name.clone(),
                netns: netns_id.clone(),
                host_ifname: match &net.kind {
                    // A host device is known on the host by its own name.
                    NetworkKind::HostDevice(d) => d.device.clone(),
                    _ => names::host_veth_name(&net.name, &netns_id, &ifname),
                },
                mac: req.mac.unwrap_or(crate::model::Mac(match ipam {
                    Ipam::HostLocal => names::container_mac(&net.name, &netns_id, &ifname),
                    Ipam::Dhcp => names::dhcp_mac(&names::host_identity(), &net.name, &target_name),
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
                host_addresses: Vec::new(),
                dhcp: (ipam == Ipam::Dhcp).then(|| dhcp_binding(&net, req, &target_name)),
                publish: req.publish.clone(),
                rate: req.rate,
                labels: req.labels.clone(),
                allow_spoofing: req.allow_spoofing,
                egress: None,
            };
            let holder = store::attachment_owner(&attachment.host_ifname);
            if ipam == Ipam::HostLocal {
                attachment.addresses = assign_addresses(tx, &net, &req.ips, &holder)?;
                attachment.gateways = gateways_for(&net, &attachment.addresses);
            }
            // A host device that keeps its own addresses learns them only as
            // it moves; then the kernel judges the routes (and a refusal is
            // rolled back like any failure).
            if !attachment.addresses.is_empty() {
                check_routes(&attachment)?;
            }
            tracing::debug!(ifname = %attachment.ifname, "addresses reserved");
            // A DHCP interface comes up bare: its routes need the lease's
            // address, and go on with it.
            let routes_later = match ipam {
                Ipam::Dhcp => std::mem::take(&mut attachment.routes),
                Ipam::HostLocal => Vec::new(),
            };
            if let NetworkKind::HostDevice(d) = &net.kind
                && let Some(holder) = store::attachments_of_network(tx, &net.name)?.first()
            {
                return Err(Error::Conflict(format!(
                    "device {} is already attached to target `{}`",
                    d.device, holder.attachment.target
                )));
            }
            plug(host, &mut inner, &ns, &host_ns, &net, &mut attachment, undo)?;
            attachment.routes.extend(routes_later);
            store::insert_attachment(tx, &attachment, owner)?;
            if !attachment.publish.is_empty() {
                publish(tx, &net, &attachment, holds.as_ref(), undo)?;
            }
            add_filters(tx, &net, &ns, &attachment, undo)?;
            if let Some(e) = &req.egress {
                attachment.egress = Some(own_egress(tx, host, &net, &attachment, e, undo)?);
                store::update_attachment(tx, &attachment)?;
            }
            tracing::debug!("kernel configured");
            Ok(attachment)
        })
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
            let mut next = cur.clone();
            let binding = next.dhcp.as_mut().ok_or_else(|| not_dhcp(a))?;
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
        Ok(self
            .attachments()?
            .into_iter()
            .map(|s| s.attachment)
            .filter(|a| attached_ns(a).is_none())
            .collect())
    }

    /// Detach a target from one network or all; detaching what is not
    /// attached succeeds with an empty list.
    pub fn detach(&mut self, target: &str, network: Option<&str>) -> Result<Vec<Attachment>> {
        let parsed = Target::parse(target)?;
        if let Some(n) = network {
            store::require_network(self.store.read(), n)?;
        }
        let netns_id = parsed.resolve().ok().map(|ns| ns.identity());
        let found = store::attachments_of_target(
            self.store.read(),
            netns_id.as_deref(),
            &parsed.to_string(),
        )?;
        let mut done = Vec::new();
        for a in found
            .into_iter()
            .filter(|a| network.is_none_or(|n| a.attachment.network == n))
        {
            self.detach_one(&a)?;
            done.push(a.attachment);
        }
        Ok(done)
    }

    fn detach_one(&mut self, a: &StoredAttachment) -> Result<()> {
        let a_net = store::require_network(self.store.read(), &a.attachment.network)?.network;
        if !a.attachment.publish.is_empty() {
            if let Err(e) = firewall::unpublish(&a.attachment) {
                tracing::warn!(target = %a.attachment.target, "unpublish: {e}");
            }
            for p in &a.attachment.publish {
                if let Some(holds) = &self.holds {
                    ports::lock(holds).release(p);
                }
                ports::forget_flows(p);
            }
        }
        if let Some(own) = &a.attachment.egress {
            let sources = routing::attachment_sources(&a.attachment);
            for e in routing::remove(&mut self.host, &sources, &own.egress, own.into()) {
                tracing::warn!(target = %a.attachment.target, "egress routing: {e}");
            }
        }
        let elements = filter_elements(self.store.read(), &a_net, &a.attachment)?;
        if let Err(e) = elements::apply(&elements, &[]) {
            tracing::warn!(target = %a.attachment.target, "nftables sets: {e}");
        }
        if antispoof::guards_container(&a_net, &a.attachment)
            && let Some(ns) = attached_ns(&a.attachment)
            && let Err(e) = unguard_container(&ns, &a.attachment)
        {
            tracing::warn!(target = %a.attachment.target, "guard table: {e}");
        }
        match &a_net.kind {
            NetworkKind::Bridge(_) => bridge::detach(&mut self.host, &a.attachment)?,
            NetworkKind::Macvlan(_) | NetworkKind::Ipvlan(_) => {
                parent::detach_child(attached_ns(&a.attachment).as_ref(), &a.attachment)?
            }
            NetworkKind::HostDevice(_) => host_device::give_back(
                &mut self.host,
                attached_ns(&a.attachment).as_ref(),
                &self.host_ns,
                &a.attachment,
            )?,
        }
        // An ifb shaping what a non-veth interface received stays in the
        // container unless taken away.
        if a.attachment.rate.is_some_and(|r| r.ingress.is_some())
            && !matches!(a_net.kind, NetworkKind::Bridge(_))
            && let Some(ns) = attached_ns(&a.attachment)
            && let Ok(mut nl) = Netlink::open_in(&ns)
        {
            let _ = nl.delete_link_by_name(&names::ifb_name(&a.attachment.ifname));
        }
        self.store
            .write(|tx| store::delete_attachment(tx, &a.attachment))
    }

    pub fn attachments(&self) -> Result<Vec<StoredAttachment>> {
        store::attachments(self.store.read())
    }

    /// A target's attachments; those taking IPv6 from router
    /// advertisements show the addresses and router the kernel has now.
    pub fn attachments_of(&self, target: &str) -> Result<Vec<StoredAttachment>> {
        let parsed = Target::parse(target)?;
        let ns = parsed.resolve().ok();
        let netns_id = ns.as_ref().map(|ns| ns.identity());
        let mut found = store::attachments_of_target(
            self.store.read(),
            netns_id.as_deref(),
            &parsed.to_string(),
        )?;
        if let Some(ns) = &ns {
            for s in found.iter_mut() {
                if s.attachment.dhcp.as_ref().is_some_and(|b| b.slaac) {
                    add_autoconf_ipv6(ns, &mut s.attachment);
                }
            }
        }
        Ok(found)
    }

    // ---- host side of a lab ----

    /// Add a route on the host to a subnet behind a router (a container).
    pub fn host_route_add(&mut self, route: &RouteSpec, owner: Option<&str>) -> Result<()> {
        self.change(|tx, host, undo| {
            if store::host_routes(tx)?
                .iter()
                .any(|r| r.dest == route.dest.to_string())
            {
                return Err(Error::invalid(
                    "host route",
                    route,
                    "a host route to this destination is already managed by plumb",
                ));
            }
            store::insert_host_route(
                tx,
                &HostRoute {
                    dest: route.dest.to_string(),
                    via: route.via.to_string(),
                    owner: owner.map(String::from),
                },
            )?;
            host.add_route(route.dest, Some(route.via), None, false)
                .map_err(|e| Error::kernel(format!("add host route {route}"), e))?;
            let r = route.clone();
            undo.push(format!("remove host route {r}"), move |nl| {
                nl.del_route(r.dest, Some(r.via), None)
                    .map_err(|e| Error::kernel("remove host route", e))
            });
            Ok(())
        })
    }

    pub fn host_route_rm(&mut self, dest: &IpNet) -> Result<bool> {
        let known = store::host_routes(self.store.read())?
            .into_iter()
            .find(|r| r.dest == dest.to_string());
        let Some(known) = known else { return Ok(false) };
        let via: IpAddr = known.via.parse().map_err(|_| {
            Error::Conflict(format!(
                "stored host route {} has a bad gateway",
                known.dest
            ))
        })?;
        match self.host.del_route(*dest, Some(via), None) {
            Ok(()) => {}
            Err(e) if e.is(libc::ESRCH) => {}
            Err(e) => return Err(Error::kernel(format!("remove host route {dest}"), e)),
        }
        self.store
            .write(|tx| store::delete_host_route(tx, &known.dest))?;
        Ok(true)
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
        let created = netns::create_named(name)
            .map_err(|e| Error::io(format!("create namespace {name}"), e))?;
        if created
            && let Err(e) = self
                .store
                .write(|tx| store::insert_namespace(tx, name, owner))
        {
            let _ = netns::delete_named(name);
            return Err(e);
        }
        if forwarding && let Err(e) = enable_forwarding_in(name) {
            if created {
                let _ = self.namespace_delete(name);
            }
            return Err(e);
        }
        Ok(created)
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

/// An attachment's own uplink: a table and rules selecting its addresses
/// (nat and routed bridges, where the host routes its traffic).
fn own_egress(
    tx: &Transaction,
    host: &mut Netlink,
    net: &Network,
    a: &Attachment,
    e: &Egress,
    undo: &mut UndoLog,
) -> Result<AttachmentEgress> {
    if !matches!(&net.kind, NetworkKind::Bridge(b) if b.mode != BridgeMode::Bridged) {
        return Err(Error::invalid(
            "--egress-interface",
            &e.interface,
            "only nat and routed bridge networks leave through the host's routing",
        ));
    }
    let alloc = routing::allocate(tx, host, routing::Owner::Attachment(&a.host_ifname))?;
    routing::install(host, &routing::attachment_sources(a), e, alloc, undo)?;
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

/// Filters for a new attachment: elements only, and for a macvlan its own
/// guard table.
fn add_filters(
    tx: &Transaction,
    net: &Network,
    ns: &NsHandle,
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let added = filter_elements(tx, net, a)?;
    if !added.is_empty() {
        elements::apply(&[], &added)?;
        undo.push(
            format!("take {} out of nftables sets", a.target),
            move |_| elements::apply(&added, &[]),
        );
    }
    if antispoof::guards_container(net, a) {
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
    Ok(())
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

/// Reserve an attachment's host ports in the store and add them to the
/// nftables maps (elements only, no rule changes), refusing a port another
/// plumb attachment, another tool's DNAT rule or a socket has. The daemon
/// then keeps the ports bound (`holds`); a plumb on its own says they are
/// not. UDP flows still going to whoever had the port before are
/// forgotten.
fn publish(
    tx: &Transaction,
    net: &Network,
    a: &Attachment,
    holds: Option<&Arc<Mutex<Holds>>>,
    undo: &mut UndoLog,
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
        match holds {
            Some(holds) => {
                ports::lock(holds).hold(p)?;
                let (holds, p) = (holds.clone(), *p);
                undo.push(format!("let host port {} go", p.host_port), move |_| {
                    ports::lock(&holds).release(&p);
                    Ok(())
                });
            }
            None => {
                ports::check_sockets(p)?;
                tracing::warn!(
                    "--publish {p}: no plumb daemon runs to keep host port {}/{} bound, so \
                     another program may still bind it",
                    p.host_port,
                    p.proto
                );
            }
        }
    }
    store::insert_publications(tx, a)?;
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
    match &net.kind {
        NetworkKind::Bridge(b) => bridge::attach(host, inner, ns, net, b, a, undo),
        NetworkKind::Macvlan(m) => macvlan::attach(host, inner, ns, m, a, undo),
        NetworkKind::Ipvlan(i) => ipvlan::attach(host, inner, ns, i, a, undo),
        NetworkKind::HostDevice(d) => host_device::attach(host, inner, ns, host_ns, d, a, undo),
    }?;
    if let Some(r) = a.rate {
        shape(host, inner, ns, net, a, r, undo)?;
    }
    Ok(())
}

/// Rate limits as token buckets. What the container sends is shaped on its
/// own interface, whatever the driver. What it receives is shaped on the
/// host end of its veth, or, where there is none (macvlan, ipvlan, host
/// device), on an ifb inside the container that its interface's incoming
/// traffic is redirected to. Qdiscs go with their interfaces; the ifb has
/// an undo of its own.
fn shape(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    net: &Network,
    a: &Attachment,
    r: RateLimit,
    undo: &mut UndoLog,
) -> Result<()> {
    let index = |nl: &mut Netlink, name: &str| -> Result<u32> {
        nl.link_by_name(name)
            .map_err(|e| Error::kernel(format!("look up {name}"), e))?
            .map(|l| l.index)
            .ok_or_else(|| Error::Conflict(format!("{name} vanished")))
    };
    let inside =
        |what: String| move |e| Error::kernel(format!("in target {}: {what}", a.target), e);
    if let Some(bps) = r.egress {
        let i = index(inner, &a.ifname)?;
        inner
            .set_rate(i, bps, r.burst)
            .map_err(inside(format!("limit {} to {bps} bit/s", a.ifname)))?;
    }
    let Some(bps) = r.ingress else { return Ok(()) };
    if matches!(net.kind, NetworkKind::Bridge(_)) {
        let i = index(host, &a.host_ifname)?;
        return host
            .set_rate(i, bps, r.burst)
            .map_err(|e| Error::kernel(format!("limit {} to {bps} bit/s", a.host_ifname), e));
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
    let ifb_index = index(inner, &ifb)?;
    inner
        .set_up(ifb_index)
        .map_err(inside(format!("set {ifb} up")))?;
    inner
        .set_rate(ifb_index, bps, r.burst)
        .map_err(inside(format!("limit {ifb} to {bps} bit/s")))?;
    let i = index(inner, &a.ifname)?;
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
fn dhcp_binding(net: &Network, req: &AttachRequest, target: &str) -> DhcpBinding {
    let host = names::host_identity();
    let hostname = req
        .hostname
        .clone()
        .unwrap_or_else(|| names::dhcp_hostname(target));
    DhcpBinding {
        fqdn: net.domain.as_ref().map(|d| format!("{hostname}.{d}")),
        hostname,
        client_id: crate::ipam::dhcp::hex(&names::dhcp_client_id(&host, &net.name, target)),
        state: LeaseState::Acquiring,
        lease: None,
        mtu_from_lease: req.mtu.is_none() && net.mtu.is_none(),
        slaac: net.slaac,
        lease6: None,
    }
}

/// The IPv4 side of a DHCP attachment: what a DHCPv4 lease put on it.
fn v4_part(a: &Attachment) -> Attachment {
    let mut v4 = a.clone();
    v4.addresses.retain(|x| x.addr().is_ipv4());
    v4.gateways.retain(|g| g.is_ipv4());
    v4
}

/// Option 121 routes, as the attachment's route type.
fn lease_routes(lease: &Lease) -> Vec<RouteSpec> {
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

pub fn attached_ns(a: &Attachment) -> Option<NsHandle> {
    let ns = Target::parse(&a.target).ok()?.resolve().ok()?;
    (ns.identity() == a.netns).then_some(ns)
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
    owner: &str,
) -> Result<Vec<IpNet>> {
    let mut out = Vec::new();
    for ip in ips {
        out.push(host_local::reserve(tx, net, *ip, owner, "--ip")?);
    }
    for sub in &net.subnets {
        let v4 = sub.subnet.addr().is_ipv4();
        if out.iter().any(|a: &IpNet| a.addr().is_ipv4() == v4) {
            continue;
        }
        out.push(host_local::allocate(tx, net, sub, owner)?);
    }
    Ok(out)
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
