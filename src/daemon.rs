//! The node: wires storage, Raft, the two HTTP listeners and membership, and
//! owns the order of start-up and shutdown.
//!
//! Start-up: open the store (the directory lock makes a second process on
//! the same RAFT_VOL_DIR fail here), bind the Raft and API ports (port 0:
//! the kernel picks one, and the node advertises and logs it), start Raft,
//! start serving both ports, then enter the cluster (resume, bootstrap or join — the
//! listeners must already serve, because the leader replicates to a joining
//! node before it answers), catch up with the leader, and start the
//! reconciler and the drain janitor; once its first pass is done, tell the
//! service manager the node is ready (and keep its watchdog fed). Shutdown:
//! tell the manager, stop the reconciler (the kernel table stays: traffic
//! keeps flowing), stop accepting API requests and let in-flight ones
//! finish, hand leadership over if this node leads, stop the Raft listener
//! and Raft, and flush storage.

use crate::api::auth::{Policy, Tokens};
use crate::cluster::handover::{self, Handover};
use crate::cluster::membership::{self, Start};
use crate::cluster::network::Network;
use crate::cluster::peer_auth::{self, PeerAuth, Peers};
use crate::cluster::rejoin::{self, KnownMembers, Rejoin};
use crate::cluster::removal::{self, NotAMember, Removal};
use crate::cluster::{rpc, Writer};
use crate::config::{KernelMode, NodeConfig, StoreDamage};
use crate::ipvs::memory::MemoryKernel;
use crate::ipvs::netlink::NetlinkKernel;
use crate::ipvs::vip::{LinkVips, MemoryVips, VipTable};
use crate::ipvs::Kernel;
use crate::node::Node;
use crate::raft::{node_id, NodeInfo};
use crate::reconcile::{Engine, Outputs, Owned, ReconcileStatus, Settings};
use crate::sd_notify::Notifier;
use crate::server::{self, AppState};
use crate::store::{LogStore, StateMachineStore, StoreError};
use crate::tasks::{Died, Essential};
use crate::tls::CertStore;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// HTTP worker threads per listener: half the cores (at least one). The
/// handlers mostly wait on Raft, which runs on the main runtime, and on a
/// small host more threads only contend (measured with bench_cluster).
fn http_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Connections waiting to be accepted, per listener (actix-web's default).
const LISTEN_BACKLOG: u32 = 2048;

/// A listening socket on `addr` (port 0: one the kernel picks), not yet
/// served.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As actix-web binds: a restarted node takes its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// Largest Raft RPC body (append batches, snapshot chunks).
const RAFT_BODY_LIMIT: usize = 64 << 20;

fn raft_config(
    snapshot_logs: u64,
    timing: crate::config::RaftTiming,
) -> anyhow::Result<Arc<openraft::Config>> {
    let config = openraft::Config {
        cluster_name: "ipvs-manager".into(),
        // By default (50/200 ms) failover well under a second on a LAN or
        // loopback.
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_timeout_ms,
        election_timeout_max: timing.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs),
        // Keep a tail for followers that are slightly behind, but no more
        // than the snapshot interval, so compaction really happens.
        max_in_snapshot_log_to_keep: snapshot_logs.min(1000),
        // Entries per append request. An entry is a batch of at most 1 MiB
        // unless one write is larger, so 32 keep a request well within the
        // Raft port's limit (the default, 300, did not), and batching makes
        // that plenty for throughput.
        max_payload_entries: 32,
        ..Default::default()
    };
    Ok(Arc::new(
        config.validate().context("invalid raft configuration")?,
    ))
}

/// The table the reconciler programs: this host's kernel (checked now, so
/// that a node without IPVS or CAP_NET_ADMIN refuses to start with the fix
/// in the message), an in-memory one, or none.
fn open_kernel(mode: KernelMode) -> anyhow::Result<Option<(Box<dyn Kernel + Send>, &'static str)>> {
    const OFF: &str = "or start with IPVS_KERNEL=off to replicate without programming the kernel";
    match mode {
        KernelMode::Off => Ok(None),
        KernelMode::Memory => Ok(Some((Box::new(MemoryKernel::new()), "memory"))),
        KernelMode::On => {
            let mut kernel = NetlinkKernel::connect()
                .map_err(|e| anyhow::anyhow!("{}; {OFF}", crate::errors::chain(&e)))?;
            // Every IPVS command needs CAP_NET_ADMIN, a read as well.
            kernel
                .info()
                .map_err(|e| anyhow::anyhow!("{}; {OFF}", crate::errors::chain(&e)))?;
            Ok(Some((Box::new(kernel), "on")))
        }
    }
}

/// The VIP interface of the kernel mode: the real link, or an in-memory one.
fn vips(mode: KernelMode, ifname: &str) -> anyhow::Result<Box<dyn VipTable>> {
    let context = || format!("VIP_INTERFACE {ifname:?}");
    Ok(match mode {
        KernelMode::Memory => Box::new(MemoryVips::new(ifname).with_context(context)?),
        _ => Box::new(LinkVips::new(ifname).with_context(context)?),
    })
}

/// Waits (up to `limit`) until this node has applied what the leader had
/// committed when asked; whether it did.
async fn catch_up(writer: &Writer, state: &crate::store::StateWatch, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(target) = writer.read_index().await {
            let mut rx = state.subscribe();
            let reached = rx.wait_for(|c| c.applied_index() >= target);
            if tokio::time::timeout_at(deadline, reached).await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Until this node has caught up with the leader once (or `stop`): then
/// says so on `caught_up`.
async fn keep_catching_up(
    writer: Writer,
    state: crate::store::StateWatch,
    caught_up: watch::Sender<bool>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            done = catch_up(&writer, &state, Duration::from_secs(10)) => if done {
                tracing::info!("caught up with the leader");
                caught_up.send_replace(true);
                return;
            },
            _ = &mut stop => return,
        }
    }
}

/// Waits until the reconciler has finished its first pass (with
/// `IPVS_KERNEL=off`, until it follows the applied state).
async fn first_reconcile(mut status: watch::Receiver<ReconcileStatus>) {
    let _ = status.wait_for(|s| s.passes > 0 || s.kernel == "off").await;
}

/// The exit status of a node whose store is damaged (the unit does not
/// restart it: see `RestartPreventExitStatus=`).
pub const EXIT_DAMAGED: u8 = 65;

/// The node would not start, or stopped, because its store is damaged.
#[derive(Debug, thiserror::Error)]
#[error("{damage}. This node must not vote or lead with this state. {advice}")]
pub struct DamagedStore {
    pub damage: String,
    pub advice: String,
}

impl DamagedStore {
    fn new(dir: &std::path::Path, damage: impl std::fmt::Display) -> DamagedStore {
        DamagedStore {
            damage: format!("the store in {} is damaged: {damage}", dir.display()),
            advice: format!(
                "To recover, start it with STORE_DAMAGE=rejoin: the leader removes this node, the \
                 damaged state is moved to {}/damaged-TIME/, and the node joins again with an \
                 empty store that catches up from the leader (the other voters must form a \
                 quorum). Or restore {} from a backup.",
                dir.display(),
                dir.display()
            ),
        }
    }
}

/// Opens the store; on damage, refuses or (STORE_DAMAGE=rejoin) has this
/// node removed from the cluster and opens an empty store to join with. Returns the rejoin under
/// way, if any, with the member to join through: the node then joins rather
/// than resuming.
async fn open_store(
    cfg: &NodeConfig,
    peers: &Peers,
    notifier: &Notifier,
) -> anyhow::Result<(LogStore, StateMachineStore, Option<String>)> {
    let dir = &cfg.vol_dir;
    let pending = Rejoin::pending(dir);
    let removed_before = removal::marked(dir);
    let damage = match crate::store::open(dir, &cfg.name) {
        // Removed before it stopped, and started again: it joins anew from
        // an empty store (its old log and term must not count).
        Ok(store) if pending.is_none() && removed_before.is_some() => {
            drop(store);
            let by = removed_before.map(|n| n.by).unwrap_or_default();
            tracing::info!(%by, "this node was removed from the cluster before it stopped: it joins again as a new member, its old state set aside");
            let rejoin = Rejoin::begin(
                dir,
                &cfg.name,
                cfg.join.as_deref(),
                format!("removed by {by}"),
            )?;
            let started =
                start_afresh(cfg, peers, notifier, &rejoin, "the old state is kept there").await;
            if started.is_ok() {
                removal::unmark(dir);
            }
            return started;
        }
        Ok((log, sm)) => {
            let mut through = None;
            if let Some(rejoin) = &pending {
                // An earlier run set the damaged state aside; make sure the
                // cluster no longer counts this node before it takes part.
                notifier.status("rejoining: waiting for the leader to remove this node first");
                through = Some(rejoin.forget(peers, &cfg.name).await?);
            }
            return Ok((log, sm, through));
        }
        Err(StoreError::Damaged(damage)) => damage,
        Err(e) => {
            return Err(e).with_context(|| format!("failed to open the state in {}", dir.display()))
        }
    };
    if cfg.store_damage == StoreDamage::Refuse {
        return Err(DamagedStore::new(dir, &damage).into());
    }
    tracing::error!(%damage, "the store is damaged; STORE_DAMAGE=rejoin: this node rejoins with an empty store");
    let rejoin = match pending {
        Some(rejoin) => rejoin,
        None => Rejoin::begin(dir, &cfg.name, cfg.join.as_deref(), damage.to_string())?,
    };
    start_afresh(
        cfg,
        peers,
        notifier,
        &rejoin,
        "the damaged state is kept there, for inspection",
    )
    .await
}

/// The rejoin's second half: once the cluster no longer counts this node,
/// its state is set aside (`kept` says why it is kept) and an empty store
/// opened, to join through the member that removed it.
async fn start_afresh(
    cfg: &NodeConfig,
    peers: &Peers,
    notifier: &Notifier,
    rejoin: &Rejoin,
    kept: &str,
) -> anyhow::Result<(LogStore, StateMachineStore, Option<String>)> {
    let dir = &cfg.vol_dir;
    notifier.status("rejoining: waiting for the leader to remove this node first");
    let through = rejoin.forget(peers, &cfg.name).await?;
    tracing::info!(member = %through, "removed from the cluster, to rejoin with an empty store");
    let aside = rejoin::set_aside(dir, &crate::store::files(dir))?;
    tracing::warn!(aside = %aside.display(), "{kept}");
    let (log, sm) = crate::store::open(dir, &cfg.name)
        .with_context(|| format!("failed to open a new state in {}", dir.display()))?;
    Ok((log, sm, Some(through)))
}

/// The owned set; with STORE_DAMAGE=rejoin, a damaged file is moved aside
/// and the node starts with none (it adopts the desired services again).
fn load_owned(cfg: &NodeConfig) -> anyhow::Result<Owned> {
    use crate::reconcile::OwnedError;
    match Owned::load(&cfg.vol_dir) {
        Ok(owned) => Ok(owned),
        Err(e @ (OwnedError::Corrupt { .. } | OwnedError::Checksum { .. }))
            if cfg.store_damage == StoreDamage::Refuse =>
        {
            Err(DamagedStore::new(&cfg.vol_dir, crate::errors::chain(&e)).into())
        }
        Err(e @ (OwnedError::Corrupt { .. } | OwnedError::Checksum { .. })) => {
            let aside = rejoin::set_aside(&cfg.vol_dir, &[Owned::path(&cfg.vol_dir)])?;
            tracing::warn!(error = %crate::errors::chain(&e), aside = %aside.display(), "the owned-services file is damaged; moved aside, starting with none");
            Owned::load(&cfg.vol_dir).context("failed to load the owned services")
        }
        Err(e) => Err(e).context("failed to load the owned services"),
    }
}

/// Until `stop`: keeps the members this node knows in its data directory,
/// for a rejoin after its store is damaged (which may be unreadable then).
async fn keep_members(
    raft: crate::raft::Raft,
    dir: std::path::PathBuf,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut metrics = raft.metrics();
    // The metrics change every tick; the membership seldom.
    let mut last = Vec::new();
    loop {
        let members: Vec<NodeInfo> = metrics
            .borrow_and_update()
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| n.clone())
            .collect();
        if !members.is_empty() && members != last {
            for member in &members {
                crate::logging::name_node(node_id(&member.name), &member.name);
            }
            match KnownMembers::new(members.clone()).save(&dir) {
                Ok(()) => last = members,
                Err(e) => {
                    tracing::warn!(error = %crate::errors::chain(&e), "could not record the cluster's members")
                }
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
    }
}

/// How often every record's checksum is checked while the node runs.
const SCRUB_INTERVAL: Duration = Duration::from_secs(600);

/// Until `stop`: scrubs the store every [`SCRUB_INTERVAL`]; damage found is
/// in the disk status (and stops the node).
async fn scrub(scrubber: crate::store::Scrubber, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SCRUB_INTERVAL) => {}
            _ = &mut stop => return,
        }
        match scrubber.pass().await {
            Ok(()) => tracing::debug!("the store's records passed their checksums"),
            // Reported in the disk status, which stops the node.
            Err(StoreError::Corrupt { .. }) => return stop.await,
            Err(e) => {
                tracing::warn!(error = %crate::errors::chain(&e), "the store's scrub did not run")
            }
        }
    }
}

/// Why a running node stops on its own.
enum Fatal {
    Damaged(String),
    RaftStopped(String),
    TaskDied(Died),
    NotInCluster(String),
    Removed(NotAMember),
}

/// Resolves when the node must stop: its store was found damaged, its
/// Raft core stopped, or it was removed from the cluster.
async fn fatal(
    mut disk: watch::Receiver<crate::store::DiskStatus>,
    raft: crate::raft::Raft,
    removal: Removal,
) -> Fatal {
    let mine = {
        let raft = raft.clone();
        move || *raft.metrics().borrow().membership_config.log_id()
    };
    let removed = removal.proven(mine);
    tokio::pin!(removed);
    let mut metrics = raft.metrics();
    loop {
        if let Some(d) = disk.borrow_and_update().damaged.clone() {
            return Fatal::Damaged(d);
        }
        if let Err(e) = &metrics.borrow_and_update().running_state {
            return Fatal::RaftStopped(e.to_string());
        }
        tokio::select! {
            r = disk.changed() => if r.is_err() { std::future::pending::<()>().await },
            r = metrics.changed() => if r.is_err() {
                return Fatal::RaftStopped("the Raft core ended".into());
            },
            notice = &mut removed => return Fatal::Removed(notice),
        }
    }
}

/// One line for `systemctl status`: role, term, applied and programmed
/// indexes, and what is failing.
fn summary(node: &Node, status: &ReconcileStatus) -> String {
    let raft = node.raft();
    let m = raft.metrics().borrow().clone();
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        _ => "follower",
    };
    let mut line = format!(
        "{role}, term {}, {} members, applied {}, kernel ({}) programmed to {}",
        m.current_term,
        m.membership_config.membership().nodes().count(),
        m.last_applied.map_or(0, |l| l.index),
        status.kernel,
        status.programmed_index
    );
    if let Some(e) = &status.error {
        line.push_str(&format!("; kernel unreadable: {e}"));
    } else if status.pending > 0 {
        line.push_str(&format!(
            "; {} changes failing (GET /api/v1/node)",
            status.pending
        ));
    }
    for p in node.problems() {
        line.push_str(&format!("; NOT READY ({}): {}", p.check.name(), p.detail));
    }
    line
}

/// Feeds the service manager's watchdog while the Raft core answers and the
/// node has no problem of its own (its disk, its store, its core): a wedged
/// or failing node stops the pings, and systemd restarts it. Problems of
/// the cluster (no leader) do not stop them: a restart cannot cure those.
/// Keeps the status line current meanwhile.
async fn watchdog(
    notifier: Arc<Notifier>,
    interval: Option<Duration>,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let every = interval.unwrap_or(Duration::from_secs(5));
    let mut last_line = String::new();
    loop {
        let alive = tokio::time::timeout(every, node.raft().with_raft_state(|_| ())).await;
        let own: Vec<_> = node
            .problems()
            .into_iter()
            .filter(|p| p.check.is_own())
            .collect();
        if interval.is_some() {
            match (matches!(alive, Ok(Ok(()))), own.first()) {
                (true, None) => notifier.watchdog(),
                (false, _) => {
                    tracing::error!("the Raft core does not answer; not feeding the watchdog")
                }
                (true, Some(p)) => tracing::debug!(problem = %p.detail, "not feeding the watchdog"),
            }
        }
        let line = summary(&node, &node.reconcile.borrow());
        if line != last_line {
            notifier.status(&line);
            last_line = line;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// The API's access policy: the token file read and checked (a bad line
/// stops the start, naming the file and the line).
pub fn api_policy(cfg: &NodeConfig) -> anyhow::Result<Policy> {
    let Some(path) = &cfg.api_tokens_file else {
        return Ok(Policy::open());
    };
    let context = || format!("API_TOKENS_FILE {}", path.display());
    let text = std::fs::read_to_string(path).with_context(context)?;
    let tokens = Tokens::parse(&text).with_context(context)?;
    use std::os::unix::fs::PermissionsExt;
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
        tracing::warn!(file = %path.display(), "the API token file is readable by every user of this host; chmod o-r it");
    }
    Ok(Policy {
        tokens: Some(tokens),
        open_reads: cfg.api_open_reads,
    })
}

/// Until `shutdown`: on each SIGHUP, reads the token file and the TLS
/// certificate again. What does not load is reported and the settings in
/// service stay.
async fn reload_on_sighup(
    mut hangup: tokio::signal::unix::Signal,
    cfg: NodeConfig,
    app: web::Data<AppState>,
    tls: Option<Arc<CertStore>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            received = hangup.recv() => if received.is_none() { return },
            _ = &mut shutdown => return,
        }
        if cfg.api_tokens_file.is_some() {
            match api_policy(&cfg) {
                Ok(policy) => {
                    *app.auth
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
                    tracing::info!("SIGHUP: reloaded the API tokens");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: kept the API tokens in service")
                }
            }
        }
        if let Some(store) = &tls {
            match store.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate and key"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: kept the TLS certificate in service")
                }
            }
        }
    }
}

/// Runs the node until `shutdown` completes.
pub async fn run(cfg: NodeConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // SIGHUP reloads; its handler goes in first, since its default action
    // would end the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    // Settings that read files are checked before anything is touched.
    let policy = api_policy(&cfg)?;
    let tls = match &cfg.tls {
        Some(files) => Some(CertStore::open(&files.cert, &files.key)?),
        None => None,
    };
    let notifier = Arc::new(Notifier::from_env());
    // Refuse to start without a usable kernel, before touching anything
    // (the settings were checked by the caller: cli::run_node).
    let kernel = open_kernel(cfg.kernel)?;
    // The reconciler reads the table for the API and the metrics.
    let (table_publisher, table_reader) = match kernel {
        Some(_) => {
            let (publisher, reader) = crate::reconcile::table::channel();
            (Some(publisher), Some(reader))
        }
        None => (None, None),
    };
    let vip_table = match kernel {
        Some(_) => Some(vips(cfg.kernel, &cfg.vip_interface)?),
        None => None,
    };
    let (status_tx, status_rx) = watch::channel(ReconcileStatus::default());
    let (announce_tx, announce_rx) = watch::channel(crate::api::json::AnnounceView {
        mode: cfg.announce.mode.name().into(),
        ..Default::default()
    });
    let (caught_up_tx, caught_up_rx) = watch::channel(false);
    let metrics = Arc::new(crate::metrics::Metrics::new(cfg.metrics_detail));
    let health = crate::health::Health::new(Some(
        metrics.clone() as Arc<dyn crate::health::ProbeObserver>
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // Both ports are bound here and served once Raft runs: with port 0 the
    // kernel picks them, and the node advertises (and logs) what it got.
    let raft_listener = listen(cfg.raft_bind)
        .with_context(|| format!("failed to listen on RAFT_PORT {}", cfg.raft_bind))?;
    let listening = || format!("failed to listen on SERVER_PORT {}", cfg.http_bind);
    let api_listener = listen(cfg.http_bind).with_context(listening)?;
    let raft_bound = raft_listener.local_addr().with_context(listening)?;
    let http_bound = api_listener.local_addr().with_context(listening)?;
    let me = NodeInfo {
        name: cfg.name.clone(),
        raft_addr: SocketAddr::new(cfg.raft_advertise.ip(), raft_bound.port()).to_string(),
        api_addr: SocketAddr::new(cfg.http_advertise.ip(), http_bound.port()).to_string(),
    };
    let id = node_id(&cfg.name);
    crate::logging::name_node(id, &cfg.name);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        // Below actix-web's 5 s keep-alive, so that a pooled connection is
        // not reused just as the peer closes it.
        .pool_idle_timeout(Duration::from_secs(4))
        .build()
        .context("failed to build the HTTP client")?;
    let peer_auth = PeerAuth::new(cfg.cluster_secret.as_ref().map(|s| s.expose()));
    let peers = Peers::new(http, peer_auth.clone());
    let (log, sm, rejoining) = open_store(&cfg, &peers, &notifier).await?;
    sm.record_stages(metrics.write_stages());
    let state = sm.watch();
    let flush = sm.flush_handle();
    let disk = sm.disk_status();
    let scrubber = sm.scrubber();
    let owned = load_owned(&cfg)?;
    let removal = Removal::default();
    let contact = crate::cluster::quorum::Contact::with_lost_after(cfg.raft_timing.lost_after());
    let raft = openraft::Raft::new(
        id,
        raft_config(cfg.snapshot_logs, cfg.raft_timing)?,
        Network::new(
            peers.clone(),
            removal.clone(),
            contact.clone(),
            metrics.write_stages(),
        ),
        log,
        sm,
    )
    .await
    .context("failed to start raft")?;

    let writer = Writer::start(
        raft.clone(),
        peers.clone(),
        contact.clone(),
        metrics.write_stages(),
    );
    let node = Arc::new(Node {
        writer: writer.clone(),
        state: state.clone(),
        peers: peers.clone(),
        me: me.clone(),
        drain_grace: cfg.drain_grace,
        reconcile: status_rx.clone(),
        kernel: table_reader,
        metrics: metrics.clone(),
        health: health.clone(),
        peer_health: Default::default(),
        traffic: Default::default(),
        disk: disk.clone(),
        caught_up: caught_up_rx,
        vol_dir: cfg.vol_dir.clone(),
        announce: announce_rx,
        stopping: stop_tx.subscribe(),
    });
    let app = web::Data::new(AppState {
        node: node.clone(),
        auth: std::sync::RwLock::new(Arc::new(policy.clone())),
        limits: server::Limits::new(cfg.api_max_requests as usize),
    });
    let raft_data = web::Data::new(raft.clone());
    let removal_data = web::Data::new(removal.clone());
    let contact_data = web::Data::new(contact.clone());
    let stages_data = web::Data::new(metrics.write_stages());
    let batcher_data = web::Data::new(writer.batcher().clone());
    let writer_data = web::Data::new(writer.clone());
    let handover = Handover::default();
    let handover_data = web::Data::new(handover.clone());
    let leases = crate::announce::l2::Leases::new(state.clone(), contact.clone());
    let leases_data = web::Data::new(leases.clone());
    let peer_app = app.clone();
    let peer_auth_data = web::Data::new(peer_auth.clone());
    let raft_server = HttpServer::new(move || {
        App::new()
            .app_data(raft_data.clone())
            .app_data(removal_data.clone())
            .app_data(contact_data.clone())
            .app_data(stages_data.clone())
            .app_data(batcher_data.clone())
            .app_data(writer_data.clone())
            .app_data(handover_data.clone())
            .app_data(leases_data.clone())
            .app_data(peer_app.clone())
            .app_data(peer_auth_data.clone())
            .app_data(web::JsonConfig::default().limit(RAFT_BODY_LIMIT))
            // What the guard reads to check a signature.
            .app_data(web::PayloadConfig::new(RAFT_BODY_LIMIT))
            .wrap(middleware::from_fn(peer_auth::guard))
            .configure(rpc::routes)
            .configure(crate::announce::l2::routes)
            .configure(server::peer_routes)
    })
    .workers(http_workers())
    .disable_signals()
    .shutdown_timeout(5)
    .listen(raft_listener)
    .with_context(|| format!("failed to listen on RAFT_PORT {}", cfg.raft_bind))?
    .run();

    let api_app = app.clone();
    let api_server = HttpServer::new(move || {
        App::new()
            .app_data(api_app.clone())
            .default_service(web::to(server::dispatch))
    })
    .workers(http_workers())
    // Per worker; beyond, connections wait in the accept queue.
    .max_connections((cfg.api_max_connections as usize).div_ceil(http_workers()))
    // A client has 5 s to send its request head (slow clients hold no
    // slot for long), and an idle kept-alive connection closes after 5 s.
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(Duration::from_secs(5))
    .disable_signals()
    .shutdown_timeout(10);
    let api_server = match &tls {
        Some(store) => api_server.listen_rustls_0_23(api_listener, store.server_config()?),
        None => api_server.listen(api_listener),
    }
    .with_context(listening)?
    .run();

    let raft_handle = raft_server.handle();
    let api_handle = api_server.handle();
    let raft_task = tokio::spawn(raft_server);
    let api_task = tokio::spawn(api_server);
    let reloads = tokio::spawn(reload_on_sighup(
        hangup,
        cfg.clone(),
        app.clone(),
        tls.clone(),
        stopped(),
    ));
    tracing::info!(
        node = %cfg.name,
        id,
        api = %http_bound,
        tls = tls.is_some(),
        raft = %raft_bound,
        "listening"
    );
    match &policy.tokens {
        Some(tokens) => tracing::info!(
            tokens = tokens.len(),
            reads = if policy.open_reads { "open" } else { "token" },
            "the API requires tokens"
        ),
        None if cfg.api_loopback_only => tracing::warn!(
            api = %cfg.http_bind,
            "no API_TOKENS_FILE: the API listens on loopback only; set API_TOKENS_FILE \
             (or API_OPEN=true for an unauthenticated API) to serve it on BIND_ADDR"
        ),
        None if cfg.http_bind.ip().is_loopback() => {
            tracing::info!("no API_TOKENS_FILE: the API is unauthenticated, on loopback")
        }
        None => tracing::warn!("API_OPEN: the API is unauthenticated, open to whoever reaches it"),
    }
    if peer_auth.required() {
        tracing::info!("peers must sign their requests with the cluster secret");
    } else if !cfg.raft_bind.ip().is_loopback() {
        tracing::warn!(raft = %cfg.raft_bind, "no CLUSTER_SECRET: whoever reaches the Raft port can act as a member");
    }

    notifier.status(&match &cfg.join {
        Some(member) => format!("entering the cluster (RAFT_LEADER {member})"),
        None => "entering the cluster".to_string(),
    });
    tokio::pin!(shutdown);
    let enter = async {
        match &rejoining {
            // Never bootstrap or resume: join through the member that
            // removed this node, as a new node does.
            Some(through) => {
                membership::join_through(&peers, &me, through).await?;
                Rejoin::finish(&cfg.vol_dir);
                Ok(Start::Joined)
            }
            None => membership::start(&raft, &peers, &me, cfg.join.as_deref()).await,
        }
    };
    let entered = tokio::select! {
        r = enter => Some(r),
        _ = &mut shutdown => None,
    };
    let mut fatal_stop = None;
    let in_cluster = matches!(entered, Some(Ok(_)));
    match entered {
        Some(Ok(Start::Resumed)) => {
            tracing::info!("resumed the cluster from {}", cfg.vol_dir.display())
        }
        Some(Ok(Start::Bootstrapped)) => tracing::info!("bootstrapped a new cluster"),
        Some(Ok(Start::Joined)) => tracing::info!("joined the cluster"),
        // Never READY=1 outside a cluster: stop, and say why.
        Some(Err(e)) => {
            fatal_stop = Some(Fatal::NotInCluster(crate::errors::chain(&e).to_string()))
        }
        None => {}
    }
    let mut essential = Essential::default();
    // Tasks that end when their work is done (not watched).
    let mut helpers = Vec::new();
    let (mut api_task, mut raft_task) = (Some(api_task), Some(raft_task));
    essential.spawn(
        "member list keeper",
        keep_members(raft.clone(), cfg.vol_dir.clone(), stopped()),
    );
    essential.spawn("store scrub", scrub(scrubber, stopped()));
    essential.spawn(
        "quorum watch",
        crate::cluster::watch_quorum(raft.clone(), contact.clone(), stopped()),
    );
    if in_cluster {
        // A joining node first catches up with the leader, so its first pass
        // works from the cluster's state, not from an empty one.
        notifier.status("catching up with the leader");
        if catch_up(&writer, &state, Duration::from_secs(10)).await {
            caught_up_tx.send_replace(true);
        } else {
            tracing::warn!("could not catch up with the leader yet; reconciling from the local state meanwhile");
            helpers.push(tokio::spawn(keep_catching_up(
                writer.clone(),
                state.clone(),
                caught_up_tx,
                stopped(),
            )));
        }
        notifier.status("reconciling the kernel");
        essential.spawn(
            "drain janitor",
            crate::cluster::drains::run(writer.clone(), cfg.name.clone(), state.clone(), stopped()),
        );
        let kernel_on = kernel.is_some();
        match kernel.zip(vip_table).zip(table_publisher) {
            Some((((kernel, mode), vip_table), table_publisher)) => {
                // Health checks matter only where a kernel is programmed.
                essential.spawn(
                    "health monitor",
                    crate::health::run(
                        health.clone(),
                        state.subscribe(),
                        crate::health::probe::Prober::new(),
                        stopped(),
                    ),
                );
                essential.spawn(
                    "peer health poller",
                    crate::node::health::poll_peers(node.clone(), Box::pin(stopped())),
                );
                let engine = Engine::new(kernel, owned, cfg.ownership).with_vips(vip_table);
                let settings = Settings {
                    kernel: mode.into(),
                    ownership: cfg.ownership,
                    resync: cfg.resync_interval,
                };
                essential.spawn(
                    "reconciler",
                    crate::reconcile::run(
                        engine,
                        state.clone(),
                        health.subscribe(),
                        settings,
                        Outputs {
                            status: status_tx,
                            table: table_publisher,
                            metrics: metrics.clone(),
                        },
                        stopped(),
                    ),
                );
            }
            None => essential.spawn(
                "reconciler",
                crate::reconcile::follow_applied(state.clone(), status_tx, stopped()),
            ),
        }
        // Every member serves a traffic summary (all zero without a
        // kernel), so that any node's API shows every member.
        essential.spawn(
            "traffic sampler",
            crate::node::traffic::run(node.clone(), Box::pin(stopped())),
        );
        let (servable_tx, servable_rx) = watch::channel(crate::announce::Servable::new());
        essential.spawn(
            "servable addresses",
            crate::announce::follow_servable(
                crate::announce::Inputs {
                    state: state.clone(),
                    health: health.subscribe(),
                    reconcile: kernel_on.then(|| status_rx.clone()),
                },
                servable_tx,
                stopped(),
            ),
        );
        essential.spawn(
            "announcer",
            crate::announce::run(
                crate::announce::Context {
                    cfg: cfg.announce.clone(),
                    name: cfg.name.clone(),
                    vol_dir: cfg.vol_dir.clone(),
                    kernel: cfg.kernel,
                    servable: servable_rx,
                    status: announce_tx,
                    writer: writer.clone(),
                    peers: peers.clone(),
                    contact: contact.clone(),
                    state: state.clone(),
                    leases: leases.clone(),
                },
                stopped(),
            ),
        );
        // Ready means: in the cluster, serving, and the kernel reconciled
        // once; a pass with failures counts (they are retried and reported,
        // and withholding readiness would only get the node restarted).
        let ready = tokio::select! {
            _ = first_reconcile(status_rx.clone()) => true,
            _ = &mut shutdown => false,
            died = essential.died() => {
                fatal_stop = Some(Fatal::TaskDied(died));
                false
            }
        };
        if ready {
            let line = summary(&node, &status_rx.borrow());
            tracing::info!(status = %line, "ready");
            notifier.ready(&line);
            essential.spawn(
                "watchdog",
                watchdog(
                    notifier.clone(),
                    notifier.watchdog_interval(),
                    node.clone(),
                    stopped(),
                ),
            );
            let listener =
                |name: &'static str, r: Result<std::io::Result<()>, tokio::task::JoinError>| {
                    Fatal::TaskDied(Died {
                        task: name,
                        why: match r {
                            Ok(Ok(())) => "it ended on its own".into(),
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                        },
                    })
                };
            tokio::select! {
                _ = &mut shutdown => {}
                f = fatal(disk.clone(), raft.clone(), removal.clone()) => fatal_stop = Some(f),
                died = essential.died() => fatal_stop = Some(Fatal::TaskDied(died)),
                r = async { api_task.as_mut().expect("the API task").await } => {
                    api_task = None;
                    fatal_stop = Some(listener("API listener", r));
                }
                r = async { raft_task.as_mut().expect("the Raft listener task").await } => {
                    raft_task = None;
                    fatal_stop = Some(listener("Raft listener", r));
                }
            }
        }
    }
    match &fatal_stop {
        Some(Fatal::Damaged(d)) => {
            tracing::error!(damage = %d, "the store is damaged: stopping without handing anything over");
        }
        Some(Fatal::RaftStopped(e)) => {
            tracing::error!(error = %e, "the Raft core stopped: stopping, so that the service manager restarts the node");
        }
        Some(Fatal::TaskDied(died)) => {
            tracing::error!(%died, "an essential task stopped: stopping, so that the service manager restarts the node");
        }
        Some(Fatal::NotInCluster(e)) => {
            tracing::error!(error = %e, "could not enter the cluster: stopping");
        }
        Some(Fatal::Removed(notice)) => {
            tracing::warn!(
                by = %notice.by,
                "this node was removed from the cluster: it stops taking part and exits; started \
                 again, it joins as a new member with an empty store"
            );
            if let Err(e) = removal::mark(&cfg.vol_dir, notice) {
                tracing::warn!(error = %e, "could not note the removal in RAFT_VOL_DIR");
            }
            notifier.status(&format!("removed from the cluster by {}", notice.by));
        }
        None => {}
    }

    tracing::info!("shutting down");
    notifier.stopping();
    // The kernel table stays as it is: traffic keeps flowing while the
    // agent is down.
    let _ = stop_tx.send(true);
    essential.join().await;
    for task in helpers {
        let _ = task.await;
    }
    let _ = reloads.await;
    // No new API requests; those in flight (writes among them) finish,
    // with Raft still running to commit them.
    api_handle.stop(true).await;
    if let Some(task) = api_task {
        let _ = task.await;
    }
    // The Raft listener stays up for the handover: the follower that takes
    // over asks this node for its vote. A node stopping on its own has
    // nothing trustworthy to hand over.
    if fatal_stop.is_none() {
        if let Some(next) = handover::hand_over(&raft, &peers, id, &handover).await {
            tracing::info!(leader = %next, "handed leadership over");
        }
    }
    raft_handle.stop(true).await;
    if let Some(task) = raft_task {
        let _ = task.await;
    }
    let stopped_raft = raft.shutdown().await;
    match fatal_stop {
        Some(Fatal::Damaged(d)) => return Err(DamagedStore::new(&cfg.vol_dir, d).into()),
        Some(Fatal::RaftStopped(e)) => anyhow::bail!("the Raft core stopped: {e}"),
        Some(Fatal::TaskDied(died)) => anyhow::bail!("{died}"),
        Some(Fatal::NotInCluster(e)) => anyhow::bail!("could not enter the cluster: {e}"),
        // A clean stop: the operator's decision, not a failure to restart.
        Some(Fatal::Removed(_)) => {
            tracing::info!("stopped");
            return Ok(());
        }
        None => {}
    }
    stopped_raft.context("raft did not shut down cleanly")?;
    flush
        .flush()
        .await
        .context("could not flush the state at shutdown")?;
    tracing::info!("stopped");
    Ok(())
}
