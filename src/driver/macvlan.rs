//! The macvlan driver: each container gets its own MAC on a host interface
//! (the parent), straight onto the parent's LAN; no bridge, no NAT.
//!
//! The kernel creates a macvlan in the namespace of its parent, where the
//! container's interface name (eth0...) may well exist: it is made under a
//! temporary name and renamed as it moves into the target, in one request.
//! A macvlan parent never delivers traffic between itself and its macvlans,
//! so the host cannot reach its own containers; the optional host shim is a
//! macvlan of the host's own on the same parent that can.

use netlink_packet_route::link::MacVlanMode;

use super::{configure_inside, kernel};
use crate::error::{Error, Result};
use crate::model::{Attachment, Mac, MacvlanMode, MacvlanOptions, Network};
use crate::names;
use crate::netlink::{LinkInfo, Netlink};
use crate::netns::NsHandle;
use crate::undo::UndoLog;

fn kernel_mode(mode: MacvlanMode) -> MacVlanMode {
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

/// The parent must exist, be up and not be a bridge port.
fn check_parent(nl: &mut Netlink, m: &MacvlanOptions) -> Result<LinkInfo> {
    let link = nl
        .link_by_name(&m.parent)
        .map_err(kernel(format!("look up parent {}", m.parent)))?
        .ok_or_else(|| Error::invalid("--parent", &m.parent, "no such interface on the host"))?;
    if !link.up {
        return Err(Error::invalid(
            "--parent",
            &m.parent,
            "is down; bring it up first (a macvlan on a down parent carries nothing)",
        ));
    }
    if link.controller.is_some() {
        return Err(Error::invalid(
            "--parent",
            &m.parent,
            "is enslaved to a bridge or bond; use that bridge (bridged mode) or another parent",
        ));
    }
    Ok(link)
}

/// Check the parent and, with a host shim, create it: a macvlan in bridge
/// mode holding the shim address alone, and a host route to the range the
/// containers get their addresses from.
pub fn create(
    nl: &mut Netlink,
    net: &Network,
    m: &MacvlanOptions,
    undo: &mut UndoLog,
) -> Result<()> {
    let parent = check_parent(nl, m)?;
    if !m.host_shim {
        return Ok(());
    }
    let shim = names::shim_name(&net.name);
    nl.create_macvlan(&shim, parent.index, MacVlanMode::Bridge, None, None)
        .map_err(kernel(format!("create host shim {shim} on {}", m.parent)))?;
    let name = shim.clone();
    undo.push(format!("delete host shim {name}"), move |nl| {
        nl.delete_link_by_name(&name)
            .map(drop)
            .map_err(kernel(format!("delete host shim {name}")))
    });
    let link = nl
        .link_by_name(&shim)
        .map_err(kernel(format!("look up host shim {shim}")))?
        .ok_or_else(|| Error::Conflict(format!("host shim {shim} vanished after creation")))?;
    for addr in &net.host_addresses {
        nl.add_address(link.index, *addr)
            .map_err(kernel(format!("add {addr} to {shim}")))?;
    }
    nl.set_up(link.index)
        .map_err(kernel(format!("set {shim} up")))?;
    for sub in &net.subnets {
        let range = sub.ip_range.unwrap_or(sub.subnet);
        nl.add_route(range, None, Some(link.index), true)
            .map_err(kernel(format!("route {range} to {shim}")))?;
    }
    Ok(())
}

/// Undo `create`: the shim goes, with its address and routes.
pub fn remove(nl: &mut Netlink, net: &Network, m: &MacvlanOptions) -> Vec<Error> {
    if !m.host_shim {
        return Vec::new();
    }
    let shim = names::shim_name(&net.name);
    match nl.delete_link_by_name(&shim) {
        Ok(_) => Vec::new(),
        Err(e) => vec![Error::kernel(format!("delete host shim {shim}"), e)],
    }
}

/// Create the container's macvlan under a temporary name, move it into the
/// target under its real name, then configure it there. In passthru mode
/// the interface takes the parent's MAC, and the attachment records it.
pub fn attach(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    m: &MacvlanOptions,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let parent = check_parent(host, m)?;
    let mac = if m.mode == MacvlanMode::Passthru {
        // The kernel refuses a MAC of our own here (EINVAL).
        a.mac = Mac(parent.mac.unwrap_or(a.mac.0));
        None
    } else {
        Some(a.mac.0)
    };
    let temp = &a.host_ifname;
    host.create_macvlan(temp, parent.index, kernel_mode(m.mode), mac, Some(a.mtu))
        .map_err(|e| match e.errno() {
            Some(libc::EEXIST) => {
                Error::Conflict(format!("interface {temp} already exists on the host"))
            }
            // The kernel's word for "this parent already has a macvlan".
            Some(libc::EINVAL | libc::EBUSY) if m.mode == MacvlanMode::Passthru => Error::invalid(
                "--parent",
                &m.parent,
                "already carries a macvlan (passthru takes the whole parent, for one container)",
            ),
            _ => Error::kernel(format!("create macvlan on {}", m.parent), e),
        })?;
    let name = temp.clone();
    undo.push(format!("delete macvlan {name}"), move |nl| {
        nl.delete_link_by_name(&name)
            .map(drop)
            .map_err(kernel(format!("delete macvlan {name}")))
    });
    let link = host
        .link_by_name(temp)
        .map_err(kernel(format!("look up macvlan {temp}")))?
        .ok_or_else(|| Error::Conflict(format!("macvlan {temp} vanished after creation")))?;
    host.move_to_netns(link.index, ns, &a.ifname).map_err(|e| {
        if e.is(libc::EEXIST) {
            Error::invalid(
                "--ifname",
                &a.ifname,
                format!("already exists in target {}", a.target),
            )
        } else {
            Error::kernel(
                format!(
                    "move macvlan {temp} into target {} as {}",
                    a.target, a.ifname
                ),
                e,
            )
        }
    })?;
    // From here the interface lives in the target: undo deletes it there.
    let inner_ns = ns
        .try_clone()
        .map_err(|e| Error::io("keep the target namespace open", e))?;
    let ifname = a.ifname.clone();
    undo.push(format!("delete {ifname} in the target"), move |_| {
        let mut nl =
            Netlink::open_in(&inner_ns).map_err(kernel("open netlink in the target".into()))?;
        nl.delete_link_by_name(&ifname)
            .map(drop)
            .map_err(kernel(format!("delete {ifname}")))
    });
    configure_inside(inner, a)
}

/// Delete the container's macvlan inside its namespace; when the namespace
/// is gone, so is the interface.
pub fn detach(ns: Option<&NsHandle>, a: &Attachment) -> Result<()> {
    let Some(ns) = ns else { return Ok(()) };
    let mut nl =
        Netlink::open_in(ns).map_err(kernel(format!("open netlink in target {}", a.target)))?;
    nl.delete_link_by_name(&a.ifname)
        .map(drop)
        .map_err(kernel(format!(
            "delete {} in target {}",
            a.ifname, a.target
        )))
}
