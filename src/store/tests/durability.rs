//! What the store does when the disk does not keep its word: a lost log
//! tail, a lost vote, a vanished or flipped record, damaged sled files, an
//! old format, a full disk, a directory of another node.

use super::*;
use crate::store::disk::Database;
use std::time::Duration;

/// Writes behind the store's back, as sled's recovery or a damaged disk
/// would: on the closed directory, then flushed.
fn behind_the_back(dir: &std::path::Path, f: impl FnOnce(&disk::Trees)) {
    let db = Database::open(&dir.join("sled")).unwrap();
    f(&db.trees);
    db.flush().unwrap();
}

fn damage(result: Result<(LogStore, StateMachineStore), StoreError>) -> Damage {
    match result {
        Err(StoreError::Damaged(d)) => d,
        Err(other) => panic!("expected damage, got {other}"),
        Ok(_) => panic!("expected damage, the store opened"),
    }
}

/// A store with entries 1..=10 appended (acknowledged: their flush and the
/// witness after it are done) and a vote.
fn acknowledged_store(dir: &std::path::Path) {
    rt().block_on(async {
        let (mut log, _sm) = open(dir, "node1").unwrap();
        log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        log.blocking_append((1..=10).map(|i| entry(4, i, EntryPayload::Blank)))
            .await
            .unwrap();
    });
}

#[test]
fn a_lost_log_tail_is_found_not_trusted() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    // What sled did with one flipped byte: the tail gone, no error.
    behind_the_back(dir.path(), |t| {
        for i in 8..=10 {
            t.log.remove(codec::log_key(i)).unwrap();
        }
    });
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "log entry 10");
    assert!(
        d.problem.contains("acknowledged the log up to")
            && d.problem.contains("3 acknowledged entries lost"),
        "{d}"
    );
    assert!(d.file.ends_with("sled"), "{d}");
}

#[test]
fn an_entry_replaced_at_an_acknowledged_index_is_found() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    behind_the_back(dir.path(), |t| {
        let other = entry(5, 10, EntryPayload::Blank);
        let bytes = codec::encode(&other, String::new).unwrap();
        t.log.insert(codec::log_key(10), bytes).unwrap();
    });
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "log entry 10");
    assert!(d.problem.contains("acknowledged"), "{d}");
}

#[test]
fn a_hole_in_the_log_is_found() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    behind_the_back(dir.path(), |t| {
        t.log.remove(codec::log_key(5)).unwrap();
    });
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "log entry 6");
    assert!(d.problem.contains("entries 5..6 are missing"), "{d}");
}

#[test]
fn a_lost_vote_is_found() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    behind_the_back(dir.path(), |t| {
        let older = codec::encode(&Vote::new_committed(2, 1), String::new).unwrap();
        t.raft.insert(log::VOTE, older).unwrap();
    });
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "the vote");
    assert!(d.problem.contains("older than the vote"), "{d}");

    behind_the_back(dir.path(), |t| {
        t.raft.remove(log::VOTE).unwrap();
    });
    let d = damage(open(dir.path(), "node1"));
    assert!(d.problem.contains("missing"), "{d}");
}

#[test]
fn a_flipped_byte_in_any_record_is_named() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        sm.apply(vec![normal(1, create(80))]).await.unwrap();
    });
    let flip = |tree: fn(&disk::Trees) -> &sled::Tree, key: Vec<u8>| {
        behind_the_back(dir.path(), |t| {
            let mut value = tree(t).get(&key).unwrap().unwrap().to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x04;
            tree(t).insert(&key, value).unwrap();
        });
    };
    flip(|t| &t.log, codec::log_key(7).to_vec());
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "log entry 7");
    assert!(d.problem.contains("checksum mismatch"), "{d}");
    flip(|t| &t.log, codec::log_key(7).to_vec()); // back

    flip(|t| &t.services, codec::service_key(&key(80)));
    let d = damage(open(dir.path(), "node1"));
    assert!(d.record.starts_with("service record"), "{d}");
    assert!(d.problem.contains("checksum mismatch"), "{d}");
    flip(|t| &t.services, codec::service_key(&key(80)));

    flip(|t| &t.raft, log::VOTE.as_bytes().to_vec());
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "vote");
    flip(|t| &t.raft, log::VOTE.as_bytes().to_vec());

    assert!(open(dir.path(), "node1").is_ok(), "all flipped back");
}

#[test]
fn a_vanished_record_is_found_by_the_digest() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (_log, mut sm) = open(dir.path(), "node1").unwrap();
        let entries: Vec<Entry> = (1..=3).map(|i| normal(i, create(80 + i as u16))).collect();
        sm.apply(entries).await.unwrap();
    });
    behind_the_back(dir.path(), |t| {
        t.services.remove(codec::service_key(&key(82))).unwrap();
    });
    let d = damage(open(dir.path(), "node1"));
    assert_eq!(d.record, "the service records");
    assert!(
        d.problem.contains("2 records") && d.problem.contains("3 records"),
        "{d}"
    );
}

#[test]
fn a_truncation_lowers_the_witness_first() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    rt().block_on(async {
        let (mut log, _sm) = open(dir.path(), "node1").unwrap();
        log.truncate(log_id(4, 6)).await.unwrap();
        // A new leader's entries at the truncated indexes.
        log.blocking_append((6..=7).map(|i| entry(5, i, EntryPayload::Blank)))
            .await
            .unwrap();
    });
    let (mut log, _sm) = open(dir.path(), "node1").expect("the truncated log is not damage");
    rt().block_on(async {
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(5, 7)));
    });
}

#[test]
fn the_witness_and_the_database_belong_together() {
    // The database without its witness.
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    std::fs::remove_file(dir.path().join(witness::FILE)).unwrap();
    let d = damage(open(dir.path(), "node1"));
    assert!(
        d.file.ends_with(witness::FILE) && d.problem.contains("missing"),
        "{d}"
    );

    // The witness without its database.
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    std::fs::remove_dir_all(dir.path().join("sled")).unwrap();
    let d = damage(open(dir.path(), "node1"));
    assert!(d.problem.contains("acknowledged the log up to"), "{d}");

    // Another node's directory: a setting to fix, not damage.
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    let err = open(dir.path(), "node2").err().expect("refused");
    assert!(matches!(err, StoreError::OtherNode { .. }), "{err}");
    assert!(err.to_string().contains("RAFT_NODE_ID=node1"), "{err}");
}

#[test]
fn damaged_sled_files_are_errors_never_panics() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    let sled_dir = dir.path().join("sled");
    let db_file = sled_dir.join("db");
    // Every file of sled's directory: its recovery rewrites some of them.
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&sled_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let restore = || {
        for e in std::fs::read_dir(&sled_dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::remove_file(p).unwrap();
            }
        }
        for (p, bytes) in &files {
            std::fs::write(p, bytes).unwrap();
        }
    };
    let pristine = std::fs::read(&db_file).unwrap();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    // A spread of single flipped bytes and truncations, deterministic.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for trial in 0..40 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        restore();
        let mut bytes = pristine.clone();
        if trial % 4 == 3 {
            bytes.truncate((seed as usize) % bytes.len());
        } else {
            let at = (seed as usize) % bytes.len();
            bytes[at] ^= 1 << (seed % 8);
        }
        std::fs::write(&db_file, &bytes).unwrap();
        let opened = std::panic::catch_unwind(|| open(dir.path(), "node1").map(drop));
        let outcome = match opened {
            Err(_) => panic!("trial {trial}: open panicked"),
            Ok(Ok(())) => "opened (the byte did not matter)".to_string(),
            Ok(Err(StoreError::Damaged(_))) => "damage".to_string(),
            Ok(Err(StoreError::Open { .. })) => "sled refused".to_string(),
            Ok(Err(other)) => format!("other: {other}"),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("outcomes of damaged sled files: {outcomes:?}");
    assert!(
        outcomes.keys().all(|k| !k.starts_with("other")),
        "{outcomes:?}"
    );
    // Whatever opened still holds every acknowledged entry: the check would
    // have refused it otherwise; this proves the check ran.
    restore();
    rt().block_on(async {
        let (mut log, _sm) = open(dir.path(), "node1").unwrap();
        assert_eq!(log.try_get_log_entries(1..=10).await.unwrap().len(), 10);
    });
}

#[test]
fn a_format_1_store_is_migrated() {
    let dir = TempDir::new().unwrap();
    // As the previous version wrote it: plain JSON, an 8-byte counter.
    {
        let db = Database::open(&dir.path().join("sled")).unwrap();
        let t = &db.trees;
        for i in 1..=3 {
            let e = normal(i, create(80 + i as u16));
            t.log
                .insert(codec::log_key(i), serde_json::to_vec(&e).unwrap())
                .unwrap();
        }
        let vote = Vote::new_committed(1, 1);
        t.raft
            .insert(log::VOTE, serde_json::to_vec(&vote).unwrap())
            .unwrap();
        let mut state = DesiredState::default();
        state.apply(&create(81), 1);
        let cfg = state.services.values().next().unwrap();
        t.services
            .insert(
                codec::service_key(&key(81)),
                serde_json::to_vec(&**cfg).unwrap(),
            )
            .unwrap();
        t.state
            .insert(
                state_machine::LAST_APPLIED,
                serde_json::to_vec(&Some(log_id(1, 1))).unwrap(),
            )
            .unwrap();
        t.snapshot
            .insert(state_machine::SNAPSHOT_SEQ, &7u64.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    rt().block_on(async {
        let (mut log, mut sm) = open(dir.path(), "node1").expect("migrated");
        assert_eq!(log.try_get_log_entries(1..=3).await.unwrap().len(), 3);
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(Vote::new_committed(1, 1))
        );
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 1)));
        assert_eq!(sm.current().desired.services.len(), 1);
        // The counter survived: the next snapshot id is 8.
        sm.apply(vec![normal(2, create(82))]).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert!(
            snap.meta.snapshot_id.ends_with("-8"),
            "{}",
            snap.meta.snapshot_id
        );
    });
    // And it is a format-2 store now, witness and all.
    assert!(dir.path().join(witness::FILE).exists());
    assert!(open(dir.path(), "node1").is_ok());
}

#[test]
fn a_full_disk_is_waited_out_and_nothing_is_lost() {
    let dir = TempDir::new().unwrap();
    rt().block_on(async {
        let (mut log, mut sm) = open(dir.path(), "node1").unwrap();
        let status = sm.disk_status();
        log.blocking_append((1..=5).map(|i| normal(i, create(80 + i as u16))))
            .await
            .unwrap();
        sm.apply(
            (1..=5)
                .map(|i| normal(i, create(80 + i as u16)))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();

        // The disk fills: the append is written (and journaled) but its
        // flush fails; it is acknowledged only after the disk is back.
        let disk = log.disk().clone();
        let done = std::sync::atomic::AtomicBool::new(false);
        disk.inject_full(true);
        let append = async {
            let r = log
                .blocking_append((6..=8).map(|i| normal(i, create(80 + i as u16))))
                .await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        };
        let operator = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(
                !done.load(std::sync::atomic::Ordering::SeqCst),
                "no append is acknowledged while the disk is full"
            );
            let failure = status.borrow().clone().failing.expect("reported");
            assert!(
                failure.error.contains("No space left on device"),
                "{failure:?}"
            );
            disk.inject_full(false);
        };
        let (appended, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(append, operator)
        })
        .await
        .expect("acknowledged once the disk takes writes");
        appended.unwrap();
        let after = status.borrow().clone();
        assert_eq!(after.failing, None);
        assert_eq!(after.recoveries, 1);
        assert!(after.write_failures >= 1);
    });
    rt().block_on(async {
        let (mut log, _sm) = open(dir.path(), "node1").expect("nothing damaged");
        let entries = log.try_get_log_entries(1..=8).await.unwrap();
        assert_eq!(
            entries.len(),
            8,
            "every acknowledged entry, the redone ones too"
        );
    });
}

#[test]
fn the_scrub_finds_a_damaged_record_while_running() {
    let dir = TempDir::new().unwrap();
    acknowledged_store(dir.path());
    rt().block_on(async {
        let (log, sm) = open(dir.path(), "node1").unwrap();
        let scrubber = sm.scrubber();
        scrubber.pass().await.expect("a sound store passes");
        assert_eq!(sm.disk_status().borrow().damaged, None);
        let log_tree = log.disk().trees().log;
        let mut value = log_tree.get(codec::log_key(4)).unwrap().unwrap().to_vec();
        value[7] ^= 0x10;
        log_tree.insert(codec::log_key(4), value).unwrap();
        let err = scrubber.pass().await.expect_err("the flipped byte");
        assert!(crate::errors::chain(&err).contains("log record"), "{err}");
        let damaged = sm.disk_status().borrow().damaged.clone().expect("reported");
        assert!(damaged.contains("checksum mismatch"), "{damaged}");
    });
}
