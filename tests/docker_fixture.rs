//! Smoke tests of the private-dockerd fixture (tests/common/docker.rs).

mod common;

use common::docker::{BRIDGE_IP, Dockerd, INDEX_HTML};
use common::{Lab, must, wait_until};

/// Run `cmd` in the lab's fake host and return its stdout (must succeed).
fn on_host(lab: &Lab, cmd: &str) -> String {
    must(&format!("ip netns exec {} {cmd}", lab.host))
}

/// Fetch `url` from the fake host; None on failure. (Busybox 1.35's
/// `wget -T` segfaults, hence `timeout`.)
fn fetch(lab: &Lab, url: &str) -> Option<String> {
    let out = lab.exec(&lab.host, &format!("timeout 5 busybox wget -q -O - {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Start a busybox web server publishing port 8090 and check that the fake
/// host reaches it through the userland proxy and through Docker's DNAT.
fn serve_and_fetch(lab: &Lab, docker: &Dockerd) {
    // Busybox as PID 1 ignores SIGTERM: a short stop timeout keeps restarts quick.
    let run = format!(
        "run -d --name web --stop-timeout 1 -p 8090:80 {} httpd -f -p 80 -h /www",
        docker.image()
    );
    docker.must(&run.split_whitespace().collect::<Vec<_>>());
    fetch_both(lab);
}

fn fetch_both(lab: &Lab) {
    for addr in ["127.0.0.1", BRIDGE_IP] {
        let url = format!("http://{addr}:8090/");
        wait_until(&format!("{url} to serve the page"), 15, || {
            fetch(lab, &url).as_deref() == Some(INDEX_HTML)
        });
    }
}

/// Assert that Docker's chains are in `listing` (or not).
fn assert_docker_chains(listing: &str, present: bool, what: &str) {
    for chain in ["DOCKER", "DOCKER-USER"] {
        let found = listing.contains(&format!("-N {chain}\n"))
            || listing.contains(&format!("chain {chain} {{"));
        assert_eq!(found, present, "{chain} in {what}:\n{listing}");
    }
}

#[test]
fn nft_dockerd_publishes_and_restarts() {
    let lab = Lab::new("dkn");
    let mut docker = Dockerd::start(&lab, false);

    assert!(
        on_host(&lab, "iptables -S FORWARD").contains("-P FORWARD DROP"),
        "Docker should set FORWARD's policy to DROP"
    );
    assert_docker_chains(&on_host(&lab, "nft list ruleset"), true, "nft");
    assert_docker_chains(&on_host(&lab, "iptables-legacy -S"), false, "legacy");

    serve_and_fetch(&lab, &docker);
    let pid = docker.container_pid("web");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("container's cmdline");
    assert!(cmdline.starts_with(b"httpd\0"), "PID {pid} is not httpd");

    // dockerd re-creates its rules on start: remove one, restart, see it back.
    on_host(&lab, "iptables -D FORWARD -j DOCKER-USER");
    docker.restart();
    docker.must(&["version"]);
    on_host(&lab, "iptables -S DOCKER-USER");
    assert!(
        on_host(&lab, "iptables -S FORWARD").contains("-A FORWARD -j DOCKER-USER"),
        "dockerd should re-create its FORWARD jump on restart"
    );

    // The stopped container comes back with its published port.
    docker.must(&["start", "web"]);
    fetch_both(&lab);
}

#[test]
fn legacy_dockerd_uses_iptables_legacy() {
    let lab = Lab::new("dkl");
    let docker = Dockerd::start(&lab, true);

    let legacy = on_host(&lab, "iptables-legacy -S");
    assert_docker_chains(&legacy, true, "legacy");
    assert!(legacy.contains("-P FORWARD DROP"), "{legacy}");
    assert_docker_chains(&on_host(&lab, "nft list ruleset"), false, "nft");

    serve_and_fetch(&lab, &docker);
}
