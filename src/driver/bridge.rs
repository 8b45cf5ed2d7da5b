//! The Linux bridge driver: a bridge on the host, one veth pair per
//! attachment with its peer created directly inside the target namespace.

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::{Attachment, BridgeMode, BridgeOptions, Network, RouteSpec};
use crate::netlink::{LinkInfo, Netlink};
use crate::netns::{NsHandle, write_sysctl};
use crate::policy::antispoof;
use crate::undo::UndoLog;

use super::kernel;

/// What `create` found and did on the host, kept with the network so that
/// `remove` gives back exactly what it took.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostState {
    /// The bridge existed before plumb (given with --bridge): never deleted.
    #[serde(default)]
    pub existing_bridge: bool,
    /// Addresses moved from the uplink to the bridge (bridged mode).
    #[serde(default)]
    pub uplink_addresses: Vec<IpNet>,
    /// Routes through the uplink moved to the bridge.
    #[serde(default)]
    pub uplink_routes: Vec<RouteSpec>,
}

/// Put the bridge back if it, its uplink's place on it or its addresses
/// are gone: made again, adopting what is left. What moved from the uplink
/// this time, if anything, is what a later removal gives back.
pub fn repair(
    host: &mut Netlink,
    net: &Network,
    b: &BridgeOptions,
    stored: &HostState,
    undo: &mut UndoLog,
) -> Result<Option<(String, Option<HostState>)>> {
    let link = host
        .link_by_name(&b.bridge)
        .map_err(kernel(format!("look up {}", b.bridge)))?;
    let uplink_ok = match (&b.uplink, &link) {
        (Some(u), Some(br)) => host
            .link_by_name(&u.name)
            .ok()
            .flatten()
            .is_some_and(|l| l.controller == Some(br.index)),
        (None, _) => true,
        (_, None) => false,
    };
    let addresses_ok = match &link {
        Some(br) => {
            let have = host.addresses(br.index).unwrap_or_default();
            net.host_addresses.iter().all(|a| have.contains(a))
        }
        None => false,
    };
    let overlay_ok = match (&b.overlay, &link) {
        (Some(o), Some(br)) => super::overlay::in_place(host, o, br),
        (None, _) => true,
        (_, None) => false,
    };
    if link.as_ref().is_some_and(|l| l.up) && uplink_ok && addresses_ok && overlay_ok {
        return Ok(None);
    }
    let found = create(host, net, b, undo)?;
    let mut state = stored.clone();
    if !found.uplink_addresses.is_empty() || !found.uplink_routes.is_empty() {
        state.uplink_addresses = found.uplink_addresses;
        state.uplink_routes = found.uplink_routes;
    }
    Ok(Some((format!("bridge {}", b.bridge), Some(state))))
}

/// Create the bridge (or adopt an existing one), give the host its
/// addresses, enslave the uplink and enable forwarding.
pub fn create(
    nl: &mut Netlink,
    net: &Network,
    b: &BridgeOptions,
    undo: &mut UndoLog,
) -> Result<HostState> {
    let mut state = HostState::default();
    let uplink = match &b.uplink {
        Some(up) => Some(check_uplink(nl, b, &up.name)?),
        None => None,
    };
    let bridge = match nl
        .link_by_name(&b.bridge)
        .map_err(kernel(format!("look up bridge {}", b.bridge)))?
    {
        Some(link) if Netlink::is_bridge(&link) => {
            state.existing_bridge = true;
            link
        }
        Some(_) => {
            return Err(Error::invalid(
                "--bridge",
                &b.bridge,
                "an interface of that name exists and is not a bridge",
            ));
        }
        None => {
            let mac = crate::names::bridge_mac(&net.name);
            nl.create_bridge(&b.bridge, mac, net.mtu, b.multicast_snooping())
                .map_err(kernel(format!("create bridge {}", b.bridge)))?;
            let name = b.bridge.clone();
            undo.push(format!("delete bridge {name}"), move |nl| {
                nl.delete_link_by_name(&name)
                    .map(drop)
                    .map_err(kernel(format!("delete bridge {name}")))
            });
            nl.link_by_name(&b.bridge)
                .map_err(kernel(format!("look up bridge {}", b.bridge)))?
                .ok_or_else(|| {
                    Error::Conflict(format!("bridge {} vanished right after creation", b.bridge))
                })?
        }
    };
    if let (true, Some(mtu)) = (state.existing_bridge, net.mtu) {
        nl.set_mtu(bridge.index, mtu)
            .map_err(kernel(format!("set MTU {mtu} on {}", b.bridge)))?;
    }
    if let Some(up) = &uplink {
        enslave_uplink(nl, &bridge, up, &mut state, undo)?;
    }
    let existing = nl
        .addresses(bridge.index)
        .map_err(kernel(format!("list addresses of {}", b.bridge)))?;
    for addr in &net.host_addresses {
        if existing.contains(addr) {
            continue;
        }
        nl.add_address(bridge.index, *addr)
            .map_err(kernel(format!("add {addr} to {}", b.bridge)))?;
        let (index, addr, name) = (bridge.index, *addr, b.bridge.clone());
        undo.push(format!("remove {addr} from {name}"), move |nl| {
            nl.del_address(index, addr)
                .map_err(kernel(format!("remove {addr} from {name}")))
        });
    }
    nl.set_up(bridge.index)
        .map_err(kernel(format!("set {} up", b.bridge)))?;
    if let Some(o) = &b.overlay {
        // One left down or off the bridge is made again whole.
        if !super::overlay::in_place(nl, o, &bridge) {
            let _ = nl.delete_link_by_name(&o.device);
            super::overlay::create(nl, o, net.mtu, &bridge, undo)?;
        }
        // Traffic between two cluster networks is routed by the sender's
        // host and answered through the receiver's, which only bridged the
        // request: its conntrack must see that, for the answer to pass as
        // one.
        nl.set_bridge_nf_call(bridge.index)
            .map_err(kernel(format!("pass {}'s frames to conntrack", b.bridge)))?;
    }
    if b.mode != BridgeMode::Bridged {
        enable_forwarding(net)?;
    }
    if b.mode == BridgeMode::Nat {
        // A port published on 127.0.0.1 is DNATed out of this bridge with
        // a loopback source, which the kernel drops unless told otherwise.
        let key = format!("net/ipv4/conf/{}/route_localnet", b.bridge);
        write_sysctl(&key, "1").map_err(|e| Error::io(format!("enable {key}"), e))?;
    }
    Ok(state)
}

/// What `create` will find and do on the host, read before it does it: it
/// is recorded with the network's intent, so that a process killed half
/// way through leaves enough for the next one to give everything back
/// (never deleting a bridge the user brought, returning the uplink's
/// addresses and routes).
pub fn plan(nl: &mut Netlink, b: &BridgeOptions) -> Result<HostState> {
    let bridge = nl
        .link_by_name(&b.bridge)
        .map_err(kernel(format!("look up bridge {}", b.bridge)))?;
    let mut state = HostState {
        existing_bridge: bridge.as_ref().is_some_and(Netlink::is_bridge),
        ..HostState::default()
    };
    if let Some(up) = &b.uplink
        && let Some(link) = nl
            .link_by_name(&up.name)
            .map_err(kernel(format!("look up uplink {}", up.name)))?
        && (bridge.is_none() || link.controller != bridge.as_ref().map(|b| b.index))
    {
        (state.uplink_addresses, state.uplink_routes) = uplink_addressing(nl, &link)?;
    }
    Ok(state)
}

/// The host's addresses on the uplink and its routes through it: what
/// moves to the bridge when the uplink becomes a port.
fn uplink_addressing(nl: &mut Netlink, uplink: &LinkInfo) -> Result<(Vec<IpNet>, Vec<RouteSpec>)> {
    let addrs = nl
        .addresses(uplink.index)
        .map_err(kernel(format!("list addresses of {}", uplink.name)))?;
    let mut routes = Vec::new();
    for v6 in [false, true] {
        for r in nl.routes(v6).map_err(kernel("list routes".into()))? {
            if r.oif == Some(uplink.index)
                && let Some(via) = r.via
            {
                routes.push(RouteSpec { dest: r.dest, via });
            }
        }
    }
    Ok((addrs, routes))
}

/// The uplink must exist, not be a bridge, and not belong to another bridge.
fn check_uplink(nl: &mut Netlink, b: &BridgeOptions, name: &str) -> Result<LinkInfo> {
    let link = nl
        .link_by_name(name)
        .map_err(kernel(format!("look up uplink {name}")))?
        .ok_or_else(|| Error::invalid("--uplink", name, "no such interface on the host"))?;
    if b.mode == BridgeMode::Bridged
        && let Some(controller) = link.controller
    {
        let bridge = nl.link_by_name(&b.bridge).ok().flatten();
        if bridge.map(|b| b.index) != Some(controller) {
            return Err(Error::invalid(
                "--uplink",
                name,
                "is already enslaved to another bridge or bond",
            ));
        }
    }
    Ok(link)
}

fn enslave_uplink(
    nl: &mut Netlink,
    bridge: &LinkInfo,
    uplink: &LinkInfo,
    state: &mut HostState,
    undo: &mut UndoLog,
) -> Result<()> {
    if uplink.controller == Some(bridge.index) {
        return Ok(());
    }
    // Keep the bridge's MAC stable (the LAN knows the uplink's), whatever
    // MACs the veth ports that join later have.
    if let Some(mac) = uplink.mac {
        nl.set_mac(bridge.index, mac)
            .map_err(kernel(format!("set MAC of {}", bridge.name)))?;
    }
    // The host's addresses and routes on the uplink move to the bridge, or
    // the host would lose the LAN the moment the uplink becomes a port.
    let (addrs, routes) = uplink_addressing(nl, uplink)?;
    nl.set_controller(uplink.index, Some(bridge.index))
        .map_err(kernel(format!(
            "enslave uplink {} to {}",
            uplink.name, bridge.name
        )))?;
    let (ui, un) = (uplink.index, uplink.name.clone());
    undo.push(format!("release uplink {un}"), move |nl| {
        nl.set_controller(ui, None)
            .map_err(kernel(format!("release uplink {un}")))
    });
    nl.set_up(uplink.index)
        .map_err(kernel(format!("set uplink {} up", uplink.name)))?;
    for addr in &addrs {
        nl.del_address(uplink.index, *addr)
            .map_err(kernel(format!("remove {addr} from {}", uplink.name)))?;
        let (a, un) = (*addr, uplink.name.clone());
        undo.push(format!("give {a} back to {un}"), move |nl| {
            nl.add_address(ui, a)
                .map_err(kernel(format!("give {a} back to {un}")))
        });
        nl.add_address(bridge.index, *addr)
            .map_err(kernel(format!("add {addr} to {}", bridge.name)))?;
        let (bi, bn) = (bridge.index, bridge.name.clone());
        undo.push(format!("remove {a} from {bn}"), move |nl| {
            nl.del_address(bi, a)
                .map_err(kernel(format!("remove {a} from {bn}")))
        });
    }
    nl.set_up(bridge.index)
        .map_err(kernel(format!("set {} up", bridge.name)))?;
    for r in &routes {
        nl.add_route(r.dest, Some(r.via), Some(bridge.index), true)
            .map_err(kernel(format!("move route {r} to {}", bridge.name)))?;
    }
    state.uplink_addresses = addrs;
    state.uplink_routes = routes;
    Ok(())
}

fn enable_forwarding(net: &Network) -> Result<()> {
    for sub in &net.subnets {
        let key = if sub.subnet.addr().is_ipv4() {
            "net/ipv4/ip_forward"
        } else {
            "net/ipv6/conf/all/forwarding"
        };
        write_sysctl(key, "1").map_err(|e| Error::io(format!("enable forwarding ({key})"), e))?;
    }
    Ok(())
}

/// Undo `create`: give the uplink back its addresses and routes, remove the
/// host's addresses, delete the bridge if plumb made it. Collects every
/// error instead of stopping at the first.
pub fn remove(nl: &mut Netlink, net: &Network, b: &BridgeOptions, state: &HostState) -> Vec<Error> {
    let mut errors = Vec::new();
    let bridge = match nl.link_by_name(&b.bridge) {
        Ok(b) => b,
        Err(e) => return vec![Error::kernel(format!("look up bridge {}", b.bridge), e)],
    };
    if let Some(name) = b.uplink.as_ref().map(|u| &u.name)
        && let Ok(Some(up)) = nl.link_by_name(name)
    {
        if bridge.as_ref().map(|b| b.index) == up.controller
            && let Err(e) = nl.set_controller(up.index, None)
        {
            errors.push(Error::kernel(format!("release uplink {name}"), e));
        }
        for addr in &state.uplink_addresses {
            if let Some(b) = &bridge {
                let _ = nl.del_address(b.index, *addr);
            }
            if let Err(e) = nl.add_address(up.index, *addr)
                && !e.is(libc::EEXIST)
            {
                errors.push(Error::kernel(format!("give {addr} back to {name}"), e));
            }
        }
        for r in &state.uplink_routes {
            if let Err(e) = nl.add_route(r.dest, Some(r.via), Some(up.index), true)
                && !e.is(libc::EEXIST)
            {
                errors.push(Error::kernel(format!("give route {r} back to {name}"), e));
            }
        }
    }
    if let Some(o) = &b.overlay {
        errors.extend(super::overlay::remove(nl, o));
    }
    let Some(bridge) = bridge else { return errors };
    if state.existing_bridge {
        for addr in &net.host_addresses {
            if let Err(e) = nl.del_address(bridge.index, *addr)
                && !crate::netlink::is_gone(&e)
            {
                errors.push(Error::kernel(format!("remove {addr} from {}", b.bridge), e));
            }
        }
    } else if let Err(e) = nl.delete_link_by_name(&b.bridge) {
        errors.push(Error::kernel(format!("delete bridge {}", b.bridge), e));
    }
    errors
}

/// Plug a namespace into the bridge: veth pair (peer created inside the
/// namespace), MAC, MTU, addresses, routes, `lo` up.
/// `inner` is a netlink socket already bound to the target namespace `ns`.
pub fn attach(
    host: &mut Netlink,
    inner: &mut Netlink,
    ns: &NsHandle,
    net: &Network,
    b: &BridgeOptions,
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    add_port(host, ns, net, b, a, undo)?;
    super::configure_inside(inner, ns, a, antispoof::shielded(a))
}

/// [`attach`]'s veth pair with its peer on the host (`host_ns`) under its
/// staged name, down, for Docker to move into the container.
pub fn stage(
    host: &mut Netlink,
    host_ns: &NsHandle,
    net: &Network,
    b: &BridgeOptions,
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    add_port(host, host_ns, net, b, a, undo)
}

/// A veth pair: its host end up on the bridge, its peer (`a.ifname`) in
/// `peer_ns`.
fn add_port(
    host: &mut Netlink,
    peer_ns: &NsHandle,
    net: &Network,
    b: &BridgeOptions,
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let bridge = host
        .link_by_name(&b.bridge)
        .map_err(kernel(format!("look up bridge {}", b.bridge)))?
        .ok_or_else(|| {
            Error::Conflict(format!(
                "network `{}`: bridge {} is missing on the host (run `plumb restore`)",
                net.name, b.bridge
            ))
        })?;
    // Every port takes the bridge's own MAC. The bridge keeps a local
    // forwarding entry for each distinct port MAC, and adding a port walks
    // all of them (`br_fdb_unsync_static`, a `dev_uc_del` each): with random
    // MACs an attach cost more with every container. A port sends nothing
    // of its own (no address, no IPv6), and frames to that MAC are the
    // bridge's anyway.
    let port_mac = bridge.mac;
    host.create_veth(
        &a.host_ifname,
        port_mac,
        bridge.index,
        &a.ifname,
        peer_ns,
        a.mac.0,
        a.mtu,
    )
    .map_err(|e| {
        if e.is(libc::EEXIST) {
            Error::Conflict(format!(
                "interface {} or {} (in the target) already exists",
                a.host_ifname, a.ifname
            ))
        } else if e.is(libc::EXFULL) {
            Error::Conflict(format!(
                "bridge {} of network `{}` has {BRIDGE_MAX_PORTS} ports, the most a Linux \
                     bridge holds; attach to another network",
                b.bridge, net.name
            ))
        } else {
            Error::kernel(format!("create veth {} <-> {}", a.host_ifname, a.ifname), e)
        }
    })?;
    let host_ifname = a.host_ifname.clone();
    undo.push(format!("delete veth {host_ifname}"), move |nl| {
        nl.delete_link_by_name(&host_ifname)
            .map(drop)
            .map_err(kernel(format!("delete veth {host_ifname}")))
    });
    disable_ipv6_on_port(&a.host_ifname)?;
    host.set_up_by_name(&a.host_ifname)
        .map_err(kernel(format!("set {} up", a.host_ifname)))?;
    tracing::debug!(host_ifname = %a.host_ifname, "veth created");
    crate::failpoint::hit("bridge port up");
    if net.isolate_containers {
        let port = host
            .link_by_name(&a.host_ifname)
            .map_err(kernel(format!("look up {}", a.host_ifname)))?
            .ok_or_else(|| Error::Conflict(format!("{} vanished", a.host_ifname)))?;
        host.set_port_isolated(port.index)
            .map_err(kernel(format!("isolate bridge port {}", a.host_ifname)))?;
    }
    Ok(())
}

/// Put an attachment's host end back as `attach` left it, when it is
/// there but was taken off its bridge (the bridge was deleted and made
/// again) or set down; true when anything changed. A missing end is not
/// this function's: its container end went with it, and the attachment is
/// made again.
pub fn repair_port(
    host: &mut Netlink,
    net: &Network,
    b: &BridgeOptions,
    a: &Attachment,
) -> Result<bool> {
    let look = |host: &mut Netlink, name: &str| {
        host.link_by_name(name)
            .map_err(kernel(format!("look up {name}")))
    };
    let (Some(bridge), Some(port)) = (look(host, &b.bridge)?, look(host, &a.host_ifname)?) else {
        return Ok(false);
    };
    let mut changed = false;
    if port.controller != Some(bridge.index) {
        host.set_controller(port.index, Some(bridge.index))
            .map_err(kernel(format!(
                "put {} on bridge {}",
                a.host_ifname, b.bridge
            )))?;
        // Port flags live with the port's membership: gone with it.
        if net.isolate_containers {
            host.set_port_isolated(port.index)
                .map_err(kernel(format!("isolate bridge port {}", a.host_ifname)))?;
        }
        changed = true;
    }
    if !port.up {
        host.set_up(port.index)
            .map_err(kernel(format!("set {} up", a.host_ifname)))?;
        changed = true;
    }
    Ok(changed)
}

/// A bridge port carries frames, not IPv6 of its own; with IPv6 on, each
/// port would also cost every later one. The kernel gives every IPv6 device
/// a multicast route in the host's table, and walks that whole table
/// whenever any device's state changes (`rt6_sync_down_dev`,
/// `rt6_sync_up`): with 1,000 containers on the host, an attach took 6.3 ms
/// instead of 3.8. No link-local address also means no duplicate address
/// detection or MLD reports flooded to every port. Only sysctl turns IPv6
/// off on one device (netlink takes the address generation mode only); it
/// is written while the port is down, before IPv6 would start. (A staged
/// container end, on the host until Docker moves it, gets the same.)
pub(crate) fn disable_ipv6_on_port(name: &str) -> Result<()> {
    match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1") {
        // A kernel without IPv6 has none to turn off.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("disable IPv6 on bridge port {name}"), e))
        }
        _ => Ok(()),
    }
}

/// Ports a Linux bridge holds (`BR_MAX_PORTS` less port 0); one more fails
/// with EXFULL.
const BRIDGE_MAX_PORTS: u32 = 1023;

/// Remove an attachment's veth; its peer, addresses and routes go with it.
pub fn detach(host: &mut Netlink, a: &Attachment) -> Result<()> {
    host.delete_link_by_name(&a.host_ifname)
        .map(drop)
        .map_err(kernel(format!("delete veth {}", a.host_ifname)))
}
