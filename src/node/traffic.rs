//! Traffic summaries for the web UI: every node samples its own kernel
//! table every [`SAMPLE_EVERY`] and keeps each service's last [`HISTORY`]
//! samples (15 minutes); it serves its summary to its peers on the Raft
//! port and polls theirs in the same round, so that `GET /api/v1/traffic`
//! is answered from memory, and with only the rows that changed to a client
//! that names the answer it has (`?since=`).
//!
//! The pure parts ([`History`], [`node_row`], [`Board`], [`node_detail`])
//! carry the logic; [`run`] is the round that feeds them.

use super::Node;
use crate::api::{self, json, ApiError};
use crate::cluster::NODE_TRAFFIC_PATH;
use crate::health::HealthTable;
use crate::model::{DesiredState, ServiceConfig, ServiceEntry, ServiceKey};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often a node samples its kernel and polls its peers' summaries:
/// the kernel's rate estimators move every 2 s, and a summary of 5,000
/// services is some hundreds of kilobytes a peer.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples kept per service: 15 minutes at [`SAMPLE_EVERY`].
pub const HISTORY: usize = 90;

/// How long a round waits for the reconciler to read the table (it reads
/// between passes) and for a peer's summary.
const READ_WAIT: Duration = Duration::from_secs(5);

/// One service on this node at one sampling round. Narrower than the
/// kernel's counters where they cannot grow large (connections, packets
/// and new connections a second), so that 90 of them for each of 5,000
/// services stay near 18 MB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub cps: u32,
    pub inpps: u32,
    pub outpps: u32,
    pub inbps: u64,
    pub outbps: u64,
}

impl Sample {
    /// The service's rates, and its connections summed over its
    /// destinations (the kernel keeps them per destination only).
    pub fn of(entry: &ServiceEntry) -> Sample {
        let (active, inactive) = entry.destinations.iter().fold((0u32, 0u32), |(a, i), d| {
            (
                a.saturating_add(d.active_conns),
                i.saturating_add(d.inactive_conns),
            )
        });
        let s = &entry.stats;
        Sample {
            active_conns: active,
            inactive_conns: inactive,
            cps: narrow(s.cps),
            inpps: narrow(s.inpps),
            outpps: narrow(s.outpps),
            inbps: s.inbps,
            outbps: s.outbps,
        }
    }
}

fn narrow(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Appends to a ring of at most [`HISTORY`] values, dropping the oldest.
fn push<T>(ring: &mut VecDeque<T>, value: T) {
    if ring.len() >= HISTORY {
        ring.pop_front();
    }
    ring.push_back(value);
}

/// This node's samples: when each of the last rounds read the kernel, and
/// each service's samples aligned with them from the newest back (a
/// service in the kernel for fewer rounds has fewer). Only services in the
/// kernel at the last read are kept, so memory follows the table.
#[derive(Debug, Default)]
pub struct History {
    at_ms: VecDeque<u64>,
    services: HashMap<ServiceKey, VecDeque<Sample>>,
}

impl History {
    /// Records one read of the table, taken at `at_ms`.
    pub fn record(&mut self, at_ms: u64, services: &[ServiceEntry]) {
        push(&mut self.at_ms, at_ms);
        let mut seen = HashSet::with_capacity(services.len());
        for entry in services {
            // A dump may list a service twice (see the netlink kernel): the
            // first one counts.
            if seen.insert(entry.service.key) {
                // Exactly HISTORY long: grown by doubling, a ring would hold
                // room for 128.
                let ring = self
                    .services
                    .entry(entry.service.key)
                    .or_insert_with(|| VecDeque::with_capacity(HISTORY));
                push(ring, Sample::of(entry));
            }
        }
        self.services.retain(|key, _| seen.contains(key));
    }

    /// Services with samples.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// A service's samples with their times, oldest first (empty when it
    /// was not in the kernel at the last read).
    pub fn series(&self, key: &ServiceKey) -> json::TrafficHistory {
        let mut h = json::TrafficHistory::default();
        let Some(samples) = self.services.get(key) else {
            return h;
        };
        let skip = self.at_ms.len().saturating_sub(samples.len());
        for (at, s) in self.at_ms.iter().skip(skip).zip(samples) {
            h.at_ms.push(*at);
            h.active_conns.push(s.active_conns.into());
            h.inactive_conns.push(s.inactive_conns.into());
            h.cps.push(s.cps.into());
            h.inbps.push(s.inbps);
            h.outbps.push(s.outbps);
            h.inpps.push(s.inpps.into());
            h.outpps.push(s.outpps.into());
        }
        h
    }
}

/// Whether this node's health checks hold a server down.
fn is_down(health: &HealthTable, service: &ServiceKey, server: &crate::model::DestKey) -> bool {
    health.get(service, server).is_some_and(|s| !s.up)
}

/// A service of the desired state on this node: `entry` is what its kernel
/// holds for it (`None`: not programmed, or no kernel).
pub fn node_row(
    cfg: &ServiceConfig,
    entry: Option<&ServiceEntry>,
    health: &HealthTable,
) -> json::TrafficNode {
    let key = cfg.service.key;
    let Some(entry) = entry else {
        return json::TrafficNode {
            servers_total: count(cfg.servers.len()),
            reported: true,
            ..Default::default()
        };
    };
    let in_kernel: HashMap<_, _> = entry
        .destinations
        .iter()
        .map(|d| (d.dest.key(), d.dest.weight))
        .collect();
    let up = cfg
        .servers
        .keys()
        .filter(|k| in_kernel.get(k).is_some_and(|w| *w > 0) && !is_down(health, &key, k))
        .count();
    let s = Sample::of(entry);
    json::TrafficNode {
        servers_up: count(up),
        servers_total: count(cfg.servers.len()),
        programmed: true,
        active_conns: s.active_conns.into(),
        inactive_conns: s.inactive_conns.into(),
        cps: s.cps.into(),
        inbps: s.inbps,
        outbps: s.outbps,
        reported: true,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// This node's summary: its row of every service of `desired`, from the
/// kernel table `services` (`None`: it programs no kernel).
pub fn summarize(
    desired: &DesiredState,
    services: Option<&[ServiceEntry]>,
    health: &HealthTable,
) -> BTreeMap<String, json::TrafficNode> {
    let by_key: HashMap<ServiceKey, &ServiceEntry> = services
        .unwrap_or_default()
        .iter()
        .map(|e| (e.service.key, e))
        .collect();
    desired
        .services
        .iter()
        .map(|(key, cfg)| {
            (
                api::service_id(key),
                node_row(cfg, by_key.get(key).copied(), health),
            )
        })
        .collect()
}

/// One service on this node in detail: each server of the desired state
/// and each other destination the kernel holds for it, and its history.
pub fn node_detail(
    cfg: &ServiceConfig,
    entry: Option<&ServiceEntry>,
    health: &HealthTable,
    history: json::TrafficHistory,
) -> json::TrafficNodeDetail {
    let key = cfg.service.key;
    let mut servers: BTreeMap<String, json::TrafficServer> = BTreeMap::new();
    let health_of = |k: &crate::model::DestKey| match cfg.check_of(k) {
        None => "unchecked",
        Some(_) if is_down(health, &key, k) => "down",
        Some(_) => "up",
    };
    for k in cfg.servers.keys() {
        servers.insert(
            api::server_id(k),
            json::TrafficServer {
                server: api::server_id(k),
                weight: None,
                health: health_of(k).to_string(),
                active_conns: 0,
                inactive_conns: 0,
                cps: 0,
                inbps: 0,
                outbps: 0,
            },
        );
    }
    for d in entry.map(|e| e.destinations.as_slice()).unwrap_or_default() {
        let k = d.dest.key();
        let id = api::server_id(&k);
        servers.insert(
            id.clone(),
            json::TrafficServer {
                server: id,
                weight: Some(d.dest.weight),
                health: health_of(&k).to_string(),
                active_conns: d.active_conns.into(),
                inactive_conns: d.inactive_conns.into(),
                cps: d.stats.cps,
                inbps: d.stats.inbps,
                outbps: d.stats.outbps,
            },
        );
    }
    json::TrafficNodeDetail {
        reported: true,
        error: None,
        programmed: entry.is_some(),
        servers: servers.into_values().collect(),
        history,
    }
}

/// One service in the cluster's table, with its version.
#[derive(Debug)]
struct Row {
    view: json::TrafficRow,
    /// The round that last changed `view`.
    changed: u64,
    /// The cluster's connections a second, one per round.
    cps: VecDeque<u64>,
}

/// The cluster's table as this node serves it: rebuilt every round from
/// every member's summary, each row stamped with the round that last
/// changed it, so that a client that names the round of its last answer
/// gets only the rows that changed after it.
#[derive(Debug, Default)]
pub struct Board {
    /// The number of the first round; the answers of an earlier life of
    /// the node are below it, and get the whole table.
    first: u64,
    /// The last round's number (`first - 1`: none yet).
    sample: u64,
    nodes: Vec<String>,
    unreachable: Vec<String>,
    rows: BTreeMap<String, Row>,
    /// Services removed in the last [`HISTORY`] rounds, with the round.
    removed: VecDeque<(u64, String)>,
}

impl Board {
    /// A table whose first round is numbered `first` (above 0). A node
    /// starts at its start time in seconds: every later life of it starts
    /// above the numbers of the earlier ones (one round is 10 s), so a
    /// client's `since` from before a restart is never taken for a round
    /// of this one.
    pub fn starting_at(first: u64) -> Board {
        let first = first.max(1);
        Board {
            first,
            sample: first - 1,
            ..Board::default()
        }
    }

    /// The next round's table: `services` are the ids of the desired
    /// state, `members` each member's summary (`None`: it did not answer).
    /// It is built beside this one, which is served until it is swapped in.
    pub fn next(
        &self,
        services: impl IntoIterator<Item = String>,
        members: &[(String, Option<&json::NodeTrafficSummary>)],
    ) -> Board {
        let round = self.sample + 1;
        let mut rows = BTreeMap::new();
        for id in services {
            let nodes: BTreeMap<String, json::TrafficNode> = members
                .iter()
                .map(|(name, summary)| {
                    let row = match summary {
                        Some(s) => s.services.get(&id).copied().unwrap_or(json::TrafficNode {
                            reported: true,
                            ..Default::default()
                        }),
                        None => json::TrafficNode {
                            reported: false,
                            ..Default::default()
                        },
                    };
                    (name.clone(), row)
                })
                .collect();
            let total = total(nodes.values());
            let before = self.rows.get(&id);
            let mut cps =
                before.map_or_else(|| VecDeque::with_capacity(HISTORY), |r| r.cps.clone());
            push(&mut cps, total.cps);
            let view = json::TrafficRow {
                service: id.clone(),
                nodes,
                total,
                cps: cps.iter().copied().skip_while(|c| *c == 0).collect(),
            };
            let changed = match before {
                Some(was) if was.view == view => was.changed,
                _ => round,
            };
            rows.insert(id, Row { view, changed, cps });
        }
        let mut removed = self.removed.clone();
        for id in self.rows.keys().filter(|id| !rows.contains_key(*id)) {
            removed.push_back((round, id.clone()));
        }
        let forgotten = round.saturating_sub(HISTORY as u64);
        while removed.front().is_some_and(|(r, _)| *r <= forgotten) {
            removed.pop_front();
        }
        Board {
            first: self.first,
            sample: round,
            nodes: members.iter().map(|(name, _)| name.clone()).collect(),
            unreachable: members
                .iter()
                .filter(|(_, s)| s.is_none())
                .map(|(name, _)| name.clone())
                .collect(),
            rows,
            removed,
        }
    }

    /// The table for a client whose last answer was `since`: the changes
    /// after it when this node still knows them, otherwise all of it.
    pub fn view(&self, since: Option<u64>) -> json::TrafficView {
        let known = |s: u64| {
            s >= self.first.max(1)
                && s <= self.sample
                && s.saturating_add(HISTORY as u64) >= self.sample
        };
        let (full, rows, removed) = match since.filter(|s| known(*s)) {
            None => (true, self.rows.values().collect::<Vec<_>>(), Vec::new()),
            Some(s) => (
                false,
                self.rows.values().filter(|r| r.changed > s).collect(),
                self.removed
                    .iter()
                    .filter(|(r, id)| *r > s && !self.rows.contains_key(id))
                    .map(|(_, id)| id.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
        };
        json::TrafficView {
            sampled_every_ms: SAMPLE_EVERY.as_millis() as u64,
            sample: self.sample,
            nodes: self.nodes.clone(),
            unreachable: self.unreachable.clone(),
            full,
            services: rows.into_iter().map(|r| r.view.clone()).collect(),
            removed,
        }
    }
}

/// The sums of a service's members.
fn total<'a>(nodes: impl Iterator<Item = &'a json::TrafficNode>) -> json::TrafficTotal {
    let mut t = json::TrafficTotal::default();
    for n in nodes {
        t.servers_up = t.servers_up.saturating_add(n.servers_up.into());
        t.servers_total = t.servers_total.saturating_add(n.servers_total.into());
        t.programmed += u64::from(n.programmed);
        t.active_conns = t.active_conns.saturating_add(n.active_conns);
        t.inactive_conns = t.inactive_conns.saturating_add(n.inactive_conns);
        t.cps = t.cps.saturating_add(n.cps);
        t.inbps = t.inbps.saturating_add(n.inbps);
        t.outbps = t.outbps.saturating_add(n.outbps);
    }
    t
}

/// This node's side of a round: what it read and what it serves its peers.
#[derive(Debug, Default)]
struct Sampled {
    history: History,
    /// The last table read, for the per-server numbers of a detail.
    table: Option<Arc<json::KernelTable>>,
    /// What this node serves its peers.
    own: Arc<json::NodeTrafficSummary>,
    /// `own` as JSON, encoded once a round: a peer's poll is answered on
    /// the Raft port, whose workers also take the appends.
    own_json: Bytes,
}

/// The node's traffic summaries: its own history and the cluster's table.
///
/// A round's CPU work (this node's summary, its JSON, the peers' JSON, the
/// table) is done at low priority off the async workers and outside these
/// locks, which are held only to swap a result in: at tens of thousands of
/// services that work takes a CPU for a good part of a second, and a worker
/// or lock held that long stalls the writes and appends queued behind it.
#[derive(Debug)]
pub struct Traffic {
    sampled: Mutex<Sampled>,
    board: Mutex<Arc<Board>>,
}

impl Default for Traffic {
    /// Rounds numbered from the start time in seconds ([`Board::starting_at`]).
    fn default() -> Traffic {
        Traffic {
            sampled: Mutex::new(Sampled {
                own_json: encode(&json::NodeTrafficSummary::default()),
                ..Sampled::default()
            }),
            board: Mutex::new(Arc::new(Board::starting_at(
                crate::model::clock::unix_ms() / 1000,
            ))),
        }
    }
}

/// A summary as peers are sent it (it has only maps with string keys, which
/// JSON cannot fail to encode).
fn encode(own: &json::NodeTrafficSummary) -> Bytes {
    Bytes::from(serde_json::to_vec(own).unwrap_or_default())
}

/// A lock whose holder panicked mid-update leaves numbers, not invariants
/// worth refusing every later answer for.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Traffic {
    /// This node's summary as JSON, for its peers.
    pub fn own_json(&self) -> Bytes {
        lock(&self.sampled).own_json.clone()
    }

    fn board(&self) -> Arc<Board> {
        lock(&self.board).clone()
    }
}

/// `GET /api/v1/traffic`: the cluster's table as of the last round (all of
/// it, or what changed after answer `since`).
pub fn table(node: &Node, since: Option<u64>) -> json::TrafficView {
    node.traffic.board().view(since)
}

/// One service in detail on this node (for `GET /api/v1/traffic/{id}` and
/// for the peer that asks): 404 when the desired state has no such service.
pub fn local_detail(node: &Node, key: &ServiceKey) -> Result<json::TrafficNodeDetail, ApiError> {
    let desired = node.desired();
    let Some(cfg) = desired.services.get(key) else {
        return Err(ApiError::no_such_service(key));
    };
    let sampled = lock(&node.traffic.sampled);
    let entry = sampled
        .table
        .as_ref()
        .and_then(|t| t.services.iter().find(|e| e.service.key == *key));
    Ok(node_detail(
        cfg,
        entry,
        &node.health.table(),
        sampled.history.series(key),
    ))
}

/// `GET /api/v1/traffic/{id}`: the service on every member, this node's
/// from memory and the others' asked now, all at once.
pub async fn detail(node: &Node, key: &ServiceKey) -> Result<json::TrafficDetail, ApiError> {
    let mine = local_detail(node, key)?;
    let id = api::service_id(key);
    let asked = node.members().into_iter().map(|(name, raft_addr)| {
        let mine = &mine;
        let id = &id;
        async move {
            if name == node.me.name {
                return (name, mine.clone());
            }
            let detail = peer_detail(node, &raft_addr, id)
                .await
                .unwrap_or_else(|why| json::TrafficNodeDetail {
                    reported: false,
                    error: Some(format!("{name}: {why}")),
                    ..Default::default()
                });
            (name, detail)
        }
    });
    Ok(json::TrafficDetail {
        service: id.clone(),
        sampled_every_ms: SAMPLE_EVERY.as_millis() as u64,
        nodes: futures_util::future::join_all(asked)
            .await
            .into_iter()
            .collect(),
    })
}

/// A member's detail of one service, asked on its Raft port.
async fn peer_detail(
    node: &Node,
    raft_addr: &str,
    id: &str,
) -> Result<json::TrafficNodeDetail, String> {
    let url = format!("http://{raft_addr}{NODE_TRAFFIC_PATH}/{id}");
    let sent = node
        .peers
        .get(&url)
        .timeout(READ_WAIT)
        .send()
        .await
        .map_err(|e| format!("did not answer: {}", crate::errors::chain(&e)))?;
    super::reports::peer_answer(sent, |status, _| format!("answered {status}")).await
}

/// A member's summary as it sent it, asked on its Raft port; `None` when
/// it does not answer in time or answers something else.
async fn peer_summary(node: &Node, raft_addr: &str) -> Option<Bytes> {
    let url = format!("http://{raft_addr}{NODE_TRAFFIC_PATH}");
    let r = node.peers.get(&url).timeout(READ_WAIT).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.bytes().await.ok()
}

/// Runs a round's CPU work on a thread of its own under SCHED_IDLE: the
/// traffic table is for people, and on a busy host it must not take the
/// CPU from the writes and appends (see [`Traffic`]). At nice 19 it still
/// did: a woken task waited out its slice, once for each of the many
/// hand-offs of a write. `None` if no thread could be started or the work
/// panicked.
async fn in_background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("traffic".into())
        .spawn(move || {
            // A failure leaves the thread at normal priority: the round is
            // then only less polite.
            let _ = thread_priority::set_thread_priority_and_policy(
                thread_priority::thread_native_id(),
                thread_priority::ThreadPriority::Min,
                thread_priority::ThreadSchedulePolicy::Normal(
                    thread_priority::NormalThreadSchedulePolicy::Idle,
                ),
            );
            let _ = done.send(work());
        })
        .inspect_err(|e| tracing::warn!(error = %e, "no thread for the traffic round; skipped"))
        .ok()?;
    result.await.ok()
}

/// Samples this node's kernel: its history and its own summary. A failed
/// read is counted and logged, and leaves the last summary as it was.
async fn sample(node: &Arc<Node>) {
    let read = match &node.kernel {
        None => Ok(None),
        Some(kernel) => kernel.read(READ_WAIT).await.map(Some),
    };
    let node = node.clone();
    in_background(move || record(&node, read)).await;
}

/// [`sample`]'s work once the table is read (`Ok(None)`: no kernel).
fn record<E: std::fmt::Display>(node: &Node, read: Result<Option<Arc<json::KernelTable>>, E>) {
    let last = lock(&node.traffic.sampled).own.clone();
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            node.metrics.traffic_read_failed();
            let mut own = json::NodeTrafficSummary::clone(&last);
            own.read_failures += 1;
            tracing::warn!(
                error = %e,
                failures = own.read_failures,
                "could not sample the kernel table for the traffic summary"
            );
            return publish(node, own, None);
        }
    };
    let now = crate::model::clock::unix_ms();
    let own = json::NodeTrafficSummary {
        kernel: node.kernel.is_some(),
        sampled_at_ms: read.as_ref().map_or(last.sampled_at_ms, |_| Some(now)),
        read_failures: last.read_failures,
        services: summarize(
            &node.desired(),
            read.as_deref().map(|t| t.services.as_slice()),
            &node.health.table(),
        ),
    };
    publish(node, own, Some((now, read)));
}

/// Swaps in this node's new summary and, after a read, the table and its
/// place in the history (`None` for a table never read).
fn publish(
    node: &Node,
    own: json::NodeTrafficSummary,
    read: Option<(u64, Option<Arc<json::KernelTable>>)>,
) {
    let own_json = encode(&own);
    let mut sampled = lock(&node.traffic.sampled);
    if let Some((now, table)) = read {
        if let Some(t) = &table {
            sampled.history.record(now, &t.services);
        }
        sampled.table = table;
    }
    sampled.own = Arc::new(own);
    sampled.own_json = own_json;
}

/// One round: sample this node, poll the other members (all at once), and
/// rebuild the cluster's table.
async fn round(node: &Arc<Node>) {
    sample(node).await;
    let members = node.members();
    let polled = members.iter().map(|(name, raft_addr)| async move {
        if *name == node.me.name {
            return None;
        }
        peer_summary(node, raft_addr).await
    });
    let polled = futures_util::future::join_all(polled).await;
    let node = node.clone();
    in_background(move || rebuild(&node, members, polled)).await;
}

/// [`round`]'s table from each member's answer (this node's own: `None`).
fn rebuild(node: &Node, members: Vec<(String, String)>, polled: Vec<Option<Bytes>>) {
    let own = lock(&node.traffic.sampled).own.clone();
    let decoded: Vec<Option<json::NodeTrafficSummary>> = polled
        .iter()
        .map(|b| b.as_ref().and_then(|b| serde_json::from_slice(b).ok()))
        .collect();
    let mut members: Vec<(String, Option<&json::NodeTrafficSummary>)> = members
        .into_iter()
        .zip(&decoded)
        .map(|((name, _), s)| {
            let summary = if name == node.me.name {
                Some(&*own)
            } else {
                s.as_ref()
            };
            (name, summary)
        })
        .collect();
    members.sort_by(|a, b| a.0.cmp(&b.0));
    let ids = node
        .desired()
        .services
        .keys()
        .map(api::service_id)
        .collect::<Vec<_>>();
    let board = node.traffic.board().next(ids, &members);
    *lock(&node.traffic.board) = Arc::new(board);
}

/// Runs a round every [`SAMPLE_EVERY`] until `stop` completes.
pub async fn run(node: Arc<Node>, mut stop: impl Future<Output = ()> + Unpin) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    // A slow round (a peer that does not answer) delays the next one
    // rather than causing a burst.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = &mut stop => return,
        }
        tokio::select! {
            _ = round(&node) => {}
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests;
