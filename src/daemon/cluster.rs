//! The daemon's membership in a cluster (`--cluster-store`): it registers
//! the host and keeps the registration alive for as long as it runs; when
//! the store goes away it says so once and joins again when it is back
//! (the data plane meanwhile is left as it is). At a clean stop it leaves
//! at once, so peers need not wait for the lease to expire; unless it has
//! containers on the cluster's networks, which keep running: then the
//! registration stays for a restarted daemon to take over.
//!
//! It talks to one etcd member at a time. When that member fails, the
//! registration is renewed through another one, under the same lease: a
//! store of three members that loses one (its leader included) loses no
//! host, and no host's containers drop out of the others' overlays. Only a
//! lease the cluster no longer has is replaced (a new join).
//!
//! While joined it follows the cluster (a watch on its keys, and a look
//! every 30 s whatever the watch says): it makes each cluster
//! network on this host, applies the cluster's rules, keeps the host's
//! address blocks (claimed, given back, a gone host's released after the
//! grace), records this host's containers on them (bound to its lease, so
//! they go with the host) and programs each overlay and the policy sets
//! with the other hosts' containers. An attach or detach here starts a pass
//! at once. Every pass reads the whole record, so a watch that fell behind
//! costs nothing but a pass. What the watch says of other hosts' containers
//! is applied as it is, before any pass, and without one when that is all
//! it says: with a hundred hosts, a pass on every host for each change was
//! most of the time an attach took to be reached, and a dead host to be
//! forgotten. Following has its own connection, which fails
//! over by itself: a slow pass never delays a keep-alive.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{Mutex, watch};

use super::{Ctx, Repeated, blocking};
use crate::cluster::{ClusterStore, Endpoint, Member, Renewal, Seen};
use crate::driver::overlay::{Overlay, Remote};
use crate::error::{Error, Result};
use crate::model::{AttachRequest, Network};
use crate::store::host_extras::Block;

/// How often the cluster is read again when nothing is said to change
/// (changes come by the watch and by this host's attaches; a look on top
/// repairs what someone changed by hand). Every look reads every
/// endpoint: with a hundred hosts, a 3 s look kept two cores busy.
const LOOK_AGAIN: Duration = Duration::from_secs(30);
/// Fewer free addresses than this in a host's blocks of a subnet where it
/// has containers, and it claims another block; an empty block of its own
/// is given back when the others keep at least this many free.
const LOW_WATER: u128 = 8;
/// A block claimed this recently is kept even if empty: the attach it
/// was claimed for may not have taken its address yet.
const FRESH: Duration = Duration::from_secs(10);

/// The owner of a rule applied for the cluster, before its id there.
const CLUSTER_RULE: &str = "cluster:";

/// What the daemon joins as.
#[derive(Debug, Clone)]
pub struct Join {
    pub store: ClusterStore,
    pub me: Member,
    pub ttl: Duration,
    /// How long the blocks of a host that left stay its, for it to come
    /// back to.
    pub block_grace: Duration,
}

impl Join {
    /// Container `a` of this host, as the cluster records it.
    fn endpoint_of(&self, a: &crate::model::Attachment) -> Endpoint {
        Endpoint {
            network: a.network.clone(),
            host: self.me.host.clone(),
            mac: a.mac,
            addresses: a.addresses.iter().map(|n| n.addr()).collect(),
            vtep: self.me.vtep,
            selectors: a.selector_keys(),
        }
    }

    /// The member this host asks first: hosts spread over the members
    /// (the same one each time for a host).
    fn first_member(&self) -> usize {
        let h = self
            .me
            .host
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        usize::try_from(h % self.store.endpoints.len() as u64).unwrap_or(0)
    }
}

/// The daemon's cluster: what it joins as, and what it holds while joined.
pub struct Cluster {
    join: Join,
    /// The registration's lease, while joined.
    held: Mutex<Option<i64>>,
    /// The connection the cluster is followed through, while it is.
    follower: Mutex<Option<etcd_client::Client>>,
    /// This host's claims and releases of blocks, one at a time (a pass
    /// and attaches), with when each block was claimed.
    claims: Mutex<HashMap<IpNet, Instant>>,
    /// On-demand networks made here for an attach, and when: kept a moment
    /// even with no container yet.
    brought: Mutex<HashMap<String, Instant>>,
    /// Per network, the attaches here between their room being made and
    /// their addresses taken.
    in_flight: Arc<std::sync::Mutex<HashMap<String, u128>>>,
}

/// An attach to a cluster network on its way, from [`Cluster::make_room`]
/// until dropped (once its addresses are taken): counted in, so that
/// attaches at once on one host claim room for all of them, not each for
/// itself from the same free count.
pub struct Room {
    in_flight: Arc<std::sync::Mutex<HashMap<String, u128>>>,
    network: String,
}

impl Room {
    /// Count one attach to `network` in; how many were on their way.
    fn enter(
        in_flight: &Arc<std::sync::Mutex<HashMap<String, u128>>>,
        network: &str,
    ) -> (Room, u128) {
        let mut counts = in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(network.to_string()).or_default();
        let before = *n;
        *n += 1;
        let room = Room {
            in_flight: in_flight.clone(),
            network: network.to_string(),
        };
        (room, before)
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut counts = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.network) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.network);
            }
        }
    }
}

impl Cluster {
    pub fn new(join: Join) -> Arc<Cluster> {
        Arc::new(Cluster {
            join,
            held: Mutex::default(),
            follower: Mutex::default(),
            claims: Mutex::default(),
            brought: Mutex::default(),
            in_flight: Arc::default(),
        })
    }

    /// At a clean stop: leave at once, unless containers here are on the
    /// cluster's networks. Those keep running, so their record stays until
    /// the lease expires: a daemon restarted meanwhile (an upgrade, a
    /// `systemctl restart`) takes it over, and no peer forgets them.
    pub async fn stop(&self, ctx: &Arc<Ctx>) {
        let c = ctx.clone();
        let on_overlays = blocking(move || {
            c.with_engine(|e| {
                let overlays: Vec<String> = e
                    .networks()?
                    .into_iter()
                    .filter(|n| overlay_of(&n.network).is_some())
                    .map(|n| n.network.name)
                    .collect();
                Ok(e.attachments()?
                    .iter()
                    .filter(|a| overlays.contains(&a.attachment.network))
                    .count())
            })
        })
        .await;
        match on_overlays {
            Ok(0) => self.leave().await,
            Ok(containers) => tracing::info!(
                containers,
                "containers here stay on the cluster's networks: the registration stays until its lease expires (in {} s), for a restarted daemon to take over",
                self.join.ttl.as_secs()
            ),
            Err(e) => {
                tracing::warn!("{e}");
                self.leave().await;
            }
        }
    }

    /// Leave now, if joined.
    async fn leave(&self) {
        let store = &self.join.store;
        let Some(lease) = self.held.lock().await.take() else {
            return;
        };
        let left = async {
            let mut client = store.connect().await?;
            store.leave(&mut client, lease).await
        };
        match tokio::time::timeout(Duration::from_secs(2), left).await {
            Ok(Ok(())) => tracing::info!(cluster = %store.name, "left the cluster"),
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(_) => tracing::warn!("the cluster store did not answer the leave in time"),
        }
    }

    /// Before an attach to a cluster network: the blocks of the addresses
    /// it asks for claimed if nobody has them, and a block with room for
    /// each family it does not. Without the store, the attach makes do
    /// with the blocks this host has, and one that needs another is
    /// refused, saying so. A cluster network's attach holds the [`Room`]
    /// until its addresses are taken.
    pub async fn make_room(&self, ctx: &Arc<Ctx>, req: &AttachRequest) -> Result<Option<Room>> {
        let Some(net) = self.bring(ctx, &req.network).await? else {
            // The attach says what is wrong with the network.
            return Ok(None);
        };
        let Some(overlay) = overlay_of(&net) else {
            return Ok(None);
        };
        let mut claims = self.claims.lock().await;
        let (c, name) = (ctx.clone(), net.name.clone());
        let free = blocking(move || c.with_engine(|e| e.free_in_own_blocks(&name))).await?;
        // Those on their way take their addresses from the same blocks.
        let (room, ahead) = Room::enter(&self.in_flight, &net.name);
        let client = self.follower.lock().await.clone();
        let Some(mut client) = client else {
            let full = free
                .iter()
                .find(|(s, f)| *f <= ahead && !req.ips.iter().any(|ip| s.contains(ip)));
            return match full {
                None => Ok(Some(room)),
                Some((subnet, _)) => Err(Error::Cluster {
                    store: self.join.store.endpoints.join(","),
                    reason: format!(
                        "not joined now: this host's blocks of {subnet} (network `{}`) are full, and another is claimed only through the store",
                        net.name
                    ),
                }),
            };
        };
        let mut claimed = self.join.store.blocks(&mut client, &net.name).await?;
        for (subnet, free) in free {
            let asked: Vec<IpNet> = req
                .ips
                .iter()
                .filter(|ip| subnet.contains(*ip))
                .filter_map(|ip| overlay.block_of(subnet, *ip))
                .collect();
            for block in &asked {
                if !claimed.iter().any(|(b, _)| b == block)
                    && !self
                        .claim(&mut client, &net, *block, &mut claimed, &mut claims)
                        .await?
                {
                    // Another host took it a moment ago: read again, so
                    // the attach's refusal names it.
                    claimed = self.join.store.blocks(&mut client, &net.name).await?;
                }
            }
            let mut free = free;
            while asked.is_empty() && free <= ahead {
                match self
                    .claim_next(
                        &mut client,
                        &net,
                        &overlay,
                        subnet,
                        &mut claimed,
                        &mut claims,
                    )
                    .await
                {
                    Ok(block) => free += overlay_free(&net, &[], block),
                    // No block left: what is free goes to who comes first.
                    Err(Error::Ipam { .. }) if free > 0 => break,
                    Err(e) => return Err(e),
                }
            }
        }
        // Mirrored whether or not this host claimed: an asked address in a
        // block another host took a moment ago is refused naming that host.
        self.mirror(ctx, &net.name, &claimed).await?;
        Ok(Some(room))
    }

    /// Record container `a`, just attached to a cluster network, now: the
    /// other hosts reach it without waiting for this host's next pass
    /// (which records it if this fails). Its addresses are in this host's
    /// blocks: [`Cluster::make_room`] saw to that.
    pub async fn announce(&self, a: &crate::model::Attachment) {
        let Some(lease) = *self.held.lock().await else {
            return;
        };
        let client = self.follower.lock().await.clone();
        let Some(mut client) = client else {
            return;
        };
        let e = self.join.endpoint_of(a);
        let published = self.join.store.publish(&mut client, &e, lease);
        if let Err(err) = in_time(published).await {
            tracing::warn!(network = %a.network, mac = %a.mac, "{err}: recorded at the next pass");
        }
    }

    /// Take the record of container `a`, just detached from a cluster
    /// network (`net`), away now: the others stop reaching it, and one who
    /// waits for it to go (a topology's `down`) need not wait for this
    /// host's next pass (which withdraws it if this fails).
    pub async fn withdraw(&self, net: &Network, a: &crate::model::Attachment) {
        if overlay_of(net).is_none() {
            return;
        }
        let client = self.follower.lock().await.clone();
        let Some(mut client) = client else {
            return;
        };
        let e = self.join.endpoint_of(a);
        if let Err(err) = in_time(self.join.store.withdraw(&mut client, &e)).await {
            tracing::warn!(network = %a.network, mac = %a.mac, "{err}: withdrawn at the next pass");
        }
    }

    /// Network `name` as this host has it, cluster network `name` made
    /// here first if the cluster has it and this host does not (an
    /// on-demand network, one a pass has not made yet). None if it is no
    /// one's: an attach to it says so itself.
    pub async fn bring(&self, ctx: &Arc<Ctx>, name: &str) -> Result<Option<Network>> {
        // Held until the network is here and marked fresh: a pass that
        // takes unused on-demand networks away waits for it.
        let mut brought = self.brought.lock().await;
        let local = |ctx: &Arc<Ctx>| {
            let (c, n) = (ctx.clone(), name.to_string());
            async move {
                blocking(move || c.with_engine(|e| Ok(e.network(&n)?.network)))
                    .await
                    .ok()
            }
        };
        if let Some(net) = local(ctx).await {
            if overlay_of(&net).is_some() {
                brought.insert(name.to_string(), Instant::now());
            }
            return Ok(Some(net));
        }
        let client = self.follower.lock().await.clone();
        let Some(mut client) = client else {
            return Ok(None);
        };
        let Some(spec) = self.join.store.network(&mut client, name).await? else {
            return Ok(None);
        };
        brought.insert(name.to_string(), Instant::now());
        make_here(ctx, &self.join, spec).await?;
        Ok(local(ctx).await)
    }

    /// Claim `block`; true if it is this host's now.
    async fn claim(
        &self,
        client: &mut etcd_client::Client,
        net: &Network,
        block: IpNet,
        claimed: &mut Vec<(IpNet, String)>,
        claims: &mut HashMap<IpNet, Instant>,
    ) -> Result<bool> {
        let me = &self.join.me.host;
        if !self.join.store.claim(client, &net.name, block, me).await? {
            return Ok(false);
        }
        tracing::info!(network = %net.name, block = %block, "claimed an address block");
        claimed.push((block, me.clone()));
        claims.insert(block, Instant::now());
        Ok(true)
    }

    /// Claim the first block of `subnet` nobody has (one another host
    /// takes meanwhile is passed over); the block.
    async fn claim_next(
        &self,
        client: &mut etcd_client::Client,
        net: &Network,
        overlay: &Overlay,
        subnet: IpNet,
        claimed: &mut Vec<(IpNet, String)>,
        claims: &mut HashMap<IpNet, Instant>,
    ) -> Result<IpNet> {
        for block in overlay.blocks_of(subnet) {
            if !claimed.iter().any(|(b, _)| *b == block)
                && self.claim(client, net, block, claimed, claims).await?
            {
                return Ok(block);
            }
        }
        Err(Error::Ipam {
            network: net.name.clone(),
            reason: format!("every address block of {subnet} is claimed by a host"),
        })
    }

    /// Mirror `claimed` into this host's store, where attaches find it.
    async fn mirror(
        &self,
        ctx: &Arc<Ctx>,
        network: &str,
        claimed: &[(IpNet, String)],
    ) -> Result<()> {
        let blocks: Vec<Block> = claimed
            .iter()
            .map(|(block, host)| Block {
                block: *block,
                host: host.clone(),
                mine: *host == self.join.me.host,
            })
            .collect();
        let (c, n) = (ctx.clone(), network.to_string());
        blocking(move || c.with_engine(|e| e.set_cluster_blocks(&n, &blocks))).await
    }
}

/// What an attach or detach asks of the store itself, given up after
/// [`IN_TIME`]: a member that stopped answering must not hold the attach
/// (the next pass does it).
async fn in_time(asked: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(IN_TIME, asked)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Conflict(format!(
                "the cluster store did not answer in {} s",
                IN_TIME.as_secs()
            )))
        })
}

/// See [`in_time`].
const IN_TIME: Duration = Duration::from_secs(2);

/// What a daemon remembers from one pass to the next.
#[derive(Default)]
struct Memory {
    /// Blocks of hosts that are not members, since when they were seen so.
    absent: HashMap<(String, IpNet), Instant>,
    /// Containers whose addresses are in another host's block, told once.
    told: HashSet<(String, crate::model::Mac)>,
    /// The cluster's rules this host refused, told once.
    refused: HashSet<i64>,
    /// The other hosts' containers by their keys, as the last pass read
    /// them and the watch changed them since; None until a pass reads them
    /// through the connection followed now.
    others: Option<HashMap<String, Endpoint>>,
}

/// Join and stay joined until the daemon stops, and follow the cluster
/// meanwhile.
pub async fn stay_joined(ctx: Arc<Ctx>, cluster: Arc<Cluster>) {
    let (lease_tx, lease_rx) = watch::channel(None);
    tokio::join!(hold(&cluster, lease_tx), follow(&ctx, &cluster, lease_rx));
}

/// Hold a registration: join, keep the lease alive through whichever
/// member answers, join again when the lease is lost. The lease held is
/// told through `lease_tx`.
async fn hold(cluster: &Cluster, lease_tx: watch::Sender<Option<i64>>) {
    let join = &cluster.join;
    let mut errors = Repeated::default();
    let mut member = join.first_member();
    loop {
        let joined = async {
            let (mut client, m) = join.store.connect_from(member).await?;
            member = m;
            let lease = join.store.join(&mut client, &join.me, join.ttl).await?;
            Ok::<_, Error>((client, lease))
        }
        .await;
        let (client, lease) = match joined {
            Ok(j) => j,
            Err(e) => {
                let pause = errors.failed("cluster", &e.to_string());
                // At least a second between attempts: a store that refuses
                // at once is not asked in a tight loop.
                tokio::time::sleep(pause.max(Duration::from_secs(1))).await;
                member += 1;
                continue;
            }
        };
        errors.ended("cluster");
        tracing::info!(
            cluster = %join.store.name,
            host = %join.me.host,
            vtep = %join.me.vtep,
            member = %join.store.endpoint(member),
            "joined the cluster"
        );
        *cluster.held.lock().await = Some(lease);
        lease_tx.send_replace(Some(lease));
        let lost = keep(join, client, &mut member, lease).await;
        lease_tx.send_replace(None);
        cluster.held.lock().await.take();
        let _ = errors.failed("cluster", &lost.to_string());
    }
}

/// Keep `lease` alive, through `client`'s member (`member`) and, when
/// that one fails, through the next that answers; returns once the cluster
/// says the lease is gone.
async fn keep(
    join: &Join,
    mut client: etcd_client::Client,
    member: &mut usize,
    lease: i64,
) -> Error {
    let mut expires = Instant::now() + join.ttl;
    // Said once, however often it repeats (a member that fails every
    // keep-alive at once is not asked in a tight loop either).
    let mut errors = Repeated::default();
    loop {
        let before = expires;
        let broken = match join
            .store
            .keep_alive(&mut client, lease, join.ttl, &mut expires)
            .await
        {
            Renewal::Lost(e) => return e,
            Renewal::Broken(e) => e,
        };
        if expires != before {
            errors.ended("cluster");
        }
        let pause = errors.failed(
            "cluster",
            &format!("{broken}: renewing the registration through another member"),
        );
        tokio::time::sleep(pause).await;
        // Whatever the time left on the lease: the cluster says whether
        // it still has it (a new leader extends every lease).
        loop {
            match join.store.connect_from(*member + 1).await {
                Ok((c, m)) => {
                    (client, *member) = (c, m);
                    let left = expires.saturating_duration_since(Instant::now());
                    tracing::info!(
                        member = %join.store.endpoint(m),
                        "renewing the registration through this member ({} ms were left)",
                        left.as_millis()
                    );
                    break;
                }
                Err(e) => {
                    // Quick at first: the lease may have only a second left.
                    let pause = errors.failed("cluster", &e.to_string());
                    tokio::time::sleep(pause.max(Duration::from_millis(50))).await;
                }
            }
        }
    }
}

/// Follow the cluster for as long as the daemon runs, under the lease
/// `lease` says this host holds (nothing while it holds none): every
/// change, and at least every 30 s, one [`pass`]. A member that fails is
/// left for the next.
async fn follow(ctx: &Arc<Ctx>, cluster: &Cluster, mut lease: watch::Receiver<Option<i64>>) {
    let join = &cluster.join;
    let mut member = join.first_member();
    let mut memory = Memory::default();
    // Said once, however often it repeats.
    let mut errors = Repeated::default();
    loop {
        if lease.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let e = match join.store.connect_from(member).await {
            Ok((client, m)) => {
                member = m;
                *cluster.follower.lock().await = Some(client.clone());
                let e = follow_through(ctx, cluster, client, &mut lease, &mut errors, &mut memory)
                    .await;
                cluster.follower.lock().await.take();
                e
            }
            Err(e) => e,
        };
        let pause = errors.failed(
            "following the cluster",
            &format!("{e}: following it through another member"),
        );
        // Never a tight loop, not even when a member fails every pass.
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
        member += 1;
    }
}

/// Follow the cluster through `client` until its member fails; `failing`
/// ends once a pass is done.
async fn follow_through(
    ctx: &Arc<Ctx>,
    cluster: &Cluster,
    mut client: etcd_client::Client,
    lease: &mut watch::Receiver<Option<i64>>,
    failing: &mut Repeated,
    memory: &mut Memory,
) -> Error {
    let join = &cluster.join;
    let mut changes = match join.store.watch(&mut client).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut errors = Repeated::default();
    // What the watch saw since the last look; at first, only that a pass
    // is due.
    let mut news = News::pass();
    memory.others = None;
    loop {
        let held = *lease.borrow_and_update();
        if let Some(held) = held {
            let news = std::mem::replace(&mut news, News::pass());
            let mut done = others_changed(ctx, memory, news.seen).await;
            if done.is_ok() && news.pass {
                done = pass(ctx, cluster, &mut client, held, memory).await;
            }
            match done {
                Ok(()) => {
                    errors.ended("cluster pass");
                    failing.ended("following the cluster");
                }
                // The store failed (this member): another one.
                Err(e @ Error::Cluster { .. }) => return e,
                Err(e) => {
                    memory.others = None;
                    let _ = errors.failed("cluster pass", &e.to_string());
                }
            }
        }
        let look = next_look(cluster, memory).await;
        tokio::select! {
            m = changes.message() => match m {
                Ok(Some(first)) => {
                    // A burst of changes (a host's containers, a lease's
                    // keys expiring together) is one pass.
                    let mut burst = vec![first];
                    while let Ok(Ok(Some(more))) =
                        tokio::time::timeout(Duration::ZERO, changes.message()).await
                    {
                        burst.push(more);
                    }
                    // Cancelled (it fell behind a compaction, say), it
                    // says nothing more: watched again, after a pass.
                    if let Some(r) = burst.iter().find(|r| r.canceled()) {
                        return Error::Conflict(format!(
                            "the cluster's watch was cancelled (compacted at revision {}{})",
                            r.compact_revision(),
                            match r.cancel_reason() {
                                "" => String::new(),
                                why => format!(": {why}"),
                            }
                        ));
                    }
                    news = News::read(join, memory, &burst);
                }
                Ok(None) => return Error::Conflict("the cluster's watch ended".into()),
                Err(e) => {
                    let e = crate::cluster::brief(&e);
                    return Error::Conflict(format!("the cluster's watch failed: {e}"));
                }
            },
            // A new lease: this host's containers recorded under it now.
            r = lease.changed() => if r.is_err() {
                return Error::Conflict("the registration ended".into());
            },
            // A container came or went here: the others learn it now.
            () = ctx.local_change.notified() => {}
            _ = tokio::time::sleep(look) => {}
        }
    }
}

/// What the watch said since the last look.
struct News {
    /// Other hosts' containers recorded or removed.
    seen: Vec<Seen>,
    /// Whether a pass is due too: the watch saw more than those.
    pass: bool,
}

impl News {
    /// Nothing known but that a pass is due.
    fn pass() -> News {
        News {
            seen: Vec::new(),
            pass: true,
        }
    }

    /// What `burst` says. Other hosts' containers are read only when a
    /// pass read them before (else a pass is due). This host's own records
    /// are its passes' doing; one of them removed is published again by a
    /// pass.
    fn read(join: &Join, memory: &Memory, burst: &[etcd_client::WatchResponse]) -> News {
        let Some(others) = memory.others.as_ref() else {
            return News::pass();
        };
        let me = &join.me.host;
        let mut news = News {
            seen: Vec::new(),
            pass: false,
        };
        for response in burst {
            for event in response.events() {
                let Some(kv) = event.kv() else {
                    news.pass = true;
                    continue;
                };
                let put = event.event_type() == etcd_client::EventType::Put;
                match join.store.seen(put, kv.key(), kv.value()) {
                    Seen::Recorded(_, e) if e.host == *me => {}
                    Seen::Recorded(key, e) => news.seen.push(Seen::Recorded(key, e)),
                    Seen::Removed { host, .. } if host == *me => news.pass = true,
                    Seen::Removed { key, host } if others.contains_key(&key) => {
                        news.seen.push(Seen::Removed { key, host })
                    }
                    Seen::Removed { .. } => {}
                    Seen::Other => news.pass = true,
                }
            }
        }
        news
    }
}

/// Apply other hosts' containers recorded or removed, as [`News::read`]
/// read them, to the overlays they are on and the policy sets.
async fn others_changed(ctx: &Arc<Ctx>, memory: &mut Memory, seen: Vec<Seen>) -> Result<()> {
    let Some(others) = memory.others.as_mut() else {
        return Ok(());
    };
    let mut touched = BTreeSet::new();
    for s in seen {
        let old = match s {
            Seen::Recorded(key, e) => {
                touched.insert(e.network.clone());
                others.insert(key, e)
            }
            Seen::Removed { key, .. } => others.remove(&key),
            Seen::Other => None,
        };
        touched.extend(old.map(|e| e.network));
    }
    if touched.is_empty() {
        return Ok(());
    }
    let here: Vec<String> = local_networks(ctx)
        .await?
        .into_iter()
        .filter(|n| overlay_of(n).is_some() && touched.contains(&n.name))
        .map(|n| n.name)
        .collect();
    let others: Vec<Endpoint> = others.values().cloned().collect();
    reach(ctx, &here, &others).await
}

/// Each overlay of `networks` reaching the other hosts' containers
/// (`others`), and every policy set naming them holding their addresses.
async fn reach(ctx: &Arc<Ctx>, networks: &[String], others: &[Endpoint]) -> Result<()> {
    let named: BTreeSet<(String, IpAddr)> = others
        .iter()
        .flat_map(|e| {
            e.selectors
                .iter()
                .flat_map(|k| e.addresses.iter().map(move |a| (k.clone(), *a)))
        })
        .collect();
    let c = ctx.clone();
    if blocking(move || c.with_engine(|e| e.set_cluster_selectors(named))).await? {
        tracing::debug!("the other hosts' containers changed in policy selectors");
    }
    for network in networks {
        let remotes: Vec<Remote> = others
            .iter()
            .filter(|e| &e.network == network)
            .map(|e| Remote {
                mac: e.mac,
                addresses: e.addresses.clone(),
                vtep: e.vtep,
            })
            .collect();
        let (c, n) = (ctx.clone(), network.clone());
        let done = blocking(move || c.with_engine(|e| e.program_overlay(&n, &remotes))).await?;
        for line in done {
            tracing::info!(network = %network, "{line}");
        }
    }
    Ok(())
}

/// How long until a pass is due though nothing changes: when a gone
/// host's blocks reach their grace, or an empty block of this host's or an
/// on-demand network made for an attach is no longer fresh, if sooner than
/// [`LOOK_AGAIN`].
async fn next_look(cluster: &Cluster, memory: &Memory) -> Duration {
    let now = Instant::now();
    let graces = memory
        .absent
        .values()
        .map(|since| *since + cluster.join.block_grace);
    let mut fresh: Vec<Instant> = cluster
        .claims
        .lock()
        .await
        .values()
        .map(|claimed| *claimed + FRESH)
        .collect();
    fresh.extend(
        cluster
            .brought
            .lock()
            .await
            .values()
            .map(|made| *made + FRESH),
    );
    graces
        .chain(fresh)
        .filter(|due| *due > now)
        .map(|due| due - now)
        .min()
        .map_or(LOOK_AGAIN, |d| d.min(LOOK_AGAIN))
}

/// Bring this host in line with the cluster's record: its networks made
/// here, its address blocks kept, its containers on them recorded, every
/// overlay reaching the other hosts' containers.
async fn pass(
    ctx: &Arc<Ctx>,
    cluster: &Cluster,
    client: &mut etcd_client::Client,
    lease: i64,
    memory: &mut Memory,
) -> Result<()> {
    let join = &cluster.join;
    let specs = join.store.networks(client).await?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let local = local_networks(ctx).await?;
    // A cluster network the cluster no longer has goes, once nothing here
    // is on it.
    let gone = local
        .iter()
        .filter(|n| overlay_of(n).is_some() && !names.contains(&n.name))
        .map(|n| n.name.clone());
    for name in gone {
        let (c, n) = (ctx.clone(), name.clone());
        match blocking(move || c.with_engine(|e| e.network_rm(&n, false))).await {
            Ok(_) => tracing::info!(network = %name, "took the cluster's former network away"),
            Err(e) => tracing::warn!(network = %name, "the cluster no longer has it: {e}"),
        }
    }
    let on_demand: Vec<String> = specs
        .iter()
        .filter(|s| s.on_demand)
        .map(|s| s.name.clone())
        .collect();
    // Every host's networks made here; an on-demand one when an attach
    // asks for it.
    for spec in specs
        .into_iter()
        .filter(|s| !s.on_demand && !local.iter().any(|n| n.name == s.name))
    {
        let name = spec.name.clone();
        if let Err(e) = make_here(ctx, join, spec).await {
            tracing::warn!(network = %name, "the cluster's network: {e}");
        }
    }
    if let Err(e) = keep_rules(ctx, cluster, client, memory).await {
        tracing::warn!("the cluster's rules: {e}");
    }
    // The cluster's networks as this host has them now.
    let here: Vec<Network> = local_networks(ctx)
        .await?
        .into_iter()
        .filter(|n| names.contains(&n.name))
        .collect();
    let members: Vec<String> = join
        .store
        .members(client)
        .await?
        .into_iter()
        .map(|m| m.host)
        .collect();
    // Read before this host's attachments: a container an attach records
    // meanwhile (Cluster::announce) is then either in both or not yet in
    // the record, never withdrawn as gone.
    let listed = join.store.endpoints(client).await?;
    let c = ctx.clone();
    let attachments: Vec<_> = blocking(move || c.with_engine(|e| e.attachments()))
        .await?
        .into_iter()
        .map(|s| s.attachment)
        .filter(|a| names.contains(&a.network))
        .collect();
    // Per network, the blocks as the cluster has them after this host's
    // claims and releases.
    let mut blocks: HashMap<String, Vec<(IpNet, String)>> = HashMap::new();
    for net in &here {
        let containers = attachments.iter().filter(|a| a.network == net.name).count();
        match keep_addresses(ctx, cluster, client, net, containers, &members, memory).await {
            Ok(claimed) => {
                blocks.insert(net.name.clone(), claimed);
            }
            Err(e) => tracing::warn!(network = %net.name, "address blocks: {e}"),
        }
    }
    // A container holding an address of another host's block (this host
    // was away past the grace, and the block went to another) is not
    // recorded: the address is that host's now.
    let mut mine: Vec<Endpoint> = Vec::new();
    for a in &attachments {
        let theirs = blocks.get(&a.network).and_then(|claimed| {
            a.addresses.iter().find_map(|n| {
                claimed
                    .iter()
                    .find(|(b, host)| b.contains(&n.addr()) && *host != join.me.host)
                    .map(|(b, host)| (n.addr(), *b, host.clone()))
            })
        });
        if let Some((address, block, host)) = theirs {
            if memory.told.insert((a.network.clone(), a.mac)) {
                tracing::error!(
                    target = %a.shown_target(),
                    network = %a.network,
                    %address,
                    "the address is in block {block}, host `{host}`'s now: the cluster does not reach this container; detach and attach it again"
                );
            }
            continue;
        }
        mine.push(join.endpoint_of(a));
    }
    memory
        .told
        .retain(|(n, m)| attachments.iter().any(|a| a.network == *n && a.mac == *m));
    // Recorded under another lease is published again: a daemon back
    // after a crash finds its containers still under its predecessor's
    // lease, which will expire.
    for e in mine
        .iter()
        .filter(|e| !listed.iter().any(|(r, l)| r == *e && *l == lease))
    {
        join.store.publish(client, e, lease).await?;
    }
    let recorded: Vec<Endpoint> = listed.into_iter().map(|(e, _)| e).collect();
    let others: Vec<Endpoint> = recorded
        .iter()
        .filter(|e| e.host != join.me.host)
        .cloned()
        .collect();
    // Withdrawn: what this host recorded and no longer has (one whose
    // addresses changed was written over above, under the same key).
    for e in recorded.iter().filter(|e| {
        e.host == join.me.host
            && !mine
                .iter()
                .any(|m| m.network == e.network && m.mac == e.mac)
    }) {
        join.store.withdraw(client, e).await?;
    }
    // The other hosts' containers, in the sets of the selectors that
    // name them (this host's rules apply to them too), and reached.
    let networks: Vec<String> = here.iter().map(|n| n.name.clone()).collect();
    reach(ctx, &networks, &others).await?;
    memory.others = Some(
        others
            .into_iter()
            .map(|e| (join.store.endpoint_key(&e), e))
            .collect(),
    );
    // An on-demand network no container here is on goes (not one Docker
    // has, nor one made a moment ago for an attach still under way).
    let mut brought = cluster.brought.lock().await;
    brought.retain(|_, made| made.elapsed() < FRESH);
    for name in here.iter().map(|n| &n.name).filter(|n| {
        on_demand.contains(n)
            && !brought.contains_key(*n)
            && !attachments.iter().any(|a| &a.network == *n)
    }) {
        let (c, n) = (ctx.clone(), name.clone());
        let docker = blocking(move || c.with_engine(|e| Ok(e.network_details(&n)?.docker))).await?;
        if docker.is_some() {
            continue;
        }
        let (c, n) = (ctx.clone(), name.clone());
        match blocking(move || c.with_engine(|e| e.network_rm(&n, false))).await {
            Ok(_) => {
                tracing::info!(network = %name, "took the on-demand network away: no container here")
            }
            Err(e) => tracing::warn!(network = %name, "the on-demand network stays: {e}"),
        }
    }
    Ok(())
}

/// Make cluster network `spec` on this host, with this host's tunnel end.
async fn make_here(ctx: &Arc<Ctx>, join: &Join, mut spec: crate::model::NetworkSpec) -> Result<()> {
    spec.vtep = Some(join.me.vtep.to_string());
    let (c, name) = (ctx.clone(), spec.name.clone());
    match blocking(move || c.with_engine(|e| e.network_create(&spec, None))).await {
        Ok(_) => {
            tracing::info!(network = %name, "made the cluster's network on this host");
            Ok(())
        }
        // Made meanwhile (an attach, a pass).
        Err(Error::NetworkExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Apply the cluster's rules on this host as its own (owned by
/// `cluster:ID`), and take away those the cluster no longer has. A rule this
/// host refuses (it contradicts one of its own) is said once.
async fn keep_rules(
    ctx: &Arc<Ctx>,
    cluster: &Cluster,
    client: &mut etcd_client::Client,
    memory: &mut Memory,
) -> Result<()> {
    let rules = cluster.join.store.policies(client).await?;
    let c = ctx.clone();
    let local = blocking(move || c.with_engine(|e| e.policies())).await?;
    let applied: Vec<(i64, i64)> = local
        .iter()
        .filter_map(|p| {
            let id = p
                .owner
                .as_deref()?
                .strip_prefix(CLUSTER_RULE)?
                .parse()
                .ok()?;
            Some((p.id, id))
        })
        .collect();
    let stale: Vec<i64> = applied
        .iter()
        .filter(|(_, id)| !rules.iter().any(|(r, _)| r == id))
        .map(|(local, _)| *local)
        .collect();
    if !stale.is_empty() {
        let (c, ids) = (ctx.clone(), stale.clone());
        blocking(move || c.with_engine(|e| e.policy_rm(&ids))).await?;
        tracing::info!(rules = ?stale, "took away rules the cluster no longer has");
    }
    memory
        .refused
        .retain(|id| rules.iter().any(|(r, _)| r == id));
    for (id, spec) in rules {
        if applied.iter().any(|(_, a)| *a == id) {
            continue;
        }
        let (c, s) = (ctx.clone(), spec.clone());
        let owner = format!("{CLUSTER_RULE}{id}");
        match blocking(move || c.with_engine(|e| e.policy_add(&s, Some(&owner)))).await {
            Ok(p) => tracing::info!(
                cluster_rule = id,
                local = p.id,
                "applied the cluster's rule: {}",
                p.policy
            ),
            Err(e) if memory.refused.insert(id) => {
                tracing::warn!(
                    cluster_rule = id,
                    "this host cannot apply the cluster's rule: {e}"
                )
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Keep this host's address blocks of `net` as they should be, and
/// mirrored where its attaches find them:
/// - a block holding addresses given out here that nobody has (this host
///   was away past the grace) is claimed back;
/// - the blocks of a host that left are released once it has been gone
///   for the grace;
/// - with containers here, another block is claimed when fewer than
///   [`LOW_WATER`] addresses are free; an empty block is given back when it
///   is not needed (no containers here, or enough free in the others).
///
/// Returns the blocks as the cluster has them now.
async fn keep_addresses(
    ctx: &Arc<Ctx>,
    cluster: &Cluster,
    client: &mut etcd_client::Client,
    net: &Network,
    containers: usize,
    members: &[String],
    memory: &mut Memory,
) -> Result<Vec<(IpNet, String)>> {
    let Some(overlay) = overlay_of(net) else {
        return Ok(Vec::new());
    };
    let join = &cluster.join;
    let me = join.me.host.as_str();
    let mut claims = cluster.claims.lock().await;
    let mut claimed = join.store.blocks(client, &net.name).await?;

    let (c, n) = (ctx.clone(), net.name.clone());
    let (taken, given) = blocking(move || c.with_engine(|e| e.allocated_on(&n))).await?;
    let orphans: HashSet<IpNet> = given
        .iter()
        .filter_map(|a| {
            let sub = net.subnets.iter().find(|s| s.subnet.contains(a))?;
            overlay.block_of(sub.subnet, *a)
        })
        .filter(|b| !claimed.iter().any(|(c, _)| c == b))
        .collect();
    for block in orphans {
        if cluster
            .claim(client, net, block, &mut claimed, &mut claims)
            .await?
        {
            tracing::info!(network = %net.name, %block, "claimed back a block of this host's addresses");
        }
    }

    let now = Instant::now();
    memory.absent.retain(|(n, b), _| {
        *n != net.name
            || claimed
                .iter()
                .any(|(c, host)| c == b && !members.contains(host))
    });
    let mut released = Vec::new();
    for (block, host) in claimed
        .iter()
        .filter(|(_, h)| !members.contains(h) && h != me)
    {
        let since = *memory
            .absent
            .entry((net.name.clone(), *block))
            .or_insert(now);
        if now.duration_since(since) >= join.block_grace
            && join.store.release(client, &net.name, *block, host).await?
        {
            tracing::info!(network = %net.name, %block, %host, "released the block of a host gone for the grace");
            released.push(*block);
        }
    }
    claimed.retain(|(b, _)| !released.contains(b));
    cluster.mirror(ctx, &net.name, &claimed).await?;

    let (c, n) = (ctx.clone(), net.name.clone());
    let free = blocking(move || c.with_engine(|e| e.free_in_own_blocks(&n))).await?;
    for (subnet, free) in free {
        if containers > 0 && free < LOW_WATER {
            cluster
                .claim_next(client, net, &overlay, subnet, &mut claimed, &mut claims)
                .await?;
            continue;
        }
        let own: Vec<IpNet> = claimed
            .iter()
            .filter(|(b, h)| h == me && subnet.contains(&b.network()))
            .map(|(b, _)| *b)
            .collect();
        let mut left = free;
        for block in own {
            let in_block = overlay_free(net, &taken, block);
            let needed = containers > 0 && left.saturating_sub(in_block) < LOW_WATER;
            let fresh = claims.get(&block).is_some_and(|t| t.elapsed() < FRESH);
            if needed || fresh {
                continue;
            }
            let (c, n) = (ctx.clone(), net.name.clone());
            if !blocking(move || c.with_engine(|e| e.give_up_block(&n, block))).await? {
                continue;
            }
            if join.store.release(client, &net.name, block, me).await? {
                tracing::info!(network = %net.name, %block, "released an empty address block");
                claims.remove(&block);
                claimed.retain(|(b, _)| *b != block);
                left -= in_block;
            }
        }
    }
    claims.retain(|b, _| claimed.iter().any(|(c, _)| c == b));
    cluster.mirror(ctx, &net.name, &claimed).await?;
    Ok(claimed)
}

/// How many addresses `block` of `net` has free, `taken` being the
/// addresses taken here.
fn overlay_free(net: &Network, taken: &[IpAddr], block: IpNet) -> u128 {
    net.subnets
        .iter()
        .find(|s| s.subnet.contains(&block.network()))
        .map_or(0, |sub| crate::engine::free_in_block(block, sub, taken))
}

/// A cluster network's overlay.
fn overlay_of(net: &Network) -> Option<Overlay> {
    net.bridge().and_then(|b| b.overlay.clone())
}

/// The networks this host has.
async fn local_networks(ctx: &Arc<Ctx>) -> Result<Vec<Network>> {
    let c = ctx.clone();
    blocking(move || c.with_engine(|e| Ok(e.networks()?.into_iter().map(|n| n.network).collect())))
        .await
}
