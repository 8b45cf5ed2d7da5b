//! `plumb restore` after a simulated reboot: every plumb link, address,
//! route and nftables table is deleted from the fake host, and the firewall
//! Docker leaves behind is flushed and made again; one restore must bring
//! back full connectivity, with the same addresses.

mod common;

use common::{Lab, must, peer_echo_server, sh, tcp_say, wait_until};

fn reboot(lab: &Lab) {
    lab.reboot();
    lab.docker_forward_drop();
}

#[test]
fn one_restore_brings_back_a_nat_network_a_lab_route_and_every_container() {
    let lab = Lab::new("rs");
    let up = lab.upstream("10.98.0");
    lab.ok(&["network", "create", "natnet", "--subnet", "10.21.0.0/24"]);
    lab.ok(&[
        "network",
        "create",
        "core",
        "--mode",
        "routed",
        "--subnet",
        "10.22.0.0/24",
    ]);
    let (a, b, router) = (lab.netns("a"), lab.netns("b"), lab.netns("router"));
    lab.ok(&["attach", &a, "natnet"]);
    lab.ok(&["attach", &b, "natnet"]);
    // A router answers for the subnet behind it: not its own address.
    lab.ok(&[
        "attach",
        &router,
        "core",
        "--ip",
        "10.22.0.10",
        "--allow-spoofing",
    ]);
    must(&format!("ip -n {router} addr add 172.31.9.1/24 dev lo"));
    lab.ok(&["host", "route", "add", "172.31.9.0/24", "via", "10.22.0.10"]);
    let before_a = lab.inspect(&a);
    let ip_b = lab.ip_of(&b, "natnet");
    // One container dies while the host is down: restore forgets it.
    let gone = lab.netns("gone");
    lab.ok(&["attach", &gone, "natnet"]);

    reboot(&lab);
    must(&format!("ip netns del {gone}"));
    assert!(!lab.ping(&a, &ip_b), "the reboot really cut the network");
    assert!(!common::links(&a).iter().any(|l| l == "eth0"));

    let out = lab.ok(&["restore"]);
    assert!(out.contains("restored bridge pl-natnet"), "{out}");
    assert!(out.contains(&format!("removed {gone} on natnet")), "{out}");
    assert_eq!(lab.inspect(&a), before_a, "same interface, MAC and address");
    assert!(lab.ping(&a, &ip_b), "container to container");
    assert!(lab.ping(&a, "10.21.0.1"), "container to its gateway");
    let (server, port) = peer_echo_server(&up, "10.98.0.1:0");
    let seen = tcp_say(&a, &format!("10.98.0.1:{port}")).expect("NAT and FORWARD accepts are back");
    assert_eq!(seen, "10.98.0.2");
    server.join().unwrap();
    assert!(
        lab.ping(&lab.host, "172.31.9.1"),
        "the host route to the lab"
    );
    assert_eq!(lab.ok(&["ls"]).lines().count(), 4, "header, a, b, router");

    // A second restore finds nothing to do.
    assert_eq!(lab.ok(&["restore"]).trim(), "nothing to restore");
}

#[test]
fn the_daemon_puts_plumbs_table_back_after_a_ruleset_flush() {
    let lab = Lab::new("rf");
    let up = lab.upstream("10.97.0");
    lab.ok(&["network", "create", "natnet", "--subnet", "10.24.0.0/24"]);
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "natnet"]);
    let _daemon = lab.daemon(&[]);
    // Another tool flushes everything, then Docker rebuilds FORWARD DROP.
    reboot_firewall_only(&lab);
    common::wait_until("plumb's table and accepts to come back", 5, || {
        common::sh(&format!(
            "ip netns exec {} nft list table inet plumb",
            lab.host
        ))
        .status
        .success()
            && must(&format!("ip netns exec {} iptables -S FORWARD", lab.host))
                .contains("-i pl-natnet -m comment --comment \"plumb network natnet\" -j ACCEPT")
    });
    let (server, port) = peer_echo_server(&up, "10.97.0.1:0");
    assert_eq!(
        tcp_say(&a, &format!("10.97.0.1:{port}")).unwrap(),
        "10.97.0.2"
    );
    server.join().unwrap();
    // The anti-spoofing guard came back with its container's elements.
    let guard = must(&format!(
        "ip netns exec {} nft list set bridge plumb guarded",
        lab.host
    ));
    let port = lab.inspect(&a)["NetworkSettings"]["Networks"]["natnet"]["HostIfName"]
        .as_str()
        .expect("HostIfName")
        .to_string();
    assert!(guard.contains(&port), "{guard}");
}

/// Every nftables table gone; Docker starts again with FORWARD policy DROP.
fn reboot_firewall_only(lab: &Lab) {
    must(&format!("ip netns exec {} nft flush ruleset", lab.host));
    lab.docker_forward_drop();
}

/// Partial losses: only the bridge deleted (its ports stay, off any
/// bridge), or one container's host end set down. One restore puts the
/// ports back on the bridge made anew, and the end up; a second one finds
/// nothing to do.
#[test]
fn restore_puts_surviving_ports_back_on_their_bridge_and_up() {
    let lab = Lab::new("rp");
    lab.ok(&[
        "network",
        "create",
        "pnet",
        "--subnet",
        "10.23.0.0/24",
        "--isolate-containers",
    ]);
    lab.ok(&["network", "create", "qnet", "--subnet", "10.22.0.0/24"]);
    let (a, b, c) = (lab.netns("a"), lab.netns("b"), lab.netns("c"));
    for (ns, net) in [(&a, "pnet"), (&b, "pnet"), (&c, "qnet")] {
        lab.ok(&["attach", ns, net]);
    }
    let port = |ns: &str, net: &str| {
        lab.inspect(ns)["NetworkSettings"]["Networks"][net]["HostIfName"]
            .as_str()
            .expect("HostIfName")
            .to_string()
    };
    let (pa, pb, pc) = (port(&a, "pnet"), port(&b, "pnet"), port(&c, "qnet"));
    must(&format!("ip -n {} link del pl-pnet", lab.host));
    must(&format!("ip -n {} link set {pc} down", lab.host));
    assert!(!lab.ping(&a, "10.23.0.1"));
    assert!(!lab.ping(&c, "10.22.0.1"));

    let out = lab.ok(&["restore"]);
    assert!(out.contains("restored bridge pl-pnet"), "{out}");
    for p in [&pa, &pb] {
        let link = must(&format!("ip -n {} -d link show {p}", lab.host));
        assert!(link.contains("master pl-pnet"), "{link}");
        assert!(link.contains("state UP"), "{link}");
        // The port's isolation came back with its membership.
        assert!(link.contains("isolated on"), "{link}");
    }
    // The first packet may meet a neighbour entry that failed while the
    // port was away: a few tries within a deadline.
    wait_until("a to reach its gateway again", 10, || {
        lab.ping(&a, "10.23.0.1")
    });
    wait_until("c to reach its gateway again", 10, || {
        lab.ping(&c, "10.22.0.1")
    });
    assert!(
        !lab.ping(&a, &lab.ip_of(&b, "pnet")),
        "isolated containers stay apart"
    );
    assert_eq!(lab.ok(&["restore"]).trim(), "nothing to restore");
}

/// `restore` compares what exists with the record, not only whether it
/// exists: an MTU changed, a route deleted, a rate limit's qdisc removed
/// (on the container's interface and on the host end) are each put back,
/// and a second restore finds nothing.
#[test]
fn restore_repairs_mtu_routes_and_rate_limits_of_an_interface_that_is_there() {
    let lab = Lab::new("rcmp");
    lab.ok(&[
        "network",
        "create",
        "cnet",
        "--subnet",
        "10.24.0.0/24",
        "--route",
        "10.124.0.0/16",
        "via",
        "10.24.0.1",
    ]);
    let c = lab.netns("c");
    lab.ok(&[
        "attach",
        &c,
        "cnet",
        "--mtu",
        "1400",
        "--egress-rate",
        "20mbit",
        "--ingress-rate",
        "10mbit",
    ]);
    let port = lab.inspect(&c)["NetworkSettings"]["Networks"]["cnet"]["HostIfName"]
        .as_str()
        .expect("HostIfName")
        .to_string();
    must(&format!("ip -n {c} link set eth0 mtu 1300"));
    must(&format!("ip -n {c} route del 10.124.0.0/16"));
    must(&format!("ip -n {c} route del default"));
    must(&format!("tc -n {c} qdisc del dev eth0 root"));
    must(&format!("tc -n {} qdisc del dev {port} root", lab.host));

    let out = lab.ok(&["restore"]);
    assert!(out.contains("cnet (eth0)"), "{out}");
    assert!(must(&format!("ip -n {c} link show eth0")).contains("mtu 1400"));
    let routes = must(&format!("ip -n {c} route"));
    assert!(
        routes.contains("10.124.0.0/16 via 10.24.0.1") && routes.contains("default via 10.24.0.1"),
        "{routes}"
    );
    assert!(must(&format!("tc -n {c} qdisc show dev eth0")).contains("tbf"));
    assert!(must(&format!("tc -n {} qdisc show dev {port}", lab.host)).contains("tbf"));
    assert_eq!(lab.ok(&["restore"]).trim(), "nothing to restore");
}

/// The daemon hears the kernel: a bridge deleted, a port taken off its
/// bridge or set down, the gateway address removed, a lab's host route
/// deleted, a container's interface deleted (its host end goes with it)
/// are each repaired by the running daemon without any command.
#[test]
fn the_daemon_repairs_what_someone_took_away_without_being_asked() {
    let lab = Lab::new("rlive");
    lab.ok(&["network", "create", "lnet", "--subnet", "10.25.0.0/24"]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "lnet"]);
    lab.ok(&["attach", &b, "lnet", "--ip", "10.25.0.50"]);
    let port = |ns: &str| {
        lab.inspect(ns)["NetworkSettings"]["Networks"]["lnet"]["HostIfName"]
            .as_str()
            .expect("HostIfName")
            .to_string()
    };
    let pa = port(&a);
    lab.ok(&["host", "route", "add", "10.125.0.0/16", "via", "10.25.0.50"]);
    let _daemon = lab.daemon(&[]);
    let host = lab.host.clone();
    let on_bridge = |p: &str| {
        let link = sh(&format!("ip -n {host} link show {p}"));
        let text = String::from_utf8_lossy(&link.stdout).into_owned();
        text.contains("master pl-lnet") && text.contains("state UP")
    };
    let reachable = |from: &str| lab.ping(from, "10.25.0.1") && lab.ping(from, "10.25.0.50");

    must(&format!("ip -n {host} link del pl-lnet"));
    wait_until("the bridge and its ports to come back", 10, || {
        on_bridge(&pa) && on_bridge(&port(&b))
    });
    wait_until("a to reach the gateway and b again", 10, || reachable(&a));

    must(&format!("ip -n {host} link set {pa} nomaster"));
    wait_until("a's port back on its bridge", 10, || on_bridge(&pa));

    must(&format!("ip -n {host} link set {pa} down"));
    wait_until("a's port up again", 10, || on_bridge(&pa));

    must(&format!("ip -n {host} addr del 10.25.0.1/24 dev pl-lnet"));
    wait_until("the gateway address back", 10, || {
        must(&format!("ip -n {host} -4 addr show dev pl-lnet")).contains("10.25.0.1/24")
    });

    must(&format!("ip -n {host} route del 10.125.0.0/16"));
    wait_until("the host route back", 10, || {
        must(&format!("ip -n {host} route show 10.125.0.0/16")).contains("via 10.25.0.50")
    });

    must(&format!("ip -n {b} link del eth0"));
    wait_until("b's interface made again with its address", 10, || {
        String::from_utf8_lossy(&sh(&format!("ip -n {b} -4 addr show dev eth0")).stdout)
            .contains("10.25.0.50/24")
    });
    wait_until("a to reach b again", 10, || reachable(&a));
}

/// `gc` deletes what plumb can tell as its own and no record has (an older
/// plumb killed half way, a lost store): a host veth named as plumb names
/// them, a rule pair at its priorities and its table's default route; and
/// leaves alike things that are not its (another name, another priority,
/// a rule to the main table without plumb's suppression).
#[test]
fn gc_deletes_orphans_plumb_names_and_leaves_the_rest() {
    let lab = Lab::new("orph");
    let host = lab.host.clone();
    lab.ok(&["network", "create", "onet", "--subnet", "10.26.0.0/24"]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "onet"]);
    let mine = lab.inspect(&c)["NetworkSettings"]["Networks"]["onet"]["HostIfName"]
        .as_str()
        .unwrap()
        .to_string();
    for cmd in [
        "link add pv0123456789ab type veth peer name pvpeer0",
        "link add userveth0 type veth peer name userveth1",
        "link set userveth0 up",
        "link set userveth1 up",
        "addr add 10.250.0.1/30 dev userveth0",
        "rule add from 10.1.0.0/24 priority 10500 lookup main suppress_prefixlength 0",
        "rule add from 10.1.0.0/24 priority 10501 table 20500",
        "route add default via 10.250.0.2 table 20500",
        "rule add from 10.2.0.0/24 priority 9000 table 20600",
        "route add default via 10.250.0.2 table 20600",
        "rule add from 10.3.0.0/24 priority 10700 lookup main",
    ] {
        must(&format!("ip -n {host} {cmd}"));
    }
    let out = lab.ok(&["gc"]);
    assert!(out.contains("interface pv0123456789ab"), "{out}");
    assert!(
        out.contains("routing rule 10500") && out.contains("routing rule 10501"),
        "{out}"
    );
    assert!(out.contains("table 20500"), "{out}");
    let links = common::links(&host);
    assert!(!links.contains(&"pv0123456789ab".to_string()), "{links:?}");
    assert!(
        links.contains(&"userveth0".to_string()) && links.contains(&mine),
        "{links:?}"
    );
    let rules = must(&format!("ip -n {host} rule"));
    assert!(
        !rules.contains("10500:") && !rules.contains("10501:"),
        "{rules}"
    );
    assert!(
        rules.contains("9000:") && rules.contains("10700:"),
        "{rules}"
    );
    assert!(
        must(&format!("ip -n {host} route show table 20500"))
            .trim()
            .is_empty()
    );
    assert!(must(&format!("ip -n {host} route show table 20600")).contains("default"));
    assert!(lab.ping(&c, "10.26.0.1"), "the attachment is untouched");
    assert_eq!(lab.ok(&["gc"]).trim(), "nothing to remove");
}
