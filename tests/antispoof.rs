//! Anti-spoofing with real frames: a guarded container's spoofed IPv4 and
//! IPv6 sources, spoofed MAC, forged ARP replies and forged neighbour
//! advertisements are dropped, on a bridge and on a macvlan; the same
//! forgeries from an `--allow-spoofing` container get through (the proof
//! that the guard, not the setup, stopped them).

mod common;

use common::{Lab, must, sh};

/// Send three forged ARP replies from `ns`'s eth0 claiming that `claim_ip`
/// is at the interface's own MAC.
fn forge_arp(lab: &Lab, ns: &str, claim_ip: &str) {
    let script = r#"
import socket, struct, sys
ifname, ip = sys.argv[1], socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
mac = s.getsockname()[4]
frame = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
frame += mac + ip + b"\xff" * 6 + ip
for _ in range(3):
    try:
        s.send(frame.ljust(60, b"\0"))
    except OSError:  # ENOBUFS: an egress hook dropped it
        pass
"#;
    let out = lab.exec(ns, &format!("python3 -c '{script}' eth0 {claim_ip}"));
    assert!(out.status.success(), "forge ARP: {out:?}");
}

/// Send three unsolicited neighbour advertisements (override flag) from
/// `ns`'s eth0 claiming `claim_ip` is at the interface's MAC.
fn forge_na(lab: &Lab, ns: &str, claim_ip: &str) {
    let script = r#"
import socket, struct, sys
target = socket.inet_pton(socket.AF_INET6, sys.argv[2])
index = socket.if_nametoindex(sys.argv[1])
mac = bytes.fromhex(open("/sys/class/net/" + sys.argv[1] + "/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target + b"\x02\x01" + mac
for _ in range(3):
    try:
        s.sendto(msg, ("ff02::1", 0, 0, index))
    except OSError:  # ENOBUFS: an egress hook dropped it
        pass
"#;
    let out = lab.exec(ns, &format!("python3 -c '{script}' eth0 {claim_ip}"));
    assert!(out.status.success(), "forge NA: {out:?}");
}

/// The MAC `ns` has cached for `ip` ("" when none).
fn cached_mac(ns: &str, ip: &str) -> String {
    let out = must(&format!("ip -n {ns} neigh show {ip}"));
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn mac_of(ns: &str) -> String {
    must(&format!(
        "ip netns exec {ns} cat /sys/class/net/eth0/address"
    ))
    .trim()
    .to_string()
}

/// From `ns`: ping `to` from a second address `spoofed`, then with a MAC
/// not its own; whether each got through.
fn spoofs_get_through(lab: &Lab, ns: &str, to: &str, spoofed: &str, v6: bool) -> (bool, bool) {
    let (prefix, ping) = if v6 {
        ("128", "ping -6")
    } else {
        ("32", "ping")
    };
    must(&format!(
        "ip -n {ns} addr add {spoofed}/{prefix} dev eth0 nodad"
    ));
    let by_ip = lab
        .exec(ns, &format!("{ping} -c1 -W2 -I {spoofed} {to}"))
        .status
        .success();
    must(&format!("ip -n {ns} addr del {spoofed}/{prefix} dev eth0"));
    let mac = mac_of(ns);
    must(&format!(
        "ip -n {ns} link set eth0 address 02:5a:5a:5a:5a:5a && ip -n {ns} neigh flush all"
    ));
    let by_mac = lab
        .exec(ns, &format!("{ping} -c1 -W2 {to}"))
        .status
        .success();
    must(&format!(
        "ip -n {ns} link set eth0 address {mac} && ip -n {ns} neigh flush all"
    ));
    (by_ip, by_mac)
}

#[test]
fn a_bridge_port_sends_only_its_own_addresses_and_mac() {
    let lab = Lab::new("spf");
    lab.ok(&[
        "network",
        "create",
        "n",
        "--subnet",
        "10.48.0.0/24",
        "--subnet",
        "fd48::/64",
    ]);
    let (a, b, c, d) = (
        lab.netns("a"),
        lab.netns("b"),
        lab.netns("c"),
        lab.netns("d"),
    );
    for ns in [&a, &b, &d] {
        lab.ok(&["attach", ns, "n"]);
    }
    lab.ok(&["attach", &c, "n", "--allow-spoofing"]);
    let ip_b = lab.ip_of(&b, "n");
    let ip6_b = lab.inspect(&b)["NetworkSettings"]["Networks"]["n"]["GlobalIPv6Address"]
        .as_str()
        .expect("IPv6 address")
        .to_string();
    assert!(lab.ping(&a, &ip_b), "honest traffic passes");
    assert!(
        lab.exec(&a, &format!("ping -6 -c1 -W2 {ip6_b}"))
            .status
            .success(),
        "honest IPv6 passes"
    );
    let inspect = lab.inspect(&a);
    assert_eq!(
        inspect["NetworkSettings"]["Networks"]["n"]["AntiSpoofing"],
        true
    );

    assert_eq!(
        spoofs_get_through(&lab, &a, &ip_b, "10.48.0.200", false),
        (false, false),
        "guarded: spoofed IPv4 source and spoofed MAC dropped"
    );
    assert_eq!(
        spoofs_get_through(&lab, &a, &ip6_b, "fd48::200", true),
        (false, false),
        "guarded: spoofed IPv6 source and spoofed MAC dropped"
    );
    assert_eq!(
        spoofs_get_through(&lab, &c, &ip_b, "10.48.0.201", false),
        (true, true),
        "--allow-spoofing: the same forgeries pass"
    );
    assert_eq!(
        spoofs_get_through(&lab, &c, &ip6_b, "fd48::201", true),
        (true, true),
        "--allow-spoofing: IPv6 too"
    );

    // Forged ARP replies and neighbour advertisements claiming b's
    // addresses: d's caches keep b's MAC.
    let mac_b = mac_of(&b);
    assert!(lab.ping(&d, &ip_b));
    assert!(
        lab.exec(&d, &format!("ping -6 -c1 -W2 {ip6_b}"))
            .status
            .success()
    );
    // Neighbour entries refuse updates for a second after they change.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    forge_arp(&lab, &a, &ip_b);
    forge_na(&lab, &a, &ip6_b);
    // What must not arrive has no event to wait for: a while in which it
    // would have.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(cached_mac(&d, &ip_b), mac_b, "forged ARP dropped");
    assert_eq!(cached_mac(&d, &ip6_b), mac_b, "forged NA dropped");
    forge_arp(&lab, &c, &ip_b);
    forge_na(&lab, &c, &ip6_b);
    let mac_c = mac_of(&c);
    common::wait_until("the unguarded forgeries to land", 5, || {
        cached_mac(&d, &ip_b) == mac_c && cached_mac(&d, &ip6_b) == mac_c
    });

    // Detach takes the port's elements away; the guard table stays
    // consistent for the next container on the same name.
    lab.ok(&["detach", &a]);
    let table = must(&format!(
        "ip netns exec {} nft list set bridge plumb macs",
        lab.host
    ));
    assert!(!table.contains(&mac_of_stored(&inspect)), "{table}");
}

fn mac_of_stored(inspect: &serde_json::Value) -> String {
    inspect["NetworkSettings"]["Networks"]["n"]["MacAddress"]
        .as_str()
        .expect("MacAddress")
        .to_string()
}

#[test]
fn a_macvlan_sends_only_its_own_addresses_and_mac() {
    let lab = Lab::new("spm");
    let other = lab.lan("other", "192.168.61.20/24");
    lab.ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--subnet",
        "192.168.61.0/24",
        "--ip-range",
        "192.168.61.128/25",
    ]);
    let (m, u) = (lab.netns("m"), lab.netns("u"));
    lab.ok(&["attach", &m, "lan"]);
    lab.ok(&["attach", &u, "lan", "--allow-spoofing"]);
    // The guard table plumb writes over nfnetlink reads back, as nft
    // decompiles it, as the rules it means.
    let mac = mac_of(&m);
    let listed = String::from_utf8_lossy(
        &sh(&format!(
            "ip netns exec {m} nft list chain netdev plumb egress"
        ))
        .stdout,
    )
    .into_owned();
    let rules: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with("drop") || l.ends_with("accept"))
        .collect();
    assert_eq!(
        rules,
        [
            format!("ether saddr != {mac} drop"),
            format!("arp saddr ether != {mac} drop"),
            "arp saddr ip != 0.0.0.0 arp saddr ip != @addr4 drop".into(),
            "ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept".into(),
            "ip saddr != @addr4 drop".into(),
            "icmpv6 type nd-router-advert drop".into(),
            "ip6 saddr :: icmpv6 type { mld-listener-report, nd-neighbor-solicit, mld2-listener-report } accept".into(),
            "ip6 saddr != @addr6 drop".into(),
            "icmpv6 type nd-neighbor-advert @th,64,128 != @target6 drop".into(),
        ],
        "{listed}"
    );
    let target6 = String::from_utf8_lossy(
        &sh(&format!(
            "ip netns exec {m} nft list set netdev plumb target6"
        ))
        .stdout,
    )
    .into_owned();
    assert!(target6.contains("typeof @th,64,128"), "{target6}");
    let v4 = lab.ip_of(&m, "lan");
    let addr4 = String::from_utf8_lossy(
        &sh(&format!(
            "ip netns exec {m} nft list set netdev plumb addr4"
        ))
        .stdout,
    )
    .into_owned();
    assert!(addr4.contains(&format!("elements = {{ {v4} }}")), "{addr4}");
    assert!(lab.ping(&m, "192.168.61.20"), "honest traffic passes");
    assert_eq!(
        spoofs_get_through(&lab, &m, "192.168.61.20", "192.168.61.5", false),
        (false, false),
        "guarded macvlan: spoofed source and MAC dropped"
    );
    assert_eq!(
        spoofs_get_through(&lab, &u, "192.168.61.20", "192.168.61.6", false),
        (true, true),
        "--allow-spoofing macvlan: they pass"
    );
    // The LAN host's cache of the guarded container's own address is not
    // taken over by a forged reply naming another. (It still holds the MAC
    // u spoofed a moment ago.)
    must(&format!("ip -n {other} neigh flush all"));
    assert!(lab.ping(&other, &lab.ip_of(&u, "lan")));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let mac_u = mac_of(&u);
    forge_arp(&lab, &m, &lab.ip_of(&u, "lan"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(cached_mac(&other, &lab.ip_of(&u, "lan")), mac_u);
    // Detach removes the guard table from the container.
    lab.ok(&["detach", &m]);
    assert!(
        !sh(&format!("ip netns exec {m} nft list tables"))
            .stdout
            .windows(6)
            .any(|w| w == b"netdev"),
        "guard table left behind"
    );
}

/// Send three router advertisements for 2001:db8:1::/64 (SLAAC allowed)
/// from `ns`'s eth0, from link-local fe80::99.
fn send_ra(lab: &Lab, ns: &str) {
    must(&format!("ip -n {ns} addr add fe80::99/64 dev eth0 nodad"));
    let script = r#"
import socket, struct, sys
index = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
s.bind(("fe80::99", 0, 0, index))
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:1::")
ra += struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix
for _ in range(3):
    s.sendto(ra, ("ff02::1", 0, 0, index))
"#;
    let out = lab.exec(ns, &format!("python3 -c '{script}'"));
    assert!(out.status.success(), "send RA: {out:?}");
}

fn slaac_addresses(ns: &str) -> String {
    must(&format!("ip -n {ns} -6 addr show dev eth0"))
        .lines()
        .filter(|l| l.contains("2001:db8:1:"))
        .collect()
}

#[test]
fn statically_addressed_containers_take_no_router_advertisements() {
    let lab = Lab::new("spr");
    lab.ok(&["network", "create", "v4", "--subnet", "10.49.0.0/24"]);
    lab.ok(&[
        "network",
        "create",
        "v6",
        "--subnet",
        "10.50.0.0/24",
        "--subnet",
        "fd50::/64",
    ]);
    let (b, r4, e, r6) = (
        lab.netns("b"),
        lab.netns("r4"),
        lab.netns("e"),
        lab.netns("r6"),
    );
    lab.ok(&["attach", &b, "v4"]);
    lab.ok(&["attach", &r4, "v4", "--allow-spoofing"]);
    lab.ok(&["attach", &e, "v6"]);
    lab.ok(&["attach", &r6, "v6", "--allow-spoofing"]);
    // A rogue router (allowed to spoof, so its RAs leave it) on each.
    send_ra(&lab, &r4);
    send_ra(&lab, &r6);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(slaac_addresses(&b), "", "an IPv4-only container took SLAAC");
    assert_eq!(
        slaac_addresses(&e),
        "",
        "a static IPv6 container took SLAAC"
    );
    let routes = must(&format!("ip -n {e} -6 route show default"));
    assert!(!routes.contains("fe80::99"), "{routes}");
    assert!(
        lab.exec(&e, &format!("ping -6 -c1 -W2 {}", ip6_of(&lab, &r6)))
            .status
            .success(),
        "IPv6 itself still works on the dual-stack network"
    );
    // The control: with the shield's sets emptied, the same RAs land.
    must(&format!(
        "ip netns exec {} nft flush set bridge plumb no_ra",
        lab.host
    ));
    must(&format!(
        "ip netns exec {} nft flush set bridge plumb no_ipv6",
        lab.host
    ));
    must(&format!("ip -n {r4} addr del fe80::99/64 dev eth0"));
    must(&format!("ip -n {r6} addr del fe80::99/64 dev eth0"));
    send_ra(&lab, &r4);
    send_ra(&lab, &r6);
    common::wait_until("the unshielded containers to take SLAAC", 5, || {
        !slaac_addresses(&b).is_empty() && !slaac_addresses(&e).is_empty()
    });
}

fn ip6_of(lab: &Lab, ns: &str) -> String {
    lab.inspect(ns)["NetworkSettings"]["Networks"]["v6"]["GlobalIPv6Address"]
        .as_str()
        .expect("IPv6 address")
        .to_string()
}
