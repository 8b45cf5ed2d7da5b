//! macvlan networks on a stand-in "production LAN": a LAN namespace holding
//! a switch (bridge) with a router (the gateway) and another LAN host; the
//! fake host's parent interface is a veth into that switch.

mod common;

use common::{Lab, must, peer_echo_server, tcp_say};

/// The LAN: switch `br0` in namespace `lan`, router 192.168.60.1, another
/// host 192.168.60.20, and the fake host's `lan0` at 192.168.60.2.
struct Lan {
    router: String,
    other: String,
}

fn lan(lab: &Lab) -> Lan {
    let switch = lab.netns("lan");
    must(&format!(
        "ip -n {switch} link add br0 type bridge && ip -n {switch} link set br0 up"
    ));
    let router = lab.netns("router");
    let other = lab.netns("lanhost");
    for (ns, ip, port) in [
        (&router, "192.168.60.1/24", "p-router"),
        (&other, "192.168.60.20/24", "p-other"),
    ] {
        lab.wire(ns, "eth0", Some(ip), &switch, port, None);
        must(&format!("ip -n {switch} link set {port} master br0"));
    }
    lab.wire(
        &lab.host,
        "lan0",
        Some("192.168.60.2/24"),
        &switch,
        "p-host",
        None,
    );
    must(&format!("ip -n {switch} link set p-host master br0"));
    Lan { router, other }
}

fn create(lab: &Lab, name: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        name,
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--subnet",
        "192.168.60.0/24",
        "--gateway",
        "192.168.60.1",
        "--ip-range",
        "192.168.60.128/25",
    ];
    args.extend_from_slice(extra);
    lab.ok(&args);
}

fn mac_of(lab: &Lab, target: &str, network: &str) -> String {
    lab.inspect(target)["NetworkSettings"]["Networks"][network]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn containers_sit_on_the_lan_with_their_own_mac() {
    let lab = Lab::new("mvl");
    let lan = lan(&lab);
    create(&lab, "prod", &[]);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.ok(&["attach", &a, "prod"]);
    lab.ok(&["attach", &b, "prod", "--ip", "192.168.60.200"]);
    let ip_a = lab.ip_of(&a, "prod");
    assert_eq!(ip_a, "192.168.60.128");

    assert!(
        lab.ping(&a, "192.168.60.1"),
        "container reaches the LAN's router"
    );
    assert!(
        lab.ping(&a, "192.168.60.20"),
        "container reaches another LAN host"
    );
    assert!(
        lab.ping(&a, "192.168.60.200"),
        "bridge mode: containers on one parent talk"
    );
    // The LAN sees the container's own address and its own MAC.
    let (server, port) = peer_echo_server(&lan.other, "192.168.60.20:0");
    assert_eq!(tcp_say(&a, &format!("192.168.60.20:{port}")).unwrap(), ip_a);
    server.join().unwrap();
    let neigh = must(&format!("ip -n {} neigh show 192.168.60.128", lan.router));
    assert!(neigh.contains(&mac_of(&lab, &a, "prod")), "{neigh}");
    let route = must(&format!("ip -n {a} route show default"));
    assert!(route.contains("via 192.168.60.1 dev eth0"), "{route}");

    // The interface was made on the host under a temporary name and moved:
    // nothing of it is left on the host.
    let host_links = lab.host_links();
    assert_eq!(
        host_links,
        vec!["lo".to_string(), "lan0".to_string()],
        "{host_links:?}"
    );

    lab.ok(&["detach", &a]);
    assert!(!common::links(&a).contains(&"eth0".to_string()));
    lab.ok(&["detach", &a]);
    lab.ok(&["network", "rm", "prod", "--force"]);
    assert!(
        !common::links(&b).contains(&"eth0".to_string()),
        "--force detached b too"
    );
}

#[test]
fn private_mode_keeps_containers_apart_but_not_from_the_lan() {
    let lab = Lab::new("mvp");
    let _lan = lan(&lab);
    create(&lab, "priv", &["--macvlan-mode", "private"]);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.ok(&["attach", &a, "priv"]);
    lab.ok(&["attach", &b, "priv"]);
    let ip_b = lab.ip_of(&b, "priv");
    assert!(lab.ping(&a, "192.168.60.1"), "the LAN is reachable");
    assert!(
        !lab.ping(&a, &ip_b),
        "private: no traffic between macvlans of one parent"
    );
}

#[test]
fn vepa_mode_sends_container_traffic_to_the_switch() {
    let lab = Lab::new("mvv");
    let _lan = lan(&lab);
    create(&lab, "vepa", &["--macvlan-mode", "vepa"]);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.ok(&["attach", &a, "vepa"]);
    lab.ok(&["attach", &b, "vepa"]);
    assert!(lab.ping(&a, "192.168.60.1"));
    // The LAN's switch does not hairpin: a frame for b leaves by the parent
    // and never comes back.
    assert!(!lab.ping(&a, &lab.ip_of(&b, "vepa")));
}

#[test]
fn the_host_reaches_its_containers_only_through_the_shim() {
    let lab = Lab::new("mvs");
    let _lan = lan(&lab);
    create(&lab, "noshim", &[]);
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "noshim"]);
    let ip = lab.ip_of(&a, "noshim");
    assert!(
        !lab.ping(&lab.host, &ip),
        "a macvlan parent never reaches its own macvlans"
    );
    lab.ok(&["detach", &a]);
    lab.ok(&["network", "rm", "noshim"]);

    create(&lab, "shim", &["--host-shim", "192.168.60.250"]);
    lab.ok(&["attach", &a, "shim"]);
    let ip = lab.ip_of(&a, "shim");
    assert!(
        lab.ping(&lab.host, &ip),
        "host -> container through the shim"
    );
    let (server, port) = peer_echo_server(&a, "0.0.0.0:0");
    assert_eq!(
        tcp_say(&lab.host, &format!("{ip}:{port}")).unwrap(),
        "192.168.60.250",
        "the container sees the shim's address"
    );
    server.join().unwrap();
    let shim = must(&format!("ip -n {} -o addr show dev ps-shim", lab.host));
    assert!(shim.contains("192.168.60.250/32"), "{shim}");
    let err = lab.fails(&["attach", &lab.netns("b"), "shim", "--ip", "192.168.60.250"]);
    assert!(
        err.contains("already in use"),
        "the shim's address is reserved: {err}"
    );
    lab.ok(&["network", "rm", "shim", "--force"]);
    assert_eq!(
        lab.host_links(),
        vec!["lo".to_string(), "lan0".to_string()],
        "shim removed with the network"
    );
}

#[test]
fn bad_parents_are_refused_and_change_nothing() {
    let lab = Lab::new("mvbad");
    let _lan = lan(&lab);
    // (No dummy driver in every kernel: veth pairs stand in.)
    let h = &lab.host;
    must(&format!(
        "ip -n {h} link add down0 type veth peer name down0p"
    ));
    must(&format!(
        "ip -n {h} link add brx type bridge && ip -n {h} link add enslaved0 type veth peer name enslaved0p"
    ));
    must(&format!(
        "ip -n {h} link set enslaved0 master brx && ip -n {h} link set enslaved0 up"
    ));
    let base = [
        "network",
        "create",
        "x",
        "--driver",
        "macvlan",
        "--subnet",
        "192.168.61.0/24",
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--parent", "nosuch0"],
            &["--parent", "nosuch0", "no such interface"],
        ),
        (&["--parent", "down0"], &["--parent", "down0", "is down"]),
        (
            &["--parent", "enslaved0"],
            &["--parent", "enslaved0", "enslaved"],
        ),
        (&[], &["--parent", "needs the host interface"]),
        (
            &["--parent", "lan0", "--macvlan-mode", "sideways"],
            &["--macvlan-mode", "sideways"],
        ),
        (
            &["--parent", "lan0", "--mode", "nat"],
            &["--mode", "not an option of the macvlan driver"],
        ),
        (
            &["--parent", "lan0", "--host-shim", "10.0.0.1"],
            &["--host-shim", "10.0.0.1", "outside"],
        ),
    ];
    let links_before = lab.host_links();
    for (extra, needles) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let err = lab.fails(&args);
        for n in *needles {
            assert!(err.contains(n), "{args:?}: should mention `{n}`: {err}");
        }
        assert_eq!(lab.host_links(), links_before, "{args:?} changed the host");
        assert_eq!(
            lab.ok(&["network", "ls"]).lines().count(),
            1,
            "{args:?} left a network"
        );
    }
}

#[test]
fn a_container_on_a_nat_bridge_and_a_macvlan_lan_chooses_its_default_route() {
    let lab = Lab::new("mvmix");
    let _lan = lan(&lab);
    lab.ok(&["network", "create", "inside", "--subnet", "10.50.0.0/24"]);
    create(&lab, "prod", &[]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "inside"]);
    lab.ok(&["attach", &c, "prod", "--default-route", "replace"]);
    let route = must(&format!("ip -n {c} route show default"));
    assert!(
        route.contains("via 192.168.60.1 dev eth1"),
        "the LAN carries the default route: {route}"
    );
    assert!(lab.ping(&c, "10.50.0.1"), "the bridge network still works");
    assert!(lab.ping(&c, "192.168.60.20"), "and so does the LAN");
}

#[test]
fn a_passthru_parent_takes_one_container_only() {
    let lab = Lab::new("mvpt");
    let _lan = lan(&lab);
    create(&lab, "pt", &["--macvlan-mode", "passthru"]);
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "pt"]);
    assert!(lab.ping(&a, "192.168.60.1"));
    let b = lab.netns("b");
    let err = lab.fails(&["attach", &b, "pt"]);
    assert!(
        err.contains("--parent") && err.contains("passthru"),
        "{err}"
    );
    assert_eq!(
        common::links(&b),
        vec!["lo".to_string()],
        "nothing half-made in b"
    );
}

/// Whether this kernel can make a link of `kind` (probed in a scratch namespace).
fn kernel_has(lab: &Lab, kind: &str) -> bool {
    let ns = lab.netns(&format!("probe{kind}"));
    must(&format!("ip -n {ns} link add p0 type veth peer name p1"));
    let args = match kind {
        "vlan" => "link p0 name p0.5 type vlan id 5",
        _ => "link p0 name pi0 type ipvlan mode l2",
    };
    common::sh(&format!("ip -n {ns} link add {args}"))
        .status
        .success()
}

#[test]
fn ipvlan_and_vlan_say_which_kernel_module_is_missing_or_work() {
    let lab = Lab::new("mvmod");
    let _lan = lan(&lab);
    let before = lab.host_links();
    let ipvlan = lab.plumb(&[
        "network",
        "create",
        "iv",
        "--driver",
        "ipvlan",
        "--parent",
        "lan0",
        "--subnet",
        "192.168.62.0/24",
    ]);
    if kernel_has(&lab, "ipvlan") {
        assert!(
            ipvlan.status.success(),
            "{}",
            String::from_utf8_lossy(&ipvlan.stderr)
        );
        lab.ok(&["network", "rm", "iv"]);
    } else {
        let err = String::from_utf8_lossy(&ipvlan.stderr);
        assert!(
            err.contains("no ipvlan support") && err.contains("ipvlan module"),
            "{err}"
        );
    }
    let vlan = lab.plumb(&[
        "network",
        "create",
        "vv",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--vlan",
        "10",
        "--subnet",
        "192.168.63.0/24",
    ]);
    if kernel_has(&lab, "vlan") {
        assert!(
            vlan.status.success(),
            "{}",
            String::from_utf8_lossy(&vlan.stderr)
        );
        lab.ok(&["network", "rm", "vv"]);
    } else {
        let err = String::from_utf8_lossy(&vlan.stderr);
        assert!(
            err.contains("--parent `lan0.10`") && err.contains("8021q"),
            "{err}"
        );
    }
    assert_eq!(
        lab.host_links(),
        before,
        "nothing left on the host either way"
    );
    assert_eq!(lab.ok(&["network", "ls"]).lines().count(), 1);
}

#[test]
fn the_container_name_may_exist_on_the_host() {
    let lab = Lab::new("mvname");
    let _lan = lan(&lab);
    // The host has an eth0 of its own: the macvlan is made under a temporary
    // name and becomes eth0 only inside the target.
    must(&format!(
        "ip -n {} link add eth0 type veth peer name eth0p",
        lab.host
    ));
    create(&lab, "prod", &[]);
    let a = lab.netns("a");
    lab.ok(&["attach", &a, "prod", "--ifname", "eth0"]);
    assert!(lab.ping(&a, "192.168.60.1"));
    assert!(
        lab.host_links().contains(&"eth0".to_string()),
        "the host's eth0 is untouched"
    );
}
