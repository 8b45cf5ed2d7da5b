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

#[test]
fn man_pages_for_every_command_come_from_the_parser() {
    let lab = Lab::new("man");
    let dir = lab.state.path().join("man");
    let out = lab.ok(&["man-pages", dir.to_str().unwrap()]);
    for page in [
        "plumb.8",
        "plumb-network-create.8",
        "plumb-egress-add.8",
        "plumb-shim-rm.8",
    ] {
        let text = std::fs::read_to_string(dir.join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}: {out}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is a man page"
        );
    }
    let create = std::fs::read_to_string(dir.join("plumb-network-create.8")).unwrap();
    assert!(
        create.contains("serve\\-dns"),
        "the options are the parser's"
    );
    assert!(
        !dir.join("plumb-man-pages.8").exists(),
        "hidden commands have none"
    );
}

/// What the shell gets from `COMPLETE=bash plumb -- WORDS…` for the last
/// word, with the lab's store.
fn complete(lab: &Lab, words: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .arg("--")
        .args(words)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("PLUMB_STATE_DIR", lab.state.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(['\n', '\u{b}'])
        .map(str::to_string)
        .collect()
}

#[test]
fn the_shell_completes_networks_targets_and_ids_from_the_store() {
    let lab = Lab::new("cpl");
    let script = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
        .env("COMPLETE", "bash")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&script.stdout).contains("complete -o nospace"));
    lab.ok(&["network", "create", "webnet", "--subnet", "10.62.0.0/24"]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "webnet"]);
    lab.ok(&["policy", "add", "webnet", "deny", "proto", "icmp"]);
    let nets = complete(&lab, &["plumb", "network", "rm", ""]);
    assert!(nets.contains(&"webnet".to_string()), "{nets:?}");
    assert!(complete(&lab, &["plumb", "attach", &c, ""]).contains(&"webnet".to_string()));
    assert!(complete(&lab, &["plumb", "detach", ""]).contains(&c));
    assert!(complete(&lab, &["plumb", "policy", "rm", ""]).contains(&"1".to_string()));
}
