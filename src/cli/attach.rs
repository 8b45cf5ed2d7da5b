use clap::Args;

use super::{join_routes, print_json};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::AttachSpec;
use crate::report;

#[derive(Args, Debug)]
pub struct AttachArgs {
    pub target: String,
    pub network: String,
    /// Interface name inside the target (default: first free ethN).
    #[arg(long)]
    pub ifname: Option<String>,
    /// Static address (one per IP family).
    #[arg(long)]
    pub ip: Vec<String>,
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long)]
    pub mtu: Option<u32>,
    /// keep (add one if none), replace, or none.
    #[arg(long, value_name = "keep|replace|none")]
    pub default_route: Option<String>,
    /// Extra route inside the target: CIDR via IP.
    #[arg(long, num_args = 1..=3, value_name = "CIDR via IP")]
    pub route: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DetachArgs {
    pub target: String,
    pub network: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub target: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn attach(engine: &mut Engine, args: AttachArgs) -> Result<()> {
    let spec = AttachSpec {
        target: args.target.clone(),
        network: args.network,
        ifname: args.ifname,
        ip: args.ip,
        mac: args.mac,
        mtu: args.mtu,
        default_route: args.default_route,
        route: join_routes(args.route),
    };
    let req = spec.validate()?;
    let a = engine.attach(&args.target, &req, None)?;
    let addrs: Vec<String> = a.addresses.iter().map(|x| x.to_string()).collect();
    println!("{} {} {} {}", a.target, a.ifname, a.mac, addrs.join(" "));
    Ok(())
}

pub fn detach(engine: &mut Engine, args: DetachArgs) -> Result<()> {
    let done = engine.detach(&args.target, args.network.as_deref())?;
    if done.is_empty() {
        println!(
            "{} was not attached{}",
            args.target,
            args.network.map(|n| format!(" to {n}")).unwrap_or_default()
        );
    }
    for a in done {
        println!("detached {} from {} ({})", a.target, a.network, a.ifname);
    }
    Ok(())
}

pub fn inspect(engine: &Engine, args: InspectArgs) -> Result<()> {
    let atts = engine.attachments_of(&args.target)?;
    if atts.is_empty() {
        return Err(Error::Target {
            target: args.target,
            reason: "is not attached to any network".into(),
        });
    }
    print_json(&report::target(&args.target, &atts));
    Ok(())
}

pub fn ls(engine: &Engine, args: LsArgs) -> Result<()> {
    let atts = engine.attachments()?;
    if args.json {
        let list: Vec<serde_json::Value> = atts
            .iter()
            .map(|a| {
                let mut v = report::endpoint(&a.attachment);
                v["Target"] = a.attachment.target.clone().into();
                v
            })
            .collect();
        print_json(&serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:<8} {:<15} {:<18} ADDRESSES",
        "TARGET", "NETWORK", "IFNAME", "HOST IFNAME", "MAC"
    );
    for a in atts {
        let a = a.attachment;
        let addrs: Vec<String> = a.addresses.iter().map(|x| x.to_string()).collect();
        println!(
            "{:<24} {:<16} {:<8} {:<15} {:<18} {}",
            a.target,
            a.network,
            a.ifname,
            a.host_ifname,
            a.mac.to_string(),
            addrs.join(",")
        );
    }
    Ok(())
}
