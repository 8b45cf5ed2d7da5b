//! Docker as plumb sees it: containers named by name, ID or ID prefix,
//! resolved through the Engine API on its unix socket (bollard) to their
//! first process and so to their network namespace; the event stream the
//! daemon follows; and the networks a container declares in its labels or
//! environment ([`declare`]).
//!
//! plumb is only ever Docker's client, never a handler Docker waits on:
//! nothing here can hold dockerd up (the classic failure of Docker network
//! helpers, which call the API back from inside a plugin request).

pub mod declare;
pub mod plugin;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};

use ipnet::IpNet;

use crate::driver::host_shim::DockerSubnet;
use crate::error::{Error, Result};
use crate::policy::egress::Source;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one API call may take (an inspect answers in a millisecond;
/// a dockerd that takes this long is wedged, and plumb says so).
const CALL_SECS: u64 = 30;

static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Use `path` as Docker's socket (`--docker-socket`); set once, at start.
pub fn set_socket(path: PathBuf) {
    let _ = SOCKET.set(path);
}

/// Docker's socket: `--docker-socket`, else `DOCKER_HOST` if it names a
/// unix socket, else /var/run/docker.sock.
pub fn socket() -> PathBuf {
    if let Some(p) = SOCKET.get() {
        return p.clone();
    }
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// A container as plumb needs it.
#[derive(Debug, Clone)]
pub struct Container {
    /// The full ID (64 hex digits).
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Its first process on the host, while it runs.
    pub pid: Option<u32>,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` lines.
    pub env: Vec<String>,
    /// The IDs of its endpoints on Docker networks.
    pub endpoints: Vec<String>,
}

/// A Docker network a host shim may be made for.
#[derive(Debug, Clone)]
pub struct LanNetwork {
    pub driver: String,
    /// Its `-o parent=`.
    pub parent: Option<String>,
    pub subnets: Vec<DockerSubnet>,
}

/// What the daemon acts on in Docker's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Started, or connected to or disconnected from a Docker network
    /// (`docker network disconnect none web`): what it declares is checked
    /// and carried out.
    Start {
        id: String,
    },
    Die {
        id: String,
    },
    Destroy {
        id: String,
    },
    Rename {
        id: String,
        name: String,
    },
    /// A Docker network was created or removed.
    Network,
}

/// A connection to one dockerd.
#[derive(Clone)]
pub struct Client {
    docker: bollard::Docker,
    socket: PathBuf,
}

impl Client {
    /// Connect to the socket [`socket`] names and agree on an API version
    /// (dockerd 20.10 speaks 1.41 at most; recent ones refuse old clients).
    pub async fn connect() -> Result<Client> {
        let socket = socket();
        let unreachable = |e: &dyn std::fmt::Display| Error::Docker {
            socket: socket.display().to_string(),
            reason: format!("not reachable: {e}"),
        };
        let docker = bollard::Docker::connect_with_unix(
            &socket.to_string_lossy(),
            CALL_SECS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(&e))?
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))?;
        Ok(Client { docker, socket })
    }

    fn error(&self, reason: String) -> Error {
        Error::Docker {
            socket: self.socket.display().to_string(),
            reason,
        }
    }

    /// The container a name, full ID or unique ID prefix names (Docker
    /// resolves them in that order).
    pub async fn inspect(&self, reference: &str) -> Result<Container> {
        let target = || format!("docker:{reference}");
        let c = self
            .docker
            .inspect_container(reference, None::<InspectContainerOptions>)
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404,
                    message,
                } => Error::Target {
                    target: target(),
                    reason: format!("no such container ({message})"),
                },
                bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                } if (400..500).contains(&status_code) => Error::Target {
                    target: target(),
                    reason: message,
                },
                e => self.error(format!("inspect {reference}: {e}")),
            })?;
        let id = c.id.unwrap_or_default();
        let name = c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let running = c
            .state
            .as_ref()
            .is_some_and(|s| s.running == Some(true) && s.restarting != Some(true));
        let pid = c
            .state
            .and_then(|s| s.pid)
            .filter(|&p| running && p > 0)
            .and_then(|p| u32::try_from(p).ok());
        let endpoints = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.endpoint_id.filter(|e| !e.is_empty()))
            .collect();
        let config = c.config.unwrap_or_default();
        Ok(Container {
            id,
            name,
            pid,
            labels: config
                .labels
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
            env: config.env.unwrap_or_default(),
            endpoints,
        })
    }

    /// The IDs of every running container.
    pub async fn running(&self) -> Result<Vec<String>> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::new().all(false).build()))
            .await
            .map_err(|e| self.error(format!("list containers: {e}")))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Docker's container events since `since` (Unix seconds; the past
    /// ones first), those plumb acts on; the stream ends with an error when
    /// dockerd goes away.
    pub fn events(&self, since: u64) -> impl Stream<Item = Result<Event>> + Send + 'static {
        // Filters of different keys must all match, values of one key any:
        // container events by action, and a network's (dis)connects.
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container", "network"]),
            (
                "event",
                vec![
                    "start",
                    "die",
                    "destroy",
                    "rename",
                    "connect",
                    "disconnect",
                    "create",
                ],
            ),
        ]);
        let socket = self.socket.display().to_string();
        self.docker
            .events(Some(
                EventsOptionsBuilder::new()
                    .since(&since.to_string())
                    .filters(&filters)
                    .build(),
            ))
            .filter_map(move |m| {
                let out = match m {
                    Ok(m) => event(m).map(Ok),
                    Err(e) => Some(Err(Error::Docker {
                        socket: socket.clone(),
                        reason: format!("event stream: {e}"),
                    })),
                };
                std::future::ready(out)
            })
    }

    /// Docker network `id_or_name`, if Docker knows it.
    async fn network(&self, id_or_name: &str) -> Result<Option<bollard::models::NetworkInspect>> {
        match self
            .docker
            .inspect_network(
                id_or_name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(n) => Ok(Some(n)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.error(format!("inspect network {id_or_name}: {e}"))),
        }
    }

    /// The name of Docker network `id`; None while Docker does not know it
    /// (its create is still under way).
    pub async fn network_name(&self, id: &str) -> Result<Option<String>> {
        Ok(self.network(id).await?.and_then(|n| n.name))
    }

    /// What an egress rule's source stands for now: a container's
    /// addresses while it runs (none while it does not), a network's
    /// subnets; None when Docker knows no such container or network.
    pub async fn egress_sources(&self, source: &Source) -> Result<Option<Vec<IpNet>>> {
        match source {
            Source::Cidr(net) => Ok(Some(vec![*net])),
            Source::Container(name) => {
                let c = match self
                    .docker
                    .inspect_container(name, None::<InspectContainerOptions>)
                    .await
                {
                    Ok(c) => c,
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Ok(None),
                    Err(e) => return Err(self.error(format!("inspect {name}: {e}"))),
                };
                let running = c.state.as_ref().is_some_and(|s| s.running == Some(true));
                if !running {
                    return Ok(Some(Vec::new()));
                }
                let mut addrs: Vec<IpNet> = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .unwrap_or_default()
                    .into_values()
                    .flat_map(|n| [n.ip_address, n.global_ipv6_address])
                    .flatten()
                    .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                    .map(IpNet::from)
                    .collect();
                addrs.sort();
                addrs.dedup();
                Ok(Some(addrs))
            }
            Source::DockerNetwork(name) => Ok(self.lan_network(name).await?.map(|n| {
                let mut subnets: Vec<IpNet> = n.subnets.iter().map(|s| s.subnet).collect();
                subnets.sort();
                subnets.dedup();
                subnets
            })),
        }
    }

    /// Docker network `name`'s driver, `parent` option and subnets; None
    /// when there is no such network.
    pub async fn lan_network(&self, name: &str) -> Result<Option<LanNetwork>> {
        let Some(n) = self.network(name).await? else {
            return Ok(None);
        };
        let parse_ip = |s: Option<String>| s.and_then(|s| s.parse::<std::net::IpAddr>().ok());
        let subnets = n
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| {
                Some(DockerSubnet {
                    subnet: c.subnet?.parse::<IpNet>().ok()?.trunc(),
                    ip_range: c.ip_range.and_then(|r| r.parse::<IpNet>().ok()),
                    gateway: parse_ip(c.gateway),
                    aux: c
                        .auxiliary_addresses
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                        .collect(),
                })
            })
            .collect();
        Ok(Some(LanNetwork {
            driver: n.driver.unwrap_or_default(),
            parent: n.options.unwrap_or_default().get("parent").cloned(),
            subnets,
        }))
    }

    /// Ask Docker to stop a container (a declaration's `on-error=stop`).
    pub async fn stop(&self, id: &str) -> Result<()> {
        self.docker
            .stop_container(id, Some(StopContainerOptionsBuilder::new().t(10).build()))
            .await
            .map_err(|e| self.error(format!("stop {id}: {e}")))
    }
}

fn event(m: bollard::models::EventMessage) -> Option<Event> {
    let actor = m.actor?;
    // A container connected to or disconnected from a Docker network
    // (`docker network disconnect none web` included): what plumb gave it
    // is checked again as at a start.
    if m.typ == Some(bollard::models::EventMessageTypeEnum::NETWORK) {
        if matches!(m.action.as_deref(), Some("create" | "destroy")) {
            return Some(Event::Network);
        }
        let id = actor.attributes?.get("container")?.clone();
        return Some(Event::Start { id });
    }
    let id = actor.id?;
    match m.action.as_deref()? {
        "start" => Some(Event::Start { id }),
        "die" => Some(Event::Die { id }),
        "destroy" => Some(Event::Destroy { id }),
        "rename" => {
            let name = actor
                .attributes?
                .get("name")?
                .trim_start_matches('/')
                .to_string();
            Some(Event::Rename { id, name })
        }
        _ => None,
    }
}

/// Run a Docker call from synchronous code (the CLI, the engine). Inside
/// the daemon's runtime a runtime cannot be started, so the call gets a
/// thread of its own there.
pub fn blocking<T: Send>(call: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    let run = move || -> Result<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime for the Docker client", e))?
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(CALL_SECS), call)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Docker {
                            socket: socket().display().to_string(),
                            reason: format!("no answer in {CALL_SECS} s"),
                        })
                    })
            })
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(run).join()).unwrap_or_else(|_| {
            Err(Error::Conflict(
                "the Docker client's thread panicked".into(),
            ))
        })
    } else {
        run()
    }
}

/// [`Client::egress_sources`] from synchronous code.
pub fn egress_sources(source: &Source) -> Result<Option<Vec<IpNet>>> {
    let source = source.clone();
    blocking(async move { Client::connect().await?.egress_sources(&source).await })
}

/// Inspect one container from synchronous code.
pub fn inspect(reference: &str) -> Result<Container> {
    let reference = reference.to_string();
    blocking(async move { Client::connect().await?.inspect(&reference).await })
}
