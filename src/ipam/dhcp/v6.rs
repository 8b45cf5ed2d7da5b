//! DHCPv6 (RFC 8415) for one IA_NA address, run on DHCP networks whose
//! router advertisements set the managed flag: SOLICIT/ADVERTISE/REQUEST/
//! REPLY, then RENEW at T1, REBIND at T2, RELEASE on detach. The exchange
//! goes from the interface's link-local address to All_DHCP_Relay_Agents_
//! and_Servers, so it needs no address of its own beforehand.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use dhcproto::v6::{self, DhcpOption, IANA, Message, MessageType, ORO, OptionCode, Status};
use dhcproto::{Decodable, Encodable};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep, timeout_at};

use super::client::{DhcpError, now_unix};
use super::{hex, unhex};
use crate::netns::NsHandle;

const CLIENT_PORT: u16 = 546;
const SERVER_PORT: u16 = 547;
/// All_DHCP_Relay_Agents_and_Servers.
const SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub address: Ipv6Addr,
    /// The server's DUID, hex.
    pub server_id: String,
    pub t1: u32,
    pub t2: u32,
    pub valid: u32,
    pub acquired_at: u64,
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
}

impl Lease6 {
    pub fn renew_at(&self) -> u64 {
        self.acquired_at + u64::from(self.t1)
    }
    pub fn rebind_at(&self) -> u64 {
        self.acquired_at + u64::from(self.t2)
    }
    pub fn expires_at(&self) -> u64 {
        self.acquired_at + u64::from(self.valid)
    }
}

/// The client: a DUID-LL from the attachment's MAC, one IA_NA per interface.
pub struct Client6<'a> {
    pub ns: &'a NsHandle,
    pub ifindex: u32,
    pub ifname: &'a str,
    pub mac: [u8; 6],
}

pub enum Reply6 {
    Bound(Lease6),
    Refused(String),
}

impl Client6<'_> {
    fn duid(&self) -> Vec<u8> {
        let mut d = vec![0, 3, 0, 1]; // DUID-LL, Ethernet
        d.extend_from_slice(&self.mac);
        d
    }

    fn iaid(&self) -> u32 {
        u32::from_be_bytes([self.mac[2], self.mac[3], self.mac[4], self.mac[5]])
    }

    fn err(&self) -> impl Fn(io::Error) -> DhcpError + '_ {
        move |source| DhcpError::Io {
            ifname: self.ifname.to_string(),
            source,
        }
    }

    fn message(
        &self,
        kind: MessageType,
        xid: u32,
        server: Option<&[u8]>,
        ia: Option<&Lease6>,
    ) -> Vec<u8> {
        let mut msg = Message::new(kind);
        msg.set_xid_num(xid & 0x00ff_ffff);
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::ClientId(self.duid()));
        if let Some(s) = server {
            opts.insert(DhcpOption::ServerId(s.to_vec()));
        }
        opts.insert(DhcpOption::ElapsedTime(0));
        opts.insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers],
        }));
        let mut ia_opts = v6::DhcpOptions::new();
        if let Some(l) = ia {
            ia_opts.insert(DhcpOption::IAAddr(v6::IAAddr {
                addr: l.address,
                preferred_life: 0,
                valid_life: 0,
                opts: v6::DhcpOptions::new(),
            }));
        }
        opts.insert(DhcpOption::IANA(IANA {
            id: self.iaid(),
            t1: 0,
            t2: 0,
            opts: ia_opts,
        }));
        msg.to_vec().unwrap_or_default()
    }

    fn socket(&self) -> io::Result<tokio::net::UdpSocket> {
        use nix::sys::socket::{self as s, setsockopt, sockopt};
        let sock = self.ns.run(|| -> io::Result<std::net::UdpSocket> {
            let fd = s::socket(
                s::AddressFamily::Inet6,
                s::SockType::Datagram,
                s::SockFlag::SOCK_CLOEXEC | s::SockFlag::SOCK_NONBLOCK,
                None,
            )?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            setsockopt(
                &fd,
                sockopt::BindToDevice,
                &std::ffi::OsString::from(self.ifname),
            )?;
            let any =
                s::SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, CLIENT_PORT, 0, 0));
            s::bind(fd.as_raw_fd(), &any)?;
            Ok(std::net::UdpSocket::from(fd))
        })??;
        tokio::net::UdpSocket::from_std(sock)
    }

    /// Send `req` (again while the link-local address is still tentative)
    /// and wait for an answer of one of `kinds` to `xid` until `until`.
    async fn exchange(
        &self,
        sock: &tokio::net::UdpSocket,
        req: &[u8],
        xid: u32,
        kinds: &[MessageType],
        until: Instant,
    ) -> Result<Option<Message>, DhcpError> {
        let to = SocketAddrV6::new(SERVERS, SERVER_PORT, 0, self.ifindex);
        loop {
            match sock.send_to(req, to).await {
                Ok(_) => break,
                // No usable link-local source yet (DAD): try again shortly.
                Err(e)
                    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && Instant::now() < until =>
                {
                    sleep(Duration::from_millis(200)).await
                }
                Err(e) => return Err(self.err()(e)),
            }
        }
        let mut buf = vec![0u8; 1500];
        loop {
            let n = match timeout_at(until, sock.recv(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(r) => r.map_err(self.err())?,
            };
            let Ok(msg) = Message::from_bytes(&buf[..n]) else {
                continue;
            };
            let ours = matches!(msg.opts().get(OptionCode::ClientId), Some(DhcpOption::ClientId(c)) if *c == self.duid());
            if msg.xid_num() == xid & 0x00ff_ffff && ours && kinds.contains(&msg.msg_type()) {
                return Ok(Some(msg));
            }
        }
    }

    /// The lease a REPLY (or ADVERTISE) carries, or why there is none.
    fn lease_of(&self, msg: &Message) -> Reply6 {
        let server = match msg.opts().get(OptionCode::ServerId) {
            Some(DhcpOption::ServerId(s)) => hex(s),
            _ => return Reply6::Refused("no server id".into()),
        };
        let Some(DhcpOption::IANA(ia)) = msg.opts().get(OptionCode::IANA) else {
            return Reply6::Refused(status_text(msg.opts()).unwrap_or("no address offered".into()));
        };
        if let Some(text) = status_text(&ia.opts) {
            return Reply6::Refused(text);
        }
        let Some(DhcpOption::IAAddr(a)) = ia.opts.get(OptionCode::IAAddr) else {
            return Reply6::Refused("no address in the IA_NA".into());
        };
        if a.valid_life == 0 {
            return Reply6::Refused(format!("{} is no longer valid", a.addr));
        }
        // T1/T2 of 0 leave the timing to the client (RFC 8415 §21.4).
        let t1 = if ia.t1 == 0 {
            a.preferred_life / 2
        } else {
            ia.t1
        };
        let t2 = if ia.t2 == 0 {
            a.preferred_life / 5 * 4
        } else {
            ia.t2
        };
        Reply6::Bound(Lease6 {
            address: a.addr,
            server_id: server,
            t1: t1.min(a.valid_life),
            t2: t2.max(t1).min(a.valid_life),
            valid: a.valid_life,
            acquired_at: now_unix(),
            dns: match msg.opts().get(OptionCode::DomainNameServers) {
                Some(DhcpOption::DomainNameServers(d)) => d.clone(),
                _ => Vec::new(),
            },
        })
    }

    pub async fn acquire(&self, within: Duration) -> Result<Lease6, DhcpError> {
        let deadline = Instant::now() + within;
        let sock = self.socket().map_err(self.err())?;
        let mut wait = Duration::from_secs(1);
        let mut refused = None;
        while Instant::now() < deadline {
            let xid = new_xid();
            let solicit = self.message(MessageType::Solicit, xid, None, None);
            let until = deadline.min(Instant::now() + wait);
            wait = (wait * 2).min(Duration::from_secs(16));
            let Some(adv) = self
                .exchange(&sock, &solicit, xid, &[MessageType::Advertise], until)
                .await?
            else {
                continue;
            };
            let offered = match self.lease_of(&adv) {
                Reply6::Bound(l) => l,
                Reply6::Refused(why) => {
                    refused = Some(why);
                    continue;
                }
            };
            let xid = new_xid();
            let req = self.message(
                MessageType::Request,
                xid,
                Some(&unhex(&offered.server_id)),
                Some(&offered),
            );
            let until = deadline.min(Instant::now() + Duration::from_secs(2));
            if let Some(reply) = self
                .exchange(&sock, &req, xid, &[MessageType::Reply], until)
                .await?
            {
                match self.lease_of(&reply) {
                    Reply6::Bound(l) => return Ok(l),
                    Reply6::Refused(why) => refused = Some(why),
                }
            }
        }
        Err(match refused {
            Some(message) => DhcpError::Refused {
                server: "DHCPv6".into(),
                message: Some(message),
            },
            None => DhcpError::NoAnswer {
                ifname: self.ifname.to_string(),
                waited: within,
            },
        })
    }

    /// RENEW (or REBIND) `lease`; None when no server answered in time.
    pub async fn extend(
        &self,
        lease: &Lease6,
        rebinding: bool,
        within: Duration,
    ) -> Result<Option<Reply6>, DhcpError> {
        let sock = self.socket().map_err(self.err())?;
        let xid = new_xid();
        let (kind, server) = if rebinding {
            (MessageType::Rebind, None)
        } else {
            (MessageType::Renew, Some(unhex(&lease.server_id)))
        };
        let req = self.message(kind, xid, server.as_deref(), Some(lease));
        let reply = self
            .exchange(
                &sock,
                &req,
                xid,
                &[MessageType::Reply],
                Instant::now() + within,
            )
            .await?;
        Ok(reply.map(|r| self.lease_of(&r)))
    }

    pub async fn release(&self, lease: &Lease6) -> Result<(), DhcpError> {
        let sock = self.socket().map_err(self.err())?;
        let xid = new_xid();
        let req = self.message(
            MessageType::Release,
            xid,
            Some(&unhex(&lease.server_id)),
            Some(lease),
        );
        // The server's REPLY is not worth waiting long for.
        self.exchange(
            &sock,
            &req,
            xid,
            &[MessageType::Reply],
            Instant::now() + Duration::from_millis(500),
        )
        .await
        .map(drop)
    }
}

fn status_text(opts: &v6::DhcpOptions) -> Option<String> {
    match opts.get(OptionCode::StatusCode) {
        Some(DhcpOption::StatusCode(s)) if s.status != Status::Success => {
            Some(format!("{:?}: {}", s.status, s.msg))
        }
        _ => None,
    }
}

fn new_xid() -> u32 {
    super::client::new_xid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ns: &NsHandle) -> Client6<'_> {
        Client6 {
            ns,
            ifindex: 1,
            ifname: "eth0",
            mac: [2, 0, 0, 0, 0, 9],
        }
    }

    #[test]
    fn a_reply_with_an_address_is_a_lease_and_no_addrs_avail_is_a_refusal() {
        let ns = NsHandle::current().unwrap();
        let c = client(&ns);
        let mut reply = Message::new(MessageType::Reply);
        reply.opts_mut().insert(DhcpOption::ClientId(c.duid()));
        reply.opts_mut().insert(DhcpOption::ServerId(vec![0, 1, 2]));
        let mut ia = v6::DhcpOptions::new();
        ia.insert(DhcpOption::IAAddr(v6::IAAddr {
            addr: "fd00::5".parse().unwrap(),
            preferred_life: 100,
            valid_life: 200,
            opts: v6::DhcpOptions::new(),
        }));
        reply.opts_mut().insert(DhcpOption::IANA(IANA {
            id: c.iaid(),
            t1: 0,
            t2: 0,
            opts: ia,
        }));
        let Reply6::Bound(l) = c.lease_of(&reply) else {
            panic!("no lease")
        };
        assert_eq!((l.t1, l.t2, l.valid), (50, 80, 200));
        assert_eq!(l.server_id, "000102");

        let mut none = v6::DhcpOptions::new();
        none.insert(DhcpOption::StatusCode(v6::StatusCode {
            status: Status::NoAddrsAvail,
            msg: "pool empty".into(),
        }));
        reply.opts_mut().insert(DhcpOption::IANA(IANA {
            id: c.iaid(),
            t1: 0,
            t2: 0,
            opts: none,
        }));
        assert!(matches!(c.lease_of(&reply), Reply6::Refused(t) if t.contains("NoAddrsAvail")));
    }

    #[test]
    fn messages_carry_the_duid_and_the_ia() {
        let ns = NsHandle::current().unwrap();
        let c = client(&ns);
        let m =
            Message::from_bytes(&c.message(MessageType::Solicit, 0x123456, None, None)).unwrap();
        assert_eq!(m.xid_num(), 0x123456);
        assert!(
            matches!(m.opts().get(OptionCode::ClientId), Some(DhcpOption::ClientId(d)) if d[..4] == [0, 3, 0, 1])
        );
        assert!(m.opts().get(OptionCode::IANA).is_some());
        assert!(m.opts().get(OptionCode::ElapsedTime).is_some());
    }
}
