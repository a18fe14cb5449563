//! ipvsadm's whole command line, as `ipvs-manager`'s: every command line
//! ipvsadm 1.31 takes either does the same against the cluster (`-L` and
//! `-S` show the desired state, `-A`… change it), against this host's
//! kernel where the cluster has no such thing (`-Lc`: the connection
//! table), or is refused naming what does it (`-R`, `-Z`, `--set`, the sync
//! daemon). `-h`/`--help` after a command prints that command's help.

use super::cluster::{self, Api, Output, OutputArgs};
use super::edit;
use crate::ipvs::text::{self, Invocation, ListRequest};
use anyhow::bail;
use std::io::Write;
use std::process::ExitCode;

/// Whether `word`, the first of a command line, is one of ipvsadm's
/// commands rather than a subcommand or a node setting: `-A`…`-Z` and
/// `--set` (the table changes), `-L`/`-l`/`--list`, `-S`/`--save`,
/// `-R`/`--restore`, `--start-daemon`/`--stop-daemon`, `-v`, clustered
/// with their options as ipvsadm takes them (`-Ln`, `-Lnc`, `-Sn`, `-at`).
/// `-h`, `--help` and `--version` alone stay clap's.
pub fn is_ipvsadm_word(word: &str) -> bool {
    if edit::is_ipvsadm_command(word) {
        return true;
    }
    match word.strip_prefix("--") {
        Some(long) => {
            let name = long.split('=').next().unwrap_or(long);
            ["list", "save", "restore", "start-daemon", "stop-daemon"].contains(&name)
        }
        None => word
            .strip_prefix('-')
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| "LlSRv".contains(c)),
    }
}

/// Runs one ipvsadm command line (`words`, without the program name and
/// the client options); `api` connects to the `--server` node, only for
/// the commands that need it.
pub fn run(words: &[String], api: &dyn Fn() -> anyhow::Result<Api>) -> anyhow::Result<ExitCode> {
    // `-C --yes --now`: those options are edit.rs's, not ipvsadm's.
    let (removing, rest) = edit::RemovalArgs::take(words)?;
    let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
    let invocation = text::parse_invocation(&refs)?;
    if removing.given() && !matches!(invocation, Invocation::Change(_)) {
        bail!(edit::ONLY_WITH_CLEAR);
    }
    match invocation {
        Invocation::Help { command } => {
            std::io::stdout()
                .lock()
                .write_all(help(command).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Version => {
            let version = env!("CARGO_PKG_VERSION");
            writeln!(std::io::stdout().lock(), "ipvs-manager {version}")?;
            Ok(ExitCode::SUCCESS)
        }
        // Table changes keep their one path (edit.rs), which reads the
        // words again with the same parser.
        Invocation::Change(_) => edit::ipvsadm(&api()?, words),
        Invocation::List(request) => list(&request, api),
        Invocation::Save => cluster::save(
            &api()?,
            &OutputArgs {
                output: Output::Text,
            },
        ),
        Invocation::Restore => bail!(
            "-R: `ipvs-manager restore` reads ipvsadm -R input on stdin and makes it the \
             cluster's desired state in one step (`restore --merge` adds the lines to it \
             instead, as ipvsadm -R adds them to a table; `--dry-run` shows the plan); \
             `ipvs-manager kernel restore` programs this host's kernel directly"
        ),
        Invocation::SyncDaemon { start } => bail!(
            "--{}-daemon: ipvs-manager replicates the configuration, not connections, and \
             leaves the kernel's connection sync daemon alone; to sync connection state \
             between directors, run `ipvsadm --start-daemon master|backup` (with \
             --mcast-interface, --syncid) on each node, e.g. from a systemd unit of its own",
            if start { "start" } else { "stop" }
        ),
    }
}

/// `-L`: the desired state (`list`), or this host's connection table
/// (`-c`); the kernel's timeouts and sync daemons are each node's own.
fn list(request: &ListRequest, api: &dyn Fn() -> anyhow::Result<Api>) -> anyhow::Result<ExitCode> {
    if request.connections {
        let connections = crate::ipvs::conn::read()?;
        let listing = text::list_connections(&connections, request.options.persistent_conn);
        std::io::stdout().lock().write_all(listing.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if request.timeout {
        bail!(
            "-L --timeout: the protocol timeouts are each node's kernel's, not part of the \
             cluster's desired state; run `ipvsadm -L --timeout` on that node"
        );
    }
    if request.daemon {
        bail!(
            "-L --daemon: the connection sync daemons are each node's kernel's, and \
             ipvs-manager does not run them; run `ipvsadm -L --daemon` on that node"
        );
    }
    // The desired state has no kernel order: --nosort changes nothing.
    cluster::list_desired(&api()?, &request.options, request.service.as_ref())
}

/// The help of one ipvsadm command as ipvs-manager does it (`-A --help`),
/// or of them all.
pub fn help(command: Option<&str>) -> String {
    let Some(command) = command else {
        return format!("{OVERVIEW}\n{}", super::IPVSADM_HELP);
    };
    let text = COMMANDS
        .iter()
        .find(|(names, _)| names.contains(&command))
        .map_or(OVERVIEW, |(_, text)| text);
    format!("{text}\n")
}

const OVERVIEW: &str = "\
ipvs-manager takes ipvsadm's command line (ipvsadm 1.31's options, long or short, clustered \
as in -Ln or -at), against the cluster through a node's API (--server):";

/// Each command's help, by ipvsadm's long names for it.
const COMMANDS: &[(&[&str], &str)] = &[
    (
        &["add-service", "edit-service"],
        "\
Usage: ipvs-manager -A|--add-service SERVICE [-s SCHEDULER] [-p [TIMEOUT]] [-M NETMASK]
                    [-b FLAGS] [--pe ENGINE] [-o]
       ipvs-manager -E|--edit-service SERVICE [same options]

Adds (-A) a virtual service to the cluster's desired state, or sets every setting of one (-E,
unsaid ones to ipvsadm's defaults; its real servers, health check and drain_grace stay). Every
node programs it into its kernel.

SERVICE is one of:
  -t, --tcp-service ADDR:PORT      ([V6]:PORT for IPv6)
  -u, --udp-service ADDR:PORT
      --sctp-service ADDR:PORT
  -f, --fwmark-service MARK [-6]   (-6: an IPv6 firewall-mark service)
Options:
  -s, --scheduler NAME     rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh (default wlc)
  -p, --persistent [SECS]  persistence, 1 to 2678400 s (default 360)
  -M, --netmask MASK       persistence granularity: a prefix mask such as 255.255.255.0 for
                           IPv4 (one with holes, such as 255.0.255.0, is refused), 1 to 128 for
                           IPv6
  -b, --sched-flags FLAGS  sh-fallback, sh-port (sh), mh-fallback, mh-port (mh), flag-1..3
      --pe ENGINE          persistence engine: sip
  -o, --ops                one-packet scheduling (UDP and fwmark services)",
    ),
    (
        &["delete-service"],
        "\
Usage: ipvs-manager -D|--delete-service SERVICE

Removes a virtual service from the cluster's desired state at once, as ipvsadm -D does;
`ipvs-manager drain SERVICE` removes it gracefully (weight 0 first, for a grace period).",
    ),
    (
        &["add-server", "edit-server"],
        "\
Usage: ipvs-manager -a|--add-server SERVICE -r ADDR[:PORT] [-g|-i|-m] [-w WEIGHT]
                    [-x UPPER] [-y LOWER] [--tun-type ipip|gue|gre] [--tun-port PORT]
                    [--tun-nocsum|--tun-csum|--tun-remcsum]
       ipvs-manager -e|--edit-server SERVICE -r ADDR[:PORT] [same options]

Adds (-a) a real server to a service of the cluster's desired state, or sets every setting of
one (-e, unsaid ones to ipvsadm's defaults; its own health check stays).

  -r, --real-server ADDR[:PORT]  the real server (port: the service's when not given)
  -g, --gatewaying         direct routing; the default here, as in ipvsadm. (The REST API and
                           the web UI default to masq: there `forward` is \"masq\" unless given.)
  -i, --ipip               tunnelling (--tun-type ipip, gue with --tun-port, or gre)
  -m, --masquerading       NAT
  -w, --weight N           0 to 2147483647 (the kernel's and ipvsadm's limit; default 1;
                           0 takes no new connections)
  -x, --u-threshold N      upper connection threshold, 0 to 2147483647 (the kernel's and
                           ipvsadm's limit; 0: none)
  -y, --l-threshold N      lower connection threshold, not above the upper one",
    ),
    (
        &["delete-server"],
        "\
Usage: ipvs-manager -d|--delete-server SERVICE -r ADDR[:PORT]

Removes a real server at once, as ipvsadm -d does; `ipvs-manager drain SERVICE -r ADDR:PORT`
removes it gracefully (weight 0 on every node for a grace period, then removed).",
    ),
    (
        &["clear"],
        "\
Usage: ipvs-manager -C|--clear

Empties the cluster's desired state: every node removes every service it manages.",
    ),
    (
        &["list"],
        "\
Usage: ipvs-manager -L|-l|--list [-n] [SERVICE] [--stats|--rate|--thresholds|--persistent-conn
                    |--tun-info] [--exact] [--nosort]
       ipvs-manager -L|-l|--list -c [-n] [--persistent-conn]

Lists the cluster's desired state as ipvsadm -Ln lists a kernel that holds it (as
`ipvs-manager list`; the counters are the --server node's kernel's). With SERVICE (-t, -u,
--sctp-service, -f) that service only. Addresses are always numeric, with or without -n;
--nosort changes nothing (the desired state has no kernel order).

  -c, --connection   this host's kernel connection table (/proc/net/ip_vs_conn), exactly as
                     ipvsadm -Lnc prints it: the host you run it on, not --server's
--timeout and --daemon are each node's kernel's: run ipvsadm -L --timeout (--daemon) there.",
    ),
    (
        &["save"],
        "\
Usage: ipvs-manager -S|--save [-n]

Prints the cluster's desired state in ipvsadm -Sn syntax (as `ipvs-manager save`, keeping the
thresholds and tunnel options ipvsadm's save drops). Always numeric.",
    ),
    (
        &["restore"],
        "\
Usage: ipvs-manager restore [--merge] [--dry-run] < RULES

-R is not taken: `ipvs-manager restore` reads ipvsadm -R input and makes it the cluster's
desired state in one step (--merge: adds the lines to it, as ipvsadm -R adds to a table).
`ipvs-manager kernel restore` programs this host's kernel directly.",
    ),
    (
        &["zero"],
        "\
-Z is not taken: counters are each node's kernel's, not the cluster's. Run ipvsadm -Z [SERVICE]
on the node whose counters you want zeroed.",
    ),
    (
        &["set"],
        "\
--set is not taken: the protocol timeouts are each node's kernel's, not the cluster's. Run
ipvsadm --set TCP TCPFIN UDP on each node.",
    ),
    (
        &["start-daemon", "stop-daemon"],
        "\
--start-daemon and --stop-daemon are not taken: ipvs-manager replicates the configuration,
not connections, and leaves the kernel's connection sync daemon alone. Run ipvsadm
--start-daemon master|backup [--mcast-interface IF] [--syncid ID] on each node.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipvsadm_words_are_recognised() {
        for word in [
            "-A",
            "-at",
            "-Ln",
            "-Lnc",
            "-l",
            "-S",
            "-Sn",
            "-R",
            "-v",
            "--list",
            "--save",
            "--restore",
            "--start-daemon",
            "--stop-daemon=master",
            "--set",
            "-Z",
        ] {
            assert!(is_ipvsadm_word(word), "{word}");
        }
        // clap's own, the subcommands and the node's settings.
        for word in [
            "-h",
            "--help",
            "-V",
            "--version",
            "list",
            "save",
            "--server",
            "--server-port",
            "--raft-leader",
            "--lister",
        ] {
            assert!(!is_ipvsadm_word(word), "{word}");
        }
    }

    #[test]
    fn every_command_has_its_help() {
        for command in [
            "add-service",
            "edit-service",
            "delete-service",
            "clear",
            "list",
            "zero",
            "add-server",
            "edit-server",
            "delete-server",
            "set",
            "restore",
            "save",
            "start-daemon",
            "stop-daemon",
        ] {
            let text = help(Some(command));
            assert!(
                !text.starts_with(OVERVIEW),
                "{command} has no help of its own"
            );
        }
        // -a's states its default and the API's, which differ.
        let add = help(Some("add-server"));
        assert!(add.contains("direct routing; the default here"), "{add}");
        assert!(add.contains("default to masq"), "{add}");
        assert!(help(None).contains("-L|-l"));
    }
}
