use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use clap_complete::engine::ArgValueCandidates;

use super::{join_routes, print_json};
use crate::daemon::protocol::{Daemon, Request};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{NetworkKind, NetworkSpec};
use crate::report;

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(Box<CreateArgs>),
    /// List networks.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a network as JSON.
    Inspect {
        #[arg(add = ArgValueCandidates::new(super::complete::networks))]
        name: String,
    },
    /// Remove a network (refused while attachments exist, unless --force).
    Rm {
        #[arg(add = ArgValueCandidates::new(super::complete::networks))]
        name: String,
        #[arg(long)]
        force: bool,
        /// A cluster network: removed from the cluster (each host's daemon
        /// then takes it away), refused while any host has containers on it.
        #[command(flatten)]
        cluster: super::daemon::ClusterArgs,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// vxlan: the cluster the network is defined in.
    #[command(flatten)]
    pub cluster: super::daemon::ClusterArgs,
    #[arg(long, default_value = "bridge")]
    pub driver: String,
    /// CIDR; repeat for dual stack (a host device may do without).
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Gateway of the subnet it belongs to (default: first address in nat/routed mode).
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Allocate container addresses only from this CIDR inside a subnet.
    #[arg(long)]
    pub ip_range: Vec<String>,
    /// Reserve an address: KEY=IP.
    #[arg(long, value_name = "KEY=IP")]
    pub aux_address: Vec<String>,
    /// Bridge interface name (default pl-NAME); an existing bridge is adopted.
    #[arg(long)]
    pub bridge: Option<String>,
    /// bridge: nat (default), bridged or routed.
    #[arg(long)]
    pub mode: Option<String>,
    /// bridged: interface enslaved to the bridge; nat: masquerade only out of it.
    #[arg(long)]
    pub uplink: Option<String>,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// A route for every container: CIDR via IP.
    #[arg(long, num_args = 1..=3, value_name = "CIDR via IP")]
    pub route: Vec<String>,
    /// bridged mode: an address for the host on the segment.
    #[arg(long)]
    pub host_address: Vec<String>,
    /// macvlan: the host interface the containers sit on.
    #[arg(long)]
    pub parent: Option<String>,
    /// macvlan: bridge (default), private, vepa or passthru.
    #[arg(long)]
    pub macvlan_mode: Option<String>,
    /// macvlan: an address for the host on the LAN through which it reaches its containers.
    #[arg(long, value_name = "IP")]
    pub host_shim: Option<String>,
    /// macvlan, ipvlan: sit on 802.1q VLAN ID of the parent (PARENT.ID, created if missing).
    #[arg(long, value_name = "ID")]
    pub vlan: Option<u16>,
    /// ipvlan: l2 (default), l3 or l3s.
    #[arg(long)]
    pub ipvlan_mode: Option<String>,
    /// ipvlan: bridge (default), private or vepa.
    #[arg(long)]
    pub ipvlan_flag: Option<String>,
    /// host-device: the host interface handed whole to the target.
    #[arg(long)]
    pub device: Option<String>,
    /// Where container addresses come from: host-local (plumb's own
    /// allocator, the default) or dhcp (the LAN's server, via the daemon).
    #[arg(long, value_name = "host-local|dhcp")]
    pub ipam: Option<String>,
    /// dhcp: the DNS domain containers register their names in (option 81);
    /// with --serve-dns: the zone plumb answers containers' names in.
    #[arg(long)]
    pub domain: Option<String>,
    /// plumb's daemon answers DNS on the network's gateway: containers'
    /// names and aliases, and the rest forwarded to the host's resolvers.
    #[arg(long)]
    pub serve_dns: bool,
    /// vxlan: the network's VXLAN network identifier (1-16777215), one per
    /// network of the cluster.
    #[arg(long)]
    pub vni: Option<u32>,
    /// vxlan: the prefix length of the address blocks each host claims
    /// (default 26).
    #[arg(long, value_name = "PREFIXLEN")]
    pub block_size: Option<u8>,
    /// vxlan: made on a host only while a container there is on it, not on
    /// every host of the cluster.
    #[arg(long)]
    pub on_demand: bool,
    /// dhcp: ignore the LAN's router advertisements (no IPv6 by SLAAC).
    #[arg(long)]
    pub no_slaac: bool,
    /// nat/routed: the host interface this network's traffic leaves by
    /// (a routing table of its own, selected by source subnet).
    #[arg(long)]
    pub egress_interface: Option<String>,
    /// The next hop on --egress-interface.
    #[arg(long)]
    pub egress_gateway: Option<String>,
    /// The tenant this network belongs to (shown in inspect).
    #[arg(long)]
    pub tenant: Option<String>,
    /// bridge: containers of the network cannot reach each other.
    #[arg(long)]
    pub isolate_containers: bool,
    /// bridge: IGMP/MLD snooping, on or off (default: on in bridged mode,
    /// off in nat and routed mode, where the bridge floods multicast anyway)
    #[arg(long, value_name = "on|off")]
    pub multicast_snooping: Option<String>,
}

impl CreateArgs {
    fn into_spec(self) -> Result<NetworkSpec> {
        let mut aux = BTreeMap::new();
        for item in &self.aux_address {
            let (key, ip) = item
                .split_once('=')
                .ok_or_else(|| Error::invalid("--aux-address", item, "expected KEY=IP"))?;
            if key.is_empty() || aux.insert(key.to_string(), ip.to_string()).is_some() {
                return Err(Error::invalid(
                    "--aux-address",
                    item,
                    "each KEY must be non-empty and given once",
                ));
            }
        }
        let multicast_snooping = match self.multicast_snooping.as_deref() {
            None => None,
            Some("on") => Some(true),
            Some("off") => Some(false),
            Some(other) => {
                return Err(Error::invalid(
                    "--multicast-snooping",
                    other,
                    "expected on or off",
                ));
            }
        };
        Ok(NetworkSpec {
            name: self.name,
            driver: self.driver,
            subnet: self.subnet,
            gateway: self.gateway,
            ip_range: self.ip_range,
            aux_address: aux,
            bridge: self.bridge,
            mode: self.mode,
            uplink: self.uplink,
            mtu: self.mtu,
            route: join_routes(self.route),
            host_address: self.host_address,
            parent: self.parent,
            macvlan_mode: self.macvlan_mode,
            host_shim: self.host_shim,
            vlan: self.vlan,
            ipvlan_mode: self.ipvlan_mode,
            ipvlan_flag: self.ipvlan_flag,
            device: self.device,
            ipam: self.ipam,
            domain: self.domain,
            serve_dns: self.serve_dns,
            slaac: self.no_slaac.then_some(false),
            egress_interface: self.egress_interface,
            egress_gateway: self.egress_gateway,
            tenant: self.tenant,
            isolate_containers: self.isolate_containers,
            multicast_snooping,
            vni: self.vni,
            block_size: self.block_size,
            vtep: None,
            on_demand: self.on_demand,
        })
    }
}

/// A vxlan network is the cluster's: defined once in its store, made on
/// each host by that host's daemon. Checked here as a host would make it.
fn define_in_cluster(args: CreateArgs) -> Result<()> {
    let store = args.cluster.store()?.ok_or_else(|| {
        Error::invalid(
            "--cluster-store",
            "",
            "a vxlan network is a cluster's: name its etcd (or set PLUMB_CLUSTER_STORE)",
        )
    })?;
    let spec = args.into_spec()?;
    crate::cluster::as_a_host_makes_it(spec.clone())?;
    store.call(async |client| store.define(client, &spec).await)?;
    outln!(
        "network {} defined in cluster {} (VNI {}): each host's daemon makes it",
        spec.name,
        store.name,
        spec.vni.unwrap_or_default()
    );
    Ok(())
}

/// Take a cluster network out of the cluster, unless a host still has
/// containers on it.
fn remove_from_cluster(cluster: &super::daemon::ClusterArgs, name: &str) -> Result<()> {
    let store = cluster.store()?.expect("a cluster store was given");
    store.call(async |client| store.undefine(client, name).await)?;
    outln!(
        "network {name} removed from cluster {}: each host's daemon takes it away",
        store.name
    );
    Ok(())
}

/// One line about how a network is built.
fn describe(kind: &NetworkKind) -> String {
    match kind {
        NetworkKind::Bridge(b) => format!("bridge {} ({})", b.bridge, b.mode),
        NetworkKind::Macvlan(m) => format!("macvlan on {} ({})", m.parent.name, m.mode),
        NetworkKind::HostDevice(d) => format!("host-device {}", d.device),
        NetworkKind::Ipvlan(i) => {
            let (mode, flag) = (format!("{:?}", i.mode), format!("{:?}", i.flag));
            format!(
                "ipvlan on {} ({}, {})",
                i.parent.name,
                mode.to_lowercase(),
                flag.to_lowercase()
            )
        }
    }
}

pub fn run(engine: &mut Engine, daemon: &Daemon, cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Create(args) if args.driver == "vxlan" => define_in_cluster(*args)?,
        NetworkCommand::Create(args) => {
            let net = engine.network_create(&(*args).into_spec()?, None)?;
            let subnets: Vec<String> = net.subnets.iter().map(|s| s.subnet.to_string()).collect();
            let mut line = format!("network {} created: {}", net.name, describe(&net.kind));
            if !subnets.is_empty() {
                line = format!("{line}, {}", subnets.join(", "));
            }
            outln!("{line}");
        }
        NetworkCommand::Ls { json } => {
            let nets = engine.networks()?;
            if json {
                let mut list = Vec::new();
                for name in nets.iter().map(|n| &n.network.name) {
                    list.push(report::network(&engine.network_details(name)?));
                }
                print_json(&serde_json::Value::Array(list));
            } else {
                outln!("{:<20} {:<34} SUBNETS", "NAME", "DRIVER");
                for n in nets {
                    let net = n.network;
                    let subnets: Vec<String> =
                        net.subnets.iter().map(|s| s.subnet.to_string()).collect();
                    outln!(
                        "{:<20} {:<34} {}",
                        net.name,
                        describe(&net.kind),
                        subnets.join(",")
                    );
                }
            }
        }
        NetworkCommand::Inspect { name } => {
            print_json(&report::network(&engine.network_details(&name)?));
        }
        NetworkCommand::Rm { name, cluster, .. } if cluster.cluster_store.is_some() => {
            remove_from_cluster(&cluster, &name)?
        }
        NetworkCommand::Rm { name, force, .. } => {
            if force {
                let leased: Vec<_> = engine
                    .network_details(&name)?
                    .attachments
                    .into_iter()
                    .map(|s| s.attachment)
                    .filter(|a| a.dhcp.is_some())
                    .collect();
                // A daemon stops their lease tasks and releases them; with
                // none, they are released from here.
                let mut unserved = Vec::new();
                for a in leased {
                    let req = Request::Detach {
                        target: a.target.clone(),
                        network: Some(name.clone()),
                    };
                    if daemon.try_call(&req)?.is_none() {
                        unserved.push(a);
                    }
                }
                super::attach::release_leases(&unserved);
            }
            let detached = engine.network_rm(&name, force)?;
            for a in detached {
                outln!("detached {} ({})", a.target, a.ifname);
            }
            outln!("network {name} removed");
        }
    }
    Ok(())
}
