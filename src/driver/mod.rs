//! Network drivers: how a network exists on the host and how a namespace is
//! plugged into it. One module per kind; the engine calls them with open
//! netlink sockets and an undo log.

pub mod bridge;
pub mod host_device;
pub mod host_shim;
pub mod ipvlan;
pub mod kinds;
pub mod macvlan;
pub mod overlay;
pub mod parent;

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::{Attachment, DefaultRoute, RouteSpec};
use crate::netlink::{Netlink, NetlinkError};
use crate::netns::{NsHandle, write_sysctl};

/// The kernel gives `lo` this index in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

fn kernel(what: String) -> impl FnOnce(NetlinkError) -> Error {
    move |e| Error::kernel(what, e)
}

/// Move the host interface `from` into the target under the attachment's
/// name, in one request (the name is checked in the target only).
pub(crate) fn move_into_target(
    host: &mut Netlink,
    index: u32,
    from: &str,
    ns: &NsHandle,
    a: &Attachment,
) -> Result<()> {
    host.move_to_netns(index, ns, &a.ifname).map_err(|e| {
        if e.is(libc::EEXIST) {
            Error::invalid(
                "--ifname",
                &a.ifname,
                format!("already exists in target {}", a.target),
            )
        } else {
            Error::kernel(
                format!("move {from} into target {} as {}", a.target, a.ifname),
                e,
            )
        }
    })
}

/// Finish an interface that has just arrived in the target, whatever made
/// it: `lo` up, IPv6 link-local only where IPv6 is used, addresses, up,
/// default route and routes. `shielded`: the host's bridge keeps router
/// advertisements (and IPv6, for an IPv4-only interface) from it, so no
/// sysctl is needed.
pub(crate) fn configure_inside(
    nl: &mut Netlink,
    ns: &NsHandle,
    a: &Attachment,
    shielded: bool,
) -> Result<()> {
    let what = |s: &str| format!("in target {}: {s}", a.target);
    // Without a lookup: lo is index 1 in every namespace, and setting an up
    // link up changes nothing.
    nl.set_up(LOOPBACK_INDEX)
        .map_err(kernel(what("set lo up")))?;
    let link = nl
        .link_by_name(&a.ifname)
        .map_err(kernel(what(&format!("look up {}", a.ifname))))?
        .ok_or_else(|| Error::Conflict(what(&format!("{} vanished after creation", a.ifname))))?;
    // An interface with no IPv6 address to carry still makes a link-local
    // one, and its detection chatter reaches every container of the
    // network: only IPv6 networks get it.
    let ipv4_only = !a.addresses.iter().any(|x| x.addr().is_ipv6());
    if !shielded {
        ipv6_policy(ns, a)?;
    }
    for addr in &a.addresses {
        nl.add_address(link.index, *addr)
            .map_err(kernel(what(&format!("add {addr} to {}", a.ifname))))?;
        crate::failpoint::hit("address added inside");
    }
    if shielded && ipv4_only {
        nl.set_up_without_ipv6_address(link.index)
    } else {
        nl.set_up(link.index)
    }
    .map_err(kernel(what(&format!("set {} up", a.ifname))))?;
    crate::failpoint::hit("interface up inside");
    install_routes(nl, link.index, a, &[])?;
    crate::failpoint::hit("routes added inside");
    Ok(())
}

/// What IPv6 an attachment's interface does, set before it comes up:
/// - none on an IPv4-only attachment: no link-local address (its
///   detection chatter would reach every container of the network) and no
///   address from a router advertisement, rogue or not;
/// - static addressing: router advertisements ignored;
/// - SLAAC (DHCP networks): advertisements accepted even if the container
///   forwards.
fn ipv6_policy(ns: &NsHandle, a: &Attachment) -> Result<()> {
    let slaac = a.dhcp.as_ref().is_some_and(|b| b.slaac);
    let (key, value) = if slaac {
        ("accept_ra", "2")
    } else if a.addresses.iter().any(|x| x.addr().is_ipv6()) {
        ("accept_ra", "0")
    } else {
        ("disable_ipv6", "1")
    };
    let key = format!("net/ipv6/conf/{}/{key}", a.ifname);
    ns.run(|| write_sysctl(&key, value))
        .and_then(|r| r)
        .map_err(|e| Error::io(format!("in target {}: set {key}", a.target), e))
}

/// Put addresses and routes on an interface that is already up inside the
/// target (a DHCP lease's), with `extra` routes beside the attachment's.
pub(crate) fn install_addressing(
    nl: &mut Netlink,
    a: &Attachment,
    extra: &[RouteSpec],
) -> Result<()> {
    let what = |s: &str| format!("in target {}: {s}", a.target);
    let link = nl
        .link_by_name(&a.ifname)
        .map_err(kernel(what(&format!("look up {}", a.ifname))))?
        .ok_or_else(|| Error::Conflict(what(&format!("{} is gone", a.ifname))))?;
    if link.mtu != a.mtu {
        nl.set_mtu(link.index, a.mtu)
            .map_err(kernel(what(&format!("set MTU {} on {}", a.mtu, a.ifname))))?;
    }
    for addr in &a.addresses {
        match nl.add_address(link.index, *addr) {
            Err(e) if !e.is(libc::EEXIST) => {
                return Err(Error::kernel(
                    what(&format!("add {addr} to {}", a.ifname)),
                    e,
                ));
            }
            _ => {}
        }
    }
    install_routes(nl, link.index, a, extra)
}

/// Take back what [`install_addressing`] put on, as far as it is there.
pub(crate) fn remove_addressing(
    nl: &mut Netlink,
    a: &Attachment,
    extra: &[RouteSpec],
) -> Result<()> {
    let what = |s: &str| format!("in target {}: {s}", a.target);
    let Some(link) = nl
        .link_by_name(&a.ifname)
        .map_err(kernel(what(&format!("look up {}", a.ifname))))?
    else {
        return Ok(());
    };
    let gone =
        |e: &NetlinkError| e.is(libc::ESRCH) || e.is(libc::EADDRNOTAVAIL) || e.is(libc::ENOENT);
    for r in a.routes.iter().chain(extra) {
        if let Err(e) = nl.del_route(r.dest, Some(r.via), Some(link.index))
            && !gone(&e)
        {
            return Err(Error::kernel(what(&format!("remove route {r}")), e));
        }
    }
    for gw in &a.gateways {
        let any: IpNet = if gw.is_ipv6() { "::/0" } else { "0.0.0.0/0" }
            .parse()
            .expect("literal");
        if let Err(e) = nl.del_route(any, Some(*gw), Some(link.index))
            && !gone(&e)
        {
            return Err(Error::kernel(
                what(&format!("remove default route via {gw}")),
                e,
            ));
        }
    }
    for addr in &a.addresses {
        if let Err(e) = nl.del_address(link.index, *addr)
            && !gone(&e)
        {
            return Err(Error::kernel(what(&format!("remove {addr}")), e));
        }
    }
    Ok(())
}

/// The default routes an attachment has, by family (IPv6 or not): through
/// each of its gateways, or out of its device (ipvlan l3) for each family
/// it has addresses in.
fn default_routes(a: &Attachment) -> Vec<(bool, Option<IpAddr>)> {
    let mut out: Vec<(bool, Option<IpAddr>)> = a
        .gateways
        .iter()
        .map(|gw| (gw.is_ipv6(), Some(*gw)))
        .collect();
    if a.device_default_route {
        for v6 in [false, true] {
            if a.addresses.iter().any(|x| x.addr().is_ipv6() == v6) {
                out.push((v6, None));
            }
        }
    }
    out
}

/// Default routes through the attachment's gateways (or its device) and
/// its routes, on an interface that is up and addressed.
fn install_routes(nl: &mut Netlink, index: u32, a: &Attachment, extra: &[RouteSpec]) -> Result<()> {
    let what = |s: &str| format!("in target {}: {s}", a.target);
    for (v6, gw) in default_routes(a) {
        let via = gw
            .map(|g| g.to_string())
            .unwrap_or_else(|| a.ifname.clone());
        install_default_route(nl, index, v6, gw, a.default_route)
            .map_err(kernel(what(&format!("default route via {via}"))))?;
    }
    for r in a.routes.iter().chain(extra) {
        match nl.add_route(r.dest, Some(r.via), Some(index), false) {
            // The very same route is already there (a restore, a renewal):
            // fine. Another one to the same destination is a conflict.
            Err(e) if e.is(libc::EEXIST) && has_route(nl, r, index) => {}
            r2 => r2.map_err(kernel(what(&format!("route {r}"))))?,
        }
    }
    Ok(())
}

/// Whether the routes [`install_addressing`] puts on are there: the
/// attachment's and `extra` routes, and its default routes as its policy
/// wants them (any default route, for one that keeps what it found).
pub(crate) fn routes_in_place(
    nl: &mut Netlink,
    index: u32,
    a: &Attachment,
    extra: &[RouteSpec],
) -> bool {
    if !a
        .routes
        .iter()
        .chain(extra)
        .all(|r| has_route(nl, r, index))
    {
        return false;
    }
    default_routes(a).into_iter().all(|(v6, gw)| {
        let defaults: Vec<_> = nl
            .routes(v6)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.dest.prefix_len() == 0)
            .collect();
        match a.default_route {
            DefaultRoute::None => true,
            DefaultRoute::Keep => !defaults.is_empty(),
            DefaultRoute::Replace => defaults.iter().any(|r| r.via == gw && r.oif == Some(index)),
        }
    })
}

fn has_route(nl: &mut Netlink, r: &RouteSpec, oif: u32) -> bool {
    nl.routes(r.dest.addr().is_ipv6())
        .unwrap_or_default()
        .iter()
        .any(|x| x.dest == r.dest && x.via == Some(r.via) && x.oif == Some(oif))
}

/// A default route out of `oif`, via `gw` or (without one) the device.
fn install_default_route(
    nl: &mut Netlink,
    oif: u32,
    v6: bool,
    gw: Option<IpAddr>,
    policy: DefaultRoute,
) -> crate::netlink::NlResult<()> {
    let any: IpNet = if v6 {
        "::/0".parse().expect("literal")
    } else {
        "0.0.0.0/0".parse().expect("literal")
    };
    match policy {
        DefaultRoute::None => Ok(()),
        DefaultRoute::Replace => nl.add_route(any, gw, Some(oif), true),
        DefaultRoute::Keep => {
            let has_default = nl.routes(v6)?.iter().any(|r| r.dest.prefix_len() == 0);
            if has_default {
                Ok(())
            } else {
                nl.add_route(any, gw, Some(oif), false)
            }
        }
    }
}
