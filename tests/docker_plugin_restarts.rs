//! plumb's Docker driver when dockerd restarts: with live restore the
//! containers keep running and keep what plumb gave them, and Docker still
//! removes their endpoints through plumb afterwards; without it, dockerd
//! stops them and starts the `--restart always` ones again on new
//! endpoints, with nothing of the old ones left behind.

mod common;

use common::docker::{Dockerd, Plugin, in_netns_of, interfaces_of};
use common::{Lab, wait_for, wait_until};

const SLEEP: &[&str] = &["sleep", "100000"];

/// The IPv4 addresses (no prefix) of the container `name` in `prefix`.
fn addresses(docker: &Dockerd, name: &str, prefix: &str) -> Vec<String> {
    interfaces_of(docker.container_pid(name))
        .into_iter()
        .flat_map(|i| i.v4)
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .filter(|a| a.starts_with(prefix))
        .collect()
}

/// plumb's attachment rows (`plumb ls`, header left out).
fn attachments(lab: &Lab) -> Vec<String> {
    lab.ok(&["ls"])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// The host ends of plumb's veths in the fake host.
fn host_ports(lab: &Lab) -> Vec<String> {
    common::links(&lab.host)
        .into_iter()
        .filter(|l| l.starts_with("pv") || l.starts_with("pc"))
        .collect()
}

#[test]
fn with_live_restore_containers_keep_their_plumb_network_across_a_dockerd_restart() {
    let lab = Lab::new("dlr");
    lab.upstream("10.66.9");
    let mut p = Plugin::start(&lab);
    p.create_ok("lr", &["--subnet", "10.66.0.0/24", "-o", "mode=nat"]);
    let docker = &mut p.docker;
    docker.run(&["--name", "c1", "--network", "lr"], SLEEP);
    let before = addresses(docker, "c1", "10.66.0.");
    assert_eq!(before.len(), 1, "{before:?}");
    wait_until("c1's attachment finished", 10, || {
        attachments(&lab).iter().any(|l| l.starts_with("docker:c1"))
    });
    docker.enable_live_restore();
    let pid = docker.container_pid("c1");
    docker.restart_live();
    assert_eq!(
        docker.container_pid("c1"),
        pid,
        "c1 ran on through the restart"
    );
    assert_eq!(addresses(docker, "c1", "10.66.0."), before);
    assert!(
        in_netns_of(pid, "ping -c1 -W2 10.66.9.1").status.success(),
        "c1 still reaches upstream through plumb's NAT"
    );
    // Docker still removes its endpoint through plumb, and makes new ones.
    docker.must(&["rm", "-f", "c1"]);
    wait_until("c1's attachment gone", 10, || attachments(&lab).is_empty());
    assert_eq!(host_ports(&lab), Vec::<String>::new());
    docker.run(&["--name", "c2", "--network", "lr"], SLEEP);
    assert_eq!(addresses(docker, "c2", "10.66.0.").len(), 1);
}

#[test]
fn without_live_restore_restarted_containers_get_new_endpoints_and_the_old_ones_go() {
    let lab = Lab::new("drs");
    lab.upstream("10.67.9");
    let mut p = Plugin::start(&lab);
    p.create_ok("rs", &["--subnet", "10.67.0.0/24", "-o", "mode=nat"]);
    let docker = &mut p.docker;
    docker.run(
        &["--name", "keep", "--restart", "always", "--network", "rs"],
        SLEEP,
    );
    docker.run(&["--name", "once", "--network", "rs"], SLEEP);
    wait_until("both attachments finished", 10, || {
        let rows = attachments(&lab);
        rows.iter().any(|l| l.starts_with("docker:keep"))
            && rows.iter().any(|l| l.starts_with("docker:once"))
    });
    docker.restart();
    // `keep` runs again, on a new endpoint that works; `once` stays down.
    let pid = wait_for("keep to run again", 30, || {
        docker
            .pid_if_running("keep")
            .ok_or_else(|| "not running".to_string())
    });
    assert!(!docker.running("once"));
    let now = wait_for("keep's address", 10, || {
        let a = addresses(docker, "keep", "10.67.0.");
        (a.len() == 1)
            .then_some(a)
            .ok_or_else(|| "no address yet".to_string())
    });
    assert!(!now.is_empty());
    assert!(
        in_netns_of(pid, "ping -c1 -W2 10.67.9.1").status.success(),
        "keep reaches upstream again"
    );
    // One attachment, one host port: nothing of the old endpoints is left.
    wait_until("only keep's new attachment", 10, || {
        let rows = attachments(&lab);
        rows.len() == 1 && rows[0].starts_with("docker:keep")
    });
    assert_eq!(host_ports(&lab).len(), 1, "{:?}", host_ports(&lab));
}

#[test]
fn after_a_reboot_plumb_restores_its_networks_and_dockerd_makes_its_endpoints_again() {
    let lab = Lab::new("dpb");
    lab.upstream("10.68.9");
    let mut p = Plugin::start(&lab);
    // plumb's IPAM: the dead endpoints' addresses must come back to it.
    let driver = p.name.clone();
    p.create_ok(
        "rb",
        &[
            "--ipam-driver",
            &driver,
            "--subnet",
            "10.68.0.0/24",
            "-o",
            "mode=nat",
        ],
    );
    p.docker.run(
        &[
            "--name",
            "pinned",
            "--restart",
            "always",
            "--network",
            "rb",
            "--ip",
            "10.68.0.40",
        ],
        SLEEP,
    );
    p.docker.run(
        &["--name", "free", "--restart", "always", "--network", "rb"],
        SLEEP,
    );
    wait_until("both attachments finished", 10, || {
        attachments(&lab)
            .iter()
            .filter(|l| l.starts_with("docker:"))
            .count()
            == 2
    });
    let free_before = addresses(&p.docker, "free", "10.68.0.");
    // The power goes: dockerd and its containers die with no word to
    // plumb, and the kernel forgets what plumb made. plumb starts first
    // (its unit is ordered before docker.service), then dockerd.
    p.stop_daemon();
    p.docker.crash();
    lab.reboot();
    p.start_daemon();
    p.docker.start_again();
    for name in ["pinned", "free"] {
        wait_for(&format!("{name} to run again"), 30, || {
            p.docker
                .pid_if_running(name)
                .ok_or_else(|| "not running".to_string())
        });
    }
    let pinned = wait_for("pinned's address", 10, || {
        let a = addresses(&p.docker, "pinned", "10.68.0.");
        (a.len() == 1)
            .then_some(a)
            .ok_or_else(|| "none yet".to_string())
    });
    assert_eq!(pinned, ["10.68.0.40"]);
    for name in ["pinned", "free"] {
        let pid = p.docker.container_pid(name);
        wait_until(&format!("{name} reaches upstream"), 10, || {
            in_netns_of(pid, "ping -c1 -W1 10.68.9.1").status.success()
        });
    }
    // Exactly the two new endpoints: nothing of the dead ones is left.
    wait_until("two attachments, two host ports", 10, || {
        attachments(&lab).len() == 2 && host_ports(&lab).len() == 2
    });
    // And no record of the dead ones: the daemon's startup removed their
    // attachments, their endpoints with them.
    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "rb"])).expect("inspect JSON");
    let endpoints = net["Docker"]["Endpoints"]
        .as_array()
        .expect("Docker endpoints");
    assert_eq!(endpoints.len(), 2, "{net}");
    // The dead endpoints' addresses came back to plumb's IPAM (Docker
    // gives them back as it cleans up at its start): free, asking for any,
    // has its old one again.
    assert_eq!(addresses(&p.docker, "free", "10.68.0."), free_before);
}

/// dockerd waits 30 s for a legacy plugin's socket to appear: a plumb that
/// starts while dockerd does (systemd starts plumbd first) is in time, and
/// takes the endpoint Docker stopped while it was down (without a word:
/// Docker does not repeat the Leave it could not make) for gone, so that
/// the container's new endpoint may have the same address.
#[test]
fn a_dockerd_that_starts_while_plumb_does_gets_its_containers_up_on_plumbs_networks() {
    let lab = Lab::new("dpl");
    let mut p = Plugin::start(&lab);
    p.create_ok("late", &["--subnet", "10.69.0.0/24", "-o", "mode=nat"]);
    p.docker.run(
        &[
            "--name",
            "early",
            "--restart",
            "always",
            "--network",
            "late",
        ],
        SLEEP,
    );
    wait_until("early's attachment finished", 10, || {
        attachments(&lab)
            .iter()
            .any(|l| l.starts_with("docker:early"))
    });
    // plumb is down while dockerd stops, and starts as dockerd does.
    p.stop_daemon();
    p.docker.stop_only();
    p.docker.launch_again();
    p.start_daemon();
    p.docker.wait_ready();
    let pid = wait_for("early to run again", 60, || {
        p.docker
            .pid_if_running("early")
            .ok_or_else(|| "not running".to_string())
    });
    wait_for("early's address", 10, || {
        let a = addresses(&p.docker, "early", "10.69.0.");
        (a.len() == 1)
            .then_some(a)
            .ok_or_else(|| "none yet".to_string())
    });
    assert!(
        in_netns_of(pid, "ping -c1 -W2 10.69.0.1").status.success(),
        "early reaches its gateway"
    );
    wait_until("one attachment, one host port", 10, || {
        attachments(&lab).len() == 1 && host_ports(&lab).len() == 1
    });
}
