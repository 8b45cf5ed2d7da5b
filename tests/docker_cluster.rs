//! Docker's containers on a cluster network: `docker network create -d
//! plumb --ipam-driver null -o cluster-network=NAME` on a host whose daemon
//! is in the cluster, against a private dockerd in the lab's host (h1), a
//! second host (h2) with a daemon of its own and etcd on an underlay.

mod common;

use common::cluster::*;
use common::docker::{Plugin, in_netns_of, interfaces_of};
use common::{Lab, wait_for, wait_until};

#[test]
fn docker_containers_join_a_cluster_network_and_reach_other_hosts() {
    let lab = Lab::new("dcl");
    let u = underlay(&lab);
    let _etcd = etcd(&lab, &u.etcd_ns);
    let plugin = Plugin::start_with(
        &lab,
        &[
            "--cluster-store",
            STORE,
            "--cluster-host",
            "h1",
            "--cluster-ttl",
            "2",
        ],
    );
    let _d2 = member_daemon(&lab, &u.host2, "h2", "d2");
    wait_until("both hosts to join", 20, || members(&lab).len() == 2);
    define(&lab, "t1", "4800", "10.170.0.0/24");
    wait_until("h1's daemon to make t1", 15, || {
        lab.ok(&["network", "ls"]).contains("t1 ")
    });

    // Docker's own addresses would collide with the other hosts': refused.
    let out = plugin.create(
        "t1d",
        &["-o", "cluster-network=t1", "--subnet", "10.170.0.0/24"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--ipam-driver null"),
        "{err}"
    );
    let out = plugin.create(
        "nod",
        &["--ipam-driver", "null", "-o", "cluster-network=none"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cluster-network"),
        "{err}"
    );
    plugin.create_ok(
        "t1d",
        &["--ipam-driver", "null", "-o", "cluster-network=t1"],
    );

    let c2 = lab.netns("c2");
    let (ip2, _) = attach_on(&lab, &u.host2, "d2", &c2, "t1");
    let docker = &plugin.docker;
    docker.run(&["--name", "web", "--net", "t1d"], &["sleep", "100000"]);
    let pid = docker.container_pid("web");
    let web = wait_for("web's address on t1", 10, || {
        interfaces_of(pid)
            .into_iter()
            .flat_map(|i| i.v4)
            .find(|a| a.starts_with("10.170.0."))
            .map(|a| a.split('/').next().unwrap_or_default().to_string())
            .ok_or_else(|| "none yet".to_string())
    });
    // From h1's own block, and both ways across the overlay.
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "t1"])).unwrap();
    let last: u32 = web.rsplit('.').next().unwrap().parse().unwrap();
    let block = format!("10.170.0.{}/26", last / 64 * 64);
    assert!(
        inspect["Blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["Block"] == block.as_str() && b["Host"] == "h1"),
        "web's address {web} is in h1's block: {}",
        inspect["Blocks"]
    );
    wait_until("h2's container to reach web", 15, || lab.ping(&c2, &web));
    assert!(
        in_netns_of(pid, &format!("ping -c1 -W2 {ip2}"))
            .status
            .success(),
        "web reaches h2's container"
    );

    // Docker's network goes; the cluster's stays, and web is forgotten.
    docker.must(&["rm", "-f", "web"]);
    docker.must(&["network", "rm", "t1d"]);
    assert!(lab.ok(&["network", "ls"]).contains("t1 "));
    wait_until("h2 to stop reaching web", 15, || !lab.ping(&c2, &web));
}
