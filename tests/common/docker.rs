//! A private Docker daemon inside a lab's fake host namespace.
//!
//! Everything it owns lives under one fresh directory D (data and exec
//! roots, socket, pidfile, log, configuration, trust key, CLI
//! configuration) and one cgroup parent named after D, so that parallel
//! tests and a real Docker on the machine share nothing with it. It starts
//! its own containerd (under D/exec/containerd). Only two directories outside
//! D are shared, their places fixed in dockerd and containerd:
//! `/run/docker/plugins` (where a test's plumb daemon serves Docker's
//! driver under a name of its own, [`Plugin`], and removes its socket when
//! it stops) and `/run/containerd/s` (the shims' sockets, removed on drop
//! even when a shim had to be killed).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Bg, Lab, must, sh};

/// The docker.io 20.10 client, the daemon's own version (`/usr/local/bin/docker`
/// is a 28.x client that only works by downgrading the API).
const CLI: &str = "/usr/bin/docker";
/// Every CLI call is bounded: a wedged daemon fails the test, not hangs it.
const CLI_SECS: &str = "60";
/// The address of `docker0` in the fake host (`--bip`); fixed, since each
/// dockerd has its own network namespace.
pub const BRIDGE_IP: &str = "172.31.250.1";
/// The busybox image every dockerd gets on start.
const IMAGE: &str = "bb:1";
/// The content of `/www/index.html` in the image.
pub const INDEX_HTML: &str = "plumb docker fixture\n";
/// The busybox applets linked in the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "ip", "ping", "httpd", "sleep", "wget", "nc", "udhcpc", "cat", "echo", "ifconfig",
    "route",
];
/// How long dockerd may take to answer after start.
const START_SECS: u64 = 30;
/// How long dockerd and its processes get after SIGTERM, then after SIGKILL.
/// Stopping waits for containers' stop timeouts (10 s for a busybox PID 1,
/// which ignores SIGTERM, unless the container runs with `--stop-timeout`).
const TERM_SECS: u64 = 30;
const KILL_SECS: u64 = 10;

/// A dockerd in `lab`'s fake host, its CLI pointed at it. Stopped and wiped
/// on drop; it borrows the lab so that it is dropped before the lab's
/// namespaces are deleted.
pub struct Dockerd<'a> {
    lab: &'a Lab,
    /// Use iptables-legacy (through D/bin first in dockerd's `PATH`).
    legacy: bool,
    dir: tempfile::TempDir,
    daemon: Child,
}

impl<'a> Dockerd<'a> {
    /// Start dockerd in `lab.host` (`net.ipv4.ip_forward=0` first, so that
    /// Docker sets the FORWARD policy to DROP as on real hosts), wait until it
    /// answers and import the busybox image.
    pub fn start(lab: &'a Lab, legacy: bool) -> Dockerd<'a> {
        must(&format!(
            "ip netns exec {} sysctl -q -w net.ipv4.ip_forward=0",
            lab.host
        ));
        let dir = tempfile::Builder::new()
            .prefix("dockerd.")
            .tempdir()
            .expect("dockerd tempdir");
        let d = dir.path();
        // A private configuration file: /etc/docker/daemon.json is not read,
        // and the trust key is written here, not to /etc/docker/key.json.
        fs::write(
            d.join("daemon.json"),
            format!(r#"{{"deprecated-key-path": "{}/key.json"}}"#, d.display()),
        )
        .expect("daemon.json");
        fs::create_dir(d.join("cli")).expect("CLI config dir");
        if legacy {
            fs::create_dir(d.join("bin")).expect("bin dir");
            for tool in ["iptables", "ip6tables"] {
                for suffix in ["", "-save", "-restore"] {
                    symlink(
                        format!("/usr/sbin/{tool}-legacy{suffix}"),
                        d.join("bin").join(format!("{tool}{suffix}")),
                    )
                    .expect("iptables-legacy symlink");
                }
            }
        }
        let daemon = launch(lab, d, legacy);
        // From here on, a panic stops and wipes it through Drop.
        let mut dockerd = Dockerd {
            lab,
            legacy,
            dir,
            daemon,
        };
        dockerd.wait_ready();
        dockerd.import_image();
        dockerd
    }

    /// The busybox image: `/bin/busybox` and its applets, `/www/index.html`
    /// holding [`INDEX_HTML`]. It has no default command.
    pub fn image(&self) -> &str {
        IMAGE
    }

    /// The CLI's configuration directory (`DOCKER_CONFIG`), D/cli.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("cli")
    }

    /// Run the docker CLI against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", CLI_SECS, CLI])
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.config_dir())
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// Run the docker CLI, insist that it succeeds; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The host PID of a running container's first process.
    pub fn container_pid(&self, name: &str) -> u32 {
        let pid = self.must(&["inspect", "-f", "{{.State.Pid}}", name]);
        pid.trim().parse().expect("container PID")
    }

    /// This daemon's API socket, D/docker.sock: what `plumb --docker-socket`
    /// is given (never the machine's own Docker).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    /// [`Self::socket`] as a string, for argument lists.
    pub fn socket_arg(&self) -> String {
        self.socket().display().to_string()
    }

    /// `docker run -d --stop-timeout 1 OPTS IMAGE CMD...` (busybox as PID 1
    /// ignores SIGTERM: a short stop timeout keeps stops quick); returns the
    /// container's full ID. `opts` carries `--name`, `--net`, labels, ...
    pub fn run(&self, opts: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--stop-timeout", "1"];
        args.extend_from_slice(opts);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.must(&args).trim().to_string()
    }

    /// A container's full ID.
    pub fn id(&self, name: &str) -> String {
        self.must(&["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    /// Whether a container is running (false for an unknown one).
    pub fn running(&self, name: &str) -> bool {
        let out = self.docker(&["inspect", "-f", "{{.State.Running}}", name]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// The PID of a container's first process if it runs (0 is "not
    /// running" in `docker inspect`).
    pub fn pid_if_running(&self, name: &str) -> Option<u32> {
        let out = self.docker(&["inspect", "-f", "{{.State.Pid}}", name]);
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (out.status.success() && pid != 0).then_some(pid)
    }

    /// The PIDs of many containers in one `docker inspect` (running ones;
    /// stopped ones are left out).
    pub fn pids(&self, names: &[String]) -> std::collections::HashMap<String, u32> {
        let mut args = vec!["inspect", "-f", "{{.Name}} {{.State.Pid}}"];
        args.extend(names.iter().map(String::as_str));
        let out = self.must(&args);
        out.lines()
            .filter_map(|l| {
                let (name, pid) = l.split_once(' ')?;
                let pid: u32 = pid.trim().parse().ok()?;
                (pid != 0).then(|| (name.trim_start_matches('/').to_string(), pid))
            })
            .collect()
    }

    /// plumb for the lab, pointed at this daemon: `--docker-socket D/docker.sock`
    /// before `args` (a global option).
    pub fn plumb(&self, args: &[&str]) -> Output {
        let socket = self.socket_arg();
        let mut full = vec!["--docker-socket", socket.as_str()];
        full.extend_from_slice(args);
        self.lab.plumb(&full)
    }

    /// [`Lab::ok`] with this daemon's socket.
    pub fn plumb_ok(&self, args: &[&str]) -> String {
        let socket = self.socket_arg();
        let mut full = vec!["--docker-socket", socket.as_str()];
        full.extend_from_slice(args);
        self.lab.ok(&full)
    }

    /// [`Lab::fails`] with this daemon's socket: exit status 1; returns stderr.
    pub fn plumb_fails(&self, args: &[&str]) -> String {
        let socket = self.socket_arg();
        let mut full = vec!["--docker-socket", socket.as_str()];
        full.extend_from_slice(args);
        self.lab.fails(&full)
    }

    /// `plumb inspect TARGET` with this daemon's socket, parsed.
    pub fn plumb_inspect(&self, target: &str) -> serde_json::Value {
        serde_json::from_str(&self.plumb_ok(&["inspect", target])).expect("inspect prints JSON")
    }

    /// `plumb daemon --docker-socket D/docker.sock EXTRA...` for the lab.
    pub fn plumb_daemon(&self, extra: &[&str]) -> Bg {
        let socket = self.socket_arg();
        let mut args = vec!["--docker-socket", socket.as_str()];
        args.extend_from_slice(extra);
        self.lab.daemon(&args)
    }

    /// The targets `plumb ls` shows (with this daemon's socket), in order.
    pub fn plumb_targets(&self) -> Vec<String> {
        ls_rows(&self.plumb_ok(&["ls"]))
            .into_iter()
            .map(|r| r[0].clone())
            .collect()
    }

    /// Stop dockerd (SIGTERM: it stops the containers) and start it again on
    /// the same directories; it re-creates its iptables chains on start.
    pub fn restart(&mut self) {
        assert!(
            self.stop(),
            "dockerd's processes survived SIGKILL: {:?}",
            self.processes(&mut HashSet::new())
        );
        self.daemon = launch(self.lab, self.dir.path(), self.legacy);
        self.wait_ready();
    }

    /// Kill dockerd and everything it started (containers too) at once, as
    /// a power cut would, and take what a reboot takes: its mounts, its
    /// exec root (a tmpfs on real hosts), the dead containers' cgroups;
    /// [`Dockerd::start_again`] starts it anew.
    pub fn crash(&mut self) {
        let mut known = HashSet::new();
        for pid in self.processes(&mut known) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        assert!(self.stop(), "dockerd's processes survived SIGKILL");
        self.remove_shim_sockets();
        self.unmount();
        let _ = fs::remove_dir_all(self.dir.path().join("exec"));
        self.remove_cgroups();
    }

    /// Start dockerd again on the same directories (after [`Dockerd::crash`]).
    pub fn start_again(&mut self) {
        self.launch_again();
        self.wait_ready();
    }

    /// Stop dockerd (SIGTERM: it stops the containers), and no more.
    pub fn stop_only(&mut self) {
        assert!(self.stop(), "dockerd's processes survived SIGKILL");
    }

    /// Start dockerd again without waiting for it ([`Dockerd::wait_ready`]).
    pub fn launch_again(&mut self) {
        self.daemon = launch(self.lab, self.dir.path(), self.legacy);
    }

    /// Turn on live restore (containers outlive dockerd) in this dockerd's
    /// configuration, reloaded with SIGHUP, and wait until it says so.
    pub fn enable_live_restore(&self) {
        let d = self.dir.path();
        fs::write(
            d.join("daemon.json"),
            format!(
                r#"{{"deprecated-key-path": "{}/key.json", "live-restore": true}}"#,
                d.display()
            ),
        )
        .expect("daemon.json");
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGHUP);
        super::wait_until("dockerd to reload with live restore", 10, || {
            self.must(&["info", "--format", "{{.LiveRestoreEnabled}}"])
                .trim()
                == "true"
        });
    }

    /// Stop dockerd alone (live restore keeps its containers and their
    /// shims running) and start it again on the same directories.
    pub fn restart_live(&mut self) {
        let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(TERM_SECS);
        while self.daemon.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "dockerd did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.daemon = launch(self.lab, self.dir.path(), self.legacy);
        self.wait_ready();
    }

    /// The end of dockerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Wait until the daemon answers; fail with its log if it exits or
    /// does not answer in time.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(START_SECS);
        while !self.docker(&["version"]).status.success() {
            let exited = self.daemon.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "dockerd did not answer within {START_SECS} s (exit: {exited:?}):\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Build the busybox rootfs under D and `docker import` it.
    fn import_image(&self) {
        let tar = busybox_rootfs_tar(self.dir.path());
        self.must(&["import", &tar.to_string_lossy(), IMAGE]);
    }

    /// Live processes of this instance: those whose command line names D
    /// (dockerd, containerd, the shims) and their descendants (docker-proxy,
    /// the containers' processes). `known` accumulates what was seen so that
    /// orphans still count once their parent is gone.
    fn processes(&self, known: &mut HashSet<(i32, u64)>) -> Vec<i32> {
        let needle = format!("{}/", self.dir.path().display());
        let table = proc_table();
        let mut members: Vec<(i32, u64)> = table
            .iter()
            .filter(|p| {
                p.cmdline
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            })
            // Docker's clients name its socket too (`plumb daemon
            // --docker-socket D/docker.sock`): they are not dockerd's.
            .filter(|p| {
                !p.cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == b"--docker-socket")
            })
            .map(|p| (p.pid, p.start))
            .collect();
        let mut i = 0;
        while i < members.len() {
            let parent = members[i].0;
            for p in table.iter().filter(|p| p.ppid == parent) {
                if !members.contains(&(p.pid, p.start)) {
                    members.push((p.pid, p.start));
                }
            }
            i += 1;
        }
        known.extend(members);
        table
            .iter()
            .filter(|p| !p.zombie && known.contains(&(p.pid, p.start)))
            .map(|p| p.pid)
            .collect()
    }

    /// SIGTERM dockerd (it stops its containers, proxies and containerd),
    /// wait until all its processes are gone, SIGKILL what is left after
    /// `TERM_SECS`. If dockerd is gone already, what it left behind (shims
    /// and containers; containerd and docker-proxy die with it) is killed
    /// at once. False if some processes survive SIGKILL too.
    fn stop(&mut self) -> bool {
        let mut deadline = Instant::now();
        // Only an unreaped child's PID is surely still dockerd's.
        if let Ok(None) = self.daemon.try_wait() {
            let _ = kill(Pid::from_raw(self.daemon.id() as i32), Signal::SIGTERM);
            deadline += Duration::from_secs(TERM_SECS);
        }
        let mut known = HashSet::new();
        let mut killed = false;
        loop {
            // Reap dockerd, our child, as soon as it exits.
            let _ = self.daemon.try_wait();
            let alive = self.processes(&mut known);
            if alive.is_empty() {
                let _ = self.daemon.wait();
                return true;
            }
            if Instant::now() >= deadline {
                if killed {
                    return false;
                }
                for pid in alive {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                killed = true;
                deadline = Instant::now() + Duration::from_secs(KILL_SECS);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Remove the sockets of shims that were killed (a shim removes its own
    /// on a clean exit). They live in the shared /run/containerd/s, named in
    /// each task's bundle under D.
    fn remove_shim_sockets(&self) {
        let tasks = self
            .dir
            .path()
            .join("exec/containerd/daemon/io.containerd.runtime.v2.task");
        let bundles = fs::read_dir(tasks)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|ns| fs::read_dir(ns.path()).ok())
            .flatten()
            .flatten();
        for bundle in bundles {
            let address = fs::read_to_string(bundle.path().join("address")).unwrap_or_default();
            if let Some(socket) = address.trim().strip_prefix("unix:///run/containerd/s/") {
                let _ = fs::remove_file(Path::new("/run/containerd/s").join(socket));
            }
        }
    }

    /// Lazily unmount whatever is still mounted under D, deepest first.
    fn unmount(&self) {
        let d = self.dir.path().display().to_string();
        let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| *p == d || p.starts_with(&format!("{d}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }

    /// Remove the cgroup parent, and the containers' cgroups that runc could
    /// not remove if their shim was killed, from every hierarchy.
    fn remove_cgroups(&self) {
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            remove_cgroup(&h.path().join(cgroup_parent(self.dir.path())));
        }
    }
}

impl Drop for Dockerd<'_> {
    /// Remove the containers, stop everything, remove leftovers outside D,
    /// unmount; the TempDir then removes D. Never panics: it also runs while
    /// a failed test unwinds.
    fn drop(&mut self) {
        let ps = self.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ps.stdout).into_owned();
        if ps.status.success() && !ids.trim().is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            let _ = self.docker(&args);
        }
        if !self.stop() {
            eprintln!(
                "dockerd in {}: processes survived SIGKILL",
                self.dir.path().display()
            );
        }
        self.remove_shim_sockets();
        self.unmount();
        self.remove_cgroups();
    }
}

/// A dockerd, and plumb's daemon serving it as driver [`Plugin::name`].
pub struct Plugin<'a> {
    /// Dropped first: removing the containers calls the driver.
    pub docker: Dockerd<'a>,
    pub name: String,
    /// None only while [`Plugin::restart_daemon`] swaps it.
    daemon: Option<Bg>,
    /// The daemon's arguments beyond the driver's name.
    extra: Vec<String>,
    lab: &'a Lab,
}

impl Drop for Plugin<'_> {
    /// A failing test shows plumb's daemon log (the lab's state directory
    /// goes with the test).
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in ["daemon.log.1", "daemon.log"] {
                let path = self.lab.state.path().join(log);
                if let Ok(text) = std::fs::read_to_string(&path) {
                    eprintln!("----- {log} -----\n{text}");
                }
            }
        }
    }
}

impl<'a> Plugin<'a> {
    pub fn start(lab: &'a Lab) -> Plugin<'a> {
        Self::start_with(lab, &[])
    }

    /// The same, the daemon given `extra` arguments (`--dhcp-timeout 2`).
    pub fn start_with(lab: &'a Lab, extra: &[&str]) -> Plugin<'a> {
        let docker = Dockerd::start(lab, false);
        let name = lab.name("drv");
        let mut p = Plugin {
            docker,
            name,
            daemon: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            lab,
        };
        p.start_daemon();
        p
    }

    /// Start plumb's daemon as driver [`Plugin::name`] and wait until the
    /// driver's socket answers (a stopped daemon leaves a stale one).
    pub fn start_daemon(&mut self) {
        let mut args = vec!["--docker-plugin", self.name.as_str()];
        args.extend(self.extra.iter().map(String::as_str));
        self.daemon = Some(self.docker.plumb_daemon(&args));
        let socket = format!("/run/docker/plugins/{}.sock", self.name);
        super::wait_until("the driver's socket", 10, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    /// Stop plumb's daemon (SIGTERM), keeping its log as daemon.log.1.
    pub fn stop_daemon(&mut self) {
        drop(self.daemon.take());
        let state = self.lab.state.path();
        let _ = std::fs::copy(state.join("daemon.log"), state.join("daemon.log.1"));
    }

    /// Stop plumb's daemon (SIGTERM) and start it again with the same
    /// arguments, dockerd running all along. The first daemon's log is
    /// kept as daemon.log.1 (the new one starts daemon.log afresh).
    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    /// `docker network create -d NAME ARGS... NETWORK`: its output.
    pub fn create(&self, network: &str, args: &[&str]) -> std::process::Output {
        let mut all = vec!["network", "create", "-d", &self.name];
        all.extend_from_slice(args);
        all.push(network);
        self.docker.docker(&all)
    }

    pub fn create_ok(&self, network: &str, args: &[&str]) {
        let out = self.create(network, args);
        assert!(
            out.status.success(),
            "docker network create {network}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A busybox root filesystem (its applets, `/www/index.html` with
/// [`INDEX_HTML`]) built under `dir`, as a tar to import as an image.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "www"] {
        fs::create_dir_all(root.join(sub)).expect("rootfs dir");
    }
    // Debian's busybox is dynamic (the VM's build installs it, and it
    // replaces busybox-static): its libraries and loader come along.
    fs::copy("/usr/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    for lib in must("ldd /usr/bin/busybox || true")
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("a library's folder")).expect("rootfs lib dir");
        fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).expect("applet symlink");
    }
    fs::write(root.join("www/index.html"), INDEX_HTML).expect("index.html");
    let tar = dir.join("rootfs.tar");
    must(&format!(
        "tar -C {} -cf {} .",
        root.display(),
        tar.display()
    ));
    tar
}

/// Start dockerd in the lab's fake host with D's private paths, logging to
/// D/dockerd.log (appended across restarts).
fn launch(lab: &Lab, d: &Path, legacy: bool) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("dockerd.log"))
        .expect("dockerd log");
    let p = |name: &str| d.join(name).display().to_string();
    let mut cmd = Command::new("nsenter");
    // nsenter, not `ip netns exec`: that gives dockerd a fresh /sys without
    // cgroups. nsenter execs, so the child is dockerd itself.
    cmd.arg(format!("--net=/run/netns/{}", lab.host))
        .arg("dockerd")
        .args(["--config-file", &p("daemon.json")])
        .args(["--data-root", &p("data")])
        .args(["--exec-root", &p("exec")])
        .args(["-H", &format!("unix://{}", p("docker.sock"))])
        .args(["--pidfile", &p("docker.pid")])
        .args(["--cgroup-parent", &format!("/{}", cgroup_parent(d))])
        .args(["--bip", &format!("{BRIDGE_IP}/24")])
        .args(["--iptables=true", "--userland-proxy=true"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dockerd log"))
        .stderr(log);
    if legacy {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", p("bin")));
    }
    cmd.spawn().expect("start dockerd")
}

/// The containers' cgroup parent, named after D.
fn cgroup_parent(d: &Path) -> String {
    format!(
        "plumb-{}",
        d.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// Remove an empty cgroup and its empty descendants, deepest first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// One process from /proc.
struct Proc {
    pid: i32,
    ppid: i32,
    /// Start time in clock ticks since boot: (pid, start) names a process
    /// even if the PID is reused.
    start: u64,
    zombie: bool,
    cmdline: Vec<u8>,
}

fn proc_table() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which may contain spaces.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(Proc {
                pid,
                zombie: rest.first()? == &"Z",
                ppid: rest.get(1)?.parse().ok()?,
                start: rest.get(19)?.parse().ok()?,
                cmdline: fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            })
        })
        .collect()
}

/// Run `cmd` (a host program) in the network namespace of process `pid`,
/// a container's: `nsenter -t PID -n`, nothing else shared with it.
pub fn in_netns_of(pid: u32, cmd: &str) -> Output {
    sh(&format!("nsenter -t {pid} -n {cmd}"))
}

/// The interfaces in `pid`'s network namespace other than `lo`, each with
/// its MAC and IPv4 addresses (CIDRs), from `ip -o link` and `ip -o -4 addr`.
pub fn interfaces_of(pid: u32) -> Vec<Interface> {
    let links = String::from_utf8_lossy(&in_netns_of(pid, "ip -o link show").stdout).into_owned();
    let addrs =
        String::from_utf8_lossy(&in_netns_of(pid, "ip -o -4 addr show").stdout).into_owned();
    links
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            let name = name.split('@').next().unwrap_or(name).to_string();
            let words: Vec<&str> = l.split_whitespace().collect();
            let mac = words
                .iter()
                .position(|w| w.starts_with("link/"))
                .and_then(|i| words.get(i + 1))
                .map(|m| m.to_string())
                .unwrap_or_default();
            Some((name, mac))
        })
        .filter(|(name, _)| name != "lo")
        .map(|(name, mac)| {
            let v4 = addrs
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    (w.get(1) == Some(&name.as_str()) && w.get(2) == Some(&"inet"))
                        .then(|| w.get(3).map(|a| a.to_string()))
                        .flatten()
                })
                .collect();
            Interface { name, mac, v4 }
        })
        .collect()
}

/// One interface inside a container, as the kernel there shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Lower-case, colon-separated, as `ip` prints it.
    pub mac: String,
    /// IPv4 addresses as CIDRs (`10.1.0.2/24`).
    pub v4: Vec<String>,
}

/// The attachment rows of `plumb ls` (the header dropped), split in fields:
/// TARGET NETWORK IFNAME HOST-IFNAME MAC ADDRESSES.
/// iperf3 from container `pid` to a server on the fake host at `addr`
/// (port `port`): bits per second the server received.
pub fn iperf_from(lab: &Lab, pid: u32, addr: &str, port: u16) -> f64 {
    let _server = lab.spawn_in(
        &lab.host,
        &format!("iperf3 -s -1 -B {addr} -p {port}"),
        &format!("iperf-{port}.log"),
    );
    super::wait_until("iperf3 to listen", 5, || {
        String::from_utf8_lossy(&lab.exec(&lab.host, "ss -ltn").stdout)
            .contains(&format!(":{port}"))
    });
    let out = in_netns_of(pid, &format!("iperf3 -c {addr} -p {port} -t 3 -O 1 -J"));
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("bits_per_second")
}

pub fn ls_rows(ls: &str) -> Vec<Vec<String>> {
    ls.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// Fetch `url` from inside namespace `ns` with busybox wget; None on
/// failure. (Busybox 1.35's `wget -T` segfaults, hence `timeout`.)
pub fn fetch(lab: &Lab, ns: &str, url: &str) -> Option<String> {
    let out = lab.exec(ns, &format!("timeout 5 busybox wget -q -O - {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
