//! host-device networks: a whole interface handed to a target and given back.

mod common;

use common::{Lab, links, must};

#[test]
fn a_device_moves_in_with_its_addresses_and_comes_back() {
    let lab = Lab::new("hdev");
    let _lan = lab.nic_on_lan();
    lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "nic1",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "nic"]);
    assert!(
        !lab.host_links().contains(&"nic1".to_string()),
        "the device left the host"
    );
    let inside = must(&format!("ip -n {c} -o addr show dev eth0"));
    assert!(
        inside.contains("10.70.0.2/24"),
        "it kept its address: {inside}"
    );
    assert!(
        lab.ping(&c, "10.70.0.1"),
        "the target reaches the LAN through the device"
    );
    let v = lab.inspect(&c);
    assert_eq!(
        v["NetworkSettings"]["Networks"]["nic"]["HostIfName"],
        "nic1"
    );

    let second = lab.netns("d");
    let err = lab.fails(&["attach", &second, "nic"]);
    assert!(err.contains("already attached"), "{err}");

    lab.ok(&["detach", &c]);
    assert!(!links(&c).contains(&"eth0".to_string()));
    let home = must(&format!("ip -n {} -o addr show dev nic1", lab.host));
    assert!(
        home.contains("10.70.0.2/24"),
        "back on the host with its address: {home}"
    );
    assert!(lab.ping(&lab.host, "10.70.0.1"), "the host uses it again");
    lab.ok(&["network", "rm", "nic"]);
    assert!(
        lab.host_links().contains(&"nic1".to_string()),
        "removing the network leaves the device"
    );
}

#[test]
fn a_device_can_take_an_address_from_the_network_instead() {
    let lab = Lab::new("hdip");
    let _lan = lab.nic_on_lan();
    lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "nic1",
        "--subnet",
        "10.70.0.0/24",
        "--gateway",
        "10.70.0.1",
    ]);
    let c = lab.netns("c");
    lab.ok(&[
        "attach",
        &c,
        "nic",
        "--ip",
        "10.70.0.50",
        "--ifname",
        "lan0",
    ]);
    let inside = must(&format!("ip -n {c} -o addr show dev lan0"));
    assert!(
        inside.contains("10.70.0.50/24") && !inside.contains("10.70.0.2/"),
        "{inside}"
    );
    assert!(must(&format!("ip -n {c} route show default")).contains("via 10.70.0.1 dev lan0"));
    assert!(lab.ping(&c, "10.70.0.1"));
    // Detach releases the address: the same static request works again.
    lab.ok(&["detach", &c]);
    lab.ok(&["attach", &c, "nic", "--ip", "10.70.0.50"]);
    lab.ok(&["network", "rm", "nic", "--force"]);
    let home = must(&format!("ip -n {} -o addr show dev nic1", lab.host));
    assert!(
        home.contains("10.70.0.2/24") && !home.contains("10.70.0.50"),
        "the host's own address came back: {home}"
    );
}

#[test]
fn a_failed_hand_over_gives_the_device_back() {
    let lab = Lab::new("hdrb");
    let _lan = lab.nic_on_lan();
    lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "nic1",
    ]);
    let c = lab.netns("c");
    // The name is taken in the target: the move itself fails.
    must(&format!(
        "ip -n {c} link add eth9 type veth peer name eth9p"
    ));
    let err = lab.fails(&["attach", &c, "nic", "--ifname", "eth9"]);
    assert!(
        err.contains("--ifname `eth9`") && err.contains("already used"),
        "{err}"
    );
    assert!(
        lab.host_links().contains(&"nic1".to_string()),
        "still on the host"
    );
    // A gateway off the device's subnet is refused before anything moves.
    let err = lab.fails(&[
        "attach",
        &c,
        "nic",
        "--route",
        "10.99.0.0/16",
        "via",
        "10.71.0.1",
    ]);
    assert!(
        err.contains("--route") && err.contains("not on any subnet"),
        "{err}"
    );
    assert!(lab.host_links().contains(&"nic1".to_string()));
    // A route the target already has another way: the kernel refuses it
    // after the move.
    must(&format!(
        "ip -n {c} link set eth9 up && ip -n {c} route add 10.99.0.0/16 dev eth9"
    ));
    let err = lab.fails(&[
        "attach",
        &c,
        "nic",
        "--route",
        "10.99.0.0/16",
        "via",
        "10.70.0.1",
    ]);
    assert!(
        err.contains("route 10.99.0.0/16 via 10.70.0.1")
            && err.contains("give nic1 back to the host"),
        "{err}"
    );
    assert!(
        !links(&c).contains(&"eth0".to_string()),
        "nothing left in the target"
    );
    let home = must(&format!("ip -n {} -o addr show dev nic1", lab.host));
    assert!(home.contains("10.70.0.2/24"), "{home}");
}

#[test]
fn bad_devices_are_refused() {
    let lab = Lab::new("hdbad");
    must(&format!("ip -n {} link add br9 type bridge", lab.host));
    for (args, needle) in [
        (vec!["--device", "nosuch0"], "is not on the host"),
        (vec!["--device", "br9"], "is a bridge"),
        (vec!["--device", "lo"], "loopback"),
        (vec![], "needs the interface"),
        (
            vec!["--device", "br9", "--parent", "x"],
            "not an option of the host-device driver",
        ),
    ] {
        let mut full = vec!["network", "create", "d", "--driver", "host-device"];
        full.extend(args.iter());
        let err = lab.fails(&full);
        assert!(err.contains(needle), "{full:?}: {err}");
    }
    assert_eq!(lab.ok(&["network", "ls"]).lines().count(), 1);
}
