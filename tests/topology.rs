//! `plumb up` / `plumb down` with the shipped examples, end to end.

mod common;

use common::{Lab, links, must, peer_echo_server, tcp_say};

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// A shipped example whose namespaces carry the lab's prefix (so that two
/// runs, and a user's own `lab-router`, never meet; the lab removes them
/// whatever happens): the file's path, and the new names in order.
fn example_for(lab: &Lab, name: &str, namespaces: &[&str]) -> (String, Vec<String>) {
    let mut text = std::fs::read_to_string(example(name)).expect("read example");
    let mut renamed = Vec::new();
    for ns in namespaces {
        let mine = lab.name(ns);
        assert!(text.contains(&format!("\"{ns}\"")), "{name} names {ns}");
        text = text.replace(&format!("\"{ns}\""), &format!("\"{mine}\""));
        renamed.push(mine);
    }
    let path = lab.state.path().join(name);
    std::fs::write(&path, text).expect("write example copy");
    (path.to_str().expect("UTF-8 path").to_string(), renamed)
}

#[test]
fn lab_example_host_reaches_web_server_through_router() {
    let lab = Lab::new("lab");
    let (file, names) = example_for(
        &lab,
        "lab.toml",
        &["lab-router", "lab-web", "lab-mkt", "lab-sales"],
    );
    let web = names[1].as_str();
    let first = lab.ok(&["up", &file]);
    assert!(
        first.contains("created network finance")
            && first.contains("added host route 10.2.0.0/24 via 10.0.0.254"),
        "{first}"
    );

    // host -> router -> web server on the finance network.
    assert!(
        lab.ping(&lab.host, "10.2.0.10"),
        "host pings the web server"
    );
    let (server, port) = peer_echo_server(web, "10.2.0.10:0");
    let seen =
        tcp_say(&lab.host, &format!("10.2.0.10:{port}")).expect("host connects to the web server");
    assert_eq!(
        seen, "10.0.0.1",
        "the web server sees the host's own address: routed, not NATed"
    );
    server.join().unwrap();
    // Departments reach each other through the router, and every one is reachable.
    assert!(lab.ping(web, "10.3.0.10"), "finance -> marketing");
    assert!(lab.ping(&lab.host, "10.4.0.10"), "host -> sales");
    assert!(
        lab.ping(&lab.host, "10.1.0.254"),
        "host -> core gateway on the router"
    );
    let trace = must(&format!("ip netns exec {web} ip route get 10.0.0.1"));
    assert!(
        trace.contains("via 10.2.0.254"),
        "web goes through its gateway: {trace}"
    );

    // A second up changes nothing.
    let second = lab.ok(&["up", &file]);
    assert_eq!(second.trim(), "up to date: nothing to change");

    // down removes exactly what up made.
    let host_links_before_down = links(&lab.host);
    assert!(host_links_before_down.iter().any(|l| l == "pl-finance"));
    lab.ok(&["down", &file]);
    for ns in &names {
        assert!(!netns_exists(ns), "{ns} removed");
    }
    let left = links(&lab.host);
    assert_eq!(
        left,
        vec!["lo".to_string()],
        "only lo is left in the host namespace"
    );
    let routes = must(&format!("ip -n {} route", lab.host));
    assert!(routes.trim().is_empty(), "no host routes left: {routes}");
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "no attachments left");
    assert_eq!(
        lab.ok(&["network", "ls"]).lines().count(),
        1,
        "no networks left"
    );
    assert_eq!(lab.ok(&["down", &file]).trim(), "nothing to remove");
}

#[test]
fn quickstart_example_comes_up_and_goes_down() {
    let lab = Lab::new("qs");
    let (file, names) = example_for(&lab, "quickstart.toml", &["qs-a", "qs-b"]);
    let (a, b) = (names[0].as_str(), names[1].as_str());
    lab.ok(&["up", &file]);
    let b_ip = lab.ip_of(b, "quickstart");
    assert!(lab.ping(a, &b_ip));
    assert!(lab.ping(a, "fd88::1"));
    lab.ok(&["down", &file]);
    assert!(!netns_exists(a) && !netns_exists(b));
    assert_eq!(links(&lab.host), vec!["lo".to_string()]);
}

#[test]
fn down_leaves_what_up_did_not_make() {
    let lab = Lab::new("own");
    // A network made by hand before `up`, used by the topology.
    lab.ok(&["network", "create", "shared", "--subnet", "10.61.0.0/24"]);
    let ns = lab.name("t1");
    let file = lab.state.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "[[network]]\nname = \"shared\"\nsubnet = [\"10.61.0.0/24\"]\n\n[[network]]\nname = \"mine\"\nsubnet = [\"10.62.0.0/24\"]\n\n[[namespace]]\nname = \"{ns}\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"shared\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"mine\"\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    lab.ok(&["up", f]);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 3);
    lab.ok(&["down", f]);
    let nets = lab.ok(&["network", "ls"]);
    assert!(nets.contains("shared") && !nets.contains("mine"), "{nets}");
    assert!(!netns_exists(&ns));
}

#[test]
fn what_the_daemon_attaches_for_a_file_is_the_files_and_only_that() {
    let lab = Lab::new("ownd");
    let _daemon = lab.daemon(&[]);
    // Namespaces the file does not make: only the owner its attachment
    // carries tells `down` it is the file's.
    let (x, y) = (lab.netns("x"), lab.netns("y"));
    let file = lab.state.path().join("t.toml");
    let x_only = format!(
        "[[network]]\nname = \"n\"\nsubnet = [\"10.67.0.0/24\"]\n\n[[attach]]\ntarget = \"{x}\"\nnetwork = \"n\"\n"
    );
    std::fs::write(&file, &x_only).unwrap();
    let f = file.to_str().unwrap();
    let up = lab.ok(&["up", f]);
    assert!(up.contains(&format!("attached {x} to n")), "{up}");
    // y is attached by hand, then the file declares it too: `up` finds it
    // in place, and it stays the hand's.
    lab.ok(&["attach", &y, "n"]);
    let with_y = format!("{x_only}\n[[attach]]\ntarget = \"{y}\"\nnetwork = \"n\"\n");
    std::fs::write(&file, with_y).unwrap();
    assert_eq!(lab.ok(&["up", f]).trim(), "up to date: nothing to change");
    // y is not the file's: it keeps the file's network.
    let err = lab.fails(&["down", f]);
    assert!(
        err.contains("nothing was removed") && err.contains(&y),
        "{err}"
    );
    lab.ok(&["detach", &y]);
    let down = lab.ok(&["down", f]);
    assert!(down.contains(&format!("detached {x} from n")), "{down}");
    assert_eq!(links(&x), vec!["lo"]);
    assert_eq!(lab.ok(&["network", "ls"]).lines().count(), 1);
}

#[test]
fn failed_up_takes_back_what_it_made() {
    let lab = Lab::new("upfail");
    let ns = lab.name("x");
    let file = lab.state.path().join("bad.toml");
    // The second attach asks for an address outside the network: fails after
    // the network, the namespace and the first attachment exist.
    std::fs::write(
        &file,
        format!(
            "[[network]]\nname = \"n1\"\nsubnet = [\"10.63.0.0/24\"]\n\n[[network]]\nname = \"n2\"\nsubnet = [\"10.64.0.0/24\"]\n\n[[namespace]]\nname = \"{ns}\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"n1\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"n2\"\nip = [\"10.99.9.9\"]\n"
        ),
    )
    .unwrap();
    let err = lab.fails(&["up", file.to_str().unwrap()]);
    assert!(
        err.contains("10.99.9.9") && err.contains("rolled back"),
        "{err}"
    );
    assert!(!netns_exists(&ns), "namespace taken back");
    assert_eq!(links(&lab.host), vec!["lo".to_string()]);
    assert_eq!(lab.ok(&["network", "ls"]).lines().count(), 1);
}

#[test]
fn down_removes_nothing_when_another_attachment_or_rule_would_stop_it() {
    let lab = Lab::new("downall");
    let ns = lab.name("t1");
    let foreign = lab.netns("foreign");
    let file = lab.state.path().join("t.toml");
    std::fs::write(
        &file,
        format!(
            "[[network]]\nname = \"a\"\nsubnet = [\"10.65.0.0/24\"]\n\n[[network]]\nname = \"b\"\nsubnet = [\"10.66.0.0/24\"]\n\n[[namespace]]\nname = \"{ns}\"\n\n[[attach]]\ntarget = \"{ns}\"\nnetwork = \"a\"\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    lab.ok(&["up", f]);
    // Not the file's: an attachment by hand on `b`, the network `down`
    // removes last.
    lab.ok(&["attach", &foreign, "b"]);
    let before = (
        lab.ok(&["ls"]),
        lab.ok(&["network", "ls"]),
        links(&lab.host),
    );
    let err = lab.fails(&["down", f]);
    assert!(
        err.contains("nothing was removed") && err.contains(&foreign) && err.contains("`b`"),
        "{err}"
    );
    let after = (
        lab.ok(&["ls"]),
        lab.ok(&["network", "ls"]),
        links(&lab.host),
    );
    assert_eq!(before, after, "down changed something before failing");
    assert!(netns_exists(&ns), "the file's namespace went");

    // A rule by hand naming the file's network stops it the same way.
    lab.ok(&["detach", &foreign]);
    lab.ok(&["policy", "add", "b", "deny", "from", "a"]);
    let err = lab.fails(&["down", f]);
    assert!(
        err.contains("nothing was removed") && err.contains("rule"),
        "{err}"
    );
    assert!(netns_exists(&ns));
    assert_eq!(lab.ok(&["network", "ls"]), before.1);

    lab.ok(&["policy", "rm", "1"]);
    lab.ok(&["down", f]);
    assert!(!netns_exists(&ns));
    let nets = lab.ok(&["network", "ls"]);
    assert!(
        !nets.contains("10.65.") && !nets.contains("10.66."),
        "{nets}"
    );
}
