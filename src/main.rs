use std::io::IsTerminal;

use clap::Parser;

use plumb::cli::Cli;

/// `PLUMB_LOG` takes tracing's filter syntax (`debug`, `plumb=trace`, ...).
/// Without it, warnings only, set up without parsing a filter: every
/// command pays for logging at start, and most never log.
fn init_logging() {
    // Colours only for a person at a terminal, not in a daemon's log file.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match std::env::var("PLUMB_LOG") {
        Ok(filter) => builder
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init(),
        Err(_) => builder.with_max_level(tracing::Level::WARN).init(),
    }
}

fn main() {
    // A CNI runtime runs plugins with CNI_COMMAND set and no arguments.
    if plumb::cni::invoked() {
        init_logging();
        std::process::exit(plumb::cni::main());
    }
    // The shell asking what to complete (COMPLETE=bash plumb …).
    plumb::cli::complete::answer_the_shell();
    let cli = Cli::parse();
    init_logging();
    // Checked as any target is (`..`, `/` in a name): it is one.
    if let Some(name) = &cli.host_netns
        && let Err(e) = plumb::target::Target::parse(name)
            .and_then(|t| t.resolve())
            .and_then(|ns| {
                ns.enter()
                    .map_err(|e| plumb::error::Error::io(format!("enter host namespace {name}"), e))
            })
    {
        eprintln!("plumb: --host-netns: {e}");
        std::process::exit(2);
    }
    if let Err(e) = plumb::cli::run(cli) {
        eprintln!("plumb: {e}");
        std::process::exit(1);
    }
}
