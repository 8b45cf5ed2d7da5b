//! The container runtimes of this machine run containers on plumb
//! networks through plumb's CNI plugin, each in a lab's fake host: Podman 4
//! with its CNI backend, and containerd 1.6's `ctr run --cni`.

mod common;

use common::cni::Call;
use common::containerd::Containerd;
use common::docker::{INDEX_HTML, fetch};
use common::podman::{IMAGE, Podman, ULIMITS};
use common::{Lab, wait_for};
use serde_json::json;

#[test]
fn podman_runs_a_published_container_on_a_plumb_network_and_rm_frees_it() {
    let lab = Lab::new("pdm");
    let up = lab.upstream("10.99.9");
    let p = Podman::start(&lab);
    p.network(
        "plumbnet",
        json!({"network": "pnet", "mode": "nat", "subnet": "10.99.0.0/24"}),
    );
    let links = lab.host_links();
    let mut run = vec![
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "plumbnet",
        "-p",
        "8084:80",
    ];
    run.extend_from_slice(ULIMITS);
    run.extend([IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]);
    p.must(&run);
    // plumb's attachment, known by Podman's container ID; the address
    // Podman shows is plumb's.
    let id = p
        .must(&["inspect", "-f", "{{.Id}}", "web"])
        .trim()
        .to_string();
    let ls = lab.ok(&["ls"]);
    assert!(ls.contains(&format!("cni:{}", &id[..12])), "{ls}");
    let shown = p
        .must(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.plumbnet.IPAddress}}",
            "web",
        ])
        .trim()
        .to_string();
    assert!(shown.starts_with("10.99.0."), "{shown}");
    assert_eq!(lab.ip_of(&format!("cni:{id}"), "pnet"), shown);
    // Out through the network's NAT; in through the published port.
    p.must(&["exec", "web", "ping", "-c1", "-W2", "10.99.9.1"]);
    let page = wait_for("the published page", 10, || {
        fetch(&lab, &up, "http://10.99.9.2:8084/").ok_or_else(|| "no answer".to_string())
    });
    assert_eq!(page, INDEX_HTML);
    // podman rm frees everything: the attachment, its veth, its port. The
    // network its first ADD made stays, for the next container.
    p.must(&["rm", "-f", "-t", "0", "web"]);
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "{}", lab.ok(&["ls"]));
    let mut expected = links.clone();
    expected.push("pl-pnet".to_string());
    assert_eq!(lab.host_links(), expected);
    assert!(fetch(&lab, &up, "http://10.99.9.2:8084/").is_none());
}

#[test]
fn podman_containers_find_each_other_by_name_through_plumbs_dns() {
    let lab = Lab::new("pdns");
    let _daemon = lab.daemon(&[]);
    let p = Podman::start(&lab);
    p.network(
        "plumbnet",
        json!({"network": "pdns", "mode": "nat", "subnet": "10.99.4.0/24", "serveDns": true}),
    );
    let mut run = vec!["run", "-d", "--name", "db", "--network", "plumbnet"];
    run.extend_from_slice(ULIMITS);
    run.extend([IMAGE, "sleep", "600"]);
    p.must(&run);
    let id = p
        .must(&["inspect", "-f", "{{.Id}}", "db"])
        .trim()
        .to_string();
    let db_ip = lab.ip_of(&format!("cni:{id}"), "pdns");
    // Podman writes the nameserver plumb's result gave into the
    // container's resolv.conf; the container's name and the short ID
    // Podman gives as an alias both answer.
    let mut ask = vec!["run", "--rm", "--network", "plumbnet"];
    ask.extend_from_slice(ULIMITS);
    ask.extend([IMAGE, "sh", "-c"]);
    let script = format!(
        "cat /etc/resolv.conf; busybox nslookup db; busybox nslookup {}",
        &id[..12]
    );
    ask.push(&script);
    let out = wait_for("db by name from another container", 20, || {
        let out = p.podman(&ask);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.matches(&db_ip).count() {
            2 => Ok(text),
            _ => Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr))),
        }
    });
    assert!(out.contains("nameserver 10.99.4.1"), "{out}");
}

#[test]
fn containerd_ctr_run_cni_gets_a_plumb_address_and_its_exit_frees_it() {
    let lab = Lab::new("ctd");
    lab.upstream("10.100.9");
    let podman = Podman::start(&lab);
    let containerd = Containerd::start(&lab, &podman);
    containerd.network(
        "plumbnet",
        json!({"network": "cnet", "mode": "nat", "subnet": "10.100.0.0/24"}),
    );
    let out = containerd.run(
        "ctr1",
        "ip -4 addr show eth0 && ping -c1 -W2 10.100.9.1 && echo REACHED",
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctr run: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("inet 10.100.0."), "{said}");
    assert!(
        said.contains("REACHED"),
        "the container reaches upstream: {said}"
    );
    // ctr deleted it on the way out: nothing of it is left.
    assert_eq!(lab.ok(&["ls"]).lines().count(), 1, "{}", lab.ok(&["ls"]));
}

#[test]
fn podman_containerd_and_a_bare_runtime_share_one_described_network_at_once() {
    let lab = Lab::new("cmx");
    lab.upstream("10.103.9");
    let podman = Podman::start(&lab);
    let containerd = Containerd::start(&lab, &podman);
    // Each runtime's configuration describes the network; none has made
    // it yet. Their first ADDs race to make it.
    let described = json!({"network": "shared", "mode": "nat", "subnet": "10.103.0.0/24"});
    podman.network("shared", described.clone());
    containerd.network("shared", described.clone());
    let bare = lab.netns("bare");
    let mut conf = described.clone();
    conf["cniVersion"] = json!("1.1.0");
    conf["name"] = json!("shared");
    conf["type"] = json!("plumb");
    conf["stateDir"] = json!(lab.state.path());
    conf["socket"] = json!(lab.socket());
    let (ctr_out, bare_ok) = std::thread::scope(|s| {
        let p = s.spawn(|| {
            let mut run = vec!["run", "-d", "--name", "pod1", "--network", "shared"];
            run.extend_from_slice(ULIMITS);
            run.extend([IMAGE, "sleep", "1000"]);
            podman.must(&run);
        });
        let c = s.spawn(|| {
            containerd.run(
                "ctr1",
                "ip -4 addr show eth0 && ping -c1 -W2 10.103.9.1 && echo REACHED",
            )
        });
        let b = s.spawn(|| {
            let netns = format!("/run/netns/{bare}");
            Call::plumb("ADD", "bare1", Some(&netns))
                .run(&lab, &conf)
                .ok
        });
        p.join().unwrap();
        (c.join().unwrap(), b.join().unwrap())
    });
    let said = String::from_utf8_lossy(&ctr_out.stdout);
    assert!(
        ctr_out.status.success() && said.contains("REACHED"),
        "ctr run: {said}{}",
        String::from_utf8_lossy(&ctr_out.stderr)
    );
    assert!(bare_ok, "the bare runtime's ADD");
    // One network, made once; Podman's and the bare runtime's containers
    // on it (ctr's left with its command).
    let nets = lab.ok(&["network", "ls"]);
    assert_eq!(
        nets.lines().filter(|l| l.starts_with("shared ")).count(),
        1,
        "{nets}"
    );
    let ls = lab.ok(&["ls"]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
    assert!(ls.contains("cni:bare1"), "{ls}");
    podman.must(&["exec", "pod1", "ping", "-c1", "-W2", "10.103.9.1"]);
}
