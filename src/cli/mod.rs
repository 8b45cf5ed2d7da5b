//! Command-line front end: clap types, one file per command group. Each
//! handler turns arguments into engine calls and prints the result.

/// `println!` for what a command prints: when the reader has gone
/// (`plumb ls | head -1`), plumb ends as other tools do, by SIGPIPE, instead
/// of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

mod attach;
mod cluster;
pub mod complete;
mod daemon;
mod doctor;
mod egress;
mod host;
mod lazy;
mod network;
mod policy;
mod shim;
mod topology;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use self::attach::{attach_as, detach_from};
use self::lazy::Lazy;
use crate::daemon::protocol::{DEFAULT_SOCKET, Daemon};
use crate::engine::Engine;
use crate::error::Result;
use crate::store::DEFAULT_STATE_DIR;

/// What `plumb --help` and the README say about exit statuses.
const EXIT_CODES: &str = "Exit status:
  0  done
  1  refused or failed: a value plumb does not accept (the message names the field and
     value), a conflict with what exists, a kernel, store or daemon error; nothing is left
     half done
  2  the command line does not parse (unknown command or option, missing or mistyped
     argument), or --host-netns cannot be entered";

#[derive(Parser, Debug)]
#[command(
    name = "plumb",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PLUMB_COMMIT"), ")"),
    about = "Attach network namespaces and containers to real networks",
    max_term_width = 100,
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Where plumb keeps its state (SQLite database).
    #[arg(long, global = true, env = "PLUMB_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Treat this network namespace (NAME, netns:NAME, /path, pid:N) as the host (labs,
    /// tests, nested setups).
    #[arg(long, global = true, env = "PLUMB_HOST_NETNS")]
    pub host_netns: Option<String>,
    /// The daemon's socket.
    #[arg(long, global = true, env = "PLUMB_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Docker's API socket, for `docker:NAME` targets and the daemon's watch of
    /// containers [default: from DOCKER_HOST if it is unix://, else /var/run/docker.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(Lazy<network::NetworkCommand>),
    /// Attach a namespace (NAME, netns:NAME, /path/to/ns, pid:N, docker:NAME) to a network.
    Attach(Lazy<Box<attach::AttachArgs>>),
    /// Detach a namespace from one network, or from all; idempotent.
    Detach(Lazy<attach::DetachArgs>),
    /// Show a namespace's attachments as JSON.
    Inspect(Lazy<attach::InspectArgs>),
    /// List all attachments.
    Ls(Lazy<attach::LsArgs>),
    /// Firewall rules between networks, tenants, addresses and attachments.
    #[command(subcommand)]
    Policy(Lazy<policy::PolicyCommand>),
    /// The host side of a lab: routes to subnets behind router namespaces.
    #[command(subcommand)]
    Host(Lazy<host::HostCommand>),
    /// The uplink a CIDR, a Docker container or a Docker network leaves by.
    #[command(subcommand)]
    Egress(Lazy<egress::EgressCommand>),
    /// The host's way onto a macvlan LAN (a Docker macvlan network's).
    #[command(subcommand)]
    Shim(Lazy<shim::ShimCommand>),
    /// Hosts sharing networks through etcd.
    #[command(subcommand)]
    Cluster(Lazy<cluster::ClusterCommand>),
    /// Bring a topology file up (idempotent).
    Up(Lazy<topology::TopologyArgs>),
    /// Take down what `up` made from a topology file.
    Down(Lazy<topology::TopologyArgs>),
    /// Run the daemon: DHCP clients for DHCP networks, reconciliation.
    Daemon(Lazy<daemon::DaemonArgs>),
    /// Re-create from the store what the kernel lost (after a reboot, a
    /// flushed ruleset): bridges, parents, host addresses and routes, NAT
    /// and rules, and the attachments of namespaces that still exist.
    Restore,
    /// Remove attachments whose namespace is gone (through the daemon when
    /// it runs, so their DHCP leases are released).
    Gc,
    /// How plumb stands beside iptables, Docker and the daemon, as JSON.
    Doctor,
    /// Write the man pages (plumb(8), plumb-network(8), …) into DIR.
    #[command(hide = true)]
    ManPages { dir: PathBuf },
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(path) = &cli.docker_socket {
        crate::docker::set_socket(path.clone());
    }
    let plumbd = Daemon {
        socket: &cli.socket,
        state_dir: &cli.state_dir,
    };
    // Attach and detach open the store only when no daemon does the work.
    let open = || Engine::open(&cli.state_dir);
    match cli.command {
        Command::Daemon(args) => daemon::run(&cli.state_dir, &cli.socket, args.0),
        Command::Attach(args) => attach::attach(&plumbd, *args.0),
        Command::Detach(args) => attach::detach(&plumbd, args.0),
        Command::Network(cmd) => network::run(&mut open()?, &plumbd, cmd.0),
        Command::Gc => daemon::gc(&mut open()?, &plumbd),
        Command::Restore => daemon::restore(&mut open()?, &plumbd),
        Command::Doctor => doctor::run(&open()?, &plumbd),
        Command::ManPages { dir } => {
            for page in complete::write_man_pages(&dir)? {
                outln!("{}", page.display());
            }
            Ok(())
        }
        Command::Inspect(args) => attach::inspect(&open()?, args.0),
        Command::Ls(args) => attach::ls(&open()?, args.0),
        Command::Host(cmd) => host::run(&mut open()?, cmd.0),
        Command::Egress(cmd) => egress::run(&mut open()?, &plumbd, cmd.0),
        Command::Shim(cmd) => shim::run(&mut open()?, cmd.0),
        Command::Cluster(cmd) => cluster::run(cmd.0),
        Command::Policy(cmd) => policy::run(&mut open()?, cmd.0),
        Command::Up(args) => topology::up(&mut open()?, &plumbd, args.0),
        Command::Down(args) => topology::down(&mut open()?, &plumbd, args.0),
    }
}

/// (target, network, interface) of each attachment in a daemon's answer
/// (a list of `report::listed` objects).
fn listed_keys(v: &serde_json::Value) -> Vec<(String, String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("Target"), s("NetworkName"), s("IfName"))
        })
        .collect()
}

/// `--route CIDR via IP` may be typed as three tokens or quoted as one;
/// clap hands us the tokens of all occurrences in a row, so regroup them.
fn join_routes(tokens: Vec<String>) -> Vec<String> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens.get(i + 1).map(String::as_str) == Some("via") && i + 2 < tokens.len() {
            routes.push(tokens[i..i + 3].join(" "));
            i += 3;
        } else {
            routes.push(tokens[i].clone());
            i += 1;
        }
    }
    routes
}

fn print_json(value: &serde_json::Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialize")
    );
}

pub(crate) fn write_line(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            // SAFETY: restores the default action of a signal, then raises
            // it; nothing else runs in between.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        eprintln!("plumb: cannot write the output: {e}");
        std::process::exit(1);
    }
}
