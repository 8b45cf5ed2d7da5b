//! Bad input is refused with the field and value named, exit code 1 and no
//! change; failures in the middle of a change are rolled back completely.

mod common;

use common::{Lab, links, must};

/// Everything that must stay the same when a command is refused.
fn snapshot(lab: &Lab) -> (Vec<String>, String, String, String) {
    (
        links(&lab.host),
        lab.ok(&["network", "ls", "--json"]),
        lab.ok(&["ls", "--json"]),
        // Addresses only: operational state (UNKNOWN -> UP) moves on its own.
        must(&format!(
            "ip -n {} -o addr show | awk '{{print $2, $4}}'",
            lab.host
        )),
    )
}

#[test]
fn bad_network_input_is_refused_precisely_and_changes_nothing() {
    let lab = Lab::new("badnet");
    lab.ok(&["network", "create", "taken", "--subnet", "10.70.0.0/24"]);
    let before = snapshot(&lab);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["network", "create", "x", "--subnet", "10.0.0.0/33"],
            &["--subnet", "10.0.0.0/33"],
        ),
        (
            &["network", "create", ".", "--subnet", "10.71.0.0/24"],
            &["network name", "`.`", "cannot be"],
        ),
        (
            &["network", "create", "..", "--subnet", "10.71.0.0/24"],
            &["network name", "`..`", "cannot be"],
        ),
        (
            &["network", "create", "x", "--subnet", "banana"],
            &["--subnet", "banana"],
        ),
        (
            &["network", "create", "x", "--subnet", "0.0.0.0/0"],
            &["--subnet", "0.0.0.0/0", "overlaps"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--gateway",
                "10.72.0.1",
            ],
            &["--gateway", "10.72.0.1", "outside"],
        ),
        (
            &["network", "create", "x", "--subnet", "10.70.0.128/25"],
            &["--subnet", "10.70.0.128/25", "overlaps", "taken"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--bridge",
                "a-name-of-16-byt",
            ],
            &["--bridge", "a-name-of-16-byt", "15 bytes"],
        ),
        (
            &["network", "create", "taken", "--subnet", "10.73.0.0/24"],
            &["taken", "already exists"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--mode",
                "ring",
            ],
            &["--mode", "ring"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--driver",
                "token-ring",
            ],
            &["--driver", "token-ring"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--ip-range",
                "10.80.0.0/28",
            ],
            &["--ip-range", "10.80.0.0/28"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--mtu",
                "20",
            ],
            &["--mtu", "20"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.71.0.0/24",
                "--aux-address",
                "router",
            ],
            &["--aux-address", "router"],
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--mode",
                "bridged",
                "--uplink",
                "nosuch0",
                "--subnet",
                "10.71.0.0/24",
            ],
            &["--uplink", "nosuch0", "no such interface"],
        ),
        (
            &["network", "create", "bad/name", "--subnet", "10.71.0.0/24"],
            &["network name", "bad/name"],
        ),
        (&["network", "rm", "nope"], &["nope", "does not exist"]),
        (&["network", "inspect", "nope"], &["nope", "does not exist"]),
    ];
    for (args, needles) in cases {
        let err = lab.fails(args);
        for n in *needles {
            assert!(
                err.contains(n),
                "plumb {args:?}: error should mention `{n}`: {err}"
            );
        }
        assert_eq!(snapshot(&lab), before, "plumb {args:?} changed something");
    }
}

#[test]
fn bad_attach_input_is_refused_precisely_and_changes_nothing() {
    let lab = Lab::new("badatt");
    lab.ok(&["network", "create", "small", "--subnet", "10.74.0.0/30"]);
    lab.ok(&["network", "create", "big", "--subnet", "10.75.0.0/24"]);
    let a = lab.netns("a");
    let b = lab.netns("b");
    lab.ok(&["attach", &a, "small"]); // takes the only free address, .2
    lab.ok(&["attach", &a, "big", "--ip", "10.75.0.9"]);
    let before = snapshot(&lab);
    let b_links = links(&b);
    let missing = lab.name("missing");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["attach", &missing, "big"],
            vec![&missing, "no network namespace"],
        ),
        (vec!["attach", &b, "nonet"], vec!["nonet", "does not exist"]),
        (
            vec!["attach", &b, "big", "--ip", "10.75.0.9"],
            vec!["--ip", "10.75.0.9", "already in use"],
        ),
        (
            vec!["attach", &b, "big", "--ip", "10.76.0.9"],
            vec!["--ip", "10.76.0.9", "outside"],
        ),
        (
            vec!["attach", &b, "big", "--ip", "10.75.0.255"],
            vec!["--ip", "10.75.0.255", "broadcast"],
        ),
        (
            vec!["attach", &b, "big", "--ip", "10.75.0.1"],
            vec!["--ip", "10.75.0.1", "already in use"],
        ),
        (
            vec!["attach", &b, "big", "--ifname", "a-very-long-name"],
            vec!["--ifname", "a-very-long-name", "15 bytes"],
        ),
        (
            vec!["attach", &b, "big", "--mac", "01:02:03:04:05:06"],
            vec!["--mac", "01:02:03:04:05:06", "multicast"],
        ),
        (
            vec!["attach", &b, "big", "--default-route", "maybe"],
            vec!["--default-route", "maybe"],
        ),
        (
            vec![
                "attach",
                &b,
                "big",
                "--route",
                "10.9.0.0/16",
                "via",
                "10.8.0.1",
            ],
            vec!["--route", "10.8.0.1"],
        ),
        (vec!["attach", &b, "small"], vec!["small", "pool exhausted"]),
        (vec!["attach", &a, "big"], vec!["already attached"]),
        (
            vec!["attach", "pid:999999999", "big"],
            vec!["pid:999999999", "no such process"],
        ),
        (
            vec!["attach", "/etc/hostname", "big"],
            vec!["/etc/hostname", "not a network namespace"],
        ),
        (
            vec!["attach", "podman:web", "big"],
            vec!["podman:web", "unknown target kind"],
        ),
        (
            vec![
                "attach",
                "docker:web",
                "big",
                "--docker-socket",
                "/nonexistent/docker.sock",
            ],
            vec!["docker:web", "/nonexistent/docker.sock", "not reachable"],
        ),
        (vec!["detach", &b, "nonet"], vec!["nonet", "does not exist"]),
    ];
    for (args, needles) in &cases {
        let err = lab.fails(args);
        for n in needles {
            assert!(
                err.contains(n),
                "plumb {args:?}: error should mention `{n}`: {err}"
            );
        }
        assert_eq!(snapshot(&lab), before, "plumb {args:?} changed something");
        assert_eq!(
            links(&b),
            b_links,
            "plumb {args:?} left something in the target"
        );
    }
}

#[test]
fn malformed_topology_is_refused_before_anything_happens() {
    let lab = Lab::new("badtopo");
    let before = snapshot(&lab);
    let dir = lab.state.path();
    let cases = [
        ("syntax.toml", "[[network]\nname = \"x\"\n", "syntax.toml"),
        (
            "field.toml",
            "[[network]]\nname = \"x\"\nsubnett = [\"10.0.0.0/24\"]\n",
            "subnett",
        ),
        (
            "cidr.toml",
            "[[network]]\nname = \"x\"\nsubnet = [\"10.0.0.0/40\"]\n",
            "10.0.0.0/40",
        ),
        (
            "overlap.toml",
            "[[network]]\nname = \"x\"\nsubnet = [\"10.78.0.0/24\"]\n\
             [[network]]\nname = \"y\"\nsubnet = [\"10.78.0.0/16\"]\n",
            "overlap.toml`: [[network]] #2 `y`: --subnet `10.78.0.0/16`: overlaps 10.78.0.0/24",
        ),
        (
            "twice.toml",
            "[[network]]\nname = \"x\"\nsubnet = [\"10.78.0.0/24\"]\n\
             [[network]]\nname = \"x\"\nsubnet = [\"10.79.0.0/24\"]\n",
            "appears twice",
        ),
        (
            "attach.toml",
            "[[network]]\nname = \"x\"\nsubnet = [\"10.77.0.0/24\"]\n[[attach]]\ntarget = \"y\"\nnetwork = \"x\"\nip = [\"nope\"]\n",
            "nope",
        ),
    ];
    for (file, text, needle) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let err = lab.fails(&["up", path.to_str().unwrap()]);
        assert!(err.contains(needle), "{file}: {err}");
        assert_eq!(snapshot(&lab), before, "{file} changed something");
    }
    let err = lab.fails(&["up", "/nonexistent/file.toml"]);
    assert!(err.contains("/nonexistent/file.toml"), "{err}");
    // A FIFO (no writer: reading would wait forever), a device, a
    // directory and a file over 4 MiB are refused before reading.
    let fifo = dir.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; 5 << 20]).unwrap();
    for (path, needle) in [
        (fifo.as_path(), "not a regular file"),
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (dir, "not a regular file"),
        (big.as_path(), "at most 4 MiB"),
    ] {
        let err = lab.fails(&["up", path.to_str().unwrap()]);
        assert!(err.contains(needle), "{}: {err}", path.display());
    }
    assert_eq!(snapshot(&lab), before);
}

#[test]
fn failed_attach_is_rolled_back_completely() {
    let lab = Lab::new("rbatt");
    lab.ok(&["network", "create", "n1", "--subnet", "10.78.0.0/24"]);
    lab.ok(&["network", "create", "n2", "--subnet", "10.79.0.0/24"]);
    let c = lab.netns("c");
    lab.ok(&[
        "attach",
        &c,
        "n1",
        "--route",
        "10.150.0.0/16",
        "via",
        "10.78.0.1",
    ]);
    let host_before = links(&lab.host);
    let c_before = links(&c);
    // Same destination through the second network: the kernel refuses the
    // route after the veth exists and has its address.
    let err = lab.fails(&[
        "attach",
        &c,
        "n2",
        "--route",
        "10.150.0.0/16",
        "via",
        "10.79.0.1",
    ]);
    assert!(
        err.contains("route 10.150.0.0/16 via 10.79.0.1")
            && err.contains("rolled back")
            && err.contains("delete veth"),
        "{err}"
    );
    assert_eq!(links(&lab.host), host_before, "no veth left on the host");
    assert_eq!(links(&c), c_before, "no interface left in the target");
    let ls = lab.ok(&["ls"]);
    assert_eq!(
        ls.lines().count(),
        2,
        "only the first attachment is recorded: {ls}"
    );
    // The address was released: the one the failed attach took is free
    // (asked for statically: dynamic allocation moves on from the last
    // address it gave).
    let d = lab.netns("d");
    lab.ok(&["attach", &d, "n2", "--ip", "10.79.0.2"]);
    assert_eq!(lab.ip_of(&d, "n2"), "10.79.0.2");
}

#[test]
fn failed_network_create_is_rolled_back_completely() {
    let lab = Lab::new("rbnet");
    // An uplink that is itself a bridge: the kernel refuses to enslave it
    // after plumb has created its own bridge.
    must(&format!("ip -n {} link add brx type bridge", lab.host));
    let before = snapshot(&lab);
    let err = lab.fails(&[
        "network",
        "create",
        "lan",
        "--mode",
        "bridged",
        "--uplink",
        "brx",
        "--subnet",
        "10.81.0.0/24",
    ]);
    assert!(
        err.contains("enslave uplink brx")
            && err.contains("rolled back")
            && err.contains("delete bridge pl-lan"),
        "{err}"
    );
    assert_eq!(snapshot(&lab), before);
    // And the name and subnet are free to use.
    lab.ok(&["network", "create", "lan", "--subnet", "10.81.0.0/24"]);
}

#[test]
fn network_rm_is_refused_while_attached_unless_forced() {
    let lab = Lab::new("rm");
    lab.ok(&["network", "create", "n", "--subnet", "10.82.0.0/24"]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "n"]);
    let err = lab.fails(&["network", "rm", "n"]);
    assert!(
        err.contains("has 1 attachment") && err.contains("--force"),
        "{err}"
    );
    assert!(links(&lab.host).contains(&"pl-n".to_string()));
    lab.ok(&["network", "rm", "n", "--force"]);
    assert_eq!(links(&lab.host), vec!["lo".to_string()]);
    assert_eq!(links(&c), vec!["lo".to_string()]);
    let nft = common::sh(&format!("ip netns exec {} nft list tables", lab.host));
    assert!(
        !String::from_utf8_lossy(&nft.stdout).contains("plumb"),
        "plumb's table is gone with its last NAT network"
    );
}

#[test]
fn a_reader_that_goes_away_ends_plumb_by_sigpipe_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let lab = Lab::new("pipe");
    lab.ok(&["network", "create", "p", "--subnet", "10.47.0.0/24"]);
    // A pipe whose reading end is already closed: the first write fails.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = lab
        .command(&["network", "ls"])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

#[test]
fn a_full_bridge_is_named_in_words_and_the_attach_leaves_nothing() {
    let lab = Lab::new("full");
    lab.ok(&["network", "create", "full", "--subnet", "10.48.0.0/16"]);
    // 1,023 ports, the most a Linux bridge holds, made directly.
    let batch: String = (0..1023)
        .map(|i| format!("link add fp{i} master pl-full type veth peer name fq{i}\n"))
        .collect();
    let path = std::env::temp_dir().join(format!("{}-ports.batch", lab.host));
    std::fs::write(&path, batch).unwrap();
    must(&format!("ip -n {} -batch {}", lab.host, path.display()));
    std::fs::remove_file(&path).unwrap();
    let c = lab.netns("c");
    let err = lab.fails(&["attach", &c, "full"]);
    assert!(
        err.contains("bridge pl-full of network `full` has 1023 ports"),
        "{err}"
    );
    assert_eq!(links(&c), vec!["lo"]);
    assert_eq!(lab.ok(&["ls", "--json"]).trim(), "[]");
}

/// `--state-dir` naming a file, and an interface name outside ASCII: a
/// precise error naming the field, exit 1, nothing changed.
#[test]
fn a_state_dir_that_is_a_file_and_a_non_ascii_ifname_are_refused() {
    let lab = Lab::new("ers");
    let file = lab.state.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = lab
        .command(&["network", "ls"])
        .arg("--state-dir")
        .arg(&file)
        .output()
        .expect("run plumb");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--state-dir") && stderr.contains("not a directory"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    lab.ok(&["network", "create", "n", "--subnet", "10.31.0.0/24"]);
    let c = lab.netns("c");
    let err = lab.fails(&["attach", &c, "n", "--ifname", "ethé"]);
    assert!(err.contains("--ifname") && err.contains("ASCII"), "{err}");
    assert_eq!(common::links(&c), vec!["lo"]);
}

/// `--host-netns` is a target and checked as one: `..` or a name with `/`
/// never reaches the filesystem.
#[test]
fn host_netns_is_checked_like_a_target() {
    let state = tempfile::tempdir().unwrap();
    for (bad, why) in [
        ("..", "cannot be empty or contain `/`"),
        ("a/../../x", "cannot be empty or contain `/`"),
        ("nope:x", "unknown target kind"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_plumb"))
            .arg("--state-dir")
            .arg(state.path())
            .args(["--host-netns", bad, "network", "ls"])
            .output()
            .expect("run plumb");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("--host-netns") && stderr.contains(why),
            "{bad}: {stderr}"
        );
    }
}

/// The exit statuses `plumb --help` documents: 2 for a command line that
/// does not parse, 1 for a value plumb refuses or a failed change.
#[test]
fn exit_statuses_are_the_documented_ones() {
    let lab = Lab::new("exit");
    let help = lab.ok(&["--help"]);
    assert!(help.contains("Exit status:"), "{help}");
    for (args, code) in [
        (vec!["bogus"], 2),
        (vec!["attach"], 2),
        (vec!["network", "create", "n", "--mtu", "big"], 2),
        (vec!["network", "create", "n", "--subnet", "10.0.0.0/33"], 1),
        (vec!["attach", "nowhere-at-all", "n"], 1),
    ] {
        let out = lab.plumb(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert!(
        !lab.ok(&["network", "ls"]).contains("10.0.0.0"),
        "nothing made"
    );
}
