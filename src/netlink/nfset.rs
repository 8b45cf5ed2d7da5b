//! nftables set and map elements, added and removed straight over
//! nfnetlink (NETLINK_NETFILTER, subsystem nf_tables).
//!
//! Attaching a container adds a few elements to sets that plumb's tables
//! already hold (written once per network, `nftable`). Through libnftables
//! each change cost a dlopen, a context and a cache fetch (about 0.9 ms,
//! measured); this is one `sendmsg` of one kernel batch (about 45 µs,
//! socket included), whatever the ruleset holds. The batch is the kernel's
//! transaction: every change in it is applied, or none.
//!
//! Sets with `flags interval`, timeouts or counters on elements are out of
//! scope: elements here are a key, plus data for maps.
//!
//! The batch itself ([`Batch`], [`NfNetlink::transact`]) also carries the
//! whole tables of `nftable`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::socket::{ext_ack_message, recv_datagram};
use super::{NetlinkError, NlResult};
use crate::netns::NsHandle;

pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNETLINK_V0: u8 = 0;
pub(super) const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
/// Since Linux 6.3; not in older headers. After DELFLOWTABLE (24) the enum
/// goes on with GETRULE_RESET and DESTROYTABLE, CHAIN, RULE, SET: this is
/// 30 (26 is DESTROYTABLE).
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(super) const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
pub(super) const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
pub(super) const NLMSG_ERROR: u16 = 2;
const IFNAMSIZ: usize = 16;

/// A set message grows past this by at most one element, then the rest of
/// the change goes on in another message of the same batch (an attribute's
/// length is a u16: the element list could not pass 64 KiB anyway).
const MESSAGE_LIMIT: usize = 16 * 1024;

/// The family of an nftables table (NFPROTO_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfFamily {
    Inet = 1,
    Ip = 2,
    Ip6 = 10,
    Bridge = 7,
    Netdev = 5,
}

impl NfFamily {
    pub fn name(self) -> &'static str {
        match self {
            NfFamily::Inet => "inet",
            NfFamily::Ip => "ip",
            NfFamily::Ip6 => "ip6",
            NfFamily::Bridge => "bridge",
            NfFamily::Netdev => "netdev",
        }
    }
}

/// One field of a key or of map data, in the set's own type: `ifname`,
/// `ether_addr`, `ipv4_addr`, `ipv6_addr`, `inet_service`, `inet_proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    Ifname(&'a str),
    Ether([u8; 6]),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Port(u16),
    Proto(u8),
}

impl Field<'_> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            // NUL-padded to IFNAMSIZ, as `meta iifname` loads it; the kernel
            // allows names of at most 15 bytes, longer ones are cut.
            Field::Ifname(name) => {
                let name = &name.as_bytes()[..name.len().min(IFNAMSIZ)];
                out.extend_from_slice(name);
                out.resize(out.len() + IFNAMSIZ - name.len(), 0);
            }
            Field::Ether(mac) => out.extend_from_slice(mac),
            Field::Ipv4(ip) => out.extend_from_slice(&ip.octets()),
            Field::Ipv6(ip) => out.extend_from_slice(&ip.octets()),
            Field::Port(port) => out.extend_from_slice(&port.to_be_bytes()),
            Field::Proto(proto) => out.push(*proto),
        }
    }
}

/// The bytes of a set key, or of map data (same layout). In a concatenation
/// every field takes whole 32-bit registers, so each is zero-padded to 4
/// bytes; a single field is not padded (a plain `inet_service` set has
/// 2-byte keys, and the kernel wants the exact length).
pub fn set_key(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.len() * 8);
    for field in fields {
        field.put(&mut out);
        if fields.len() > 1 {
            out.resize(out.len().next_multiple_of(4), 0);
        }
    }
    out
}

/// A set element: its key, and for a map the data it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub data: Option<Vec<u8>>,
}

impl Element {
    /// An element of an `ipv4_addr` or `ipv6_addr` set.
    pub fn address(ip: IpAddr) -> Element {
        let key = match ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        Element { key, data: None }
    }
}

/// Elements to add to, or delete from, the set or map `table`/`set`.
///
/// Adding an element that is there already is not an error, unless it is a
/// map element with other data (EEXIST). Deleting an absent element is not
/// an error either (NFT_MSG_DESTROYSETELEM: Linux 6.3 or later). A change
/// without elements sends nothing.
#[derive(Debug)]
pub enum Change<'a> {
    Add {
        family: NfFamily,
        table: &'a str,
        set: &'a str,
        elements: Vec<Element>,
    },
    Delete {
        family: NfFamily,
        table: &'a str,
        set: &'a str,
        elements: Vec<Element>,
    },
}

impl<'a> Change<'a> {
    fn parts(&self) -> (NfFamily, &'a str, &'a str, &[Element]) {
        let (Change::Add {
            family,
            table,
            set,
            elements,
        }
        | Change::Delete {
            family,
            table,
            set,
            elements,
        }) = self;
        (*family, table, set, elements)
    }

    /// "add to set bridge t ports", for errors.
    fn describe(&self) -> String {
        let (family, table, set, _) = self.parts();
        let verb = match self {
            Change::Add { .. } => "add to",
            Change::Delete { .. } => "delete from",
        };
        format!("{verb} set {} {table} {set}", family.name())
    }
}

/// A NETLINK_NETFILTER socket, bound for its whole life to the network
/// namespace it was opened in.
pub struct NfNetlink {
    pub(super) socket: Socket,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

/// Acks are small (capped: the request is not echoed back).
const RECV_BUFFER: usize = 64 * 1024;

impl NfNetlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> NlResult<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(NfNetlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// A socket bound to `ns`: the thread enters `ns` just for `socket()`.
    pub fn open_in(ns: &NsHandle) -> NlResult<Self> {
        ns.run(NfNetlink::open)?
    }

    /// Apply `changes` as one transaction: all of them, or none. The error
    /// is the first the kernel gave, naming the set it was about.
    pub fn apply(&mut self, changes: &[Change]) -> NlResult<()> {
        match self.apply_with(changes, NFT_MSG_DESTROYSETELEM) {
            // Before Linux 6.3 the kernel knows no DESTROYSETELEM and
            // refuses the whole batch: deletes that must find their
            // element will do there.
            Err(e)
                if e.is(libc::EINVAL)
                    && changes.iter().any(|c| matches!(c, Change::Delete { .. })) =>
            {
                self.apply_with(changes, NFT_MSG_DELSETELEM)
            }
            other => other,
        }
    }

    fn apply_with(&mut self, changes: &[Change], delete: u16) -> NlResult<()> {
        let batch = encode(changes, self.seq.wrapping_add(1), delete);
        self.transact(batch)
    }

    /// Send `batch` and read the kernel's answers: Ok when it acknowledged
    /// every message, else the first error, naming what it was about.
    pub(super) fn transact(&mut self, batch: Batch) -> NlResult<()> {
        let Batch { buf, first, what } = batch;
        if what.is_empty() {
            return Ok(());
        }
        // BEGIN, the messages, END.
        self.seq = first.wrapping_add(what.len() as u32 + 1);
        self.fit_send_buffer(buf.len());
        self.socket.send(&buf, 0)?;

        // The kernel runs the whole batch inside our sendmsg and queues its
        // answers before returning: an ack or an error for every message
        // with NLM_F_ACK (an error does not stop it reading the batch: it
        // reports every error, then aborts). Reading without waiting cannot
        // hang if a malformed batch stops it early.
        let mut acked = vec![false; what.len()];
        let mut failure = None;
        while acked.contains(&false) {
            match recv_datagram(&self.socket, &mut self.buf, libc::MSG_DONTWAIT) {
                Err(NetlinkError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => r?,
            }
            for (seq, code, packet) in errors(&self.buf) {
                // Message i of the batch has sequence number first + i; the
                // BEGIN's (first) is where a failed commit is reported.
                let index = seq.wrapping_sub(first) as usize;
                let about = match index.checked_sub(1).and_then(|i| what.get(i)) {
                    Some(about) => {
                        acked[index - 1] = true;
                        about.clone()
                    }
                    None if index <= what.len() + 1 => "nftables batch".to_string(),
                    None => continue, // an answer to an earlier batch
                };
                // The kernel answers in the order of the batch.
                if code != 0 && failure.is_none() {
                    let ext = match ext_ack_message(packet) {
                        Some(text) => format!("{about}: {text}"),
                        None => about,
                    };
                    let errno = -code;
                    failure = Some(NetlinkError::Kernel {
                        errno,
                        ext: Some(ext),
                    });
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if acked.contains(&false) => Err(NetlinkError::Decode(format!(
                "the kernel acknowledged {} of the {} messages of a batch",
                acked.iter().filter(|a| **a).count(),
                acked.len()
            ))),
            None => Ok(()),
        }
    }

    /// A batch larger than the send buffer would fail with EMSGSIZE (at
    /// ~200 KiB, about 5,000 elements): grow the buffer as nft does.
    fn fit_send_buffer(&self, len: usize) {
        const DEFAULT_SNDBUF: usize = 200 * 1024;
        if len < DEFAULT_SNDBUF {
            return;
        }
        let size = len as libc::c_int;
        for option in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
            // SAFETY: setsockopt on our own socket with an int option value.
            let rc = unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                return;
            }
        }
    }
}

/// One nf_tables transaction being written: BEGIN, messages that each ask
/// for an ack, END. Message i (from 0) has sequence number first + 1 + i.
pub(super) struct Batch {
    pub buf: Vec<u8>,
    pub first: u32,
    /// What each message does, for errors ("add to set bridge t ports").
    pub what: Vec<String>,
}

impl Batch {
    /// A batch whose BEGIN has sequence number `first`.
    pub fn new(first: u32) -> Batch {
        let mut buf = Vec::new();
        // BEGIN and END name the subsystem in res_id, big-endian.
        let begin = start_message(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        finish_message(&mut buf, begin);
        Batch {
            buf,
            first,
            what: Vec::new(),
        }
    }

    /// Start an nf_tables message `kind` (NFT_MSG_*) with an ack; its
    /// attributes follow, then `end_message` with the returned start.
    pub fn message(&mut self, kind: u16, flags: u16, family: NfFamily, what: String) -> usize {
        self.what.push(what);
        let seq = self.first.wrapping_add(self.what.len() as u32);
        start_message(
            &mut self.buf,
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            family as u8,
            0,
        )
    }

    pub fn end_message(&mut self, start: usize) {
        finish_message(&mut self.buf, start);
    }

    /// `elements` of set `set` in as many element messages `kind` as they
    /// need, each described as `what`; none for no elements (a delete
    /// without an element list would flush the whole set).
    pub fn element_messages(
        &mut self,
        kind: u16,
        flags: u16,
        set: &SetRef,
        elements: &[Element],
        what: &str,
    ) {
        let mut rest = elements.iter().peekable();
        while rest.peek().is_some() {
            let msg = self.message(kind, flags, set.family, what.to_string());
            let buf = &mut self.buf;
            put_str(buf, NFTA_SET_ELEM_LIST_TABLE, set.table);
            put_str(buf, NFTA_SET_ELEM_LIST_SET, set.name);
            if let Some(id) = set.id {
                put_attr(buf, NFTA_SET_ELEM_LIST_SET_ID, &id.to_be_bytes());
            }
            let list = start_nest(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
            while let Some(element) = rest.next_if(|_| buf.len() - msg < MESSAGE_LIMIT) {
                put_element(buf, element);
            }
            finish_nest(buf, list);
            self.end_message(msg);
        }
    }

    /// Close the batch with its END.
    pub fn finish(mut self) -> Batch {
        let seq = self.first.wrapping_add(self.what.len() as u32 + 1);
        let end = start_message(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        finish_message(&mut self.buf, end);
        self
    }
}

/// The set elements go to: by name, and for a set made earlier in the same
/// batch also by its id there.
pub(super) struct SetRef<'a> {
    pub family: NfFamily,
    pub table: &'a str,
    pub name: &'a str,
    pub id: Option<u32>,
}

/// The batch of `changes`, its BEGIN numbered `first`.
fn encode(changes: &[Change], first: u32, delete: u16) -> Batch {
    let mut batch = Batch::new(first);
    for change in changes {
        let (family, table, set, elements) = change.parts();
        let (kind, flags) = match change {
            // No NLM_F_EXCL: an element that exists already is fine.
            Change::Add { .. } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            Change::Delete { .. } => (delete, 0),
        };
        let set = SetRef {
            family,
            table,
            name: set,
            id: None,
        };
        batch.element_messages(kind, flags, &set, elements, &change.describe());
    }
    batch.finish()
}

/// One element of an element list.
fn put_element(buf: &mut Vec<u8>, element: &Element) {
    let item = start_nest(buf, NFTA_LIST_ELEM);
    put_value(buf, NFTA_SET_ELEM_KEY, &element.key);
    if let Some(data) = &element.data {
        put_value(buf, NFTA_SET_ELEM_DATA, data);
    }
    finish_nest(buf, item);
}

/// nlmsghdr and struct nfgenmsg; the length is written by `finish_message`.
pub(super) fn start_message(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, NFNETLINK_V0]);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

pub(super) fn finish_message(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// An attribute, zero-padded to 4 bytes (the padding is not in its length).
pub(super) fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

pub(super) fn put_str(buf: &mut Vec<u8>, kind: u16, text: &str) {
    put_attr(buf, kind, &[text.as_bytes(), &[0]].concat());
}

/// `kind` { NFTA_DATA_VALUE bytes }: a key or map data.
pub(super) fn put_value(buf: &mut Vec<u8>, kind: u16, bytes: &[u8]) {
    let nest = start_nest(buf, kind);
    put_attr(buf, NFTA_DATA_VALUE, bytes);
    finish_nest(buf, nest);
}

pub(super) fn start_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    start
}

pub(super) fn finish_nest(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// One netlink message of a datagram.
pub(super) struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    /// The whole message, nlmsghdr included.
    pub whole: &'a [u8],
}

impl Message<'_> {
    /// After the nlmsghdr: nfgenmsg and attributes, or an error's code.
    pub fn body(&self) -> &[u8] {
        &self.whole[16..]
    }

    /// An NLMSG_ERROR's code: 0 for an ack, -errno for a failure.
    pub fn error_code(&self) -> Option<i32> {
        let code = self.body().get(..4).filter(|_| self.kind == NLMSG_ERROR)?;
        Some(i32::from_ne_bytes(code.try_into().ok()?))
    }
}

/// The netlink messages of a datagram, up to the first with a bad length.
pub(super) fn messages(datagram: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let header = datagram.get(offset..offset + 16)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        let whole = datagram.get(offset..offset + len).filter(|_| len >= 16)?;
        offset += len.next_multiple_of(4);
        Some(Message {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            seq: u32::from_ne_bytes(header[8..12].try_into().ok()?),
            whole,
        })
    })
}

/// The NLMSG_ERROR messages of a datagram: sequence number, error code (0
/// for an ack, -errno for a failure) and the whole message.
fn errors(datagram: &[u8]) -> Vec<(u32, i32, &[u8])> {
    messages(datagram)
        .filter_map(|m| Some((m.seq, m.error_code()?, m.whole)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, flags, seq, nfgenmsg + attributes) of each message of a batch.
    fn messages(batch: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
        let mut out = Vec::new();
        let mut rest = batch;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            let seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
            out.push((kind, flags, seq, &rest[16..len]));
            rest = &rest[len..];
        }
        out
    }

    fn ports_element(i: u16) -> Element {
        Element {
            key: set_key(&[
                Field::Ifname("veth0"),
                Field::Ether([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
                Field::Ipv4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
            ]),
            data: None,
        }
    }

    #[test]
    fn single_fields_keep_their_size_and_concatenated_ones_take_whole_registers() {
        assert_eq!(set_key(&[Field::Port(80)]), [0, 80]);
        assert_eq!(set_key(&[Field::Proto(6)]), [6]);
        assert_eq!(
            set_key(&[Field::Ether([1, 2, 3, 4, 5, 6])]),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            set_key(&[Field::Ifname("eth0")]),
            *b"eth0\0\0\0\0\0\0\0\0\0\0\0\0"
        );
        assert_eq!(
            set_key(&[Field::Ifname("a-name-too-long-for-linux")]).len(),
            16
        );
        assert_eq!(
            set_key(&[Field::Proto(17), Field::Port(0x1f90)]),
            [17, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        let concat = set_key(&[
            Field::Ifname("veth0"),
            Field::Ether([2, 0, 0, 0, 0, 1]),
            Field::Ipv4(Ipv4Addr::new(10, 0, 0, 2)),
        ]);
        assert_eq!(concat.len(), 16 + 8 + 4);
        assert_eq!(&concat[..6], b"veth0\0");
        assert_eq!(&concat[16..], [2, 0, 0, 0, 0, 1, 0, 0, 10, 0, 0, 2]);
        let v6 = set_key(&[Field::Ifname("x"), Field::Ipv6(Ipv6Addr::LOCALHOST)]);
        assert_eq!(v6.len(), 32);
        assert_eq!(v6[31], 1);
    }

    #[test]
    fn a_batch_is_begin_the_set_messages_and_end() {
        let changes = [Change::Add {
            family: NfFamily::Inet,
            table: "t",
            set: "p",
            elements: vec![Element {
                key: set_key(&[Field::Port(80)]),
                data: None,
            }],
        }];
        let batch = encode(&changes, 7, NFT_MSG_DESTROYSETELEM);
        assert_eq!(batch.what, ["add to set inet t p"]);
        let msgs = messages(&batch.buf);
        assert_eq!(msgs.len(), 3);
        // BEGIN and END: family AF_UNSPEC, res_id NFNL_SUBSYS_NFTABLES big-endian.
        assert_eq!(msgs[0], (0x10, NLM_F_REQUEST, 7, &[0, 0, 0, 10][..]));
        assert_eq!(msgs[2], (0x11, NLM_F_REQUEST, 9, &[0, 0, 0, 10][..]));
        let (kind, flags, seq, body) = msgs[1];
        assert_eq!(kind, 0x0a0c);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(seq, 8);
        // What `nft --debug=mnl add element inet t p { 80 }` sends, less
        // its NFTA_SET_ELEM_LIST_SET_ID.
        #[rustfmt::skip]
        let expected: &[u8] = &[
            1, 0, 0, 0,                       // nfgenmsg: inet, v0, res_id 0
            6, 0, 1, 0, b't', 0, 0, 0,        // TABLE "t"
            6, 0, 2, 0, b'p', 0, 0, 0,        // SET "p"
            20, 0, 3, 0x80,                   // ELEMENTS, nested
            16, 0, 1, 0x80,                   //   LIST_ELEM
            12, 0, 1, 0x80,                   //     KEY
            6, 0, 1, 0, 0, 80, 0, 0,          //       VALUE 0x0050
        ];
        assert_eq!(body, expected);
    }

    #[test]
    fn map_data_follows_the_key_and_deletes_destroy() {
        let element = Element {
            key: set_key(&[Field::Proto(6), Field::Port(80)]),
            data: Some(set_key(&[
                Field::Ipv4(Ipv4Addr::new(10, 0, 0, 1)),
                Field::Port(8080),
            ])),
        };
        let changes = [
            Change::Delete {
                family: NfFamily::Bridge,
                table: "t",
                set: "m",
                elements: vec![element],
            },
            // A delete message without elements would flush the set.
            Change::Delete {
                family: NfFamily::Bridge,
                table: "t",
                set: "m",
                elements: vec![],
            },
        ];
        let batch = encode(&changes, 1, NFT_MSG_DESTROYSETELEM);
        assert_eq!(batch.what.len(), 1);
        let msgs = messages(&batch.buf);
        assert_eq!(msgs.len(), 3);
        let (kind, flags, _, body) = msgs[1];
        assert_eq!(kind, (10 << 8) | 30);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(body[0], NfFamily::Bridge as u8);
        #[rustfmt::skip]
        let element: &[u8] = &[
            40, 0, 3, 0x80,                           // ELEMENTS
            36, 0, 1, 0x80,                           //   LIST_ELEM
            16, 0, 1, 0x80,                           //     KEY
            12, 0, 1, 0, 6, 0, 0, 0, 0, 80, 0, 0,     //       VALUE
            16, 0, 2, 0x80,                           //     DATA
            12, 0, 1, 0, 10, 0, 0, 1, 0x1f, 0x90, 0, 0,
        ];
        assert!(body.ends_with(element));
    }

    #[test]
    fn many_elements_are_split_over_messages_of_one_batch() {
        let elements: Vec<Element> = (0..1000).map(ports_element).collect();
        let changes = [Change::Add {
            family: NfFamily::Bridge,
            table: "t",
            set: "ports",
            elements: elements.clone(),
        }];
        let batch = encode(&changes, 100, NFT_MSG_DESTROYSETELEM);
        let msgs = messages(&batch.buf);
        let sent = batch.what.len();
        assert!(sent > 2, "{sent} messages");
        assert_eq!(msgs.len(), sent + 2);
        let mut keys = Vec::new();
        for (i, (_, _, seq, body)) in msgs[1..msgs.len() - 1].iter().enumerate() {
            assert_eq!(*seq, 101 + i as u32);
            assert!(body.len() + 16 < MESSAGE_LIMIT + 64);
            // nfgenmsg 4, TABLE 8, SET 12 ("ports\0" padded), ELEMENTS header 4;
            // then LIST_ELEM 4, KEY 4, VALUE 4 + 28.
            let mut at = 4 + 8 + 12 + 4;
            while at < body.len() {
                keys.push(body[at + 12..at + 40].to_vec());
                at += 40;
            }
        }
        let expected: Vec<Vec<u8>> = elements.into_iter().map(|e| e.key).collect();
        assert_eq!(keys, expected);
    }

    #[test]
    fn acks_and_errors_are_read_by_sequence_number() {
        let mut datagram = Vec::new();
        for (seq, code) in [(5u32, 0i32), (6, -libc::ENOENT)] {
            datagram.extend_from_slice(&36u32.to_ne_bytes());
            datagram.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            datagram.extend_from_slice(&0x100u16.to_ne_bytes());
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&0u32.to_ne_bytes());
            datagram.extend_from_slice(&code.to_ne_bytes());
            datagram.extend_from_slice(&[0; 16]);
        }
        let found: Vec<(u32, i32)> = errors(&datagram).iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(found, [(5, 0), (6, -libc::ENOENT)]);
    }
}
