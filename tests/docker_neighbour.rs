//! Issue 14 end to end: plumb beside a real dockerd (tests/common/docker.rs)
//! in a lab's fake host, with the nftables and the legacy iptables backend.
//! plumb's accepts are plain iptables rules in `DOCKER-USER` (or at the
//! head of `FORWARD` before Docker made it), iptables' own tools keep
//! working, Docker keeps working, plumb's containers get through Docker's
//! `FORWARD` DROP, and published host ports are not shared with Docker or
//! any other program.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::docker::{Dockerd, INDEX_HTML};
use common::{Bg, Lab, in_netns, must, sh, tcp_say, wait_until};

/// The comment the daemon logs (at info) each time it rewrites plumb's
/// firewall state.
const REWROTE: &str = "restored plumb's nftables tables and iptables accepts";

/// Run `cmd` in the lab's fake host; its output, whatever the status.
fn host(lab: &Lab, cmd: &str) -> std::process::Output {
    lab.exec(&lab.host, cmd)
}

/// Run `cmd` in the lab's fake host; it must succeed; its stdout.
fn on_host(lab: &Lab, cmd: &str) -> String {
    must(&format!("ip netns exec {} {cmd}", lab.host))
}

/// Run a pipeline in the fake host under `bash -o pipefail`; it must
/// succeed. Returns stdout and stderr.
fn pipeline(lab: &Lab, cmd: &str) -> (String, String) {
    let out = sh(&format!(
        "ip netns exec {} bash -o pipefail -c '{cmd}'",
        lab.host
    ));
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {o}{e}",
        out.status
    );
    (o, e)
}

/// The bridge of plumb network `net`, from `network inspect`.
fn bridge_of(lab: &Lab, net: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", net])).expect("inspect JSON");
    v["Options"]["bridge"]
        .as_str()
        .unwrap_or_else(|| panic!("no Options.bridge in {v}"))
        .to_string()
}

/// The two accepts of a network, as `iptables -S CHAIN` prints them.
fn accept_lines(chain: &str, bridge: &str, net: &str) -> [String; 2] {
    ["-i", "-o"].map(|dir| {
        format!("-A {chain} {dir} {bridge} -m comment --comment \"plumb network {net}\" -j ACCEPT")
    })
}

/// What's wrong with `listing` (of `iptables -S CHAIN`) as the home of
/// the accepts of `nets` (network, bridge): each there exactly once,
/// before Docker's `-j RETURN`, and no other rule of plumb's. None if
/// nothing is.
fn accepts_problem(listing: &str, chain: &str, nets: &[(String, String)]) -> Option<String> {
    let lines: Vec<&str> = listing.lines().collect();
    let mut want = Vec::new();
    for (net, bridge) in nets {
        want.extend(accept_lines(chain, bridge, net));
    }
    let ours: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains("plumb"))
        .collect();
    let mut got: Vec<String> = ours.iter().map(|s| s.to_string()).collect();
    let mut sorted_want = want.clone();
    got.sort();
    sorted_want.sort();
    if got != sorted_want {
        return Some(format!(
            "plumb's rules in {chain} are {ours:#?}, want {want:#?}"
        ));
    }
    let ret = format!("-A {chain} -j RETURN");
    if let Some(r) = lines.iter().position(|l| *l == ret) {
        let last = lines.iter().rposition(|l| l.contains("plumb")).unwrap_or(0);
        if last > r {
            return Some("an accept comes after Docker's RETURN".to_string());
        }
    }
    None
}

/// Poll until `iptables -S CHAIN` (with `tool`) holds exactly the accepts
/// of `nets`.
fn wait_accepts(lab: &Lab, tool: &str, chain: &str, nets: &[(String, String)], secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let listing = on_host(lab, &format!("{tool} -S {chain}"));
        match accepts_problem(&listing, chain, nets) {
            None => return,
            Some(p) => assert!(
                Instant::now() < deadline,
                "after {secs} s: {p}\n{tool} -S {chain}:\n{listing}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tool -S CHAIN` holds no rule of plumb's.
fn assert_none_in(lab: &Lab, tool: &str, chain: &str) {
    let listing = on_host(lab, &format!("{tool} -S {chain}"));
    assert!(
        !listing.contains("plumb"),
        "{tool} -S {chain} should hold none of plumb's rules:\n{listing}"
    );
}

/// `iptables-save` reads every table (no "incompatible" table, which
/// iptables-nft says of rules it cannot read back) and both families'
/// saves are accepted by their restore tools.
fn assert_iptables_tools_work(lab: &Lab) {
    let save = host(lab, "iptables-save");
    let (out, err) = (
        String::from_utf8_lossy(&save.stdout),
        String::from_utf8_lossy(&save.stderr),
    );
    assert!(save.status.success(), "iptables-save failed: {out}{err}");
    assert!(
        !out.contains("incompatible") && !err.contains("incompatible"),
        "iptables-save cannot read a table:\n{out}{err}"
    );
    assert!(out.contains("plumb network"), "no accepts saved:\n{out}");
    pipeline(lab, "iptables-save | iptables-restore --test");
    let (_, err6) = pipeline(lab, "ip6tables-save | ip6tables-restore --test");
    assert!(!err6.contains("incompatible"), "{err6}");
}

/// A TCP server in `ns` answering every connection with the peer's
/// address as it saw it; stopped on drop.
struct Echo {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &str, bind: &str) -> Echo {
        let listener = in_netns(ns, || TcpListener::bind(bind).expect("bind in netns"));
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(peer.ip().to_string().as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Echo {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wait until `ns` reaches the echo server at `ip` and is seen as `seen`.
fn wait_reaches(ns: &str, ip: &str, echo: &Echo, seen: &str, what: &str) {
    let addr: SocketAddr = format!("{ip}:{}", echo.port).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let last = match tcp_say(ns, &addr.to_string()) {
            Ok(s) if s == seen => return,
            Ok(s) => format!("seen as {s}, want {seen}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{what}: {ns} does not reach {addr}: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetch `url` from inside `ns`; None on failure. (Busybox 1.35's
/// `wget -T` segfaults, hence `timeout`.)
fn fetch(lab: &Lab, ns: &str, url: &str) -> Option<String> {
    let out = lab.exec(ns, &format!("timeout 5 busybox wget -q -O - {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_page(lab: &Lab, ns: &str, url: &str) {
    wait_until(&format!("{url} to serve the page in {ns}"), 15, || {
        fetch(lab, ns, url).as_deref() == Some(INDEX_HTML)
    });
}

/// A busybox web server in a Docker container publishing `port`.
fn docker_web(docker: &Dockerd, name: &str, port: u16, network: Option<&str>) {
    let publish = format!("{port}:80");
    let mut args = vec!["run", "-d", "--name", name, "--stop-timeout", "1"];
    if let Some(n) = network {
        args.extend(["--network", n]);
    }
    args.extend([
        "-p",
        &publish,
        docker.image(),
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    docker.must(&args);
}

/// Whether something listens on TCP `port` in the fake host.
fn listening(lab: &Lab, port: u16) -> bool {
    bound(lab, "t", port)
}

/// Whether a socket of `ss`'s kind (`t` listening TCP, `u` UDP) holds
/// `port` in the fake host.
fn bound(lab: &Lab, kind: &str, port: u16) -> bool {
    !on_host(lab, &format!("ss -Hl{kind}n sport = :{port}"))
        .trim()
        .is_empty()
}

/// How many times the daemon rewrote plumb's firewall state so far.
fn rewrites(daemon: &Bg) -> usize {
    daemon.log_text().matches(REWROTE).count()
}

/// Create plumb network `name` with `args`; (name, bridge).
fn network(lab: &Lab, name: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["network", "create", name];
    all.extend(args);
    lab.ok(&all);
    (name.to_string(), bridge_of(lab, name))
}

/// Whether host port `port` is in plumb's nftables table (its publish maps).
fn published(lab: &Lab, port: u16) -> bool {
    on_host(lab, "nft list table inet plumb").contains(&format!(" {port} : "))
}

/// plumb's attachments, as `ls --json` prints them.
fn attachments(lab: &Lab) -> String {
    lab.ok(&["ls", "--json"])
}

#[test]
fn nft_docker_host_keeps_iptables_tools_docker_and_plumb_working() {
    let lab = Lab::new("dnb");
    let up = lab.upstream("10.91.0");
    let docker = Dockerd::start(&lab, false);
    // Docker leaves IPv6 alone here (no --ip6tables): a DROP of another
    // tool's in ip6 filter, where the accepts go to the head of FORWARD.
    on_host(&lab, "ip6tables -P FORWARD DROP");

    let nets = [
        network(&lab, "natnet", &["--subnet", "10.41.0.0/24"]),
        network(
            &lab,
            "rtnet",
            &["--mode", "routed", "--subnet", "10.42.0.0/24"],
        ),
        network(
            &lab,
            "brnet",
            &["--mode", "bridged", "--subnet", "10.43.0.0/24"],
        ),
    ];
    let (a, r, b) = (lab.netns("a"), lab.netns("r"), lab.netns("b"));
    lab.ok(&["attach", &a, "natnet"]);
    lab.ok(&["attach", &r, "rtnet"]);
    lab.ok(&["attach", &b, "brnet"]);
    let ip_r = lab.ip_of(&r, "rtnet");
    // Upstream routes the routed network back through the host.
    must(&format!("ip -n {up} route add 10.42.0.0/24 via 10.91.0.2"));
    let echo = Echo::start(&up, "10.91.0.1:0");

    // Docker keeps working: a user network, a published port.
    docker.must(&["network", "create", "dnet"]);
    docker_web(&docker, "web", 8080, Some("dnet"));

    let check = |phase: &str| {
        wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 5);
        assert_none_in(&lab, "iptables", "FORWARD");
        wait_accepts(&lab, "ip6tables", "FORWARD", &nets, 5);
        assert_iptables_tools_work(&lab);
        // Through the host and Docker's userland proxy; from upstream
        // through Docker's DNAT and its FORWARD chains.
        wait_page(&lab, &lab.host, "http://127.0.0.1:8080/");
        wait_page(&lab, &up, "http://10.91.0.2:8080/");
        let ping = docker.docker(&["exec", "web", "ping", "-c1", "-W2", "10.91.0.1"]);
        assert!(
            ping.status.success(),
            "{phase}: a Docker container reaches upstream: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        // plumb's containers get through Docker's FORWARD DROP.
        wait_reaches(&a, "10.91.0.1", &echo, "10.91.0.2", phase);
        wait_reaches(&r, "10.91.0.1", &echo, &ip_r, phase);
    };
    assert!(
        on_host(&lab, "iptables -S FORWARD").contains("-P FORWARD DROP"),
        "Docker set FORWARD's policy to DROP"
    );
    check("without a daemon");

    let daemon = lab.daemon(&[]);
    check("with the daemon");

    // A full save and restore: the accepts read back as they were, and the
    // daemon finds nothing to rewrite.
    let before = on_host(&lab, "iptables -S");
    let before6 = on_host(&lab, "ip6tables -S");
    let rewrites_before = rewrites(&daemon);
    pipeline(&lab, "iptables-save | iptables-restore");
    pipeline(&lab, "ip6tables-save | ip6tables-restore");
    let handles = on_host(&lab, "nft -a list chain ip filter DOCKER-USER");
    let handles6 = on_host(&lab, "nft -a list chain ip6 filter FORWARD");
    assert_eq!(
        on_host(&lab, "iptables -S"),
        before,
        "iptables-restore gave back what iptables-save saved"
    );
    assert_eq!(on_host(&lab, "ip6tables -S"), before6, "the same for IPv6");
    // Absence of an event: watch the daemon for a few of its half-second
    // rounds.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            rewrites(&daemon),
            rewrites_before,
            "the daemon rewrote plumb's state after a plain save and restore:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        on_host(&lab, "nft -a list chain ip filter DOCKER-USER"),
        handles,
        "DOCKER-USER was rewritten after the restore"
    );
    assert_eq!(
        on_host(&lab, "nft -a list chain ip6 filter FORWARD"),
        handles6,
        "ip6 FORWARD was rewritten after the restore"
    );
    check("after iptables-save | iptables-restore");
    drop(daemon);
}

#[test]
fn dockerd_restart_with_the_daemon_running() {
    let lab = Lab::new("dnr");
    let up = lab.upstream("10.92.0");
    let mut docker = Dockerd::start(&lab, false);
    let nets = [network(&lab, "natnet", &["--subnet", "10.44.0.0/24"])];
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "natnet"]);
    let echo = Echo::start(&up, "10.92.0.1:0");
    let daemon = lab.daemon(&[]);
    wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 5);
    wait_reaches(&a, "10.92.0.1", &echo, "10.92.0.2", "before the restart");

    docker.restart();
    wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 10);
    assert_none_in(&lab, "iptables", "FORWARD");
    assert!(
        on_host(&lab, "iptables -S FORWARD").contains("-A FORWARD -j DOCKER-USER"),
        "Docker's jump to DOCKER-USER"
    );
    wait_reaches(&a, "10.92.0.1", &echo, "10.92.0.2", "after the restart");

    // Someone flushes DOCKER-USER: the daemon puts the accepts back.
    on_host(&lab, "iptables -F DOCKER-USER");
    wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 5);
    wait_reaches(&a, "10.92.0.1", &echo, "10.92.0.2", "after iptables -F");

    // A rule the user inserts above them stays above them.
    let mine = "-A DOCKER-USER -s 192.0.2.1/32 -j DROP";
    on_host(&lab, "iptables -I DOCKER-USER -s 192.0.2.1 -j DROP");
    let rewrites_before = rewrites(&daemon);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let listing = on_host(&lab, "iptables -S DOCKER-USER");
        let first = listing.lines().nth(1).unwrap_or_default();
        assert_eq!(first, mine, "the user's rule stays first:\n{listing}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rewrites(&daemon), rewrites_before, "{}", daemon.log_text());

    // Another network, made and removed, while the user's rule is there:
    // its accepts come and go, and the user's rule stays above them.
    let mut more = nets.to_vec();
    more.push(network(&lab, "second", &["--subnet", "10.50.0.0/24"]));
    wait_accepts(&lab, "iptables", "DOCKER-USER", &more, 5);
    let listing = on_host(&lab, "iptables -S DOCKER-USER");
    assert_eq!(
        listing.lines().nth(1).unwrap_or_default(),
        mine,
        "the user's rule stays above plumb's accepts when a network is made:\n{listing}"
    );
    lab.ok(&["network", "rm", "second"]);
    wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 5);
    let listing = on_host(&lab, "iptables -S DOCKER-USER");
    assert_eq!(
        listing.lines().nth(1).unwrap_or_default(),
        mine,
        "the user's rule stays above plumb's accepts when a network is removed:\n{listing}"
    );
    drop(daemon);
}

#[test]
fn accepts_move_from_forward_to_docker_user_when_dockerd_starts_later() {
    let lab = Lab::new("dno");
    let up = lab.upstream("10.93.0");
    // A FORWARD chain (and a DROP) before Docker: the accepts go to its head.
    lab.docker_forward_drop();
    on_host(&lab, "iptables -A FORWARD -s 192.0.2.2 -j DROP");
    let nets = [network(&lab, "natnet", &["--subnet", "10.46.0.0/24"])];
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "natnet"]);
    let forward = on_host(&lab, "iptables -S FORWARD");
    let rules: Vec<&str> = forward.lines().filter(|l| l.starts_with("-A")).collect();
    let want = accept_lines("FORWARD", &nets[0].1, "natnet");
    assert_eq!(
        rules,
        [
            want[0].as_str(),
            want[1].as_str(),
            "-A FORWARD -s 192.0.2.2/32 -j DROP"
        ],
        "accepts at the head of FORWARD"
    );
    let echo = Echo::start(&up, "10.93.0.1:0");
    wait_reaches(&a, "10.93.0.1", &echo, "10.93.0.2", "before Docker");

    let daemon = lab.daemon(&[]);
    let _docker = Dockerd::start(&lab, false);
    wait_accepts(&lab, "iptables", "DOCKER-USER", &nets, 5);
    wait_until("the accepts to leave FORWARD", 5, || {
        !on_host(&lab, "iptables -S FORWARD").contains("plumb")
    });
    assert_iptables_tools_work(&lab);
    wait_reaches(&a, "10.93.0.1", &echo, "10.93.0.2", "after Docker started");
    drop(daemon);
}

#[test]
fn host_ports_are_not_shared_with_docker_or_other_programs() {
    let lab = Lab::new("dnp");
    let docker = Dockerd::start(&lab, false);
    lab.ok(&["network", "create", "natnet", "--subnet", "10.45.0.0/24"]);

    // Docker first: plumb refuses, naming Docker's proxy or DNAT rule.
    docker_web(&docker, "web91", 8091, None);
    wait_until("docker-proxy to listen on 8091", 10, || {
        listening(&lab, 8091)
    });
    let p1 = lab.netns("p1");
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8091:80"]);
    assert!(
        err.contains("8091")
            && (err.contains("docker-proxy (pid ") || err.contains("Docker's DNAT rule in ip nat")),
        "the refusal names Docker: {err}"
    );
    assert_eq!(attachments(&lab).trim(), "[]", "nothing attached");
    assert!(!published(&lab, 8091), "8091 is not in plumb's maps");
    assert!(
        !common::links(&p1).iter().any(|l| l != "lo"),
        "no interface left in {p1}: {:?}",
        common::links(&p1)
    );

    // A UDP port Docker publishes.
    docker.must(&[
        "run",
        "-d",
        "--name",
        "udp97",
        "--stop-timeout",
        "1",
        "-p",
        "8097:53/udp",
        docker.image(),
        "sleep",
        "300",
    ]);
    wait_until("docker-proxy to bind 8097/udp", 10, || {
        bound(&lab, "u", 8097)
    });
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8097:53/udp"]);
    assert!(
        err.contains("8097")
            && (err.contains("docker-proxy (pid ") || err.contains("Docker's DNAT rule in ip nat")),
        "the UDP refusal names Docker: {err}"
    );

    // A DNAT rule of Docker's with no socket behind it.
    on_host(
        &lab,
        "iptables -t nat -A DOCKER ! -i docker0 -p tcp --dport 8096 \
         -j DNAT --to-destination 172.31.250.9:80",
    );
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8096:80"]);
    assert!(
        err.contains("8096") && err.contains("Docker's DNAT rule in ip nat DOCKER"),
        "the refusal names Docker's DNAT rule: {err}"
    );
    assert_eq!(attachments(&lab).trim(), "[]", "nothing attached");

    // A plain program's socket: refused, naming it.
    let python = lab.spawn_in(
        &lab.host,
        "/usr/bin/python3 -c 'import socket, time; s = socket.socket(); \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
         s.bind((\"0.0.0.0\", 8095)); s.listen(); time.sleep(300)'",
        "python.log",
    );
    let py_pid = python.child.id();
    wait_until("python3 to listen on 8095", 10, || listening(&lab, 8095));
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8095:80"]);
    assert!(
        err.contains(&format!("python3 (pid {py_pid})")),
        "the refusal names python3 (pid {py_pid}): {err}"
    );
    assert_eq!(attachments(&lab).trim(), "[]", "nothing attached");

    // plumb first, with a daemon: it holds the port, Docker is refused.
    let mut daemon = lab.daemon(&[]);
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8095:80"]);
    assert!(
        err.contains(&format!("python3 (pid {py_pid})")),
        "through the daemon too: {err}"
    );
    let p2 = lab.netns("p2");
    let out = lab.plumb(&["attach", &p2, "natnet", "--publish", "8092:80"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attach with --publish 8092: {stderr}");
    assert!(
        !stderr.contains("no plumb daemon"),
        "a daemon runs, so no warning: {stderr}"
    );
    assert!(published(&lab, 8092), "8092 is in plumb's maps");
    wait_until("the daemon to hold 8092", 5, || listening(&lab, 8092));
    // `docker run -p` on a port plumb's daemon holds fails.
    let refused = |name: &str, publish: &str, cmd: &[&str]| {
        let out = docker.docker(
            &[
                &["run", "-d", "--name", name, "-p", publish, docker.image()],
                cmd,
            ]
            .concat(),
        );
        let derr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (derr.contains("address already in use")
                    || derr.contains("port is already allocated")),
            "docker run -p {publish} should fail, the port is plumb's: {} {derr}",
            out.status
        );
        let _ = docker.docker(&["rm", "-f", name]);
    };
    refused(
        "web92",
        "8092:80",
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    // The same for UDP.
    let p4 = lab.netns("p4");
    lab.ok(&["attach", &p4, "natnet", "--publish", "8098:53/udp"]);
    wait_until("the daemon to hold 8098/udp", 5, || bound(&lab, "u", 8098));
    refused("udp98", "8098:53/udp", &["sleep", "300"]);

    // plumb on its own: it warns that the port is not held.
    daemon.stop();
    let p3 = lab.netns("p3");
    let out = lab.plumb(&["attach", &p3, "natnet", "--publish", "8093:80"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "attach with --publish 8093: {stderr}");
    assert!(
        stderr.contains("8093") && stderr.contains("no plumb daemon"),
        "the CLI warns that 8093 is not held: {stderr}"
    );
    // And the other way round without a daemon: still refused.
    let err = lab.fails(&["attach", &p1, "natnet", "--publish", "8091:80"]);
    assert!(err.contains("8091"), "{err}");

    // A daemon started later holds every published port again.
    let _daemon = lab.daemon(&[]);
    wait_until("a new daemon to hold 8092, 8093 and 8098/udp", 10, || {
        listening(&lab, 8092) && listening(&lab, 8093) && bound(&lab, "u", 8098)
    });
    drop(python);
}

#[test]
fn legacy_docker_host() {
    let lab = Lab::new("dnl");
    let up = lab.upstream("10.94.0");
    let docker = Dockerd::start(&lab, true);
    let nets = [network(&lab, "natnet", &["--subnet", "10.47.0.0/24"])];
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "natnet"]);

    let legacy = on_host(&lab, "iptables-legacy -S FORWARD");
    assert!(legacy.contains("-P FORWARD DROP"), "{legacy}");
    wait_accepts(&lab, "iptables-legacy", "DOCKER-USER", &nets, 5);
    assert_none_in(&lab, "iptables-legacy", "FORWARD");
    // Never `iptables` (nft) here: it would make the table checked for.
    let nft = host(&lab, "nft list table ip filter");
    assert!(
        !nft.status.success() || !String::from_utf8_lossy(&nft.stdout).contains("plumb"),
        "nft's ip filter holds plumb's accepts on a legacy host:\n{}",
        String::from_utf8_lossy(&nft.stdout)
    );

    let echo = Echo::start(&up, "10.94.0.1:0");
    wait_reaches(&a, "10.94.0.1", &echo, "10.94.0.2", "through legacy DROP");

    docker_web(&docker, "web", 8094, None);
    wait_until("docker-proxy to listen on 8094", 10, || {
        listening(&lab, 8094)
    });
    let b = lab.netns("b");
    let err = lab.fails(&["attach", &b, "natnet", "--publish", "8094:80"]);
    assert!(
        err.contains("8094")
            && (err.contains("docker-proxy (pid ")
                || err.contains("Docker's DNAT rule in iptables-legacy nat")),
        "the refusal names Docker: {err}"
    );
    assert!(!attachments(&lab).contains(&b), "{b} not attached");
    wait_page(&lab, &lab.host, "http://127.0.0.1:8094/");
    wait_page(&lab, &up, "http://10.94.0.2:8094/");

    // A legacy DNAT rule of Docker's with no socket behind it.
    on_host(
        &lab,
        "iptables-legacy -t nat -A DOCKER ! -i docker0 -p tcp --dport 8099 \
         -j DNAT --to-destination 172.31.250.9:80",
    );
    let err = lab.fails(&["attach", &b, "natnet", "--publish", "8099:80"]);
    assert!(
        err.contains("8099") && err.contains("Docker's DNAT rule in iptables-legacy nat DOCKER"),
        "the refusal names Docker's legacy DNAT rule: {err}"
    );

    // Networks made and removed: their accepts come and go.
    let mut more = nets.to_vec();
    more.push(network(&lab, "second", &["--subnet", "10.49.0.0/24"]));
    wait_accepts(&lab, "iptables-legacy", "DOCKER-USER", &more, 5);
    lab.ok(&["network", "rm", "second"]);
    wait_accepts(&lab, "iptables-legacy", "DOCKER-USER", &nets, 5);

    pipeline(
        &lab,
        "iptables-legacy-save | iptables-legacy-restore --test",
    );
    pipeline(
        &lab,
        "ip6tables-legacy-save | ip6tables-legacy-restore --test",
    );

    // The daemon re-checks the legacy accepts too.
    let daemon = lab.daemon(&[]);
    on_host(&lab, "iptables-legacy -F DOCKER-USER");
    wait_accepts(&lab, "iptables-legacy", "DOCKER-USER", &nets, 5);
    wait_reaches(
        &a,
        "10.94.0.1",
        &echo,
        "10.94.0.2",
        "after the daemon's repair",
    );
    let nft = host(&lab, "nft list table ip filter");
    assert!(
        !nft.status.success() || !String::from_utf8_lossy(&nft.stdout).contains("plumb"),
        "{}",
        String::from_utf8_lossy(&nft.stdout)
    );

    // A rule the user inserts above the accepts stays above them when a
    // network is made.
    on_host(&lab, "iptables-legacy -I DOCKER-USER -s 192.0.2.1 -j DROP");
    let mut more = nets.to_vec();
    more.push(network(&lab, "third", &["--subnet", "10.51.0.0/24"]));
    wait_accepts(&lab, "iptables-legacy", "DOCKER-USER", &more, 5);
    let listing = on_host(&lab, "iptables-legacy -S DOCKER-USER");
    assert_eq!(
        listing.lines().nth(1).unwrap_or_default(),
        "-A DOCKER-USER -s 192.0.2.1/32 -j DROP",
        "the user's rule stays above plumb's accepts when a network is made:\n{listing}"
    );
    drop(daemon);
}
