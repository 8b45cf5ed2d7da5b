//! A cluster of fake hosts for tests: an underlay switch, etcd 3.4 in a
//! namespace of its own, and a daemon per host with a state directory of
//! its own, joined to the cluster.

use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{Bg, Lab, must, wait_for, wait_until};

pub const STORE: &str = "etcd://10.250.0.10:2379";

/// The underlay: switch `under` (bridge br0), the lab's host at
/// 10.250.0.1, a second host at 10.250.0.2, etcd's namespace at .10.
pub struct Underlay {
    pub host2: String,
    pub etcd_ns: String,
}

pub fn underlay(lab: &Lab) -> Underlay {
    let switch = lab.netns("under");
    must(&format!(
        "ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up"
    ));
    let host2 = lab.netns("host2");
    let etcd_ns = lab.netns("etcd");
    for (ns, addr, port) in [
        (lab.host.as_str(), "10.250.0.1/24", "p1"),
        (host2.as_str(), "10.250.0.2/24", "p2"),
        (etcd_ns.as_str(), "10.250.0.10/24", "p10"),
    ] {
        lab.wire(ns, "under0", Some(addr), &switch, port, None);
        must(&format!("ip -n {switch} link set {port} master br0"));
    }
    Underlay { host2, etcd_ns }
}

pub fn etcd(lab: &Lab, ns: &str) -> Bg {
    etcd_with(lab, ns, "http", "")
}

/// One etcd member in `ns`, serving clients at `scheme`://10.250.0.10:2379,
/// with `extra` flags (TLS files, say); returned once it listens.
pub fn etcd_with(lab: &Lab, ns: &str, scheme: &str, extra: &str) -> Bg {
    let data = lab.state.path().join("etcd-data");
    let bg = lab.spawn_in(
        ns,
        &format!(
            "etcd --name e1 --data-dir {} --listen-client-urls {scheme}://10.250.0.10:2379 \
             --advertise-client-urls {scheme}://10.250.0.10:2379 \
             --listen-peer-urls http://127.0.0.1:2380 \
             --initial-advertise-peer-urls http://127.0.0.1:2380 \
             --initial-cluster e1=http://127.0.0.1:2380 {extra}",
            data.display()
        ),
        "etcd.log",
    );
    wait_until("etcd to listen", 20, || {
        String::from_utf8_lossy(&lab.exec(ns, "ss -ltn").stdout).contains("10.250.0.10:2379")
    });
    bg
}

/// `plumb cluster members --json`, from the lab's host: (host, vtep).
pub fn members(lab: &Lab) -> Vec<(String, String)> {
    let out = lab.plumb(&["cluster", "members", "--cluster-store", STORE, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["host"].as_str().unwrap_or_default().to_string(),
                m["vtep"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A daemon killed when dropped (a failing test leaves none running).
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon for host `ns` with a state directory of its own, in the cluster
/// as `name`.
pub fn member_daemon(lab: &Lab, ns: &str, name: &str, log: &str) -> Daemon {
    member_daemon_with(lab, ns, name, log, &[])
}

/// The same with `extra` daemon arguments; a daemon started again on the
/// same state adds to its log.
pub fn member_daemon_with(lab: &Lab, ns: &str, name: &str, log: &str, extra: &[&str]) -> Daemon {
    let state = lab.state.path().join(format!("state-{log}"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.state.path().join(format!("{log}.log")))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["--state-dir", state.to_str().unwrap(), "--host-netns", ns])
        .args(["--socket", state.join("plumbd.sock").to_str().unwrap()])
        .args(["daemon", "--docker-plugin", "none"])
        .args(["--cluster-host", name])
        .args(match extra.contains(&"--cluster-store") {
            true => &[][..],
            false => &["--cluster-store", STORE][..],
        })
        .args(match extra.contains(&"--cluster-ttl") {
            true => &[][..],
            false => &["--cluster-ttl", "2"][..],
        })
        .args(extra)
        .env("PLUMB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Daemon)
        .expect("start a daemon")
}

pub fn log_of(lab: &Lab, log: &str) -> String {
    std::fs::read_to_string(lab.state.path().join(format!("{log}.log"))).unwrap_or_default()
}

/// plumb as the daemon `log` of host `ns` sees its state.
pub fn plumb_at(lab: &Lab, ns: &str, log: &str, args: &[&str]) -> std::process::Output {
    let state = lab.state.path().join(format!("state-{log}"));
    Command::new(env!("CARGO_BIN_EXE_plumb"))
        .args(["--state-dir", state.to_str().unwrap(), "--host-netns", ns])
        .args(["--socket", state.join("plumbd.sock").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The underlay, etcd, and the daemons of hosts h1 (the lab's) and h2,
/// both joined.
pub fn two_members(lab: &Lab) -> (Underlay, Bg, Daemon, Daemon) {
    let u = underlay(lab);
    let store = etcd(lab, &u.etcd_ns);
    let d1 = member_daemon(lab, &lab.host, "h1", "d1");
    let d2 = member_daemon(lab, &u.host2, "h2", "d2");
    wait_until("both hosts to join", 15, || members(lab).len() == 2);
    (u, store, d1, d2)
}

/// How many leases etcd (in namespace `ns`) holds.
pub fn leases(lab: &Lab, ns: &str) -> usize {
    let out = lab.exec(ns, "etcdctl --endpoints http://10.250.0.10:2379 lease list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim().chars().all(|c| c.is_ascii_hexdigit()))
        .count()
}

/// Define cluster network `name` from the lab's host; what plumb said.
pub fn define(lab: &Lab, name: &str, vni: &str, subnet: &str) -> String {
    define_with(lab, name, vni, subnet, &[])
}

/// The same with `extra` options of `network create`.
pub fn define_with(lab: &Lab, name: &str, vni: &str, subnet: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "network",
        "create",
        name,
        "--driver",
        "vxlan",
        "--vni",
        vni,
        "--subnet",
        subnet,
        "--cluster-store",
        STORE,
    ];
    args.extend_from_slice(extra);
    lab.ok(&args)
}

/// Attach `target` on host `ns` (daemon `log`) once its blocks are there;
/// its address and MAC.
pub fn attach_on(lab: &Lab, ns: &str, log: &str, target: &str, network: &str) -> (String, String) {
    attach_on_with(lab, ns, log, target, network, &[])
}

/// The same with `extra` attach options.
pub fn attach_on_with(
    lab: &Lab,
    ns: &str,
    log: &str,
    target: &str,
    network: &str,
    extra: &[&str],
) -> (String, String) {
    let line = wait_for("an address from this host's blocks", 15, || {
        let mut args = vec!["attach", target, network];
        args.extend_from_slice(extra);
        let out = plumb_at(lab, ns, log, &args);
        match out.status.success() {
            true => Ok(text(&out)),
            false => Err(text(&out)),
        }
    });
    let fields: Vec<&str> = line.split_whitespace().collect();
    let address = fields[3].split('/').next().unwrap().to_string();
    (address, fields[2].to_string())
}

/// The address blocks of `network` as host `ns` (daemon `log`) sees them:
/// (block, host).
pub fn blocks_at(lab: &Lab, ns: &str, log: &str, network: &str) -> Vec<(String, String)> {
    let out = plumb_at(lab, ns, log, &["network", "inspect", network]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["Blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            (
                b["Block"].as_str().unwrap_or_default().to_string(),
                b["Host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The IPv4 address of `target` on `network`, as host `ns` (daemon `log`)
/// has it.
pub fn ip_at(lab: &Lab, ns: &str, log: &str, target: &str, network: &str) -> String {
    let out = plumb_at(lab, ns, log, &["inspect", target]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("{target} on {network}: {}", text(&out)))
        .to_string()
}

/// The cluster's rules (`plumb policy ls --cluster-store … --json`):
/// (id, rule as written).
pub fn cluster_rules(lab: &Lab) -> Vec<(i64, Value)> {
    let out = lab.plumb(&["policy", "ls", "--cluster-store", STORE, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|pair| (pair[0].as_i64().unwrap_or_default(), pair[1].clone()))
        .collect()
}

/// Whether host `ns` (daemon `log`) has network `name` (`plumb network ls`).
pub fn has_network(lab: &Lab, ns: &str, log: &str, name: &str) -> bool {
    text(&plumb_at(lab, ns, log, &["network", "ls"]))
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}
