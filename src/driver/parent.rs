//! What macvlan and ipvlan share: an interface of the host (the parent, an
//! 802.1q sub-interface that plumb may create), and child interfaces made on
//! it straight inside the target, under their final name.
//!
//! A child is created by a request from the parent's namespace that names
//! the target (IFLA_NET_NS_FD): the kernel finds the parent here and makes
//! the child there. Making it here and moving it would cost an RCU grace
//! period (`dev_change_net_namespace` waits in `synchronize_net`): 30 ms of
//! a 35 ms macvlan attach on this VM.

use super::{configure_inside, kernel};
use crate::error::{Error, Result};
use crate::model::{Attachment, Parent};
use crate::netlink::{LinkInfo, Netlink, NetlinkError};
use crate::netns::NsHandle;
use crate::undo::UndoLog;

/// Make the parent exist: an 802.1q sub-interface that does not exist yet
/// is created on its base and brought up. Returns whether plumb created it.
pub fn ensure(nl: &mut Netlink, parent: &Parent, undo: &mut UndoLog) -> Result<bool> {
    let exists = nl
        .link_by_name(&parent.name)
        .map_err(kernel(format!("look up parent {}", parent.name)))?
        .is_some();
    let Some(vlan) = parent.vlan.as_ref().filter(|_| !exists) else {
        return Ok(false);
    };
    let base = nl
        .link_by_name(&vlan.base)
        .map_err(kernel(format!("look up {}", vlan.base)))?
        .ok_or_else(|| {
            Error::invalid(
                "--parent",
                &parent.name,
                format!("its base interface {} does not exist", vlan.base),
            )
        })?;
    nl.create_vlan(&parent.name, base.index, vlan.id)
        .map_err(|e| {
            if e.is(libc::EOPNOTSUPP) {
                Error::invalid(
                    "--parent",
                    &parent.name,
                    "this kernel has no 802.1q VLAN support (load the 8021q module)",
                )
            } else {
                Error::kernel(format!("create VLAN {} on {}", parent.name, vlan.base), e)
            }
        })?;
    let name = parent.name.clone();
    undo.push(format!("delete VLAN {name}"), move |nl| {
        nl.delete_link_by_name(&name)
            .map(drop)
            .map_err(kernel(format!("delete VLAN {name}")))
    });
    let link = nl
        .link_by_name(&parent.name)
        .map_err(kernel(format!("look up {}", parent.name)))?
        .ok_or_else(|| Error::Conflict(format!("VLAN {} vanished after creation", parent.name)))?;
    if !base.up {
        nl.set_up(base.index)
            .map_err(kernel(format!("set {} up", vlan.base)))?;
    }
    nl.set_up(link.index)
        .map_err(kernel(format!("set {} up", parent.name)))?;
    Ok(true)
}

/// The parent must exist, be up and not be a bridge port.
pub fn check(nl: &mut Netlink, parent: &Parent) -> Result<LinkInfo> {
    let name = &parent.name;
    let link = nl
        .link_by_name(name)
        .map_err(kernel(format!("look up parent {name}")))?
        .ok_or_else(|| Error::invalid("--parent", name, "no such interface on the host"))?;
    if !link.up {
        return Err(Error::invalid(
            "--parent",
            name,
            "is down; bring it up first (nothing on a down parent carries traffic)",
        ));
    }
    if link.controller.is_some() {
        return Err(Error::invalid(
            "--parent",
            name,
            "is enslaved to a bridge or bond; use that bridge (bridged mode) or another parent",
        ));
    }
    Ok(link)
}

/// How to make a child of a parent: `(host, name, parent index, where)`,
/// where None is the host.
pub type MakeChild<'a> =
    Box<dyn FnOnce(&mut Netlink, &str, u32, Option<&NsHandle>) -> Result<()> + 'a>;

/// Make the child with `create(host, temp_name, parent_index)`, move it into
/// the target under its real name, configure it there.
pub fn attach_child(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    parent: &LinkInfo,
    a: &Attachment,
    undo: &mut UndoLog,
    create: impl FnOnce(&mut Netlink, &str, u32, Option<&NsHandle>) -> Result<()>,
) -> Result<()> {
    create(host, &a.ifname, parent.index, Some(ns))?;
    // The interface lives in the target: undo deletes it there.
    let target = ns
        .try_clone()
        .map_err(|e| Error::io("keep the target namespace open", e))?;
    let ifname = a.ifname.clone();
    undo.push(format!("delete {ifname} in the target"), move |_| {
        let mut nl =
            Netlink::open_in(&target).map_err(kernel("open netlink in the target".into()))?;
        nl.delete_link_by_name(&ifname)
            .map(drop)
            .map_err(kernel(format!("delete {ifname}")))
    });
    configure_inside(inner, ns, a, false)
}

/// Make the child on the host under its staged name (`a.ifname`), down,
/// for Docker to move into the container.
pub fn stage_child(
    host: &mut Netlink,
    parent: &LinkInfo,
    a: &Attachment,
    undo: &mut UndoLog,
    create: impl FnOnce(&mut Netlink, &str, u32, Option<&NsHandle>) -> Result<()>,
) -> Result<()> {
    create(host, &a.ifname, parent.index, None)?;
    let ifname = a.ifname.clone();
    undo.push(format!("delete {ifname}"), move |nl| {
        nl.delete_link_by_name(&ifname)
            .map(drop)
            .map_err(kernel(format!("delete {ifname}")))
    });
    Ok(())
}

/// Delete a child inside its namespace; when the namespace is gone, so is
/// the interface.
pub fn detach_child(ns: Option<&NsHandle>, a: &Attachment) -> Result<()> {
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

/// What a failed child creation means: EEXIST, its name is taken where it
/// was to be made (`place`: "on the host", "in target web"); EBUSY, the
/// parent carries children of the other kind (a parent takes macvlans or
/// ipvlans, never both); anything else is the kernel's.
pub fn create_error(
    what: String,
    parent: &str,
    name: &str,
    place: String,
) -> impl FnOnce(NetlinkError) -> Error {
    move |e| match e.errno() {
        Some(libc::EEXIST) => Error::Conflict(format!("interface {name} already exists {place}")),
        Some(libc::EBUSY) => Error::invalid(
            "--parent",
            parent,
            "already carries interfaces of the other kind (macvlan and ipvlan cannot share a parent)",
        ),
        _ => Error::kernel(what, e),
    }
}
