mod common;
use common::docker::Dockerd;
use common::Lab;
#[test]
#[ignore]
fn probe() {
    let lab = Lab::new("probe");
    let docker = Dockerd::start(&lab, false);
    let name = format!("px{}", std::process::id());
    let sock = format!("/run/docker/plugins/{name}.sock");
    std::fs::create_dir_all("/run/docker/plugins").unwrap();
    let mut py = std::process::Command::new("nsenter")
        .args([&format!("--net=/run/netns/{}", lab.host), "python3", "/tmp/exp/plugin.py", &sock, "/tmp/exp/log"])
        .spawn().unwrap();
    common::wait_until("plugin socket", 10, || std::path::Path::new(&sock).exists());
    let run = |a: &[&str]| { let o = docker.docker(a); println!("$ docker {:?}\n{}{}", a, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)); };
    run(&["network", "create", "-d", &name, "--ipam-driver", &name, "--subnet", "10.99.0.0/24", "--gateway", "10.99.0.1", "--ip-range", "10.99.0.128/25", "--aux-address", "host=10.99.0.2", "--label", "tier=web", "-o", "mode=nat", "--ipv6", "--subnet", "fd99::/64", "pnet"]);
    run(&["network", "create", "-d", &name, "--ipam-driver", "null", "-o", "ipam=dhcp", "pdhcp"]);
    run(&["network", "create", "-d", &name, "--internal", "pint"]);
    run(&["run", "-d", "--name", "c1", "--network", "pnet", "--ip", "10.99.0.130", "--mac-address", "02:11:22:33:44:55", "--network-alias", "web", "-p", "8080:80", "--label", "role=x", docker.image(), "sleep", "1000"]);
    run(&["run", "-d", "--name", "c2", "--network", "pdhcp", docker.image(), "sleep", "1000"]);
    run(&["network", "connect", "--driver-opt", "egress-rate=10mbit", "--ip", "10.99.0.131", "pnet", "c2"]);
    run(&["network", "disconnect", "pnet", "c2"]);
    run(&["rm", "-f", "c2"]);
    run(&["rm", "-f", "c1"]);
    run(&["network", "rm", "pnet", "pdhcp", "pint"]);
    let _ = py.kill();
    println!("{}", std::fs::read_to_string("/tmp/exp/log").unwrap());
    let _ = std::fs::remove_file(&sock);
}
