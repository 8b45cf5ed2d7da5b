//! The typed objects plumb keeps: networks and attachments, with validation of
//! everything a user can type. Validation is pure: it never looks at the kernel.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    Bridge,
    Macvlan,
    Ipvlan,
    HostDevice,
    /// A bridge network of a cluster, across hosts over VXLAN.
    Vxlan,
}

impl FromStr for DriverKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bridge" => Ok(DriverKind::Bridge),
            "macvlan" => Ok(DriverKind::Macvlan),
            "ipvlan" => Ok(DriverKind::Ipvlan),
            "host-device" => Ok(DriverKind::HostDevice),
            "vxlan" => Ok(DriverKind::Vxlan),
            _ => Err(Error::invalid(
                "--driver",
                s,
                "unknown driver (known: bridge, macvlan, ipvlan, host-device, vxlan)",
            )),
        }
    }
}

/// Where a network's container addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Ipam {
    /// plumb allocates from the network's subnets, in the store.
    #[default]
    HostLocal,
    /// The LAN's DHCP server leases them; the daemon runs the client.
    Dhcp,
}

impl FromStr for Ipam {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "host-local" => Ok(Ipam::HostLocal),
            "dhcp" => Ok(Ipam::Dhcp),
            _ => Err(Error::invalid(
                "--ipam",
                s,
                "unknown IPAM (known: host-local, dhcp)",
            )),
        }
    }
}

/// How a bridge network reaches the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BridgeMode {
    /// The bridge holds the gateway; traffic leaving by another interface is masqueraded.
    #[default]
    Nat,
    /// The bridge is an L2 segment (optionally with an uplink enslaved); the
    /// gateway is a router on that segment; no NAT.
    Bridged,
    /// The bridge holds the gateway; no NAT; the subnet is routed to the host.
    Routed,
}

impl FromStr for BridgeMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nat" => Ok(BridgeMode::Nat),
            "bridged" => Ok(BridgeMode::Bridged),
            "routed" => Ok(BridgeMode::Routed),
            _ => Err(Error::invalid(
                "--mode",
                s,
                "unknown mode (known: nat, bridged, routed)",
            )),
        }
    }
}

impl fmt::Display for BridgeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BridgeMode::Nat => "nat",
            BridgeMode::Bridged => "bridged",
            BridgeMode::Routed => "routed",
        })
    }
}

/// How macvlan interfaces on one parent see each other (the kernel's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Interfaces on the parent talk to each other directly.
    #[default]
    Bridge,
    /// No traffic between interfaces on the parent, not even through the switch.
    Private,
    /// Traffic between interfaces goes out to the switch (which may hairpin it).
    Vepa,
    /// One interface takes the whole parent.
    Passthru,
}

impl FromStr for MacvlanMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bridge" => Ok(MacvlanMode::Bridge),
            "private" => Ok(MacvlanMode::Private),
            "vepa" => Ok(MacvlanMode::Vepa),
            "passthru" => Ok(MacvlanMode::Passthru),
            _ => Err(Error::invalid(
                "--macvlan-mode",
                s,
                "unknown mode (known: bridge, private, vepa, passthru)",
            )),
        }
    }
}

impl fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
        })
    }
}

/// The ipvlan mode: where the kernel switches between interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanMode {
    /// Layer 2: one MAC (the parent's) for all, ARP on the LAN.
    #[default]
    L2,
    /// Layer 3: the parent routes; no broadcast or multicast; the LAN needs
    /// a route to the subnet through the host.
    L3,
    /// Layer 3 with the host's netfilter on the way (conntrack, firewall).
    L3s,
}

impl FromStr for IpvlanMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "l2" => Ok(IpvlanMode::L2),
            "l3" => Ok(IpvlanMode::L3),
            "l3s" => Ok(IpvlanMode::L3s),
            _ => Err(Error::invalid(
                "--ipvlan-mode",
                s,
                "unknown mode (known: l2, l3, l3s)",
            )),
        }
    }
}

/// How ipvlan interfaces of one parent see each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IpvlanFlag {
    #[default]
    Bridge,
    Private,
    Vepa,
}

impl FromStr for IpvlanFlag {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bridge" => Ok(IpvlanFlag::Bridge),
            "private" => Ok(IpvlanFlag::Private),
            "vepa" => Ok(IpvlanFlag::Vepa),
            _ => Err(Error::invalid(
                "--ipvlan-flag",
                s,
                "unknown flag (known: bridge, private, vepa)",
            )),
        }
    }
}

/// The interface a macvlan or ipvlan network sits on, and, when it is an
/// 802.1q sub-interface, how to make it if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<Vlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vlan {
    pub base: String,
    pub id: u16,
}

impl Parent {
    /// `--parent eth0.10`, or `--parent eth0 --vlan 10` (named eth0.10);
    /// `field` names the option in errors (`--parent`, `--uplink`).
    pub fn parse(field: &str, parent: &str, vlan: Option<u16>) -> Result<Parent> {
        validate_ifname(field, parent)?;
        let check = |id: u16, value: &str| {
            if (1..=4094).contains(&id) {
                Ok(id)
            } else {
                Err(Error::invalid(
                    "--vlan",
                    value,
                    "a VLAN id is between 1 and 4094",
                ))
            }
        };
        if let Some(id) = vlan {
            let id = check(id, &id.to_string())?;
            let name = format!("{parent}.{id}");
            validate_ifname(&format!("{field} with --vlan"), &name)?;
            return Ok(Parent {
                name,
                vlan: Some(Vlan {
                    base: parent.to_string(),
                    id,
                }),
            });
        }
        let vlan = match parent.rsplit_once('.') {
            Some((base, id))
                if !base.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let id = id
                    .parse::<u16>()
                    .map_err(|_| Error::invalid("--parent", parent, "VLAN id out of range"))?;
                Some(Vlan {
                    base: base.to_string(),
                    id: check(id, parent)?,
                })
            }
            _ => None,
        };
        Ok(Parent {
            name: parent.to_string(),
            vlan,
        })
    }
}

/// A route `DEST via GATEWAY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dest: IpNet,
    pub via: IpAddr,
}

impl RouteSpec {
    /// Parse `CIDR via IP` (also `CIDR,IP` and `CIDR=IP` for one-token use).
    pub fn parse(field: &str, s: &str) -> Result<Self> {
        let parts: Vec<&str> = s
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .filter(|p| !p.is_empty())
            .collect();
        let (dest, via) = match parts.as_slice() {
            [d, "via", v] | [d, v] => (*d, *v),
            _ => return Err(Error::invalid(field, s, "expected `CIDR via IP`")),
        };
        let dest = parse_cidr(field, dest)?;
        let via: IpAddr = via
            .parse()
            .map_err(|_| Error::invalid(field, s, format!("`{via}` is not an IP address")))?;
        if dest.addr().is_ipv4() != via.is_ipv4() {
            return Err(Error::invalid(
                field,
                s,
                "destination and gateway are of different IP families",
            ));
        }
        Ok(RouteSpec {
            dest: dest.trunc(),
            via,
        })
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.dest, self.via)
    }
}

/// One subnet of a network with its gateway and allocation range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub subnet: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
}

/// What the user asks for when creating a network (CLI flags or a topology
/// table); [`NetworkSpec::validate`] turns it into a [`Network`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default = "default_driver")]
    pub driver: String,
    #[serde(default)]
    pub subnet: Vec<String>,
    #[serde(default)]
    pub gateway: Vec<String>,
    #[serde(default)]
    pub ip_range: Vec<String>,
    #[serde(default)]
    pub aux_address: BTreeMap<String, String>,
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub uplink: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub route: Vec<String>,
    #[serde(default)]
    pub host_address: Vec<String>,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub macvlan_mode: Option<String>,
    #[serde(default)]
    pub host_shim: Option<String>,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub ipvlan_mode: Option<String>,
    #[serde(default)]
    pub ipvlan_flag: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub ipam: Option<String>,
    /// DHCP networks: the DNS domain of clients' FQDN (option 81),
    /// `NAME.DOMAIN`. Networks with `serve_dns`: the zone plumb answers names in.
    #[serde(default)]
    pub domain: Option<String>,
    /// plumb's daemon answers DNS on the host's addresses on the network:
    /// the names and aliases of its containers, and forwards the rest.
    #[serde(default)]
    pub serve_dns: bool,
    /// DHCP networks: IPv6 from the LAN's router advertisements (default on).
    #[serde(default)]
    pub slaac: Option<bool>,
    /// The host interface the network's traffic leaves by (policy routing).
    #[serde(default)]
    pub egress_interface: Option<String>,
    /// The next hop on that interface.
    #[serde(default)]
    pub egress_gateway: Option<String>,
    /// The tenant the network belongs to.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Bridge networks: containers reach the gateway and the world, not
    /// each other.
    #[serde(default)]
    pub isolate_containers: bool,
    /// Bridge networks: IGMP/MLD snooping (default: on for bridged, off for
    /// nat and routed).
    #[serde(default)]
    pub multicast_snooping: Option<bool>,
    /// vxlan: the network's VXLAN network identifier, one per network of a
    /// cluster.
    #[serde(default)]
    pub vni: Option<u32>,
    /// vxlan: the prefix length of the address blocks hosts claim (IPv4,
    /// default 26: 64 addresses; IPv6 blocks hold as many).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    /// vxlan: this host's tunnel end, which its daemon fills in when it
    /// makes the cluster's network on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
    /// vxlan: made on a host only while a container there is on it (else
    /// on every host of the cluster).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

fn default_driver() -> String {
    "bridge".into()
}

/// A validated network, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub kind: NetworkKind,
    pub subnets: Vec<SubnetSpec>,
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Addresses the host holds on the network: the gateways of a nat or
    /// routed bridge, `--host-address` on a bridged one, the macvlan shim's.
    #[serde(default)]
    pub host_addresses: Vec<IpNet>,
    #[serde(default)]
    pub ipam: Ipam,
    /// The DNS domain DHCP clients register their names in, or the zone
    /// plumb's resolver answers in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The daemon answers DNS for the network on its host addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub serve_dns: bool,
    /// DHCP networks: containers take IPv6 addresses from the LAN's router
    /// advertisements (SLAAC).
    #[serde(default)]
    pub slaac: bool,
    /// The uplink the network's traffic leaves by, whatever the host's
    /// default route says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Bridge ports isolated from each other.
    #[serde(default)]
    pub isolate_containers: bool,
}

/// Source policy routing for a network: a table of its own whose default
/// route leaves by `interface`, selected by the network's source subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Egress {
    pub interface: String,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// What differs between drivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum NetworkKind {
    Bridge(BridgeOptions),
    Macvlan(MacvlanOptions),
    Ipvlan(IpvlanOptions),
    #[serde(rename = "host-device")]
    HostDevice(HostDeviceOptions),
}

impl NetworkKind {
    pub fn driver_name(&self) -> &'static str {
        match self {
            NetworkKind::Bridge(b) if b.overlay.is_some() => "vxlan",
            NetworkKind::Bridge(_) => "bridge",
            NetworkKind::Macvlan(_) => "macvlan",
            NetworkKind::Ipvlan(_) => "ipvlan",
            NetworkKind::HostDevice(_) => "host-device",
        }
    }

    /// The host interface a network sits on: a macvlan or ipvlan parent, a
    /// bridge's uplink.
    pub fn parent(&self) -> Option<&Parent> {
        match self {
            NetworkKind::Bridge(b) => b.uplink.as_ref(),
            NetworkKind::HostDevice(_) => None,
            NetworkKind::Macvlan(m) => Some(&m.parent),
            NetworkKind::Ipvlan(i) => Some(&i.parent),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeOptions {
    pub mode: BridgeMode,
    pub bridge: String,
    #[serde(default)]
    pub uplink: Option<Parent>,
    /// As asked for; `None` is the mode's default (`multicast_snooping()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multicast_snooping: Option<bool>,
    /// A cluster network's overlay to the other hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<crate::driver::overlay::Overlay>,
}

impl BridgeOptions {
    /// Whether the bridge snoops IGMP and MLD to send multicast only to the
    /// ports that joined a group. On a bridged network the LAN may have a
    /// querier, and snooping pays. A nat or routed bridge is a segment of
    /// the host's own where nobody asks: the bridge floods multicast to
    /// every port either way, and snooping would only cost time (the kernel
    /// re-arms the multicast timers of every port each time one comes up,
    /// so an attach cost more with each container). A container that runs
    /// a querier (a lab's multicast router) can have it back.
    pub fn multicast_snooping(&self) -> bool {
        self.multicast_snooping
            .unwrap_or(self.mode == BridgeMode::Bridged)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDeviceOptions {
    /// The host interface handed whole to one target at a time.
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpvlanOptions {
    pub parent: Parent,
    pub mode: IpvlanMode,
    pub flag: IpvlanFlag,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacvlanOptions {
    pub parent: Parent,
    pub mode: MacvlanMode,
    /// A macvlan of the host's own on the parent, so that host and
    /// containers can talk (a macvlan parent never sees its children).
    #[serde(default)]
    pub host_shim: bool,
}

pub fn parse_cidr(field: &str, s: &str) -> Result<IpNet> {
    let net: IpNet = s.parse().map_err(|_| {
        Error::invalid(field, s, "not a valid CIDR (e.g. 10.0.0.0/24 or fd00::/64)")
    })?;
    Ok(net)
}

pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| Error::invalid(field, s, "not a valid IP address"))
}

pub fn validate_ifname(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(
            field,
            name,
            "an interface name cannot be empty",
        ));
    }
    if name.len() > IFNAME_MAX {
        return Err(Error::invalid(
            field,
            name,
            format!(
                "interface names are at most {IFNAME_MAX} bytes, this one has {}",
                name.len()
            ),
        ));
    }
    // The kernel takes any other bytes; tools that print, parse or match
    // names (iptables' `-i`, nft, shells) do not, so plumb keeps to ASCII.
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        return Err(Error::invalid(
            field,
            name,
            "an interface name is ASCII, not `.` or `..`, without `/`, `:` or whitespace",
        ));
    }
    Ok(())
}

pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid(field, name, "must be 1 to 64 characters"));
    }
    // A name becomes a file name (a namespace under /run/netns) and part
    // of interface names: `.` and `..` would be other directories.
    if name == "." || name == ".." {
        return Err(Error::invalid(field, name, "cannot be `.` or `..`"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(Error::invalid(
            field,
            name,
            "only letters, digits, `-`, `_` and `.` are allowed",
        ));
    }
    Ok(())
}

pub fn validate_mtu(field: &str, mtu: u32) -> Result<()> {
    if !(68..=65535).contains(&mtu) {
        return Err(Error::invalid(
            field,
            mtu,
            "MTU must be between 68 and 65535",
        ));
    }
    Ok(())
}

/// The first usable host address of a subnet (the conventional gateway).
pub fn first_host(net: &IpNet) -> Option<IpAddr> {
    let mut hosts = net.hosts();
    match net {
        // IPv6 hosts() includes the subnet-router anycast address (::0); skip it.
        IpNet::V6(_) => hosts.nth(1),
        IpNet::V4(_) => hosts.next(),
    }
}

/// Default bridge name: `pl-NAME` when it fits in 15 bytes, else a hash.
pub fn default_bridge_name(network: &str) -> String {
    let candidate = format!("pl-{network}");
    if candidate.len() <= IFNAME_MAX {
        candidate
    } else {
        format!("pl-{}", &crate::names::short_hash(&[network])[..10])
    }
}

impl NetworkSpec {
    pub fn validate(&self) -> Result<Network> {
        validate_name("network name", &self.name)?;
        let driver: DriverKind = self.driver.parse()?;
        self.refuse_foreign_options(driver)?;
        if let Some(mtu) = self.mtu {
            validate_mtu("--mtu", mtu)?;
        }
        let ipam: Ipam = self
            .ipam
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        if ipam == Ipam::Dhcp {
            self.check_dhcp_options(driver)?;
        } else if let Some(d) = self.domain.as_ref().filter(|_| !self.serve_dns) {
            return Err(Error::invalid(
                "--domain",
                d,
                "names DHCP clients (--ipam dhcp) or the containers plumb's DNS answers for (--serve-dns)",
            ));
        } else if let Some(s) = self.slaac {
            return Err(Error::invalid(
                "slaac",
                s,
                "router advertisements address DHCP networks; it needs --ipam dhcp",
            ));
        }
        // A host device may keep the addresses it has, a DHCP network's LAN
        // hands them out: no subnet needed.
        let optional = driver == DriverKind::HostDevice || ipam == Ipam::Dhcp;
        let mut subnets = if optional && self.subnet.is_empty() {
            Vec::new()
        } else {
            self.subnets()?
        };
        let (kind, host_addresses) = match driver {
            DriverKind::Bridge => self.bridge_kind(&mut subnets)?,
            DriverKind::Macvlan => self.macvlan_kind(&subnets)?,
            DriverKind::Ipvlan => (self.ipvlan_kind()?, Vec::new()),
            DriverKind::HostDevice => (self.host_device_kind()?, Vec::new()),
            DriverKind::Vxlan => self.vxlan_kind(&mut subnets, ipam)?,
        };
        let mut aux_addresses = BTreeMap::new();
        for (key, value) in &self.aux_address {
            let field = format!("--aux-address {key}");
            let ip = parse_ip(&field, value)?;
            let sub = subnets
                .iter()
                .find(|s| s.subnet.contains(&ip))
                .ok_or_else(|| {
                    Error::invalid(&field, value, "is outside every subnet of the network")
                })?;
            check_usable(&field, &sub.subnet, ip)?;
            aux_addresses.insert(key.clone(), ip);
        }
        let mut routes = Vec::new();
        for r in &self.route {
            let route = RouteSpec::parse("--route", r)?;
            if ipam == Ipam::HostLocal && !subnets.iter().any(|s| s.subnet.contains(&route.via)) {
                return Err(Error::invalid(
                    "--route",
                    r,
                    format!("gateway {} is not on the network", route.via),
                ));
            }
            routes.push(route);
        }
        let egress = self.egress(&kind)?;
        if let Some(t) = &self.tenant {
            validate_name("--tenant", t)?;
        }
        if let (Some(on), false) = (
            self.multicast_snooping,
            matches!(kind, NetworkKind::Bridge(_)),
        ) {
            return Err(Error::invalid(
                "--multicast-snooping",
                if on { "on" } else { "off" },
                "is for bridge networks",
            ));
        }
        if self.isolate_containers && !matches!(kind, NetworkKind::Bridge(_)) {
            return Err(Error::invalid(
                "--isolate-containers",
                "true",
                "is for bridge networks (a macvlan uses --macvlan-mode private)",
            ));
        }
        if let Some(d) = &self.domain {
            validate_domain("--domain", d)?;
        }
        if self.serve_dns && host_addresses.is_empty() {
            return Err(Error::invalid(
                "--serve-dns",
                "true",
                "plumb answers DNS on an address of the host on the network: a nat or routed bridge, --host-address, or a macvlan --host-shim",
            ));
        }
        Ok(Network {
            name: self.name.clone(),
            kind,
            subnets,
            aux_addresses,
            // A VXLAN frame is 50 bytes longer on an IPv4 underlay, 70 on
            // an IPv6 one.
            mtu: self.mtu.or((driver == DriverKind::Vxlan).then(|| {
                let v6 = self
                    .vtep
                    .as_deref()
                    .is_some_and(|v| v.parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()));
                1500 - crate::driver::overlay::overhead(v6)
            })),
            routes,
            host_addresses,
            ipam,
            domain: self.domain.clone(),
            serve_dns: self.serve_dns,
            slaac: ipam == Ipam::Dhcp && self.slaac != Some(false),
            egress,
            tenant: self.tenant.clone(),
            isolate_containers: self.isolate_containers,
        })
    }

    /// `--egress-interface`: only where the host routes the network's
    /// traffic (a nat or routed bridge).
    fn egress(&self, kind: &NetworkKind) -> Result<Option<Egress>> {
        let Some(interface) = &self.egress_interface else {
            return match &self.egress_gateway {
                Some(g) => Err(Error::invalid(
                    "--egress-gateway",
                    g,
                    "needs --egress-interface",
                )),
                None => Ok(None),
            };
        };
        validate_ifname("--egress-interface", interface)?;
        let routed = matches!(kind, NetworkKind::Bridge(b) if b.mode != BridgeMode::Bridged);
        if !routed {
            return Err(Error::invalid(
                "--egress-interface",
                interface,
                "only nat and routed bridge networks leave through the host's routing",
            ));
        }
        let gateway = self
            .egress_gateway
            .as_deref()
            .map(|g| parse_ip("--egress-gateway", g))
            .transpose()?;
        Ok(Some(Egress {
            interface: interface.clone(),
            gateway,
        }))
    }

    /// A DHCP network is one where containers sit on a LAN with broadcast
    /// reach to its server, and where plumb allocates nothing itself.
    fn check_dhcp_options(&self, driver: DriverKind) -> Result<()> {
        let refuse = |field: &str, value: &str| {
            Err(Error::invalid(
                field,
                value,
                "addresses come from the LAN's DHCP server with --ipam dhcp",
            ))
        };
        if let Some(g) = self.gateway.first() {
            return refuse("--gateway", g);
        }
        if let Some(r) = self.ip_range.first() {
            return refuse("--ip-range", r);
        }
        if let Some(k) = self.aux_address.keys().next() {
            return refuse("--aux-address", k);
        }
        let mode = self.mode.as_deref().unwrap_or("nat");
        if driver == DriverKind::Bridge && mode != "bridged" {
            return Err(Error::invalid(
                "--mode",
                mode,
                "a DHCP network's bridge must be bridged to the LAN (--mode bridged)",
            ));
        }
        if driver == DriverKind::Ipvlan
            && let Some(m) = self.ipvlan_mode.as_deref().filter(|m| *m != "l2")
        {
            return Err(Error::invalid(
                "--ipvlan-mode",
                m,
                "DHCP needs broadcasts, which only ipvlan l2 carries",
            ));
        }
        if self.serve_dns {
            return Err(Error::invalid(
                "--serve-dns",
                "true",
                "the LAN's DNS server answers for a DHCP network (--domain registers names in it)",
            ));
        }
        Ok(())
    }

    /// Subnets with their gateways and ranges, as given.
    fn subnets(&self) -> Result<Vec<SubnetSpec>> {
        if self.subnet.is_empty() {
            return Err(Error::invalid(
                "--subnet",
                "",
                "a network needs at least one subnet",
            ));
        }
        let mut subnets: Vec<SubnetSpec> = Vec::new();
        for s in &self.subnet {
            let net = parse_cidr("--subnet", s)?;
            if net != net.trunc() {
                return Err(Error::invalid(
                    "--subnet",
                    s,
                    format!("host bits are set; did you mean {}?", net.trunc()),
                ));
            }
            if let Some(reason) = reserved_space(&net) {
                return Err(Error::invalid("--subnet", s, reason));
            }
            let max = if net.addr().is_ipv4() { 30 } else { 126 };
            if net.prefix_len() > max {
                return Err(Error::invalid(
                    "--subnet",
                    s,
                    format!("too small to hold a gateway and a container (at most /{max})"),
                ));
            }
            if let Some(other) = subnets.iter().find(|o| overlaps(&o.subnet, &net)) {
                return Err(Error::invalid(
                    "--subnet",
                    s,
                    format!("overlaps {} of the same network", other.subnet),
                ));
            }
            subnets.push(SubnetSpec {
                subnet: net,
                gateway: None,
                ip_range: None,
            });
        }
        for g in &self.gateway {
            let ip = parse_ip("--gateway", g)?;
            let sub = find_subnet(&mut subnets, &ip).ok_or_else(|| {
                Error::invalid("--gateway", g, "is outside every subnet of the network")
            })?;
            if sub.gateway.is_some() {
                return Err(Error::invalid(
                    "--gateway",
                    g,
                    format!("subnet {} already has a gateway", sub.subnet),
                ));
            }
            check_usable("--gateway", &sub.subnet, ip)?;
            sub.gateway = Some(ip);
        }
        for r in &self.ip_range {
            let range = parse_cidr("--ip-range", r)?.trunc();
            let sub = subnets
                .iter_mut()
                .find(|s| s.subnet.contains(&range))
                .ok_or_else(|| {
                    Error::invalid("--ip-range", r, "is not inside any subnet of the network")
                })?;
            if sub.ip_range.is_some() {
                return Err(Error::invalid(
                    "--ip-range",
                    r,
                    format!("subnet {} already has a range", sub.subnet),
                ));
            }
            sub.ip_range = Some(range);
        }
        Ok(subnets)
    }

    /// Options that belong to another driver, refused by name: one table
    /// says which drivers take each option.
    fn refuse_foreign_options(&self, driver: DriverKind) -> Result<()> {
        use DriverKind::{Bridge, HostDevice, Ipvlan, Macvlan, Vxlan};
        let vlan = self.vlan.map(|v| v.to_string());
        let vni = self.vni.map(|v| v.to_string());
        let block = self.block_size.map(|v| v.to_string());
        let options: [(&str, Option<&str>, &[DriverKind]); 15] = [
            ("--vni", vni.as_deref(), &[Vxlan]),
            ("--on-demand", self.on_demand.then_some("true"), &[Vxlan]),
            ("--block-size", block.as_deref(), &[Vxlan]),
            ("vtep", self.vtep.as_deref(), &[Vxlan]),
            ("--bridge", self.bridge.as_deref(), &[Bridge]),
            ("--mode", self.mode.as_deref(), &[Bridge]),
            ("--uplink", self.uplink.as_deref(), &[Bridge]),
            (
                "--host-address",
                self.host_address.first().map(String::as_str),
                &[Bridge],
            ),
            ("--parent", self.parent.as_deref(), &[Macvlan, Ipvlan]),
            ("--vlan", vlan.as_deref(), &[Bridge, Macvlan, Ipvlan]),
            ("--macvlan-mode", self.macvlan_mode.as_deref(), &[Macvlan]),
            ("--host-shim", self.host_shim.as_deref(), &[Macvlan]),
            ("--ipvlan-mode", self.ipvlan_mode.as_deref(), &[Ipvlan]),
            ("--ipvlan-flag", self.ipvlan_flag.as_deref(), &[Ipvlan]),
            ("--device", self.device.as_deref(), &[HostDevice]),
        ];
        for (field, value, takers) in options {
            if let (Some(value), false) = (value, takers.contains(&driver)) {
                return Err(Error::invalid(
                    field,
                    value,
                    format!("is not an option of the {} driver", self.driver),
                ));
            }
        }
        Ok(())
    }

    /// A cluster's network on this host: a nat bridge (every host its own
    /// gateway) with the overlay to the others.
    fn vxlan_kind(
        &self,
        subnets: &mut [SubnetSpec],
        ipam: Ipam,
    ) -> Result<(NetworkKind, Vec<IpNet>)> {
        let vni = self.vni.ok_or_else(|| {
            Error::invalid(
                "--vni",
                "",
                "a vxlan network needs its VXLAN network identifier",
            )
        })?;
        if !(1..=0xFF_FFFF).contains(&vni) {
            return Err(Error::invalid("--vni", vni, "VNIs go from 1 to 16777215"));
        }
        if ipam == Ipam::Dhcp {
            return Err(Error::invalid(
                "--ipam",
                "dhcp",
                "a cluster network's addresses are the cluster's",
            ));
        }
        let vtep = match &self.vtep {
            Some(v) => parse_ip("vtep", v)?,
            None => {
                return Err(Error::invalid(
                    "--driver",
                    "vxlan",
                    "a vxlan network is a cluster's: give --cluster-store, and each host's daemon makes it",
                ));
            }
        };
        let block = self.block_size.unwrap_or(26);
        if !(16..=30).contains(&block) {
            return Err(Error::invalid(
                "--block-size",
                block,
                "address blocks are /16 to /30 (IPv6 blocks hold as many addresses)",
            ));
        }
        let (kind, host_addresses) = self.bridge_kind(subnets)?;
        let NetworkKind::Bridge(mut b) = kind else {
            unreachable!("bridge_kind makes bridges")
        };
        b.overlay = Some(crate::driver::overlay::Overlay {
            vni,
            vtep,
            port: crate::driver::overlay::VXLAN_PORT,
            device: crate::names::overlay_device(&self.name),
            block,
        });
        Ok((NetworkKind::Bridge(b), host_addresses))
    }

    fn bridge_kind(&self, subnets: &mut [SubnetSpec]) -> Result<(NetworkKind, Vec<IpNet>)> {
        let mode: BridgeMode = match &self.mode {
            Some(m) => m.parse()?,
            None => BridgeMode::default(),
        };
        let bridge = match &self.bridge {
            Some(b) => {
                validate_ifname("--bridge", b)?;
                b.clone()
            }
            None => default_bridge_name(&self.name),
        };
        let uplink = match &self.uplink {
            Some(uplink) if mode == BridgeMode::Routed => {
                return Err(Error::invalid(
                    "--uplink",
                    uplink,
                    "routed networks take no uplink (the host routes the subnet); use nat or bridged",
                ));
            }
            Some(uplink) => Some(Parent::parse("--uplink", uplink, self.vlan)?),
            None if self.vlan.is_some() => {
                return Err(Error::invalid(
                    "--vlan",
                    self.vlan.unwrap_or_default(),
                    "a bridge takes a VLAN on its --uplink",
                ));
            }
            None => None,
        };
        let mut host_addresses = Vec::new();
        if mode == BridgeMode::Bridged {
            // The gateway is someone else's router, or none (an isolated segment).
            for h in &self.host_address {
                let ip = host_address("--host-address", h, subnets)?;
                if subnets.iter().any(|s| s.gateway == Some(ip.addr())) {
                    return Err(Error::invalid(
                        "--host-address",
                        h,
                        "is the network's gateway (a router on the segment)",
                    ));
                }
                host_addresses.push(ip);
            }
        } else {
            if let Some(h) = self.host_address.first() {
                return Err(Error::invalid(
                    "--host-address",
                    h,
                    "only bridged networks take a host address; in nat and routed mode the host holds the gateway",
                ));
            }
            // The host is the gateway, the first address unless told otherwise.
            for sub in subnets.iter_mut() {
                let gw = sub.gateway.or_else(|| first_host(&sub.subnet));
                sub.gateway = gw;
                if let Some(gw) = gw {
                    host_addresses.push(
                        IpNet::new(gw, sub.subnet.prefix_len())
                            .expect("prefix from a valid subnet"),
                    );
                }
            }
        }
        let options = BridgeOptions {
            mode,
            bridge,
            uplink,
            multicast_snooping: self.multicast_snooping,
            overlay: None,
        };
        Ok((NetworkKind::Bridge(options), host_addresses))
    }

    fn macvlan_kind(&self, subnets: &[SubnetSpec]) -> Result<(NetworkKind, Vec<IpNet>)> {
        let parent = self.parent("macvlan")?;
        let mode: MacvlanMode = match &self.macvlan_mode {
            Some(m) => m.parse()?,
            None => MacvlanMode::default(),
        };
        let mut host_addresses = Vec::new();
        if let Some(shim) = &self.host_shim {
            if mode == MacvlanMode::Passthru {
                return Err(Error::invalid(
                    "--host-shim",
                    shim,
                    "a passthru parent carries one interface only, there is no room for a shim",
                ));
            }
            let ip = host_address("--host-shim", shim, subnets)?;
            // The shim holds its address alone (/32, /128): the LAN's own
            // prefix route stays on the parent.
            host_addresses.push(IpNet::from(ip.addr()));
        }
        let options = MacvlanOptions {
            parent,
            mode,
            host_shim: self.host_shim.is_some(),
        };
        Ok((NetworkKind::Macvlan(options), host_addresses))
    }
}

impl NetworkSpec {
    fn parent(&self, driver: &str) -> Result<Parent> {
        let parent = self.parent.as_deref().ok_or_else(|| {
            Error::invalid(
                "--parent",
                "",
                format!("a {driver} network needs the host interface it sits on"),
            )
        })?;
        Parent::parse("--parent", parent, self.vlan)
    }

    fn host_device_kind(&self) -> Result<NetworkKind> {
        let device = self.device.clone().ok_or_else(|| {
            Error::invalid(
                "--device",
                "",
                "a host-device network needs the interface it hands over",
            )
        })?;
        validate_ifname("--device", &device)?;
        if device == "lo" {
            return Err(Error::invalid(
                "--device",
                &device,
                "the loopback interface cannot be handed over",
            ));
        }
        Ok(NetworkKind::HostDevice(HostDeviceOptions { device }))
    }

    fn ipvlan_kind(&self) -> Result<NetworkKind> {
        let parent = self.parent("ipvlan")?;
        let mode = self
            .ipvlan_mode
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let flag = self
            .ipvlan_flag
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        Ok(NetworkKind::Ipvlan(IpvlanOptions { parent, mode, flag }))
    }
}

/// A host address inside one of the subnets, with the subnet's prefix.
fn host_address(field: &str, value: &str, subnets: &[SubnetSpec]) -> Result<IpNet> {
    let ip = parse_ip(field, value)?;
    let sub = subnets
        .iter()
        .find(|s| s.subnet.contains(&ip))
        .ok_or_else(|| Error::invalid(field, value, "is outside every subnet of the network"))?;
    check_usable(field, &sub.subnet, ip)?;
    Ok(IpNet::new(ip, sub.subnet.prefix_len()).expect("prefix from a valid subnet"))
}

fn find_subnet<'a>(subnets: &'a mut [SubnetSpec], ip: &IpAddr) -> Option<&'a mut SubnetSpec> {
    subnets.iter_mut().find(|s| s.subnet.contains(ip))
}

/// Why a CIDR cannot be a network's subnet, if it cannot: the whole
/// address space (its masquerade would catch all traffic), or a block whose
/// addresses cannot sit on an interface.
fn reserved_space(net: &IpNet) -> Option<&'static str> {
    const V4: &[(&str, &str)] = &[
        ("0.0.0.0/8", "overlaps 0.0.0.0/8, \"this network\""),
        ("127.0.0.0/8", "overlaps the loopback block 127.0.0.0/8"),
        (
            "169.254.0.0/16",
            "overlaps the link-local block 169.254.0.0/16",
        ),
        (
            "224.0.0.0/3",
            "overlaps the multicast and reserved blocks 224.0.0.0/3",
        ),
    ];
    const V6: &[(&str, &str)] = &[
        (
            "::/8",
            "overlaps ::/8 (unspecified, loopback and IPv4-mapped addresses)",
        ),
        ("fe80::/10", "overlaps the link-local block fe80::/10"),
        ("ff00::/8", "overlaps the multicast block ff00::/8"),
    ];
    let table = if net.addr().is_ipv4() { V4 } else { V6 };
    table
        .iter()
        .find(|(block, _)| overlaps(&block.parse().expect("literal CIDR"), net))
        .map(|(_, why)| *why)
}

/// An address that may be given to a device: not the network address, not
/// the IPv4 broadcast, inside the subnet.
pub fn check_usable(field: &str, subnet: &IpNet, ip: IpAddr) -> Result<()> {
    if !subnet.contains(&ip) {
        return Err(Error::invalid(
            field,
            ip,
            format!("is outside subnet {subnet}"),
        ));
    }
    if ip == subnet.network() {
        return Err(Error::invalid(
            field,
            ip,
            format!("is the network address of {subnet}"),
        ));
    }
    if subnet.addr().is_ipv4() && ip == subnet.broadcast() {
        return Err(Error::invalid(
            field,
            ip,
            format!("is the broadcast address of {subnet}"),
        ));
    }
    Ok(())
}

pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl Network {
    pub fn subnet_for(&self, ip: &IpAddr) -> Option<&SubnetSpec> {
        self.subnets.iter().find(|s| s.subnet.contains(ip))
    }
    pub fn bridge(&self) -> Option<&BridgeOptions> {
        match &self.kind {
            NetworkKind::Bridge(b) => Some(b),
            _ => None,
        }
    }
}

/// Which default route an attachment installs in its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRoute {
    /// Add the network's gateway as default route unless the namespace has one.
    #[default]
    Keep,
    /// Replace any default route with the network's gateway.
    Replace,
    /// Never add a default route.
    None,
}

impl FromStr for DefaultRoute {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keep" => Ok(DefaultRoute::Keep),
            "replace" => Ok(DefaultRoute::Replace),
            "none" => Ok(DefaultRoute::None),
            _ => Err(Error::invalid(
                "--default-route",
                s,
                "expected keep, replace or none",
            )),
        }
    }
}

/// A MAC address, printed the usual way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("--mac", s, "expected six hex bytes like 02:42:ac:11:00:02");
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad());
            }
            mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if mac[0] & 1 == 1 {
            return Err(Error::invalid(
                "--mac",
                s,
                "is a multicast address (lowest bit of the first byte set)",
            ));
        }
        if mac == [0; 6] {
            return Err(Error::invalid(
                "--mac",
                s,
                "the all-zero address cannot be used",
            ));
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What the user asks for when attaching.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachSpec {
    pub target: String,
    pub network: String,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub default_route: Option<String>,
    #[serde(default)]
    pub route: Vec<String>,
    /// DHCP host name (option 12); default: from the target's name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// NAT networks: `[HOSTIP:]HOSTPORT[-END]:PORT[-END][/tcp|udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// What the container may send, e.g. `20mbit`.
    #[serde(default)]
    pub egress_rate: Option<String>,
    /// What the container may receive.
    #[serde(default)]
    pub ingress_rate: Option<String>,
    /// Burst for both, e.g. `64kb` (default: 20 ms at the rate, 16 KiB at least).
    #[serde(default)]
    pub burst: Option<String>,
    /// `KEY=VALUE` labels, for policy selectors (`label:KEY=VALUE`).
    #[serde(default)]
    pub label: Vec<String>,
    /// Let the container send from addresses and MACs plumb did not give
    /// it (a router, a VPN endpoint).
    #[serde(default)]
    pub allow_spoofing: bool,
    /// The uplink this attachment's traffic leaves by (nat and routed
    /// bridges), whatever its network's.
    #[serde(default)]
    pub egress_interface: Option<String>,
    #[serde(default)]
    pub egress_gateway: Option<String>,
    /// More names plumb's DNS answers with the attachment's addresses, on
    /// a network with `serve_dns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alias: Vec<String>,
    /// The CNI runtime's container this attach is for (CNI_CONTAINERID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_container: Option<String>,
}

const STAGED: &str = "staged:";

/// What a staged attachment records for its namespace: its endpoint, so
/// that two of one network differ as two namespaces would.
pub fn staged_netns(endpoint: &str) -> String {
    format!("{STAGED}{endpoint}")
}

/// What a staged attachment records for its target.
pub fn staged_target(endpoint: &str) -> String {
    format!("docker-endpoint:{endpoint}")
}

/// How Docker's long IDs are shortened in plumb's names (`docker-ID12`),
/// whatever a request gave.
pub fn short_docker_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A validated attach request (the network is checked by the engine).
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub network: String,
    pub ifname: Option<String>,
    pub ips: Vec<IpAddr>,
    pub mac: Option<Mac>,
    pub mtu: Option<u32>,
    pub default_route: DefaultRoute,
    pub routes: Vec<RouteSpec>,
    pub hostname: Option<String>,
    pub publish: Vec<Publish>,
    pub rate: Option<RateLimit>,
    pub labels: BTreeMap<String, String>,
    pub allow_spoofing: bool,
    pub egress: Option<Egress>,
    /// `alias`, validated, in lower case, each once.
    pub aliases: Vec<String>,
    /// For a container: keep this request as the container's declaration
    /// of the network, made again at each of its starts (`source` is
    /// `cli` or `labels`).
    pub declare_as: Option<&'static str>,
    /// The request as given, for the declaration.
    pub spec: Box<AttachSpec>,
}

/// Token-bucket limits of an attachment, in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    #[serde(default)]
    pub egress: Option<u64>,
    #[serde(default)]
    pub ingress: Option<u64>,
    /// Bytes.
    pub burst: u32,
}

/// `20mbit`, `1.5gbit`, `800kbit`, `10mbps` (bytes), into bits per second.
pub fn parse_rate(field: &str, s: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            field,
            s,
            "a rate is a number and a unit: bit, kbit, mbit, gbit, bps, kbps, mbps, gbps",
        )
    };
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return Err(bad()),
    };
    let bits = n * mult;
    if !(8_000.0..=100e9).contains(&bits) {
        return Err(Error::invalid(field, s, "rates go from 8kbit to 100gbit"));
    }
    Ok(bits as u64)
}

/// `64kb`, `1mb`, `1500b` (binary multiples), into bytes.
pub fn parse_size(field: &str, s: &str) -> Result<u32> {
    let bad = || Error::invalid(field, s, "a size is a number and b, kb or mb");
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n * match unit {
        "" | "b" => 1,
        "k" | "kb" => 1024,
        "m" | "mb" => 1024 * 1024,
        _ => return Err(bad()),
    };
    if !(1600..=256 * 1024 * 1024).contains(&bytes) {
        return Err(Error::invalid(
            field,
            s,
            "a burst is 1600 bytes (a full frame) to 256mb",
        ));
    }
    Ok(bytes as u32)
}

/// A published port range: host ports on the host's addresses (or one of
/// them) forwarded to the same number of ports of the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub proto: Proto,
    #[serde(default)]
    pub host_ip: Option<std::net::Ipv4Addr>,
    pub host_port: u16,
    pub port: u16,
    /// How many consecutive ports (1 for a single port).
    pub count: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

impl Publish {
    pub fn parse(s: &str) -> Result<Publish> {
        let bad = |why: &str| Error::invalid("--publish", s, why);
        let (spec, proto) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Proto::Tcp),
            Some((spec, "udp")) => (spec, Proto::Udp),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (host_ip, host, inner) = match parts.as_slice() {
            [host, inner] => (None, *host, *inner),
            [ip, host, inner] => (
                Some(
                    ip.parse()
                        .map_err(|_| bad("the host address is not an IPv4 address"))?,
                ),
                *host,
                *inner,
            ),
            _ => return Err(bad("expected [HOSTIP:]HOSTPORT:PORT[/tcp|udp]")),
        };
        let range = |r: &str| -> Result<(u16, u16)> {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let a: u16 = a.parse().map_err(|_| bad("ports are 1 to 65535"))?;
            let b: u16 = b.parse().map_err(|_| bad("ports are 1 to 65535"))?;
            if a == 0 || b < a {
                return Err(bad("ports are 1 to 65535, ranges low-high"));
            }
            Ok((a, b))
        };
        let (h0, h1) = range(host)?;
        let (p0, p1) = range(inner)?;
        if h1 - h0 != p1 - p0 {
            return Err(bad("the host and container ranges differ in length"));
        }
        if h1 - h0 >= 1024 {
            return Err(bad("at most 1024 ports per range"));
        }
        Ok(Publish {
            proto,
            host_ip,
            host_port: h0,
            port: p0,
            count: h1 - h0 + 1,
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        let last = |p: u16| p + (self.count - 1);
        if self.count == 1 {
            write!(f, "{}:{}/{}", self.host_port, self.port, self.proto)
        } else {
            write!(
                f,
                "{}-{}:{}-{}/{}",
                self.host_port,
                last(self.host_port),
                self.port,
                last(self.port),
                self.proto
            )
        }
    }
}

/// Two publications would take the same host port: same protocol,
/// overlapping ports, and the same host address or either on all of them.
pub fn clash(a: &Publish, b: &Publish) -> bool {
    a.proto == b.proto
        && (a.host_ip.is_none() || b.host_ip.is_none() || a.host_ip == b.host_ip)
        && a.host_port < b.host_port + b.count
        && b.host_port < a.host_port + a.count
}

/// A DNS label (RFC 1123): what a DHCP host name may be.
pub fn validate_hostname(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            name,
            "a host name is 1 to 63 letters, digits and inner `-`",
        ))
    }
}

/// A DNS domain: dot-separated host names, 253 bytes at most.
pub fn validate_domain(field: &str, d: &str) -> Result<()> {
    let ok = d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, d, "not a valid DNS domain"))
    }
}

/// A name plumb's DNS answers for: dot-separated labels of letters,
/// digits, `-` and `_` (Docker's and Podman's container names have `_`).
/// Kept in lower case: DNS names are matched without regard to case.
pub fn dns_name(field: &str, name: &str) -> Result<String> {
    let ok = name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(Error::invalid(
            field,
            name,
            "a DNS name is labels of letters, digits, `-` and `_`, joined by `.`",
        ))
    }
}

impl AttachSpec {
    pub fn validate(&self) -> Result<AttachRequest> {
        if let Some(ifname) = &self.ifname {
            validate_ifname("--ifname", ifname)?;
            if ifname == "lo" {
                return Err(Error::invalid(
                    "--ifname",
                    ifname,
                    "is the loopback interface",
                ));
            }
        }
        let mut ips = Vec::new();
        for ip in &self.ip {
            let addr = parse_ip("--ip", ip)?;
            if ips.iter().any(|a: &IpAddr| a.is_ipv4() == addr.is_ipv4()) {
                return Err(Error::invalid(
                    "--ip",
                    ip,
                    "one static address per IP family",
                ));
            }
            ips.push(addr);
        }
        let mac = self.mac.as_deref().map(str::parse).transpose()?;
        if let Some(mtu) = self.mtu {
            validate_mtu("--mtu", mtu)?;
        }
        let default_route = self
            .default_route
            .as_deref()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default();
        let routes = self
            .route
            .iter()
            .map(|r| RouteSpec::parse("--route", r))
            .collect::<Result<_>>()?;
        if let Some(h) = &self.hostname {
            validate_hostname("--hostname", h)?;
        }
        let publish: Vec<Publish> = self
            .publish
            .iter()
            .map(|p| Publish::parse(p))
            .collect::<Result<_>>()?;
        for (i, a) in publish.iter().enumerate() {
            if let Some(b) = publish[..i].iter().find(|b| clash(a, b)) {
                return Err(Error::invalid(
                    "--publish",
                    a,
                    format!("overlaps --publish {b}"),
                ));
            }
        }
        let egress = self
            .egress_rate
            .as_deref()
            .map(|r| parse_rate("--egress-rate", r))
            .transpose()?;
        let ingress = self
            .ingress_rate
            .as_deref()
            .map(|r| parse_rate("--ingress-rate", r))
            .transpose()?;
        let rate = match (egress, ingress, &self.burst) {
            (None, None, Some(b)) => {
                return Err(Error::invalid(
                    "--burst",
                    b,
                    "needs --egress-rate or --ingress-rate",
                ));
            }
            (None, None, None) => None,
            _ => {
                let fastest = egress.max(ingress).unwrap_or_default();
                let burst = match &self.burst {
                    Some(b) => parse_size("--burst", b)?,
                    // 20 ms at the rate, never less than 16 KiB.
                    None => u32::try_from((fastest / 8 / 50).max(16 * 1024)).unwrap_or(u32::MAX),
                };
                Some(RateLimit {
                    egress,
                    ingress,
                    burst,
                })
            }
        };
        let mut labels = BTreeMap::new();
        for l in &self.label {
            let (k, v) = crate::policy::rules::parse_label("--label", l)?;
            if labels.insert(k.clone(), v).is_some() {
                return Err(Error::invalid(
                    "--label",
                    l,
                    format!("label `{k}` given twice"),
                ));
            }
        }
        let egress = match (&self.egress_interface, &self.egress_gateway) {
            (None, Some(g)) => {
                return Err(Error::invalid(
                    "--egress-gateway",
                    g,
                    "needs --egress-interface",
                ));
            }
            (None, None) => None,
            (Some(interface), gateway) => {
                validate_ifname("--egress-interface", interface)?;
                Some(Egress {
                    interface: interface.clone(),
                    gateway: gateway
                        .as_deref()
                        .map(|g| parse_ip("--egress-gateway", g))
                        .transpose()?,
                })
            }
        };
        let mut aliases: Vec<String> = Vec::new();
        for a in &self.alias {
            let name = dns_name("--alias", a)?;
            if !aliases.contains(&name) {
                aliases.push(name);
            }
        }
        Ok(AttachRequest {
            rate,
            publish,
            labels,
            egress,
            aliases,
            allow_spoofing: self.allow_spoofing,
            hostname: self.hostname.clone(),
            network: self.network.clone(),
            ifname: self.ifname.clone(),
            ips,
            mac,
            mtu: self.mtu,
            default_route,
            routes,
            declare_as: None,
            spec: Box::new(self.clone()),
        })
    }
}

/// An attachment as recorded in the store and shown by `inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network: String,
    /// The target as the user named it.
    pub target: String,
    /// The namespace identity (`ns:DEV:INODE`).
    pub netns: String,
    /// The namespace's cookie, which tells it apart from a later namespace
    /// that got the same inode number (see [`crate::netns::NsHandle::cookie`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_cookie: Option<u64>,
    pub ifname: String,
    pub host_ifname: String,
    pub mac: Mac,
    pub addresses: Vec<IpNet>,
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<RouteSpec>,
    pub mtu: u32,
    pub default_route: DefaultRoute,
    /// The default route is the interface itself, no gateway (ipvlan l3).
    #[serde(default)]
    pub device_default_route: bool,
    /// The target's default routes that `--default-route replace` took
    /// the place of, put back on detach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_defaults: Vec<ReplacedRoute>,
    /// A host device's own addresses, given back with it on detach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_addresses: Vec<IpNet>,
    /// On a DHCP network: who the client is and the lease it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<DhcpBinding>,
    /// Host ports forwarded to this attachment (NAT networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publish>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// No anti-spoofing filter on what the container sends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_spoofing: bool,
    /// An uplink of its own, with the routing table plumb gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<AttachmentEgress>,
    /// The Docker container the target is (`docker:ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
    /// A process that was in the namespace at attach time: the quick way
    /// back to it when the target's own path does not lead there (a
    /// container, a path in another mount namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<NsProcess>,
    /// The CNI runtime's container it was added for: with its interface
    /// name, what the runtime's DEL, CHECK and GC name it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniRef>,
    /// The names its network's DNS answers with its addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// A CNI runtime's container (CNI_CONTAINERID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniRef {
    pub container_id: String,
}

/// A Docker container, by the ID that names it for good and the name it
/// has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub id: String,
    pub name: String,
}

/// A process, told apart from a later one with the same pid by the time
/// it started (clock ticks after boot, `/proc/PID/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsProcess {
    pub pid: u32,
    pub start: u64,
}

impl NsProcess {
    /// Process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<NsProcess> {
        Some(NsProcess {
            pid,
            start: crate::netns::process_start(pid)?,
        })
    }

    /// Whether this very process still runs.
    pub fn alive(&self) -> bool {
        crate::netns::process_start(self.pid) == Some(self.start)
    }
}

/// A default route as it was before an attachment replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedRoute {
    pub v6: bool,
    pub via: Option<IpAddr>,
    pub dev: String,
}

/// An attachment's own uplink and the table and rule priorities it owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentEgress {
    #[serde(flatten)]
    pub egress: Egress,
    pub table: u32,
    pub priority: u32,
}

impl Attachment {
    /// Whether its interface waits on the host for someone else (Docker)
    /// to move it into a namespace: no namespace is recorded yet, its
    /// place held by [`staged_netns`].
    pub fn is_staged(&self) -> bool {
        self.netns.starts_with(STAGED)
    }

    /// The Docker endpoint a staged attachment waits for.
    pub fn staged_endpoint(&self) -> Option<&str> {
        self.netns.strip_prefix(STAGED)
    }

    /// Whether `ns` is this attachment's namespace: the same inode and,
    /// where both are known, the same cookie.
    pub fn is_in(&self, ns: &crate::netns::NsHandle) -> bool {
        ns.identity() == self.netns
            && match self.netns_cookie {
                Some(c) => ns.cookie().is_none_or(|n| n == c),
                None => true,
            }
    }

    /// The target as people know it: a container by its name.
    pub fn shown_target(&self) -> String {
        match (&self.container, &self.cni) {
            (Some(c), _) => format!("docker:{}", c.name),
            (None, Some(c)) => format!("cni:{}", short_docker_id(&c.container_id)),
            (None, None) => self.target.clone(),
        }
    }

    /// The keys of the policy selectors that name this attachment.
    pub fn selector_keys(&self) -> Vec<String> {
        std::iter::once(format!("attachment:{}", self.target))
            .chain(
                self.container
                    .iter()
                    .map(|c| format!("attachment:docker:{}", c.name)),
            )
            .chain(self.labels.iter().map(|(k, v)| format!("label:{k}={v}")))
            .collect()
    }
}

/// A DHCP attachment's client identity and lease, kept with it in the store
/// so that a restarted daemon renews what it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpBinding {
    pub hostname: String,
    #[serde(default)]
    pub fqdn: Option<String>,
    /// Option 61, hex.
    pub client_id: String,
    pub state: LeaseState,
    #[serde(default)]
    pub lease: Option<crate::ipam::dhcp::Lease>,
    /// The lease's MTU (option 26) applies unless the user chose one.
    #[serde(default)]
    pub mtu_from_lease: bool,
    /// The interface takes IPv6 addresses from router advertisements.
    #[serde(default)]
    pub slaac: bool,
    /// A DHCPv6 lease, where the LAN's advertisements ask for DHCPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease6: Option<crate::ipam::dhcp::v6::Lease6>,
    /// The lease was taken by plumb's IPAM driver for Docker, which puts
    /// its address on the interface and keeps it while the endpoint lives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub for_docker: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// The interface exists; no lease yet (a daemon killed here leaves this).
    Acquiring,
    Bound,
    Renewing,
    Rebinding,
    /// The lease ran out or was refused: no address until a server answers.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnets: &[&str]) -> NetworkSpec {
        NetworkSpec {
            name: "lan".into(),
            driver: "bridge".into(),
            subnet: subnets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_vxlan_network_leaves_room_for_its_encapsulation_on_either_underlay() {
        let mut s = spec(&["10.100.0.0/24"]);
        s.driver = "vxlan".into();
        s.vni = Some(4100);
        s.vtep = Some("10.250.0.1".into());
        assert_eq!(s.validate().unwrap().mtu, Some(1450));
        s.vtep = Some("fd00::1".into());
        assert_eq!(s.validate().unwrap().mtu, Some(1430));
        // A jumbo underlay's: as given.
        s.mtu = Some(8930);
        assert_eq!(s.validate().unwrap().mtu, Some(8930));
    }

    #[test]
    fn interface_names_are_ascii_and_never_dot_or_dotdot() {
        for bad in [".", "..", "eth/0", "eth:0", "eth 0", "ethé", "e\u{7}"] {
            let err = validate_ifname("--ifname", bad).unwrap_err().to_string();
            assert!(
                err.contains("--ifname") && err.contains("ASCII"),
                "{bad}: {err}"
            );
        }
        for good in ["eth0", "a.b", "v-1_2", "x".repeat(15).as_str()] {
            validate_ifname("--ifname", good).unwrap();
        }
    }

    #[test]
    fn nat_network_gets_first_host_as_gateway() {
        let net = spec(&["10.1.0.0/24", "fd00:1::/64"]).validate().unwrap();
        assert_eq!(net.subnets[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(net.subnets[1].gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(net.bridge().unwrap().bridge, "pl-lan");
        assert_eq!(net.host_addresses.len(), 2);
    }

    #[test]
    fn bad_cidr_names_field_and_value() {
        let err = spec(&["10.0.0.0/33"]).validate().unwrap_err().to_string();
        assert!(
            err.contains("--subnet") && err.contains("10.0.0.0/33"),
            "{err}"
        );
    }

    #[test]
    fn gateway_outside_subnet_is_refused() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.gateway = vec!["10.0.1.1".into()];
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("--gateway `10.0.1.1`"), "{err}");
    }

    #[test]
    fn gateway_cannot_be_broadcast_or_network() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.gateway = vec!["10.0.0.255".into()];
        assert!(s.validate().unwrap_err().to_string().contains("broadcast"));
        s.gateway = vec!["10.0.0.0".into()];
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("network address")
        );
    }

    #[test]
    fn ip_range_must_be_inside_a_subnet() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.ip_range = vec!["10.0.1.0/28".into()];
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("--ip-range `10.0.1.0/28`")
        );
        s.ip_range = vec!["10.0.0.128/25".into()];
        assert_eq!(
            s.validate().unwrap().subnets[0].ip_range,
            Some("10.0.0.128/25".parse().unwrap())
        );
    }

    #[test]
    fn reserved_blocks_and_the_whole_space_are_refused() {
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "127.0.0.0/24",
            "224.1.0.0/16",
            "169.254.0.0/24",
            "fe80::/64",
            "ff02::/64",
        ] {
            let err = spec(&[bad]).validate().unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("overlaps"),
                "{bad}: {err}"
            );
        }
        assert!(spec(&["10.0.0.0/8"]).validate().is_ok());
        assert!(spec(&["2001:db8::/64"]).validate().is_ok());
    }

    #[test]
    fn host_bits_in_subnet_are_refused() {
        let err = spec(&["10.0.0.5/24"]).validate().unwrap_err().to_string();
        assert!(err.contains("did you mean 10.0.0.0/24"), "{err}");
    }

    #[test]
    fn long_bridge_name_is_refused_and_default_is_hashed() {
        let mut s = spec(&["10.0.0.0/24"]);
        s.bridge = Some("a-very-long-bridge-name".into());
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("at most 15 bytes")
        );
        let long = default_bridge_name("a-very-long-network-name");
        assert!(long.len() <= IFNAME_MAX && long.starts_with("pl-"));
        assert_eq!(long, default_bridge_name("a-very-long-network-name"));
    }

    #[test]
    fn bridged_network_has_no_default_gateway() {
        let mut s = spec(&["192.168.1.0/24"]);
        s.mode = Some("bridged".into());
        let net = s.validate().unwrap();
        assert_eq!(net.subnets[0].gateway, None);
        assert!(net.host_addresses.is_empty());
    }

    #[test]
    fn routes_parse_and_check_family() {
        let r = RouteSpec::parse("--route", "10.9.0.0/16 via 10.0.0.254").unwrap();
        assert_eq!(r.to_string(), "10.9.0.0/16 via 10.0.0.254");
        assert!(RouteSpec::parse("--route", "10.9.0.0/16 via fd00::1").is_err());
        assert!(RouteSpec::parse("--route", "nonsense").is_err());
    }

    #[test]
    fn vlan_parents_parse() {
        let p = Parent::parse("--parent", "eth0.10", None).unwrap();
        assert_eq!(
            p.vlan,
            Some(Vlan {
                base: "eth0".into(),
                id: 10
            })
        );
        let p = Parent::parse("--parent", "eth0", Some(20)).unwrap();
        assert_eq!(p.name, "eth0.20");
        assert_eq!(Parent::parse("--parent", "eth0", None).unwrap().vlan, None);
        for bad in [
            ("eth0.0", None),
            ("eth0.4095", None),
            ("eth0", Some(0)),
            ("eth0", Some(5000)),
            ("eth0.99999", None),
        ] {
            let err = Parent::parse("--parent", bad.0, bad.1)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--vlan") || err.contains("--parent"),
                "{bad:?}: {err}"
            );
        }
        assert!(
            Parent::parse("--parent", "a-long-parent-n", Some(10))
                .unwrap_err()
                .to_string()
                .contains("15 bytes")
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(
            "02:00:00:00:00:01".parse::<Mac>().unwrap().to_string(),
            "02:00:00:00:00:01"
        );
        assert!("01:00:00:00:00:01".parse::<Mac>().is_err());
        assert!("02:00:00:00:00".parse::<Mac>().is_err());
        assert!("zz:00:00:00:00:00".parse::<Mac>().is_err());
    }

    #[test]
    fn attach_spec_checks_ifname_and_ips() {
        let mut a = AttachSpec {
            target: "x".into(),
            network: "n".into(),
            ..Default::default()
        };
        a.ifname = Some("sixteen-bytes-xx".into());
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("at most 15 bytes")
        );
        a.ifname = None;
        a.ip = vec!["10.0.0.2".into(), "10.0.0.3".into()];
        assert!(a.validate().is_err());
        a.ip = vec!["10.0.0.300".into()];
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("--ip `10.0.0.300`")
        );
    }
}
