//! The Debian package `scripts/package` builds (from this build's binary):
//! what a system tool's package holds, each piece working.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_the_binary_unit_cni_plugin_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deb = run(Command::new(repo.join("scripts/package"))
        .arg(env!("CARGO_BIN_EXE_plumb"))
        .arg(dir.path())
        // A debug build is big; this package is only looked into.
        .env("PLUMB_DEB_COMPRESSOR", "none"));
    let deb = deb.trim();
    let info = run(Command::new("dpkg-deb").args(["--field", deb]));
    assert!(info.contains("Package: plumb"), "{info}");
    assert!(
        info.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));

    // The binary, which says its version and commit.
    let version = run(Command::new(root.join("usr/bin/plumb")).arg("--version"));
    assert!(
        version.starts_with("plumb ") && version.contains("commit"),
        "{version}"
    );
    // The unit, started before Docker and containerd, running this binary.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/plumbd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/plumb daemon"), "{unit}");
    assert!(
        unit.contains("Before=docker.service containerd.service"),
        "{unit}"
    );
    // Where a cluster's store and credentials are set.
    assert!(
        unit.contains("EnvironmentFile=-/etc/default/plumbd"),
        "{unit}"
    );
    let postinst = run(Command::new("dpkg-deb").args(["--info", deb, "postinst"]));
    assert!(postinst.contains("enable plumbd.service"), "{postinst}");
    // The CNI plugin where runtimes look for it.
    for link in ["opt/cni/bin/plumb", "usr/lib/cni/plumb"] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new("/usr/bin/plumb"),
            "{link}"
        );
    }
    // Man pages, one per command, and completions that ask /usr/bin/plumb.
    let man = root.join("usr/share/man/man8");
    for page in ["plumb.8.gz", "plumb-attach.8.gz", "plumb-egress-add.8.gz"] {
        assert!(man.join(page).exists(), "{page}");
    }
    for (file, shell) in [
        ("usr/share/bash-completion/completions/plumb", "bash"),
        ("usr/share/zsh/vendor-completions/_plumb", "zsh"),
        ("usr/share/fish/vendor_completions.d/plumb.fish", "fish"),
    ] {
        let script = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(script.contains("/usr/bin/plumb"), "{shell}: {script}");
    }
}
