//! A small synchronous rtnetlink client: one request, its answers, its ack.
//!
//! The CLI is a short-lived process doing a handful of requests per attach, so a
//! blocking socket is simpler and faster than an async runtime. A socket is bound
//! to the network namespace of the thread that created it, for its whole life:
//! [`Netlink::open_in`] relies on that.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_ECHO, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::netns::NsHandle;

/// An error answered by the kernel (errno plus its extended-ack text, if any),
/// or a local I/O or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{}{}", io::Error::from_raw_os_error(*errno), ext.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { errno: i32, ext: Option<String> },
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("netlink: cannot decode the kernel's answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
    pub fn is(&self, errno: i32) -> bool {
        self.errno() == Some(errno)
    }
}

pub type NlResult<T> = Result<T, NetlinkError>;

/// Read one datagram into `buf` (cleared first). A datagram larger than the
/// buffer would be cut short without a word; MSG_TRUNC makes the kernel
/// report its real size, and that is an error instead.
pub(super) fn recv_datagram(socket: &Socket, buf: &mut Vec<u8>, flags: i32) -> NlResult<()> {
    buf.clear();
    let len = socket.recv(buf, flags | libc::MSG_TRUNC)?;
    if len > buf.len() {
        return Err(NetlinkError::Decode(format!(
            "a {len}-byte answer does not fit the receive buffer"
        )));
    }
    Ok(())
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// Large enough for any one datagram the kernel sends (dump batches are at
/// most 32 KiB); one buffer per socket, reused for every answer.
const RECV_BUFFER: usize = 256 * 1024;

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> NlResult<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Extended acks carry the kernel's own words for an error; capped acks
        // keep it from echoing our whole request back.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_rx_buf_sz(1 << 20);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// A socket bound to `ns`: the thread enters `ns` just for `socket()`.
    pub fn open_in(ns: &NsHandle) -> NlResult<Self> {
        ns.run(Netlink::open)?
    }

    /// Send one request and wait for its ack; return the error the kernel gave.
    pub fn execute(&mut self, msg: RouteNetlinkMessage, flags: u16) -> NlResult<()> {
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(drop)
    }

    /// Dump a table: every answer until NLMSG_DONE.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    /// Send a request that answers with messages (a GET for one object).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK)
    }

    /// Send a GET that the kernel answers as a notification (qdiscs):
    /// NLM_F_ECHO has the answer sent to the asker too.
    pub fn get_echoed(&mut self, msg: RouteNetlinkMessage) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO)
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> NlResult<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut answers = Vec::new();
        loop {
            recv_datagram(&self.socket, &mut self.buf, 0)?;
            let data = &self.buf[..];
            let mut offset = 0;
            while offset < data.len() {
                let bytes = &data[offset..];
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError::Decode("zero-length message".into()));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(err) => {
                        if let Some(code) = err.code {
                            return Err(NetlinkError::Kernel {
                                errno: -code.get(),
                                ext: ext_ack_message(&bytes[..len.min(bytes.len())]),
                            });
                        }
                        return Ok(answers);
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        answers.push(inner);
                        // A GET without DUMP answers once and then acks.
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The NLMSGERR_ATTR_MSG text of an extended ack, if the kernel sent one.
pub(super) fn ext_ack_message(packet: &[u8]) -> Option<String> {
    // nlmsghdr (16) + error code (4) + the echoed request header (16, capped ack).
    const NLMSGERR_ATTR_MSG: u16 = 1;
    let mut offset = 16 + 4 + 16;
    while offset + 4 <= packet.len() {
        let len = u16::from_ne_bytes([packet[offset], packet[offset + 1]]) as usize;
        let kind = u16::from_ne_bytes([packet[offset + 2], packet[offset + 3]]);
        if len < 4 || offset + len > packet.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &packet[offset + 4..offset + len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        offset += (len + 3) & !3;
    }
    None
}
