//! Many plumb processes at once on one network.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::Lab;

#[test]
fn hundred_concurrent_attaches_get_distinct_addresses() {
    let lab = Lab::new("conc");
    lab.ok(&["network", "create", "busy", "--subnet", "10.90.0.0/24"]);
    let names: Vec<String> = (0..100).map(|i| lab.netns(&format!("c{i}"))).collect();
    let spawned: Vec<_> = names
        .iter()
        .map(|ns| {
            Command::new(env!("CARGO_BIN_EXE_plumb"))
                .arg("--state-dir")
                .arg(lab.state.path())
                .args(["--host-netns", &lab.host, "attach", ns, "busy"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn plumb")
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "concurrent attach failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let ls: serde_json::Value = serde_json::from_str(&lab.ok(&["ls", "--json"])).unwrap();
    let ips: HashSet<String> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["IPAddress"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 100, "100 distinct addresses");
    // And the kernel agrees with the store: every namespace holds its own address.
    for ns in names.iter().step_by(9) {
        let ip = lab.ip_of(ns, "busy");
        let addrs = common::must(&format!("ip -n {ns} -o addr show dev eth0"));
        assert!(addrs.contains(&format!("{ip}/24")), "{ns}: {addrs}");
    }
    assert!(lab.ping(&names[0], &lab.ip_of(&names[99], "busy")));
}
