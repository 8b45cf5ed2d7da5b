//! IPv4 + UDP framing for DHCP on a packet socket. Before it holds an
//! address a client cannot use a UDP socket (the kernel has no source to send
//! from and drops replies to an address it does not own), so the exchange
//! runs on AF_PACKET, which carries whole IP packets.

use std::net::Ipv4Addr;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;
const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;

/// An IPv4/UDP packet from the client port to the server port.
pub fn frame(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = IP_HEADER + UDP_HEADER + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; TOS low delay
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, no fragments
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = checksum(&p[..IP_HEADER]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp_len = (UDP_HEADER + payload.len()) as u16;
    p.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    p.extend_from_slice(&SERVER_PORT.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // UDP checksum over the pseudo-header (RFC 768); 0 would mean "none",
    // which some middleboxes reject.
    let mut pseudo = Vec::with_capacity(12 + udp_len as usize);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&p[IP_HEADER..]);
    let sum = match checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    p[IP_HEADER + 6..IP_HEADER + 8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The UDP payload of an unfragmented IPv4 packet to the client port.
pub fn unframe(p: &[u8]) -> Option<&[u8]> {
    if p.len() < IP_HEADER || p[0] >> 4 != 4 || p[9] != 17 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let flags_frag = u16::from_be_bytes([p[6], p[7]]);
    if ihl < IP_HEADER || flags_frag & 0x3fff != 0 {
        return None; // fragments: a DHCP reply fits one packet
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let udp = p.get(ihl..total)?;
    if udp.len() < UDP_HEADER || u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    udp.get(UDP_HEADER..len.max(UDP_HEADER).min(udp.len()))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A classic BPF program for a packet socket (network header at offset 0)
/// that keeps only unfragmented UDP to port 68, so the client wakes up for
/// DHCP and nothing else the LAN carries.
pub fn client_port_filter() -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    use libc::{
        BPF_ABS, BPF_B, BPF_H, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_LDX,
        BPF_MSH, BPF_RET,
    };
    vec![
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, 9),        // protocol
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 5, 17),      // UDP?
        op(BPF_LD | BPF_H | BPF_ABS, 0, 0, 6),        // flags + offset
        op(BPF_JMP | BPF_JSET | BPF_K, 3, 0, 0x1fff), // fragment: drop
        op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0),       // X = header length
        op(BPF_LD | BPF_H | BPF_IND, 0, 0, 2),        // destination port
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, u32::from(CLIENT_PORT)),
        op(BPF_RET | BPF_K, 0, 0, u32::MAX),
        op(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_checksums_verify() {
        let src = Ipv4Addr::UNSPECIFIED;
        let dst = Ipv4Addr::BROADCAST;
        let mut p = frame(src, dst, b"hello dhcp");
        assert_eq!(checksum(&p[..IP_HEADER]), 0, "IP header checksum");
        // A reply goes the other way: swap the ports and read it back.
        p[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
        p[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        assert_eq!(unframe(&p), Some(&b"hello dhcp"[..]));
    }

    #[test]
    fn unframe_rejects_what_is_not_for_the_client() {
        let p = frame(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"x");
        assert_eq!(unframe(&p), None, "to the server port");
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert_eq!(unframe(&tcp), None);
        let mut frag = p.clone();
        frag[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
        frag[6] = 0x20; // more fragments
        assert_eq!(unframe(&frag), None);
        assert_eq!(unframe(&p[..10]), None, "truncated");
    }
}
