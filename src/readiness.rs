//! Whether this node can serve correctly, and if not, why: one answer for
//! `/readyz`, the node's report, the service manager's status line and
//! watchdog, and the metrics, so that they never disagree.
//!
//! Some problems are the node's own (its disk, its store, its Raft core):
//! restarting the process is the service manager's remedy for those, so
//! the watchdog stops being fed. Others are the cluster's (no leader yet):
//! a restart cures nothing there, so they only make the node not ready.

use crate::cluster::quorum::QuorumState;
use crate::raft::typ::RaftMetrics;
use crate::raft::NodeId;
use crate::store::DiskStatus;

/// What a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not (yet) a member of a cluster with a leader.
    Membership,
    /// No contact with a quorum for longer than an election takes: writes
    /// cannot commit and reads cannot be confirmed, even if a leader is
    /// still named.
    Quorum,
    /// Started (or rejoined) but not caught up with the leader yet: its
    /// state may be far behind.
    Sync,
    /// The disk under RAFT_VOL_DIR does not take writes.
    Disk,
    /// A damaged record was found while running.
    Store,
    /// The Raft core stopped.
    Raft,
}

impl Check {
    /// Every check, in the order problems are listed.
    pub const ALL: [Check; 6] = [
        Check::Raft,
        Check::Store,
        Check::Disk,
        Check::Membership,
        Check::Quorum,
        Check::Sync,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Membership => "membership",
            Check::Quorum => "quorum",
            Check::Sync => "sync",
            Check::Disk => "disk",
            Check::Store => "store",
            Check::Raft => "raft",
        }
    }

    /// Whether the node itself is at fault (the watchdog then starves).
    pub fn is_own(self) -> bool {
        !matches!(self, Check::Membership | Check::Quorum | Check::Sync)
    }
}

/// One reason the node is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub check: Check,
    pub detail: String,
}

/// The reasons node `me` cannot serve correctly now; empty when it can.
/// `caught_up`: whether it has caught up with the leader since it started;
/// `quorum`: what it knows of its contact with a quorum.
pub fn problems(
    raft: &RaftMetrics,
    me: NodeId,
    disk: &DiskStatus,
    caught_up: bool,
    quorum: &QuorumState,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |check, detail: String| problems.push(Problem { check, detail });
    if let Err(fatal) = &raft.running_state {
        problem(Check::Raft, format!("the Raft core stopped: {fatal}"));
    }
    if let Some(damage) = &disk.damaged {
        problem(Check::Store, format!("the store is damaged: {damage}"));
    }
    if let Some(failing) = &disk.failing {
        let since = crate::model::clock::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(failing.since_ms),
        );
        problem(
            Check::Disk,
            format!(
                "{} (since {since}); this node acknowledges no appends or votes, serves no reads \
                 and takes no writes until the disk takes writes again",
                failing.error
            ),
        );
    }
    let member = raft.membership_config.membership().get_node(&me).is_some();
    // A committed vote means an elected leader this node follows; a node
    // that lost its leader starts an election and its vote is uncommitted.
    if !(member && raft.current_leader.is_some() && raft.vote.is_committed()) {
        problem(
            Check::Membership,
            if member {
                "no leader: an election is under way, or this node cannot reach a quorum".into()
            } else {
                "not yet a member of a cluster with a leader".into()
            },
        );
    }
    if let Some(why) = quorum.problem(|id| crate::cluster::member_name(raft, id)) {
        problem(
            Check::Quorum,
            format!("{why}; writes are refused and consistent reads fail until it is back"),
        );
    }
    if !caught_up {
        problem(
            Check::Sync,
            format!(
                "catching up with the leader since the start (applied up to index {}); \
                 plain reads wait until it has",
                raft.last_applied.map_or(0, |l| l.index)
            ),
        );
    }
    problems
}

/// Whether the node can persist: reads and writes are refused otherwise,
/// since it cannot follow the log (the detail to answer with).
pub fn store_problem(disk: &DiskStatus) -> Option<String> {
    if let Some(damage) = &disk.damaged {
        return Some(format!("this node's store is damaged ({damage})"));
    }
    disk.failing
        .as_ref()
        .map(|f| format!("this node cannot persist: {}", f.error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Failing;

    #[test]
    fn a_failing_disk_is_the_nodes_own_problem() {
        let metrics = RaftMetrics::new_initial(1);
        let disk = DiskStatus {
            failing: Some(Failing {
                error: "cannot write log entries under /d: No space left on device".into(),
                since_ms: 0,
            }),
            ..Default::default()
        };
        let quorum = QuorumState {
            ok: true,
            age: Some(std::time::Duration::ZERO),
            leader: None,
            uptime: std::time::Duration::ZERO,
            lost_after: crate::cluster::quorum::LOST_AFTER,
        };
        let found = problems(&metrics, 1, &disk, true, &quorum);
        let checks: Vec<Check> = found.iter().map(|p| p.check).collect();
        assert_eq!(checks, vec![Check::Disk, Check::Membership]);
        assert!(
            found[0].detail.contains("No space left on device"),
            "{found:?}"
        );
        assert!(found[0].check.is_own() && !found[1].check.is_own());
        let found = problems(&metrics, 1, &DiskStatus::default(), false, &quorum);
        let checks: Vec<Check> = found.iter().map(|p| p.check).collect();
        assert_eq!(checks, vec![Check::Membership, Check::Sync]);
        assert!(!found[1].check.is_own());
        assert!(store_problem(&disk).is_some_and(|p| p.contains("cannot persist")));
        assert_eq!(store_problem(&DiskStatus::default()), None);
    }
}
