//! The JSON shapes of API responses, with the field names of the REST API
//! (issue 3) that tools rely on. Requests take the same shapes (read by
//! [`super::validate`], which lists the fields each object accepts); the
//! response-only fields `id` and `revision` are accepted there too, so a
//! resource read with GET can be sent back with PUT.
//!
//! Enumerations are lower-case strings here (`"tcp"`, `"masq"`), not the
//! model's enums, so that the wire format is spelled out in one place and a
//! client of a newer server can still read a value it does not know.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A virtual service: either `protocol`/`address`/`port` or
/// `fwmark`/`family` identify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Derived from the identity ([`super::ids::service_id`]).
    pub id: String,
    /// Log index of the last change to the service or its servers; also
    /// sent as the `ETag` (quoted).
    pub revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    pub scheduler: String,
    /// `null` when the service is not persistent.
    pub persistence: Option<PersistenceView>,
    pub flags: Vec<String>,
    /// Persistence engine: `null` or `"sip"`.
    pub pe: Option<String>,
    /// Sorted by address, then port.
    pub servers: Vec<ServerView>,
    /// Whether every node binds the service's address on its VIP interface.
    #[serde(default)]
    pub bind_address: bool,
    /// Seconds a removed server (or the removed service) drains, when the
    /// removal names none; absent: the accepting node's `DRAIN_GRACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_grace: Option<u32>,
    /// Present while the service is being removed (response-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<DrainView>,
    /// How every node probes the servers (absent: not probed); the fields
    /// of [`crate::api::validate::CHECK_FIELDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// What a node does with servers it finds down (absent: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_policy: Option<serde_json::Value>,
}

/// A removal in progress: the server (or every server of the service)
/// carries no new connections until `until`, then it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    /// RFC 3339, UTC.
    pub since: String,
    /// Seconds.
    pub grace: u32,
    /// RFC 3339, UTC.
    pub until: String,
}

/// Persistence of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistenceView {
    /// Seconds.
    pub timeout: u32,
    pub netmask: NetmaskView,
}

/// An IPv4 netmask as a dotted string, an IPv6 one as a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetmaskView {
    Mask(Ipv4Addr),
    Prefix(u8),
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    /// Derived from address and port ([`super::ids::server_id`]).
    pub id: String,
    pub address: String,
    pub port: u16,
    pub weight: u32,
    /// `masq`, `dr` or `tunnel`.
    pub forward: String,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// `null` unless `forward` is `tunnel`.
    pub tunnel: Option<TunnelView>,
    /// Present while the server is being removed (response-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<DrainView>,
    /// The server's own health check, overriding the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<serde_json::Value>,
    /// Each node's view of the server's health, by node id (response-only;
    /// absent when the server is not probed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, ServerHealthView>,
}

/// One node's view of a probed server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealthView {
    /// `up` or `down`.
    pub state: String,
    /// RFC 3339: when it entered this state (`null`: since the node started
    /// probing it; a server starts up).
    pub since: Option<String>,
    /// Probes so far.
    pub checks: u64,
    /// Duration of the last successful probe, microseconds.
    pub latency_us: Option<u64>,
    /// Why the last probe failed, while it fails.
    pub error: Option<String>,
    /// The weight this node gives the server in its kernel now (0 while
    /// down, ramping during slow start; `null`: removed).
    pub weight: Option<u32>,
}

/// Encapsulation of a tunnel-forwarded server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelView {
    /// `ipip`, `gue` or `gre`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The GUE destination port; `null` for the other types.
    pub port: Option<u16>,
    /// `none`, `csum` or `remcsum`.
    pub checksum: String,
}

/// The whole desired configuration: the body of `GET /api/v1/config`, and
/// (without `id`s and `revision`s, which are ignored) of
/// `PUT /api/v1/config`. An object rather than a bare array, so that it can
/// grow fields later without breaking clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// Sorted by service identity (inet services by protocol, address and
    /// port, then fwmark services).
    pub services: Vec<ServiceView>,
}

/// `GET /api/v1/services?watch=true` without `since`: the first event, the
/// services as of `revision` (the changes that follow are those after it).
/// The services carry no health views: a watch follows the desired state,
/// which every node holds the same at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSync {
    pub revision: u64,
    pub services: Vec<ServiceView>,
}

/// Every service one log entry changed: the event of a watch at revision
/// `revision` (the entry's index, the changed services' new ETag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChanges {
    pub revision: u64,
    /// In service order; each service once.
    pub changes: Vec<WatchChange>,
}

/// One service changed by a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChange {
    /// `put` (created or changed: `service` is it now) or `delete` (gone).
    #[serde(rename = "type")]
    pub kind: String,
    /// The service's id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceView>,
}

/// A watch's heartbeat: no service changed up to `revision`, so a client
/// may resume from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchProgress {
    pub revision: u64,
}

/// What `PUT /api/v1/config` changes (or, with `?dry_run=true`, would
/// change), by id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPlan {
    pub added: Vec<String>,
    pub changed: Vec<ServiceChange>,
    pub removed: Vec<String>,
    /// Services left exactly as they are (their revisions do not change).
    pub unchanged: usize,
}

/// The answer to a write with `?dry_run=true`: nothing was committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRun {
    /// Always true: tells a rehearsal from the write's own answer.
    pub dry_run: bool,
    /// The status the write would answer (201, 200, 202, 204).
    pub status: u16,
    /// The body the write would answer: the object as it would be (its
    /// `revision` 0, since nothing was committed), or `null` when the write
    /// would leave none (a deletion at once).
    pub result: serde_json::Value,
    /// What the desired state would change.
    pub desired: ConfigPlan,
    /// What each member's kernel would change, as its reconciler would
    /// program it now (its kernel table, its health checks, its drains).
    pub kernels: Vec<NodePlan>,
}

/// The answer to a membership change with `?dry_run=true`: nothing was
/// changed. Checked against this node's view of the membership (the
/// leader's, which decides, is at most a heartbeat ahead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipDryRun {
    /// Always true.
    pub dry_run: bool,
    /// The status the change would answer (200 for a join, 204 for a
    /// removal).
    pub status: u16,
    /// What it would do, in words.
    pub change: String,
    /// The members after it, by name.
    pub members: Vec<String>,
    /// The voters after it, by name.
    pub voters: Vec<String>,
    /// Voters a write would need after it (a majority).
    pub quorum: usize,
}

/// One member's kernel changes for a dry run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// `RAFT_NODE_ID`.
    pub node: String,
    /// In the order the reconciler would make them; empty when the kernel
    /// already matches.
    pub changes: Vec<KernelChange>,
    /// Why this member's plan is not known (it did not answer, programs no
    /// kernel, or its table could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One kernel change, as `diff` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelChange {
    /// `+` add, `~` edit in place, `-` delete.
    pub op: String,
    pub change: String,
}

impl From<&crate::ipvs::Change> for KernelChange {
    fn from(change: &crate::ipvs::Change) -> KernelChange {
        KernelChange {
            op: change.sign().to_string(),
            change: change.to_string(),
        }
    }
}

/// What a member is asked to plan for a dry run: the touched services as
/// the write would leave them (`null`: gone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub services: Vec<(
        crate::model::ServiceKey,
        Option<crate::model::ServiceConfig>,
    )>,
}

/// How one service would change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub id: String,
    /// Scheduler, flags, persistence or engine change.
    pub settings: bool,
    pub servers_added: Vec<String>,
    pub servers_changed: Vec<String>,
    pub servers_removed: Vec<String>,
}

/// `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// `RAFT_NODE_ID` of the leader; `null` while there is none, and while
    /// this node knows no quorum has acknowledged one lately (see `quorum`).
    pub leader_id: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    /// This node's contact with a quorum.
    pub quorum: QuorumView,
    pub members: Vec<MemberView>,
}

/// What a node knows of its contact with a quorum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// A quorum acknowledged the leader within the last 2 s.
    pub ok: bool,
    /// Milliseconds since a quorum last acknowledged the leader, as this
    /// node knows; `null`: not since it started.
    pub last_contact_ms: Option<u64>,
    /// The leader that acknowledgement was for.
    pub last_leader: Option<String>,
    /// Why the node has no quorum (`null` when it has one).
    pub problem: Option<String>,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// `RAFT_NODE_ID`.
    pub id: String,
    /// `host:port` of the Raft transport.
    pub raft_addr: String,
    /// `host:port` of the HTTP API.
    pub api_addr: String,
    /// False for a learner (still catching up).
    pub voter: bool,
    /// Last log index known to be applied (as the member reports it, else
    /// as the leader sees its replication); `null` when unknown.
    pub last_applied: Option<u64>,
    pub reachable: bool,
    /// The member's own report (`GET /api/v1/node`); absent when it did
    /// not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeView>,
}

/// One node's own view: its Raft state and its reconciler
/// (`GET /api/v1/node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// `RAFT_NODE_ID`.
    pub id: String,
    pub api_addr: String,
    pub raft_addr: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    pub term: u64,
    /// `RAFT_NODE_ID` of the leader this node follows; `null` when none.
    pub leader_id: Option<String>,
    /// Last log index this node applied.
    pub last_applied: u64,
    pub reconcile: ReconcileStatus,
    /// The servers this node probes, as it sees them.
    #[serde(default)]
    pub health: NodeHealthView,
    /// Why this node cannot serve correctly now (what `/readyz` answers);
    /// empty when it can.
    #[serde(default)]
    pub problems: Vec<ProblemView>,
    /// Its data directory (RAFT_VOL_DIR).
    #[serde(default)]
    pub store: StoreView,
    /// How traffic reaches it (ANNOUNCE): what it announces or owns now.
    #[serde(default)]
    pub announce: AnnounceView,
}

/// How a node brings its service addresses' traffic to itself
/// (`announce` in `GET /api/v1/node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceView {
    /// `none`, `bgp` or `l2` (ANNOUNCE).
    pub mode: String,
    /// `off` (ANNOUNCE=none), `starting`, `announcing` (something announced
    /// or owned), `idle` (nothing it may announce), `failed` (it cannot
    /// announce: see `problem`) or `withdrawn` (stopping).
    pub state: String,
    /// RFC 3339 time `state` last changed.
    pub since: Option<String>,
    /// What keeps the node from announcing, when something does.
    pub problem: Option<String>,
    /// Every service address (of `bind_address` services) and what this
    /// node does with it.
    #[serde(default)]
    pub vips: Vec<VipView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2View>,
    /// The IPVS connection-sync daemons (SYNC_INTERFACE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
    /// The kernel settings its mode needs, as they are now.
    #[serde(default)]
    pub sysctls: Vec<SysctlView>,
}

impl Default for AnnounceView {
    fn default() -> AnnounceView {
        AnnounceView {
            mode: "none".into(),
            state: "off".into(),
            since: None,
            problem: None,
            vips: Vec::new(),
            bgp: None,
            l2: None,
            sync: None,
            sysctls: Vec::new(),
        }
    }
}

/// One service address on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    pub address: std::net::IpAddr,
    /// The services on it (API ids).
    pub services: Vec<String>,
    /// This node can serve it (programmed, servers up, not draining).
    pub can_serve: bool,
    /// Announced by this node now: its route is offered to the routers
    /// (bgp), or it holds the address and answers ARP/ND for it (l2).
    pub announced: bool,
    /// l2: the node the cluster gave the address to (`null`: none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// RFC 3339 time `announced` last changed.
    pub since: Option<String>,
    /// Why it is not announced here, when it is not.
    pub why_not: Option<String>,
}

/// `ANNOUNCE=bgp`: the speaker and the sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpView {
    /// `bird` (run by this node) or `external`.
    pub speaker: String,
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    /// The kernel table holding the announced host routes.
    pub table: u32,
    /// BFD detection time in milliseconds (`null`: BFD off).
    pub bfd_detect_ms: Option<u32>,
    pub peers: Vec<BgpPeerView>,
}

/// One BGP session, as BIRD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpPeerView {
    pub address: std::net::IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    /// BIRD's state (`Established`, `Active`, `Connect`…; `unknown` when
    /// BIRD does not answer).
    pub state: String,
    /// RFC 3339 time of the last state change, as BIRD gives it.
    pub since: Option<String>,
    /// Routes this node exports to the peer now.
    pub exported: Option<u64>,
    /// BFD session state (`Up`, `Down`, `Init`…), when BFD is on.
    pub bfd: Option<String>,
}

/// `ANNOUNCE=l2`: the interface and this node's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2View {
    pub interface: String,
    /// Milliseconds an owner keeps its addresses without a renewal.
    pub lease_ms: u32,
    /// The lease is held: the node may hold the addresses it owns.
    pub lease_held: bool,
    /// Milliseconds the lease has left (`null`: not held).
    pub lease_left_ms: Option<u64>,
    /// RFC 3339 time of the last gratuitous ARP/unsolicited NA sent.
    pub last_announcement: Option<String>,
}

/// The IPVS connection-sync daemons of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncView {
    pub interface: String,
    pub sync_id: u8,
    pub group: std::net::IpAddr,
    pub port: u16,
    pub ttl: u8,
    /// The kernel runs the master (sends this node's connections).
    pub master: bool,
    /// The kernel runs the backup (takes the other nodes' connections).
    pub backup: bool,
    pub problem: Option<String>,
}

/// A kernel setting a mode needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlView {
    /// Dotted, as `sysctl` names it (`net.ipv4.conf.all.arp_ignore`).
    pub name: String,
    pub wanted: String,
    /// What it holds (`null`: it cannot be read).
    pub value: Option<String>,
    /// What it is for.
    pub why: String,
    pub ok: bool,
    pub problem: Option<String>,
}

/// One reason a node is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemView {
    /// `membership`, `disk`, `store` or `raft`.
    pub check: String,
    pub detail: String,
}

/// A node's data directory (`store` in `GET /api/v1/node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    /// False while writes fail (the disk is full or failing): the node then
    /// acknowledges nothing, and recovers by itself when writes succeed.
    pub writable: bool,
    /// Why writes fail, while they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 time of the first failure of this outage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// A damaged record found while running (the node then stops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// Writes or flushes that failed, and recoveries, since the start.
    pub write_failures: u64,
    pub recoveries: u64,
    /// Free bytes on the file system of RAFT_VOL_DIR (for the unprivileged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

impl Default for StoreView {
    fn default() -> Self {
        StoreView {
            writable: true,
            error: None,
            failing_since: None,
            damaged: None,
            write_failures: 0,
            recoveries: 0,
            free_bytes: None,
        }
    }
}

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

/// A node's health checking (`health` in `GET /api/v1/node`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealthView {
    pub servers: Vec<ProbeView>,
    /// Services whose probed servers are all down on this node (kept at
    /// their weights, fail-open, or sent to their fallback server).
    pub all_down: Vec<String>,
}

/// One server a node probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Service id.
    pub service: String,
    /// Server id.
    pub server: String,
    /// `address:port` the probes go to.
    pub target: String,
    /// The check's kind.
    pub kind: String,
    #[serde(flatten)]
    pub health: ServerHealthView,
}

/// `POST /api/v1/cluster/join`: a new node asking to become a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The new node's `RAFT_NODE_ID`.
    pub id: String,
    /// `ip:port` of its Raft transport.
    pub raft_addr: String,
    /// `ip:port` of its HTTP API.
    pub api_addr: String,
}

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

/// This node's kernel table (`GET /api/v1/node/kernel`), in the model's own
/// encoding (the one the Raft log uses), with the counters the kernel keeps;
/// `ipvs-manager list --kernel` and `diff` read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTable {
    /// `version` and `conn_tab_size`, as `ipvsadm -Ln`'s first line shows.
    pub info: crate::ipvs::Info,
    pub services: Vec<crate::model::ServiceEntry>,
    /// The services this node created or adopted (it may change or remove
    /// them); the others are foreign unless they are desired.
    pub owned: Vec<crate::model::ServiceKey>,
    /// What the kernel should hold now, as this node computes it: for each
    /// desired service (by id), its servers (by id) with the weight this
    /// node programs — drains and its own health checks applied, and the
    /// fallback server while it takes the traffic. A desired service that
    /// is absent has drained. The web UI compares the table with it.
    #[serde(default)]
    pub target: BTreeMap<String, BTreeMap<String, u32>>,
}

/// `GET /api/v1/traffic`: one row per service of the desired state with
/// every member's numbers, as last sampled (see [`crate::node::traffic`]).
/// With `?since=S`, only the rows that changed after answer `S` and the
/// services removed since (`full: false`); apply `removed` first, then
/// `services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficView {
    /// How often every node samples its kernel.
    pub sampled_every_ms: u64,
    /// This answer's number: pass it as `?since=` to get what changed
    /// after it. It grows with every sampling round of the node answering.
    pub sample: u64,
    /// Every member's name: the keys of each row's `nodes`.
    pub nodes: Vec<String>,
    /// Members whose summary could not be had in the last round: their
    /// numbers in the rows are zero, with `reported: false`.
    pub unreachable: Vec<String>,
    /// True: the whole table (no `?since`, or it named an answer this node
    /// no longer knows, or none it gave); false: only the changes.
    pub full: bool,
    /// Sorted by service id.
    pub services: Vec<TrafficRow>,
    /// Ids of the services removed after answer `since` (empty when full).
    pub removed: Vec<String>,
}

/// One service in [`TrafficView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRow {
    /// The service's id, as in `/api/v1/services/{id}`.
    pub service: String,
    /// By member name.
    pub nodes: BTreeMap<String, TrafficNode>,
    /// The sums over the members.
    pub total: TrafficTotal,
    /// Connections per second summed over the members, one value per
    /// sampling round, oldest first, the newest last; at most 90 (15 min),
    /// leading zeros left out (an idle service has `[]`).
    pub cps: Vec<u64>,
}

/// One service on one member, as that member sampled it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficNode {
    /// Servers in that member's kernel with a weight above 0 and not down
    /// by its own health checks.
    pub servers_up: u32,
    /// Servers the service has in the desired state.
    pub servers_total: u32,
    /// Whether the service is in that member's kernel.
    pub programmed: bool,
    /// Summed over the service's destinations.
    pub active_conns: u64,
    pub inactive_conns: u64,
    /// The kernel's rate estimates for the service.
    pub cps: u64,
    pub inbps: u64,
    pub outbps: u64,
    /// False when the member did not answer the last poll (its numbers are
    /// then zero); left out when true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub reported: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The sums of a [`TrafficRow`]'s members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficTotal {
    pub servers_up: u64,
    pub servers_total: u64,
    /// How many members have the service in their kernel.
    pub programmed: u64,
    pub active_conns: u64,
    pub inactive_conns: u64,
    pub cps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// What a member serves its peers on its Raft port (`NODE_TRAFFIC_PATH`):
/// its row of every service of the desired state, as of its last sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTrafficSummary {
    /// Whether the member programs a kernel (not with `IPVS_KERNEL=off`).
    pub kernel: bool,
    /// When it last read its kernel table (unix ms); `None` before the
    /// first read.
    pub sampled_at_ms: Option<u64>,
    /// Reads of its kernel table that failed since it started.
    pub read_failures: u64,
    /// By service id.
    pub services: BTreeMap<String, TrafficNode>,
}

/// `GET /api/v1/traffic/{service}`: one service in detail, per member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficDetail {
    pub service: String,
    pub sampled_every_ms: u64,
    /// By member name.
    pub nodes: BTreeMap<String, TrafficNodeDetail>,
}

/// One service on one member (also what a member answers its peers on
/// `NODE_TRAFFIC_PATH/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficNodeDetail {
    /// False when the member did not answer (`error` says why, the rest is
    /// empty).
    pub reported: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the service is in its kernel.
    pub programmed: bool,
    /// The servers of the desired state and any other destination its
    /// kernel holds for the service, by server id.
    pub servers: Vec<TrafficServer>,
    /// Its last 15 minutes, oldest first.
    pub history: TrafficHistory,
}

/// One real server of a service on one member, as last sampled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficServer {
    /// Its id, as in `/api/v1/services/{id}/servers/{server_id}`.
    pub server: String,
    /// Its weight in the member's kernel; `null` when it is not there.
    pub weight: Option<u32>,
    /// `up` or `down` by the member's own health checks, `unchecked` when
    /// it has none.
    pub health: String,
    pub active_conns: u64,
    pub inactive_conns: u64,
    pub cps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A service's samples on one member: `at_ms[i]` is when the `i`th value
/// of every series was read. At most 90 (15 min at one sample every 10 s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficHistory {
    /// Unix milliseconds.
    pub at_ms: Vec<u64>,
    pub active_conns: Vec<u64>,
    pub inactive_conns: Vec<u64>,
    pub cps: Vec<u64>,
    pub inbps: Vec<u64>,
    pub outbps: Vec<u64>,
    pub inpps: Vec<u64>,
    pub outpps: Vec<u64>,
}
