//! Changing the cluster's desired state in ipvsadm's words: `restore` (a
//! whole `ipvsadm -R` input, or a backup, in one Raft entry), the ipvsadm
//! editing commands (`ipvs-manager -A/-E/-D/-a/-e/-d/-C …`, one REST call
//! each) and `drain`. One parser, `ipvs::text`, reads all of them, as it
//! reads `kernel restore`. `-C` and a `restore` that removes more than a
//! handful of services ask first ([`confirm`]), and what they remove drains.

use super::cluster::{outcome, Api, Output};
use crate::api::json::{ConfigPlan, DrainView, DryRun, NodePlan, ServiceChange};
use crate::api::view::{config_request, server_request, service_request};
use crate::api::{ids, parse_server_id, parse_service_id};
use crate::ipvs::text;
use crate::ipvs::Change;
use crate::model::{DesiredState, DestKey, ServiceConfig, ServiceKey, ServiceSpec};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use reqwest::Method;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

/// `restore`: ipvsadm -R input on stdin (or a backup) becomes the desired
/// state.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Print what would change, commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply only the given lines (or the backup's services) to the current
    /// desired state, instead of making the input the whole desired state.
    #[arg(long)]
    merge: bool,
    /// Restore this backup (`ipvs-manager backup`; `-`: stdin) instead of
    /// ipvsadm rules: every setting as it was backed up.
    #[arg(long, value_name = "FILE")]
    backup: Option<std::path::PathBuf>,
    /// What the input gives is in service: draining services and servers
    /// it gives are taken back (undoing a `-C` that still drains). Always
    /// so with `--backup`. Without it, a draining server given as it is
    /// (or at the weight 0 `save` prints) drains on.
    #[arg(long)]
    undrain: bool,
    #[command(flatten)]
    removing: RemovalArgs,
    /// `text` (one line per changed service) or `json` (the API's plan).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// How a replacement of the desired state (`restore`, `-C`) treats what it
/// removes, and whether it may go ahead without asking.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args)]
pub struct RemovalArgs {
    /// Go ahead without asking, however much it removes.
    #[arg(long)]
    yes: bool,
    /// Remove at once what goes, instead of draining it first.
    #[arg(long, conflicts_with = "grace")]
    now: bool,
    /// How long what goes drains at weight 0 before it is deleted (`90`,
    /// `60s`, `5m`); default: each service's `drain_grace`, else the node's
    /// `DRAIN_GRACE`.
    #[arg(long, value_parser = parse_grace)]
    grace: Option<u32>,
}

/// The refusal of `--yes`, `--now` or `--grace` with another ipvsadm
/// command than `-C`.
pub(super) const ONLY_WITH_CLEAR: &str = "--yes, --now and --grace go with -C only (-D and -d \
     remove at once, as in ipvsadm; `ipvs-manager drain` is the graceful way)";

/// A `restore` that removes more services than this asks first.
pub const RESTORE_ASKS_OVER: usize = 3;

impl RemovalArgs {
    /// The `?grace=` of the replacement: 0 with `--now`.
    fn grace(&self) -> Option<u32> {
        if self.now {
            Some(0)
        } else {
            self.grace
        }
    }

    /// Takes `--yes`, `--now` and `--grace N` out of an ipvsadm command line
    /// (`-C --yes`), where ipvsadm's parser would refuse them; the other
    /// words, in order.
    pub(super) fn take(words: &[String]) -> anyhow::Result<(RemovalArgs, Vec<String>)> {
        let mut args = RemovalArgs::default();
        let mut rest = Vec::new();
        let mut words = words.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "--yes" => args.yes = true,
                "--now" => args.now = true,
                "--grace" => {
                    let value = words
                        .next()
                        .ok_or_else(|| anyhow!("--grace needs a value (90, 60s, 5m)"))?;
                    args.grace = Some(parse_grace(value).map_err(|e| anyhow!("--grace: {e}"))?);
                }
                other => match other.strip_prefix("--grace=") {
                    Some(value) => {
                        args.grace = Some(parse_grace(value).map_err(|e| anyhow!("--grace: {e}"))?);
                    }
                    None => rest.push(word.clone()),
                },
            }
        }
        if args.now && args.grace.is_some() {
            bail!("--now and --grace exclude each other");
        }
        Ok((args, rest))
    }

    pub(super) fn given(&self) -> bool {
        *self != RemovalArgs::default()
    }
}

/// `drain`: take a real server (or a whole service) out of rotation, then
/// remove it when its grace period ends.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("service").required(true)))]
pub struct DrainArgs {
    /// The TCP service, `VIP:PORT` (`[V6]:PORT` for IPv6).
    #[arg(short = 't', long = "tcp-service", group = "service")]
    tcp: Option<String>,
    /// The UDP service.
    #[arg(short = 'u', long = "udp-service", group = "service")]
    udp: Option<String>,
    /// The SCTP service.
    #[arg(long = "sctp-service", group = "service")]
    sctp: Option<String>,
    /// The firewall-mark service.
    #[arg(short = 'f', long = "fwmark-service", group = "service")]
    fwmark: Option<String>,
    /// With `-f`: the IPv6 firewall-mark service.
    #[arg(short = '6', long = "ipv6")]
    ipv6: bool,
    /// The real server, `RIP:PORT`; without it the whole service drains.
    #[arg(short = 'r', long = "real-server")]
    real_server: Option<String>,
    /// How long to drain (`90`, `60s`, `5m`); default: the service's
    /// `drain_grace`, else the node's `DRAIN_GRACE`. `0` removes at once.
    #[arg(long, value_parser = parse_grace)]
    grace: Option<u32>,
    /// `text` or `json` (the API's answer).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// Seconds, bare or with a unit (`humantime`).
fn parse_grace(value: &str) -> Result<u32, String> {
    let seconds = super::parse_timeout(value)?.as_secs();
    u32::try_from(seconds).map_err(|_| "too long".to_string())
}

/// The ipvsadm commands `ipvs-manager` takes as its first word (`-Z` and
/// `--set` only to explain that they are node-local).
const IPVSADM_LONG: [&str; 9] = [
    "--add-service",
    "--edit-service",
    "--delete-service",
    "--add-server",
    "--edit-server",
    "--delete-server",
    "--clear",
    "--zero",
    "--set",
];

/// Whether `word` starts an ipvsadm editing command: `-A`, `-at`, `--clear`…
pub fn is_ipvsadm_command(word: &str) -> bool {
    match word.strip_prefix("--") {
        Some(_) => IPVSADM_LONG.contains(&word.split('=').next().unwrap_or(word)),
        None => word
            .strip_prefix('-')
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| "AEDaedCZ".contains(c)),
    }
}

/// `ipvs-manager -A -t 10.0.0.1:80 -s rr` and the other editing commands,
/// `words` without the program name and without `--server`: the change
/// ipvsadm would make, made to the cluster's desired state.
pub fn ipvsadm(api: &Api, words: &[String]) -> anyhow::Result<ExitCode> {
    let (removing, words) = RemovalArgs::take(words)?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let change = text::parse_command(&words)?;
    if change == Change::Flush {
        return clear(api, &removing);
    }
    if removing.given() {
        bail!(ONLY_WITH_CLEAR);
    }
    let done = apply_change(api, &change)?;
    writeln!(std::io::stdout().lock(), "{done}")?;
    Ok(ExitCode::SUCCESS)
}

/// One change as the REST calls that make it; what was done, in a line.
/// Removals are immediate, as in ipvsadm; `drain` is the graceful way.
fn apply_change(api: &Api, change: &Change) -> anyhow::Result<String> {
    let check = match change {
        Change::AddService(s) | Change::EditService(s) => listing(&s.key),
        Change::DelService(key) | Change::AddDest(key, _) => listing(key),
        Change::EditDest(key, _) | Change::DelDest(key, _) => listing(key),
        _ => "ipvs-manager -Ln".to_string(),
    };
    outcome(send_change(api, change), &change.to_string(), &check)?;
    Ok(done(change))
}

/// The command that lists one service of the desired state
/// (`ipvs-manager -Ln -t 192.0.2.10:80`).
fn listing(key: &ServiceKey) -> String {
    format!("ipvs-manager -Ln {}", text::rule_name(key))
}

fn send_change(api: &Api, change: &Change) -> anyhow::Result<()> {
    let service_path = |key: &ServiceKey| format!("/api/v1/services/{}", ids::service_id(key));
    let server_path = |key: &ServiceKey, dest: &DestKey| {
        format!("{}/servers/{}", service_path(key), ids::server_id(dest))
    };
    match change {
        Change::AddService(service) => {
            let spec = ServiceSpec {
                service: service.clone(),
                servers: Vec::new(),
                options: Default::default(),
                server_checks: Default::default(),
            };
            api.send(
                Method::POST,
                "/api/v1/services",
                Some(&service_request(&spec)),
            )?;
        }
        Change::EditService(service) => {
            // ipvsadm -E sets every service setting (unsaid ones to their
            // defaults) and leaves servers and our own options alone.
            let spec = ServiceSpec {
                service: service.clone(),
                servers: Vec::new(),
                options: Default::default(),
                server_checks: Default::default(),
            };
            let mut body = service_request(&spec);
            if let Some(map) = body.as_object_mut() {
                for field in ["servers", "bind_address", "drain_grace"] {
                    map.remove(field);
                }
            }
            api.send(Method::PATCH, &service_path(&service.key), Some(&body))?;
        }
        Change::DelService(key) => {
            api.send(
                Method::DELETE,
                &format!("{}?grace=0", service_path(key)),
                None,
            )?;
        }
        Change::AddDest(key, dest) => {
            api.send(
                Method::POST,
                &format!("{}/servers", service_path(key)),
                Some(&server_request(dest)),
            )?;
        }
        Change::EditDest(key, dest) => {
            // A merge patch of every field ipvsadm sets: the server's own
            // health check, which ipvsadm cannot express, stays.
            api.send(
                Method::PATCH,
                &server_path(key, &dest.key()),
                Some(&server_request(dest)),
            )?;
        }
        Change::DelDest(key, dest) => {
            api.send(
                Method::DELETE,
                &format!("{}?grace=0", server_path(key, dest)),
                None,
            )?;
        }
        // `clear`, which asks first, sends it.
        Change::Flush => bail!("-C goes through clear()"),
        Change::Zero(_) | Change::SetTimeouts(_) => bail!(NODE_LOCAL),
    }
    Ok(())
}

/// Why `-Z` and `--set` are not cluster commands, and what does them.
const NODE_LOCAL: &str = "counters and timeouts belong to each node's kernel, not to the \
                          cluster's desired state; run `ipvsadm -Z [SERVICE]` (counters) or \
                          `ipvsadm --set TCP TCPFIN UDP` (timeouts) on that node";

/// "added service TCP 10.0.0.1:80", from the change's own description.
fn done(change: &Change) -> String {
    let what = change.to_string();
    for (verb, past) in [
        ("add ", "added "),
        ("edit ", "edited "),
        ("delete ", "deleted "),
        ("flush ", "flushed "),
    ] {
        if let Some(rest) = what.strip_prefix(verb) {
            return format!("{past}{rest}");
        }
    }
    what
}

/// `-C`: every service out of the desired state, draining first (unless
/// `--now`), after asking (unless `--yes`).
fn clear(api: &Api, removing: &RemovalArgs) -> anyhow::Result<ExitCode> {
    let current = api.desired()?;
    let replacement = Replacement::new(&[], removing, false);
    let removal = Removal::of(&replacement.send(api, true)?.plan, &current);
    let mut out = std::io::stdout().lock();
    if removal.services == 0 {
        writeln!(
            out,
            "nothing to clear: the desired state has no service, or only services draining \
             already"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if !removing.yes {
        confirm(&removal)?;
    }
    outcome(
        replacement.send(api, false),
        "clear the desired state",
        "ipvs-manager -Ln",
    )?;
    writeln!(out, "cleared the desired state: {}", removal.how(removing))?;
    Ok(ExitCode::SUCCESS)
}

/// `restore`: reads ipvsadm -R input (or, with `--backup`, a backup) and
/// makes it (or, with `--merge`, the current state changed by it) the
/// desired state in one Raft entry.
pub fn restore(api: &Api, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    // The input first: a file that cannot be read or rules that do not
    // parse are reported before the cluster is asked anything.
    let backup = match &args.backup {
        Some(path) => Some(super::backup::read_file(path)?.1),
        None => None,
    };
    let mut input = String::new();
    if backup.is_none() {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read the rules from stdin")?;
    }
    let current = api.desired()?;
    let (specs, left_out) = match backup {
        Some(restored) if args.merge => (
            super::backup::merged(&current, restored.specs),
            restored.left_out,
        ),
        Some(restored) => (restored.specs, restored.left_out),
        None => (restored(&current, &input, args.merge)?, Vec::new()),
    };
    // A backup says what serves: what it lists is taken back from drains.
    let undrain = args.undrain || args.backup.is_some();
    let replacement = Replacement::new(&specs, &args.removing, undrain);
    let mut sent = replacement.send(api, true)?;
    let removal = Removal::of(&sent.plan, &current);
    if !args.dry_run {
        if removal.services > RESTORE_ASKS_OVER && !args.removing.yes {
            confirm(&removal)?;
        }
        sent = outcome(
            replacement.send(api, false),
            "replace the desired state",
            "ipvs-manager save",
        )?;
    }
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        out.write_all(&sent.body)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !left_out.is_empty() {
        writeln!(
            out,
            "not restored, draining when the backup was taken: {}",
            left_out.join(", ")
        )?;
    }
    out.write_all(plan_text(&sent.plan, args.dry_run)?.as_bytes())?;
    out.write_all(kernel_text(&sent.kernels).as_bytes())?;
    if !args.dry_run && removal.services + removal.servers > 0 {
        writeln!(out, "{}", removal.how(&args.removing))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One `PUT /api/v1/config`: the body, its `?grace=` and `?undrain=`.
struct Replacement {
    body: serde_json::Value,
    grace: Option<u32>,
    undrain: bool,
}

impl Replacement {
    fn new(specs: &[ServiceSpec], removing: &RemovalArgs, undrain: bool) -> Replacement {
        Replacement {
            body: config_request(specs),
            grace: removing.grace(),
            undrain,
        }
    }

    /// Sends it (`dry_run`: for the plan only).
    fn send(&self, api: &Api, dry_run: bool) -> anyhow::Result<Sent> {
        let mut query = Vec::new();
        if dry_run {
            query.push("dry_run=true".to_string());
        }
        if let Some(grace) = self.grace {
            query.push(format!("grace={grace}"));
        }
        if self.undrain {
            query.push("undrain=true".to_string());
        }
        let mut path = "/api/v1/config".to_string();
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let body = api.send(Method::PUT, &path, Some(&self.body))?;
        let unexpected = || "unexpected answer to PUT /api/v1/config";
        let (plan, kernels) = if dry_run {
            let rehearsal: DryRun = serde_json::from_slice(&body).with_context(unexpected)?;
            (rehearsal.desired, rehearsal.kernels)
        } else {
            (
                serde_json::from_slice(&body).with_context(unexpected)?,
                Vec::new(),
            )
        };
        Ok(Sent {
            body,
            plan,
            kernels,
        })
    }
}

/// What a replacement answered: the body, the desired-state plan and, for
/// a dry run, each node's kernel plan.
struct Sent {
    body: Vec<u8>,
    plan: ConfigPlan,
    kernels: Vec<NodePlan>,
}

/// What a replacement removes from the desired state: services (with their
/// servers), and servers of services it keeps; what drains already is not
/// counted (it goes anyway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Removal {
    services: usize,
    servers: usize,
}

impl Removal {
    /// Counted from `plan`, with the servers of the removed services as
    /// `current` has them.
    fn of(plan: &ConfigPlan, current: &DesiredState) -> Removal {
        let of_removed: usize = plan
            .removed
            .iter()
            .filter_map(|id| parse_service_id(id).ok())
            .filter_map(|key| current.services.get(&key))
            .map(|cfg| {
                cfg.servers
                    .keys()
                    .filter(|k| !cfg.draining_servers.contains_key(k))
                    .count()
            })
            .sum();
        let of_changed: usize = plan.changed.iter().map(|c| c.servers_removed.len()).sum();
        Removal {
            services: plan.removed.len(),
            servers: of_removed + of_changed,
        }
    }

    /// What happens to them.
    fn how(&self, removing: &RemovalArgs) -> String {
        match removing.grace() {
            Some(0) => format!("{self} removed at once"),
            Some(grace) => format!("{self} drain (weight 0) for {grace} s, then go"),
            None => format!(
                "{self} drain (weight 0) for their service's drain_grace, else the node's \
                 DRAIN_GRACE, then go"
            ),
        }
    }
}

impl std::fmt::Display for Removal {
    /// `12 services and 96 real servers`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} service{} and {} real server{}",
            self.services,
            s(self.services),
            self.servers,
            s(self.servers)
        )
    }
}

/// Asks on the terminal whether to go ahead with `removal`, as `sudo` asks:
/// on `/dev/tty`, since `restore` reads its input on stdin. Without a
/// terminal (a script, a pipe to stderr) it refuses, naming the counts and
/// `--yes`: nothing is changed either way unless the answer is yes.
fn confirm(removal: &Removal) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal};
    let tty = std::io::stderr()
        .is_terminal()
        .then(|| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/tty")
                .ok()
        })
        .flatten();
    let Some(mut tty) = tty else {
        bail!(
            "this would remove {removal} from the cluster's desired state: nothing changed; \
             add --yes to go ahead (from a terminal, you are asked instead)"
        );
    };
    write!(tty, "{} ", question(removal))?;
    tty.flush()?;
    let mut answer = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut answer)
        .context("cannot read the answer from the terminal")?;
    if !is_yes(&answer) {
        bail!("not confirmed: nothing changed");
    }
    Ok(())
}

/// `remove 12 services and 96 real servers from the cluster's desired
/// state? [y/N]`.
fn question(removal: &Removal) -> String {
    format!("remove {removal} from the cluster's desired state? [y/N]")
}

/// `y` or `yes`, in any case; anything else (an empty line too) is no.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The desired state `input` describes: the changes applied, line by line,
/// to `current` (`merge`) or to an empty table, with ipvsadm's rules (a
/// service is added once, a server needs its service…). Settings ipvsadm
/// cannot express (`bind_address`, `drain_grace`, health checks) stay with the services
/// that remain. An error names the line; nothing is sent then.
pub fn restored(
    current: &DesiredState,
    input: &str,
    merge: bool,
) -> anyhow::Result<Vec<ServiceSpec>> {
    let mut table: BTreeMap<ServiceKey, ServiceConfig> = if merge {
        current
            .services
            .iter()
            .map(|(key, cfg)| (*key, ServiceConfig::clone(cfg)))
            .collect()
    } else {
        BTreeMap::new()
    };
    for (line, change) in text::parse_restore(input)? {
        apply_to(&mut table, current, &change).map_err(|e| anyhow!("line {line}: {e}"))?;
    }
    Ok(table
        .into_values()
        .map(|cfg| ServiceSpec {
            service: cfg.service,
            servers: cfg.servers.into_values().collect(),
            options: cfg.options,
            server_checks: cfg.server_checks,
        })
        .collect())
}

/// One restore line's change to `table`, refused as the kernel refuses it.
fn apply_to(
    table: &mut BTreeMap<ServiceKey, ServiceConfig>,
    current: &DesiredState,
    change: &Change,
) -> anyhow::Result<()> {
    fn service<'t>(
        table: &'t mut BTreeMap<ServiceKey, ServiceConfig>,
        key: &ServiceKey,
        change: &Change,
    ) -> anyhow::Result<&'t mut BTreeMap<DestKey, crate::model::Destination>> {
        table
            .get_mut(key)
            .map(|cfg| &mut cfg.servers)
            .ok_or_else(|| anyhow!("{change}: no such service"))
    }
    match change {
        Change::AddService(s) => {
            if table.contains_key(&s.key) {
                bail!("{change}: the service already exists");
            }
            let mut cfg = ServiceConfig::new(s.clone(), [], 0);
            if let Some(old) = current.services.get(&s.key) {
                cfg.options = old.options.clone();
                cfg.server_checks = old.server_checks.clone();
            }
            table.insert(s.key, cfg);
        }
        Change::EditService(s) => {
            let cfg = table
                .get_mut(&s.key)
                .ok_or_else(|| anyhow!("{change}: no such service"))?;
            cfg.service = s.clone();
        }
        Change::DelService(key) => {
            table
                .remove(key)
                .ok_or_else(|| anyhow!("{change}: no such service"))?;
        }
        Change::AddDest(key, dest) => {
            let servers = service(table, key, change)?;
            if servers.contains_key(&dest.key()) {
                bail!("{change}: the server already exists");
            }
            servers.insert(dest.key(), *dest);
        }
        Change::EditDest(key, dest) => {
            let servers = service(table, key, change)?;
            let slot = servers
                .get_mut(&dest.key())
                .ok_or_else(|| anyhow!("{change}: no such server"))?;
            *slot = *dest;
        }
        Change::DelDest(key, dest) => {
            service(table, key, change)?
                .remove(dest)
                .ok_or_else(|| anyhow!("{change}: no such server"))?;
        }
        Change::Flush => table.clear(),
        Change::Zero(_) | Change::SetTimeouts(_) => bail!("{change}: {NODE_LOCAL}"),
    }
    Ok(())
}

/// What each node's kernel would change, as `diff` prints it, node by node.
pub fn kernel_text(kernels: &[NodePlan]) -> String {
    let mut text = String::new();
    for node in kernels {
        match (&node.error, node.changes.is_empty()) {
            (Some(error), _) => {
                text.push_str(&format!("{}: kernel plan unknown: {error}\n", node.node))
            }
            (None, true) => text.push_str(&format!("{}: kernel unchanged\n", node.node)),
            (None, false) => {
                text.push_str(&format!("{}: kernel\n", node.node));
                for change in &node.changes {
                    text.push_str(&format!("  {} {}\n", change.op, change.change));
                }
            }
        }
    }
    text
}

/// A plan as lines: `+` added, `~` changed (with what), `-` removed.
pub fn plan_text(plan: &ConfigPlan, dry_run: bool) -> anyhow::Result<String> {
    let name = |id: &str| -> anyhow::Result<String> {
        let key = parse_service_id(id).map_err(|e| anyhow!("bad id {id}: {}", e.message()))?;
        Ok(key.to_string())
    };
    let mut out = String::new();
    for id in &plan.added {
        out.push_str(&format!("+ {}\n", name(id)?));
    }
    for change in &plan.changed {
        out.push_str(&format!(
            "~ {}{}\n",
            name(&change.id)?,
            change_text(change)?
        ));
    }
    for id in &plan.removed {
        out.push_str(&format!("- {}\n", name(id)?));
    }
    let total = plan.added.len() + plan.changed.len() + plan.removed.len();
    out.push_str(&format!(
        "{total} service{} {}, {} unchanged{}\n",
        if total == 1 { "" } else { "s" },
        if dry_run { "would change" } else { "changed" },
        plan.unchanged,
        if dry_run {
            " (dry run: nothing committed)"
        } else {
            ""
        }
    ));
    Ok(out)
}

/// `: settings, +RIP:PORT, ~RIP:PORT, -RIP:PORT`.
fn change_text(change: &ServiceChange) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    if change.settings {
        parts.push("settings".to_string());
    }
    for (sign, ids) in [
        ('+', &change.servers_added),
        ('~', &change.servers_changed),
        ('-', &change.servers_removed),
    ] {
        for id in ids {
            let key =
                parse_server_id(id).map_err(|e| anyhow!("bad server id {id}: {}", e.message()))?;
            parts.push(format!("{sign}{key}"));
        }
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(", "))
    })
}

/// `drain -t VIP:PORT [-r RIP:PORT] [--grace 60s]`.
pub fn drain(api: &Api, args: &DrainArgs) -> anyhow::Result<ExitCode> {
    let (key, server) = drain_target(args)?;
    let mut path = format!("/api/v1/services/{}", ids::service_id(&key));
    if let Some(dest) = &server {
        path.push_str(&format!("/servers/{}", ids::server_id(dest)));
    }
    if let Some(grace) = args.grace {
        path.push_str(&format!("?grace={grace}"));
    }
    let what = match &server {
        Some(dest) => format!("{dest} of {key}"),
        None => key.to_string(),
    };
    let body = outcome(
        api.send(Method::DELETE, &path, None),
        &format!("drain {what}"),
        &listing(&key),
    )?;
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        out.write_all(&body)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    // 202 with the drain, or 204 (no body) when the grace was 0.
    let drain = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("draining").cloned())
        .and_then(|d| serde_json::from_value::<DrainView>(d).ok());
    match drain {
        Some(d) => writeln!(
            out,
            "draining {what}: weight 0 until {} ({} s), then removed",
            d.until, d.grace
        )?,
        None => writeln!(out, "removed {what}")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The service (and server) a `drain` names, read by ipvsadm's own parser
/// as the `-D`/`-d` it amounts to, so addresses mean what they mean there.
fn drain_target(args: &DrainArgs) -> anyhow::Result<(ServiceKey, Option<DestKey>)> {
    let (flag, value) = match (&args.tcp, &args.udp, &args.sctp, &args.fwmark) {
        (Some(v), ..) => ("-t", v),
        (_, Some(v), ..) => ("-u", v),
        (_, _, Some(v), _) => ("--sctp-service", v),
        (.., Some(v)) => ("-f", v),
        _ => bail!("name the service with -t, -u, --sctp-service or -f"),
    };
    let mut words = vec![
        if args.real_server.is_some() {
            "-d"
        } else {
            "-D"
        },
        flag,
        value.as_str(),
    ];
    if args.ipv6 {
        words.push("-6");
    }
    if let Some(rs) = &args.real_server {
        words.extend(["-r", rs.as_str()]);
    }
    match text::parse_command(&words)? {
        Change::DelService(key) => Ok((key, None)),
        Change::DelDest(key, dest) => Ok((key, Some(dest))),
        other => Err(anyhow!("unexpected parse of a drain: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Command, Destination, Protocol, VirtualService};

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    fn state() -> DesiredState {
        let mut s = DesiredState::default();
        let mut spec = ServiceSpec {
            server_checks: Default::default(),
            service: VirtualService::new(key(80)),
            servers: vec![Destination::new("10.1.0.1".parse().unwrap(), 80)],
            options: Default::default(),
        };
        spec.options.bind_address = true;
        s.apply(&Command::CreateService(spec), 1);
        s
    }

    #[test]
    fn ipvsadm_commands_are_recognised() {
        for word in [
            "-A", "-E", "-D", "-a", "-e", "-d", "-C", "-Z", "-at", "--clear",
        ] {
            assert!(is_ipvsadm_command(word), "{word}");
        }
        assert!(is_ipvsadm_command("--add-service"));
        for word in ["-h", "-V", "--help", "--server", "list", "-L", "--add"] {
            assert!(!is_ipvsadm_command(word), "{word}");
        }
    }

    #[test]
    fn restore_replaces_keeps_options_and_merge_edits() {
        let current = state();
        let input = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 3\n\
                     -A -t 10.0.0.1:443\n";
        let specs = restored(&current, input, false).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].service.scheduler.as_str(), "rr");
        assert_eq!(specs[0].servers.len(), 1);
        assert_eq!(specs[0].servers[0].weight, 3);
        // bind_address is not in ipvsadm's syntax: it stays with the service.
        assert!(specs[0].options.bind_address);
        assert!(!specs[1].options.bind_address);

        let merged = restored(&current, "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g\n", true).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].servers.len(), 2);
        assert_eq!(merged[0].service.scheduler.as_str(), "wlc");
    }

    #[test]
    fn restore_errors_name_the_line() {
        let current = state();
        let cases = [
            (
                "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80\n",
                false,
                "line 2: add service TCP 10.0.0.1:80: the service already exists",
            ),
            (
                "\n-a -t 10.0.0.1:81 -r 10.1.0.1\n",
                true,
                "line 2: add destination 10.1.0.1:81 to service TCP 10.0.0.1:81: no such service",
            ),
            (
                "-a -t 10.0.0.1:80 -r 10.1.0.1:80\n",
                true,
                "the server already exists",
            ),
            ("-d -t 10.0.0.1:80 -r 10.1.0.9:80\n", true, "no such server"),
            (
                "-Z\n",
                true,
                "line 1: zero all counters: counters and timeouts",
            ),
            ("-A -t 10.0.0.1:80 -s\n", false, "line 1:"),
        ];
        for (input, merge, expected) in cases {
            let err = restored(&current, input, merge).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn clear_takes_its_own_options_out_of_ipvsadm_words() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (args, rest) = RemovalArgs::take(&words(&["-C", "--yes", "--grace", "5m"])).unwrap();
        assert_eq!(rest, words(&["-C"]));
        assert!(args.yes && !args.now);
        assert_eq!(args.grace(), Some(300));
        let (args, rest) = RemovalArgs::take(&words(&["--now", "-C"])).unwrap();
        assert_eq!((args.grace(), rest), (Some(0), words(&["-C"])));
        let (args, _) = RemovalArgs::take(&words(&["-C", "--grace=90"])).unwrap();
        assert_eq!(args.grace(), Some(90));
        let (args, rest) = RemovalArgs::take(&words(&["-a", "-t", "10.0.0.1:80"])).unwrap();
        assert!(!args.given());
        assert_eq!(rest.len(), 3);
        for (bad, expected) in [
            (&["-C", "--grace"][..], "--grace needs a value"),
            (&["-C", "--grace", "soon"][..], "--grace: not a duration"),
            (&["-C", "--now", "--grace", "9"][..], "exclude each other"),
        ] {
            let err = RemovalArgs::take(&words(bad)).unwrap_err().to_string();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }

    #[test]
    fn removals_are_counted_and_asked_about_in_words() {
        let mut current = state();
        let second = ServiceSpec {
            server_checks: Default::default(),
            service: VirtualService::new(key(81)),
            servers: vec![
                Destination::new("10.1.0.1".parse().unwrap(), 81),
                Destination::new("10.1.0.2".parse().unwrap(), 81),
            ],
            options: Default::default(),
        };
        current.apply(&Command::CreateService(second.clone()), 2);
        // A server already draining goes anyway: not counted.
        current.apply(
            &Command::DeleteServer {
                service: key(81),
                server: second.servers[1].key(),
                if_revision: None,
                drain: Some(crate::model::DrainRequest {
                    since_ms: 0,
                    grace: Some(60),
                    default_grace: 30,
                }),
            },
            3,
        );
        let plan = ConfigPlan {
            removed: vec![ids::service_id(&key(81))],
            changed: vec![ServiceChange {
                id: ids::service_id(&key(80)),
                servers_removed: vec!["10.1.0.1-80".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let removal = Removal::of(&plan, &current);
        assert_eq!(
            removal,
            Removal {
                services: 1,
                servers: 2
            }
        );
        assert_eq!(
            question(&removal),
            "remove 1 service and 2 real servers from the cluster's desired state? [y/N]"
        );
        let many = Removal {
            services: 12,
            servers: 1,
        };
        assert_eq!(many.to_string(), "12 services and 1 real server");
        let how = |args: &[&str]| {
            let words: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            many.how(&RemovalArgs::take(&words).unwrap().0)
        };
        assert_eq!(
            how(&["--now"]),
            "12 services and 1 real server removed at once"
        );
        assert_eq!(
            how(&["--grace", "60"]),
            "12 services and 1 real server drain (weight 0) for 60 s, then go"
        );
        assert!(how(&[]).contains("drain_grace, else the node's DRAIN_GRACE"));
        for yes in ["y\n", "Y", " yes \n", "YES"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no", "yep", "y es"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn grace_takes_seconds_or_durations() {
        assert_eq!(parse_grace("90"), Ok(90));
        assert_eq!(parse_grace("60s"), Ok(60));
        assert_eq!(parse_grace("5m"), Ok(300));
        assert!(parse_grace("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn plans_read_as_lines() {
        let plan = ConfigPlan {
            added: vec![ids::service_id(&key(443))],
            changed: vec![ServiceChange {
                id: ids::service_id(&key(80)),
                settings: true,
                servers_added: vec![ids::server_id(&DestKey {
                    addr: "10.1.0.2".parse().unwrap(),
                    port: 80,
                })],
                ..Default::default()
            }],
            removed: vec![],
            unchanged: 4,
        };
        assert_eq!(
            plan_text(&plan, true).unwrap(),
            "+ TCP 10.0.0.1:443\n~ TCP 10.0.0.1:80: settings, +10.1.0.2:80\n\
             2 services would change, 4 unchanged (dry run: nothing committed)\n"
        );
    }
}
