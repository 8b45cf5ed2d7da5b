//! Conntrack entries of a published port deleted over ctnetlink: real UDP
//! flows through a DNAT, in namespaces of the test's own, checked with the
//! `conntrack` tool.

mod common;

use std::net::{Ipv4Addr, UdpSocket};

use common::{Lab, in_netns, must, wait_until};
use plumb::netlink::NfNetlink;
use plumb::netns::{self, NsHandle};

const HOST: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const UDP: u8 = libc::IPPROTO_UDP as u8;
const TCP: u8 = libc::IPPROTO_TCP as u8;

/// The original destination port of each UDP entry of `ns`.
fn udp_entries(ns: &str) -> Vec<u16> {
    // "udp 17 29 src=10.97.0.2 dst=10.97.0.1 sport=40001 dport=5353
    // [UNREPLIED] src=10.97.0.1 dst=10.97.0.2 sport=7000 dport=40001 ..."
    must(&format!("ip netns exec {ns} conntrack -L -p udp"))
        .lines()
        .filter_map(|line| {
            let dport = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("dport="))?;
            dport.parse().ok()
        })
        .collect()
}

fn count(entries: &[u16], port: u16) -> usize {
    entries.iter().filter(|p| **p == port).count()
}

fn socket_in(ns: &str) -> NfNetlink {
    let handle = NsHandle::open(&netns::named_path(ns)).expect("open namespace");
    NfNetlink::open_in(&handle).expect("netfilter socket")
}

/// A fake host with a client wired to it, port 5353 published to a
/// "container" at :7000 as plumb's DNAT would, `extra` more nft chains;
/// three UDP flows from the client to each of ports 5353 and 5354, their
/// entries there (unreplied: nothing listens; they last 30 s).
fn lab_with_flows(tag: &str, extra: &str) -> Lab {
    let lab = Lab::new(tag);
    let client = lab.netns("client");
    lab.wire(
        &lab.host,
        "eth0",
        Some("10.97.0.1/24"),
        &client,
        "eth0",
        Some("10.97.0.2/24"),
    );
    must(&format!(
        "ip netns exec {} nft -f - <<'EOF'
table ip ct_test {{
    chain pre {{ type nat hook prerouting priority dstnat; udp dport 5353 dnat to 10.97.0.1:7000; }}
    chain input {{ type filter hook input priority filter; ct state new accept; }}
    {extra}
}}
EOF",
        lab.host
    ));
    let sockets: Vec<UdpSocket> = in_netns(&client, || {
        (0..3)
            .map(|_| UdpSocket::bind("10.97.0.2:0").expect("bind in the client"))
            .collect()
    });
    // The first datagrams may wait on ARP: send again (the same flows)
    // until every entry is there.
    wait_until("six UDP conntrack entries", 10, || {
        for socket in &sockets {
            for port in [5353, 5354] {
                let _ = socket.send_to(b"ping", (HOST, port));
            }
        }
        let entries = udp_entries(&lab.host);
        count(&entries, 5353) == 3 && count(&entries, 5354) == 3
    });
    lab
}

#[test]
fn the_entries_of_one_port_are_deleted_and_the_others_stay() {
    let lab = lab_with_flows("ct", "");
    let mut nf = socket_in(&lab.host);
    assert_eq!(
        nf.delete_conntrack(UDP, 5353, Some(Ipv4Addr::new(10, 97, 0, 9)))
            .unwrap(),
        0,
        "another destination address"
    );
    assert_eq!(nf.delete_conntrack(TCP, 5353, None).unwrap(), 0, "TCP");
    assert_eq!(
        nf.delete_conntrack(UDP, 7000, None).unwrap(),
        0,
        "the port after DNAT"
    );
    let entries = udp_entries(&lab.host);
    assert_eq!((count(&entries, 5353), count(&entries, 5354)), (3, 3));

    assert_eq!(nf.delete_conntrack(UDP, 5353, Some(HOST)).unwrap(), 3);
    let entries = udp_entries(&lab.host);
    assert_eq!(count(&entries, 5353), 0, "{entries:?}");
    assert_eq!(count(&entries, 5354), 3, "{entries:?}");
    assert_eq!(
        nf.delete_conntrack(UDP, 5353, Some(HOST)).unwrap(),
        0,
        "again"
    );

    assert_eq!(nf.delete_conntrack(UDP, 5354, None).unwrap(), 3);
    assert_eq!(udp_entries(&lab.host), Vec::<u16>::new());
}

#[test]
fn entries_in_a_conntrack_zone_are_deleted_in_their_zone() {
    let lab = lab_with_flows(
        "ctzone",
        "chain raw { type filter hook prerouting priority raw; ct zone set 5; }",
    );
    assert!(must(&format!("ip netns exec {} conntrack -L -p udp", lab.host)).contains("zone=5"));
    let mut nf = socket_in(&lab.host);
    assert_eq!(nf.delete_conntrack(UDP, 5353, None).unwrap(), 3);
    let entries = udp_entries(&lab.host);
    assert_eq!((count(&entries, 5353), count(&entries, 5354)), (0, 3));
}

#[test]
fn a_namespace_that_tracks_nothing_has_nothing_to_delete() {
    let lab = Lab::new("ctnone");
    let mut nf = socket_in(&lab.host);
    assert_eq!(nf.delete_conntrack(UDP, 53, None).unwrap(), 0);
}
