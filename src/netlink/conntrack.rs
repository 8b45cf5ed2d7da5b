//! Conntrack entries of a published port, deleted straight over ctnetlink
//! (NETLINK_NETFILTER, subsystem ctnetlink).
//!
//! Every packet of a conntrack entry follows the NAT chosen for its first
//! one, and a UDP entry lives as long as datagrams keep coming (30 s
//! unreplied, 120 s once assured). A port published anew, to another
//! container, would not move a flow that is already there (netavark issue
//! 1045): deleting the port's entries when it is published and when it is
//! freed makes the next datagram start a new entry, through the map as it
//! is now.
//!
//! One dump finds the entries (the kernel filters it, Linux 5.8 or later,
//! and each is checked here again); once it is over, the deletes follow,
//! each by the entry's own tuple, zone and id.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use super::nfquery::attributes;
use super::nfset::{
    NfNetlink, finish_message, finish_nest, messages, put_attr, start_message, start_nest,
};
use super::socket::{ext_ack_message, recv_datagram};
use super::{NetlinkError, NlResult};

// include/uapi/linux/netfilter/nfnetlink.h and nfnetlink_conntrack.h.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
/// Linux 5.8. Older kernels parse past their CTA_MAX without a word: the
/// dump comes unfiltered, and the check of each entry here sorts it.
const CTA_FILTER: u16 = 25;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
// Not uapi: net/netfilter/nf_internals.h. The kernel refuses port flags
// without PROTO_NUM (EINVAL).
const CTA_FILTER_F_CTA_IP_DST: u32 = 1 << 1;
const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;
const NLA_F_NESTED: u16 = 1 << 15;
const AF_INET: u8 = libc::AF_INET as u8;

/// Deletes sent in one datagram. The kernel queues an ack for each before
/// `sendmsg` returns; a few dozen small acks fit any receive buffer.
const DELETES_PER_DATAGRAM: usize = 64;

/// The entries to delete, by their original direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Wanted {
    proto: u8,
    port: u16,
    daddr: Option<Ipv4Addr>,
}

impl NfNetlink {
    /// Delete every IPv4 conntrack entry whose original direction is
    /// protocol `proto` (`libc::IPPROTO_UDP`, `IPPROTO_TCP`) to destination
    /// port `port` and, when given, to destination address `daddr` (before
    /// any DNAT: the published address and port). Returns how many it
    /// deleted; an entry that ended meanwhile is not an error, nor is a
    /// kernel without conntrack.
    pub fn delete_conntrack(
        &mut self,
        proto: u8,
        port: u16,
        daddr: Option<Ipv4Addr>,
    ) -> NlResult<usize> {
        let wanted = Wanted { proto, port, daddr };
        let found = match self.conntrack_dump(&wanted, true) {
            // A kernel that refuses the filter: every IPv4 entry then.
            Err(e) if e.is(libc::EINVAL) || e.is(libc::EOPNOTSUPP) => {
                self.conntrack_dump(&wanted, false)
            }
            other => other,
        };
        let found = match found {
            // nfnetlink's answer for a subsystem it does not have (no
            // conntrack in the kernel): then there is nothing to delete.
            Err(e) if e.is(libc::EINVAL) => return Ok(0),
            other => other?,
        };
        let mut deleted = 0;
        for entries in found.chunks(DELETES_PER_DATAGRAM) {
            deleted += self.conntrack_delete(entries)?;
        }
        Ok(deleted)
    }

    /// Dump the IPv4 entries, with the kernel-side filter or without, and
    /// return the delete attributes of those that match `wanted`.
    fn conntrack_dump(&mut self, wanted: &Wanted, filtered: bool) -> NlResult<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let request = dump_request(wanted, seq, filtered);
        let mut found = Vec::new();
        // Entries come as IPCTNL_MSG_CT_NEW.
        self.answers(&request, seq, NFNL_SUBSYS_CTNETLINK, true, |_, body| {
            found.extend(delete_attrs_if_wanted(body, wanted));
        })?;
        Ok(found)
    }

    /// Delete `entries` (their delete attributes) with one datagram; how
    /// many the kernel deleted.
    fn conntrack_delete(&mut self, entries: &[Vec<u8>]) -> NlResult<usize> {
        let first = self.seq.wrapping_add(1);
        let request = delete_requests(entries, first);
        self.seq = first.wrapping_add(entries.len() as u32).wrapping_sub(1);
        self.socket.send(&request, 0)?;
        // The kernel handled every message inside our sendmsg and queued
        // its acks before returning: reading without waiting cannot hang.
        let mut acks = Acks::new(first, entries.len());
        while !acks.complete() {
            match recv_datagram(&self.socket, &mut self.buf, libc::MSG_DONTWAIT) {
                Err(NetlinkError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => r?,
            }
            acks.read(&self.buf);
        }
        acks.result()
    }
}

/// The IPCTNL_MSG_CT_GET dump of the IPv4 entries, filtered by the kernel
/// on `wanted` if `filtered`.
fn dump_request(wanted: &Wanted, seq: u32, filtered: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(80);
    let msg = start_message(
        &mut buf,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        AF_INET,
        0,
    );
    if filtered {
        let mut flags = CTA_FILTER_F_CTA_PROTO_NUM | CTA_FILTER_F_CTA_PROTO_DST_PORT;
        let tuple = start_nest(&mut buf, CTA_TUPLE_ORIG);
        if let Some(daddr) = wanted.daddr {
            flags |= CTA_FILTER_F_CTA_IP_DST;
            let ip = start_nest(&mut buf, CTA_TUPLE_IP);
            put_attr(&mut buf, CTA_IP_V4_DST, &daddr.octets());
            finish_nest(&mut buf, ip);
        }
        let proto = start_nest(&mut buf, CTA_TUPLE_PROTO);
        put_attr(&mut buf, CTA_PROTO_NUM, &[wanted.proto]);
        put_attr(&mut buf, CTA_PROTO_DST_PORT, &wanted.port.to_be_bytes());
        finish_nest(&mut buf, proto);
        finish_nest(&mut buf, tuple);
        let filter = start_nest(&mut buf, CTA_FILTER);
        // A u32 in host order (nla_get_u32), unlike the CTA_* values.
        put_attr(&mut buf, CTA_FILTER_ORIG_FLAGS, &flags.to_ne_bytes());
        finish_nest(&mut buf, filter);
    }
    finish_message(&mut buf, msg);
    buf
}

/// One IPCTNL_MSG_CT_DELETE for each entry, numbered from `first`, each
/// asking for an ack.
fn delete_requests(entries: &[Vec<u8>], first: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * 96);
    for (i, attrs) in entries.iter().enumerate() {
        // A delete without a tuple would flush the whole table.
        assert!(!attrs.is_empty(), "a conntrack delete needs a tuple");
        let msg = start_message(
            &mut buf,
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            first.wrapping_add(i as u32),
            AF_INET,
            0,
        );
        buf.extend_from_slice(attrs);
        finish_message(&mut buf, msg);
    }
    buf
}

/// For a dumped entry (nfgenmsg and attributes) that matches `wanted`, the
/// attributes that delete it: its CTA_TUPLE_ORIG as the kernel gave it
/// (a delete looks the entry up by the whole tuple, addresses and both
/// ports), its CTA_ZONE if it has one (without it the lookup is in zone 0:
/// ENOENT, nothing deleted), and its CTA_ID, so that a new entry with the
/// same tuple, made since the dump, is left alone (ENOENT too).
fn delete_attrs_if_wanted(body: &[u8], wanted: &Wanted) -> Option<Vec<u8>> {
    if *body.first()? != AF_INET {
        return None;
    }
    let (mut tuple, mut id, mut zone) = (None, None, None);
    for (kind, payload) in attributes(body.get(4..)?) {
        match kind {
            CTA_TUPLE_ORIG => tuple = Some(payload),
            CTA_ID => id = Some(payload),
            CTA_ZONE => zone = Some(payload),
            _ => {}
        }
    }
    let tuple = tuple?;
    if !OrigTuple::parse(tuple).matches(wanted) {
        return None;
    }
    let mut attrs = Vec::with_capacity(tuple.len() + 16);
    put_attr(&mut attrs, CTA_TUPLE_ORIG | NLA_F_NESTED, tuple);
    if let Some(zone) = zone {
        put_attr(&mut attrs, CTA_ZONE, zone);
    }
    if let Some(id) = id {
        put_attr(&mut attrs, CTA_ID, id);
    }
    Some(attrs)
}

/// What matters here of an entry's original tuple.
#[derive(Debug, Default, PartialEq, Eq)]
struct OrigTuple {
    daddr: Option<Ipv4Addr>,
    proto: Option<u8>,
    dport: Option<u16>,
}

impl OrigTuple {
    fn parse(tuple: &[u8]) -> OrigTuple {
        let mut out = OrigTuple::default();
        for (kind, payload) in attributes(tuple) {
            for (inner, value) in attributes(payload) {
                match (kind, inner) {
                    (CTA_TUPLE_IP, CTA_IP_V4_DST) => {
                        out.daddr = <[u8; 4]>::try_from(value).ok().map(Ipv4Addr::from);
                    }
                    (CTA_TUPLE_PROTO, CTA_PROTO_NUM) => out.proto = value.first().copied(),
                    (CTA_TUPLE_PROTO, CTA_PROTO_DST_PORT) => {
                        out.dport = <[u8; 2]>::try_from(value).ok().map(u16::from_be_bytes);
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn matches(&self, wanted: &Wanted) -> bool {
        self.daddr.is_some()
            && self.proto == Some(wanted.proto)
            && self.dport == Some(wanted.port)
            && wanted.daddr.is_none_or(|want| self.daddr == Some(want))
    }
}

/// The acks of a datagram of deletes numbered from `first`.
struct Acks {
    first: u32,
    answered: Vec<bool>,
    deleted: usize,
    failure: Option<NetlinkError>,
}

impl Acks {
    fn new(first: u32, count: usize) -> Acks {
        Acks {
            first,
            answered: vec![false; count],
            deleted: 0,
            failure: None,
        }
    }

    fn complete(&self) -> bool {
        !self.answered.contains(&false)
    }

    fn read(&mut self, datagram: &[u8]) {
        for message in messages(datagram) {
            let Some(code) = message.error_code() else {
                continue;
            };
            let index = message.seq.wrapping_sub(self.first) as usize;
            match self.answered.get_mut(index) {
                Some(answered) if !*answered => *answered = true,
                _ => continue, // an answer to another request
            }
            match -code {
                0 => self.deleted += 1,
                // Gone since the dump: timed out, or deleted by someone
                // else (or its id is another entry's now).
                libc::ENOENT => {}
                errno => {
                    self.failure.get_or_insert(NetlinkError::Kernel {
                        errno,
                        ext: ext_ack_message(message.whole),
                    });
                }
            }
        }
    }

    fn result(self) -> NlResult<usize> {
        let answered = self.answered.iter().filter(|a| **a).count();
        match self.failure {
            Some(e) => Err(e),
            None if answered < self.answered.len() => Err(NetlinkError::Decode(format!(
                "the kernel answered {answered} of {} conntrack deletes",
                self.answered.len()
            ))),
            None => Ok(self.deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::nfset::NLMSG_ERROR;

    const UDP: u8 = libc::IPPROTO_UDP as u8;
    const TCP: u8 = libc::IPPROTO_TCP as u8;

    /// An entry as this kernel (6.18) dumped it: 10.97.0.2:55855 ->
    /// 10.97.0.1:5353, DNATed to :7000, unreplied (the first message of a
    /// real filtered dump, sequence number 4).
    #[rustfmt::skip]
    const DUMPED: [u8; 164] = [
        164, 0, 0, 0, 0, 1, 34, 0, 4, 0, 0, 0, 251, 50, 0, 0, // nlmsghdr: CT_NEW, MULTI|DUMP_FILTERED
        2, 0, 0, 0,                                           // nfgenmsg: AF_INET
        52, 0, 1, 128,                                        // CTA_TUPLE_ORIG
        20, 0, 1, 128,                                        //   CTA_TUPLE_IP
        8, 0, 1, 0, 10, 97, 0, 2,                             //     V4_SRC
        8, 0, 2, 0, 10, 97, 0, 1,                             //     V4_DST
        28, 0, 2, 128,                                        //   CTA_TUPLE_PROTO
        5, 0, 1, 0, 17, 0, 0, 0,                              //     NUM udp
        6, 0, 2, 0, 218, 47, 0, 0,                            //     SRC_PORT 55855
        6, 0, 3, 0, 20, 233, 0, 0,                            //     DST_PORT 5353
        52, 0, 2, 128,                                        // CTA_TUPLE_REPLY
        20, 0, 1, 128,
        8, 0, 1, 0, 10, 97, 0, 1,
        8, 0, 2, 0, 10, 97, 0, 2,
        28, 0, 2, 128,
        5, 0, 1, 0, 17, 0, 0, 0,
        6, 0, 2, 0, 27, 88, 0, 0,                             //     SRC_PORT 7000
        6, 0, 3, 0, 218, 47, 0, 0,
        8, 0, 3, 0, 0, 0, 1, 168,                             // CTA_STATUS
        8, 0, 8, 0, 0, 0, 0, 0,                               // CTA_MARK
        8, 0, 12, 0, 206, 77, 230, 142,                       // CTA_ID
        8, 0, 11, 0, 0, 0, 0, 1,                              // CTA_USE
        8, 0, 7, 0, 0, 0, 0, 29,                              // CTA_TIMEOUT
    ];

    fn wanted(proto: u8, port: u16, daddr: Option<[u8; 4]>) -> Wanted {
        Wanted {
            proto,
            port,
            daddr: daddr.map(Ipv4Addr::from),
        }
    }

    /// (type, flags, seq, nfgenmsg + attributes) of each message.
    fn split(datagram: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
        messages(datagram)
            .map(|m| {
                let flags = u16::from_ne_bytes([m.whole[6], m.whole[7]]);
                (m.kind, flags, m.seq, &m.whole[16..])
            })
            .collect()
    }

    fn ack(seq: u32, code: i32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&36u32.to_ne_bytes());
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&code.to_ne_bytes());
        out.extend_from_slice(&[0; 16]);
        out
    }

    #[test]
    fn the_dump_asks_the_kernel_to_filter_on_protocol_and_port() {
        let request = dump_request(&wanted(UDP, 5353, None), 7, true);
        let msgs = split(&request);
        assert_eq!(msgs.len(), 1);
        let (kind, flags, seq, body) = msgs[0];
        assert_eq!(kind, 0x0101, "ctnetlink, IPCTNL_MSG_CT_GET");
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(seq, 7);
        let filter_flags = (8u32 | 32).to_ne_bytes();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            2, 0, 0, 0,                     // nfgenmsg: AF_INET, v0
            24, 0, 1, 0x80,                 // CTA_TUPLE_ORIG
            20, 0, 2, 0x80,                 //   CTA_TUPLE_PROTO
            5, 0, 1, 0, 17, 0, 0, 0,        //     NUM
            6, 0, 3, 0, 0x14, 0xe9, 0, 0,   //     DST_PORT 5353, big-endian
            12, 0, 25, 0x80,                // CTA_FILTER
            8, 0, 1, 0,                     //   ORIG_FLAGS: PROTO_NUM | PROTO_DST_PORT
        ];
        assert_eq!(&body[..expected.len()], expected);
        assert_eq!(&body[expected.len()..], filter_flags);
    }

    #[test]
    fn an_address_adds_the_destination_to_the_filter() {
        let request = dump_request(&wanted(TCP, 80, Some([10, 0, 0, 1])), 1, true);
        let body = split(&request)[0].3;
        #[rustfmt::skip]
        let expected: &[u8] = &[
            2, 0, 0, 0,
            36, 0, 1, 0x80,                 // CTA_TUPLE_ORIG
            12, 0, 1, 0x80,                 //   CTA_TUPLE_IP
            8, 0, 2, 0, 10, 0, 0, 1,        //     V4_DST
            20, 0, 2, 0x80,                 //   CTA_TUPLE_PROTO
            5, 0, 1, 0, 6, 0, 0, 0,
            6, 0, 3, 0, 0, 80, 0, 0,
            12, 0, 25, 0x80,
            8, 0, 1, 0,
        ];
        assert_eq!(&body[..expected.len()], expected);
        assert_eq!(&body[expected.len()..], (2u32 | 8 | 32).to_ne_bytes());
    }

    #[test]
    fn the_unfiltered_dump_is_every_ipv4_entry() {
        let request = dump_request(&wanted(UDP, 5353, None), 3, false);
        assert_eq!(
            split(&request),
            [(0x0101, NLM_F_REQUEST | NLM_F_DUMP, 3, &[2, 0, 0, 0][..])]
        );
    }

    #[test]
    fn a_dumped_entry_is_deleted_by_its_own_tuple_and_id() {
        let body = &DUMPED[16..];
        let attrs = delete_attrs_if_wanted(body, &wanted(UDP, 5353, None)).unwrap();
        // The original tuple exactly as dumped, then CTA_ID.
        let expected = [&DUMPED[20..72], &[8, 0, 12, 0, 206, 77, 230, 142][..]].concat();
        assert_eq!(attrs, expected);
        assert_eq!(
            delete_attrs_if_wanted(body, &wanted(UDP, 5353, Some([10, 97, 0, 1]))),
            Some(expected)
        );
        assert_eq!(
            OrigTuple::parse(&DUMPED[24..72]),
            OrigTuple {
                daddr: Some(Ipv4Addr::new(10, 97, 0, 1)),
                proto: Some(UDP),
                dport: Some(5353),
            }
        );
    }

    #[test]
    fn other_entries_are_left_alone() {
        let body = &DUMPED[16..];
        for other in [
            wanted(UDP, 5354, None),
            wanted(UDP, 7000, None), // the port after DNAT
            wanted(TCP, 5353, None),
            wanted(UDP, 5353, Some([10, 97, 0, 2])),
        ] {
            assert_eq!(delete_attrs_if_wanted(body, &other), None, "{other:?}");
        }
        let mut ipv6 = body.to_vec();
        ipv6[0] = libc::AF_INET6 as u8;
        assert_eq!(
            delete_attrs_if_wanted(&ipv6, &wanted(UDP, 5353, None)),
            None
        );
        // Cut short in the tuple: no delete, no panic.
        for len in 0..56 {
            assert_eq!(
                delete_attrs_if_wanted(&body[..len], &wanted(UDP, 5353, None)),
                None,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn an_entry_in_a_zone_is_deleted_in_its_zone() {
        let mut body = DUMPED[16..].to_vec();
        body.extend_from_slice(&[6, 0, 18, 0, 0, 5, 0, 0]); // CTA_ZONE 5
        let attrs = delete_attrs_if_wanted(&body, &wanted(UDP, 5353, None)).unwrap();
        assert_eq!(
            &attrs[52..],
            [6, 0, 18, 0, 0, 5, 0, 0, 8, 0, 12, 0, 206, 77, 230, 142]
        );
    }

    #[test]
    fn deletes_are_numbered_messages_that_ask_for_acks() {
        let a = vec![1u8, 2, 3, 4];
        let b = vec![5u8, 6, 7, 8, 9, 10, 11, 12];
        let request = delete_requests(&[a, b], 41);
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        assert_eq!(
            split(&request),
            [
                (0x0102, flags, 41, &[2, 0, 0, 0, 1, 2, 3, 4][..]),
                (
                    0x0102,
                    flags,
                    42,
                    &[2, 0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12][..]
                ),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "needs a tuple")]
    fn a_delete_without_a_tuple_is_never_sent() {
        // It would flush the whole table.
        delete_requests(&[Vec::new()], 1);
    }

    #[test]
    fn an_entry_gone_since_the_dump_is_not_an_error() {
        let mut acks = Acks::new(10, 3);
        acks.read(&[ack(9, -libc::EPERM), ack(10, 0), ack(11, -libc::ENOENT)].concat());
        assert!(!acks.complete());
        acks.read(&ack(12, 0));
        assert!(acks.complete());
        assert_eq!(acks.result().unwrap(), 2);
    }

    #[test]
    fn other_errors_and_missing_acks_are() {
        let mut acks = Acks::new(1, 2);
        acks.read(&[ack(1, -libc::EPERM), ack(2, 0)].concat());
        assert!(acks.result().unwrap_err().is(libc::EPERM));
        let mut acks = Acks::new(1, 2);
        acks.read(&ack(1, 0));
        assert!(matches!(acks.result(), Err(NetlinkError::Decode(_))));
    }
}
