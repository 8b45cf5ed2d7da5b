//! The macvlan driver: each container gets its own MAC on a host interface
//! (the parent), straight onto the parent's LAN; no bridge, no NAT.
//!
//! A macvlan parent never delivers traffic between itself and its macvlans,
//! so the host cannot reach its own containers; the optional host shim is a
//! macvlan of the host's own on the same parent that can.

use netlink_packet_route::link::MacVlanMode;

use super::{kernel, parent};
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

/// Check the parent and, with a host shim, create it: a macvlan in bridge
/// mode holding the shim address alone, and a host route to the range the
/// containers get their addresses from.
pub fn create(
    nl: &mut Netlink,
    net: &Network,
    m: &MacvlanOptions,
    undo: &mut UndoLog,
) -> Result<()> {
    let parent = parent::check(nl, &m.parent)?;
    if !m.host_shim {
        return Ok(());
    }
    let shim = names::shim_name(&net.name);
    nl.create_macvlan(&shim, parent.index, MacVlanMode::Bridge, None, None, None)
        .map_err(kernel(format!(
            "create host shim {shim} on {}",
            m.parent.name
        )))?;
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

/// Plug a namespace in with a macvlan of its own. In passthru mode the
/// interface takes the parent's MAC, and the attachment records it.
pub fn attach(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    m: &MacvlanOptions,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let (link, create) = child(host, m, a, format!("in target {}", a.target))?;
    parent::attach_child(host, inner, ns, &link, a, undo, create)
}

/// [`attach`]'s interface, made on the host for Docker to move.
pub fn stage(
    host: &mut Netlink,
    m: &MacvlanOptions,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let (link, create) = child(host, m, a, "on the host".into())?;
    parent::stage_child(host, &link, a, undo, create)
}

/// The parent, and how to make a macvlan on it (where: `place`, for errors).
fn child<'m>(
    host: &mut Netlink,
    m: &'m MacvlanOptions,
    a: &mut Attachment,
    place: String,
) -> Result<(LinkInfo, parent::MakeChild<'m>)> {
    let link = parent::check(host, &m.parent)?;
    let mac = if m.mode == MacvlanMode::Passthru {
        // The kernel refuses a MAC of our own here (EINVAL).
        a.mac = Mac(link.mac.unwrap_or(a.mac.0));
        None
    } else {
        Some(a.mac.0)
    };
    let (mode, mtu) = (kernel_mode(m.mode), a.mtu);
    let create = move |nl: &mut Netlink, name: &str, index: u32, ns: Option<&NsHandle>| {
        nl.create_macvlan(name, index, mode, mac, Some(mtu), ns).map_err(|e| match e.errno() {
            // The kernel's word for "this parent already has a macvlan".
            Some(libc::EINVAL | libc::EBUSY) if m.mode == MacvlanMode::Passthru => Error::invalid(
                "--parent",
                &m.parent.name,
                "already carries a macvlan (passthru takes the whole parent, for one container)",
            ),
            _ => parent::create_error(
                format!("create macvlan on {}", m.parent.name),
                &m.parent.name,
                name,
                place,
            )(e),
        })
    };
    Ok((link, Box::new(create)))
}
