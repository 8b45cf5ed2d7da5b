//! plumb as Docker's network driver (`docker network create -d plumb`),
//! against a private dockerd in each lab's fake host. Each test's daemon
//! serves the driver under a name of its own (`--docker-plugin`), since
//! dockerd finds legacy plugins only in /run/docker/plugins/.

mod common;

use common::docker::{Dockerd, INDEX_HTML, Plugin, fetch, in_netns_of, interfaces_of, iperf_from};
use common::{Lab, wait_for};

/// A long-running command for containers that only need to exist.
const SLEEP: &[&str] = &["sleep", "100000"];
/// A web server serving [`INDEX_HTML`] on port 80.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

/// The IPv4 address (without prefix) of the container's interface with
/// an address in `prefix` (`10.61.0.`).
fn address_in(docker: &Dockerd, container: &str, prefix: &str) -> Option<String> {
    interfaces_of(docker.container_pid(container))
        .into_iter()
        .flat_map(|i| i.v4)
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .find(|a| a.starts_with(prefix))
}

/// Wait until `plumb network ls` shows `network` (Docker's create makes
/// it a moment after it returns).
fn wait_network(lab: &Lab, network: &str) {
    wait_for(&format!("plumb network `{network}`"), 10, || {
        let ls = lab.ok(&["network", "ls"]);
        ls.lines()
            .any(|l| l.split_whitespace().next() == Some(network))
            .then_some(())
            .ok_or(ls)
    });
}

/// `plumb ls --json`: one object per attachment.
fn ls_json(lab: &Lab) -> Vec<serde_json::Value> {
    serde_json::from_str(&lab.ok(&["ls", "--json"])).expect("ls --json prints a JSON list")
}

/// The attachments `plumb ls --json` shows on `network`.
fn attachments_on(lab: &Lab, network: &str) -> Vec<serde_json::Value> {
    ls_json(lab)
        .into_iter()
        .filter(|a| a["NetworkName"] == network)
        .collect()
}

/// The attachment of `plumb ls --json` holding address `ip` (no prefix).
fn attachment_with(lab: &Lab, ip: &str) -> Option<serde_json::Value> {
    ls_json(lab).into_iter().find(|a| a["IPAddress"] == ip)
}

/// Whether the container with first process `pid` reaches `ip`: one echo
/// answered within two seconds.
fn pings(pid: u32, ip: &str) -> bool {
    in_netns_of(pid, &format!("ping -c1 -W2 {ip}"))
        .status
        .success()
}

/// Wait until the container with first process `pid` reaches `ip`: its
/// attachment is finished asynchronously, so the first echo may be early.
fn wait_ping(what: &str, pid: u32, ip: &str) {
    wait_for(what, 20, || {
        let out = in_netns_of(pid, &format!("ping -c1 -W1 {ip}"));
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
}

#[test]
fn a_nat_network_made_by_docker_is_a_plumb_network_its_containers_reach_the_world_and_publish() {
    let lab = Lab::new("dpn");
    let up = lab.upstream("10.60.9");
    let p = Plugin::start(&lab);
    p.create_ok("web", &["--subnet", "10.61.0.0/24", "-o", "mode=nat"]);
    // plumb knows it under Docker's name.
    wait_network(&lab, "web");
    p.docker.run(
        &["--name", "srv", "--network", "web", "-p", "8080:80"],
        HTTPD,
    );
    p.docker.run(
        &[
            "--name",
            "pinned",
            "--network",
            "web",
            "--ip",
            "10.61.0.77",
            "--mac-address",
            "02:61:00:00:00:77",
        ],
        SLEEP,
    );
    let srv = address_in(&p.docker, "srv", "10.61.0.").expect("srv has an address on web");
    assert_eq!(
        address_in(&p.docker, "pinned", "10.61.0.").as_deref(),
        Some("10.61.0.77")
    );
    // plumb recorded the address Docker's container has, once the
    // interface was in the container, under the container's name.
    let ls = wait_for("srv's attachment finished", 10, || {
        let ls = lab.ok(&["ls"]);
        common::docker::ls_rows(&ls)
            .iter()
            .any(|r| {
                r[0] == "docker:srv" && r[2] == "eth0" && r.last() == Some(&format!("{srv}/24"))
            })
            .then_some(ls.clone())
            .ok_or(ls)
    });
    assert!(ls.contains("docker:srv"), "{ls}");
    // `--mac-address` is the interface's MAC, as plumb recorded it.
    let pid = p.docker.container_pid("pinned");
    let eth0 = interfaces_of(pid).into_iter().find(|i| i.name == "eth0");
    assert_eq!(eth0.map(|i| i.mac).as_deref(), Some("02:61:00:00:00:77"));
    let rows = ls_json(&lab);
    assert!(
        rows.iter().any(|r| r["MacAddress"] == "02:61:00:00:00:77"),
        "{rows:?}"
    );
    // Out through NAT to the upstream router, and container to container.
    let ping = |ip: &str| {
        common::docker::in_netns_of(pid, &format!("ping -c1 -W2 {ip}"))
            .status
            .success()
    };
    assert!(ping("10.60.9.1"), "pinned reaches upstream");
    assert!(ping(&srv), "pinned reaches srv");
    // The published port answers from upstream, on the host's address.
    assert_eq!(
        fetch(&lab, &up, "http://10.60.9.2:8080/").as_deref(),
        Some(INDEX_HTML)
    );
    // Stopping gives everything back: the interfaces and the addresses.
    p.docker.must(&["rm", "-f", "srv", "pinned"]);
    wait_for("attachments gone", 10, || {
        let ls = lab.ok(&["ls"]);
        (!ls.contains("web")).then_some(()).ok_or(ls)
    });
    p.docker.must(&["network", "rm", "web"]);
    let ls = lab.ok(&["network", "ls"]);
    assert!(
        !ls.lines()
            .any(|l| l.split_whitespace().next() == Some("web")),
        "{ls}"
    );
}

#[test]
fn bad_options_are_refused_at_network_create_in_dockers_words_and_leave_nothing() {
    let lab = Lab::new("dpo");
    let p = Plugin::start(&lab);
    let out = p.create("n1", &["--subnet", "10.62.0.0/24", "-o", "mdoe=nat"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("-o mdoe: not an option of plumb networks"),
        "{err}"
    );
    let out = p.create("n2", &["--subnet", "10.62.0.0/24", "-o", "mode=natt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("-o mode `natt`"), "{err}");
    // A subnet another plumb network has.
    lab.ok(&["network", "create", "mine", "--subnet", "10.63.0.0/24"]);
    let out = p.create("n3", &["--subnet", "10.63.0.0/25"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an overlapping subnet is refused");
    assert!(err.contains("mine"), "{err}");
    let networks = p.docker.must(&["network", "ls", "--format", "{{.Name}}"]);
    for n in ["n1", "n2", "n3"] {
        assert!(!networks.lines().any(|l| l == n), "{networks}");
    }
    let ls = lab.ok(&["network", "ls"]);
    assert_eq!(ls.lines().count(), 2, "only `mine`: {ls}");
}

#[test]
fn a_container_on_two_plumb_networks_gets_the_rate_and_labels_of_its_connect_and_disconnect_takes_them_away()
 {
    let lab = Lab::new("dpm");
    let p = Plugin::start(&lab);
    p.create_ok("front", &["--subnet", "10.64.1.0/24", "-o", "mode=nat"]);
    p.create_ok("back", &["--subnet", "10.64.2.0/24", "-o", "mode=nat"]);
    wait_network(&lab, "front");
    wait_network(&lab, "back");
    p.docker
        .run(&["--name", "app", "--network", "front"], SLEEP);
    p.docker.must(&[
        "network",
        "connect",
        "--driver-opt",
        "egress-rate=10mbit",
        "--driver-opt",
        "labels.role=db",
        "back",
        "app",
    ]);
    let pid = p.docker.container_pid("app");
    // Two interfaces, one address in each subnet.
    let (front_if, back_if) = wait_for("app's interfaces on both networks", 10, || {
        let ifs = interfaces_of(pid);
        let on = |prefix: &str| {
            ifs.iter()
                .find(|i| i.v4.iter().any(|a| a.starts_with(prefix)))
                .map(|i| i.name.clone())
        };
        match (on("10.64.1."), on("10.64.2.")) {
            (Some(f), Some(b)) if f != b => Ok((f, b)),
            _ => Err(format!("{ifs:?}")),
        }
    });
    assert_eq!(interfaces_of(pid).len(), 2, "{:?}", interfaces_of(pid));
    // The rate limit is plumb's token bucket on the second interface, inside
    // the container; added once the interface has arrived there.
    let qdisc = |dev: &str| {
        String::from_utf8_lossy(&in_netns_of(pid, &format!("tc qdisc show dev {dev}")).stdout)
            .into_owned()
    };
    let tbf = wait_for("a tbf on app's back interface", 10, || {
        let q = qdisc(&back_if);
        q.contains("tbf").then_some(q.clone()).ok_or(q)
    });
    assert!(tbf.contains("rate 10Mbit"), "{tbf}");
    assert!(
        !qdisc(&front_if).contains("tbf"),
        "no rate was asked on front: {}",
        qdisc(&front_if)
    );
    // plumb shows the endpoint's label and rate on that attachment only.
    let back = wait_for("app's back attachment finished", 10, || {
        let on = attachments_on(&lab, "back");
        match on.as_slice() {
            [a] if a["IfName"] == back_if.as_str() => Ok(a.clone()),
            _ => Err(format!("{on:?}")),
        }
    });
    assert_eq!(back["Target"], "docker:app", "{back}");
    assert_eq!(back["Labels"], serde_json::json!({"role": "db"}), "{back}");
    assert_eq!(
        back["RateLimit"]["EgressBitsPerSecond"], 10_000_000,
        "{back}"
    );
    let front = attachments_on(&lab, "front");
    assert_eq!(front.len(), 1, "{front:?}");
    assert_eq!(front[0]["IfName"], front_if.as_str(), "{front:?}");
    assert_eq!(front[0]["Labels"], serde_json::json!({}), "{front:?}");
    assert!(front[0]["RateLimit"].is_null(), "{front:?}");
    let back_host_if = back["HostIfName"].as_str().expect("HostIfName").to_string();
    assert!(lab.host_links().contains(&back_host_if));
    // Disconnect takes the attachment, its interface and its host end away,
    // and leaves the first network's as they were.
    p.docker.must(&["network", "disconnect", "back", "app"]);
    wait_for("app's back attachment gone", 10, || {
        let on = attachments_on(&lab, "back");
        on.is_empty().then_some(()).ok_or(format!("{on:?}"))
    });
    let ifs = interfaces_of(pid);
    assert_eq!(ifs.len(), 1, "{ifs:?}");
    assert_eq!(ifs[0].name, front_if);
    assert!(
        ifs[0].v4.iter().any(|a| a.starts_with("10.64.1.")),
        "{ifs:?}"
    );
    assert!(
        !lab.host_links().contains(&back_host_if),
        "{:?}",
        lab.host_links()
    );
    assert_eq!(attachments_on(&lab, "front").len(), 1);
    wait_ping("app reaches front's gateway", pid, "10.64.1.1");
}

#[test]
fn docker_networks_of_other_tenants_are_kept_apart_and_a_tenant_policy_joins_only_its_own() {
    let lab = Lab::new("dpt");
    let p = Plugin::start(&lab);
    p.create_ok(
        "red1",
        &[
            "--subnet",
            "10.65.1.0/24",
            "-o",
            "mode=nat",
            "-o",
            "tenant=red",
        ],
    );
    p.create_ok(
        "red2",
        &[
            "--subnet",
            "10.65.2.0/24",
            "-o",
            "mode=nat",
            "-o",
            "tenant=red",
        ],
    );
    p.create_ok(
        "blue1",
        &[
            "--subnet",
            "10.65.3.0/24",
            "-o",
            "mode=nat",
            "-o",
            "tenant=blue",
        ],
    );
    for n in ["red1", "red2", "blue1"] {
        wait_network(&lab, n);
    }
    // Docker's `-o tenant` is plumb's --tenant.
    let inspect = |n: &str| -> serde_json::Value {
        serde_json::from_str(&lab.ok(&["network", "inspect", n])).expect("network inspect JSON")
    };
    assert_eq!(inspect("red1")["Tenant"], "red");
    assert_eq!(inspect("blue1")["Tenant"], "blue");
    let run = |name: &str, net: &str, ip: &str| {
        p.docker
            .run(&["--name", name, "--network", net, "--ip", ip], SLEEP);
        p.docker.container_pid(name)
    };
    let ra = run("ra", "red1", "10.65.1.10");
    let _rb = run("rb", "red1", "10.65.1.11");
    let r2 = run("r2", "red2", "10.65.2.10");
    let bc = run("bc", "blue1", "10.65.3.10");
    // Within one network: allowed.
    wait_ping("ra reaches rb on red1", ra, "10.65.1.11");
    // Each reaches its own gateway (the host): the attachments are done.
    wait_ping("r2 reaches its gateway", r2, "10.65.2.1");
    wait_ping("bc reaches its gateway", bc, "10.65.3.1");
    // Between networks, through the host: dropped, between tenants and
    // (until a rule joins them) within one.
    assert!(!pings(ra, "10.65.3.10"), "red1 reached blue1");
    assert!(!pings(bc, "10.65.1.10"), "blue1 reached red1");
    assert!(!pings(ra, "10.65.2.10"), "red1 reached red2 with no rule");
    // A rule for tenant red joins its networks, and only them.
    lab.ok(&["policy", "add", "tenant:red", "allow", "from", "tenant:red"]);
    wait_ping("red1 reaches red2 once red is joined", ra, "10.65.2.10");
    wait_ping("red2 reaches red1 once red is joined", r2, "10.65.1.10");
    assert!(
        !pings(ra, "10.65.3.10"),
        "red1 reached blue1 after red's rule"
    );
    assert!(
        !pings(bc, "10.65.2.10"),
        "blue1 reached red2 after red's rule"
    );
}

#[test]
fn containers_of_an_isolate_containers_docker_network_reach_the_gateway_not_each_other() {
    let lab = Lab::new("dpi");
    let p = Plugin::start(&lab);
    p.create_ok(
        "iso",
        &[
            "--subnet",
            "10.68.0.0/24",
            "-o",
            "mode=nat",
            "-o",
            "isolate-containers=true",
        ],
    );
    p.create_ok("open", &["--subnet", "10.68.1.0/24", "-o", "mode=nat"]);
    wait_network(&lab, "iso");
    wait_network(&lab, "open");
    let inspect: serde_json::Value =
        serde_json::from_str(&lab.ok(&["network", "inspect", "iso"])).expect("inspect JSON");
    assert_eq!(inspect["IsolateContainers"], true, "{inspect}");
    let run = |name: &str, net: &str, ip: &str| {
        p.docker
            .run(&["--name", name, "--network", net, "--ip", ip], SLEEP);
        p.docker.container_pid(name)
    };
    let ia = run("ia", "iso", "10.68.0.10");
    let ib = run("ib", "iso", "10.68.0.11");
    let oa = run("oa", "open", "10.68.1.10");
    let _ob = run("ob", "open", "10.68.1.11");
    wait_ping("ia reaches the gateway", ia, "10.68.0.1");
    wait_ping("ib reaches the gateway", ib, "10.68.0.1");
    // The same setup without the option: its containers talk.
    wait_ping("oa reaches ob on open", oa, "10.68.1.11");
    assert!(
        !pings(ia, "10.68.0.11"),
        "ia reached ib on an isolated network"
    );
    assert!(
        !pings(ib, "10.68.0.10"),
        "ib reached ia on an isolated network"
    );
}

#[test]
fn after_plumbs_daemon_restarts_containers_keep_their_addresses_and_docker_rm_and_run_still_work() {
    let lab = Lab::new("dpr");
    let mut p = Plugin::start(&lab);
    p.create_ok("rst", &["--subnet", "10.66.0.0/24", "-o", "mode=nat"]);
    wait_network(&lab, "rst");
    p.docker.run(&["--name", "c1", "--network", "rst"], SLEEP);
    p.docker.run(
        &["--name", "c2", "--network", "rst", "--ip", "10.66.0.20"],
        SLEEP,
    );
    let c1 = address_in(&p.docker, "c1", "10.66.0.").expect("c1 has an address on rst");
    let (pid1, pid2) = (p.docker.container_pid("c1"), p.docker.container_pid("c2"));
    // Both finished in their containers before the restart.
    let finished = |lab: &Lab| {
        wait_for("c1 and c2 finished in their containers", 10, || {
            let on = attachments_on(lab, "rst");
            let done = |ip: &str| {
                on.iter()
                    .any(|a| a["IPAddress"] == ip && a["IfName"] == "eth0")
            };
            (on.len() == 2 && done(&c1) && done("10.66.0.20"))
                .then(|| on.clone())
                .ok_or(format!("{on:?}"))
        })
    };
    let before = finished(&lab);
    let c1_host_if = attachment_with(&lab, &c1).expect("c1's attachment")["HostIfName"]
        .as_str()
        .expect("HostIfName")
        .to_string();
    p.restart_daemon();
    // Nothing moved: the containers' addresses, plumb's records.
    assert_eq!(
        address_in(&p.docker, "c1", "10.66.0.").as_deref(),
        Some(c1.as_str())
    );
    assert_eq!(
        address_in(&p.docker, "c2", "10.66.0.").as_deref(),
        Some("10.66.0.20")
    );
    let after = finished(&lab);
    let key = |v: &[serde_json::Value]| {
        let mut k: Vec<String> = v
            .iter()
            .map(|a| format!("{} {} {}", a["HostIfName"], a["MacAddress"], a["IPAddress"]))
            .collect();
        k.sort();
        k
    };
    assert_eq!(key(&before), key(&after));
    wait_ping("c1 reaches c2 after the restart", pid1, "10.66.0.20");
    wait_ping("c2 reaches c1 after the restart", pid2, &c1);
    // Docker's calls reach the new daemon: rm takes c1's attachment away...
    p.docker.must(&["rm", "-f", "c1"]);
    wait_for("c1's attachment gone", 10, || {
        let on = attachments_on(&lab, "rst");
        (on.len() == 1 && attachment_with(&lab, &c1).is_none())
            .then_some(())
            .ok_or(format!("{on:?}"))
    });
    assert!(
        !lab.host_links().contains(&c1_host_if),
        "{:?}",
        lab.host_links()
    );
    // ... and a new container on the network works.
    p.docker.run(&["--name", "c3", "--network", "rst"], SLEEP);
    let c3 = address_in(&p.docker, "c3", "10.66.0.").expect("c3 has an address on rst");
    assert_ne!(c3, "10.66.0.20");
    let pid3 = p.docker.container_pid("c3");
    wait_for("c3 finished in its container", 10, || {
        attachment_with(&lab, &c3)
            .filter(|a| a["IfName"] == "eth0")
            .ok_or(format!("{:?}", ls_json(&lab)))
    });
    wait_ping("c3 reaches c2", pid3, "10.66.0.20");
    // And the network goes with Docker's.
    p.docker.must(&["rm", "-f", "c2", "c3"]);
    wait_for("rst's attachments gone", 10, || {
        let on = attachments_on(&lab, "rst");
        on.is_empty().then_some(()).ok_or(format!("{on:?}"))
    });
    p.docker.must(&["network", "rm", "rst"]);
    let ls = lab.ok(&["network", "ls"]);
    assert!(
        !ls.lines()
            .any(|l| l.split_whitespace().next() == Some("rst")),
        "{ls}"
    );
}

#[test]
fn plumb_inspect_of_the_name_plumb_ls_shows_for_a_driver_container_shows_its_endpoints() {
    let lab = Lab::new("dpq");
    let p = Plugin::start(&lab);
    p.create_ok("front", &["--subnet", "10.69.1.0/24", "-o", "mode=nat"]);
    p.create_ok("back", &["--subnet", "10.69.2.0/24", "-o", "mode=nat"]);
    wait_network(&lab, "front");
    wait_network(&lab, "back");
    p.docker.run(
        &["--name", "app", "--network", "front", "--ip", "10.69.1.10"],
        SLEEP,
    );
    p.docker.must(&[
        "network",
        "connect",
        "--ip",
        "10.69.2.10",
        "--driver-opt",
        "labels.role=db",
        "back",
        "app",
    ]);
    // `plumb ls` names both attachments after the container ...
    wait_for("app's attachments shown as docker:app", 10, || {
        let all = ls_json(&lab);
        (all.len() == 2 && all.iter().all(|a| a["Target"] == "docker:app"))
            .then_some(())
            .ok_or(format!("{all:?}"))
    });
    // ... and `plumb inspect` of that name shows them.
    let out = p.docker.plumb(&["inspect", "docker:app"]);
    assert!(
        out.status.success(),
        "plumb inspect docker:app, the target plumb ls shows: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
    assert_eq!(inspect["Name"], "app", "{inspect}");
    let nets = &inspect["NetworkSettings"]["Networks"];
    assert_eq!(nets["front"]["IPAddress"], "10.69.1.10", "{inspect}");
    assert_eq!(nets["back"]["IPAddress"], "10.69.2.10", "{inspect}");
    assert_eq!(
        nets["back"]["Labels"],
        serde_json::json!({"role": "db"}),
        "{inspect}"
    );
    assert_eq!(nets["front"]["Labels"], serde_json::json!({}), "{inspect}");
    // They are Docker's: `plumb detach` points at Docker and takes nothing.
    let out = p.docker.plumb(&["detach", "docker:app", "back"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("docker network disconnect back app"), "{err}");
    assert_eq!(ls_json(&lab).len(), 2);
}

#[test]
fn docker_run_with_an_ip_a_plumb_attachment_holds_fails_naming_it_and_leaves_nothing() {
    let lab = Lab::new("dpa");
    let p = Plugin::start(&lab);
    p.create_ok("held", &["--subnet", "10.67.0.0/24", "-o", "mode=nat"]);
    wait_network(&lab, "held");
    // A namespace attached by plumb's CLI holds 10.67.0.50.
    let ns = lab.netns("cli");
    lab.ok(&["attach", &ns, "held", "--ip", "10.67.0.50"]);
    let before = ls_json(&lab);
    assert_eq!(before.len(), 1, "{before:?}");
    let host_before = lab.host_links();
    let out = p.docker.docker(&[
        "run",
        "-d",
        "--stop-timeout",
        "1",
        "--name",
        "late",
        "--network",
        "held",
        "--ip",
        "10.67.0.50",
        p.docker.image(),
        "sleep",
        "100000",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("docker run --ip 10.67.0.50: {err}");
    assert!(!out.status.success(), "docker run took a held address");
    assert!(err.contains("10.67.0.50"), "{err}");
    assert!(err.contains("--ip"), "said with Docker's flag: {err}");
    // Nothing of it is left: no attachment, no interface on the host, no
    // running container; the CLI's attachment is untouched.
    assert!(!p.docker.running("late"));
    let after = ls_json(&lab);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["IPAddress"], "10.67.0.50");
    assert_eq!(after[0]["HostIfName"], before[0]["HostIfName"]);
    let links = lab.host_links();
    assert!(
        !links.iter().any(|l| l.starts_with("pc")),
        "a staged interface is left: {links:?}"
    );
    assert_eq!(links, host_before, "the host's interfaces changed");
    assert!(
        lab.ping(&ns, "10.67.0.1"),
        "the CLI's attachment still works"
    );
    // Once the CLI's attachment lets the address go, Docker gets it: the
    // failed run reserved nothing of it.
    p.docker.must(&["rm", "-f", "late"]);
    lab.ok(&["detach", &ns]);
    p.docker.run(
        &["--name", "late", "--network", "held", "--ip", "10.67.0.50"],
        SLEEP,
    );
    assert_eq!(
        address_in(&p.docker, "late", "10.67.0.").as_deref(),
        Some("10.67.0.50")
    );
}

#[test]
fn as_dockers_ipam_driver_plumb_hands_out_addresses_its_own_attachments_do_not_hold() {
    let lab = Lab::new("dpp");
    let p = Plugin::start(&lab);
    // A pool is the subnet given: none is refused, by Docker's flag.
    let out = p.create("nosub", &["--ipam-driver", &p.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--subnet"), "{err}");
    p.create_ok(
        "pool",
        &[
            "--ipam-driver",
            &p.name,
            "--subnet",
            "10.72.0.0/24",
            "--gateway",
            "10.72.0.1",
            "--ip-range",
            "10.72.0.128/25",
            "-o",
            "mode=nat",
        ],
    );
    wait_network(&lab, "pool");
    // plumb's own attach keeps to Docker's --ip-range, and takes its first
    // address, which Docker's own IPAM would hand out again.
    let ns = lab.netns("cli");
    lab.ok(&["attach", &ns, "pool"]);
    let cli = lab.ip_of(&ns, "pool");
    assert_eq!(cli, "10.72.0.128");
    p.docker
        .run(&["--name", "first", "--network", "pool"], SLEEP);
    let first = address_in(&p.docker, "first", "10.72.0.").expect("first's address");
    assert_ne!(first, cli, "plumb's IPAM skips what plumb holds");
    assert!(first.rsplit('.').next().unwrap().parse::<u8>().unwrap() >= 128);
    p.docker.run(
        &[
            "--name",
            "pinned",
            "--network",
            "pool",
            "--ip",
            "10.72.0.200",
        ],
        SLEEP,
    );
    assert_eq!(
        address_in(&p.docker, "pinned", "10.72.0.").as_deref(),
        Some("10.72.0.200")
    );
    let out = p.docker.docker(&[
        "run",
        "-d",
        "--name",
        "clash",
        "--network",
        "pool",
        "--ip",
        &cli,
        p.docker.image(),
        "sleep",
        "100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&cli) && err.contains("in use"), "{err}");
    assert!(
        pings(p.docker.container_pid("first"), &cli),
        "first reaches plumb's attachment"
    );
    // Addresses and the pool go back with the containers and the network.
    p.docker.must(&["rm", "-f", "first", "pinned", "clash"]);
    p.docker.run(
        &[
            "--name",
            "again",
            "--network",
            "pool",
            "--ip",
            "10.72.0.200",
        ],
        SLEEP,
    );
    p.docker.must(&["rm", "-f", "again"]);
    // Docker removes a network whatever its driver says: plumb's own
    // attachment keeps it as a plumb network, which plumb removes later.
    p.docker.must(&["network", "rm", "pool"]);
    assert!(lab.ok(&["network", "ls"]).contains("pool"));
    assert_eq!(lab.ip_of(&ns, "pool"), cli);
    lab.ok(&["detach", &ns]);
    lab.ok(&["network", "rm", "pool"]);
    p.create_ok(
        "pool2",
        &[
            "--ipam-driver",
            &p.name,
            "--subnet",
            "10.72.0.0/24",
            "-o",
            "mode=nat",
        ],
    );
}

#[test]
fn a_compose_style_app_web_published_app_on_both_networks_db_out_of_webs_reach() {
    let lab = Lab::new("dpc");
    let up = lab.upstream("10.73.9");
    let p = Plugin::start(&lab);
    p.create_ok("front", &["--subnet", "10.73.1.0/24", "-o", "mode=nat"]);
    p.create_ok("back", &["--subnet", "10.73.2.0/24", "-o", "mode=nat"]);
    p.docker.run(
        &[
            "--name",
            "db",
            "--network",
            "back",
            "--network-alias",
            "database",
        ],
        SLEEP,
    );
    p.docker.run(&["--name", "app", "--network", "back"], SLEEP);
    p.docker.must(&["network", "connect", "front", "app"]);
    p.docker.run(
        &["--name", "web", "--network", "front", "-p", "8081:80"],
        HTTPD,
    );
    let exec_ping = |from: &str, to: &str| {
        p.docker
            .docker(&["exec", from, "ping", "-c1", "-W2", to])
            .status
            .success()
    };
    // By name and alias, through Docker's DNS, on each network.
    assert!(exec_ping("app", "database"), "app reaches db on back");
    assert!(exec_ping("app", "web"), "app reaches web on front");
    assert!(exec_ping("web", "app"), "web reaches app on front");
    // db is on back only: web has no way to it.
    let db = address_in(&p.docker, "db", "10.73.2.").expect("db's address");
    assert!(
        !pings(p.docker.container_pid("web"), &db),
        "web must not reach db"
    );
    // The world reaches web through its published port.
    assert_eq!(
        fetch(&lab, &up, "http://10.73.9.2:8081/").as_deref(),
        Some(INDEX_HTML)
    );
    let rows = ls_json(&lab);
    assert_eq!(rows.len(), 4, "db, app twice, web: {rows:?}");
}

#[test]
fn an_egress_rate_given_with_driver_opt_holds_measured_with_iperf3() {
    let lab = Lab::new("dpe");
    let p = Plugin::start(&lab);
    p.create_ok("plain", &["--subnet", "10.74.1.0/24", "-o", "mode=nat"]);
    p.create_ok("slow", &["--subnet", "10.74.2.0/24", "-o", "mode=nat"]);
    p.docker
        .run(&["--name", "sender", "--network", "plain"], SLEEP);
    p.docker.must(&[
        "network",
        "connect",
        "--driver-opt",
        "egress-rate=10mbit",
        "slow",
        "sender",
    ]);
    let pid = p.docker.container_pid("sender");
    wait_for("the rate limit on sender's slow interface", 10, || {
        let out = in_netns_of(pid, "tc qdisc show");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("tbf").then_some(()).ok_or(text)
    });
    // To the gateway of each network, on the fake host.
    let shaped = iperf_from(&lab, pid, "10.74.2.1", 5411);
    let free = iperf_from(&lab, pid, "10.74.1.1", 5412);
    assert!(
        (9.0e6..=11.0e6).contains(&shaped),
        "10 mbit/s within 10%: {shaped}"
    );
    assert!(
        free > 3.0 * shaped,
        "the other interface is not limited: {free}"
    );
}

#[test]
fn the_daemon_tells_systemd_it_is_ready_once_dockers_driver_has_its_socket() {
    let lab = Lab::new("dpn");
    let notify = lab.state.path().join("notify.sock");
    let manager = std::os::unix::net::UnixDatagram::bind(&notify).expect("notify socket");
    manager
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let name = lab.name("ntf");
    let _daemon = lab.daemon_with_env(
        &["--docker-plugin", &name],
        &[("NOTIFY_SOCKET", notify.as_os_str())],
    );
    let mut said = [0u8; 64];
    let n = manager.recv(&mut said).expect("READY=1 within 20 s");
    assert_eq!(&said[..n], b"READY=1");
    assert!(
        std::os::unix::net::UnixStream::connect(format!("/run/docker/plugins/{name}.sock")).is_ok(),
        "the driver's socket answers once the daemon is ready"
    );
}
