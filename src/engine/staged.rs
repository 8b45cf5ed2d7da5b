//! Attachments whose interface someone else moves into the target:
//! Docker's remote driver protocol has plumb make the interface on the
//! host (CreateEndpoint), and libnetwork moves and renames it into the
//! container, giving it the addresses and routes plumb chose. The
//! attachment is made in two halves:
//! - [`Engine::stage`]: everything on the host (addresses reserved, the
//!   interface under its staged name, set elements, published ports,
//!   egress routing, shaping of the host end), recorded with no namespace;
//! - [`Engine::finish_staged`], once the interface is inside: the
//!   namespace is recorded, and what lives in the container (shaping of
//!   what it sends, an ifb, its guard table) is added.
//!
//! [`Engine::unstage`] is the way back when Docker returns the interface
//! to the host (Leave) before removing the endpoint.

use super::*;

/// Where an attach puts its interface.
pub(crate) enum Placement {
    /// Inside the target, made there by plumb.
    Inside(Opened),
    /// On the host, for Docker to move: the endpoint's ID names it.
    Staged { endpoint: String },
}

/// The namespace at `sandbox` if it is one and holds the staged interface
/// of `a` as Docker leaves it: renamed and up (libnetwork moves it in,
/// then renames, addresses and sets it up).
pub fn arrived_in(sandbox: &std::path::Path, a: &Attachment) -> Option<NsHandle> {
    let ns = NsHandle::open(sandbox).ok()?;
    let mut nl = Netlink::open_in(&ns).ok()?;
    nl.links()
        .ok()?
        .iter()
        .any(|l| is_staged_link(l, a) && l.up && l.name != a.ifname)
        .then_some(ns)
}

/// Whether `l` is the staged interface of `a`: by the alias plumb tagged it
/// with, else (a host device, or one staged before plumb tagged them) by
/// its MAC.
fn is_staged_link(l: &crate::netlink::LinkInfo, a: &Attachment) -> bool {
    match &l.alias {
        Some(alias) if alias.starts_with(names::STAGED_ALIAS) => {
            *alias == names::staged_alias(&a.host_ifname)
        }
        _ => l.mac == Some(a.mac.0),
    }
}

impl Engine {
    /// The first half of an attach for Docker's endpoint `endpoint`. On a
    /// DHCP network the interface is staged bare, as a DHCP attach's: its
    /// lease is the daemon's to get once the interface is in its container.
    pub fn stage(&mut self, endpoint: &str, req: &AttachRequest) -> Result<Attachment> {
        let placement = Placement::Staged {
            endpoint: endpoint.to_string(),
        };
        let ipam = store::require_network(self.store.read(), &req.network)?
            .network
            .ipam;
        self.attach_link(placement, req, None, ipam)
    }

    /// Set the staged interface of `a` up on the host, IPv6 off (it is
    /// the container's, not the host's), so that it can ask whether the
    /// LAN has a DHCP server before Docker moves it. The host's namespace.
    pub fn staged_up(&mut self, a: &Attachment) -> Result<NsHandle> {
        bridge::disable_ipv6_on_port(&a.ifname)?;
        let index = link_index(&mut self.host, &a.ifname)?;
        self.host
            .set_up(index)
            .map_err(|e| Error::kernel(format!("set {} up", a.ifname), e))?;
        self.host_ns
            .try_clone()
            .map_err(|e| Error::io("keep the host namespace open", e))
    }

    /// Whether the staged interface of `a` is on the host.
    pub fn staged_on_host(&mut self, a: &Attachment) -> Result<bool> {
        Ok(self
            .host
            .link_by_name(&a.ifname)
            .map_err(|e| Error::kernel(format!("look up {}", a.ifname), e))?
            .is_some())
    }

    /// The second half, once the staged interface `host_ifname` is in
    /// namespace `ns` (found there by its MAC): recorded with `target` (the
    /// sandbox Docker joined its endpoint to), and what belongs inside
    /// added. Finishing one finished in that namespace already changes
    /// nothing; one whose endpoint left that sandbox meanwhile (Docker's
    /// Leave comes before it takes the interface out) is not finished.
    pub fn finish_staged(
        &mut self,
        host_ifname: &str,
        ns: &NsHandle,
        target: &str,
    ) -> Result<Attachment> {
        let a = store::attachment(self.store.read(), host_ifname)?
            .ok_or_else(|| Error::Conflict(format!("no attachment {host_ifname}")))?;
        if !a.is_staged() && a.is_in(ns) {
            return Ok(a);
        }
        let net = store::require_network(self.store.read(), &a.network)?.network;
        let mut inner = Netlink::open_in(ns)
            .map_err(|e| Error::kernel(format!("open netlink in {target}"), e))?;
        let link = inner
            .links()
            .map_err(|e| Error::kernel(format!("list links in {target}"), e))?
            .into_iter()
            .find(|l| is_staged_link(l, &a))
            .ok_or_else(|| {
                Error::Conflict(format!("{target}: no interface of {}", a.host_ifname))
            })?;
        let mut done = a.clone();
        done.netns = ns.identity();
        done.netns_cookie = ns.cookie();
        done.ifname = link.name;
        done.target = target.to_string();
        let mut undo = UndoLog::default();
        let inside = (|| {
            if let Some(r) = done.rate {
                shape_inside(&mut inner, ns, &net, &done, r, &mut undo)?;
            }
            if antispoof::guards_container(&net, &done) {
                guard_container(ns, &done)?;
            }
            self.store.write(|tx| {
                let now = store::attachment(tx, &done.host_ifname)?
                    .filter(|now| now.is_staged())
                    .ok_or_else(|| Error::Conflict(format!("{host_ifname} changed meanwhile")))?;
                let joined = a
                    .staged_endpoint()
                    .map(|e| store::docker::endpoint(tx, e))
                    .transpose()?
                    .flatten()
                    .and_then(|e| e.sandbox);
                if joined.as_deref() != Some(target) {
                    return Err(Error::Conflict(format!(
                        "{host_ifname}: its endpoint left {target} meanwhile"
                    )));
                }
                // Its container may have been learnt meanwhile: it is
                // known by it then.
                if now.container.is_some() {
                    done.container = now.container;
                    done.process = now.process;
                    done.target = now.target;
                }
                store::update_attachment(tx, &done)
            })
        })();
        match inside {
            Ok(()) => Ok(done),
            Err(e) => {
                if antispoof::guards_container(&net, &done) {
                    let _ = unguard_container(ns, &done);
                }
                Err(undo.rollback(&mut self.host, e))
            }
        }
    }

    /// Give staged DHCP attachment `host_ifname` the lease plumb's IPAM
    /// driver took for its endpoint, as the client that took it. Docker
    /// puts the address on in the container; the daemon renews it there.
    pub fn bind_staged_lease(
        &mut self,
        host_ifname: &str,
        taken: &crate::store::docker::PoolLease,
    ) -> Result<Attachment> {
        let next = self.store.write(|tx| {
            let cur = store::attachment(tx, host_ifname)?
                .filter(|a| a.is_staged())
                .ok_or_else(|| Error::Conflict(format!("no staged attachment {host_ifname}")))?;
            let mut with = cur.clone();
            let b = with.dhcp.as_mut().ok_or_else(|| not_dhcp(&cur))?;
            b.client_id = taken.client_id.clone();
            b.hostname = String::new();
            b.fqdn = None;
            b.for_docker = true;
            let (next, _) = leased(&with, &taken.lease)?;
            move_filters(tx, &cur, &next)?;
            store::update_attachment(tx, &next)?;
            Ok((next, cur.mtu))
        });
        let (next, mtu) = next?;
        if next.mtu != mtu {
            let index = link_index(&mut self.host, &next.ifname)?;
            self.host.set_mtu(index, next.mtu).map_err(|e| {
                Error::kernel(format!("set MTU {} on {}", next.mtu, next.ifname), e)
            })?;
        }
        Ok(next)
    }

    /// Docker's Leave: the interface of `host_ifname` is about to leave its
    /// container (Docker gives it its staged name back on the host). What
    /// was added inside goes, and the attachment waits on the host again,
    /// its endpoint joined to no sandbox, in one commit.
    pub fn unstage(&mut self, host_ifname: &str, endpoint: &str) -> Result<()> {
        let Some(a) = store::attachment(self.store.read(), host_ifname)? else {
            return Ok(());
        };
        if a.is_staged() {
            return self
                .store
                .write(|tx| store::docker::set_sandbox(tx, endpoint, None));
        }
        let net = store::require_network(self.store.read(), &a.network)?.network;
        if let Some(ns) = attached_ns(&a) {
            if a.rate.is_some_and(|r| r.ingress.is_some())
                && !kinds::of(&net.kind).has_host_port()
                && let Ok(mut nl) = Netlink::open_in(&ns)
            {
                let _ = nl.delete_link_by_name(&names::ifb_name(&a.ifname));
            }
            if antispoof::guards_container(&net, &a)
                && let Err(e) = unguard_container(&ns, &a)
            {
                tracing::warn!(target = %a.target, "guard table: {e}");
            }
        }
        let unstaged = |a: &Attachment| {
            let mut back = a.clone();
            back.netns = crate::model::staged_netns(endpoint);
            back.netns_cookie = None;
            back.ifname = kinds::staged_ifname(&net.kind, endpoint);
            back.target = crate::model::staged_target(endpoint);
            // Moving it flushes its addresses: a lease's go with them (the
            // server keeps the lease for the container's next start). One
            // Docker knows stays the endpoint's: Docker puts it on again.
            if let Some(b) = back.dhcp.as_mut()
                && !b.for_docker
            {
                b.lease = None;
                b.lease6 = None;
                b.state = LeaseState::Acquiring;
                back.addresses.clear();
                back.gateways.clear();
            }
            back
        };
        self.store.write(|tx| {
            // As it is now (its container may have been learnt meanwhile).
            if let Some(now) = store::attachment(tx, host_ifname)? {
                let back = unstaged(&now);
                move_filters(tx, &now, &back)?;
                store::update_attachment(tx, &back)?;
            }
            store::docker::set_sandbox(tx, endpoint, None)
        })
    }
}
