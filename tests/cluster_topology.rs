//! Topology files with a cluster part (`[cluster]`, vxlan `[[network]]`
//! entries, `[[cluster.policy]]` rules), brought up and down on two fake
//! hosts of a real etcd (tests/common/cluster.rs): one file per cluster
//! (examples/cluster.toml), used on every host; the last host's `down`
//! takes the cluster part away.

mod common;

use common::cluster::*;
use common::{Lab, peer_echo_server, tcp_say, wait_for, wait_until};

/// examples/cluster.toml for host `host`, its store this test's etcd and
/// its namespaces `app` and `db`: the same file on every host but for
/// their names (the two fake hosts share one /run/netns). Returns its path.
fn shop(lab: &Lab, host: &str, app: &str, db: &str) -> String {
    let example = format!("{}/examples/cluster.toml", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(example).unwrap();
    for (from, to) in [
        ("\"etcd://10.0.0.10:2379\"", format!("\"{STORE}\"")),
        ("\"shop-app\"", format!("\"{app}\"")),
        ("\"shop-db\"", format!("\"{db}\"")),
    ] {
        assert!(text.contains(from), "the example has {from}");
        text = text.replace(from, &to);
    }
    let dir = lab.state.path().join(host);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `plumb ARGS` on host `ns` (daemon `log`), which must succeed: its
/// output.
fn ok_at(lab: &Lab, ns: &str, log: &str, args: &[&str]) -> String {
    let out = plumb_at(lab, ns, log, args);
    assert!(out.status.success(), "plumb {args:?}: {}", text(&out));
    text(&out)
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

#[test]
fn one_file_brings_a_cluster_up_on_two_hosts_and_the_last_down_takes_it_away() {
    let lab = Lab::new("ctp");
    let (u, _etcd, _d1, _d2) = two_members(&lab);
    let h1 = (lab.host.as_str(), "d1");
    let h2 = (u.host2.as_str(), "d2");
    let (app1, db1) = (lab.name("app1"), lab.name("db1"));
    let (app2, db2) = (lab.name("app2"), lab.name("db2"));
    let f1 = shop(&lab, "h1", &app1, &db1);
    let f2 = shop(&lab, "h2", &app2, &db2);

    // The first host defines the networks and the rule, and attaches its
    // containers through its daemon, which makes the networks there.
    let out = ok_at(&lab, h1.0, h1.1, &["up", &f1]);
    for line in [
        "defined network front in cluster default",
        "defined network back in cluster default",
        "added cluster rule ",
        &format!("attached {app1} to front as eth0"),
        &format!("attached {db1} to back as eth0"),
    ] {
        assert!(out.contains(line), "no `{line}`:\n{out}");
    }
    // The second finds the cluster part there: only its own part changes.
    let out = ok_at(&lab, h2.0, h2.1, &["up", &f2]);
    assert!(
        !out.contains("defined") && !out.contains("cluster rule"),
        "{out}"
    );
    assert!(out.contains(&format!("attached {app2} to front")), "{out}");
    let rules = cluster_rules(&lab);
    assert_eq!(rules.len(), 1, "{rules:?}");

    // Across the overlay, and through the rule: the front reaches the
    // back's port 5432 on the other host, and nothing else of it.
    let ip_app2 = ip_at(&lab, h2.0, h2.1, &app2, "front");
    let ip_db2 = ip_at(&lab, h2.0, h2.1, &db2, "back");
    let ip_app1 = ip_at(&lab, h1.0, h1.1, &app1, "front");
    wait_until("app1 to reach app2 across hosts", 15, || {
        lab.ping(&app1, &ip_app2)
    });
    assert!(lab.ping(&app2, &ip_app1));
    let (server, _) = peer_echo_server(&db2, &format!("{ip_db2}:5432"));
    let seen = wait_for("app1 to reach db2's port 5432 through the rule", 15, || {
        tcp_say(&app1, &format!("{ip_db2}:5432")).map_err(|e| e.to_string())
    });
    assert_eq!(seen, ip_app1, "db2 sees app1's own address");
    server.join().unwrap();
    assert!(
        !lab.ping(&app1, &ip_db2),
        "the rule let more than TCP 5432 in"
    );
    assert!(!lab.ping(&db2, &ip_app1), "the back reached the front");

    // Everything is in place: a second up changes nothing, on either host.
    for (ns, log, f) in [(h1.0, h1.1, &f1), (h2.0, h2.1, &f2)] {
        let again = ok_at(&lab, ns, log, &["up", f]);
        assert_eq!(again.trim(), "up to date: nothing to change");
    }

    // A rule not of the file that names its network, by hand.
    let added = lab.ok(&[
        "policy",
        "add",
        "front",
        "deny",
        "from",
        "10.9.0.0/16",
        "--cluster-store",
        STORE,
    ]);
    let foreign = added.split_whitespace().nth(1).unwrap().to_string();

    // The first host down: its part goes, the cluster's stays for h2's
    // containers (and so the rule by hand is in nobody's way).
    let out = ok_at(&lab, h1.0, h1.1, &["down", &f1]);
    assert!(
        out.contains(
            "left networks front, back in cluster default: host h2 has containers on them"
        ),
        "{out}"
    );
    assert!(out.contains(&format!("deleted namespace {app1}")), "{out}");
    assert!(!netns_exists(&app1) && !netns_exists(&db1));
    assert_eq!(cluster_rules(&lab).len(), 2);
    assert!(has_network(&lab, h2.0, h2.1, "front"));

    // The last host down would take the cluster part: the rule by hand
    // that names the front stops it all, before anything goes.
    let out = plumb_at(&lab, h2.0, h2.1, &["down", &f2]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("nothing was removed") && err.contains(&format!("cluster rule {foreign}")),
        "{err}"
    );
    assert!(netns_exists(&app2) && netns_exists(&db2));
    assert_eq!(ip_at(&lab, h2.0, h2.1, &app2, "front"), ip_app2);
    assert_eq!(cluster_rules(&lab).len(), 2);

    lab.ok(&["policy", "rm", &foreign, "--cluster-store", STORE]);
    let out = ok_at(&lab, h2.0, h2.1, &["down", &f2]);
    for line in [
        &format!("deleted namespace {app2}"),
        "removed cluster rule ",
        "removed network front from cluster default",
        "removed network back from cluster default",
    ] {
        assert!(out.contains(line), "no `{line}`:\n{out}");
    }
    assert!(cluster_rules(&lab).is_empty());
    // Each host's daemon takes the networks away.
    for (ns, log) in [h1, h2] {
        wait_until("the networks to go from every host", 15, || {
            !has_network(&lab, ns, log, "front") && !has_network(&lab, ns, log, "back")
        });
    }
    assert_eq!(
        ok_at(&lab, h2.0, h2.1, &["down", &f2]).trim(),
        "nothing to remove"
    );
}

#[test]
fn a_failed_up_takes_back_what_it_defined_in_the_cluster() {
    let lab = Lab::new("ctr");
    let u = underlay(&lab);
    let _etcd = etcd(&lab, &u.etcd_ns);
    let _d1 = member_daemon(&lab, &lab.host, "h1", "d1");
    wait_until("h1 to join", 15, || members(&lab).len() == 1);
    let (x, y) = (lab.name("x"), lab.name("y"));
    let file = lab.state.path().join("bad.toml");
    // The second attach asks for an address outside the network: it fails
    // after the network is defined in the cluster, the namespaces made and
    // x attached (and published in the cluster).
    std::fs::write(
        &file,
        format!(
            "[cluster]\nstore = \"{STORE}\"\n\n[[network]]\nname = \"t1\"\ndriver = \"vxlan\"\nvni = 4200\nsubnet = [\"10.110.0.0/24\"]\n\n[[namespace]]\nname = \"{x}\"\n\n[[namespace]]\nname = \"{y}\"\n\n[[attach]]\ntarget = \"{x}\"\nnetwork = \"t1\"\n\n[[attach]]\ntarget = \"{y}\"\nnetwork = \"t1\"\nip = [\"10.99.9.9\"]\n\n[[cluster.policy]]\nscope = \"t1\"\naction = \"deny\"\nfrom = \"10.9.0.0/16\"\n"
        ),
    )
    .unwrap();
    let out = plumb_at(&lab, &lab.host, "d1", &["up", file.to_str().unwrap()]);
    let err = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("[[attach]] #2")
            && err.contains("10.99.9.9")
            && err.contains(&format!("detach {x} from t1"))
            && err.contains("rolled back")
            && err.contains("remove network t1 from the cluster")
            && !err.contains("FAILED"),
        "{err}"
    );
    assert!(!netns_exists(&x) && !netns_exists(&y), "a namespace stayed");
    let gone = lab.fails(&["network", "rm", "t1", "--cluster-store", STORE]);
    assert!(gone.contains("`t1` does not exist"), "{gone}");
    assert!(cluster_rules(&lab).is_empty());
    wait_until("t1 to go from h1", 15, || {
        !has_network(&lab, &lab.host, "d1", "t1")
    });
}

#[test]
fn bad_files_and_an_attach_no_daemon_could_make_change_nothing() {
    let lab = Lab::new("ctb");
    let u = underlay(&lab);
    let _etcd = etcd(&lab, &u.etcd_ns);
    let ns = lab.name("n");
    let t1 = "[[network]]\nname = \"t1\"\ndriver = \"vxlan\"\nvni = 4300\nsubnet = [\"10.120.0.0/24\"]\n";
    let cluster = format!("[cluster]\nstore = \"{STORE}\"\n");
    let namespace = format!("[[namespace]]\nname = \"{ns}\"\n");
    let attach = format!("[[attach]]\ntarget = \"{ns}\"\nnetwork = \"t1\"\n");
    let rule = |scope: &str| {
        format!(
            "[[cluster.policy]]\nscope = \"{scope}\"\naction = \"deny\"\nfrom = \"10.9.0.0/16\"\n"
        )
    };
    for (what, body, said) in [
        // No daemon serves this host: nothing can claim t1's addresses.
        (
            "an attach with no daemon",
            format!("{cluster}{t1}{namespace}{attach}{}", rule("t1")),
            vec![
                "[[attach]] #1",
                "daemon",
                "joined to the cluster",
                "nothing was changed",
            ],
        ),
        (
            "a cluster rule naming an unknown network",
            format!("{cluster}{t1}{namespace}{}", rule("nowhere")),
            vec!["[[cluster.policy]] #1", "nowhere"],
        ),
        (
            "a vxlan network without [cluster]",
            format!("{t1}{namespace}"),
            vec!["[[network]] #1 `t1`", "[cluster] store"],
        ),
        (
            "an unknown key in [cluster]",
            format!("{cluster}stor = \"x\"\n{t1}{namespace}"),
            vec!["unknown field `stor`"],
        ),
        (
            "a client certificate without its key",
            format!("{cluster}cert = \"client.pem\"\n{t1}{namespace}"),
            vec!["[cluster] cert", "needs [cluster] key"],
        ),
    ] {
        let file = lab.state.path().join("bad.toml");
        std::fs::write(&file, &body).unwrap();
        let err = lab.fails(&["up", file.to_str().unwrap()]);
        for s in said {
            assert!(err.contains(s), "{what}: no `{s}`: {err}");
        }
        assert!(!netns_exists(&ns), "{what}: the namespace was made");
        let gone = lab.fails(&["network", "rm", "t1", "--cluster-store", STORE]);
        assert!(gone.contains("`t1` does not exist"), "{what}: {gone}");
        assert!(cluster_rules(&lab).is_empty(), "{what}");
    }
}
