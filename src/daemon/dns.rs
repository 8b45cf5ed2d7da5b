//! The daemon's DNS server for networks with `serve_dns`: on each of the host's
//! addresses on such a network, UDP and TCP port 53, answered from the
//! network's names (see [`crate::dns`]) or forwarded to the host's
//! resolvers.
//!
//! Names come from the store, whoever wrote it (this daemon, a CNI plugin,
//! a plumb without the daemon): a query first checks SQLite's
//! `data_version`, which changes with every commit of another connection,
//! and reads the networks again if it did, so that a container answers by
//! name as soon as its attach has committed. Listeners follow the networks
//! twice a second. They bind with IP_FREEBIND: a network's gateway may not
//! be on the host yet (a bridge made at its first attach).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::Repeated;
use crate::dns::{Reply, Zone, upstreams};
use crate::error::{Error, Result};
use crate::store::{self, Store};

/// How often listeners are matched to the networks.
const FOLLOW: Duration = Duration::from_millis(500);
/// How long one upstream resolver has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may keep a connection without asking.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The networks' names as the store last had them.
struct Names {
    store: Store,
    version: Option<i64>,
    zones: HashMap<String, Arc<Zone>>,
    /// Every address plumb answers on, and the network it serves.
    listen: HashMap<IpAddr, String>,
}

impl Names {
    /// Read the networks again if anyone committed since the last read.
    fn refresh(&mut self) -> Result<()> {
        let conn = self.store.read();
        let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if self.version == Some(version) {
            return Ok(());
        }
        let mut zones = HashMap::new();
        let mut listen = HashMap::new();
        for n in store::networks(conn)?
            .into_iter()
            .filter(|n| n.network.serve_dns)
        {
            let net = n.network;
            let attachments = store::attachments_of_network(conn, &net.name)?;
            let zone = Zone::new(&net, attachments.iter().map(|s| &s.attachment));
            for h in &net.host_addresses {
                if !is_link_local(h.addr()) {
                    listen.insert(h.addr(), net.name.clone());
                }
            }
            zones.insert(net.name, Arc::new(zone));
        }
        (self.zones, self.listen, self.version) = (zones, listen, Some(version));
        Ok(())
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

/// What every listener shares.
struct Shared {
    names: std::sync::Mutex<Names>,
    resolv_conf: PathBuf,
}

impl Shared {
    /// Network `net`'s zone as the store has it now.
    async fn zone(self: &Arc<Self>, net: &str) -> Option<Arc<Zone>> {
        let (me, net) = (self.clone(), net.to_string());
        tokio::task::spawn_blocking(move || {
            let mut names = me
                .names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = names.refresh() {
                tracing::warn!("dns: read the store: {e}");
            }
            names.zones.get(&net).cloned()
        })
        .await
        .ok()
        .flatten()
    }

    async fn listen(self: &Arc<Self>) -> Result<HashMap<IpAddr, String>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut names = me
                .names
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            names.refresh()?;
            Ok(names.listen.clone())
        })
        .await
        .map_err(|e| Error::Conflict(format!("dns task failed: {e}")))?
    }

    /// The answer to `query` asked of network `net`'s server.
    async fn answer(self: &Arc<Self>, net: &str, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let zone = self.zone(net).await?;
        match zone.reply(query, udp) {
            Reply::Answer(a) => Some(a),
            Reply::Ignore => None,
            Reply::Forward => {
                let own: Vec<IpAddr> = {
                    let names = self
                        .names
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    names.listen.keys().copied().collect()
                };
                // A small file, in the page cache: read as it is now.
                let conf = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
                match forward(&upstreams(&conf, &own), query, udp).await {
                    Some(a) => Some(a),
                    None => crate::dns::servfail(query),
                }
            }
        }
    }
}

/// Serve every network with `serve_dns` until the daemon stops.
pub async fn serve(state_dir: PathBuf, resolv_conf: PathBuf) {
    let shared = match open(&state_dir, resolv_conf) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("dns: {e}");
            return;
        }
    };
    let mut listeners: HashMap<IpAddr, Listener> = HashMap::new();
    let mut errors = Repeated::default();
    loop {
        match shared.listen().await {
            Ok(wanted) => {
                listeners.retain(|ip, l| wanted.get(ip) == Some(&l.network));
                for (ip, net) in wanted {
                    if listeners.contains_key(&ip) {
                        continue;
                    }
                    match Listener::start(&shared, ip, &net) {
                        Ok(l) => {
                            errors.ended("dns");
                            tracing::info!(network = %net, address = %ip, "dns: serving");
                            listeners.insert(ip, l);
                        }
                        Err(e) => {
                            errors.failed(
                                "dns",
                                &format!("listen on {ip} port 53 for network {net}: {e}"),
                            );
                        }
                    }
                }
            }
            Err(e) => {
                errors.failed("dns", &e.to_string());
            }
        }
        tokio::time::sleep(FOLLOW).await;
    }
}

fn open(state_dir: &Path, resolv_conf: PathBuf) -> Result<Arc<Shared>> {
    Ok(Arc::new(Shared {
        names: std::sync::Mutex::new(Names {
            store: Store::open(state_dir)?,
            version: None,
            zones: HashMap::new(),
            listen: HashMap::new(),
        }),
        resolv_conf,
    }))
}

/// One address's UDP and TCP servers; both stop when it is dropped.
struct Listener {
    network: String,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Listener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Listener {
    fn start(shared: &Arc<Shared>, ip: IpAddr, net: &str) -> std::io::Result<Listener> {
        let at = SocketAddr::new(ip, 53);
        let udp = Arc::new(UdpSocket::from_std(std::net::UdpSocket::from(bound(
            at,
            SockType::Datagram,
        )?))?);
        let tcp_fd = bound(at, SockType::Stream)?;
        socket::listen(
            &tcp_fd,
            socket::Backlog::new(64).unwrap_or(socket::Backlog::MAXCONN),
        )?;
        let tcp = TcpListener::from_std(std::net::TcpListener::from(tcp_fd))?;
        let udp_task = tokio::spawn(serve_udp(shared.clone(), net.to_string(), udp));
        let tcp_task = tokio::spawn(serve_tcp(shared.clone(), net.to_string(), tcp));
        Ok(Listener {
            network: net.to_string(),
            tasks: [udp_task, tcp_task],
        })
    }
}

/// A non-blocking socket bound to `at`, whether or not the address is on
/// the host yet.
fn bound(at: SocketAddr, kind: SockType) -> std::io::Result<OwnedFd> {
    let family = match at {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // Linux honours IP_FREEBIND on IPv6 sockets too.
    socket::setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if at.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(at),
    )?;
    Ok(fd)
}

async fn serve_udp(shared: Arc<Shared>, net: String, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(network = %net, "dns: receive: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (shared, net, sock) = (shared.clone(), net.clone(), sock.clone());
        // Each on its own: a slow upstream holds no other query up.
        tokio::spawn(async move {
            if let Some(a) = shared.answer(&net, &query, true).await {
                let _ = sock.send_to(&a, from).await;
            }
        });
    }
}

async fn serve_tcp(shared: Arc<Shared>, net: String, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (shared, net) = (shared.clone(), net.clone());
        tokio::spawn(async move {
            let _ = serve_connection(&shared, &net, stream).await;
        });
    }
}

/// Queries of one TCP connection, each framed by its length (RFC 1035
/// 4.2.2), until the client closes it or stays quiet.
async fn serve_connection(
    shared: &Arc<Shared>,
    net: &str,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        match shared.answer(net, &query, false).await {
            Some(a) => write_framed(&mut stream, &a).await?,
            None => return Ok(()),
        }
    }
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    stream.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

/// The first answer of `servers` to `query`, asked the way the client
/// asked (a UDP answer with TC set is the client's to ask again by TCP).
async fn forward(servers: &[SocketAddr], query: &[u8], udp: bool) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for server in servers {
        let asked = async {
            if udp {
                let local: SocketAddr = match server {
                    SocketAddr::V4(_) => "0.0.0.0:0".parse().ok()?,
                    SocketAddr::V6(_) => "[::]:0".parse().ok()?,
                };
                let sock = UdpSocket::bind(local).await.ok()?;
                sock.connect(server).await.ok()?;
                sock.send(query).await.ok()?;
                let mut buf = vec![0u8; 65535];
                // A connected socket takes datagrams from the server
                // alone; an answer to another ID is not this one's.
                loop {
                    let n = sock.recv(&mut buf).await.ok()?;
                    if buf.get(..2) == Some(id) {
                        return Some(buf[..n].to_vec());
                    }
                }
            } else {
                let mut stream = TcpStream::connect(server).await.ok()?;
                write_framed(&mut stream, query).await.ok()?;
                read_framed(&mut stream).await.ok()
            }
        };
        if let Ok(Some(a)) = tokio::time::timeout(UPSTREAM_TIMEOUT, asked).await {
            return Some(a);
        }
    }
    None
}
