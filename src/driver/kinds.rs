//! One trait for every kind of network (as netavark's `NetworkDriver`):
//! the engine calls a network's driver and never asks which kind it is.
//! Each kind's work stays in its module; this is the seam.

use super::bridge::{self, HostState};
use super::{host_device, ipvlan, macvlan, overlay, parent};
use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::{
    Attachment, BridgeMode, BridgeOptions, HostDeviceOptions, IpvlanOptions, Mac, MacvlanOptions,
    Network, NetworkKind,
};
use crate::names;
use crate::netlink::Netlink;
use crate::netns::NsHandle;
use crate::undo::UndoLog;

/// Where an attach makes its interface: the host's socket and namespace,
/// and the target's.
pub struct Plug<'a> {
    pub host: &'a mut Netlink,
    pub inner: &'a mut Netlink,
    pub ns: &'a NsHandle,
    pub host_ns: &'a NsHandle,
}

pub trait NetworkDriver {
    /// What the host has before the network is made that its removal must
    /// leave (a bridge that exists already): recorded with the intent to
    /// create it, before the kernel is touched.
    fn plan(&self, _host: &mut Netlink) -> Result<Option<HostState>> {
        Ok(None)
    }

    /// Make the network's part of the host (a bridge, a shim, a parent's
    /// settings); what it found there, to give back at removal.
    fn create(
        &self,
        host: &mut Netlink,
        net: &Network,
        undo: &mut UndoLog,
    ) -> Result<Option<HostState>>;

    /// Take it away again: every error, not the first.
    fn remove(&self, host: &mut Netlink, net: &Network, state: &HostState) -> Vec<Error>;

    /// The host's links that are the network's (its bridge and uplink, its
    /// shim): a change to one of them calls for [`NetworkDriver::repair`].
    fn host_links(&self, _net: &Network) -> Vec<String> {
        Vec::new()
    }

    /// Put the network's part of the host back where the kernel lost it
    /// (`stored`: the host state recorded at create). What was made again,
    /// for the report, and the host state to record now if it changed.
    fn repair(
        &self,
        _host: &mut Netlink,
        _net: &Network,
        _stored: &HostState,
        _undo: &mut UndoLog,
    ) -> Result<Option<(String, Option<HostState>)>> {
        Ok(None)
    }

    /// What the kind knows of an attachment before it is recorded (a host
    /// device brings its own MAC, MTU and addresses).
    fn inspect(&self, _host: &mut Netlink, _a: &mut Attachment) -> Result<()> {
        Ok(())
    }

    /// Make `a`'s interface in its target and configure it there.
    fn attach(
        &self,
        at: Plug<'_>,
        net: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()>;

    /// Make `a`'s interface on the host under its staged name, for Docker
    /// to move into the container and configure.
    fn stage(
        &self,
        host: &mut Netlink,
        host_ns: &NsHandle,
        net: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()>;

    /// Take `a`'s interface away wherever it is: in its target (`ns`, if
    /// that still exists) or, staged, on the host.
    fn detach(
        &self,
        host: &mut Netlink,
        ns: Option<&NsHandle>,
        host_ns: &NsHandle,
        a: &Attachment,
    ) -> Result<()>;

    /// The host interface an attachment takes whole (a host device), which
    /// is its host name and its staged interface.
    fn device(&self) -> Option<&str> {
        None
    }

    /// Whether an attachment has a port on the host (a veth's end), where
    /// what it receives is shaped; without one an ifb in the target does.
    fn has_host_port(&self) -> bool {
        false
    }

    /// Put an attachment's host port back as the network wants it (on its
    /// bridge, its settings); true when anything changed.
    fn repair_port(&self, _host: &mut Netlink, _net: &Network, _a: &Attachment) -> Result<bool> {
        Ok(false)
    }

    /// Whether the host routes the network's traffic (a nat or routed
    /// bridge), so that an attachment may have an uplink of its own.
    fn routed_by_host(&self) -> bool {
        false
    }

    /// Whether an attachment's interface has a MAC of its own (an ipvlan
    /// has its parent's, which the kernel will not change).
    fn own_mac(&self) -> bool {
        true
    }

    /// The host interface on the network's LAN, where the host hears its
    /// DHCP server: none for a segment of the host's own.
    fn lan(&self) -> Option<&str>;

    /// The MAC an attachment with `addresses` has when none is asked for,
    /// if the network decides it by the addresses.
    fn mac_for(&self, _addresses: &[IpNet]) -> Option<Mac> {
        None
    }
}

/// The driver of a kind of network.
pub fn of(kind: &NetworkKind) -> &dyn NetworkDriver {
    match kind {
        NetworkKind::Bridge(b) => b,
        NetworkKind::Macvlan(m) => m,
        NetworkKind::Ipvlan(i) => i,
        NetworkKind::HostDevice(d) => d,
    }
}

/// The name on the host that an attachment of `net` in namespace `netns`
/// as `ifname` is known by: a host device's own, else its veth's host end
/// (the name exists for the other kinds too, as the attachment's key).
pub fn host_ifname(net: &Network, netns: &str, ifname: &str) -> String {
    match of(&net.kind).device() {
        Some(d) => d.to_string(),
        None => names::host_veth_name(&net.name, netns, ifname),
    }
}

/// The name a staged interface of `endpoint` has on the host.
pub fn staged_ifname(kind: &NetworkKind, endpoint: &str) -> String {
    match of(kind).device() {
        Some(d) => d.to_string(),
        None => names::staged_name(endpoint),
    }
}

impl NetworkDriver for BridgeOptions {
    fn plan(&self, host: &mut Netlink) -> Result<Option<HostState>> {
        bridge::plan(host, self).map(Some)
    }

    fn create(
        &self,
        host: &mut Netlink,
        net: &Network,
        undo: &mut UndoLog,
    ) -> Result<Option<HostState>> {
        bridge::create(host, net, self, undo).map(Some)
    }

    fn remove(&self, host: &mut Netlink, net: &Network, state: &HostState) -> Vec<Error> {
        bridge::remove(host, net, self, state)
    }

    fn host_links(&self, _: &Network) -> Vec<String> {
        std::iter::once(self.bridge.clone())
            .chain(self.overlay.iter().map(|o| o.device.clone()))
            .chain(self.uplink.iter().map(|u| u.name.clone()))
            .collect()
    }

    fn repair(
        &self,
        host: &mut Netlink,
        net: &Network,
        stored: &HostState,
        undo: &mut UndoLog,
    ) -> Result<Option<(String, Option<HostState>)>> {
        bridge::repair(host, net, self, stored, undo)
    }

    fn attach(
        &self,
        at: Plug<'_>,
        net: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        bridge::attach(at.host, at.inner, at.ns, net, self, a, undo)
    }

    fn stage(
        &self,
        host: &mut Netlink,
        host_ns: &NsHandle,
        net: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        bridge::stage(host, host_ns, net, self, a, undo)
    }

    /// The veth's host end takes its peer with it, wherever that is.
    fn detach(
        &self,
        host: &mut Netlink,
        _: Option<&NsHandle>,
        _: &NsHandle,
        a: &Attachment,
    ) -> Result<()> {
        bridge::detach(host, a)
    }

    fn has_host_port(&self) -> bool {
        true
    }

    fn repair_port(&self, host: &mut Netlink, net: &Network, a: &Attachment) -> Result<bool> {
        bridge::repair_port(host, net, self, a)
    }

    fn routed_by_host(&self) -> bool {
        self.mode != BridgeMode::Bridged
    }

    fn lan(&self) -> Option<&str> {
        (self.mode == BridgeMode::Bridged).then_some(self.bridge.as_str())
    }

    fn mac_for(&self, addresses: &[IpNet]) -> Option<Mac> {
        self.overlay.as_ref()?;
        overlay::container_mac(addresses)
    }
}

/// A macvlan's or ipvlan's child lives in its target, or staged on the host.
fn detach_child(host: &mut Netlink, ns: Option<&NsHandle>, a: &Attachment) -> Result<()> {
    if a.is_staged() {
        return host
            .delete_link_by_name(&a.ifname)
            .map(drop)
            .map_err(|e| Error::kernel(format!("delete {}", a.ifname), e));
    }
    parent::detach_child(ns, a)
}

impl NetworkDriver for MacvlanOptions {
    fn create(
        &self,
        host: &mut Netlink,
        net: &Network,
        undo: &mut UndoLog,
    ) -> Result<Option<HostState>> {
        macvlan::create(host, net, self, undo).map(|()| None)
    }

    fn remove(&self, host: &mut Netlink, net: &Network, _: &HostState) -> Vec<Error> {
        macvlan::remove(host, net, self)
    }

    fn host_links(&self, net: &Network) -> Vec<String> {
        match self.host_shim {
            true => vec![names::shim_name(&net.name)],
            false => Vec::new(),
        }
    }

    /// The host's shim, if the network has one.
    fn repair(
        &self,
        host: &mut Netlink,
        net: &Network,
        _: &HostState,
        undo: &mut UndoLog,
    ) -> Result<Option<(String, Option<HostState>)>> {
        let shim = names::shim_name(&net.name);
        if !self.host_shim || host.link_by_name(&shim).ok().flatten().is_some() {
            return Ok(None);
        }
        macvlan::create(host, net, self, undo)?;
        Ok(Some((format!("host shim {shim}"), None)))
    }

    fn attach(
        &self,
        at: Plug<'_>,
        _: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        macvlan::attach(at.host, at.inner, at.ns, self, a, undo)
    }

    fn stage(
        &self,
        host: &mut Netlink,
        _: &NsHandle,
        _: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        macvlan::stage(host, self, a, undo)
    }

    fn detach(
        &self,
        host: &mut Netlink,
        ns: Option<&NsHandle>,
        _: &NsHandle,
        a: &Attachment,
    ) -> Result<()> {
        detach_child(host, ns, a)
    }

    fn lan(&self) -> Option<&str> {
        Some(&self.parent.name)
    }
}

impl NetworkDriver for IpvlanOptions {
    fn create(
        &self,
        host: &mut Netlink,
        net: &Network,
        undo: &mut UndoLog,
    ) -> Result<Option<HostState>> {
        ipvlan::create(host, net, self, undo).map(|()| None)
    }

    fn remove(&self, host: &mut Netlink, net: &Network, _: &HostState) -> Vec<Error> {
        ipvlan::remove(host, net, self)
    }

    fn attach(
        &self,
        at: Plug<'_>,
        _: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        ipvlan::attach(at.host, at.inner, at.ns, self, a, undo)
    }

    fn stage(
        &self,
        host: &mut Netlink,
        _: &NsHandle,
        _: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        ipvlan::stage(host, self, a, undo)
    }

    fn detach(
        &self,
        host: &mut Netlink,
        ns: Option<&NsHandle>,
        _: &NsHandle,
        a: &Attachment,
    ) -> Result<()> {
        detach_child(host, ns, a)
    }

    fn own_mac(&self) -> bool {
        false
    }

    fn lan(&self) -> Option<&str> {
        Some(&self.parent.name)
    }
}

impl NetworkDriver for HostDeviceOptions {
    fn create(
        &self,
        host: &mut Netlink,
        _: &Network,
        _: &mut UndoLog,
    ) -> Result<Option<HostState>> {
        host_device::create(host, self).map(|()| None)
    }

    /// The device is the host's: nothing was made.
    fn remove(&self, _: &mut Netlink, _: &Network, _: &HostState) -> Vec<Error> {
        Vec::new()
    }

    /// A device that keeps its own addresses is known by them.
    fn inspect(&self, host: &mut Netlink, a: &mut Attachment) -> Result<()> {
        host_device::inspect(host, self, a)
    }

    fn attach(
        &self,
        at: Plug<'_>,
        _: &Network,
        a: &mut Attachment,
        undo: &mut UndoLog,
    ) -> Result<()> {
        host_device::attach(at.host, at.inner, at.ns, at.host_ns, self, a, undo)
    }

    /// Docker moves the device itself: it need only be there.
    fn stage(
        &self,
        host: &mut Netlink,
        _: &NsHandle,
        _: &Network,
        _: &mut Attachment,
        _: &mut UndoLog,
    ) -> Result<()> {
        host_device::create(host, self)
    }

    /// Home under its own name with its own addresses; one Docker gave
    /// back (staged) has only its addresses to get back.
    fn detach(
        &self,
        host: &mut Netlink,
        ns: Option<&NsHandle>,
        host_ns: &NsHandle,
        a: &Attachment,
    ) -> Result<()> {
        if a.is_staged() {
            return host_device::readdress(host, a);
        }
        host_device::give_back(host, ns, host_ns, a)
    }

    fn device(&self) -> Option<&str> {
        Some(&self.device)
    }

    fn lan(&self) -> Option<&str> {
        Some(&self.device)
    }
}
