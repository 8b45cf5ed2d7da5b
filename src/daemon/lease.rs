//! One task per DHCP attachment, for as long as it lives: acquire while it
//! holds no lease, renew at T1, rebind at T2, take the address off at
//! expiry or on a NAK and start over, release when the attachment goes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::sleep;

use super::Ctx;
use crate::error::{Error, Result};
use crate::ipam::dhcp::v6::{Client6, Lease6, Reply6};
use crate::ipam::dhcp::{Client, DhcpError, Identity, Lease, Reply, now_unix};
use crate::model::{Attachment, LeaseState};
use crate::netlink::Netlink;
use crate::netns::NsHandle;

/// How a lease task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The attachment goes: tell the server the address is free.
    Release,
    /// The daemon stops: keep the lease, a successor resumes it.
    Keep,
}

pub struct LeaseTask {
    pub started: tokio::time::Instant,
    stop: oneshot::Sender<Stop>,
    handle: JoinHandle<Attachment>,
    /// The DHCPv6 side, on networks that take IPv6 from the LAN.
    v6: Option<(oneshot::Sender<Stop>, JoinHandle<()>)>,
}

impl LeaseTask {
    /// `ns` is the attachment's namespace, held for the task's life so that
    /// a release can still go out after the container died.
    pub fn spawn(ctx: Arc<Ctx>, a: Attachment, ns: NsHandle) -> LeaseTask {
        let (stop, rx) = oneshot::channel();
        let v6 = match (a.dhcp.as_ref().is_some_and(|b| b.slaac), ns.try_clone()) {
            (true, Ok(ns6)) => {
                let (stop6, rx6) = oneshot::channel();
                Some((
                    stop6,
                    tokio::spawn(run_v6(ctx.clone(), a.clone(), ns6, rx6)),
                ))
            }
            _ => None,
        };
        LeaseTask {
            started: tokio::time::Instant::now(),
            stop,
            handle: tokio::spawn(run(ctx, a, ns, rx)),
            v6,
        }
    }

    /// Whether the task (or its DHCPv6 side) ended without being told to:
    /// it failed, and its attachment's lease goes unrenewed.
    pub fn ended(&self) -> bool {
        self.handle.is_finished() || self.v6.as_ref().is_some_and(|(_, h)| h.is_finished())
    }

    /// End the task; returns the attachment as the task last recorded it.
    pub async fn stop(self, how: Stop) -> Option<Attachment> {
        if let Some((stop6, handle6)) = self.v6 {
            let _ = stop6.send(how);
            let _ = handle6.await;
        }
        let _ = self.stop.send(how);
        self.handle.await.ok()
    }
}

/// The attachment's interface (index) and who its DHCP client is. The
/// hardware address is the interface's own (an ipvlan has its parent's, a
/// host device its own), and an ipvlan, which shares it with its siblings,
/// needs broadcast replies.
pub fn client_identity(ns: &NsHandle, a: &Attachment) -> Result<(u32, Identity)> {
    let b = a
        .dhcp
        .as_ref()
        .ok_or_else(|| Error::Conflict(format!("{} has no DHCP client", a.ifname)))?;
    let client_id = crate::ipam::dhcp::unhex(&b.client_id);
    let mut nl = Netlink::open_in(ns)
        .map_err(|e| Error::kernel(format!("open netlink in target {}", a.target), e))?;
    let link = nl
        .link_by_name(&a.ifname)
        .map_err(|e| Error::kernel(format!("look up {} in {}", a.ifname, a.target), e))?
        .ok_or_else(|| Error::Conflict(format!("{} is gone from {}", a.ifname, a.target)))?;
    Ok((
        link.index,
        Identity {
            mac: link.mac.unwrap_or(a.mac.0),
            client_id,
            hostname: b.hostname.clone(),
            fqdn: b.fqdn.clone(),
            shared_mac: link.kind.as_deref() == Some("ipvlan"),
        },
    ))
}

/// Wait `d`, or until told to stop.
async fn pause(d: Duration, stop: &mut oneshot::Receiver<Stop>) -> Option<Stop> {
    tokio::select! {
        how = stop => Some(how.unwrap_or(Stop::Keep)),
        _ = sleep(d) => None,
    }
}

fn secs_until(at: u64) -> Duration {
    Duration::from_secs(at.saturating_sub(now_unix()))
}

async fn run(
    ctx: Arc<Ctx>,
    mut a: Attachment,
    ns: NsHandle,
    mut stop: oneshot::Receiver<Stop>,
) -> Attachment {
    let Ok((ifindex, id)) = client_identity(&ns, &a) else {
        tracing::warn!(target = %a.target, ifname = %a.ifname, "DHCP attachment without interface or identity; waiting to be removed");
        let _ = (&mut stop).await;
        return a;
    };
    let client = Client {
        ns: &ns,
        ifindex,
        ifname: &a.ifname.clone(),
        id: &id,
    };
    let mut failures: u32 = 0;
    let mut losses = Losses::default();
    // What the attachment held last, asked back first after an expiry.
    let mut previous: Option<Ipv4Addr> = None;
    loop {
        crate::failpoint::panic_once("lease");
        let lease = a.dhcp.as_ref().and_then(|b| b.lease.clone());
        let outcome = match lease {
            None => {
                if let Some(wait) = losses.wait()
                    && let Some(how) = pause(wait, &mut stop).await
                {
                    return finish(&client, a, how).await;
                }
                let r = tokio::select! {
                    how = &mut stop => return finish(&client, a, how.unwrap_or(Stop::Keep)).await,
                    r = client.acquire(previous, ctx.acquire_timeout) => r,
                };
                match r {
                    Ok(lease) => apply(&ctx, &a, lease).await,
                    Err(e) => Err(e.to_string()),
                }
            }
            Some(lease) => {
                previous = Some(lease.address.addr());
                match step(&ctx, &client, &a, &lease, &mut stop).await {
                    Step::Stop(how) => return finish(&client, a, how).await,
                    Step::Next(r) => *r,
                }
            }
        };
        match outcome {
            Ok(next) => {
                let before = a.dhcp.as_ref().and_then(|b| b.lease.as_ref());
                let after = next.dhcp.as_ref().and_then(|b| b.lease.as_ref());
                match (before, after) {
                    (Some(_), None) => losses.lost(),
                    (Some(b), Some(n)) if n.expires_at() > b.expires_at() => losses.kept(),
                    _ => {}
                }
                a = next;
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(target = %a.target, ifname = %a.ifname, "DHCP: {e}");
                let wait = Duration::from_secs(1 << failures.min(5));
                if let Some(how) = pause(wait, &mut stop).await {
                    return finish(&client, a, how).await;
                }
            }
        }
    }
}

/// Leases lost in a row (a NAK, an expiry) without one renewed in
/// between: a server that grants an address and then refuses it, or two
/// servers disagreeing, would otherwise have the client acquire, lose and
/// acquire again as fast as they answer. Each loss doubles the wait
/// before the next DISCOVER, from 1 s up to 64 s; a lease renewed once
/// ends it.
#[derive(Debug, Default)]
struct Losses(u32);

impl Losses {
    fn lost(&mut self) {
        self.0 = self.0.saturating_add(1);
    }

    fn kept(&mut self) {
        self.0 = 0;
    }

    fn wait(&self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_secs(1 << (self.0 - 1).min(6)))
    }
}

enum Step {
    Stop(Stop),
    Next(Box<std::result::Result<Attachment, String>>),
}

/// One step of a bound lease's life: wait for T1, or try to extend it, or
/// let it go at expiry.
async fn step(
    ctx: &Arc<Ctx>,
    client: &Client<'_>,
    a: &Attachment,
    lease: &Lease,
    stop: &mut oneshot::Receiver<Stop>,
) -> Step {
    let now = now_unix();
    if now >= lease.expires_at() {
        tracing::warn!(target = %a.target, address = %lease.address, "DHCP lease expired; address removed");
        return Step::next(engine(ctx, a, |e, a| e.drop_lease(a, LeaseState::Expired)).await);
    }
    if now < lease.renew_at() {
        return match pause(secs_until(lease.renew_at()), stop).await {
            Some(how) => Step::Stop(how),
            None => Step::next(Ok(a.clone())),
        };
    }
    let rebinding = now >= lease.rebind_at();
    let state = if rebinding {
        LeaseState::Rebinding
    } else {
        LeaseState::Renewing
    };
    let mut a = a.clone();
    if a.dhcp.as_ref().map(|b| b.state) != Some(state) {
        match engine(ctx, &a, move |e, a| e.set_lease_state(a, state)).await {
            Ok(next) => a = next,
            Err(e) => return Step::next(Err(e)),
        }
    }
    // RFC 2131 §4.4.5: retransmit after half the time left to T2 (or to
    // expiry when rebinding); 60 s at least there, 1 s here so that short
    // lab leases work too.
    let until = if rebinding {
        lease.expires_at()
    } else {
        lease.rebind_at()
    };
    let wait = secs_until(until).div_f32(2.0).max(Duration::from_secs(1));
    let reply = tokio::select! {
        how = &mut *stop => return Step::Stop(how.unwrap_or(Stop::Keep)),
        r = client.extend(lease, rebinding, wait) => r,
    };
    Step::next(match reply {
        Ok(Some(Reply::Ack(new))) => {
            tracing::info!(target = %a.target, address = %new.address, "DHCP lease extended");
            apply(ctx, &a, new).await
        }
        Ok(Some(Reply::Nak { message, .. })) => {
            tracing::warn!(target = %a.target, address = %lease.address, "DHCP server refused the renewal{}; address removed", message.map(|m| format!(": {m}")).unwrap_or_default());
            engine(ctx, &a, |e, a| e.drop_lease(a, LeaseState::Expired)).await
        }
        Ok(_) => Ok(a), // no answer: the loop tries again (or moves to rebinding)
        Err(e) => Err(e.to_string()),
    })
}

impl Step {
    fn next(r: std::result::Result<Attachment, String>) -> Step {
        Step::Next(Box::new(r))
    }
}

async fn apply(
    ctx: &Arc<Ctx>,
    a: &Attachment,
    lease: Lease,
) -> std::result::Result<Attachment, String> {
    engine(ctx, a, move |e, a| e.apply_lease(a, &lease)).await
}

/// Run an engine call on the blocking pool.
async fn engine(
    ctx: &Arc<Ctx>,
    a: &Attachment,
    f: impl FnOnce(&mut crate::engine::Engine, &Attachment) -> Result<Attachment> + Send + 'static,
) -> std::result::Result<Attachment, String> {
    let (ctx, a) = (ctx.clone(), a.clone());
    tokio::task::spawn_blocking(move || ctx.with_engine(|e| f(e, &a)))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

async fn finish(client: &Client<'_>, a: Attachment, how: Stop) -> Attachment {
    if how == Stop::Release
        && let Some(lease) = a.dhcp.as_ref().and_then(|b| b.lease.as_ref())
    {
        match client.release(lease).await {
            Ok(()) => {
                tracing::info!(target = %a.target, address = %lease.address, "DHCP lease released")
            }
            Err(e) => tracing::warn!(target = %a.target, "DHCP release: {e}"),
        }
    }
    a
}

/// Release a lease from outside a task (the CLI detaching without a
/// daemon): one DHCPRELEASE, no answer expected.
pub async fn release_now(ns: &NsHandle, a: &Attachment) -> std::result::Result<(), DhcpError> {
    let Some(lease) = a.dhcp.as_ref().and_then(|b| b.lease.as_ref()) else {
        return Ok(());
    };
    let Ok((_, id)) = client_identity(ns, a) else {
        return Ok(()); // no interface, nothing to release from
    };
    let client = Client {
        ns,
        ifindex: 0,
        ifname: &a.ifname,
        id: &id,
    };
    client.release(lease).await
}

/// Release the lease of an attachment whose namespace is gone, and its
/// interface with it (a container that died or was removed while no
/// daemon held its namespace open: a killed daemon's tasks held it): from
/// the host's interface on the network's LAN, as the same client (its MAC
/// and client identifier), the frame made whole as the IPAM driver's
/// releases are. Without this the server keeps the address until the
/// lease expires. Leases of plumb's IPAM driver for Docker are the
/// driver's (Docker's ReleaseAddress); a network with no LAN on the host
/// (a host device that left with its namespace) has nowhere to send from,
/// and its lease expires at the server. DHCPv6 leases expire too.
pub async fn release_gone(ctx: &Arc<Ctx>, a: &Attachment) {
    let Some(b) = a.dhcp.as_ref().filter(|b| !b.for_docker) else {
        return;
    };
    let Some(lease) = b.lease.clone() else {
        return;
    };
    let (c, network) = (ctx.clone(), a.network.clone());
    let lan = tokio::task::spawn_blocking(move || c.with_engine(|e| e.ipam_dhcp_lan(&network)))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let lan = match lan {
        Ok(lan) => lan,
        Err(e) => {
            tracing::warn!(target = %a.target, address = %lease.address, "DHCP lease not released, its namespace is gone: {e}");
            return;
        }
    };
    let id = Identity {
        mac: a.mac.0,
        client_id: crate::ipam::dhcp::unhex(&b.client_id),
        hostname: b.hostname.clone(),
        fqdn: b.fqdn.clone(),
        shared_mac: true,
    };
    match lan.client(&id).release_from_lan(&lease).await {
        Ok(()) => {
            tracing::info!(target = %a.target, address = %lease.address, lan = %lan.ifname, "DHCP lease released from the LAN, its namespace is gone")
        }
        Err(e) => {
            tracing::warn!(target = %a.target, address = %lease.address, "DHCP release from the LAN: {e}")
        }
    }
}

/// Whether the interface's last router advertisement asked for DHCPv6.
fn ra_managed(ns: &NsHandle, ifname: &str) -> bool {
    Netlink::open_in(ns)
        .ok()
        .and_then(|mut nl| nl.link_by_name(ifname).ok().flatten())
        .is_some_and(|l| l.ra_managed)
}

/// The DHCPv6 side of an attachment: nothing until a router advertisement
/// sets the managed flag (checked every second for a minute, then every
/// thirty), then acquire, renew at T1, rebind at T2, drop at expiry.
async fn run_v6(ctx: Arc<Ctx>, a: Attachment, ns: NsHandle, mut stop: oneshot::Receiver<Stop>) {
    let Ok((ifindex, id)) = client_identity(&ns, &a) else {
        let _ = (&mut stop).await;
        return;
    };
    let client = Client6 {
        ns: &ns,
        ifindex,
        ifname: &a.ifname,
        mac: id.mac,
    };
    let mut lease: Option<Lease6> = a.dhcp.as_ref().and_then(|b| b.lease6.clone());
    let mut checks: u32 = 0;
    let mut failures: u32 = 0;
    loop {
        let how = match &lease {
            None if !ra_managed(&ns, &a.ifname) => {
                checks += 1;
                let every = if checks < 60 { 1 } else { 30 };
                pause(Duration::from_secs(every), &mut stop).await
            }
            None => {
                let r = tokio::select! {
                    how = &mut stop => { Some(how.unwrap_or(Stop::Keep)) }
                    r = client.acquire(ctx.acquire_timeout) => {
                        match r {
                            Ok(l) => match engine(&ctx, &a, {
                                let l = l.clone();
                                move |e, a| e.set_lease6(a, Some(&l))
                            }).await {
                                Ok(_) => {
                                    tracing::info!(target = %a.target, address = %l.address, "DHCPv6 lease");
                                    lease = Some(l);
                                    failures = 0;
                                }
                                Err(e) => tracing::warn!(target = %a.target, "DHCPv6: {e}"),
                            },
                            Err(e) => {
                                failures += 1;
                                tracing::warn!(target = %a.target, "DHCPv6: {e}");
                            }
                        }
                        None
                    }
                };
                match r {
                    Some(how) => Some(how),
                    None if failures > 0 => {
                        pause(Duration::from_secs(1 << failures.min(5)), &mut stop).await
                    }
                    None => None,
                }
            }
            Some(l) => {
                let l = l.clone();
                let now = now_unix();
                if now >= l.expires_at() {
                    tracing::warn!(target = %a.target, address = %l.address, "DHCPv6 lease expired; address removed");
                    if engine(&ctx, &a, |e, a| e.set_lease6(a, None)).await.is_ok() {
                        lease = None;
                    }
                    None
                } else if now < l.renew_at() {
                    pause(secs_until(l.renew_at()), &mut stop).await
                } else {
                    let rebinding = now >= l.rebind_at();
                    let until = if rebinding {
                        l.expires_at()
                    } else {
                        l.rebind_at()
                    };
                    let wait = secs_until(until).div_f32(2.0).max(Duration::from_secs(1));
                    tokio::select! {
                        how = &mut stop => Some(how.unwrap_or(Stop::Keep)),
                        r = client.extend(&l, rebinding, wait) => {
                            match r {
                                Ok(Some(Reply6::Bound(new))) => {
                                    let n = new.clone();
                                    if engine(&ctx, &a, move |e, a| e.set_lease6(a, Some(&n))).await.is_ok() {
                                        lease = Some(new);
                                    }
                                }
                                Ok(Some(Reply6::Refused(why))) => {
                                    tracing::warn!(target = %a.target, "DHCPv6 renewal refused: {why}; address removed");
                                    if engine(&ctx, &a, |e, a| e.set_lease6(a, None)).await.is_ok() {
                                        lease = None;
                                    }
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(target = %a.target, "DHCPv6: {e}"),
                            }
                            None
                        }
                    }
                }
            }
        };
        if let Some(how) = how {
            if let (Stop::Release, Some(l)) = (how, &lease)
                && let Err(e) = client.release(l).await
            {
                tracing::warn!(target = %a.target, "DHCPv6 release: {e}");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_leases_back_off_exponentially_until_one_is_renewed() {
        let mut l = Losses::default();
        assert_eq!(l.wait(), None, "the first DISCOVER goes at once");
        let waits: Vec<u64> = (0..9)
            .map(|_| {
                l.lost();
                l.wait().unwrap().as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        l.kept();
        assert_eq!(l.wait(), None);
    }
}
