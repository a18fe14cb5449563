//! Watches: the changes to the desired state as they are applied here,
//! from a revision on (`GET /api/v1/services?watch=true&since=N`), and this
//! node's report each time it changes (`GET /api/v1/node?watch=true`).
//!
//! A watch of the services reads the state machine's history
//! ([`crate::store::history`]), which holds each entry's changes under the
//! entry's log index once this node has applied and published it: the
//! events come in revision order, each revision once, never ahead of what
//! a read of this node shows, and with the same revisions on every node, so
//! a client resumes on any node from the last revision it saw.

use super::Node;
use crate::api::json::{self, NodeView, WatchChange, WatchChanges, WatchProgress, WatchSync};
use crate::api::{ids, view, ApiError};
use crate::store::{Compacted, Revision};
use futures_util::Stream;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a watch stays silent before it sends a [`WatchProgress`]: a
/// heartbeat that also moves the client's resume point past revisions that
/// changed no service (and lets it notice a dead connection).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// How often a node watch looks at its report for a change, at most.
pub const NODE_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// One event of a watch of the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// The services as of a revision: the first event of a watch that
    /// named no revision to start after.
    Sync(WatchSync),
    /// Every service one log entry changed.
    Changes(WatchChanges),
    /// Nothing changed up to this revision.
    Progress(WatchProgress),
    /// The watch fell further behind than the history reaches (a slow
    /// reader, or a snapshot installed here): it ends; list again.
    Compacted(ApiError),
}

/// Where a watch of the services starts: after `since` (a revision the
/// client saw, from `field`: `?since` or `Last-Event-ID`), or, without
/// one, with the whole list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since<'a> {
    pub revision: Option<u64>,
    pub field: &'a str,
}

/// `GET /api/v1/services?watch=true[&since=N]`: the events, or 410
/// (`revision_compacted`) at once when `since` is older than the history
/// here. The stream ends when the node stops or the watch falls behind the
/// history.
pub fn watch_services(
    node: &Arc<Node>,
    since: Since<'_>,
) -> Result<impl Stream<Item = ServiceEvent> + 'static, ApiError> {
    let history = node.state.history();
    // Subscribed before reading, so that a change recorded in between
    // wakes the watch rather than slipping by.
    let head = history.subscribe();
    let mut pending = VecDeque::new();
    let sent = match since.revision {
        Some(revision) => {
            let revisions = history
                .after(revision)
                .map_err(|c| compacted(since.field, c))?;
            pending.extend(revisions.iter().map(changes));
            revisions.last().map_or(revision, |r| r.revision)
        }
        None => {
            // The published state is never behind the history: whatever the
            // history holds after this revision comes after this list.
            let committed = node.state.current();
            let revision = committed.applied_index();
            pending.push_back(ServiceEvent::Sync(WatchSync {
                revision,
                services: view::services_view(&committed.desired),
            }));
            revision
        }
    };
    let watch = ServiceWatch {
        node: node.clone(),
        head,
        stopping: node.stopping.clone(),
        sent,
        pending,
        ended: false,
    };
    Ok(futures_util::stream::unfold(watch, |mut w| async move {
        let event = w.next().await?;
        Some((event, w))
    }))
}

/// A watch of the services between two events.
struct ServiceWatch {
    node: Arc<Node>,
    head: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    /// The last revision sent (every change up to it was sent).
    sent: u64,
    pending: VecDeque<ServiceEvent>,
    ended: bool,
}

impl ServiceWatch {
    async fn next(&mut self) -> Option<ServiceEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended || *self.stopping.borrow() {
                return None;
            }
            self.head.mark_unchanged();
            // The head and the revisions after `sent` under one lock: when
            // there are none, nothing changed up to the head.
            let (after, head) = {
                let history = self.node.state.history().lock();
                (history.after(self.sent), history.head())
            };
            match after {
                Ok(revisions) if !revisions.is_empty() => {
                    self.pending.extend(revisions.iter().map(changes));
                    self.sent = revisions.last().map_or(self.sent, |r| r.revision);
                    continue;
                }
                Ok(_) => {}
                Err(c) => {
                    self.ended = true;
                    return Some(ServiceEvent::Compacted(compacted("?since", c)));
                }
            }
            tokio::select! {
                changed = self.head.changed() => {
                    // The state machine is gone: the node is stopping.
                    if changed.is_err() {
                        return None;
                    }
                }
                stopping = self.stopping.changed() => {
                    if stopping.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(PROGRESS_INTERVAL) => {
                    // A client that resumes from a revision ahead of this
                    // node keeps it (it saw it elsewhere).
                    self.sent = self.sent.max(head);
                    return Some(ServiceEvent::Progress(WatchProgress { revision: self.sent }));
                }
            }
        }
    }
}

/// A revision of the history as the event a client sees.
fn changes(revision: &Revision) -> ServiceEvent {
    ServiceEvent::Changes(WatchChanges {
        revision: revision.revision,
        changes: revision
            .changes
            .iter()
            .map(|c| WatchChange {
                kind: if c.service.is_some() { "put" } else { "delete" }.to_string(),
                id: ids::service_id(&c.key),
                service: c.service.as_deref().map(view::service_view),
            })
            .collect(),
    })
}

fn compacted(field: &str, c: Compacted) -> ApiError {
    ApiError::revision_compacted(field, c.since, c.oldest)
}

/// `GET /api/v1/node?watch=true`: this node's report now, then each time
/// it differs from the last one sent (looked at on every change of the
/// applied state, the reconciler's status or the announcement, and at
/// least every [`NODE_WATCH_INTERVAL`]; at most one report per interval).
/// Ends when the node stops.
pub fn watch_node(node: &Arc<Node>) -> impl Stream<Item = NodeView> + 'static {
    struct NodeWatch {
        node: Arc<Node>,
        last: Option<NodeView>,
        state: watch::Receiver<crate::store::Committed>,
        reconcile: watch::Receiver<json::ReconcileStatus>,
        announce: watch::Receiver<json::AnnounceView>,
        stopping: watch::Receiver<bool>,
    }
    let w = NodeWatch {
        node: node.clone(),
        last: None,
        state: node.state.subscribe(),
        reconcile: node.reconcile.clone(),
        announce: node.announce.clone(),
        stopping: node.stopping.clone(),
    };
    futures_util::stream::unfold(w, |mut w| async move {
        loop {
            if *w.stopping.borrow() {
                return None;
            }
            let report = super::reports::report(&w.node);
            if w.last.as_ref() != Some(&report) {
                w.last = Some(report.clone());
                return Some((report, w));
            }
            tokio::time::sleep(NODE_WATCH_INTERVAL).await;
            // Whatever changed meanwhile is in the next report; waiting for
            // a change (or the interval) keeps an idle watch quiet.
            tokio::select! {
                _ = w.state.changed() => {}
                _ = w.reconcile.changed() => {}
                _ = w.announce.changed() => {}
                stopping = w.stopping.changed() => {
                    if stopping.is_err() {
                        return None;
                    }
                }
                _ = tokio::time::sleep(NODE_WATCH_INTERVAL) => {}
            }
        }
    })
}
