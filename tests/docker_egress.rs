//! `plumb egress` with Docker sources, against a private dockerd in a lab's
//! fake host (tests/common/docker.rs) that has two uplinks, wan1 (the
//! default route) and wan2, each to its own "ISP" namespace; both ISPs
//! answer for the same far address, so the ISP that sees a connection shows
//! the uplink it left by, and the source address it sees shows whose NAT it
//! went through (Docker's own MASQUERADE here: 10.201.0.2 or 10.202.0.2).
//!
//! `docker:NAME` and `docker-network:NAME` stand for what Docker says now;
//! with `plumb daemon` running, the kernel rules follow a container that
//! restarts with another address, is removed, and a network made again with
//! another subnet. Between a Docker event and what it must cause nothing
//! runs but `plumb egress ls` and `plumb inspect`, which change nothing.

mod common;

use common::docker::Dockerd;
use common::{Bg, Lab, must, wait_for, wait_until};
use serde_json::Value;

/// The address of wan1 and wan2 in the fake host: what the ISPs see after
/// Docker's MASQUERADE.
const WAN1: &str = "10.201.0.2";
const WAN2: &str = "10.202.0.2";
/// A long-running command for containers that only need to exist.
const SLEEP: &[&str] = &["sleep", "100000"];

/// `plumb egress add SOURCE` out of wan2, via isp2.
fn via_wan2(source: &str) -> [&str; 7] {
    [
        "egress",
        "add",
        source,
        "--interface",
        "wan2",
        "--gateway",
        "10.202.0.1",
    ]
}

/// Where a connection from somewhere to FAR is made from.
enum Origin<'a> {
    /// A namespace under /run/netns (the fake host).
    Netns(&'a str),
    /// A running container of `docker`, by name.
    Container(&'a Dockerd<'a>, &'a str),
}

/// The source address `isp` saw for a connection from `from` to FAR.
fn seen_at(isp: &str, from: &Origin) -> std::io::Result<String> {
    match from {
        Origin::Netns(ns) => common::seen_at(isp, ns),
        Origin::Container(docker, name) => {
            let pid = docker.container_pid(name);
            common::seen_at(isp, &format!("/proc/{pid}/ns/net"))
        }
    }
}

/// Assert that `from` leaves by `isp` (seen from `addr`) and not by `not`.
fn leaves_by(from: &Origin, what: &str, isp: &str, addr: &str, not: &str, daemon: Option<&Bg>) {
    let seen = seen_at(isp, from);
    assert_eq!(
        seen.as_deref().ok(),
        Some(addr),
        "{what} should be seen at {isp} from {addr}: {seen:?}{}",
        daemon.map(log_tail).unwrap_or_default()
    );
    let wrong = seen_at(not, from);
    assert!(
        wrong.is_err(),
        "nothing of {what} should leave by {not}, yet it saw {wrong:?}"
    );
}

/// The end of plumb daemon's log, for failure messages.
fn log_tail(daemon: &Bg) -> String {
    let log = daemon.log_text();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "\n--- the end of plumb daemon's log:\n{}",
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

fn rules(lab: &Lab) -> String {
    must(&format!("ip -n {} rule show", lab.host))
}

fn table_routes(lab: &Lab, table: u64) -> String {
    must(&format!("ip -n {} route show table {table}", lab.host))
}

/// `plumb egress ls --json`.
fn listed(docker: &Dockerd) -> Vec<Value> {
    let out = docker.plumb_ok(&["egress", "ls", "--json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("egress ls --json: {e}: {out}"))
        .as_array()
        .expect("a list")
        .clone()
}

/// The listed egress rule of `source`.
fn rule_of(docker: &Dockerd, source: &str) -> Option<Value> {
    listed(docker).into_iter().find(|r| r["Source"] == source)
}

/// What the rule of `source` selects now, as listed.
fn selects(docker: &Dockerd, source: &str) -> Vec<String> {
    let rule = rule_of(docker, source).unwrap_or_else(|| panic!("no egress rule of {source}"));
    rule["Selects"]
        .as_array()
        .expect("Selects")
        .iter()
        .map(|s| s.as_str().expect("a CIDR").to_string())
        .collect()
}

/// (table, first priority) of a listed rule.
fn table_and_priority(rule: &Value) -> (u64, u64) {
    (
        rule["Table"].as_u64().expect("Table"),
        rule["RulePriorities"][0].as_u64().expect("RulePriorities"),
    )
}

/// The pair of kernel rules an egress rule makes for `from` (as `ip rule`
/// prints it: `10.0.0.5`, `10.55.0.0/24`).
fn has_rule_pair(lab: &Lab, prio: u64, from: &str, table: u64) -> bool {
    let rules = rules(lab);
    rules.contains(&format!(
        "{prio}:\tfrom {from} lookup main suppress_prefixlength 0"
    )) && rules.contains(&format!("{}:\tfrom {from} lookup {table}", prio + 1))
}

/// Whether any `ip rule` line selects `from` exactly (`from ADDR ` with
/// the space: 172.31.250.2 is not 172.31.250.20).
fn any_rule_from(lab: &Lab, from: &str) -> bool {
    rules(lab)
        .lines()
        .any(|l| l.contains(&format!("from {from} ")))
}

/// A container's address on Docker's default bridge.
fn bridge_ip(docker: &Dockerd, name: &str) -> String {
    docker
        .must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.bridge.IPAddress}}",
            name,
        ])
        .trim()
        .to_string()
}

/// (1, 2, 3, 4, 6, 7) A container on Docker's default bridge leaves by
/// wan2 while its neighbour and the host leave by wan1; it keeps wan2 with
/// a new address after a restart, and through a flap of wan2; removed, its
/// kernel rules go and the egress rule stays, selecting nothing. Without a
/// daemon, `egress add docker:...` warns; a container Docker does not know
/// is refused with nothing changed.
#[test]
fn a_container_leaves_by_its_own_uplink_and_the_rule_follows_it() {
    let lab = Lab::new("dke");
    let (isp1, isp2) = lab.two_uplinks();
    let docker = Dockerd::start(&lab, false);
    docker.run(&["--name", "mon"], SLEEP);
    docker.run(&["--name", "other"], SLEEP);
    let mon = Origin::Container(&docker, "mon");
    let other = Origin::Container(&docker, "other");
    let host = Origin::Netns(&lab.host);
    // Before any egress rule, all of them leave by wan1.
    leaves_by(&mon, "mon", &isp1, WAN1, &isp2, None);

    // An unknown container is refused, naming it; nothing is made.
    let before = rules(&lab);
    let err = docker.plumb_fails(&via_wan2("docker:nosuch"));
    assert!(err.contains("docker:nosuch"), "{err}");
    assert_eq!(rules(&lab), before, "no rule left of the refusal");
    assert!(listed(&docker).is_empty(), "{:?}", listed(&docker));

    // 7. No daemon runs: the rule is made as Docker says now, with a
    // warning that it will not follow.
    let out = docker.plumb(&via_wan2("docker:other"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "egress add without a daemon: {out:?}");
    assert!(
        stderr.contains("no plumb daemon runs") && stderr.contains("will not follow docker:other"),
        "the warning: {stderr}"
    );
    let other_ip = bridge_ip(&docker, "other");
    assert_eq!(selects(&docker, "docker:other"), [format!("{other_ip}/32")]);
    leaves_by(&other, "other (with a rule)", &isp2, WAN2, &isp1, None);
    assert!(
        docker
            .plumb_ok(&["egress", "rm", "docker:other"])
            .contains("removed")
    );
    assert!(!any_rule_from(&lab, &other_ip), "{}", rules(&lab));
    assert!(listed(&docker).is_empty());

    // 1. With the daemon: no warning; mon leaves by wan2, NATed by Docker,
    // its neighbour and the host by wan1.
    let daemon = docker.plumb_daemon(&[]);
    let out = docker.plumb(&via_wan2("docker:mon"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "egress add: {out:?}");
    assert!(
        !stderr.contains("no plumb daemon runs"),
        "a daemon runs: {stderr}"
    );
    let old_ip = bridge_ip(&docker, "mon");
    let rule = rule_of(&docker, "docker:mon").expect("listed");
    assert_eq!(rule["Interface"], "wan2", "{rule}");
    assert_eq!(rule["Gateway"], "10.202.0.1", "{rule}");
    assert_eq!(selects(&docker, "docker:mon"), [format!("{old_ip}/32")]);
    let (table, prio) = table_and_priority(&rule);
    assert!(has_rule_pair(&lab, prio, &old_ip, table), "{}", rules(&lab));
    leaves_by(&mon, "mon", &isp2, WAN2, &isp1, Some(&daemon));
    leaves_by(&other, "other", &isp1, WAN1, &isp2, Some(&daemon));
    leaves_by(&host, "the host", &isp1, WAN1, &isp2, Some(&daemon));

    // 6. Its inspect shows the rule it leaves by; its neighbour's nothing.
    let shown = docker.plumb_inspect("docker:mon");
    let egress = shown["Egress"].as_array().expect("Egress list");
    assert_eq!(egress.len(), 1, "{shown}");
    assert_eq!(egress[0]["Interface"], "wan2", "{shown}");
    assert_eq!(egress[0]["Source"], "docker:mon", "{shown}");
    assert_eq!(egress[0]["ID"], rule["ID"], "{shown}");
    docker.plumb_fails(&["inspect", "docker:other"]);

    // 2. mon comes back with another address (a filler took its old one):
    // the rule follows, the old address is not selected any more.
    docker.must(&["stop", "mon"]);
    wait_for(
        "the rule of a stopped container to select nothing",
        10,
        || {
            let now = selects(&docker, "docker:mon");
            if now.is_empty() && !any_rule_from(&lab, &old_ip) {
                Ok(())
            } else {
                Err(format!("selects {now:?}; rules:\n{}", rules(&lab)))
            }
        },
    );
    docker.run(&["--name", "filler"], SLEEP);
    assert_eq!(
        bridge_ip(&docker, "filler"),
        old_ip,
        "the filler should take mon's old address"
    );
    docker.must(&["start", "mon"]);
    let new_ip = bridge_ip(&docker, "mon");
    assert_ne!(new_ip, old_ip, "mon should have a new address");
    wait_for("the rule to follow mon's new address", 10, || {
        let now = selects(&docker, "docker:mon");
        if now == [format!("{new_ip}/32")] && has_rule_pair(&lab, prio, &new_ip, table) {
            Ok(())
        } else {
            Err(format!(
                "selects {now:?}; rules:\n{}{}",
                rules(&lab),
                log_tail(&daemon)
            ))
        }
    });
    assert!(!any_rule_from(&lab, &old_ip), "{}", rules(&lab));
    leaves_by(&mon, "mon (new address)", &isp2, WAN2, &isp1, Some(&daemon));
    let filler = Origin::Container(&docker, "filler");
    leaves_by(
        &filler,
        "filler (mon's old address)",
        &isp1,
        WAN1,
        &isp2,
        Some(&daemon),
    );
    let shown = docker.plumb_inspect("docker:mon");
    assert_eq!(shown["Egress"][0]["Interface"], "wan2", "{shown}");

    // 3. wan2 flaps: the kernel flushes the table's route, the daemon puts
    // it back.
    must(&format!("ip -n {} link set wan2 down", lab.host));
    must(&format!("ip -n {} link set wan2 up", lab.host));
    wait_until("the daemon to restore the egress route", 5, || {
        table_routes(&lab, table).contains("default via 10.202.0.1 dev wan2")
            && has_rule_pair(&lab, prio, &new_ip, table)
    });
    leaves_by(
        &mon,
        "mon (after the flap)",
        &isp2,
        WAN2,
        &isp1,
        Some(&daemon),
    );

    // 4. mon is removed: its kernel rules go, the egress rule stays,
    // selecting nothing.
    docker.must(&["rm", "-f", "mon"]);
    wait_for("mon's kernel rules to go", 10, || {
        let now = selects(&docker, "docker:mon");
        if now.is_empty() && !any_rule_from(&lab, &new_ip) && !any_rule_from(&lab, &old_ip) {
            Ok(())
        } else {
            Err(format!(
                "selects {now:?}; rules:\n{}{}",
                rules(&lab),
                log_tail(&daemon)
            ))
        }
    });
    let rule = rule_of(&docker, "docker:mon").expect("the egress rule stays");
    assert_eq!(rule["Selects"], serde_json::json!([]), "{rule}");
    assert_eq!(rule["Interface"], "wan2", "{rule}");
    for p in [prio, prio + 1] {
        assert!(
            !rules(&lab).lines().any(|l| l.starts_with(&format!("{p}:"))),
            "no kernel rule at {p}:\n{}",
            rules(&lab)
        );
    }
    // Still there while the daemon repairs (twice a second): nothing comes
    // back. `egress rm` takes the rest.
    assert!(
        docker
            .plumb_ok(&["egress", "rm", "docker:mon"])
            .contains("removed")
    );
    assert!(listed(&docker).is_empty());
    assert_eq!(table_routes(&lab, table).trim(), "", "the table is empty");
}

/// (5) A Docker network's subnets leave by wan2; the network removed and
/// made again with another subnet, the rule follows. A rule for a container
/// that has not started yet follows its first start.
#[test]
fn a_docker_network_leaves_by_its_own_uplink_and_the_rule_follows_it() {
    let lab = Lab::new("dkn");
    let (isp1, isp2) = lab.two_uplinks();
    let docker = Dockerd::start(&lab, false);
    let daemon = docker.plumb_daemon(&[]);
    docker.must(&["network", "create", "--subnet", "10.55.0.0/24", "n1"]);
    docker.plumb_ok(&via_wan2("docker-network:n1"));
    assert_eq!(selects(&docker, "docker-network:n1"), ["10.55.0.0/24"]);
    let rule = rule_of(&docker, "docker-network:n1").expect("listed");
    let (table, prio) = table_and_priority(&rule);
    assert!(
        has_rule_pair(&lab, prio, "10.55.0.0/24", table),
        "{}",
        rules(&lab)
    );
    docker.run(&["--name", "c1", "--net", "n1"], SLEEP);
    docker.run(&["--name", "plain"], SLEEP);
    let c1 = Origin::Container(&docker, "c1");
    let plain = Origin::Container(&docker, "plain");
    leaves_by(&c1, "c1 on n1", &isp2, WAN2, &isp1, Some(&daemon));
    leaves_by(
        &plain,
        "a container on the bridge",
        &isp1,
        WAN1,
        &isp2,
        Some(&daemon),
    );

    // n1 goes: the rule selects nothing.
    docker.must(&["rm", "-f", "c1"]);
    docker.must(&["network", "rm", "n1"]);
    wait_for(
        "the rule of a removed network to select nothing",
        10,
        || {
            let now = selects(&docker, "docker-network:n1");
            if now.is_empty() && !any_rule_from(&lab, "10.55.0.0/24") {
                Ok(())
            } else {
                Err(format!(
                    "selects {now:?}; rules:\n{}{}",
                    rules(&lab),
                    log_tail(&daemon)
                ))
            }
        },
    );
    // n1 is made again with another subnet: the rule follows.
    docker.must(&["network", "create", "--subnet", "10.56.0.0/24", "n1"]);
    wait_for("the rule to follow n1's new subnet", 10, || {
        let now = selects(&docker, "docker-network:n1");
        if now == ["10.56.0.0/24"] && has_rule_pair(&lab, prio, "10.56.0.0/24", table) {
            Ok(())
        } else {
            Err(format!(
                "selects {now:?}; rules:\n{}{}",
                rules(&lab),
                log_tail(&daemon)
            ))
        }
    });
    assert!(!any_rule_from(&lab, "10.55.0.0/24"), "{}", rules(&lab));
    docker.run(&["--name", "c2", "--net", "n1"], SLEEP);
    let c2 = Origin::Container(&docker, "c2");
    leaves_by(&c2, "c2 on the new n1", &isp2, WAN2, &isp1, Some(&daemon));

    // Removed: its rules and route go, c2 leaves by the default uplink.
    assert!(
        docker
            .plumb_ok(&["egress", "rm", "docker-network:n1"])
            .contains("removed")
    );
    assert!(!any_rule_from(&lab, "10.56.0.0/24"), "{}", rules(&lab));
    assert_eq!(table_routes(&lab, table).trim(), "");
    leaves_by(&c2, "c2 without a rule", &isp1, WAN1, &isp2, Some(&daemon));

    // A rule for a container that is not running yet selects nothing (and
    // makes no kernel rule); it follows the container's first start.
    docker.must(&[
        "create",
        "--stop-timeout",
        "1",
        "--name",
        "late",
        docker.image(),
        "sleep",
        "100000",
    ]);
    let before = rules(&lab);
    docker.plumb_ok(&via_wan2("docker:late"));
    assert!(selects(&docker, "docker:late").is_empty());
    assert_eq!(rules(&lab), before, "no kernel rule for nothing");
    let rule = rule_of(&docker, "docker:late").expect("listed");
    let (table, prio) = table_and_priority(&rule);
    docker.must(&["start", "late"]);
    let ip = bridge_ip(&docker, "late");
    wait_for("the rule to follow late's first start", 10, || {
        let now = selects(&docker, "docker:late");
        if now == [format!("{ip}/32")]
            && has_rule_pair(&lab, prio, &ip, table)
            && table_routes(&lab, table).contains("default via 10.202.0.1 dev wan2")
        {
            Ok(())
        } else {
            Err(format!(
                "selects {now:?}; rules:\n{}{}",
                rules(&lab),
                log_tail(&daemon)
            ))
        }
    });
    let late = Origin::Container(&docker, "late");
    leaves_by(&late, "late", &isp2, WAN2, &isp1, Some(&daemon));
    leaves_by(
        &plain,
        "plain, beside late",
        &isp1,
        WAN1,
        &isp2,
        Some(&daemon),
    );
}
