//! Rate limits measured with iperf3 between a container and an upstream
//! namespace: within 10% of the limit, each way, and far above it without.

mod common;

use common::{Lab, must, wait_until};

/// Bits per second iperf3 saw, running the client in `client` against a
/// one-shot server in `server` at `addr`; `reverse` makes the server send.
fn iperf(lab: &Lab, server: &str, client: &str, addr: &str, port: u16, reverse: bool) -> f64 {
    let _srv = lab.spawn_in(
        server,
        &format!("iperf3 -s -1 -B {addr} -p {port}"),
        &format!("iperf-{port}.log"),
    );
    wait_until("iperf3 to listen", 5, || {
        String::from_utf8_lossy(&lab.exec(server, "ss -ltn").stdout).contains(&format!(":{port}"))
    });
    let r = if reverse { "-R" } else { "" };
    let out = must(&format!(
        "ip netns exec {client} iperf3 -c {addr} -p {port} -t 3 -O 1 -J {r}"
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
}

fn within(measured: f64, limit: f64) -> bool {
    ((measured - limit) / limit).abs() <= 0.10
}

/// Attach `a` to `network` at 20mbit out and 10mbit in, then measure both
/// ways against an iperf3 server in `peer` at `peer_ip` (ports `port` and
/// `port + 1`): each within 10% of its limit.
fn attach_shaped_and_measure(
    lab: &Lab,
    a: &str,
    network: &str,
    peer: &str,
    peer_ip: &str,
    port: u16,
) {
    lab.ok(&[
        "attach",
        a,
        network,
        "--egress-rate",
        "20mbit",
        "--ingress-rate",
        "10mbit",
    ]);
    let sent = iperf(lab, peer, a, peer_ip, port, false);
    assert!(
        within(sent, 20e6),
        "egress {sent} bit/s against a 20mbit limit"
    );
    let received = iperf(lab, peer, a, peer_ip, port + 1, true);
    assert!(
        within(received, 10e6),
        "ingress {received} bit/s against a 10mbit limit"
    );
}

#[test]
fn egress_and_ingress_rates_hold_within_ten_percent() {
    let lab = Lab::new("tc");
    let up = lab.upstream("10.93.0");
    lab.ok(&["network", "create", "n", "--subnet", "10.37.0.0/24"]);
    let (a, free) = (lab.netns("a"), lab.netns("free"));
    lab.ok(&["attach", &free, "n"]);
    attach_shaped_and_measure(&lab, &a, "n", &up, "10.93.0.1", 5301);
    let unlimited = iperf(&lab, &up, &free, "10.93.0.1", 5303, false);
    assert!(unlimited > 100e6, "without a limit: {unlimited} bit/s");

    let ep = &lab.inspect(&a)["NetworkSettings"]["Networks"]["n"]["RateLimit"];
    assert_eq!(ep["EgressBitsPerSecond"], 20_000_000);
}

#[test]
fn impossible_rates_are_refused_and_change_nothing() {
    let lab = Lab::new("tcb");
    lab.ok(&["network", "create", "n", "--subnet", "10.38.0.0/24"]);
    let a = lab.netns("a");
    for (flag, value, says) in [
        ("--egress-rate", "0mbit", "8kbit to 100gbit"),
        ("--egress-rate", "20 furlongs", "number and a unit"),
        ("--ingress-rate", "1tbit", "number and a unit"),
        ("--burst", "64kb", "needs --egress-rate"),
    ] {
        let err = lab.fails(&["attach", &a, "n", flag, value]);
        assert!(
            err.contains(&format!("{flag} `{value}`")) && err.contains(says),
            "{err}"
        );
    }
    assert_eq!(common::links(&a), vec!["lo"]);
}

#[test]
fn a_macvlan_container_is_shaped_both_ways_through_an_ifb() {
    let lab = Lab::new("tcm");
    // The LAN: a switch, another host on it (the iperf3 peer), and the fake
    // host's parent interface.
    let peer = lab.lan("peer", "192.168.62.20/24");
    lab.ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--subnet",
        "192.168.62.0/24",
        "--gateway",
        "192.168.62.1",
        "--ip-range",
        "192.168.62.128/25",
    ]);
    let a = lab.netns("a");
    attach_shaped_and_measure(&lab, &a, "lan", &peer, "192.168.62.20", 5311);
    // Restore finds the shaping in place; with the ifb deleted, it makes
    // the ifb and the redirect to it again.
    assert_eq!(lab.ok(&["restore"]).trim(), "nothing to restore");
    let ifb = common::links(&a)
        .into_iter()
        .find(|l| l.starts_with("ib"))
        .expect("an ifb in the container");
    must(&format!("ip -n {a} link del {ifb}"));
    let out = lab.ok(&["restore"]);
    assert!(out.contains("lan (eth0)"), "{out}");
    assert!(must(&format!("tc -n {a} qdisc show dev {ifb}")).contains("tbf"));
    assert!(must(&format!("tc -n {a} filter show dev eth0 ingress")).contains(&ifb));
    assert_eq!(lab.ok(&["restore"]).trim(), "nothing to restore");
    lab.ok(&["detach", &a]);
    assert_eq!(common::links(&a), vec!["lo"], "no ifb left behind");
}

#[test]
fn a_host_device_is_shaped_both_ways_and_handed_back_bare() {
    let lab = Lab::new("tch");
    let lan = lab.nic_on_lan();
    lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "nic1",
    ]);
    let a = lab.netns("a");
    attach_shaped_and_measure(&lab, &a, "nic", &lan, "10.70.0.1", 5321);
    lab.ok(&["detach", &a]);
    assert_eq!(common::links(&a), vec!["lo"], "no ifb left behind");
    // The device comes home without plumb's qdiscs.
    let qdiscs = must(&format!("tc -n {} qdisc show dev nic1", lab.host));
    assert!(
        !qdiscs.contains("tbf") && !qdiscs.contains("ingress"),
        "{qdiscs}"
    );
}
