//! Policy routing rules: which table a packet's source selects.

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Netlink, NlResult};

/// A rule as plumb writes and reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub priority: u32,
    pub table: u32,
    pub source: Option<IpNet>,
    /// `suppress_prefixlength 0`: the table's default route does not count
    /// (so the main table decides everything but the default).
    pub suppress_default: bool,
}

fn message(r: &Rule, v6: bool) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.action = RuleAction::ToTable;
    // Tables above 255 travel in the attribute; the header says "see it".
    m.header.table = if r.table < 256 { r.table as u8 } else { 252 };
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes.push(RuleAttribute::Table(r.table));
    if let Some(src) = r.source {
        m.header.src_len = src.prefix_len();
        m.attributes.push(RuleAttribute::Source(src.addr()));
    }
    if r.suppress_default {
        m.attributes.push(RuleAttribute::SuppressPrefixLen(0));
    }
    m
}

impl Netlink {
    pub fn add_rule(&mut self, r: &Rule) -> NlResult<()> {
        let v6 = r.source.is_some_and(|s| s.addr().is_ipv6());
        self.execute(
            RouteNetlinkMessage::NewRule(message(r, v6)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_rule(&mut self, r: &Rule) -> NlResult<()> {
        let v6 = r.source.is_some_and(|s| s.addr().is_ipv6());
        self.execute(RouteNetlinkMessage::DelRule(message(r, v6)), 0)
    }

    /// Every rule of both families.
    pub fn rules(&mut self) -> NlResult<Vec<Rule>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RuleMessage::default();
            req.header.family = family;
            for m in self.dump(RouteNetlinkMessage::GetRule(req))? {
                let RouteNetlinkMessage::NewRule(m) = m else {
                    continue;
                };
                let mut r = Rule {
                    priority: 0,
                    table: u32::from(m.header.table),
                    source: None,
                    suppress_default: false,
                };
                for a in &m.attributes {
                    match a {
                        RuleAttribute::Priority(p) => r.priority = *p,
                        RuleAttribute::Table(t) => r.table = *t,
                        RuleAttribute::Source(s) => {
                            r.source = IpNet::new(*s, m.header.src_len).ok()
                        }
                        RuleAttribute::SuppressPrefixLen(0) => r.suppress_default = true,
                        _ => {}
                    }
                }
                out.push(r);
            }
        }
        Ok(out)
    }
}
