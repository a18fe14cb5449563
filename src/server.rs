//! The HTTP API server on SERVER_PORT. Every request goes through one
//! dispatcher driven by [`api::ROUTES`] (the one list of routes), so the
//! routing table, the OpenAPI document and the handlers cannot drift apart.
//! Reads come from the committed state this node has applied; writes go
//! through Raft (forwarded to the leader when needed) and answer once this
//! node has applied them, so a client reads its own writes on the node it
//! wrote to.
//!
//! Nodes never call each other's API: what they ask one another (a node's
//! report, a join or removal forwarded to the leader) is served on the Raft
//! port by [`peer_routes`], so the API can be closed to everyone but clients
//! (tokens, loopback) without cutting the cluster apart.

use crate::api::auth::{self, Policy};
use crate::api::error::check_body_size;
use crate::api::json::ReconcileStatus;
use crate::api::validate::MAX_DRAIN_GRACE;
use crate::api::{self, http, json, view, ApiError, Operation};
use crate::cluster::membership::{self, JoinRequest};
use crate::cluster::peer_auth::{self, Peers};
use crate::cluster::{
    leader, read_index, WriteError, Writer, MEMBERS_PATH, NODE_KERNEL_PATH, NODE_PATH,
};
use crate::model::{Command, DesiredState, DrainRequest, ServiceConfig, ServiceKey};
use crate::raft::{node_id, NodeInfo, Raft};
use crate::reconcile::{TableError, TableReader};
use crate::store::StateWatch;
use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What every handler needs.
pub struct AppState {
    pub writer: Writer,
    pub state: StateWatch,
    /// The signed HTTP client for the other nodes' Raft ports.
    pub peers: Peers,
    pub me: NodeInfo,
    /// Seconds a removal drains when neither the request nor the service
    /// names a grace period (`DRAIN_GRACE`).
    pub drain_grace: u32,
    /// The reconciler's status on this node.
    pub reconcile: tokio::sync::watch::Receiver<ReconcileStatus>,
    /// The kernel table as the reconciler reads it (`None` with
    /// `IPVS_KERNEL=off`).
    pub kernel: Option<TableReader>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This node's health checks.
    pub health: Arc<crate::health::Health>,
    /// The other members' health checks, as last polled
    /// ([`poll_peer_health`]), by node id.
    pub peer_health: std::sync::Mutex<BTreeMap<String, Vec<json::ProbeView>>>,
    /// Who may call what; replaced when the token file is reloaded.
    pub auth: std::sync::RwLock<Arc<Policy>>,
    pub limits: Limits,
}

/// How much of the API a node answers at once. A request over a limit is
/// answered 503 `overloaded` at once, before its body is read: a flood
/// costs a refusal each, never memory or a queue.
pub struct Limits {
    requests: Arc<tokio::sync::Semaphore>,
    /// Requests with bodies above [`api::MAX_BODY_BYTES`] (a whole
    /// configuration, up to 16 MiB each).
    large: Arc<tokio::sync::Semaphore>,
}

/// Large bodies read at once: with the default 256 requests of 1 MiB, a
/// node buffers at most about 300 MiB of bodies.
const MAX_LARGE_BODIES: usize = 2;

/// How long a request may take, a backstop above the longest wait a
/// handler makes (a 30 s long poll).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

impl Limits {
    pub fn new(max_requests: usize) -> Limits {
        Limits {
            requests: Arc::new(tokio::sync::Semaphore::new(max_requests)),
            large: Arc::new(tokio::sync::Semaphore::new(MAX_LARGE_BODIES)),
        }
    }

    /// Permits for one request of `route`, or the 503 to answer.
    fn admit(
        &self,
        route: &api::Route,
    ) -> Result<Vec<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        // The liveness probe always answers: a busy node is alive.
        if route.operation == Operation::Health {
            return Ok(Vec::new());
        }
        let mut permits = vec![self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("requests", 1))?];
        if route.max_body > api::MAX_BODY_BYTES {
            permits.push(
                self.large
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| ApiError::overloaded("large bodies", 2))?,
            );
        }
        Ok(permits)
    }
}

impl AppState {
    fn raft(&self) -> &Raft {
        self.writer.raft()
    }

    fn desired(&self) -> Arc<DesiredState> {
        self.state.current().desired
    }

    fn policy(&self) -> Arc<Policy> {
        self.auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn is_leader(&self) -> bool {
        leader(self.raft()).is_some_and(|(id, _)| id == node_id(&self.me.name))
    }
}

type Reply = Result<HttpResponse, ApiError>;

/// The single entry point: route, then handle.
pub async fn dispatch(req: HttpRequest, body: Payload, app: Data<AppState>) -> HttpResponse {
    let started = std::time::Instant::now();
    let mut operation = "unrouted";
    let reply = match api::match_route(req.method().as_str(), req.path()) {
        Ok((route, params)) => {
            let params: Vec<(&'static str, String)> = params
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect();
            operation = route.operation.id();
            let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
            // Before the body is read: a caller without the right token
            // gets nothing, not even a parse of what it sent; then the
            // limits, so that only admitted requests hold a body.
            let admitted = app
                .policy()
                .check(route.operation.access(), authorization)
                .and_then(|()| app.limits.admit(route));
            match admitted {
                Ok(_permits) => {
                    let answered = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        let bytes = read_body(body, route.max_body).await?;
                        handle(route.operation, &req, &params, &bytes, &app).await
                    });
                    answered.await.unwrap_or_else(|_| {
                        Err(ApiError::unavailable(
                            1,
                            format!("the request took more than {} s", REQUEST_TIMEOUT.as_secs()),
                        ))
                    })
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let response = reply.unwrap_or_else(|e| error_response(&e));
    app.metrics
        .request(operation, response.status().as_u16(), started.elapsed());
    response
}

/// How long a client has to send its body once admitted: a slow sender
/// holds one of the node's [`Limits`] for no longer.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

async fn read_body(body: Payload, limit: usize) -> Result<actix_web::web::Bytes, ApiError> {
    // Routes without a body still drain a small one, so a stray body is
    // refused rather than left on the connection.
    let limit = limit.max(1024);
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, body.to_bytes_limited(limit)).await else {
        return Err(ApiError::new(
            api::ErrorCode::MalformedJson,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    match read {
        Ok(Ok(bytes)) => {
            check_body_size(bytes.len(), limit)?;
            Ok(bytes)
        }
        Ok(Err(e)) => Err(ApiError::new(
            api::ErrorCode::MalformedJson,
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(ApiError::body_too_large(limit)),
    }
}

fn error_response(e: &ApiError) -> HttpResponse {
    let mut r = HttpResponse::build(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    if let Some(secs) = e.retry_after() {
        r.insert_header(("Retry-After", secs.to_string()));
    }
    if e.code() == api::ErrorCode::Unauthorized {
        r.insert_header((WWW_AUTHENTICATE, auth::CHALLENGE));
    }
    r.content_type("application/json").body(e.to_json())
}

fn json_response(status: StatusCode, value: &impl Serialize) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse::build(status)
            .content_type("application/json")
            .body(body),
        Err(e) => error_response(&ApiError::internal(e)),
    }
}

fn param<'a>(params: &'a [(&'static str, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn query<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.query_string()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn if_match(req: &HttpRequest) -> Result<Option<u64>, ApiError> {
    let header = match req.headers().get("If-Match") {
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::at(
                api::ErrorCode::InvalidHeader,
                "If-Match",
                "not a valid header value",
            )
        })?),
        None => None,
    };
    http::parse_if_match(header)
}

fn service<'a>(state: &'a DesiredState, key: &ServiceKey) -> Result<&'a ServiceConfig, ApiError> {
    state
        .services
        .get(key)
        .map(Arc::as_ref)
        .ok_or_else(|| ApiError::no_such_service(key))
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NoLeader => ApiError::no_leader(1),
        other => ApiError::unavailable(1, crate::errors::chain(&other)),
    }
}

/// Refuses, without writing to the log, a command that the committed state
/// already refuses (duplicate, missing resource, stale If-Match): a dry run
/// of the state machine on a copy of the touched service. The state machine
/// still decides at apply time, so a race with another writer is caught
/// there.
async fn precheck(app: &AppState, cmd: &Command) -> Result<(), ApiError> {
    if refusal(&app.desired(), cmd).is_ok() {
        return Ok(());
    }
    // This node may lag the leader: confirm the refusal on fresh state.
    linearize(app).await?;
    refusal(&app.desired(), cmd)
}

fn refusal(state: &DesiredState, cmd: &Command) -> Result<(), ApiError> {
    if let Command::ReplaceAll(_) | Command::FinishDrain { .. } | Command::Batch(_) = cmd {
        return Ok(());
    }
    // Only the touched service matters: share just that one.
    let mut scratch = DesiredState::default();
    for key in cmd.services() {
        if let Some(cfg) = state.services.get(&key) {
            scratch.services.insert(key, cfg.clone());
        }
    }
    api::outcome(scratch.apply(cmd, u64::MAX)).map(|_| ())
}

/// How long a write waits for this node to apply what the leader committed.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Commits `cmd`, waits until this node has applied it (and, with
/// `?wait=applied` or `?wait=quorum`, until the nodes have programmed it
/// into their kernels), and returns the state machine's answer (a refusal
/// as an error) with the state after it.
async fn commit(
    app: &AppState,
    req: &HttpRequest,
    cmd: Command,
) -> Result<(u64, Arc<DesiredState>), ApiError> {
    let wait = Wait::parse(query(req, "wait"))?;
    let outcome = app.writer.write(cmd).await.map_err(write_error)?;
    let mut rx = app.state.subscribe();
    let applied = tokio::time::timeout(
        APPLY_WAIT,
        rx.wait_for(|c| c.applied_index() >= outcome.index),
    )
    .await;
    let desired = match applied {
        Ok(Ok(c)) => c.desired.clone(),
        _ => {
            return Err(ApiError::unavailable(
                1,
                "the write committed but this node has not applied it yet",
            ))
        }
    };
    let revision = api::outcome(outcome.result)?;
    if let Some(wait) = wait {
        wait_programmed(app, outcome.index, wait).await?;
    }
    Ok((revision, desired))
}

/// Which nodes a write waits for (`?wait=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Every member (`applied`).
    All,
    /// A majority of the voters (`quorum`).
    Quorum,
}

impl Wait {
    fn parse(value: Option<&str>) -> Result<Option<Wait>, ApiError> {
        match value {
            None => Ok(None),
            Some("applied") => Ok(Some(Wait::All)),
            Some("quorum") => Ok(Some(Wait::Quorum)),
            Some(other) => Err(ApiError::at(
                api::ErrorCode::InvalidQuery,
                "?wait",
                format!("wait must be applied (every node) or quorum, got {other:?}"),
            )),
        }
    }
}

/// How long `?wait=` waits for the nodes' kernels.
const PROGRAM_WAIT: Duration = Duration::from_secs(10);

/// Waits until the nodes `wait` names report `index` programmed into their
/// kernels (each node answers a long poll on `GET /api/v1/node`).
async fn wait_programmed(app: &AppState, index: u64, wait: Wait) -> Result<(), ApiError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let metrics = app.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members: Vec<(u64, NodeInfo)> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let needed = match wait {
        Wait::All => members.len(),
        Wait::Quorum => voters.len() / 2 + 1,
    };
    let mut pending: FuturesUnordered<_> = members
        .iter()
        .map(|(id, node)| {
            let id = *id;
            async move { (id, node.name.clone(), programmed(app, node, index).await) }
        })
        .collect();
    let mut done = 0;
    let mut missing = Vec::new();
    while let Some((id, name, ok)) = pending.next().await {
        let counts = wait == Wait::All || voters.contains(&id);
        match ok {
            true if counts => done += 1,
            true => {}
            false => missing.push(name),
        }
        if done >= needed {
            return Ok(());
        }
    }
    missing.sort();
    Err(ApiError::new(
        api::ErrorCode::NotProgrammed,
        format!(
            "the write committed at index {index}, but {} did not program it into the kernel \
             within {} s; see GET /api/v1/cluster for each node's reconcile status",
            if missing.is_empty() {
                "too few nodes".to_string()
            } else {
                missing.join(", ")
            },
            PROGRAM_WAIT.as_secs()
        ),
    ))
}

/// Whether `node` reports `index` programmed within [`PROGRAM_WAIT`].
async fn programmed(app: &AppState, node: &NodeInfo, index: u64) -> bool {
    if node.name == app.me.name {
        let mut rx = app.reconcile.clone();
        let reached = rx.wait_for(|s| s.programmed_index >= index);
        return matches!(tokio::time::timeout(PROGRAM_WAIT, reached).await, Ok(Ok(_)));
    }
    // Long polls until the deadline; a failed request (a pooled connection
    // the node had just closed, a node restarting) is retried.
    let deadline = tokio::time::Instant::now() + PROGRAM_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let url = format!(
            "http://{}{NODE_PATH}?programmed={index}&timeout_ms={}",
            node.raft_addr,
            left.as_millis()
        );
        let answer = app
            .peers
            .get(&url)
            .timeout(left + Duration::from_secs(1))
            .send()
            .await;
        if let Ok(r) = answer {
            if let Ok(view) = r.error_for_status().map(|r| r.json::<json::NodeView>()) {
                if let Ok(view) = view.await {
                    if view.reconcile.programmed_index >= index {
                        return true;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/v1/node`: this node's report; with `?programmed=N`, answered
/// once the reconciler has programmed index N (or after `?timeout_ms`, at
/// most 30 s; the caller reads `programmed_index` to know which).
async fn get_node(app: &AppState, req: &HttpRequest) -> Result<json::NodeView, ApiError> {
    let number = |name: &str| -> Result<Option<u64>, ApiError> {
        query(req, name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::at(
                        api::ErrorCode::InvalidQuery,
                        format!("?{name}"),
                        format!("{name} must be a whole number, got {v:?}"),
                    )
                })
            })
            .transpose()
    };
    if let Some(index) = number("programmed")? {
        let timeout = number("timeout_ms")?.unwrap_or(10_000).min(30_000);
        let mut rx = app.reconcile.clone();
        let reached = rx.wait_for(|s| s.programmed_index >= index);
        let _ = tokio::time::timeout(Duration::from_millis(timeout), reached).await;
    }
    Ok(node_report(app))
}

/// How long a reader waits for the reconciler to read the kernel table:
/// it reads between passes, and a pass over a large table takes a while.
const TABLE_WAIT: Duration = Duration::from_secs(10);

/// This node's kernel table and owned set, as the reconciler reads them
/// now (after the pass in progress, if any).
async fn kernel_table(app: &AppState) -> Result<Arc<json::KernelTable>, ApiError> {
    let Some(kernel) = &app.kernel else {
        return Err(ApiError::new(
            api::ErrorCode::NotFound,
            "this node programs no kernel (IPVS_KERNEL=off)",
        ));
    };
    kernel.read(TABLE_WAIT).await.map_err(|e| match e {
        TableError::Kernel(reason) => ApiError::unavailable(1, reason),
        not_read => ApiError::unavailable(1, not_read.to_string()),
    })
}

/// The metrics exposition: this node's kernel table read now (when it
/// programs one; a failed read leaves the kernel series out, never the
/// scrape).
async fn scrape(app: &AppState) -> String {
    let kernel = match &app.kernel {
        Some(kernel) => kernel.read(TABLE_WAIT).await.ok(),
        None => None,
    };
    let raft = app.raft().metrics().borrow().clone();
    let reconcile = app.reconcile.borrow().clone();
    let health = app.health.snapshot();
    let all_down = all_down(&app.desired(), &app.health.table());
    app.metrics.render(&crate::metrics::Scrape {
        raft: &raft,
        reconcile: &reconcile,
        kernel: kernel.as_deref().map(|t| t.services.as_slice()),
        health: &health,
        all_down: &all_down,
    })
}

/// Services whose probed servers are all down on this node.
fn all_down(desired: &DesiredState, table: &crate::health::HealthTable) -> Vec<ServiceKey> {
    if table.servers.is_empty() {
        return Vec::new();
    }
    desired
        .services
        .values()
        .filter(|cfg| crate::health::all_down(cfg, table))
        .map(|cfg| cfg.service.key)
        .collect()
}

/// This node's health checks as `GET /api/v1/node` shows them, with the
/// weight each server has in this node's kernel because of them.
pub fn local_health(app: &AppState) -> json::NodeHealthView {
    let desired = app.desired();
    let table = app.health.table();
    let now = crate::model::clock::unix_ms();
    let mut targets = BTreeMap::new();
    let servers = app
        .health
        .snapshot()
        .into_iter()
        .map(|((skey, dkey), probed)| {
            let weight = desired.services.get(&skey).and_then(|cfg| {
                let target = targets
                    .entry(skey)
                    .or_insert_with(|| crate::reconcile::plan::target(cfg, &table, now));
                target.as_ref()?.dests.get(&dkey).map(|d| d.weight)
            });
            let t = &probed.tracker;
            json::ProbeView {
                service: api::service_id(&skey),
                server: api::server_id(&dkey),
                target: probed.target.to_string(),
                kind: probed.check.kind.name().to_string(),
                health: json::ServerHealthView {
                    state: if t.up { "up" } else { "down" }.to_string(),
                    since: t.since_ms.map(|ms| crate::model::clock::rfc3339_ms(ms)),
                    checks: t.checks,
                    latency_us: t.latency_us,
                    error: t.error.clone(),
                    weight,
                },
            }
        })
        .collect();
    json::NodeHealthView {
        servers,
        all_down: all_down(&desired, &table)
            .iter()
            .map(api::service_id)
            .collect(),
    }
}

/// Adds every node's view of each probed server to `views`: this node's
/// now, the others' as last polled.
fn with_health(app: &AppState, views: &mut [json::ServiceView]) {
    let mut by_server: BTreeMap<(String, String), BTreeMap<String, json::ServerHealthView>> =
        BTreeMap::new();
    let mine = local_health(app).servers;
    let peers = app
        .peer_health
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    for (node, probes) in std::iter::once((app.me.name.clone(), mine)).chain(peers) {
        for p in probes {
            by_server
                .entry((p.service, p.server))
                .or_default()
                .insert(node.clone(), p.health);
        }
    }
    if by_server.is_empty() {
        return;
    }
    for view in views {
        for server in &mut view.servers {
            if let Some(health) = by_server.remove(&(view.id.clone(), server.id.clone())) {
                server.health = health;
            }
        }
    }
}

/// Polls the other members' health checks every two seconds while any
/// server is probed, for the `health` of each server in service responses.
pub async fn poll_peer_health(app: Data<AppState>, mut stop: impl Future<Output = ()> + Unpin) {
    loop {
        let probed = app
            .desired()
            .services
            .values()
            .any(|cfg| cfg.servers.keys().any(|k| cfg.check_of(k).is_some()));
        let mut polled = BTreeMap::new();
        if probed {
            let members = cluster_members(&app);
            for (name, raft_addr) in members {
                if name == app.me.name {
                    continue;
                }
                let url = format!("http://{raft_addr}{NODE_PATH}");
                let got = app
                    .peers
                    .get(&url)
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await;
                if let Ok(resp) = got {
                    if let Ok(node) = resp.json::<json::NodeView>().await {
                        polled.insert(name, node.health.servers);
                    }
                }
            }
        }
        if let Ok(mut peers) = app.peer_health.lock() {
            *peers = polled;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut stop => return,
        }
    }
}

/// Every member's name and Raft address (where peers ask each other), from
/// the Raft membership.
fn cluster_members(app: &AppState) -> Vec<(String, String)> {
    let metrics = app.raft().metrics().borrow().clone();
    metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(_, n)| (n.name.clone(), n.raft_addr.clone()))
        .collect()
}

/// This node's Raft state and reconcile status.
fn node_report(app: &AppState) -> json::NodeView {
    let metrics = app.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let me = node_id(&app.me.name);
    let role = match metrics.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Candidate => "candidate",
        _ if !membership.voter_ids().any(|id| id == me) => "learner",
        _ => "follower",
    };
    json::NodeView {
        id: app.me.name.clone(),
        api_addr: app.me.api_addr.clone(),
        raft_addr: app.me.raft_addr.clone(),
        role: role.to_string(),
        term: metrics.current_term,
        leader_id: metrics
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| n.name.clone())),
        last_applied: metrics.last_applied.map_or(0, |l| l.index),
        reconcile: app.reconcile.borrow().clone(),
        health: local_health(app),
    }
}

fn with_etag(
    mut r: actix_web::HttpResponseBuilder,
    revision: u64,
) -> actix_web::HttpResponseBuilder {
    r.insert_header(("ETag", http::etag(revision)));
    r
}

fn service_reply(status: StatusCode, cfg: &ServiceConfig, location: bool) -> HttpResponse {
    let mut r = with_etag(HttpResponse::build(status), cfg.revision);
    if location {
        r.insert_header(("Location", http::service_location(&cfg.service.key)));
    }
    match serde_json::to_vec(&view::service_view(cfg)) {
        Ok(body) => r.content_type("application/json").body(body),
        Err(e) => error_response(&ApiError::internal(e)),
    }
}

async fn handle(
    op: Operation,
    req: &HttpRequest,
    params: &[(&'static str, String)],
    body: &[u8],
    app: &AppState,
) -> Reply {
    use Operation::*;
    let consistent = http::query_flag("consistent", query(req, "consistent"))?;
    if consistent
        && matches!(
            op,
            ListServices | GetService | ListServers | GetServer | GetConfig
        )
    {
        linearize(app).await?;
    }
    match op {
        Health => Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        )),
        Ready => ready(app),
        OpenApi => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(api::openapi::DOCUMENT)),
        ListServices => {
            let mut views = view::services_view(&app.desired());
            with_health(app, &mut views);
            Ok(json_response(StatusCode::OK, &views))
        }
        GetService => {
            let key = api::parse_service_id(param(params, "id"))?;
            let desired = app.desired();
            let cfg = service(&desired, &key)?;
            let mut views = [view::service_view(cfg)];
            with_health(app, &mut views);
            let [view] = views;
            Ok(with_etag(HttpResponse::Ok(), cfg.revision).json(view))
        }
        CreateService => {
            let spec = api::validate::parse_service_create(body)?;
            let key = spec.service.key;
            precheck(app, &Command::CreateService(spec.clone())).await?;
            let (_, desired) = commit(app, req, Command::CreateService(spec)).await?;
            Ok(service_reply(
                StatusCode::CREATED,
                service(&desired, &key)?,
                true,
            ))
        }
        ReplaceService | PatchService => {
            if op == PatchService {
                // Read-modify-write: merge onto what the leader committed.
                linearize(app).await?;
            }
            let key = api::parse_service_id(param(params, "id"))?;
            let current = service(&app.desired(), &key)?.clone();
            let wanted = if_match(req)?;
            let ((service_cfg, options), if_revision) = if op == ReplaceService {
                (
                    api::validate::parse_service_replace(body, &current)?,
                    wanted,
                )
            } else {
                // A patch is a read-modify-write: guard it even without If-Match.
                (
                    api::validate::parse_service_patch(body, &current)?,
                    wanted.or(Some(current.revision)),
                )
            };
            let cmd = Command::UpdateService {
                service: service_cfg,
                options,
                if_revision,
            };
            precheck(app, &cmd).await?;
            let (_, desired) = commit(app, req, cmd).await?;
            Ok(service_reply(
                StatusCode::OK,
                service(&desired, &key)?,
                false,
            ))
        }
        DeleteService => {
            let key = api::parse_service_id(param(params, "id"))?;
            let drain = drain(app, req)?;
            let cmd = Command::DeleteService {
                key,
                if_revision: if_match(req)?,
                drain,
            };
            precheck(app, &cmd).await?;
            let (_, desired) = commit(app, req, cmd).await?;
            match desired.services.get(&key) {
                // Draining: the service stays, shown with its deadline.
                Some(cfg) => Ok(service_reply(StatusCode::ACCEPTED, cfg, false)),
                None => Ok(HttpResponse::NoContent().finish()),
            }
        }
        ListServers => {
            let key = api::parse_service_id(param(params, "id"))?;
            let desired = app.desired();
            let cfg = service(&desired, &key)?;
            let mut views = [view::service_view(cfg)];
            with_health(app, &mut views);
            let [view] = views;
            Ok(json_response(StatusCode::OK, &view.servers))
        }
        GetServer => {
            let key = api::parse_service_id(param(params, "id"))?;
            let server = api::parse_server_id(param(params, "server_id"))?;
            let desired = app.desired();
            let cfg = service(&desired, &key)?;
            let dest = cfg
                .servers
                .get(&server)
                .ok_or_else(|| ApiError::no_such_server(&key, &server))?;
            let _ = dest;
            let r = with_etag(HttpResponse::Ok(), cfg.revision);
            Ok(server_body(r, cfg, &server))
        }
        CreateServer => {
            let key = api::parse_service_id(param(params, "id"))?;
            let (dest, health_check) = api::validate::parse_server_create(body, &key)?;
            if let Some(cfg) = app.desired().services.get(&key) {
                api::validate::not_the_fallback(&cfg.options, &dest.key())?;
            }
            let cmd = Command::CreateServer {
                service: key,
                server: dest,
                if_revision: if_match(req)?,
                health_check,
            };
            precheck(app, &cmd).await?;
            let (revision, desired) = commit(app, req, cmd).await?;
            let mut r = with_etag(HttpResponse::Created(), revision);
            r.insert_header(("Location", http::server_location(&key, &dest.key())));
            Ok(committed_server(r, &desired, &key, &dest.key()))
        }
        ReplaceServer | PatchServer => {
            if op == PatchServer {
                linearize(app).await?;
            }
            let key = api::parse_service_id(param(params, "id"))?;
            let server = api::parse_server_id(param(params, "server_id"))?;
            let desired = app.desired();
            let cfg = service(&desired, &key)?;
            let current = *cfg
                .servers
                .get(&server)
                .ok_or_else(|| ApiError::no_such_server(&key, &server))?;
            let wanted = if_match(req)?;
            let ((dest, health_check), if_revision) = if op == ReplaceServer {
                (
                    api::validate::parse_server_replace(body, &key, &server)?,
                    wanted,
                )
            } else {
                (
                    api::validate::parse_server_patch(
                        body,
                        &key,
                        &current,
                        cfg.server_checks.get(&server),
                    )?,
                    wanted.or(Some(cfg.revision)),
                )
            };
            let cmd = Command::UpdateServer {
                service: key,
                server: dest,
                if_revision,
                health_check,
            };
            precheck(app, &cmd).await?;
            let (revision, desired) = commit(app, req, cmd).await?;
            Ok(committed_server(
                with_etag(HttpResponse::Ok(), revision),
                &desired,
                &key,
                &server,
            ))
        }
        DeleteServer => {
            let key = api::parse_service_id(param(params, "id"))?;
            let server = api::parse_server_id(param(params, "server_id"))?;
            let drain = drain(app, req)?;
            let cmd = Command::DeleteServer {
                service: key,
                server,
                if_revision: if_match(req)?,
                drain,
            };
            precheck(app, &cmd).await?;
            let (revision, desired) = commit(app, req, cmd).await?;
            match desired.services.get(&key) {
                Some(cfg) if cfg.draining_servers.contains_key(&server) => Ok(server_body(
                    with_etag(HttpResponse::Accepted(), revision),
                    cfg,
                    &server,
                )),
                _ => Ok(HttpResponse::NoContent().finish()),
            }
        }
        GetConfig => Ok(json_response(
            StatusCode::OK,
            &view::config_view(&app.desired()),
        )),
        ReplaceConfig => {
            let specs = api::validate::parse_config(body)?;
            let plan = view::plan_config(&app.desired(), &specs);
            if !http::query_flag("dry_run", query(req, "dry_run"))? {
                commit(app, req, Command::ReplaceAll(specs)).await?;
            }
            Ok(json_response(StatusCode::OK, &plan))
        }
        GetCluster => Ok(json_response(StatusCode::OK, &cluster_view(app).await)),
        GetNode => Ok(json_response(StatusCode::OK, &get_node(app, req).await?)),
        GetNodeKernel => Ok(json_response(StatusCode::OK, &kernel_table(app).await?)),
        GetMemberKernel => member_kernel(app, param(params, "node_id")).await,
        Metrics => Ok(HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(scrape(app).await)),
        JoinCluster => {
            // With a cluster secret, only a node that holds it may join
            // (the node itself, signing its request), whatever the token.
            peer_auth::verify_http(app.peers.auth(), req, body).map_err(|refusal| {
                ApiError::new(
                    api::ErrorCode::Unauthorized,
                    format!("this cluster has a CLUSTER_SECRET and only a node holding it may join: {refusal}"),
                )
            })?;
            let join = api::validate::parse_join(body)?;
            join_cluster(app, &join).await
        }
        RemoveMember => remove_member(app, param(params, "node_id")).await,
        Ui => ui_reply(req, None),
        UiAsset => ui_reply(req, Some(param(params, "asset"))),
    }
}

/// `GET /` and `GET /ui/{asset}`: an embedded file of the web UI.
fn ui_reply(req: &HttpRequest, asset: Option<&str>) -> Reply {
    let if_none_match = req
        .headers()
        .get("If-None-Match")
        .and_then(|v| v.to_str().ok());
    let served = api::ui::serve(asset, if_none_match)?;
    let mut r = HttpResponse::build(
        StatusCode::from_u16(served.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in api::ui::HEADERS {
        r.insert_header((*name, *value));
    }
    r.insert_header(("ETag", served.asset.etag()));
    r.content_type(served.asset.content_type);
    Ok(r.body(served.body()))
}

/// `GET /api/v1/cluster/members/{node_id}/kernel`: a member's kernel table,
/// read here for this node and relayed from the member's Raft port
/// ([`NODE_KERNEL_PATH`], a signed peer request) for the others, so that
/// the web UI (served by one node, talking only to it) shows every node's
/// counters. Only members are asked: the address comes from the
/// membership, never the request.
async fn member_kernel(app: &AppState, name: &str) -> Reply {
    if name == app.me.name {
        return Ok(json_response(StatusCode::OK, &kernel_table(app).await?));
    }
    let metrics = app.raft().metrics().borrow().clone();
    let member = metrics
        .membership_config
        .membership()
        .nodes()
        .find(|(_, n)| n.name == name)
        .map(|(_, n)| n.raft_addr.clone());
    let Some(raft_addr) = member else {
        return Err(ApiError::new(
            api::ErrorCode::NotFound,
            format!("{name:?} is not a member of this cluster"),
        ));
    };
    let resp = app
        .peers
        .get(&format!("http://{raft_addr}{NODE_KERNEL_PATH}"))
        .timeout(MEMBER_KERNEL_WAIT)
        .send()
        .await
        .map_err(|e| ApiError::unavailable(1, format!("member {name} did not answer: {e}")))?;
    relay(resp).await
}

/// How long the relay waits for a member's kernel table: the UI polls, so a
/// node that is down should cost one short wait per poll, not a stall.
const MEMBER_KERNEL_WAIT: Duration = Duration::from_secs(3);

/// The drain a DELETE asks for: `?grace=` seconds if given; the state
/// machine falls back to the service's `drain_grace`, then to this node's
/// `DRAIN_GRACE` (0: delete at once). The start is this node's clock.
fn drain(app: &AppState, req: &HttpRequest) -> Result<Option<DrainRequest>, ApiError> {
    let grace = http::query_seconds("grace", query(req, "grace"), MAX_DRAIN_GRACE)?;
    Ok(Some(DrainRequest {
        since_ms: crate::model::clock::unix_ms(),
        grace,
        default_grace: app.drain_grace,
    }))
}

/// A server of `cfg` as the response body.
fn server_body(
    mut r: actix_web::HttpResponseBuilder,
    cfg: &ServiceConfig,
    server: &crate::model::DestKey,
) -> HttpResponse {
    let Some(view) = view::server_of(cfg, server) else {
        return error_response(&ApiError::no_such_server(&cfg.service.key, server));
    };
    match serde_json::to_vec(&view) {
        Ok(body) => r.content_type("application/json").body(body),
        Err(e) => error_response(&ApiError::internal(e)),
    }
}

/// A server just written, from the state the write produced.
fn committed_server(
    r: actix_web::HttpResponseBuilder,
    desired: &DesiredState,
    key: &ServiceKey,
    server: &crate::model::DestKey,
) -> HttpResponse {
    match desired.services.get(key) {
        Some(cfg) => server_body(r, cfg, server),
        None => error_response(&ApiError::no_such_service(key)),
    }
}

/// `?consistent=true`: confirm leadership (on the leader) or wait until this
/// node has applied the leader's commit index, so the read that follows
/// sees every write acknowledged before it.
async fn linearize(app: &AppState) -> Result<(), ApiError> {
    let Some(target) = read_index(app.raft(), &app.peers).await else {
        return Err(ApiError::no_leader(1));
    };
    let mut rx = app.state.subscribe();
    let caught_up = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|c| c.applied_index() >= target))
        .await
        .is_ok_and(|r| r.is_ok());
    if caught_up {
        Ok(())
    } else {
        Err(ApiError::unavailable(1, "this node is behind the leader"))
    }
}

fn ready(app: &AppState) -> Reply {
    let metrics = app.raft().metrics().borrow().clone();
    let member = metrics
        .membership_config
        .membership()
        .get_node(&node_id(&app.me.name))
        .is_some();
    // A committed vote means an elected leader this node follows; a node
    // that lost its leader starts an election and its vote is uncommitted.
    if metrics.current_leader.is_some() && metrics.vote.is_committed() && member {
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        ))
    } else {
        Err(ApiError::unavailable(
            1,
            "not yet a member of a cluster with a leader",
        ))
    }
}

async fn cluster_view(app: &AppState) -> json::ClusterView {
    let metrics = app.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let names: std::collections::BTreeMap<u64, &NodeInfo> =
        membership.nodes().map(|(id, n)| (*id, n)).collect();
    let replication = metrics.replication.clone().unwrap_or_default();
    let me = node_id(&app.me.name);
    let reports = names.iter().map(|(id, node)| {
        let is_me = *id == me;
        let url = format!("http://{}{NODE_PATH}", node.raft_addr);
        async move {
            if is_me {
                return Some(node_report(app));
            }
            let r = app
                .peers
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            r.json::<json::NodeView>().await.ok()
        }
    });
    let reports = futures_util::future::join_all(reports).await;
    let members = names
        .iter()
        .zip(reports)
        .map(|((id, node), report)| json::MemberView {
            id: node.name.clone(),
            raft_addr: node.raft_addr.clone(),
            api_addr: node.api_addr.clone(),
            voter: voters.contains(id),
            last_applied: match &report {
                Some(r) => Some(r.last_applied),
                None => replication.get(id).and_then(|m| m.map(|l| l.index)),
            },
            reachable: report.is_some(),
            node: report,
        })
        .collect();
    json::ClusterView {
        leader_id: metrics
            .current_leader
            .and_then(|id| names.get(&id).map(|n| n.name.clone())),
        term: metrics.current_term,
        commit_index: metrics.last_applied.map_or(0, |l| l.index),
        members,
    }
}

async fn join_cluster(app: &AppState, join: &JoinRequest) -> Reply {
    if app.is_leader() {
        membership::add_member(app.raft(), join)
            .await
            .map_err(membership_error)?;
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"joined": join.id}),
        ));
    }
    let Some((_, leader_node)) = leader(app.raft()) else {
        return Err(ApiError::no_leader(1));
    };
    let url = format!("http://{}{}", leader_node.raft_addr, membership::JOIN_PATH);
    let resp = app
        .peers
        .post_json(&url, join)
        .map_err(ApiError::internal)?
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(|e| ApiError::unavailable(1, e))?;
    relay(resp).await
}

async fn remove_member(app: &AppState, name: &str) -> Reply {
    if app.is_leader() {
        membership::remove_member(app.raft(), name)
            .await
            .map_err(membership_error)?;
        return Ok(HttpResponse::NoContent().finish());
    }
    let Some((_, leader_node)) = leader(app.raft()) else {
        return Err(ApiError::no_leader(1));
    };
    let resp = app
        .peers
        .delete(&format!(
            "http://{}{MEMBERS_PATH}/{name}",
            leader_node.raft_addr
        ))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| ApiError::unavailable(1, e))?;
    relay(resp).await
}

/// Passes a forwarded request's answer back to the client.
async fn relay(resp: reqwest::Response) -> Reply {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = resp
        .bytes()
        .await
        .map_err(|e| ApiError::unavailable(1, e))?;
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_vec()))
}

fn membership_error(e: membership::MembershipError) -> ApiError {
    use membership::MembershipError::*;
    match e {
        NotMember(name) => ApiError::new(
            api::ErrorCode::NotFound,
            format!("{name:?} is not a member of this cluster"),
        ),
        IdCollision { .. } | LastVoter(_) => {
            ApiError::new(api::ErrorCode::AlreadyExists, e.to_string())
        }
        NotLeader => ApiError::no_leader(1),
        Raft(_) => ApiError::unavailable(1, crate::errors::chain(&e)),
    }
}

/// The routes peers use on RAFT_PORT (beside the Raft RPCs): this node's
/// report, and the leader's side of joins and removals. A new node joins
/// through either port: `RAFT_LEADER` may name a member's API or its Raft
/// address.
pub fn peer_routes(cfg: &mut actix_web::web::ServiceConfig) {
    use actix_web::web;
    cfg.route(NODE_PATH, web::get().to(peer_node))
        .route(NODE_KERNEL_PATH, web::get().to(peer_kernel))
        .route(membership::JOIN_PATH, web::post().to(peer_join))
        .route(
            &format!("{MEMBERS_PATH}/{{name}}"),
            web::delete().to(peer_remove),
        );
}

async fn peer_node(req: HttpRequest, app: Data<AppState>) -> HttpResponse {
    match get_node(&app, &req).await {
        Ok(view) => json_response(StatusCode::OK, &view),
        Err(e) => error_response(&e),
    }
}

async fn peer_kernel(app: Data<AppState>) -> HttpResponse {
    match kernel_table(&app).await {
        Ok(table) => json_response(StatusCode::OK, &table),
        Err(e) => error_response(&e),
    }
}

async fn peer_join(body: Payload, app: Data<AppState>) -> HttpResponse {
    let joined = async {
        let bytes = read_body(body, api::MAX_BODY_BYTES).await?;
        let join = api::validate::parse_join(&bytes)?;
        join_cluster(&app, &join).await
    };
    joined.await.unwrap_or_else(|e| error_response(&e))
}

async fn peer_remove(name: actix_web::web::Path<String>, app: Data<AppState>) -> HttpResponse {
    remove_member(&app, &name)
        .await
        .unwrap_or_else(|e| error_response(&e))
}
