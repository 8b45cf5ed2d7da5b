//! DHCP networks against real servers on a stand-in LAN: a switch (bridge)
//! in namespace `lan`, the DHCP server (also the router, 192.168.70.1) on
//! it, and the fake host's `lan0` plugged into it. dnsmasq (2-minute lease
//! floor) is used for acquire, DNS registration and release; kea, with
//! leases of a few seconds, for renewal, rebinding and expiry.

mod common;

use common::{Bg, Lab, must, wait_until};
use serde_json::Value;

const SERVER: &str = "192.168.70.1";

/// The LAN and its server's namespace.
fn lan(lab: &Lab) -> String {
    lab.lan("dhcpsrv", &format!("{SERVER}/24"))
}

fn dnsmasq(lab: &Lab, server: &str) -> Bg {
    lab.dnsmasq(
        server,
        "--dhcp-range=192.168.70.100,192.168.70.199,2m --dhcp-authoritative \
         --domain=app.example.com --local=/app.example.com/ --log-dhcp",
    )
}

/// kea with leases of `valid` seconds (T1 = valid/4, T2 = valid/2).
fn kea(lab: &Lab, server: &str, valid: u32) -> Bg {
    lab.kea(server, valid, "192.168.70.100 - 192.168.70.199")
}

fn network(lab: &Lab, extra: &[&str]) {
    let mut args = vec!["--domain", "app.example.com"];
    args.extend_from_slice(extra);
    lab.dhcp_network("lan", &args);
}

fn dhcp_of(lab: &Lab, target: &str) -> Value {
    lab.inspect(target)["NetworkSettings"]["Networks"]["lan"]["DHCP"].clone()
}

fn eth0_v4(lab: &Lab, ns: &str) -> String {
    String::from_utf8_lossy(&lab.exec(ns, "ip -4 -o addr show dev eth0").stdout).into_owned()
}

#[test]
fn dnsmasq_leases_an_address_registers_the_name_and_gets_it_back_on_detach() {
    let lab = Lab::new("dq");
    let server = lan(&lab);
    let _dnsmasq = dnsmasq(&lab, &server);
    let _daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan", "--hostname", "web"]);

    let ep = &lab.inspect(&c)["NetworkSettings"]["Networks"]["lan"];
    let ip = ep["IPAddress"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("192.168.70.1"),
        "address from the pool: {ep}"
    );
    assert_eq!(ep["IPPrefixLen"], 24);
    assert_eq!(ep["Gateway"], SERVER);
    let d = &ep["DHCP"];
    assert_eq!(d["State"], "bound");
    assert_eq!(d["Server"], SERVER);
    assert_eq!(d["DNSServers"][0], SERVER);
    assert_eq!(d["Domain"], "app.example.com");
    assert_eq!(d["FQDN"], "web.app.example.com");
    assert!(eth0_v4(&lab, &c).contains(&format!("{ip}/24")));
    assert!(
        lab.ping(&c, SERVER),
        "the container reaches the LAN's router"
    );

    // The server knows the container by its MAC and name, and its DNS
    // answers for it.
    let mac = ep["MacAddress"].as_str().unwrap().to_string();
    let leases = std::fs::read_to_string(lab.state.path().join("dnsmasq.leases")).unwrap();
    assert!(
        leases
            .lines()
            .any(|l| l.contains(&mac) && l.contains(&ip) && l.contains(" web ")),
        "lease table: {leases}"
    );
    let answer = must(&format!(
        "ip netns exec {c} dig +short +time=2 +tries=2 @{SERVER} web.app.example.com A"
    ));
    assert_eq!(answer.trim(), ip, "dnsmasq resolves the container's name");

    // Detach releases the lease on the server.
    lab.ok(&["detach", &c, "lan"]);
    wait_until("dnsmasq to drop the released lease", 5, || {
        !std::fs::read_to_string(lab.state.path().join("dnsmasq.leases"))
            .unwrap()
            .contains(&mac)
    });
    assert!(!common::links(&c).iter().any(|l| l == "eth0"));

    // A re-attach is the same client to the LAN: same MAC, same client id.
    lab.ok(&["attach", &c, "lan", "--hostname", "web"]);
    let again = &lab.inspect(&c)["NetworkSettings"]["Networks"]["lan"];
    assert_eq!(again["MacAddress"], mac.as_str());
    assert_eq!(again["DHCP"]["ClientID"], d["ClientID"]);
}

#[test]
fn macvlan_containers_lease_from_the_lan_and_a_dead_namespace_releases_its_lease() {
    let lab = Lab::new("dm");
    let server = lan(&lab);
    let _dnsmasq = dnsmasq(&lab, &server);
    let _daemon = lab.daemon(&["--reconcile-interval", "1"]);
    lab.ok(&[
        "network", "create", "lan", "--driver", "macvlan", "--parent", "lan0", "--ipam", "dhcp",
    ]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    assert!(ip.starts_with("192.168.70.1"), "{ip}");
    assert!(lab.ping(&c, SERVER));
    let mac = lab.inspect(&c)["NetworkSettings"]["Networks"]["lan"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let leases = lab.state.path().join("dnsmasq.leases");
    assert!(std::fs::read_to_string(&leases).unwrap().contains(&mac));

    // The container dies: the daemon notices, releases, forgets.
    must(&format!("ip netns del {c}"));
    wait_until(
        "the daemon to release the dead container's lease",
        10,
        || !std::fs::read_to_string(&leases).unwrap().contains(&mac),
    );
    wait_until("the attachment to be removed", 5, || {
        lab.ok(&["ls"]).lines().count() == 1
    });
}

#[test]
fn kea_short_leases_renew_expire_without_a_server_and_come_back() {
    let lab = Lab::new("dk");
    let server = lan(&lab);
    let mut kea = kea(&lab, &server, 8);
    let _daemon = lab.daemon(&["--dhcp-timeout", "3"]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let first = dhcp_of(&lab, &c);
    assert_eq!(first["LeaseSeconds"], 8);
    // Option 121 and 26 are applied: the default route from 121, its route.
    let routes = must(&format!("ip -n {c} -4 route"));
    assert!(routes.contains("default via 192.168.70.1"), "{routes}");
    assert!(
        routes.contains("10.99.0.0/16 via 192.168.70.254"),
        "{routes}"
    );
    assert!(must(&format!("ip -n {c} link show eth0")).contains("mtu 1400"));
    let ip = lab.ip_of(&c, "lan");

    // T1 is 2 s: within 5 s the lease is renewed twice.
    let acquired = |lab: &Lab| dhcp_of(lab, &c)["AcquiredAt"].as_u64().unwrap();
    let t0 = acquired(&lab);
    wait_until("two renewals", 7, || acquired(&lab) >= t0 + 4);
    assert!(kea.log_text().matches("DHCP4_LEASE_ALLOC").count() >= 3);
    assert_eq!(lab.ip_of(&c, "lan"), ip, "a renewal keeps the address");

    // The server goes away: the address stays until the lease really
    // expires, then it is removed and reported.
    kea.stop();
    let gone_at = acquired(&lab) + 8;
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        eth0_v4(&lab, &c).contains(&ip),
        "kept while the lease is valid"
    );
    wait_until("the expired lease to be reported", 12, || {
        dhcp_of(&lab, &c)["State"] == "expired"
    });
    assert!(
        dhcp_of(&lab, &c)["ExpiresAt"].is_null(),
        "no lease is shown once expired"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now >= gone_at,
        "the address went no earlier than the lease's end"
    );
    assert!(
        !eth0_v4(&lab, &c).contains(&ip),
        "address removed at expiry"
    );

    // The server comes back: the daemon acquires again.
    let _kea = self::kea(&lab, &server, 8);
    wait_until("a new lease", 20, || dhcp_of(&lab, &c)["State"] == "bound");
    assert!(eth0_v4(&lab, &c).contains("192.168.70.1"));
}

#[test]
fn a_restarted_or_killed_daemon_resumes_renewing_without_dropping_the_address() {
    let lab = Lab::new("dr");
    let server = lan(&lab);
    let _kea = kea(&lab, &server, 8);
    let mut daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    daemon.kill9();
    // Down for longer than T1: nobody renews, the address stays.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(eth0_v4(&lab, &c).contains(&ip));
    let before = dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap();
    let _daemon = lab.daemon(&[]);
    wait_until("the new daemon to renew", 6, || {
        dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap() > before
    });
    assert_eq!(lab.ip_of(&c, "lan"), ip);
    assert!(eth0_v4(&lab, &c).contains(&ip));
}

#[test]
fn no_server_answer_rolls_the_attach_back_with_a_clear_error() {
    let lab = Lab::new("dn");
    lan(&lab);
    let _daemon = lab.daemon(&["--dhcp-timeout", "2"]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    let host_before = lab.host_links();
    let err = lab.fails(&["attach", &c, "lan"]);
    assert!(err.contains("no DHCP server answered"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(common::links(&c), vec!["lo"]);
    assert_eq!(lab.host_links(), host_before);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "only the header");
}

#[test]
fn a_dhcp_network_without_a_daemon_says_so_and_changes_nothing() {
    let lab = Lab::new("dd");
    lan(&lab);
    network(&lab, &[]);
    let c = lab.netns("c1");
    let err = lab.fails(&["attach", &c, "lan"]);
    assert!(err.contains("plumb daemon"), "{err}");
    assert!(err.contains("plumbd.sock"), "{err}");
    assert_eq!(common::links(&c), vec!["lo"]);
    // Static addresses and DHCP-only options are refused up front.
    let err = lab.fails(&["attach", &c, "lan", "--ip", "192.168.70.5"]);
    assert!(err.contains("--ip `192.168.70.5`"), "{err}");
    let err = lab.fails(&[
        "network", "create", "bad", "--driver", "bridge", "--mode", "nat", "--ipam", "dhcp",
    ]);
    assert!(err.contains("--mode `nat`"), "{err}");
    let err = lab.fails(&[
        "network",
        "create",
        "bad",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--ipam",
        "dhcp",
        "--gateway",
        "192.168.70.1",
    ]);
    assert!(err.contains("--gateway `192.168.70.1`"), "{err}");
    let err = lab.fails(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.1.0.0/24",
        "--domain",
        "x.org",
    ]);
    assert!(err.contains("--domain `x.org`"), "{err}");
}

#[test]
fn after_a_reboot_the_daemon_restores_the_bridge_and_the_leased_address() {
    let lab = Lab::new("db");
    let server = lan(&lab);
    let _kea = kea(&lab, &server, 8);
    let mut daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    daemon.kill9();
    // The reboot: plumb's links are gone, the uplink is free again.
    for link in lab.host_links() {
        if link.starts_with("pl-") || link.starts_with("pv") {
            must(&format!("ip -n {} link del {link}", lab.host));
        }
    }
    assert!(!lab.ping(&c, SERVER));
    let _daemon = lab.daemon(&[]);
    assert_eq!(lab.ip_of(&c, "lan"), ip);
    assert!(
        eth0_v4(&lab, &c).contains(&ip),
        "the lease's address is back"
    );
    assert!(lab.ping(&c, SERVER), "and the LAN with it");
    // The lease task renews on the new interface.
    let before = dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap();
    wait_until("a renewal on the restored interface", 6, || {
        dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap() > before
    });
    assert_eq!(lab.ip_of(&c, "lan"), ip);
}

#[test]
fn ipv6_comes_from_the_lans_router_advertisements() {
    let lab = Lab::new("d6");
    let server = lan(&lab);
    must(&format!(
        "ip -n {server} addr add fd00:70::1/64 dev eth0 nodad"
    ));
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--port=0 --dhcp-range=192.168.70.100,192.168.70.199,2m \
         --dhcp-range=fd00:70::,ra-only,64 --enable-ra --ra-param=eth0,3",
    );
    let _daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ep = |lab: &Lab| lab.inspect(&c)["NetworkSettings"]["Networks"]["lan"].clone();
    wait_until("a SLAAC address in inspect", 15, || {
        ep(&lab)["GlobalIPv6Address"]
            .as_str()
            .is_some_and(|a| a.starts_with("fd00:70::"))
    });
    let v6 = ep(&lab);
    assert_eq!(v6["GlobalIPv6PrefixLen"], 64);
    assert!(
        v6["IPAddress"].as_str().unwrap().starts_with("192.168.70."),
        "and IPv4 by DHCP"
    );
    assert!(
        must(&format!("ip netns exec {c} ping -6 -c1 -W2 fd00:70::1")).contains("1 received"),
        "the container reaches the LAN over IPv6"
    );

    // Without SLAAC the interface stays IPv4-only.
    lab.ok(&["network", "rm", "lan", "--force"]);
    network(&lab, &["--no-slaac"]);
    let d = lab.netns("c2");
    lab.ok(&["attach", &d, "lan"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let addrs = must(&format!("ip -n {d} -6 addr show dev eth0"));
    assert!(!addrs.contains("inet6"), "no IPv6 at all: {addrs}");
}

#[test]
fn a_server_gone_for_less_than_the_lease_costs_no_address() {
    let lab = Lab::new("dg");
    let server = lan(&lab);
    let mut kea1 = kea(&lab, &server, 8);
    let _daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    kea1.stop();
    let stopped = dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap();
    // Past T1 and T2 (2 s, 4 s) with no server: renewing, then rebinding,
    // the address on the interface all along.
    wait_until("rebinding", 8, || dhcp_of(&lab, &c)["State"] == "rebinding");
    assert!(eth0_v4(&lab, &c).contains(&ip));
    let _kea2 = kea(&lab, &server, 8);
    wait_until("the lease to be extended again", 8, || {
        dhcp_of(&lab, &c)["AcquiredAt"].as_u64().unwrap() > stopped
            && dhcp_of(&lab, &c)["State"] == "bound"
    });
    assert_eq!(lab.ip_of(&c, "lan"), ip);
    assert!(eth0_v4(&lab, &c).contains(&ip));
}

#[test]
fn a_lease_that_expired_while_the_daemon_was_down_is_acquired_again() {
    let lab = Lab::new("dx");
    let server = lan(&lab);
    let _kea = kea(&lab, &server, 4);
    let mut daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    let expires = dhcp_of(&lab, &c)["ExpiresAt"].as_u64().unwrap();
    daemon.kill9();
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(dhcp_of(&lab, &c)["ExpiresAt"].as_u64().unwrap() <= expires);
    let _daemon = lab.daemon(&[]);
    wait_until("a fresh lease", 10, || {
        dhcp_of(&lab, &c)["State"] == "bound"
            && dhcp_of(&lab, &c)["ExpiresAt"].as_u64().unwrap() > expires
    });
    assert_eq!(
        lab.ip_of(&c, "lan"),
        ip,
        "the server gave the same address back"
    );
    assert!(lab.ping(&c, SERVER));
}

#[test]
fn an_exhausted_pool_fails_the_attach_and_leaves_nothing() {
    let lab = Lab::new("dp");
    let server = lan(&lab);
    let _kea = lab.kea(&server, 60, "192.168.70.100 - 192.168.70.100");
    let _daemon = lab.daemon(&["--dhcp-timeout", "2"]);
    network(&lab, &[]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "lan"]);
    assert_eq!(lab.ip_of(&a, "lan"), "192.168.70.100");
    let host_before = lab.host_links();
    let err = lab.fails(&["attach", &b, "lan"]);
    assert!(err.contains("free address in its pool"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(common::links(&b), vec!["lo"]);
    assert_eq!(lab.host_links(), host_before);
}

#[test]
fn a_daemon_killed_mid_attach_leaves_nothing_after_its_restart() {
    let lab = Lab::new("dk9");
    lan(&lab);
    let mut daemon = lab.daemon(&["--dhcp-timeout", "30"]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    let host_before = lab.host_links();
    // No server: the attach waits in DISCOVER when the daemon dies.
    let attach = {
        let mut cmd = lab.command(&["attach", &c, "lan"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    wait_until("the half-made interface", 10, || {
        common::links(&c).iter().any(|l| l == "eth0")
    });
    daemon.kill9();
    let out = attach.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "the attach reports the daemon's death"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("plumb daemon"));
    let _daemon = lab.daemon(&[]);
    assert_eq!(common::links(&c), vec!["lo"], "the interface is gone");
    assert_eq!(lab.host_links(), host_before, "and its host end");
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "and its record");
}

#[test]
fn dhcpv6_leases_an_address_where_the_advertisements_ask_for_it() {
    let lab = Lab::new("dv6");
    let server = lan(&lab);
    must(&format!(
        "ip -n {server} addr add fd00:70::1/64 dev eth0 nodad"
    ));
    let leases = lab.state.path().join("dnsmasq.leases");
    // A range for DHCPv6 makes dnsmasq advertise the prefix with the
    // managed flag set.
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--port=0 --dhcp-range=192.168.70.100,192.168.70.199,2m \
         --dhcp-range=fd00:70::100,fd00:70::1ff,64,2m --enable-ra --ra-param=eth0,3 --log-dhcp",
    );
    let _daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    wait_until("a DHCPv6 lease", 20, || {
        !dhcp_of(&lab, &c)["DHCPv6"].is_null()
    });
    let v6 = dhcp_of(&lab, &c)["DHCPv6"]["Address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(v6.starts_with("fd00:70::1"), "from the DHCPv6 range: {v6}");
    let addrs = must(&format!("ip -n {c} -6 addr show dev eth0"));
    assert!(addrs.contains(&format!("{v6}/128")), "{addrs}");
    let table = std::fs::read_to_string(&leases).unwrap();
    assert!(table.contains(&v6), "dnsmasq's lease table: {table}");
    assert!(must(&format!("ip netns exec {c} ping -6 -c1 -W2 fd00:70::1")).contains("1 received"));
    lab.ok(&["detach", &c, "lan"]);
    wait_until("dnsmasq to drop the released DHCPv6 lease", 5, || {
        !std::fs::read_to_string(&leases).unwrap().contains(&v6)
    });
}

#[test]
fn a_nak_takes_the_address_off_and_the_client_starts_over() {
    let lab = Lab::new("dnak");
    let server = lan(&lab);
    let mut first = kea(&lab, &server, 8);
    let _daemon = lab.daemon(&[]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    assert!(ip.starts_with("192.168.70.1"));
    // The LAN is renumbered, its new server refuses the old address.
    first.stop();
    let _second = lab.dnsmasq(
        &server,
        "--port=0 --dhcp-range=192.168.70.220,192.168.70.229,2m --dhcp-authoritative",
    );
    wait_until("a lease from the new pool", 20, || {
        lab.ip_of(&c, "lan").starts_with("192.168.70.22")
    });
    assert!(
        !eth0_v4(&lab, &c).contains(&format!("{ip}/")),
        "the refused address is gone"
    );
    let log = std::fs::read_to_string(lab.state.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("refused the renewal"),
        "the NAK is reported: {log}"
    );
}

#[test]
fn the_socket_is_root_only_and_gc_without_a_daemon_removes_dead_namespaces() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new("dgc");
    {
        let _daemon = lab.daemon(&[]);
        let mode = std::fs::metadata(lab.socket())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    }
    lab.ok(&["network", "create", "n", "--subnet", "10.23.0.0/24"]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "n"]);
    lab.ok(&["attach", &b, "n"]);
    must(&format!("ip netns del {a}"));
    let out = lab.ok(&["gc"]);
    assert!(out.contains(&format!("removed {a} from n")), "{out}");
    let ls = lab.ok(&["ls"]);
    assert!(!ls.contains(&a) && ls.contains(&b), "{ls}");
    assert_eq!(lab.ok(&["gc"]).trim(), "nothing to remove");
}

/// A lease task that fails (made to panic once, as a debug build's
/// `PLUMB_PANIC_IN=lease` does) is reported by the reconcile loop and
/// started again, and the lease goes on being renewed.
#[test]
fn a_failed_lease_task_is_reported_and_started_again() {
    let lab = Lab::new("dtask");
    let server = lan(&lab);
    let _kea = kea(&lab, &server, 8);
    let daemon = lab.daemon_with_env(&[], &[("PLUMB_PANIC_IN", std::ffi::OsStr::new("lease"))]);
    network(&lab, &[]);
    let c = lab.netns("c1");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    wait_until("the failed lease task to be restarted", 15, || {
        daemon
            .log_text()
            .contains("the lease task failed; restarting it")
    });
    let acquired = |lab: &Lab| dhcp_of(lab, &c)["AcquiredAt"].as_u64().unwrap();
    let t0 = acquired(&lab);
    wait_until("a renewal by the restarted task", 10, || {
        acquired(&lab) > t0
    });
    assert_eq!(lab.ip_of(&c, "lan"), ip, "the renewal keeps the address");
}
