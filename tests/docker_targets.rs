//! Docker containers as targets (`docker:NAME`, `docker:ID`,
//! `docker:IDPREFIX`) of `attach`, `detach`, `inspect` and topology files,
//! against a private dockerd in each lab's fake host (tests/common/docker.rs).
//! plumb is always given that dockerd's socket (`--docker-socket`, or
//! `DOCKER_HOST` where that is what is tested): never the machine's Docker.
//! Containers run with `--net none`: plumb's interface is their only one.

mod common;

use common::docker::{Dockerd, INDEX_HTML, Interface, fetch, interfaces_of, ls_rows};
use common::{Lab, links, must, wait_until};

/// A long-running command for containers that only need to exist.
const SLEEP: &[&str] = &["sleep", "100000"];
/// A web server serving [`INDEX_HTML`] on port 80.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

/// A NAT network `name` on `subnet` (its gateway, the first address, on the
/// host's bridge).
fn nat(lab: &Lab, name: &str, subnet: &str) {
    lab.ok(&[
        "network", "create", name, "--mode", "nat", "--subnet", subnet,
    ]);
}

/// The one interface plumb gave a `--net none` container, insisting that
/// there is exactly one and that it has exactly one IPv4 address.
fn only_interface(docker: &Dockerd, name: &str) -> Interface {
    let ifs = interfaces_of(docker.container_pid(name));
    assert_eq!(ifs.len(), 1, "{name} should have one interface: {ifs:?}");
    assert_eq!(ifs[0].v4.len(), 1, "{name}: one IPv4 address: {ifs:?}");
    ifs[0].clone()
}

/// The shortest prefix (at least 4 characters) of `id` that no other
/// container's ID starts with.
fn unique_prefix(docker: &Dockerd, id: &str) -> String {
    let all = docker.must(&["ps", "-aq", "--no-trunc"]);
    let others: Vec<&str> = all.split_whitespace().filter(|o| *o != id).collect();
    (4..id.len())
        .map(|n| &id[..n])
        .find(|p| !others.iter().any(|o| o.starts_with(p)))
        .expect("a unique prefix")
        .to_string()
}

/// `docker create` containers (never started) until two IDs share a
/// prefix; returns that common prefix. Sixteen hex digits make two of at
/// most 17 IDs share their first; in practice about five are made.
fn ambiguous_prefix(docker: &Dockerd) -> String {
    let mut ids: Vec<String> = docker
        .must(&["ps", "-aq", "--no-trunc"])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for n in 0..17 {
        let id = docker
            .must(&[
                "create",
                "--name",
                &format!("twin{n}"),
                "--net",
                "none",
                docker.image(),
                "sleep",
                "1",
            ])
            .trim()
            .to_string();
        if let Some(other) = ids.iter().find(|o| o.as_bytes()[0] == id.as_bytes()[0]) {
            let common = id
                .chars()
                .zip(other.chars())
                .take_while(|(a, b)| a == b)
                .count();
            return id[..common].to_string();
        }
        ids.push(id);
    }
    unreachable!("18 hex IDs always share a first digit")
}

/// What a refused command must leave as it was: the attachment list, the
/// network's record, the host's links, and the interfaces of the running
/// container `web`.
fn snapshot(
    lab: &Lab,
    docker: &Dockerd,
) -> (String, serde_json::Value, Vec<String>, Vec<Interface>) {
    let net: serde_json::Value = serde_json::from_str(&lab.ok(&["network", "inspect", "lan"]))
        .expect("network inspect JSON");
    (
        docker.plumb_ok(&["ls"]),
        net,
        links(&lab.host),
        interfaces_of(docker.container_pid("web")),
    )
}

/// Containers are attached by name, by full ID and by a unique ID prefix;
/// the host reaches each at the address plumb gave it (real packets: ping,
/// and HTTP to the web server); `plumb ls` shows every one as
/// `docker:NAME`, however it was named on the command line; `plumb inspect`
/// prints Docker's shape (Id, Name, NetworkSettings.Networks, Errors) with
/// the address, prefix length and MAC the kernel shows inside the container
/// and the network's gateway, whichever reference it is given; detach by
/// name, by ID and by prefix takes each interface away (inside the
/// container and on the host) and leaves the containers running; a second
/// detach succeeds and changes nothing.
#[test]
fn containers_attach_by_name_id_and_prefix_answer_and_detach() {
    let lab = Lab::new("dtn");
    let docker = Dockerd::start(&lab, false);
    nat(&lab, "lan", "10.57.0.0/24");
    let web_id = docker.run(&["--name", "web", "--net", "none"], HTTPD);
    let byid_id = docker.run(&["--name", "byid", "--net", "none"], SLEEP);
    let byprefix_id = docker.run(&["--name", "byprefix", "--net", "none"], SLEEP);
    let prefix = unique_prefix(&docker, &byprefix_id);
    assert!(prefix.len() < byprefix_id.len());
    let host_links_before = links(&lab.host);

    docker.plumb_ok(&["attach", "docker:web", "lan"]);
    docker.plumb_ok(&["attach", &format!("docker:{byid_id}"), "lan"]);
    docker.plumb_ok(&["attach", &format!("docker:{prefix}"), "lan"]);

    // Each container has one interface with one address, all different,
    // and the host reaches each of them.
    let mut addrs = Vec::new();
    for name in ["web", "byid", "byprefix"] {
        let i = only_interface(&docker, name);
        let ip = i.v4[0].split('/').next().unwrap().to_string();
        assert!(ip.starts_with("10.57.0."), "{name}: {i:?}");
        assert!(lab.ping(&lab.host, &ip), "the host pings {name} at {ip}");
        addrs.push(ip);
    }
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 3, "three different addresses: {addrs:?}");

    // Shown by name, never by the reference typed.
    let mut shown = docker.plumb_targets();
    shown.sort();
    assert_eq!(shown, ["docker:byid", "docker:byprefix", "docker:web"]);
    let ls = docker.plumb_ok(&["ls"]);
    assert!(!ls.contains(&byid_id) && !ls.contains(&prefix), "{ls}");

    // inspect: Docker's shape, the kernel's truth, any reference.
    let web = only_interface(&docker, "web");
    let v = docker.plumb_inspect("docker:web");
    assert_eq!(v["Id"], web_id.as_str(), "{v}");
    assert_eq!(v["Name"], "web", "{v}");
    assert!(
        v["Errors"].as_array().is_some_and(|e| e.is_empty()),
        "no errors: {v}"
    );
    let networks = v["NetworkSettings"]["Networks"]
        .as_object()
        .expect("Networks");
    assert_eq!(networks.len(), 1, "{v}");
    let ep = &networks["lan"];
    assert_eq!(
        web.v4[0],
        format!(
            "{}/{}",
            ep["IPAddress"].as_str().expect("IPAddress"),
            ep["IPPrefixLen"]
        ),
        "inspect's address is the one in the container: {ep}"
    );
    assert_eq!(ep["IPPrefixLen"], 24);
    assert_eq!(ep["Gateway"], "10.57.0.1");
    assert_eq!(
        ep["MacAddress"]
            .as_str()
            .expect("MacAddress")
            .to_lowercase(),
        web.mac,
        "inspect's MAC is the container's: {ep}"
    );
    assert_eq!(ep["GlobalIPv6Address"], "", "an IPv4-only network: {ep}");
    for own in ["DHCP", "RateLimit", "Labels", "HostIfName"] {
        assert!(ep.get(own).is_some(), "plumb's own field {own}: {ep}");
    }
    let ip = ep["IPAddress"].as_str().unwrap().to_string();
    assert_eq!(
        fetch(&lab, &lab.host, &format!("http://{ip}/")).as_deref(),
        Some(INDEX_HTML),
        "the host reaches web's server at inspect's address"
    );
    for reference in [web_id.clone(), web_id[..12].to_string()] {
        let again = docker.plumb_inspect(&format!("docker:{reference}"));
        assert_eq!(again["Id"], web_id.as_str());
        assert_eq!(again["Name"], "web");
        assert_eq!(
            again["NetworkSettings"]["Networks"]["lan"]["IPAddress"],
            ip.as_str()
        );
    }
    let byid = docker.plumb_inspect("docker:byid");
    assert_eq!(byid["Id"], byid_id.as_str());
    assert_eq!(byid["Name"], "byid");

    // Detach by name: web's interface goes, inside and on the host.
    let web_host_if = ep["HostIfName"].as_str().map(str::to_string);
    docker.plumb_ok(&["detach", "docker:web", "lan"]);
    assert_eq!(
        interfaces_of(docker.container_pid("web")),
        vec![],
        "web has no interface left"
    );
    if let Some(host_if) = web_host_if {
        assert!(
            !links(&lab.host).contains(&host_if),
            "{host_if} left on the host"
        );
    }
    assert!(!lab.ping(&lab.host, &ip), "web no longer answers at {ip}");
    let mut shown = docker.plumb_targets();
    shown.sort();
    assert_eq!(shown, ["docker:byid", "docker:byprefix"]);
    assert!(docker.running("web"), "detach leaves the container running");

    // By ID and by prefix, without naming the network.
    docker.plumb_ok(&["detach", &format!("docker:{byid_id}")]);
    docker.plumb_ok(&["detach", &format!("docker:{prefix}")]);
    for name in ["byid", "byprefix"] {
        assert_eq!(interfaces_of(docker.container_pid(name)), vec![], "{name}");
        assert!(docker.running(name));
    }
    assert_eq!(docker.plumb_targets(), Vec::<String>::new());
    assert_eq!(
        links(&lab.host),
        host_links_before,
        "the host's links as before"
    );

    // Detach is idempotent.
    docker.plumb_ok(&["detach", "docker:web"]);
    docker.plumb_ok(&["detach", "docker:web", "lan"]);
    assert_eq!(docker.plumb_targets(), Vec::<String>::new());
}

/// Every refusal exits with status 1 and changes nothing (the attachment
/// list, the network's record, the host's links, the running container's
/// interfaces): a container that was created but never started and one
/// that has exited ("not running"), an unknown name ("no such container"),
/// an ID prefix two containers share ("ambiguous", or Docker's "multiple
/// IDs"), an unreachable Docker socket (the message names the path),
/// whether given by `--docker-socket` before or after the command or by
/// `DOCKER_HOST`. `--docker-socket` wins over `DOCKER_HOST`; `DOCKER_HOST`
/// alone is used.
#[test]
fn refused_docker_targets_change_nothing() {
    let lab = Lab::new("dte");
    let docker = Dockerd::start(&lab, false);
    nat(&lab, "lan", "10.57.0.0/24");
    docker.run(&["--name", "web", "--net", "none"], SLEEP);
    docker.run(&["--name", "web2", "--net", "none"], SLEEP);
    // One attachment exists, so that "unchanged" compares something.
    docker.plumb_ok(&["attach", "docker:web", "lan"]);
    docker.must(&[
        "create",
        "--name",
        "created",
        "--net",
        "none",
        docker.image(),
        "sleep",
        "1000",
    ]);
    docker.must(&[
        "run",
        "--name",
        "exited",
        "--net",
        "none",
        docker.image(),
        "sh",
        "-c",
        "exit 0",
    ]);
    let twin = ambiguous_prefix(&docker);
    let before = snapshot(&lab, &docker);

    let lower = |s: &str| s.to_lowercase();
    for name in ["created", "exited"] {
        let err = docker.plumb_fails(&["attach", &format!("docker:{name}"), "lan"]);
        assert!(lower(&err).contains("not running"), "{name}: {err}");
        assert_eq!(
            snapshot(&lab, &docker),
            before,
            "refusing {name} changed something"
        );
    }
    let err = docker.plumb_fails(&["attach", "docker:nosuch", "lan"]);
    assert!(lower(&err).contains("no such container"), "{err}");
    assert_eq!(snapshot(&lab, &docker), before);

    let err = docker.plumb_fails(&["attach", &format!("docker:{twin}"), "lan"]);
    assert!(
        lower(&err).contains("ambiguous") || lower(&err).contains("multiple"),
        "prefix {twin}: {err}"
    );
    assert_eq!(snapshot(&lab, &docker), before);

    // Unreachable sockets, given every way.
    let nowhere = lab.state.path().join("no-docker.sock");
    let nowhere = nowhere.to_str().unwrap();
    let err = lab.fails(&["--docker-socket", nowhere, "attach", "docker:web2", "lan"]);
    assert!(err.contains(nowhere), "names the socket: {err}");
    let err = lab.fails(&["attach", "docker:web2", "lan", "--docker-socket", nowhere]);
    assert!(err.contains(nowhere), "option after the command: {err}");
    let good_host = format!("unix://{}", docker.socket_arg());
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().expect("run plumb");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(lab
        .command(&["--docker-socket", nowhere, "attach", "docker:web2", "lan"])
        .env("DOCKER_HOST", &good_host));
    assert_eq!(
        code,
        Some(1),
        "--docker-socket wins over DOCKER_HOST: {err}"
    );
    assert!(err.contains(nowhere), "{err}");
    let elsewhere = lab.state.path().join("elsewhere.sock");
    let elsewhere = elsewhere.to_str().unwrap();
    let (code, err) = run(lab
        .command(&["attach", "docker:web2", "lan"])
        .env("DOCKER_HOST", format!("unix://{elsewhere}")));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(elsewhere), "names DOCKER_HOST's socket: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(snapshot(&lab, &docker), before);
    assert_eq!(interfaces_of(docker.container_pid("web2")), vec![]);

    // DOCKER_HOST alone is enough.
    let (code, err) = run(lab
        .command(&["attach", "docker:web2", "lan"])
        .env("DOCKER_HOST", &good_host));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(only_interface(&docker, "web2").v4.len(), 1);
    let mut shown = docker.plumb_targets();
    shown.sort();
    assert_eq!(shown, ["docker:web", "docker:web2"]);
}

/// A topology file whose attachments name containers (`docker:NAME` and
/// `docker:ID`) comes up (the host reaches the static address inside the
/// container), a second `up` changes nothing, and `down` removes exactly
/// what `up` made: the containers keep running without plumb's interfaces,
/// the network and host links are gone. A file naming a container that
/// does not exist is refused before anything is made.
#[test]
fn topology_files_with_docker_targets_come_up_and_go_down() {
    let lab = Lab::new("dtt");
    let docker = Dockerd::start(&lab, false);
    docker.run(&["--name", "web", "--net", "none"], HTTPD);
    let db_id = docker.run(&["--name", "db", "--net", "none"], SLEEP);
    let host_links_before = links(&lab.host);
    let write = |name: &str, extra: &str| {
        let path = lab.state.path().join(name);
        std::fs::write(
            &path,
            format!(
                "name = \"dtopo\"\n\n[[network]]\nname = \"lan\"\nmode = \"nat\"\nsubnet = [\"10.58.0.0/24\"]\n\n\
                 [[attach]]\ntarget = \"docker:web\"\nnetwork = \"lan\"\nip = [\"10.58.0.10\"]\n\n\
                 [[attach]]\ntarget = \"docker:{db_id}\"\nnetwork = \"lan\"\n{extra}"
            ),
        )
        .expect("write topology");
        path.to_str().unwrap().to_string()
    };

    // A file naming an unknown container: refused, nothing made.
    let bad = write(
        "bad.toml",
        "\n[[attach]]\ntarget = \"docker:nosuch\"\nnetwork = \"lan\"\n",
    );
    let err = docker.plumb_fails(&["up", &bad]);
    assert!(err.to_lowercase().contains("no such container"), "{err}");
    assert_eq!(
        lab.ok(&["network", "ls"]).lines().count(),
        1,
        "no network made"
    );
    assert_eq!(links(&lab.host), host_links_before);
    assert_eq!(interfaces_of(docker.container_pid("web")), vec![]);
    assert_eq!(docker.plumb_targets(), Vec::<String>::new());

    let file = write("good.toml", "");
    docker.plumb_ok(&["up", &file]);
    let web = only_interface(&docker, "web");
    assert_eq!(web.v4, ["10.58.0.10/24"]);
    assert!(lab.ping(&lab.host, "10.58.0.10"));
    assert_eq!(
        fetch(&lab, &lab.host, "http://10.58.0.10/").as_deref(),
        Some(INDEX_HTML)
    );
    let db = only_interface(&docker, "db");
    assert!(lab.ping(&lab.host, db.v4[0].split('/').next().unwrap()));
    let mut shown = docker.plumb_targets();
    shown.sort();
    assert_eq!(shown, ["docker:db", "docker:web"]);

    let second = docker.plumb_ok(&["up", &file]);
    assert_eq!(second.trim(), "up to date: nothing to change");
    assert_eq!(
        only_interface(&docker, "web"),
        web,
        "a second up touches nothing"
    );

    docker.plumb_ok(&["down", &file]);
    for name in ["web", "db"] {
        assert_eq!(interfaces_of(docker.container_pid(name)), vec![], "{name}");
        assert!(docker.running(name), "down leaves {name} running");
    }
    assert_eq!(docker.plumb_targets(), Vec::<String>::new());
    assert_eq!(
        lab.ok(&["network", "ls"]).lines().count(),
        1,
        "network removed"
    );
    assert_eq!(links(&lab.host), host_links_before);
    assert_eq!(
        docker.plumb_ok(&["down", &file]).trim(),
        "nothing to remove"
    );
}

/// A container's namespace attached by path (`/proc/PID/ns/net`), not as a
/// container, while a daemon watches Docker: the attachment is kept through
/// several of the daemon's sweeps and through Docker events about other
/// containers. Each sweep is witnessed, not waited for with a sleep: a
/// canary namespace is attached and deleted, and the daemon removing its
/// attachment proves a sweep of all attachments ran after the path's
/// attach; a declared container coming and going proves Docker events were
/// handled after it.
#[test]
fn a_container_attached_by_path_survives_the_daemon() {
    let lab = Lab::new("dtp");
    let docker = Dockerd::start(&lab, false);
    let daemon = docker.plumb_daemon(&[]);
    nat(&lab, "lan", "10.59.0.0/24");
    docker.run(&["--name", "web", "--net", "none"], SLEEP);
    let pid = docker.container_pid("web");
    let path = format!("/proc/{pid}/ns/net");
    docker.plumb_ok(&["attach", &path, "lan", "--ip", "10.59.0.20"]);
    let attached = only_interface(&docker, "web");
    assert_eq!(attached.v4, ["10.59.0.20/24"]);
    assert!(lab.ping(&lab.host, "10.59.0.20"));

    for round in 0..3 {
        let canary = lab.netns(&format!("canary{round}"));
        docker.plumb_ok(&["attach", &canary, "lan"]);
        must(&format!("ip netns del {canary}"));
        wait_until(
            &format!("the daemon to sweep away canary {round}'s attachment"),
            15,
            || !docker.plumb_ok(&["ls"]).contains(&canary),
        );
        assert_eq!(
            only_interface(&docker, "web"),
            attached,
            "round {round}: the path attachment changed:\n{}",
            daemon.log_text()
        );
    }

    // Docker events about another container, handled after the attach.
    docker.run(
        &[
            "--name",
            "other",
            "--net",
            "none",
            "-l",
            "plumb.networks=lan",
        ],
        SLEEP,
    );
    wait_until("the daemon to attach the declared container", 30, || {
        docker.plumb_targets().iter().any(|t| t == "docker:other")
    });
    docker.must(&["rm", "-f", "other"]);
    wait_until("the daemon to detach the removed container", 30, || {
        !docker.plumb_targets().iter().any(|t| t == "docker:other")
    });

    assert_eq!(
        only_interface(&docker, "web"),
        attached,
        "{}",
        daemon.log_text()
    );
    assert!(lab.ping(&lab.host, "10.59.0.20"));
    let rows = ls_rows(&docker.plumb_ok(&["ls"]));
    assert_eq!(rows.len(), 1, "only the path attachment is left: {rows:?}");
    assert_eq!(rows[0][1], "lan");
    assert_eq!(rows[0][4].to_lowercase(), attached.mac);
    assert!(rows[0][5].contains("10.59.0.20"), "{rows:?}");
}
