//! Hosts that share networks, in an etcd cluster (`--cluster-store
//! etcd://HOST:PORT[,…]`): each host's daemon registers it under
//! `/plumb/CLUSTER/hosts/NAME`, bound to an etcd lease it keeps alive, with
//! the address its overlay tunnels end at (its VTEP). A host whose daemon
//! dies leaves by itself when its lease expires (a few seconds); one that
//! stops leaves at once (the lease is revoked). Nothing here is plumb's own
//! consensus: two hosts never take one name because the registration is an
//! etcd transaction.

use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::NetworkSpec;
use crate::policy::rules::PolicySpec;

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
            reason: format!("{what}: {e}"),
        }
    }

    /// A connection; fails fast when no member answers.
    pub async fn connect(&self) -> Result<Client> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        Client::connect(&self.endpoints, Some(options))
            .await
            .map_err(|e| self.error("connect", e))
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

    /// Keep `lease` alive until it cannot be (the store is away, or the
    /// lease expired meanwhile): returns why.
    pub async fn keep_alive(&self, client: &mut Client, lease: i64, ttl: Duration) -> Error {
        let (mut keeper, mut stream) = match client.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return self.error("keep the registration alive", e),
        };
        let every = (ttl / 3).max(Duration::from_millis(300));
        loop {
            if let Err(e) = keeper.keep_alive().await {
                return self.error("keep the registration alive", e);
            }
            match tokio::time::timeout(ttl, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                Ok(Ok(Some(_))) => {
                    return Error::Conflict(
                        "the cluster forgot this host (its lease expired)".into(),
                    );
                }
                Ok(Ok(None)) => {
                    return Error::Conflict("the cluster closed the keep-alive stream".into());
                }
                Ok(Err(e)) => return self.error("keep the registration alive", e),
                Err(_) => {
                    return Error::Conflict(
                        "the cluster did not answer a keep-alive in time".into(),
                    );
                }
            }
            tokio::time::sleep(every).await;
        }
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
        let naming: Vec<String> = self
            .policies(client)
            .await?
            .into_iter()
            .filter(|(_, p)| {
                [Some(&p.scope), p.from.as_ref(), p.to.as_ref()]
                    .into_iter()
                    .flatten()
                    .any(|w| w == name || w.strip_prefix("network:") == Some(name))
            })
            .map(|(id, _)| id.to_string())
            .collect();
        if !naming.is_empty() {
            return Err(Error::Conflict(format!(
                "rule(s) {} of cluster `{}` name network `{name}`: remove them first (plumb policy rm ID --cluster-store …)",
                naming.join(", "),
                self.name
            )));
        }
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
        let key = self.block_key(network, block);
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

    /// Give `block` of `network` up, if `host` holds it: true if it was
    /// released (one transaction: a block another host claimed meanwhile
    /// stays that host's).
    pub async fn release(
        &self,
        client: &mut Client,
        network: &str,
        block: ipnet::IpNet,
        host: &str,
    ) -> Result<bool> {
        let key = self.block_key(network, block);
        let r = client
            .txn(
                Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, host)])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await
            .map_err(|e| self.error("release an address block", e))?;
        Ok(r.succeeded())
    }

    fn block_key(&self, network: &str, block: ipnet::IpNet) -> String {
        format!(
            "{}{}",
            self.blocks_prefix(network),
            block.to_string().replace('/', "_")
        )
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

impl ClusterStore {
    fn policies_prefix(&self) -> String {
        format!("{}policies/", self.prefix())
    }

    /// Add a rule every host applies; its id is the store's revision of
    /// the addition, so ids give the order rules were added in.
    pub async fn add_policy(&self, client: &mut Client, spec: &PolicySpec) -> Result<i64> {
        if let Some((id, _)) = self
            .policies(client)
            .await?
            .into_iter()
            .find(|(_, s)| s == spec)
        {
            return Err(Error::invalid(
                "policy",
                spec_words(spec),
                format!("is rule {id} of cluster `{}` already", self.name),
            ));
        }
        let value = serde_json::to_vec(spec).expect("a rule serializes");
        let key = format!(
            "{}{}",
            self.policies_prefix(),
            crate::names::short_hash(&[&String::from_utf8_lossy(&value), &now_nanos()])
        );
        let put = client
            .txn(
                Txn::new()
                    .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]),
            )
            .await
            .map_err(|e| self.error("add a rule", e))?;
        match put.header() {
            Some(h) if put.succeeded() => Ok(h.revision()),
            _ => Err(Error::Conflict(
                "the rule's key was taken; try again".into(),
            )),
        }
    }

    /// The cluster's rules, oldest first: (id, rule).
    pub async fn policies(&self, client: &mut Client) -> Result<Vec<(i64, PolicySpec)>> {
        let resp = client
            .get(
                self.policies_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.error("list rules", e))?;
        let mut out: Vec<(i64, PolicySpec)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                Some((
                    kv.create_revision(),
                    serde_json::from_slice(kv.value()).ok()?,
                ))
            })
            .collect();
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Remove the cluster's rules `ids`, all or none.
    pub async fn remove_policies(&self, client: &mut Client, ids: &[i64]) -> Result<()> {
        let resp = client
            .get(
                self.policies_prefix(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| self.error("list rules", e))?;
        let mut deletes = Vec::new();
        for id in ids {
            let Some(kv) = resp.kvs().iter().find(|kv| kv.create_revision() == *id) else {
                return Err(Error::invalid(
                    "policy id",
                    id,
                    format!("cluster `{}` has no such rule", self.name),
                ));
            };
            deletes.push(TxnOp::delete(kv.key().to_vec(), None));
        }
        client
            .txn(Txn::new().and_then(deletes))
            .await
            .map(drop)
            .map_err(|e| self.error("remove rules", e))
    }
}

/// A rule as it was written (`SCOPE allow from …`), for messages.
pub fn spec_words(spec: &PolicySpec) -> String {
    let mut words = vec![spec.scope.clone(), spec.action.clone()];
    for (word, value) in [
        ("from", &spec.from),
        ("to", &spec.to),
        ("proto", &spec.proto),
        ("port", &spec.port),
    ] {
        if let Some(v) = value {
            words.extend([word.to_string(), v.clone()]);
        }
    }
    if let Some(p) = spec.priority {
        words.extend(["priority".to_string(), p.to_string()]);
    }
    words.join(" ")
}

fn now_nanos() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().to_string())
        .unwrap_or_default()
}

/// A container on a cluster network, as its host records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network: String,
    pub host: String,
    pub mac: crate::model::Mac,
    pub addresses: Vec<IpAddr>,
    pub vtep: IpAddr,
    /// The policy selectors naming it (`label:K=V`, `attachment:T`): other
    /// hosts' rules reach it through them.
    #[serde(default)]
    pub selectors: Vec<String>,
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
