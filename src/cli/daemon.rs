use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::daemon::protocol::{Daemon, Request};
use crate::daemon::{self, Options};
use crate::engine::Engine;
use crate::error::{Error, Result};

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Seconds an attach waits for a DHCP server before it is rolled back.
    #[arg(long, default_value_t = 20)]
    pub dhcp_timeout: u64,
    /// Seconds between checks for namespaces that went away.
    #[arg(long, default_value_t = 2)]
    pub reconcile_interval: u64,
    /// Serve Docker as the network driver of this name (`docker network
    /// create -d NAME`), on /run/docker/plugins/NAME.sock; `none`: not.
    #[arg(long, default_value = "plumb", value_name = "NAME|none")]
    pub docker_plugin: String,
    /// Where the resolvers are that plumb's DNS forwards names it does not
    /// know to (its `nameserver` lines).
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: std::path::PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// This host's name in the cluster (default: its host name).
    #[arg(long, env = "PLUMB_CLUSTER_HOST", value_name = "NAME")]
    pub cluster_host: Option<String>,
    /// Where other hosts' tunnels reach this one (default: the address this
    /// host reaches the cluster store from).
    #[arg(long, env = "PLUMB_ADVERTISE_ADDRESS", value_name = "IP")]
    pub advertise_address: Option<String>,
    /// Seconds a host stays in the cluster after its daemon last spoke.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub cluster_ttl: u64,
    /// Seconds the address blocks of a host that left stay its, for it to
    /// come back to; then any host releases them.
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub cluster_block_grace: u64,
}

/// Which cluster, where, and how plumb gets in (the daemon, `plumb
/// cluster`, and `plumb network create/rm` of vxlan networks).
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Join hosts sharing networks through etcd: etcd://HOST:PORT[,HOST:PORT…],
    /// or etcds://… over TLS.
    #[arg(long, env = "PLUMB_CLUSTER_STORE", value_name = "URL")]
    pub cluster_store: Option<String>,
    /// The cluster's name in the store (several may share one etcd).
    #[arg(
        long,
        env = "PLUMB_CLUSTER_NAME",
        default_value = "default",
        value_name = "NAME"
    )]
    pub cluster_name: String,
    /// Trust this CA (PEM) for an etcds:// store's certificate instead of the
    /// system's CAs. Refused with etcd://, which is plaintext.
    #[arg(long, env = "PLUMB_CLUSTER_CA", value_name = "FILE")]
    pub cluster_ca: Option<PathBuf>,
    /// Client certificate (PEM) for an etcds:// store that asks for one
    /// (etcd's --client-cert-auth); with --cluster-key.
    #[arg(long, env = "PLUMB_CLUSTER_CERT", value_name = "FILE")]
    pub cluster_cert: Option<PathBuf>,
    /// The private key (PEM) of --cluster-cert.
    #[arg(long, env = "PLUMB_CLUSTER_KEY", value_name = "FILE")]
    pub cluster_key: Option<PathBuf>,
    /// Log in to etcd as this user; the password comes from the
    /// environment (PLUMB_CLUSTER_PASSWORD) or --cluster-password-file,
    /// never the command line.
    #[arg(long, env = "PLUMB_CLUSTER_USER", value_name = "USER")]
    pub cluster_user: Option<String>,
    /// A file holding --cluster-user's password (one line).
    #[arg(long, env = "PLUMB_CLUSTER_PASSWORD_FILE", value_name = "FILE")]
    pub cluster_password_file: Option<PathBuf>,
}

impl ClusterArgs {
    /// The store named, its TLS files and password read and checked.
    pub fn store(&self) -> Result<Option<crate::cluster::ClusterStore>> {
        let password = match std::env::var("PLUMB_CLUSTER_PASSWORD") {
            Ok(p) => Some(p),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::invalid("PLUMB_CLUSTER_PASSWORD", "", "is not UTF-8"));
            }
        };
        self.store_with(password)
    }

    /// [`ClusterArgs::store`] with PLUMB_CLUSTER_PASSWORD's value given.
    fn store_with(&self, password: Option<String>) -> Result<Option<crate::cluster::ClusterStore>> {
        let access = crate::cluster::Access {
            ca: self.cluster_ca.clone(),
            cert: self.cluster_cert.clone(),
            key: self.cluster_key.clone(),
            user: self.cluster_user.clone(),
            password_file: self.cluster_password_file.clone(),
            password,
        };
        let Some(url) = &self.cluster_store else {
            for (field, given) in [
                ("--cluster-ca", access.ca.as_ref()),
                ("--cluster-cert", access.cert.as_ref()),
                ("--cluster-key", access.key.as_ref()),
                ("--cluster-password-file", access.password_file.as_ref()),
            ] {
                if let Some(file) = given {
                    return Err(Error::invalid(
                        field,
                        file.display(),
                        "needs --cluster-store",
                    ));
                }
            }
            if let Some(user) = &access.user {
                return Err(Error::invalid(
                    "--cluster-user",
                    user,
                    "needs --cluster-store",
                ));
            }
            return Ok(None);
        };
        crate::cluster::ClusterStore::parse(url, &self.cluster_name)?
            .with_access(&access)
            .map(Some)
    }
}

/// What this daemon joins the cluster as, if it joins one.
fn cluster_join(args: &DaemonArgs) -> Result<Option<daemon::ClusterJoin>> {
    let Some(store) = args.cluster.store()? else {
        for (field, given) in [
            ("--cluster-host", args.cluster_host.is_some()),
            ("--advertise-address", args.advertise_address.is_some()),
        ] {
            if given {
                return Err(Error::invalid(field, "", "needs --cluster-store"));
            }
        }
        return Ok(None);
    };
    if !(1..=3600).contains(&args.cluster_ttl) {
        return Err(Error::invalid(
            "--cluster-ttl",
            args.cluster_ttl,
            "must be 1 to 3600 seconds",
        ));
    }
    let host = match &args.cluster_host {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname()
            .map_err(|e| Error::io("read the host name", e.into()))?
            .to_string_lossy()
            .into_owned(),
    };
    crate::model::validate_name("--cluster-host", &host)?;
    let vtep = match &args.advertise_address {
        Some(a) => crate::model::parse_ip("--advertise-address", a)?,
        None => source_toward(&store)?,
    };
    Ok(Some(daemon::ClusterJoin {
        store,
        me: crate::cluster::Member {
            host,
            vtep,
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        ttl: Duration::from_secs(args.cluster_ttl),
        block_grace: Duration::from_secs(args.cluster_block_grace),
    }))
}

/// The address this host reaches the store's first endpoint from (a
/// connected UDP socket's: the routing decision, nothing sent).
fn source_toward(store: &crate::cluster::ClusterStore) -> Result<std::net::IpAddr> {
    let endpoint = store.first_address();
    let target: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(endpoint)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::invalid("--cluster-store", endpoint, "cannot be resolved"))?;
    let any = if target.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = std::net::UdpSocket::bind(any).map_err(|e| Error::io("open a UDP socket", e))?;
    socket
        .connect(target)
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .map_err(|_| {
            Error::invalid(
                "--advertise-address",
                "",
                format!("no route to the cluster store {endpoint}: give the address to advertise"),
            )
        })
}

pub fn run(state_dir: &Path, socket: &Path, args: DaemonArgs) -> Result<()> {
    for (field, v) in [
        ("--dhcp-timeout", args.dhcp_timeout),
        ("--reconcile-interval", args.reconcile_interval),
    ] {
        if v == 0 || v > 3600 {
            return Err(Error::invalid(field, v, "must be 1 to 3600 seconds"));
        }
    }
    let docker_plugin = match args.docker_plugin.as_str() {
        "none" => None,
        name => {
            crate::model::validate_name("--docker-plugin", name)?;
            Some(name.to_string())
        }
    };
    daemon::run(Options {
        docker_plugin,
        state_dir: state_dir.to_path_buf(),
        socket: socket.to_path_buf(),
        acquire_timeout: Duration::from_secs(args.dhcp_timeout),
        reconcile_interval: Duration::from_secs(args.reconcile_interval),
        cluster: cluster_join(&args)?,
        resolv_conf: args.resolv_conf,
    })
}

/// Undo or finish what dead plumb processes left half done, delete
/// orphaned interfaces, then remove the attachments whose namespace is gone
/// (through a daemon when one runs: their DHCP leases are its to release).
pub fn gc(engine: &mut Engine, daemon: &Daemon) -> Result<()> {
    let recovery = engine.recover()?;
    let orphans = engine.sweep_orphans()?;
    for line in &recovery.done {
        outln!("{line}");
    }
    for o in &orphans {
        outln!("removed {o}");
    }
    let removed: Vec<(String, String, String)> = if let Some(v) = daemon.try_call(&Request::Gc)? {
        super::listed_keys(&v)
    } else {
        let mut out = Vec::new();
        for a in engine.gone_attachments()? {
            engine.detach_attachment(&a)?;
            out.push((a.target, a.network, a.ifname));
        }
        out
    };
    for (target, network, ifname) in &removed {
        outln!("removed {target} from {network} ({ifname}): its namespace is gone");
    }
    if !recovery.errors.is_empty() {
        return Err(Error::Conflict(format!(
            "recovery incomplete (tried again by the next plumb command):\n  {}",
            recovery.errors.join("\n  ")
        )));
    }
    if removed.is_empty() && recovery.done.is_empty() && orphans.is_empty() {
        outln!("nothing to remove");
    }
    Ok(())
}

/// Through a daemon of this scope when one runs (its lease tasks must learn
/// of the new interfaces), else here.
pub fn restore(engine: &mut Engine, daemon: &Daemon) -> Result<()> {
    let report = if let Some(v) = daemon.try_call(&Request::Restore)? {
        serde_json::from_value(v)
            .map_err(|e| Error::Conflict(format!("daemon answered an unreadable report: {e}")))?
    } else {
        engine.restore()?
    };
    for line in &report.repaired {
        outln!("restored {line}");
    }
    for line in &report.removed {
        outln!("removed {line}: its namespace is gone");
    }
    if report.repaired.is_empty() && report.removed.is_empty() && report.errors.is_empty() {
        outln!("nothing to restore");
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "restore incomplete:\n  {}",
            report.errors.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::ClusterArgs;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    fn args(list: &[&str]) -> ClusterArgs {
        let mut all = vec!["plumb"];
        all.extend(list);
        Cli::try_parse_from(all).unwrap().cluster
    }

    #[test]
    fn every_cluster_option_also_comes_from_the_environment() {
        let cli = Cli::command();
        for (id, env) in [
            ("cluster_store", "PLUMB_CLUSTER_STORE"),
            ("cluster_name", "PLUMB_CLUSTER_NAME"),
            ("cluster_ca", "PLUMB_CLUSTER_CA"),
            ("cluster_cert", "PLUMB_CLUSTER_CERT"),
            ("cluster_key", "PLUMB_CLUSTER_KEY"),
            ("cluster_user", "PLUMB_CLUSTER_USER"),
            ("cluster_password_file", "PLUMB_CLUSTER_PASSWORD_FILE"),
        ] {
            let arg = cli.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "{id}");
        }
        // A password is never an argument (it would show in `ps`).
        assert!(
            cli.get_arguments()
                .all(|a| a.get_id() != "cluster_password")
        );
        assert!(Cli::try_parse_from(["plumb", "--cluster-password", "x"]).is_err());
    }

    #[test]
    fn access_options_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let a = args(&[
            "--cluster-store",
            "etcds://h:2379",
            "--cluster-user",
            "plumb",
            "--cluster-password-file",
            pw.to_str().unwrap(),
        ]);
        let store = a.store_with(None).unwrap().unwrap();
        assert_eq!(store.endpoints, ["https://h:2379"]);
        assert_eq!(store.login.unwrap().user, "plumb");
        // The environment's password, when no file is named.
        let a = args(&[
            "--cluster-store",
            "etcd://h:2379",
            "--cluster-user",
            "plumb",
        ]);
        assert!(
            a.store_with(Some("s3cret".into()))
                .unwrap()
                .unwrap()
                .login
                .is_some()
        );
        assert!(a.store_with(None).is_err());
        assert!(args(&[]).store_with(None).unwrap().is_none());
    }

    #[test]
    fn access_options_need_a_store() {
        for (list, says) in [
            (
                ["--cluster-ca", "/ca.pem"],
                "--cluster-ca `/ca.pem`: needs --cluster-store",
            ),
            (
                ["--cluster-cert", "/c.pem"],
                "--cluster-cert `/c.pem`: needs --cluster-store",
            ),
            (
                ["--cluster-key", "/c.key"],
                "--cluster-key `/c.key`: needs --cluster-store",
            ),
            (
                ["--cluster-user", "plumb"],
                "--cluster-user `plumb`: needs --cluster-store",
            ),
            (
                ["--cluster-password-file", "/pw"],
                "--cluster-password-file `/pw`: needs --cluster-store",
            ),
        ] {
            let e = args(&list).store_with(None).unwrap_err().to_string();
            assert_eq!(e, says);
        }
    }
}
