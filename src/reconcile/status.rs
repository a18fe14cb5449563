//! What a node reports about its reconciler (`GET /api/v1/node`, and per
//! member in `GET /api/v1/cluster`).

use serde::{Deserialize, Serialize};

/// A kernel change that failed and is being retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedChange {
    /// The service it belongs to (API id).
    pub service: String,
    /// What was attempted: "add destination 10.0.0.2:80 to service TCP …".
    pub change: String,
    /// Why it failed, with the whole chain of causes.
    pub error: String,
    /// Passes in a row that failed on this service.
    pub attempts: u32,
}

/// The reconciler's state on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    /// `on` (this host's IPVS), `memory` (an in-memory table) or `off`.
    pub kernel: String,
    /// `managed` or `all`: which kernel services this node may change.
    pub ownership: String,
    /// Raft index of the desired state the last pass worked from.
    pub seen_index: u64,
    /// Highest Raft index whose whole desired state is in the kernel (with
    /// `kernel: off`, the applied index). `?wait=applied` waits for this.
    pub programmed_index: u64,
    /// RFC 3339 times of the last pass that left nothing failed, and of the
    /// last full resync.
    pub last_success: Option<String>,
    pub last_resync: Option<String>,
    /// Passes run, and kernel changes made, since start.
    pub passes: u64,
    pub changes: u64,
    /// Changes made by periodic resyncs: someone changed the table by hand,
    /// or it was lost (module reload).
    pub drift_repaired: u64,
    /// Changes awaiting a retry, and why each failed.
    pub pending: usize,
    pub failed: Vec<FailedChange>,
    /// Why the last pass could not read the kernel, if it could not.
    pub error: Option<String>,
    /// Kernel services that are not ours (left alone), as API ids.
    pub foreign: Vec<String>,
    /// Addresses bound on the VIP interface.
    pub vips: Vec<std::net::IpAddr>,
}
