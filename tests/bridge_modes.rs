//! Real namespaces, real packets: the three bridge modes, inside a fake host.

mod common;

use common::{Lab, must, peer_echo_server, tcp_say};

#[test]
fn nat_network_connects_containers_host_and_masquerades_upstream() {
    let lab = Lab::new("nat");
    let upstream = lab.upstream("10.99.0");
    lab.docker_forward_drop();
    lab.ok(&[
        "network",
        "create",
        "natnet",
        "--driver",
        "bridge",
        "--subnet",
        "10.20.0.0/24",
        "--mode",
        "nat",
    ]);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.ok(&["attach", &a, "natnet"]);
    lab.ok(&["attach", &b, "natnet"]);
    let (ip_a, ip_b) = (lab.ip_of(&a, "natnet"), lab.ip_of(&b, "natnet"));
    assert_eq!(ip_a, "10.20.0.2");
    assert_eq!(ip_b, "10.20.0.3");

    assert!(lab.ping(&a, &ip_b), "container to container");
    // An IPv4-only network gives the container no IPv6 link-local address
    // (whose detection chatter would reach every container of the bridge).
    let v6 = must(&format!("ip -n {a} -6 addr show dev eth0"));
    assert!(v6.trim().is_empty(), "no IPv6 on eth0: {v6}");
    assert!(lab.ping(&a, "10.20.0.1"), "container to host (gateway)");
    assert!(lab.ping(&lab.host, &ip_a), "host to container");

    // Upstream must see the host's uplink address, not the container's.
    let (server, port) = peer_echo_server(&upstream, "10.99.0.1:0");
    let seen = tcp_say(&a, &format!("10.99.0.1:{port}"))
        .expect("container reaches upstream through NAT despite FORWARD DROP");
    assert_eq!(seen, "10.99.0.2", "upstream saw the host's address");
    server.join().unwrap();

    let ruleset = must(&format!(
        "ip netns exec {} nft list table inet plumb",
        lab.host
    ));
    assert!(ruleset.contains("masquerade"), "{ruleset}");
}

#[test]
fn bridged_network_puts_containers_on_the_lan_without_nat() {
    let lab = Lab::new("brd");
    // The "production LAN": a router namespace at 192.168.50.1 behind the
    // host's uplink lan0, which holds 192.168.50.2 before plumb takes it.
    let router = lab.netns("lanrt");
    lab.wire(
        &lab.host,
        "lan0",
        Some("192.168.50.2/24"),
        &router,
        "eth0",
        Some("192.168.50.1/24"),
    );
    lab.ok(&[
        "network",
        "create",
        "lan",
        "--mode",
        "bridged",
        "--uplink",
        "lan0",
        "--subnet",
        "192.168.50.0/24",
        "--gateway",
        "192.168.50.1",
        "--ip-range",
        "192.168.50.128/25",
    ]);
    // The host keeps its LAN address, now on the bridge.
    let bridge_addrs = must(&format!("ip -n {} -o addr show dev pl-lan", lab.host));
    assert!(bridge_addrs.contains("192.168.50.2/24"), "{bridge_addrs}");
    assert!(
        lab.ping(&lab.host, "192.168.50.1"),
        "host still reaches the LAN"
    );

    let c = lab.netns("c");
    lab.ok(&["attach", &c, "lan"]);
    let ip = lab.ip_of(&c, "lan");
    assert_eq!(ip, "192.168.50.128", "first address of --ip-range");
    assert!(
        lab.ping(&c, "192.168.50.1"),
        "container reaches the LAN router"
    );

    // The router sees the container's own address and its own MAC: one IP per container on the LAN.
    let (server, port) = peer_echo_server(&router, "192.168.50.1:0");
    assert_eq!(tcp_say(&c, &format!("192.168.50.1:{port}")).unwrap(), ip);
    server.join().unwrap();
    let mac = lab.inspect(&c)["NetworkSettings"]["Networks"]["lan"]["MacAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let neigh = must(&format!("ip -n {router} neigh show {ip}"));
    assert!(
        neigh.contains(&mac),
        "router's ARP entry for {ip} is the container's MAC {mac}: {neigh}"
    );
    // Default route via the LAN's router.
    let routes = must(&format!("ip -n {c} route show default"));
    assert!(routes.contains("via 192.168.50.1"), "{routes}");

    // Removing the network gives the uplink its address back.
    lab.ok(&["detach", &c]);
    lab.ok(&["network", "rm", "lan"]);
    let uplink = must(&format!("ip -n {} -o addr show dev lan0", lab.host));
    assert!(uplink.contains("192.168.50.2/24"), "{uplink}");
    assert!(!lab.host_links().contains(&"pl-lan".to_string()));
}

#[test]
fn routed_network_is_reachable_from_outside_without_nat() {
    let lab = Lab::new("rtd");
    lab.docker_forward_drop();
    let outside = lab.netns("out");
    lab.wire(
        &lab.host,
        "ext0",
        Some("172.31.0.2/24"),
        &outside,
        "eth0",
        Some("172.31.0.1/24"),
    );
    must(&format!(
        "ip -n {outside} route add 10.30.0.0/24 via 172.31.0.2"
    ));
    lab.ok(&[
        "network",
        "create",
        "rt",
        "--subnet",
        "10.30.0.0/24",
        "--mode",
        "routed",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "rt"]);
    let ip = lab.ip_of(&c, "rt");
    assert!(
        lab.ping(&outside, &ip),
        "outside reaches the container through its route"
    );
    // The container sees the outside machine's real address: no NAT either way.
    let (server, port) = peer_echo_server(&c, "0.0.0.0:0");
    assert_eq!(
        tcp_say(&outside, &format!("{ip}:{port}")).unwrap(),
        "172.31.0.1"
    );
    server.join().unwrap();
    let ruleset = common::sh(&format!("ip netns exec {} nft list ruleset", lab.host));
    assert!(!String::from_utf8_lossy(&ruleset.stdout).contains("masquerade"));
}

#[test]
fn several_attachments_per_target_dual_stack_and_options() {
    let lab = Lab::new("multi");
    lab.ok(&[
        "network",
        "create",
        "one",
        "--subnet",
        "10.41.0.0/24",
        "--subnet",
        "fd41::/64",
    ]);
    lab.ok(&[
        "network",
        "create",
        "two",
        "--subnet",
        "10.42.0.0/24",
        "--route",
        "10.142.0.0/16",
        "via",
        "10.42.0.1",
    ]);
    let c = lab.netns("c");
    lab.ok(&[
        "attach",
        &c,
        "one",
        "--mac",
        "02:00:00:aa:bb:cc",
        "--mtu",
        "1400",
    ]);
    lab.ok(&[
        "attach",
        &c,
        "two",
        "--ifname",
        "lan1",
        "--ip",
        "10.42.0.77",
        "--default-route",
        "replace",
    ]);
    let v = lab.inspect(&c);
    let one = &v["NetworkSettings"]["Networks"]["one"];
    let two = &v["NetworkSettings"]["Networks"]["two"];
    assert_eq!(one["IfName"], "eth0");
    assert_eq!(one["MacAddress"], "02:00:00:aa:bb:cc");
    assert_eq!(one["MTU"], 1400);
    assert_eq!(one["GlobalIPv6Address"], "fd41::2");
    assert_eq!(one["IPv6Gateway"], "fd41::1");
    assert_eq!(two["IfName"], "lan1");
    assert_eq!(two["IPAddress"], "10.42.0.77");
    assert_eq!(two["IPPrefixLen"], 24);

    let link = must(&format!("ip -n {c} link show eth0"));
    assert!(
        link.contains("02:00:00:aa:bb:cc") && link.contains("mtu 1400"),
        "{link}"
    );
    let routes = must(&format!("ip -n {c} route"));
    assert!(
        routes.contains("default via 10.42.0.1 dev lan1"),
        "replace moved the default route: {routes}"
    );
    assert!(
        routes.contains("10.142.0.0/16 via 10.42.0.1 dev lan1"),
        "network route: {routes}"
    );
    assert!(lab.ping(&c, "fd41::1"), "IPv6 to the gateway");
    assert!(
        must(&format!("ip -n {c} -6 addr show dev eth0")).contains("fe80::"),
        "dual stack keeps its link-local address"
    );
    // The host end only bridges that IPv6: IPv6 is off on the port itself,
    // so it has no address and no multicast route in the host's tables
    // (which the kernel walks on every link change).
    let port = one["HostIfName"].as_str().unwrap();
    let off = common::in_netns(&lab.host, || {
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{port}/disable_ipv6"))
    });
    assert_eq!(off.unwrap().trim(), "1", "IPv6 off on bridge port {port}");
    let host_v6 = must(&format!(
        "ip -n {} -6 route show table all dev {port}",
        lab.host
    ));
    assert!(
        host_v6.trim().is_empty(),
        "no IPv6 route via {port}: {host_v6}"
    );
    assert!(must(&format!("ip -n {c} link show lo")).contains("UP"));

    // ls lists both; detach of one network leaves the other.
    let ls: serde_json::Value = serde_json::from_str(&lab.ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 2);
    lab.ok(&["detach", &c, "one"]);
    assert!(!common::links(&c).contains(&"eth0".to_string()));
    assert!(common::links(&c).contains(&"lan1".to_string()));
    // Detach is idempotent; the address is free again (asked for statically,
    // since dynamic allocation moves on from the last address it gave).
    lab.ok(&["detach", &c, "one"]);
    lab.ok(&["attach", &c, "one", "--ip", "10.41.0.2"]);
    assert_eq!(lab.ip_of(&c, "one"), "10.41.0.2");

    // `two` replaced one's default route: its detach puts it back.
    lab.ok(&["detach", &c, "two"]);
    let routes = must(&format!("ip -n {c} -4 route show default"));
    assert!(
        routes.contains("default via 10.41.0.1 dev eth0"),
        "the replaced default route is back: {routes}"
    );
}

#[test]
fn pid_and_path_targets_work() {
    let lab = Lab::new("pid");
    lab.ok(&["network", "create", "p", "--subnet", "10.43.0.0/24"]);
    let ns = lab.netns("proc");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "30"])
        .spawn()
        .unwrap();
    // Until `ip netns exec` has entered the namespace and become `sleep`.
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let pid = child.id();
    common::wait_until("the process to enter its namespace", 5, || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != own)
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
    });
    let target = format!("pid:{}", child.id());
    // `ip netns exec` forks nothing: the pid is sleep's, inside the namespace.
    lab.ok(&["attach", &target, "p"]);
    assert!(common::links(&ns).contains(&"eth0".to_string()));
    let path = format!("/run/netns/{ns}");
    // The same namespace reached by path is the same target.
    let err = lab.fails(&["attach", &path, "p"]);
    assert!(err.contains("already attached"), "{err}");
    lab.ok(&["detach", &path]);
    assert!(!common::links(&ns).contains(&"eth0".to_string()));
    child.kill().ok();
    child.wait().ok();
}

#[test]
fn host_address_on_an_isolated_segment_and_reserved_addresses() {
    let lab = Lab::new("hostaddr");
    // A bridged segment with no uplink: the host takes part with an address of its own.
    lab.ok(&[
        "network",
        "create",
        "seg",
        "--mode",
        "bridged",
        "--subnet",
        "10.44.0.0/24",
        "--host-address",
        "10.44.0.5",
        "--aux-address",
        "printer=10.44.0.1",
        "--aux-address",
        "nas=10.44.0.2",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "seg"]);
    assert_eq!(
        lab.ip_of(&c, "seg"),
        "10.44.0.3",
        "aux addresses and the host address are never handed out"
    );
    assert!(
        lab.ping(&lab.host, "10.44.0.3"),
        "host reaches the container on the segment"
    );
    assert!(
        lab.ping(&c, "10.44.0.5"),
        "container reaches the host's address"
    );
    let err = lab.fails(&["attach", &lab.netns("d"), "seg", "--ip", "10.44.0.2"]);
    assert!(err.contains("aux:nas"), "{err}");
    // No gateway on an isolated segment: no default route in the container.
    assert!(
        common::must(&format!("ip -n {c} route show default"))
            .trim()
            .is_empty()
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "seg"])).unwrap();
    assert_eq!(inspect["HostAddresses"][0], "10.44.0.5/24");
    assert_eq!(inspect["AuxAddresses"]["nas"], "10.44.0.2");
    assert_eq!(inspect["Attachments"][0]["Target"], c.as_str());
}

/// Multicast snooping follows the mode (off on nat and routed bridges,
/// where nobody queries and the bridge floods multicast anyway; on where a
/// LAN may have a querier) unless asked; multicast still reaches the
/// containers. Every port carries the bridge's MAC, so the bridge keeps one
/// local forwarding entry, not one per container.
#[test]
fn multicast_snooping_follows_the_mode_and_ports_share_the_bridge_mac() {
    let lab = Lab::new("mcast");
    let sysfs = |bridge: &str, file: &str| {
        must(&format!(
            "ip netns exec {} cat /sys/class/net/{bridge}/{file}",
            lab.host
        ))
        .trim()
        .to_string()
    };
    lab.ok(&["network", "create", "n", "--subnet", "10.43.0.0/24"]);
    lab.ok(&[
        "network",
        "create",
        "r",
        "--subnet",
        "10.44.0.0/24",
        "--mode",
        "routed",
    ]);
    lab.ok(&[
        "network",
        "create",
        "l",
        "--subnet",
        "10.45.0.0/24",
        "--mode",
        "bridged",
    ]);
    lab.ok(&[
        "network",
        "create",
        "q",
        "--subnet",
        "10.46.0.0/24",
        "--multicast-snooping",
        "on",
    ]);
    let snooping = |b: &str| sysfs(b, "bridge/multicast_snooping");
    assert_eq!(
        [
            snooping("pl-n"),
            snooping("pl-r"),
            snooping("pl-l"),
            snooping("pl-q")
        ],
        ["0", "0", "1", "1"]
    );
    let inspected: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "q"])).unwrap();
    assert_eq!(inspected["MulticastSnooping"], true, "{inspected}");
    let err = lab.fails(&[
        "network",
        "create",
        "x",
        "--subnet",
        "10.47.0.0/24",
        "--multicast-snooping",
        "maybe",
    ]);
    assert!(
        err.contains("--multicast-snooping `maybe`: expected on or off"),
        "{err}"
    );

    // Two containers on the nat network: a group joined by one is heard
    // from the other.
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "n"]);
    lab.ok(&["attach", &b, "n"]);
    let ip_b: std::net::Ipv4Addr = lab.ip_of(&b, "n").parse().unwrap();
    let group = std::net::Ipv4Addr::new(239, 1, 2, 3);
    let receiver = common::in_netns(&b, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:5007").unwrap();
        s.join_multicast_v4(&group, &ip_b).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
            .unwrap();
        s
    });
    common::in_netns(&a, || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        s.send_to(b"hello group", (group, 5007)).unwrap();
    });
    let mut buf = [0u8; 64];
    let (len, _) = receiver.recv_from(&mut buf).expect("the group's datagram");
    assert_eq!(&buf[..len], b"hello group");

    // The ports carry the bridge's MAC.
    let bridge_mac = sysfs("pl-n", "address");
    for target in [&a, &b] {
        let port = lab.inspect(target)["NetworkSettings"]["Networks"]["n"]["HostIfName"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(sysfs(&port, "address"), bridge_mac, "port {port}");
    }
    // `bridge fdb` also lists each device's own multicast addresses
    // ("self"); the bridge's entries say "master".
    let fdb = must(&format!("bridge -n {} fdb show br pl-n", lab.host));
    let local: Vec<&str> = fdb
        .lines()
        .filter(|l| l.contains("master pl-n permanent"))
        .collect();
    assert_eq!(local.len(), 1, "one local entry for two ports: {fdb}");
}
