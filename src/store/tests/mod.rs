//! The store against openraft's storage suite, and the properties the
//! cluster relies on: restart resumes, snapshots replace, corrupt records
//! are errors, every apply is published.

mod durability;
mod raft;

use super::codec;
use super::*;
use crate::model::{
    Command, CommandResult, DesiredState, Destination, Protocol, ServiceKey, ServiceSpec,
    VirtualService,
};
use crate::raft::typ::{Entry, EntryPayload, LogId, Membership, StorageError, Vote};
use crate::raft::{NodeInfo, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, RaftLogReader, RaftSnapshotBuilder};
use std::collections::{BTreeMap, BTreeSet};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("temporary directory");
        let (log, sm) = open(dir.path(), "node1").expect("fresh store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("the store passes openraft's suite");
}

pub(crate) fn key(port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "192.0.2.1".parse().unwrap(),
        port,
    }
}

pub(crate) fn create(port: u16) -> Command {
    Command::CreateService(ServiceSpec {
        server_checks: Default::default(),
        options: Default::default(),
        service: VirtualService::new(key(port)),
        servers: vec![Destination::new("198.51.100.1".parse().unwrap(), 80)],
    })
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn normal(index: u64, cmd: Command) -> Entry {
    entry(1, index, EntryPayload::Normal(cmd))
}

fn membership(index: u64) -> Entry {
    let nodes: BTreeMap<u64, NodeInfo> = [(
        1,
        NodeInfo {
            name: "node1".into(),
            raft_addr: "127.0.0.1:1111".into(),
            api_addr: "127.0.0.1:2221".into(),
        },
    )]
    .into();
    let voters: BTreeSet<u64> = [1].into();
    entry(
        1,
        index,
        EntryPayload::Membership(Membership::new(vec![voters], nodes)),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Everything a restarted node reads back from its store.
#[derive(Debug, PartialEq)]
struct Persisted {
    log_state: (Option<LogId>, Option<LogId>),
    entries: Vec<Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    applied: (Option<LogId>, crate::raft::typ::StoredMembership),
    desired: DesiredState,
    snapshot: Option<(crate::raft::typ::SnapshotMeta, Vec<u8>)>,
}

async fn persisted(log: &mut LogStore, sm: &mut StateMachineStore) -> Persisted {
    let state = log.get_log_state().await.unwrap();
    Persisted {
        log_state: (state.last_purged_log_id, state.last_log_id),
        entries: log.try_get_log_entries(..).await.unwrap(),
        vote: log.read_vote().await.unwrap(),
        committed: log.read_committed().await.unwrap(),
        applied: sm.applied_state().await.unwrap(),
        desired: (*sm.current().desired).clone(),
        snapshot: sm
            .get_current_snapshot()
            .await
            .unwrap()
            .map(|s| (s.meta, s.snapshot.into_inner())),
    }
}

#[test]
fn reopening_resumes_log_vote_commit_state_and_snapshot() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let before = {
            let (mut log, mut sm) = open(dir.path(), "node1").unwrap();
            let entries = vec![
                membership(1),
                normal(2, create(80)),
                normal(3, create(443)),
                entry(1, 4, EntryPayload::Blank),
                normal(
                    5,
                    Command::DeleteService {
                        drain: Default::default(),
                        key: key(80),
                        if_revision: None,
                    },
                ),
                normal(6, create(8080)),
            ];
            log.blocking_append(entries.clone()).await.unwrap();
            log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
            log.save_committed(Some(log_id(1, 5))).await.unwrap();
            sm.apply(entries[..3].to_vec()).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            sm.apply(entries[3..5].to_vec()).await.unwrap();
            log.purge(log_id(1, 2)).await.unwrap();
            persisted(&mut log, &mut sm).await
        };
        assert_eq!(before.log_state, (Some(log_id(1, 2)), Some(log_id(1, 6))));
        assert_eq!(before.entries.len(), 4);
        assert_eq!(before.applied.0, Some(log_id(1, 5)));
        assert_eq!(
            before.desired.services.keys().collect::<Vec<_>>(),
            vec![&key(443)]
        );
        let snapshot = before.snapshot.as_ref().expect("a snapshot");
        assert_eq!(snapshot.0.last_log_id, Some(log_id(1, 3)));

        let (mut log, mut sm) = open(dir.path(), "node1").unwrap();
        assert_eq!(persisted(&mut log, &mut sm).await, before);
        assert_eq!(sm.current().applied, Some(log_id(1, 5)));
    });
}

#[test]
fn applying_persists_exactly_the_changed_records() {
    let dir = TempDir::new().unwrap();
    let dest = |last: u8| Destination::new(format!("198.51.100.{last}").parse().unwrap(), 80);
    let spec = |port| ServiceSpec {
        server_checks: Default::default(),
        options: Default::default(),
        service: VirtualService::new(key(port)),
        servers: vec![dest(9)],
    };
    let commands = vec![
        create(80),
        create(81),
        create(82),
        create(80), // refused: exists
        Command::CreateServer {
            health_check: None,
            service: key(81),
            server: dest(2),
            if_revision: None,
        },
        Command::UpdateService {
            options: Default::default(),
            service: VirtualService {
                scheduler: crate::model::Scheduler::new("rr").unwrap(),
                ..VirtualService::new(key(82))
            },
            if_revision: Some(3),
        },
        Command::DeleteServer {
            drain: Default::default(),
            service: key(80),
            server: dest(1).key(),
            if_revision: None,
        },
        Command::DeleteService {
            drain: Default::default(),
            key: key(81),
            if_revision: Some(1), // refused: revision moved on
        },
        Command::ReplaceAll(vec![spec(82), spec(83)]),
        create(84),
        Command::DeleteService {
            drain: Default::default(),
            key: key(83),
            if_revision: None,
        },
    ];
    rt().block_on(async {
        let mut want = DesiredState::default();
        let mut results = Vec::new();
        for (i, cmd) in commands.iter().enumerate() {
            results.push(want.apply(cmd, i as u64 + 1));
        }
        // Apply in uneven batches, reopening between them.
        let mut got = Vec::new();
        let mut next = 0;
        for batch in [1usize, 4, 3, 1, 2] {
            let (_log, mut sm) = open(dir.path(), "node1").unwrap();
            let entries: Vec<Entry> = commands[next..next + batch]
                .iter()
                .enumerate()
                .map(|(i, c)| normal((next + i) as u64 + 1, c.clone()))
                .collect();
            got.extend(sm.apply(entries).await.unwrap());
            next += batch;
        }
        assert_eq!(got, results);
        let (_log, sm) = open(dir.path(), "node1").unwrap();
        assert_eq!(*sm.current().desired, want);
        assert_eq!(sm.disk().trees().services.len(), want.services.len());
        let ports: Vec<u16> = want
            .services
            .keys()
            .map(|k| match k {
                ServiceKey::Inet { port, .. } => *port,
                ServiceKey::Fwmark { .. } => 0,
            })
            .collect();
        assert_eq!(ports, vec![82, 84]);
    });
}

#[test]
fn blank_and_membership_entries_answer_their_index() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        let results = sm
            .apply(vec![entry(1, 1, EntryPayload::Blank), membership(2)])
            .await
            .unwrap();
        assert_eq!(
            results,
            vec![
                CommandResult::Applied { revision: 1 },
                CommandResult::Applied { revision: 2 }
            ]
        );
        let (applied, mem) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 2)));
        assert_eq!(mem.log_id(), &Some(log_id(1, 2)));
        assert_eq!(
            mem.membership().get_node(&1).map(|n| n.name.as_str()),
            Some("node1")
        );
    });
}

#[test]
fn installing_a_snapshot_replaces_the_state() {
    let leader_dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_l, mut leader) = open(leader_dir.path(), "node1").unwrap();
        leader
            .apply(vec![
                membership(1),
                normal(2, create(80)),
                normal(3, create(81)),
            ])
            .await
            .unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let (follower_log, mut follower) = open(follower_dir.path(), "node1").unwrap();
        // The follower has a service the snapshot does not, and an older copy
        // of one it does.
        follower
            .apply(vec![normal(1, create(81)), normal(2, create(99))])
            .await
            .unwrap();
        let mut rx = follower.subscribe();
        let mut data = follower.begin_receiving_snapshot().await.unwrap();
        *data = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, data)
            .await
            .unwrap();

        let want = leader.current();
        assert_eq!(follower.current(), want);
        let history = follower.watch();
        assert_eq!(
            history.history().after(2).unwrap_err().oldest,
            3,
            "the entries a snapshot covers are not in the history"
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), want);
        assert_eq!(
            follower.applied_state().await.unwrap(),
            leader.applied_state().await.unwrap()
        );
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        drop((follower_log, follower));

        // And on disk: the service absent from the snapshot is gone.
        let (_f, follower) = open(follower_dir.path(), "node1").unwrap();
        assert_eq!(follower.current(), want);
        assert!(!follower.current().desired.services.contains_key(&key(99)));
        assert!(follower
            .disk()
            .trees()
            .services
            .get(codec::service_key(&key(99)))
            .unwrap()
            .is_none());
    });
}

#[test]
fn snapshot_ids_are_unique_across_restarts() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let mut ids = BTreeSet::new();
        for _ in 0..3 {
            let (_log, mut sm) = open(dir.path(), "node1").unwrap();
            for _ in 0..2 {
                let s = sm
                    .get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .unwrap();
                assert!(ids.insert(s.meta.snapshot_id));
            }
        }
    });
}

#[test]
fn a_snapshot_builder_is_a_frozen_copy() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        sm.apply(vec![normal(1, create(80))]).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        sm.apply(vec![normal(2, create(81))]).await.unwrap();
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 1)));

        let other = TempDir::new().unwrap();
        let (_l, mut fresh) = open(other.path(), "node1").unwrap();
        fresh
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        let keys: Vec<_> = fresh.current().desired.services.keys().copied().collect();
        assert_eq!(keys, vec![key(80)]);
    });
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (mut log, mut sm) = open(dir.path(), "node1").unwrap();
        log.blocking_append((1..=5).map(|i| entry(1, i, EntryPayload::Blank)))
            .await
            .unwrap();
        let tree = log.disk().trees().log;

        // Garbage in the middle of the log.
        tree.insert(codec::log_key(3), &b"\x00garbage"[..]).unwrap();
        let err = log.try_get_log_entries(1..6).await.unwrap_err();
        assert!(err.to_string().contains("log entry 3"), "{err}");
        assert_eq!(log.try_get_log_entries(4..6).await.unwrap().len(), 2);

        // An entry under another index's key.
        let moved = codec::seal(&serde_json::to_vec(&entry(1, 9, EntryPayload::Blank)).unwrap());
        tree.insert(codec::log_key(3), moved).unwrap();
        let err = log.try_get_log_entries(3..4).await.unwrap_err();
        assert!(err.to_string().contains("index 9"), "{err}");

        // A key of the wrong size, last in the tree.
        tree.insert(&b"\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..], &b"{}"[..])
            .unwrap();
        assert!(log.get_log_state().await.is_err());
        assert!(log.try_get_log_entries(1..).await.is_err());

        // A vote that is not one.
        log.disk()
            .trees()
            .raft
            .insert("vote", &b"[1,2"[..])
            .unwrap();
        assert!(log.read_vote().await.is_err());
        log.disk()
            .trees()
            .raft
            .insert("committed", &b"7"[..])
            .unwrap();
        assert!(log.read_committed().await.is_err());

        // Snapshot data that does not decode is refused, and changes nothing.
        sm.apply(vec![normal(1, create(80))]).await.unwrap();
        let before = sm.current();
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let bad = Box::new(std::io::Cursor::new(b"{\"format\":1".to_vec()));
        assert!(sm.install_snapshot(&snapshot.meta, bad).await.is_err());
        // Data of another state than its meta says.
        let mut other_meta = snapshot.meta.clone();
        other_meta.last_log_id = Some(log_id(1, 7));
        assert!(sm
            .install_snapshot(&other_meta, snapshot.snapshot)
            .await
            .is_err());
        assert_eq!(sm.current(), before);

        // A stored snapshot whose metadata is garbage.
        sm.disk()
            .trees()
            .snapshot
            .insert("meta", &b"nope"[..])
            .unwrap();
        assert!(sm.get_current_snapshot().await.is_err());

        // A service record that is garbage, or under another service's key.
        sm.disk()
            .trees()
            .services
            .insert(codec::service_key(&key(81)), &b"{\"service\":"[..])
            .unwrap();
    });
    let err = open(dir.path(), "node1")
        .err()
        .expect("corrupt record refused");
    assert!(matches!(err, StoreError::Damaged(_)), "{err}");

    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        sm.apply(vec![normal(1, create(80))]).await.unwrap();
    });
    rt().block_on(async {
        let (_log, sm) = open(dir.path(), "node1").unwrap();
        let record = sm
            .disk()
            .trees()
            .services
            .get(codec::service_key(&key(80)))
            .unwrap()
            .unwrap();
        sm.disk()
            .trees()
            .services
            .insert(codec::service_key(&key(81)), record)
            .unwrap();
    });
    let err = open(dir.path(), "node1")
        .err()
        .expect("misplaced record refused");
    assert!(
        matches!(&err, StoreError::Damaged(d) if d.problem.contains("it holds service")),
        "{err:?}"
    );
}

/// The records and the applied id on disk, as a restart would load them.
fn on_disk(sm: &StateMachineStore) -> (Option<LogId>, usize) {
    let applied: Option<Option<LogId>> =
        codec::get(&sm.disk().trees().state, state_machine::LAST_APPLIED).unwrap();
    (applied.flatten(), sm.disk().trees().services.len())
}

#[test]
fn applied_state_reaches_the_disk_in_checkpoints() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (log, mut sm) = open(dir.path(), "node1").unwrap();
        let n = state_machine::CHECKPOINT_ENTRIES;
        // Checkpoints are written in the background and also started by a
        // timer, so which index one holds depends on timing; what holds
        // always is that, once written, the disk is a whole applied state
        // (its id and exactly its records) fewer than n entries behind.
        let mut highest = 0;
        for index in 1..=n + n / 2 {
            sm.apply(vec![normal(index, create(index as u16))])
                .await
                .unwrap();
            sm.settle_checkpoint().await.unwrap();
            let (applied, records) = on_disk(&sm);
            let at = applied.map_or(0, |id| id.index);
            assert_eq!(applied, (at > 0).then(|| log_id(1, at)));
            assert_eq!(records as u64, at, "records of a whole applied state");
            assert!(index - at < n, "entry {index} applied, the disk at {at}");
            highest = at;
        }
        assert!(highest >= n, "checkpoints follow the applies: {highest}");

        // A snapshot writes one first, so that its flush persists it.
        let m = n + n / 2;
        sm.apply(vec![normal(m + 1, create(m as u16 + 1))])
            .await
            .unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(on_disk(&sm), (Some(log_id(1, m + 1)), m as usize + 1));

        // And so does a store stopped in order, with no wait before.
        sm.apply(vec![normal(m + 2, create(m as u16 + 2))])
            .await
            .unwrap();
        drop((log, sm));
        let (_log, sm) = open(dir.path(), "node1").unwrap();
        assert_eq!(on_disk(&sm), (Some(log_id(1, m + 2)), m as usize + 2));
        assert_eq!(sm.current().applied, Some(log_id(1, m + 2)));
    });
}

#[test]
fn the_watch_channel_sees_every_apply() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        let watch = sm.watch();
        let mut rx = watch.subscribe();
        assert!(!rx.has_changed().unwrap());
        assert_eq!(watch.current().applied, None);
        for i in 1..=20u64 {
            let cmd = if i % 2 == 1 {
                create(i as u16)
            } else {
                create(1) // refused after the first: still published
            };
            sm.apply(vec![normal(i, cmd)]).await.unwrap();
            rx.changed().await.unwrap();
            let seen = rx.borrow_and_update().clone();
            assert_eq!(seen.applied_index(), i);
            assert_eq!(seen, sm.current());
            assert_eq!(watch.current(), seen);
        }
        assert_eq!(watch.current().desired.services.len(), 10);
        drop(sm);
        assert!(rx.changed().await.is_err(), "closed with the store");
    });
}

/// The revisions and kinds (true: present after) of the history after `since`.
fn history_after(watch: &StateWatch, since: u64) -> Vec<(u64, Vec<(u16, bool)>)> {
    let port = |k: &ServiceKey| match k {
        ServiceKey::Inet { port, .. } => *port,
        ServiceKey::Fwmark { .. } => 0,
    };
    watch
        .history()
        .after(since)
        .unwrap()
        .into_iter()
        .map(|r| {
            for c in &r.changes {
                if let Some(cfg) = &c.service {
                    assert_eq!(cfg.revision, r.revision, "the revision is the ETag");
                }
            }
            let changes = r
                .changes
                .iter()
                .map(|c| (port(&c.key), c.service.is_some()))
                .collect();
            (r.revision, changes)
        })
        .collect()
}

#[test]
fn the_history_records_each_entrys_changes_at_its_index() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (log, mut sm) = open(dir.path(), "node1").unwrap();
        let watch = sm.watch();
        let mut head = watch.history().subscribe();
        let delete = |port| Command::DeleteService {
            key: key(port),
            if_revision: None,
            drain: None,
        };
        sm.apply(vec![
            membership(1),
            normal(2, create(80)),
            normal(3, create(80)), // refused: no change
            normal(4, Command::Batch(vec![create(81), create(82)])),
        ])
        .await
        .unwrap();
        head.changed().await.unwrap();
        assert_eq!(*head.borrow_and_update(), 4);
        sm.apply(vec![normal(5, delete(81)), normal(6, delete(99))])
            .await
            .unwrap();
        assert_eq!(
            history_after(&watch, 0),
            [
                (2, vec![(80, true)]),
                (4, vec![(81, true), (82, true)]),
                (5, vec![(81, false)]),
            ]
        );
        assert_eq!(history_after(&watch, 4), [(5, vec![(81, false)])]);
        // A replacement of everything: what it leaves out goes, in the
        // same revision.
        let spec = match create(83) {
            Command::CreateService(spec) => spec,
            _ => unreachable!(),
        };
        sm.apply(vec![normal(7, Command::ReplaceAll(vec![spec]))])
            .await
            .unwrap();
        assert_eq!(
            history_after(&watch, 5),
            [(7, vec![(80, false), (82, false), (83, true)])]
        );
        drop((log, sm));

        // A restarted node knows nothing before what it loaded.
        let (_log, sm) = open(dir.path(), "node1").unwrap();
        let watch = sm.watch();
        let applied = sm.current().applied_index();
        assert_eq!(watch.history().after(applied).unwrap(), []);
        assert_eq!(watch.history().after(0).unwrap_err().oldest, applied);
    });
}

#[test]
fn a_missing_directory_is_created_and_a_locked_one_refused() {
    let dir = TempDir::new().unwrap();
    let nested = dir.path().join("a").join("b");
    let (_log, _sm) = open(&nested, "node1").unwrap();
    assert!(nested.join("sled").is_dir());
    let err = open(&nested, "node1").err().expect("second open refused");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    // Opened twice by one process: the kernel names this one as the holder.
    let want = format!("this very process (pid {}", std::process::id());
    assert!(err.to_string().contains(&want), "{err}");
    assert!(err.to_string().contains("RAFT_VOL_DIR of its own"), "{err}");
}

/// Environment variable that makes [`crash_child`] run: the directory to use.
const CRASH_DIR: &str = "IPVS_MANAGER_STORE_CRASH_DIR";
const CRASH_ENTRIES: u64 = 300;

/// Run by [`a_crash_loses_nothing_acknowledged`] in a child process: writes,
/// reports what was acknowledged, and dies without any cleanup.
#[test]
#[ignore = "run as a child process by a_crash_loses_nothing_acknowledged"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    rt().block_on(async {
        let (mut log, mut sm) = open(std::path::Path::new(&dir), "node1").unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        println!("acked vote");
        for i in 1..=CRASH_ENTRIES {
            let entry = normal(i, create(i as u16));
            log.blocking_append(vec![entry.clone()]).await.unwrap();
            println!("acked {i}");
            sm.apply(vec![entry]).await.unwrap();
        }
    });
    // As kill -9: no destructor runs, so nothing is flushed on the way out.
    std::process::abort();
}

#[test]
fn a_crash_loses_nothing_acknowledged() {
    let dir = TempDir::new().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("acked vote"), "{stdout}");
    let acked = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("acked ")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert_eq!(acked, CRASH_ENTRIES, "{stdout}");

    rt().block_on(async {
        let (mut log, mut sm) = open(dir.path(), "node1").unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        let entries = log.try_get_log_entries(1..=acked).await.unwrap();
        assert_eq!(entries.len() as u64, acked, "every acknowledged entry");
        // The state machine is not flushed per apply: it may be behind, but
        // it is the state of exactly its last applied index.
        let current = sm.current();
        let mut want = DesiredState::default();
        for entry in &entries[..current.applied_index() as usize] {
            if let EntryPayload::Normal(cmd) = &entry.payload {
                want.apply(cmd, entry.log_id.index);
            }
        }
        assert_eq!(*current.desired, want);
        assert_eq!(sm.applied_state().await.unwrap().0, current.applied);
    });
}

fn keyed(key: &str, cmd: Command) -> Command {
    Command::Keyed {
        key: key.into(),
        fingerprint: "f".into(),
        at_ms: 1_000,
        command: Box::new(cmd),
    }
}

/// Writes remembered under their Idempotency-Key are records like the
/// services: checkpointed, checked at start-up, reloaded, and carried by
/// snapshots (which replace them).
#[test]
fn remembered_writes_survive_a_restart_and_travel_in_snapshots() {
    let dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    rt().block_on(async {
        {
            let (_log, mut sm) = open(dir.path(), "node1").unwrap();
            let results = sm
                .apply(vec![
                    membership(1),
                    normal(2, keyed("k1", create(80))),
                    normal(3, keyed("k2", create(80))),
                ])
                .await
                .unwrap();
            assert!(matches!(results[2], CommandResult::ServiceExists(_)));
        }
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        let watch = sm.watch();
        let k1 = watch
            .remembered("k1")
            .expect("k1 remembered after a restart");
        assert_eq!(
            (k1.index, k1.result),
            (2, CommandResult::Applied { revision: 2 })
        );
        let k2 = watch.remembered("k2").expect("k2 remembered");
        assert!(matches!(k2.result, CommandResult::ServiceExists(_)));
        let again = sm.apply(vec![normal(4, keyed("k1", create(80)))]).await;
        assert_eq!(
            again.unwrap(),
            vec![CommandResult::Replayed {
                index: 2,
                first: Box::new(CommandResult::Applied { revision: 2 })
            }]
        );
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        // A follower with a remembered write of its own installs it.
        {
            let (_flog, mut follower) = open(follower_dir.path(), "node1").unwrap();
            follower
                .apply(vec![normal(1, keyed("kx", create(99)))])
                .await
                .unwrap();
            let mut data = follower.begin_receiving_snapshot().await.unwrap();
            *data = *snapshot.snapshot;
            follower
                .install_snapshot(&snapshot.meta, data)
                .await
                .unwrap();
            let watch = follower.watch();
            assert!(watch.remembered("k1").is_some());
            assert!(watch.remembered("kx").is_none(), "replaced");
        }
        let (_flog, follower) = open(follower_dir.path(), "node1").unwrap();
        let watch = follower.watch();
        assert_eq!(watch.remembered("k1").map(|r| r.index), Some(2));
        assert!(watch.remembered("k2").is_some());
        assert!(watch.remembered("kx").is_none());
    });
}

/// The l2 owners are one record beside the services: checkpointed,
/// reloaded after a restart, carried by snapshots, and absent (with the
/// state as before) until the first `SetVipOwners`.
#[test]
fn vip_owners_survive_a_restart_and_travel_in_snapshots() {
    let dir = TempDir::new().unwrap();
    let follower_dir = TempDir::new().unwrap();
    let owners: BTreeMap<std::net::IpAddr, String> =
        [("192.0.2.1".parse().unwrap(), "node2".to_string())].into();
    rt().block_on(async {
        {
            let (_log, mut sm) = open(dir.path(), "node1").unwrap();
            sm.apply(vec![membership(1), normal(2, create(80))])
                .await
                .unwrap();
            assert!(sm.current().desired.vip_owners.is_empty());
            let plain = serde_json::to_value(&*sm.current().desired).unwrap();
            assert!(plain.get("vip_owners").is_none(), "{plain}");
            sm.apply(vec![normal(3, Command::SetVipOwners(owners.clone()))])
                .await
                .unwrap();
        }
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        let current = sm.current();
        assert_eq!(current.desired.vip_owners.owners, owners);
        assert_eq!(current.desired.vip_owners.index, 3);
        assert_eq!(current.desired.services.len(), 1);
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        {
            let (_flog, mut follower) = open(follower_dir.path(), "node1").unwrap();
            let mut data = follower.begin_receiving_snapshot().await.unwrap();
            *data = *snapshot.snapshot;
            follower
                .install_snapshot(&snapshot.meta, data)
                .await
                .unwrap();
        }
        let (_flog, follower) = open(follower_dir.path(), "node1").unwrap();
        assert_eq!(follower.current().desired.vip_owners.owners, owners);
        // Cleared: the record goes, and the state is as before again.
        sm.apply(vec![normal(4, Command::SetVipOwners(BTreeMap::new()))])
            .await
            .unwrap();
        assert_eq!(sm.current().desired.vip_owners.index, 4);
    });
}
