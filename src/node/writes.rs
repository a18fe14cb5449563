//! The write protocol. A write is refused early when the committed state
//! already refuses it ([`precheck`]: nothing reaches the log), committed
//! through Raft by the [`crate::cluster::Writer`] (here, or forwarded to the
//! leader), and answered once this node has applied it, so a client reads
//! its own writes on the node it wrote to; with `?wait=` also once the
//! nodes have programmed it into their kernels.
//!
//! Every write also takes [`WriteOptions`]: `?dry_run=true` rehearses it
//! on a copy of the committed state and asks every member what its kernel
//! would change ([`rehearse`]), committing nothing; an `Idempotency-Key`
//! makes a retry answer the first outcome instead of applying twice
//! ([`crate::model::requests`]). A write whose fate is unknown (a quorum
//! out of reach while it waited, the leader's answer lost) is answered as
//! such, never as a failure.

use super::reads::linearize;
use super::Node;
use crate::api::validate::{self, MAX_DRAIN_GRACE};
use crate::api::{self, json, view, ApiError};
use crate::cluster::WriteError;
use crate::model::{
    Command, CommandResult, DesiredState, DestKey, DrainRequest, ServiceConfig, ServiceKey,
    ServiceSpec,
};
use crate::raft::NodeInfo;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Which nodes a write waits for (`?wait=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Every member (`applied`).
    All,
    /// A majority of the voters (`quorum`).
    Quorum,
}

impl Wait {
    /// `?wait=applied|quorum`; absent is `None`.
    pub fn parse(value: Option<&str>) -> Result<Option<Wait>, ApiError> {
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

/// What every write takes besides its own arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// `?wait=`: also wait until the nodes programmed it.
    pub wait: Option<Wait>,
    /// `?dry_run=true`: rehearse, commit nothing.
    pub dry_run: bool,
    /// `Idempotency-Key`: a retry answers the first outcome.
    pub key: Option<RequestKey>,
}

impl WriteOptions {
    /// A plain write, optionally waiting for the kernels.
    pub fn wait(wait: Option<Wait>) -> WriteOptions {
        WriteOptions {
            wait,
            ..WriteOptions::default()
        }
    }
}

/// A client's `Idempotency-Key` and the fingerprint of the request it came
/// with (the same key on another request is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub key: String,
    pub fingerprint: String,
}

/// What a write did, for its answer.
#[derive(Debug, Clone)]
pub struct Written<T> {
    /// The object as the write left it (or would leave it); for a replay,
    /// as it is now.
    pub value: T,
    /// Set by `?dry_run=true`: what the write would change. Nothing was
    /// committed, and `value` is a rehearsal.
    pub rehearsal: Option<Rehearsal>,
    /// The `Idempotency-Key` named a write made before: this answers its
    /// first outcome, and `value` is the object as it is now.
    pub replayed: bool,
}

/// What a write would change, found without committing it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rehearsal {
    pub desired: json::ConfigPlan,
    pub kernels: Vec<json::NodePlan>,
}

/// A real server just written: the service as the write left it.
#[derive(Debug, Clone)]
pub struct ServerWritten {
    /// The service's revision after the write (its `ETag`).
    pub revision: u64,
    pub service: Arc<ServiceConfig>,
    pub server: DestKey,
}

/// What `find` finds in the committed state; a miss (a 404) is confirmed on
/// state caught up with the leader first, since this node may lag: a write
/// is never told "no such service" by a node that has not seen it yet.
async fn confirmed<T>(
    node: &Node,
    find: impl Fn(&DesiredState) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match find(&node.desired()) {
        Ok(found) => Ok(found),
        Err(_) => {
            linearize(node).await?;
            find(&node.desired())
        }
    }
}

/// `POST /api/v1/services`: the service as created (`None`: a replay of a
/// creation whose service has been removed since).
pub async fn create_service(
    node: &Node,
    spec: ServiceSpec,
    opts: &WriteOptions,
) -> Result<Written<Option<Arc<ServiceConfig>>>, ApiError> {
    let key = spec.service.key;
    let done = write(node, Command::CreateService(spec), opts).await?;
    done.service(&key)
}

/// `PUT /api/v1/services/{id}`: the body replaces the service's settings.
pub async fn replace_service(
    node: &Node,
    key: ServiceKey,
    body: &[u8],
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<Option<Arc<ServiceConfig>>>, ApiError> {
    let current = confirmed(node, |d| service(d, &key)).await?;
    let (service_cfg, options) = validate::parse_service_replace(body, &current)?;
    let cmd = Command::UpdateService {
        service: service_cfg,
        options,
        if_revision: if_match,
    };
    write(node, cmd, opts).await?.service(&key)
}

/// `PATCH /api/v1/services/{id}`: a JSON merge patch onto the service as
/// the leader committed it; a read-modify-write, so guarded by the revision
/// it read even without `If-Match`.
pub async fn patch_service(
    node: &Node,
    key: ServiceKey,
    patch: &[u8],
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<Option<Arc<ServiceConfig>>>, ApiError> {
    linearize(node).await?;
    let current = service(&node.desired(), &key)?;
    let (service_cfg, options) = validate::parse_service_patch(patch, &current)?;
    let cmd = Command::UpdateService {
        service: service_cfg,
        options,
        if_revision: if_match.or(Some(current.revision)),
    };
    write(node, cmd, opts).await?.service(&key)
}

/// `DELETE /api/v1/services/{id}`: the service while it drains, or `None`
/// once it is gone.
pub async fn delete_service(
    node: &Node,
    key: ServiceKey,
    grace: Option<u32>,
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<Option<Arc<ServiceConfig>>>, ApiError> {
    let cmd = Command::DeleteService {
        key,
        if_revision: if_match,
        drain: drain(node, grace),
    };
    let done = write(node, cmd, opts).await?;
    let left = done.desired.services.get(&key).cloned();
    Ok(done.written(left))
}

/// `POST /api/v1/services/{id}/servers`.
pub async fn create_server(
    node: &Node,
    key: ServiceKey,
    body: &[u8],
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<ServerWritten>, ApiError> {
    let (dest, health_check) = validate::parse_server_create(body, &key)?;
    if let Some(cfg) = node.desired().services.get(&key) {
        validate::not_the_fallback(&cfg.options, &dest.key())?;
    }
    let server = dest.key();
    let cmd = Command::CreateServer {
        service: key,
        server: dest,
        if_revision: if_match,
        health_check,
    };
    write_server(node, cmd, opts, key, server).await
}

/// `PUT /api/v1/services/{id}/servers/{server_id}`.
pub async fn replace_server(
    node: &Node,
    key: ServiceKey,
    server: DestKey,
    body: &[u8],
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<ServerWritten>, ApiError> {
    confirmed(node, |d| existing_server(d, &key, &server).map(drop)).await?;
    let (dest, health_check) = validate::parse_server_replace(body, &key, &server)?;
    let cmd = Command::UpdateServer {
        service: key,
        server: dest,
        if_revision: if_match,
        health_check,
    };
    write_server(node, cmd, opts, key, server).await
}

/// `PATCH /api/v1/services/{id}/servers/{server_id}`: a merge patch onto
/// the server as the leader committed it, guarded by the service's
/// revision even without `If-Match`.
pub async fn patch_server(
    node: &Node,
    key: ServiceKey,
    server: DestKey,
    patch: &[u8],
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<ServerWritten>, ApiError> {
    linearize(node).await?;
    let desired = node.desired();
    let (cfg, current) = existing_server(&desired, &key, &server)?;
    let (dest, health_check) =
        validate::parse_server_patch(patch, &key, &current, cfg.server_checks.get(&server))?;
    let cmd = Command::UpdateServer {
        service: key,
        server: dest,
        if_revision: if_match.or(Some(cfg.revision)),
        health_check,
    };
    write_server(node, cmd, opts, key, server).await
}

/// `DELETE /api/v1/services/{id}/servers/{server_id}`: the server while it
/// drains, or `None` once it is gone.
pub async fn delete_server(
    node: &Node,
    key: ServiceKey,
    server: DestKey,
    grace: Option<u32>,
    if_match: Option<u64>,
    opts: &WriteOptions,
) -> Result<Written<Option<ServerWritten>>, ApiError> {
    let cmd = Command::DeleteServer {
        service: key,
        server,
        if_revision: if_match,
        drain: drain(node, grace),
    };
    let done = write(node, cmd, opts).await?;
    let left = match done.desired.services.get(&key) {
        Some(cfg) if cfg.draining_servers.contains_key(&server) => Some(ServerWritten {
            revision: done.revision,
            service: cfg.clone(),
            server,
        }),
        _ => None,
    };
    Ok(done.written(left))
}

/// How `PUT /api/v1/config` treats drains: `?grace=`, `?undrain=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replacing {
    /// How long what the body leaves out drains (`None`: the service's
    /// `drain_grace`, else this node's `DRAIN_GRACE`; 0: removed at once).
    pub grace: Option<u32>,
    /// The services and servers the body gives are in service: their
    /// drains end.
    pub undrain: bool,
}

/// `PUT /api/v1/config`: what replacing the whole desired set changes;
/// committed (one Raft entry) unless `dry_run`. What the body leaves out
/// drains as a `DELETE` drains it.
pub async fn replace_config(
    node: &Node,
    body: &[u8],
    replacing: Replacing,
    opts: &WriteOptions,
) -> Result<Written<json::ConfigPlan>, ApiError> {
    let specs = validate::parse_config(body)?;
    let drain = drain(node, replacing.grace).filter(|d| d.grace != Some(0));
    let undrain = replacing.undrain;
    let plan = view::plan_replacement(&node.desired(), &specs, drain.as_ref(), undrain);
    // Removing at once without undrain is the plain `ReplaceAll`, which
    // every version applies the same way (a node not yet upgraded cannot
    // decode `Replace`).
    let cmd = match (drain, undrain) {
        (None, false) => Command::ReplaceAll(specs),
        (drain, undrain) => Command::Replace {
            services: specs,
            drain,
            undrain,
        },
    };
    let done = write(node, cmd, opts).await?;
    Ok(done.written(plan))
}

/// The `?grace=` of a removal, checked.
pub fn grace(value: Option<&str>) -> Result<Option<u32>, ApiError> {
    api::http::query_seconds("grace", value, MAX_DRAIN_GRACE)
}

/// The drain a removal asks for: `grace` seconds if given; the state
/// machine falls back to the service's `drain_grace`, then to this node's
/// `DRAIN_GRACE` (0: delete at once). The start is this node's clock.
fn drain(node: &Node, grace: Option<u32>) -> Option<DrainRequest> {
    Some(DrainRequest {
        since_ms: crate::model::clock::unix_ms(),
        grace,
        default_grace: node.drain_grace,
    })
}

fn service(state: &DesiredState, key: &ServiceKey) -> Result<Arc<ServiceConfig>, ApiError> {
    state
        .services
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::no_such_service(key))
}

/// The service and its server `server`, or the 404 naming what is missing.
fn existing_server(
    state: &DesiredState,
    key: &ServiceKey,
    server: &DestKey,
) -> Result<(Arc<ServiceConfig>, crate::model::Destination), ApiError> {
    let cfg = service(state, key)?;
    let dest = *cfg
        .servers
        .get(server)
        .ok_or_else(|| ApiError::no_such_server(key, server))?;
    Ok((cfg, dest))
}

/// Writes `cmd`, a change to `server` of the service `key`, and returns
/// the server as the write left it.
async fn write_server(
    node: &Node,
    cmd: Command,
    opts: &WriteOptions,
    key: ServiceKey,
    server: DestKey,
) -> Result<Written<ServerWritten>, ApiError> {
    let done = write(node, cmd, opts).await?;
    let service = service(&done.desired, &key)?;
    let revision = done.revision;
    Ok(done.written(ServerWritten {
        revision,
        service,
        server,
    }))
}

/// What a write did, before its answer is shaped.
struct Done {
    /// The revision the write gave (0 in a rehearsal).
    revision: u64,
    /// The desired state after it (as this node applied it, or rehearsed).
    desired: Arc<DesiredState>,
    rehearsal: Option<Rehearsal>,
    replayed: bool,
}

impl Done {
    fn written<T>(self, value: T) -> Written<T> {
        Written {
            value,
            rehearsal: self.rehearsal,
            replayed: self.replayed,
        }
    }

    /// The service `key` as the write left it; `None` only for a replay
    /// whose service has been removed since.
    fn service(self, key: &ServiceKey) -> Result<Written<Option<Arc<ServiceConfig>>>, ApiError> {
        let cfg = match service(&self.desired, key) {
            Ok(cfg) => Some(cfg),
            Err(_) if self.replayed => None,
            Err(gone) => return Err(gone),
        };
        Ok(self.written(cfg))
    }
}

/// A write: the first outcome of a write made before under the same key,
/// or [`precheck`], then a rehearsal ([`rehearse`]) or [`commit`].
async fn write(node: &Node, cmd: Command, opts: &WriteOptions) -> Result<Done, ApiError> {
    // A dry run rehearses what the command would do now; it is never
    // remembered under a key, nor answered from one.
    let key = opts.key.as_ref().filter(|_| !opts.dry_run);
    if let Some(done) = replay(node, key)? {
        return Ok(done);
    }
    if let Err(refused) = precheck(node, &cmd).await {
        // Refused on state caught up with the leader: maybe by this very
        // write, made before under the same key, whose answer was lost.
        return match replay(node, key)? {
            Some(done) => Ok(done),
            None => Err(refused),
        };
    }
    if opts.dry_run {
        return rehearse(node, &cmd).await;
    }
    let cmd = match key {
        Some(k) => Command::Keyed {
            key: k.key.clone(),
            fingerprint: k.fingerprint.clone(),
            at_ms: crate::model::clock::unix_ms(),
            command: Box::new(cmd),
        },
        None => cmd,
    };
    commit(node, cmd, opts.wait).await
}

/// The first outcome of the write remembered under `key`, if there is one
/// (as of the state this node has applied).
fn replay(node: &Node, key: Option<&RequestKey>) -> Result<Option<Done>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let Some(first) = node.state.remembered(&key.key) else {
        return Ok(None);
    };
    if first.fingerprint != key.fingerprint {
        return Err(ApiError::key_reused());
    }
    Ok(Some(Done {
        revision: api::outcome(first.result)?,
        desired: node.desired(),
        rehearsal: None,
        replayed: true,
    }))
}

/// The revision a rehearsed write shows: nothing was committed.
const REHEARSAL_REVISION: u64 = 0;

/// `cmd` applied to a copy of the committed state, and what it would
/// change there and in every member's kernel; nothing is committed.
async fn rehearse(node: &Node, cmd: &Command) -> Result<Done, ApiError> {
    let before = node.desired();
    let mut after = DesiredState::clone(&before);
    let revision = api::outcome(after.apply(cmd, REHEARSAL_REVISION))?;
    let keys: BTreeSet<ServiceKey> = if cmd.replaces_all() {
        before
            .services
            .keys()
            .chain(after.services.keys())
            .copied()
            .collect()
    } else {
        cmd.services().into_iter().collect()
    };
    let desired = view::plan_changes(&before, &after.services, &keys);
    let services: Vec<_> = keys
        .iter()
        .map(|k| (*k, after.services.get(k).map(|c| ServiceConfig::clone(c))))
        .collect();
    let kernels = super::reports::kernel_plans(node, json::PlanRequest { services }).await;
    Ok(Done {
        revision,
        desired: Arc::new(after),
        rehearsal: Some(Rehearsal { desired, kernels }),
        replayed: false,
    })
}

/// Refuses, without writing to the log, a command that the committed state
/// already refuses (duplicate, missing resource, stale If-Match): a dry run
/// of the state machine on a copy of the touched service. The state machine
/// still decides at apply time, so a race with another writer is caught
/// there.
async fn precheck(node: &Node, cmd: &Command) -> Result<(), ApiError> {
    if refusal(&node.desired(), cmd).is_ok() {
        return Ok(());
    }
    // This node may lag the leader: confirm the refusal on fresh state.
    linearize(node).await?;
    refusal(&node.desired(), cmd)
}

fn refusal(state: &DesiredState, cmd: &Command) -> Result<(), ApiError> {
    if let Command::ReplaceAll(_)
    | Command::Replace { .. }
    | Command::FinishDrain { .. }
    | Command::Batch(_) = cmd.unkeyed()
    {
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
pub(super) const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Commits `cmd`, waits until this node has applied it (and, with `wait`,
/// until the nodes have programmed it into their kernels), and returns the
/// state machine's answer (a refusal as an error) with the state after it.
async fn commit(node: &Node, cmd: Command, wait: Option<Wait>) -> Result<Done, ApiError> {
    let check = how_to_check(&cmd);
    let outcome = node
        .writer
        .write(cmd)
        .await
        .map_err(|e| write_error(e, &check))?;
    let replayed = matches!(outcome.result, CommandResult::Replayed { .. });
    // The state machine's answer is final whether or not this node has
    // applied the entry yet: a refusal is answered as such.
    let revision = api::outcome(outcome.result)?;
    let mut rx = node.state.subscribe();
    let applied = tokio::time::timeout(
        APPLY_WAIT,
        rx.wait_for(|c| c.applied_index() >= outcome.index),
    )
    .await;
    let desired = match applied {
        Ok(Ok(c)) => c.desired.clone(),
        _ => return Err(ApiError::committed_elsewhere(outcome.index, revision)),
    };
    if let Some(wait) = wait {
        wait_programmed(node, outcome.index, wait).await?;
    }
    Ok(Done {
        revision,
        desired,
        rehearsal: None,
        replayed,
    })
}

/// How a client finds out whether `cmd` took effect: the resource to read.
fn how_to_check(cmd: &Command) -> String {
    match cmd.unkeyed().services().as_slice() {
        [key] => format!(
            "read GET {}?consistent=true to check",
            api::http::service_location(key)
        ),
        _ => "read GET /api/v1/config?consistent=true to check".into(),
    }
}

/// A write that did not commit as far as this node knows: refused before
/// anything was proposed (no leader, no quorum: definite, nothing written),
/// or proposed or sent and not answered (unknown).
fn write_error(e: WriteError, how_to_check: &str) -> ApiError {
    match e {
        WriteError::NoLeader => ApiError::no_leader(1),
        WriteError::NoQuorum(why) => ApiError::no_quorum(&why),
        unknown => ApiError::outcome_unknown(crate::errors::chain(&unknown), how_to_check),
    }
}

/// How long `?wait=` waits for the nodes' kernels.
const PROGRAM_WAIT: Duration = Duration::from_secs(10);

/// Waits until the nodes `wait` names report `index` programmed into their
/// kernels (each node answers a long poll on its report).
async fn wait_programmed(node: &Node, index: u64, wait: Wait) -> Result<(), ApiError> {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let metrics = node.raft().metrics().borrow().clone();
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
        .map(|(id, member)| {
            let id = *id;
            async move {
                let ok = programmed(node, member, index).await;
                (id, member.name.clone(), ok)
            }
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

/// Whether `member` reports `index` programmed within [`PROGRAM_WAIT`].
async fn programmed(node: &Node, member: &NodeInfo, index: u64) -> bool {
    if member.name == node.me.name {
        let mut rx = node.reconcile.clone();
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
        let timeout = left + Duration::from_secs(1);
        if super::reports::peer_report(node, &member.raft_addr, timeout, Some((index, left)))
            .await
            .is_some_and(|view| view.reconcile.programmed_index >= index)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
