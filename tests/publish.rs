//! Port publishing on a NAT network: from another machine, from the host
//! itself (its address and 127.0.0.1), and from a container of the same
//! network (hairpin), with Docker's FORWARD DROP present.

mod common;

use common::{Lab, must, peer_echo_server, peer_echo_service, tcp_say};

#[test]
fn a_published_port_answers_from_outside_the_host_and_the_same_network() {
    let lab = Lab::new("pub");
    let outside = lab.netns("out");
    lab.wire(
        &lab.host,
        "uplink0",
        Some("10.96.0.2/24"),
        &outside,
        "eth0",
        Some("10.96.0.1/24"),
    );
    lab.docker_forward_drop();
    lab.ok(&["network", "create", "web", "--subnet", "10.25.0.0/24"]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&[
        "attach",
        &a,
        "web",
        "--publish",
        "8080:80",
        "--publish",
        "9000-9001:7000-7001/tcp",
    ]);
    lab.ok(&["attach", &b, "web"]);
    let ip_b = lab.ip_of(&b, "web");

    peer_echo_service(&a, "0.0.0.0:80");
    assert_eq!(
        tcp_say(&outside, "10.96.0.2:8080").unwrap(),
        "10.96.0.1",
        "from another machine, its own address"
    );
    let from_host = tcp_say(&lab.host, "10.96.0.2:8080").unwrap();
    assert!(from_host.starts_with("10."), "from the host: {from_host}");
    assert_eq!(
        tcp_say(&lab.host, "127.0.0.1:8080").unwrap(),
        "10.25.0.1",
        "localhost, masqueraded"
    );
    assert_eq!(
        tcp_say(&b, "10.96.0.2:8080").unwrap(),
        "10.25.0.1",
        "hairpin, masqueraded"
    );
    assert_ne!(ip_b, "10.25.0.1");
    // A range maps port to port.
    let (server, _) = peer_echo_server(&a, "0.0.0.0:7001");
    assert_eq!(tcp_say(&outside, "10.96.0.2:9001").unwrap(), "10.96.0.1");
    server.join().unwrap();

    // The port is taken: said plainly, nothing changes.
    let c = lab.netns("c");
    let err = lab.fails(&["attach", &c, "web", "--publish", "8080:80"]);
    assert!(
        err.contains("--publish `8080:80/tcp`") && err.contains(&format!("published by `{a}`")),
        "{err}"
    );
    assert_eq!(common::links(&c), vec!["lo"]);
    let err = lab.fails(&["attach", &c, "web", "--publish", "10.96.0.2:9001:80"]);
    assert!(err.contains("already published"), "{err}");
    let err = lab.fails(&["attach", &c, "web", "--publish", "80:80/sctp"]);
    assert!(err.contains("tcp or udp"), "{err}");

    // Detach frees the port for someone else.
    lab.ok(&["detach", &a]);
    assert!(
        tcp_say(&outside, "10.96.0.2:8080").is_err(),
        "closed after detach"
    );
    lab.ok(&["attach", &c, "web", "--publish", "8080:80"]);
    peer_echo_service(&c, "0.0.0.0:80");
    assert_eq!(tcp_say(&outside, "10.96.0.2:8080").unwrap(), "10.96.0.1");

    // A flushed ruleset takes the published ports with it; restore brings
    // them back from the store.
    must(&format!("ip netns exec {} nft flush ruleset", lab.host));
    assert!(tcp_say(&outside, "10.96.0.2:8080").is_err());
    lab.ok(&["restore"]);
    assert_eq!(tcp_say(&outside, "10.96.0.2:8080").unwrap(), "10.96.0.1");
}

#[test]
fn publishing_is_for_nat_networks() {
    let lab = Lab::new("pubr");
    lab.ok(&[
        "network",
        "create",
        "r",
        "--mode",
        "routed",
        "--subnet",
        "10.26.0.0/24",
    ]);
    let a = lab.netns("a");
    let err = lab.fails(&["attach", &a, "r", "--publish", "8080:80"]);
    assert!(err.contains("not a nat network"), "{err}");
    assert_eq!(common::links(&a), vec!["lo"]);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
}

/// Without Docker's DROP (no iptables at all), a NAT network is still
/// reached from outside only through its published ports, whatever a rule
/// allows: plumb's own forward chain drops the rest. A routed network
/// beside it answers directly, which shows the outside host's route works.
#[test]
fn a_nat_network_is_reached_from_outside_only_through_published_ports() {
    let lab = Lab::new("pubo");
    // The host's uplink0 is 10.94.0.2, the outside host 10.94.0.1.
    let outside = lab.upstream("10.94.0");
    must(&format!(
        "ip netns exec {} sysctl -qw net.ipv4.ip_forward=1",
        lab.host
    ));
    for subnet in ["10.27.0.0/24", "10.28.0.0/24"] {
        must(&format!("ip -n {outside} route add {subnet} via 10.94.0.2"));
    }
    lab.ok(&["network", "create", "n", "--subnet", "10.27.0.0/24"]);
    lab.ok(&[
        "network",
        "create",
        "r",
        "--mode",
        "routed",
        "--subnet",
        "10.28.0.0/24",
    ]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "n", "--publish", "8081:80"]);
    lab.ok(&["attach", &b, "r"]);
    lab.ok(&["policy", "add", "n", "allow", "from", "10.94.0.0/24"]);
    assert!(lab.ping(&outside, &lab.ip_of(&b, "r")), "routed: reachable");
    assert!(
        !lab.ping(&outside, &lab.ip_of(&a, "n")),
        "nat: not reachable directly, though a rule allows it"
    );
    let (server, _) = peer_echo_server(&a, "0.0.0.0:80");
    assert_eq!(tcp_say(&outside, "10.94.0.2:8081").unwrap(), "10.94.0.1");
    server.join().unwrap();
    // And the container still reaches out (answers come back).
    assert!(lab.ping(&a, "10.94.0.1"));
}
