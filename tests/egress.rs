//! Source policy routing: a fake host with two uplinks, each to its own
//! "ISP" namespace; both ISPs answer for the same far address, so where a
//! connection lands shows which uplink it left by, and the source address
//! the far end sees shows whose NAT it went through.

mod common;

use common::{Lab, must, seen_at, wait_until};

fn rules(lab: &Lab) -> String {
    must(&format!("ip -n {} rule show", lab.host))
}

#[test]
fn each_network_leaves_by_its_own_uplink_and_survives_the_uplink_flapping() {
    let lab = Lab::new("eg");
    let (isp1, isp2) = lab.two_uplinks();
    lab.ok(&["network", "create", "plain", "--subnet", "10.31.0.0/24"]);
    lab.ok(&[
        "network",
        "create",
        "pinned",
        "--subnet",
        "10.32.0.0/24",
        "--egress-interface",
        "wan2",
        "--egress-gateway",
        "10.202.0.1",
    ]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "plain"]);
    lab.ok(&["attach", &b, "pinned"]);

    assert_eq!(
        seen_at(&isp1, &a).unwrap(),
        "10.201.0.2",
        "the default uplink, its NAT"
    );
    assert_eq!(
        seen_at(&isp2, &b).unwrap(),
        "10.202.0.2",
        "the pinned uplink, its NAT"
    );
    assert!(
        seen_at(&isp1, &b).is_err(),
        "nothing of `pinned` leaves by wan1"
    );
    // The main table still answers for everything but the default route.
    assert!(lab.ping(&b, "10.32.0.1"), "its gateway");
    assert!(
        !lab.ping(&b, &lab.ip_of(&a, "plain")),
        "networks do not reach each other through the host"
    );

    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "pinned"])).unwrap();
    let table = net["Egress"]["Table"].as_u64().unwrap();
    assert!((20_000..30_000).contains(&table), "{net}");
    let prio = net["Egress"]["RulePriorities"][1].as_u64().unwrap();
    assert!(
        rules(&lab).contains(&format!("{prio}:\tfrom 10.32.0.0/24 lookup {table}")),
        "{}",
        rules(&lab)
    );

    // The uplink flaps: the kernel flushes the table's route with it...
    must(&format!("ip -n {} link set wan2 down", lab.host));
    must(&format!("ip -n {} link set wan2 up", lab.host));
    let table_routes = || must(&format!("ip -n {} route show table {table}", lab.host));
    assert_eq!(table_routes().trim(), "", "flushed by the kernel");
    // ...`plumb restore` puts it back,
    assert!(
        lab.ok(&["restore"])
            .contains(&format!("default route of table {table} via wan2"))
    );
    assert_eq!(seen_at(&isp2, &b).unwrap(), "10.202.0.2");
    // and so does the daemon, by itself, within a second or so, rules too.
    let _daemon = lab.daemon(&[]);
    must(&format!("ip -n {} rule del pref {prio}", lab.host));
    must(&format!("ip -n {} link set wan2 down", lab.host));
    must(&format!("ip -n {} link set wan2 up", lab.host));
    wait_until("the daemon to restore the egress route", 3, || {
        table_routes().contains("default via 10.202.0.1 dev wan2")
            && rules(&lab).contains(&format!("{prio}:\tfrom 10.32.0.0/24 lookup {table}"))
    });
    assert_eq!(seen_at(&isp2, &b).unwrap(), "10.202.0.2");

    // Removing the network takes its rules and table away.
    lab.ok(&["network", "rm", "pinned", "--force"]);
    assert!(!rules(&lab).contains("10.32.0.0/24"), "{}", rules(&lab));
    assert_eq!(table_routes().trim(), "");
}

#[test]
fn egress_tables_avoid_the_systems_and_bad_egress_input_changes_nothing() {
    let lab = Lab::new("egb");
    lab.two_uplinks();
    // A table the admin uses already, in the kernel.
    must(&format!(
        "ip -n {} route add 192.0.2.0/24 via 10.202.0.1 table 20000",
        lab.host
    ));
    lab.ok(&[
        "network",
        "create",
        "p1",
        "--subnet",
        "10.33.0.0/24",
        "--egress-interface",
        "wan2",
        "--egress-gateway",
        "10.202.0.1",
    ]);
    let net: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "p1"])).unwrap();
    assert_ne!(
        net["Egress"]["Table"], 20_000,
        "a table in use is never taken"
    );

    let before = rules(&lab);
    let err = lab.fails(&[
        "network",
        "create",
        "p2",
        "--subnet",
        "10.34.0.0/24",
        "--egress-interface",
        "nosuch0",
    ]);
    assert!(err.contains("--egress-interface `nosuch0`"), "{err}");
    assert_eq!(rules(&lab), before, "no rule left behind");
    let err = lab.fails(&[
        "network",
        "create",
        "p3",
        "--subnet",
        "10.35.0.0/24",
        "--mode",
        "bridged",
        "--egress-interface",
        "wan2",
    ]);
    assert!(err.contains("--egress-interface `wan2`"), "{err}");
    let err = lab.fails(&[
        "network",
        "create",
        "p4",
        "--subnet",
        "10.36.0.0/24",
        "--egress-gateway",
        "10.202.0.1",
    ]);
    assert!(err.contains("--egress-gateway"), "{err}");
    assert!(!lab.ok(&["network", "ls"]).contains("p2"));
}

#[test]
fn one_attachment_leaves_by_its_own_uplink_while_its_neighbours_do_not() {
    let lab = Lab::new("ega");
    let (isp1, isp2) = lab.two_uplinks();
    lab.ok(&["network", "create", "shared", "--subnet", "10.37.0.0/24"]);
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    lab.ok(&["attach", &a, "shared"]);
    lab.ok(&[
        "attach",
        &b,
        "shared",
        "--egress-interface",
        "wan2",
        "--egress-gateway",
        "10.202.0.1",
    ]);
    assert_eq!(seen_at(&isp1, &a).unwrap(), "10.201.0.2", "a: the default");
    assert_eq!(
        seen_at(&isp2, &b).unwrap(),
        "10.202.0.2",
        "b: its own uplink"
    );
    assert!(seen_at(&isp1, &b).is_err(), "nothing of b leaves by wan1");
    assert!(lab.ping(&b, &lab.ip_of(&a, "shared")), "b still reaches a");

    let own = &lab.inspect(&b)["NetworkSettings"]["Networks"]["shared"]["Egress"];
    assert_eq!(own["Interface"], "wan2", "{own}");
    let (table, prio) = (
        own["Table"].as_u64().expect("Table"),
        own["RulePriorities"][1].as_u64().expect("RulePriorities"),
    );
    let ip_b = lab.ip_of(&b, "shared");
    let rule = format!("{prio}:\tfrom {ip_b} lookup {table}");
    assert!(rules(&lab).contains(&rule), "{}", rules(&lab));

    // The daemon repairs it like a network's.
    let _daemon = lab.daemon(&[]);
    must(&format!("ip -n {} rule del pref {prio}", lab.host));
    wait_until("the daemon to restore the attachment's rule", 3, || {
        rules(&lab).contains(&rule)
    });

    // Bad input changes nothing; detach takes rules and table away.
    let c = lab.netns("c");
    let before = rules(&lab);
    let guards = || {
        must(&format!(
            "ip netns exec {} nft list table bridge plumb",
            lab.host
        ))
    };
    let guards_before = guards();
    // Refused after the veth, its addresses and its anti-spoofing elements
    // are in place: all of it is taken back.
    let err = lab.fails(&["attach", &c, "shared", "--egress-interface", "nosuch0"]);
    assert!(err.contains("--egress-interface `nosuch0`"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(rules(&lab), before, "no rule left behind");
    assert_eq!(guards(), guards_before, "no set element left behind");
    assert!(!lab.ok(&["ls"]).contains(&c), "no attachment left behind");
    lab.ok(&["detach", &b]);
    assert!(!rules(&lab).contains(&ip_b), "{}", rules(&lab));
    let routes = must(&format!("ip -n {} route show table {table}", lab.host));
    assert_eq!(routes.trim(), "", "the table is empty again");
}

/// The failpoint names `plumb args` passes, from a run with a trace.
fn failpoints(lab: &Lab, args: &[&str]) -> Vec<String> {
    let file = lab.state.path().join("egress-trace");
    let out = lab
        .command(args)
        .env("PLUMB_FAILPOINT_TRACE", &file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    text.lines()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect()
}

/// A child process that is continued and killed if a test ends early.
struct Held(std::process::Child);

impl Held {
    fn resume_and_wait(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the child this test spawned.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        self.0.wait().unwrap()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: as above; harmless once the child has been waited for.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGCONT) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether process `pid` is stopped (state `T` in /proc/PID/stat).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
    })
}

#[test]
fn a_repair_leaves_the_egress_of_a_network_being_removed_alone() {
    let lab = Lab::new("egr");
    lab.two_uplinks();
    let create = [
        "network",
        "create",
        "going",
        "--subnet",
        "10.36.0.0/24",
        "--egress-interface",
        "wan2",
        "--egress-gateway",
        "10.202.0.1",
    ];
    let rm = ["network", "rm", "going"];
    lab.ok(&create);
    let points = failpoints(&lab, &rm);
    let k = 1 + points
        .iter()
        .position(|p| p == "network removal: host side removed")
        .unwrap_or_else(|| panic!("no such failpoint in {points:?}"));
    lab.ok(&create);
    assert!(rules(&lab).contains("from 10.36.0.0/24"), "{}", rules(&lab));

    // `network rm` is held after it took the rules away, before its last
    // commit: the network is still on record, its removal under way.
    let removal = Held(
        lab.command(&rm)
            .env("PLUMB_FAILPOINT", format!("stop:{k}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("network rm to stop at its failpoint", 10, || {
        stopped(removal.0.id())
    });
    assert!(
        !rules(&lab).contains("from 10.36.0.0/24"),
        "{}",
        rules(&lab)
    );
    // A repair now must not put them back for a network that is going.
    let repaired = lab.ok(&["restore"]);
    assert!(
        !rules(&lab).contains("from 10.36.0.0/24"),
        "restore ({repaired}) put back the rules of a network being removed:\n{}",
        rules(&lab)
    );
    assert!(removal.resume_and_wait().success());
    assert!(
        !rules(&lab).contains("from 10.36.0.0/24"),
        "{}",
        rules(&lab)
    );
    assert!(!lab.ok(&["network", "ls"]).contains("going"));
}

#[test]
fn an_egress_rule_sends_a_cidr_out_of_its_uplink_until_removed() {
    let lab = Lab::new("egr");
    let (isp1, isp2) = lab.two_uplinks();
    lab.ok(&["network", "create", "lab", "--subnet", "10.37.0.0/24"]);
    let (a, other) = (lab.netns("a"), lab.netns("other"));
    lab.ok(&["attach", &a, "lab", "--ip", "10.37.0.10"]);
    lab.ok(&["network", "create", "rest", "--subnet", "10.38.0.0/24"]);
    lab.ok(&["attach", &other, "rest"]);
    assert_eq!(seen_at(&isp1, &a).unwrap(), "10.201.0.2");

    // One address of the network, by CIDR, through the second uplink.
    let out = lab.ok(&[
        "egress",
        "add",
        "10.37.0.10/32",
        "--interface",
        "wan2",
        "--gateway",
        "10.202.0.1",
    ]);
    assert!(
        out.starts_with("1  10.37.0.10/32  wan2 via 10.202.0.1"),
        "{out}"
    );
    assert_eq!(
        seen_at(&isp2, &a).unwrap(),
        "10.202.0.2",
        "out of wan2, NATed"
    );
    assert_eq!(
        seen_at(&isp1, &other).unwrap(),
        "10.201.0.2",
        "others keep wan1"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&lab.ok(&["egress", "ls", "--json"])).unwrap();
    let table = listed[0]["Table"].as_u64().unwrap();
    let prio = listed[0]["RulePriorities"][1].as_u64().unwrap();
    assert!(
        rules(&lab).contains(&format!("{prio}:\tfrom 10.37.0.10 lookup {table}")),
        "{}",
        rules(&lab)
    );
    // A second rule for the same source, a bad one: refused, nothing made.
    let before = rules(&lab);
    let err = lab.fails(&["egress", "add", "10.37.0.10/32", "--interface", "wan1"]);
    assert!(err.contains("leaves by wan2 already"), "{err}");
    let err = lab.fails(&["egress", "add", "10.37.0.10/16", "--interface", "wan1"]);
    assert!(
        err.contains("10.37.0.0/16") && err.contains("host bits"),
        "{err}"
    );
    let err = lab.fails(&["egress", "add", "10.39.0.0/24", "--interface", "nosuch0"]);
    assert!(err.contains("--interface `nosuch0`"), "{err}");
    let err = lab.fails(&[
        "egress",
        "add",
        "10.39.0.0/24",
        "--interface",
        "wan1",
        "--priority",
        &prio.to_string(),
    ]);
    assert!(err.contains("--priority"), "{err}");
    let err = lab.fails(&[
        "egress",
        "add",
        "fd00::/64",
        "--interface",
        "wan1",
        "--gateway",
        "10.201.0.1",
    ]);
    assert!(err.contains("--gateway"), "{err}");
    assert_eq!(rules(&lab), before, "nothing left of the refusals");

    // The uplink flaps and a rule is deleted by hand: the daemon puts both
    // back.
    let _daemon = lab.daemon(&[]);
    must(&format!("ip -n {} rule del pref {prio}", lab.host));
    must(&format!("ip -n {} link set wan2 down", lab.host));
    must(&format!("ip -n {} link set wan2 up", lab.host));
    let table_routes = || must(&format!("ip -n {} route show table {table}", lab.host));
    wait_until("the daemon to restore the egress rule", 5, || {
        table_routes().contains("default via 10.202.0.1 dev wan2")
            && rules(&lab).contains(&format!("{prio}:\tfrom 10.37.0.10 lookup {table}"))
    });
    assert_eq!(seen_at(&isp2, &a).unwrap(), "10.202.0.2");

    // Removed by source: rules and route gone, the default uplink again.
    assert!(
        lab.ok(&["egress", "rm", "10.37.0.10/32"])
            .contains("removed")
    );
    assert!(!rules(&lab).contains("10.37.0.10"), "{}", rules(&lab));
    assert_eq!(table_routes().trim(), "");
    assert_eq!(seen_at(&isp1, &a).unwrap(), "10.201.0.2");
    assert!(lab.ok(&["egress", "rm", "1"]).contains("no egress rule 1"));
}

#[test]
fn an_egress_add_killed_at_any_point_is_undone_by_the_next_plumb() {
    let lab = Lab::new("egk");
    lab.two_uplinks();
    let before = rules(&lab);
    lab.kill_add_at_every_failpoint(
        &[
            "egress",
            "add",
            "10.40.0.0/24",
            "--interface",
            "wan2",
            "--gateway",
            "10.202.0.1",
        ],
        &["egress", "rm", "10.40.0.0/24"],
        || lab.ok(&["egress", "ls"]).lines().count() - 1,
        |n| assert_eq!(rules(&lab), before, "after a kill at failpoint {n}"),
    );
}

#[test]
fn an_egress_rule_masquerades_a_routed_source_nobody_else_nats() {
    let lab = Lab::new("egm");
    let (_isp1, isp2) = lab.two_uplinks();
    lab.ok(&[
        "network",
        "create",
        "r",
        "--mode",
        "routed",
        "--subnet",
        "10.41.0.0/24",
    ]);
    let c = lab.netns("c");
    lab.ok(&["attach", &c, "r"]);
    // Routed: nothing NATs it, and the ISP has no way back.
    lab.ok(&[
        "egress",
        "add",
        "10.41.0.0/24",
        "--interface",
        "wan2",
        "--gateway",
        "10.202.0.1",
    ]);
    assert!(seen_at(&isp2, &c).is_err(), "no answer comes back un-NATed");
    lab.ok(&["egress", "rm", "10.41.0.0/24"]);
    let out = lab.ok(&[
        "egress",
        "add",
        "10.41.0.0/24",
        "--interface",
        "wan2",
        "--gateway",
        "10.202.0.1",
        "--masquerade",
    ]);
    assert!(out.contains("wan2 via 10.202.0.1 masquerade"), "{out}");
    assert_eq!(
        seen_at(&isp2, &c).unwrap(),
        "10.202.0.2",
        "NATed to wan2's address"
    );
    let nft = || must(&format!("ip netns exec {} nft list ruleset", lab.host));
    assert!(nft().contains("egress"), "{}", nft());
    // A flushed ruleset is put back by restore, masquerade included.
    must(&format!("ip netns exec {} nft flush ruleset", lab.host));
    lab.ok(&["restore"]);
    assert_eq!(seen_at(&isp2, &c).unwrap(), "10.202.0.2");
    lab.ok(&["egress", "rm", "10.41.0.0/24"]);
    assert!(!nft().contains("egress"), "{}", nft());
}
