//! What plumb's DNS answers on a network with `serve_dns`: the names of the
//! network's attachments (a container's name, its aliases) with their
//! addresses, and the reverse; a single-label name it does not know, or a
//! name in the network's domain, does not exist; anything else is the
//! host's resolvers' to answer. Names are the network's alone, as Docker's
//! and Podman's are: a container on two networks answers on each with what
//! it has there.
//!
//! Answers carry a TTL of 0: a container started again has another address,
//! and nothing should remember the old one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use ipnet::IpNet;

use crate::model::{Attachment, Network};

/// The largest answer over UDP for a client that did not say (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// What plumb offers in EDNS (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;

/// The addresses of the host a container on `net` asks: those of the
/// families the attachment has.
pub fn servers(net: &Network, a: &Attachment) -> Vec<IpAddr> {
    net.host_addresses
        .iter()
        .map(IpNet::addr)
        .filter(|h| {
            a.addresses
                .iter()
                .any(|x| x.addr().is_ipv4() == h.is_ipv4())
        })
        .collect()
}

/// One network's names.
#[derive(Debug, Default)]
pub struct Zone {
    /// In lower case, without the root's dot.
    domain: Option<String>,
    subnets: Vec<IpNet>,
    by_name: HashMap<String, Vec<IpAddr>>,
    by_addr: HashMap<IpAddr, String>,
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send this back.
    Answer(Vec<u8>),
    /// Ask the host's resolvers, and send back what they say.
    Forward,
    /// Not a query: say nothing.
    Ignore,
}

impl Zone {
    pub fn new<'a>(net: &Network, attachments: impl IntoIterator<Item = &'a Attachment>) -> Zone {
        let mut zone = Zone {
            domain: net.domain.as_ref().map(|d| d.to_ascii_lowercase()),
            subnets: net.subnets.iter().map(|s| s.subnet).collect(),
            ..Zone::default()
        };
        for a in attachments {
            for name in &a.names {
                let addrs = zone.by_name.entry(name.clone()).or_default();
                addrs.extend(a.addresses.iter().map(IpNet::addr));
            }
            if let Some(first) = a.names.first() {
                for addr in &a.addresses {
                    zone.by_addr
                        .entry(addr.addr())
                        .or_insert_with(|| first.clone());
                }
            }
        }
        zone
    }

    /// The answer to `query` (a DNS message as received over UDP if
    /// `udp`, else over TCP).
    pub fn reply(&self, query: &[u8], udp: bool) -> Reply {
        let msg = match Message::from_vec(query) {
            Ok(m) => m,
            // A header at least: say it could not be read.
            Err(_) if query.len() >= 12 && query[2] & 0x80 == 0 => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                return encode(&Message::error_msg(
                    id,
                    OpCode::Query,
                    ResponseCode::FormErr,
                ));
            }
            Err(_) => return Reply::Ignore,
        };
        if msg.metadata.message_type != MessageType::Query {
            return Reply::Ignore;
        }
        let mut out = Message::response(msg.metadata.id, msg.metadata.op_code);
        out.metadata.recursion_desired = msg.metadata.recursion_desired;
        out.metadata.recursion_available = true;
        if msg.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            out.set_edns(edns);
        }
        if msg.metadata.op_code != OpCode::Query {
            out.metadata.response_code = ResponseCode::NotImp;
            return encode(&out);
        }
        let [q] = msg.queries.as_slice() else {
            out.metadata.response_code = ResponseCode::FormErr;
            return encode(&out);
        };
        out.add_query(q.clone());
        if q.query_class() != DNSClass::IN {
            return Reply::Forward;
        }
        let qname = q.name().to_lowercase();
        let name = qname.to_ascii();
        let name = name.trim_end_matches('.');
        if q.query_type() == RecordType::PTR
            && let Ok(net) = qname.parse_arpa_name()
            && net.prefix_len() == net.max_prefix_len()
        {
            let addr = net.addr();
            match self.by_addr.get(&addr) {
                Some(n) => {
                    let target = self.fqdn(n);
                    let Some(target) = target else {
                        return Reply::Forward;
                    };
                    out.metadata.authoritative = true;
                    out.add_answer(Record::from_rdata(
                        q.name().clone(),
                        0,
                        RData::PTR(PTR(target)),
                    ));
                }
                None if self.subnets.iter().any(|s| s.contains(&addr)) => {
                    out.metadata.authoritative = true;
                    out.metadata.response_code = ResponseCode::NXDomain;
                }
                None => return Reply::Forward,
            }
            return self.fit(out, udp, msg.max_payload());
        }
        let in_domain = self
            .domain
            .as_ref()
            .and_then(|d| name.strip_suffix(d.as_str()))
            .and_then(|n| n.strip_suffix('.'));
        let found = self
            .by_name
            .get(name)
            .or_else(|| in_domain.and_then(|n| self.by_name.get(n)));
        match found {
            Some(addrs) => {
                out.metadata.authoritative = true;
                for addr in addrs {
                    let rdata = match (addr, q.query_type()) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                            RData::AAAA(AAAA(*v6))
                        }
                        _ => continue,
                    };
                    out.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
                }
            }
            // A short name is a container's or nothing; the domain is ours.
            None if !name.contains('.')
                || in_domain.is_some()
                || Some(name) == self.domain.as_deref() =>
            {
                out.metadata.authoritative = true;
                out.metadata.response_code = ResponseCode::NXDomain;
            }
            None => return Reply::Forward,
        }
        self.fit(out, udp, msg.max_payload())
    }

    /// `name` as a PTR record's target: in the network's domain if it has
    /// one.
    fn fqdn(&self, name: &str) -> Option<Name> {
        let full = match &self.domain {
            Some(d) => format!("{name}.{d}."),
            None => format!("{name}."),
        };
        Name::from_ascii(full).ok()
    }

    /// An answer too big for the client's UDP loses its records and says
    /// so (TC): the client asks again over TCP.
    fn fit(&self, out: Message, udp: bool, max_payload: u16) -> Reply {
        let Reply::Answer(bytes) = encode(&out) else {
            return Reply::Ignore;
        };
        let limit = match out.edns {
            Some(_) => usize::from(max_payload.clamp(512, EDNS_PAYLOAD)),
            None => CLASSIC_UDP,
        };
        if !udp || bytes.len() <= limit {
            return Reply::Answer(bytes);
        }
        let mut cut = out;
        cut.answers.clear();
        cut.metadata.truncation = true;
        encode(&cut)
    }
}

/// SERVFAIL for `query`: none of the host's resolvers answered.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut out = Message::response(msg.metadata.id, msg.metadata.op_code);
    out.metadata.recursion_desired = msg.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.metadata.response_code = ResponseCode::ServFail;
    out.add_queries(msg.queries);
    out.to_vec().ok()
}

fn encode(m: &Message) -> Reply {
    match m.to_vec() {
        Ok(b) => Reply::Answer(b),
        Err(_) => Reply::Ignore,
    }
}

/// The host's resolvers, from resolv.conf's text: every `nameserver` but
/// plumb's own addresses (which would ask themselves).
pub fn upstreams(resolv_conf: &str, own: &[IpAddr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        // A link-local IPv6 server carries its interface (`fe80::1%eth0`):
        // not one plumb can name here.
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|ip| !own.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mac, NetworkSpec};
    use hickory_proto::op::Query;

    fn network(domain: Option<&str>) -> Network {
        NetworkSpec {
            name: "app".into(),
            driver: "bridge".into(),
            subnet: vec!["10.70.0.0/24".into(), "fd70::/64".into()],
            serve_dns: true,
            domain: domain.map(str::to_string),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn attachment(names: &[&str], addrs: &[&str]) -> Attachment {
        Attachment {
            network: "app".into(),
            target: "t".into(),
            netns: "ns:1:2".into(),
            netns_cookie: None,
            ifname: "eth0".into(),
            host_ifname: "pv-x".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            gateways: Vec::new(),
            routes: Vec::new(),
            mtu: 1500,
            default_route: Default::default(),
            device_default_route: false,
            replaced_defaults: Vec::new(),
            host_addresses: Vec::new(),
            dhcp: None,
            publish: Vec::new(),
            rate: None,
            labels: Default::default(),
            allow_spoofing: false,
            egress: None,
            container: None,
            process: None,
            cni: None,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn zone(domain: Option<&str>) -> Zone {
        let web = attachment(&["web", "www"], &["10.70.0.2/24", "fd70::2/64"]);
        let db = attachment(&["db"], &["10.70.0.3/24"]);
        let db2 = attachment(&["db2", "db"], &["10.70.0.4/24"]);
        Zone::new(&network(domain), [&web, &db, &db2])
    }

    fn ask(z: &Zone, name: &str, t: RecordType) -> Reply {
        let mut m = Message::new(4711, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        z.reply(&m.to_vec().unwrap(), true)
    }

    fn answered(r: Reply) -> Message {
        match r {
            Reply::Answer(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn addrs(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn names_and_aliases_answer_with_their_addresses_in_any_case() {
        let z = zone(None);
        let m = answered(ask(&z, "WEB", RecordType::A));
        assert_eq!(m.metadata.id, 4711);
        assert!(m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(addrs(&m), ["10.70.0.2"]);
        assert_eq!(m.answers[0].ttl, 0);
        assert_eq!(
            addrs(&answered(ask(&z, "www.", RecordType::AAAA))),
            ["fd70::2"]
        );
        // An alias two containers share answers with both.
        assert_eq!(
            addrs(&answered(ask(&z, "db", RecordType::A))),
            ["10.70.0.3", "10.70.0.4"]
        );
        // A name without an address of the type: no records, no error.
        let m = answered(ask(&z, "db", RecordType::AAAA));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn unknown_short_names_do_not_exist_and_others_are_forwarded() {
        let z = zone(None);
        let m = answered(ask(&z, "nosuch", RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "example.com", RecordType::A), Reply::Forward);
        assert_eq!(ask(&z, "web.example.com", RecordType::A), Reply::Forward);
    }

    #[test]
    fn the_networks_domain_is_answered_here() {
        let z = zone(Some("app.internal"));
        assert_eq!(
            addrs(&answered(ask(&z, "web.app.internal", RecordType::A))),
            ["10.70.0.2"]
        );
        let m = answered(ask(&z, "nosuch.app.internal", RecordType::A));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(ask(&z, "web.other.internal", RecordType::A), Reply::Forward);
    }

    #[test]
    fn addresses_answer_with_the_first_name() {
        let z = zone(Some("app.internal"));
        let m = answered(ask(&z, "2.0.70.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(addrs(&m), ["web.app.internal."]);
        let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.7.d.f.ip6.arpa.";
        assert_eq!(
            addrs(&answered(ask(&z, v6, RecordType::PTR))),
            ["web.app.internal."]
        );
        // In the network but nobody's; outside it, the world's.
        let m = answered(ask(&z, "9.0.70.10.in-addr.arpa.", RecordType::PTR));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            ask(&z, "1.1.168.192.in-addr.arpa.", RecordType::PTR),
            Reply::Forward
        );
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        let z = zone(None);
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        junk.extend([0xff; 5]);
        let m = answered(z.reply(&junk, true));
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(z.reply(&[1, 2, 3], true), Reply::Ignore);
        // A response sent to the server is not answered.
        let mut resp = Message::response(1, OpCode::Query);
        resp.add_query(Query::query(
            Name::from_ascii("web").unwrap(),
            RecordType::A,
        ));
        assert_eq!(z.reply(&resp.to_vec().unwrap(), true), Reply::Ignore);
    }

    #[test]
    fn an_answer_too_big_for_udp_is_truncated() {
        let many: Vec<Attachment> = (0..40)
            .map(|i| attachment(&["all"], &[&format!("10.70.0.{}/24", i + 10)]))
            .collect();
        let z = Zone::new(&network(None), &many);
        let m = answered(ask(&z, "all", RecordType::A));
        assert!(m.metadata.truncation && m.answers.is_empty());
        let mut q = Message::new(1, MessageType::Query, OpCode::Query);
        q.add_query(Query::query(
            Name::from_ascii("all").unwrap(),
            RecordType::A,
        ));
        let m = answered(z.reply(&q.to_vec().unwrap(), false));
        assert_eq!(m.answers.len(), 40);
    }

    #[test]
    fn upstreams_skip_plumbs_own_addresses() {
        let conf = "# comment\nnameserver 10.70.0.1\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch x\n";
        let own = ["10.70.0.1".parse().unwrap()];
        assert_eq!(upstreams(conf, &own), ["192.0.2.53:53".parse().unwrap()]);
    }

    #[test]
    fn servers_are_the_hosts_addresses_of_the_containers_families() {
        let net = network(None);
        assert_eq!(
            servers(&net, &attachment(&[], &["10.70.0.3/24"])),
            ["10.70.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            servers(&net, &attachment(&[], &["10.70.0.3/24", "fd70::3/64"])).len(),
            2
        );
    }
}
