//! `plumb daemon --docker-socket S` watching a private dockerd (in each
//! lab's fake host, tests/common/docker.rs): containers declaring networks
//! in labels or environment are attached on start and detached when they
//! die, containers attached by the CLI come back after a restart, DHCP
//! leases follow the containers through a daemon killed with SIGKILL,
//! tenant networks shape and isolate env-declared containers, and fifty
//! containers survive a dockerd restart attached exactly once. Nothing here
//! runs a plumb command between a Docker event and what it must cause:
//! only `plumb ls` and `plumb inspect`, which change nothing.

mod common;

use std::collections::{HashMap, HashSet};

use common::docker::{
    Dockerd, INDEX_HTML, Interface, fetch, in_netns_of, interfaces_of, iperf_from, ls_rows,
};
use common::{Bg, Lab, Lease, must, wait_for, wait_until};

/// `why`, with the end of the daemon's log: for failure messages.
fn with_log(why: String, daemon: &Bg) -> String {
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("{why}\n--- the end of plumb daemon's log:\n{tail}")
}

/// A long-running command for containers that only need to exist.
const SLEEP: &[&str] = &["sleep", "100000"];
/// A web server serving [`INDEX_HTML`] on port 80.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

fn nat(lab: &Lab, name: &str, subnet: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", name, "--mode", "nat", "--subnet", subnet,
    ];
    args.extend_from_slice(extra);
    lab.ok(&args);
}

/// Whether `pid`'s namespace pings `ip` (host tools, the container's
/// network).
fn pings(pid: u32, ip: &str) -> bool {
    in_netns_of(pid, &format!("ping -c1 -W2 {ip}"))
        .status
        .success()
}

/// The interface of container `name` that holds `cidr`, if it runs and
/// has it.
fn holding(docker: &Dockerd, name: &str, cidr: &str) -> Option<Interface> {
    let pid = docker.pid_if_running(name)?;
    interfaces_of(pid)
        .into_iter()
        .find(|i| i.v4.iter().any(|a| a == cidr))
}

/// The one interface of a `--net none` container with exactly one IPv4
/// address inside `prefix` (e.g. "10.44.0."), or why not yet.
fn sole_interface(docker: &Dockerd, name: &str, prefix: &str) -> Result<Interface, String> {
    let pid = docker
        .pid_if_running(name)
        .ok_or(format!("{name} is not running"))?;
    let ifs = interfaces_of(pid);
    match ifs.as_slice() {
        [i] if i.v4.len() == 1 && i.v4[0].starts_with(prefix) => Ok(i.clone()),
        _ => Err(format!("{name}'s interfaces: {ifs:?}")),
    }
}

/// (a) A lab: a routed network between the host and a router namespace, a
/// bridged department network behind the router (no host address on it),
/// and a web server container on Docker's own bridge attached to the
/// department by name with `--default-route replace`. The host reaches it
/// over HTTP through the router (the only way to the department), and the
/// container's default route is the router, not docker0. Then, with no
/// plumb command at all: a `docker rename` shows in `plumb ls`; after a
/// `docker restart`, and after a stop and a start, it is attached again
/// with the same address and MAC, its default route replaced again (Docker
/// put its own back), and reached again. `plumb detach` ends that: the
/// next restart brings no interface back (witnessed by a later container
/// the daemon did attach).
#[test]
fn a_lab_container_is_reached_through_its_router_across_restarts() {
    let lab = Lab::new("ddl");
    let docker = Dockerd::start(&lab, false);
    let daemon = docker.plumb_daemon(&[]);
    lab.ok(&[
        "network",
        "create",
        "uplink",
        "--mode",
        "routed",
        "--subnet",
        "10.10.0.0/24",
    ]);
    lab.ok(&[
        "network",
        "create",
        "dmz",
        "--mode",
        "bridged",
        "--subnet",
        "10.12.0.0/24",
        "--gateway",
        "10.12.0.254",
    ]);
    let router = lab.netns("router");
    must(&format!(
        "ip netns exec {router} sysctl -q -w net.ipv4.ip_forward=1"
    ));
    lab.ok(&[
        "attach",
        &router,
        "uplink",
        "--ip",
        "10.10.0.254",
        "--allow-spoofing",
    ]);
    lab.ok(&[
        "attach",
        &router,
        "dmz",
        "--ip",
        "10.12.0.254",
        "--allow-spoofing",
    ]);
    lab.ok(&["host", "route", "add", "10.12.0.0/24", "via", "10.10.0.254"]);

    // On Docker's bridge (its eth0, default route via docker0) and on the lab.
    docker.run(&["--name", "web"], HTTPD);
    docker.plumb_ok(&[
        "attach",
        "docker:web",
        "dmz",
        "--ip",
        "10.12.0.10",
        "--default-route",
        "replace",
    ]);

    // Attached to the lab as asked, default route via the router, reached
    // from the host through it; or why not.
    let reached = |name: &str| -> Result<Interface, String> {
        let pid = docker
            .pid_if_running(name)
            .ok_or(format!("{name} is not running"))?;
        let i = holding(&docker, name, "10.12.0.10/24").ok_or(format!(
            "{name} has no 10.12.0.10: {:?}",
            interfaces_of(pid)
        ))?;
        let routes = String::from_utf8_lossy(&in_netns_of(pid, "ip -4 route show default").stdout)
            .into_owned();
        let defaults: Vec<&str> = routes.lines().collect();
        if defaults.len() != 1 || !defaults[0].starts_with("default via 10.12.0.254 ") {
            return Err(format!("{name}'s default routes: {routes:?}"));
        }
        match fetch(&lab, &lab.host, "http://10.12.0.10/") {
            Some(page) if page == INDEX_HTML => Ok(i),
            other => Err(format!("the host fetched {other:?}")),
        }
    };
    let first = wait_for("web to be reached through the router", 10, || {
        reached("web")
    });
    let via = must(&format!("ip -n {} route get 10.12.0.10", lab.host));
    assert!(
        via.contains("via 10.10.0.254"),
        "the host's way is the router: {via}"
    );
    let pid = docker.container_pid("web");
    assert_eq!(interfaces_of(pid).len(), 2, "Docker's eth0 and plumb's");

    // A rename shows by itself.
    docker.must(&["rename", "web", "web2"]);
    wait_until("plumb ls to show docker:web2", 15, || {
        let t = docker.plumb_targets();
        t.iter().any(|t| t == "docker:web2") && !t.iter().any(|t| t == "docker:web")
    });

    // A restart, then a stop and a start: back by themselves, same identity.
    docker.must(&["restart", "web2"]);
    let again = wait_for("web2 to be back after docker restart", 30, || {
        let i = reached("web2")?;
        match docker.pid_if_running("web2") {
            Some(p) if p != pid => Ok(i),
            p => Err(format!("still the old process: {p:?}")),
        }
    });
    assert_eq!(
        again.mac,
        first.mac,
        "same MAC after a restart\n{}",
        daemon.log_text()
    );
    docker.must(&["stop", "web2"]);
    docker.must(&["start", "web2"]);
    let again = wait_for("web2 to be back after docker start", 30, || reached("web2"));
    assert_eq!(again.mac, first.mac, "same MAC after stop and start");
    let rows: Vec<_> = docker
        .plumb_targets()
        .into_iter()
        .filter(|t| t.starts_with("docker:"))
        .collect();
    assert_eq!(
        rows,
        ["docker:web2"],
        "attached once, shown by its new name"
    );

    // plumb detach ends it: a restart brings nothing back.
    docker.plumb_ok(&["detach", "docker:web2"]);
    assert!(holding(&docker, "web2", "10.12.0.10/24").is_none());
    docker.must(&["restart", "web2"]);
    // Witness: a container started after the restart, which the daemon
    // attaches; by then it has seen web2's start.
    docker.run(
        &[
            "--name",
            "witness",
            "--net",
            "none",
            "-l",
            "plumb.networks=dmz",
        ],
        SLEEP,
    );
    wait_for("the daemon to attach the witness", 30, || {
        sole_interface(&docker, "witness", "10.12.0.")
    });
    let ifs = interfaces_of(docker.container_pid("web2"));
    assert_eq!(
        ifs.len(),
        1,
        "only Docker's eth0 after a detach and a restart: {ifs:?}"
    );
    assert!(!docker.plumb_targets().iter().any(|t| t == "docker:web2"));
    assert!(fetch(&lab, &lab.host, "http://10.12.0.10/").is_none());
}

const DHCP_SERVER: &str = "192.168.70.1";

/// The lease container `name` holds: exactly one lease in the server's
/// table under its name, and the container running with exactly one
/// interface, with that lease's MAC and address and no other; or why not.
fn holds_lease(docker: &Dockerd, table: &[Lease], name: &str) -> Result<Lease, String> {
    let mine: Vec<&Lease> = table.iter().filter(|l| l.host == name).collect();
    let [lease] = mine.as_slice() else {
        return Err(format!("{name} has {} leases: {table:?}", mine.len()));
    };
    let pid = docker
        .pid_if_running(name)
        .ok_or(format!("{name} is not running"))?;
    let ifs = interfaces_of(pid);
    match ifs.as_slice() {
        [i] if i.mac == lease.mac && i.v4 == [format!("{}/24", lease.ip)] => Ok((*lease).clone()),
        _ => Err(format!(
            "{name}'s interfaces {ifs:?} against its lease {lease:?}"
        )),
    }
}

/// The names of the running containers (all of them declare `lan`).
fn running_names(docker: &Dockerd) -> HashSet<String> {
    docker
        .must(&["ps", "--format", "{{.Names}}"])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// No lease without a container and no container without its lease: every
/// running container holds exactly one lease (its name as hostname, its
/// MAC and address on its only interface), every lease in the server's
/// table is a running container's, no address twice, and `plumb ls` lists
/// each running container once. Returns the leases by name, or why not.
fn leases_match_containers(docker: &Dockerd, lab: &Lab) -> Result<HashMap<String, Lease>, String> {
    let running = running_names(docker);
    let table = lab.dnsmasq_leases();
    let mut held = HashMap::new();
    for name in &running {
        held.insert(name.clone(), holds_lease(docker, &table, name)?);
    }
    if let Some(orphan) = table.iter().find(|l| !running.contains(&l.host)) {
        return Err(format!("a lease without a running container: {orphan:?}"));
    }
    let ips: HashSet<&str> = table.iter().map(|l| l.ip.as_str()).collect();
    if ips.len() != table.len() {
        return Err(format!("an address leased twice: {table:?}"));
    }
    let mut shown = docker.plumb_targets();
    shown.sort();
    let mut expected: Vec<String> = running.iter().map(|n| format!("docker:{n}")).collect();
    expected.sort();
    if shown != expected {
        return Err(format!("plumb ls shows {shown:?}, running {expected:?}"));
    }
    Ok(held)
}

/// (b) A DHCP LAN served by dnsmasq, and containers declaring it by label
/// only (`-l plumb.networks=lan`, no plumb command): a web server gets a
/// lease under its container name (the server's lease table shows the
/// name, its DNS answers for it, the LAN reaches the page), `docker stop`
/// releases the lease at the server, `docker start` gets the same address
/// and MAC back. Then the daemon is killed with SIGKILL while containers
/// stop and start, more change while it is down (a stop, a removal, new
/// containers, a start), it is started again and killed again at once
/// while it catches up and a container starts; started a third time, it
/// ends with no lease without a running container and no running container
/// without its lease, and an untouched container kept its address.
#[test]
fn dhcp_leases_follow_containers_through_a_killed_daemon() {
    let lab = Lab::new("ddh");
    let server = lab.lan("dhcpsrv", &format!("{DHCP_SERVER}/24"));
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--dhcp-range=192.168.70.100,192.168.70.199,2m --dhcp-authoritative \
         --domain=app.example.com --local=/app.example.com/ --log-dhcp",
    );
    let docker = Dockerd::start(&lab, false);
    let mut daemon = docker.plumb_daemon(&[]);
    lab.dhcp_network("lan", &["--domain", "app.example.com"]);
    let declared = |name: &str, cmd: &[&str]| {
        docker.run(
            &["--name", name, "--net", "none", "-l", "plumb.networks=lan"],
            cmd,
        );
    };

    declared("web", HTTPD);
    let lease = wait_for("web's lease", 30, || {
        holds_lease(&docker, &lab.dnsmasq_leases(), "web")
    });
    assert!(lease.ip.starts_with("192.168.70.1"), "{lease:?}");
    wait_until("dnsmasq to answer for web.app.example.com", 10, || {
        let out = lab.exec(
            &server,
            &format!("dig +short +time=2 +tries=1 @{DHCP_SERVER} web.app.example.com A"),
        );
        String::from_utf8_lossy(&out.stdout).trim() == lease.ip
    });
    assert_eq!(
        fetch(&lab, &server, &format!("http://{}/", lease.ip)).as_deref(),
        Some(INDEX_HTML),
        "the LAN reaches the container's server"
    );
    let ep = &docker.plumb_inspect("docker:web")["NetworkSettings"]["Networks"]["lan"];
    assert_eq!(ep["IPAddress"], lease.ip.as_str(), "{ep}");

    docker.must(&["stop", "web"]);
    wait_until("the server to see web's lease released", 10, || {
        !lab.dnsmasq_leases()
            .iter()
            .any(|l| l.mac == lease.mac || l.host == "web")
    });
    docker.must(&["start", "web"]);
    let back = wait_for("web's lease after docker start", 30, || {
        holds_lease(&docker, &lab.dnsmasq_leases(), "web")
    });
    assert_eq!(back, lease, "the same address and MAC after a restart");

    // Kills while containers come and go.
    for c in ["c1", "c2", "c3", "c4"] {
        declared(c, SLEEP);
    }
    let before = wait_for("c1..c4 and web to hold their leases", 60, || {
        leases_match_containers(&docker, &lab)
    });
    std::thread::scope(|s| {
        let changes = s.spawn(|| {
            docker.must(&["stop", "c1"]);
            declared("c5", SLEEP);
            docker.must(&["stop", "c2"]);
            declared("c6", SLEEP);
        });
        wait_until("c1 to stop", 30, || !docker.running("c1"));
        daemon.kill9();
        changes.join().expect("docker commands");
    });
    // Each start begins the log anew: the killed daemons' logs are kept
    // here for the failure message.
    let mut killed_logs = daemon.log_text();
    // While it is down.
    docker.must(&["rm", "-f", "c3"]);
    docker.must(&["start", "c1"]);
    // Again: killed while it catches up and a container starts.
    daemon = docker.plumb_daemon(&[]);
    declared("c7", SLEEP);
    daemon.kill9();
    killed_logs += &daemon.log_text();
    docker.must(&["stop", "c5"]);
    daemon = docker.plumb_daemon(&[]);

    // Containers that stopped or were removed while no daemon ran (c2, c3,
    // c5) may have taken their interfaces with them (once Docker unmounts
    // their namespaces): their leases are released from the host's side of
    // the LAN, not left to expire at the server (2 minutes, longer than
    // this wait).
    let after = wait_for("leases and containers to match", 90, || {
        leases_match_containers(&docker, &lab).map_err(|why| {
            with_log(
                format!("{why}\n--- the killed daemons' logs:\n{killed_logs}"),
                &daemon,
            )
        })
    });
    let mut names: Vec<&String> = after.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["c1", "c4", "c6", "c7", "web"],
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        after["c4"], before["c4"],
        "an untouched container kept its lease"
    );
    assert_eq!(after["web"], before["web"]);
}

/// (c) Tenant networks joined by environment alone (`-e
/// PLUMB_NETWORKS=...`, network names upper-cased with `-` as `_` in the
/// option variables): a container of tenant t1 gets the rate limit its
/// environment asks for (measured: 10 mbit/s out, within 10%, while its
/// unlimited neighbour goes far faster), the address its label asks for
/// (a label wins over the same option in the environment), and reaches the
/// tenant's database network through a rule selecting its per-network
/// label (`plumb.tenant1.labels.role=app`) while its unlabelled neighbour
/// does not. Containers of tenant t2 and t1 cannot reach each other.
#[test]
fn env_declared_tenant_containers_are_shaped_and_isolated() {
    let lab = Lab::new("ddt");
    let docker = Dockerd::start(&lab, false);
    nat(&lab, "tenant1", "10.51.0.0/24", &["--tenant", "t1"]);
    nat(&lab, "tenant1-db", "10.53.0.0/24", &["--tenant", "t1"]);
    nat(&lab, "tenant-2", "10.52.0.0/24", &["--tenant", "t2"]);
    lab.ok(&[
        "policy",
        "add",
        "tenant1-db",
        "allow",
        "from",
        "label:role=app",
    ]);
    let _daemon = docker.plumb_daemon(&[]);

    docker.run(
        &[
            "--name",
            "app",
            "--net",
            "none",
            "-e",
            "PLUMB_NETWORKS=tenant1",
            "-e",
            "PLUMB_TENANT1_EGRESS_RATE=10mbit",
            "-e",
            "PLUMB_TENANT1_IP=10.51.0.50",
            "-l",
            "plumb.tenant1.ip=10.51.0.60",
            "-l",
            "plumb.tenant1.labels.role=app",
        ],
        SLEEP,
    );
    docker.run(
        &[
            "--name",
            "plain",
            "--net",
            "none",
            "-e",
            "PLUMB_NETWORKS=tenant1",
        ],
        SLEEP,
    );
    docker.run(
        &[
            "--name",
            "db",
            "--net",
            "none",
            "-e",
            "PLUMB_NETWORKS=tenant1-db",
            "-e",
            "PLUMB_TENANT1_DB_IP=10.53.0.20",
        ],
        SLEEP,
    );
    docker.run(
        &[
            "--name",
            "other",
            "--net",
            "none",
            "-e",
            "PLUMB_NETWORKS=tenant-2",
            "-e",
            "PLUMB_TENANT_2_IP=10.52.0.20",
        ],
        SLEEP,
    );
    let app = wait_for("app on tenant1", 30, || {
        sole_interface(&docker, "app", "10.51.0.")
    });
    assert_eq!(
        app.v4,
        ["10.51.0.60/24"],
        "the label wins over the environment"
    );
    let plain = wait_for("plain on tenant1", 30, || {
        sole_interface(&docker, "plain", "10.51.0.")
    });
    let db = wait_for("db on tenant1-db", 30, || {
        sole_interface(&docker, "db", "10.53.0.")
    });
    assert_eq!(db.v4, ["10.53.0.20/24"], "PLUMB_TENANT1_DB_IP");
    let other = wait_for("other on tenant-2", 30, || {
        sole_interface(&docker, "other", "10.52.0.")
    });
    assert_eq!(other.v4, ["10.52.0.20/24"], "PLUMB_TENANT_2_IP");
    let plain_ip = plain.v4[0].split('/').next().unwrap().to_string();
    let (p_app, p_plain, p_db, p_other) = (
        docker.container_pid("app"),
        docker.container_pid("plain"),
        docker.container_pid("db"),
        docker.container_pid("other"),
    );

    // Within the network, and to the gateway: open.
    assert!(pings(p_app, &plain_ip), "app -> plain, one network");
    assert!(pings(p_other, "10.52.0.1"), "other -> its gateway");
    // The label rule: app reaches db, plain does not.
    assert!(pings(p_app, "10.53.0.20"), "app (role=app) -> db");
    assert!(!pings(p_plain, "10.53.0.20"), "plain (no label) -> db");
    // Tenants apart, both ways.
    assert!(!pings(p_other, "10.51.0.60"), "t2 -> t1");
    assert!(!pings(p_app, "10.52.0.20"), "t1 -> t2");
    assert!(!pings(p_other, "10.53.0.20"), "t2 -> t1's db");
    assert!(!pings(p_db, "10.52.0.20"), "t1's db -> t2");

    // The rate limit, measured.
    let shaped = iperf_from(&lab, p_app, "10.51.0.1", 5401);
    assert!(
        ((shaped - 10e6) / 10e6).abs() <= 0.10,
        "app sends {shaped} bit/s against a 10mbit limit"
    );
    let free = iperf_from(&lab, p_plain, "10.51.0.1", 5402);
    assert!(free > 50e6, "plain, unlimited, sends {free} bit/s");
}

/// The state of fifty containers on network `mass`: each runs with exactly
/// one interface holding one address of 10.60.0.0/24, no address twice,
/// `plumb ls` lists each once (fifty rows), and the network's bridge has
/// fifty ports (no leftover from an earlier life). Returns each one's
/// interface and PID, or why not yet.
fn fifty_attached_once(
    lab: &Lab,
    docker: &Dockerd,
    names: &[String],
) -> Result<HashMap<String, (Interface, u32)>, String> {
    let pids = docker.pids(names);
    let mut out = HashMap::new();
    for name in names {
        let pid = *pids.get(name).ok_or(format!("{name} is not running"))?;
        let ifs = interfaces_of(pid);
        match ifs.as_slice() {
            [i] if i.v4.len() == 1 && i.v4[0].starts_with("10.60.0.") => {
                out.insert(name.clone(), (i.clone(), pid));
            }
            _ => return Err(format!("{name}: {ifs:?}")),
        }
    }
    let addrs: HashSet<&String> = out.values().map(|(i, _)| &i.v4[0]).collect();
    if addrs.len() != names.len() {
        return Err(format!(
            "{} different addresses for {}",
            addrs.len(),
            names.len()
        ));
    }
    let rows: Vec<String> = ls_rows(&docker.plumb_ok(&["ls"]))
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let distinct: HashSet<&String> = rows.iter().collect();
    let expected: HashSet<String> = names.iter().map(|n| format!("docker:{n}")).collect();
    if rows.len() != names.len() || distinct != expected.iter().collect::<HashSet<_>>() {
        return Err(format!("plumb ls rows: {rows:?}"));
    }
    let ports = must(&format!("ip -n {} -o link show master pl-mass", lab.host));
    if ports.lines().count() != names.len() {
        return Err(format!("bridge ports:\n{ports}"));
    }
    Ok(out)
}

/// (d) Fifty containers declaring a network by label, started at once
/// with `--restart always`, are all attached, none twice. dockerd is then
/// restarted with them running (it stops them and starts them again, and
/// its socket goes away meanwhile): the daemon attaches every one again,
/// exactly once, each with the address and MAC it had.
#[test]
fn fifty_containers_survive_a_dockerd_restart_attached_once() {
    let lab = Lab::new("d50");
    let mut docker = Dockerd::start(&lab, false);
    nat(&lab, "mass", "10.60.0.0/24", &[]);
    let daemon = docker.plumb_daemon(&[]);
    let names: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            let docker = &docker;
            s.spawn(move || {
                docker.run(
                    &[
                        "--name",
                        name,
                        "--net",
                        "none",
                        "--restart",
                        "always",
                        "-l",
                        "plumb.networks=mass",
                    ],
                    SLEEP,
                )
            });
        }
    });
    let before = wait_for("fifty containers attached once", 120, || {
        fifty_attached_once(&lab, &docker, &names).map_err(|e| with_log(e, &daemon))
    });

    docker.restart();
    let after = wait_for(
        "fifty containers attached once after dockerd's restart",
        180,
        || {
            let now =
                fifty_attached_once(&lab, &docker, &names).map_err(|e| with_log(e, &daemon))?;
            match now.iter().find(|(n, (_, pid))| before[*n].1 == *pid) {
                Some((n, _)) => Err(format!("{n} has not been restarted yet")),
                None => Ok(now),
            }
        },
    );
    for name in &names {
        assert_eq!(
            after[name].0,
            before[name].0,
            "{name} has its address and MAC back\n{}",
            daemon.log_text()
        );
    }
}

/// Declarations, their options and their mistakes, and a daemon that was
/// down: a container started while no daemon ran is attached when one
/// starts, one that stopped meanwhile is detached at its start (and comes
/// back with its address when started); label options shape the interface
/// (`ip` winning over `PLUMB_LAN_IP`, `mac`, `ifname`, `publish`: the host
/// fetches the page through the published port); bad declarations (an
/// unknown network, an address outside the subnet) never stop Docker: the
/// container runs, `plumb inspect` names the mistake in `Errors` and `plumb
/// ls` lists the container; with `plumb.on-error=stop` plumb stops it. A
/// removed container is detached at once.
#[test]
fn declarations_options_mistakes_and_a_daemon_that_was_down() {
    let lab = Lab::new("ddd");
    let docker = Dockerd::start(&lab, false);
    nat(&lab, "lan", "10.44.0.0/24", &[]);
    let mut daemon = docker.plumb_daemon(&[]);
    let declared = |name: &str, extra: &[&str], cmd: &[&str]| {
        let mut opts = vec!["--name", name, "--net", "none", "-l", "plumb.networks=lan"];
        opts.extend_from_slice(extra);
        docker.run(&opts, cmd);
    };

    declared("gone", &[], SLEEP);
    let gone = wait_for("gone attached", 30, || {
        sole_interface(&docker, "gone", "10.44.0.")
    });
    daemon.stop();
    declared("early", &[], SLEEP);
    docker.must(&["stop", "gone"]);
    daemon = docker.plumb_daemon(&[]);
    wait_for(
        "early attached and gone detached at the daemon's start",
        30,
        || {
            sole_interface(&docker, "early", "10.44.0.")?;
            let t = docker.plumb_targets();
            if t != ["docker:early"] {
                return Err(format!("plumb ls: {t:?}"));
            }
            Ok(())
        },
    );
    docker.must(&["start", "gone"]);
    let back = wait_for("gone back", 30, || {
        sole_interface(&docker, "gone", "10.44.0.")
    });
    assert_eq!(
        back,
        gone,
        "same interface, address and MAC\n{}",
        daemon.log_text()
    );

    // Options by label.
    declared(
        "opts",
        &[
            "-l",
            "plumb.lan.ip=10.44.0.50",
            "-e",
            "PLUMB_LAN_IP=10.44.0.99",
            "-l",
            "plumb.lan.mac=02:aa:bb:cc:dd:01",
            "-l",
            "plumb.lan.ifname=net0",
            "-l",
            "plumb.lan.publish=8080:80",
        ],
        HTTPD,
    );
    let opts = wait_for("opts attached", 30, || {
        sole_interface(&docker, "opts", "10.44.0.")
    });
    assert_eq!(
        opts,
        Interface {
            name: "net0".into(),
            mac: "02:aa:bb:cc:dd:01".into(),
            v4: vec!["10.44.0.50/24".into()],
        }
    );
    wait_until("the host to fetch the page through port 8080", 10, || {
        fetch(&lab, &lab.host, "http://10.44.0.1:8080/").as_deref() == Some(INDEX_HTML)
    });

    // Mistakes: Docker runs the container anyway, plumb says what is wrong.
    docker.run(
        &[
            "--name",
            "badnet",
            "--net",
            "none",
            "-l",
            "plumb.networks=nosuchnet",
        ],
        SLEEP,
    );
    declared("badip", &["-l", "plumb.lan.ip=10.99.0.5"], SLEEP);
    declared(
        "badstop",
        &["-l", "plumb.lan.ip=not-an-ip", "-l", "plumb.on-error=stop"],
        SLEEP,
    );
    for (name, word) in [("badnet", "nosuchnet"), ("badip", "10.99.0.5")] {
        let errors = wait_for(&format!("{name}'s errors"), 30, || {
            let out = docker.plumb(&["inspect", &format!("docker:{name}")]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stderr)))?;
            match v["Errors"].as_array() {
                Some(e) if !e.is_empty() => Ok(v["Errors"].to_string()),
                _ => Err(v.to_string()),
            }
        });
        assert!(errors.contains(word), "{name}: {errors}");
        assert!(docker.running(name), "{name} keeps running");
        assert_eq!(interfaces_of(docker.container_pid(name)), vec![], "{name}");
        let ls = docker.plumb_ok(&["ls"]);
        assert!(
            ls.contains(&format!("docker:{name}")),
            "plumb ls mentions {name}:\n{ls}"
        );
    }
    wait_until("plumb to stop badstop", 30, || !docker.running("badstop"));

    // A removed container is detached at once.
    docker.must(&["rm", "-f", "opts"]);
    wait_until("opts to be detached", 15, || {
        !docker.plumb_targets().iter().any(|t| t == "docker:opts")
    });
    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "lan"])).expect("network inspect");
    assert!(
        !net["Attachments"].to_string().contains("10.44.0.50"),
        "{net}"
    );
    assert!(docker.running("early") && docker.running("gone"));
}
