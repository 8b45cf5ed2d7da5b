//! Host ports are shared with every other program on the host. Before a
//! port is published, plumb asks who else has it: a socket bound in the
//! host namespace (docker-proxy, conmon, any daemon), or another tool's
//! DNAT rule (Docker's, netavark's, in iptables' nat tables). While it is
//! published, the daemon keeps it bound, as docker-proxy and conmon do, so
//! that a program asking for it later gets "address already in use"
//! instead of silently losing its traffic to plumb's DNAT.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt, socket,
    sockopt,
};

use crate::error::{Error, Result};
use crate::model::{Proto, Publish};
use crate::netlink::nftable::{Base, CmpOp, MetaKey, NFT_NAT_DNAT};
use crate::netlink::{Listed, ListedRule, NfFamily, NfNetlink};
use crate::policy::{firewall, legacy};

/// One host port: protocol, host address (all when `None`), number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    pub proto: Proto,
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{a}:{}/{}", self.port, self.proto),
            None => write!(f, "{}/{}", self.port, self.proto),
        }
    }
}

/// Every host port of `p` (a range is several).
pub fn host_ports(p: &Publish) -> impl Iterator<Item = HostPort> + '_ {
    (0..p.count).map(move |i| HostPort {
        proto: p.proto,
        addr: p.host_ip,
        port: p.host_port + i,
    })
}

fn refused(p: &Publish, port: HostPort, why: String) -> Error {
    Error::invalid("--publish", p, format!("host port {port} {why}"))
}

/// Refuse `p` when another tool forwards one of its host ports with one of
/// `rules` (from [`foreign_dnat`]), naming the rule.
pub fn check_dnat(p: &Publish, rules: &[ForeignDnat]) -> Result<()> {
    for port in host_ports(p) {
        if let Some(rule) = rules.iter().find(|r| r.takes(&port)) {
            return Err(refused(
                p,
                port,
                format!("is already forwarded by {}", rule.owner()),
            ));
        }
    }
    Ok(())
}

/// Refuse `p` when a socket in the host namespace holds one of its host
/// ports, naming the program: the port is bound for a moment, and let go.
pub fn check_sockets(p: &Publish) -> Result<()> {
    for port in host_ports(p) {
        bind_port(&port).map_err(|why| refused(p, port, why))?;
    }
    Ok(())
}

/// Forget the conntrack entries of `p`'s UDP host ports (netavark issue
/// 1045): a flow that is still coming would otherwise keep going where the
/// port led when the flow began. TCP connections are left alone.
pub fn forget_flows(p: &Publish) {
    if p.proto != Proto::Udp {
        return;
    }
    let deleted = NfNetlink::open().and_then(|mut nf| {
        host_ports(p).try_fold(0, |n, port| {
            Ok(n + nf.delete_conntrack(libc::IPPROTO_UDP as u8, port.port, port.addr)?)
        })
    });
    match deleted {
        Ok(0) => {}
        Ok(n) => tracing::debug!("--publish {p}: forgot {n} UDP flows"),
        Err(e) => tracing::warn!("--publish {p}: forget its UDP flows: {e}"),
    }
}

/// The holds, even if a thread panicked while holding the lock: the map
/// is never left half changed.
pub fn lock(holds: &Mutex<Holds>) -> MutexGuard<'_, Holds> {
    holds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sockets the daemon keeps bound, one per published host port.
#[derive(Default)]
pub struct Holds {
    /// Each socket and when it was bound.
    sockets: BTreeMap<HostPort, (OwnedFd, Instant)>,
}

/// A hold younger than this is not let go for missing from the store: its
/// attach may not have committed yet.
const SETTLING: Duration = Duration::from_secs(10);

impl Holds {
    /// Bind every host port of `p` not yet held; all or none. A port
    /// another program has is refused, naming it.
    pub fn hold(&mut self, p: &Publish) -> Result<()> {
        let mut new = Vec::new();
        for port in host_ports(p) {
            if self.sockets.contains_key(&port) {
                continue;
            }
            match bind_port(&port) {
                Ok(fd) => new.push((port, (fd, Instant::now()))),
                // Those bound here are closed when `new` drops.
                Err(why) => return Err(refused(p, port, why)),
            }
        }
        self.sockets.extend(new);
        Ok(())
    }

    /// Let the host ports of `p` go.
    pub fn release(&mut self, p: &Publish) {
        for port in host_ports(p) {
            self.sockets.remove(&port);
        }
    }

    /// Hold exactly the host ports of `published` (what the store says):
    /// those another program took meanwhile are reported, not held.
    pub fn reconcile(&mut self, published: &[Publish]) -> Vec<String> {
        let wanted: std::collections::BTreeSet<HostPort> =
            published.iter().flat_map(host_ports).collect();
        self.sockets
            .retain(|port, (_, since)| wanted.contains(port) || since.elapsed() < SETTLING);
        let mut problems = Vec::new();
        for port in wanted {
            if self.sockets.contains_key(&port) {
                continue;
            }
            match bind_port(&port) {
                Ok(fd) => {
                    self.sockets.insert(port, (fd, Instant::now()));
                }
                Err(why) => problems.push(format!("host port {port} {why}")),
            }
        }
        problems
    }
}

/// Bind `port` in the calling thread's namespace, as docker-proxy and
/// conmon would: TCP listens (a SO_REUSEADDR binder is only kept out by a
/// listener; nothing is ever accepted: the DNAT sends the connections
/// elsewhere), UDP without SO_REUSEADDR (with it, another such binder
/// could share the port). IP_FREEBIND: the host address may come later.
fn bind_port(port: &HostPort) -> std::result::Result<OwnedFd, String> {
    let kind = match port.proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| format!("could not be checked: socket: {e}"))?;
    let _ = setsockopt(&fd, sockopt::IpFreebind, &true);
    if port.proto == Proto::Tcp {
        let _ = setsockopt(&fd, sockopt::ReuseAddr, &true);
    }
    let addr = SockaddrIn::from(SocketAddrV4::new(
        port.addr.unwrap_or(Ipv4Addr::UNSPECIFIED),
        port.port,
    ));
    match bind(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(nix::errno::Errno::EADDRINUSE) => {
            return Err(format!("is in use by {}", holder(port)));
        }
        Err(e) => return Err(format!("could not be bound: {e}")),
    }
    if port.proto == Proto::Tcp {
        listen(&fd, Backlog::new(1).unwrap_or(Backlog::MAXCONN))
            .map_err(|e| format!("could not be held: listen: {e}"))?;
    }
    Ok(fd)
}

/// Who has a socket on `port` in this namespace: "docker-proxy (pid 12)",
/// from the socket tables and the processes' descriptors.
fn holder(port: &HostPort) -> String {
    let inodes = socket_inodes(port);
    if let Some((pid, name)) = owner_of(&inodes) {
        return format!("{name} (pid {pid})");
    }
    "another socket".into()
}

/// The inodes of the sockets bound to `port`'s number (TCP ones listening),
/// IPv4 and IPv6, from /proc/thread-self/net: this thread's namespace.
fn socket_inodes(port: &HostPort) -> Vec<u64> {
    let (files, listening) = match port.proto {
        Proto::Tcp => (["tcp", "tcp6"], Some("0A")),
        Proto::Udp => (["udp", "udp6"], None),
    };
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let state = fields.get(3)?;
            (u16::from_str_radix(hex_port, 16).ok()? == port.port
                && listening.is_none_or(|l| *state == l))
            .then(|| fields.get(9)?.parse::<u64>().ok())?
        }));
    }
    out
}

/// The first process with one of `inodes` open, and its name.
fn owner_of(inodes: &[u64]) -> Option<(u32, String)> {
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if wanted.iter().any(|w| link.as_os_str() == w.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Some((pid, name));
            }
        }
    }
    None
}

/// A DNAT rule of another tool, as far as it names a host port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignDnat {
    /// "ip nat DOCKER" or "iptables-legacy nat DOCKER".
    pub place: String,
    pub chain: String,
    /// None: every protocol.
    pub proto: Option<Proto>,
    /// Inclusive ranges of destination ports.
    pub ports: Vec<(u16, u16)>,
    /// The destination address it is limited to, if one.
    pub addr: Option<Ipv4Addr>,
}

impl ForeignDnat {
    fn takes(&self, p: &HostPort) -> bool {
        self.proto.is_none_or(|x| x == p.proto)
            && self
                .ports
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&p.port))
            && match (self.addr, p.addr) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// Whose it is, from its chain's name, and where.
    fn owner(&self) -> String {
        let who = if self.chain.starts_with("DOCKER") {
            "Docker's DNAT rule"
        } else if self.chain.starts_with("NETAVARK") {
            "netavark's (Podman's) DNAT rule"
        } else if self.chain.starts_with("CNI-") {
            "a CNI plugin's DNAT rule"
        } else {
            "a DNAT rule"
        };
        format!("{who} in {}", self.place)
    }
}

// How others' rules read back (`Listed` keeps nf_tables' numbers).
const NFT_META_L4PROTO: u32 = MetaKey::L4Proto as u32;
const NFT_PAYLOAD_NETWORK: u32 = Base::Network as u32;
const NFT_PAYLOAD_TRANSPORT: u32 = Base::Transport as u32;
const NFT_CMP_EQ: u32 = CmpOp::Eq as u32;

/// Every IPv4 DNAT rule that names its ports, in the nftables tables of
/// others (iptables-nft's included) and, when the legacy backend is in
/// use, in its nat table. plumb's own table is its store's business.
pub fn foreign_dnat() -> Result<Vec<ForeignDnat>> {
    let mut nf = NfNetlink::open().map_err(|e| Error::kernel("open an nfnetlink socket", e))?;
    let mut out = Vec::new();
    for family in [NfFamily::Ip, NfFamily::Inet] {
        let rules = nf
            .rules_of_family(family)
            .map_err(|e| Error::kernel("list the host's nftables rules", e))?;
        for r in rules {
            if family == NfFamily::Inet && r.table == firewall::TABLE {
                continue;
            }
            let place = format!("{} {} {}", family.name(), r.table, r.chain);
            out.extend(read_dnat(&r, place));
        }
    }
    out.extend(legacy::dnat_rules()?);
    Ok(out)
}

/// The host port a DNAT rule matches, read from the expressions iptables
/// and nft write: `meta l4proto`, `ip daddr`, `th dport` (a value or a
/// range, or iptables' multiport match), then a DNAT target.
fn read_dnat(r: &ListedRule, place: String) -> Option<ForeignDnat> {
    let is_dnat = r.exprs.iter().any(|e| match e {
        Listed::Target { name, .. } => name == "DNAT",
        Listed::Nat { kind } => *kind == NFT_NAT_DNAT,
        _ => false,
    });
    if !is_dnat {
        return None;
    }
    let mut found = ForeignDnat {
        place,
        chain: r.chain.clone(),
        proto: None,
        ports: Vec::new(),
        addr: None,
    };
    let mut loaded: Option<&Listed> = None;
    for e in &r.exprs {
        match e {
            Listed::Cmp { op, data } if *op == NFT_CMP_EQ => match loaded {
                Some(Listed::Meta(NFT_META_L4PROTO))
                | Some(Listed::Payload {
                    base: NFT_PAYLOAD_NETWORK,
                    offset: 9,
                    len: 1,
                }) => found.proto = data.first().and_then(|p| proto(*p)),
                Some(Listed::Payload {
                    base: NFT_PAYLOAD_NETWORK,
                    offset: 16,
                    len: 4,
                }) => found.addr = <[u8; 4]>::try_from(&data[..]).ok().map(Ipv4Addr::from),
                Some(Listed::Payload {
                    base: NFT_PAYLOAD_TRANSPORT,
                    offset: 2,
                    len: 2,
                }) => {
                    let p = u16::from_be_bytes(data[..].try_into().ok()?);
                    found.ports.push((p, p));
                }
                _ => {}
            },
            Listed::Range { op, from, to } if *op == NFT_CMP_EQ => {
                let lo = u16::from_be_bytes(from[..].try_into().ok()?);
                let hi = u16::from_be_bytes(to[..].try_into().ok()?);
                found.ports.push((lo, hi));
            }
            Listed::Match { name, info } if name == "multiport" => {
                found.ports.extend(multiport(info));
            }
            _ => {}
        }
        if matches!(e, Listed::Meta(_) | Listed::Payload { .. }) {
            loaded = Some(e);
        }
    }
    (!found.ports.is_empty()).then_some(found)
}

fn proto(number: u8) -> Option<Proto> {
    match number as i32 {
        libc::IPPROTO_TCP => Some(Proto::Tcp),
        libc::IPPROTO_UDP => Some(Proto::Udp),
        _ => None,
    }
}

/// The destination ports of `struct xt_multiport_v1` (flags, count, 15
/// ports in host order, 15 range flags, invert): none when it is about
/// source ports or inverted.
fn multiport(info: &[u8]) -> Vec<(u16, u16)> {
    const SOURCE: u8 = 0;
    if info.len() < 50 || info[0] == SOURCE || info[49] != 0 {
        return Vec::new();
    }
    let count = (info[1] as usize).min(15);
    let port = |i: usize| u16::from_ne_bytes([info[2 + 2 * i], info[3 + 2 * i]]);
    let is_range = |i: usize| info[32 + i] != 0;
    let mut out = Vec::new();
    let mut i = 0;
    while i < count {
        if is_range(i) && i + 1 < count {
            out.push((port(i), port(i + 1)));
            i += 2;
        } else {
            out.push((port(i), port(i)));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(data: &[u8]) -> Listed {
        Listed::Cmp {
            op: NFT_CMP_EQ,
            data: data.to_vec(),
        }
    }

    fn dport() -> Listed {
        Listed::Payload {
            base: NFT_PAYLOAD_TRANSPORT,
            offset: 2,
            len: 2,
        }
    }

    fn rule(chain: &str, exprs: Vec<Listed>) -> ListedRule {
        ListedRule {
            table: "nat".into(),
            chain: chain.into(),
            handle: 1,
            comment: None,
            exprs,
        }
    }

    fn port(proto: Proto, addr: Option<[u8; 4]>, port: u16) -> HostPort {
        HostPort {
            proto,
            addr: addr.map(Ipv4Addr::from),
            port,
        }
    }

    /// Docker's `! -i docker0 -p tcp -m tcp --dport 8090 -j DNAT` and
    /// `-d 127.0.0.1 -p udp --dport 9000:9010`, as iptables-nft lists them.
    #[test]
    fn dockers_dnat_rules_name_their_ports() {
        let tcp = rule(
            "DOCKER",
            vec![
                Listed::Meta(6),
                Listed::Cmp {
                    op: 1,
                    data: b"docker0\0".to_vec(),
                },
                Listed::Meta(NFT_META_L4PROTO),
                cmp(&[6]),
                dport(),
                cmp(&8090u16.to_be_bytes()),
                Listed::Counter,
                Listed::Target {
                    name: "DNAT".into(),
                    info: vec![],
                },
            ],
        );
        let d = read_dnat(&tcp, "ip nat DOCKER".into()).unwrap();
        assert_eq!(
            (d.proto, &d.ports[..], d.addr),
            (Some(Proto::Tcp), &[(8090, 8090)][..], None)
        );
        assert!(d.takes(&port(Proto::Tcp, None, 8090)));
        assert!(d.takes(&port(Proto::Tcp, Some([127, 0, 0, 1]), 8090)));
        assert!(!d.takes(&port(Proto::Udp, None, 8090)));
        assert!(!d.takes(&port(Proto::Tcp, None, 8091)));
        assert_eq!(d.owner(), "Docker's DNAT rule in ip nat DOCKER");

        let udp = rule(
            "DOCKER",
            vec![
                Listed::Meta(NFT_META_L4PROTO),
                cmp(&[17]),
                Listed::Payload {
                    base: NFT_PAYLOAD_NETWORK,
                    offset: 16,
                    len: 4,
                },
                cmp(&[127, 0, 0, 1]),
                dport(),
                Listed::Range {
                    op: NFT_CMP_EQ,
                    from: 9000u16.to_be_bytes().to_vec(),
                    to: 9010u16.to_be_bytes().to_vec(),
                },
                Listed::Target {
                    name: "DNAT".into(),
                    info: vec![],
                },
            ],
        );
        let d = read_dnat(&udp, "ip nat DOCKER".into()).unwrap();
        assert!(d.takes(&port(Proto::Udp, None, 9005)));
        assert!(d.takes(&port(Proto::Udp, Some([127, 0, 0, 1]), 9010)));
        assert!(!d.takes(&port(Proto::Udp, Some([10, 0, 0, 1]), 9005)));
        assert!(!d.takes(&port(Proto::Udp, None, 9011)));
    }

    #[test]
    fn rules_without_dnat_or_ports_are_not_taken() {
        let masq = rule("POSTROUTING", vec![dport(), cmp(&80u16.to_be_bytes())]);
        assert_eq!(read_dnat(&masq, String::new()), None);
        // A DNAT through a map (plumb's way) names no port here.
        let mapped = rule(
            "pre",
            vec![Listed::Other("lookup".into()), Listed::Nat { kind: 1 }],
        );
        assert_eq!(read_dnat(&mapped, String::new()), None);
    }

    #[test]
    fn multiport_destination_ports_and_ranges() {
        let mut info = vec![0u8; 50];
        info[0] = 1; // destination
        info[1] = 3;
        for (i, p) in [7000u16, 7100, 7200].iter().enumerate() {
            info[2 + 2 * i..4 + 2 * i].copy_from_slice(&p.to_ne_bytes());
        }
        info[33] = 1; // 7100 starts a range to 7200
        assert_eq!(multiport(&info), [(7000, 7000), (7100, 7200)]);
        info[0] = 0; // source ports: none of ours
        assert!(multiport(&info).is_empty());
        assert!(multiport(&info[..10]).is_empty());
    }

    #[test]
    fn a_bound_port_is_refused_naming_its_holder_and_freed_when_released() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let number = taken.local_addr().unwrap().port();
        let p = Publish {
            proto: Proto::Tcp,
            host_ip: Some(Ipv4Addr::LOCALHOST),
            host_port: number,
            port: 80,
            count: 1,
        };
        let err = check_sockets(&p).unwrap_err().to_string();
        let me = std::process::id();
        assert!(err.contains(&format!("(pid {me})")), "{err}");
        drop(taken);
        let mut holds = Holds::default();
        holds.hold(&p).unwrap();
        // Held: nobody else may listen there, not even with SO_REUSEADDR.
        assert!(std::net::TcpListener::bind(("127.0.0.1", number)).is_err());
        holds.release(&p);
        assert!(std::net::TcpListener::bind(("127.0.0.1", number)).is_ok());
    }
}
