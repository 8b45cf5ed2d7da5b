//! The Linux bridge driver: a bridge on the host, one veth pair per
//! attachment with its peer created directly inside the target namespace.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::{Attachment, BridgeMode, DefaultRoute, Network, RouteSpec};
use crate::netlink::{LinkInfo, Netlink};
use crate::netns::{NsHandle, write_sysctl};
use crate::undo::UndoLog;

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

fn kernel(what: String) -> impl FnOnce(crate::netlink::NetlinkError) -> Error {
    move |e| Error::kernel(what, e)
}

/// Create the bridge (or adopt an existing one), give the host its
/// addresses, enslave the uplink and enable forwarding.
pub fn create(nl: &mut Netlink, net: &Network, undo: &mut UndoLog) -> Result<HostState> {
    let mut state = HostState::default();
    let uplink = match &net.uplink {
        Some(name) => Some(check_uplink(nl, net, name)?),
        None => None,
    };
    let bridge = match nl
        .link_by_name(&net.bridge)
        .map_err(kernel(format!("look up bridge {}", net.bridge)))?
    {
        Some(link) if Netlink::is_bridge(&link) => {
            state.existing_bridge = true;
            link
        }
        Some(_) => {
            return Err(Error::invalid(
                "--bridge",
                &net.bridge,
                "an interface of that name exists and is not a bridge",
            ));
        }
        None => {
            nl.create_bridge(&net.bridge, crate::names::bridge_mac(&net.name), net.mtu)
                .map_err(kernel(format!("create bridge {}", net.bridge)))?;
            let name = net.bridge.clone();
            undo.push(format!("delete bridge {name}"), move |nl| {
                nl.delete_link_by_name(&name)
                    .map(drop)
                    .map_err(kernel(format!("delete bridge {name}")))
            });
            nl.link_by_name(&net.bridge)
                .map_err(kernel(format!("look up bridge {}", net.bridge)))?
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "bridge {} vanished right after creation",
                        net.bridge
                    ))
                })?
        }
    };
    if let (true, Some(mtu)) = (state.existing_bridge, net.mtu) {
        nl.set_mtu(bridge.index, mtu)
            .map_err(kernel(format!("set MTU {mtu} on {}", net.bridge)))?;
    }
    if let Some(up) = &uplink {
        enslave_uplink(nl, &bridge, up, &mut state, undo)?;
    }
    let existing = nl
        .addresses(bridge.index)
        .map_err(kernel(format!("list addresses of {}", net.bridge)))?;
    for addr in &net.host_addresses {
        if existing.contains(addr) {
            continue;
        }
        nl.add_address(bridge.index, *addr)
            .map_err(kernel(format!("add {addr} to {}", net.bridge)))?;
        let (index, addr, name) = (bridge.index, *addr, net.bridge.clone());
        undo.push(format!("remove {addr} from {name}"), move |nl| {
            nl.del_address(index, addr)
                .map_err(kernel(format!("remove {addr} from {name}")))
        });
    }
    nl.set_up(bridge.index)
        .map_err(kernel(format!("set {} up", net.bridge)))?;
    if net.mode != BridgeMode::Bridged {
        enable_forwarding(net)?;
    }
    Ok(state)
}

/// The uplink must exist, not be a bridge, and not belong to another bridge.
fn check_uplink(nl: &mut Netlink, net: &Network, name: &str) -> Result<LinkInfo> {
    let link = nl
        .link_by_name(name)
        .map_err(kernel(format!("look up uplink {name}")))?
        .ok_or_else(|| Error::invalid("--uplink", name, "no such interface on the host"))?;
    if net.mode == BridgeMode::Bridged
        && let Some(controller) = link.controller
    {
        let bridge = nl.link_by_name(&net.bridge).ok().flatten();
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
pub fn remove(nl: &mut Netlink, net: &Network, state: &HostState) -> Vec<Error> {
    let mut errors = Vec::new();
    let bridge = match nl.link_by_name(&net.bridge) {
        Ok(b) => b,
        Err(e) => return vec![Error::kernel(format!("look up bridge {}", net.bridge), e)],
    };
    if let Some(name) = &net.uplink
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
            if let Err(e) = nl.add_route(r.dest, Some(r.via), Some(up.index), true) {
                errors.push(Error::kernel(format!("give route {r} back to {name}"), e));
            }
        }
    }
    let Some(bridge) = bridge else { return errors };
    if state.existing_bridge {
        for addr in &net.host_addresses {
            if let Err(e) = nl.del_address(bridge.index, *addr)
                && !crate::netlink::is_gone(&e)
            {
                errors.push(Error::kernel(
                    format!("remove {addr} from {}", net.bridge),
                    e,
                ));
            }
        }
    } else if let Err(e) = nl.delete_link_by_name(&net.bridge) {
        errors.push(Error::kernel(format!("delete bridge {}", net.bridge), e));
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
    a: &Attachment,
    undo: &mut UndoLog,
) -> Result<()> {
    let bridge = host
        .link_by_name(&net.bridge)
        .map_err(kernel(format!("look up bridge {}", net.bridge)))?
        .ok_or_else(|| {
            Error::Conflict(format!(
                "network `{}`: bridge {} is missing on the host (run `plumb restore`)",
                net.name, net.bridge
            ))
        })?;
    host.create_veth(&a.host_ifname, bridge.index, &a.ifname, ns, a.mac.0, a.mtu)
        .map_err(|e| {
            if e.is(libc::EEXIST) {
                Error::Conflict(format!(
                    "interface {} or {} (in the target) already exists",
                    a.host_ifname, a.ifname
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
    tracing::debug!(host_ifname = %a.host_ifname, "veth created");
    configure_inside(inner, a)
}

fn configure_inside(nl: &mut Netlink, a: &Attachment) -> Result<()> {
    let what = |s: &str| format!("in target {}: {s}", a.target);
    if let Some(lo) = nl.link_by_name("lo").map_err(kernel(what("look up lo")))?
        && !lo.up
    {
        nl.set_up(lo.index).map_err(kernel(what("set lo up")))?;
    }
    let link = nl
        .link_by_name(&a.ifname)
        .map_err(kernel(what(&format!("look up {}", a.ifname))))?
        .ok_or_else(|| Error::Conflict(what(&format!("{} vanished after creation", a.ifname))))?;
    // An interface with no IPv6 address to carry still makes a link-local
    // one, and its detection chatter reaches every container of the
    // network: only IPv6 networks get it.
    if !a.addresses.iter().any(|x| x.addr().is_ipv6()) {
        nl.disable_link_local(link.index)
            .map_err(kernel(what(&format!("configure {}", a.ifname))))?;
    }
    for addr in &a.addresses {
        nl.add_address(link.index, *addr)
            .map_err(kernel(what(&format!("add {addr} to {}", a.ifname))))?;
    }
    nl.set_up(link.index)
        .map_err(kernel(what(&format!("set {} up", a.ifname))))?;
    for gw in &a.gateways {
        install_default_route(nl, link.index, *gw, a.default_route)
            .map_err(kernel(what(&format!("default route via {gw}"))))?;
    }
    for r in &a.routes {
        nl.add_route(r.dest, Some(r.via), Some(link.index), false)
            .map_err(kernel(what(&format!("route {r}"))))?;
    }
    Ok(())
}

fn install_default_route(
    nl: &mut Netlink,
    oif: u32,
    gw: IpAddr,
    policy: DefaultRoute,
) -> crate::netlink::NlResult<()> {
    let any: IpNet = if gw.is_ipv4() {
        "0.0.0.0/0".parse().expect("literal")
    } else {
        "::/0".parse().expect("literal")
    };
    match policy {
        DefaultRoute::None => Ok(()),
        DefaultRoute::Replace => nl.add_route(any, Some(gw), Some(oif), true),
        DefaultRoute::Keep => {
            let has_default = nl
                .routes(gw.is_ipv6())?
                .iter()
                .any(|r| r.dest.prefix_len() == 0);
            if has_default {
                Ok(())
            } else {
                nl.add_route(any, Some(gw), Some(oif), false)
            }
        }
    }
}

/// Remove an attachment's veth; its peer, addresses and routes go with it.
pub fn detach(host: &mut Netlink, a: &Attachment) -> Result<()> {
    host.delete_link_by_name(&a.host_ifname)
        .map(drop)
        .map_err(kernel(format!("delete veth {}", a.host_ifname)))
}
