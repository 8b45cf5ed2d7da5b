//! plumb's Docker driver with each kind of plumb network: macvlan on the
//! LAN with the host's shim, a bridge bridged to the LAN, a routed bridge
//! reached from upstream without NAT, and Docker's embedded DNS (names and
//! `--network-alias`) on a plumb network.

mod common;

use common::docker::{Dockerd, Plugin, in_netns_of, interfaces_of};
use common::{Lab, wait_until};

const SLEEP: &[&str] = &["sleep", "100000"];

fn ping_from_pid(pid: u32, ip: &str) -> bool {
    in_netns_of(pid, &format!("ping -c1 -W2 {ip}"))
        .status
        .success()
}

#[test]
fn a_macvlan_network_puts_containers_on_the_lan_and_the_shim_lets_the_host_reach_them() {
    let lab = Lab::new("dpv");
    let peer = lab.lan("peer", "192.168.74.10/24");
    let p = Plugin::start(&lab);
    let docker = &p.docker;
    p.create_ok(
        "mv",
        &[
            "--subnet",
            "192.168.74.0/24",
            "--gateway",
            "192.168.74.1",
            "-o",
            "parent=lan0",
            "-o",
            "host-shim=192.168.74.250",
        ],
    );
    let net = lab.ok(&["network", "inspect", "mv"]);
    assert!(net.contains("macvlan"), "{net}");
    docker.run(
        &["--name", "onmv", "--network", "mv", "--ip", "192.168.74.20"],
        SLEEP,
    );
    let pid = docker.container_pid("onmv");
    let ifs = interfaces_of(pid);
    let eth0 = ifs.iter().find(|i| i.name == "eth0").expect("eth0");
    assert!(
        eth0.v4.iter().any(|a| a.starts_with("192.168.74.20/")),
        "{ifs:?}"
    );
    assert!(
        lab.ping(&peer, "192.168.74.20"),
        "the LAN reaches the container"
    );
    assert!(
        ping_from_pid(pid, "192.168.74.10"),
        "the container reaches the LAN"
    );
    assert!(
        lab.ping(&lab.host, "192.168.74.20"),
        "the host reaches its macvlan container through the shim"
    );
    docker.must(&["rm", "-f", "onmv"]);
    docker.must(&["network", "rm", "mv"]);
    assert!(
        !common::links(&lab.host)
            .iter()
            .any(|l| l.starts_with("ps-")),
        "the shim goes with the network: {:?}",
        common::links(&lab.host)
    );
}

#[test]
fn a_bridged_network_puts_containers_on_the_lan_and_a_routed_one_is_reached_without_nat() {
    let lab = Lab::new("dpb");
    let peer = lab.lan("peer", "192.168.75.10/24");
    let up = lab.upstream("10.69.9");
    common::must(&format!("ip -n {up} route add 10.69.0.0/24 via 10.69.9.2"));
    let p = Plugin::start(&lab);
    let docker = &p.docker;
    p.create_ok(
        "onlan",
        &[
            "--subnet",
            "192.168.75.0/24",
            "--gateway",
            "192.168.75.1",
            "-o",
            "mode=bridged",
            "-o",
            "uplink=lan0",
        ],
    );
    p.create_ok("routed", &["--subnet", "10.69.0.0/24", "-o", "mode=routed"]);
    docker.run(
        &[
            "--name",
            "bridged1",
            "--network",
            "onlan",
            "--ip",
            "192.168.75.21",
        ],
        SLEEP,
    );
    docker.run(
        &[
            "--name",
            "routed1",
            "--network",
            "routed",
            "--ip",
            "10.69.0.21",
        ],
        SLEEP,
    );
    assert!(
        lab.ping(&peer, "192.168.75.21"),
        "the LAN reaches the bridged container"
    );
    assert!(
        lab.ping(&up, "10.69.0.21"),
        "upstream reaches the routed container"
    );
    // No NAT: upstream sees the container's own address.
    let (server, port) = common::peer_echo_server(&up, "10.69.9.1:0");
    let said = in_netns_of(
        docker.container_pid("routed1"),
        &format!("timeout 5 busybox nc 10.69.9.1 {port} </dev/null"),
    );
    let seen = server
        .join()
        .expect("echo server")
        .map(|a| a.ip().to_string());
    assert_eq!(seen.as_deref(), Some("10.69.0.21"), "{said:?}");
}

#[test]
fn dockers_embedded_dns_finds_containers_and_aliases_on_a_plumb_network() {
    let lab = Lab::new("dpd");
    let p = Plugin::start(&lab);
    let docker = &p.docker;
    p.create_ok("app", &["--subnet", "10.71.0.0/24", "-o", "mode=nat"]);
    docker.run(
        &[
            "--name",
            "db",
            "--network",
            "app",
            "--network-alias",
            "database",
            "--ip",
            "10.71.0.50",
        ],
        SLEEP,
    );
    docker.run(&["--name", "web", "--network", "app"], SLEEP);
    for name in ["db", "database"] {
        let looked = docker.docker(&["exec", "web", "busybox", "nslookup", name]);
        let text = String::from_utf8_lossy(&looked.stdout);
        assert!(
            text.contains("10.71.0.50"),
            "{name}: {text}{}",
            String::from_utf8_lossy(&looked.stderr)
        );
    }
    assert!(
        docker
            .docker(&["exec", "web", "ping", "-c1", "-W2", "database"])
            .status
            .success(),
        "web reaches db by its alias"
    );
}

/// The address container `name` leased, once it holds it: the server has
/// a lease under its name and the container has that address.
fn leased(lab: &Lab, docker: &Dockerd, name: &str) -> String {
    common::wait_for(&format!("{name}'s lease"), 30, || {
        let table = lab.dnsmasq_leases();
        let ip = table
            .iter()
            .find(|l| l.host == name)
            .map(|l| l.ip.clone())
            .ok_or_else(|| format!("no lease for {name}: {table:?}"))?;
        let pid = docker.pid_if_running(name).ok_or("not running")?;
        let has = interfaces_of(pid)
            .iter()
            .any(|i| i.v4.contains(&format!("{ip}/24")));
        has.then_some(ip.clone())
            .ok_or_else(|| format!("{name} has not put {ip} on"))
    })
}

#[test]
fn a_dhcp_network_leases_from_the_lan_as_the_container_and_gets_the_same_lease_after_a_restart() {
    let lab = Lab::new("dph");
    let server = lab.lan("dhcpsrv", "192.168.76.1/24");
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--dhcp-range=192.168.76.100,192.168.76.199,2m --dhcp-authoritative",
    );
    let p = Plugin::start(&lab);
    let docker = &p.docker;
    // Docker's default IPAM would choose addresses: refused, by name.
    let out = p.create(
        "wrong",
        &["-o", "ipam=dhcp", "-o", "mode=bridged", "-o", "uplink=lan0"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ipam-driver null"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.create_ok(
        "dh",
        &[
            "--ipam-driver",
            "null",
            "-o",
            "ipam=dhcp",
            "-o",
            "mode=bridged",
            "-o",
            "uplink=lan0",
        ],
    );
    docker.run(&["--name", "leaser", "--network", "dh"], SLEEP);
    let first = leased(&lab, docker, "leaser");
    let pid = docker.container_pid("leaser");
    assert!(
        ping_from_pid(pid, "192.168.76.1"),
        "the container reaches the LAN"
    );
    assert!(lab.ping(&server, &first), "the LAN reaches the container");
    // The container's identity, not the endpoint's: the same lease.
    docker.must(&["restart", "-t", "1", "leaser"]);
    wait_until("leaser to run again", 20, || {
        docker.pid_if_running("leaser").is_some_and(|p| p != pid)
    });
    assert_eq!(leased(&lab, docker, "leaser"), first);
    docker.must(&["rm", "-f", "leaser"]);
    wait_until("its attachment gone", 10, || {
        lab.ok(&["ls"]).lines().count() == 1
    });
    docker.must(&["network", "rm", "dh"]);
}

/// The address Docker gave container `name` on network `network`.
fn docker_address(docker: &Dockerd, name: &str, network: &str) -> String {
    let format = format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}");
    docker
        .must(&["inspect", "-f", &format, name])
        .trim()
        .to_string()
}

#[test]
fn plumbs_ipam_in_dhcp_mode_tells_docker_the_lan_lease_and_releases_it() {
    let lab = Lab::new("dpi");
    let server = lab.lan("dhcpsrv", "192.168.78.1/24");
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--dhcp-range=192.168.78.100,192.168.78.199,2m --dhcp-authoritative",
    );
    let p = Plugin::start(&lab);
    let docker = &p.docker;
    let lan = [
        "--ipam-driver",
        &p.name,
        "--ipam-opt",
        "mode=dhcp",
        "--subnet",
        "192.168.78.0/24",
        "-o",
        "mode=bridged",
        "-o",
        "uplink=lan0",
    ];
    // The LAN's router is Docker's to know too: refused without it.
    let out = p.create("norouter", &lan);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--gateway") && err.contains("--ipam-opt mode=dhcp"),
        "{err}"
    );
    p.create_ok("lan", &[&lan[..], &["--gateway", "192.168.78.1"]].concat());
    docker.run(&["--name", "web", "--network", "lan"], SLEEP);
    let pinned = "02:42:c0:a8:4e:07";
    docker.run(
        &[
            "--name",
            "client",
            "--network",
            "lan",
            "--mac-address",
            pinned,
        ],
        SLEEP,
    );
    // Docker knows the address the LAN's server leased, for Docker's MAC.
    let web = docker_address(docker, "web", "lan");
    let mac = docker
        .must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.lan.MacAddress}}",
            "web",
        ])
        .trim()
        .to_string();
    assert!(
        lab.dnsmasq_leases()
            .iter()
            .any(|l| l.mac == mac && l.ip == web),
        "{mac} {web}: {:?}",
        lab.dnsmasq_leases()
    );
    let pid = docker.container_pid("web");
    assert!(
        interfaces_of(pid)
            .iter()
            .any(|i| i.v4.contains(&format!("{web}/24")) && i.mac == mac),
        "web holds {web} with {mac}: {:?}",
        interfaces_of(pid)
    );
    assert!(lab.ping(&server, &web), "the LAN reaches web");
    assert!(ping_from_pid(pid, "192.168.78.1"), "web reaches the LAN");
    // So Docker's embedded DNS knows it.
    let looked = docker.docker(&["exec", "client", "busybox", "nslookup", "web"]);
    assert!(
        String::from_utf8_lossy(&looked.stdout).contains(&web),
        "{}",
        String::from_utf8_lossy(&looked.stdout)
    );
    assert!(
        docker
            .docker(&["exec", "client", "ping", "-c1", "-W2", "web"])
            .status
            .success(),
        "client reaches web by name"
    );
    // The daemon renews it from inside the container, as Docker's MAC.
    let leased = docker.plumb_inspect("docker:web");
    assert_eq!(
        leased["NetworkSettings"]["Networks"]["lan"]["IPAddress"], web,
        "{leased}"
    );
    // An address of one's choosing is the server's to reserve.
    let out = docker.docker(&[
        "run",
        "-d",
        "--name",
        "chooser",
        "--network",
        "lan",
        "--ip",
        "192.168.78.150",
        docker.image(),
        "sleep",
        "100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--mac-address"),
        "{err}"
    );
    // A pinned MAC is the same client after a restart: the same address.
    let before = docker_address(docker, "client", "lan");
    let client_pid = docker.container_pid("client");
    docker.must(&["restart", "-t", "1", "client"]);
    wait_until("client to run again", 20, || {
        docker
            .pid_if_running("client")
            .is_some_and(|p| p != client_pid)
    });
    assert_eq!(docker_address(docker, "client", "lan"), before);
    // Docker gives the address back: the LAN's server hears it.
    docker.must(&["rm", "-f", "web"]);
    wait_until("web's lease released", 10, || {
        !lab.dnsmasq_leases().iter().any(|l| l.ip == web)
    });
    docker.must(&["rm", "-f", "client"]);
    wait_until("the attachments gone", 10, || {
        lab.ok(&["ls"]).lines().count() == 1
    });
    docker.must(&["network", "rm", "lan"]);
}

/// How many leases (first ones and renewals) kea has granted.
fn kea_grants(kea: &common::Bg) -> usize {
    kea.log_text().matches("DHCP4_LEASE_ALLOC").count()
}

#[test]
fn dhcp_endpoints_are_renewed_from_their_container_also_after_plumbs_daemon_restarts() {
    let lab = Lab::new("dpk");
    let server = lab.lan("dhcpsrv", "192.168.70.1/24");
    // Leases of 8 s: renewed every 2 s.
    let kea = lab.kea(&server, 8, "192.168.70.100 - 192.168.70.199");
    let mut p = Plugin::start(&lab);
    let bridged = ["-o", "mode=bridged", "-o", "uplink=lan0"];
    let driver = p.name.clone();
    let plumbs = [
        "--ipam-driver",
        &driver,
        "--ipam-opt",
        "mode=dhcp",
        "--subnet",
        "192.168.70.0/24",
        "--gateway",
        "192.168.70.1",
    ];
    let null = ["--ipam-driver", "null", "-o", "ipam=dhcp"];
    for (ipam, dockers_view) in [(&plumbs[..], true), (&null[..], false)] {
        p.create_ok("leased", &[ipam, &bridged[..]].concat());
        p.docker
            .run(&["--name", "renewed", "--network", "leased"], SLEEP);
        let pid = p.docker.container_pid("renewed");
        let ip = common::wait_for("the lease on eth0", 20, || {
            interfaces_of(pid)
                .into_iter()
                .find(|i| i.name == "eth0")
                .and_then(|i| i.v4.first().cloned())
                .ok_or_else(|| "no address yet".to_string())
        });
        let ip = ip.trim_end_matches("/24").to_string();
        if dockers_view {
            assert_eq!(docker_address(&p.docker, "renewed", "leased"), ip);
        }
        // What the lease says besides the address: its MTU and routes.
        let link = in_netns_of(pid, "ip link show eth0");
        assert!(
            String::from_utf8_lossy(&link.stdout).contains("mtu 1400"),
            "{}",
            String::from_utf8_lossy(&link.stdout)
        );
        common::wait_for("the lease's routes", 10, || {
            let routes = String::from_utf8_lossy(&in_netns_of(pid, "ip route").stdout).to_string();
            (routes.contains("10.99.0.0/16 via 192.168.70.254")
                && routes.contains("default via 192.168.70.1"))
            .then_some(())
            .ok_or(routes)
        });
        let granted = kea_grants(&kea);
        wait_until("two renewals", 10, || kea_grants(&kea) >= granted + 2);
        p.restart_daemon();
        let granted = kea_grants(&kea);
        wait_until("two renewals by the new daemon", 10, || {
            kea_grants(&kea) >= granted + 2
        });
        assert!(
            interfaces_of(pid)
                .iter()
                .any(|i| i.v4.contains(&format!("{ip}/24"))),
            "the container keeps {ip}"
        );
        p.docker.must(&["rm", "-f", "renewed"]);
        wait_until("its attachment gone", 10, || {
            lab.ok(&["ls"]).lines().count() == 1
        });
        p.docker.must(&["network", "rm", "leased"]);
        wait_until("the network gone", 10, || {
            !lab.ok(&["network", "ls"]).contains("leased")
        });
    }
}

#[test]
fn a_dhcp_network_without_a_server_fails_docker_run_and_leaves_nothing() {
    let lab = Lab::new("dpx");
    lab.lan("quiet", "192.168.77.10/24");
    let p = Plugin::start_with(&lab, &["--dhcp-timeout", "2"]);
    p.create_ok(
        "nodhcp",
        &[
            "--ipam-driver",
            "null",
            "-o",
            "ipam=dhcp",
            "-o",
            "mode=bridged",
            "-o",
            "uplink=lan0",
        ],
    );
    let links_before = lab.host_links();
    let out = p.docker.docker(&[
        "run",
        "-d",
        "--name",
        "orphan",
        "--network",
        "nodhcp",
        p.docker.image(),
        "sleep",
        "100",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "docker run must fail");
    assert!(err.contains("no DHCP server answered"), "{err}");
    assert!(err.contains("nodhcp"), "the network is named: {err}");
    assert!(!p.docker.running("orphan"));
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "no attachment left");
    assert_eq!(
        lab.host_links(),
        links_before,
        "no interface left on the host"
    );
}

#[test]
fn a_host_device_network_hands_the_nic_to_the_container_and_docker_gives_it_back() {
    let lab = Lab::new("dpd");
    let lan = lab.nic_on_lan();
    let p = Plugin::start(&lab);
    p.create_ok(
        "nic",
        &[
            "--subnet",
            "10.70.0.0/24",
            "--gateway",
            "10.70.0.1",
            "-o",
            "driver=host-device",
            "-o",
            "device=nic1",
        ],
    );
    p.docker.run(
        &["--name", "owner", "--network", "nic", "--ip", "10.70.0.50"],
        SLEEP,
    );
    assert!(
        !common::links(&lab.host).iter().any(|l| l == "nic1"),
        "nic1 left the host"
    );
    let pid = p.docker.container_pid("owner");
    let ifs = interfaces_of(pid);
    assert!(
        ifs.iter()
            .any(|i| i.v4.contains(&"10.70.0.50/24".to_string())),
        "{ifs:?}"
    );
    assert!(
        lab.ping(&lan, "10.70.0.50"),
        "the LAN reaches the container on the NIC"
    );
    // A second container cannot have it too.
    let out = p.docker.docker(&[
        "run",
        "-d",
        "--name",
        "second",
        "--network",
        "nic",
        p.docker.image(),
        "sleep",
        "100",
    ]);
    assert!(!out.status.success(), "one device, one container");
    // Back on the host, under its name, with its own address.
    p.docker.must(&["rm", "-f", "owner", "second"]);
    wait_until("nic1 back on the host", 10, || {
        common::links(&lab.host).iter().any(|l| l == "nic1")
    });
    wait_until("nic1's own address back", 10, || {
        lab.ping(&lan, "10.70.0.2")
    });
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "no attachment left");
}
