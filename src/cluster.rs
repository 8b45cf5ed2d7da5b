//! Hosts that share networks, in an etcd cluster (`--cluster-store
//! etcd://HOST:PORT[,…]`): each host's daemon registers it under
//! `/plumb/CLUSTER/hosts/NAME`, bound to an etcd lease it keeps alive, with
//! the address its overlay tunnels end at (its VTEP). A host whose daemon
//! dies leaves by itself when its lease expires (a few seconds); one that
//! stops leaves at once (the lease is revoked). Nothing here is plumb's own
//! consensus: two hosts never take one name because the registration is an
//! etcd transaction.
//!
//! A connection is to one member at a time, one that answers and has a
//! leader; when it fails, the next member is taken. (etcd-client's own
//! balancing over all endpoints keeps a dead member in its pool: tonic's
//! reconnecting service reports a refused connection as the failure of the
//! request, never as the endpoint's, so a share of every request, keep-alives
//! included, goes on failing as long as the member is away.)

use std::net::IpAddr;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::NetworkSpec;

/// How long a host stays registered after its daemon last spoke.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Where the cluster lives and which one it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStore {
    pub endpoints: Vec<String>,
    pub name: String,
}

impl ClusterStore {
    /// `etcd://HOST:PORT[,HOST:PORT…]`, for cluster `name`.
    pub fn parse(url: &str, name: &str) -> Result<ClusterStore> {
        let bad = |why: &str| Error::invalid("--cluster-store", url, why);
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("a cluster store is etcd://HOST:PORT[,HOST:PORT…]"))?;
        let endpoints: Vec<String> = rest
            .split(',')
            .map(|e| e.trim().trim_end_matches('/'))
            .map(|e| {
                let (host, port) = e
                    .rsplit_once(':')
                    .ok_or_else(|| bad("each endpoint is HOST:PORT"))?;
                if host.is_empty() || port.parse::<u16>().is_err() {
                    return Err(bad("each endpoint is HOST:PORT"));
                }
                Ok(format!("http://{e}"))
            })
            .collect::<Result<_>>()?;
        crate::model::validate_name("--cluster-name", name)?;
        Ok(ClusterStore {
            endpoints,
            name: name.to_string(),
        })
    }

    fn prefix(&self) -> String {
        format!("/plumb/{}/", self.name)
    }

    fn hosts_prefix(&self) -> String {
        format!("{}hosts/", self.prefix())
    }

    fn host_key(&self, host: &str) -> String {
        format!("{}{host}", self.hosts_prefix())
    }

    fn error(&self, what: &str, e: etcd_client::Error) -> Error {
        Error::Cluster {
            store: self.endpoints.join(","),
            reason: format!("{what}: {}", brief(&e)),
        }
    }

    /// A connection to the first member that answers.
    pub async fn connect(&self) -> Result<Client> {
        self.connect_from(0).await.map(|(client, _)| client)
    }

    /// A connection to one member that answers and has a leader, trying
    /// them in turn from the `first` (modulo their number); the client and
    /// the member's index. Fails, naming each member and why, when none
    /// does.
    pub async fn connect_from(&self, first: usize) -> Result<(Client, usize)> {
        // A member with no leader (cut off from the others, or electing)
        // answers "no leader" at once instead of holding requests, and
        // ends its streams when it loses the leader.
        let options = ConnectOptions::new()
            .with_connect_timeout(PROBE)
            .with_timeout(Duration::from_secs(5))
            .with_require_leader(true);
        let n = self.endpoints.len();
        let mut failed = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let endpoint = &self.endpoints[i];
            let probe = async {
                let mut client = Client::connect([endpoint], Some(options.clone())).await?;
                client.status().await?;
                Ok::<_, etcd_client::Error>(client)
            };
            match tokio::time::timeout(PROBE * 2, probe).await {
                Ok(Ok(client)) => return Ok((client, i)),
                Ok(Err(e)) => failed.push(format!("{endpoint}: {}", brief(&e))),
                Err(_) => failed.push(format!(
                    "{endpoint}: no answer in {} s",
                    (PROBE * 2).as_secs()
                )),
            }
        }
        Err(Error::Cluster {
            store: self.endpoints.join(","),
            reason: match failed.len() {
                1 => format!("not reachable: {}", failed[0]),
                _ => format!("no member answers: {}", failed.join("; ")),
            },
        })
    }

    /// The member `i` (modulo their number), for the log.
    pub fn endpoint(&self, i: usize) -> &str {
        &self.endpoints[i % self.endpoints.len()]
    }

    /// Run `f` with a connection, from synchronous code (the CLI).
    pub fn call<T>(&self, f: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for the cluster store", e))?
            .block_on(async {
                let mut client = self.connect().await?;
                f(&mut client).await
            })
    }

    /// Every registered host.
    pub async fn members(&self, client: &mut Client) -> Result<Vec<Member>> {
        let resp = client
            .get(self.hosts_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.error("list hosts", e))?;
        let mut members: Vec<Member> = resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect();
        members.sort_by(|a: &Member, b| a.host.cmp(&b.host));
        Ok(members)
    }

    /// Register `me` under a lease of `ttl`. The name may be held by this
    /// host's previous daemon (same address): it is taken over. Held by
    /// another address, it is refused.
    pub async fn join(&self, client: &mut Client, me: &Member, ttl: Duration) -> Result<i64> {
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = client
            .lease_grant(seconds, None)
            .await
            .map_err(|e| self.error("grant a lease", e))?
            .id();
        let key = self.host_key(&me.host);
        let value = serde_json::to_vec(me).expect("a member serializes");
        let put = TxnOp::put(
            key.clone(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let created = client
            .txn(
                Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([put.clone()]),
            )
            .await
            .map_err(|e| self.error("register", e))?;
        if created.succeeded() {
            return Ok(lease);
        }
        let held = client
            .get(key.clone(), None)
            .await
            .map_err(|e| self.error("read a registration", e))?;
        let Some(kv) = held.kvs().first() else {
            // Gone meanwhile: try once more.
            let _ = client.lease_revoke(lease).await;
            return Box::pin(self.join(client, me, ttl)).await;
        };
        let previous: Option<Member> = serde_json::from_slice(kv.value()).ok();
        if previous.as_ref().map(|p| p.vtep) != Some(me.vtep) {
            let _ = client.lease_revoke(lease).await;
            return Err(Error::Conflict(format!(
                "host name `{}` is registered in cluster `{}` by another host ({}); give this one another with --cluster-host",
                me.host,
                self.name,
                previous.map_or_else(|| "unreadable".to_string(), |p| p.vtep.to_string())
            )));
        }
        // Our own previous registration: taken over, as it was.
        let taken = client
            .txn(
                Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([put]),
            )
            .await
            .map_err(|e| self.error("register", e))?;
        if !taken.succeeded() {
            let _ = client.lease_revoke(lease).await;
            return Err(Error::Conflict(format!(
                "the registration of `{}` changed while taking it over; try again",
                me.host
            )));
        }
        Ok(lease)
    }

    /// Leave at once.
    pub async fn leave(&self, client: &mut Client, lease: i64) -> Result<()> {
        client
            .lease_revoke(lease)
            .await
            .map(drop)
            .map_err(|e| self.error("leave", e))
    }

    /// Keep `lease` alive through `client`'s member until either fails,
    /// every third of `ttl`; `expires` follows when the lease runs out if
    /// not renewed again. [`Renewal::Lost`]: the cluster no longer has the
    /// lease. [`Renewal::Broken`]: this member failed, or did not answer in
    /// a third of `ttl` (time enough to renew through another before the
    /// lease runs out); the lease may live on.
    pub async fn keep_alive(
        &self,
        client: &mut Client,
        lease: i64,
        ttl: Duration,
        expires: &mut Instant,
    ) -> Renewal {
        let every = (ttl / 3).max(Duration::from_millis(300));
        let broken = |e| Renewal::Broken(self.error("keep the registration alive", e));
        let lost = || {
            Renewal::Lost(Error::Conflict(
                "the cluster forgot this host (its lease expired)".into(),
            ))
        };
        let mut sent = Instant::now();
        // Opening the stream is a first keep-alive, its answer read.
        let opened = tokio::time::timeout(every, client.lease_keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(k)) => k,
            // etcd-client's word for a TTL of 0 in that first answer.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                return lost();
            }
            Ok(Err(e)) => return broken(e),
            Err(_) => return Renewal::Broken(self.silent("keep the registration alive", every)),
        };
        *expires = sent + ttl;
        loop {
            tokio::time::sleep(every).await;
            sent = Instant::now();
            if let Err(e) = keeper.keep_alive().await {
                return broken(e);
            }
            match tokio::time::timeout(every, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    *expires = sent + Duration::from_secs(r.ttl().unsigned_abs());
                }
                Ok(Ok(Some(_))) => return lost(),
                Ok(Ok(None)) => {
                    return Renewal::Broken(self.cluster_error(
                        "keep the registration alive",
                        "the member closed the stream",
                    ));
                }
                Ok(Err(e)) => return broken(e),
                Err(_) => {
                    return Renewal::Broken(self.silent("keep the registration alive", every));
                }
            }
        }
    }

    fn cluster_error(&self, what: &str, why: &str) -> Error {
        Error::Cluster {
            store: self.endpoints.join(","),
            reason: format!("{what}: {why}"),
        }
    }

    fn silent(&self, what: &str, waited: Duration) -> Error {
        self.cluster_error(what, &format!("no answer in {} ms", waited.as_millis()))
    }
}

/// How long a member may take to accept a connection.
const PROBE: Duration = Duration::from_secs(1);

/// How a [`ClusterStore::keep_alive`] ended.
#[derive(Debug)]
pub enum Renewal {
    /// The lease is gone: join again.
    Lost(Error),
    /// The member failed; another may renew the lease yet.
    Broken(Error),
}

/// etcd-client's error, without tonic's debug dump: the gRPC message and
/// what lies under it (`tcp connect error: Connection refused (os error
/// 111)`).
pub fn brief(e: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return e.to_string();
    };
    let mut root: Option<&dyn std::error::Error> = None;
    let mut next = std::error::Error::source(status);
    while let Some(cause) = next {
        root = Some(cause);
        next = cause.source();
    }
    match root.map(ToString::to_string) {
        Some(r) if !status.message().is_empty() && r != status.message() => {
            format!("{}: {r}", status.message())
        }
        Some(r) => r,
        None if status.message().is_empty() => format!("{:?}", status.code()),
        None => status.message().to_string(),
    }
}

impl ClusterStore {
    fn networks_prefix(&self) -> String {
        format!("{}networks/", self.prefix())
    }

    fn endpoints_prefix(&self) -> String {
        format!("{}endpoints/", self.prefix())
    }

    /// Define cluster network `spec` (its `vtep` is each host's): once, with
    /// its VNI taken in the same transaction. The same definition again is
    /// no change; another under the name or the VNI is refused.
    pub async fn define(&self, client: &mut Client, spec: &NetworkSpec) -> Result<()> {
        let vni = spec.vni.unwrap_or_default();
        let key = format!("{}{}", self.networks_prefix(), spec.name);
        let vni_key = format!("{}vnis/{vni}", self.prefix());
        let value = serde_json::to_vec(spec).expect("a spec serializes");
        let made = client
            .txn(
                Txn::new()
                    .when([
                        Compare::version(key.clone(), CompareOp::Equal, 0),
                        Compare::version(vni_key.clone(), CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put(key.clone(), value, None),
                        TxnOp::put(vni_key.clone(), spec.name.clone(), None),
                    ]),
            )
            .await
            .map_err(|e| self.error("define the network", e))?;
        if made.succeeded() {
            return Ok(());
        }
        if let Some(existing) = self.network(client, &spec.name).await? {
            return match existing == *spec {
                true => Ok(()),
                false => Err(Error::invalid(
                    "NAME",
                    &spec.name,
                    format!("cluster `{}` has another network of that name", self.name),
                )),
            };
        }
        let owner = client
            .get(vni_key, None)
            .await
            .map_err(|e| self.error("read a VNI", e))?;
        let owner = owner
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok().map(str::to_string))
            .unwrap_or_default();
        Err(Error::invalid(
            "--vni",
            vni,
            format!("is network `{owner}`'s in cluster `{}`", self.name),
        ))
    }

    /// Remove network `name` from the cluster with its VNI and blocks;
    /// refused while a host records containers on it.
    pub async fn undefine(&self, client: &mut Client, name: &str) -> Result<()> {
        let Some(spec) = self.network(client, name).await? else {
            return Err(Error::UnknownNetwork(name.to_string()));
        };
        let holders: Vec<String> = self
            .endpoints(client)
            .await?
            .into_iter()
            .filter(|(e, _)| e.network == name)
            .map(|(e, _)| e.host)
            .collect();
        if !holders.is_empty() {
            let mut hosts = holders;
            hosts.sort();
            hosts.dedup();
            return Err(Error::Conflict(format!(
                "network `{name}` has containers on host(s) {}: detach them first",
                hosts.join(", ")
            )));
        }
        let vni_key = format!("{}vnis/{}", self.prefix(), spec.vni.unwrap_or_default());
        client
            .txn(Txn::new().and_then([
                TxnOp::delete(format!("{}{name}", self.networks_prefix()), None),
                TxnOp::delete(vni_key, None),
                TxnOp::delete(
                    self.blocks_prefix(name),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                ),
            ]))
            .await
            .map(drop)
            .map_err(|e| self.error("remove the network", e))
    }

    async fn network(&self, client: &mut Client, name: &str) -> Result<Option<NetworkSpec>> {
        let resp = client
            .get(format!("{}{name}", self.networks_prefix()), None)
            .await
            .map_err(|e| self.error("read a network", e))?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Every cluster network's definition.
    pub async fn networks(&self, client: &mut Client) -> Result<Vec<NetworkSpec>> {
        let resp = client
            .get(
                self.networks_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.error("list networks", e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    }

    /// Every container of every host on the cluster's networks, with the
    /// lease each is recorded under.
    pub async fn endpoints(&self, client: &mut Client) -> Result<Vec<(Endpoint, i64)>> {
        let resp = client
            .get(
                self.endpoints_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.error("list endpoints", e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((serde_json::from_slice(kv.value()).ok()?, kv.lease())))
            .collect())
    }

    fn endpoint_key(&self, e: &Endpoint) -> String {
        format!(
            "{}{}/{}/{}",
            self.endpoints_prefix(),
            e.network,
            e.host,
            e.mac
        )
    }

    /// Record a container of this host, for as long as `lease` lives.
    pub async fn publish(&self, client: &mut Client, e: &Endpoint, lease: i64) -> Result<()> {
        let value = serde_json::to_vec(e).expect("an endpoint serializes");
        client
            .put(
                self.endpoint_key(e),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map(drop)
            .map_err(|err| self.error("publish an endpoint", err))
    }

    pub async fn withdraw(&self, client: &mut Client, e: &Endpoint) -> Result<()> {
        client
            .delete(self.endpoint_key(e), None)
            .await
            .map(drop)
            .map_err(|err| self.error("withdraw an endpoint", err))
    }

    fn blocks_prefix(&self, network: &str) -> String {
        format!("{}blocks/{network}/", self.prefix())
    }

    /// The address blocks of `network` claimed so far: (block, host).
    pub async fn blocks(
        &self,
        client: &mut Client,
        network: &str,
    ) -> Result<Vec<(ipnet::IpNet, String)>> {
        let prefix = self.blocks_prefix(network);
        let resp = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.error("list address blocks", e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let block = kv.key_str().ok()?.strip_prefix(&prefix)?.replace('_', "/");
                Some((block.parse().ok()?, kv.value_str().ok()?.to_string()))
            })
            .collect())
    }

    /// Claim `block` of `network` for `host`: true if it is now the host's,
    /// false if another host had it first (one transaction: two hosts
    /// racing for it never both win).
    pub async fn claim(
        &self,
        client: &mut Client,
        network: &str,
        block: ipnet::IpNet,
        host: &str,
    ) -> Result<bool> {
        let key = format!(
            "{}{}",
            self.blocks_prefix(network),
            block.to_string().replace('/', "_")
        );
        let r = client
            .txn(
                Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, host.to_string(), None)]),
            )
            .await
            .map_err(|e| self.error("claim an address block", e))?;
        Ok(r.succeeded())
    }

    /// A stream that yields whenever anything of the cluster changes.
    pub async fn watch(&self, client: &mut Client) -> Result<etcd_client::WatchStream> {
        let (_watcher, stream) = client
            .watch(
                self.prefix(),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.error("watch the cluster", e))?;
        Ok(stream)
    }
}

/// A container on a cluster network, as its host records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub host: String,
    pub mac: crate::model::Mac,
    pub addresses: Vec<IpAddr>,
    pub vtep: IpAddr,
}

/// A host of the cluster, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub host: String,
    /// Where overlay tunnels to it end.
    pub vtep: IpAddr,
    /// plumb's version on it.
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_etcd_endpoints_and_a_cluster_name() {
        let s = ClusterStore::parse("etcd://10.0.0.1:2379,10.0.0.2:2379/", "prod").unwrap();
        assert_eq!(
            s.endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(s.host_key("a"), "/plumb/prod/hosts/a");
        for bad in [
            "10.0.0.1:2379",
            "etcd://10.0.0.1",
            "etcd://:2379",
            "consul://x:1",
        ] {
            let e = ClusterStore::parse(bad, "prod").unwrap_err().to_string();
            assert!(e.contains("--cluster-store"), "{bad}: {e}");
        }
        assert!(ClusterStore::parse("etcd://h:1", "a/b").is_err());
    }
}
