//! `plumb egress`: an uplink for sources plumb does not attach, most of
//! all Docker's own containers and networks. The same routing as a plumb
//! network's `--egress-interface` ([`super::routing`]): a table of its own
//! with a default route out of the uplink, and the rule pair per source
//! (`from SOURCE lookup main suppress_prefixlength 0`, then `from SOURCE
//! lookup TABLE`).
//!
//! A source is a CIDR, `docker:NAME` (the container's addresses while it
//! runs, on every network it has) or `docker-network:NAME` (every subnet of
//! a Docker network). What a Docker source stands for changes (a restart
//! gives a container another address, a network is made again with
//! another subnet): the rule records the sources its kernel rules select
//! now (`applied`), and the daemon, following Docker, changes them. The
//! kernel is made to match the record by one function, [`converge`], that
//! both adds what is missing and removes rules at the rule's priorities
//! that select anything else.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::routing::{self, Allocation};
use crate::error::{Error, Result};
use crate::model::{Egress, parse_cidr};
use crate::netlink::{Netlink, Rule};

/// What an egress rule sends out of its uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Source {
    Cidr(IpNet),
    /// A Docker container, by name (the same name after `docker rm` and
    /// `docker run --name` is the same source).
    Container(String),
    DockerNetwork(String),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source> {
        let named = |prefix: &str, name: &str| -> Result<String> {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(Error::invalid(
                    "SOURCE",
                    s,
                    format!("`{prefix}` needs a name after it"),
                ));
            }
            Ok(name.to_string())
        };
        if let Some(name) = s.strip_prefix("docker-network:") {
            return Ok(Source::DockerNetwork(named("docker-network:", name)?));
        }
        if let Some(name) = s.strip_prefix("docker:") {
            return Ok(Source::Container(named("docker:", name)?));
        }
        if !s.contains('/') {
            return Err(Error::invalid(
                "SOURCE",
                s,
                "a source is a CIDR, docker:CONTAINER or docker-network:NETWORK",
            ));
        }
        let net = parse_cidr("SOURCE", s)?;
        if net != net.trunc() {
            return Err(Error::invalid(
                "SOURCE",
                s,
                format!("has host bits set (the network is {})", net.trunc()),
            ));
        }
        Ok(Source::Cidr(net))
    }

    /// Whether Docker says what it stands for.
    pub fn is_docker(&self) -> bool {
        !matches!(self, Source::Cidr(_))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Cidr(n) => write!(f, "{n}"),
            Source::Container(n) => write!(f, "docker:{n}"),
            Source::DockerNetwork(n) => write!(f, "docker-network:{n}"),
        }
    }
}

/// One egress rule, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRule {
    pub id: u32,
    pub source: Source,
    pub egress: Egress,
    pub table: u32,
    /// Its rules' priorities are this and the next.
    pub priority: u32,
    /// The addresses and subnets its kernel rules select now.
    pub applied: Vec<IpNet>,
    /// plumb NATs what leaves by the uplink to the uplink's address (for
    /// sources nobody else NATs: Docker's networks have their own).
    #[serde(default)]
    pub masquerade: bool,
}

impl EgressRule {
    pub fn allocation(&self) -> Allocation {
        Allocation {
            table: self.table,
            priority: self.priority,
        }
    }

    /// A rule of the kernel's at this rule's priorities.
    fn owns(&self, r: &Rule) -> bool {
        r.priority == self.priority || r.priority == self.priority + 1
    }
}

/// The sources of `applied` an uplink can carry: those of its gateway's
/// family (all of them without a gateway).
pub fn routable(e: &Egress, applied: &[IpNet]) -> Vec<IpNet> {
    applied
        .iter()
        .filter(|s| e.gateway.is_none_or(|g| g.is_ipv6() == s.addr().is_ipv6()))
        .copied()
        .collect()
}

/// Make the kernel hold exactly what `rule` says: its default route (when
/// the uplink is up) and a rule pair per applied source, and no other rule
/// at its priorities. Returns what it changed.
pub fn converge(nl: &mut Netlink, rule: &EgressRule) -> Result<Vec<String>> {
    let whose = format!("egress {} ({})", rule.id, rule.source);
    let sources = routable(&rule.egress, &rule.applied);
    let mut done = Vec::new();
    let present = nl.rules().map_err(|e| Error::kernel("list rules", e))?;
    for r in present.iter().filter(|r| rule.owns(r)) {
        let wanted = r.source.is_some_and(|s| sources.contains(&s));
        if !wanted {
            match nl.del_rule(r) {
                Ok(()) => done.push(format!(
                    "stale rule {} from {:?} of {whose}",
                    r.priority, r.source
                )),
                Err(e) if e.is(libc::ENOENT) => {}
                Err(e) => return Err(Error::kernel(format!("remove rule {}", r.priority), e)),
            }
        }
    }
    if sources.is_empty() {
        // Nothing to route: the table's route may stay (it selects nothing).
        return Ok(done);
    }
    done.extend(routing::repair(
        nl,
        &whose,
        &sources,
        &rule.egress,
        rule.allocation(),
    )?);
    Ok(done)
}

/// Take every rule at `rule`'s priorities and its table's default routes
/// away; what is gone already is fine.
pub fn remove(nl: &mut Netlink, rule: &EgressRule) -> Vec<Error> {
    let mut errors = Vec::new();
    match nl.rules() {
        Ok(present) => {
            for r in present.iter().filter(|r| rule.owns(r)) {
                if let Err(e) = nl.del_rule(r)
                    && !e.is(libc::ENOENT)
                {
                    errors.push(Error::kernel(format!("remove rule {}", r.priority), e));
                }
            }
        }
        Err(e) => errors.push(Error::kernel("list rules", e)),
    }
    if let Err(e) = routing::flush_table(nl, rule.table) {
        errors.push(e);
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_cidrs_containers_or_docker_networks() {
        assert_eq!(
            Source::parse("172.17.0.0/16").unwrap(),
            Source::Cidr("172.17.0.0/16".parse().unwrap())
        );
        assert_eq!(
            Source::parse("docker:web").unwrap(),
            Source::Container("web".into())
        );
        assert_eq!(
            Source::parse("docker-network:bridge").unwrap(),
            Source::DockerNetwork("bridge".into())
        );
        for s in [
            "docker:web",
            "docker-network:lan",
            "10.1.0.0/24",
            "fd00::/64",
        ] {
            assert_eq!(Source::parse(s).unwrap().to_string(), s);
        }
        let err = Source::parse("10.1.0.5/24").unwrap_err().to_string();
        assert!(err.contains("10.1.0.0/24"), "{err}");
        let err = Source::parse("web").unwrap_err().to_string();
        assert!(err.contains("docker:CONTAINER"), "{err}");
        assert!(Source::parse("docker:").is_err());
        assert!(Source::parse("docker-network:").is_err());
    }

    #[test]
    fn an_uplink_with_a_gateway_carries_its_family_alone() {
        let e = Egress {
            interface: "wlan0".into(),
            gateway: Some("10.10.50.1".parse().unwrap()),
        };
        let applied: Vec<IpNet> = vec![
            "172.17.0.2/32".parse().unwrap(),
            "fd00::2/128".parse().unwrap(),
        ];
        assert_eq!(routable(&e, &applied), applied[..1]);
        let device = Egress {
            interface: "ppp0".into(),
            gateway: None,
        };
        assert_eq!(routable(&device, &applied), applied);
    }
}
