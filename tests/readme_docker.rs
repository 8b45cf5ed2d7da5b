//! README.md's Docker blocks (`<!-- with Docker -->`), run as a user
//! pasting them would, against a private dockerd in a fake host with
//! plumb's daemon serving it, then checked for what the README says they
//! do. The shell's `docker` serves plumb's driver under this run's name,
//! and the images the README names are busybox standing in for them.

mod common;

use std::process::Command;

use common::docker::{Plugin, busybox_rootfs_tar, in_netns_of};
use common::readme::{self, Runner};
use common::{Lab, must, wait_for};

/// The images the blocks run and what each runs (`busybox` is given its
/// command, as Docker Hub's is).
const IMAGES: &[(&str, &str)] = &[
    ("nginx", r#"CMD ["httpd", "-f", "-p", "80", "-h", "/www"]"#),
    ("postgres", r#"CMD ["sleep", "1d"]"#),
    ("busybox", r#"CMD ["sh"]"#),
];

/// The shell's `docker`: the CLI of the lab's dockerd, with `-d plumb`
/// meaning this run's driver.
const DOCKER_FUNCTION: &str = r#"docker() {
    local args=() prev=
    for a in "$@"; do
        if [ "$prev" = -d ] && [ "$a" = plumb ]; then a=$PLUMB_DRIVER; fi
        args+=("$a"); prev=$a
    done
    /usr/bin/docker "${args[@]}"
}
"#;

#[test]
fn the_readmes_docker_blocks_do_what_they_show() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let steps = readme::steps(&text, Runner::Docker);
    assert!(
        steps.iter().flatten().count() >= 14,
        "the Docker blocks: {steps:?}"
    );

    let lab = Lab::new("rdk");
    // The macvlan section's `lan`: eth1 on a LAN whose router is .1.
    let router = lab.netns("router");
    lab.wire(
        &lab.host,
        "eth1",
        None,
        &router,
        "eth0",
        Some("192.168.1.1/24"),
    );
    let plugin = Plugin::start(&lab);
    let docker = &plugin.docker;
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_rootfs_tar(work.path());
    for (image, cmd) in IMAGES {
        docker.must(&["import", "-c", cmd, &tar.display().to_string(), image]);
    }
    lab.ok(&[
        "network",
        "create",
        "lan",
        "--driver",
        "macvlan",
        "--parent",
        "eth1",
        "--subnet",
        "192.168.1.0/24",
        "--gateway",
        "192.168.1.1",
        "--ip-range",
        "192.168.1.128/25",
    ]);
    lab.ok(&["network", "create", "backend", "--subnet", "10.30.0.0/24"]);
    lab.ok(&["network", "create", "tenant1", "--subnet", "10.1.0.0/24"]);

    let mut script = String::from(DOCKER_FUNCTION);
    script.push_str(&readme::script(&steps, ""));
    let path = work.path().join("readme.sh");
    std::fs::write(&path, script).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_plumb"));
    let path_var = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.host, "bash"])
        .arg(&path)
        .env("PATH", path_var)
        .env("PLUMB_DRIVER", &plugin.name)
        .env("PLUMB_HOST_NETNS", &lab.host)
        .env("PLUMB_STATE_DIR", lab.state.path())
        .env("PLUMB_SOCKET", lab.socket())
        .env("DOCKER_HOST", format!("unix://{}", docker.socket_arg()))
        .env("DOCKER_CONFIG", docker.config_dir())
        .output()
        .unwrap();
    readme::check(&steps, &String::from_utf8_lossy(&out.stdout));

    // What the blocks say happened, beyond what they print. The LAN's
    // router reaches web at the address it was given.
    assert!(
        lab.ping(&router, "192.168.1.50"),
        "the LAN reaches docker:web"
    );
    // The daemon carries out what cache and worker declared, a moment
    // after they start.
    wait_for("the declared attachments", 30, || {
        let ls = lab.ok(&["ls"]);
        let has = |target: &str, network: &str, address: &str| {
            ls.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(&target)
                    && cols.get(1) == Some(&network)
                    && l.contains(address)
            })
        };
        (has("docker:cache", "lan", "192.168.1.51/24")
            && has("docker:cache", "backend", "10.30.0.")
            && has("docker:worker", "tenant1", "10.1.0.9/24"))
        .then_some(())
        .ok_or(ls)
    });
    let cache = docker.container_pid("cache");
    let route = in_netns_of(cache, "ip route show default");
    assert!(
        String::from_utf8_lossy(&route.stdout).contains("via 192.168.1.1"),
        "plumb.lan.default-route=replace: {route:?}"
    );
    assert!(lab.ping(&router, "192.168.1.51"), "the LAN reaches cache");
    // The last block removed its containers and networks from both.
    let networks = lab.ok(&["network", "ls"]);
    assert!(
        !networks.contains("shop") && !networks.contains("data"),
        "{networks}"
    );
    assert!(
        !must(&format!("ip -n {} link", lab.host)).contains("shop"),
        "the shop network's bridge is gone"
    );
}
