use std::path::{Path, PathBuf};

use clap::Args;

use super::daemon::ClusterArgs;
use crate::cluster::ClusterStore;
use crate::daemon::protocol::Daemon;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::topology::Topology;
use crate::topology::cluster::in_file_words;

#[derive(Args, Debug)]
pub struct TopologyArgs {
    pub file: PathBuf,
}

pub fn up(engine: &mut Engine, daemon: &Daemon, args: TopologyArgs) -> Result<()> {
    let (topo, owner) = Topology::load(&args.file)?;
    let store = cluster_store(&topo, &args.file)?;
    let summary = topo
        .up(engine, daemon, store.as_ref(), &owner)
        .map_err(in_file_words)?;
    report(&summary.changes, "up to date: nothing to change");
    Ok(())
}

pub fn down(engine: &mut Engine, daemon: &Daemon, args: TopologyArgs) -> Result<()> {
    let (topo, owner) = Topology::load(&args.file)?;
    let store = cluster_store(&topo, &args.file)?;
    let summary = topo
        .down(engine, daemon, store.as_ref(), &owner)
        .map_err(in_file_words)?;
    report(&summary.changes, "nothing to remove");
    Ok(())
}

/// The store of the file's `[cluster]` table, read and checked as
/// `--cluster-store` and its options are (PLUMB_CLUSTER_PASSWORD
/// included); relative paths are from the file's directory. An error names
/// the table's key.
fn cluster_store(topo: &Topology, file: &Path) -> Result<Option<ClusterStore>> {
    let Some(c) = &topo.cluster else {
        return Ok(None);
    };
    let dir = file.parent().unwrap_or(Path::new(""));
    let from_file = |p: &Option<PathBuf>| p.as_ref().map(|p| dir.join(p));
    let args = ClusterArgs {
        cluster_store: c.store.clone(),
        cluster_name: c.name.clone(),
        cluster_ca: from_file(&c.ca),
        cluster_cert: from_file(&c.cert),
        cluster_key: from_file(&c.key),
        cluster_user: c.user.clone(),
        cluster_password_file: from_file(&c.password_file),
    };
    args.store().map_err(|e| Error::Topology {
        file: file.display().to_string(),
        reason: in_file_words(e).to_string(),
    })
}

fn report(changes: &[String], none: &str) {
    if changes.is_empty() {
        outln!("{none}");
    }
    for c in changes {
        outln!("{c}");
    }
}
