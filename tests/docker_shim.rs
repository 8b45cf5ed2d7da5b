//! `plumb shim add docker-network:NAME`: the host reaches the containers of
//! one of Docker's own macvlan networks (on a stand-in LAN in a lab's fake
//! host) through a shim that takes Docker's parent and `--ip-range`, refuses
//! an address Docker could hand out, and is made again after a simulated
//! reboot.

mod common;

use common::docker::Dockerd;
use common::{Lab, must};

const SLEEP: &[&str] = &["sleep", "100000"];

#[test]
fn the_host_reaches_a_docker_macvlan_network_through_its_shim_across_a_reboot() {
    let lab = Lab::new("dsh");
    let peer = lab.lan("peer", "192.168.61.20/24");
    let docker = Dockerd::start(&lab, false);
    docker.must(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.168.61.0/24",
        "--gateway",
        "192.168.61.1",
        "--ip-range",
        "192.168.61.192/27",
        "--aux-address",
        "host=192.168.61.223",
        "-o",
        "parent=lan0",
        "mynet",
    ]);
    docker.run(&["--name", "web", "--network", "mynet"], SLEEP);
    let ip = docker
        .must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.mynet.IPAddress}}",
            "web",
        ])
        .trim()
        .to_string();
    assert!(
        ip.starts_with("192.168.61.19") || ip.starts_with("192.168.61.2"),
        "{ip}"
    );
    assert!(lab.ping(&peer, &ip), "the LAN reaches it");
    assert!(!lab.ping(&lab.host, &ip), "the host does not, yet");

    // An address Docker hands out is refused, naming the range.
    let err = docker.plumb_fails(&[
        "shim",
        "add",
        "docker-network:mynet",
        "--address",
        "192.168.61.200",
    ]);
    assert!(err.contains("--ip-range 192.168.61.192/27"), "{err}");
    let err = docker.plumb_fails(&[
        "shim",
        "add",
        "docker-network:nosuch",
        "--address",
        "192.168.61.223",
    ]);
    assert!(err.contains("nosuch"), "{err}");
    let err = docker.plumb_fails(&[
        "shim",
        "add",
        "docker-network:bridge",
        "--address",
        "172.17.0.250",
    ]);
    assert!(err.contains("macvlan"), "{err}");
    assert!(lab.ok(&["shim", "ls"]).lines().count() == 1, "nothing made");

    let out = docker.plumb_ok(&[
        "shim",
        "add",
        "docker-network:mynet",
        "--address",
        "192.168.61.223",
    ]);
    assert!(
        out.contains("lan0  192.168.61.223  192.168.61.192/27  docker-network:mynet"),
        "{out}"
    );
    assert!(lab.ping(&lab.host, &ip), "through the shim");

    // A reboot: the shim is gone with everything else; restore makes it
    // again (Docker's own macvlan is Docker's to make).
    let shim: String = lab
        .host_links()
        .into_iter()
        .find(|l| l.starts_with("ph-"))
        .expect("the shim");
    must(&format!("ip -n {} link del {shim}", lab.host));
    assert!(!lab.ping(&lab.host, &ip));
    assert!(lab.ok(&["restore"]).contains(&shim));
    assert!(lab.ping(&lab.host, &ip), "through the shim again");
    lab.ok(&["shim", "rm", &shim]);
    assert!(!lab.ping(&lab.host, &ip));
}
