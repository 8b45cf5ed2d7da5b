//! The DHCPv4 exchanges of RFC 2131, run inside a container's namespace:
//! acquire (INIT-REBOOT, then DISCOVER/OFFER/REQUEST/ACK with backoff),
//! renew and rebind, release. The lease timers live with the caller.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::frame::SERVER_PORT;
use super::lease::Lease;
use super::message::{self, Identity, Reply, RequestKind};
use super::socket::{self, PacketSocket};
use crate::netns::NsHandle;

#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("no DHCP server answered on {ifname} within {}s (is a server on the LAN, with a free address in its pool?)", waited.as_secs())]
    NoAnswer { ifname: String, waited: Duration },
    #[error("DHCP server {server} refused (NAK){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Refused {
        server: String,
        message: Option<String>,
    },
    #[error("DHCP on {ifname}: {source}")]
    Io { ifname: String, source: io::Error },
}

/// Where the client runs: an interface inside a namespace, as someone.
pub struct Client<'a> {
    pub ns: &'a NsHandle,
    pub ifindex: u32,
    pub ifname: &'a str,
    pub id: &'a Identity,
}

/// How long to wait for the answer to one retransmission: 1, 2, 4, 8, then
/// 16 s (RFC 2131 §4.1 asks for 4 s doubling to 64 s; containers start in a
/// hurry and LAN servers answer in milliseconds).
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.min(4))
}

/// A random transaction id.
pub(super) fn new_xid() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: b is valid for 4 bytes; on failure the time fills in.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        u32::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0x5eed)
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Client<'_> {
    fn io(&self) -> impl Fn(io::Error) -> DhcpError + '_ {
        move |source| DhcpError::Io {
            ifname: self.ifname.to_string(),
            source,
        }
    }

    /// Get a lease within `within`: first ask for `previous` back (a restart
    /// or re-attach keeps its address), then discover.
    pub async fn acquire(
        &self,
        previous: Option<Ipv4Addr>,
        within: Duration,
    ) -> Result<Lease, DhcpError> {
        let deadline = Instant::now() + within;
        let sock = PacketSocket::open(self.ns, self.ifindex).map_err(self.io())?;
        let mut buf = vec![0u8; 1600];
        if let Some(address) = previous {
            let xid = new_xid();
            let req = message::request(self.id, xid, RequestKind::InitReboot { address });
            self.send(&sock, &req).await?;
            let until = deadline.min(Instant::now() + backoff(1));
            match self.wait(&sock, &mut buf, xid, until).await? {
                Some(Reply::Ack(lease)) => return Ok(lease),
                // NAK or silence: the address is gone, start afresh.
                _ => tracing::debug!(%address, "previous address not granted back"),
            }
        }
        let mut attempt = 0;
        let mut refused = None;
        while Instant::now() < deadline {
            let xid = new_xid();
            self.send(&sock, &message::discover(self.id, xid)).await?;
            let until = deadline.min(Instant::now() + backoff(attempt));
            attempt += 1;
            let Some(Reply::Offer { server, offered }) =
                self.wait_for_offer(&sock, &mut buf, xid, until).await?
            else {
                continue;
            };
            tracing::debug!(%server, %offered, "offer");
            let req = message::request(self.id, xid, RequestKind::Selecting { server, offered });
            for retry in 0..3 {
                self.send(&sock, &req).await?;
                let until = deadline.min(Instant::now() + backoff(retry));
                match self.wait(&sock, &mut buf, xid, until).await? {
                    // Only the server selected answers a SELECTING request;
                    // another's answer is not for this exchange.
                    Some(r) if !r.from(server) => {}
                    Some(Reply::Ack(lease)) => return Ok(lease),
                    Some(Reply::Nak { server, message }) => {
                        refused = Some(DhcpError::Refused {
                            server: server.map(|s| s.to_string()).unwrap_or_default(),
                            message,
                        });
                        break;
                    }
                    _ if Instant::now() >= deadline => break,
                    _ => {}
                }
            }
        }
        Err(refused.unwrap_or(DhcpError::NoAnswer {
            ifname: self.ifname.to_string(),
            waited: within,
        }))
    }

    /// Whether a server answers on this interface: DISCOVERs until one
    /// OFFERs (no REQUEST follows: nothing is leased) or `within` passes.
    /// The server that offered.
    pub async fn probe(&self, within: Duration) -> Result<Ipv4Addr, DhcpError> {
        let deadline = Instant::now() + within;
        let sock = PacketSocket::open(self.ns, self.ifindex).map_err(self.io())?;
        let mut buf = vec![0u8; 1600];
        let mut attempt = 0;
        while Instant::now() < deadline {
            let xid = new_xid();
            self.send(&sock, &message::discover(self.id, xid)).await?;
            let until = deadline.min(Instant::now() + backoff(attempt));
            attempt += 1;
            if let Some(Reply::Offer { server, .. }) =
                self.wait_for_offer(&sock, &mut buf, xid, until).await?
            {
                return Ok(server);
            }
        }
        Err(DhcpError::NoAnswer {
            ifname: self.ifname.to_string(),
            waited: within,
        })
    }

    /// Broadcast one message. A full transmit queue (ENOBUFS: a macvlan
    /// parent copying broadcasts to many children, say) loses the packet
    /// like any network would; the retransmission timer covers it.
    async fn send(&self, sock: &PacketSocket, msg: &[u8]) -> Result<(), DhcpError> {
        match sock.broadcast(msg).await {
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::debug!(
                    ifname = self.ifname,
                    "transmit queue full; the packet is lost"
                );
                Ok(())
            }
            r => r.map_err(self.io()),
        }
    }

    async fn wait_for_offer(
        &self,
        sock: &PacketSocket,
        buf: &mut [u8],
        xid: u32,
        until: Instant,
    ) -> Result<Option<Reply>, DhcpError> {
        loop {
            match self.wait(sock, buf, xid, until).await? {
                Some(r @ Reply::Offer { .. }) => return Ok(Some(r)),
                Some(_) => continue, // a stray ACK/NAK of an older exchange
                None => return Ok(None),
            }
        }
    }

    /// The next reply to `xid` before `until`, or None.
    async fn wait(
        &self,
        sock: &PacketSocket,
        buf: &mut [u8],
        xid: u32,
        until: Instant,
    ) -> Result<Option<Reply>, DhcpError> {
        loop {
            let data = match timeout_at(until, sock.recv(buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => r.map_err(self.io())?,
            };
            if let Some(reply) = message::parse_reply(&data, xid, &self.id.mac, now_unix()) {
                return Ok(Some(reply));
            }
        }
    }

    /// One REQUEST for `lease` (unicast to its server, or broadcast when
    /// rebinding) and its answer within `within`; None when nobody answered.
    pub async fn extend(
        &self,
        lease: &Lease,
        rebinding: bool,
        within: Duration,
    ) -> Result<Option<Reply>, DhcpError> {
        let sock = socket::udp(self.ns, self.ifname).map_err(self.io())?;
        let xid = new_xid();
        let address = lease.address.addr();
        let (kind, to) = if rebinding {
            (RequestKind::Rebinding { address }, Ipv4Addr::BROADCAST)
        } else {
            (RequestKind::Renewing { address }, lease.server)
        };
        let req = message::request(self.id, xid, kind);
        sock.send_to(&req, SocketAddrV4::new(to, SERVER_PORT))
            .await
            .map_err(self.io())?;
        let until = Instant::now() + within;
        let mut buf = vec![0u8; 1600];
        loop {
            let n = match timeout_at(until, sock.recv(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => r.map_err(self.io())?,
            };
            match message::parse_reply(&buf[..n], xid, &self.id.mac, now_unix()) {
                Some(r @ (Reply::Ack(_) | Reply::Nak { .. })) => return Ok(Some(r)),
                _ => continue,
            }
        }
    }

    /// Tell the server the address is free again from an interface that
    /// does not hold it (the host's on the LAN, after the container's
    /// interface is gone): the packet is framed whole, from the leased
    /// address to the server, in a link broadcast.
    pub async fn release_from_lan(&self, lease: &Lease) -> Result<(), DhcpError> {
        let sock = PacketSocket::open(self.ns, self.ifindex).map_err(self.io())?;
        let msg = message::release(self.id, new_xid(), lease);
        sock.send(lease.address.addr(), lease.server, &msg)
            .await
            .map_err(self.io())
    }

    /// Tell the server the address is free again (no answer is expected).
    pub async fn release(&self, lease: &Lease) -> Result<(), DhcpError> {
        let sock = socket::udp(self.ns, self.ifname).map_err(self.io())?;
        let msg = message::release(self.id, new_xid(), lease);
        sock.send_to(&msg, SocketAddrV4::new(lease.server, SERVER_PORT))
            .await
            .map_err(self.io())?;
        Ok(())
    }
}
