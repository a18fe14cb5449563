//! The cluster: the Raft transport between nodes, writes from any node
//! (forwarded to the leader), membership (bootstrap, join, remove), and the
//! leadership handover of a stopping leader.

pub mod batch;
pub mod drains;
pub mod handover;
pub mod membership;
pub mod network;
pub mod peer_auth;
pub mod quorum;
pub mod rejoin;
pub mod removal;
pub mod rpc;
pub mod succession;

use crate::model::Command;
use crate::raft::{typ, NodeId, NodeInfo, Raft, WriteOutcome};
use batch::{Batcher, Forwarded, Forwarder};
use openraft::error::{ClientWriteError, RaftError};
use peer_auth::Peers;
use std::time::Duration;

/// A node's report (`json::NodeView`) on its Raft port, for its peers:
/// `?programmed=N&timeout_ms=T` long-polls as `GET /api/v1/node` does.
pub const NODE_PATH: &str = "/raft/node";

/// A node's kernel table (`json::KernelTable`) on its Raft port, for the
/// member that relays it to its web UI.
pub const NODE_KERNEL_PATH: &str = "/raft/node/kernel";

/// `POST` on a node's Raft port, for a dry run: what its reconciler would
/// change in its kernel were the services as the request says
/// (`json::PlanRequest` → a list of `json::KernelChange`).
pub const NODE_PLAN_PATH: &str = "/raft/node/plan";

/// A node's traffic summary (`json::NodeTrafficSummary`) on its Raft port,
/// polled by every other member every 10 s; `{NODE_TRAFFIC_PATH}/{id}`:
/// one service in detail (`json::TrafficNodeDetail`), asked on demand.
pub const NODE_TRAFFIC_PATH: &str = "/raft/node/traffic";

/// `GET` on the leader's Raft port: the log index a linearizable read on
/// another member waits for (JSON `null` when this node does not lead).
pub const READ_INDEX_PATH: &str = "/raft/read-index";

/// `POST` on the leader's Raft port: a follower's client writes, a JSON
/// list of commands answered by a list of [`crate::raft::WriteResult`]s in
/// the same order.
pub const WRITE_PATH: &str = "/raft/write";

/// `DELETE {MEMBERS_PATH}/{name}` on the leader's Raft port: a removal
/// forwarded by another member; `POST {MEMBERS_PATH}/{name}/rejoin`: that
/// node is about to rejoin with an empty store, remove it first (it asks
/// any member, which forwards to the leader).
pub const MEMBERS_PATH: &str = "/raft/members";

/// Why a write did not commit.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No leader is known (election in progress, or no quorum).
    #[error("the cluster has no leader at the moment")]
    NoLeader,
    /// The leader could not be reached or did not answer.
    #[error("could not reach the leader {leader}: {problem}")]
    LeaderUnreachable { leader: String, problem: String },
    #[error("raft refused the write: {0}")]
    Raft(String),
    /// Proposed but not committed in time (no quorum reachable): it may
    /// still commit later.
    #[error("not committed within {0:?}: a quorum of nodes may be out of reach")]
    Timeout(Duration),
    /// This node knows it has no quorum: the write was not proposed.
    #[error("{0}")]
    NoQuorum(String),
}

/// How long a proposal may wait for a quorum.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// How long a write waits for a leader to appear before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(3);

/// Proposes commands on behalf of clients of this node: locally when this
/// node leads, otherwise forwarded to the leader's Raft port; and finds the
/// read index for linearizable reads.
#[derive(Clone)]
pub struct Writer {
    raft: Raft,
    batcher: Batcher,
    forwarder: Forwarder,
    reads: ReadIndex,
    contact: quorum::Contact,
}

impl Writer {
    /// Starts the queues that batch this node's writes (see [`batch`]);
    /// clones share them.
    /// Their stages' times go to `stages`.
    pub fn start(
        raft: Raft,
        peers: Peers,
        contact: quorum::Contact,
        stages: crate::metrics::stages::WriteStages,
    ) -> Writer {
        Writer {
            batcher: Batcher::start(raft.clone(), stages.clone()),
            reads: ReadIndex::start(raft.clone(), peers.clone()),
            forwarder: Forwarder::start(peers, COMMIT_WAIT + Duration::from_secs(1), stages),
            raft,
            contact,
        }
    }

    /// What this node knows of its contact with a quorum.
    pub fn contact(&self) -> &quorum::Contact {
        &self.contact
    }

    /// The log index a linearizable read must wait for (see [`ReadIndex`]).
    pub async fn read_index(&self) -> Option<u64> {
        self.reads.get(false).await
    }

    /// The same, on the leader only (`None` elsewhere): what the leader
    /// answers its followers on `READ_INDEX_PATH`.
    pub async fn leader_read_index(&self) -> Option<u64> {
        self.reads.get(true).await
    }

    /// The queue that proposes on this node's Raft (for writes forwarded
    /// here).
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Commits `cmd` and returns what the state machine did with it. Leader
    /// changes during the write are followed; a write that was forwarded but
    /// whose answer was lost is reported as an error, never retried (it may
    /// have committed).
    pub async fn write(&self, cmd: Command) -> Result<WriteOutcome, WriteError> {
        // Known lost: refused before anything is sent, so the answer is
        // definite (nothing written) and immediate.
        if let Some(lost) = self.contact.lost() {
            let metrics = self.raft.metrics().borrow().clone();
            let why = lost.problem(|id| member_name(&metrics, id));
            return Err(WriteError::NoQuorum(why.unwrap_or_default()));
        }
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            // Where another node is known to lead, straight there; otherwise
            // Raft here takes the write, or names the leader.
            let forward = match self.leader_elsewhere() {
                Some(node) => Some(node),
                None => {
                    let proposed =
                        tokio::time::timeout(COMMIT_WAIT, self.batcher.propose(cmd.clone()));
                    match proposed.await {
                        Ok(Ok(outcome)) => return Ok(outcome),
                        Ok(Err(e)) => forward_target(e)?.map(|(_, node)| node),
                        Err(_) => return Err(WriteError::Timeout(COMMIT_WAIT)),
                    }
                }
            };
            let next = match forward {
                Some(node) => self.forward(&node, &cmd).await?,
                None => None,
            };
            if let Some(outcome) = next {
                return Ok(outcome);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WriteError::NoLeader);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader, when Raft here knows it and it is another node.
    fn leader_elsewhere(&self) -> Option<NodeInfo> {
        let me = self.raft.metrics().borrow().id;
        leader(&self.raft).and_then(|(id, node)| (id != me).then_some(node))
    }

    /// Sends `cmd` to `leader`. `Ok(None)` when that node is no longer the
    /// leader (try again).
    async fn forward(
        &self,
        leader: &NodeInfo,
        cmd: &Command,
    ) -> Result<Option<WriteOutcome>, WriteError> {
        match self.forwarder.forward(leader, cmd.clone()).await {
            Forwarded::Answered(Ok(outcome)) => Ok(Some(outcome)),
            Forwarded::Answered(Err(e)) => forward_target(e).map(|_| None),
            Forwarded::Refused => Ok(None),
            Forwarded::Lost(problem) => Err(WriteError::LeaderUnreachable {
                leader: leader.name.clone(),
                problem,
            }),
        }
    }
}

/// The leader to forward to after a refused write, or `None` when no leader
/// is known yet; other refusals are errors.
fn forward_target(
    e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
) -> Result<Option<(NodeId, NodeInfo)>, WriteError> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Ok(f.leader_id.zip(f.leader_node))
        }
        other => Err(WriteError::Raft(other.to_string())),
    }
}

/// Finds read indexes for linearizable reads, one at a time: every read
/// that arrives while one is being found waits for the next, which all of
/// them share. Each read is still answered by a confirmation of leadership
/// that began after it arrived (what linearizability needs), but a burst of
/// reads costs one round of heartbeats, not one each — and one log line
/// from openraft per unreachable member, not one per read.
#[derive(Clone)]
struct ReadIndex {
    tx: tokio::sync::mpsc::UnboundedSender<(bool, tokio::sync::oneshot::Sender<Option<u64>>)>,
}

impl ReadIndex {
    fn start(raft: Raft, peers: Peers) -> ReadIndex {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            bool,
            tokio::sync::oneshot::Sender<Option<u64>>,
        )>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiting = vec![first];
                while let Ok(next) = rx.try_recv() {
                    waiting.push(next);
                }
                let (leader_only, any): (Vec<_>, Vec<_>) =
                    waiting.into_iter().partition(|(only, _)| *only);
                // A confirmation that fails (a heartbeat round lost under
                // load) is tried again before the whole batch is told no.
                if !leader_only.is_empty() {
                    let index = retried(|| leader_read_index(&raft)).await;
                    for (_, tx) in leader_only {
                        let _ = tx.send(index);
                    }
                }
                if !any.is_empty() {
                    let index = retried(|| read_index(&raft, &peers)).await;
                    for (_, tx) in any {
                        let _ = tx.send(index);
                    }
                }
            }
        });
        ReadIndex { tx }
    }

    async fn get(&self, leader_only: bool) -> Option<u64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send((leader_only, tx)).ok()?;
        rx.await.ok().flatten()
    }
}

/// `find` until it finds, three times at most, 50 ms apart.
async fn retried<F: std::future::Future<Output = Option<u64>>>(
    find: impl Fn() -> F,
) -> Option<u64> {
    for _ in 0..2 {
        if let Some(index) = find().await {
            return Some(index);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    find().await
}

/// The log index a linearizable read must wait for: on the leader, after
/// confirming it still leads ([`leader_read_index`]); on a follower, the
/// index the leader returns after confirming the same (`READ_INDEX_PATH`).
/// `None` when no leader is known or it cannot be reached.
async fn read_index(raft: &Raft, peers: &Peers) -> Option<u64> {
    if let Some(index) = leader_read_index(raft).await {
        return Some(index);
    }
    let (leader_id, leader_node) = leader(raft)?;
    if leader_id == raft.metrics().borrow().id {
        // This node leads but could not confirm it: asking itself over
        // HTTP would queue behind this very lookup (and prove nothing).
        return None;
    }
    let index: Option<u64> = peers
        .get(&format!(
            "http://{}{READ_INDEX_PATH}",
            leader_node.raft_addr
        ))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .ok()?
        .json()
        .await
        .ok()?;
    index
}

/// On the leader, once it has confirmed it still leads: the index a read
/// must wait for. openraft's read index is the commit index as the leader
/// knows it; but a leader restarted with its vote resumes leading at once,
/// without an election or a new entry, and may not know yet that its last
/// entries, acknowledged before it stopped, are committed. Its last log
/// entry bounds the read too (every entry in a leader's log commits while it
/// leads). `None` when this node does not lead.
async fn leader_read_index(raft: &Raft) -> Option<u64> {
    let last_log = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let confirmed = raft.ensure_linearizable().await.ok()?;
    Some(confirmed.map_or(0, |l| l.index).max(last_log))
}

/// The name of member `id`, as the membership has it (its numeric id
/// otherwise).
pub fn member_name(metrics: &typ::RaftMetrics, id: NodeId) -> String {
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .map_or_else(|| id.to_string(), |n| n.name.clone())
}

/// Feeds `contact` with the leader's own view of its quorum, from every
/// change of its Raft metrics (openraft reports them each tick) and at
/// least every 250 ms (a lone leader's metrics may not change at all),
/// until `stopped`.
pub async fn watch_quorum(
    raft: Raft,
    contact: quorum::Contact,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut metrics = raft.metrics();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let watch = async {
        loop {
            contact.observe(&metrics.borrow_and_update());
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        // Raft has stopped: readiness says so through its
                        // metrics.
                        std::future::pending::<()>().await;
                    }
                }
                _ = tick.tick() => {}
            }
        }
    };
    tokio::select! {
        () = watch => {}
        () = stopped => {}
    }
}

/// The current leader's id and node info, if known.
pub fn leader(raft: &Raft) -> Option<(NodeId, NodeInfo)> {
    let metrics: typ::RaftMetrics = raft.metrics().borrow().clone();
    let id = metrics.current_leader?;
    let node = metrics
        .membership_config
        .membership()
        .get_node(&id)?
        .clone();
    Some((id, node))
}
