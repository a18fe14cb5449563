//! How a node learns it was removed from the cluster, so that it stops
//! taking part instead of campaigning with an ever higher term (which, once
//! it was added back, forced an election on the cluster).
//!
//! Two ways: the leader tells it right after the removal commits
//! (`POST REMOVED_PATH` on its Raft port, signed), well before its election
//! timeout; and a node that missed that (it was cut off) hears it when it
//! asks for votes: members answer a candidate that is no member of theirs
//! with 410 and their membership's log id, and one newer than the
//! candidate's own that leaves it out is proof (an older one may just not
//! have seen the candidate's addition yet). The node then stops, leaves a
//! marker, and exits 0; started again, it joins as a new member from an
//! empty store (see `cluster::rejoin`), the learner-first path that
//! disturbs no leader.

use crate::raft::typ::LogId;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokio::sync::watch;

/// `POST` on a node's Raft port: the leader tells it it was removed.
pub const REMOVED_PATH: &str = "/raft/removed";

/// The body of a 410 to a vote request from a non-member, and of the
/// leader's notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotAMember {
    /// Who says so.
    pub by: String,
    /// The log id of the membership that leaves the node out.
    pub membership: Option<LogId>,
}

/// What this node has heard about its removal (shared by the Raft port's
/// routes, the network client and the daemon).
#[derive(Clone)]
pub struct Removal {
    tx: watch::Sender<Option<NotAMember>>,
}

impl Default for Removal {
    fn default() -> Self {
        Removal {
            tx: watch::Sender::new(None),
        }
    }
}

impl Removal {
    /// Records a notice (the first one stays).
    pub fn heard(&self, notice: NotAMember) {
        self.tx.send_if_modified(|n| {
            if n.is_none() {
                *n = Some(notice);
                true
            } else {
                false
            }
        });
    }

    /// Resolves with the notice once one is proof, against this node's own
    /// membership log id (`mine` reads it when a notice arrives).
    pub async fn proven(&self, mine: impl Fn() -> Option<LogId>) -> NotAMember {
        let mut rx = self.tx.subscribe();
        loop {
            // Cloned out first: the borrow's read lock must be gone before
            // `send_replace` takes the write lock.
            let heard = rx.borrow_and_update().clone();
            if let Some(notice) = heard {
                if proves(&notice, mine()) {
                    return notice;
                }
                // Not proof: forget it, so the next one is looked at.
                self.tx.send_replace(None);
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

/// A membership newer than this node's own that leaves it out means it was
/// removed; the leader's notice carries the removing membership itself.
fn proves(notice: &NotAMember, mine: Option<LogId>) -> bool {
    match (notice.membership, mine) {
        (Some(theirs), Some(mine)) => theirs > mine,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// File a removed node leaves in its data directory.
const MARKER: &str = "removed.json";

/// Notes in `dir` that the node was removed (it joins anew when started).
pub fn mark(dir: &Path, notice: &NotAMember) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(notice).map_err(std::io::Error::other)?;
    crate::files::write_whole(&dir.join(MARKER), &bytes)
}

/// Whether the node was removed before it stopped, and by whom.
pub fn marked(dir: &Path) -> Option<NotAMember> {
    serde_json::from_slice(&std::fs::read(dir.join(MARKER)).ok()?).ok()
}

pub fn unmark(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(MARKER));
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    #[test]
    fn only_a_newer_membership_proves_a_removal() {
        let notice = |m| NotAMember {
            by: "node1".into(),
            membership: m,
        };
        assert!(proves(&notice(id(9)), id(7)));
        // A member that has not seen this node's addition yet.
        assert!(!proves(&notice(id(5)), id(7)));
        assert!(!proves(&notice(id(7)), id(7)));
        assert!(!proves(&notice(None), id(7)));
    }

    #[tokio::test]
    async fn a_notice_that_is_no_proof_is_dropped_for_the_next() {
        let removal = Removal::default();
        removal.heard(NotAMember {
            by: "node2".into(),
            membership: id(3),
        });
        let waiting = {
            let removal = removal.clone();
            tokio::spawn(async move { removal.proven(|| id(7)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        removal.heard(NotAMember {
            by: "node1".into(),
            membership: id(12),
        });
        let proof = waiting.await.expect("the proof");
        assert_eq!(proof.by, "node1");
    }

    #[test]
    fn the_marker_round_trips() {
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(marked(dir.path()), None);
        let notice = NotAMember {
            by: "node1".into(),
            membership: id(4),
        };
        mark(dir.path(), &notice).unwrap();
        assert_eq!(marked(dir.path()), Some(notice));
        unmark(dir.path());
        assert_eq!(marked(dir.path()), None);
    }
}
