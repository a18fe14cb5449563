//! The application layer: what a node does for a client, in domain and API
//! types — no HTTP framework or client types in the signatures. The HTTP
//! adapter ([`crate::server`]) parses a request into these arguments and
//! renders what they return; tests call them directly.
//!
//! Map (one function per operation of [`crate::api::ROUTES`]):
//! - [`writes`]: the write protocol — precheck against the committed state,
//!   commit through Raft (forwarded to the leader when needed), wait until
//!   this node applied it and, with `?wait=`, until the nodes programmed it;
//!   `create_service`, `replace_service`, `patch_service`, … `replace_config`.
//! - [`reads`]: the desired state as the API shows it, optionally
//!   linearized (`?consistent=true`), with every node's health views.
//! - [`health`]: this node's health checks as views, and the poller of the
//!   other members' views.
//! - [`reports`]: this node's report, the cluster's, the kernel tables (this
//!   node's, and a member's relayed), the metrics, readiness.
//! - [`members`]: joins and removals (on the leader, or forwarded to it).
//! - [`watches`]: the services' changes from a revision on, and this node's
//!   report on change, as streams of events.
//! - [`traffic`]: this node's kernel sampled every 10 s with 15 minutes of
//!   history, the other members' summaries polled as often, and the
//!   cluster's traffic table served from them.

pub mod health;
pub mod members;
pub mod reads;
pub mod reports;
pub mod traffic;
pub mod watches;
pub mod writes;

#[cfg(test)]
mod tests;

use crate::api::json::{self, ReconcileStatus};
use crate::cluster::peer_auth::Peers;
use crate::cluster::{leader, Writer};
use crate::model::DesiredState;
use crate::raft::{node_id, NodeInfo, Raft};
use crate::reconcile::TableReader;
use crate::store::StateWatch;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub use reports::{ready, Readiness};
pub use writes::Wait;

/// What the node's operations need.
pub struct Node {
    pub writer: Writer,
    pub state: StateWatch,
    /// The signed HTTP client for the other nodes' Raft ports.
    pub peers: Peers,
    pub me: NodeInfo,
    /// Seconds a removal drains when neither the request nor the service
    /// names a grace period (`DRAIN_GRACE`).
    pub drain_grace: u32,
    /// The reconciler's status on this node.
    pub reconcile: watch::Receiver<ReconcileStatus>,
    /// The kernel table as the reconciler reads it (`None` with
    /// `IPVS_KERNEL=off`).
    pub kernel: Option<TableReader>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// This node's health checks.
    pub health: Arc<crate::health::Health>,
    /// The other members' health checks, as last polled
    /// ([`health::poll_peers`]), by node id.
    pub peer_health: Mutex<BTreeMap<String, Vec<json::ProbeView>>>,
    /// This node's traffic samples and the cluster's traffic table
    /// ([`traffic::run`] keeps them).
    pub traffic: traffic::Traffic,
    /// Whether this node's disk takes writes and its store is sound.
    pub disk: watch::Receiver<crate::store::DiskStatus>,
    /// Whether it has caught up with the leader since it started.
    pub caught_up: watch::Receiver<bool>,
    /// RAFT_VOL_DIR (its free space is reported).
    pub vol_dir: std::path::PathBuf,
    /// What this node announces (ANNOUNCE).
    pub announce: watch::Receiver<json::AnnounceView>,
    /// True once the node is stopping: watches end then, rather than hold
    /// the API's shutdown until its timeout.
    pub stopping: watch::Receiver<bool>,
}

/// A peer's answer passed through to the client as it came (a member's
/// kernel table, a join or removal the leader performed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Node {
    pub fn raft(&self) -> &Raft {
        self.writer.raft()
    }

    /// The desired state this node has applied.
    pub fn desired(&self) -> Arc<DesiredState> {
        self.state.current().desired
    }

    /// Every reason this node cannot serve correctly now.
    pub fn problems(&self) -> Vec<crate::readiness::Problem> {
        let metrics = self.raft().metrics().borrow().clone();
        crate::readiness::problems(
            &metrics,
            node_id(&self.me.name),
            &self.disk.borrow(),
            *self.caught_up.borrow(),
            &self.writer.contact().state(),
        )
    }

    /// Refuses what needs a store this node can vouch for, while it
    /// cannot: reads and writes of the desired state while its disk takes
    /// no writes (it cannot follow the log) or its store is damaged.
    pub fn vouch(&self) -> Result<(), crate::api::ApiError> {
        match crate::readiness::store_problem(&self.disk.borrow()) {
            Some(why) => Err(crate::api::ApiError::store_unavailable(
                &why,
                self.state.current().applied_index(),
            )),
            None => Ok(()),
        }
    }

    /// Refuses a plain read while this node has not caught up with the
    /// leader since it started (or rejoined): its state may be far behind.
    pub fn fresh_enough(&self) -> Result<(), crate::api::ApiError> {
        if *self.caught_up.borrow() {
            return Ok(());
        }
        let lagging: Vec<_> = self
            .problems()
            .into_iter()
            .filter(|p| p.check == crate::readiness::Check::Sync)
            .collect();
        Err(crate::api::ApiError::not_ready(&lagging))
    }

    fn is_leader(&self) -> bool {
        leader(self.raft()).is_some_and(|(id, _)| id == node_id(&self.me.name))
    }

    /// Every member's name and Raft address (where peers ask each other),
    /// from the Raft membership.
    fn members(&self) -> Vec<(String, String)> {
        let metrics = self.raft().metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| (n.name.clone(), n.raft_addr.clone()))
            .collect()
    }
}
