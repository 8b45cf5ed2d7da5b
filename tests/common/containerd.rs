//! containerd 1.6 in a lab's fake host, with private directories and
//! socket, and `ctr run --cni` as its CNI runtime. ctr reads CNI's
//! configuration from /etc/cni/net.d and plugins from /opt/cni/bin, fixed
//! paths: it runs in a mount namespace of its own where those are the
//! lab's (a tmpfs on /opt, a bind mount on /etc/cni/net.d), so the host's
//! stay untouched.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use super::podman::{IMAGE, Podman};
use super::{Bg, Lab, wait_until};

pub struct Containerd<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    /// containerd's namespace for this lab: runc keeps its containers'
    /// state under /run/containerd/runc/NAMESPACE whatever containerd's
    /// own directories, so two labs' containers must not share one.
    namespace: String,
    _daemon: Bg,
}

impl Drop for Containerd<'_> {
    /// The runc root its containers had (empty once they are gone).
    fn drop(&mut self) {
        let _ = fs::remove_dir(PathBuf::from("/run/containerd/runc").join(&self.namespace));
    }
}

impl<'a> Containerd<'a> {
    /// Start containerd and import the busybox image (made by Podman).
    pub fn start(lab: &'a Lab, podman: &Podman) -> Containerd<'a> {
        let dir = lab.state.path().join("containerd");
        for sub in ["root", "state", "net.d"] {
            fs::create_dir_all(dir.join(sub)).expect("containerd dir");
        }
        let socket = dir.join("containerd.sock");
        fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\naddress = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .expect("config.toml");
        let log = dir.join("containerd.log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.host))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("containerd log"))
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            lab,
            dir,
            namespace: lab.name("ctr"),
            _daemon: Bg { child, log },
        };
        wait_until("containerd to answer", 20, || {
            c.ctr(&["version"]).status.success()
        });
        let archive = c.dir.join("image.tar");
        podman.must(&[
            "save",
            "--format",
            "docker-archive",
            "-o",
            &archive.to_string_lossy(),
            IMAGE,
        ]);
        let out = c.ctr(&["image", "import", &archive.to_string_lossy()]);
        assert!(
            out.status.success(),
            "ctr image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    /// The CNI configuration list ctr will use: plumb with `plumb` (its
    /// keys), keeping its state in the lab's directory.
    pub fn network(&self, name: &str, plumb: Value) {
        let mut plugin = json!({
            "type": "plumb",
            "stateDir": self.lab.state.path(),
            "socket": self.lab.socket(),
        });
        for (k, v) in plumb.as_object().expect("plumb's keys") {
            plugin[k] = v.clone();
        }
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
        fs::write(
            self.dir.join("net.d").join("10-plumb.conflist"),
            list.to_string(),
        )
        .expect("conflist");
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.lab.host))
            .arg("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", &self.namespace])
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// `ctr run --rm --cni IMAGE ID sh -c SCRIPT`, in a mount namespace
    /// where /opt/cni/bin holds plumb (as `plumb`) and the reference
    /// plugins, and /etc/cni/net.d this fixture's configuration. ctr adds
    /// the container before the script and deletes it after.
    pub fn run(&self, id: &str, script: &str) -> Output {
        let plugins = "mount -t tmpfs plumbtest /opt && mkdir -p /opt/cni/bin \
             && for p in /usr/lib/cni/*; do ln -s \"$p\" /opt/cni/bin/; done \
             && ln -s \"$PLUMB\" /opt/cni/bin/plumb \
             && mount --bind \"$NETD\" /etc/cni/net.d";
        let ctr = format!(
            "exec nsenter --net=/run/netns/{} ctr --address {} --namespace {} run --rm --cni {IMAGE} {id} sh -c '{script}'",
            self.lab.host,
            self.dir.join("containerd.sock").display(),
            self.namespace,
        );
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("{plugins} && {ctr}"))
            .env("PLUMB", env!("CARGO_BIN_EXE_plumb"))
            .env("NETD", self.dir.join("net.d"))
            .output()
            .expect("run ctr")
    }
}
