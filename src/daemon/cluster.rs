//! The daemon's membership in a cluster (`--cluster-store`): it registers
//! the host and keeps the registration alive for as long as it runs; when
//! the store goes away it says so once and joins again when it is back
//! (the data plane meanwhile is left as it is). At a clean stop it leaves
//! at once, so peers need not wait for the lease to expire.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::Repeated;
use crate::cluster::{ClusterStore, Member};

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
pub async fn stay_joined(join: Join, held: Arc<Held>) {
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
            Err(join.store.keep_alive(&mut client, lease, join.ttl).await)
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
