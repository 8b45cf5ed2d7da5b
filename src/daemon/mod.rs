//! `plumb daemon`: the work that outlives one command. It serves the CLI on
//! a local socket (root only), runs a DHCP client task per DHCP attachment,
//! keeps every published host port bound (so that other programs cannot
//! take it), answers DNS on networks with `serve_dns`, and reconciles: an
//! attachment whose namespace is gone has its lease released and its
//! interface and store rows removed.
//!
//! Engine calls run on tokio's blocking pool, each on an engine (store
//! connection, netlink socket) of its own, taken from a few kept warm: a
//! static attach through the daemon then costs neither opening the store
//! nor rebuilding its WAL index. The async side only waits on sockets and
//! timers. Commits leave the WAL to grow; the policy thread checkpoints it
//! once no request has come for a moment, so a checkpoint's fsyncs never
//! delay an attach in a burst.

mod cluster;
mod dns;
mod docker;
mod lease;
mod links;
mod notify;
mod plugin;
pub mod protocol;
mod supervise;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::engine::{Engine, RestoreReport, attached_ns};
use crate::error::{Error, Result};
use crate::model::{Attachment, Ipam, LeaseState};
use crate::policy::ports::Holds;
use crate::report;
use crate::store::WAL_CHECKPOINT_BYTES;
pub use cluster::Join as ClusterJoin;
pub use lease::release_now;
use lease::{LeaseTask, Stop};
use protocol::{Reply, Request, Scope};

pub struct Options {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// How long an attach waits for a DHCP server before it is rolled back.
    pub acquire_timeout: Duration,
    /// How often namespaces are checked for life.
    pub reconcile_interval: Duration,
    /// Serve Docker as the network driver of this name.
    pub docker_plugin: Option<String>,
    /// The resolvers of the host, for names plumb's DNS does not know.
    pub resolv_conf: PathBuf,
    /// The cluster this host joins, if any.
    pub cluster: Option<cluster::Join>,
}

/// Idle engines kept open; more run at once when requests come together.
const WARM_ENGINES: usize = 4;

/// How long no request must have come before the WAL is checkpointed.
const QUIET: Duration = Duration::from_millis(200);

/// The WAL is checkpointed above this size even while requests keep coming
/// (about 1,300 attaches).
const WAL_BUSY_CAP: u64 = 16 << 20;

/// What every task of the daemon shares.
pub struct Ctx {
    state_dir: PathBuf,
    /// Whom this daemon serves; requests from elsewhere are turned away.
    scope: Scope,
    acquire_timeout: Duration,
    /// Lease tasks by the attachment's host interface name.
    tasks: Mutex<HashMap<String, LeaseTask>>,
    idle_engines: std::sync::Mutex<Vec<Engine>>,
    activity: Arc<Activity>,
    /// The published host ports, kept bound.
    holds: Arc<std::sync::Mutex<Holds>>,
    /// The cluster this host is in, if any.
    cluster: Option<Arc<cluster::Cluster>>,
    /// This host's attachments changed: the cluster follower records them
    /// at once instead of at its next look.
    local_change: tokio::sync::Notify,
}

impl Ctx {
    /// Run `f` on an idle engine, or a new one when all are busy. Call it
    /// from the blocking pool: engine calls block.
    fn with_engine<T>(&self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        let idle = || {
            self.idle_engines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let taken = idle().pop();
        let mut engine = match taken {
            Some(e) => e,
            None => open_engine(&self.state_dir, &self.holds)?,
        };
        let out = f(&mut engine);
        let mut idle = idle();
        if idle.len() < WARM_ENGINES {
            idle.push(engine);
        }
        out
    }
}

/// An engine for the daemon's long life: its commits leave WAL
/// checkpoints to the policy thread, and the host ports it publishes are
/// kept bound in the daemon's `holds`.
fn open_engine(state_dir: &Path, holds: &Arc<std::sync::Mutex<Holds>>) -> Result<Engine> {
    let mut engine = Engine::open(state_dir)?;
    engine.defer_checkpoints();
    engine.hold_ports_in(holds.clone());
    Ok(engine)
}

/// Requests being served, and when the last one ended.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    last_end: std::sync::Mutex<Option<Instant>>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Whether no request is in flight and none ended within `d`.
    fn quiet_for(&self, d: Duration) -> bool {
        let last_end = *self
            .last_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.in_flight.load(Ordering::SeqCst) == 0 && last_end.is_none_or(|t| t.elapsed() >= d)
    }
}

/// One request in flight; its end is stamped when dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // Stamped before the count drops, so a quiet check never sees no
        // request in flight together with an older end.
        *self
            .0
            .last_end
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn run(opts: Options) -> Result<()> {
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the daemon's runtime", e))?;
    rt.block_on(serve(opts))
}

/// Each lease task holds its namespace open: a thousand leases need more
/// descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn serve(opts: Options) -> Result<()> {
    refuse_if_running(&opts.socket)?;
    let holds = Arc::new(std::sync::Mutex::new(Holds::default()));
    let first = open_engine(&opts.state_dir, &holds)?;
    let activity = Arc::new(Activity::default());
    let ctx = Arc::new(Ctx {
        state_dir: opts.state_dir.clone(),
        scope: Scope::current(&opts.state_dir)?,
        acquire_timeout: opts.acquire_timeout,
        tasks: Mutex::new(HashMap::new()),
        idle_engines: std::sync::Mutex::new(vec![first]),
        activity: activity.clone(),
        holds: holds.clone(),
        cluster: opts.cluster.clone().map(cluster::Cluster::new),
        local_change: tokio::sync::Notify::new(),
    });
    // What a reboot took, the daemon puts back before it serves anyone:
    // its socket appears only then, so that whoever waits for it finds the
    // host restored.
    restore(&ctx, true).await?;
    let listener = bind(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "plumb daemon ready");
    let reconciler = {
        let (ctx, every) = (ctx.clone(), opts.reconcile_interval);
        supervise::task("reconcile", move || reconcile_loop(ctx.clone(), every))
    };
    let _docker = {
        let ctx = ctx.clone();
        supervise::task("docker", move || docker::watch(ctx.clone()))
    };
    let membership = ctx.cluster.clone().map(|cluster| {
        let ctx = ctx.clone();
        supervise::task("cluster", move || {
            cluster::stay_joined(ctx.clone(), cluster.clone())
        })
    });
    let dns = {
        let (state_dir, resolv_conf) = (opts.state_dir.clone(), opts.resolv_conf.clone());
        supervise::task("dns", move || {
            dns::serve(state_dir.clone(), resolv_conf.clone())
        })
    };
    let plugin_bound = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plugin_tried = Arc::new(tokio::sync::Notify::new());
    let docker_plugin = match &opts.docker_plugin {
        Some(name) => {
            let (ctx, name) = (ctx.clone(), name.clone());
            let (bound, tried) = (plugin_bound.clone(), plugin_tried.clone());
            Some(supervise::task("docker plugin", move || {
                let (ctx, name) = (ctx.clone(), name.clone());
                plugin::serve(ctx, name, bound.clone(), tried.clone())
            }))
        }
        None => None,
    };
    // Ready once Docker's driver has its socket, or could not have it yet.
    if docker_plugin.is_some() {
        plugin_tried.notified().await;
    }
    notify::ready();
    watch_policy(&opts.state_dir, activity, &holds)?;
    links::watch(&opts.state_dir, &holds)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("watch SIGTERM", e))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accept_errors = Repeated::default();
    loop {
        // A slot first: past MAX_CONNECTIONS, clients wait in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Ok(permit) = permit else { break };
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => {
                    accept_errors.ended("accept");
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        handle(ctx, stream).await;
                        drop(permit);
                    });
                }
                // Out of descriptors (EMFILE), say: the connection stays in
                // the backlog, and accepting again at once would spin.
                Err(e) => {
                    let pause = accept_errors.failed("accept", &e.to_string());
                    tokio::time::sleep(pause).await;
                }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Leases stay in the store and on the interfaces: a restarted daemon
    // resumes renewing them.
    reconciler.abort();
    dns.abort();
    if let (Some(task), Some(cluster)) = (membership, &ctx.cluster) {
        task.abort();
        cluster.stop(&ctx).await;
    }
    if let Some(p) = docker_plugin {
        p.abort();
    }
    if let Some(name) = &opts.docker_plugin
        && plugin_bound.load(Ordering::SeqCst)
    {
        let _ = std::fs::remove_file(crate::docker::plugin::socket_path(name));
    }
    let tasks: Vec<LeaseTask> = ctx.tasks.lock().await.drain().map(|(_, t)| t).collect();
    for t in tasks {
        t.stop(Stop::Keep).await;
    }
    // The next short-lived plumb would replay what is left in the WAL.
    let c = ctx.clone();
    if let Err(e) = blocking(move || c.with_engine(|e| e.checkpoint_store(0))).await {
        tracing::warn!("checkpoint the store: {e}");
    }
    let _ = std::fs::remove_file(&opts.socket);
    tracing::info!("plumb daemon stopped");
    Ok(())
}

/// Refuse to start when another daemon answers on `path`.
fn refuse_if_running(path: &Path) -> Result<()> {
    if protocol::is_running(path) {
        return Err(Error::Daemon {
            socket: path.display().to_string(),
            reason: "another plumb daemon is already listening".into(),
        });
    }
    Ok(())
}

/// Listen on `path`, mode 0600; refuse when another daemon answers there.
fn bind(path: &Path) -> Result<UnixListener> {
    let err = |reason: String| Error::Daemon {
        socket: path.display().to_string(),
        reason,
    };
    refuse_if_running(path)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("create its directory: {e}")))?;
    }
    // Only a stale socket (nobody answers, above) is replaced.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(err("it exists and is not a socket: not replacing it".into()));
        }
    }
    let _ = std::fs::remove_file(path);
    // Created with no permission for group and others from the start, so
    // there is no window in which another user could connect.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    listener.map_err(|e| err(format!("listen: {e}")))
}

/// Stop every lease task (keeping the leases), restore, resume: the tasks
/// find the interfaces restore may have made again.
async fn restore(ctx: &Arc<Ctx>, startup: bool) -> Result<RestoreReport> {
    let tasks: Vec<LeaseTask> = ctx.tasks.lock().await.drain().map(|(_, t)| t).collect();
    for t in tasks {
        t.stop(Stop::Keep).await;
    }
    // The leases of attachments whose namespace is gone (their containers
    // died while no daemon held them open), which restore removes: the
    // server hears of them from the LAN.
    let c = ctx.clone();
    let gone = blocking(move || c.with_engine(leases_gone))
        .await
        .unwrap_or_default();
    let c = ctx.clone();
    let report = blocking(move || c.with_engine(|e| e.restore())).await;
    for a in gone {
        let (c, key) = (ctx.clone(), a.host_ifname.clone());
        if let Ok(None) = blocking(move || c.with_engine(|e| e.attachment(&key))).await {
            lease::release_gone(ctx, &a).await;
        }
    }
    resume(ctx, startup).await?;
    let report = report?;
    for line in &report.repaired {
        tracing::info!("restored {line}");
    }
    for line in &report.errors {
        tracing::warn!("restore: {line}");
    }
    Ok(report)
}

/// The DHCP attachments holding a lease whose namespace is gone (Docker's
/// endpoints are Docker's: it releases their addresses, or not).
fn leases_gone(e: &mut Engine) -> Result<Vec<Attachment>> {
    let mut out = Vec::new();
    for s in e.attachments()? {
        let a = s.attachment;
        if a.dhcp.as_ref().is_some_and(|b| b.lease.is_some())
            && !a.is_staged()
            && !e.is_docker_endpoint(&a.host_ifname)?
            && attached_ns(&a).is_none()
        {
            out.push(a);
        }
    }
    Ok(out)
}

/// Renew every lease in the store; at startup, first undo the attaches a
/// killed daemon left half done (later, those are this daemon's own, in
/// flight) and drop what died meanwhile.
async fn resume(ctx: &Arc<Ctx>, startup: bool) -> Result<()> {
    let c = ctx.clone();
    let (stale, live) = blocking(move || c.with_engine(|e| resume_split(e, startup))).await?;
    for a in stale {
        tracing::info!(target = %a.target, ifname = %a.ifname, "removed a DHCP attachment left unfinished or whose namespace is gone");
    }
    let mut tasks = ctx.tasks.lock().await;
    for a in live {
        if let Some(ns) = attached_ns(&a) {
            tasks.insert(a.host_ifname.clone(), LeaseTask::spawn(ctx.clone(), a, ns));
        }
    }
    Ok(())
}

/// The DHCP attachments in the store: those to remove (left half done by a
/// killed daemon at startup, or whose namespace is gone) and those to renew.
fn resume_split(e: &mut Engine, startup: bool) -> Result<(Vec<Attachment>, Vec<Attachment>)> {
    let mut stale = Vec::new();
    let mut live = Vec::new();
    for s in e.attachments()? {
        let a = s.attachment;
        let Some(b) = &a.dhcp else { continue };
        if !startup && b.state == LeaseState::Acquiring {
            continue;
        }
        // Docker's endpoints are Docker's to remove; one waiting for its
        // lease gets it from the driver (plugin::serve).
        if a.is_staged()
            || (b.state == LeaseState::Acquiring && e.is_docker_endpoint(&a.host_ifname)?)
        {
            continue;
        }
        if b.state == LeaseState::Acquiring || attached_ns(&a).is_none() {
            e.detach_attachment(&a)?;
            stale.push(a);
        } else {
            live.push(a);
        }
    }
    Ok((stale, live))
}

/// Every half second, put back the egress routing the kernel dropped (an
/// uplink that went down flushes its routes; when it comes back, so does
/// the network's default route) and the rules of `plumb egress`, the
/// shims a parent took with it, plumb's nftables state and iptables
/// accepts if someone flushed them, and the binding of every published
/// host port; and bound the store's WAL, in a quiet moment. A thread of
/// its own with its own engine.
fn watch_policy(
    state_dir: &Path,
    activity: Arc<Activity>,
    holds: &Arc<std::sync::Mutex<Holds>>,
) -> Result<()> {
    let (state_dir, holds) = (state_dir.to_path_buf(), holds.clone());
    supervise::thread("policy", move || {
        let mut engine = open_engine(&state_dir, &holds)?;
        // A port another program holds is said once, not twice a second.
        let mut reported = std::collections::HashSet::<String>::new();
        let mut firewall_errors = Repeated::default();
        let mut shim_errors = Repeated::default();
        loop {
            crate::failpoint::panic_once("policy");
            match engine.repair_egress() {
                Ok(done) => {
                    for line in done {
                        tracing::info!("restored {line}");
                    }
                }
                Err(e) => tracing::warn!("egress routing: {e}"),
            }
            match engine.repair_shims() {
                Ok(done) => {
                    shim_errors.ended("shims");
                    for line in done {
                        tracing::info!("restored {line}");
                    }
                }
                Err(e) => {
                    let _ = shim_errors.failed("shims", &e.to_string());
                }
            }
            match engine.repair_firewall() {
                Ok(repaired) => {
                    firewall_errors.ended("firewall");
                    if repaired {
                        tracing::info!("restored plumb's nftables tables and iptables accepts");
                    }
                }
                // A failure that lasts (the xtables lock kept) is said
                // once, and retried at the next tick.
                Err(e) => {
                    let _ = firewall_errors.failed("firewall", &e.to_string());
                }
            }
            match engine.reconcile_port_holds() {
                Ok(problems) => {
                    for p in problems.iter().filter(|p| !reported.contains(*p)) {
                        tracing::warn!("published ports: {p}");
                    }
                    reported = problems.into_iter().collect();
                }
                Err(e) => tracing::warn!("published ports: {e}"),
            }
            let above = if activity.quiet_for(QUIET) {
                WAL_CHECKPOINT_BYTES
            } else {
                WAL_BUSY_CAP
            };
            if let Err(e) = engine.checkpoint_store(above) {
                tracing::warn!("checkpoint the store: {e}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

async fn reconcile_loop(ctx: Arc<Ctx>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        crate::failpoint::panic_once("reconcile");
        if let Err(e) = gc(&ctx).await {
            tracing::warn!("reconcile: {e}");
        }
    }
}

/// Remove every attachment whose namespace is gone; a DHCP one releases
/// its lease first, from the namespace its task still holds.
async fn gc(ctx: &Arc<Ctx>) -> Result<Vec<Attachment>> {
    let snapshot = tokio::time::Instant::now();
    let c = ctx.clone();
    let (gone, known) = blocking(move || {
        c.with_engine(|e| {
            let recovery = e.recover()?;
            for line in recovery.done {
                tracing::info!("{line}");
            }
            for line in recovery.errors {
                tracing::warn!("recovery: {line}");
            }
            let known: std::collections::HashSet<String> = e
                .attachments()?
                .into_iter()
                .map(|s| s.attachment.host_ifname)
                .collect();
            Ok((e.gone_attachments()?, known))
        })
    })
    .await?;
    // A task whose attachment left the store by another way (a plumb
    // without the daemon) has nothing left to renew. (One started after
    // the store was read belongs to an attach that just finished.)
    let orphans: Vec<LeaseTask> = {
        let mut tasks = ctx.tasks.lock().await;
        let names: Vec<String> = tasks
            .iter()
            .filter(|(k, t)| t.started < snapshot && !known.contains(*k))
            .map(|(k, _)| k)
            .cloned()
            .collect();
        names.iter().filter_map(|k| tasks.remove(k)).collect()
    };
    for t in orphans {
        t.stop(Stop::Keep).await;
    }
    restart_ended_lease_tasks(ctx).await?;
    let mut removed = Vec::new();
    for a in gone {
        let task = ctx.tasks.lock().await.remove(&a.host_ifname);
        let latest = match task {
            Some(t) => t.stop(Stop::Release).await.unwrap_or(a),
            // No task held its namespace: its interface is gone with it.
            None => {
                lease::release_gone(ctx, &a).await;
                a
            }
        };
        let c = ctx.clone();
        let done = latest.clone();
        blocking(move || c.with_engine(|e| e.detach_attachment(&done))).await?;
        tracing::info!(target = %latest.target, ifname = %latest.ifname, "namespace gone: attachment removed");
        removed.push(latest);
    }
    if !removed.is_empty() {
        ctx.local_change.notify_one();
    }
    Ok(removed)
}

/// A lease task that ended without being told to (it failed) is said and
/// started again from its attachment as the store has it.
async fn restart_ended_lease_tasks(ctx: &Arc<Ctx>) -> Result<()> {
    let ended: Vec<String> = {
        let tasks = ctx.tasks.lock().await;
        tasks
            .iter()
            .filter(|(_, t)| t.ended())
            .map(|(k, _)| k.clone())
            .collect()
    };
    for key in ended {
        let c = ctx.clone();
        let k = key.clone();
        let current = blocking(move || c.with_engine(|e| e.attachment(&k))).await?;
        let mut tasks = ctx.tasks.lock().await;
        let Some(old) = tasks.remove(&key) else {
            continue;
        };
        let _ = old.stop(Stop::Keep).await;
        if let Some(a) = current
            && let Some(ns) = attached_ns(&a)
        {
            tracing::error!(target = %a.target, ifname = %a.ifname, "the lease task failed; restarting it");
            tasks.insert(key, LeaseTask::spawn(ctx.clone(), a, ns));
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Conflict(format!("daemon task failed: {e}")))?
}

/// A request is one line of JSON, a few hundred bytes; one longer than
/// this is refused without being read further.
const MAX_REQUEST: u64 = 1 << 20;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once (each may buffer up to MAX_REQUEST).
const MAX_CONNECTIONS: usize = 64;

/// One error that may repeat many times a second: said when it starts, and
/// with its count when it ends or changes.
#[derive(Default)]
struct Repeated {
    error: Option<(String, u64)>,
}

impl Repeated {
    /// Note a failure of `what`; how long to wait before trying again
    /// (10 ms, doubling to 1 s while the same error lasts).
    fn failed(&mut self, what: &str, error: &str) -> Duration {
        match &mut self.error {
            Some((e, n)) if e == error => *n += 1,
            _ => {
                self.ended(what);
                tracing::warn!("{what}: {error}");
                self.error = Some((error.to_string(), 1));
            }
        }
        let n = self.error.as_ref().map_or(1, |(_, n)| *n);
        Duration::from_millis(10 << n.min(7).saturating_sub(1)).min(Duration::from_secs(1))
    }

    /// `what` works again.
    fn ended(&mut self, what: &str) {
        if let Some((e, n)) = self.error.take()
            && n > 1
        {
            tracing::warn!("{what}: {e} (repeated {n} times in all)");
        }
    }
}

async fn handle(ctx: Arc<Ctx>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let _busy = ctx.activity.begin();
    let reply = match read {
        Err(_) => Reply::Error(format!(
            "bad request: none came within {} s",
            REQUEST_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Reply::Error(format!("bad request: {e}")),
        Ok(Ok(_)) if line.len() as u64 > MAX_REQUEST => Reply::Error(format!(
            "bad request: longer than {} MiB",
            MAX_REQUEST >> 20
        )),
        Ok(Ok(_)) => match protocol::parse_request(&line) {
            Ok(call) if call.scope != ctx.scope => Reply::OtherScope(ctx.scope.clone()),
            Ok(call) => match dispatch(&ctx, call.request).await {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Error(e.to_string()),
            },
            Err(e) => Reply::Error(e),
        },
    };
    let mut out = serde_json::to_string(&reply).unwrap_or_default();
    out.push('\n');
    let _ = write.write_all(out.as_bytes()).await;
}

async fn dispatch(ctx: &Arc<Ctx>, req: Request) -> Result<Value> {
    match req {
        Request::Attach { spec, netns, owner } => attach(ctx, *spec, netns, owner).await,
        Request::Detach { target, network } => detach(ctx, target, network).await,
        Request::Bring { network } => {
            if let Some(cluster) = &ctx.cluster {
                cluster.bring(ctx, &network).await?;
            }
            Ok(json!({}))
        }
        Request::Gc => Ok(json!(
            gc(ctx)
                .await?
                .iter()
                .map(report::listed)
                .collect::<Vec<_>>()
        )),
        Request::Restore => Ok(json!(restore(ctx, false).await?)),
        Request::Status => {
            let c = ctx.clone();
            let all = blocking(move || c.with_engine(|e| e.attachments())).await?;
            let tracked = ctx.tasks.lock().await;
            Ok(json!(
                all.iter()
                    .filter(|s| s.attachment.dhcp.is_some())
                    .map(|s| {
                        let mut v = report::listed(&s.attachment);
                        v["Renewing"] = tracked.contains_key(&s.attachment.host_ifname).into();
                        v
                    })
                    .collect::<Vec<_>>()
            ))
        }
    }
}

/// An attach: on a static network all of it in one engine call; on a DHCP
/// network the lease and its task too.
async fn attach(
    ctx: &Arc<Ctx>,
    spec: crate::model::AttachSpec,
    netns: Option<String>,
    owner: Option<String>,
) -> Result<Value> {
    let mut req = spec.validate()?;
    let target = spec.target.clone();
    if target.starts_with("docker:") {
        req.declare_as = Some("cli");
    }
    let opener: Opener = Arc::new(move || {
        let opened = crate::target::Target::parse(&target)?.open();
        match (&netns, opened) {
            (None, opened) => opened,
            (Some(id), Ok(o)) if o.ns.identity() == *id => Ok(o),
            // The client's path leads elsewhere here, or nowhere.
            (Some(id), opened) => match crate::netns::find(id) {
                Some(ns) => Ok(crate::target::Opened {
                    ns,
                    name: target.clone(),
                    container: None,
                    process: None,
                }),
                None => opened,
            },
        }
    });
    attach_opened(ctx, req, opener, owner)
        .await
        .map(|a| report::listed(&a))
}

/// Opens an attach's target, on the blocking pool.
pub(crate) type Opener = Arc<dyn Fn() -> Result<crate::target::Opened> + Send + Sync>;

/// [`attach`] of a request whose target `open` opens, for `owner`.
pub(crate) async fn attach_opened(
    ctx: &Arc<Ctx>,
    req: crate::model::AttachRequest,
    open: Opener,
    owner: Option<String>,
) -> Result<Attachment> {
    let room = match &ctx.cluster {
        Some(cluster) => cluster.make_room(ctx, &req).await?,
        None => None,
    };
    let c = ctx.clone();
    let (r, o, w) = (req.clone(), open.clone(), owner.clone());
    let done = blocking(move || {
        c.with_engine(|e| {
            let net = e.network(&r.network)?.network;
            if net.ipam == Ipam::Dhcp {
                crate::engine::check_ipam(&net, &r, Ipam::Dhcp)?;
                return Ok(None);
            }
            e.attach_opened(o()?, &r, w.as_deref()).map(Some)
        })
    })
    .await?;
    let a = match done {
        Some(a) => {
            tracing::info!(target = %a.shown_target(), network = %a.network, ifname = %a.ifname, "attached");
            a
        }
        None => attach_dhcp(ctx, req.clone(), open, owner).await?,
    };
    if let (Some(room), Some(cluster)) = (room, &ctx.cluster) {
        drop(room);
        cluster.announce(&a).await;
    }
    ctx.local_change.notify_one();
    let (c, done) = (ctx.clone(), a.clone());
    blocking(move || c.with_engine(|e| e.declare(&done, &req))).await?;
    Ok(a)
}

/// A DHCP attach: the interface first, then the lease, then its task; a
/// failure anywhere takes back all of it.
async fn attach_dhcp(
    ctx: &Arc<Ctx>,
    req: crate::model::AttachRequest,
    open: Opener,
    owner: Option<String>,
) -> Result<Attachment> {
    let c = ctx.clone();
    let a = blocking(move || {
        let opened = open()?;
        c.with_engine(|e| e.attach_dhcp_link(opened, &req, owner.as_deref()))
    })
    .await?;
    let undo = |ctx: Arc<Ctx>, a: Attachment| async move {
        let done = a.clone();
        if let Err(e) = blocking(move || ctx.with_engine(|e| e.detach_attachment(&done))).await {
            tracing::warn!(target = %a.target, "rolling back a failed DHCP attach: {e}");
        }
    };
    match acquire(ctx, &a).await {
        Ok(bound) => Ok(bound),
        Err(e) => {
            undo(ctx.clone(), a.clone()).await;
            Err(Error::RolledBack {
                cause: Box::new(e),
                undone: format!("removed {} from target {}", a.ifname, a.target),
            })
        }
    }
}

/// Get a lease for DHCP attachment `a`, whose interface is up in its
/// namespace, put it on, and keep renewing it (a lease task). On failure
/// nothing is left of the lease; the interface is the caller's.
pub(crate) async fn acquire(ctx: &Arc<Ctx>, a: &Attachment) -> Result<Attachment> {
    let ns = namespace_of(a).await.ok_or_else(|| Error::Target {
        target: a.target.clone(),
        reason: "its namespace went away during the attach".into(),
    })?;
    let (ifindex, id) = lease::client_identity(&ns, a)?;
    let client = crate::ipam::dhcp::Client {
        ns: &ns,
        ifindex,
        ifname: &a.ifname,
        id: &id,
    };
    let lease = client
        .acquire(None, ctx.acquire_timeout)
        .await
        .map_err(|e| Error::Ipam {
            network: a.network.clone(),
            reason: e.to_string(),
        })?;
    let (c, pending) = (ctx.clone(), a.clone());
    let l = lease.clone();
    match blocking(move || c.with_engine(|e| e.apply_lease(&pending, &l))).await {
        Ok(bound) => {
            ctx.tasks.lock().await.insert(
                bound.host_ifname.clone(),
                LeaseTask::spawn(ctx.clone(), bound.clone(), ns),
            );
            Ok(bound)
        }
        Err(e) => {
            // The server gave an address nobody will use: hand it back.
            let mut with = a.clone();
            if let Some(b) = with.dhcp.as_mut() {
                b.lease = Some(lease);
            }
            let _ = release_now(&ns, &with).await;
            Err(e)
        }
    }
}

/// [`attached_ns`] off the runtime's threads: proving a namespace gone
/// walks /proc.
pub(crate) async fn namespace_of(a: &Attachment) -> Option<crate::netns::NsHandle> {
    let a = a.clone();
    blocking(move || Ok(attached_ns(&a))).await.ok().flatten()
}

/// Detach: every lease of the target's matching attachments is released
/// before the engine removes them.
async fn detach(ctx: &Arc<Ctx>, target: String, network: Option<String>) -> Result<Value> {
    let c = ctx.clone();
    let t = target.clone();
    let found = blocking(move || c.with_engine(|e| e.detachable_of(&t))).await?;
    for s in found
        .iter()
        .filter(|s| network.as_ref().is_none_or(|n| &s.attachment.network == n))
    {
        let a = &s.attachment;
        let task = ctx.tasks.lock().await.remove(&a.host_ifname);
        if let Some(t) = task {
            t.stop(Stop::Release).await;
        } else if a.dhcp.is_some()
            && let Some(ns) = namespace_of(a).await
        {
            let _ = release_now(&ns, a).await;
        }
    }
    let c = ctx.clone();
    let done = blocking(move || c.with_engine(|e| e.detach(&target, network.as_deref()))).await?;
    for a in &done {
        tracing::info!(target = %a.target, network = %a.network, ifname = %a.ifname, "detached");
        if let Some(cluster) = &ctx.cluster {
            let (c, n) = (ctx.clone(), a.network.clone());
            if let Ok(net) = blocking(move || c.with_engine(|e| Ok(e.network(&n)?.network))).await {
                cluster.withdraw(&net, a).await;
            }
        }
    }
    if !done.is_empty() {
        ctx.local_change.notify_one();
    }
    Ok(json!(done.iter().map(report::listed).collect::<Vec<_>>()))
}
