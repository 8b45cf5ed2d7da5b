//! What a user reads: `--version` names the commit, a network without a
//! subnet is described without a dangling comma, and `ls` shows no host
//! interface for a container that has none there (macvlan).

mod common;

use common::{Lab, must};

#[test]
fn version_names_the_version_and_the_commit() {
    let lab = Lab::new("ver");
    let out = lab.ok(&["--version"]);
    let commit = must("git rev-parse --short=12 HEAD");
    assert_eq!(
        out.trim(),
        format!(
            "plumb {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            commit.trim()
        )
    );
}

#[test]
fn lines_say_what_there_is_and_nothing_more() {
    let lab = Lab::new("out");
    lab.wire(&lab.host, "eth2", None, &lab.netns("peer"), "eth0", None);
    let out = lab.ok(&[
        "network",
        "create",
        "nic",
        "--driver",
        "host-device",
        "--device",
        "eth2",
    ]);
    assert_eq!(out.trim(), "network nic created: host-device eth2");
    lab.ok(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        "eth2",
        "--subnet",
        "10.61.0.0/24",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "mv"]);
    let ls = lab.ok(&["ls"]);
    let row: Vec<&str> = ls
        .lines()
        .find(|l| l.starts_with(&c))
        .expect("c's row")
        .split_whitespace()
        .collect();
    assert_eq!(row[3], "-", "no host interface: {ls}");
}
