//! DHCPv4 messages a client sends (RFC 2131 §4.4, table 5) and what it
//! takes from the server's replies. Pure: no sockets, no clock.

use std::net::Ipv4Addr;

use dhcproto::v4::fqdn::{ClientFQDN, FqdnFlags};
use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable, Name};
use ipnet::Ipv4Net;

use super::lease::Lease;

/// Who the client is to the LAN: stable across re-attaches of the same
/// container, so the server hands back the same address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub mac: [u8; 6],
    pub client_id: Vec<u8>,
    pub hostname: String,
    /// `hostname.domain` when the network has a DNS domain.
    pub fqdn: Option<String>,
    /// The interface shares its MAC with others (ipvlan): replies must be
    /// broadcast, a unicast one would not find it.
    pub shared_mac: bool,
}

/// Which exchange a REQUEST belongs to; each fills the fields differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// After an OFFER: names the server and the offered address.
    Selecting { server: Ipv4Addr, offered: Ipv4Addr },
    /// Re-using a known address after a restart (no server named).
    InitReboot { address: Ipv4Addr },
    /// Unicast to the server that gave the lease.
    Renewing { address: Ipv4Addr },
    /// Broadcast to any server, after T2.
    Rebinding { address: Ipv4Addr },
}

/// The options the client asks for (option 55).
const WANTED: [OptionCode; 9] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::InterfaceMtu,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
    OptionCode::ClasslessStaticRoute,
];

fn base(id: &Identity, xid: u32, kind: MessageType) -> Message {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_xid(xid)
        .set_chaddr(&id.mac);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClientIdentifier(id.client_id.clone()));
    opts.insert(DhcpOption::MaxMessageSize(1500));
    if kind != MessageType::Release {
        // Option 12 has at least one byte (RFC 2132 §3.14): no name, no option.
        if !id.hostname.is_empty() {
            opts.insert(DhcpOption::Hostname(id.hostname.clone()));
        }
        if let Some(name) = id.fqdn.as_deref().and_then(|f| Name::from_ascii(f).ok()) {
            // S: the server does the DNS updates; E: canonical wire format.
            let flags = FqdnFlags::default().set_s(true).set_e(true);
            opts.insert(DhcpOption::ClientFQDN(ClientFQDN::new(flags, name)));
        }
        opts.insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
    }
    msg
}

/// DISCOVER. The broadcast flag stays clear: the client reads its packet
/// socket, which sees a reply unicast to the offered address before the
/// interface holds it, and a LAN with a thousand macvlan children is
/// spared a thousand copies of every reply.
pub fn discover(id: &Identity, xid: u32) -> Vec<u8> {
    let mut msg = base(id, xid, MessageType::Discover);
    if id.shared_mac {
        msg.set_flags(Flags::default().set_broadcast());
    }
    encode(&msg)
}

pub fn request(id: &Identity, xid: u32, kind: RequestKind) -> Vec<u8> {
    let mut msg = base(id, xid, MessageType::Request);
    match kind {
        RequestKind::Selecting { server, offered } => {
            if id.shared_mac {
                msg.set_flags(Flags::default().set_broadcast());
            }
            msg.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offered));
            msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
        }
        RequestKind::InitReboot { address } => {
            if id.shared_mac {
                msg.set_flags(Flags::default().set_broadcast());
            }
            msg.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(address));
        }
        RequestKind::Renewing { address } | RequestKind::Rebinding { address } => {
            msg.set_ciaddr(address);
        }
    }
    encode(&msg)
}

pub fn release(id: &Identity, xid: u32, lease: &Lease) -> Vec<u8> {
    let mut msg = base(id, xid, MessageType::Release);
    msg.set_ciaddr(lease.address.addr());
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(lease.server));
    encode(&msg)
}

fn encode(msg: &Message) -> Vec<u8> {
    // Encoding a message built from valid typed options cannot fail.
    msg.to_vec().unwrap_or_default()
}

/// A server's reply to this client's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Offer {
        server: Ipv4Addr,
        offered: Ipv4Addr,
    },
    Ack(Lease),
    Nak {
        server: Option<Ipv4Addr>,
        message: Option<String>,
    },
}

impl Reply {
    /// Whether the reply comes from `server` (a NAK without a server
    /// identifier is taken as its own).
    pub fn from(&self, server: Ipv4Addr) -> bool {
        match self {
            Reply::Offer { server: s, .. } => *s == server,
            Reply::Ack(lease) => lease.server == server,
            Reply::Nak { server: s, .. } => s.is_none_or(|s| s == server),
        }
    }
}

/// Parse a datagram; None when it is not a reply to `xid` for `mac` (other
/// clients' traffic, garbage) or lacks what a usable lease needs.
pub fn parse_reply(data: &[u8], xid: u32, mac: &[u8; 6], now: u64) -> Option<Reply> {
    let shape = well_formed(data)?;
    let msg = Message::from_bytes(data).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || msg.chaddr().get(..6)? != mac {
        return None;
    }
    let opts = msg.opts();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    };
    match opts.msg_type()? {
        MessageType::Offer => Some(Reply::Offer {
            server: server?,
            offered: msg.yiaddr(),
        }),
        MessageType::Ack => lease_from_ack(&msg, server?, now, shape.routes_ok).map(Reply::Ack),
        MessageType::Nak => Some(Reply::Nak {
            server,
            message: match opts.get(OptionCode::Message) {
                Some(DhcpOption::Message(m)) => Some(m.clone()),
                _ => None,
            },
        }),
        _ => None,
    }
}

/// Where the options start: after the fixed BOOTP fields (236 bytes) and
/// the magic cookie.
const OPTIONS_AT: usize = 240;

/// Whether a datagram's hardware address length fits its field and every
/// option lies inside it with a length its code allows; a reply that fails
/// is dropped whole. The decoder trusts these lengths: a `hlen` above 16
/// makes it slice past its 16-byte `chaddr`, and its debug assertions and
/// the subtraction it makes from some option lengths panic, which would
/// abort the daemon on one bad byte from any host of the LAN. plumb reads
/// the options whose lengths it knows.
fn well_formed(data: &[u8]) -> Option<Shape> {
    const HLEN: usize = 2;
    const SNAME: std::ops::Range<usize> = 44..108;
    const FILE: std::ops::Range<usize> = 108..236;
    if *data.get(HLEN)? > 16 {
        return None;
    }
    let mut shape = walk_options(data.get(OPTIONS_AT..)?)?;
    // Option 52: the `file` (1), `sname` (2) or both (3) fields hold
    // options too.
    let also = match shape.overload {
        None | Some(0) => Vec::new(),
        Some(1) => vec![FILE],
        Some(2) => vec![SNAME],
        Some(3) => vec![FILE, SNAME],
        Some(_) => return None,
    };
    for r in also {
        let more = walk_options(&data[r])?;
        if more.overload.is_some() {
            return None;
        }
        shape.routes_ok &= more.routes_ok;
    }
    Some(shape)
}

/// What the walk over a reply's options found.
struct Shape {
    /// The overload option's value, if there is one.
    overload: Option<u8>,
    /// Option 121, if there, is a list of whole routes with prefixes of at
    /// most 32 bits (RFC 3442: a client ignores an ill-formed one whole).
    routes_ok: bool,
}

/// Whether option 121's value is whole routes: a prefix length, the
/// prefix's significant bytes, a gateway; and nothing left over.
fn classless_routes_ok(mut v: &[u8]) -> bool {
    while let Some((&prefix, rest)) = v.split_first() {
        let dest = usize::from(prefix).div_ceil(8);
        if prefix > 32 || rest.len() < dest + 4 {
            return false;
        }
        v = &rest[dest + 4..];
    }
    true
}

/// Walk one options area; None when an option is malformed.
fn walk_options(area: &[u8]) -> Option<Shape> {
    let mut shape = Shape {
        overload: None,
        routes_ok: true,
    };
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*area.get(i + 1)?);
        let value = area.get(i + 2..i + 2 + len)?;
        let ok = match code {
            // Router, DNS servers: addresses.
            3 | 6 => len >= 4 && len % 4 == 0,
            // Mask, lease time, server identifier, T1, T2, and times
            // of the bulk leasequery (152 to 155).
            1 | 51 | 54 | 58 | 59 | 152..=155 => len == 4,
            // MTU.
            26 => len == 2,
            // Message type, overload.
            52 | 53 => len == 1,
            // Rapid commit.
            80 => len == 0,
            // Client FQDN: flags and two RCODEs before the name.
            81 => len >= 3,
            // Client network interface identifier.
            94 => len == 3,
            // Classless routes: a prefix length and a gateway at least;
            // leasequery status: a code.
            121 => len >= 5,
            151 => len >= 1,
            _ => true,
        };
        if !ok {
            return None;
        }
        match code {
            52 => shape.overload = Some(value[0]),
            121 => shape.routes_ok &= classless_routes_ok(value),
            _ => {}
        }
        i += 2 + len;
    }
    Some(shape)
}

/// The shortest lease and renewal time plumb takes: a server saying 0
/// would otherwise start an acquire-apply-drop loop with no pause.
const MIN_LEASE_SECS: u32 = 4;
const MIN_RENEW_SECS: u32 = 1;

/// Whether `address` in `subnet` may be a host's own: not unspecified,
/// loopback, multicast, reserved (240/4, the broadcast address), nor the
/// subnet's network or broadcast address (below /31).
fn usable_address(subnet: Ipv4Net) -> bool {
    let a = subnet.addr();
    let edge = subnet.prefix_len() < 31 && (a == subnet.network() || a == subnet.broadcast());
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240 || edge)
}

fn lease_from_ack(msg: &Message, server: Ipv4Addr, now: u64, routes_ok: bool) -> Option<Lease> {
    let opts = msg.opts();
    let address = msg.yiaddr();
    let mask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => *m,
        // No mask: the class default is long dead; a host route is safe.
        _ => Ipv4Addr::BROADCAST,
    };
    // A mask with holes (255.0.255.0) is no subnet.
    let bits = u32::from(mask);
    if bits.leading_ones() + bits.trailing_zeros() != 32 && bits != 0 {
        tracing::warn!(%server, %mask, "a DHCP server sent a subnet mask that is not one");
        return None;
    }
    let prefix = bits.leading_ones() as u8;
    let subnet = Ipv4Net::new(address, prefix).ok()?;
    if !usable_address(subnet) {
        tracing::warn!(%server, %subnet, "a DHCP server offered an address no host may have");
        return None;
    }
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => (*t).max(MIN_LEASE_SECS),
        _ => return None,
    };
    let get_u32 = |code| match opts.get(code) {
        Some(DhcpOption::Renewal(t)) | Some(DhcpOption::Rebinding(t)) => Some(*t),
        _ => None,
    };
    // T1 < T2 < lease (RFC 2131 §4.4.5): a time out of that order is
    // replaced by its default.
    let renew_secs = match get_u32(OptionCode::Renewal) {
        Some(t) if t < lease_secs => t,
        _ => lease_secs / 2,
    }
    .max(MIN_RENEW_SECS);
    let rebind_secs = match get_u32(OptionCode::Rebinding) {
        Some(t) if t < lease_secs && t >= renew_secs => t,
        _ => ((u64::from(lease_secs) * 7 / 8) as u32).max(renew_secs),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.first().copied(),
        _ => None,
    };
    let routes = match opts.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(r)) if routes_ok => r.clone(),
        Some(_) => {
            tracing::warn!(%server, "a DHCP server sent ill-formed classless routes (option 121); ignored");
            Vec::new()
        }
        None => Vec::new(),
    };
    Some(Lease {
        address: subnet,
        server,
        router,
        routes,
        dns: match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => Vec::new(),
        },
        domain: match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) => Some(d.trim_end_matches('.').to_string()),
            _ => None,
        },
        mtu: match opts.get(OptionCode::InterfaceMtu) {
            Some(DhcpOption::InterfaceMtu(m)) if *m >= 68 => Some(*m),
            _ => None,
        },
        lease_secs,
        renew_secs: renew_secs.min(rebind_secs),
        rebind_secs: rebind_secs.min(lease_secs),
        acquired_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            mac: [2, 0, 0, 0, 0, 1],
            client_id: b"\x00plumb-test".to_vec(),
            hostname: "web".into(),
            fqdn: Some("web.app.example.com".into()),
            shared_mac: false,
        }
    }

    fn reply(kind: MessageType, xid: u32, opts: Vec<DhcpOption>) -> Vec<u8> {
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_chaddr(&id().mac)
            .set_yiaddr(Ipv4Addr::new(192, 168, 5, 20));
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 168, 5, 1)));
        for o in opts {
            msg.opts_mut().insert(o);
        }
        msg.to_vec().unwrap()
    }

    #[test]
    fn discover_carries_identity_and_asks_for_routes() {
        let msg = Message::from_bytes(&discover(&id(), 7)).unwrap();
        assert_eq!(msg.xid(), 7);
        assert!(!msg.flags().broadcast(), "replies may be unicast");
        let shared = Identity {
            shared_mac: true,
            ..id()
        };
        let msg = Message::from_bytes(&discover(&shared, 7)).unwrap();
        assert!(
            msg.flags().broadcast(),
            "an ipvlan's replies must be broadcast"
        );
        let o = msg.opts();
        assert_eq!(o.msg_type(), Some(MessageType::Discover));
        assert_eq!(
            o.get(OptionCode::Hostname),
            Some(&DhcpOption::Hostname("web".into()))
        );
        assert!(
            matches!(o.get(OptionCode::ClientFQDN), Some(DhcpOption::ClientFQDN(f)) if f.domain().to_ascii().starts_with("web.app.example.com"))
        );
        assert!(
            matches!(o.get(OptionCode::ParameterRequestList), Some(DhcpOption::ParameterRequestList(l)) if l.contains(&OptionCode::ClasslessStaticRoute))
        );
        let nameless = Identity {
            hostname: String::new(),
            fqdn: None,
            ..id()
        };
        let msg = Message::from_bytes(&discover(&nameless, 7)).unwrap();
        assert_eq!(
            msg.opts().get(OptionCode::Hostname),
            None,
            "an empty option 12 is malformed"
        );
    }

    #[test]
    fn requests_follow_rfc2131_table_5() {
        let a = Ipv4Addr::new(192, 168, 5, 20);
        let s = Ipv4Addr::new(192, 168, 5, 1);
        let sel = Message::from_bytes(&request(
            &id(),
            1,
            RequestKind::Selecting {
                server: s,
                offered: a,
            },
        ))
        .unwrap();
        assert_eq!(sel.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(sel.opts().get(OptionCode::ServerIdentifier).is_some());
        assert!(sel.opts().get(OptionCode::RequestedIpAddress).is_some());
        let renew =
            Message::from_bytes(&request(&id(), 2, RequestKind::Renewing { address: a })).unwrap();
        assert_eq!(renew.ciaddr(), a);
        assert!(renew.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(renew.opts().get(OptionCode::RequestedIpAddress).is_none());
        let reboot =
            Message::from_bytes(&request(&id(), 3, RequestKind::InitReboot { address: a }))
                .unwrap();
        assert_eq!(reboot.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(reboot.opts().get(OptionCode::ServerIdentifier).is_none());
    }

    #[test]
    fn ack_becomes_a_lease_with_routes_and_timers() {
        let data = reply(
            MessageType::Ack,
            9,
            vec![
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                DhcpOption::AddressLeaseTime(600),
                DhcpOption::Router(vec![Ipv4Addr::new(192, 168, 5, 1)]),
                DhcpOption::DomainNameServer(vec![Ipv4Addr::new(192, 168, 5, 53)]),
                DhcpOption::DomainName("app.example.com".into()),
                DhcpOption::InterfaceMtu(1400),
                DhcpOption::ClasslessStaticRoute(vec![(
                    "10.9.0.0/16".parse().unwrap(),
                    Ipv4Addr::new(192, 168, 5, 254),
                )]),
            ],
        );
        let Some(Reply::Ack(l)) = parse_reply(&data, 9, &id().mac, 1000) else {
            panic!("not an ack")
        };
        assert_eq!(l.address, "192.168.5.20/24".parse::<Ipv4Net>().unwrap());
        assert_eq!((l.renew_secs, l.rebind_secs, l.lease_secs), (300, 525, 600));
        assert_eq!(l.mtu, Some(1400));
        assert_eq!(l.domain.as_deref(), Some("app.example.com"));
        assert_eq!(l.routes.len(), 1);
        assert_eq!(l.renew_at(), 1300);
        assert_eq!(l.expires_at(), 1600);
    }

    #[test]
    fn replies_to_other_transactions_or_clients_are_ignored() {
        let data = reply(MessageType::Offer, 9, vec![]);
        assert!(parse_reply(&data, 10, &id().mac, 0).is_none());
        assert!(parse_reply(&data, 9, &[2, 0, 0, 0, 0, 2], 0).is_none());
        assert!(parse_reply(b"garbage", 9, &id().mac, 0).is_none());
        assert_eq!(
            parse_reply(&data, 9, &id().mac, 0),
            Some(Reply::Offer {
                server: Ipv4Addr::new(192, 168, 5, 1),
                offered: Ipv4Addr::new(192, 168, 5, 20)
            })
        );
        // An ACK without a lease time is not a usable lease.
        let ack = reply(MessageType::Ack, 9, vec![]);
        assert!(parse_reply(&ack, 9, &id().mac, 0).is_none());
    }

    fn ack_with(yiaddr: [u8; 4], mask: [u8; 4], lease: u32, renew: Option<u32>) -> Option<Lease> {
        let mut msg = Message::from_bytes(&reply(MessageType::Ack, 9, vec![])).unwrap();
        msg.set_yiaddr(Ipv4Addr::from(yiaddr));
        let o = msg.opts_mut();
        o.insert(DhcpOption::SubnetMask(mask.into()));
        o.insert(DhcpOption::AddressLeaseTime(lease));
        if let Some(t) = renew {
            o.insert(DhcpOption::Renewal(t));
        }
        match parse_reply(&msg.to_vec().unwrap(), 9, &id().mac, 0) {
            Some(Reply::Ack(l)) => Some(l),
            _ => None,
        }
    }

    #[test]
    fn a_reply_is_known_by_its_server() {
        let us = Ipv4Addr::new(192, 168, 5, 1);
        let rogue = Ipv4Addr::new(192, 168, 5, 66);
        let l = ack_with([192, 168, 5, 20], [255, 255, 255, 0], 600, None).unwrap();
        assert!(Reply::Ack(l.clone()).from(us));
        assert!(!Reply::Ack(l).from(rogue));
        let nak = |server| Reply::Nak {
            server,
            message: None,
        };
        assert!(nak(None).from(us) && nak(Some(us)).from(us) && !nak(Some(rogue)).from(us));
    }

    #[test]
    fn an_address_no_host_may_have_is_refused() {
        let m24 = [255, 255, 255, 0];
        for bad in [
            [0, 0, 0, 0],
            [192, 168, 5, 0],
            [192, 168, 5, 255],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [240, 0, 0, 1],
            [255, 255, 255, 255],
        ] {
            assert_eq!(ack_with(bad, m24, 600, None), None, "{bad:?}");
        }
        assert!(ack_with([192, 168, 5, 20], m24, 600, None).is_some());
        // On a /31 both addresses are hosts' (RFC 3021).
        assert!(ack_with([10, 0, 0, 0], [255, 255, 255, 254], 600, None).is_some());
    }

    #[test]
    fn lease_and_renewal_times_have_a_floor() {
        let l = ack_with([192, 168, 5, 20], [255, 255, 255, 0], 0, Some(0)).unwrap();
        assert_eq!(l.lease_secs, MIN_LEASE_SECS);
        assert!(l.renew_secs >= MIN_RENEW_SECS);
        assert!(l.renew_secs <= l.rebind_secs && l.rebind_secs <= l.lease_secs);
        // A T1 past the lease's end is the default T1 instead.
        let l = ack_with([192, 168, 5, 20], [255, 255, 255, 0], 600, Some(5000)).unwrap();
        assert_eq!((l.renew_secs, l.rebind_secs), (300, 525));
        let l = ack_with([192, 168, 5, 20], [255, 255, 255, 0], 600, Some(100)).unwrap();
        assert_eq!((l.renew_secs, l.rebind_secs), (100, 525));
    }
}
