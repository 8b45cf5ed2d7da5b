//! Podman 4 with its CNI backend in a lab's fake host (../shared/TESTING.md):
//! a private configuration, storage and plugin directory, where plumb is
//! the CNI plugin `plumb`, and the busybox image of the Docker fixture.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

use super::Lab;
use super::docker::busybox_rootfs_tar;

pub const IMAGE: &str = "localhost/bb:1";
/// The rlimits Podman asks for by default are above what this sandbox
/// allows ("error setting rlimit type 7").
pub const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

pub struct Podman<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl Drop for Podman<'_> {
    /// Its containers go (their CNI DELs with them) before the lab does.
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
    }
}

impl<'a> Podman<'a> {
    pub fn start(lab: &'a Lab) -> Podman<'a> {
        let dir = lab.state.path().join("podman");
        for sub in ["bin", "net.d", "storage", "run", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("podman dir");
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_plumb"), dir.join("bin/plumb"))
            .expect("plumb as a CNI plugin");
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{netd}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nevents_logfile_path = \"{events}\"\n",
                bin = dir.join("bin").display(),
                netd = dir.join("net.d").display(),
                events = dir.join("events.log").display(),
            ),
        )
        .expect("containers.conf");
        let p = Podman { lab, dir };
        let tar = busybox_rootfs_tar(&p.dir);
        p.must(&["import", &tar.to_string_lossy(), IMAGE]);
        p
    }

    /// A CNI network `name` of one plugin, plumb with `plumb` (its keys),
    /// keeping its state in the lab's directory.
    pub fn network(&self, name: &str, plumb: Value) {
        let mut plugin = json!({
            "type": "plumb",
            "stateDir": self.lab.state.path(),
            "socket": self.lab.socket(),
            "capabilities": {"portMappings": true, "ips": true, "mac": true, "aliases": true},
        });
        for (k, v) in plumb.as_object().expect("plumb's keys") {
            plugin[k] = v.clone();
        }
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
        fs::write(
            self.dir.join("net.d").join(format!("{name}.conflist")),
            list.to_string(),
        )
        .expect("conflist");
    }

    /// `podman ARGS` in the lab's host, on the private directories.
    pub fn podman(&self, args: &[&str]) -> Output {
        let d = |s: &str| self.dir.join(s).display().to_string();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.lab.host))
            .arg("podman")
            .args(["--root", &d("storage"), "--runroot", &d("run")])
            .args(["--storage-driver", "vfs", "--tmpdir", &d("tmp")])
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"))
            .output()
            .expect("run podman")
    }

    pub fn must(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
