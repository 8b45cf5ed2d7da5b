use clap::Subcommand;

use super::daemon::ClusterArgs;
use super::print_json;
use crate::error::{Error, Result};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// The hosts registered in the cluster now.
    Members {
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ClusterCommand) -> Result<()> {
    let ClusterCommand::Members { cluster, json } = cmd;
    let store = cluster.store()?.ok_or_else(|| {
        Error::invalid(
            "--cluster-store",
            "",
            "name the cluster's etcd (or set PLUMB_CLUSTER_STORE)",
        )
    })?;
    let members = store.call(async |client| store.members(client).await)?;
    if json {
        print_json(&serde_json::to_value(&members).expect("members serialize"));
    } else {
        outln!("HOST  VTEP  VERSION");
        for m in members {
            outln!("{}  {}  {}", m.host, m.vtep, m.version);
        }
    }
    Ok(())
}
