//! plumb as a CNI plugin (Podman, containerd, CRI-O, the kubelet): the
//! binary runs as one when a runtime executes it with `CNI_COMMAND` set
//! and no arguments. ADD attaches the container's namespace to a plumb
//! network (made from the configuration on the first ADD if it describes
//! one), through the daemon when one serves (it then runs the DHCP
//! clients) or with the engine here; DEL, CHECK and GC find attachments
//! by the runtime's (container ID, interface name), recorded with them.

pub mod config;
pub mod spec;

use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;

use crate::daemon::protocol::{DEFAULT_SOCKET, Daemon, Request};
use crate::driver::kinds;
use crate::engine::Engine;
use crate::error::Error;
use crate::model::{Attachment, DefaultRoute, Ipam, Network};
use crate::netlink::Netlink;
use crate::store::DEFAULT_STATE_DIR;
use config::NetConf;
use spec::{CniError, CniResult, Command, Invocation, code};

/// How long an ADD waits for another process to finish making its network.
const NETWORK_MADE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether this process was started by a CNI runtime: `CNI_COMMAND` set,
/// and no arguments (a runtime never gives any).
pub fn invoked() -> bool {
    std::env::var_os("CNI_COMMAND").is_some() && std::env::args_os().len() == 1
}

/// Run as a CNI plugin; the process's exit code. The answer (a result, or
/// the spec's error) goes to stdout, logs to stderr.
pub fn main() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return answer(
            Err(CniError::new(code::IO, format!("read stdin: {e}"))),
            "1.1.0",
        );
    }
    let asked = asked_version(&input)
        .unwrap_or_else(|| spec::SUPPORTED[spec::SUPPORTED.len() - 1].to_string());
    let out = Invocation::from_env(|k| std::env::var(k).ok()).and_then(|inv| run(&inv, &input));
    answer(out, &asked)
}

/// The `cniVersion` of the configuration on stdin, however bad the rest.
fn asked_version(input: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
}

fn answer(out: Result<Option<Value>, CniError>, version: &str) -> i32 {
    match out {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", e.to_json(version));
            1
        }
    }
}

/// One command, its configuration `input` on stdin.
pub fn run(inv: &Invocation, input: &[u8]) -> Result<Option<Value>, CniError> {
    // VERSION's stdin may hold nothing but `cniVersion`.
    if inv.command == Command::Version {
        let asked = asked_version(input).unwrap_or_default();
        return Ok(Some(spec::version_info(&asked)));
    }
    let conf = NetConf::parse(input)?;
    spec::check_version(&conf.cni_version)?;
    let state_dir = conf
        .state_dir
        .clone()
        .or_else(|| std::env::var_os("PLUMB_STATE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
    let socket = conf
        .socket
        .clone()
        .or_else(|| std::env::var_os("PLUMB_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let daemon = Daemon {
        socket: &socket,
        state_dir: &state_dir,
    };
    match inv.command {
        Command::Add => add(inv, &conf, &daemon).map(Some),
        Command::Del => del(inv, &conf, &daemon).map(|()| None),
        Command::Check => check(inv, &conf, &daemon).map(|()| None),
        Command::Status => status(&conf, &daemon).map(|()| None),
        Command::Gc => gc(&conf, &daemon).map(|()| None),
        Command::Version => Ok(Some(spec::version_info(&conf.cni_version))),
    }
}

/// plumb's error as the spec's: bad input is the configuration's (7),
/// what the network or the kernel refused plumb's own (100).
fn failed(e: Error) -> CniError {
    let code = match &e {
        Error::Invalid { .. } | Error::UnknownNetwork(_) => code::INVALID_CONFIG,
        Error::Target { .. } => code::INVALID_ENVIRONMENT,
        Error::Daemon { .. } => code::TRY_AGAIN_LATER,
        _ => code::FAILED,
    };
    CniError::new(code, e.to_string())
}

fn open(daemon: &Daemon) -> Result<Engine, CniError> {
    Engine::open(daemon.state_dir).map_err(failed)
}

/// The plumb network of `conf`: made if the configuration describes it
/// and it is not there yet; refused if one of that name differs.
fn network(conf: &NetConf, engine: &mut Engine, daemon: &Daemon) -> Result<Network, CniError> {
    let existing = match engine.network(&conf.network) {
        Ok(n) => Some(n.network),
        // A cluster's on-demand network, which the daemon makes here.
        Err(Error::UnknownNetwork(_)) if conf.definition.is_none() => {
            let request = Request::Bring {
                network: conf.network.clone(),
            };
            match daemon.try_call(&request).map_err(failed)? {
                Some(_) => engine.network(&conf.network).ok().map(|n| n.network),
                None => None,
            }
        }
        Err(Error::UnknownNetwork(_)) => None,
        Err(e) => return Err(failed(e)),
    };
    let Some(def) = &conf.definition else {
        return existing.ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "network `{}`: no such plumb network (name one that exists, or describe it in the configuration)",
                    conf.network
                ),
            )
        });
    };
    let wanted = def.validate().map_err(failed)?;
    let made = match existing {
        Some(n) => n,
        // Several runtimes may make it at once: one does.
        None => match engine.network_create(def, None) {
            Ok(n) => n,
            Err(Error::NetworkExists(_)) => engine.network(&conf.network).map_err(failed)?.network,
            Err(e) => return Err(failed(e)),
        },
    };
    if made != wanted {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!(
                "network `{}` exists with another definition (`plumb network inspect {}`); a configuration that names it with no definition uses it as it is",
                conf.network, conf.network
            ),
        ));
    }
    Ok(made)
}

/// The attachment of the runtime's (container, ifname), if any.
fn find(engine: &Engine, container_id: &str, ifname: &str) -> Result<Option<Attachment>, CniError> {
    engine.cni_attachment(container_id, ifname).map_err(failed)
}

fn target(container_id: &str, ifname: &str) -> String {
    format!("cni:{container_id}/{ifname}")
}

fn add(inv: &Invocation, conf: &NetConf, daemon: &Daemon) -> Result<Value, CniError> {
    let mut engine = open(daemon)?;
    let net = network(conf, &mut engine, daemon)?;
    // Runtimes that share a described network race to make it: the others
    // wait until the one making it is done (an attach meanwhile is refused).
    let deadline = std::time::Instant::now() + NETWORK_MADE_WITHIN;
    let mut pause = std::time::Duration::from_millis(5);
    while engine.network_under_way(&net.name).map_err(failed)? {
        if std::time::Instant::now() > deadline {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "network `{}` is still being made or removed by another plumb process",
                    net.name
                ),
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
    let netns = inv.netns.as_deref().unwrap_or_default();
    // What a killed ADD left is undone first. One that finished, its
    // answer lost, is answered again (a runtime DELs after a failed ADD,
    // but need not); another of the namespace is the engine's to refuse.
    engine.recover_quietly();
    if let Some(a) = find(&engine, &inv.container_id, &inv.ifname)?
        && a.network == net.name
        && crate::netns::NsHandle::open(std::path::Path::new(netns)).is_ok_and(|ns| a.is_in(&ns))
    {
        return answer_for(conf, &net, &a, netns);
    }
    let mut spec = conf.attach_spec(&inv.container_id, netns, &inv.ifname);
    // Kubernetes' and Podman's name for the container: for the LAN's DHCP
    // server, and the first name plumb's DNS answers for it.
    let pod = inv.args.get("K8S_POD_NAME");
    spec.hostname = pod
        .filter(|_| net.ipam == Ipam::Dhcp)
        .map(|p| crate::names::container_hostname(p))
        .filter(|h| !h.is_empty());
    if let Some(p) = pod.and_then(|p| crate::model::dns_name("K8S_POD_NAME", p).ok()) {
        spec.alias.insert(0, p);
    }
    crate::cli::attach_as(daemon, spec, Some(&mut engine), None).map_err(failed)?;
    let a = find(&engine, &inv.container_id, &inv.ifname)?.ok_or_else(|| {
        CniError::new(
            code::FAILED,
            "the attachment is not recorded after the attach",
        )
    })?;
    answer_for(conf, &net, &a, netns)
}

/// ADD's answer for attachment `a`: after the previous plugin's result,
/// if chained.
fn answer_for(
    conf: &NetConf,
    net: &Network,
    a: &Attachment,
    netns: &str,
) -> Result<Value, CniError> {
    let ours = result(net, a, netns);
    let out = match &conf.prev_result {
        Some(prev) => ours.after(CniResult::from_json(prev)?),
        None => ours,
    };
    Ok(out.to_json(&conf.cni_version))
}

/// ADD's result: the host end of a veth (if the kind has one) and the
/// container's interface, its addresses, gateways and default routes.
fn result(net: &Network, a: &Attachment, netns: &str) -> CniResult {
    let mut r = CniResult::default();
    if kinds::of(&net.kind).has_host_port() {
        let mac = Netlink::open()
            .ok()
            .and_then(|mut nl| nl.link_by_name(&a.host_ifname).ok().flatten())
            .and_then(|l| l.mac)
            .map(|m| crate::model::Mac(m).to_string())
            .unwrap_or_default();
        r.interfaces.push(spec::Interface {
            name: a.host_ifname.clone(),
            mac,
            mtu: Some(a.mtu),
            sandbox: None,
        });
    }
    let index = r.interfaces.len();
    r.interfaces.push(spec::Interface {
        name: a.ifname.clone(),
        mac: a.mac.to_string(),
        mtu: Some(a.mtu),
        sandbox: Some(netns.to_string()),
    });
    for address in &a.addresses {
        let v6 = address.addr().is_ipv6();
        r.ips.push(spec::IpConfig {
            address: *address,
            gateway: a.gateways.iter().find(|g| g.is_ipv6() == v6).copied(),
            interface: Some(index),
        });
    }
    if a.default_route != DefaultRoute::None {
        for g in &a.gateways {
            // The defaults of the address types are 0.0.0.0/0 and ::/0.
            let any = match g.is_ipv6() {
                true => ipnet::IpNet::V6(Default::default()),
                false => ipnet::IpNet::V4(Default::default()),
            };
            r.routes.push(spec::Route {
                dst: any,
                gw: Some(*g),
            });
        }
    }
    for route in &a.routes {
        r.routes.push(spec::Route {
            dst: route.dest,
            gw: Some(route.via),
        });
    }
    if let Some(lease) = a.dhcp.as_ref().and_then(|b| b.lease.as_ref()) {
        r.dns.nameservers = lease.dns.iter().map(|d| (*d).into()).collect();
        r.dns.domain = lease.domain.clone();
    }
    // plumb's DNS, on the host's addresses the container reaches.
    if net.serve_dns {
        r.dns.nameservers = crate::dns::servers(net, a);
        r.dns.domain = net.domain.clone();
        r.dns.search = net.domain.iter().cloned().collect();
    }
    r
}

/// DEL: whatever of the attachment is left goes (its namespace, its
/// interface or its record may be gone already; that is success).
fn del(inv: &Invocation, conf: &NetConf, daemon: &Daemon) -> Result<(), CniError> {
    let t = target(&inv.container_id, &inv.ifname);
    match crate::cli::detach_from(daemon, &t, None) {
        Ok(_) => Ok(()),
        Err(Error::UnknownNetwork(_)) => Ok(()),
        Err(e) => Err(failed(e).with_details(format!(
            "network `{}`: `plumb detach {t}` removes what is left",
            conf.network
        ))),
    }
}

/// CHECK: the kernel against plumb's record; each difference said.
fn check(inv: &Invocation, conf: &NetConf, daemon: &Daemon) -> Result<(), CniError> {
    let engine = open(daemon)?;
    let a = find(&engine, &inv.container_id, &inv.ifname)?.ok_or_else(|| {
        CniError::new(
            code::FAILED,
            format!(
                "container {} has no {} on network `{}`",
                inv.container_id, inv.ifname, conf.network
            ),
        )
    })?;
    let net = engine.network(&a.network).map_err(failed)?.network;
    let mut wrong = Vec::new();
    let netns = inv.netns.as_deref().unwrap_or_default();
    match crate::netns::NsHandle::open(std::path::Path::new(netns)) {
        Err(e) => wrong.push(format!("namespace {netns}: {e}")),
        Ok(ns) if !a.is_in(&ns) => wrong.push(format!(
            "{netns} is not the namespace {} was added to",
            a.ifname
        )),
        Ok(ns) => inside(&ns, &a, &mut wrong),
    }
    if kinds::of(&net.kind).has_host_port() {
        let host = Netlink::open()
            .ok()
            .and_then(|mut nl| nl.link_by_name(&a.host_ifname).ok().flatten());
        if host.is_none() {
            wrong.push(format!("the host end {} is gone", a.host_ifname));
        }
    }
    if let Some(prev) = &conf.prev_result {
        let prev = CniResult::from_json(prev)?;
        for ip in prev.ips.iter().filter(|ip| {
            ip.interface
                .and_then(|i| prev.interfaces.get(i))
                .is_some_and(|i| i.name == a.ifname)
        }) {
            if !a.addresses.contains(&ip.address) {
                wrong.push(format!(
                    "{} was added with {}, which plumb's record does not hold",
                    a.ifname, ip.address
                ));
            }
        }
    }
    match wrong.is_empty() {
        true => Ok(()),
        false => Err(CniError::new(
            code::FAILED,
            format!(
                "{} on network `{}`: {}",
                a.ifname,
                a.network,
                wrong.join("; ")
            ),
        )),
    }
}

/// What CHECK looks at inside the namespace: the interface, up, with its
/// MAC (an ipvlan's is its parent's), its addresses and default routes.
fn inside(ns: &crate::netns::NsHandle, a: &Attachment, wrong: &mut Vec<String>) {
    let mut nl = match Netlink::open_in(ns) {
        Ok(nl) => nl,
        Err(e) => return wrong.push(format!("netlink in the namespace: {e}")),
    };
    let link = match nl.link_by_name(&a.ifname) {
        Ok(Some(l)) => l,
        Ok(None) => return wrong.push(format!("{} is gone", a.ifname)),
        Err(e) => return wrong.push(format!("look up {}: {e}", a.ifname)),
    };
    if !link.up {
        wrong.push(format!("{} is down", a.ifname));
    }
    if link.kind.as_deref() != Some("ipvlan") && link.mac != Some(a.mac.0) {
        wrong.push(format!(
            "{} has MAC {}, not {}",
            a.ifname,
            link.mac
                .map(|m| crate::model::Mac(m).to_string())
                .unwrap_or_default(),
            a.mac
        ));
    }
    let have = nl.addresses(link.index).unwrap_or_default();
    for x in a.addresses.iter().filter(|x| !have.contains(x)) {
        wrong.push(format!("{} lacks {x}", a.ifname));
    }
    if a.default_route != DefaultRoute::None {
        for g in &a.gateways {
            let routes = nl.routes(g.is_ipv6()).unwrap_or_default();
            let there = routes
                .iter()
                .any(|r| r.dest.prefix_len() == 0 && r.via == Some(*g));
            if !there {
                wrong.push(format!("no default route via {g}"));
            }
        }
    }
}

/// STATUS: whether an ADD could be served now (50 when not).
fn status(conf: &NetConf, daemon: &Daemon) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let engine =
        Engine::open(daemon.state_dir).map_err(|e| unavailable(format!("plumb's store: {e}")))?;
    let dhcp = match engine.network(&conf.network) {
        Ok(n) => n.network.ipam == Ipam::Dhcp,
        Err(Error::UnknownNetwork(_)) => match &conf.definition {
            Some(d) => d.ipam.as_deref() == Some("dhcp"),
            None => {
                return Err(unavailable(format!(
                    "network `{}`: no such plumb network",
                    conf.network
                )));
            }
        },
        Err(e) => return Err(unavailable(e.to_string())),
    };
    if dhcp {
        daemon
            .call(&crate::daemon::protocol::Request::Status)
            .map_err(|e| unavailable(format!("a DHCP network needs plumb's daemon: {e}")))?;
    }
    Ok(())
}

/// GC: every attachment a runtime added on this network that is not in
/// its list of valid ones goes (errors are said after trying them all).
fn gc(conf: &NetConf, daemon: &Daemon) -> Result<(), CniError> {
    let Some(valid) = &conf.valid_attachments else {
        return Ok(());
    };
    let engine = open(daemon)?;
    let stale: Vec<Attachment> = engine
        .attachments()
        .map_err(failed)?
        .into_iter()
        .map(|s| s.attachment)
        .filter(|a| a.network == conf.network)
        .filter(|a| {
            a.cni.as_ref().is_some_and(|c| {
                !valid
                    .iter()
                    .any(|(id, ifname)| *id == c.container_id && *ifname == a.ifname)
            })
        })
        .collect();
    drop(engine);
    let mut errors = Vec::new();
    for a in stale {
        let container = a
            .cni
            .as_ref()
            .map(|c| c.container_id.as_str())
            .unwrap_or("");
        let t = target(container, &a.ifname);
        if let Err(e) = crate::cli::detach_from(daemon, &t, Some(&a.network)) {
            errors.push(format!("{t}: {e}"));
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(CniError::new(code::FAILED, errors.join("; "))),
    }
}
