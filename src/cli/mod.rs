//! Command-line interface: clap definitions and the commands behind them.

mod kernel;

use clap::{Parser, Subcommand};

/// ipvs-manager: a control-plane agent for Linux IPVS load balancers.
#[derive(Debug, Parser)]
#[command(name = "ipvs-manager", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, run this host's cluster node.
    #[command(flatten)]
    pub node: crate::config::NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and program this host's kernel IPVS table directly, in
    /// ipvsadm's formats (needs CAP_NET_ADMIN and the ip_vs module).
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),
}

/// Runs the parsed command line; the error is printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Kernel(cmd)) => kernel::run(cmd),
        None => run_node(&cli.node),
    }
}

fn run_node(args: &crate::config::NodeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::daemon::run(config, shutdown_signal()))
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
