//! Command-line interface: clap definitions and the commands behind them.

pub mod backup;
pub mod cluster;
pub mod edit;
pub mod ipvsadm;
mod kernel;
pub mod watch;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// What the program is, and which of its two roles the help below
/// configures: the node (no subcommand) or the client (the rest).
const ABOUT: &str = "\
ipvs-manager: a control-plane agent for Linux IPVS load balancers.

With no subcommand it runs this host's cluster node, the daemon: it joins or starts the
cluster and programs this host's IPVS table. Its settings are the \"Node settings\" below, each
also an environment variable (as the systemd unit sets them).

The subcommands, and ipvsadm's own command line (ipvs-manager -Ln, -A -t …, see the end), are
the client: they talk to a running node's API, chosen by the \"Client options\".

The log (both roles), from the environment only: LOG_FORMAT=text|json, LOG_LEVEL=error|warn|
info|debug|trace (default info), or RUST_LOG, a whole filter (info,openraft=debug).";

/// Headings that keep the node's settings apart from the client's options.
const CLIENT_OPTIONS: &str = "Client options (the subcommands and ipvsadm's commands)";
const NODE_SETTINGS: &str = "Node settings (no subcommand: run this host's cluster node)";

/// ipvs-manager: a control-plane agent for Linux IPVS load balancers.
#[derive(Debug, Parser)]
#[command(
    name = "ipvs-manager",
    version,
    about = ABOUT,
    propagate_version = true,
    after_help = IPVSADM_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// A node's HTTP API (host:SERVER_PORT), for the commands that talk to
    /// the cluster.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_SERVER",
        default_value = DEFAULT_SERVER,
        help_heading = CLIENT_OPTIONS
    )]
    pub server: String,
    /// API token for the commands that talk to the cluster (an admin token
    /// for changes, a read token for the rest), sent as `Authorization:
    /// Bearer`.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_TOKEN",
        hide_env_values = true,
        help_heading = CLIENT_OPTIONS
    )]
    pub token: Option<String>,
    /// CA certificates (PEM) trusted for an `https://` --server, besides the
    /// system's.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_CA_FILE",
        help_heading = CLIENT_OPTIONS
    )]
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a write is sent again (with the same Idempotency-Key) while
    /// its outcome is unknown or nothing was done yet, before the command
    /// gives up: `30`, `30s`, `2m`. A write still unknown then exits with
    /// status 3, "outcome unknown", and how to check.
    #[arg(
        long,
        global = true,
        env = "IPVS_MANAGER_WRITE_TIMEOUT",
        default_value = "30s",
        value_parser = parse_timeout,
        help_heading = CLIENT_OPTIONS
    )]
    pub write_timeout: std::time::Duration,
    /// Without a subcommand, run this host's cluster node.
    #[command(flatten, next_help_heading = NODE_SETTINGS)]
    pub node: crate::config::NodeArgs,
}

/// ipvsadm's command line, which clap does not see (see [`main`] and
/// [`ipvsadm`]).
pub(crate) const IPVSADM_HELP: &str = "\
ipvsadm's command line works against the cluster (`ipvs-manager -A --help`: one command's help):
  ipvs-manager -L|-l [-n] [-t|-u|-f SERVICE] [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]
                                the desired state as ipvsadm -Ln shows a kernel (as `list`)
  ipvs-manager -L|-l -c [-n]    this host's kernel connection table, as ipvsadm -Lnc
  ipvs-manager -S [-n]          the desired state in ipvsadm -Sn syntax (as `save`)
  ipvs-manager -A|-E -t|-u|-f SERVICE [-s SCHEDULER] [-p [TIMEOUT]] [-M NETMASK] [-b FLAGS] [--pe ENGINE] [-o]
  ipvs-manager -D -t|-u|-f SERVICE
  ipvs-manager -a|-e -t|-u|-f SERVICE -r SERVER [-g|-i|-m] [-w WEIGHT] [-x UPPER] [-y LOWER] [--tun-type …]
  ipvs-manager -d -t|-u|-f SERVICE -r SERVER
  ipvs-manager -C [--yes] [--now | --grace SECONDS]
-a defaults to -g (direct routing), as ipvsadm does; the REST API and the web UI default to masq.
Removals (-D, -d) are immediate, as in ipvsadm; `ipvs-manager drain` removes gracefully.
-C empties the desired state of every node: it asks first (--yes: it does not), and the
services drain as a `drain` does (--now: removed at once).
-R, -Z, --set, --start-daemon, --stop-daemon, -L --timeout and -L --daemon are refused, naming
what does it (`ipvs-manager restore`; ipvsadm on the node for the kernel's own state).
";

// The subcommands (`ipvs-manager list`, …); the ipvsadm-style editing
// commands bypass clap (edit.rs). Named apart from model::Command, what the
// Raft log carries. (A plain comment: clap would show a doc comment.)
#[derive(Debug, Subcommand)]
pub enum CliCommand {
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
    /// thresholds and tunnel options ipvsadm's save drops; health checks,
    /// `drain_grace` and `bind_address` it cannot hold: `backup` keeps
    /// everything).
    Save(cluster::OutputArgs),
    /// What the node's reconciler would change to make its kernel match the
    /// desired state (`+` add, `~` edit in place, `-` delete); exit status 1
    /// when they differ.
    Diff(cluster::OutputArgs),
    /// Read `ipvsadm -R` syntax on stdin (or, with `--backup`, a backup)
    /// and make it the cluster's desired state in one Raft entry (`ipvsadm
    /// -Sn | ipvs-manager restore`). What it removes drains first (`--now`:
    /// at once); removing more than 3 services asks first (`--yes`: it does
    /// not).
    Restore(edit::RestoreArgs),
    /// The cluster's desired state as a JSON backup with every setting
    /// (`ipvsadm -Sn` cannot express health checks, `drain_grace`,
    /// `bind_address`): `ipvs-manager backup > backup.json`, then `restore
    /// --backup backup.json`.
    Backup(backup::BackupArgs),
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
/// the binary. ipvsadm's command line (`-A`, `-Ln`, `-S`, … as the first
/// word) goes to ipvsadm's own parser ([`ipvsadm`]), since its options
/// (`-t`, `-r`, clustered `-Lnc`, `-p` with an optional value) are not
/// clap's to interpret.
pub fn main() -> anyhow::Result<ExitCode> {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    let server = take_option(&mut words, "--server");
    let token = take_option(&mut words, "--token");
    let ca_file = take_option(&mut words, "--ca-file");
    let write_timeout = take_option(&mut words, "--write-timeout");
    if words.first().is_some_and(|w| ipvsadm::is_ipvsadm_word(w)) {
        let env = |name: &str| std::env::var(name).ok();
        let write_timeout = write_timeout.or_else(|| env("IPVS_MANAGER_WRITE_TIMEOUT"));
        let client = cluster::Client {
            server: server
                .or_else(|| env("IPVS_MANAGER_SERVER"))
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            token: token.or_else(|| env("IPVS_MANAGER_TOKEN")),
            ca_file: ca_file
                .or_else(|| env("IPVS_MANAGER_CA_FILE"))
                .map(std::path::PathBuf::from),
            write_timeout: match write_timeout {
                Some(value) => parse_timeout(&value)
                    .map_err(|e| anyhow::anyhow!("--write-timeout {value:?}: {e}"))?,
                None => cluster::WRITE_DEADLINE,
            },
        };
        // Only the commands that talk to a node connect (not -h, -v, -Lc).
        let api = || cluster::Api::new(&client);
        return ipvsadm::run(&words, &api);
    }
    run(Cli::parse())
}

/// A length of time on the command line: whole seconds (`90`) or a
/// duration (`90s`, `5m`); `--write-timeout` and `--grace` take it.
pub(crate) fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    match value.parse::<u64>() {
        Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(value)
            .map_err(|e| format!("not a duration ({e}); write 90, 90s or 5m")),
    }
}

/// Removes a global option (`--name value` or `--name=value`) from `words`
/// wherever it stands; its value.
fn take_option(words: &mut Vec<String>, name: &str) -> Option<String> {
    let mut value = None;
    let mut i = 0;
    while i < words.len() {
        if words[i] == name && i + 1 < words.len() {
            value = Some(words.remove(i + 1));
            words.remove(i);
        } else if let Some(v) = words[i].strip_prefix(&format!("{name}=")) {
            value = Some(v.to_string());
            words.remove(i);
        } else {
            i += 1;
        }
    }
    value
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:2221";

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = cluster::Client {
        server: cli.server.clone(),
        token: cli.token.clone(),
        ca_file: cli.ca_file.clone(),
        write_timeout: cli.write_timeout,
    };
    let api = || cluster::Api::new(&client);
    match cli.command {
        Some(CliCommand::Kernel(cmd)) => kernel::run(cmd).map(|()| ExitCode::SUCCESS),
        Some(CliCommand::List(args)) => cluster::list(&api()?, &args),
        Some(CliCommand::Cluster(cmd)) => cluster::cluster(&api()?, &cmd),
        Some(CliCommand::Save(args)) => cluster::save(&api()?, &args),
        Some(CliCommand::Diff(args)) => cluster::diff(&api()?, &args),
        Some(CliCommand::Restore(args)) => edit::restore(&api()?, &args),
        Some(CliCommand::Backup(args)) => backup::backup(&api()?, &args),
        Some(CliCommand::Drain(args)) => edit::drain(&api()?, &args),
        Some(CliCommand::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "ipvs-manager", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        None => match run_node(&cli.node) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.downcast_ref::<BadSetting>().is_some() => {
                eprintln!("ipvs-manager: {e:#}");
                Ok(ExitCode::from(EXIT_BAD_SETTING))
            }
            // A damaged store gets a status of its own, which the unit
            // does not restart (restarting cannot cure it).
            Err(e) if e.downcast_ref::<crate::daemon::DamagedStore>().is_some() => {
                tracing::error!("{e:#}");
                eprintln!("ipvs-manager: {e:#}");
                Ok(ExitCode::from(crate::daemon::EXIT_DAMAGED))
            }
            Err(e) => Err(e),
        },
    }
}

/// The exit status of a node refused for a bad setting (as for a bad
/// logging setting): restarting cannot cure it, so the unit does not.
pub const EXIT_BAD_SETTING: u8 = 2;

/// A setting the node cannot start with; its message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(String);

fn run_node(args: &crate::config::NodeArgs) -> anyhow::Result<()> {
    let config = args.validate().map_err(|e| BadSetting(e.to_string()))?;
    // What the settings name must exist on this host (an interface, BIRD),
    // checked before anything is touched.
    crate::announce::check(&config.announce, config.kernel)
        .map_err(|e| BadSetting(e.to_string()))?;
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
