//! Hosts that share networks, in an etcd cluster (`--cluster-store
//! etcd://HOST:PORT[,…]`, or `etcds://` over TLS): each host's daemon
//! registers it under `/plumb/CLUSTER/hosts/NAME`, bound to an etcd lease
//! it keeps alive, with the address its overlay tunnels end at (its VTEP).
//! A host whose daemon dies leaves by itself when its lease expires (a few
//! seconds); one that stops leaves at once (the lease is revoked). Nothing
//! here is plumb's own consensus: two hosts never take one name because the
//! registration is an etcd transaction.
//!
//! The store may want TLS (its CA, and a client certificate when etcd runs
//! with `--client-cert-auth`) and a user of its authentication: see
//! [`Access`]. Files are read and checked when the store is parsed, so bad
//! input stops before anything changes; what etcd then refuses is an
//! [`Error::Cluster`] with etcd's reason.
//!
//! A connection is to one member at a time, one that answers and has a
//! leader; when it fails, the next member is taken. (etcd-client's own
//! balancing over all endpoints keeps a dead member in its pool: tonic's
//! reconnecting service reports a refused connection as the failure of the
//! request, never as the endpoint's, so a share of every request, keep-alives
//! included, goes on failing as long as the member is away.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::NetworkSpec;
use crate::policy::rules::PolicySpec;

/// How long a host stays registered after its daemon last spoke.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Where the cluster lives, which one it is, and how plumb gets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStore {
    /// `http://HOST:PORT`, or `https://` for an `etcds://` store.
    pub endpoints: Vec<String>,
    pub name: String,
    /// TLS (an `etcds://` store): what is trusted and who plumb is.
    pub tls: Option<Tls>,
    /// A user of etcd's authentication.
    pub login: Option<Login>,
}

/// The TLS of an `etcds://` store, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificates of the CA(s) trusted for the store's certificate;
    /// none: the system's CAs.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate (chain) and private key plumb shows the store.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A user of etcd's authentication. The password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// How plumb gets into a store, as given: files not read yet, and the
/// password from the environment (never from the command line).
#[derive(Clone, Default)]
pub struct Access {
    /// `--cluster-ca`
    pub ca: Option<PathBuf>,
    /// `--cluster-cert`
    pub cert: Option<PathBuf>,
    /// `--cluster-key`
    pub key: Option<PathBuf>,
    /// `--cluster-user`
    pub user: Option<String>,
    /// `--cluster-password-file`
    pub password_file: Option<PathBuf>,
    /// `PLUMB_CLUSTER_PASSWORD`
    pub password: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl ClusterStore {
    /// `etcd://HOST:PORT[,HOST:PORT…]` (or `etcds://`: TLS), for cluster
    /// `name`, plaintext and anonymous until [`ClusterStore::with_access`].
    pub fn parse(url: &str, name: &str) -> Result<ClusterStore> {
        let bad = |why: &str| Error::invalid("--cluster-store", url, why);
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
            ("http", rest)
        } else if let Some(rest) = url.strip_prefix("etcds://") {
            ("https", rest)
        } else {
            return Err(bad(
                "a cluster store is etcd://HOST:PORT[,HOST:PORT…] (etcds:// over TLS)",
            ));
        };
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
                Ok(format!("{scheme}://{e}"))
            })
            .collect::<Result<_>>()?;
        crate::model::validate_name("--cluster-name", name)?;
        Ok(ClusterStore {
            endpoints,
            name: name.to_string(),
            tls: (scheme == "https").then(Tls::default),
            login: None,
        })
    }

    /// The same store reached with `access`: its files read and checked
    /// (a certificate with its key, a CA only over TLS, a user with a
    /// password); an error names the option and the value.
    pub fn with_access(mut self, access: &Access) -> Result<ClusterStore> {
        match (&access.cert, &access.key) {
            (Some(cert), None) => {
                return Err(Error::invalid(
                    "--cluster-cert",
                    cert.display(),
                    "needs --cluster-key (the certificate's private key)",
                ));
            }
            (None, Some(key)) => {
                return Err(Error::invalid(
                    "--cluster-key",
                    key.display(),
                    "needs --cluster-cert (the certificate of the key)",
                ));
            }
            _ => {}
        }
        if let Some(tls) = &mut self.tls {
            if let Some(ca) = &access.ca {
                tls.ca = Some(read_ca(ca)?);
            }
            if let (Some(cert), Some(key)) = (&access.cert, &access.key) {
                tls.identity = Some(read_identity(cert, key)?);
            }
        } else {
            for (field, file) in [
                ("--cluster-ca", &access.ca),
                ("--cluster-cert", &access.cert),
            ] {
                if let Some(file) = file {
                    return Err(Error::invalid(
                        field,
                        file.display(),
                        "needs a TLS store, etcds://HOST:PORT (etcd:// is plaintext)",
                    ));
                }
            }
        }
        self.login = login(access)?;
        Ok(self)
    }

    /// The first endpoint's `HOST:PORT`.
    pub fn first_address(&self) -> &str {
        let e = &self.endpoints[0];
        e.split_once("://").map_or(e.as_str(), |(_, a)| a)
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
            reason: format!("{what}: {}", reason(self, &e)),
        }
    }

    /// How to reach the members: timeouts, TLS and login as the store
    /// says.
    fn options(&self) -> ConnectOptions {
        // A member with no leader (cut off from the others, or electing)
        // answers "no leader" at once instead of holding requests, and
        // ends its streams when it loses the leader.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(PROBE)
            .with_timeout(Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = &self.tls {
            let mut config = TlsOptions::new();
            config = match &tls.ca {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_native_roots(),
            };
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        if let Some(login) = &self.login {
            options = options.with_user(login.user.clone(), login.password.clone());
        }
        options
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
        let options = self.options();
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
                Ok(Err(e)) => failed.push(format!("{endpoint}: {}", reason(self, &e))),
                Err(_) => failed.push(format!(
                    "{endpoint}: no answer in {} s",
                    (PROBE * 2).as_secs()
                )),
            }
        }
        let who = match &self.login {
            Some(l) => format!(" as user `{}`", l.user),
            None => String::new(),
        };
        Err(Error::Cluster {
            store: self.endpoints.join(","),
            reason: match failed.len() {
                1 => format!("connect{who}: {}", failed[0]),
                _ => format!("connect{who}: no member answers: {}", failed.join("; ")),
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
        let naming: Vec<String> = self
            .policies(client)
            .await?
            .into_iter()
            .filter(|(_, p)| names_network(p, name))
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

    /// Cluster network `name`'s definition, if the cluster has it.
    pub async fn network(&self, client: &mut Client, name: &str) -> Result<Option<NetworkSpec>> {
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

    /// Where container `e`'s record is kept.
    pub fn endpoint_key(&self, e: &Endpoint) -> String {
        format!(
            "{}{}/{}/{}",
            self.endpoints_prefix(),
            e.network,
            e.host,
            e.mac
        )
    }

    /// What a change the watch saw (a put of `value` at `key`, or a
    /// delete) says of the cluster's containers.
    pub fn seen(&self, put: bool, key: &[u8], value: &[u8]) -> Seen {
        let prefix = self.endpoints_prefix();
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&prefix))
        else {
            return Seen::Other;
        };
        let key = format!("{prefix}{rest}");
        if put {
            return match serde_json::from_slice::<Endpoint>(value) {
                Ok(e) if self.endpoint_key(&e) == key => Seen::Recorded(key, e),
                _ => Seen::Other,
            };
        }
        // NETWORK/HOST/MAC: names hold no slash.
        match rest.split('/').collect::<Vec<_>>()[..] {
            [_, host, _] => Seen::Removed {
                host: host.to_string(),
                key,
            },
            _ => Seen::Other,
        }
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

/// Cluster network `spec` as a host makes it (checked with a stand-in for
/// the host's own tunnel end, which each daemon fills in).
pub fn as_a_host_makes_it(mut spec: NetworkSpec) -> Result<crate::model::Network> {
    spec.vtep = Some("192.0.2.1".into());
    spec.validate()
}

/// Whether cluster rule `spec`, as written, names network `name` (by its
/// name or as `network:NAME`): such a network cannot leave the cluster.
pub fn names_network(spec: &PolicySpec, name: &str) -> bool {
    [Some(&spec.scope), spec.from.as_ref(), spec.to.as_ref()]
        .into_iter()
        .flatten()
        .any(|w| w == name || w.strip_prefix("network:") == Some(name))
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

/// What went wrong, as etcd or the transport said it: a gRPC status is its
/// message (etcd's reason), a transport error with every cause under it
/// (a TLS alert, an unknown issuer) rather than only "transport error";
/// with the option to look at when TLS or a login was refused.
fn reason(store: &ClusterStore, e: &etcd_client::Error) -> String {
    let mut out = match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => s.message().to_string(),
        e => e.to_string(),
    };
    let mut source = match e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        _ => None,
    };
    while let Some(cause) = source {
        let said = cause.to_string();
        if !out.contains(&said) && said != "transport error" {
            out = format!("{out}: {said}");
        }
        source = cause.source();
    }
    let tls = store.tls.as_ref();
    let hint: String = if out.contains("UnknownIssuer") {
        "the store's certificate is not from a trusted CA: name its CA with --cluster-ca".into()
    } else if out.contains("NotValidForName") {
        "the store's certificate does not name the address in --cluster-store".into()
    } else if out.contains("BadCertificate")
        || out.contains("CertificateRequired")
        || out.contains("UnknownCA")
    {
        match tls.is_some_and(|t| t.identity.is_some()) {
            true => "the store refused --cluster-cert: it is not from a CA the store trusts".into(),
            false => {
                "the store wants a client certificate: --cluster-cert and --cluster-key".into()
            }
        }
    } else if tls.is_some()
        && ["connection closed", "stream closed", "broken pipe"]
            .iter()
            .any(|w| out.contains(w))
    {
        // Under TLS 1.3 a server that refuses the client's certificate may
        // only close the connection (the client then finds it closed, or
        // writes into it: a broken pipe); so may one that stops.
        match tls.is_some_and(|t| t.identity.is_some()) {
            true => "if this goes on, does the store trust --cluster-cert's CA?".into(),
            false => {
                "if this goes on, the store may want a client certificate: --cluster-cert and --cluster-key"
                    .into()
            }
        }
    } else if out.contains("authentication failed") {
        "check --cluster-user and its password".into()
    } else if out.contains("user name is empty") {
        "the store wants a user: --cluster-user".into()
    } else if out.contains("permission denied") {
        match &store.login {
            Some(l) => format!(
                "user `{}` needs a role that may read and write the /plumb/ prefix",
                l.user
            ),
            None => "log in with --cluster-user, a user whose role may read and write the /plumb/ prefix".into(),
        }
    } else {
        return out;
    };
    format!("{out} ({hint})")
}

fn read(field: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::invalid(field, path.display(), format!("cannot be read: {e}")))
}

/// The PEM certificates of a file, at least one.
fn certificates(field: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(field, path.display(), format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::invalid(
            field,
            path.display(),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// `--cluster-ca`: PEM certificates a TLS client can trust.
fn read_ca(path: &Path) -> Result<Vec<u8>> {
    let pem = read("--cluster-ca", path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates("--cluster-ca", path, &pem)? {
        roots.add(cert).map_err(|e| {
            Error::invalid(
                "--cluster-ca",
                path.display(),
                format!("is not a usable CA certificate: {e}"),
            )
        })?;
    }
    Ok(pem)
}

/// `--cluster-cert` and `--cluster-key`: a certificate and its own key.
fn read_identity(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let cert = read("--cluster-cert", cert_path)?;
    let key = read("--cluster-key", key_path)?;
    let chain = certificates("--cluster-cert", cert_path, &cert)?;
    let bad_key = |why: String| Error::invalid("--cluster-key", key_path.display(), why);
    let der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad_key(
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----, or RSA/EC PRIVATE KEY)".into(),
        ),
        e => bad_key(format!("is not PEM: {e}")),
    })?;
    // As rustls checks it when TLS starts (ring, as etcd-client's TLS).
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| bad_key(format!("cannot be used: {e}")))?;
    match rustls::sign::CertifiedKey::new(chain, signer).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok((cert, key))
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(bad_key(format!(
            "is not the private key of --cluster-cert `{}`",
            cert_path.display()
        ))),
        Err(e) => Err(Error::invalid(
            "--cluster-cert",
            cert_path.display(),
            format!("cannot be used: {e}"),
        )),
    }
}

/// A user with a password, from the file or the environment: one of the
/// two, and only with a user.
fn login(access: &Access) -> Result<Option<Login>> {
    let password = match (&access.password_file, &access.password) {
        (Some(file), Some(_)) => {
            return Err(Error::invalid(
                "--cluster-password-file",
                file.display(),
                "and PLUMB_CLUSTER_PASSWORD both give a password: give one",
            ));
        }
        (Some(file), None) => {
            let text = read("--cluster-password-file", file)?;
            let text = String::from_utf8(text).map_err(|_| {
                Error::invalid("--cluster-password-file", file.display(), "is not UTF-8")
            })?;
            // One line, as `echo` or an editor writes it.
            let line = text.strip_suffix('\n').unwrap_or(&text);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                return Err(Error::invalid(
                    "--cluster-password-file",
                    file.display(),
                    "is empty",
                ));
            }
            Some(line.to_string())
        }
        (None, Some(p)) if p.is_empty() => {
            return Err(Error::invalid("PLUMB_CLUSTER_PASSWORD", "", "is empty"));
        }
        (None, p) => p.clone(),
    };
    match (&access.user, password) {
        (Some(user), Some(password)) if !user.is_empty() => Ok(Some(Login {
            user: user.clone(),
            password,
        })),
        (Some(user), _) if user.is_empty() => {
            Err(Error::invalid("--cluster-user", user, "is empty"))
        }
        (Some(user), _) => Err(Error::invalid(
            "--cluster-user",
            user,
            "needs a password: PLUMB_CLUSTER_PASSWORD or --cluster-password-file",
        )),
        (None, Some(_)) => Err(match &access.password_file {
            Some(file) => Error::invalid(
                "--cluster-password-file",
                file.display(),
                "needs --cluster-user",
            ),
            None => Error::invalid(
                "PLUMB_CLUSTER_PASSWORD",
                "",
                "is set: it needs --cluster-user",
            ),
        }),
        (None, None) => Ok(None),
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
    /// The policy selectors naming it (`label:K=V`, `attachment:T`): other
    /// hosts' rules reach it through them.
    #[serde(default)]
    pub selectors: Vec<String>,
}

/// What one change to the cluster's keys says of its containers.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A container recorded, or recorded anew: its key and its record.
    Recorded(String, Endpoint),
    /// A container's record removed: its key, and the host it names.
    Removed { key: String, host: String },
    /// Anything else (hosts, networks, blocks, rules), or unreadable.
    Other,
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

    #[test]
    fn etcds_is_tls_and_etcd_plaintext() {
        let s = ClusterStore::parse("etcds://10.0.0.1:2379,e2:2379", "prod").unwrap();
        assert_eq!(s.endpoints, ["https://10.0.0.1:2379", "https://e2:2379"]);
        assert_eq!(s.tls, Some(Tls::default()));
        assert_eq!(s.first_address(), "10.0.0.1:2379");
        let s = ClusterStore::parse("etcd://10.0.0.1:2379", "prod").unwrap();
        assert_eq!(s.tls, None);
        assert_eq!(s.first_address(), "10.0.0.1:2379");
        let e = ClusterStore::parse("https://10.0.0.1:2379", "prod").unwrap_err();
        assert!(e.to_string().contains("etcds://"), "{e}");
    }

    fn refused(url: &str, access: &Access) -> String {
        ClusterStore::parse(url, "prod")
            .unwrap()
            .with_access(access)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn tls_files_are_checked_by_option_before_use() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let path = |p: &Path| Some(p.to_path_buf());
        let tls = "etcds://h:2379";
        for (url, access, says) in [
            (
                tls,
                Access {
                    cert: path(&junk),
                    ..Access::default()
                },
                format!("--cluster-cert `{}`: needs --cluster-key", junk.display()),
            ),
            (
                tls,
                Access {
                    key: path(&junk),
                    ..Access::default()
                },
                format!("--cluster-key `{}`: needs --cluster-cert", junk.display()),
            ),
            (
                tls,
                Access {
                    ca: path(&missing),
                    ..Access::default()
                },
                format!("--cluster-ca `{}`: cannot be read", missing.display()),
            ),
            (
                tls,
                Access {
                    ca: path(&junk),
                    ..Access::default()
                },
                format!(
                    "--cluster-ca `{}`: holds no PEM certificate",
                    junk.display()
                ),
            ),
            (
                tls,
                Access {
                    cert: path(&junk),
                    key: path(&missing),
                    ..Access::default()
                },
                format!("--cluster-key `{}`: cannot be read", missing.display()),
            ),
            (
                tls,
                Access {
                    cert: path(&junk),
                    key: path(&junk),
                    ..Access::default()
                },
                format!(
                    "--cluster-cert `{}`: holds no PEM certificate",
                    junk.display()
                ),
            ),
            (
                "etcd://h:2379",
                Access {
                    ca: path(&junk),
                    ..Access::default()
                },
                format!(
                    "--cluster-ca `{}`: needs a TLS store, etcds://",
                    junk.display()
                ),
            ),
            (
                "etcd://h:2379",
                Access {
                    cert: path(&junk),
                    key: path(&junk),
                    ..Access::default()
                },
                format!("--cluster-cert `{}`: needs a TLS store", junk.display()),
            ),
        ] {
            let e = refused(url, &access);
            assert!(e.contains(&says), "{access:?}: {e}");
        }
    }

    #[test]
    fn a_login_is_a_user_with_one_password_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        let user = || Some("plumb".to_string());
        let login = |access: Access| {
            ClusterStore::parse("etcd://h:2379", "prod")
                .unwrap()
                .with_access(&access)
                .unwrap()
                .login
        };
        // From the environment, or a file's one line.
        let l = login(Access {
            user: user(),
            password: Some("s3cret".into()),
            ..Access::default()
        })
        .unwrap();
        assert_eq!((l.user.as_str(), l.password.as_str()), ("plumb", "s3cret"));
        for text in ["s3cret\n", "s3cret\r\n", "s3cret"] {
            let l = login(Access {
                user: user(),
                password_file: file("pw", text),
                ..Access::default()
            })
            .unwrap();
            assert_eq!(l.password, "s3cret", "{text:?}");
        }
        assert_eq!(login(Access::default()), None);
        // Never printed.
        let s = ClusterStore::parse("etcd://h:2379", "prod")
            .unwrap()
            .with_access(&Access {
                user: user(),
                password: Some("s3cret".into()),
                ..Access::default()
            })
            .unwrap();
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");
        let a = Access {
            user: user(),
            password: Some("s3cret".into()),
            ..Access::default()
        };
        assert!(!format!("{a:?}").contains("s3cret"), "{a:?}");

        let pw = file("pw", "s3cret\n");
        let empty = file("empty", "\n");
        let missing = Some(dir.path().join("missing"));
        let shown = |p: &Option<PathBuf>| p.as_ref().unwrap().display().to_string();
        for (access, says) in [
            (
                Access { user: user(), ..Access::default() },
                "--cluster-user `plumb`: needs a password: PLUMB_CLUSTER_PASSWORD or --cluster-password-file".to_string(),
            ),
            (
                Access { user: Some(String::new()), password: Some("x".into()), ..Access::default() },
                "--cluster-user ``: is empty".to_string(),
            ),
            (
                Access { password: Some("x".into()), ..Access::default() },
                "PLUMB_CLUSTER_PASSWORD ``: is set: it needs --cluster-user".to_string(),
            ),
            (
                Access { password_file: pw.clone(), ..Access::default() },
                format!("--cluster-password-file `{}`: needs --cluster-user", shown(&pw)),
            ),
            (
                Access { user: user(), password_file: pw.clone(), password: Some("x".into()), ..Access::default() },
                format!("--cluster-password-file `{}`: and PLUMB_CLUSTER_PASSWORD both", shown(&pw)),
            ),
            (
                Access { user: user(), password_file: empty.clone(), ..Access::default() },
                format!("--cluster-password-file `{}`: is empty", shown(&empty)),
            ),
            (
                Access { user: user(), password: Some(String::new()), ..Access::default() },
                "PLUMB_CLUSTER_PASSWORD ``: is empty".to_string(),
            ),
            (
                Access { user: user(), password_file: missing.clone(), ..Access::default() },
                format!("--cluster-password-file `{}`: cannot be read", shown(&missing)),
            ),
        ] {
            let e = refused("etcd://h:2379", &access);
            assert!(e.contains(&says), "{access:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_watched_change_is_read_as_a_container_recorded_or_removed_or_else_other() {
        let s = ClusterStore::parse("etcd://h:2379", "prod").unwrap();
        let e = Endpoint {
            network: "t1".into(),
            host: "h2".into(),
            mac: "02:00:00:00:00:07".parse().unwrap(),
            addresses: vec!["10.100.0.7".parse().unwrap()],
            vtep: "10.250.0.2".parse().unwrap(),
            selectors: vec!["label:role=db".into()],
        };
        let key = s.endpoint_key(&e);
        assert_eq!(key, "/plumb/prod/endpoints/t1/h2/02:00:00:00:00:07");
        let value = serde_json::to_vec(&e).unwrap();
        assert_eq!(
            s.seen(true, key.as_bytes(), &value),
            Seen::Recorded(key.clone(), e.clone())
        );
        assert_eq!(
            s.seen(false, key.as_bytes(), b""),
            Seen::Removed {
                key: key.clone(),
                host: "h2".into()
            }
        );
        // A record under another's key, unreadable, another cluster's, or
        // not a container's at all.
        let moved = key.replace("/h2/", "/h3/");
        for (put, k, v) in [
            (true, moved.as_str(), &value[..]),
            (true, key.as_str(), &b"{"[..]),
            (
                true,
                "/plumb/other/endpoints/t1/h2/02:00:00:00:00:07",
                &value[..],
            ),
            (false, "/plumb/prod/hosts/h2", &b""[..]),
            (false, "/plumb/prod/endpoints/t1/h2", &b""[..]),
            (true, "/plumb/prod/blocks/t1/10.100.0.0_26", &b"h2"[..]),
        ] {
            assert_eq!(s.seen(put, k.as_bytes(), v), Seen::Other, "{k}");
        }
    }
}
