use clap::Subcommand;

use super::print_json;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{RouteSpec, parse_cidr};

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    /// Routes on the host to subnets behind router namespaces.
    #[command(subcommand)]
    Route(RouteCommand),
}

#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// plumb host route add CIDR via IP
    Add {
        #[arg(num_args = 1..=3, required = true, value_name = "CIDR via IP")]
        route: Vec<String>,
    },
    /// plumb host route rm CIDR
    Rm { dest: String },
    /// List the host routes plumb manages.
    Ls,
}

pub fn run(engine: &mut Engine, cmd: HostCommand) -> Result<()> {
    let HostCommand::Route(cmd) = cmd;
    match cmd {
        RouteCommand::Add { route } => {
            let route = RouteSpec::parse("route", &route.join(" "))?;
            engine.host_route_add(&route, None)?;
            outln!("host route {route} added");
        }
        RouteCommand::Rm { dest } => {
            let dest = parse_cidr("route", &dest)?;
            if engine.host_route_rm(&dest)? {
                outln!("host route {dest} removed");
            } else {
                outln!("no host route to {dest} is managed by plumb");
            }
        }
        RouteCommand::Ls => {
            print_json(&serde_json::to_value(engine.host_routes()?).expect("routes serialize"))
        }
    }
    Ok(())
}
