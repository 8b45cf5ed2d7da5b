//! The CLI and a running daemon: a daemon that serves the command's state
//! directory and host does its attaches and detaches (on warm engines); one
//! that serves another is never used for them, and a DHCP attach, which
//! needs a daemon, names both scopes instead of working in the wrong one.

mod common;

use common::{Lab, must};

fn nat_network(lab: &Lab, name: &str, subnet: &str) {
    lab.ok(&[
        "network", "create", name, "--driver", "bridge", "--mode", "nat", "--subnet", subnet,
    ]);
}

#[test]
fn attach_and_detach_go_through_a_daemon_of_the_same_scope() {
    let lab = Lab::new("ds");
    let daemon = lab.daemon(&[]);
    nat_network(&lab, "net", "10.81.0.0/24");
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));

    let line = lab.ok(&["attach", &c1, "net", "--ip", "10.81.0.10"]);
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], c1, "{line}");
    assert_eq!(fields[1], "eth0", "{line}");
    assert_eq!(fields[3], "10.81.0.10/24", "{line}");
    lab.ok(&["attach", &c2, "net"]);
    assert!(lab.ping(&c1, &lab.ip_of(&c2, "net")));
    let log = daemon.log_text();
    assert!(
        log.contains("attached") && log.contains(&c1) && log.contains(&c2),
        "the daemon did not do the attaches: {log}"
    );
    // What the daemon recorded is what the CLI reads.
    assert_eq!(
        lab.inspect(&c1)["NetworkSettings"]["Networks"]["net"]["IPAddress"],
        "10.81.0.10"
    );

    // Refusals come back as the CLI's own errors, with nothing done.
    let err = lab.fails(&["attach", &c1, "net"]);
    assert!(err.contains("already attached to network `net`"), "{err}");
    let err = lab.fails(&["attach", &lab.name("nobody"), "net"]);
    assert!(err.contains(&lab.name("nobody")), "{err}");

    let out = lab.ok(&["detach", &c1]);
    assert!(
        out.contains(&format!("detached {c1} from net (eth0)")),
        "{out}"
    );
    assert!(daemon.log_text().contains("detached"));
    assert!(!must(&format!("ip -n {c1} link")).contains("eth0"));
    let out = lab.ok(&["detach", &c1]);
    assert!(out.contains("was not attached"), "{out}");
}

#[test]
fn a_daemon_of_another_scope_is_never_used() {
    let lab = Lab::new("do");
    let daemon = lab.daemon(&[]);
    // Another state directory on the same host, the same socket.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
            .arg("--state-dir")
            .arg(other.path())
            .args(["--host-netns", &lab.host, "--socket"])
            .arg(lab.socket())
            .args(args)
            .output()
            .expect("run plumb")
    };
    let ok = |args: &[&str]| {
        let out = elsewhere(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "network",
        "create",
        "net",
        "--driver",
        "bridge",
        "--subnet",
        "10.82.0.0/24",
    ]);
    let c = lab.netns("c1");
    ok(&["attach", &c, "net"]);
    assert!(
        ok(&["ls"]).contains(&c),
        "recorded in its own state directory"
    );
    assert!(!lab.ok(&["ls"]).contains(&c), "not in the daemon's");
    assert!(
        !daemon.log_text().contains("attached"),
        "{}",
        daemon.log_text()
    );
    ok(&["detach", &c]);
    assert!(!must(&format!("ip -n {c} link")).contains("eth0"));

    // A DHCP attach needs a daemon: this one serves another directory.
    lab.lan("srv", "192.168.83.1/24");
    ok(&[
        "network", "create", "lan", "--driver", "macvlan", "--parent", "lan0", "--ipam", "dhcp",
    ]);
    let out = elsewhere(&["attach", &c, "lan"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serves state directory") && err.contains(&other.path().display().to_string()),
        "{err}"
    );
    assert!(
        !must(&format!("ip -n {c} link")).contains("eth0"),
        "nothing attached"
    );
    assert!(!ok(&["ls"]).contains(&c));
}

/// The daemon's commits leave the store's WAL to grow (no checkpoint's
/// fsyncs in an attach), and it checkpoints the WAL once requests stop.
#[test]
fn the_daemon_bounds_the_store_wal_once_requests_stop() {
    const BOUND: u64 = 64 * 1024; // store::WAL_CHECKPOINT_BYTES
    let lab = Lab::new("dw");
    let _daemon = lab.daemon(&[]);
    nat_network(&lab, "net", "10.82.0.0/24");
    let wal = lab.state.path().join("plumb.db-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let c = lab.netns("c");
    // Each round trip writes about 20 KB of WAL.
    for _ in 0..8 {
        lab.ok(&["attach", &c, "net"]);
        lab.ok(&["detach", &c]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() > BOUND && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(size() <= BOUND, "WAL still {} bytes", size());
    // What was committed is all there.
    lab.ok(&["attach", &c, "net"]);
    assert_eq!(
        lab.inspect(&c)["NetworkSettings"]["Networks"]["net"]["IPAddress"]
            .as_str()
            .map(|s| s.starts_with("10.82.0.")),
        Some(true)
    );
}
