//! What a node reports: its own state (`GET /api/v1/node`, and on the Raft
//! port for its peers), the cluster's as this node sees it, the kernel
//! tables, the metrics, and whether it is ready.

use super::{Node, Relayed};
use crate::api::{self, json, ApiError};
use crate::cluster::{NODE_KERNEL_PATH, NODE_PATH, NODE_PLAN_PATH};
use crate::config::Ownership;
use crate::model::{DesiredState, ServiceEntry, ServiceKey};
use crate::raft::{node_id, NodeInfo};
use crate::reconcile::TableError;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Whether this node should receive traffic (`GET /readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Every reason why not.
    NotReady(Vec<crate::readiness::Problem>),
}

/// Ready means: no problem at all (see [`crate::readiness`]).
pub fn ready(node: &Node) -> Readiness {
    let problems = node.problems();
    if problems.is_empty() {
        Readiness::Ready
    } else {
        Readiness::NotReady(problems)
    }
}

/// Longest `?timeout_ms` of a long poll on a node's report.
const MAX_LONG_POLL_MS: u64 = 30_000;

/// `GET /api/v1/node`: this node's report; with `programmed: Some(N)`,
/// answered once the reconciler has programmed index N (or after
/// `timeout_ms`, default 10 s, at most 30 s; the caller reads
/// `programmed_index` to know which).
pub async fn report_when(
    node: &Node,
    programmed: Option<u64>,
    timeout_ms: Option<u64>,
) -> json::NodeView {
    if let Some(index) = programmed {
        let timeout = timeout_ms.unwrap_or(10_000).min(MAX_LONG_POLL_MS);
        let mut rx = node.reconcile.clone();
        let reached = rx.wait_for(|s| s.programmed_index >= index);
        let _ = tokio::time::timeout(Duration::from_millis(timeout), reached).await;
    }
    report(node)
}

/// This node's Raft state, reconcile status and health checks.
pub fn report(node: &Node) -> json::NodeView {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let me = node_id(&node.me.name);
    let role = match metrics.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Candidate => "candidate",
        _ if !membership.voter_ids().any(|id| id == me) => "learner",
        _ => "follower",
    };
    json::NodeView {
        id: node.me.name.clone(),
        api_addr: node.me.api_addr.clone(),
        raft_addr: node.me.raft_addr.clone(),
        role: role.to_string(),
        term: metrics.current_term,
        leader_id: metrics
            .current_leader
            .and_then(|id| membership.get_node(&id).map(|n| n.name.clone())),
        last_applied: metrics.last_applied.map_or(0, |l| l.index),
        reconcile: node.reconcile.borrow().clone(),
        health: super::health::local(node),
        problems: node
            .problems()
            .into_iter()
            .map(|p| json::ProblemView {
                check: p.check.name().to_string(),
                detail: p.detail,
            })
            .collect(),
        store: store_view(node),
        announce: node.announce.borrow().clone(),
    }
}

/// This node's data directory as `GET /api/v1/node` shows it.
fn store_view(node: &Node) -> json::StoreView {
    let disk = node.disk.borrow().clone();
    json::StoreView {
        writable: disk.failing.is_none(),
        error: disk.failing.as_ref().map(|f| f.error.clone()),
        failing_since: disk.failing.as_ref().map(|f| {
            crate::model::clock::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(f.since_ms))
        }),
        damaged: disk.damaged,
        write_failures: disk.write_failures,
        recoveries: disk.recoveries,
        free_bytes: crate::store::free_bytes(&node.vol_dir),
    }
}

/// The report of the member at `raft_addr` (its Raft port's [`NODE_PATH`],
/// a signed peer request), `None` when it does not answer within
/// `timeout`; with `programmed: Some((N, wait))`, a long poll until it has
/// programmed index N.
pub(super) async fn peer_report(
    node: &Node,
    raft_addr: &str,
    timeout: Duration,
    programmed: Option<(u64, Duration)>,
) -> Option<json::NodeView> {
    let url = match programmed {
        Some((index, wait)) => format!(
            "http://{raft_addr}{NODE_PATH}?programmed={index}&timeout_ms={}",
            wait.as_millis()
        ),
        None => format!("http://{raft_addr}{NODE_PATH}"),
    };
    let r = node.peers.get(&url).timeout(timeout).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<json::NodeView>().await.ok()
}

/// `GET /api/v1/cluster`: the Raft view of this node, with each member's
/// own report (asked for now, 500 ms each, all at once).
pub async fn cluster(node: &Node) -> json::ClusterView {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let names: BTreeMap<u64, &NodeInfo> = membership.nodes().map(|(id, n)| (*id, n)).collect();
    let replication = metrics.replication.clone().unwrap_or_default();
    let me = node_id(&node.me.name);
    let reports = names.iter().map(|(id, member)| async move {
        if *id == me {
            return Some(report(node));
        }
        peer_report(node, &member.raft_addr, Duration::from_millis(500), None).await
    });
    let reports = futures_util::future::join_all(reports).await;
    let members = names
        .iter()
        .zip(reports)
        .map(|((id, member), report)| json::MemberView {
            id: member.name.clone(),
            raft_addr: member.raft_addr.clone(),
            api_addr: member.api_addr.clone(),
            voter: voters.contains(id),
            last_applied: match &report {
                Some(r) => Some(r.last_applied),
                None => replication.get(id).and_then(|m| m.map(|l| l.index)),
            },
            reachable: report.is_some(),
            node: report,
        })
        .collect();
    let quorum = quorum_view(node, &metrics);
    json::ClusterView {
        // A leader no quorum has acknowledged lately leads nothing.
        leader_id: metrics
            .current_leader
            .filter(|_| quorum.ok)
            .and_then(|id| names.get(&id).map(|n| n.name.clone())),
        term: metrics.current_term,
        commit_index: metrics.last_applied.map_or(0, |l| l.index),
        quorum,
        members,
    }
}

/// This node's contact with a quorum, as the API shows it.
pub fn quorum_view(node: &Node, metrics: &crate::raft::typ::RaftMetrics) -> json::QuorumView {
    let state = node.writer.contact().state();
    let name = |id| crate::cluster::member_name(metrics, id);
    json::QuorumView {
        ok: state.ok,
        last_contact_ms: state.age.map(|a| a.as_millis() as u64),
        last_leader: state.leader.map(name),
        problem: state.problem(name),
    }
}

/// How long a reader waits for the reconciler to read the kernel table:
/// it reads between passes, and a pass over a large table takes a while.
const TABLE_WAIT: Duration = Duration::from_secs(10);

/// `GET /api/v1/node/kernel`: this node's kernel table and owned set, as
/// the reconciler reads them now (after the pass in progress, if any), and
/// the target it programs.
/// `only`: just that service's part of the table (what a service's
/// detail in the web UI shows, instead of the whole table every poll).
pub async fn kernel_table(
    node: &Node,
    only: Option<&ServiceKey>,
) -> Result<json::KernelTable, ApiError> {
    let Some(kernel) = &node.kernel else {
        return Err(ApiError::new(
            api::ErrorCode::NotFound,
            "this node programs no kernel (IPVS_KERNEL=off)",
        ));
    };
    let read = kernel.read(TABLE_WAIT).await.map_err(|e| match e {
        TableError::Kernel(reason) => ApiError::unavailable(1, reason),
        not_read => ApiError::unavailable(1, not_read.to_string()),
    })?;
    let mut table = json::KernelTable::clone(&read);
    table.target = target(node);
    if let Some(key) = only {
        table.services.retain(|entry| entry.service.key == *key);
        table.owned.retain(|owned| owned == key);
        let id = api::service_id(key);
        table.target.retain(|service, _| *service == id);
    }
    Ok(table)
}

/// The weight of every server this node's kernel should hold now, by
/// service and server id: what the reconciler programs
/// ([`crate::reconcile::plan::target`]).
fn target(node: &Node) -> BTreeMap<String, BTreeMap<String, u32>> {
    let health = node.health.table();
    let now = crate::model::clock::unix_ms();
    node.desired()
        .services
        .values()
        .filter_map(|cfg| {
            let target = crate::reconcile::plan::target(cfg, &health, now)?;
            let servers = target
                .dests
                .iter()
                .map(|(key, dest)| (api::server_id(key), dest.weight))
                .collect();
            Some((api::service_id(&cfg.service.key), servers))
        })
        .collect()
}

/// How long a dry run waits for a member's kernel plan.
const PLAN_WAIT: Duration = Duration::from_secs(3);

/// Every member's kernel plan for a dry run (`request`: the touched
/// services as the write would leave them), asked of all at once; a member
/// that does not answer in time is named with the reason.
pub async fn kernel_plans(node: &Node, request: json::PlanRequest) -> Vec<json::NodePlan> {
    let request = &request;
    let asked = node
        .members()
        .into_iter()
        .map(|(name, raft_addr)| async move {
            let planned = if name == node.me.name {
                kernel_plan(node, request).await
            } else {
                peer_plan(node, &raft_addr, request).await
            };
            match planned {
                Ok(changes) => json::NodePlan {
                    node: name,
                    changes,
                    error: None,
                },
                Err(error) => json::NodePlan {
                    node: name,
                    changes: Vec::new(),
                    error: Some(error),
                },
            }
        });
    let mut plans = futures_util::future::join_all(asked).await;
    plans.sort_by(|a, b| a.node.cmp(&b.node));
    plans
}

/// What this node's reconciler would change in its kernel if the services
/// of `request` were as it says: its kernel table read now, its owned set,
/// its health checks and the drains' deadlines as of now.
pub async fn kernel_plan(
    node: &Node,
    request: &json::PlanRequest,
) -> Result<Vec<json::KernelChange>, String> {
    let Some(kernel) = &node.kernel else {
        return Err("this node programs no kernel (IPVS_KERNEL=off)".into());
    };
    let table = kernel.read(TABLE_WAIT).await.map_err(|e| e.to_string())?;
    let scope: BTreeSet<ServiceKey> = request.services.iter().map(|(key, _)| *key).collect();
    let desired: DesiredState = request
        .services
        .iter()
        .filter_map(|(_, cfg)| cfg.clone())
        .collect();
    let in_kernel: BTreeMap<ServiceKey, ServiceEntry> = table
        .services
        .iter()
        .filter(|e| scope.contains(&e.service.key))
        .map(|e| (e.service.key, e.clone()))
        .collect();
    let owned: BTreeSet<ServiceKey> = table.owned.iter().copied().collect();
    let ownership = Ownership::named(&node.reconcile.borrow().ownership);
    let plan = crate::reconcile::plan::plan(
        &desired,
        &in_kernel,
        Some(&scope),
        &owned,
        ownership,
        &node.health.table(),
        crate::model::clock::unix_ms(),
    );
    Ok(plan.changes.iter().map(json::KernelChange::from).collect())
}

/// A member's kernel plan, asked on its Raft port ([`NODE_PLAN_PATH`]).
async fn peer_plan(
    node: &Node,
    raft_addr: &str,
    request: &json::PlanRequest,
) -> Result<Vec<json::KernelChange>, String> {
    let url = format!("http://{raft_addr}{NODE_PLAN_PATH}");
    let sent = node
        .peers
        .post_json(&url, request)
        .map_err(|e| e.to_string())?
        .timeout(PLAN_WAIT)
        .send()
        .await
        .map_err(|e| format!("did not answer: {}", crate::errors::chain(&e)))?;
    peer_answer(sent, |_, body| String::from_utf8_lossy(body).into_owned()).await
}

/// A member's answer on its Raft port, decoded: its JSON on success, else
/// the message of its API error, or `otherwise(status, body)` when the
/// refusal is no API error.
pub(super) async fn peer_answer<T: serde::de::DeserializeOwned>(
    sent: reqwest::Response,
    otherwise: impl FnOnce(reqwest::StatusCode, &[u8]) -> String,
) -> Result<T, String> {
    let status = sent.status();
    let body = sent
        .bytes()
        .await
        .map_err(|e| format!("did not answer: {}", crate::errors::chain(&e)))?;
    if !status.is_success() {
        let why = serde_json::from_slice::<api::error::ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| otherwise(status, &body));
        return Err(why);
    }
    serde_json::from_slice(&body).map_err(|e| format!("answered something else: {e}"))
}

/// A member's kernel table, for a kernel-table answer: this node's own, or
/// another's as it answered.
pub enum MemberKernel {
    Mine(json::KernelTable),
    Relayed(Relayed),
}

/// How long the relay waits for a member's kernel table: the UI polls, so a
/// node that is down should cost one short wait per poll, not a stall.
const MEMBER_KERNEL_WAIT: Duration = Duration::from_secs(3);

/// `GET /api/v1/cluster/members/{node_id}/kernel`: a member's kernel table,
/// read here for this node and relayed from the member's Raft port
/// ([`NODE_KERNEL_PATH`], a signed peer request) for the others, so that
/// the web UI (served by one node, talking only to it) shows every node's
/// counters. Only members are asked: the address comes from the
/// membership, never the request.
pub async fn member_kernel(
    node: &Node,
    name: &str,
    only: Option<&ServiceKey>,
) -> Result<MemberKernel, ApiError> {
    if name == node.me.name {
        return kernel_table(node, only).await.map(MemberKernel::Mine);
    }
    let Some((_, raft_addr)) = node.members().into_iter().find(|(n, _)| n == name) else {
        return Err(ApiError::new(
            api::ErrorCode::NotFound,
            format!("{name:?} is not a member of this cluster"),
        ));
    };
    let resp = node
        .peers
        .get(&match only {
            Some(key) => format!(
                "http://{raft_addr}{NODE_KERNEL_PATH}?service={}",
                api::service_id(key)
            ),
            None => format!("http://{raft_addr}{NODE_KERNEL_PATH}"),
        })
        .timeout(MEMBER_KERNEL_WAIT)
        .send()
        .await
        .map_err(|e| ApiError::unavailable(1, format!("member {name} did not answer: {e}")))?;
    super::members::relay(resp).await.map(MemberKernel::Relayed)
}

/// `GET /metrics`: the exposition in `format`, with this node's kernel
/// table read now (when it programs one; a failed read leaves the kernel
/// series out, never the scrape).
pub async fn metrics(node: &Node, format: crate::metrics::Format) -> String {
    let kernel = match &node.kernel {
        Some(kernel) => kernel.read(TABLE_WAIT).await.ok(),
        None => None,
    };
    let raft = node.raft().metrics().borrow().clone();
    let reconcile = node.reconcile.borrow().clone();
    let health = node.health.snapshot();
    let all_down = super::health::all_down(&node.desired(), &node.health.table());
    let store = node.disk.borrow().clone();
    let problems = node.problems();
    let process = crate::metrics::ProcessStats::read();
    node.metrics.render(
        &crate::metrics::Scrape {
            raft: &raft,
            reconcile: &reconcile,
            kernel: kernel.as_deref().map(|t| t.services.as_slice()),
            health: &health,
            all_down: &all_down,
            store: &store,
            free_bytes: crate::store::free_bytes(&node.vol_dir),
            problems: &problems,
            process: &process,
            quorum: &node.writer.contact().state(),
            announce: &node.announce.borrow().clone(),
        },
        format,
    )
}
