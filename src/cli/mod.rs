//! Command-line interface: clap definitions and the commands behind them.

pub mod cluster;
pub mod edit;
mod kernel;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// ipvs-manager: a control-plane agent for Linux IPVS load balancers.
#[derive(Debug, Parser)]
#[command(
    name = "ipvs-manager",
    version,
    about,
    propagate_version = true,
    after_help = IPVSADM_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// A node's HTTP API, for the commands that talk to the cluster.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_SERVER",
        default_value = DEFAULT_SERVER
    )]
    pub server: String,
    /// Without a subcommand, run this host's cluster node.
    #[command(flatten)]
    pub node: crate::config::NodeArgs,
}

/// The ipvsadm editing commands, which clap does not see (see [`main`]).
const IPVSADM_HELP: &str = "\
ipvsadm's editing commands change the cluster's desired state, with ipvsadm's options:
  ipvs-manager -A|-E -t|-u|-f SERVICE [-s SCHEDULER] [-p [TIMEOUT]] [-M NETMASK] [-b FLAGS] [--pe ENGINE] [-o]
  ipvs-manager -D -t|-u|-f SERVICE
  ipvs-manager -a|-e -t|-u|-f SERVICE -r SERVER [-g|-i|-m] [-w WEIGHT] [-x UPPER] [-y LOWER] [--tun-type …]
  ipvs-manager -d -t|-u|-f SERVICE -r SERVER
  ipvs-manager -C
Removals (-D, -d) are immediate, as in ipvsadm; `ipvs-manager drain` removes gracefully.
";

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
    Save(cluster::OutputArgs),
    /// What the node's reconciler would change to make its kernel match the
    /// desired state (`+` add, `~` edit in place, `-` delete); exit status 1
    /// when they differ.
    Diff(cluster::OutputArgs),
    /// Read `ipvsadm -R` syntax on stdin and make it the cluster's desired
    /// state in one Raft entry (`ipvsadm -Sn | ipvs-manager restore`).
    Restore(edit::RestoreArgs),
    /// Take a real server (`-r`) or a whole service out of rotation: weight
    /// 0 on every node for the grace period, then removed.
    Drain(edit::DrainArgs),
    /// Print a shell completion script (`ipvs-manager completions bash >
    /// /etc/bash_completion.d/ipvs-manager`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses the process's arguments and runs them; the error is printed by
/// the binary. ipvsadm's editing commands (`-A`, `-a`, … as the first word)
/// go to ipvsadm's own parser, since their options (`-t`, `-r`, clustered
/// `-at`, `-p` with an optional value) are not clap's to interpret.
pub fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (server, words) = split_server(&args);
    if words.first().is_some_and(|w| edit::is_ipvsadm_command(w)) {
        let server = server
            .or_else(|| std::env::var("IPVS_MANAGER_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        return edit::ipvsadm(&cluster::Api::new(&server)?, &words);
    }
    run(Cli::parse())
}

/// The `--server` option wherever it stands, and the other words.
fn split_server(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut server = None;
    let mut words = Vec::new();
    let mut iter = args.iter();
    while let Some(word) = iter.next() {
        if word == "--server" {
            server = iter.next().cloned();
        } else if let Some(value) = word.strip_prefix("--server=") {
            server = Some(value.to_string());
        } else {
            words.push(word.clone());
        }
    }
    (server, words)
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:2221";

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = || cluster::Api::new(&cli.server);
    match cli.command {
        Some(Command::Kernel(cmd)) => kernel::run(cmd).map(|()| ExitCode::SUCCESS),
        Some(Command::List(args)) => cluster::list(&api()?, &args),
        Some(Command::Cluster(cmd)) => cluster::cluster(&api()?, &cmd),
        Some(Command::Save(args)) => cluster::save(&api()?, &args),
        Some(Command::Diff(args)) => cluster::diff(&api()?, &args),
        Some(Command::Restore(args)) => edit::restore(&api()?, &args),
        Some(Command::Drain(args)) => edit::drain(&api()?, &args),
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ipvs-manager", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
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
