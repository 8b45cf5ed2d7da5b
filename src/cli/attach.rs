use clap::Args;
use clap_complete::engine::ArgValueCandidates;

use super::{complete, join_routes, print_json};

use crate::daemon::protocol::{Daemon, Request};
use crate::daemon::release_now;
use crate::engine::{Engine, attached_ns};
use crate::error::{Error, Result};
use crate::model::AttachSpec;
use crate::model::{Attachment, Ipam};
use crate::report;

#[derive(Args, Debug)]
pub struct AttachArgs {
    #[arg(add = ArgValueCandidates::new(complete::targets))]
    pub target: String,
    #[arg(add = ArgValueCandidates::new(complete::networks))]
    pub network: String,
    /// Interface name inside the target (default: first free ethN).
    #[arg(long)]
    pub ifname: Option<String>,
    /// Static address (one per IP family).
    #[arg(long)]
    pub ip: Vec<String>,
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// keep (add one if none), replace, or none.
    #[arg(long, value_name = "keep|replace|none")]
    pub default_route: Option<String>,
    /// Extra route inside the target: CIDR via IP.
    #[arg(long, num_args = 1..=3, value_name = "CIDR via IP")]
    pub route: Vec<String>,
    /// DHCP networks: the host name sent to the server (default: from the target).
    #[arg(long)]
    pub hostname: Option<String>,
    /// NAT networks: publish a port, [HOSTIP:]HOSTPORT[-END]:PORT[-END][/tcp|udp].
    #[arg(long, value_name = "[HOSTIP:]HOSTPORT:PORT[/PROTO]")]
    pub publish: Vec<String>,
    /// Limit what the container sends (e.g. 20mbit).
    #[arg(long)]
    pub egress_rate: Option<String>,
    /// Limit what the container receives (e.g. 10mbit).
    #[arg(long)]
    pub ingress_rate: Option<String>,
    /// Burst of the rate limits (e.g. 64kb).
    #[arg(long)]
    pub burst: Option<String>,
    /// A label for policy selectors (`label:KEY=VALUE`); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Let the container send from addresses and MACs plumb did not give it
    /// (routers, VPN endpoints).
    #[arg(long)]
    pub allow_spoofing: bool,
    /// Leave by this host interface, whatever the network's uplink (nat and
    /// routed bridges).
    #[arg(long, value_name = "IF")]
    pub egress_interface: Option<String>,
    /// The next hop on --egress-interface.
    #[arg(long, value_name = "IP")]
    pub egress_gateway: Option<String>,
    /// Networks with --serve-dns: another name the network's DNS answers with
    /// the target's addresses; repeatable.
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    #[arg(add = ArgValueCandidates::new(complete::targets))]
    pub target: String,
    #[arg(add = ArgValueCandidates::new(complete::networks))]
    pub network: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(add = ArgValueCandidates::new(complete::targets))]
    pub target: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(long)]
    pub json: bool,
}

/// Through the daemon when one serves this state directory and host (it
/// keeps the store open and its engines warm, and runs DHCP clients); else
/// here, except on a DHCP network, which needs the daemon.
pub fn attach(daemon: &Daemon, args: AttachArgs) -> Result<()> {
    let spec = AttachSpec {
        target: args.target,
        network: args.network,
        ifname: args.ifname,
        ip: args.ip,
        mac: args.mac,
        mtu: args.mtu,
        default_route: args.default_route,
        route: join_routes(args.route),
        hostname: args.hostname,
        publish: args.publish,
        egress_rate: args.egress_rate,
        ingress_rate: args.ingress_rate,
        burst: args.burst,
        label: args.label,
        allow_spoofing: args.allow_spoofing,
        egress_interface: args.egress_interface,
        egress_gateway: args.egress_gateway,
        alias: args.alias,
        cni_container: None,
    };
    let listed = attach_as(daemon, spec, None, None)?;
    outln!("{}", attached_line(&listed));
    Ok(())
}

/// Attach as `spec` says, for `owner` (a topology's tag), with `engine`
/// (opened here if None) when no daemon serves; the attachment as `plumb
/// ls --json` lists it.
pub fn attach_as(
    daemon: &Daemon,
    spec: AttachSpec,
    engine: Option<&mut Engine>,
    owner: Option<&str>,
) -> Result<serde_json::Value> {
    // Bad input is refused before anyone is asked.
    let mut req = spec.validate()?;
    let target = spec.target.clone();
    // A container attached by hand is attached again at each of its
    // starts (by the daemon), until detached.
    if target.starts_with("docker:") {
        req.declare_as = Some("cli");
    }
    // A name or a path means what it means here: the daemon may run in
    // another mount namespace, where it leads elsewhere or nowhere.
    let netns = match crate::target::Target::parse(&target)? {
        crate::target::Target::Docker(_) | crate::target::Target::Cni { .. } => None,
        t => Some(t.resolve()?.identity()),
    };
    let request = Request::Attach {
        spec: Box::new(spec),
        netns,
        owner: owner.map(str::to_string),
    };
    if let Some(v) = daemon.try_call(&request)? {
        return Ok(v);
    }
    let mut opened_here;
    let engine = match engine {
        Some(e) => e,
        None => {
            opened_here = Engine::open(daemon.state_dir)?;
            &mut opened_here
        }
    };
    let net = engine.network(&req.network)?.network;
    if net.ipam == Ipam::Dhcp {
        crate::engine::check_ipam(&net, &req, Ipam::Dhcp)?;
        return daemon.call(&request);
    }
    let opened = crate::target::Target::parse(&target)?.open()?;
    let a = engine.attach_opened(opened, &req, owner)?;
    engine.declare(&a, &req)?;
    Ok(report::listed(&a))
}

/// `TARGET IFNAME MAC ADDRESS...`; a DHCP attachment shows its lease.
fn attached_line(listed: &serde_json::Value) -> String {
    let s = |k: &str| listed[k].as_str().unwrap_or_default().to_string();
    let addresses = if listed["DHCP"].is_null() {
        let all = listed["Addresses"].as_array().into_iter().flatten();
        all.filter_map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
    } else {
        format!("{}/{}", s("IPAddress"), listed["IPPrefixLen"])
    };
    format!(
        "{} {} {} {}",
        s("Target"),
        s("IfName"),
        s("MacAddress"),
        addresses
    )
}

pub fn detach(daemon: &Daemon, args: DetachArgs) -> Result<()> {
    let done = detach_from(daemon, &args.target, args.network.as_deref())?;
    if done.is_empty() {
        outln!(
            "{} was not attached{}",
            args.target,
            args.network.map(|n| format!(" to {n}")).unwrap_or_default()
        );
    }
    for (target, network, ifname) in done {
        outln!("detached {target} from {network} ({ifname})");
    }
    Ok(())
}

/// Detach `target` from `network` (or every network), through the daemon if
/// one serves, releasing leases: (target, network, interface) of each.
pub fn detach_from(
    daemon: &Daemon,
    target: &str,
    network: Option<&str>,
) -> Result<Vec<(String, String, String)>> {
    let request = Request::Detach {
        target: target.to_string(),
        network: network.map(str::to_string),
    };
    if let Some(v) = daemon.try_call(&request)? {
        return Ok(super::listed_keys(&v));
    }
    let mut engine = Engine::open(daemon.state_dir)?;
    // No daemon renews these leases now; hand them back ourselves.
    let leased = engine
        .detachable_of(target)?
        .into_iter()
        .map(|s| s.attachment)
        .filter(|a| a.dhcp.is_some() && network.is_none_or(|n| a.network == n))
        .collect::<Vec<_>>();
    release_leases(&leased);
    Ok(engine
        .detach(target, network)?
        .into_iter()
        .map(|a| (a.target, a.network, a.ifname))
        .collect())
}

/// Send a DHCPRELEASE for each lease, from inside its namespace.
pub(super) fn release_leases(leased: &[Attachment]) {
    if leased.is_empty() {
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plumb: cannot release DHCP leases: {e}");
            return;
        }
    };
    for a in leased {
        if let Some(ns) = attached_ns(a)
            && let Err(e) = rt.block_on(release_now(&ns, a))
        {
            eprintln!("plumb: {}: {e}", a.target);
        }
    }
}

pub fn inspect(engine: &Engine, args: InspectArgs) -> Result<()> {
    let atts = engine.attachments_of(&args.target)?;
    // A container's declaration mistakes, shown even when they kept it
    // from every network.
    let errors: Vec<String> = match args.target.strip_prefix("docker:") {
        Some(r) => {
            let ids: Vec<&str> = atts
                .iter()
                .filter_map(|s| s.attachment.container.as_ref().map(|c| c.id.as_str()))
                .collect();
            engine
                .container_errors()?
                .into_iter()
                .filter(|(id, name, _)| {
                    ids.contains(&id.as_str()) || name == r || id.starts_with(r)
                })
                .flat_map(|(_, _, e)| e)
                .collect()
        }
        None => Vec::new(),
    };
    let uplinks = match args.target.strip_prefix("docker:") {
        Some(r) => uplinks_of(engine, r)?,
        None => Vec::new(),
    };
    if atts.is_empty() && errors.is_empty() && uplinks.is_empty() {
        return Err(Error::Target {
            target: args.target,
            reason: "is not attached to any network".into(),
        });
    }
    let mut shown = report::target(&args.target, &atts, &errors);
    if args.target.starts_with("docker:") {
        shown["Egress"] = uplinks.iter().map(report::egress_rule).collect();
    }
    print_json(&shown);
    Ok(())
}

/// The egress rules a Docker container's traffic leaves by: those whose
/// sources hold one of its addresses (none when Docker does not answer).
fn uplinks_of(engine: &Engine, container: &str) -> Result<Vec<crate::policy::egress::EgressRule>> {
    let rules = engine.egress_rules()?;
    if rules.is_empty() {
        return Ok(rules);
    }
    let source = crate::policy::egress::Source::Container(container.to_string());
    let addrs = crate::docker::egress_sources(&source)
        .ok()
        .flatten()
        .unwrap_or_default();
    Ok(rules
        .into_iter()
        .filter(|r| {
            r.applied
                .iter()
                .any(|net| addrs.iter().any(|a| net.contains(&a.addr())))
        })
        .collect())
}

pub fn ls(engine: &Engine, args: LsArgs) -> Result<()> {
    let atts = engine.attachments()?;
    // A macvlan or ipvlan container has no interface on the host: its
    // record's host name (HostIfName in JSON) is only plumb's key for it.
    let no_host_end: std::collections::HashSet<String> = engine
        .networks()?
        .into_iter()
        .map(|n| n.network)
        .filter(|n| {
            let d = crate::driver::kinds::of(&n.kind);
            !d.has_host_port() && d.device().is_none()
        })
        .map(|n| n.name)
        .collect();
    if args.json {
        let list: Vec<serde_json::Value> =
            atts.iter().map(|a| report::listed(&a.attachment)).collect();
        print_json(&serde_json::Value::Array(list));
        return Ok(());
    }
    outln!(
        "{:<24} {:<16} {:<8} {:<15} {:<18} ADDRESSES",
        "TARGET",
        "NETWORK",
        "IFNAME",
        "HOST IFNAME",
        "MAC"
    );
    for a in atts {
        let a = a.attachment;
        let addrs: Vec<String> = a.addresses.iter().map(|x| x.to_string()).collect();
        outln!(
            "{:<24} {:<16} {:<8} {:<15} {:<18} {}",
            a.shown_target(),
            a.network,
            a.ifname,
            match no_host_end.contains(&a.network) {
                true => "-",
                false => a.host_ifname.as_str(),
            },
            a.mac.to_string(),
            addrs.join(",")
        );
    }
    for (_, name, errors) in engine.container_errors()? {
        for e in errors {
            outln!("docker:{name}: not attached: {e}");
        }
    }
    Ok(())
}
