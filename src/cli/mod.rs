//! Command-line interface: clap definitions and the commands behind them.

pub mod cluster;
mod kernel;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// ipvs-manager: a control-plane agent for Linux IPVS load balancers.
#[derive(Debug, Parser)]
#[command(name = "ipvs-manager", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A node's HTTP API, for the commands that talk to the cluster.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_SERVER",
        default_value = "http://127.0.0.1:2221"
    )]
    pub server: String,
    /// API token for the commands that talk to the cluster (an admin token
    /// for changes, a read token for the rest), sent as `Authorization:
    /// Bearer`.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA certificates (PEM) trusted for an `https://` --server, besides the
    /// system's.
    #[arg(long, global = true, env = "IPVS_MANAGER_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
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
    /// The cluster's desired state in `ipvsadm -Ln` layout (draining servers
    /// at weight 0, as the kernels hold them); `--kernel`: the node's kernel.
    List(cluster::ClusterListArgs),
    /// The cluster's members: status, join, remove.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The cluster's desired state in `ipvsadm -Sn` syntax (plus the
    /// thresholds and tunnel options ipvsadm's save drops).
    Save,
    /// What the node's reconciler would change to make its kernel match the
    /// desired state (`+` add, `~` edit in place, `-` delete); exit status 1
    /// when they differ.
    Diff,
}

/// Runs the parsed command line; the error is printed by `main`.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Kernel(cmd)) => kernel::run(cmd).map(|()| ExitCode::SUCCESS),
        Some(Command::List(args)) => cluster::list(
            &cluster::Api::new(&cli.server, cli.token.as_deref(), cli.ca_file.as_deref())?,
            &args,
        ),
        Some(Command::Cluster(cmd)) => cluster::cluster(
            &cluster::Api::new(&cli.server, cli.token.as_deref(), cli.ca_file.as_deref())?,
            &cmd,
        ),
        Some(Command::Save) => cluster::save(&cluster::Api::new(
            &cli.server,
            cli.token.as_deref(),
            cli.ca_file.as_deref(),
        )?),
        Some(Command::Diff) => cluster::diff(&cluster::Api::new(
            &cli.server,
            cli.token.as_deref(),
            cli.ca_file.as_deref(),
        )?),
        None => run_node(&cli.node).map(|()| ExitCode::SUCCESS),
    }
}

fn run_node(args: &crate::config::NodeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::daemon::run(config, shutdown_signal()))
}

/// Completes on the first SIGTERM or SIGINT, which starts a graceful
/// shutdown; a second one ends the process at once (durability does not
/// depend on a clean exit: every acknowledged write is already on disk).
async fn shutdown_signal() {
    terminated().await;
    tokio::spawn(async {
        terminated().await;
        tracing::warn!("second signal: exiting without finishing the shutdown");
        std::process::exit(130);
    });
}

/// Completes on SIGTERM or SIGINT.
async fn terminated() {
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
