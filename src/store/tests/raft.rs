//! The store under real openraft nodes, connected in process: a restart
//! resumes the cluster, and a learner that joins after compaction gets the
//! whole state by snapshot.

use super::{create, key};
use crate::model::{Command, CommandResult};
use crate::raft::typ::{RPCError, Raft, RaftError};
use crate::raft::{NodeId, NodeInfo, TypeConfig};
use crate::store::{open, StateWatch, StoreError};
use openraft::error::{InstallSnapshotError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Config, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

/// Delivers RPCs by calling the target node's `Raft` directly.
#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

struct Connection {
    router: Router,
    target: NodeId,
}

impl Connection {
    fn target(&self) -> Option<Raft> {
        let nodes = self.router.nodes.lock().expect("router lock");
        nodes.get(&self.target).cloned()
    }
}

fn down<E: std::error::Error>() -> RPCError<E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("node is down")))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError> {
        let raft = self.target().ok_or_else(down)?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<InstallSnapshotError>> {
        let raft = self.target().ok_or_else(down)?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e: RaftError<InstallSnapshotError>| {
                RPCError::RemoteError(RemoteError::new(self.target, e))
            })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError> {
        let raft = self.target().ok_or_else(down)?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn info(id: NodeId) -> NodeInfo {
    NodeInfo {
        name: format!("node{id}"),
        raft_addr: format!("in-process:{id}"),
        api_addr: format!("in-process:{id}"),
    }
}

fn config(snapshot_policy: SnapshotPolicy) -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    Arc::new(config.validate().expect("valid config"))
}

/// Starts node `id` on the store in `dir` (waiting for a previous instance
/// to release the directory).
async fn start(id: NodeId, dir: &Path, router: &Router, config: Arc<Config>) -> (Raft, StateWatch) {
    let mut tries = 0;
    let (log, sm) = loop {
        match open(dir, "node1") {
            Ok(store) => break store,
            Err(StoreError::Open { .. } | StoreError::Locked { .. }) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("open {}: {e}", dir.display()),
        }
    };
    let watch = sm.watch();
    let raft = Raft::new(id, config, router.clone(), log, sm)
        .await
        .expect("raft starts");
    router.nodes.lock().unwrap().insert(id, raft.clone());
    (raft, watch)
}

async fn stop(id: NodeId, raft: Raft, router: &Router) {
    router.nodes.lock().unwrap().remove(&id);
    raft.shutdown().await.expect("clean shutdown");
}

async fn write(raft: &Raft, cmd: Command) -> CommandResult {
    raft.client_write(cmd).await.expect("committed").data
}

fn timeout() -> Option<Duration> {
    Some(Duration::from_secs(10))
}

/// Makes node 1 a one-node cluster and waits until it leads.
async fn bootstrap(raft: &Raft) {
    raft.initialize(BTreeMap::from([(1, info(1))]))
        .await
        .unwrap();
    raft.wait(timeout())
        .state(ServerState::Leader, "leader")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_its_cluster() {
    let dir = TempDir::new().unwrap();
    let router = Router::default();
    let config = config(SnapshotPolicy::LogsSinceLast(10));

    let (raft, watch) = start(1, dir.path(), &router, config.clone()).await;
    assert!(!raft.is_initialized().await.unwrap());
    bootstrap(&raft).await;
    for port in 1..=25 {
        let result = write(&raft, create(port)).await;
        assert!(
            matches!(result, CommandResult::Applied { .. }),
            "{result:?}"
        );
    }
    let before = watch.current();
    assert_eq!(before.desired.services.len(), 25);
    stop(1, raft, &router).await;

    let (raft, watch) = start(1, dir.path(), &router, config).await;
    // Loaded from disk before Raft does anything.
    assert_eq!(watch.current().desired, before.desired);
    assert!(raft.is_initialized().await.unwrap(), "resumes, not new");
    raft.wait(timeout())
        .state(ServerState::Leader, "leader again")
        .await
        .unwrap();
    assert_eq!(
        write(&raft, create(1)).await,
        CommandResult::ServiceExists(key(1))
    );
    write(&raft, create(26)).await;
    assert_eq!(watch.current().desired.services.len(), 26);
    stop(1, raft, &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joining_after_compaction_gets_everything_by_snapshot() {
    let dirs = [TempDir::new().unwrap(), TempDir::new().unwrap()];
    let router = Router::default();
    let config = config(SnapshotPolicy::LogsSinceLast(10));

    let (leader, leader_watch) = start(1, dirs[0].path(), &router, config.clone()).await;
    bootstrap(&leader).await;
    for port in 1..=40 {
        write(&leader, create(port)).await;
    }
    write(
        &leader,
        Command::DeleteService {
            drain: Default::default(),
            key: key(7),
            if_revision: None,
        },
    )
    .await;
    leader
        .wait(timeout())
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 30), "log compacted")
        .await
        .unwrap();

    let (learner, learner_watch) = start(2, dirs[1].path(), &router, config.clone()).await;
    leader.add_learner(2, info(2), true).await.unwrap();
    let want = leader_watch.current();
    learner
        .wait(timeout())
        .applied_index_at_least(Some(want.applied_index()), "caught up")
        .await
        .unwrap();
    let metrics = learner.metrics().borrow().clone();
    assert!(metrics.snapshot.is_some(), "installed a snapshot");
    assert_eq!(learner_watch.current(), want);
    assert!(!want.desired.services.contains_key(&key(7)));
    stop(2, learner, &router).await;

    // The learner's state survives its restart.
    let (learner, learner_watch) = start(2, dirs[1].path(), &router, config).await;
    assert_eq!(learner_watch.current().desired, want.desired);
    stop(2, learner, &router).await;
    stop(1, leader, &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_keep_their_own_results() {
    let dir = TempDir::new().unwrap();
    let router = Router::default();
    let config = config(SnapshotPolicy::Never);
    let (raft, watch) = start(1, dir.path(), &router, config.clone()).await;
    bootstrap(&raft).await;
    let before = watch.current().applied_index();

    // 60 services created at once, and 20 of them created a second time.
    let batcher = crate::cluster::batch::Batcher::start(raft.clone(), Default::default());
    let ports: Vec<u16> = (1..=60).chain(1..=20).collect();
    let outcomes =
        futures_util::future::join_all(ports.iter().map(|port| batcher.propose(create(*port))))
            .await;
    let mut applied = BTreeMap::new();
    for (port, outcome) in ports.iter().zip(outcomes) {
        let outcome = outcome.expect("committed");
        match outcome.result {
            CommandResult::Applied { revision } => {
                assert_eq!(revision, outcome.index);
                assert!(
                    applied.insert(*port, revision).is_none(),
                    "{port} created twice"
                );
            }
            CommandResult::ServiceExists(k) => assert_eq!(k, key(*port)),
            other => panic!("{port}: {other:?}"),
        }
    }
    assert_eq!(applied.len(), 60, "every service created exactly once");
    let after = watch.current();
    assert_eq!(after.desired.services.len(), 60);
    let entries = after.applied_index() - before;
    assert!(entries < 40, "80 writes in {entries} entries: not batched");
    for (port, revision) in &applied {
        assert_eq!(after.desired.services[&key(*port)].revision, *revision);
    }

    // Batched entries are replayed like any other.
    drop(batcher);
    stop(1, raft, &router).await;
    let (raft, watch) = start(1, dir.path(), &router, config).await;
    assert_eq!(watch.current().desired, after.desired);
    stop(1, raft, &router).await;
}
