//! The daemon's membership in a cluster (`--cluster-store`): it registers
//! the host and keeps the registration alive for as long as it runs; when
//! the store goes away it says so once and joins again when it is back
//! (the data plane meanwhile is left as it is). At a clean stop it leaves
//! at once, so peers need not wait for the lease to expire.
//!
//! While joined it follows the cluster (a watch on its keys, and a look
//! every few seconds whatever the watch says): it makes each cluster
//! network on this host, records this host's containers on them (bound to
//! its lease, so they go with the host), and programs each overlay with
//! the other hosts' containers. Every pass reads the whole record, so a
//! watch that fell behind costs nothing but a pass.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Ctx, Repeated, blocking};
use crate::cluster::{ClusterStore, Endpoint, Member};
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

/// The registration held now, for leaving at a stop.
#[derive(Default)]
pub struct Held(Mutex<Option<(etcd_client::Client, i64)>>);

/// Join and stay joined until the daemon stops.
pub async fn stay_joined(ctx: Arc<Ctx>, join: Join, held: Arc<Held>) {
    let mut errors = Repeated::default();
    loop {
        let attempt = async {
            let mut client = join.store.connect().await?;
            let lease = join.store.join(&mut client, &join.me, join.ttl).await?;
            *held.0.lock().await = Some((client.clone(), lease));
            tracing::info!(
                cluster = %join.store.name,
                host = %join.me.host,
                vtep = %join.me.vtep,
                "joined the cluster"
            );
            errors.ended("cluster");
            let mut keeper = client.clone();
            tokio::select! {
                e = join.store.keep_alive(&mut keeper, lease, join.ttl) => Err(e),
                e = follow(&ctx, &join, client, lease) => Err(e),
            }
        };
        let result: crate::error::Result<()> = attempt.await;
        held.0.lock().await.take();
        if let Err(e) = result {
            let pause = errors.failed("cluster", &e.to_string());
            // At least a second between attempts: a store that refuses
            // at once is not asked in a tight loop.
            tokio::time::sleep(pause.max(Duration::from_secs(1))).await;
        }
    }
}

/// Follow the cluster until its store fails: every change, and every few
/// seconds, one [`pass`].
async fn follow(ctx: &Arc<Ctx>, join: &Join, mut client: etcd_client::Client, lease: i64) -> Error {
    let mut changes = match join.store.watch(&mut client).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut errors = Repeated::default();
    loop {
        match pass(ctx, join, &mut client, lease).await {
            Ok(()) => errors.ended("cluster pass"),
            Err(e) => {
                let _ = errors.failed("cluster pass", &e.to_string());
            }
        }
        tokio::select! {
            m = changes.message() => match m {
                Ok(Some(_)) => {}
                Ok(None) => return Error::Conflict("the cluster's watch ended".into()),
                Err(e) => return Error::Conflict(format!("the cluster's watch failed: {e}")),
            },
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
    if let Some((mut client, lease)) = held.0.lock().await.take() {
        match tokio::time::timeout(Duration::from_secs(2), store.leave(&mut client, lease)).await {
            Ok(Ok(())) => tracing::info!(cluster = %store.name, "left the cluster"),
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(_) => tracing::warn!("the cluster store did not answer the leave in time"),
        }
    }
}
