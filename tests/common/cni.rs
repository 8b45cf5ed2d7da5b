//! Running a CNI plugin as a runtime does: in a lab's host namespace, with
//! `CNI_*` set and the configuration on stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::Lab;

/// Where Debian's containernetworking-plugins are.
pub const REFERENCE: &str = "/usr/lib/cni";

/// What a plugin answered: its stdout as JSON (null when empty or not
/// JSON) and whether it exited 0.
pub struct Answer {
    pub json: Value,
    pub ok: bool,
}

/// One call of a plugin.
pub struct Call<'a> {
    pub binary: &'a str,
    pub command: &'a str,
    pub id: &'a str,
    pub netns: Option<&'a str>,
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub args: &'a str,
    /// More environment (plumb's failpoints, say).
    pub env: &'a [(&'a str, &'a str)],
}

impl<'a> Call<'a> {
    /// `command` of `binary` for container `id` in `netns`, as eth0.
    pub fn new(binary: &'a str, command: &'a str, id: &'a str, netns: Option<&'a str>) -> Call<'a> {
        Call {
            binary,
            command,
            id,
            netns,
            ifname: "eth0",
            args: "IgnoreUnknown=1",
            env: &[],
        }
    }

    /// plumb's `command` for container `id` in `netns`, as eth0.
    pub fn plumb(command: &'a str, id: &'a str, netns: Option<&'a str>) -> Call<'a> {
        Call::new(env!("CARGO_BIN_EXE_plumb"), command, id, netns)
    }

    /// Run it with `conf` on stdin; plumb keeps its state in the lab's.
    pub fn run(&self, lab: &Lab, conf: &Value) -> Answer {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.host))
            .arg(self.binary)
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.id)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", REFERENCE)
            .env("CNI_ARGS", self.args)
            .env("PLUMB_STATE_DIR", lab.state.path())
            .env("PLUMB_SOCKET", lab.socket())
            .envs(self.env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        let mut child = cmd.spawn().expect("run the plugin");
        child
            .stdin
            .take()
            .expect("the plugin's stdin")
            .write_all(conf.to_string().as_bytes())
            .expect("write the configuration");
        let out = child.wait_with_output().expect("wait for the plugin");
        let text = String::from_utf8_lossy(&out.stdout);
        Answer {
            json: serde_json::from_str(text.trim()).unwrap_or(Value::Null),
            ok: out.status.success(),
        }
    }
}
