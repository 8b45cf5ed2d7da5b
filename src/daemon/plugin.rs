//! The daemon as Docker's network driver (`docker network create -d
//! plumb`): each Docker network is a plumb network, each endpoint a staged
//! attachment that Docker moves into its container.
//!
//! The order Docker calls in, and what plumb does at each step:
//! - CreateNetwork: the options are checked and recorded; Docker does not
//!   say the network's name, so a task asks Docker for it once the create
//!   is through and makes the plumb network under that name (an endpoint's
//!   create does it then if the task has not yet).
//! - CreateEndpoint: the attach is staged on the host (addresses, the
//!   interface, set elements, published ports), and the addresses and MAC
//!   Docker did not choose are returned to it.
//! - Join: the staged interface is handed to Docker with the gateway and
//!   routes. The container's namespace may not exist yet (a `docker run`'s
//!   is made later): a task waits for the interface to arrive in the
//!   sandbox, then finishes the attachment there.
//! - Leave, DeleteEndpoint, DeleteNetwork: the way back.
//!
//! No handler calls Docker while Docker waits on it, except an endpoint's
//! create on a network whose name plumb has not learnt yet (right after
//! its create, through Docker's API, which therefore serves).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use ipnet::IpNet;

use super::lease::LeaseTask;
use super::{Ctx, Stop, blocking};
use crate::docker::plugin::options::{self, EndpointRequest, IpamData};
use crate::docker::plugin::{self, Answer, Driver};
use crate::engine::docker_ipam::{self, DhcpLan};
use crate::error::Result;
use crate::ipam::dhcp;
use crate::model::{Attachment, Mac};
use crate::store::docker::PoolLease;

/// How long an endpoint's interface may take to arrive in its container
/// after Join (a `docker run` creates the container in between).
const ARRIVAL: Duration = Duration::from_secs(120);
/// How often the sandbox is looked at meanwhile.
const ARRIVAL_POLL: Duration = Duration::from_millis(10);
/// How long a DHCP endpoint waits for its container to be known, and how
/// often it looks.
const CONTAINER_KNOWN: Duration = Duration::from_secs(10);
const CONTAINER_POLL: Duration = Duration::from_millis(50);
/// Polls between two looks at whether the endpoint still waits.
const STILL_WAITING_EVERY: u64 = 50;
/// How long a new network's name may take to show in Docker's API.
const NAMING: Duration = Duration::from_secs(30);

pub struct DockerDriver {
    ctx: Arc<Ctx>,
    /// One network is named at a time: the naming task and an endpoint's
    /// create may both try.
    naming: tokio::sync::Mutex<()>,
    /// The endpoints a task finishes or leases (one task each: Docker may
    /// join again, and a daemon's start takes up what waits).
    watched: std::sync::Mutex<HashSet<String>>,
}

/// Serve Docker as driver `name` until the task is dropped; `bound` says
/// once the socket is this daemon's (its to remove at the end), `tried`
/// is told after the first try at it. A socket another process serves is
/// tried again now and then.
pub async fn serve(
    ctx: Arc<Ctx>,
    name: String,
    bound: Arc<AtomicBool>,
    tried: Arc<tokio::sync::Notify>,
) {
    let listener = loop {
        let attempt = plugin::bind(&name);
        tried.notify_one();
        match attempt {
            Ok(l) => break l,
            Err(e) => {
                tracing::error!("Docker network driver `{name}`: {e}; trying again in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    bound.store(true, Ordering::SeqCst);
    tracing::info!(socket = %plugin::socket_path(&name).display(), "Docker network driver ready");
    let driver = Arc::new(DockerDriver {
        ctx,
        naming: tokio::sync::Mutex::new(()),
        watched: std::sync::Mutex::new(HashSet::new()),
    });
    // Networks created while no daemon ran to learn their names.
    let c = driver.ctx.clone();
    let unnamed = blocking(move || c.with_engine(|e| e.unnamed_docker_networks()))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("Docker networks left unnamed: {e}");
            Vec::new()
        });
    for id in unnamed {
        tokio::spawn(driver.clone().name_when_known(id));
    }
    take_up_endpoints(&driver).await;
    plugin::serve(listener, driver).await;
}

/// Take up the endpoints a stopped daemon left waiting: for their interface
/// to arrive, or for their lease. Some are over, whatever Docker says
/// later (it does not repeat a Leave or DeleteEndpoint it could not make
/// while plumb was down): a staged one whose interface is neither on the
/// host nor in its sandbox (a reboot took it), and one whose container's
/// process is gone (stopped meanwhile; its next start makes a new one,
/// which may need its address). This runs before the driver answers Docker.
async fn take_up_endpoints(driver: &Arc<DockerDriver>) {
    let ctx = &driver.ctx;
    let c = ctx.clone();
    let waiting = blocking(move || c.with_engine(|e| e.docker_endpoints()))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("Docker endpoints left waiting: {e}");
            Vec::new()
        });
    let over = |id: String, why: &'static str| {
        let c = ctx.clone();
        async move {
            let eid = id.clone();
            match blocking(move || c.with_engine(|en| en.docker_endpoint_delete(&eid))).await {
                Ok(()) => tracing::info!(endpoint = %id, "removed an endpoint {why}"),
                Err(err) => tracing::warn!(endpoint = %id, "remove an endpoint {why}: {err}"),
            }
        }
    };
    for (e, a) in waiting {
        let Some(a) = a else { continue };
        if !a.is_staged() {
            if a.process.is_some_and(|p| !p.alive()) {
                over(e.id, "whose container stopped").await;
                continue;
            }
            if a.dhcp.as_ref().is_some_and(|b| b.lease.is_none()) {
                let work = lease_when_known(ctx.clone(), a, e.id.clone());
                driver.watch(format!("{} lease", e.id), work);
            }
            continue;
        }
        let (c, done, sandbox) = (ctx.clone(), a.clone(), e.sandbox.clone());
        let gone = blocking(move || {
            c.with_engine(|en| {
                let arrived = sandbox
                    .as_deref()
                    .and_then(|s| crate::engine::arrived_in(std::path::Path::new(s), &done));
                Ok(arrived.is_none() && !en.staged_on_host(&done)?)
            })
        })
        .await
        .unwrap_or(false);
        if gone {
            over(e.id, "whose interface is gone").await;
        } else if let Some(sandbox) = e.sandbox {
            let key = format!("{} in {sandbox}", e.id);
            let work = finish_on_arrival(ctx.clone(), sandbox.into(), a, e.id.clone());
            driver.watch(key, work);
        }
    }
}

impl Driver for DockerDriver {
    fn call(
        self: Arc<Self>,
        method: String,
        body: Value,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send>> {
        Box::pin(async move {
            // A request in flight: the WAL's checkpoint waits.
            let _busy = self.ctx.activity.begin();
            self.dispatch(&method, body).await
        })
    }
}

/// The address space of plumb's IPAM driver's pools.
const ADDRESS_SPACE: &str = "plumb";
/// Where Docker puts an endpoint's MAC in an IPAM request.
const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";

#[derive(Deserialize)]
struct PoolCall {
    #[serde(rename = "Pool", default)]
    pool: String,
    #[serde(rename = "SubPool", default)]
    sub_pool: String,
    #[serde(rename = "V6", default)]
    v6: bool,
    #[serde(rename = "PoolID", default)]
    pool_id: String,
    /// `--ipam-opt`.
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct AddressCall {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct NetworkCall {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Interface {
    #[serde(default)]
    address: String,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
struct EndpointCall {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    #[serde(rename = "Interface", default)]
    interface: Option<Interface>,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, Value>>,
    #[serde(rename = "SandboxKey", default)]
    sandbox_key: String,
}

fn parse<T: serde::de::DeserializeOwned>(method: &str, body: Value) -> Result<T, String> {
    serde_json::from_value(body).map_err(|e| format!("{method}: bad request: {e}"))
}

/// Handle a request that parsed (`call`), or answer why it did not.
async fn with<T, F: Future<Output = Result<Value, String>>>(
    call: Result<T, String>,
    handle: impl FnOnce(T) -> F,
) -> Result<Value, String> {
    handle(call?).await
}

impl DockerDriver {
    /// Run `work` (`key`: an endpoint and what for), unless a task does
    /// that already.
    fn watch(self: &Arc<Self>, key: String, work: impl Future<Output = ()> + Send + 'static) {
        if !self.watched().insert(key.clone()) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            work.await;
            me.watched().remove(&key);
        });
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn dispatch(self: Arc<Self>, method: &str, body: Value) -> Answer {
        let out = match method {
            "Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            // Docker keeps no replay of requests: plumb's store has them.
            // The MAC is an endpoint's identity to a DHCP pool's LAN (Docker
            // chooses one for every endpoint then).
            "IpamDriver.GetCapabilities" => {
                Ok(json!({"RequiresMACAddress": true, "RequiresRequestReplay": false}))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE,
            })),
            "IpamDriver.RequestPool" => with(parse(method, body), |c| self.request_pool(c)).await,
            "IpamDriver.ReleasePool" => with(parse(method, body), |c| self.release_pool(c)).await,
            "IpamDriver.RequestAddress" => {
                with(parse(method, body), |c| self.request_address(c)).await
            }
            "IpamDriver.ReleaseAddress" => {
                with(parse(method, body), |c| self.release_address(c)).await
            }
            "NetworkDriver.GetCapabilities" => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            "NetworkDriver.CreateNetwork" => {
                with(parse(method, body), |c| self.clone().create_network(c)).await
            }
            "NetworkDriver.DeleteNetwork" => {
                with(parse(method, body), |c| self.delete_network(c)).await
            }
            "NetworkDriver.CreateEndpoint" => {
                with(parse(method, body), |c| self.create_endpoint(c)).await
            }
            "NetworkDriver.DeleteEndpoint" => {
                with(parse(method, body), |c| self.delete_endpoint(c)).await
            }
            "NetworkDriver.Join" => with(parse(method, body), |c| self.join(c)).await,
            "NetworkDriver.Leave" => with(parse(method, body), |c| self.leave(c)).await,
            "NetworkDriver.EndpointOperInfo" => {
                with(parse(method, body), |c| self.oper_info(c)).await
            }
            // Ports are published with the endpoint, for its whole life.
            "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
            _ => return None,
        };
        Some(out)
    }

    /// Run `f` on an engine, its error said with Docker's flags (an
    /// endpoint's or a network's).
    async fn engine<T: Send + 'static>(
        &self,
        endpoint: bool,
        f: impl FnOnce(&mut crate::engine::Engine) -> Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let c = self.ctx.clone();
        blocking(move || c.with_engine(f))
            .await
            .map_err(|e| options::in_docker_terms(&e.to_string(), endpoint))
    }

    async fn request_pool(&self, c: PoolCall) -> Result<Value, String> {
        let (id, pool) = self
            .engine(false, move |e| {
                e.ipam_request_pool(&c.pool, &c.sub_pool, c.v6, &c.options.unwrap_or_default())
            })
            .await?;
        Ok(json!({"PoolID": id, "Pool": pool.to_string(), "Data": {}}))
    }

    async fn release_pool(&self, c: PoolCall) -> Result<Value, String> {
        self.engine(false, move |e| e.ipam_release_pool(&c.pool_id))
            .await?;
        Ok(json!({}))
    }

    async fn delete_network(&self, c: NetworkCall) -> Result<Value, String> {
        self.engine(false, move |e| e.docker_network_delete(&c.network_id))
            .await?;
        Ok(json!({}))
    }

    async fn delete_endpoint(&self, c: EndpointCall) -> Result<Value, String> {
        if let Ok(a) = self.endpoint(&c.endpoint_id).await {
            self.stop_lease(&a).await;
        }
        self.engine(true, move |e| e.docker_endpoint_delete(&c.endpoint_id))
            .await?;
        Ok(json!({}))
    }

    async fn create_network(self: Arc<Self>, c: NetworkCall) -> Result<Value, String> {
        let id = c.network_id.clone();
        if let Some(name) = options::cluster_network(
            c.options.as_ref().unwrap_or(&Default::default()),
            c.ipv4_data.as_deref().unwrap_or_default(),
            c.ipv6_data.as_deref().unwrap_or_default(),
        )? {
            // An on-demand network is made here for Docker's.
            if let Some(cluster) = &self.ctx.cluster {
                cluster
                    .bring(&self.ctx, &name)
                    .await
                    .map_err(|e| options::in_docker_terms(&e.to_string(), false))?;
            }
            self.engine(false, move |e| e.docker_network_on_cluster(&id, &name))
                .await?;
            return Ok(json!({}));
        }
        let placeholder = format!("docker-{}", crate::model::short_docker_id(&id));
        let plumb_pools: Vec<String> = c
            .ipv4_data
            .iter()
            .chain(c.ipv6_data.iter())
            .flatten()
            .filter(|d| d.address_space == ADDRESS_SPACE)
            .map(|d| d.pool.clone())
            .collect();
        let plumb_ipam = !plumb_pools.is_empty();
        let i = id.clone();
        let dhcp_pool = match plumb_ipam {
            true => {
                self.engine(false, move |e| e.ipam_bind_pools(&i, &plumb_pools))
                    .await?
            }
            false => false,
        };
        let spec = options::network_spec(
            &placeholder,
            &c.options.unwrap_or_default(),
            &c.ipv4_data.unwrap_or_default(),
            &c.ipv6_data.unwrap_or_default(),
            dhcp_pool,
        )?;
        let i = id.clone();
        self.engine(false, move |e| {
            // plumb's IPAM knows the pool's `--ip-range`, which Docker keeps
            // to itself: plumb's own attaches stay inside it too.
            let mut spec = spec;
            if plumb_ipam {
                for s in spec.subnet.clone() {
                    if let Some(r) = e.ipam_range_of(&s)? {
                        spec.ip_range.push(r.to_string());
                    }
                }
            }
            e.docker_network_create(&i, &spec)
        })
        .await?;
        tokio::spawn(self.clone().name_when_known(id));
        Ok(json!({}))
    }

    /// Make Docker network `id` a plumb network once Docker says its name
    /// (right after its create returns).
    async fn name_when_known(self: Arc<Self>, id: String) {
        let start = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            match self.name_network(&id).await {
                Ok(Some(name)) => {
                    tracing::info!(network = %name, docker_id = %id, "Docker network made");
                    return;
                }
                Ok(None) if start.elapsed() < NAMING => {}
                Ok(None) => {
                    tracing::warn!(docker_id = %id, "Docker does not know network {id}: not made");
                    return;
                }
                Err(e) => {
                    tracing::warn!(docker_id = %id, "Docker network {id}: {e}");
                    return;
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// The plumb network Docker network `id` is, made now if it was not:
    /// None while Docker does not say its name.
    async fn name_network(&self, id: &str) -> Result<Option<String>> {
        let known = |ctx: Arc<Ctx>, id: String| async move {
            blocking(move || ctx.with_engine(|e| e.docker_network(&id))).await
        };
        // Named already, as nearly always: no lock, no call to Docker.
        if let Some(n) = known(self.ctx.clone(), id.to_string())
            .await?
            .and_then(|dn| dn.name)
        {
            return Ok(Some(n));
        }
        let _one = self.naming.lock().await;
        let Some(dn) = known(self.ctx.clone(), id.to_string()).await? else {
            // Deleted meanwhile.
            return Ok(None);
        };
        if let Some(n) = dn.name {
            return Ok(Some(n));
        }
        // Without Docker's API (`--docker-socket` elsewhere) the name cannot
        // be learnt: the network is named after its ID, and works.
        let name = match crate::docker::Client::connect().await {
            Ok(client) => match client.network_name(id).await? {
                Some(name) => name,
                None => return Ok(None),
            },
            Err(e) => {
                let name = format!("docker-{}", crate::model::short_docker_id(id));
                tracing::warn!(docker_id = %id, "{e}: the network is named {name}");
                name
            }
        };
        let (c, i) = (self.ctx.clone(), id.to_string());
        blocking(move || c.with_engine(|e| e.name_docker_network(&i, &name)))
            .await
            .map(Some)
    }

    async fn request_address(&self, c: AddressCall) -> Result<Value, String> {
        let option = |k: &str| c.options.as_ref().and_then(|o| o.get(k)).cloned();
        let gateway =
            option("RequestAddressType").is_some_and(|t| t == "com.docker.network.gateway");
        // An endpoint's request carries its MAC; a reserved address's not.
        let endpoint_mac = option(MAC_OPTION);
        let wanted = match c.address.as_str() {
            "" => None,
            a => Some(
                a.parse()
                    .map_err(|_| format!("--ip `{a}`: not an IP address"))?,
            ),
        };
        if docker_ipam::is_dhcp_pool(&c.pool_id)
            && let Some(mac) = endpoint_mac
        {
            if let Some(a) = wanted {
                return Err(format!(
                    "--ip {a}: the network's addresses come from the LAN's DHCP server; give the container a --mac-address and reserve {a} for it on the server"
                ));
            }
            return self.lease_address(c.pool_id, &mac).await;
        }
        let address = self
            .engine(false, move |e| {
                e.ipam_request_address(&c.pool_id, wanted, gateway)
            })
            .await?;
        Ok(json!({"Address": address.to_string(), "Data": {}}))
    }

    /// An endpoint's address on a DHCP pool: the lease the LAN's server
    /// gives the MAC Docker chose (its client ID made of it, so that a
    /// container started again with that `--mac-address` is the same
    /// client), asked for from the host's interface on the LAN.
    async fn lease_address(&self, pool_id: String, mac: &str) -> Result<Value, String> {
        let mac: Mac = mac
            .parse()
            .map_err(|_| format!("--mac-address `{mac}`: not a MAC address"))?;
        let (lan, network) = self.dhcp_lan(&pool_id).await?;
        let id = lan.identity(mac);
        let client = lan.client(&id);
        let lease = client
            .acquire(None, self.ctx.acquire_timeout)
            .await
            .map_err(|e| format!("network `{network}`: {e}"))?;
        let taken = PoolLease {
            mac,
            client_id: dhcp::hex(&id.client_id),
            lease,
        };
        let t = taken.clone();
        match self
            .engine(true, move |e| e.ipam_hold_lease(&pool_id, &t))
            .await
        {
            Ok(address) => {
                tracing::info!(%network, %address, %mac, "leased for a Docker endpoint");
                Ok(json!({"Address": address.to_string(), "Data": {}}))
            }
            Err(e) => {
                let _ = client.release_from_lan(&taken.lease).await;
                Err(e)
            }
        }
    }

    /// The host's interface on the LAN of DHCP pool `pool_id`'s network,
    /// and the network.
    async fn dhcp_lan(&self, pool_id: &str) -> Result<(DhcpLan, String), String> {
        let p = pool_id.to_string();
        let network_id = self.engine(true, move |e| e.ipam_pool_network(&p)).await?;
        let network = self.plumb_network(&network_id).await?;
        let n = network.clone();
        let lan = self.engine(true, move |e| e.ipam_dhcp_lan(&n)).await?;
        Ok((lan, network))
    }

    /// Docker gives an address back; a leased one is released on the LAN.
    async fn release_address(&self, c: AddressCall) -> Result<Value, String> {
        let address = c
            .address
            .parse()
            .map_err(|_| format!("ReleaseAddress: `{}` is not an address", c.address))?;
        let pool_id = c.pool_id.clone();
        let lease = self
            .engine(false, move |e| e.ipam_release_address(&pool_id, address))
            .await?;
        let Some(taken) = lease else {
            return Ok(json!({}));
        };
        // The address is Docker's no more whatever the LAN hears.
        match self.dhcp_lan(&c.pool_id).await {
            Ok((lan, network)) => {
                let id = lan.identity(taken.mac);
                match lan.client(&id).release_from_lan(&taken.lease).await {
                    Ok(()) => tracing::info!(%network, %address, "released"),
                    Err(e) => tracing::warn!(%network, %address, "release: {e}"),
                }
            }
            Err(e) => tracing::warn!(%address, "not released on the LAN: {e}"),
        }
        Ok(json!({}))
    }

    /// The plumb network Docker network `id` is (made now if need be).
    async fn plumb_network(&self, id: &str) -> Result<String, String> {
        match self.name_network(id).await {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(format!("network {id} is not known to plumb or Docker")),
            Err(e) => Err(options::in_docker_terms(&e.to_string(), false)),
        }
    }

    async fn create_endpoint(&self, c: EndpointCall) -> Result<Value, String> {
        let network = self.plumb_network(&c.network_id).await?;
        let given = c.interface.unwrap_or_default();
        let (n, nid) = (network.clone(), c.network_id.clone());
        let (own_mac, pools) = self
            .engine(true, move |e| {
                Ok((e.network_has_own_macs(&n)?, e.ipam_pools_of(&nid)?))
            })
            .await?;
        // On a DHCP pool Docker's address is a lease plumb took.
        let taken = match pools.iter().find(|p| docker_ipam::is_dhcp_pool(&p.id)) {
            Some(p) => {
                let (pool, address) = (p.id.clone(), given.address.clone());
                Some(
                    self.engine(true, move |e| {
                        let a: IpNet = crate::model::parse_cidr("--ip", &address)?;
                        e.ipam_lease_of(&pool, a.addr())
                    })
                    .await?,
                )
            }
            None => None,
        };
        let mut req = EndpointRequest {
            addresses: vec![given.address.clone(), given.address_ipv6.clone()],
            mac: Some(given.mac_address.clone()),
            options: c.options.unwrap_or_default(),
        };
        if taken.is_some() {
            req.addresses.clear();
        }
        // Docker makes a MAC up for plumb's IPAM; an ipvlan cannot take it.
        if !own_mac && !pools.is_empty() {
            req.mac = None;
        }
        let spec = options::attach_spec(&network, &req)?;
        // Held until the endpoint has its addresses.
        let mut room = None;
        if let Some(cluster) = &self.ctx.cluster {
            let req = spec
                .validate()
                .map_err(|e| options::in_docker_terms(&e.to_string(), true))?;
            room = cluster
                .make_room(&self.ctx, &req)
                .await
                .map_err(|e| options::in_docker_terms(&e.to_string(), true))?;
        }
        let (eid, nid) = (c.endpoint_id.clone(), c.network_id.clone());
        let mut a = self
            .engine(true, move |e| e.docker_endpoint_create(&eid, &nid, &spec))
            .await?;
        drop(room);
        if let Some(t) = taken {
            let h = a.host_ifname.clone();
            match self
                .engine(true, move |e| e.bind_staged_lease(&h, &t))
                .await
            {
                Ok(leased) => a = leased,
                Err(e) => {
                    self.forget_endpoint(&c.endpoint_id).await;
                    return Err(e);
                }
            }
        }
        tracing::info!(network = %a.network, endpoint = %c.endpoint_id, host_ifname = %a.host_ifname, "Docker endpoint staged");
        // A DHCP network's lease comes once the container runs; whether the
        // LAN has a server is asked now, so that `docker run` fails
        // (leaving nothing) rather than start a container with no address.
        if a.dhcp.as_ref().is_some_and(|b| b.lease.is_none())
            && let Err(e) = self.probe_dhcp(&a).await
        {
            self.forget_endpoint(&c.endpoint_id).await;
            return Err(e);
        }
        // Only what Docker did not choose goes back (it refuses a change).
        let mut iface = serde_json::Map::new();
        let first = |v6: bool| a.addresses.iter().find(|x| x.addr().is_ipv6() == v6);
        if given.address.is_empty()
            && let Some(x) = first(false)
        {
            iface.insert("Address".into(), json!(x.to_string()));
        }
        if given.address_ipv6.is_empty()
            && let Some(x) = first(true)
        {
            iface.insert("AddressIPv6".into(), json!(x.to_string()));
        }
        if given.mac_address.is_empty() && own_mac {
            iface.insert("MacAddress".into(), json!(a.mac.to_string()));
        }
        Ok(match iface.is_empty() {
            true => json!({}),
            false => json!({ "Interface": iface }),
        })
    }

    /// Remove endpoint `id` again after its create failed.
    async fn forget_endpoint(&self, id: &str) {
        let eid = id.to_string();
        if let Err(undo) = self
            .engine(true, move |e| e.docker_endpoint_delete(&eid))
            .await
        {
            tracing::warn!(endpoint = %id, "removing it again: {undo}");
        }
    }

    /// Ask the LAN of DHCP attachment `a` for an offer, from its staged
    /// interface on the host.
    async fn probe_dhcp(&self, a: &Attachment) -> Result<(), String> {
        let done = a.clone();
        let ns = self.engine(true, move |e| e.staged_up(&done)).await?;
        let (ifindex, id) = super::lease::client_identity(&ns, a).map_err(|e| e.to_string())?;
        let client = crate::ipam::dhcp::Client {
            ns: &ns,
            ifindex,
            ifname: &a.ifname,
            id: &id,
        };
        match client.probe(self.ctx.acquire_timeout).await {
            Ok(server) => {
                tracing::debug!(network = %a.network, %server, "a DHCP server offers");
                Ok(())
            }
            Err(e) => Err(format!("network `{}`: {e}", a.network)),
        }
    }

    async fn endpoint(&self, id: &str) -> Result<Attachment, String> {
        let i = id.to_string();
        match self.engine(true, move |e| e.docker_endpoint(&i)).await? {
            Some((_, Some(a))) => Ok(a),
            _ => Err(format!("endpoint {id} is not plumb's")),
        }
    }

    async fn join(self: &Arc<Self>, c: EndpointCall) -> Result<Value, String> {
        let a = self.endpoint(&c.endpoint_id).await?;
        let gateway = |v6: bool| a.gateways.iter().find(|g| g.is_ipv6() == v6);
        // A DHCP endpoint's routes go on with its lease: now if it has it,
        // later if not.
        let routes = match a.dhcp.as_ref().map(|b| b.lease.as_ref()) {
            None => a.routes.clone(),
            Some(None) => Vec::new(),
            Some(Some(lease)) => [a.routes.clone(), crate::engine::lease_routes(lease)].concat(),
        };
        let mut routes: Vec<Value> = routes
            .iter()
            .map(|r| json!({"Destination": r.dest.to_string(), "RouteType": 0, "NextHop": r.via.to_string()}))
            .collect();
        // ipvlan l3: the way out is the device itself.
        if a.device_default_route {
            for (v6, any) in [(false, "0.0.0.0/0"), (true, "::/0")] {
                if a.addresses.iter().any(|x| x.addr().is_ipv6() == v6) {
                    routes.push(json!({"Destination": any, "RouteType": 1}));
                }
            }
        }
        let mut out = json!({
            "InterfaceName": {"SrcName": a.ifname, "DstPrefix": "eth"},
            "StaticRoutes": routes,
            // Without a gateway libnetwork would add docker_gwbridge.
            "DisableGatewayService": true,
        });
        if let Some(g) = gateway(false) {
            out["Gateway"] = json!(g.to_string());
        }
        if let Some(g) = gateway(true) {
            out["GatewayIPv6"] = json!(g.to_string());
        }
        let (eid, sandbox) = (c.endpoint_id.clone(), c.sandbox_key.clone());
        self.engine(true, move |e| e.join_endpoint(&eid, &sandbox))
            .await?;
        let (ctx, sandbox) = (self.ctx.clone(), PathBuf::from(&c.sandbox_key));
        let key = format!("{} in {}", c.endpoint_id, c.sandbox_key);
        let work = finish_on_arrival(ctx, sandbox, a, c.endpoint_id.clone());
        self.watch(key, work);
        Ok(out)
    }

    /// Docker gives the interface back to the host. One whose attachment
    /// is gone already (its container died and plumb removed it) has
    /// nothing left to give back.
    async fn leave(&self, c: EndpointCall) -> Result<Value, String> {
        let Ok(a) = self.endpoint(&c.endpoint_id).await else {
            return Ok(json!({}));
        };
        self.stop_lease(&a).await;
        let eid = c.endpoint_id.clone();
        self.engine(true, move |e| e.unstage(&a.host_ifname, &eid))
            .await?;
        Ok(json!({}))
    }

    /// Stop the lease task of `a`, if any: its interface leaves the
    /// container. The lease is not released: the server keeps it for the
    /// container's identity until it expires, and gives it back at the
    /// container's next start (Docker says nothing of whether there will
    /// be one, and a new endpoint has a new MAC).
    async fn stop_lease(&self, a: &Attachment) {
        let task = self.ctx.tasks.lock().await.remove(&a.host_ifname);
        if let Some(t) = task {
            t.stop(Stop::Keep).await;
        }
    }

    async fn oper_info(&self, c: EndpointCall) -> Result<Value, String> {
        let a = self.endpoint(&c.endpoint_id).await?;
        Ok(json!({"Value": {
            "plumb.network": a.network,
            "plumb.host-interface": a.host_ifname,
            "plumb.addresses": a.addresses.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
            "plumb.mac": a.mac.to_string(),
        }}))
    }
}

/// Wait for the staged interface of `a` to arrive in the sandbox Docker
/// named at Join, then finish the attachment there (again after a failure).
/// Gives up when the endpoint leaves that sandbox or is removed, or after
/// [`ARRIVAL`].
async fn finish_on_arrival(ctx: Arc<Ctx>, sandbox: PathBuf, a: Attachment, endpoint: String) {
    let start = Instant::now();
    let target = sandbox.display().to_string();
    let mut failed = false;
    for poll in 0u64.. {
        let (s, staged) = (sandbox.clone(), a.clone());
        let arrived = blocking(move || Ok(crate::engine::arrived_in(&s, &staged)))
            .await
            .ok()
            .flatten();
        if let Some(ns) = arrived {
            let (c, h, t) = (ctx.clone(), a.host_ifname.clone(), target.clone());
            match blocking(move || c.with_engine(|e| e.finish_staged(&h, &ns, &t))).await {
                Ok(done) => {
                    tracing::info!(network = %done.network, ifname = %done.ifname, sandbox = %target, "Docker endpoint in its container");
                    match done.dhcp.as_ref().map(|b| b.lease.is_some()) {
                        Some(true) => keep_lease(&ctx, done).await,
                        Some(false) => lease_when_known(ctx, done, endpoint).await,
                        None => {}
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %endpoint, "finish in {target}: {e}");
                    failed = true;
                }
            }
        }
        // Whether it still waits to be finished there, now and then and
        // after a failure (Leave unstages it and clears its sandbox).
        if failed || poll % STILL_WAITING_EVERY == STILL_WAITING_EVERY - 1 {
            let (c, eid) = (ctx.clone(), endpoint.clone());
            let still = blocking(move || c.with_engine(|e| e.docker_endpoint(&eid)))
                .await
                .ok()
                .flatten()
                .is_some_and(|(e, a)| {
                    e.sandbox.as_deref() == Some(target.as_str())
                        && a.is_some_and(|a| a.is_staged())
                });
            if !still {
                return;
            }
        }
        if start.elapsed() > ARRIVAL {
            tracing::warn!(endpoint = %endpoint, "the interface was not finished in {target}");
            return;
        }
        let pause = match failed {
            true => Duration::from_millis(500),
            false => ARRIVAL_POLL,
        };
        failed = false;
        tokio::time::sleep(pause).await;
    }
}

/// Renew the lease DHCP attachment `a` came with into its container.
async fn keep_lease(ctx: &Arc<Ctx>, a: Attachment) {
    let Some(ns) = super::namespace_of(&a).await else {
        return;
    };
    let task = LeaseTask::spawn(ctx.clone(), a.clone(), ns);
    let before = ctx.tasks.lock().await.insert(a.host_ifname.clone(), task);
    if let Some(t) = before {
        t.stop(Stop::Keep).await;
    }
}

/// Get the lease of DHCP endpoint `endpoint` (attachment `a`, in its
/// container) and keep it. Its container is waited for first (the
/// daemon's Docker watch learns it at the start), so that the LAN's server
/// sees the container's identity; then the lease is asked for until it is
/// had or the endpoint leaves its container.
async fn lease_when_known(ctx: Arc<Ctx>, a: Attachment, endpoint: String) {
    let current = |ctx: Arc<Ctx>, eid: String| async move {
        blocking(move || ctx.with_engine(|e| e.docker_endpoint(&eid)))
            .await
            .ok()
            .flatten()
            .and_then(|(_, a)| a)
            .filter(|a| !a.is_staged())
    };
    let start = Instant::now();
    let mut a = a;
    while a.container.is_none() && start.elapsed() < CONTAINER_KNOWN {
        tokio::time::sleep(CONTAINER_POLL).await;
        match current(ctx.clone(), endpoint.clone()).await {
            Some(now) => a = now,
            None => return,
        }
    }
    if a.container.is_none() {
        tracing::warn!(endpoint = %endpoint, "its container is not known (is Docker's socket given?): asking the LAN with the endpoint's identity");
    }
    let mut pause = Duration::from_secs(1);
    loop {
        match super::acquire(&ctx, &a).await {
            Ok(bound) => {
                tracing::info!(target = %bound.shown_target(), network = %bound.network, "leased");
                return;
            }
            Err(e) => {
                tracing::warn!(target = %a.shown_target(), network = %a.network, "no lease yet: {e}")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
        match current(ctx.clone(), endpoint.clone()).await {
            Some(now) if now.dhcp.as_ref().is_some_and(|b| b.lease.is_none()) => a = now,
            _ => return,
        }
    }
}
