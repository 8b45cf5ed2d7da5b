//! plumb beside the other users of iptables, without Docker: what Docker,
//! a user, iptables-restore, the legacy backend and netavark do to the
//! filter table is done here with the iptables tools themselves, inside
//! each test's fake host.
//!
//! plumb's accepts are plain iptables-nft rules, `-i|-o BRIDGE -m comment
//! --comment "plumb network NAME" -j ACCEPT`, in DOCKER-USER when it exists,
//! else at the head of FORWARD; none where there is no filter table. The
//! daemon checks twice a second and moves or re-adds them. On a host where
//! the legacy filter table is in use, the same go there through
//! iptables-legacy-restore. UDP conntrack entries of a published port are
//! deleted when it is published and freed (netavark issue 1045).
//!
//! Watching the daemon: its policy thread repairs egress routing, then the
//! firewall, then sleeps 0.5 s. A network with an egress interface has ip
//! rules of its own; deleting one and waiting until the daemon put it back
//! is one loop of that thread, seen as an event. N such round trips mean
//! at least N-1 complete firewall checks after the moment they started:
//! that is how "the daemon leaves this alone" is observed, without sleeps.

mod common;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Bg, Lab, must, sh, wait_until};

// ---------------------------------------------------------------- helpers

/// Run `cmd` in the lab's fake host and insist that it succeeds.
fn host(lab: &Lab, cmd: &str) -> String {
    must(&format!("ip netns exec {} {cmd}", lab.host))
}

/// The two accepts of a network as `iptables -S` prints them, without
/// `-A CHAIN`: out of the bridge, then into it.
fn accepts(network: &str, bridge: &str) -> [String; 2] {
    ["-i", "-o"].map(|dir| {
        format!("{dir} {bridge} -m comment --comment \"plumb network {network}\" -j ACCEPT")
    })
}

/// The rules of one chain of iptables-nft's filter table, in order, each
/// without its `-A CHAIN `; empty when the chain does not exist.
fn rules(lab: &Lab, chain: &str) -> Vec<String> {
    rules_with(lab, "iptables", chain)
}

/// The same through another tool (`iptables-legacy`).
fn rules_with(lab: &Lab, tool: &str, chain: &str) -> Vec<String> {
    let out = sh(&format!("ip netns exec {} {tool} -S {chain}", lab.host));
    if !out.status.success() {
        return Vec::new();
    }
    let head = format!("-A {chain} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&head).map(String::from))
        .collect()
}

/// The rules of the legacy filter table, `-A CHAIN ...` each, read with
/// iptables-legacy-save (which takes no xtables lock).
fn legacy_saved(lab: &Lab) -> Vec<String> {
    host(lab, "iptables-legacy-save -t filter")
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(String::from)
        .collect()
}

fn count(rules: &[String], rule: &str) -> usize {
    rules.iter().filter(|r| *r == rule).count()
}

/// Whether `rules` hold each of `want` exactly once.
fn once_each(rules: &[String], want: &[String]) -> bool {
    want.iter().all(|w| count(rules, w) == 1)
}

/// How many of `rules` are plumb's.
fn plumbs(rules: &[String]) -> usize {
    rules
        .iter()
        .filter(|r| r.contains("--comment \"plumb"))
        .count()
}

/// The rule handles of a chain of `ip filter`, in order: a rule removed
/// and added again gets a new one.
fn handles(lab: &Lab, chain: &str) -> Vec<u64> {
    host(lab, &format!("nft -a list chain ip filter {chain}"))
        .lines()
        .filter(|l| !l.trim_start().starts_with("chain ") && !l.contains("type filter hook"))
        .filter_map(|l| {
            l.rsplit_once("# handle ")
                .and_then(|(_, h)| h.trim().parse().ok())
        })
        .collect()
}

/// The bridge of a network.
fn bridge_of(lab: &Lab, network: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", network])).expect("JSON");
    v["Options"]["bridge"].as_str().expect("bridge").to_string()
}

/// The priority of the second egress rule of a network (`from SUBNET
/// lookup TABLE`), the one `daemon_loops` deletes.
fn egress_rule(lab: &Lab, network: &str) -> u32 {
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", network])).expect("JSON");
    v["Egress"]["RulePriorities"][1]
        .as_u64()
        .expect("egress rule priorities") as u32
}

/// Let the daemon's policy thread go round `n` times (see the top of the
/// file): the ip rule `priority` is deleted and waited for, `n` times.
fn daemon_loops(lab: &Lab, priority: u32, n: usize) {
    let show = format!("ip -n {} rule show priority {priority}", lab.host);
    for i in 0..n {
        must(&format!("ip -n {} rule del priority {priority}", lab.host));
        wait_until(
            &format!("the daemon to put ip rule {priority} back (round {i})"),
            10,
            || !must(&show).trim().is_empty(),
        );
    }
}

/// How many times the daemon said it rewrote the firewall.
fn firewall_repairs(daemon: &Bg) -> usize {
    daemon
        .log_text()
        .matches("restored plumb's nftables tables and iptables accepts")
        .count()
}

/// An xtables lock held by this test (flock, as the iptables tools take
/// it), released when dropped.
struct HeldLock(std::fs::File);

impl HeldLock {
    fn hold(path: &std::path::Path) -> HeldLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .expect("open the lock file");
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "lock {}", path.display());
        HeldLock(file)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// A thread inside a namespace of the lab, stopped (and joined) on drop.
struct NsThread {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NsThread {
    fn spawn(ns: &str, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> NsThread {
        let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f(s)
        });
        NsThread {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What a UDP receiver got: how many datagrams, and the source ports.
#[derive(Default)]
struct Received {
    count: AtomicUsize,
    sources: Mutex<Vec<std::net::SocketAddr>>,
}

/// A UDP receiver on `0.0.0.0:port` inside `ns`.
fn udp_receiver(ns: &str, port: u16) -> (NsThread, Arc<Received>) {
    let got = Arc::new(Received::default());
    let g = got.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let t = NsThread::spawn(ns, move |stop| {
        let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind the receiver");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                g.count.fetch_add(1, Ordering::SeqCst);
                g.sources.lock().unwrap().push(from);
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("receiver bound");
    (t, got)
}

/// One UDP flow: a datagram every 50 ms from one socket in `ns` to `to`,
/// until stopped or 60 s are up. Returns the thread and its source.
fn udp_sender(ns: &str, from: &str, to: &str) -> (NsThread, std::net::SocketAddr) {
    let (from, to) = (from.to_string(), to.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let t = NsThread::spawn(ns, move |stop| {
        let socket = UdpSocket::bind((from.as_str(), 0)).expect("bind the sender");
        tx.send(socket.local_addr().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let _ = socket.send_to(format!("datagram {n}").as_bytes(), to.as_str());
            n += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let source = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("sender bound");
    (t, source)
}

const NETAVARK: &str = "/usr/lib/podman/netavark";

/// `netavark --config DIR setup|teardown /run/netns/NS` in the fake host,
/// with its iptables driver, `opts` on stdin.
fn netavark(
    lab: &Lab,
    verb: &str,
    config: &std::path::Path,
    ns: &str,
    opts: &str,
) -> (bool, String, String) {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", lab.host))
        .arg(NETAVARK)
        .arg("--config")
        .arg(config)
        .arg(verb)
        .arg(format!("/run/netns/{ns}"))
        .env("NETAVARK_FW", "iptables")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netavark");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(opts.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("netavark");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------------------ tests

/// Placement and repair with the daemon: FORWARD head, then DOCKER-USER
/// once it exists, back after `iptables -F`, left alone after an
/// `iptables-save | iptables-restore` round trip and after a user's rule
/// put above them; without a daemon `plumb restore` puts them back.
#[test]
fn the_daemon_keeps_the_accepts_where_docker_wants_them() {
    let lab = Lab::new("ipnb");
    lab.upstream("10.81.0");
    let mut daemon = lab.daemon(&[]);
    host(&lab, "iptables -P FORWARD DROP");
    host(&lab, "iptables -A FORWARD -s 192.0.2.9 -j DROP");
    host(&lab, "ip6tables -P FORWARD DROP");
    lab.ok(&[
        "network",
        "create",
        "natnet",
        "--subnet",
        "10.41.0.0/24",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.81.0.1",
    ]);
    let want: Vec<String> = accepts("natnet", &bridge_of(&lab, "natnet")).into();
    let tick = egress_rule(&lab, "natnet");
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "natnet"]);

    // At the head of FORWARD, before the rule that was there.
    let forward = rules(&lab, "FORWARD");
    assert_eq!(forward.len(), 3, "{forward:#?}");
    assert!(once_each(&forward[..2], &want), "{forward:#?}");
    assert_eq!(forward[2], "-s 192.0.2.9/32 -j DROP");
    assert!(lab.ping(&a, "10.81.0.1"), "through FORWARD's DROP");
    let forward6 = rules_with(&lab, "ip6tables", "FORWARD");
    assert!(
        forward6.len() == 2 && once_each(&forward6, &want),
        "IPv6 too: {forward6:#?}"
    );

    // Docker comes: DOCKER-USER and FORWARD's jump to it.
    host(&lab, "iptables -N DOCKER-USER");
    host(&lab, "iptables -I FORWARD -j DOCKER-USER");
    wait_until("the accepts to move to DOCKER-USER", 5, || {
        let user = rules(&lab, "DOCKER-USER");
        user.len() == 2 && once_each(&user, &want) && plumbs(&rules(&lab, "FORWARD")) == 0
    });
    assert_eq!(
        rules(&lab, "FORWARD"),
        ["-j DOCKER-USER", "-s 192.0.2.9/32 -j DROP"]
    );
    assert_eq!(
        rules_with(&lab, "ip6tables", "FORWARD"),
        forward6,
        "IPv6 has no DOCKER-USER: its accepts stay"
    );
    assert!(lab.ping(&a, "10.81.0.1"), "through DOCKER-USER");

    // Someone flushes every chain of filter; Docker puts its jump back.
    host(&lab, "iptables -F");
    wait_until("the accepts to come back into DOCKER-USER", 5, || {
        let user = rules(&lab, "DOCKER-USER");
        user.len() == 2 && once_each(&user, &want)
    });
    assert!(rules(&lab, "FORWARD").is_empty());
    host(&lab, "iptables -I FORWARD -j DOCKER-USER");
    assert!(lab.ping(&a, "10.81.0.1"));

    // A save, a flush of DOCKER-USER, and a restore of the save: the
    // restored rules are the daemon's own shape, none added, none moved.
    let saved = lab.state.path().join("filter.save");
    let text = host(&lab, "iptables-save");
    assert_eq!(text.matches("plumb network natnet").count(), 2, "{text}");
    std::fs::write(&saved, &text).unwrap();
    host(&lab, "iptables -F DOCKER-USER");
    host(&lab, &format!("iptables-restore {}", saved.display()));
    wait_until("exactly one of each accept in DOCKER-USER", 5, || {
        let user = rules(&lab, "DOCKER-USER");
        user.len() == 2 && once_each(&user, &want)
    });
    let restored = handles(&lab, "DOCKER-USER");
    daemon_loops(&lab, tick, 3);
    let user = rules(&lab, "DOCKER-USER");
    assert!(user.len() == 2 && once_each(&user, &want), "{user:#?}");
    assert_eq!(handles(&lab, "DOCKER-USER"), restored, "not rewritten");
    assert_eq!(plumbs(&rules(&lab, "FORWARD")), 0);

    // A user's rule inserted above them stays first; plumb's are neither
    // added again nor moved over the next loops of the daemon.
    host(&lab, "iptables -I DOCKER-USER -s 192.0.2.1 -j DROP");
    let before = handles(&lab, "DOCKER-USER");
    let repairs = firewall_repairs(&daemon);
    daemon_loops(&lab, tick, 4);
    let user = rules(&lab, "DOCKER-USER");
    assert_eq!(user.len(), 3, "{user:#?}");
    assert_eq!(user[0], "-s 192.0.2.1/32 -j DROP");
    assert!(once_each(&user[1..], &want), "{user:#?}");
    assert_eq!(handles(&lab, "DOCKER-USER"), before, "rules untouched");
    assert_eq!(firewall_repairs(&daemon), repairs, "{}", daemon.log_text());
    assert!(lab.ping(&a, "10.81.0.1"));

    // One of plumb's goes: it comes back below the user's rule, and the
    // other stays as it was.
    host(&lab, &format!("iptables -D DOCKER-USER {}", want[1]));
    wait_until("the missing accept to come back", 5, || {
        rules(&lab, "DOCKER-USER").len() == 3
    });
    let user = rules(&lab, "DOCKER-USER");
    assert_eq!(user[0], "-s 192.0.2.1/32 -j DROP", "{user:#?}");
    assert!(once_each(&user[1..], &want), "{user:#?}");
    let now = handles(&lab, "DOCKER-USER");
    assert_eq!(now[0], before[0], "the user's rule, untouched");
    assert!(
        now.contains(&before[1]),
        "the accept that stayed, untouched"
    );
    // iptables-save reads every rule back (it refused plumb's old ones).
    let out = sh(&format!("ip netns exec {} iptables-save", lab.host));
    assert!(out.status.success(), "{:?}", out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("incompatible"),
        "{out:?}"
    );

    // No daemon: an `iptables -F` stays until `plumb restore`.
    daemon.stop();
    host(&lab, "iptables -F");
    assert!(rules(&lab, "DOCKER-USER").is_empty());
    lab.ok(&["restore"]);
    let user = rules(&lab, "DOCKER-USER");
    assert!(user.len() == 2 && once_each(&user, &want), "{user:#?}");
    host(&lab, "iptables -I FORWARD -j DOCKER-USER");
    assert!(lab.ping(&a, "10.81.0.1"));
}

/// A host where nothing ever used iptables: plumb works and makes no
/// `filter` table of iptables', neither by itself nor through its daemon.
#[test]
fn plumb_makes_no_filter_table_where_there_is_none() {
    let lab = Lab::new("ipnone");
    lab.upstream("10.82.0");
    let daemon = lab.daemon(&[]);
    lab.ok(&[
        "network",
        "create",
        "solo",
        "--subnet",
        "10.42.0.0/24",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.82.0.1",
    ]);
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "solo"]);
    assert!(lab.ping(&a, "10.42.0.1"), "to its gateway");
    assert!(lab.ping(&a, "10.82.0.1"), "out through NAT");
    let repairs = firewall_repairs(&daemon);
    daemon_loops(&lab, egress_rule(&lab, "solo"), 3);
    assert_eq!(firewall_repairs(&daemon), repairs, "{}", daemon.log_text());
    let tables = host(&lab, "nft list tables");
    assert!(tables.contains("table inet plumb"), "{tables}");
    assert!(
        !tables.contains("table ip filter") && !tables.contains("table ip6 filter"),
        "{tables}"
    );
    assert_eq!(
        host(&lab, "cat /proc/net/ip_tables_names").trim(),
        "",
        "no legacy table either"
    );
}

/// A legacy (x_tables) host without Docker: the accepts go into the
/// legacy FORWARD, are what lets a container through its DROP, come back
/// with `plumb restore`, and go with the network.
#[test]
fn a_legacy_host_gets_the_accepts_in_its_legacy_forward() {
    let lab = Lab::new("ipleg");
    lab.upstream("10.83.0");
    host(&lab, "iptables-legacy -P FORWARD DROP");
    assert_eq!(host(&lab, "cat /proc/net/ip_tables_names").trim(), "filter");
    lab.ok(&["network", "create", "lnet", "--subnet", "10.43.0.0/24"]);
    let want: Vec<String> = accepts("lnet", &bridge_of(&lab, "lnet")).into();
    let forward = rules_with(&lab, "iptables-legacy", "FORWARD");
    assert!(
        forward.len() == 2 && once_each(&forward, &want),
        "{forward:#?}"
    );
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "lnet"]);
    assert!(lab.ping(&a, "10.83.0.1"), "through the legacy DROP");

    // It is the legacy accepts that let it through.
    for rule in &want {
        host(&lab, &format!("iptables-legacy -D FORWARD {rule}"));
    }
    assert!(!lab.ping(&a, "10.83.0.1"), "the legacy DROP drops");
    lab.ok(&["restore"]);
    let forward = rules_with(&lab, "iptables-legacy", "FORWARD");
    assert!(
        forward.len() == 2 && once_each(&forward, &want),
        "{forward:#?}"
    );
    assert!(lab.ping(&a, "10.83.0.1"));
    // Docker's chain, legacy style: restore moves them there.
    host(&lab, "iptables-legacy -N DOCKER-USER");
    host(&lab, "iptables-legacy -I FORWARD -j DOCKER-USER");
    lab.ok(&["restore"]);
    let user = rules_with(&lab, "iptables-legacy", "DOCKER-USER");
    assert!(user.len() == 2 && once_each(&user, &want), "{user:#?}");
    let forward = rules_with(&lab, "iptables-legacy", "FORWARD");
    assert_eq!(forward, ["-j DOCKER-USER"]);
    assert!(lab.ping(&a, "10.83.0.1"));
    // iptables-nft's side got nothing: no ip filter table there.
    assert!(!host(&lab, "nft list tables").contains("table ip filter"));

    lab.ok(&["detach", &a]);
    lab.ok(&["network", "rm", "lnet"]);
    let left = legacy_saved(&lab);
    assert_eq!(plumbs(&left), 0, "{left:#?}");
    assert_eq!(
        host(&lab, "iptables-legacy -S FORWARD").lines().next(),
        Some("-P FORWARD DROP")
    );
}

/// Another program holds the xtables lock: the network is made anyway
/// (plumb's own table is right), the failure is said on stderr, and the
/// accepts follow once the lock is free: from the daemon, else from
/// `plumb restore`.
///
/// The lock is a private file named by `XTABLES_LOCKFILE`, which the
/// legacy tools read instead of `/run/xtables.lock` and plumb passes on:
/// the machine's own iptables users are never blocked.
#[test]
fn a_held_xtables_lock_delays_the_legacy_accepts_and_nothing_else() {
    let lab = Lab::new("iplock");
    host(&lab, "iptables-legacy -P FORWARD DROP");
    let lock = lab.state.path().join("xtables.lock");
    let env = [("XTABLES_LOCKFILE", lock.as_os_str())];
    let daemon = lab.daemon_with_env(&[], &env);
    let plumb_locked = |args: &[&str]| {
        let start = Instant::now();
        let out = lab
            .command(args)
            .env("XTABLES_LOCKFILE", &lock)
            .output()
            .expect("run plumb");
        (out, start.elapsed())
    };
    let (out, _) = plumb_locked(&["network", "create", "first", "--subnet", "10.46.0.0/24"]);
    assert!(out.status.success(), "{out:?}");
    let first: Vec<String> = accepts("first", &bridge_of(&lab, "first")).into();

    let held = HeldLock::hold(&lock);
    let (out, took) = plumb_locked(&["network", "create", "second", "--subnet", "10.47.0.0/24"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(
        err.contains("iptables-legacy-restore") && err.contains("xtables lock"),
        "a warning naming the tool and the lock: {err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let second: Vec<String> = accepts("second", &bridge_of(&lab, "second")).into();
    let table = host(&lab, "nft list table inet plumb");
    assert!(table.contains("pl-second"), "{table}");
    let saved = legacy_saved(&lab);
    assert_eq!(plumbs(&saved), 2, "only the first network's: {saved:#?}");
    drop(held);
    wait_until("the daemon to add the second network's accepts", 15, || {
        let saved: Vec<String> = legacy_saved(&lab)
            .into_iter()
            .filter_map(|l| l.strip_prefix("-A FORWARD ").map(String::from))
            .collect();
        saved.len() == 4 && once_each(&saved, &first) && once_each(&saved, &second)
    });
    drop(daemon);

    // No daemon: restore, once the lock is free.
    let held = HeldLock::hold(&lock);
    let (out, _) = plumb_locked(&["network", "create", "third", "--subnet", "10.48.0.0/24"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xtables lock"),
        "{out:?}"
    );
    assert_eq!(plumbs(&legacy_saved(&lab)), 4);
    drop(held);
    let (out, _) = plumb_locked(&["restore"]);
    assert!(out.status.success(), "{out:?}");
    let third: Vec<String> = accepts("third", &bridge_of(&lab, "third")).into();
    let saved: Vec<String> = legacy_saved(&lab)
        .into_iter()
        .filter_map(|l| l.strip_prefix("-A FORWARD ").map(String::from))
        .collect();
    assert_eq!(saved.len(), 6, "{saved:#?}");
    assert!(once_each(&saved, &first) && once_each(&saved, &second) && once_each(&saved, &third));
}

/// The handle of `inet plumb`: a table deleted and made again gets a new
/// one.
fn plumb_table_handle(lab: &Lab) -> String {
    host(lab, "nft -a list table inet plumb")
        .lines()
        .next()
        .and_then(|l| l.rsplit_once("# handle "))
        .map(|(_, h)| h.trim().to_string())
        .expect("inet plumb and its handle")
}

/// The legacy accepts cannot be written, and that lasts (here a stand-in
/// iptables-legacy-restore that always fails, as the real one does while
/// another program holds the xtables lock, or when the kernel lacks
/// xt_comment for x_tables): the daemon says so, and otherwise leaves
/// plumb's nftables table, which is in place, alone; it does not claim to
/// have restored anything.
#[test]
fn a_lasting_legacy_failure_does_not_make_the_daemon_rewrite_its_table() {
    let lab = Lab::new("iplegfail");
    lab.upstream("10.86.0");
    host(&lab, "iptables-legacy -P FORWARD DROP");
    lab.ok(&[
        "network",
        "create",
        "stuck",
        "--subnet",
        "10.49.0.0/24",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.86.0.1",
    ]);
    let want: Vec<String> = accepts("stuck", &bridge_of(&lab, "stuck")).into();
    let tick = egress_rule(&lab, "stuck");
    let bin = lab.state.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("iptables-legacy-restore");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'iptables-legacy-restore: line 2 failed' >&2\nexit 1\n",
    )
    .unwrap();
    must(&format!("chmod +x {}", fake.display()));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let daemon = lab.daemon_with_env(&[], &[("PATH", std::ffi::OsStr::new(&path))]);
    // One accept goes; the daemon tries, and cannot put it back.
    let tried = || daemon.log_text().matches("line 2 failed").count();
    let before = tried();
    host(&lab, &format!("iptables-legacy -D FORWARD {}", want[0]));
    wait_until("the daemon to try the legacy accepts", 5, || {
        tried() > before
    });
    let table = plumb_table_handle(&lab);
    let repairs = firewall_repairs(&daemon);
    daemon_loops(&lab, tick, 3);
    let log = daemon.log_text();
    assert_eq!(
        plumb_table_handle(&lab),
        table,
        "inet plumb was in place, yet made again at every loop: {log}"
    );
    assert_eq!(
        firewall_repairs(&daemon),
        repairs,
        "nothing was restored, yet the daemon says so: {log}"
    );
}

/// netavark (Podman's, iptables driver) beside plumb's daemon on a host
/// with FORWARD DROP: its setup, its container's address, its teardown
/// and iptables-save all work, and plumb's accepts stay as they were.
#[test]
fn netavark_sets_up_and_tears_down_beside_the_daemon() {
    let lab = Lab::new("ipnv");
    lab.upstream("10.84.0");
    let daemon = lab.daemon(&[]);
    host(&lab, "iptables -P FORWARD DROP");
    lab.ok(&[
        "network",
        "create",
        "pnet",
        "--subnet",
        "10.44.0.0/24",
        "--egress-interface",
        "uplink0",
        "--egress-gateway",
        "10.84.0.1",
    ]);
    let want: Vec<String> = accepts("pnet", &bridge_of(&lab, "pnet")).into();
    let tick = egress_rule(&lab, "pnet");
    let p = lab.netns("p");
    lab.ok(&["attach", &p, "pnet"]);
    assert!(once_each(&rules(&lab, "FORWARD"), &want));

    let nv = lab.netns("nv");
    let config = lab.state.path().join("netavark");
    std::fs::create_dir_all(&config).unwrap();
    let opts = serde_json::json!({
        "container_id": "c".repeat(64),
        "container_name": nv,
        "networks": {"nvnet": {"interface_name": "eth0", "static_ips": ["10.89.44.2"]}},
        "port_mappings": [{
            "host_ip": "", "container_port": 80, "host_port": 8085, "range": 1, "protocol": "tcp",
        }],
        "network_info": {"nvnet": {
            "name": "nvnet", "id": "a".repeat(64), "driver": "bridge",
            "network_interface": "nvbr0",
            "subnets": [{"subnet": "10.89.44.0/24", "gateway": "10.89.44.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false,
        }},
    })
    .to_string();
    let (ok, stdout, stderr) = netavark(&lab, "setup", &config, &nv, &opts);
    assert!(ok, "netavark setup failed: {stdout}{stderr}");
    assert!(stdout.contains("\"ipnet\":\"10.89.44.2/24\""), "{stdout}");
    let addr = must(&format!("ip -n {nv} -4 addr show eth0"));
    assert!(addr.contains("inet 10.89.44.2/24"), "{addr}");
    assert!(
        lab.ping(&nv, "10.89.44.1"),
        "netavark's container to its gateway"
    );
    assert!(lab.ping(&nv, "10.84.0.1"), "and out, through the DROP");
    assert!(lab.ping(&p, "10.84.0.1"), "plumb's container too");
    // The host port netavark forwards is not plumb's to take.
    let q = lab.netns("q");
    let err = lab.fails(&["attach", &q, "pnet", "--publish", "8085:80"]);
    assert!(err.contains("netavark's (Podman's) DNAT rule"), "{err}");
    assert_eq!(common::links(&q), vec!["lo"]);

    // netavark's jump now heads FORWARD; the daemon leaves both alone.
    let forward = rules(&lab, "FORWARD");
    assert!(
        forward.iter().any(|r| r.contains("NETAVARK_FORWARD")),
        "{forward:#?}"
    );
    let repairs = firewall_repairs(&daemon);
    daemon_loops(&lab, tick, 3);
    assert_eq!(firewall_repairs(&daemon), repairs, "{}", daemon.log_text());
    let forward = rules(&lab, "FORWARD");
    assert!(
        once_each(&forward, &want) && plumbs(&forward) == 2,
        "{forward:#?}"
    );
    assert!(
        sh(&format!("ip netns exec {} iptables-save", lab.host))
            .status
            .success()
    );

    let (ok, stdout, stderr) = netavark(&lab, "teardown", &config, &nv, &opts);
    assert!(ok, "netavark teardown failed: {stdout}{stderr}");
    assert!(!common::links(&nv).iter().any(|l| l == "eth0"));
    let out = sh(&format!("ip netns exec {} iptables-save", lab.host));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("plumb network pnet")
            .count(),
        2
    );
    assert!(lab.ping(&p, "10.84.0.1"));
}

/// netavark issue 1045 end to end: a UDP flow keeps coming to a published
/// port; its container goes and another publishes the port: the flow
/// reaches the new one within seconds (its conntrack entry, which held the
/// old translation, was deleted).
fn a_udp_flow_follows_its_port(tag: &str, with_daemon: bool) {
    let lab = Lab::new(tag);
    let client = lab.upstream("10.85.0");
    let _daemon = with_daemon.then(|| lab.daemon(&[]));
    lab.ok(&["network", "create", "u", "--subnet", "10.45.0.0/24"]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    // Different addresses: a stale translation to A's must not reach B.
    lab.ok(&[
        "attach",
        &a,
        "u",
        "--ip",
        "10.45.0.10",
        "--publish",
        "5300:5300/udp",
    ]);
    let (rx_a, got_a) = udp_receiver(&a, 5300);
    let (tx, source) = udp_sender(&client, "10.85.0.1", "10.85.0.2:5300");
    wait_until("A to receive the flow", 10, || {
        got_a.count.load(Ordering::SeqCst) >= 3
    });
    let entries = || host(&lab, "conntrack -L -p udp --dport 5300 2>/dev/null");
    let ct = entries();
    assert!(
        ct.contains(&format!("sport={}", source.port())) && ct.contains("src=10.45.0.10"),
        "{ct}"
    );

    lab.ok(&["detach", &a]);
    drop(rx_a);
    lab.ok(&[
        "attach",
        &b,
        "u",
        "--ip",
        "10.45.0.20",
        "--publish",
        "5300:5300/udp",
    ]);
    let (_rx_b, got_b) = udp_receiver(&b, 5300);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(5);
    while got_b.count.load(Ordering::SeqCst) < 3 {
        assert!(
            Instant::now() < deadline,
            "B got nothing of the flow in 5 s; conntrack:\n{}",
            entries()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sources = got_b.sources.lock().unwrap().clone();
    assert!(
        sources.iter().all(|s| *s == source),
        "the same flow, from {source}: {sources:?}"
    );
    let ct = entries();
    assert!(
        ct.contains(&format!("sport={}", source.port())) && ct.contains("src=10.45.0.20"),
        "the entry leads to B: {ct}"
    );
    assert!(!ct.contains("src=10.45.0.10"), "none to A: {ct}");
    drop(tx);
}

#[test]
fn a_udp_flow_follows_its_published_port_to_the_next_container() {
    a_udp_flow_follows_its_port("ipudp", false);
}

#[test]
fn a_udp_flow_follows_its_published_port_with_the_daemon() {
    a_udp_flow_follows_its_port("ipudpd", true);
}

/// `plumb doctor` says, per family, which backend holds the filter table,
/// whether Docker's chains are there, where plumb's accepts belong and
/// whether they are all in place, and when they are not.
#[test]
fn doctor_names_the_backend_and_where_the_accepts_stand() {
    let lab = Lab::new("ipdoc");
    let doctor = |lab: &Lab| -> serde_json::Value {
        serde_json::from_str(&lab.ok(&["doctor"])).expect("doctor prints JSON")
    };
    let family = |v: &serde_json::Value, name: &str| -> serde_json::Value {
        v["iptables"]
            .as_array()
            .expect("iptables: a list")
            .iter()
            .find(|f| f["family"] == name)
            .cloned()
            .expect("the family is reported")
    };
    lab.ok(&["network", "create", "dnet", "--subnet", "10.46.0.0/24"]);
    let none = doctor(&lab);
    assert_eq!(family(&none, "ip")["backend"], "none", "{none:#}");
    assert_eq!(none["daemon"], false);

    host(&lab, "iptables -P FORWARD DROP");
    host(&lab, "iptables -N DOCKER-USER");
    lab.ok(&["restore"]);
    let ip = family(&doctor(&lab), "ip");
    assert_eq!(ip["backend"], "nftables", "{ip:#}");
    assert_eq!(ip["docker"], true);
    assert_eq!(ip["chain"], "DOCKER-USER");
    assert_eq!(
        (ip["accepts_wanted"].clone(), ip["accepts_found"].clone()),
        (2.into(), 2.into())
    );
    assert_eq!(ip["in_place"], true);
    // One taken away: not in place, and said so.
    let want = accepts("dnet", &bridge_of(&lab, "dnet"));
    host(&lab, &format!("iptables -D DOCKER-USER {}", want[0]));
    let ip = family(&doctor(&lab), "ip");
    assert_eq!(
        (ip["accepts_found"].clone(), ip["in_place"].clone()),
        (1.into(), false.into())
    );

    host(&lab, "iptables-legacy -P FORWARD DROP");
    lab.ok(&["restore"]);
    let ip = family(&doctor(&lab), "ip");
    assert_eq!(ip["backend"], "both", "{ip:#}");
    assert_eq!(ip["legacy_chain"], "FORWARD");
    assert_eq!(ip["accepts_found"], 4);
    assert_eq!(ip["in_place"], true);
}

/// A legacy host without the iptables-legacy tools (not on PATH): the
/// network is made, plumb's own table is right, and stderr says what is
/// missing and how to get it.
#[test]
fn a_legacy_host_without_the_legacy_tools_is_told_what_to_install() {
    let lab = Lab::new("ipnot");
    host(&lab, "iptables-legacy -P FORWARD DROP");
    let empty = tempfile::tempdir().expect("tempdir");
    let out = lab
        .command(&["network", "create", "nnet", "--subnet", "10.47.0.0/24"])
        .env("PATH", empty.path())
        .output()
        .expect("run plumb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("iptables-legacy-save") && stderr.contains("install the iptables package"),
        "{stderr}"
    );
    assert!(host(&lab, "nft list table inet plumb").contains("pl-nnet"));
    assert_eq!(plumbs(&legacy_saved(&lab)), 0);
    // With the tools back, restore adds them.
    lab.ok(&["restore"]);
    let want: Vec<String> = accepts("nnet", &bridge_of(&lab, "nnet")).into();
    let forward = rules_with(&lab, "iptables-legacy", "FORWARD");
    assert!(once_each(&forward, &want), "{forward:#?}");
}
