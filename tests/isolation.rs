//! Isolation: plumb networks do not reach each other through the host
//! (published ports excepted), and `--isolate-containers` keeps the
//! containers of one network apart while they still reach their gateway
//! and the world.

mod common;

use common::{Lab, peer_echo_server, tcp_say};

#[test]
fn networks_are_isolated_from_each_other_but_not_from_the_world() {
    let lab = Lab::new("iso");
    lab.upstream("10.95.0");
    lab.ok(&[
        "network",
        "create",
        "red",
        "--subnet",
        "10.27.0.0/24",
        "--tenant",
        "acme",
    ]);
    lab.ok(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.28.0.0/24",
        "--tenant",
        "globex",
    ]);
    lab.ok(&[
        "network",
        "create",
        "lab",
        "--mode",
        "routed",
        "--subnet",
        "10.29.0.0/24",
    ]);
    let (a, a2, b, c) = (
        lab.netns("a"),
        lab.netns("a2"),
        lab.netns("b"),
        lab.netns("c"),
    );
    lab.ok(&["attach", &a, "red"]);
    lab.ok(&["attach", &a2, "red"]);
    lab.ok(&["attach", &b, "blue", "--publish", "8081:80"]);
    lab.ok(&["attach", &c, "lab"]);
    let (ip_a2, ip_b, ip_c) = (
        lab.ip_of(&a2, "red"),
        lab.ip_of(&b, "blue"),
        lab.ip_of(&c, "lab"),
    );

    assert!(lab.ping(&a, &ip_a2), "inside one network");
    assert!(!lab.ping(&a, &ip_b), "red to blue");
    assert!(!lab.ping(&b, &lab.ip_of(&a, "red")), "blue to red");
    assert!(!lab.ping(&a, &ip_c), "nat to routed");
    assert!(!lab.ping(&c, &ip_b), "routed to nat");
    assert!(lab.ping(&a, "10.95.0.1"), "the world");
    assert!(
        lab.ping(&lab.host, &ip_c),
        "the host reaches the routed network"
    );
    // What blue publishes on the host is reachable from red.
    let (server, _) = peer_echo_server(&b, "0.0.0.0:80");
    assert!(tcp_say(&a, "10.95.0.2:8081").is_ok(), "a published port");
    server.join().unwrap();
    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "red"])).unwrap();
    assert_eq!(net["Tenant"], "acme");
}

#[test]
fn isolated_containers_reach_the_gateway_and_the_world_but_not_each_other() {
    let lab = Lab::new("isc");
    lab.upstream("10.94.0");
    lab.ok(&[
        "network",
        "create",
        "shared",
        "--subnet",
        "10.30.0.0/24",
        "--isolate-containers",
    ]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "shared"]);
    lab.ok(&["attach", &b, "shared"]);
    assert!(
        !lab.ping(&a, &lab.ip_of(&b, "shared")),
        "neighbours are apart"
    );
    assert!(lab.ping(&a, "10.30.0.1"), "the gateway");
    assert!(lab.ping(&b, "10.94.0.1"), "the world");
    let err = lab.fails(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        "uplink0",
        "--subnet",
        "10.94.0.0/24",
        "--isolate-containers",
    ]);
    assert!(err.contains("--isolate-containers"), "{err}");
}
