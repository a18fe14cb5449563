//! The recent changes to the virtual services, by revision: what a watch
//! (`GET /api/v1/services?watch=true&since=N`) replays before it follows
//! new ones.
//!
//! A revision is the index of the log entry that made the change, the
//! number every node gives it (and a service's ETag), so a client can
//! resume on any node from the last revision it saw. The state machine
//! records each entry's changes as it applies them, in log order, so the
//! history never holds a change this node has not applied, and never two
//! for one service in one revision (a batch names each service once).
//!
//! It is bounded: past [`HISTORY_CHANGES`] changes the oldest revisions are
//! dropped, and a client asking for what came after a dropped one is told
//! how far back the history goes ([`Compacted`]) and must list again, like
//! etcd's compacted revision or the 410 of a Kubernetes watch. A snapshot
//! installed from the leader leaves no record of the entries it covers:
//! the history starts again after it.

use crate::model::{ServiceConfig, ServiceKey};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// How many service changes the history keeps (over all its revisions).
/// One change shares the service's configuration with the state (an `Arc`),
/// so this costs a few hundred kilobytes; it covers a restore of 5,000
/// services twice over.
pub const HISTORY_CHANGES: usize = 10_000;

/// One service changed by one log entry: its configuration after the entry,
/// or `None` when the entry removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceChange {
    pub key: ServiceKey,
    pub service: Option<Arc<ServiceConfig>>,
}

/// Every service one log entry changed, in service order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The entry's log index.
    pub revision: u64,
    pub changes: Vec<ServiceChange>,
}

/// The history no longer holds every change after the revision asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "revision {since} is older than the oldest this node still has ({oldest}): list the services again"
)]
pub struct Compacted {
    /// The revision asked for.
    pub since: u64,
    /// The smallest revision a watch can resume from here.
    pub oldest: u64,
}

/// The bounded history (pure: the state machine drives it).
#[derive(Debug, Clone)]
pub struct History {
    capacity: usize,
    /// Every change after this revision is held (the revisions dropped so
    /// far end here).
    oldest: u64,
    /// The last applied entry recorded (with or without changes).
    head: u64,
    revisions: VecDeque<Revision>,
    /// Changes held, over all revisions.
    changes: usize,
}

impl History {
    /// An empty history of a state machine that has applied up to `applied`:
    /// what came before is not known.
    pub fn new(applied: u64, capacity: usize) -> History {
        History {
            capacity,
            oldest: applied,
            head: applied,
            revisions: VecDeque::new(),
            changes: 0,
        }
    }

    /// Keeps at most `capacity` changes from now on (tests make it small,
    /// to see a watch fall behind).
    #[cfg(test)]
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// The smallest revision a watch can resume from.
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// The last applied entry recorded.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Changes held.
    pub fn len(&self) -> usize {
        self.changes
    }

    pub fn is_empty(&self) -> bool {
        self.changes == 0
    }

    /// Records that entry `revision` was applied with `changes` (none for
    /// an entry that changed no service). An entry at or before the head is
    /// ignored: the log is applied once, in order, and the order of the
    /// history must not depend on a caller getting that right.
    pub fn record(&mut self, revision: u64, mut changes: Vec<ServiceChange>) {
        if revision <= self.head {
            return;
        }
        self.head = revision;
        if changes.is_empty() {
            return;
        }
        changes.sort_by_key(|c| c.key);
        changes.dedup_by_key(|c| c.key);
        self.changes += changes.len();
        self.revisions.push_back(Revision { revision, changes });
        // The newest revision stays even when it alone is larger than the
        // capacity: a watcher already past the older ones still gets it.
        while self.changes > self.capacity && self.revisions.len() > 1 {
            if let Some(dropped) = self.revisions.pop_front() {
                self.changes -= dropped.changes.len();
                self.oldest = dropped.revision;
            }
        }
    }

    /// A snapshot replaced the state at `applied`: the entries it covers
    /// were never applied here one by one, so the history starts again.
    pub fn restart(&mut self, applied: u64) {
        self.revisions.clear();
        self.changes = 0;
        self.oldest = applied;
        self.head = applied;
    }

    /// Every revision after `since`, oldest first; [`Compacted`] when some
    /// change after `since` was dropped. A `since` beyond the head is not
    /// an error: the client saw a node that is ahead of this one, and the
    /// changes come once this node applies them.
    pub fn after(&self, since: u64) -> Result<Vec<Revision>, Compacted> {
        if since < self.oldest {
            return Err(Compacted {
                since,
                oldest: self.oldest,
            });
        }
        let start = self.revisions.partition_point(|r| r.revision <= since);
        Ok(self.revisions.range(start..).cloned().collect())
    }
}

/// The history shared between the state machine, which records, and the
/// watches, which read it and wait on [`SharedHistory::subscribe`] for the
/// head to move.
#[derive(Debug)]
pub struct SharedHistory {
    history: Mutex<History>,
    head: watch::Sender<u64>,
}

impl SharedHistory {
    pub fn new(history: History) -> SharedHistory {
        let (head, _) = watch::channel(history.head());
        SharedHistory {
            history: Mutex::new(history),
            head,
        }
    }

    /// The history, locked; each change is one call, so a panic elsewhere
    /// while holding it leaves it whole.
    pub fn lock(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records entries already applied and published, then wakes the
    /// watches.
    pub fn record(&self, entries: Vec<(u64, Vec<ServiceChange>)>) {
        let head = {
            let mut history = self.lock();
            for (revision, changes) in entries {
                history.record(revision, changes);
            }
            history.head()
        };
        self.head.send_replace(head);
    }

    /// A snapshot was installed at `applied`.
    pub fn restart(&self, applied: u64) {
        self.lock().restart(applied);
        self.head.send_replace(applied);
    }

    /// Every revision after `since` (see [`History::after`]).
    pub fn after(&self, since: u64) -> Result<Vec<Revision>, Compacted> {
        self.lock().after(since)
    }

    /// A receiver of the head's moves (and of restarts); it closes when the
    /// state machine is dropped.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceKey;

    fn key(port: u16) -> ServiceKey {
        crate::store::tests::key(port)
    }

    /// A change of the service on `port` (its content does not matter here).
    fn put(port: u16) -> ServiceChange {
        ServiceChange {
            key: key(port),
            service: None,
        }
    }

    fn revisions(got: &[Revision]) -> Vec<u64> {
        got.iter().map(|r| r.revision).collect()
    }

    #[test]
    fn after_gives_the_revisions_after_since_in_order() {
        let mut h = History::new(3, 100);
        h.record(5, vec![put(80)]);
        h.record(6, vec![]);
        h.record(9, vec![put(81), put(80)]);
        assert_eq!(h.head(), 9);
        assert_eq!(revisions(&h.after(3).unwrap()), [5, 9]);
        assert_eq!(revisions(&h.after(4).unwrap()), [5, 9]);
        assert_eq!(revisions(&h.after(5).unwrap()), [9]);
        assert_eq!(revisions(&h.after(8).unwrap()), [9]);
        assert!(h.after(9).unwrap().is_empty());
        assert!(h.after(100).unwrap().is_empty(), "ahead: wait, not refuse");
        let nine = &h.after(5).unwrap()[0];
        assert_eq!(
            nine.changes.iter().map(|c| c.key).collect::<Vec<_>>(),
            [key(80), key(81)],
            "in service order"
        );
    }

    #[test]
    fn what_came_before_the_start_is_too_old() {
        let h = History::new(3, 100);
        assert_eq!(
            h.after(2),
            Err(Compacted {
                since: 2,
                oldest: 3
            })
        );
        assert_eq!(h.after(0).unwrap_err().oldest, 3);
        assert!(h.after(3).unwrap().is_empty());
    }

    #[test]
    fn it_is_bounded_and_says_how_far_back_it_goes() {
        let mut h = History::new(0, 4);
        for revision in 1..=10 {
            h.record(revision, vec![put(80)]);
            assert!(h.len() <= 4);
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.oldest(), 6);
        assert_eq!(revisions(&h.after(6).unwrap()), [7, 8, 9, 10]);
        assert_eq!(
            h.after(5),
            Err(Compacted {
                since: 5,
                oldest: 6
            })
        );
        // Entries without changes cost nothing and drop nothing.
        h.record(11, vec![]);
        assert_eq!(h.oldest(), 6);
        // A revision larger than the whole history is kept alone.
        h.record(12, (1..=6).map(put).collect());
        assert_eq!(h.oldest(), 10);
        assert_eq!(revisions(&h.after(10).unwrap()), [12]);
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn no_revision_is_recorded_twice_or_out_of_order() {
        let mut h = History::new(0, 100);
        h.record(5, vec![put(80)]);
        h.record(5, vec![put(81)]);
        h.record(4, vec![put(82)]);
        h.record(7, vec![put(83), put(83)]);
        let got = h.after(0).unwrap();
        assert_eq!(revisions(&got), [5, 7]);
        assert_eq!(got[0].changes, [put(80)]);
        assert_eq!(got[1].changes, [put(83)], "a service once per revision");
    }

    #[test]
    fn a_snapshot_restarts_it() {
        let mut h = History::new(0, 100);
        h.record(5, vec![put(80)]);
        h.restart(40);
        assert_eq!(
            h.after(5),
            Err(Compacted {
                since: 5,
                oldest: 40
            })
        );
        assert!(h.after(40).unwrap().is_empty());
        assert!(h.is_empty());
        h.record(41, vec![put(80)]);
        assert_eq!(revisions(&h.after(40).unwrap()), [41]);
    }

    #[tokio::test]
    async fn the_shared_history_wakes_its_watchers_after_recording() {
        let shared = SharedHistory::new(History::new(0, 100));
        let mut rx = shared.subscribe();
        shared.record(vec![(3, vec![put(80)]), (4, vec![])]);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow_and_update(), 4);
        assert_eq!(revisions(&shared.after(0).unwrap()), [3]);
        shared.restart(10);
        rx.changed().await.unwrap();
        assert_eq!(shared.after(3).unwrap_err().oldest, 10);
    }
}
