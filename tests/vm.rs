//! Tests that need what this machine's kernel lacks (ipvlan, 802.1q) run in
//! a qemu VM booting Debian's kernel (scripts/vm). They never skip: without
//! the VM, they fail.

mod common;

use std::process::Command;

use common::readme::{self, Runner};

fn in_vm(script: &str) {
    let name = std::path::Path::new(script)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(script);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/vm/run"))
        .arg(format!("{root}/{script}"))
        .env("PLUMB_BIN", env!("CARGO_BIN_EXE_plumb"))
        .current_dir(root)
        .output()
        .expect("run scripts/vm/run");
    assert!(
        out.status.success(),
        "{script} failed in the VM ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{name}: ok")),
        "the script did not reach its end"
    );
}

#[test]
fn ipvlan_and_vlan_parents_with_real_traffic_on_debians_kernel() {
    in_vm("tests/vm/lan_drivers.sh");
}

#[test]
fn ipvlan_and_vlan_parents_through_dockers_driver_protocol() {
    in_vm("tests/vm/docker_plugin.sh");
}

/// What the README's VM blocks take as given: the VM's `wlan0` and `eth1`
/// on a LAN whose router is 192.168.1.1 untagged and 10.10.0.1, 10.30.0.1
/// on VLANs 10 and 30; the namespaces `web` and `router`.
const README_DEFAULTS: &str = r#"if ! ip link show wlan0 >/dev/null 2>&1; then
    ip netns add lan
    ip -n lan link set lo up
    ip -n lan link add br0 type bridge
    ip -n lan link set br0 up
    ip -n lan addr add 192.168.1.1/24 dev br0
    ip link add wlan0 type veth peer name w0 netns lan
    ip -n lan link set w0 master br0 up
    ip link set wlan0 up
    ip link add eth1 type veth peer name e1 netns lan
    ip -n lan link set e1 up
    ip link set eth1 up
    for v in 10 30; do
        ip -n lan link add link e1 name e1.$v type vlan id $v
        ip -n lan addr add 10.$v.0.1/24 dev e1.$v
        ip -n lan link set e1.$v up
    done
    ip netns add web
    ip netns add router
fi
"#;

#[test]
fn the_readmes_ipvlan_and_vlan_examples_do_what_they_show() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let steps = readme::steps(&text, Runner::Vm);
    assert!(
        steps.iter().flatten().count() >= 7,
        "the ipvlan and VLAN blocks"
    );
    let script = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("readme-vm-{}.sh", std::process::id()));
    std::fs::write(&script, readme::script(&steps, README_DEFAULTS)).unwrap();
    let out = Command::new(root.join("scripts/vm/run"))
        .arg(&script)
        .env("PLUMB_BIN", env!("CARGO_BIN_EXE_plumb"))
        .current_dir(root)
        .output()
        .expect("run scripts/vm/run");
    let _ = std::fs::remove_file(&script);
    readme::check(&steps, &String::from_utf8_lossy(&out.stdout));
}
