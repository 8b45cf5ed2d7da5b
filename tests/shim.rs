//! `plumb shim`: the host reaches containers on a macvlan LAN it does not
//! own (here, containers of a plumb macvlan network without a host shim of
//! its own, standing in for Docker's), through a macvlan of its own on the
//! parent; the shim is made again after a reboot (`restore`) and by the
//! daemon when its parent comes back; bad input and killed adds leave
//! nothing.

mod common;

use common::{Lab, must, wait_until};

/// The LAN: the fake host's `lan0` (no address) on a switch, and a
/// container of the macvlan network `mv` (range 10.60.0.192/27) on it.
fn lan_with_a_container(lab: &Lab) -> String {
    lab.lan("peer", "10.60.0.20/24");
    lab.ok(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        "lan0",
        "--subnet",
        "10.60.0.0/24",
        "--ip-range",
        "10.60.0.192/27",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "mv", "--ip", "10.60.0.200"]);
    c
}

/// The shim the tests make: 10.60.0.250 on lan0, to the range.
const ADD: [&str; 8] = [
    "shim",
    "add",
    "--parent",
    "lan0",
    "--address",
    "10.60.0.250",
    "--route",
    "10.60.0.192/27",
];

fn shims(lab: &Lab) -> Vec<String> {
    lab.host_links()
        .into_iter()
        .filter(|l| l.starts_with("ph-"))
        .collect()
}

#[test]
fn the_host_reaches_macvlan_containers_through_its_shim_after_reboots_and_parent_flaps() {
    let lab = Lab::new("shm");
    let c = lan_with_a_container(&lab);
    assert!(!lab.ping(&lab.host, "10.60.0.200"), "no way there yet");

    let out = lab.ok(&ADD);
    assert!(out.contains("lan0  10.60.0.250  10.60.0.192/27"), "{out}");
    assert!(lab.ping(&lab.host, "10.60.0.200"), "through the shim");
    assert!(lab.ping(&c, "10.60.0.250"), "and back");
    let [shim] = shims(&lab).try_into().expect("one shim");

    // A reboot takes the shim: restore makes it again.
    must(&format!("ip -n {} link del {shim}", lab.host));
    assert!(lab.ok(&["restore"]).contains(&shim));
    assert!(lab.ping(&lab.host, "10.60.0.200"));

    // The parent goes and comes back (a NIC unplugged): the kernel takes
    // the shim with it, the daemon makes it again.
    let _daemon = lab.daemon(&[]);
    let switch = lab.name("lan");
    must(&format!("ip -n {} link del lan0", lab.host));
    assert!(shims(&lab).is_empty(), "gone with its parent");
    lab.wire(&lab.host, "lan0", None, &switch, "p-host", None);
    must(&format!("ip -n {switch} link set p-host master br0"));
    // The container's macvlan went with the parent too: plumb's network
    // repair gives it back; the shim is what this test is about.
    wait_until("the daemon to make the shim again", 10, || {
        shims(&lab) == [shim.clone()]
            && must(&format!("ip -n {} route", lab.host))
                .contains(&format!("10.60.0.192/27 dev {shim}"))
    });

    let listed: serde_json::Value =
        serde_json::from_str(&lab.ok(&["shim", "ls", "--json"])).unwrap();
    assert_eq!(listed[0]["parent"], "lan0");
    assert!(lab.ok(&["shim", "rm", "10.60.0.250"]).contains("removed"));
    assert!(shims(&lab).is_empty());
    assert!(!must(&format!("ip -n {} route", lab.host)).contains("10.60.0.192/27"));
    assert!(lab.ok(&["shim", "rm", "1"]).contains("no shim 1"));
}

#[test]
fn bad_shims_are_refused_by_name_and_leave_nothing() {
    let lab = Lab::new("shb");
    lan_with_a_container(&lab);
    let err = lab.fails(&[
        "shim",
        "add",
        "--parent",
        "nosuch0",
        "--address",
        "10.60.0.250",
        "--route",
        "10.60.0.192/27",
    ]);
    assert!(err.contains("--parent `nosuch0`"), "{err}");
    let err = lab.fails(&[
        "shim",
        "add",
        "--address",
        "10.60.0.250",
        "--route",
        "10.60.0.192/27",
    ]);
    assert!(err.contains("--parent"), "{err}");
    let err = lab.fails(&[
        "shim",
        "add",
        "--parent",
        "lan0",
        "--address",
        "10.60.0.250",
    ]);
    assert!(err.contains("--route"), "{err}");
    let err = lab.fails(&[
        "shim",
        "add",
        "--parent",
        "lan0",
        "--address",
        "10.60.0.250",
        "--route",
        "fd00::/64",
    ]);
    assert!(err.contains("--route `fd00::/64`"), "{err}");
    // A route the host has already, to elsewhere: refused, rolled back.
    must(&format!(
        "ip -n {} link add dum0 type veth peer name dum1",
        lab.host
    ));
    must(&format!("ip -n {} link set dum0 up", lab.host));
    must(&format!(
        "ip -n {} route add 10.60.0.192/27 dev dum0",
        lab.host
    ));
    let err = lab.fails(&ADD);
    assert!(
        err.contains("--route `10.60.0.192/27`") && err.contains("elsewhere"),
        "{err}"
    );
    assert!(shims(&lab).is_empty(), "rolled back");
    must(&format!(
        "ip -n {} route del 10.60.0.192/27 dev dum0",
        lab.host
    ));
    lab.ok(&ADD);
    let err = lab.fails(&[
        "shim",
        "add",
        "--parent",
        "lan0",
        "--address",
        "10.60.0.250",
        "--route",
        "10.60.0.224/27",
    ]);
    assert!(err.contains("holds it already"), "{err}");
    assert_eq!(shims(&lab).len(), 1);
    assert_eq!(lab.ok(&["shim", "ls"]).lines().count(), 2);
}

#[test]
fn a_shim_add_killed_at_any_point_is_undone_by_the_next_plumb() {
    let lab = Lab::new("shk");
    lan_with_a_container(&lab);
    lab.kill_add_at_every_failpoint(
        &ADD,
        &["shim", "rm", "10.60.0.250"],
        || lab.ok(&["shim", "ls"]).lines().count() - 1,
        |n| {
            assert!(shims(&lab).is_empty(), "after a kill at failpoint {n}");
            assert!(!must(&format!("ip -n {} route", lab.host)).contains("10.60.0.192/27"));
        },
    );
}
