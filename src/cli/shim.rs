use clap::Subcommand;
use clap_complete::engine::ArgValueCandidates;

use super::print_json;
use crate::driver::host_shim::{self, Shim};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{parse_cidr, parse_ip};

#[derive(Subcommand, Debug)]
pub enum ShimCommand {
    /// Let the host reach the containers of a macvlan LAN: a macvlan of
    /// its own on the parent, holding --address alone, with a route to the
    /// containers (a Docker network's --ip-range, or --route).
    Add {
        /// docker-network:NAME, a Docker macvlan network (its parent and
        /// ranges are Docker's).
        network: Option<String>,
        /// The LAN's host interface, for a LAN that is not Docker's.
        #[arg(long, value_name = "IF")]
        parent: Option<String>,
        /// The host's address on the LAN, one no container gets.
        #[arg(long, value_name = "IP")]
        address: String,
        /// Where the containers are (default for a Docker network: its
        /// --ip-range, or its subnet when the address is an --aux-address).
        #[arg(long, value_name = "CIDR")]
        route: Vec<String>,
    },
    /// List the shims.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a shim, by ID, interface name or address.
    Rm {
        #[arg(add = ArgValueCandidates::new(super::complete::shims))]
        shim: String,
    },
}

pub fn run(engine: &mut Engine, cmd: ShimCommand) -> Result<()> {
    match cmd {
        ShimCommand::Add {
            network,
            parent,
            address,
            route,
        } => {
            let address = parse_ip("--address", &address)?;
            let mut routes = route
                .iter()
                .map(|r| parse_cidr("--route", r).map(|n| n.trunc()))
                .collect::<Result<Vec<_>>>()?;
            let (parent, network) = match network {
                Some(n) => {
                    let name = n.strip_prefix("docker-network:").ok_or_else(|| {
                        Error::invalid("NETWORK", &n, "a shim's network is docker-network:NAME")
                    })?;
                    let (docker_parent, docker_routes) = docker_lan(name, address)?;
                    if let Some(p) = parent.filter(|p| *p != docker_parent) {
                        return Err(Error::invalid(
                            "--parent",
                            p,
                            format!("Docker network {name}'s parent is {docker_parent}"),
                        ));
                    }
                    if routes.is_empty() {
                        routes = docker_routes;
                    }
                    (docker_parent, Some(n))
                }
                None => (
                    parent.ok_or_else(|| {
                        Error::invalid(
                            "--parent",
                            "",
                            "give the LAN's interface, or docker-network:NAME",
                        )
                    })?,
                    None,
                ),
            };
            let shim = engine.shim_add(
                Shim {
                    id: 0,
                    name: String::new(),
                    parent,
                    address,
                    routes,
                    network,
                },
                None,
            )?;
            outln!("{}", line(&shim));
        }
        ShimCommand::Ls { json } => {
            let shims = engine.shims()?;
            if json {
                print_json(&serde_json::to_value(&shims).expect("shims serialize"));
            } else {
                outln!("ID  SHIM  PARENT  ADDRESS  ROUTES  FOR");
                for s in &shims {
                    outln!("{}", line(s));
                }
            }
        }
        ShimCommand::Rm { shim } => match engine.shim_rm(&shim)? {
            Some(s) => outln!("shim {} ({} on {}) removed", s.id, s.name, s.parent),
            None => outln!("no shim {shim}"),
        },
    }
    Ok(())
}

/// A Docker macvlan network's parent, and the routes a shim at `address`
/// takes to its containers (an address Docker could hand out refused).
fn docker_lan(name: &str, address: std::net::IpAddr) -> Result<(String, Vec<ipnet::IpNet>)> {
    let n = name.to_string();
    let lan = crate::docker::blocking(async move {
        crate::docker::Client::connect()
            .await?
            .lan_network(&n)
            .await
    })?
    .ok_or_else(|| Error::invalid("NETWORK", name, "Docker has no such network"))?;
    if lan.driver != "macvlan" {
        return Err(Error::invalid(
            "NETWORK",
            name,
            format!(
                "is a {} network: shims are for macvlan networks, whose parent keeps the host away",
                lan.driver
            ),
        ));
    }
    let parent = lan
        .parent
        .ok_or_else(|| Error::invalid("NETWORK", name, "has no parent interface (-o parent=)"))?;
    let routes = host_shim::docker_routes(name, &lan.subnets, address)?;
    Ok((parent, routes))
}

fn line(s: &Shim) -> String {
    let routes: Vec<String> = s.routes.iter().map(|r| r.to_string()).collect();
    format!(
        "{}  {}  {}  {}  {}  {}",
        s.id,
        s.name,
        s.parent,
        s.address,
        routes.join(","),
        s.network.as_deref().unwrap_or("-")
    )
}
