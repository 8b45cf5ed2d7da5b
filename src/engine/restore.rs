//! `restore`: re-create from the store what the kernel lost (a reboot, a
//! flushed ruleset, a deleted link). Each network and attachment is
//! repaired on its own, with its own undo log: one that cannot be repaired
//! is reported and the rest go on.

use std::collections::HashSet;

use ipnet::IpNet;

use super::{Engine, attached_ns, lease_routes, plug};
use crate::driver::{self, kinds, parent};
use crate::error::{Error, Result};
use crate::ipam::dhcp::now_unix;
use crate::model::{Attachment, LeaseState, Network};
use crate::names;
use crate::netlink::Netlink;
use crate::policy::{antispoof, firewall, legacy};
use crate::store::intent::Subject;
use crate::store::{self, StoredAttachment};
use crate::undo::UndoLog;

/// What a restore did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RestoreReport {
    /// What was re-created, one line each.
    pub repaired: Vec<String>,
    /// Attachments whose namespace is gone, removed from the store.
    pub removed: Vec<String>,
    /// What could not be repaired, and why.
    pub errors: Vec<String>,
}

impl Engine {
    pub fn restore(&mut self) -> Result<RestoreReport> {
        self.as_repair(Self::restore_now)
    }

    fn restore_now(&mut self) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        // Changes a dead process left half done go first; those a live one
        // is making are its own, and not restored under its feet.
        let recovery = self.recover()?;
        report.repaired.extend(recovery.done);
        report.errors.extend(recovery.errors);
        match self.sweep_orphans() {
            Ok(removed) => report
                .repaired
                .extend(removed.into_iter().map(|o| format!("removed {o}"))),
            Err(e) => report.errors.push(e.to_string()),
        }
        let (networks, busy_attachments) = self.settled_networks()?;
        for net in &networks {
            if let Err(e) = self.restore_network(net, &mut report) {
                report.errors.push(format!("network `{}`: {e}", net.name));
            }
        }
        // The whole tables are written again (set elements included), and
        // the accepts in iptables' chains that a restarted Docker or an
        // `iptables -F` may have taken; said when something was missing.
        let synced = firewall::Ruleset::load(self.store.read()).and_then(|r| {
            let missing = !firewall::in_place(&r)?;
            firewall::sync_tables(&r)?;
            Ok((r.networks, missing))
        });
        match synced {
            Ok((networks, missing)) => {
                if missing {
                    report
                        .repaired
                        .push("plumb's nftables tables and iptables accepts".into());
                }
                let legacy = legacy::accepts_in_place(&networks).and_then(|in_place| {
                    if !in_place {
                        legacy::sync_accepts(&networks)?;
                    }
                    Ok(in_place)
                });
                match legacy {
                    Ok(true) => {}
                    Ok(false) => report.repaired.push("the legacy iptables accepts".into()),
                    Err(e) => report.errors.push(format!("legacy iptables: {e}")),
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        match self.repair_egress() {
            Ok(done) => report.repaired.extend(done),
            Err(e) => report.errors.push(e.to_string()),
        }
        match self.repair_shims() {
            Ok(done) => report.repaired.extend(done),
            Err(e) => report.errors.push(e.to_string()),
        }
        self.repair_host_routes(&mut report)?;
        for s in store::attachments(self.store.read())? {
            let a = &s.attachment;
            if busy_attachments.contains(&a.host_ifname) {
                continue;
            }
            let label = format!("{} on {} ({})", a.target, a.network, a.ifname);
            // A staged interface waits for Docker, which removes it.
            if a.is_staged() {
                continue;
            }
            if attached_ns(a).is_none() {
                match self.detach_one(&s) {
                    Ok(()) => report.removed.push(label),
                    Err(e) => report.errors.push(format!("{label}: {e}")),
                }
                continue;
            }
            let Some(net) = networks.iter().find(|n| n.name == a.network) else {
                continue;
            };
            match self.restore_attachment(net, &s) {
                Ok(true) => report.repaired.push(label),
                Ok(false) => {}
                Err(e) => report.errors.push(format!("{label}: {e}")),
            }
        }
        Ok(report)
    }

    /// The networks no change is under way on, which a repair may touch,
    /// and the attachments one is under way on, which it may not.
    fn settled_networks(&self) -> Result<(Vec<Network>, HashSet<String>)> {
        let busy_networks = self.busy(Subject::Network)?;
        let networks = store::networks(self.store.read())?
            .into_iter()
            .map(|n| n.network)
            .filter(|n| !busy_networks.contains(&n.name))
            .collect();
        Ok((networks, self.busy(Subject::Attachment)?))
    }

    /// Put back the host routes plumb added that the kernel lost (one a
    /// change is under way on is its maker's).
    pub fn repair_host_routes(&mut self, report: &mut RestoreReport) -> Result<()> {
        self.as_repair(|e| e.repair_host_routes_now(report))
    }

    fn repair_host_routes_now(&mut self, report: &mut RestoreReport) -> Result<()> {
        let busy = self.busy(Subject::HostRoute)?;
        for r in store::host_routes(self.store.read())? {
            if busy.contains(&r.dest) {
                continue;
            }
            let (Ok(dest), Ok(via)) = (r.dest.parse::<IpNet>(), r.via.parse()) else {
                continue;
            };
            match self.host.add_route(dest, Some(via), None, false) {
                Ok(()) => report.repaired.push(format!("host route {dest} via {via}")),
                Err(e) if e.is(libc::EEXIST) => {}
                Err(e) => report
                    .errors
                    .push(Error::kernel(format!("host route {dest} via {via}"), e).to_string()),
            }
        }
        Ok(())
    }

    /// Repair what a change to these host links may have broken (the
    /// daemon's answer to the kernel's notifications): the networks whose
    /// bridge, uplink or host shim they are, with those networks' ports,
    /// and the attachments whose host end they are. A change under way is
    /// its maker's; a name plumb does not know is someone else's.
    pub fn repair_links(&mut self, names: &[String]) -> Result<RestoreReport> {
        self.as_repair(|e| e.repair_links_now(names))
    }

    fn repair_links_now(&mut self, names: &[String]) -> Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let (networks, busy_attachments) = self.settled_networks()?;
        let mut attachments: Vec<StoredAttachment> = Vec::new();
        for net in &networks {
            let concerned = kinds::of(&net.kind)
                .host_links(net)
                .iter()
                .any(|l| names.contains(l));
            if !concerned {
                continue;
            }
            if let Err(e) = self.restore_network(net, &mut report) {
                report.errors.push(format!("network `{}`: {e}", net.name));
            }
            attachments.extend(store::attachments_of_network(self.store.read(), &net.name)?);
        }
        for name in names {
            if let Some(a) = store::attachment(self.store.read(), name)?
                && !attachments
                    .iter()
                    .any(|s| s.attachment.host_ifname == *name)
            {
                attachments.push(StoredAttachment {
                    attachment: a,
                    owner: None,
                });
            }
        }
        for s in attachments {
            let a = &s.attachment;
            // A namespace that is gone is the reconcile loop's to clean up.
            if busy_attachments.contains(&a.host_ifname) || attached_ns(a).is_none() {
                continue;
            }
            let Some(net) = networks.iter().find(|n| n.name == a.network) else {
                continue;
            };
            let label = format!("{} on {} ({})", a.target, a.network, a.ifname);
            // A DHCP interface made again is for `restore`, which stops and
            // resumes its lease task around it; here only its port is.
            let repaired = match &a.dhcp {
                Some(_) => kinds::of(&net.kind).repair_port(&mut self.host, net, a),
                None => self.restore_attachment(net, &s),
            };
            match repaired {
                Ok(true) => report.repaired.push(label),
                Ok(false) => {}
                Err(e) => report.errors.push(format!("{label}: {e}")),
            }
        }
        Ok(report)
    }

    fn restore_network(&mut self, net: &Network, report: &mut RestoreReport) -> Result<()> {
        let mut undo = UndoLog::default();
        let result = self.repair_network(net, report, &mut undo);
        if let Err(e) = result {
            return Err(undo.rollback(&mut self.host, e));
        }
        Ok(())
    }

    fn repair_network(
        &mut self,
        net: &Network,
        report: &mut RestoreReport,
        undo: &mut UndoLog,
    ) -> Result<()> {
        let host = &mut self.host;
        if let Some(p) = net.kind.parent()
            && store::is_vlan_link(self.store.read(), &p.name)?
            && parent::ensure(host, p, undo)?
        {
            report.repaired.push(format!("VLAN {}", p.name));
        }
        let stored = store::host_state(self.store.read(), &net.name)?;
        if let Some((what, state)) = kinds::of(&net.kind).repair(host, net, &stored, undo)? {
            if let Some(state) = state {
                self.store
                    .write(|tx| store::set_host_state(tx, &net.name, &state))?;
            }
            report.repaired.push(what);
        }
        Ok(())
    }

    /// Re-create an attachment's interface when it is gone, or put back
    /// its addresses and routes when they are; true when anything changed.
    fn restore_attachment(&mut self, net: &Network, s: &StoredAttachment) -> Result<bool> {
        let a = &s.attachment;
        let ns = attached_ns(a).ok_or_else(|| super::gone(a))?;
        let port_repaired = kinds::of(&net.kind).repair_port(&mut self.host, net, a)?;
        let mut inner = Netlink::open_in(&ns)
            .map_err(|e| Error::kernel(format!("open netlink in target {}", a.target), e))?;
        // A DHCP attachment keeps its lease only while it is valid; the
        // daemon acquires a new one otherwise.
        let lease = a
            .dhcp
            .as_ref()
            .and_then(|b| b.lease.clone())
            .filter(|l| l.expires_at() > now_unix());
        let extra = lease.as_ref().map(lease_routes).unwrap_or_default();
        let want = match (&a.dhcp, &lease) {
            (Some(_), None) => bare(a),
            _ => a.clone(),
        };
        let link = inner
            .link_by_name(&a.ifname)
            .map_err(|e| Error::kernel(format!("look up {} in {}", a.ifname, a.target), e))?;
        if let Some(link) = link {
            // What is there is compared with the record, piece by piece.
            let mut changed = port_repaired;
            if !link.up {
                inner
                    .set_up(link.index)
                    .map_err(|e| Error::kernel(format!("set {} up", a.ifname), e))?;
                changed = true;
            }
            let have = inner.addresses(link.index).unwrap_or_default();
            let addressed = want.addresses.iter().all(|x| have.contains(x))
                && link.mtu == want.mtu
                && driver::routes_in_place(&mut inner, link.index, &want, &extra);
            // Taking the interface down flushes its routes: a link that was
            // down is addressed again whatever it still has.
            if !addressed || !link.up {
                driver::install_addressing(&mut inner, &want, &extra)?;
                changed = true;
            }
            if let Some(r) = a.rate
                && !self.shaping_in_place(&mut inner, net, a, r)?
            {
                let mut undo = UndoLog::default();
                let shaped = super::shape_host(&mut self.host, net, a, r)
                    .and_then(|()| super::shape_inside(&mut inner, &ns, net, a, r, &mut undo));
                if let Err(e) = shaped {
                    return Err(undo.rollback(&mut self.host, e));
                }
                changed = true;
            }
            if antispoof::guards_container(net, a) && !super::guard_in_place(&ns, a)? {
                super::guard_container(&ns, &want)?;
                changed = true;
            }
            return Ok(changed);
        }
        let host_ns = self
            .host_ns
            .try_clone()
            .map_err(|e| Error::io("keep the host namespace open", e))?;
        let mut undo = UndoLog::default();
        // The interface comes up bare for DHCP (as in an attach), then gets
        // the lease's addressing.
        let mut plugged = match a.dhcp {
            Some(_) => bare(a),
            None => a.clone(),
        };
        let done = plug(
            &mut self.host,
            &mut inner,
            &ns,
            &host_ns,
            net,
            &mut plugged,
            &mut undo,
        )
        .and_then(|()| match (&a.dhcp, &lease) {
            (Some(_), Some(_)) => driver::install_addressing(&mut inner, &want, &extra),
            _ => Ok(()),
        });
        if let Err(e) = done {
            return Err(undo.rollback(&mut self.host, e));
        }
        // A macvlan's guard hooks its interface, which is new.
        if antispoof::guards_container(net, a) {
            super::guard_container(&ns, &want)?;
        }
        if let (Some(b), None) = (&a.dhcp, &lease)
            && b.lease.is_some()
        {
            self.drop_lease(a, LeaseState::Expired)?;
        }
        Ok(true)
    }
}

impl Engine {
    /// Whether an attachment's rate limits are on its devices: a token
    /// bucket as the root qdisc of its interface (what it sends) and of its
    /// host end or its ifb (what it receives), the ifb fed by a redirect.
    fn shaping_in_place(
        &mut self,
        inner: &mut Netlink,
        net: &Network,
        a: &Attachment,
        r: crate::model::RateLimit,
    ) -> Result<bool> {
        let tbf_on = |nl: &mut Netlink, name: &str| -> Result<bool> {
            let Some(link) = nl
                .link_by_name(name)
                .map_err(|e| Error::kernel(format!("look up {name}"), e))?
            else {
                return Ok(false);
            };
            Ok(nl
                .root_qdisc(link.index)
                .map_err(|e| Error::kernel(format!("ask for the qdisc of {name}"), e))?
                .as_deref()
                == Some("tbf"))
        };
        if r.egress.is_some() && !tbf_on(inner, &a.ifname)? {
            return Ok(false);
        }
        if r.ingress.is_none() {
            return Ok(true);
        }
        if kinds::of(&net.kind).has_host_port() {
            return tbf_on(&mut self.host, &a.host_ifname);
        }
        let ifb = names::ifb_name(&a.ifname);
        if tbf_on(inner, &ifb)? {
            return Ok(true);
        }
        // The redirect to an ifb that is gone goes too, and is made again
        // with the ifb.
        if let Some(link) = inner
            .link_by_name(&a.ifname)
            .map_err(|e| Error::kernel(format!("look up {}", a.ifname), e))?
        {
            inner.delete_ingress(link.index).map_err(|e| {
                Error::kernel(format!("remove the ingress qdisc of {}", a.ifname), e)
            })?;
        }
        Ok(false)
    }
}

/// A DHCP attachment's interface as it is before a lease: no addresses,
/// gateways or routes.
fn bare(a: &Attachment) -> Attachment {
    Attachment {
        addresses: Vec::new(),
        gateways: Vec::new(),
        routes: Vec::new(),
        ..a.clone()
    }
}
