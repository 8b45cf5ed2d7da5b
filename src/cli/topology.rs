use std::path::PathBuf;

use clap::Args;

use crate::engine::Engine;
use crate::error::Result;
use crate::topology::Topology;

#[derive(Args, Debug)]
pub struct TopologyArgs {
    pub file: PathBuf,
}

pub fn up(engine: &mut Engine, args: TopologyArgs) -> Result<()> {
    let (topo, owner) = Topology::load(&args.file)?;
    let summary = topo.up(engine, &owner)?;
    report(&summary.changes, "up to date: nothing to change");
    Ok(())
}

pub fn down(engine: &mut Engine, args: TopologyArgs) -> Result<()> {
    let (_, owner) = Topology::load(&args.file)?;
    let summary = Topology::down(engine, &owner)?;
    report(&summary.changes, "nothing to remove");
    Ok(())
}

fn report(changes: &[String], none: &str) {
    if changes.is_empty() {
        outln!("{none}");
    }
    for c in changes {
        outln!("{c}");
    }
}
