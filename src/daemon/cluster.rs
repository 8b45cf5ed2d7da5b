//! The daemon's membership in a cluster (`--cluster-store`): it registers
//! the host and keeps the registration alive for as long as it runs; when
//! the store goes away it says so once and joins again when it is back
//! (the data plane meanwhile is left as it is). At a clean stop it leaves
//! at once, so peers need not wait for the lease to expire.
//!
//! It talks to one etcd member at a time. When that member fails, the
//! registration is renewed through another one, under the same lease: a
//! store of three members that loses one (its leader included) loses no
//! host, and no host's containers drop out of the others' overlays. Only a
//! lease the cluster no longer has is replaced (a new join).
//!
//! While joined it follows the cluster (a watch on its keys, and a look
//! every few seconds whatever the watch says): it makes each cluster
//! network on this host, records this host's containers on them (bound to
//! its lease, so they go with the host), and programs each overlay with
//! the other hosts' containers. An attach or detach here starts a pass at
//! once. Every pass reads the whole record, so a watch that fell behind
//! costs nothing but a pass. Following has its own
//! connection, which fails over by itself: a slow pass never delays a
//! keep-alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use super::{Ctx, Repeated, blocking};
use crate::cluster::{ClusterStore, Endpoint, Member, Renewal};
use crate::driver::overlay::Remote;
use crate::error::{Error, Result};
use crate::model::Network;

/// How often the cluster is read again when nothing is said to change.
const LOOK_AGAIN: Duration = Duration::from_secs(3);
/// Fewer free addresses than this in a host's blocks of a network, and it
/// claims another block.
const LOW_WATER: u128 = 8;

/// What the daemon joins as.
#[derive(Debug, Clone)]
pub struct Join {
    pub store: ClusterStore,
    pub me: Member,
    pub ttl: Duration,
}

impl Join {
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

/// The lease held now, for leaving at a stop.
#[derive(Default)]
pub struct Held(Mutex<Option<i64>>);

/// Join and stay joined until the daemon stops, and follow the cluster
/// meanwhile.
pub async fn stay_joined(ctx: Arc<Ctx>, join: Join, held: Arc<Held>) {
    let (lease_tx, lease_rx) = watch::channel(None);
    tokio::join!(hold(&join, &held, lease_tx), follow(&ctx, &join, lease_rx));
}

/// Hold a registration: join, keep the lease alive through whichever
/// member answers, join again when the lease is lost. The lease held is
/// told through `lease_tx`.
async fn hold(join: &Join, held: &Held, lease_tx: watch::Sender<Option<i64>>) {
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
        *held.0.lock().await = Some(lease);
        lease_tx.send_replace(Some(lease));
        let lost = keep(join, client, &mut member, lease).await;
        lease_tx.send_replace(None);
        held.0.lock().await.take();
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
/// change, and every few seconds, one [`pass`]. A member that fails is
/// left for the next.
async fn follow(ctx: &Arc<Ctx>, join: &Join, mut lease: watch::Receiver<Option<i64>>) {
    let mut member = join.first_member();
    // Said once, however often it repeats.
    let mut errors = Repeated::default();
    loop {
        if lease.wait_for(Option::is_some).await.is_err() {
            return;
        }
        let e = match join.store.connect_from(member).await {
            Ok((client, m)) => {
                member = m;
                follow_through(ctx, join, client, &mut lease, &mut errors).await
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
    join: &Join,
    mut client: etcd_client::Client,
    lease: &mut watch::Receiver<Option<i64>>,
    failing: &mut Repeated,
) -> Error {
    let mut changes = match join.store.watch(&mut client).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut errors = Repeated::default();
    loop {
        let held = *lease.borrow_and_update();
        if let Some(held) = held {
            match pass(ctx, join, &mut client, held).await {
                Ok(()) => {
                    errors.ended("cluster pass");
                    failing.ended("following the cluster");
                }
                // The store failed (this member): another one.
                Err(e @ Error::Cluster { .. }) => return e,
                Err(e) => {
                    let _ = errors.failed("cluster pass", &e.to_string());
                }
            }
        }
        tokio::select! {
            m = changes.message() => match m {
                Ok(Some(_)) => {}
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
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

/// Bring this host in line with the cluster's record: its networks made
/// here, this host's containers on them recorded, every overlay reaching
/// the other hosts' containers.
async fn pass(
    ctx: &Arc<Ctx>,
    join: &Join,
    client: &mut etcd_client::Client,
    lease: i64,
) -> Result<()> {
    let specs = join.store.networks(client).await?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let local = local_networks(ctx).await?;
    // A cluster network the cluster no longer has goes, once nothing here
    // is on it.
    let gone = local
        .iter()
        .filter(|n| n.bridge().is_some_and(|b| b.overlay.is_some()) && !names.contains(&n.name))
        .map(|n| n.name.clone());
    for name in gone {
        let (c, n) = (ctx.clone(), name.clone());
        match blocking(move || c.with_engine(|e| e.network_rm(&n, false))).await {
            Ok(_) => tracing::info!(network = %name, "took the cluster's former network away"),
            Err(e) => tracing::warn!(network = %name, "the cluster no longer has it: {e}"),
        }
    }
    for spec in specs
        .into_iter()
        .filter(|s| !local.iter().any(|n| n.name == s.name))
    {
        let mut here = spec;
        here.vtep = Some(join.me.vtep.to_string());
        let (c, name) = (ctx.clone(), here.name.clone());
        match blocking(move || c.with_engine(|e| e.network_create(&here, None))).await {
            Ok(_) => tracing::info!(network = %name, "made the cluster's network on this host"),
            Err(e) => tracing::warn!(network = %name, "the cluster's network: {e}"),
        }
    }
    // The cluster's networks as this host has them now.
    let here: Vec<Network> = local_networks(ctx)
        .await?
        .into_iter()
        .filter(|n| names.contains(&n.name))
        .collect();
    for net in &here {
        if let Err(e) = keep_addresses(ctx, join, client, net).await {
            tracing::warn!(network = %net.name, "address blocks: {e}");
        }
    }
    let c = ctx.clone();
    let attachments = blocking(move || c.with_engine(|e| e.attachments())).await?;
    let mine: Vec<Endpoint> = attachments
        .into_iter()
        .map(|s| s.attachment)
        .filter(|a| names.contains(&a.network))
        .map(|a| Endpoint {
            network: a.network.clone(),
            host: join.me.host.clone(),
            mac: a.mac,
            addresses: a.addresses.iter().map(|n| n.addr()).collect(),
            vtep: join.me.vtep,
        })
        .collect();
    let listed = join.store.endpoints(client).await?;
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
    for network in here.iter().map(|n| &n.name) {
        let remotes: Vec<Remote> = recorded
            .iter()
            .filter(|e| &e.network == network && e.host != join.me.host)
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

/// Keep this host's address blocks of `network` mirrored, and claim one
/// more when fewer than [`LOW_WATER`] addresses are free in them.
async fn keep_addresses(
    ctx: &Arc<Ctx>,
    join: &Join,
    client: &mut etcd_client::Client,
    net: &Network,
) -> Result<()> {
    let network = net.name.as_str();
    let Some(overlay) = net.bridge().and_then(|b| b.overlay.clone()) else {
        return Ok(());
    };
    let mirror = |claimed: &[(ipnet::IpNet, String)]| -> Vec<crate::store::host_extras::Block> {
        claimed
            .iter()
            .map(|(block, host)| crate::store::host_extras::Block {
                block: *block,
                host: host.clone(),
                mine: *host == join.me.host,
            })
            .collect()
    };
    let mut claimed = join.store.blocks(client, network).await?;
    let (c, n, blocks) = (ctx.clone(), network.to_string(), mirror(&claimed));
    let free = blocking(move || {
        c.with_engine(|e| {
            e.set_cluster_blocks(&n, &blocks)?;
            e.free_in_own_blocks(&n)
        })
    })
    .await?;
    if free >= LOW_WATER {
        return Ok(());
    }
    // The first block nobody has; one another host takes meanwhile is
    // passed over.
    for sub in &net.subnets {
        for block in overlay.blocks_of(sub.subnet) {
            if claimed.iter().any(|(b, _)| *b == block) {
                continue;
            }
            if join
                .store
                .claim(client, network, block, &join.me.host)
                .await?
            {
                tracing::info!(network = %network, block = %block, "claimed an address block");
                claimed.push((block, join.me.host.clone()));
                let (c, n, blocks) = (ctx.clone(), network.to_string(), mirror(&claimed));
                return blocking(move || c.with_engine(|e| e.set_cluster_blocks(&n, &blocks)))
                    .await;
            }
        }
    }
    Err(Error::Conflict(format!(
        "network `{network}` has no address block left to claim"
    )))
}

/// The networks this host has.
async fn local_networks(ctx: &Arc<Ctx>) -> Result<Vec<Network>> {
    let c = ctx.clone();
    blocking(move || c.with_engine(|e| Ok(e.networks()?.into_iter().map(|n| n.network).collect())))
        .await
}

/// Leave now, if joined (a clean stop).
pub async fn leave(store: &ClusterStore, held: &Held) {
    let Some(lease) = held.0.lock().await.take() else {
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
