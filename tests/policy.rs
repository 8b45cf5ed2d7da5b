//! Firewall rules as data (`plumb policy`), with real traffic: tenants
//! joined by a rule, ports opened between networks, evaluation order,
//! attachments selected by label, traffic out of a network denied, rules
//! back after a flushed ruleset, bad rules refused, rules in topology files.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{Lab, in_netns, must};

/// Listeners inside `ns` on these ports of every address (the kernel
/// completes handshakes without `accept`); closed on drop.
fn listen(ns: &str, ports: &[u16]) -> Vec<TcpListener> {
    ports
        .iter()
        .map(|p| {
            in_netns(ns, || {
                TcpListener::bind(("0.0.0.0", *p)).expect("bind in netns")
            })
        })
        .collect()
}

/// Whether a TCP handshake from `ns` to `ip:port` completes.
fn connects(ns: &str, ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
    in_netns(ns, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(800)).is_ok()
    })
}

/// The id `plumb policy add` printed ("rule N added: ...").
fn rule_id(out: &str) -> String {
    out.split_whitespace().nth(1).expect("rule id").to_string()
}

#[test]
fn rules_join_tenants_open_ports_and_follow_the_documented_order() {
    let lab = Lab::new("pol");
    let up = lab.upstream("10.96.0");
    lab.docker_forward_drop();
    for (name, subnet, extra) in [
        ("fin", "10.41.0.0/24", vec!["--tenant", "acme"]),
        ("sales", "10.42.0.0/24", vec!["--tenant", "acme"]),
        ("web", "10.43.0.0/24", vec!["--mode", "routed"]),
    ] {
        let mut args = vec!["network", "create", name, "--subnet", subnet];
        args.extend(extra);
        lab.ok(&args);
    }
    let (f, s, w) = (lab.netns("f"), lab.netns("s"), lab.netns("w"));
    lab.ok(&["attach", &f, "fin"]);
    lab.ok(&["attach", &s, "sales"]);
    lab.ok(&["attach", &w, "web"]);
    let (ip_f, ip_s, ip_w) = (
        lab.ip_of(&f, "fin"),
        lab.ip_of(&s, "sales"),
        lab.ip_of(&w, "web"),
    );
    let _servers = listen(&w, &[8000, 8001, 9000]);

    // Defaults: networks apart, even within one tenant.
    assert!(!lab.ping(&f, &ip_s), "fin to sales before any rule");
    assert!(!connects(&f, &ip_w, 8000), "fin to web before any rule");

    // One rule joins the tenant's networks, both ways.
    let join = rule_id(&lab.ok(&["policy", "add", "acme", "allow", "from", "acme"]));
    assert!(lab.ping(&f, &ip_s), "fin to sales, joined");
    assert!(lab.ping(&s, &ip_f), "sales to fin, joined");
    assert!(!lab.ping(&f, &ip_w), "the tenant rule opens nothing else");

    // A port range from one network into another, nothing more.
    lab.ok(&[
        "policy",
        "add",
        "web",
        "allow",
        "from",
        "fin",
        "proto",
        "tcp",
        "port",
        "8000-8001",
    ]);
    assert!(connects(&f, &ip_w, 8000), "fin to web:8000");
    assert!(connects(&f, &ip_w, 8001), "fin to web:8001");
    assert!(
        !connects(&f, &ip_w, 9000),
        "fin to web:9000 is not in the rule"
    );
    assert!(!lab.ping(&f, &ip_w), "nor is icmp");
    assert!(!connects(&s, &ip_w, 8000), "sales is not fin");

    // A lower priority number runs first: a deny of one port by address
    // beats the allow of the range.
    lab.ok(&[
        "policy",
        "add",
        "web",
        "deny",
        "from",
        "10.41.0.0/24",
        "proto",
        "tcp",
        "port",
        "8001",
        "--priority",
        "50",
    ]);
    assert!(connects(&f, &ip_w, 8000), "8000 still allowed");
    assert!(!connects(&f, &ip_w, 8001), "8001 denied first");
    let ls: serde_json::Value =
        serde_json::from_str(&lab.ok(&["policy", "ls", "--json"])).expect("policy ls --json");
    assert_eq!(ls[0]["Priority"], 50, "ls shows evaluation order: {ls}");

    // Attachments selected by label: the rule is there first, the
    // container arrives later and is let in; without the label it is not.
    let p = lab.netns("p");
    lab.ok(&[
        "policy",
        "add",
        "web",
        "allow",
        "from",
        "label:role=probe",
        "proto",
        "icmp",
    ]);
    lab.ok(&["attach", &p, "sales", "--label", "role=probe"]);
    assert!(lab.ping(&p, &ip_w), "a labelled container reaches web");
    assert!(!lab.ping(&s, &ip_w), "its unlabelled neighbour does not");
    lab.ok(&["detach", &p]);
    lab.ok(&["attach", &p, "sales"]);
    assert!(!lab.ping(&p, &ip_w), "the same container without the label");

    // Traffic out of a network: the world, then not. (web is routed: the
    // upstream router needs the way back.)
    must(&format!("ip -n {up} route add 10.43.0.0/24 via 10.96.0.2"));
    assert!(lab.ping(&w, "10.96.0.1"), "web reaches upstream");
    lab.ok(&["policy", "add", "web", "deny", "to", "10.96.0.0/24"]);
    assert!(!lab.ping(&w, "10.96.0.1"), "web denied upstream");
    assert!(lab.ping(&f, "10.96.0.1"), "fin still reaches upstream");

    // A flushed ruleset comes back, rules included.
    must(&format!("ip netns exec {} nft flush ruleset", lab.host));
    lab.ok(&["restore"]);
    assert!(lab.ping(&f, &ip_s), "joined again after restore");
    assert!(!connects(&f, &ip_w, 8001), "deny again after restore");

    // A catch-all deny after the allows: an allowlist. Traffic within
    // the network is not the rules' business (even where br_netfilter
    // sends bridged frames through the forward hook, as here).
    let w2 = lab.netns("w2");
    lab.ok(&["attach", &w2, "web"]);
    assert!(lab.ping(&up, &ip_w), "the outside reaches routed web");
    lab.ok(&["policy", "add", "web", "deny", "--priority", "1000"]);
    assert!(connects(&f, &ip_w, 8000), "the allow still opens 8000");
    assert!(!lab.ping(&up, &ip_w), "the rest into web is denied");
    assert!(lab.ping(&w2, &ip_w), "within web");

    // Removing the joining rule parts the tenant's networks again.
    lab.ok(&["policy", "rm", &join]);
    assert!(!lab.ping(&f, &ip_s), "fin to sales, parted");
}

#[test]
fn bad_rules_are_refused_and_change_nothing() {
    let lab = Lab::new("polbad");
    lab.ok(&["network", "create", "a", "--subnet", "10.44.0.0/24"]);
    lab.ok(&["network", "create", "b", "--subnet", "10.45.0.0/24"]);
    lab.ok(&[
        "policy", "add", "a", "allow", "from", "b", "proto", "tcp", "port", "443",
    ]);
    let ruleset = || must(&format!("ip netns exec {} nft list ruleset", lab.host));
    let before = ruleset();
    for (args, expect) in [
        (vec!["nope", "allow"], "policy scope `nope`"),
        (
            vec!["a", "allow", "from", "marketing"],
            "policy from `marketing`",
        ),
        (
            vec!["a", "allow", "from", "b", "to", "b"],
            "must have network:a",
        ),
        (vec!["a", "permit"], "policy action `permit`"),
        (vec!["a", "allow", "port", "80"], "needs `proto tcp`"),
        (
            vec!["a", "allow", "from", "b", "proto", "tcp", "port", "443"],
            "repeats rule 1",
        ),
        (
            vec!["a", "deny", "from", "b", "proto", "tcp", "port", "443"],
            "contradicts rule 1",
        ),
        (vec!["a", "deny", "from", "b"], "unreachable"),
        (
            vec!["a", "allow", "from", "b", "sideways"],
            "policy `sideways`",
        ),
    ] {
        let mut full = vec!["policy", "add"];
        full.extend(args);
        let err = lab.fails(&full);
        assert!(err.contains(expect), "{full:?}: {err}");
    }
    assert_eq!(ruleset(), before, "refused rules leave the ruleset alone");
    let err = lab.fails(&["policy", "rm", "1", "99"]);
    assert!(err.contains("policy id `99`"), "{err}");
    assert_eq!(
        lab.ok(&["policy", "ls"]).lines().count(),
        1,
        "rm is all or none"
    );
    let err = lab.fails(&["network", "rm", "b"]);
    assert!(err.contains("policy rule(s) 1"), "{err}");
    lab.ok(&["network", "rm", "b", "--force"]);
    assert_eq!(
        lab.ok(&["policy", "ls"]),
        "",
        "--force took the rule with it"
    );
}

#[test]
fn topology_files_carry_rules() {
    let lab = Lab::new("poltopo");
    let file = tempfile::NamedTempFile::with_suffix(".toml").expect("temp file");
    std::fs::write(
        file.path(),
        r#"
name = "rules"
[[network]]
name = "t1"
subnet = ["10.46.0.0/24"]
tenant = "t"
[[network]]
name = "t2"
subnet = ["10.47.0.0/24"]
tenant = "t"
[[namespace]]
name = "POL-A"
[[namespace]]
name = "POL-B"
[[attach]]
target = "POL-A"
network = "t1"
[[attach]]
target = "POL-B"
network = "t2"
[[policy]]
scope = "t"
action = "allow"
from = "t"
proto = "icmp"
"#
        .replace("POL-A", &lab.name("a"))
        .replace("POL-B", &lab.name("b")),
    )
    .expect("write topology");
    let path = file.path().to_str().expect("utf-8 path");
    let up = lab.ok(&["up", path]);
    assert!(up.contains("added rule 1"), "{up}");
    let ip_b = lab.ip_of(&lab.name("b"), "t2");
    assert!(
        lab.ping(&lab.name("a"), &ip_b),
        "the file's rule joins t1 and t2"
    );
    let again = lab.ok(&["up", path]);
    assert!(
        !again.contains("added rule"),
        "a second up adds nothing: {again}"
    );
    lab.ok(&["down", path]);
    assert_eq!(lab.ok(&["policy", "ls"]), "", "down removed the rule");
}
