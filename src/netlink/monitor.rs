//! The kernel's notifications of the links, addresses and routes of one
//! namespace: what the daemon listens to, to repair within a second what
//! someone took away (a bridge deleted, a port taken off its bridge or set
//! down, an address or a route removed), instead of at its next start.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::socket::recv_datagram;
use super::{LinkInfo, Netlink, NetlinkError, NlResult};

/// What may need repair, by link name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The link went, was taken off its bridge, went down or lost an
    /// address.
    Link(String),
    /// A route was removed.
    Route,
    /// Notifications were lost (the socket's queue overflowed): anything
    /// may have changed.
    Unknown,
}

pub struct Monitor {
    socket: Socket,
    buf: Vec<u8>,
    /// Each link's last known state, to tell a loss from a creation.
    links: HashMap<u32, LinkInfo>,
}

impl Monitor {
    /// Listen in the calling thread's namespace, knowing its links as they
    /// are now.
    pub fn open() -> NlResult<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        let groups = (libc::RTMGRP_LINK
            | libc::RTMGRP_IPV4_IFADDR
            | libc::RTMGRP_IPV6_IFADDR
            | libc::RTMGRP_IPV4_ROUTE
            | libc::RTMGRP_IPV6_ROUTE) as u32;
        socket.bind(&SocketAddr::new(0, groups))?;
        let _ = socket.set_rx_buf_sz(4 << 20);
        // Subscribed before the dump: a change in between is seen twice at
        // worst, never missed.
        let links = Netlink::open()?
            .links()?
            .into_iter()
            .map(|l| (l.index, l))
            .collect();
        Ok(Monitor {
            socket,
            buf: Vec::with_capacity(256 * 1024),
            links,
        })
    }

    /// The changes notified within `timeout` (none when nothing came).
    pub fn wait(&mut self, timeout: Duration) -> NlResult<Vec<Change>> {
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EINTR) => Ok(Vec::new()),
                _ => Err(e.into()),
            };
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut changes = Vec::new();
        loop {
            match recv_datagram(&self.socket, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(()) => {}
                Err(NetlinkError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(NetlinkError::Io(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    changes.push(Change::Unknown);
                    continue;
                }
                Err(e) => return Err(e),
            }
            let data = std::mem::take(&mut self.buf);
            self.read(&data, &mut changes);
            self.buf = data;
        }
        Ok(changes)
    }

    fn read(&mut self, data: &[u8], changes: &mut Vec<Change>) {
        let mut offset = 0;
        while offset < data.len() {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
            else {
                changes.push(Change::Unknown);
                return;
            };
            let len = msg.header.length as usize;
            if len == 0 {
                return;
            }
            offset += (len + 3) & !3;
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                self.note(inner, changes);
            }
        }
    }

    fn note(&mut self, msg: RouteNetlinkMessage, changes: &mut Vec<Change>) {
        match msg {
            // A bridge says a port left it with a DELLINK of family
            // AF_BRIDGE: the link itself may still be there.
            RouteNetlinkMessage::DelLink(l) => {
                let own = family(&l) == libc::AF_UNSPEC as u8;
                let info = LinkInfo::from_message(l);
                if own {
                    self.links.remove(&info.index);
                }
                changes.push(Change::Link(info.name));
            }
            RouteNetlinkMessage::NewLink(l) if family(&l) == libc::AF_UNSPEC as u8 => {
                let info = LinkInfo::from_message(l);
                let lost = self.links.get(&info.index).is_some_and(|before| {
                    (before.up && !info.up)
                        || (before.controller.is_some() && info.controller != before.controller)
                });
                if lost {
                    changes.push(Change::Link(info.name.clone()));
                }
                self.links.insert(info.index, info);
            }
            RouteNetlinkMessage::DelAddress(a) => {
                if let Some(link) = self.links.get(&a.header.index) {
                    changes.push(Change::Link(link.name.clone()));
                }
            }
            RouteNetlinkMessage::DelRoute(_) => changes.push(Change::Route),
            _ => {}
        }
    }
}

fn family(l: &LinkMessage) -> u8 {
    u8::from(l.header.interface_family)
}
