use clap::Subcommand;
use clap_complete::engine::ArgValueCandidates;

use super::print_json;
use crate::daemon::protocol::Daemon;
use crate::engine::{EgressRequest, Engine};
use crate::error::{Error, Result};
use crate::model::{Egress, parse_ip};
use crate::policy::egress::{EgressRule, Source};

#[derive(Subcommand, Debug)]
pub enum EgressCommand {
    /// Send SOURCE out of an uplink of its own: a CIDR, docker:CONTAINER
    /// (its addresses, on every network it has) or docker-network:NAME
    /// (every subnet of a Docker network).
    Add {
        source: String,
        /// The uplink.
        #[arg(long, value_name = "IF")]
        interface: String,
        /// The next hop on the uplink (none: a point-to-point link).
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// The priority of the rule pair (it and the next; default: plumb's
        /// first free pair from 10000).
        #[arg(long, value_name = "N")]
        priority: Option<u32>,
        /// NAT what leaves by the uplink to the uplink's address, where
        /// nothing else does (Docker NATs its own networks).
        #[arg(long)]
        masquerade: bool,
    },
    /// List the egress rules and what each selects now.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove an egress rule, by ID or source.
    Rm {
        #[arg(add = ArgValueCandidates::new(super::complete::egress_rules))]
        rule: String,
    },
}

pub fn run(engine: &mut Engine, daemon: &Daemon, cmd: EgressCommand) -> Result<()> {
    match cmd {
        EgressCommand::Add {
            source,
            interface,
            gateway,
            priority,
            masquerade,
        } => {
            let source = Source::parse(&source)?;
            let uplink = Egress {
                interface,
                gateway: gateway
                    .as_deref()
                    .map(|g| parse_ip("--gateway", g))
                    .transpose()?,
            };
            let applied = resolve(&source)?;
            let rule = engine.egress_add(
                EgressRequest {
                    source,
                    uplink,
                    priority,
                    applied,
                    masquerade,
                },
                None,
            )?;
            outln!("{}", line(&rule));
            if rule.source.is_docker() && !crate::daemon::protocol::is_running(daemon.socket) {
                eprintln!(
                    "plumb: no plumb daemon runs: the rules stay as they are now, and will not follow {} when Docker changes its addresses",
                    rule.source
                );
            }
        }
        EgressCommand::Ls { json } => {
            let rules = engine.egress_rules()?;
            if json {
                print_json(&rules.iter().map(crate::report::egress_rule).collect());
            } else {
                outln!("ID  SOURCE  UPLINK  TABLE  PRIORITY  SELECTS");
                for r in &rules {
                    outln!("{}", line(r));
                }
            }
        }
        EgressCommand::Rm { rule } => match engine.egress_rm(&rule)? {
            Some(r) => outln!("egress {} ({}) removed", r.id, r.source),
            None => outln!("no egress rule {rule}"),
        },
    }
    Ok(())
}

/// What a source stands for now; a Docker one must exist.
fn resolve(source: &Source) -> Result<Vec<ipnet::IpNet>> {
    if let Source::Cidr(n) = source {
        return Ok(vec![*n]);
    }
    let found = crate::docker::egress_sources(source)?;
    found.ok_or_else(|| Error::invalid("SOURCE", source, "Docker has no such container or network"))
}

fn line(r: &EgressRule) -> String {
    let mut via = match r.egress.gateway {
        Some(g) => format!("{} via {g}", r.egress.interface),
        None => r.egress.interface.clone(),
    };
    if r.masquerade {
        via.push_str(" masquerade");
    }
    let selects: Vec<String> = r.applied.iter().map(|n| n.to_string()).collect();
    let selects = if selects.is_empty() {
        "-".to_string()
    } else {
        selects.join(",")
    };
    format!(
        "{}  {}  {via}  {}  {}/{}  {selects}",
        r.id,
        r.source,
        r.table,
        r.priority,
        r.priority + 1
    )
}
