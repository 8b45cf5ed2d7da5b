//! plumb as Docker's network driver (`docker network create -d plumb`),
//! against a private dockerd in each lab's fake host. Each test's daemon
//! serves the driver under a name of its own (`--docker-plugin`), since
//! dockerd finds legacy plugins only in /run/docker/plugins/.

mod common;

use common::docker::{Dockerd, INDEX_HTML, fetch, interfaces_of};
use common::{Bg, Lab, wait_for};

/// A long-running command for containers that only need to exist.
const SLEEP: &[&str] = &["sleep", "100000"];
/// A web server serving [`INDEX_HTML`] on port 80.
const HTTPD: &[&str] = &["httpd", "-f", "-p", "80", "-h", "/www"];

/// A dockerd, and plumb's daemon serving it as driver [`Plugin::name`].
struct Plugin<'a> {
    docker: Dockerd<'a>,
    name: String,
    _daemon: Bg,
}

impl<'a> Plugin<'a> {
    fn start(lab: &'a Lab) -> Plugin<'a> {
        let docker = Dockerd::start(lab, false);
        let name = lab.name("drv");
        let daemon = docker.plumb_daemon(&["--docker-plugin", &name]);
        let socket = format!("/run/docker/plugins/{name}.sock");
        common::wait_until("the driver's socket", 10, || {
            std::path::Path::new(&socket).exists()
        });
        Plugin {
            docker,
            name,
            _daemon: daemon,
        }
    }

    /// `docker network create -d NAME ARGS... NETWORK`: its output.
    fn create(&self, network: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["network", "create", "-d", &self.name];
        all.extend_from_slice(args);
        all.push(network);
        self.docker.docker(&all)
    }

    fn create_ok(&self, network: &str, args: &[&str]) {
        let out = self.create(network, args);
        assert!(
            out.status.success(),
            "docker network create {network}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The IPv4 address (without prefix) of the container's interface with
/// an address in `prefix` (`10.61.0.`).
fn address_in(docker: &Dockerd, container: &str, prefix: &str) -> Option<String> {
    interfaces_of(docker.container_pid(container))
        .into_iter()
        .flat_map(|i| i.v4)
        .map(|a| a.split('/').next().unwrap_or_default().to_string())
        .find(|a| a.starts_with(prefix))
}

#[test]
fn a_nat_network_made_by_docker_is_a_plumb_network_its_containers_reach_the_world_and_publish() {
    let lab = Lab::new("dpn");
    let up = lab.upstream("10.60.9");
    let p = Plugin::start(&lab);
    p.create_ok("web", &["--subnet", "10.61.0.0/24", "-o", "mode=nat"]);
    // plumb knows it under Docker's name.
    wait_for("plumb network `web`", 10, || {
        let ls = lab.ok(&["network", "ls"]);
        ls.lines()
            .any(|l| l.split_whitespace().next() == Some("web"))
            .then_some(())
            .ok_or(ls)
    });
    p.docker.run(
        &["--name", "srv", "--network", "web", "-p", "8080:80"],
        HTTPD,
    );
    p.docker.run(
        &["--name", "pinned", "--network", "web", "--ip", "10.61.0.77"],
        SLEEP,
    );
    let srv = address_in(&p.docker, "srv", "10.61.0.").expect("srv has an address on web");
    assert_eq!(
        address_in(&p.docker, "pinned", "10.61.0.").as_deref(),
        Some("10.61.0.77")
    );
    // plumb recorded the address Docker's container has, once the
    // interface was in the container.
    let ls = wait_for("srv's attachment finished", 10, || {
        let ls = lab.ok(&["ls"]);
        eprintln!("{ls}");
        ls.lines()
            .any(|l| {
                l.contains(&srv) && l.contains("/run/docker")
                    || l.contains(&srv) && l.contains("exec/netns")
            })
            .then_some(ls.clone())
            .ok_or(ls)
    });
    assert!(ls.contains("eth0"), "{ls}");
    // Out through NAT to the upstream router, and container to container.
    let pid = p.docker.container_pid("pinned");
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
