use clap::Parser;

use plumb::cli::Cli;

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLUMB_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    tracing::debug!("start");
    if let Some(name) = &cli.host_netns
        && let Err(e) = plumb::target::Target::Named(name.clone())
            .resolve()
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
