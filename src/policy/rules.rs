//! Firewall rules as data (`plumb policy`): what a rule says, how its words
//! resolve against the networks that exist, the order rules are evaluated
//! in, and which rules overlap or contradict each other. Pure logic; the
//! nftables text is written by `firewall`.
//!
//! A rule belongs to a scope, a network or a tenant, and matches traffic
//! from one selector to another, routed through the host. Without `from`
//! and `to` it matches everything into its scope; with only `from`, the
//! traffic from there into the scope; with only `to`, the traffic from the
//! scope to there; with both, one of them must be the scope (or, for a
//! tenant, one of its networks).
//!
//! Evaluation order: answers to connections already accepted pass first,
//! and so does traffic within one network; then the rules by ascending
//! priority, at equal priority every `deny` before any `allow`, then in the
//! order they were added; the first rule that matches decides. Traffic no
//! rule matches gets the defaults: between two plumb networks it is
//! dropped, ports published by NAT networks are reachable, and the rest
//! passes.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Network, validate_name};

/// Priority of a rule added without `--priority`.
pub const DEFAULT_PRIORITY: u32 = 100;

/// A rule as the user writes it, on the command line or in a topology file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// The network or tenant the rule belongs to (`network:` or `tenant:`
    /// to say which, when a name is both).
    pub scope: String,
    /// `allow` or `deny`.
    pub action: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// `tcp`, `udp` or `icmp`.
    #[serde(default)]
    pub proto: Option<String>,
    /// `N` or `N-M`, with `tcp` or `udp`.
    #[serde(default)]
    pub port: Option<String>,
    #[serde(default)]
    pub priority: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Scope {
    Network(String),
    Tenant(String),
}

/// One side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Selector {
    Any,
    Network(String),
    Tenant(String),
    Cidr(IpNet),
    /// The addresses of every attachment of this target.
    Attachment(String),
    /// The addresses of every attachment with this label (`KEY=VALUE`).
    Label(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// A validated rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub scope: Scope,
    pub action: Action,
    pub from: Selector,
    pub to: Selector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Inclusive destination port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<(u16, u16)>,
    pub priority: u32,
}

/// A rule with its id (the order it was added in) and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub id: i64,
    pub policy: Policy,
    pub owner: Option<String>,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Network(n) => write!(f, "network:{n}"),
            Scope::Tenant(t) => write!(f, "tenant:{t}"),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Any => write!(f, "any"),
            Selector::Network(n) => write!(f, "network:{n}"),
            Selector::Tenant(t) => write!(f, "tenant:{t}"),
            Selector::Cidr(c) => write!(f, "{c}"),
            Selector::Attachment(t) => write!(f, "attachment:{t}"),
            Selector::Label(l) => write!(f, "label:{l}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

impl fmt::Display for Policy {
    /// The rule in the words of `plumb policy add`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from {} to {}",
            self.scope, self.action, self.from, self.to
        )?;
        if let Some(p) = self.proto {
            write!(f, " proto {p}")?;
        }
        match self.ports {
            Some((lo, hi)) if lo == hi => write!(f, " port {lo}")?,
            Some((lo, hi)) => write!(f, " port {lo}-{hi}")?,
            None => {}
        }
        write!(f, " priority {}", self.priority)
    }
}

impl Scope {
    fn as_selector(&self) -> Selector {
        match self {
            Scope::Network(n) => Selector::Network(n.clone()),
            Scope::Tenant(t) => Selector::Tenant(t.clone()),
        }
    }
}

impl Selector {
    /// The key of the nftables sets that hold the addresses of the
    /// attachments this selector names, if it names attachments.
    pub fn set_key(&self) -> Option<String> {
        matches!(self, Selector::Attachment(_) | Selector::Label(_)).then(|| self.to_string())
    }
}

impl Policy {
    /// Where the rule stands in evaluation order (smaller first).
    pub fn order(&self, id: i64) -> (u32, u8, i64) {
        let rank = match self.action {
            Action::Deny => 0,
            Action::Allow => 1,
        };
        (self.priority, rank, id)
    }

    /// Whether the rule names network `name`, in its scope or a selector.
    pub fn names_network(&self, name: &str) -> bool {
        self.scope == Scope::Network(name.into())
            || [&self.from, &self.to]
                .into_iter()
                .any(|s| *s == Selector::Network(name.into()))
    }
}

/// The networks that make up a tenant.
pub fn tenant_networks<'n>(networks: &'n [Network], tenant: &str) -> Vec<&'n Network> {
    networks
        .iter()
        .filter(|n| n.tenant.as_deref() == Some(tenant))
        .collect()
}

impl PolicySpec {
    /// Check every word of the rule against the networks that exist.
    pub fn resolve(&self, networks: &[Network]) -> Result<Policy> {
        let scope = resolve_scope(&self.scope, networks)?;
        let action = match self.action.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            other => {
                return Err(Error::invalid(
                    "policy action",
                    other,
                    "expected `allow` or `deny`",
                ));
            }
        };
        let from = self
            .from
            .as_deref()
            .map(|s| resolve_selector("from", s, networks))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|s| resolve_selector("to", s, networks))
            .transpose()?;
        let own = scope.as_selector();
        let (from, to) = match (from, to) {
            (None, None) => (Selector::Any, own),
            (Some(f), None) => (f, own),
            (None, Some(t)) => (own, t),
            (Some(f), Some(t)) => {
                if !within(&scope, &f, networks) && !within(&scope, &t, networks) {
                    return Err(Error::invalid(
                        "policy from/to",
                        format!("from {f} to {t}"),
                        format!(
                            "a rule of {scope} must have {scope} (or one of its networks) on one side"
                        ),
                    ));
                }
                (f, t)
            }
        };
        let proto = match self.proto.as_deref() {
            None => None,
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("icmp") => Some(Proto::Icmp),
            Some(other) => {
                return Err(Error::invalid(
                    "policy proto",
                    other,
                    "expected `tcp`, `udp` or `icmp`",
                ));
            }
        };
        let ports = self.port.as_deref().map(parse_ports).transpose()?;
        if let Some(p) = ports
            && !matches!(proto, Some(Proto::Tcp | Proto::Udp))
        {
            let (lo, hi) = p;
            return Err(Error::invalid(
                "policy port",
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                },
                "a port needs `proto tcp` or `proto udp`",
            ));
        }
        let priority = self.priority.unwrap_or(DEFAULT_PRIORITY);
        if priority == 0 || priority > 65535 {
            return Err(Error::invalid(
                "policy priority",
                priority,
                "expected 1 to 65535",
            ));
        }
        Ok(Policy {
            scope,
            action,
            from,
            to,
            proto,
            ports,
            priority,
        })
    }
}

fn resolve_scope(word: &str, networks: &[Network]) -> Result<Scope> {
    let is_network = |n: &str| networks.iter().find(|x| x.name == n);
    let is_tenant = |t: &str| !tenant_networks(networks, t).is_empty();
    let scope = if let Some(n) = word.strip_prefix("network:") {
        is_network(n)
            .map(|_| Scope::Network(n.into()))
            .ok_or_else(|| Error::invalid("policy scope", word, "no such network"))?
    } else if let Some(t) = word.strip_prefix("tenant:") {
        is_tenant(t)
            .then(|| Scope::Tenant(t.into()))
            .ok_or_else(|| Error::invalid("policy scope", word, "no network has this tenant"))?
    } else if is_network(word).is_some() {
        Scope::Network(word.into())
    } else if is_tenant(word) {
        Scope::Tenant(word.into())
    } else {
        return Err(Error::invalid(
            "policy scope",
            word,
            "no network or tenant has this name",
        ));
    };
    let bridged = |n: &Network| n.bridge().is_some();
    match &scope {
        Scope::Network(n) if !is_network(n).is_some_and(bridged) => Err(Error::invalid(
            "policy scope",
            word,
            "only bridge networks are routed through the host, where rules apply; macvlan, ipvlan and host-device traffic goes straight to the LAN",
        )),
        Scope::Tenant(t) if !tenant_networks(networks, t).into_iter().any(bridged) => {
            Err(Error::invalid(
                "policy scope",
                word,
                "the tenant has no bridge network, where rules apply",
            ))
        }
        _ => Ok(scope),
    }
}

fn resolve_selector(side: &str, word: &str, networks: &[Network]) -> Result<Selector> {
    let field = format!("policy {side}");
    let unknown = |why: &str| Error::invalid(field.as_str(), word, why);
    if word == "any" {
        return Ok(Selector::Any);
    }
    if let Some(n) = word.strip_prefix("network:") {
        return networks
            .iter()
            .any(|x| x.name == n)
            .then(|| Selector::Network(n.into()))
            .ok_or_else(|| unknown("no such network"));
    }
    if let Some(t) = word.strip_prefix("tenant:") {
        return (!tenant_networks(networks, t).is_empty())
            .then(|| Selector::Tenant(t.into()))
            .ok_or_else(|| unknown("no network has this tenant"));
    }
    if let Some(t) = word.strip_prefix("attachment:") {
        crate::target::Target::parse(t)?;
        return Ok(Selector::Attachment(t.into()));
    }
    if let Some(l) = word.strip_prefix("label:") {
        let (k, v) = parse_label(&field, l)?;
        return Ok(Selector::Label(format!("{k}={v}")));
    }
    if let Ok(net) = word.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(unknown(&format!(
                "host bits are set; did you mean {}?",
                net.trunc()
            )));
        }
        return Ok(Selector::Cidr(net));
    }
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Ok(Selector::Cidr(IpNet::from(ip)));
    }
    if networks.iter().any(|x| x.name == word) {
        return Ok(Selector::Network(word.into()));
    }
    if !tenant_networks(networks, word).is_empty() {
        return Ok(Selector::Tenant(word.into()));
    }
    Err(unknown(
        "not a network, a tenant, a CIDR, `any`, `attachment:TARGET` or `label:KEY=VALUE`",
    ))
}

/// `KEY=VALUE`, both plain names.
pub fn parse_label(field: &str, s: &str) -> Result<(String, String)> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(Error::invalid(field, s, "expected KEY=VALUE"));
    };
    validate_name(field, k)?;
    validate_name(field, v)?;
    Ok((k.into(), v.into()))
}

fn parse_ports(s: &str) -> Result<(u16, u16)> {
    let bad = |why: &str| Error::invalid("policy port", s, why);
    let num = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad("expected a port from 1 to 65535, or N-M"))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if lo > hi {
        return Err(bad("the range ends before it starts"));
    }
    Ok((lo, hi))
}

/// Whether selector `s` lies within `scope`.
fn within(scope: &Scope, s: &Selector, networks: &[Network]) -> bool {
    match (scope, s) {
        (Scope::Network(a), Selector::Network(b)) => a == b,
        (Scope::Tenant(a), Selector::Tenant(b)) => a == b,
        (Scope::Tenant(t), Selector::Network(n)) => networks
            .iter()
            .any(|x| x.name == *n && x.tenant.as_deref() == Some(t)),
        _ => false,
    }
}

/// Whether selector `a` matches everything `b` matches.
fn covers_selector(a: &Selector, b: &Selector, networks: &[Network]) -> bool {
    match (a, b) {
        (Selector::Any, _) => true,
        (Selector::Tenant(t), Selector::Network(_)) => {
            within(&Scope::Tenant(t.clone()), b, networks)
        }
        (Selector::Cidr(x), Selector::Cidr(y)) => x.contains(y),
        _ => a == b,
    }
}

/// Whether rule `a` matches every packet rule `b` matches.
fn covers(a: &Policy, b: &Policy, networks: &[Network]) -> bool {
    let proto = match (a.proto, b.proto) {
        (None, _) => true,
        (Some(x), Some(y)) => x == y,
        (Some(_), None) => false,
    };
    let ports = match (a.ports, b.ports) {
        (None, _) => true,
        (Some((alo, ahi)), Some((blo, bhi))) => alo <= blo && bhi <= ahi,
        (Some(_), None) => false,
    };
    proto
        && ports
        && covers_selector(&a.from, &b.from, networks)
        && covers_selector(&a.to, &b.to, networks)
}

/// What adding `new` (which will be evaluated after every existing rule of
/// its priority and action) would do wrong: a duplicate, a contradiction,
/// a rule that could never apply, or one that would make another rule
/// unreachable. Rules that merely overlap, where the order decides, pass.
pub fn check_new(new: &Policy, existing: &[StoredPolicy], networks: &[Network]) -> Result<()> {
    let new_order = new.order(i64::MAX);
    for e in existing {
        let old = &e.policy;
        let same_traffic = covers(old, new, networks) && covers(new, old, networks);
        let reason = if same_traffic && old.action == new.action {
            Some(format!("it repeats rule {} ({old})", e.id))
        } else if same_traffic && old.priority == new.priority {
            Some(format!(
                "it contradicts rule {} ({old}): the same traffic, allowed by one and denied by the other; give one of them another --priority to say which wins",
                e.id
            ))
        } else if old.order(e.id) < new_order && covers(old, new, networks) {
            Some(format!(
                "it could never apply: rule {} ({old}) is evaluated first and decides all the traffic it matches",
                e.id
            ))
        } else if new_order < old.order(e.id)
            && covers(new, old, networks)
            && new.action != old.action
        {
            Some(format!(
                "it would make rule {} ({old}) unreachable: it is evaluated first and decides all of that rule's traffic the other way",
                e.id
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::invalid("policy", new, reason));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetworkSpec;

    fn net(name: &str, subnet: &str, tenant: Option<&str>, driver: &str) -> Network {
        NetworkSpec {
            name: name.into(),
            driver: driver.into(),
            subnet: vec![subnet.into()],
            parent: (driver == "macvlan").then(|| "eth0".into()),
            tenant: tenant.map(String::from),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    fn nets() -> Vec<Network> {
        vec![
            net("finance", "10.1.0.0/24", Some("acme"), "bridge"),
            net("sales", "10.2.0.0/24", Some("acme"), "bridge"),
            net("web", "10.3.0.0/24", None, "bridge"),
            net("lan", "192.168.1.0/24", None, "macvlan"),
        ]
    }

    fn spec(words: &str) -> PolicySpec {
        let w: Vec<&str> = words.split_whitespace().collect();
        let mut s = PolicySpec {
            scope: w[0].into(),
            action: w[1].into(),
            ..Default::default()
        };
        let mut i = 2;
        while i + 1 < w.len() {
            let v = Some(w[i + 1].to_string());
            match w[i] {
                "from" => s.from = v,
                "to" => s.to = v,
                "proto" => s.proto = v,
                "port" => s.port = v,
                "priority" => s.priority = w[i + 1].parse().ok(),
                other => panic!("bad test rule word {other}"),
            }
            i += 2;
        }
        s
    }

    fn rule(words: &str) -> Policy {
        spec(words).resolve(&nets()).unwrap()
    }

    fn err(words: &str) -> String {
        spec(words).resolve(&nets()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_put_the_scope_on_the_missing_side() {
        let r = rule("finance allow");
        assert_eq!(
            (r.from, r.to),
            (Selector::Any, Selector::Network("finance".into()))
        );
        let r = rule("finance deny to 10.9.0.0/16");
        assert_eq!(r.from, Selector::Network("finance".into()));
        assert_eq!(r.to, Selector::Cidr("10.9.0.0/16".parse().unwrap()));
        let r = rule("acme allow from acme");
        assert_eq!(r.scope, Scope::Tenant("acme".into()));
        assert_eq!(
            (r.from, r.to),
            (
                Selector::Tenant("acme".into()),
                Selector::Tenant("acme".into())
            )
        );
        let r = rule("finance allow from 192.0.2.7 proto tcp port 443");
        assert_eq!(r.from, Selector::Cidr("192.0.2.7/32".parse().unwrap()));
        assert_eq!((r.proto, r.ports), (Some(Proto::Tcp), Some((443, 443))));
        assert_eq!(r.priority, DEFAULT_PRIORITY);
    }

    #[test]
    fn selectors_of_every_kind() {
        assert_eq!(
            rule("web allow from label:role=db").from,
            Selector::Label("role=db".into())
        );
        assert_eq!(
            rule("web allow from attachment:db1").from,
            Selector::Attachment("db1".into())
        );
        assert_eq!(
            rule("web allow from tenant:acme").from,
            Selector::Tenant("acme".into())
        );
        assert_eq!(
            rule("web allow from lan").from,
            Selector::Network("lan".into())
        );
        assert_eq!(rule("web allow from any").from, Selector::Any);
    }

    #[test]
    fn bad_words_are_named() {
        assert!(
            err("nope allow").contains("policy scope `nope`"),
            "{}",
            err("nope allow")
        );
        assert!(err("lan allow").contains("only bridge networks"));
        assert!(err("web permit").contains("policy action `permit`"));
        assert!(err("web allow from marketing").contains("policy from `marketing`"));
        assert!(err("web allow from 10.3.0.1/24").contains("did you mean 10.3.0.0/24"));
        assert!(err("web allow proto sctp").contains("policy proto `sctp`"));
        assert!(err("web allow port 80").contains("needs `proto tcp`"));
        assert!(err("web allow proto tcp port 90-80").contains("ends before"));
        assert!(err("web allow proto tcp port 0").contains("policy port `0`"));
        assert!(err("web allow priority 0").contains("policy priority `0`"));
        assert!(err("web allow from label:role").contains("KEY=VALUE"));
        assert!(
            err("web allow from finance to sales").contains("must have network:web"),
            "{}",
            err("web allow from finance to sales")
        );
        // A tenant's own network counts as its side.
        assert!(
            spec("acme allow from web to sales")
                .resolve(&nets())
                .is_ok()
        );
    }

    fn stored(rules: &[&str]) -> Vec<StoredPolicy> {
        rules
            .iter()
            .enumerate()
            .map(|(i, w)| StoredPolicy {
                id: i as i64 + 1,
                policy: rule(w),
                owner: None,
            })
            .collect()
    }

    fn check(existing: &[&str], new: &str) -> Result<()> {
        check_new(&rule(new), &stored(existing), &nets())
    }

    #[test]
    fn duplicates_contradictions_and_shadows_are_reported() {
        let e = check(
            &["web allow from 10.9.0.0/16"],
            "web allow from 10.9.0.0/16",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("repeats rule 1"), "{e}");
        let e = check(&["web allow from 10.9.0.0/16"], "web deny from 10.9.0.0/16")
            .unwrap_err()
            .to_string();
        assert!(e.contains("contradicts rule 1"), "{e}");
        // Same traffic at another priority: one of the two is dead either way.
        let e = check(
            &["web allow from 10.9.0.0/16"],
            "web deny from 10.9.0.0/16 priority 200",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("could never apply"), "{e}");
        let e = check(
            &["web allow from 10.9.0.0/16"],
            "web deny from 10.9.0.0/16 priority 50",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unreachable"), "{e}");
        // An earlier broad deny makes a narrower allow useless.
        let e = check(&["web deny from 10.0.0.0/8"], "web allow from 10.9.0.0/16")
            .unwrap_err()
            .to_string();
        assert!(e.contains("could never apply: rule 1"), "{e}");
        // A new deny at the same priority runs before an existing allow.
        let e = check(
            &["web allow from 10.9.0.0/16 proto tcp port 443"],
            "web deny",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unreachable"), "{e}");
        // ...but a catch-all deny at a later priority is the usual allowlist.
        check(
            &["web allow from 10.9.0.0/16 proto tcp port 443"],
            "web deny priority 1000",
        )
        .unwrap();
        // A tenant covers its networks.
        let e = check(&["acme deny from web"], "finance allow from web")
            .unwrap_err()
            .to_string();
        assert!(e.contains("could never apply"), "{e}");
        // Partial overlaps are for the order to decide.
        check(
            &["web deny from 10.0.0.0/8 proto tcp port 22"],
            "web allow from 10.9.0.0/16",
        )
        .unwrap();
    }

    #[test]
    fn evaluation_order_is_priority_then_deny_then_age() {
        let mut rules = stored(&[
            "web allow from 10.1.0.0/24",
            "web deny from 10.2.0.0/24 priority 50",
            "web deny from 10.3.0.0/24",
            "web allow from 10.4.0.0/24 priority 50",
        ]);
        rules.sort_by_key(|r| r.policy.order(r.id));
        let ids: Vec<i64> = rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 4, 3, 1]);
    }

    #[test]
    fn rules_print_as_they_are_typed() {
        assert_eq!(
            rule("web allow from 10.9.0.0/16 proto tcp port 80-90").to_string(),
            "network:web allow from 10.9.0.0/16 to network:web proto tcp port 80-90 priority 100"
        );
    }
}
