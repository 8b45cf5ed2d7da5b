//! The daemon's watch on Docker: containers that declare plumb networks
//! (in labels or environment, see [`crate::docker::declare`]) or were
//! attached by hand are attached at every start, detached at once when they
//! die (leases released), forgotten when destroyed, and renamed with their
//! container. After a (re)connection to dockerd, every running container
//! is reconciled: what a daemon or dockerd that was down missed is caught up.
//!
//! plumb is only a client of Docker here: Docker never waits on plumb, so a
//! slow DHCP server or a wedged plumb cannot hold a container's start up.
//! Events of one container are handled in order, those of different
//! containers at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::lease::{Stop, release_gone, release_now};
use super::{Ctx, Opener, attach_opened, blocking, namespace_of};
use crate::docker::{Client, Container, Event, declare};
use crate::error::Result;
use crate::model::{ContainerRef, NsProcess};
use crate::netns::{NsHandle, proc_ns};
use crate::target::Opened;

/// How long a container's worker waits for its next event before it ends.
const IDLE: Duration = Duration::from_secs(30);
/// Reconnection backoff when dockerd is away.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MOST: Duration = Duration::from_secs(10);

/// Follow Docker for as long as the daemon runs.
pub async fn watch(ctx: Arc<Ctx>) {
    let queues = Arc::new(Queues::default());
    let mut backoff = BACKOFF_FIRST;
    let mut said_away = false;
    loop {
        let client = match Client::connect().await {
            Ok(c) => c,
            Err(e) => {
                if !said_away {
                    tracing::info!("not following Docker for now: {e}");
                    said_away = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MOST);
                continue;
            }
        };
        said_away = false;
        tracing::info!("following Docker's containers");
        let followed = Instant::now();
        // The stream is read from now on by a task of its own, so that
        // nothing that happens during the reconciliation is missed (nor
        // left to dockerd's short replay buffer); events from a second
        // before are replayed too. A start seen twice is harmless.
        let since = crate::ipam::dhcp::now_unix().saturating_sub(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut stream = Box::pin(client.events(since));
        let reader = tokio::spawn(async move {
            while let Some(e) = stream.next().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        reconcile_all(&ctx, &client, &queues).await;
        let egress = Arc::new(tokio::sync::Notify::new());
        let follower = {
            let (ctx, client, egress) = (ctx.clone(), client.clone(), egress.clone());
            tokio::spawn(async move {
                loop {
                    egress.notified().await;
                    follow_egress(&ctx, &client).await;
                }
            })
        };
        egress.notify_one();
        while let Some(next) = rx.recv().await {
            // Any change may change what an egress rule's Docker source
            // stands for; a burst is followed once.
            egress.notify_one();
            match next {
                Ok(Event::Network) => {}
                Ok(event) => queues.push(&ctx, &client, event),
                Err(e) => {
                    tracing::warn!("{e}; following Docker again when it is back");
                    break;
                }
            }
        }
        reader.abort();
        follower.abort();
        // A stream that fails at once (a proxy refusing /events) is not
        // retried in a tight loop.
        if followed.elapsed() > BACKOFF_MOST {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MOST);
    }
}

/// Catch up with what happened while nobody watched: attach every running
/// container that declares networks, detach those that are not running.
async fn reconcile_all(ctx: &Arc<Ctx>, client: &Client, queues: &Arc<Queues>) {
    let running = match client.running().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    for id in &running {
        queues.push(ctx, client, Event::Start { id: id.clone() });
    }
    let c = ctx.clone();
    let known = blocking(move || {
        c.with_engine(|e| {
            let mut ids: Vec<String> = e
                .attachments()?
                .into_iter()
                .filter_map(|s| s.attachment.container.map(|c| c.id))
                .chain(e.declarations(None)?.into_iter().map(|d| d.id))
                .collect();
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
    })
    .await
    .unwrap_or_default();
    // Asked again one by one: a container may have started (Docker
    // restarting it) since the list was made.
    for id in known.into_iter().filter(|id| !running.contains(id)) {
        let event = match client.inspect(&id).await {
            Ok(c) if c.pid.is_some() => Event::Start { id },
            Ok(_) => Event::Die { id },
            Err(crate::error::Error::Target { .. }) => Event::Destroy { id },
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        queues.push(ctx, client, event);
    }
}

/// One queue of events per container, each served by a task of its own.
#[derive(Default)]
struct Queues {
    senders: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Event>>> {
        self.senders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(self: &Arc<Self>, ctx: &Arc<Ctx>, client: &Client, event: Event) {
        let id = match &event {
            Event::Start { id } | Event::Die { id } | Event::Destroy { id } => id,
            Event::Rename { id, .. } => id,
            Event::Network => return,
        }
        .clone();
        let mut senders = self.lock();
        let event = match senders.get(&id) {
            Some(tx) => match tx.send(event) {
                Ok(()) => return,
                Err(mpsc::error::SendError(e)) => e,
            },
            None => event,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(event);
        senders.insert(id.clone(), tx);
        let (queues, ctx, client) = (self.clone(), ctx.clone(), client.clone());
        tokio::spawn(async move { queues.serve(ctx, client, id, rx).await });
    }

    async fn serve(
        self: Arc<Self>,
        ctx: Arc<Ctx>,
        client: Client,
        id: String,
        mut rx: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            let event = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(e)) => e,
                _ => {
                    // Ends only with nothing queued, under the lock that
                    // queuing takes.
                    let mut senders = self.lock();
                    match rx.try_recv() {
                        Ok(e) => e,
                        Err(_) => {
                            senders.remove(&id);
                            return;
                        }
                    }
                }
            };
            let done = match event {
                Event::Start { id } => started(&ctx, &client, &id).await,
                Event::Die { id } => died(&ctx, &id).await,
                Event::Destroy { id } => destroyed(&ctx, &id).await,
                Event::Rename { id, name } => {
                    let c = ctx.clone();
                    blocking(move || c.with_engine(|e| e.rename_container(&id, &name))).await
                }
                Event::Network => Ok(()),
            };
            if let Err(e) = done {
                tracing::warn!(container = %id, "{e}");
            }
        }
    }
}

/// A container started: attach it to every network it declares (its
/// labels and environment, and what it was attached to by hand), with the
/// addresses and MAC it had; say what could not be done.
async fn started(ctx: &Arc<Ctx>, client: &Client, id: &str) -> Result<()> {
    let c = match client.inspect(id).await {
        Ok(c) => c,
        // Gone again already: its die and destroy follow.
        Err(crate::error::Error::Target { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(pid) = c.pid else { return Ok(()) };
    // Its endpoints on plumb's Docker networks are known by its name.
    if !c.endpoints.is_empty() {
        let (cx, cc) = (ctx.clone(), c.clone());
        // What it declares is carried out even if this fails.
        if let Err(e) = blocking(move || {
            cx.with_engine(|e| e.adopt_endpoints(&cc.id, &cc.name, pid, &cc.endpoints))
        })
        .await
        {
            tracing::warn!(container = %c.name, "its plumb endpoints: {e}");
        }
    }
    let declared = declare::read(&c.id, &c.labels, &c.env);
    let (cid, cx) = (c.id.clone(), ctx.clone());
    // What it declared before stays until it is carried out again: an
    // attachment left from its last run is detached first, and while a
    // declaration stands its addresses are kept for the new one.
    let by_hand = blocking(move || cx.with_engine(|e| e.declarations(Some(&cid))))
        .await?
        .into_iter()
        .filter(|d| d.source == "cli");
    let Ok(ns) = NsHandle::open(&proc_ns(pid)) else {
        return Ok(()); // ended already
    };
    let mut errors = declared.errors.clone();
    let mut wanted: Vec<(crate::model::AttachSpec, &'static str)> = Vec::new();
    for (network, spec) in declared.networks {
        match spec {
            Ok(spec) => wanted.push((spec, "labels")),
            Err(e) => errors.push(format!("network `{network}`: {e}")),
        }
    }
    for d in by_hand {
        if !wanted.iter().any(|(s, _)| s.network == d.spec.network) {
            wanted.push((d.spec, "cli"));
        }
    }
    if wanted.is_empty() && errors.is_empty() {
        return Ok(());
    }
    for (spec, source) in wanted {
        let network = spec.network.clone();
        if let Err(e) = attach_declared(ctx, &c, pid, &ns, spec, source).await {
            errors.push(format!("network `{network}`: {e}"));
        }
    }
    let (cid, name, errs) = (c.id.clone(), c.name.clone(), errors.clone());
    let cx = ctx.clone();
    blocking(move || cx.with_engine(|e| e.set_container_errors(&cid, &name, &errs))).await?;
    if !errors.is_empty() {
        tracing::warn!(container = %c.name, "{}", errors.join("; "));
        if declared.stop_on_error {
            tracing::warn!(container = %c.name, "stopping it, as plumb.on-error=stop asks");
            let (client, id) = (client.clone(), c.id.clone());
            tokio::spawn(async move {
                if let Err(e) = client.stop(&id).await {
                    tracing::warn!("{e}");
                }
            });
        }
    }
    Ok(())
}

/// Attach container `c` (its first process `pid`, namespace `ns`) as
/// `spec` says, unless it is attached to that network in this namespace
/// already; an attachment left from its previous run goes first.
async fn attach_declared(
    ctx: &Arc<Ctx>,
    c: &Container,
    pid: u32,
    ns: &NsHandle,
    spec: crate::model::AttachSpec,
    source: &'static str,
) -> Result<()> {
    let mut req = spec.validate()?;
    req.declare_as = Some(source);
    let (cx, cid) = (ctx.clone(), c.id.clone());
    let existing = blocking(move || cx.with_engine(|e| e.container_attachments(&cid))).await?;
    for a in existing.into_iter().filter(|a| a.network == req.network) {
        if a.is_in(ns) {
            return Ok(());
        }
        detach_one(ctx, a).await?;
    }
    let (id, name) = (c.id.clone(), c.name.clone());
    let ns = Arc::new(
        ns.try_clone()
            .map_err(|e| crate::error::Error::io("keep a container's namespace open", e))?,
    );
    let opener: Opener = Arc::new(move || {
        Ok(Opened {
            ns: ns
                .try_clone()
                .map_err(|e| crate::error::Error::io("keep a container's namespace open", e))?,
            name: format!("docker:{id}"),
            container: Some(ContainerRef {
                id: id.clone(),
                name: name.clone(),
            }),
            process: NsProcess::of(pid),
        })
    });
    attach_opened(ctx, req, opener, None).await.map(|_| ())
}

/// A container died: its attachments go now, leases released (what it
/// declares stays, with its addresses, for its next start).
async fn died(ctx: &Arc<Ctx>, id: &str) -> Result<()> {
    let (cx, cid) = (ctx.clone(), id.to_string());
    let found = blocking(move || cx.with_engine(|e| e.container_attachments(&cid))).await?;
    for a in found {
        detach_one(ctx, a).await?;
    }
    Ok(())
}

/// A container was removed: it goes, and so does everything it declared.
async fn destroyed(ctx: &Arc<Ctx>, id: &str) -> Result<()> {
    died(ctx, id).await?;
    let (cx, id) = (ctx.clone(), id.to_string());
    blocking(move || cx.with_engine(|e| e.forget_container(&id))).await
}

/// The egress rules of Docker sources select what their sources stand for
/// now: a restarted container's new address, nothing while it is stopped,
/// a network made again's new subnet.
async fn follow_egress(ctx: &Arc<Ctx>, client: &Client) {
    let c = ctx.clone();
    let rules = match blocking(move || c.with_engine(|e| e.egress_rules())).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("egress rules: {e}");
            return;
        }
    };
    for rule in rules.into_iter().filter(|r| r.source.is_docker()) {
        let now = match client.egress_sources(&rule.source).await {
            Ok(found) => found.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("egress {} ({}): {e}", rule.id, rule.source);
                continue;
            }
        };
        if now == rule.applied {
            continue;
        }
        let (c, id, selects) = (ctx.clone(), rule.id, now.clone());
        match blocking(move || c.with_engine(|e| e.egress_follow(id, selects))).await {
            Ok(true) => tracing::info!(
                "egress {id} ({}) now selects {}",
                rule.source,
                if now.is_empty() {
                    "nothing".to_string()
                } else {
                    now.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!("egress {id} ({}): {e}", rule.source),
        }
    }
}

/// Detach one attachment, its lease released first.
async fn detach_one(ctx: &Arc<Ctx>, a: crate::model::Attachment) -> Result<()> {
    let task = ctx.tasks.lock().await.remove(&a.host_ifname);
    if let Some(t) = task {
        t.stop(Stop::Release).await;
    } else if a.dhcp.is_some() {
        match namespace_of(&a).await {
            Some(ns) => {
                let _ = release_now(&ns, &a).await;
            }
            // Its interface went with it (it died while no daemon held its
            // namespace): the server hears it from the LAN.
            None => release_gone(ctx, &a).await,
        }
    }
    let cx = ctx.clone();
    let shown = a.shown_target();
    let network = a.network.clone();
    blocking(move || cx.with_engine(|e| e.detach_attachment(&a))).await?;
    ctx.local_change.notify_one();
    tracing::info!(target = %shown, network = %network, "detached");
    Ok(())
}
