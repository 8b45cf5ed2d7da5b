//! A cluster whose store is three etcd 3.4 members (each in its own
//! namespace on the underlay, real peer URLs), and three plumb hosts whose
//! daemons are given all three. The member that leads is killed: the hosts
//! stay members, a container attached after the kill is reached from
//! another host, and the overlay never flaps meanwhile (a ping running
//! through it loses nothing; every host's FDB keeps the other hosts'
//! containers the whole time). The killed member alone is refused with an
//! error that names it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{Daemon, log_of, member_daemon_with, plumb_at, text};
use common::{Bg, Lab, must, sh, wait_for, wait_until};
use serde_json::Value;

/// The etcd members' addresses on the underlay.
const MEMBERS: [&str; 3] = ["10.250.0.11", "10.250.0.12", "10.250.0.13"];
/// The daemons' lease.
const TTL: Duration = Duration::from_secs(2);

fn store() -> String {
    let all: Vec<String> = MEMBERS.iter().map(|a| format!("{a}:2379")).collect();
    format!("etcd://{}", all.join(","))
}

/// The underlay: switch `under` (bridge br0), hosts h1 (the lab's), h2, h3
/// at 10.250.0.1-3, etcd members e1-e3 at [`MEMBERS`].
struct Underlay {
    hosts: Vec<String>,
    etcds: Vec<String>,
}

fn underlay(lab: &Lab) -> Underlay {
    let switch = lab.netns("under");
    must(&format!(
        "ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up"
    ));
    let hosts = vec![lab.host.clone(), lab.netns("host2"), lab.netns("host3")];
    let etcds: Vec<String> = (1..=3).map(|i| lab.netns(&format!("e{i}"))).collect();
    let mut wired = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        wired.push((
            h.clone(),
            format!("10.250.0.{}/24", i + 1),
            format!("p{}", i + 1),
        ));
    }
    for (i, e) in etcds.iter().enumerate() {
        wired.push((
            e.clone(),
            format!("{}/24", MEMBERS[i]),
            format!("pe{}", i + 1),
        ));
    }
    for (ns, addr, port) in wired {
        lab.wire(&ns, "under0", Some(&addr), &switch, &port, None);
        must(&format!("ip -n {switch} link set {port} master br0"));
    }
    Underlay { hosts, etcds }
}

/// The three members, started together (each waits for the others to
/// form the cluster); returns once all three answer healthy.
fn etcd_cluster(lab: &Lab, u: &Underlay) -> Vec<Bg> {
    let initial: Vec<String> = MEMBERS
        .iter()
        .enumerate()
        .map(|(i, a)| format!("e{}=http://{a}:2380", i + 1))
        .collect();
    let members: Vec<Bg> = u
        .etcds
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let (name, addr) = (format!("e{}", i + 1), MEMBERS[i]);
            let data = lab.state.path().join(format!("{name}-data"));
            lab.spawn_in(
                ns,
                &format!(
                    "etcd --name {name} --data-dir {} \
                     --listen-client-urls http://{addr}:2379 \
                     --advertise-client-urls http://{addr}:2379 \
                     --listen-peer-urls http://{addr}:2380 \
                     --initial-advertise-peer-urls http://{addr}:2380 \
                     --initial-cluster {} --initial-cluster-state new \
                     --initial-cluster-token {}",
                    data.display(),
                    initial.join(","),
                    lab.prefix.trim_end_matches('-'),
                ),
                &format!("{name}.log"),
            )
        })
        .collect();
    wait_for("the three etcd members to be healthy", 30, || {
        let out = etcdctl(lab, &all_endpoints(), "endpoint health");
        match out.status.success() {
            true => Ok(()),
            false => Err(text(&out)),
        }
    });
    members
}

fn all_endpoints() -> String {
    MEMBERS
        .iter()
        .map(|a| format!("http://{a}:2379"))
        .collect::<Vec<_>>()
        .join(",")
}

/// etcdctl (API v3) from the lab's host.
fn etcdctl(lab: &Lab, endpoints: &str, args: &str) -> std::process::Output {
    lab.exec(
        &lab.host,
        &format!("env ETCDCTL_API=3 etcdctl --dial-timeout 2s --command-timeout 3s --endpoints {endpoints} {args}"),
    )
}

/// Which member leads now: its index in [`MEMBERS`].
fn leader(lab: &Lab) -> usize {
    wait_for("a leader", 15, || {
        let out = etcdctl(lab, &all_endpoints(), "endpoint status -w json");
        let v: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
        v.as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                let st = &s["Status"];
                st["leader"].as_u64().is_some() && st["header"]["member_id"] == st["leader"]
            })
            .and_then(|s| s["Endpoint"].as_str())
            .and_then(|e| MEMBERS.iter().position(|m| e.contains(m)))
            .ok_or_else(|| format!("no leader in {v}"))
    })
}

/// `plumb cluster members --json` against `store`: the hosts' names, or
/// what plumb said.
fn members_at(lab: &Lab, store: &str) -> Result<Vec<String>, String> {
    let out = lab.plumb(&["cluster", "members", "--cluster-store", store, "--json"]);
    if !out.status.success() {
        return Err(text(&out));
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|m| m["host"].as_str().unwrap_or_default().to_string())
        .collect())
}

fn logs(lab: &Lab) -> String {
    ["h1", "h2", "h3"]
        .iter()
        .map(|h| format!("--- {h}\n{}", log_of(lab, h)))
        .collect()
}

/// Host `ns`'s daemon, state of its own, in the cluster as `name`, given
/// all the members.
fn member_daemon(lab: &Lab, ns: &str, name: &str) -> Daemon {
    let ttl = TTL.as_secs().to_string();
    let store = store();
    let extra = ["--cluster-ttl", &ttl, "--cluster-store", &store];
    member_daemon_with(lab, ns, name, name, &extra)
}

/// Attach `target` on host `ns` (daemon `name`) to t1; its address and MAC.
fn attach_on(lab: &Lab, ns: &str, name: &str, target: &str) -> (String, String) {
    common::cluster::attach_on(lab, ns, name, target, "t1")
}

fn fdb(ns: &str) -> String {
    must(&format!("bridge -n {ns} fdb show dev vx-t1"))
}

/// Samples, every 50 ms until stopped, whether host `ns`'s FDB holds
/// each of `macs`; what was missing, and when.
struct FdbWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Drop for FdbWatch {
    /// A failing test stops the sampling before its namespaces go.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl FdbWatch {
    fn start(ns: &str, macs: &[&str], deadline: Duration) -> FdbWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, macs) = (
            ns.to_string(),
            macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (start, mut samples, mut missing) = (Instant::now(), 0, Vec::new());
            while !flag.load(Ordering::SeqCst) && start.elapsed() < deadline {
                let table = sh(&format!("bridge -n {ns} fdb show dev vx-t1"));
                let table = String::from_utf8_lossy(&table.stdout);
                samples += 1;
                for mac in macs.iter().filter(|m| !table.contains(m.as_str())) {
                    missing.push(format!("{:?}: {mac} missing\n{table}", start.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, missing)
        });
        FdbWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// How many samples were taken; fails the test if any missed a MAC.
    fn finish(mut self, what: &str, logs: impl Fn() -> String) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (samples, missing) = self.thread.take().unwrap().join().unwrap();
        assert!(
            missing.is_empty(),
            "{what}: the FDB lost a remote container {} times in {samples} samples; first: {}\n{}",
            missing.len(),
            missing[0],
            logs()
        );
        samples
    }
}

/// The sequence numbers `ping`'s output (in `log`) has a reply for.
fn replies(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn the_cluster_outlives_its_etcd_leader() {
    let lab = Lab::new("cha");
    let u = underlay(&lab);
    let mut etcds = etcd_cluster(&lab, &u);
    let names = ["h1", "h2", "h3"];
    let _daemons: Vec<Daemon> = u
        .hosts
        .iter()
        .zip(names)
        .map(|(ns, name)| member_daemon(&lab, ns, name))
        .collect();
    wait_until("the three hosts to join", 20, || {
        members_at(&lab, &store()).is_ok_and(|m| m == names)
    });

    let out = lab.ok(&[
        "network",
        "create",
        "t1",
        "--driver",
        "vxlan",
        "--vni",
        "4100",
        "--subnet",
        "10.100.0.0/24",
        "--cluster-store",
        &store(),
    ]);
    assert!(out.contains("(VNI 4100)"), "{out}");
    for (ns, name) in u.hosts.iter().zip(names) {
        wait_until("the cluster network on every host", 15, || {
            text(&plumb_at(&lab, ns, name, &["network", "ls"])).contains("t1 ")
        });
    }
    let (c1, c2, c3) = (lab.netns("c1"), lab.netns("c2"), lab.netns("c3"));
    let (ip1, mac1) = attach_on(&lab, &u.hosts[0], "h1", &c1);
    let (ip2, mac2) = attach_on(&lab, &u.hosts[1], "h2", &c2);
    wait_until("c1 to reach c2 across hosts", 15, || lab.ping(&c1, &ip2));
    assert!(lab.ping(&c2, &ip1));
    assert!(fdb(&u.hosts[2]).contains(&mac1) && fdb(&u.hosts[2]).contains(&mac2));

    // From now on: a ping every 100 ms from c1 to c2, and every host's FDB
    // sampled for the other hosts' containers, until the end.
    let mut pinger = lab.spawn_in(&c1, &format!("ping -n -i 0.1 {ip2}"), "ping.log");
    let watches = [
        FdbWatch::start(&u.hosts[0], &[&mac2], Duration::from_secs(120)),
        FdbWatch::start(&u.hosts[1], &[&mac1], Duration::from_secs(120)),
        FdbWatch::start(&u.hosts[2], &[&mac1, &mac2], Duration::from_secs(120)),
    ];
    wait_until("the ping to answer", 5, || {
        !replies(&pinger.log_text()).is_empty()
    });

    // The leader goes, the hard way.
    let dead = leader(&lab);
    etcds[dead].kill9();
    let killed_at = Instant::now();
    let new_leader = leader(&lab);
    assert_ne!(new_leader, dead);

    // A container attached after the kill is reached from another host.
    let (ip3, mac3) = attach_on(&lab, &u.hosts[2], "h3", &c3);
    wait_for(
        "c1 (on h1) to reach c3 (on h3, attached after the kill)",
        15,
        || match lab.ping(&c1, &ip3) {
            true => Ok(()),
            false => Err(format!("{}\n{}", fdb(&u.hosts[0]), logs(&lab))),
        },
    );
    wait_until("h2 to have c3 in its FDB", 10, || {
        fdb(&u.hosts[1]).contains(&mac3)
    });

    // Several leases later, every host is still a member (asked through
    // all three endpoints, the dead one among them), every time.
    while killed_at.elapsed() < TTL * 4 {
        match members_at(&lab, &store()) {
            Ok(m) => assert_eq!(m, names, "{}", logs(&lab)),
            Err(e) => panic!("members through the survivors: {e}\n{}", logs(&lab)),
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The killed member alone: a clear error, in good time.
    let alone = format!("etcd://{}:2379", MEMBERS[dead]);
    let err = lab.fails(&["cluster", "members", "--cluster-store", &alone]);
    assert!(
        err.contains(&format!("cluster store (http://{}:2379)", MEMBERS[dead])),
        "{err}"
    );

    // Nothing flapped: no FDB sample missed a remote container, and the
    // ping answered every time.
    let samples: usize = watches
        .into_iter()
        .zip(names)
        .map(|(w, h)| w.finish(h, || logs(&lab)))
        .sum();
    assert!(samples > 30, "{samples} samples");
    pinger.stop();
    let seen = replies(&pinger.log_text());
    let (first, last) = (seen[0], *seen.last().unwrap());
    let lost: Vec<u64> = (first..=last).filter(|s| !seen.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "the ping lost {lost:?} of {first}..={last}\n{}",
        logs(&lab)
    );
    assert!(
        last - first >= 40,
        "the ping ran through the kill: {first}..={last}"
    );
}
