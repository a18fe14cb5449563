//! Whether this node is in contact with a quorum, and since when not.
//!
//! openraft 0.9 keeps a leader that lost its quorum in office (it has no
//! check-quorum): it goes on naming itself leader, and its followers, who
//! still hear its heartbeats, name it too. Writes then hang until they time
//! out and `/readyz` would say ready. So every node keeps the time a quorum
//! last acknowledged the leader it follows:
//!
//! - the leader reads it from Raft (`millis_since_quorum_ack`), and sends
//!   its age with every append request ([`QUORUM_AGE_HEADER`]);
//! - a follower takes it from each append it accepts: received now, the
//!   leader's quorum contact was that age before.
//!
//! Past [`LOST_AFTER`] without contact — several election timeouts, so an
//! election in progress is not taken for a loss — the node says so in
//! `/readyz`, its report, `cluster status` and the metrics, and refuses
//! writes at once (503 `no_quorum`, nothing sent) instead of letting them
//! wait out the commit timeout.

use crate::raft::typ::RaftMetrics;
use crate::raft::NodeId;
use openraft::ServerState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Without contact with a quorum for this long, the node knows it has
/// none: five of the longest election timeouts (400 ms by default; see
/// `RaftTiming::lost_after` for other RAFT_ELECTION_TIMEOUT_MS).
pub const LOST_AFTER: Duration = Duration::from_secs(2);

/// The header on append requests that carries how long before sending the
/// leader last had a quorum's acknowledgement, in milliseconds (absent when
/// it never had one).
pub const QUORUM_AGE_HEADER: &str = "x-ipvs-manager-quorum-age-ms";

/// When this node last knew of a quorum's acknowledgement; shared by the
/// Raft transport (both sides), the writer and the reports.
#[derive(Debug, Clone)]
pub struct Contact {
    inner: Arc<Mutex<Known>>,
    succession: Arc<super::succession::Succession>,
    lost_after: Duration,
}

#[derive(Debug)]
struct Known {
    started: Instant,
    /// The last acknowledgement known, and the leader it acknowledged.
    last: Option<(Instant, NodeId)>,
}

/// What a node knows of its quorum now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    /// In contact: acknowledged within [`LOST_AFTER`].
    pub ok: bool,
    /// Time since the last acknowledgement known (`None`: none since start).
    pub age: Option<Duration>,
    /// The leader that acknowledgement was for.
    pub leader: Option<NodeId>,
    /// Time since this node started.
    pub uptime: Duration,
    /// How long without contact means lost ([`LOST_AFTER`] by default).
    pub lost_after: Duration,
}

impl QuorumState {
    /// Whether the node knows it has no quorum: no contact for longer than
    /// [`LOST_AFTER`], counting from the start for a node that never had
    /// one (one just started has not had the time to hear from it).
    pub fn known_lost(&self) -> bool {
        !self.ok && (self.age.is_some() || self.uptime > self.lost_after)
    }

    /// Why the node has no quorum, for `/readyz` and the answer to a write;
    /// `None` unless it knows it has none.
    pub fn problem(&self, leader_name: impl Fn(NodeId) -> String) -> Option<String> {
        if !self.known_lost() {
            return None;
        }
        Some(match self.age {
            Some(age) => format!(
                "no contact with a quorum for {:.1} s (last at {}, when {} led)",
                age.as_secs_f64(),
                crate::model::clock::rfc3339(SystemTime::now() - age),
                self.leader
                    .map_or_else(|| "no node".to_string(), leader_name)
            ),
            None => format!(
                "no contact with a quorum since this node started {:.1} s ago",
                self.uptime.as_secs_f64()
            ),
        })
    }
}

impl Default for Contact {
    fn default() -> Contact {
        Contact::new()
    }
}

impl Contact {
    pub fn new() -> Contact {
        Contact::with_lost_after(LOST_AFTER)
    }

    /// A node whose Raft timing is not the default's.
    pub fn with_lost_after(lost_after: Duration) -> Contact {
        Contact {
            inner: Arc::new(Mutex::new(Known {
                started: Instant::now(),
                last: None,
            })),
            succession: Arc::default(),
            lost_after,
        }
    }

    /// What this node knows of its and earlier leaders' contact with the
    /// voters, for the l2 leases.
    pub fn succession(&self) -> &super::succession::Succession {
        &self.succession
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A quorum acknowledged `leader` `age` ago (a later one never gives
    /// way to an earlier one).
    pub fn acknowledged(&self, leader: NodeId, age: Duration) {
        let Some(at) = Instant::now().checked_sub(age) else {
            return;
        };
        let mut known = self.known();
        if known.last.is_none_or(|(last, _)| at > last) {
            known.last = Some((at, leader));
        }
    }

    /// Takes the leader's own view from its Raft metrics: a leader knows
    /// when a quorum last acknowledged it; a leader alone in its cluster is
    /// its own quorum.
    pub fn observe(&self, metrics: &RaftMetrics) {
        if metrics.state != ServerState::Leader {
            return;
        }
        let membership = metrics.membership_config.membership();
        let alone = membership.voter_ids().all(|id| id == metrics.id);
        match metrics.millis_since_quorum_ack {
            Some(ms) => self.acknowledged(metrics.id, Duration::from_millis(ms)),
            None if alone => self.acknowledged(metrics.id, Duration::ZERO),
            None => {}
        }
    }

    /// What is known now.
    pub fn state(&self) -> QuorumState {
        let known = self.known();
        let now = Instant::now();
        let age = known.last.map(|(at, _)| now.saturating_duration_since(at));
        QuorumState {
            ok: age.is_some_and(|a| a <= self.lost_after),
            age,
            leader: known.last.map(|(_, leader)| leader),
            uptime: now.saturating_duration_since(known.started),
            lost_after: self.lost_after,
        }
    }

    /// Why a write cannot commit, when this node knows it cannot: no
    /// contact with a quorum for longer than its limit, counting from
    /// the start for a node that never had one.
    pub fn lost(&self) -> Option<QuorumState> {
        let state = self.state();
        state.known_lost().then_some(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_ages_and_is_lost_after_the_limit() {
        let contact = Contact::new();
        assert!(!contact.state().ok);
        assert_eq!(
            contact.lost(),
            None,
            "a node just started is not known lost"
        );
        contact.acknowledged(7, Duration::from_millis(100));
        let state = contact.state();
        assert!(state.ok && state.leader == Some(7));
        assert!(contact.lost().is_none());
        // An older acknowledgement does not replace a newer one.
        contact.acknowledged(8, LOST_AFTER * 3);
        assert_eq!(contact.state().leader, Some(7));
        let old = Contact::new();
        old.acknowledged(3, LOST_AFTER + Duration::from_millis(500));
        let lost = old.lost().expect("known lost");
        assert!(!lost.ok);
        let why = lost.problem(|id| format!("node{id}")).unwrap();
        assert!(
            why.starts_with("no contact with a quorum for 2.5 s"),
            "{why}"
        );
        assert!(why.contains("when node3 led"), "{why}");
    }

    #[test]
    fn a_slower_raft_timing_waits_longer_before_calling_the_quorum_lost() {
        let slow = Contact::with_lost_after(Duration::from_secs(10));
        slow.acknowledged(1, Duration::from_secs(5));
        assert!(slow.state().ok, "{:?}", slow.state());
        let slow_lost = Contact::with_lost_after(Duration::from_secs(10));
        slow_lost.acknowledged(1, Duration::from_secs(11));
        assert!(slow_lost.lost().is_some());
        let fast = Contact::new();
        fast.acknowledged(1, Duration::from_secs(5));
        assert!(fast.lost().is_some());
    }

    #[test]
    fn a_lone_leader_is_its_own_quorum() {
        let contact = Contact::new();
        let mut metrics = RaftMetrics::new_initial(1);
        metrics.state = ServerState::Leader;
        contact.observe(&metrics);
        // No membership yet holds other voters: alone.
        assert!(contact.state().ok);
        let follower = Contact::new();
        metrics.state = ServerState::Follower;
        follower.observe(&metrics);
        assert!(!follower.state().ok, "a follower learns it from appends");
    }
}
