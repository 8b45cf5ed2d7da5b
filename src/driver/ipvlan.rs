//! The ipvlan driver: containers share the parent's MAC (for switch ports or
//! Wi-Fi that allow one), each with its own address. In l2 mode they sit on
//! the LAN like macvlans; in l3 and l3s modes the parent routes for them:
//! no broadcast reaches them, the host routes the subnet to the parent and
//! the containers' default route is the device itself.

use netlink_packet_route::link::{IpVlanFlags, IpVlanMode};

use super::{kernel, parent};
use crate::error::{Error, Result};
use crate::model::{Attachment, IpvlanFlag, IpvlanMode, IpvlanOptions, Mac, Network};
use crate::names;
use crate::netlink::{LinkInfo, Netlink, NetlinkError};
use crate::netns::NsHandle;
use crate::undo::UndoLog;

fn kernel_mode(mode: IpvlanMode) -> IpVlanMode {
    match mode {
        IpvlanMode::L2 => IpVlanMode::L2,
        IpvlanMode::L3 => IpVlanMode::L3,
        IpvlanMode::L3s => IpVlanMode::L3S,
    }
}

fn kernel_flags(flag: IpvlanFlag) -> IpVlanFlags {
    match flag {
        IpvlanFlag::Bridge => IpVlanFlags::empty(),
        IpvlanFlag::Private => IpVlanFlags::Private,
        IpvlanFlag::Vepa => IpVlanFlags::Vepa,
    }
}

/// A kernel built without ipvlan answers EOPNOTSUPP for the link kind.
fn create_error(
    what: String,
    parent: &str,
    name: &str,
    place: String,
) -> impl FnOnce(NetlinkError) -> Error {
    move |e| {
        if e.is(libc::EOPNOTSUPP) {
            Error::invalid(
                "--driver",
                "ipvlan",
                "this kernel has no ipvlan support (load the ipvlan module)",
            )
        } else {
            parent::create_error(what, parent, name, place)(e)
        }
    }
}

/// Check the parent, prove the kernel can make an ipvlan on it (a probe
/// made and deleted at once, so that a missing module is reported when the
/// network is created, not at its first container), and in l3 modes route
/// the subnets to the parent.
pub fn create(
    nl: &mut Netlink,
    net: &Network,
    i: &IpvlanOptions,
    undo: &mut UndoLog,
) -> Result<()> {
    let link = parent::check(nl, &i.parent)?;
    let probe = names::probe_name(&net.name);
    nl.create_ipvlan(
        &probe,
        link.index,
        kernel_mode(i.mode),
        kernel_flags(i.flag),
        None,
        None,
    )
    .map_err(create_error(
        format!("create ipvlan on {}", i.parent.name),
        &i.parent.name,
        &probe,
        "on the host".into(),
    ))?;
    nl.delete_link_by_name(&probe)
        .map_err(kernel(format!("delete probe {probe}")))?;
    if i.mode != IpvlanMode::L2 {
        for sub in &net.subnets {
            nl.add_route(sub.subnet, None, Some(link.index), false)
                .map_err(kernel(format!("route {} to {}", sub.subnet, i.parent.name)))?;
            let (dest, oif) = (sub.subnet, link.index);
            undo.push(format!("remove route {dest}"), move |nl| {
                nl.del_route(dest, None, Some(oif))
                    .map_err(kernel(format!("remove route {dest}")))
            });
        }
    }
    Ok(())
}

/// Undo `create`: the l3 routes go (they may already be gone with the parent).
pub fn remove(nl: &mut Netlink, net: &Network, i: &IpvlanOptions) -> Vec<Error> {
    if i.mode == IpvlanMode::L2 {
        return Vec::new();
    }
    let Ok(Some(link)) = nl.link_by_name(&i.parent.name) else {
        return Vec::new();
    };
    net.subnets
        .iter()
        .filter_map(
            |sub| match nl.del_route(sub.subnet, None, Some(link.index)) {
                Err(e) if !e.is(libc::ESRCH) => {
                    Some(Error::kernel(format!("remove route {}", sub.subnet), e))
                }
                _ => None,
            },
        )
        .collect()
}

/// Plug a namespace in with an ipvlan: the parent's MAC, the attachment's
/// addresses; in l3 modes a default route through the device.
pub fn attach(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    i: &IpvlanOptions,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let (link, create) = child(host, i, a, format!("in target {}", a.target))?;
    parent::attach_child(host, inner, ns, &link, a, undo, create)
}

/// [`attach`]'s interface, made on the host for Docker to move.
pub fn stage(
    host: &mut Netlink,
    i: &IpvlanOptions,
    a: &mut Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let (link, create) = child(host, i, a, "on the host".into())?;
    parent::stage_child(host, &link, a, undo, create)
}

/// The parent, and how to make an ipvlan on it (where: `place`, for errors).
fn child<'i>(
    host: &mut Netlink,
    i: &'i IpvlanOptions,
    a: &mut Attachment,
    place: String,
) -> Result<(LinkInfo, parent::MakeChild<'i>)> {
    let link = parent::check(host, &i.parent)?;
    a.mac = Mac(link.mac.unwrap_or(a.mac.0));
    if i.mode != IpvlanMode::L2 {
        // No ARP in l3 modes: the way out is the device, not a gateway.
        a.device_default_route = true;
        a.gateways.clear();
    }
    let (mode, flags, mtu) = (kernel_mode(i.mode), kernel_flags(i.flag), a.mtu);
    let create = move |nl: &mut Netlink, name: &str, index: u32, ns: Option<&NsHandle>| {
        nl.create_ipvlan(name, index, mode, flags, Some(mtu), ns)
            .map_err(create_error(
                format!("create ipvlan on {}", i.parent.name),
                &i.parent.name,
                name,
                place,
            ))
    };
    Ok((link, Box::new(create)))
}
