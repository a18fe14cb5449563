//! A leader that shuts down hands leadership over first, so the cluster
//! does not wait out an election timeout to notice it is gone.
//!
//! openraft 0.9 has no `transfer_leader` (it arrives in 0.10). What it has
//! is `trigger().elect()`, and a vote rule that makes it work: a follower
//! refuses to vote while its leader's lease runs (election_timeout_max after
//! the last heartbeat), but the leader itself holds no such lease. So the
//! leader stops taking writes, waits until a follower has its whole log,
//! and asks that follower (`POST /raft/elect` on its Raft port) to stand:
//! the follower's own vote and the old leader's are a majority of three. In
//! larger clusters the other followers' leases must run out first, which
//! takes no longer than the election that would have followed anyway.

use super::peer_auth::Peers;
use crate::raft::Raft;
use crate::raft::{NodeId, NodeInfo};
use openraft::ServerState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Path of the election request on RAFT_PORT.
pub const ELECT_PATH: &str = "/raft/elect";

/// How long the leader waits for a follower to hold its whole log.
const CATCH_UP: Duration = Duration::from_secs(2);

/// How long the leader waits for the follower it asked to win.
const ELECTED: Duration = Duration::from_secs(3);

/// Set while this node hands leadership over: writes forwarded to it are
/// turned away, so that the log stops growing and the forwarding node
/// retries until it finds the next leader.
#[derive(Debug, Clone, Default)]
pub struct Handover(Arc<AtomicBool>);

impl Handover {
    pub fn is_active(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// If this node leads, hands leadership to a voter that holds its whole log
/// and returns its name once it leads; `None` when this node does not lead,
/// leads alone, or no follower caught up or took over in time (then the
/// followers elect a leader after their election timeout, as after a
/// crash).
pub async fn hand_over(
    raft: &Raft,
    peers: &Peers,
    me: NodeId,
    handover: &Handover,
) -> Option<String> {
    if raft.metrics().borrow().state != ServerState::Leader {
        return None;
    }
    handover.start();
    let candidates = up_to_date_followers(raft, me).await;
    for (id, node) in candidates {
        let asked = peers
            .request(
                reqwest::Method::POST,
                &format!("http://{}{ELECT_PATH}", node.raft_addr),
                Vec::new(),
            )
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Err(e) = asked {
            tracing::warn!(node = %node.name, error = %e, "could not ask a follower to take over");
            continue;
        }
        let mut metrics = raft.metrics();
        let won = metrics.wait_for(|m| m.current_leader == Some(id));
        if matches!(tokio::time::timeout(ELECTED, won).await, Ok(Ok(_))) {
            return Some(node.name);
        }
        tracing::warn!(node = %node.name, "the follower asked to take over did not win");
    }
    None
}

/// The voters other than `me` that hold this leader's whole log (the only
/// ones the old leader would vote for), waiting up to [`CATCH_UP`] for one.
async fn up_to_date_followers(raft: &Raft, me: NodeId) -> Vec<(NodeId, NodeInfo)> {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let matched = m.replication.clone().unwrap_or_default();
        let caught_up: Vec<(NodeId, NodeInfo)> = membership
            .voter_ids()
            .filter(|id| *id != me)
            .filter(|id| matched.get(id).copied().flatten().map(|l| l.index) == m.last_log_index)
            .filter_map(|id| Some((id, membership.get_node(&id)?.clone())))
            .collect();
        let others = membership.voter_ids().any(|id| id != me);
        if !caught_up.is_empty() || !others || tokio::time::Instant::now() >= deadline {
            return caught_up;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
