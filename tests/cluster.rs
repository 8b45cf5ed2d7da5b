//! Hosts joining a cluster through a real etcd (3.4, Debian's): two fake
//! hosts on an underlay switch, each with its own daemon and state, etcd in
//! a namespace of its own. A host is a member while its daemon runs; one
//! killed leaves when its lease expires, one stopped leaves at once (one
//! stopped with containers stays for its next daemon to take over); a name
//! another host holds is refused; a store that comes later is joined then.

mod common;

use common::cluster::*;
use common::{Lab, must, wait_for, wait_until};

fn pair(host: &str, vtep: &str) -> (String, String) {
    (host.to_string(), vtep.to_string())
}

#[test]
fn hosts_are_members_while_their_daemons_run() {
    let lab = Lab::new("cls");
    let u = underlay(&lab);
    // The store comes after the first daemon: it joins once it can.
    let mut d1 = member_daemon(&lab, &lab.host, "h1", "d1");
    let _etcd = etcd(&lab, &u.etcd_ns);
    let d2 = member_daemon(&lab, &u.host2, "h2", "d2");
    // Each advertises the address it reaches the store from.
    wait_until("both hosts to join", 15, || {
        members(&lab) == [pair("h1", "10.250.0.1"), pair("h2", "10.250.0.2")]
    });
    assert!(
        log_of(&lab, "d1").contains("joined the cluster"),
        "{}",
        log_of(&lab, "d1")
    );

    // Another host may not take h1's name.
    let thief = member_daemon(&lab, &u.host2, "h1", "thief");
    wait_until("the thief to be refused", 15, || {
        log_of(&lab, "thief").contains("is registered in cluster `default` by another host")
    });
    drop(thief);
    assert_eq!(
        members(&lab),
        [pair("h1", "10.250.0.1"), pair("h2", "10.250.0.2")]
    );

    // Killed: gone when its lease (2 s) expires.
    drop(d2);
    wait_until("h2's lease to expire", 10, || {
        members(&lab) == [pair("h1", "10.250.0.1")]
    });
    // Back: a member again.
    let _d2 = member_daemon(&lab, &u.host2, "h2", "d2b");
    wait_until("h2 to join again", 15, || members(&lab).len() == 2);

    // Stopped: gone at once (before any lease could expire).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d1.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    d1.0.wait().unwrap();
    assert_eq!(
        members(&lab),
        [pair("h2", "10.250.0.2")],
        "{}",
        log_of(&lab, "d1")
    );
    assert!(log_of(&lab, "d1").contains("left the cluster"));
}

#[test]
fn a_bad_store_is_refused_by_name() {
    let lab = Lab::new("clb");
    for (args, field) in [
        (vec!["--cluster-store", "consul://x:1"], "--cluster-store"),
        (
            vec!["--cluster-store", "etcd://10.0.0.1"],
            "--cluster-store",
        ),
        (vec!["--cluster-host", "h1"], "--cluster-host"),
        (
            vec!["--cluster-store", STORE, "--cluster-ttl", "0"],
            "--cluster-ttl",
        ),
    ] {
        let mut all = vec!["daemon", "--docker-plugin", "none"];
        all.extend(args);
        let err = lab.fails(&all);
        assert!(err.contains(field), "{err}");
    }
    let err = lab.fails(&["cluster", "members"]);
    assert!(err.contains("--cluster-store"), "{err}");
}

#[test]
fn containers_on_two_hosts_share_a_cluster_network_over_vxlan() {
    let lab = Lab::new("clo");
    let (u, _etcd, _d1, d2) = two_members(&lab);

    let out = define(&lab, "t1", "4100", "10.100.0.0/24");
    assert!(
        out.contains("defined in cluster default (VNI 4100)"),
        "{out}"
    );
    // The same again is no change; another network with the VNI, refused.
    define(&lab, "t1", "4100", "10.100.0.0/24");
    let err = lab.fails(&[
        "network",
        "create",
        "t2",
        "--driver",
        "vxlan",
        "--vni",
        "4100",
        "--subnet",
        "10.101.0.0/24",
        "--cluster-store",
        STORE,
    ]);
    assert!(
        err.contains("--vni `4100`") && err.contains("`t1`"),
        "{err}"
    );
    let err = lab.fails(&[
        "network",
        "create",
        "t3",
        "--driver",
        "vxlan",
        "--vni",
        "7",
        "--subnet",
        "10.102.0.0/24",
    ]);
    assert!(err.contains("--cluster-store"), "{err}");

    // Each host's daemon makes it there.
    for (ns, log) in [(lab.host.as_str(), "d1"), (u.host2.as_str(), "d2")] {
        wait_until("the cluster network on every host", 15, || {
            text(&plumb_at(&lab, ns, log, &["network", "ls"])).contains("t1 ")
        });
    }
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    // Addresses come from each host's own blocks, claimed in etcd.
    let (ip1, _) = attach_on(&lab, &lab.host, "d1", &c1, "t1");
    let (ip2, c2_mac) = attach_on(&lab, &u.host2, "d2", &c2, "t1");
    let block = |ip: &str| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() / 64;
    assert_ne!(
        block(&ip1),
        block(&ip2),
        "two hosts, two blocks: {ip1} {ip2}"
    );
    // An address of the other host's block is refused, naming it.
    let c3 = lab.netns("c3");
    let refused = plumb_at(&lab, &lab.host, "d1", &["attach", &c3, "t1", "--ip", &ip2]);
    assert!(
        text(&refused).contains("of host `h2`"),
        "{}",
        text(&refused)
    );

    // Across hosts, over the overlay; the MTU leaves room for VXLAN.
    wait_until("c1 to reach c2 across hosts", 15, || lab.ping(&c1, &ip2));
    assert!(lab.ping(&c2, &ip1));
    assert!(must(&format!("ip -n {c1} link show eth0")).contains("mtu 1450"));
    let fdb = || must(&format!("bridge -n {} fdb show dev vx-t1", lab.host));
    assert!(
        fdb().contains(&c2_mac) && fdb().contains("dst 10.250.0.2"),
        "{}",
        fdb()
    );
    // Each host is its containers' gateway.
    assert!(lab.ping(&c2, "10.100.0.1"));

    // A host that dies is forgotten by the others when its lease expires.
    drop(d2);
    wait_for("host1 to forget h2's container", 15, || {
        match fdb().contains(&c2_mac) {
            false => Ok(()),
            true => Err(format!("{}\n{}", fdb(), log_of(&lab, "d1"))),
        }
    });
    assert!(!lab.ping(&c1, &ip2));
}

#[test]
fn tenants_stay_apart_the_store_may_restart_and_a_network_goes_once_unused() {
    let lab = Lab::new("clt");
    let (u, etcd1, _d1, _d2) = two_members(&lab);
    define(&lab, "red", "4100", "10.120.0.0/24");
    define(&lab, "blue", "4200", "10.121.0.0/24");
    let (a, b, c) = (lab.netns("a"), lab.netns("b"), lab.netns("c"));
    let (ip_a, _) = attach_on(&lab, &lab.host, "d1", &a, "red");
    let (ip_b, _) = attach_on(&lab, &u.host2, "d2", &b, "blue");
    let (ip_c, _) = attach_on(&lab, &u.host2, "d2", &c, "red");
    wait_until("a to reach c across hosts", 15, || lab.ping(&a, &ip_c));
    // Another network, another segment: nothing of red reaches blue.
    assert!(!lab.ping(&a, &ip_b), "red reached blue");
    let _ = ip_a;

    // The store restarts: the overlay keeps carrying meanwhile, and the
    // hosts are members again after.
    drop(etcd1);
    assert!(lab.ping(&a, &ip_c), "the data plane needs no store");
    let _etcd2 = etcd(&lab, &u.etcd_ns);
    wait_until("both hosts back in the cluster", 20, || {
        members(&lab).len() == 2
    });
    assert!(lab.ping(&a, &ip_c));

    // Removal waits for the last container.
    let err = lab.fails(&["network", "rm", "red", "--cluster-store", STORE]);
    assert!(err.contains("h1, h2") && err.contains("detach"), "{err}");
    assert!(
        plumb_at(&lab, &lab.host, "d1", &["detach", &a])
            .status
            .success()
    );
    assert!(
        plumb_at(&lab, &u.host2, "d2", &["detach", &c])
            .status
            .success()
    );
    wait_for("red to be removable", 15, || {
        let out = lab.plumb(&["network", "rm", "red", "--cluster-store", STORE]);
        match out.status.success() {
            true => Ok(()),
            false => Err(text(&out)),
        }
    });
    for (ns, log) in [(lab.host.as_str(), "d1"), (u.host2.as_str(), "d2")] {
        wait_until("red to go from every host", 15, || {
            !text(&plumb_at(&lab, ns, log, &["network", "ls"])).contains("red ")
        });
    }
    assert!(text(&plumb_at(&lab, &u.host2, "d2", &["network", "ls"])).contains("blue "));
}

#[test]
fn two_hosts_racing_for_blocks_and_for_one_address_never_hand_out_one_twice() {
    let lab = Lab::new("clr");
    let (u, _etcd, _d1, _d2) = two_members(&lab);
    // Blocks of 8 addresses: a dozen containers per host claim several
    // each, both hosts at once.
    define_with(&lab, "t1", "4600", "10.160.0.0/24", &["--block-size", "29"]);
    let hosts = [
        (lab.host.clone(), "d1", "h1"),
        (u.host2.clone(), "d2", "h2"),
    ];
    for (ns, log, _) in &hosts {
        wait_until("the network on both hosts", 15, || {
            text(&plumb_at(&lab, ns, log, &["network", "ls"])).contains("t1 ")
        });
    }
    let targets: Vec<Vec<String>> = (0..2)
        .map(|h| (0..12).map(|i| lab.netns(&format!("r{h}x{i}"))).collect())
        .collect();
    let given: Vec<(String, String)> = std::thread::scope(|s| {
        let runs: Vec<_> = hosts
            .iter()
            .zip(&targets)
            .flat_map(|((ns, log, host), targets)| {
                let lab = &lab;
                targets.iter().map(move |t| {
                    s.spawn(move || {
                        let out = plumb_at(lab, ns, log, &["attach", t, "t1"]);
                        assert!(out.status.success(), "{}", text(&out));
                        let line = text(&out);
                        let address = line.split_whitespace().nth(3).unwrap();
                        let address = address.split('/').next().unwrap().to_string();
                        (host.to_string(), address)
                    })
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut addresses: Vec<&String> = given.iter().map(|(_, a)| a).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 24, "an address given twice: {given:?}");
    // Each from a block its host holds, as both hosts see the blocks once
    // each has mirrored the other's claims.
    let blocks = wait_for("both hosts to see the same blocks", 15, || {
        let (one, two) = (
            blocks_at(&lab, &lab.host, "d1", "t1"),
            blocks_at(&lab, &u.host2, "d2", "t1"),
        );
        match one == two {
            true => Ok(one),
            false => Err(format!("{one:?}\n{two:?}")),
        }
    });
    for (host, address) in &given {
        let last: u32 = address.rsplit('.').next().unwrap().parse().unwrap();
        let block = format!("10.160.0.{}/29", last / 8 * 8);
        assert!(
            blocks.contains(&(block.clone(), host.clone())),
            "{address} of {host}: {block} is not its in {blocks:?}"
        );
    }

    // Both ask for one address of a block nobody has, at once: one gets
    // it, the other is refused, naming the host that did.
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    let wanted = "10.160.0.250";
    let asked: Vec<std::process::Output> = std::thread::scope(|s| {
        let runs: Vec<_> = [(&hosts[0], &a), (&hosts[1], &b)]
            .into_iter()
            .map(|((ns, log, _), t)| {
                let lab = &lab;
                s.spawn(move || plumb_at(lab, ns, log, &["attach", t, "t1", "--ip", wanted]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..2).filter(|i| asked[*i].status.success()).collect();
    assert_eq!(won.len(), 1, "{} / {}", text(&asked[0]), text(&asked[1]));
    let (winner, loser) = (hosts[won[0]].2, &asked[1 - won[0]]);
    assert!(
        text(loser).contains(&format!("of host `{winner}`")),
        "{}",
        text(loser)
    );
}

#[test]
fn blocks_go_back_when_unused_a_gone_hosts_after_the_grace_and_a_stale_host_takes_nothing() {
    let lab = Lab::new("clb");
    let u = underlay(&lab);
    let _etcd = etcd(&lab, &u.etcd_ns);
    let grace = ["--cluster-block-grace", "3"];
    let _d1 = member_daemon_with(&lab, &lab.host, "h1", "d1", &grace);
    let start_h2 = || member_daemon_with(&lab, &u.host2, "h2", "d2", &grace);
    let mut d2 = Some(start_h2());
    wait_until("both hosts to join", 15, || members(&lab).len() == 2);
    define(&lab, "t1", "4300", "10.130.0.0/24");

    // A host claims a block for its first container, and gives it back
    // once nothing there uses it.
    let x = lab.netns("x");
    let (ip_x, _) = attach_on(&lab, &lab.host, "d1", &x, "t1");
    let held_by_h1 = || {
        blocks_at(&lab, &lab.host, "d1", "t1")
            .into_iter()
            .filter(|(_, h)| h == "h1")
            .count()
    };
    assert_eq!(held_by_h1(), 1, "{ip_x}");
    assert!(
        plumb_at(&lab, &lab.host, "d1", &["detach", &x])
            .status
            .success()
    );
    wait_for("h1's empty block to go back", 40, || match held_by_h1() {
        0 => Ok(()),
        n => Err(format!("{n} blocks\n{}", log_of(&lab, "d1"))),
    });

    // h2's daemon dies; its block stays its for the grace, then goes.
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    let (ip_b, mac_b) = attach_on(&lab, &u.host2, "d2", &b, "t1");
    attach_on(&lab, &lab.host, "d1", &a, "t1");
    wait_until("a to reach b", 15, || lab.ping(&a, &ip_b));
    let released = || {
        log_of(&lab, "d1")
            .matches("released the block of a host gone for the grace")
            .count()
    };
    drop(d2.take());
    wait_until("h1 to release h2's block after the grace", 30, || {
        released() == 1
    });
    // Back before another host took it, h2 claims it back: b is reached
    // again.
    d2 = Some(start_h2());
    wait_until("h2 to claim its block back", 30, || {
        log_of(&lab, "d2").contains("claimed back a block")
    });
    wait_until("a to reach b again", 15, || lab.ping(&a, &ip_b));

    // Gone past the grace again, and this time h1 gives b's address to c.
    drop(d2.take());
    wait_until("h1 to release h2's block again", 30, || released() == 2);
    let c = lab.netns("c");
    let given = plumb_at(&lab, &lab.host, "d1", &["attach", &c, "t1", "--ip", &ip_b]);
    assert!(given.status.success(), "{}", text(&given));
    // h2 comes back with b still holding it: the cluster keeps c's.
    d2 = Some(start_h2());
    wait_until("h2 to say b's address is h1's now", 30, || {
        log_of(&lab, "d2").contains("host `h1`'s now")
    });
    let fdb = must(&format!("bridge -n {} fdb show dev vx-t1", lab.host));
    assert!(!fdb.contains(&mac_b), "h1 reaches the stale b: {fdb}");
    let last: u32 = ip_b.rsplit('.').next().unwrap().parse().unwrap();
    let block_of_b = format!("10.130.0.{}/26", last / 64 * 64);
    assert!(
        blocks_at(&lab, &u.host2, "d2", "t1").contains(&(block_of_b, "h1".to_string())),
        "h2 sees b's block as h1's: {:?}",
        blocks_at(&lab, &u.host2, "d2", "t1")
    );
    // The address kept its MAC (a function of it on cluster networks), so
    // a's ARP cache, which still has b's, reaches c at once.
    let mac_c = must(&format!("ip -n {c} -br link show eth0"));
    assert!(mac_c.contains(&mac_b), "c's MAC is b's: {mac_c} / {mac_b}");
    assert!(
        must(&format!("ip -n {a} neigh show {ip_b}")).contains(&mac_b),
        "a still has b's entry"
    );
    assert!(lab.ping(&a, &ip_b), "a reaches c at b's former address");
    drop(d2);
}

#[test]
fn a_daemon_back_after_a_crash_keeps_its_containers_known_to_the_others() {
    let lab = Lab::new("clc");
    let u = underlay(&lab);
    let _etcd = etcd(&lab, &u.etcd_ns);
    let _d1 = member_daemon(&lab, &lab.host, "h1", "d1");
    // A TTL long enough for the daemon to be back before it expires.
    let ttl = ["--cluster-ttl", "8"];
    let d2 = member_daemon_with(&lab, &u.host2, "h2", "d2", &ttl);
    wait_until("both hosts to join", 15, || members(&lab).len() == 2);
    define(&lab, "t1", "4400", "10.140.0.0/24");
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    attach_on(&lab, &lab.host, "d1", &c1, "t1");
    let (ip2, c2_mac) = attach_on(&lab, &u.host2, "d2", &c2, "t1");
    wait_until("c1 to reach c2", 15, || lab.ping(&c1, &ip2));

    // SIGKILL, and back at once: the registration and c2's record move
    // to the new daemon's lease, so when the old one expires h1 forgets
    // nothing.
    drop(d2);
    let mut d2 = member_daemon_with(&lab, &u.host2, "h2", "d2", &ttl);
    wait_until("h2's new daemon to join", 15, || {
        log_of(&lab, "d2").matches("joined the cluster").count() == 2
    });
    wait_until("the crashed daemon's lease to expire", 30, || {
        leases(&lab, &u.etcd_ns) == 2
    });
    assert!(lab.ping(&c1, &ip2));
    let forgot = format!("forgot {c2_mac}");
    assert!(
        !log_of(&lab, "d1").contains(&forgot),
        "h1 forgot c2 when the crashed daemon's lease expired:\n{}",
        log_of(&lab, "d1")
    );

    // Stopped cleanly and started again (an upgrade, `systemctl
    // restart`): with c2 running, h2 stays registered for the next daemon
    // to take over, and again h1 forgets nothing.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d2.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    d2.0.wait().unwrap();
    assert_eq!(members(&lab).len(), 2, "h2 left at a stop with containers");
    assert!(log_of(&lab, "d2").contains("the registration stays"));
    let _d2 = member_daemon_with(&lab, &u.host2, "h2", "d2", &ttl);
    wait_until("h2's restarted daemon to join", 15, || {
        log_of(&lab, "d2").matches("joined the cluster").count() == 3
    });
    wait_until("the stopped daemon's lease to expire", 30, || {
        leases(&lab, &u.etcd_ns) == 2
    });
    assert!(lab.ping(&c1, &ip2));
    assert!(
        !log_of(&lab, "d1").contains(&forgot),
        "h1 forgot c2 across a restart of h2's daemon:\n{}",
        log_of(&lab, "d1")
    );
}

#[test]
fn a_rule_written_once_holds_on_every_host_for_containers_on_any() {
    let lab = Lab::new("clp");
    let (u, _etcd, _d1, _d2) = two_members(&lab);
    define(&lab, "front", "4500", "10.150.0.0/24");
    define(&lab, "back", "4600", "10.151.0.0/24");
    let (api, pg, cache) = (lab.netns("api"), lab.netns("pg"), lab.netns("cache"));
    attach_on(&lab, &lab.host, "d1", &api, "front");
    let (ip_pg, _) = attach_on_with(&lab, &u.host2, "d2", &pg, "back", &["--label", "role=db"]);
    let (ip_cache, _) = attach_on(&lab, &u.host2, "d2", &cache, "back");
    // Two networks are kept apart, across hosts as on one.
    assert!(!lab.ping(&api, &ip_pg), "front reached back with no rule");

    // One rule, in the cluster: front may reach what is labelled db. h1
    // routes api's packets, and pg, on h2, is in h1's set for the label.
    let rule = [
        "policy",
        "add",
        "front",
        "allow",
        "from",
        "front",
        "to",
        "label:role=db",
        "proto",
        "icmp",
        "--cluster-store",
        STORE,
    ];
    let out = lab.ok(&rule);
    assert!(out.contains("added to cluster default"), "{out}");
    let id: String = out.split_whitespace().nth(1).unwrap().to_string();
    wait_until("api to reach pg on the other host", 15, || {
        lab.ping(&api, &ip_pg)
    });
    assert!(
        !lab.ping(&api, &ip_cache),
        "the rule let an unlabelled one in"
    );
    // Each host has it, as the cluster's.
    for (ns, log) in [(lab.host.as_str(), "d1"), (u.host2.as_str(), "d2")] {
        let ls = text(&plumb_at(&lab, ns, log, &["policy", "ls", "--json"]));
        assert!(ls.contains(&format!("cluster:{id}")), "{ls}");
    }
    // A container labelled later is in at once.
    let pg2 = lab.netns("pg2");
    let (ip_pg2, _) = attach_on_with(&lab, &u.host2, "d2", &pg2, "back", &["--label", "role=db"]);
    wait_until("api to reach the new pg", 15, || lab.ping(&api, &ip_pg2));
    // The same rule again, or a bad one, is refused by name.
    let again = lab.fails(&rule);
    assert!(again.contains(&format!("rule {id}")), "{again}");
    let bad = lab.fails(&[
        "policy",
        "add",
        "nowhere",
        "allow",
        "--cluster-store",
        STORE,
    ]);
    assert!(bad.contains("nowhere"), "{bad}");

    // A network the rule names stays while it does.
    let err = lab.fails(&["network", "rm", "back", "--cluster-store", STORE]);
    let err2 = lab.fails(&["network", "rm", "front", "--cluster-store", STORE]);
    assert!(
        err.contains("containers") && err2.contains(&format!("rule(s) {id}")),
        "{err}\n{err2}"
    );
    // Removed from the cluster, it goes from every host.
    lab.ok(&["policy", "rm", &id, "--cluster-store", STORE]);
    wait_until("the rule to go from h1", 15, || !lab.ping(&api, &ip_pg));
    wait_until("the rule to go from h2", 15, || {
        !text(&plumb_at(&lab, &u.host2, "d2", &["policy", "ls", "--json"]))
            .contains(&format!("cluster:{id}"))
    });
}

#[test]
fn a_cni_runtime_attaches_to_a_cluster_network_by_its_name() {
    let lab = Lab::new("cln");
    let (u, _etcd, _d1, _d2) = two_members(&lab);
    define(&lab, "pods", "4700", "10.160.0.0/24");
    wait_until("the cluster network on h1", 15, || {
        text(&plumb_at(&lab, &lab.host, "d1", &["network", "ls"])).contains("pods ")
    });
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    let (ip2, _) = attach_on(&lab, &u.host2, "d2", &c2, "pods");
    // The runtime names the network; h1's daemon gives the address from
    // h1's block.
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "pods", "type": "plumb", "network": "pods"
    });
    let state = lab.state.path().join("state-d1");
    let socket = state.join("plumbd.sock");
    let env = [
        ("PLUMB_STATE_DIR", state.to_str().unwrap()),
        ("PLUMB_SOCKET", socket.to_str().unwrap()),
    ];
    let netns = format!("/run/netns/{c1}");
    let mut add = common::cni::Call::plumb("ADD", "pod-c1", Some(&netns));
    add.env = &env;
    let answer = add.run(&lab, &conf);
    assert!(answer.ok, "{}", answer.json);
    let ip1 = answer.json["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(ip1.starts_with("10.160.0."), "{}", answer.json);
    wait_until("the pod to reach c2 on h2", 15, || lab.ping(&c1, &ip2));
    assert!(lab.ping(&c2, &ip1));
    // DEL withdraws it from the cluster.
    let mac = answer.json["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|i| {
            i["sandbox"]
                .is_string()
                .then(|| i["mac"].as_str())
                .flatten()
        })
        .unwrap_or_default()
        .to_string();
    assert!(!mac.is_empty(), "{}", answer.json);
    let fdb = || must(&format!("bridge -n {} fdb show dev vx-pods", u.host2));
    assert!(fdb().contains(&mac), "{}", fdb());
    let mut del = common::cni::Call::plumb("DEL", "pod-c1", Some(&netns));
    del.env = &env;
    assert!(del.run(&lab, &conf).ok);
    wait_until("h2 to forget the pod", 15, || !fdb().contains(&mac));
}

#[test]
fn an_on_demand_network_is_only_where_its_containers_are() {
    let lab = Lab::new("cld");
    let (u, _etcd, _d1, _d2) = two_members(&lab);
    lab.ok(&[
        "network",
        "create",
        "lazy",
        "--driver",
        "vxlan",
        "--vni",
        "4900",
        "--subnet",
        "10.180.0.0/24",
        "--on-demand",
        "--cluster-store",
        STORE,
    ]);
    define(&lab, "everywhere", "4901", "10.181.0.0/24");
    let has = |ns: &str, log: &str, network: &str| {
        text(&plumb_at(&lab, ns, log, &["network", "ls"])).contains(&format!("{network} "))
    };
    // Once both hosts made the network for every host, neither has made
    // the on-demand one.
    for (ns, log) in [(lab.host.as_str(), "d1"), (u.host2.as_str(), "d2")] {
        wait_until("the every-host network", 15, || has(ns, log, "everywhere"));
        assert!(!has(ns, log, "lazy"), "made with no container");
    }
    // An attach brings it, on that host alone.
    let (c1, c2) = (lab.netns("c1"), lab.netns("c2"));
    let (ip1, _) = attach_on(&lab, &lab.host, "d1", &c1, "lazy");
    assert!(has(&lab.host, "d1", "lazy"));
    assert!(!has(&u.host2, "d2", "lazy"));
    // A CNI ADD on the other host brings it there.
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "lazy", "type": "plumb", "network": "lazy"
    });
    let state = lab.state.path().join("state-d2");
    let socket = state.join("plumbd.sock");
    let netns = format!("/run/netns/{c2}");
    // The runtime of h2 runs the plugin in h2's namespace; it asks h2's
    // daemon through its socket.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &u.host2])
        .arg(env!("CARGO_BIN_EXE_plumb"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "pod-c2")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", &netns)
        .env("CNI_PATH", common::cni::REFERENCE)
        .env("PLUMB_STATE_DIR", state.to_str().unwrap())
        .env("PLUMB_SOCKET", socket.to_str().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(conf.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(has(&u.host2, "d2", "lazy"));
    wait_until("c2 to reach c1 across hosts", 15, || lab.ping(&c2, &ip1));
    // The last container here gone, the network goes from this host.
    assert!(
        plumb_at(&lab, &lab.host, "d1", &["detach", &c1])
            .status
            .success()
    );
    wait_until("the unused on-demand network to go", 40, || {
        !has(&lab.host, "d1", "lazy")
    });
    assert!(has(&u.host2, "d2", "lazy"), "h2's container is still on it");
}
