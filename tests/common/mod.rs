//! Fixtures for integration tests: every test gets its own fake "host"
//! namespace, its own state directory and its own namespace names, and
//! removes all of it on drop, even when the test fails.

#![allow(dead_code)]

pub mod cluster;
pub mod cni;
pub mod containerd;
pub mod docker;
pub mod podman;
pub mod readme;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The far address both ISPs of [`Lab::two_uplinks`] answer for.
pub const FAR: &str = "198.51.100.1";

/// The source address `isp` saw for a connection from `from` (as
/// [`in_netns`] takes it) to [`FAR`], or the connection's error (refused:
/// it went to the other ISP, which has no server on the port).
pub fn seen_at(isp: &str, from: &str) -> std::io::Result<String> {
    let (server, port) = peer_echo_server(isp, &format!("{FAR}:0"));
    let seen = tcp_say(from, &format!("{FAR}:{port}"));
    if seen.is_ok() {
        server.join().unwrap();
    }
    seen
}

pub struct Lab {
    /// Prefix of every namespace this lab owns (plumb-made ones included).
    pub prefix: String,
    pub host: String,
    pub state: tempfile::TempDir,
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

/// Run a shell command and insist that it succeeds.
pub fn must(cmd: &str) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line of dnsmasq's lease file: `EXPIRY MAC IP HOSTNAME CLIENTID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: String,
    pub ip: String,
    pub host: String,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("pt{}{}{}-", std::process::id() % 100000, tag, n);
        let host = format!("{prefix}host");
        must(&format!(
            "ip netns add {host} && ip -n {host} link set lo up"
        ));
        Lab {
            prefix,
            host,
            state: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A namespace name owned by this lab.
    pub fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Create a namespace owned by this lab, `lo` up.
    pub fn netns(&self, short: &str) -> String {
        let name = self.name(short);
        must(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        name
    }

    /// plumb with this lab's host namespace, state directory and socket.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plumb"));
        cmd.arg("--state-dir")
            .arg(self.state.path())
            .arg("--host-netns")
            .arg(&self.host)
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        cmd
    }

    /// Run plumb for this lab and wait for it.
    pub fn plumb(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run plumb")
    }

    /// This lab's daemon socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.state.path().join("plumbd.sock")
    }

    /// Start `plumb daemon` for this lab and wait until it answers.
    pub fn daemon(&self, args: &[&str]) -> Bg {
        self.daemon_with_env(args, &[])
    }

    /// The same with extra environment (the legacy iptables tools read
    /// `XTABLES_LOCKFILE` and are found on `PATH`).
    pub fn daemon_with_env(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Bg {
        let mut cmd = self.command(&["daemon"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args);
        // Docker's driver only where a test asks for it by name: they would
        // all want /run/docker/plugins/plumb.sock.
        if !args.contains(&"--docker-plugin") {
            cmd.args(["--docker-plugin", "none"]);
        }
        self.start_daemon(cmd)
    }

    /// Start `cmd`, a `plumb daemon` for this lab however it is wrapped
    /// (`unshare`, ...), logging to the lab's daemon.log, and wait until it
    /// answers.
    pub fn start_daemon(&self, mut cmd: Command) -> Bg {
        let log = self.state.path().join("daemon.log");
        let child = cmd
            .env("PLUMB_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon log"))
            .spawn()
            .expect("start plumb daemon");
        let mut bg = Bg {
            child,
            log: log.clone(),
        };
        let socket = self.socket();
        wait_until("the daemon to listen", 10, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
                || bg.child.try_wait().ok().flatten().is_some()
        });
        assert!(
            bg.child.try_wait().ok().flatten().is_none(),
            "plumb daemon exited: {}",
            bg.log_text()
        );
        bg
    }

    /// An "upstream" router for the fake host: its `uplink0` at
    /// `PREFIX.2/24`, namespace `up` at `PREFIX.1/24`, and the host's
    /// default route through it. Returns the namespace.
    pub fn upstream(&self, prefix: &str) -> String {
        let up = self.netns("up");
        self.wire(
            &self.host,
            "uplink0",
            Some(&format!("{prefix}.2/24")),
            &up,
            "eth0",
            Some(&format!("{prefix}.1/24")),
        );
        must(&format!(
            "ip -n {} route add default via {prefix}.1",
            self.host
        ));
        up
    }

    /// Two uplinks for the fake host, each to its own "ISP" namespace, both
    /// ISPs holding [`FAR`]: `wan1` (10.201.0.2/24, the default route) to
    /// isp1 at 10.201.0.1, `wan2` (10.202.0.2/24) to isp2 at 10.202.0.1.
    /// Which ISP sees a connection to FAR shows the uplink it left by.
    pub fn two_uplinks(&self) -> (String, String) {
        let isp1 = self.netns("isp1");
        let isp2 = self.netns("isp2");
        self.wire(
            &self.host,
            "wan1",
            Some("10.201.0.2/24"),
            &isp1,
            "eth0",
            Some("10.201.0.1/24"),
        );
        self.wire(
            &self.host,
            "wan2",
            Some("10.202.0.2/24"),
            &isp2,
            "eth0",
            Some("10.202.0.1/24"),
        );
        for isp in [&isp1, &isp2] {
            must(&format!("ip -n {isp} addr add {FAR}/32 dev lo"));
        }
        must(&format!(
            "ip -n {} route add default via 10.201.0.1",
            self.host
        ));
        (isp1, isp2)
    }

    /// The fake host's `nic1` (10.70.0.2/24), a veth standing in for a NIC,
    /// wired to a LAN namespace at 10.70.0.1, which it returns.
    pub fn nic_on_lan(&self) -> String {
        let lan = self.netns("lan");
        self.wire(
            &self.host,
            "nic1",
            Some("10.70.0.2/24"),
            &lan,
            "eth0",
            Some("10.70.0.1/24"),
        );
        lan
    }

    /// A stand-in LAN: a switch (bridge `br0` in namespace `lan`), one
    /// host on it (namespace `peer`, its `eth0` at `peer_addr`) and the fake
    /// host's `lan0` plugged in, with no address. Returns the peer.
    pub fn lan(&self, peer: &str, peer_addr: &str) -> String {
        let switch = self.netns("lan");
        must(&format!(
            "ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up"
        ));
        let peer = self.netns(peer);
        self.wire(&peer, "eth0", Some(peer_addr), &switch, "p-peer", None);
        self.wire(&self.host, "lan0", None, &switch, "p-host", None);
        must(&format!(
            "ip -n {switch} link set p-peer master br0 && ip -n {switch} link set p-host master br0"
        ));
        peer
    }

    /// What a reboot takes from the fake host: plumb's links (the veths
    /// take the containers' ends with them), host routes, every nftables
    /// table.
    pub fn reboot(&self) {
        let plumbs =
            |l: &String| l.starts_with("pl-") || l.starts_with("pv") || l.starts_with("pc");
        // A veth can go on its own meanwhile (its peer's namespace died).
        for link in self.host_links().iter().filter(|l| plumbs(l)) {
            let _ = sh(&format!("ip -n {} link del {link}", self.host));
        }
        wait_until("plumb's links gone from the host", 10, || {
            !self.host_links().iter().any(plumbs)
        });
        must(&format!("ip -n {} route flush proto static", self.host));
        must(&format!("ip netns exec {} nft flush ruleset", self.host));
    }

    /// What Docker leaves on a host: FORWARD policy DROP in iptables-nft's
    /// table.
    pub fn docker_forward_drop(&self) {
        must(&format!(
            "ip netns exec {} iptables -P FORWARD DROP",
            self.host
        ));
    }

    /// Run `cmd` in the background inside `ns`, its output in `log` (under
    /// the state directory); stopped when the handle drops.
    /// dnsmasq on namespace `server`'s `eth0` with `options` (ranges, DNS,
    /// router advertisements), its lease table in the state directory;
    /// returns once it listens on the DHCP port.
    /// A bridged network `name` on the LAN of [`Lab::lan`] (uplink `lan0`)
    /// whose containers take their addresses from the LAN's DHCP server;
    /// `extra` options added.
    pub fn dhcp_network(&self, name: &str, extra: &[&str]) {
        let mut args = vec![
            "network", "create", name, "--driver", "bridge", "--mode", "bridged", "--uplink",
            "lan0", "--ipam", "dhcp",
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// kea on LAN 192.168.70.0/24 (its server, in namespace `server`,
    /// 192.168.70.1, also the router), leasing `pool` for `valid` seconds
    /// (T1 = valid/4, T2 = valid/2), with an MTU of 1400 and option 121
    /// routes (10.99.0.0/16 via 192.168.70.254, and the default).
    pub fn kea(&self, server: &str, valid: u32, pool: &str) -> Bg {
        let dir = self.state.path();
        let conf = dir.join("kea.json");
        let config = serde_json::json!({"Dhcp4": {
            "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
            "lease-database": {"type": "memfile", "persist": true, "lfc-interval": 0,
                               "name": dir.join("kea-leases4.csv")},
            "valid-lifetime": valid, "renew-timer": valid / 4, "rebind-timer": valid / 2,
            // Authoritative: a request for an address it will not give is
            // answered with a NAK instead of silence.
            "authoritative": true,
            // kea 2.2 has no definition of option 121 yet: RFC 3442 bytes
            // for 10.99.0.0/16 via 192.168.70.254 and the default via .1.
            "option-def": [{"name": "classless-routes", "code": 121, "type": "binary", "space": "dhcp4"}],
            "subnet4": [{"id": 1, "subnet": "192.168.70.0/24",
                "pools": [{"pool": pool}],
                "option-data": [
                    {"name": "routers", "data": "192.168.70.1"},
                    {"name": "domain-name-servers", "data": "192.168.70.1"},
                    {"name": "interface-mtu", "data": "1400"},
                    {"name": "classless-routes", "code": 121, "csv-format": false,
                     "data": "100A63C0A846FE00C0A84601"}
                ]}],
            "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "INFO"}]
        }});
        std::fs::write(&conf, config.to_string()).expect("kea config");
        let bg = self.spawn_in(
            server,
            &format!(
                "env KEA_LOCKFILE_DIR={d} KEA_PIDFILE_DIR={d} kea-dhcp4 -c {}",
                conf.display(),
                d = dir.display()
            ),
            "kea.log",
        );
        wait_until("kea to listen", 10, || {
            std::fs::read_to_string(&bg.log)
                .unwrap_or_default()
                .contains("DHCP4_STARTED")
        });
        bg
    }

    /// The leases in the lease file of the lab's [`Lab::dnsmasq`].
    pub fn dnsmasq_leases(&self) -> Vec<Lease> {
        std::fs::read_to_string(self.state.path().join("dnsmasq.leases"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Some(Lease {
                    mac: w.get(1)?.to_lowercase(),
                    ip: w.get(2)?.to_string(),
                    host: w.get(3)?.to_string(),
                })
            })
            .collect()
    }

    /// dnsmasq with `options` in namespace `server`; what it logs
    /// (`--log-dhcp` included) goes to dnsmasq.log, not to a syslog the
    /// machine may not have.
    pub fn dnsmasq(&self, server: &str, options: &str) -> Bg {
        let leases = self.state.path().join("dnsmasq.leases");
        let bg = self.spawn_in(
            server,
            &format!(
                "dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
                 --interface=eth0 --bind-interfaces --except-interface=lo \
                 --dhcp-leasefile={} --pid-file= --log-facility=- {options}",
                leases.display()
            ),
            "dnsmasq.log",
        );
        wait_until("dnsmasq to listen", 10, || {
            self.exec(server, "ss -lun")
                .stdout
                .windows(3)
                .any(|w| w == b":67")
        });
        bg
    }

    pub fn spawn_in(&self, ns: &str, cmd: &str, log: &str) -> Bg {
        let log = self.state.path().join(log);
        let file = std::fs::File::create(&log).expect("log file");
        // `ip netns exec` and `sh -c exec` both exec: the child is `cmd`.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {cmd}")])
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn");
        Bg { child, log }
    }

    /// Run plumb and insist that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.plumb(args);
        assert!(
            out.status.success(),
            "plumb {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kill `plumb args` (an add) at each of its failpoints in turn, each
    /// time recovering with `plumb gc`; `listed` says how many of what it
    /// adds plumb lists, `none_left` checks the kernel holds nothing of it,
    /// and `remove` (plumb's arguments) takes a finished one away. A kill
    /// leaves all of it or none; all only after the last commit, when the
    /// add was done. The store is made before, its making not the add's.
    pub fn kill_add_at_every_failpoint(
        &self,
        args: &[&str],
        remove: &[&str],
        listed: impl Fn() -> usize,
        none_left: impl Fn(usize),
    ) {
        self.ok(&["ls"]);
        let trace = self.state.path().join("failpoints");
        let out = self
            .command(args)
            .env("PLUMB_FAILPOINT_TRACE", &trace)
            .output()
            .expect("run plumb");
        assert!(out.status.success(), "{args:?}");
        let points = std::fs::read_to_string(&trace).unwrap().lines().count();
        assert!(points >= 3, "a commit, the kernel, a commit: {points}");
        self.ok(remove);
        for n in 1..=points {
            let out = self
                .command(args)
                .env("PLUMB_FAILPOINT", n.to_string())
                .output()
                .expect("run plumb");
            assert!(!out.status.success(), "killed at failpoint {n}");
            self.ok(&["gc"]);
            match listed() {
                0 => none_left(n),
                1 => {
                    assert_eq!(n, points, "only a kill after the last commit leaves it");
                    self.ok(remove);
                }
                more => panic!("{more} listed after a kill at failpoint {n}"),
            }
        }
    }

    /// Run plumb, insist that it fails with exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.plumb(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(1),
            "plumb {args:?} should fail with exit code 1: {err}"
        );
        assert!(!err.contains("panicked"), "plumb {args:?} panicked: {err}");
        err
    }

    pub fn inspect(&self, target: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["inspect", target])).expect("inspect prints JSON")
    }

    /// The IPv4 address of `target` on `network`.
    pub fn ip_of(&self, target: &str, network: &str) -> String {
        self.inspect(target)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .expect("IPAddress")
            .to_string()
    }

    /// Run a command inside one of our namespaces (host included).
    pub fn exec(&self, ns: &str, cmd: &str) -> Output {
        sh(&format!("ip netns exec {ns} {cmd}"))
    }

    /// `dig` from namespace `ns` at `server`: the answer's records, or the
    /// status when there are none.
    pub fn dig(&self, ns: &str, server: &str, args: &str) -> String {
        let out = self.exec(
            ns,
            &format!("dig +time=2 +tries=2 +noall +answer +comments @{server} {args}"),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let answers: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().last().unwrap_or(""))
            .collect();
        if !answers.is_empty() {
            return answers.join(" ");
        }
        match text.split("status: ").nth(1) {
            Some(rest) => rest.split(',').next().unwrap_or("").to_string(),
            None => format!("no answer: {text}"),
        }
    }

    pub fn ping(&self, ns: &str, ip: &str) -> bool {
        self.exec(ns, &format!("ping -c1 -W2 {ip}"))
            .status
            .success()
    }

    /// Links in the fake host namespace (names only).
    pub fn host_links(&self) -> Vec<String> {
        links(&self.host)
    }

    /// A veth between two of our namespaces with addresses (CIDRs) on each end.
    pub fn wire(
        &self,
        a: &str,
        a_if: &str,
        a_addr: Option<&str>,
        b: &str,
        b_if: &str,
        b_addr: Option<&str>,
    ) {
        must(&format!(
            "ip link add {a_if} netns {a} type veth peer name {b_if} netns {b}"
        ));
        must(&format!(
            "ip -n {a} link set {a_if} up && ip -n {b} link set {b_if} up"
        ));
        if let Some(addr) = a_addr {
            must(&format!("ip -n {a} addr add {addr} dev {a_if}"));
        }
        if let Some(addr) = b_addr {
            must(&format!("ip -n {b} addr add {addr} dev {b_if}"));
        }
    }
}

/// A background process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Bg {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Bg {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop it the hard way, as a crash or the OOM killer would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `f` every 100 ms until it holds; fail the test after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `f` every 100 ms until it gives a value; after `secs`, fail the
/// test with the last reason it gave for not having one.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) => assert!(
                std::time::Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}: {why}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn links(ns: &str) -> Vec<String> {
    let out = must(&format!("ip -n {ns} -o link show"));
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&sh("ip netns list").stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&self.prefix) {
                let _ = sh(&format!("ip netns del {name}"));
            }
        }
    }
}

/// Run `f` on a thread inside namespace `ns`: a name under /run/netns, or
/// a namespace file's path (`/proc/PID/ns/net` of a container).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = match ns.starts_with('/') {
        true => ns.to_string(),
        false => format!("/run/netns/{ns}"),
    };
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in netns")
    })
}

/// A TCP server inside `ns` that answers one connection with the peer's
/// address as it saw it (the proof of NAT or no NAT).
pub fn peer_echo_server(
    ns: &str,
    bind: &str,
) -> (std::thread::JoinHandle<Option<SocketAddr>>, u16) {
    let listener = in_netns(ns, || TcpListener::bind(bind).expect("bind in netns"));
    let port = listener.local_addr().expect("local addr").port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).ok()?;
        let (mut stream, peer) = listener.accept().ok()?;
        stream.write_all(peer.ip().to_string().as_bytes()).ok()?;
        Some(peer)
    });
    (handle, port)
}

/// Like [`peer_echo_server`], but answering every connection for the rest
/// of the test. A test that connects to one port many times needs it: to
/// bind the port again right after closing it races with the other tests'
/// threads, whose forked children hold the closed listener until they exec.
pub fn peer_echo_service(ns: &str, bind: &str) -> u16 {
    let listener = in_netns(ns, || TcpListener::bind(bind).expect("bind in netns"));
    let port = listener.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if let Ok(peer) = stream.peer_addr() {
                let _ = stream.write_all(peer.ip().to_string().as_bytes());
            }
        }
    });
    port
}

/// Connect from inside `ns` (as [`in_netns`] takes it) to `addr` and
/// return what the server said.
pub fn tcp_say(ns: &str, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })
}
