//! The host-device driver: a whole host interface (a NIC, a VF, a veth) is
//! handed to one target, renamed there, and given back on detach.
//!
//! The kernel drops an interface's addresses when it changes namespace: the
//! ones it had on the host are recorded with the attachment, kept inside the
//! target when the network has no subnet of its own, and put back on the
//! host when the interface returns.

use super::{configure_inside, kernel, move_into_target};
use crate::error::{Error, Result};
use crate::model::{Attachment, HostDeviceOptions, Mac};
use crate::netlink::{LinkInfo, Netlink};
use crate::netns::NsHandle;
use crate::undo::UndoLog;

/// The device must be on the host, not a bridge port, not a bridge.
fn check_device(nl: &mut Netlink, d: &HostDeviceOptions) -> Result<LinkInfo> {
    let link = nl
        .link_by_name(&d.device)
        .map_err(kernel(format!("look up device {}", d.device)))?
        .ok_or_else(|| {
            Error::invalid(
                "--device",
                &d.device,
                "is not on the host (no such interface, or attached elsewhere)",
            )
        })?;
    if link.controller.is_some() {
        return Err(Error::invalid(
            "--device",
            &d.device,
            "is enslaved to a bridge or bond",
        ));
    }
    if Netlink::is_bridge(&link) {
        return Err(Error::invalid(
            "--device",
            &d.device,
            "is a bridge; hand over a port, or use a bridge network",
        ));
    }
    Ok(link)
}

pub fn create(nl: &mut Netlink, d: &HostDeviceOptions) -> Result<()> {
    check_device(nl, d).map(drop)
}

/// What the attachment learns from the device before it moves (recorded
/// with the attach's intent, so that a recovery can give it all back): its
/// MAC, MTU and host addresses; without addresses of its own (no subnet)
/// the attachment keeps the host's.
pub fn inspect(nl: &mut Netlink, d: &HostDeviceOptions, a: &mut Attachment) -> Result<()> {
    let link = check_device(nl, d)?;
    a.mac = Mac(link.mac.unwrap_or(a.mac.0));
    a.mtu = link.mtu;
    a.host_addresses = nl
        .addresses(link.index)
        .map_err(kernel(format!("list addresses of {}", d.device)))?;
    if a.addresses.is_empty() {
        a.addresses = a.host_addresses.clone();
    }
    Ok(())
}

/// Move the device into the target under the attachment's name.
pub fn attach(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    host_ns: &NsHandle,
    d: &HostDeviceOptions,
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let link = check_device(host, d)?;
    move_into_target(host, link.index, &d.device, ns, a)?;
    let (target, home) = (
        ns.try_clone()
            .map_err(|e| Error::io("keep the target namespace open", e))?,
        host_ns
            .try_clone()
            .map_err(|e| Error::io("keep the host namespace open", e))?,
    );
    let back = a.clone();
    undo.push(format!("give {} back to the host", d.device), move |nl| {
        give_back(nl, Some(&target), &home, &back)
    });
    configure_inside(inner, ns, a, false)
}

/// Put the device's own addresses back on it, on the host, and set it up:
/// Docker moved it home bare. What it still has stays.
pub fn readdress(host: &mut Netlink, a: &Attachment) -> Result<()> {
    let Some(link) = host
        .link_by_name(&a.host_ifname)
        .map_err(kernel(format!("look up {}", a.host_ifname)))?
    else {
        return Ok(());
    };
    for addr in &a.host_addresses {
        match host.add_address(link.index, *addr) {
            Err(e) if !e.is(libc::EEXIST) => {
                return Err(Error::kernel(
                    format!("give {addr} back to {}", a.host_ifname),
                    e,
                ));
            }
            _ => {}
        }
    }
    host.set_up(link.index)
        .map_err(kernel(format!("set {} up", a.host_ifname)))
}

/// Bring the device home under its own name with its own addresses. When
/// the target is gone, the kernel has already moved a physical device back
/// to the initial namespace (and destroyed a virtual one): nothing to do.
pub fn give_back(
    host: &mut Netlink,
    target: Option<&NsHandle>,
    host_ns: &NsHandle,
    a: &Attachment,
) -> Result<()> {
    let Some(target) = target else { return Ok(()) };
    let mut inner =
        Netlink::open_in(target).map_err(kernel(format!("open netlink in target {}", a.target)))?;
    let Some(link) = inner
        .link_by_name(&a.ifname)
        .map_err(kernel(format!("look up {} in the target", a.ifname)))?
    else {
        return Ok(());
    };
    inner
        .move_to_netns(link.index, host_ns, &a.host_ifname)
        .map_err(kernel(format!(
            "move {} back to the host as {}",
            a.ifname, a.host_ifname
        )))?;
    let link = host
        .link_by_name(&a.host_ifname)
        .map_err(kernel(format!("look up {}", a.host_ifname)))?
        .ok_or_else(|| Error::Conflict(format!("{} vanished on its way back", a.host_ifname)))?;
    for addr in &a.host_addresses {
        host.add_address(link.index, *addr)
            .map_err(kernel(format!("give {addr} back to {}", a.host_ifname)))?;
    }
    host.set_up(link.index)
        .map_err(kernel(format!("set {} up", a.host_ifname)))
}
