//! `ipvs-manager list`, `save` and `diff`: the cluster's desired state and a node's
//! kernel, read through a node's REST API (`--server`), in ipvsadm's layout.

use super::kernel::ListArgs;
use crate::api::json::{ConfigView, DrainView, KernelTable, NodeHealthView, NodeView};
use crate::api::{parse_server_id, parse_service_id};
use crate::config::Ownership;
use crate::health::{HealthTable, ServerState};
use crate::ipvs::text::{self, ListOptions};
use crate::ipvs::Info;
use crate::model::{Command, DesiredState, DestEntry, Drain, ServiceEntry, ServiceKey};
use crate::reconcile::plan;
use anyhow::{bail, Context};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;

/// `list`: the desired state, or with `--kernel` the node's kernel.
#[derive(Debug, Args)]
pub struct ClusterListArgs {
    /// Show the kernel table of the node `--server` names, not the
    /// cluster's desired state.
    #[arg(long)]
    kernel: bool,
    /// Print the desired state, then its changes as they come (resuming
    /// after a disconnect from the last revision seen), until interrupted.
    #[arg(long, conflicts_with = "kernel")]
    watch: bool,
    #[command(flatten)]
    columns: ListArgs,
}

/// `--output` of a read command.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// `text` (ipvsadm's layout) or `json` (the API's answer, for scripts).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The version line of a listing of the desired state: what the kernels of
/// this generation report.
pub(super) const DESIRED_INFO: Info = Info {
    version: 0x010201,
    conn_tab_size: 4096,
};

/// How the client commands reach a node: the client options.
#[derive(Debug, Clone)]
pub struct Client {
    /// `http://host:port`, `https://host:port`, or `host:port`.
    pub server: String,
    /// The API token sent with every request.
    pub token: Option<String>,
    /// CA certificates (PEM) to trust for https besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a write is sent again before its outcome is unknown.
    pub write_timeout: std::time::Duration,
}

/// A node's REST API.
pub struct Api {
    base: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    token: Option<String>,
    write_timeout: std::time::Duration,
}

impl Api {
    pub fn new(client: &Client) -> anyhow::Result<Api> {
        let (server, token, ca_file) = (
            client.server.as_str(),
            client.token.as_deref(),
            client.ca_file.as_deref(),
        );
        let base = if server.contains("://") {
            server.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", server.trim_end_matches('/'))
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(3))
            .timeout(std::time::Duration::from_secs(30));
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("--ca-file {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--ca-file {}: not PEM certificates", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Api {
            base,
            http,
            runtime,
            token: token.filter(|t| !t.is_empty()).map(str::to_string),
            write_timeout: client.write_timeout,
        })
    }

    pub(super) fn base(&self) -> &str {
        &self.base
    }

    pub(super) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// A request to `url` with the token.
    pub(super) fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// The body of a successful GET; an API error as its message.
    pub fn get(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.send(reqwest::Method::GET, path, None)
    }

    /// A request with an optional JSON body; the answer's body, or the
    /// API's error message. A write (any method but GET) carries an
    /// `Idempotency-Key` and is sent again, with the same key, while the
    /// answer says nothing was done yet or its outcome is unknown, until
    /// a definite answer or [`WRITE_DEADLINE`]; if the outcome is still
    /// unknown then, the error is [`OutcomeUnknown`], never a failure.
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Vec<u8>> {
        if method == reqwest::Method::GET {
            return match self.attempt(method, path, body, None, None) {
                Attempt::Answered(body) => Ok(body),
                Attempt::Refused { error, .. }
                | Attempt::Unreachable(error)
                | Attempt::Unknown { error, .. } => Err(error),
            };
        }
        // Only writes of the desired state are remembered under a key; a
        // membership change whose outcome is unknown is not sent again.
        let keyed = path.starts_with("/api/v1/services") || path.starts_with("/api/v1/config");
        let key = keyed.then(idempotency_key).transpose()?;
        let deadline = std::time::Instant::now() + self.write_timeout;
        // The first answer that left the outcome unknown, and the last one.
        let mut unknown = None;
        let mut last: Option<String>;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let retry = match self.attempt(method.clone(), path, body, key.as_deref(), Some(left)) {
                Attempt::Answered(body) => return Ok(body),
                // Definite, after the key made every earlier attempt count
                // once: the answer stands.
                Attempt::Refused { error, retry: None } => return Err(error),
                // A wrong --server, or a node down: said at once, unless an
                // earlier attempt may have written (then the node may be
                // restarting, and the key will tell).
                Attempt::Unreachable(error) if unknown.is_none() => return Err(error),
                Attempt::Unreachable(error) => {
                    last = Some(crate::errors::chain(error.as_ref()).to_string());
                    RETRY_PAUSE
                }
                Attempt::Refused {
                    error,
                    retry: Some(after),
                } => {
                    if unknown.is_none() && std::time::Instant::now() + after >= deadline {
                        return Err(error);
                    }
                    last = Some(crate::errors::chain(error.as_ref()).to_string());
                    after
                }
                Attempt::Unknown { error, retry } => {
                    let answer = crate::errors::chain(error.as_ref()).to_string();
                    unknown.get_or_insert(answer);
                    last = None;
                    if key.is_none() {
                        break;
                    }
                    retry
                }
            };
            if std::time::Instant::now() + retry >= deadline {
                break;
            }
            std::thread::sleep(retry);
        }
        Err(OutcomeUnknown {
            unknown: unknown.unwrap_or_default(),
            last,
            retried: key.map(|_| self.write_timeout),
        }
        .into())
    }

    /// One request; `key`: its `Idempotency-Key`; `timeout`: at most this
    /// long (the client's own limit otherwise).
    fn attempt(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        key: Option<&str>,
        timeout: Option<std::time::Duration>,
    ) -> Attempt {
        let url = format!("{}{path}", self.base);
        let write = method != reqwest::Method::GET;
        self.runtime.block_on(async {
            let mut req = self.http.request(method, &url);
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            if let Some(timeout) = timeout {
                req = req.timeout(timeout.max(std::time::Duration::from_secs(1)));
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let r = match req.send().await {
                Ok(r) => r,
                // Nothing was delivered: a node down or restarting.
                Err(e) if e.is_connect() => {
                    return Attempt::Unreachable(unreachable(&self.base, &e))
                }
                // Sent, perhaps received: the write may have happened.
                Err(e) if write => {
                    return Attempt::Unknown {
                        error: anyhow::anyhow!(
                            "no answer from {}: {}",
                            self.base,
                            crate::errors::chain(&e)
                        ),
                        retry: RETRY_PAUSE,
                    }
                }
                Err(e) => return Attempt::refused(unreachable(&self.base, &e)),
            };
            let status = r.status();
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(RETRY_PAUSE, |s| {
                    std::time::Duration::from_secs(s.clamp(1, 5))
                });
            let json = r
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/json"));
            let body = match r.bytes().await {
                Ok(body) => body,
                Err(e) if write => {
                    return Attempt::Unknown {
                        error: anyhow::anyhow!(
                            "the answer from {} was cut: {}",
                            self.base,
                            crate::errors::chain(&e)
                        ),
                        retry: RETRY_PAUSE,
                    }
                }
                Err(e) => {
                    return Attempt::refused(anyhow::anyhow!(
                        "reading {url}: {}",
                        crate::errors::chain(&e)
                    ))
                }
            };
            // Every answer of the API with a body is JSON; anything else is
            // some other server.
            let foreign = || {
                Attempt::refused(anyhow::anyhow!(
                    "{} answered {status} with {}, which does not look like an ipvs-manager \
                     API: {WHAT_SERVER}",
                    self.base,
                    what_body(&body)
                ))
            };
            if status.is_success() {
                if !body.is_empty() && !json {
                    return foreign();
                }
                return Attempt::Answered(body.to_vec());
            }
            let Some((code, message)) = api_error(&body) else {
                return foreign();
            };
            // Only the Raft port signs requests between nodes.
            if message.starts_with("refused by the cluster secret") {
                return Attempt::refused(anyhow::anyhow!(
                    "{status}: {message} ({} is a node's Raft port, not its API: {WHAT_SERVER})",
                    self.base
                ));
            }
            let said = anyhow::anyhow!("{status}: {message}");
            use crate::api::ErrorCode::*;
            match code {
                // The write may have been committed (or was, and this node
                // lags): the same key tells.
                Some(OutcomeUnknown | NotApplied) if write => Attempt::Unknown {
                    error: said,
                    retry: retry_after,
                },
                // Refused before anything was proposed; may pass later.
                Some(NoLeader | NoQuorum | Unavailable | Overloaded | StoreUnavailable)
                    if write =>
                {
                    Attempt::Refused {
                        error: said,
                        retry: Some(retry_after),
                    }
                }
                _ => Attempt::refused(said),
            }
        })
    }

    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.get(path)?;
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer to GET {path}"))
    }

    /// The cluster's desired state, drains included.
    pub fn desired(&self) -> anyhow::Result<DesiredState> {
        let body = self.get("/api/v1/config")?;
        desired_from(&body)
    }
}

/// The API's JSON error, when the answer is one: its code (`None`: one
/// this build does not know) and message.
fn api_error(body: &[u8]) -> Option<(Option<crate::api::ErrorCode>, String)> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let error = &value["error"];
    let code = serde_json::from_value(error["code"].clone()).ok();
    Some((code, error["message"].as_str()?.to_string()))
}

/// How long a write is sent again, with its key, before the CLI gives up
/// and says its outcome is unknown (`--write-timeout`'s default).
pub const WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The pause before sending again when the answer gave none.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// How one request ended.
enum Attempt {
    /// 2xx: the body.
    Answered(Vec<u8>),
    /// Nothing was done; `retry`: it may pass if sent again after that long.
    Refused {
        error: anyhow::Error,
        retry: Option<std::time::Duration>,
    },
    /// No connection: nothing was delivered.
    Unreachable(anyhow::Error),
    /// A write that may or may not have happened.
    Unknown {
        error: anyhow::Error,
        retry: std::time::Duration,
    },
}

impl Attempt {
    /// Refused for good: sent again, it would be refused again.
    fn refused(error: anyhow::Error) -> Attempt {
        Attempt::Refused { error, retry: None }
    }
}

/// A write whose outcome is not known: it may or may not have been
/// applied (and may still be). The CLI says so, how to check, and exits
/// with status 3.
#[derive(Debug, thiserror::Error)]
#[error(
    "no definite answer{}: {unknown}{}",
    match retried {
        Some(limit) => format!(
            " in {} of sending it again with the same Idempotency-Key (--write-timeout)",
            humantime::format_duration(*limit)
        ),
        None => String::new(),
    },
    match last {
        Some(last) => format!("; then: {last}"),
        None => String::new(),
    }
)]
pub struct OutcomeUnknown {
    /// The first answer that left the outcome unknown.
    pub unknown: String,
    /// The last answer, when it came later and said nothing was done (by
    /// that attempt: the first may still have been).
    pub last: Option<String>,
    /// How long it was sent again (`None`: it could not be, having no key).
    pub retried: Option<std::time::Duration>,
}

/// The exit status of a command whose write has an unknown outcome.
pub const EXIT_OUTCOME_UNKNOWN: u8 = 3;

/// `result` of a write described by `what` ("add service TCP
/// 192.0.2.10:80"): on failure, "cannot …" only when nothing was done;
/// "outcome unknown: …" with `check`, the command that shows whether it
/// was, when that is not known.
pub fn outcome<T>(result: anyhow::Result<T>, what: &str, check: &str) -> anyhow::Result<T> {
    result.map_err(|e| {
        if e.downcast_ref::<OutcomeUnknown>().is_some() {
            e.context(format!(
                "outcome unknown: {what} may or may not have been done (it may still be); \
                 check with `{check}`"
            ))
        } else {
            e.context(format!("cannot {what}"))
        }
    })
}

/// A fresh `Idempotency-Key`: 128 random bits, in hex.
fn idempotency_key() -> anyhow::Result<String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random numbers for an Idempotency-Key"))?;
    Ok(hex::encode(bytes))
}

/// The error for a request that got no answer at all: the address tried,
/// why (the innermost cause: refused, unknown host, timed out), and where
/// that address comes from.
fn unreachable(base: &str, e: &reqwest::Error) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let why = if e.is_timeout() {
        format!("no answer in time: {cause}")
    } else {
        cause.to_string()
    };
    // rustls names a certificate it does not trust; the address is fine.
    if why.contains("certificate") {
        return anyhow::anyhow!(
            "cannot reach {base} ({why}): its TLS certificate is not trusted; give the CA \
             that signed it with --ca-file (or IPVS_MANAGER_CA_FILE)"
        );
    }
    anyhow::anyhow!(
        "cannot reach {base} ({why}): no ipvs-manager API answers there; check --server or \
         IPVS_MANAGER_SERVER (default {}), which must name a running node's API \
         (host:SERVER_PORT)",
        super::DEFAULT_SERVER
    )
}

/// What `--server` must name, for an address that answers but not as the
/// API does.
const WHAT_SERVER: &str = "--server (or IPVS_MANAGER_SERVER) must name a node's API, \
                           host:SERVER_PORT (2221 by default), not its RAFT_PORT or another \
                           service";

/// A short description of a body that is not the API's: empty, an HTML
/// page, or its first characters.
fn what_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "an empty body".to_string()
    } else if ["<!doctype html", "<html"].iter().any(|start| {
        text.get(..start.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(start))
    }) {
        "an HTML page".to_string()
    } else {
        let first: String = text.chars().take(60).collect();
        format!("{first:?}")
    }
}

/// Rebuilds the desired state from `GET /api/v1/config`: the services as a
/// `PUT` would take them, then the drains the views show.
pub fn desired_from(body: &[u8]) -> anyhow::Result<DesiredState> {
    let specs = crate::api::validate::parse_config(body)
        .map_err(|e| anyhow::anyhow!("the desired state does not parse: {}", e.message()))?;
    let mut state = DesiredState::default();
    state.apply(&Command::ReplaceAll(specs), 0);
    let views: ConfigView = serde_json::from_slice(body)?;
    for view in views.services {
        let key =
            parse_service_id(&view.id).map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
        let Some(cfg) = state.services.get_mut(&key).map(std::sync::Arc::make_mut) else {
            continue;
        };
        cfg.revision = view.revision;
        cfg.draining = view.draining.as_ref().map(drain).transpose()?;
        for server in &view.servers {
            if let Some(d) = &server.draining {
                let id = parse_server_id(&server.id)
                    .map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
                cfg.draining_servers.insert(id, drain(d)?);
            }
        }
    }
    Ok(state)
}

fn drain(view: &DrainView) -> anyhow::Result<Drain> {
    let until = humantime::parse_rfc3339(&view.until)
        .with_context(|| format!("bad drain deadline {:?}", view.until))?;
    let until_ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Drain {
        since_ms: until_ms.saturating_sub(u64::from(view.grace) * 1000),
        grace: view.grace,
    })
}

/// The desired state as the kernels should hold it now: draining servers
/// at weight 0, finished drains gone.
pub fn desired_entries(desired: &DesiredState, now_ms: u64) -> Vec<ServiceEntry> {
    desired
        .services
        .values()
        .filter_map(|cfg| plan::target(cfg, &Default::default(), now_ms))
        .map(|t| ServiceEntry {
            service: t.service,
            stats: Default::default(),
            destinations: t.dests.into_values().map(DestEntry::new).collect(),
        })
        .collect()
}

pub fn list(api: &Api, args: &ClusterListArgs) -> anyhow::Result<ExitCode> {
    let opts = args.columns.options();
    if args.watch {
        return super::watch::list(api, args.columns.output, &opts);
    }
    let mut out = std::io::stdout().lock();
    if args.kernel {
        let body = api.get("/api/v1/node/kernel")?;
        if args.columns.output == Output::Json {
            return print_json(&mut out, &body);
        }
        let table: KernelTable = serde_json::from_slice(&body)
            .context("unexpected answer to GET /api/v1/node/kernel")?;
        out.write_all(text::list(&table.info, &table.services, &opts).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let body = api.get("/api/v1/config")?;
    if args.columns.output == Output::Json {
        return print_json(&mut out, &body);
    }
    out.write_all(desired_listing(api, &body, &opts, None)?.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `ipvs-manager -L [-t|-u|-f SERVICE] [columns]`: the desired state as
/// `ipvsadm -Ln` shows it, or one service of it as `ipvsadm -Ln -t …` does
/// (no version line; a service the desired state does not have is an
/// error, ipvsadm's "No such service").
pub fn list_desired(
    api: &Api,
    opts: &ListOptions,
    only: Option<&ServiceKey>,
) -> anyhow::Result<ExitCode> {
    let body = api.get("/api/v1/config")?;
    let listing = desired_listing(api, &body, opts, only)?;
    std::io::stdout().lock().write_all(listing.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The listing of the desired state in `body` (`GET /api/v1/config`), with
/// the `--server` node's counters and its notes (drains, health), of every
/// service or of `only`.
fn desired_listing(
    api: &Api,
    body: &[u8],
    opts: &ListOptions,
    only: Option<&ServiceKey>,
) -> anyhow::Result<String> {
    let desired = desired_from(body)?;
    let now = crate::model::clock::unix_ms();
    let mut entries = desired_entries(&desired, now);
    if let Some(key) = only {
        entries.retain(|e| e.service.key == *key);
        if entries.is_empty() {
            bail!("no service {key} in the cluster's desired state (ipvsadm: No such service)");
        }
    }
    // Counters come from the node's kernel. The plain listing shows
    // connection counts too, but a node that programs no kernel
    // (IPVS_KERNEL=off) still lists the desired state, with zeros.
    let counted = opts.stats || opts.rate || opts.persistent_conn;
    match api.get_json::<KernelTable>("/api/v1/node/kernel") {
        Ok(table) => with_counters(&mut entries, &table.services),
        Err(e) if counted => return Err(e.context("the counters come from the node's kernel")),
        Err(_) => {}
    }
    // This node's health checks: servers it finds down are marked.
    let health = api
        .get_json::<NodeView>("/api/v1/node")
        .map(|n| n.health)
        .unwrap_or_default();
    let down: BTreeMap<(String, String), String> = health
        .servers
        .into_iter()
        .filter(|p| p.health.state == "down")
        .map(|p| ((p.service, p.server), p.health.error.unwrap_or_default()))
        .collect();
    let all_down: BTreeSet<String> = health.all_down.into_iter().collect();
    let note = |key: &ServiceKey, dest: Option<&crate::model::DestKey>| {
        let cfg = desired.services.get(key)?;
        let id = crate::api::service_id(key);
        let drain = match dest {
            None => cfg.draining,
            Some(d) => cfg.draining_servers.get(d).copied(),
        };
        let mut notes = Vec::new();
        if let Some(drain) = drain {
            let left = drain.deadline_ms().saturating_sub(now).div_ceil(1000);
            notes.push(format!("(draining, {left}s left)"));
        }
        match dest {
            None if all_down.contains(&id) => notes.push("(all servers down)".to_string()),
            Some(d) => {
                if let Some(error) = down.get(&(id, crate::api::server_id(d))) {
                    notes.push(format!("(down: {error})"));
                }
            }
            None => {}
        }
        (!notes.is_empty()).then(|| notes.join(" "))
    };
    let listing = text::list_with_notes(&DESIRED_INFO, &entries, opts, &note);
    Ok(match only {
        // ipvsadm prints no version line for one service.
        Some(_) => listing
            .split_once('\n')
            .map_or(listing.clone(), |(_, rest)| rest.to_string()),
        None => listing,
    })
}

fn print_json(out: &mut impl Write, body: &[u8]) -> anyhow::Result<ExitCode> {
    out.write_all(body)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// Copies the kernel's counters of each service and server into the
/// desired entries that match them.
fn with_counters(entries: &mut [ServiceEntry], kernel: &[ServiceEntry]) {
    let kernel: BTreeMap<ServiceKey, &ServiceEntry> =
        kernel.iter().map(|e| (e.service.key, e)).collect();
    for entry in entries {
        let Some(k) = kernel.get(&entry.service.key) else {
            continue;
        };
        entry.stats = k.stats;
        for dest in &mut entry.destinations {
            if let Some(kd) = k
                .destinations
                .iter()
                .find(|d| d.dest.key() == dest.dest.key())
            {
                dest.active_conns = kd.active_conns;
                dest.inactive_conns = kd.inactive_conns;
                dest.persistent_conns = kd.persistent_conns;
                dest.stats = kd.stats;
            }
        }
    }
}

/// `save`: the desired state in `ipvsadm -Sn` syntax (draining servers at
/// weight 0, as the kernels hold them), keeping what ipvsadm's save drops
/// (thresholds, tunnel options), as `kernel save` does. `--output json`:
/// `GET /api/v1/config`, which `PUT /api/v1/config` takes back.
pub fn save(api: &Api, args: &OutputArgs) -> anyhow::Result<ExitCode> {
    let body = api.get("/api/v1/config")?;
    let mut out = std::io::stdout().lock();
    if args.output == Output::Json {
        return print_json(&mut out, &body);
    }
    let desired = desired_from(&body)?;
    let entries = desired_entries(&desired, crate::model::clock::unix_ms());
    out.write_all(text::save(&entries).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// What the node's reconciler would change to make its kernel match the
/// desired state, one line each (`+` add, `~` edit in place, `-` delete),
/// and the foreign services it leaves alone. Exit status 1 when the kernel
/// differs, as diff(1).
pub fn diff(api: &Api, args: &OutputArgs) -> anyhow::Result<ExitCode> {
    let desired = api.desired()?;
    let table: KernelTable = api.get_json("/api/v1/node/kernel")?;
    let node: NodeView = api.get_json("/api/v1/node")?;
    let ownership = Ownership::named(&node.reconcile.ownership);
    let kernel: BTreeMap<ServiceKey, ServiceEntry> = table
        .services
        .into_iter()
        .map(|e| (e.service.key, e))
        .collect();
    let owned: BTreeSet<ServiceKey> = table.owned.into_iter().collect();
    let now = crate::model::clock::unix_ms();
    // The node's health checks lower weights on purpose: not a difference.
    let health = health_table(&node.health)?;
    let plan = plan::plan(&desired, &kernel, None, &owned, ownership, &health, now);
    let mut out = std::io::stdout().lock();
    let code = if plan.changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.output == Output::Json {
        let changes: Vec<_> = plan
            .changes
            .iter()
            .map(|c| serde_json::json!({"op": c.sign().to_string(), "change": c.to_string()}))
            .collect();
        let foreign: Vec<String> = plan.foreign.iter().map(|k| k.to_string()).collect();
        let report = serde_json::json!({
            "in_sync": plan.changes.is_empty(),
            "changes": changes,
            "foreign": foreign,
        });
        writeln!(out, "{report}")?;
        return Ok(code);
    }
    for change in &plan.changes {
        writeln!(out, "{} {change}", change.sign())?;
    }
    for key in &plan.foreign {
        writeln!(
            out,
            "  foreign service {key}: not ipvs-manager's, left alone"
        )?;
    }
    Ok(code)
}

/// A node's health view as the table its reconciler works from.
fn health_table(view: &NodeHealthView) -> anyhow::Result<HealthTable> {
    let mut table = HealthTable::default();
    for probe in &view.servers {
        let service = parse_service_id(&probe.service)
            .map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
        let server =
            parse_server_id(&probe.server).map_err(|e| anyhow::anyhow!(e.message().to_string()))?;
        let since_ms = probe
            .health
            .since
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        table.servers.insert(
            (service, server),
            ServerState {
                up: probe.health.state == "up",
                since_ms,
            },
        );
    }
    Ok(table)
}

/// `cluster …`: the members, adding one, removing one.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Leader, term and every member with its reconcile status.
    Status {
        /// `text` (a table) or `json` (the API's answer).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Adds a node (it must be running; a new node normally joins by itself
    /// through RAFT_LEADER).
    Join {
        /// Its RAFT_NODE_ID.
        id: String,
        /// host:port of its Raft transport.
        #[arg(long)]
        raft_addr: String,
        /// host:port of its HTTP API.
        #[arg(long)]
        api_addr: String,
    },
    /// Removes a member by its RAFT_NODE_ID.
    Remove { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A member's announcement in one cell: `-` with ANNOUNCE=none, else the
/// mode, its state and how many of its addresses it announces.
fn announce_column(a: &crate::api::json::AnnounceView) -> String {
    if a.mode == "none" {
        return "-".into();
    }
    let announced = a.vips.iter().filter(|v| v.announced).count();
    format!("{} {} {announced}/{}", a.mode, a.state, a.vips.len())
}

/// What `cluster status` says of a member's announcement below the table:
/// its problem, what it announces (or owns) and why not the rest, its BGP
/// sessions, lease, sync daemons and the kernel settings that are wrong.
fn announce_lines(a: &crate::api::json::AnnounceView) -> Vec<String> {
    let mut lines = Vec::new();
    if a.mode == "none" {
        return lines;
    }
    if let Some(problem) = &a.problem {
        lines.push(format!("announce {}: {problem}", a.state));
    }
    let verb = if a.mode == "l2" { "holds" } else { "announces" };
    let held: Vec<String> = a
        .vips
        .iter()
        .filter(|v| v.announced)
        .map(|v| v.address.to_string())
        .collect();
    if !held.is_empty() {
        lines.push(format!("{verb} {} ({})", held.join(", "), a.mode));
    }
    for v in a.vips.iter().filter(|v| !v.announced) {
        let owner = v
            .owner
            .as_ref()
            .map(|o| format!(" (owner {o})"))
            .unwrap_or_default();
        let why = v.why_not.as_deref().unwrap_or("not announced");
        lines.push(format!("not {}{owner}: {why}", v.address));
    }
    for p in a.bgp.iter().flat_map(|b| &b.peers) {
        let mut line = format!("bgp peer {} AS{}: {}", p.address, p.asn, p.state);
        if let Some(bfd) = &p.bfd {
            line.push_str(&format!(", BFD {bfd}"));
        }
        if let Some(n) = p.exported {
            line.push_str(&format!(", {n} routes exported"));
        }
        lines.push(line);
    }
    if let Some(l2) = &a.l2 {
        lines.push(match l2.lease_left_ms {
            Some(ms) if l2.lease_held => format!(
                "lease held on {} ({:.1} s left)",
                l2.interface,
                ms as f64 / 1000.0
            ),
            _ => format!("NO LEASE on {}: it holds no address", l2.interface),
        });
    }
    if let Some(sync) = &a.sync {
        let roles: Vec<&str> = [("master", sync.master), ("backup", sync.backup)]
            .into_iter()
            .filter_map(|(role, on)| on.then_some(role))
            .collect();
        let mut line = format!(
            "sync daemon on {} (id {}): {}",
            sync.interface,
            sync.sync_id,
            if roles.is_empty() {
                "not running".to_string()
            } else {
                roles.join(" and ")
            }
        );
        if let Some(problem) = &sync.problem {
            line.push_str(&format!(": {problem}"));
        }
        lines.push(line);
    }
    for s in a.sysctls.iter().filter(|s| !s.ok) {
        lines.push(format!(
            "sysctl {} is {}, wants {} ({}): {}",
            s.name,
            s.value.as_deref().unwrap_or("unreadable"),
            s.wanted,
            s.why,
            s.problem.as_deref().unwrap_or("")
        ));
    }
    lines
}

pub fn cluster(api: &Api, cmd: &ClusterCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ClusterCommand::Status { output } => {
            let body = api.get("/api/v1/cluster")?;
            if *output == Output::Json {
                out.write_all(&body)?;
                writeln!(out)?;
                return Ok(ExitCode::SUCCESS);
            }
            let view: crate::api::json::ClusterView = serde_json::from_slice(&body)?;
            writeln!(
                out,
                "leader {}, term {}, commit index {}",
                view.leader_id.as_deref().unwrap_or("(none)"),
                view.term,
                view.commit_index
            )?;
            if let Some(problem) = &view.quorum.problem {
                writeln!(out, "NO QUORUM: {problem}")?;
            }
            writeln!(
                out,
                "{:<16} {:<22} {:<8} {:<9} {:>8} {:>10}  {:<18} kernel",
                "member", "api", "role", "state", "applied", "programmed", "announce"
            )?;
            for m in &view.members {
                let (role, programmed, announce, kernel) = match &m.node {
                    Some(n) => (
                        n.role.as_str(),
                        n.reconcile.programmed_index.to_string(),
                        announce_column(&n.announce),
                        match (n.reconcile.pending, &n.reconcile.error) {
                            (_, Some(e)) => format!("{}: {e}", n.reconcile.kernel),
                            (0, None) => n.reconcile.kernel.clone(),
                            (pending, None) => {
                                format!("{}: {pending} changes failing", n.reconcile.kernel)
                            }
                        },
                    ),
                    None => ("?", "-".to_string(), "-".to_string(), "-".to_string()),
                };
                let ready = m.node.as_ref().is_none_or(|n| n.problems.is_empty());
                writeln!(
                    out,
                    "{:<16} {:<22} {:<8} {:<9} {:>8} {:>10}  {announce:<18} {kernel}",
                    m.id,
                    m.api_addr,
                    role,
                    match (m.reachable, ready) {
                        (false, _) => "down",
                        (true, true) => "up",
                        (true, false) => "not ready",
                    },
                    m.last_applied.map_or("-".to_string(), |a| a.to_string()),
                    programmed,
                )?;
            }
            // Why each member that answered is not ready, as /readyz says.
            for m in &view.members {
                for p in m.node.iter().flat_map(|n| &n.problems) {
                    writeln!(out, "{}: not ready ({}): {}", m.id, p.check, p.detail)?;
                }
            }
            for m in &view.members {
                if let Some(n) = &m.node {
                    for line in announce_lines(&n.announce) {
                        writeln!(out, "{}: {line}", m.id)?;
                    }
                }
            }
        }
        ClusterCommand::Join {
            id,
            raft_addr,
            api_addr,
        } => {
            let body = serde_json::json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr});
            outcome(
                api.send(reqwest::Method::POST, "/api/v1/cluster/join", Some(&body)),
                &format!("add {id} to the cluster"),
                "ipvs-manager cluster status",
            )?;
            writeln!(out, "{id} is a member")?;
        }
        ClusterCommand::Remove { id } => {
            outcome(
                api.send(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/cluster/members/{id}"),
                    None,
                ),
                &format!("remove {id} from the cluster"),
                "ipvs-manager cluster status",
            )?;
            writeln!(out, "{id} removed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::{AnnounceView, BgpPeerView, BgpView, L2View, SysctlView, VipView};

    fn vip(address: &str, announced: bool, why_not: Option<&str>) -> VipView {
        VipView {
            address: address.parse().unwrap(),
            services: vec![],
            can_serve: why_not.is_none(),
            announced,
            owner: None,
            since: None,
            why_not: why_not.map(String::from),
        }
    }

    #[test]
    fn a_bgp_member_says_what_it_announces_and_why_not_the_rest() {
        let view = AnnounceView {
            mode: "bgp".into(),
            state: "announcing".into(),
            vips: vec![
                vip("192.0.2.10", true, None),
                vip(
                    "192.0.2.11",
                    false,
                    Some("every server of tcp-192.0.2.11-80 is down"),
                ),
            ],
            bgp: Some(BgpView {
                speaker: "bird".into(),
                local_as: 65001,
                router_id: "192.0.2.1".parse().unwrap(),
                table: 221,
                bfd_detect_ms: Some(300),
                peers: vec![BgpPeerView {
                    address: "192.0.2.254".parse().unwrap(),
                    asn: 65000,
                    state: "Established".into(),
                    since: None,
                    exported: Some(1),
                    bfd: Some("Up".into()),
                }],
            }),
            sysctls: vec![SysctlView {
                name: "net.ipv4.vs.sloppy_tcp".into(),
                wanted: "1".into(),
                value: Some("0".into()),
                why: "flows move between nodes".into(),
                ok: false,
                problem: Some("differs, and SYSCTLS=leave".into()),
            }],
            ..Default::default()
        };
        assert_eq!(announce_column(&view), "bgp announcing 1/2");
        assert_eq!(
            announce_lines(&view),
            [
                "announces 192.0.2.10 (bgp)",
                "not 192.0.2.11: every server of tcp-192.0.2.11-80 is down",
                "bgp peer 192.0.2.254 AS65000: Established, BFD Up, 1 routes exported",
                "sysctl net.ipv4.vs.sloppy_tcp is 0, wants 1 (flows move between nodes): \
                 differs, and SYSCTLS=leave",
            ]
        );
        assert_eq!(announce_column(&AnnounceView::default()), "-");
        assert!(announce_lines(&AnnounceView::default()).is_empty());
    }

    #[test]
    fn an_l2_member_without_its_lease_says_so() {
        let mut standby = vip("192.0.2.10", false, Some("owned by node2"));
        standby.owner = Some("node2".into());
        let view = AnnounceView {
            mode: "l2".into(),
            state: "failed".into(),
            problem: Some("no lease: the leader has not answered for 1.2 s".into()),
            vips: vec![standby],
            l2: Some(L2View {
                interface: "eth0".into(),
                lease_ms: 1000,
                lease_held: false,
                lease_left_ms: None,
                last_announcement: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            announce_lines(&view),
            [
                "announce failed: no lease: the leader has not answered for 1.2 s",
                "not 192.0.2.10 (owner node2): owned by node2",
                "NO LEASE on eth0: it holds no address",
            ]
        );
    }
}
