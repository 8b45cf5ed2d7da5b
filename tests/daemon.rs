//! The CLI and a running daemon: a daemon that serves the command's state
//! directory and host does its attaches and detaches (on warm engines); one
//! that serves another is never used for them, and a DHCP attach, which
//! needs a daemon, names both scopes instead of working in the wrong one.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Lab, must, wait_until};

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

/// The daemon refuses what no client should be able to do to it: a request
/// over 1 MiB is answered with an error and not read on, a client that
/// sends nothing keeps nobody else waiting, and it serves on afterwards.
#[test]
fn the_daemon_refuses_a_huge_request_and_a_silent_client_blocks_nobody() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    let lab = Lab::new("dh");
    let _daemon = lab.daemon(&[]);
    let _silent = UnixStream::connect(lab.socket()).expect("connect");
    let mut huge = UnixStream::connect(lab.socket()).expect("connect");
    // The daemon stops reading after 1 MiB: what it never reads may not
    // be written, so the write is allowed to fail.
    let line = vec![b'x'; 2 << 20];
    let _ = huge.write_all(&line);
    let mut answer = String::new();
    BufReader::new(&huge)
        .read_line(&mut answer)
        .expect("an answer");
    assert!(answer.contains("longer than 1 MiB"), "{answer}");
    // Served as before, with the silent client still connected.
    nat_network(&lab, "net", "10.82.0.0/24");
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "net"]);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 2);
}

/// `--socket` never replaces what is not a stale socket of its own.
#[test]
fn the_daemon_will_not_replace_a_file_at_its_socket_path() {
    let lab = Lab::new("df");
    let path = lab.state.path().join("precious");
    std::fs::write(&path, "keep me").unwrap();
    let out = lab
        .command(&["daemon", "--socket"])
        .arg(&path)
        .output()
        .expect("run plumb daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

/// At the descriptor limit the daemon waits instead of spinning, says so
/// once with a count, and serves again when descriptors are free.
#[test]
fn out_of_descriptors_the_daemon_backs_off_and_recovers() {
    use std::os::unix::net::UnixStream;
    let lab = Lab::new("dm");
    let daemon = lab.daemon(&[]);
    let pid = daemon.child.id();
    // Few descriptors left: the daemon's own (store, sockets) plus a few.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // The soft limit only: raising a hard one back takes more than root here.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: String = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("the daemon's descriptor limit")
        .into();
    must(&format!("prlimit --pid {pid} --nofile={}:", open + 4));
    let clients: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(lab.socket()).expect("connect"))
        .collect();
    // Wait until it is failing, then let it fail for a while.
    common::wait_until("the daemon to run out of descriptors", 10, || {
        daemon.log_text().contains("accept:")
    });
    let spent = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = spent(pid);
    let start = std::time::Instant::now();
    common::wait_until("a second to pass", 5, || start.elapsed().as_secs() >= 1);
    let ticks = spent(pid) - before;
    // A spinning accept loop burns a whole core: ~100 ticks a second.
    assert!(ticks < 50, "{ticks} ticks of CPU in a second at EMFILE");
    let warnings = daemon.log_text().matches("accept:").count();
    assert!(
        warnings <= 2,
        "{warnings} accept warnings: {}",
        daemon.log_text()
    );
    drop(clients);
    must(&format!("prlimit --pid {pid} --nofile={soft}:"));
    nat_network(&lab, "net", "10.83.0.0/24");
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "net"]);
    common::wait_until("the daemon to say how often it failed", 5, || {
        daemon.log_text().contains("repeated")
    });
}

/// The store (every network, address and lease) is its owner's alone: a
/// state directory plumb makes is 0700, the database and its WAL 0600, and
/// a database an older plumb left readable is made private.
#[test]
fn the_store_is_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new("dp");
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new").join("state");
    let run = |dir: &std::path::Path, name: &str, subnet: &str| {
        let out = lab
            .command(&["network", "create", name, "--subnet", subnet])
            .arg("--state-dir")
            .arg(dir)
            .output()
            .expect("run plumb");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    run(&dir, "n1", "10.84.0.0/24");
    assert_eq!(mode(&dir), 0o700);
    for f in ["plumb.db", "plumb.db-wal"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let old = parent.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("plumb.db"), b"").unwrap();
    std::fs::set_permissions(old.join("plumb.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    run(&old, "n2", "10.85.0.0/24");
    assert_eq!(mode(&old.join("plumb.db")), 0o600);
}

/// A worker of the daemon that fails is said and started again: with the
/// link watcher, the policy watcher and the reconcile loop each made to
/// panic once (a debug build's `PLUMB_PANIC_IN`), the log names each, and
/// each does its job afterwards (a deleted bridge is made again, a flushed
/// table written again, an attachment whose namespace went is removed).
#[test]
fn a_failed_worker_is_reported_and_started_again() {
    let lab = Lab::new("dsup");
    nat_network(&lab, "sup", "10.27.0.0/24");
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "sup"]);
    lab.ok(&["attach", &b, "sup"]);
    let daemon = lab.daemon_with_env(
        &[],
        &[(
            "PLUMB_PANIC_IN",
            std::ffi::OsStr::new("links,policy,reconcile"),
        )],
    );
    for worker in ["links", "policy", "reconcile"] {
        common::wait_until(
            &format!("the {worker} worker to fail and restart"),
            20,
            || {
                daemon.log_text().contains(&format!(
                    "the {worker} worker failed (PLUMB_PANIC_IN={worker})"
                ))
            },
        );
    }
    let host = lab.host.clone();
    must(&format!("ip -n {host} link del pl-sup"));
    common::wait_until(
        "the restarted link watcher to make the bridge again",
        10,
        || {
            common::sh(&format!("ip -n {host} link show pl-sup"))
                .status
                .success()
        },
    );
    must(&format!("ip netns exec {host} nft delete table inet plumb"));
    common::wait_until(
        "the restarted policy watcher to write the table again",
        10,
        || {
            common::sh(&format!("ip netns exec {host} nft list table inet plumb"))
                .status
                .success()
        },
    );
    must(&format!("ip netns del {b}"));
    common::wait_until("the restarted reconcile loop to remove b", 20, || {
        !lab.ok(&["ls"]).contains(&b)
    });
    assert!(lab.ok(&["ls"]).contains(&a));
}

/// A path target means what it means to the client: here a bind mount of
/// a namespace that only the client's mount namespace has, while the
/// daemon runs in one of its own where the same path is a plain file. The
/// attach goes through the daemon all the same, and the daemon's sweeps
/// keep the attachment while the bind mount alone holds the namespace
/// (its name deleted), and remove it once that goes too.
#[test]
fn a_path_attach_holds_whatever_mount_namespace_the_daemon_runs_in() {
    let lab = Lab::new("dmn");
    nat_network(&lab, "lan", "10.62.0.0/24");
    let c = lab.netns("c");
    let path = lab.state.path().join("c-ns");
    std::fs::File::create(&path).unwrap();
    let path = path.display().to_string();
    must(&format!("mount --bind /run/netns/{c} {path}"));
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mut mounted = Some(Unmount(path.clone()));

    let mut unshared = std::process::Command::new("unshare");
    unshared
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("umount {path} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_plumb"))
        .arg("--state-dir")
        .arg(lab.state.path())
        .args(["--host-netns", &lab.host, "--socket"])
        .arg(lab.socket())
        .args(["daemon", "--docker-plugin", "none"]);
    let daemon = lab.start_daemon(unshared);
    let pid = daemon.child.id();
    let ns_inode = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    assert_ne!(
        ns_inode(&format!("/proc/{pid}/root{path}")),
        ns_inode(&path),
        "the daemon's {path} is not the namespace"
    );

    lab.ok(&["attach", &path, "lan", "--ip", "10.62.0.20"]);
    assert!(
        daemon
            .log_text()
            .contains(&format!("attached target={path}")),
        "the daemon made the attachment: {}",
        daemon.log_text()
    );
    assert!(lab.ping(&lab.host, "10.62.0.20"));

    // Only the bind mount holds the namespace now.
    must(&format!("ip netns del {c}"));
    for round in 0..2 {
        let canary = lab.netns(&format!("canary{round}"));
        lab.ok(&["attach", &canary, "lan"]);
        must(&format!("ip netns del {canary}"));
        wait_until("a sweep of the daemon's to remove the canary", 15, || {
            !lab.ok(&["ls"]).contains(&canary)
        });
        assert!(
            lab.ok(&["ls"]).contains(&path),
            "round {round}: the attachment by path was swept away: {}",
            daemon.log_text()
        );
    }
    assert!(lab.ping(&lab.host, "10.62.0.20"));

    // Gone for good: nothing holds it any more.
    drop(mounted.take());
    wait_until("the daemon to remove the attachment", 15, || {
        !lab.ok(&["ls"]).contains(&path)
    });
}
