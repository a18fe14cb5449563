//! Command-line interface: clap definitions and the commands behind them.

mod kernel;

use clap::{Parser, Subcommand};

/// ipvs-manager: a control-plane agent for Linux IPVS load balancers.
#[derive(Debug, Parser)]
#[command(name = "ipvs-manager", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
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
        Command::Kernel(cmd) => kernel::run(cmd),
    }
}
