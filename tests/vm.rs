//! Tests that need what this machine's kernel lacks (ipvlan, 802.1q) run in
//! a qemu VM booting Debian's kernel (scripts/vm). They never skip: without
//! the VM, they fail.

use std::process::Command;

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
