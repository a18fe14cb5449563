//! The write protocol against an in-process node: a one-voter Raft on the
//! real store in a temporary directory, the reconciler programming a
//! `MemoryKernel`. Nothing here speaks HTTP: the node is called as the
//! adapter calls it.

use super::*;
use crate::api::json::{KernelChange, NodePlan};
use crate::api::ErrorCode;
use crate::cluster::network::Network;
use crate::cluster::peer_auth::PeerAuth;
use crate::config::Ownership;
use crate::ipvs::memory::MemoryKernel;
use crate::reconcile::{Engine, Outputs, Owned, Settings};
use std::time::Duration;
use writes::WriteOptions;

/// The options of a plain write.
fn opts(wait: Option<Wait>) -> WriteOptions {
    WriteOptions::wait(wait)
}

struct TestNode {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    reconciler: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start() -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = crate::store::open(&dir.path().join("raft"), "node1").expect("store");
        let state = sm.watch();
        let disk = sm.disk_status();
        let peers = Peers::new(reqwest::Client::new(), PeerAuth::new(None));
        // Never dialled: a one-voter cluster sends no RPCs.
        let me = NodeInfo {
            name: "node1".into(),
            raft_addr: "127.0.0.1:9".into(),
            api_addr: "127.0.0.1:9".into(),
        };
        let id = node_id(&me.name);
        let config = openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            ..Default::default()
        };
        let config = Arc::new(config.validate().expect("raft config"));
        let contact = crate::cluster::quorum::Contact::new();
        let raft = openraft::Raft::new(
            id,
            config,
            Network::new(
                peers.clone(),
                Default::default(),
                contact.clone(),
                Default::default(),
            ),
            log,
            sm,
        )
        .await
        .expect("raft");
        raft.initialize(BTreeMap::from([(id, me.clone())]))
            .await
            .expect("initialize");
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(id, "leads")
            .await
            .expect("a leader");
        tokio::spawn(crate::cluster::watch_quorum(
            raft.clone(),
            contact.clone(),
            std::future::pending(),
        ));
        let (status_tx, status_rx) = watch::channel(ReconcileStatus::default());
        let (publisher, reader) = crate::reconcile::table::channel();
        let health = crate::health::Health::new(None);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let owned = Owned::load(dir.path()).expect("owned set");
        let engine = Engine::new(MemoryKernel::new(), owned, Ownership::Managed);
        let (stop, mut stopped) = watch::channel(false);
        let reconciler = tokio::spawn(crate::reconcile::run(
            engine,
            state.clone(),
            health.subscribe(),
            Settings {
                kernel: "memory".into(),
                ownership: Ownership::Managed,
                resync: Duration::from_secs(3600),
            },
            Outputs {
                status: status_tx,
                table: publisher,
                metrics: metrics.clone(),
            },
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        let node = Arc::new(Node {
            writer: Writer::start(raft, peers.clone(), contact, Default::default()),
            state,
            peers,
            me,
            drain_grace: 0,
            reconcile: status_rx,
            kernel: Some(reader),
            metrics,
            health,
            peer_health: Default::default(),
            traffic: Default::default(),
            disk,
            // One voter: it is the leader, caught up by definition.
            caught_up: watch::channel(true).1,
            vol_dir: dir.path().to_path_buf(),
            announce: watch::channel(Default::default()).1,
            stopping: stop.subscribe(),
        });
        TestNode {
            node,
            stop,
            reconciler,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.reconciler.await;
        self.node.raft().shutdown().await.expect("raft stops");
    }

    fn last_log_index(&self) -> Option<u64> {
        self.node.raft().metrics().borrow().last_log_index
    }

    /// The weights in this node's kernel, by server port, of the service
    /// on port `port`.
    async fn kernel_weights(&self, port: u16) -> Vec<(u16, u32)> {
        let table = reports::kernel_table(&self.node, None)
            .await
            .expect("kernel table");
        table
            .services
            .iter()
            .filter(|e| e.service.key == key(port))
            .flat_map(|e| e.destinations.iter().map(|d| (d.dest.port, d.dest.weight)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

fn key(port: u16) -> crate::model::ServiceKey {
    crate::model::ServiceKey::Inet {
        protocol: crate::model::Protocol::Tcp,
        addr: "192.0.2.10".parse().expect("address"),
        port,
    }
}

fn spec(port: u16) -> crate::model::ServiceSpec {
    let body = format!(
        r#"{{"protocol":"tcp","address":"192.0.2.10","port":{port},"scheduler":"wrr",
            "servers":[{{"address":"198.51.100.11","port":8080,"weight":3}},
                       {{"address":"198.51.100.11","port":8081}}]}}"#
    );
    crate::api::validate::parse_service_create(body.as_bytes()).expect("valid service")
}

fn server(port: u16) -> crate::model::DestKey {
    crate::model::DestKey {
        addr: "198.51.100.11".parse().expect("address"),
        port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_wait_is_in_the_kernel_when_it_answers() {
    let t = TestNode::start().await;
    let cfg = writes::create_service(&t.node, spec(80), &opts(Some(Wait::All)))
        .await
        .expect("created")
        .value
        .expect("the service");
    assert_eq!(cfg.servers.len(), 2);
    assert_eq!(t.kernel_weights(80).await, vec![(8080, 3), (8081, 1)]);
    assert!(t.node.reconcile.borrow().programmed_index >= cfg.revision);
    // The node's own table lists it as owned.
    let table = reports::kernel_table(&t.node, None)
        .await
        .expect("kernel table");
    assert_eq!(table.owned, vec![key(80)]);

    let cfg = writes::create_service(&t.node, spec(81), &opts(Some(Wait::Quorum)))
        .await
        .expect("created")
        .value
        .expect("the service");
    assert!(t.node.reconcile.borrow().programmed_index >= cfg.revision);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_never_reaches_the_log() {
    let t = TestNode::start().await;
    writes::create_service(&t.node, spec(80), &opts(None))
        .await
        .expect("created");
    let before = t.last_log_index();
    let dup = writes::create_service(&t.node, spec(80), &opts(None)).await;
    assert_eq!(
        dup.expect_err("a duplicate").code(),
        ErrorCode::AlreadyExists
    );
    let plain = opts(None);
    let stale =
        writes::replace_service(&t.node, key(80), br#"{"scheduler":"rr"}"#, Some(1), &plain);
    assert_eq!(
        stale.await.expect_err("a stale If-Match").code(),
        ErrorCode::RevisionMismatch
    );
    let missing = writes::delete_service(&t.node, key(99), None, None, &opts(None)).await;
    assert_eq!(
        missing.expect_err("no such service").code(),
        ErrorCode::NotFound
    );
    assert_eq!(t.last_log_index(), before, "nothing was proposed");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_merges_onto_the_committed_service_and_moves_its_revision() {
    let t = TestNode::start().await;
    let created = writes::create_service(&t.node, spec(80), &opts(None))
        .await
        .expect("created")
        .value
        .expect("the service");
    let patched = writes::patch_service(
        &t.node,
        key(80),
        br#"{"scheduler":"rr"}"#,
        None,
        &opts(None),
    )
    .await
    .expect("patched")
    .value
    .expect("the service");
    assert!(patched.revision > created.revision);
    assert_eq!(patched.service.scheduler.to_string(), "rr");
    assert_eq!(
        patched.servers, created.servers,
        "the merge kept the servers"
    );
    let w = writes::patch_server(
        &t.node,
        key(80),
        server(8080),
        br#"{"weight":7}"#,
        Some(patched.revision),
        &opts(Some(Wait::All)),
    )
    .await
    .expect("patched the server")
    .value;
    assert_eq!(w.service.servers[&server(8080)].weight, 7);
    assert_eq!(t.kernel_weights(80).await, vec![(8080, 7), (8081, 1)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_drains_at_weight_zero_and_grace_zero_removes_at_once() {
    let t = TestNode::start().await;
    writes::create_service(&t.node, spec(80), &opts(None))
        .await
        .expect("created");
    let draining = writes::delete_server(
        &t.node,
        key(80),
        server(8080),
        Some(60),
        None,
        &opts(Some(Wait::All)),
    )
    .await
    .expect("drains")
    .value
    .expect("still there while it drains");
    assert!(draining
        .service
        .draining_servers
        .contains_key(&server(8080)));
    assert_eq!(t.kernel_weights(80).await, vec![(8080, 0), (8081, 1)]);
    let gone = writes::delete_server(
        &t.node,
        key(80),
        server(8081),
        Some(0),
        None,
        &opts(Some(Wait::All)),
    )
    .await
    .expect("removed");
    assert!(gone.value.is_none());
    assert_eq!(t.kernel_weights(80).await, vec![(8080, 0)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_of_a_configuration_plans_without_writing() {
    let t = TestNode::start().await;
    let body = br#"{"services":[{"protocol":"tcp","address":"192.0.2.10","port":80}]}"#;
    let before = t.last_log_index();
    let dry_run = WriteOptions {
        dry_run: true,
        ..WriteOptions::default()
    };
    let plan = writes::replace_config(&t.node, body, Default::default(), &dry_run)
        .await
        .expect("planned");
    assert_eq!(plan.value.added, vec!["tcp-192.0.2.10-80".to_string()]);
    let rehearsal = plan.rehearsal.expect("a rehearsal");
    assert_eq!(rehearsal.desired, plan.value);
    assert_eq!(
        rehearsal.kernels,
        vec![NodePlan {
            node: "node1".into(),
            changes: vec![KernelChange {
                op: "+".into(),
                change: "add service TCP 192.0.2.10:80".into()
            }],
            error: None
        }]
    );
    assert_eq!(t.last_log_index(), before);
    assert!(reads::list_services(&t.node).is_empty());
    writes::replace_config(&t.node, body, Default::default(), &opts(Some(Wait::All)))
        .await
        .expect("replaced");
    assert_eq!(reads::list_services(&t.node).len(), 1);
    assert_eq!(t.kernel_weights(80).await, vec![]);
    t.stop().await;
}

fn grace(seconds: u32) -> writes::Replacing {
    writes::Replacing {
        grace: Some(seconds),
        undrain: false,
    }
}

/// A replacement drains what it leaves out, as a DELETE would: a service
/// whole, a server of a service it keeps; `?grace=0` removes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_drains_what_it_leaves_out() {
    let t = TestNode::start().await;
    let two = br#"{"services":[
        {"protocol":"tcp","address":"192.0.2.10","port":80,"servers":[
            {"address":"198.51.100.11","port":8080},{"address":"198.51.100.11","port":8081}]},
        {"protocol":"tcp","address":"192.0.2.10","port":81,"drain_grace":5,"servers":[
            {"address":"198.51.100.11","port":8080}]}]}"#;
    writes::replace_config(&t.node, two, Default::default(), &opts(Some(Wait::All)))
        .await
        .expect("replaced");
    let one = br#"{"services":[{"protocol":"tcp","address":"192.0.2.10","port":80,
        "servers":[{"address":"198.51.100.11","port":8080}]}]}"#;
    let dry_run = WriteOptions {
        dry_run: true,
        ..WriteOptions::default()
    };
    let plan = writes::replace_config(&t.node, one, grace(60), &dry_run)
        .await
        .expect("planned")
        .value;
    assert_eq!(plan.removed, vec!["tcp-192.0.2.10-81".to_string()]);
    assert_eq!(plan.changed[0].servers_removed, vec!["198.51.100.11-8081"]);
    writes::replace_config(&t.node, one, grace(60), &opts(Some(Wait::All)))
        .await
        .expect("replaced");
    let desired = t.node.desired();
    let web = &desired.services[&key(80)];
    assert_eq!(web.draining_servers[&server(8081)].grace, 60);
    let gone = &desired.services[&key(81)];
    assert_eq!(gone.draining.map(|d| d.grace), Some(60));
    // Draining: weight 0 in the kernel until the deadline.
    assert_eq!(t.kernel_weights(80).await, vec![(8080, 1), (8081, 0)]);
    assert_eq!(t.kernel_weights(81).await, vec![(8080, 0)]);
    // At once with a grace of 0: only what was not draining already goes
    // (a replacement never cuts a drain short).
    let none = br#"{"services":[]}"#;
    writes::replace_config(&t.node, none, grace(0), &opts(Some(Wait::All)))
        .await
        .expect("replaced");
    let desired = t.node.desired();
    assert_eq!(
        desired.services.keys().copied().collect::<Vec<_>>(),
        vec![key(81)]
    );
    // ?undrain=true: what the body gives serves again, drains ended.
    let back = writes::Replacing {
        grace: None,
        undrain: true,
    };
    let plan = writes::replace_config(&t.node, two, back, &opts(Some(Wait::All)))
        .await
        .expect("replaced")
        .value;
    assert_eq!(plan.changed[0].id, "tcp-192.0.2.10-81");
    assert!(plan.changed[0].settings, "its drain ended");
    assert_eq!(t.node.desired().services[&key(81)].draining, None);
    assert_eq!(t.kernel_weights(81).await, vec![(8080, 1)]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_lists_then_follows_in_order_and_ends_when_the_node_stops() {
    use super::watches::{watch_services, ServiceEvent, Since};
    use futures_util::StreamExt;
    let t = TestNode::start().await;
    let first = writes::create_service(&t.node, spec(80), &opts(None))
        .await
        .expect("created")
        .value
        .expect("the service")
        .revision;
    let since = |revision| Since {
        revision,
        field: "?since",
    };
    let mut watch = Box::pin(watch_services(&t.node, since(None)).expect("a watch"));
    let Some(ServiceEvent::Sync(sync)) = watch.next().await else {
        panic!("a sync first");
    };
    assert!(sync.revision >= first);
    assert_eq!(sync.services.len(), 1);
    // From a revision: the changes after it, each once, in order, never
    // ahead of what this node's reads show.
    let mut resumed = Box::pin(watch_services(&t.node, since(Some(first - 1))).expect("a watch"));
    let mut revisions = Vec::new();
    for port in 81..84 {
        writes::create_service(&t.node, spec(port), &opts(None))
            .await
            .expect("created");
    }
    while revisions.len() < 4 {
        let Some(ServiceEvent::Changes(changes)) = resumed.next().await else {
            panic!("changes");
        };
        assert!(t.node.state.current().applied_index() >= changes.revision);
        assert_eq!(changes.changes.len(), 1);
        revisions.push(changes.revision);
    }
    assert_eq!(revisions[0], first);
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let Some(ServiceEvent::Changes(changes)) = watch.next().await else {
        panic!("changes after the sync");
    };
    assert_eq!(changes.revision, revisions[1]);
    // Stopping ends both (the API's shutdown does not wait for them).
    let _ = t.stop.send(true);
    assert_eq!(resumed.next().await, None);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_the_history_is_told_and_ended() {
    use super::watches::{watch_services, ServiceEvent, Since};
    use futures_util::StreamExt;
    let t = TestNode::start().await;
    t.node.state.history().lock().set_capacity(2);
    let start = t.node.state.current().applied_index();
    let since = Since {
        revision: Some(start),
        field: "?since",
    };
    let mut slow = Box::pin(watch_services(&t.node, since).expect("a watch"));
    // Three revisions pass while it reads nothing; two are kept.
    for port in 80..83 {
        writes::create_service(&t.node, spec(port), &opts(None))
            .await
            .expect("created");
    }
    let Some(ServiceEvent::Compacted(e)) = slow.next().await else {
        panic!("too old");
    };
    assert_eq!(e.code(), crate::api::ErrorCode::RevisionCompacted);
    assert_eq!(e.status(), 410);
    let oldest = e.oldest_revision().expect("the oldest revision");
    assert!(oldest > start);
    assert_eq!(slow.next().await, None, "and the watch ends");
    // Asked for at once, the same is a refusal; from `oldest`, a stream.
    assert!(watch_services(&t.node, since).is_err());
    let from_oldest = Since {
        revision: Some(oldest),
        field: "?since",
    };
    let mut resumed = Box::pin(watch_services(&t.node, from_oldest).expect("a watch"));
    assert!(matches!(
        resumed.next().await,
        Some(ServiceEvent::Changes(c)) if c.revision > oldest
    ));
    t.stop().await;
}
