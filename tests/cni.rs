//! plumb as a CNI plugin, driven as a runtime drives one: the binary run
//! in the (fake) host's namespace with `CNI_*` set and the configuration on
//! stdin, against namespaces the test made, every spec version, and
//! chained with the reference plugins (`/usr/lib/cni`).

mod common;

use std::process::Command;

use common::cni::{Answer, Call, REFERENCE};
use common::{Lab, wait_until};
use serde_json::{Value, json};

const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Run plugin `binary` as a runtime does, in the lab's host namespace:
/// `command` for container `id` (namespace `netns`, interface `ifname`).
fn exec_plugin(
    lab: &Lab,
    binary: &str,
    command: &str,
    id: &str,
    netns: Option<&str>,
    ifname: &str,
    conf: &Value,
) -> Answer {
    Call {
        ifname,
        ..Call::new(binary, command, id, netns)
    }
    .run(lab, conf)
}

/// The conflist README.md gives for a kubelet.
fn kubelet_conflist() -> Value {
    let readme = include_str!("../README.md");
    let start = readme
        .find("`/etc/cni/net.d/10-plumb.conflist`:\n```\n")
        .expect("the kubelet's conflist in README.md");
    let body = &readme[start..];
    let body = &body[body.find("```\n").unwrap() + 4..];
    serde_json::from_str(&body[..body.find("```").unwrap()]).expect("README's conflist is JSON")
}

fn cni(lab: &Lab, command: &str, id: &str, netns: Option<&str>, conf: &Value) -> Answer {
    Call::plumb(command, id, netns).run(lab, conf)
}

/// The plumb network `web`: NAT on `subnet`.
fn web(lab: &Lab, subnet: &str) {
    lab.ok(&[
        "network", "create", "web", "--mode", "nat", "--subnet", subnet,
    ]);
}

fn conf(version: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": "plumbnet", "type": "plumb"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// ADD of every namespace at once, as container `{id}N`, each by a
/// plugin process of its own.
fn add_all_at_once(lab: &Lab, c: &Value, namespaces: &[String], id: &str) -> Vec<Answer> {
    std::thread::scope(|s| {
        let runs: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                s.spawn(move || cni(lab, "ADD", &format!("{id}{i}"), Some(&path(ns)), c))
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_runtime_adds_checks_and_deletes_a_container_on_a_plumb_network() {
    let lab = Lab::new("cni");
    let up = lab.upstream("10.90.9");
    web(&lab, "10.90.0.0/24");
    let c1 = lab.netns("c1");
    let conf = conf("1.1.0", json!({"network": "web"}));
    let added = cni(&lab, "ADD", "c0ffee01", Some(&path(&c1)), &conf);
    assert!(added.ok, "{}", added.json);
    let r = &added.json;
    assert_eq!(r["cniVersion"], "1.1.0");
    // The host end of the veth, then the container's, in its namespace.
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(r["interfaces"][1]["sandbox"], path(&c1));
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["ips"][0]["gateway"], "10.90.0.1");
    let address = r["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        address.starts_with("10.90.0.") && address.ends_with("/24"),
        "{r}"
    );
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.90.0.1"})
    );
    // It is a plumb attachment, shown by the runtime's container ID, and
    // the container reaches the world through the network's NAT.
    assert!(
        lab.ok(&["ls"]).contains("cni:c0ffee01"),
        "{}",
        lab.ok(&["ls"])
    );
    assert!(lab.ping(&c1, "10.90.9.1"), "the container reaches upstream");
    let _ = up;
    // CHECK: all there; then each difference said.
    assert!(cni(&lab, "CHECK", "c0ffee01", Some(&path(&c1)), &conf).ok);
    common::must(&format!("ip -n {c1} addr flush dev eth0"));
    let checked = cni(&lab, "CHECK", "c0ffee01", Some(&path(&c1)), &conf);
    assert!(!checked.ok);
    let msg = checked.json["msg"].as_str().unwrap();
    assert!(msg.contains(&format!("eth0 lacks {address}")), "{msg}");
    assert!(msg.contains("no default route via 10.90.0.1"), "{msg}");
    // DEL: all gone; again, and with the namespace gone, still success.
    let host_links = lab.host_links();
    assert!(cni(&lab, "DEL", "c0ffee01", Some(&path(&c1)), &conf).ok);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
    assert!(lab.host_links().len() < host_links.len(), "the veth went");
    assert!(cni(&lab, "DEL", "c0ffee01", Some(&path(&c1)), &conf).ok);
    common::must(&format!("ip netns del {c1}"));
    assert!(cni(&lab, "DEL", "c0ffee01", None, &conf).ok);
}

#[test]
fn every_spec_version_gets_its_own_shapes_and_errors() {
    let lab = Lab::new("cnv");
    web(&lab, "10.91.0.0/24");
    for (i, version) in VERSIONS.iter().enumerate() {
        let v = cni(&lab, "VERSION", "", None, &json!({"cniVersion": version}));
        assert!(v.ok);
        assert_eq!(v.json["cniVersion"], *version);
        assert_eq!(v.json["supportedVersions"], json!(VERSIONS));
        let ns = lab.netns(&format!("v{i}"));
        let id = format!("ver{i}");
        let c = conf(version, json!({"network": "web"}));
        let added = cni(&lab, "ADD", &id, Some(&path(&ns)), &c);
        assert!(added.ok, "{version}: {}", added.json);
        assert_eq!(added.json["cniVersion"], *version);
        let ip = &added.json["ips"][0];
        match version.starts_with("1.") {
            true => assert!(ip.get("version").is_none(), "{version}: {ip}"),
            false => assert_eq!(ip["version"], "4", "{version}"),
        }
        // CHECK came with 0.4.0; plumb answers it whatever the version.
        assert!(cni(&lab, "CHECK", &id, Some(&path(&ns)), &c).ok);
        assert!(cni(&lab, "DEL", &id, Some(&path(&ns)), &c).ok);
    }
    // Errors: the spec's JSON on stdout, a non-zero exit, the code, and
    // the message names what was wrong.
    let ns = path(&lab.netns("e"));
    let cases = [
        ("0.2.0", json!({"network": "web"}), Some(&ns), 1, "`0.2.0`"),
        ("1.0.0", json!({"network": "nope"}), Some(&ns), 7, "`nope`"),
        (
            "1.0.0",
            json!({"netwrok": "web"}),
            Some(&ns),
            2,
            "`netwrok`",
        ),
        ("1.0.0", json!({"network": "web"}), None, 4, "CNI_NETNS"),
    ];
    for (version, extra, netns, code, named) in cases {
        let e = cni(
            &lab,
            "ADD",
            "e1",
            netns.map(String::as_str),
            &conf(version, extra),
        );
        assert!(!e.ok, "{}", e.json);
        assert_eq!(e.json["code"], code, "{}", e.json);
        assert!(
            e.json["msg"].as_str().unwrap().contains(named),
            "{}",
            e.json
        );
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "no error left anything");
}

#[test]
fn a_network_described_in_the_configuration_is_made_once_and_shared() {
    let lab = Lab::new("cnd");
    let described = conf(
        "1.0.0",
        json!({"network": "shared", "mode": "nat", "subnet": "10.92.0.0/24", "tenant": "acme"}),
    );
    let (a, b) = (lab.netns("a"), lab.netns("b"));
    assert!(cni(&lab, "ADD", "ctr-a", Some(&path(&a)), &described).ok);
    // Another runtime's configuration, the same definition: the same network.
    assert!(cni(&lab, "ADD", "ctr-b", Some(&path(&b)), &described).ok);
    let nets = lab.ok(&["network", "ls"]);
    let named = nets.lines().filter(|l| l.starts_with("shared ")).count();
    assert_eq!(named, 1, "{nets}");
    let ip_b = lab.ip_of(&path(&b), "shared");
    assert!(lab.ping(&a, &ip_b), "a and b share the network");
    // One that describes it otherwise is refused by name, and changes nothing.
    let other = conf(
        "1.0.0",
        json!({"network": "shared", "mode": "nat", "subnet": "10.93.0.0/24"}),
    );
    let c = lab.netns("c");
    let refused = cni(&lab, "ADD", "ctr-c", Some(&path(&c)), &other);
    assert_eq!(refused.json["code"], 7, "{}", refused.json);
    assert!(
        refused.json["msg"]
            .as_str()
            .unwrap()
            .contains("another definition")
    );
    // STATUS: ready for this network, not for one that does not exist.
    assert!(cni(&lab, "STATUS", "", None, &described).ok);
    let missing = cni(
        &lab,
        "STATUS",
        "",
        None,
        &conf("1.1.0", json!({"network": "gone"})),
    );
    assert_eq!(missing.json["code"], 50, "{}", missing.json);
    // GC: what the runtime no longer knows goes, the rest stays.
    let gc = conf(
        "1.1.0",
        json!({"network": "shared", "cni.dev/valid-attachments": [{"containerID": "ctr-a", "ifname": "eth0"}]}),
    );
    assert!(cni(&lab, "GC", "", None, &gc).ok);
    let ls = lab.ok(&["ls"]);
    assert!(
        ls.contains("cni:ctr-a") && !ls.contains("cni:ctr-b"),
        "{ls}"
    );
}

#[test]
fn runtime_config_publishes_pins_and_limits() {
    let lab = Lab::new("cnr");
    let up = lab.upstream("10.94.9");
    web(&lab, "10.94.0.0/24");
    let _daemon = lab.daemon(&[]);
    let c1 = lab.netns("c1");
    let c = conf(
        "1.0.0",
        json!({"network": "web", "runtimeConfig": {
            "portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}],
            "ips": ["10.94.0.77/24"],
            "mac": "02:94:00:00:00:77",
            "bandwidth": {"ingressRate": 8000000, "ingressBurst": 800000, "egressRate": 4000000, "egressBurst": 400000}
        }}),
    );
    let added = cni(&lab, "ADD", "rc1", Some(&path(&c1)), &c);
    assert!(added.ok, "{}", added.json);
    assert_eq!(added.json["ips"][0]["address"], "10.94.0.77/24");
    assert_eq!(added.json["interfaces"][1]["mac"], "02:94:00:00:00:77");
    // The published port answers from upstream, through plumb's own DNAT.
    let _server = lab.spawn_in(&c1, "busybox nc -l -p 80 -e echo published", "nc.log");
    wait_until("the published port to answer", 10, || {
        lab.exec(&up, "busybox nc -w 1 10.94.9.2 8081")
            .stdout
            .starts_with(b"published")
    });
    // Both rates: what the container sends is shaped in it.
    let tc = String::from_utf8_lossy(&lab.exec(&c1, "tc qdisc show dev eth0").stdout).to_string();
    assert!(tc.contains("tbf") && tc.contains("4Mbit"), "{tc}");
    assert!(cni(&lab, "DEL", "rc1", Some(&path(&c1)), &c).ok);
}

/// The chain a runtime runs for `plugins`: each ADD given the previous
/// result, DEL in reverse with the final one. The final result.
fn chain_add(lab: &Lab, list: &[(&str, Value)], id: &str, netns: &str) -> Value {
    let mut prev: Option<Value> = None;
    for (binary, conf) in list {
        let mut c = conf.clone();
        if let Some(p) = &prev {
            c["prevResult"] = p.clone();
        }
        let a = exec_plugin(lab, binary, "ADD", id, Some(netns), "eth0", &c);
        assert!(a.ok, "{binary} ADD: {}", a.json);
        prev = Some(a.json);
    }
    prev.unwrap()
}

#[test]
fn chained_with_the_reference_portmap_bandwidth_firewall_and_tuning_plugins() {
    let lab = Lab::new("cnc");
    let up = lab.upstream("10.95.9");
    web(&lab, "10.95.0.0/24");
    let c1 = lab.netns("c1");
    let plumb = env!("CARGO_BIN_EXE_plumb");
    let portmap = format!("{REFERENCE}/portmap");
    let bandwidth = format!("{REFERENCE}/bandwidth");
    let firewall = format!("{REFERENCE}/firewall");
    let tuning = format!("{REFERENCE}/tuning");
    let base = json!({"cniVersion": "1.0.0", "name": "chain"});
    let with = |extra: Value| {
        let mut c = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let list = [
        (plumb, with(json!({"type": "plumb", "network": "web"}))),
        (
            portmap.as_str(),
            with(
                json!({"type": "portmap", "runtimeConfig": {"portMappings": [
                {"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]}}),
            ),
        ),
        (
            bandwidth.as_str(),
            with(json!({"type": "bandwidth", "ingressRate": 8000000, "ingressBurst": 800000})),
        ),
        (
            firewall.as_str(),
            with(json!({"type": "firewall", "backend": "iptables"})),
        ),
        (
            tuning.as_str(),
            with(json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}})),
        ),
    ];
    let result = chain_add(&lab, &list, "chain1", &path(&c1));
    // plumb's result went through both: the same interfaces and address.
    assert_eq!(result["interfaces"][1]["name"], "eth0", "{result}");
    let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.95.0."), "{result}");
    // bandwidth found plumb's host end of the veth and shaped it.
    let host_end = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let tc = String::from_utf8_lossy(
        &lab.exec(&lab.host, &format!("tc qdisc show dev {host_end}"))
            .stdout,
    )
    .to_string();
    assert!(tc.contains("tbf"), "{tc}");
    // firewall let the container's address through; tuning set its sysctl.
    let rules =
        String::from_utf8_lossy(&lab.exec(&lab.host, "iptables -S CNI-FORWARD").stdout).to_string();
    let bare = ip.split('/').next().unwrap();
    assert!(
        rules.contains(&format!("-s {bare}/32 -j ACCEPT")),
        "{rules}"
    );
    let sysctl = lab.exec(&c1, "cat /proc/sys/net/ipv4/conf/eth0/arp_notify");
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "1");
    // portmap's DNAT reaches the container plumb attached.
    let _server = lab.spawn_in(&c1, "busybox nc -l -p 80 -e echo chained", "nc.log");
    wait_until("portmap's port to answer", 10, || {
        lab.exec(&up, "busybox nc -w 1 10.95.9.2 8082")
            .stdout
            .starts_with(b"chained")
    });
    // DEL in reverse, each with the final result; plumb leaves nothing.
    for (binary, conf) in list.iter().rev() {
        let mut c = conf.clone();
        c["prevResult"] = result.clone();
        let d = exec_plugin(&lab, binary, "DEL", "chain1", Some(&path(&c1)), "eth0", &c);
        assert!(d.ok, "{binary} DEL: {}", d.json);
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
}

/// The failpoints an ADD passes (a debug build's trace).
fn add_points(lab: &Lab, id: &str, netns: &str, conf: &Value) -> usize {
    let trace = lab.state.path().join(format!("trace-{id}"));
    let a = exec_with(
        lab,
        "ADD",
        id,
        netns,
        conf,
        &[("PLUMB_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    assert!(a.ok, "{}", a.json);
    assert!(cni(lab, "DEL", id, Some(netns), conf).ok);
    std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .count()
}

fn exec_with(
    lab: &Lab,
    command: &str,
    id: &str,
    netns: &str,
    conf: &Value,
    env: &[(&str, &str)],
) -> Answer {
    Call {
        env,
        ..Call::plumb(command, id, Some(netns))
    }
    .run(lab, conf)
}

#[test]
fn an_add_killed_at_any_point_is_undone_by_the_next_add_of_that_namespace() {
    let lab = Lab::new("cnk");
    web(&lab, "10.96.0.0/24");
    let c = conf("1.0.0", json!({"network": "web"}));
    let ns = lab.netns("c");
    let links = lab.host_links();
    let points = add_points(&lab, "probe", &path(&ns), &c);
    assert!(points > 3, "an ADD passes failpoints ({points})");
    for k in 1..=points {
        let killed = exec_with(
            &lab,
            "ADD",
            "k1",
            &path(&ns),
            &c,
            &[("PLUMB_FAILPOINT", &k.to_string())],
        );
        assert!(!killed.ok, "failpoint {k} did not stop the ADD");
        // A runtime DELs after a failed ADD, then tries again; plumb does
        // not count on the DEL.
        if k % 2 == 1 {
            assert!(
                cni(&lab, "DEL", "k1", Some(&path(&ns)), &c).ok,
                "DEL after a kill at {k}"
            );
        }
        let again = cni(&lab, "ADD", "k1", Some(&path(&ns)), &c);
        assert!(again.ok, "ADD after a kill at {k}: {}", again.json);
        assert!(cni(&lab, "DEL", "k1", Some(&path(&ns)), &c).ok);
        assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "after a kill at {k}");
        assert_eq!(lab.host_links(), links, "after a kill at {k}");
    }
}

#[test]
fn many_containers_added_and_deleted_at_once() {
    let lab = Lab::new("cnp");
    web(&lab, "10.97.0.0/24");
    let c = conf("1.0.0", json!({"network": "web"}));
    let namespaces: Vec<String> = (0..16).map(|i| lab.netns(&format!("p{i}"))).collect();
    let added = add_all_at_once(&lab, &c, &namespaces, "par");
    let mut addresses: Vec<String> = added
        .iter()
        .map(|a| {
            assert!(a.ok, "{}", a.json);
            a.json["ips"][0]["address"].as_str().unwrap().to_string()
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 16, "each its own address");
    assert_eq!(lab.ok(&["ls"]).lines().count(), 17);
    std::thread::scope(|s| {
        for (i, ns) in namespaces.iter().enumerate() {
            let (lab, c) = (&lab, &c);
            s.spawn(move || assert!(cni(lab, "DEL", &format!("par{i}"), Some(&path(ns)), c).ok));
        }
    });
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
}

#[test]
fn a_dhcp_network_leases_through_plumbs_daemon_and_del_releases() {
    let lab = Lab::new("cnh");
    let server = lab.lan("dhcpsrv", "192.168.79.1/24");
    let _dnsmasq = lab.dnsmasq(
        &server,
        "--dhcp-range=192.168.79.100,192.168.79.199,2m --dhcp-authoritative",
    );
    let c = conf(
        "1.0.0",
        json!({"network": "lan", "mode": "bridged", "uplink": "lan0",
               "ipam": {"type": "plumb", "mode": "dhcp"}}),
    );
    let ns = lab.netns("c");
    // No daemon, no DHCP client: the runtime is told to try again later.
    let early = cni(&lab, "ADD", "d1", Some(&path(&ns)), &c);
    assert!(!early.ok);
    assert_eq!(early.json["code"], 11, "{}", early.json);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
    let _daemon = lab.daemon(&[]);
    let added = cni(&lab, "ADD", "d1", Some(&path(&ns)), &c);
    assert!(added.ok, "{}", added.json);
    let address = added.json["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(address.starts_with("192.168.79.1"), "{}", added.json);
    assert_eq!(added.json["ips"][0]["gateway"], "192.168.79.1");
    assert_eq!(added.json["dns"]["nameservers"], json!(["192.168.79.1"]));
    let ip = address.trim_end_matches("/24").to_string();
    let leased = || lab.dnsmasq_leases().iter().any(|l| l.ip == ip);
    assert!(leased(), "{:?}", lab.dnsmasq_leases());
    assert!(lab.ping(&server, &ip), "the LAN reaches the container");
    // DEL releases the lease at the server.
    assert!(cni(&lab, "DEL", "d1", Some(&path(&ns)), &c).ok);
    wait_until("the lease released", 10, || !leased());
}

/// tests/cni/libcni_driver.go built against Debian's libcni (GOPATH mode:
/// nothing is downloaded), into `dir`.
fn build_libcni_driver(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("libcni_driver");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/cni/libcni_driver.go"
        ))
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .expect("run go (golang-go)");
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

#[test]
fn libcni_runs_plumb_and_portmap_in_every_version_it_negotiates() {
    let lab = Lab::new("cnl");
    let up = lab.upstream("10.98.9");
    web(&lab, "10.98.0.0/24");
    let dir = lab.state.path();
    let driver = build_libcni_driver(dir);
    // Where libcni finds plugins: plumb under its plugin name, and the
    // reference ones.
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_plumb"), bin.join("plumb")).unwrap();
    let cni_path = format!("{}:{REFERENCE}", bin.display());
    // libcni 1.1 speaks up to 1.0.0.
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let ns = lab.netns(&format!("l{i}"));
        let list = json!({
            "cniVersion": version,
            "name": format!("web{i}"),
            "plugins": [
                {"type": "plumb", "network": "web", "capabilities": {"portMappings": true}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let file = dir.join(format!("web{i}.conflist"));
        std::fs::write(&file, list.to_string()).unwrap();
        // CHECK of plumb alone (the reference portmap's CHECK looks for
        // IPv6 chains this fake host has none of), with the result libcni
        // cached at ADD.
        let mut alone = list.clone();
        alone["plugins"].as_array_mut().unwrap().truncate(1);
        let checked = dir.join(format!("web{i}-check.conflist"));
        std::fs::write(&checked, alone.to_string()).unwrap();
        let port = 8090 + i;
        let caps =
            json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]});
        let run = |action: &str| {
            let conflist = match action {
                "check" => &checked,
                _ => &file,
            };
            let out = Command::new("ip")
                .args(["netns", "exec", &lab.host])
                .arg(&driver)
                .arg(action)
                .arg(conflist)
                .arg(path(&ns))
                .arg(format!("lib{i}"))
                .arg(caps.to_string())
                .env("CNI_PATH", &cni_path)
                .env("CNI_CACHE_DIR", dir.join("cni-cache"))
                .env("PLUMB_STATE_DIR", dir)
                .env("PLUMB_SOCKET", lab.socket())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{version} {action}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let result: Value = serde_json::from_str(&run("add")).expect("a result");
        assert_eq!(result["cniVersion"], *version, "{result}");
        assert!(
            result["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.98.0."),
            "{result}"
        );
        // plumb published the capability's port itself, and portmap too:
        // the port answers either way.
        let _server = lab.spawn_in(
            &ns,
            "busybox nc -l -p 80 -e echo libcni",
            &format!("nc{i}.log"),
        );
        wait_until("the port to answer", 10, || {
            lab.exec(&up, &format!("busybox nc -w 1 10.98.9.2 {port}"))
                .stdout
                .starts_with(b"libcni")
        });
        if *version != "0.3.0" && *version != "0.3.1" {
            run("check");
        }
        run("del");
        assert_eq!(
            lab.ok(&["ls"]).lines().count(),
            1,
            "{version}: DEL left nothing"
        );
    }
}

#[test]
fn the_readmes_kubelet_conflist_serves_a_pod_sandbox_as_the_cri_does() {
    let lab = Lab::new("cnk8");
    let list = kubelet_conflist();
    let version = list["cniVersion"].clone();
    let name = list["name"].clone();
    let pod = lab.netns("pod");
    let sandbox = "9f1c2e3d4b5a69788796a5b4c3d2e1f0";
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
                K8S_POD_INFRA_CONTAINER_ID=9f1c2e3d4b5a69788796a5b4c3d2e1f0;K8S_POD_UID=1234";
    let plugin = |i: usize| {
        let mut c = list["plugins"][i].clone();
        c["cniVersion"] = version.clone();
        c["name"] = name.clone();
        c["stateDir"] = json!(lab.state.path());
        c["socket"] = json!(lab.socket());
        let binary = match c["type"].as_str().unwrap() {
            "plumb" => env!("CARGO_BIN_EXE_plumb").to_string(),
            other => format!("{REFERENCE}/{other}"),
        };
        (binary, c)
    };
    let count = list["plugins"].as_array().unwrap().len();
    // ADD of the sandbox, in the list's order, each given the result before.
    let mut result: Option<Value> = None;
    for i in 0..count {
        let (binary, mut c) = plugin(i);
        if let Some(r) = &result {
            c["prevResult"] = r.clone();
        }
        let a = Call {
            args,
            ..Call::new(&binary, "ADD", sandbox, Some(&path(&pod)))
        }
        .run(&lab, &c);
        assert!(a.ok, "{binary} ADD: {}", a.json);
        result = Some(a.json);
    }
    let result = result.unwrap();
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.244.1."),
        "{result}"
    );
    assert!(
        lab.ok(&["ls"]).contains("cni:9f1c2e3d4b5a"),
        "{}",
        lab.ok(&["ls"])
    );
    // CHECK with the cached result, then DEL in reverse order.
    for i in 0..count {
        let (binary, mut c) = plugin(i);
        c["prevResult"] = result.clone();
        let a = Call {
            args,
            ..Call::new(&binary, "CHECK", sandbox, Some(&path(&pod)))
        }
        .run(&lab, &c);
        assert!(a.ok, "{binary} CHECK: {}", a.json);
    }
    for i in (0..count).rev() {
        let (binary, mut c) = plugin(i);
        c["prevResult"] = result.clone();
        let a = Call {
            args,
            ..Call::new(&binary, "DEL", sandbox, Some(&path(&pod)))
        }
        .run(&lab, &c);
        assert!(a.ok, "{binary} DEL: {}", a.json);
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
    // The kubelet's GC after a restart: a sandbox it no longer knows goes.
    let again = lab.netns("pod2");
    let (binary, c) = plugin(0);
    assert!(
        Call {
            args,
            ..Call::new(&binary, "ADD", "stale1", Some(&path(&again)))
        }
        .run(&lab, &c)
        .ok
    );
    let mut gc = c.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert!(
        Call {
            args: "",
            ..Call::new(&binary, "GC", "", None)
        }
        .run(&lab, &gc)
        .ok
    );
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
}

#[test]
fn plumb_chained_after_another_plugin_adds_to_its_result() {
    let lab = Lab::new("cna");
    web(&lab, "10.101.0.0/24");
    let ns = lab.netns("c");
    let loopback = format!("{REFERENCE}/loopback");
    let base = json!({"cniVersion": "1.0.0", "name": "after"});
    let mut lo = base.clone();
    lo["type"] = json!("loopback");
    let mut ours = base.clone();
    ours["type"] = json!("plumb");
    ours["network"] = json!("web");
    let list = [(loopback.as_str(), lo), (env!("CARGO_BIN_EXE_plumb"), ours)];
    let result = chain_add(&lab, &list, "after1", &path(&ns));
    // The loopback's interface and address first, then plumb's, whose
    // address points at its own interface.
    assert_eq!(result["interfaces"][0]["name"], "lo", "{result}");
    let names: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let eth0 = names
        .iter()
        .position(|n| *n == "eth0")
        .expect("plumb's eth0");
    let ours = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ip| ip["address"].as_str().unwrap().starts_with("10.101.0."))
        .expect("plumb's address");
    assert_eq!(ours["interface"], eth0, "{result}");
    for (binary, conf) in list.iter().rev() {
        let mut c = conf.clone();
        c["prevResult"] = result.clone();
        assert!(exec_plugin(&lab, binary, "DEL", "after1", Some(&path(&ns)), "eth0", &c).ok);
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
}

#[test]
fn a_gc_run_while_adds_are_in_flight_leaves_nothing_half_done() {
    // The spec forbids GC beside ADD; a runtime that does it anyway gets
    // containers removed, never a half-made one or a leak.
    let lab = Lab::new("cng");
    web(&lab, "10.102.0.0/24");
    let c = conf("1.1.0", json!({"network": "web"}));
    let gc = conf(
        "1.1.0",
        json!({"network": "web", "cni.dev/valid-attachments": []}),
    );
    let links = lab.host_links();
    let namespaces: Vec<String> = (0..8).map(|i| lab.netns(&format!("g{i}"))).collect();
    std::thread::scope(|s| {
        for (i, ns) in namespaces.iter().enumerate() {
            let (lab, c) = (&lab, &c);
            s.spawn(move || cni(lab, "ADD", &format!("gc{i}"), Some(&path(ns)), c));
        }
        let (lab, gc) = (&lab, &gc);
        s.spawn(move || {
            for _ in 0..5 {
                cni(lab, "GC", "", None, gc);
            }
        });
    });
    // What each container has is whole: an attachment whose interface is
    // in its namespace with its address, or nothing at all.
    for (i, ns) in namespaces.iter().enumerate() {
        let checked = cni(&lab, "CHECK", &format!("gc{i}"), Some(&path(ns)), &c);
        let has_eth0 = lab.exec(ns, "ip link show eth0").status.success();
        assert_eq!(checked.ok, has_eth0, "gc{i}: {}", checked.json);
    }
    // The runtime's DELs then leave the host as it was.
    for (i, ns) in namespaces.iter().enumerate() {
        assert!(cni(&lab, "DEL", &format!("gc{i}"), Some(&path(ns)), &c).ok);
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1);
    assert_eq!(lab.host_links(), links);
}

#[test]
fn runtimes_racing_to_make_a_described_network_all_get_on_it() {
    let lab = Lab::new("cnrace");
    let c = conf(
        "1.0.0",
        json!({"network": "raced", "mode": "nat", "subnet": "10.104.0.0/24"}),
    );
    let namespaces: Vec<String> = (0..8).map(|i| lab.netns(&format!("r{i}"))).collect();
    let added = add_all_at_once(&lab, &c, &namespaces, "race");
    for a in &added {
        assert!(a.ok, "{}", a.json);
    }
    assert_eq!(lab.ok(&["ls"]).lines().count(), 9);
}

#[test]
fn pods_find_each_other_by_pod_name_and_alias_through_plumbs_dns() {
    let lab = Lab::new("cnns");
    let _daemon = lab.daemon(&[]);
    let described = |aliases: Value| {
        conf(
            "1.1.0",
            json!({
                "network": "pods", "mode": "nat", "subnet": "10.94.0.0/24",
                "serveDns": true, "domain": "pods.test",
                "capabilities": {"aliases": true},
                "runtimeConfig": {"aliases": aliases},
            }),
        )
    };
    let (db, client) = (lab.netns("db"), lab.netns("client"));
    // The aliases keyed by the runtime's name for the network count; those
    // of other networks do not.
    let added = Call {
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0",
        ..Call::plumb("ADD", "ctr-db", Some(&path(&db)))
    }
    .run(
        &lab,
        &described(json!({"plumbnet": ["primary", "DB"], "elsewhere": ["stray"]})),
    );
    assert!(added.ok, "{}", added.json);
    assert_eq!(
        added.json["dns"],
        json!({"nameservers": ["10.94.0.1"], "domain": "pods.test", "search": ["pods.test"]}),
        "the runtime is told plumb's DNS"
    );
    let db_ip = lab.ip_of(&path(&db), "pods");
    assert!(
        cni(
            &lab,
            "ADD",
            "ctr-client",
            Some(&path(&client)),
            &described(json!({}))
        )
        .ok
    );
    let gw = "10.94.0.1";
    wait_until("plumb's DNS to answer", 10, || {
        lab.dig(&client, gw, "db-0") == db_ip
    });
    assert_eq!(lab.dig(&client, gw, "primary.pods.test"), db_ip);
    assert_eq!(lab.dig(&client, gw, "db"), db_ip);
    assert_eq!(lab.dig(&client, gw, "stray"), "NXDOMAIN");
    // A bad alias from the runtime is refused by name, with nothing done.
    let other = lab.netns("other");
    let refused = cni(
        &lab,
        "ADD",
        "ctr-bad",
        Some(&path(&other)),
        &described(json!({"plumbnet": ["no spaces allowed"]})),
    );
    assert!(!refused.ok);
    assert!(
        refused.json["msg"]
            .as_str()
            .unwrap()
            .contains("no spaces allowed"),
        "{}",
        refused.json
    );
    assert!(!lab.ok(&["ls"]).contains("cni:ctr-bad"));
    // DEL: the names go with the container.
    assert!(
        cni(
            &lab,
            "DEL",
            "ctr-db",
            Some(&path(&db)),
            &described(json!({}))
        )
        .ok
    );
    assert_eq!(lab.dig(&client, gw, "primary"), "NXDOMAIN");
}
