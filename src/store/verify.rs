//! The check a store passes before Raft may use it, and the cheaper one that
//! runs in the background.
//!
//! At start-up ([`check`]): every record's checksum and decoding; the log
//! contiguous, each entry at its own index, terms never going back; the
//! entry the witness says was acknowledged last still there (or covered by
//! the purge); the vote not older than the acknowledged one; the service
//! records matching the digest stored with them (a record that vanished is
//! found, not only one that changed); the log holding every entry after the
//! applied state; the snapshot decodable and covering what was purged.
//! (An applied state ahead of the log is a snapshot installed before a
//! crash, which openraft finishes; a missing snapshot openraft rebuilds
//! from the checked state machine.)
//! Whatever fails is a [`Damage`] naming the file and the record.
//!
//! While running ([`scrub`]): the checksum of every log entry and record as
//! sled returns them, a batch at a time. Only per-record facts: the log moves
//! under a scan (appends, purges, truncations), so whole-log facts are left
//! to the start-up check.

use super::codec::{self, decode, decode_log_key, unseal};
use super::disk::Trees;
use super::log::{LAST_PURGED, VOTE};
use super::state_machine::{self, Digest};
use super::witness::Acknowledged;
use super::StoreError;
use crate::raft::typ::{Entry, LogId, SnapshotMeta, StoredMembership, Vote};

/// What a passed check saw, for the start-up log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    pub entries: u64,
    pub services: u64,
    pub last_log: Option<LogId>,
}

/// Runs the start-up check; `sled` names sled's directory in the damage.
pub(crate) fn check(
    trees: &Trees,
    acked: &Acknowledged,
    sled: &std::path::Path,
) -> Result<Checked, StoreError> {
    let damaged = |record: String, problem: String| StoreError::damaged(sled, record, problem);
    let as_damage = |e: StoreError| match e {
        StoreError::Corrupt { what, problem } => damaged(what, problem),
        StoreError::Decode { what, source } => damaged(what, source.to_string()),
        other => other,
    };

    let vote: Option<Vote> = codec::get(&trees.raft, VOTE).map_err(as_damage)?;
    let last_purged: Option<LogId> = codec::get(&trees.raft, LAST_PURGED).map_err(as_damage)?;
    for key in [super::log::COMMITTED, super::FORMAT] {
        codec::get::<serde_json::Value>(&trees.raft, key).map_err(as_damage)?;
    }
    let first_kept = last_purged.map_or(0, |p| p.index + 1);

    // The log: every entry from the first kept one on.
    let mut checked = Checked::default();
    let mut prev: Option<LogId> = None;
    let mut acked_found = false;
    for item in trees.log.iter() {
        let (key, value) = item.map_err(StoreError::read("log entries"))?;
        let index = decode_log_key(&key).map_err(as_damage)?;
        if index < first_kept {
            continue; // purged; deleted by the purge thread
        }
        let what = || format!("log entry {index}");
        let entry: Entry = decode(&value, what).map_err(as_damage)?;
        let id = entry.log_id;
        if id.index != index {
            return Err(damaged(
                what(),
                format!("it holds the entry of index {}", id.index),
            ));
        }
        match prev {
            None if last_purged.is_some() && index != first_kept => {
                return Err(damaged(
                    what(),
                    format!(
                        "the log resumes at {index} after the purge up to {}: entries {first_kept}..{index} are missing",
                        first_kept - 1
                    ),
                ))
            }
            Some(p) if index != p.index + 1 => {
                return Err(damaged(
                    what(),
                    format!("entries {}..{index} are missing", p.index + 1),
                ))
            }
            Some(p) if id.leader_id < p.leader_id => {
                return Err(damaged(
                    what(),
                    format!("its term {} is older than the entry before it ({})", id.leader_id, p.leader_id),
                ))
            }
            _ => {}
        }
        if acked.last_log.is_some_and(|a| a.index == index) {
            if acked.last_log != Some(id) {
                return Err(damaged(
                    what(),
                    format!(
                        "it is {id}, but this node acknowledged {} at that index",
                        acked.last_log.map_or(String::new(), |a| a.to_string())
                    ),
                ));
            }
            acked_found = true;
        }
        prev = Some(id);
        checked.entries += 1;
    }
    let last_log = prev.or(last_purged);
    checked.last_log = last_log;
    if let Some(a) = acked.last_log {
        let purged = last_purged.is_some_and(|p| p.index >= a.index);
        if !acked_found && !purged {
            return Err(damaged(
                format!("log entry {}", a.index),
                format!(
                    "missing: this node acknowledged the log up to {a}, but it ends at {} \
                     ({} acknowledged entries lost)",
                    last_log.map_or("the start".to_string(), |l| l.to_string()),
                    a.index - last_log.map_or(0, |l| l.index.min(a.index))
                ),
            ));
        }
    }
    if let Some(a) = acked.vote {
        if !vote.is_some_and(|v| v >= a) {
            return Err(damaged(
                "the vote".into(),
                format!(
                    "it is {}, older than the vote {a} this node cast",
                    vote.map_or("missing".to_string(), |v| v.to_string())
                ),
            ));
        }
    }

    // The state machine.
    let last_applied: Option<LogId> =
        codec::get::<Option<LogId>>(&trees.state, state_machine::LAST_APPLIED)
            .map_err(as_damage)?
            .flatten();
    codec::get::<StoredMembership>(&trees.state, state_machine::LAST_MEMBERSHIP)
        .map_err(as_damage)?;
    let stored: Option<Digest> =
        codec::get(&trees.state, state_machine::DIGEST).map_err(as_damage)?;
    let mut digest = Digest::default();
    for item in trees.services.iter() {
        let (key, value) = item.map_err(StoreError::read("service records"))?;
        state_machine::decode_record(&key, &value).map_err(as_damage)?;
        digest.add(&key, &value);
        checked.services += 1;
    }
    if stored.unwrap_or_default() != digest {
        return Err(damaged(
            "the service records".into(),
            format!(
                "{} records whose digest is {:016x}, but the last checkpoint wrote {} records \
                 with digest {:016x}: records were lost or changed",
                digest.records,
                digest.sum,
                stored.unwrap_or_default().records,
                stored.unwrap_or_default().sum
            ),
        ));
    }
    let applied_next = last_applied.map_or(0, |a| a.index + 1);
    if applied_next < first_kept {
        return Err(damaged(
            "the applied state".into(),
            format!(
                "it is at {}, but the log was purged up to {}: entries {applied_next}..{first_kept} are gone",
                last_applied.map_or("the start".to_string(), |a| a.to_string()),
                first_kept - 1
            ),
        ));
    }

    // The snapshot, which followers are sent and which covers the purge.
    let meta: Option<SnapshotMeta> =
        codec::get(&trees.snapshot, state_machine::SNAPSHOT_META).map_err(as_damage)?;
    // A missing snapshot openraft builds from the state machine (checked).
    if let Some(meta) = &meta {
        state_machine::check_stored_snapshot(&trees.snapshot, meta).map_err(as_damage)?;
    }
    if let (Some(meta), Some(purged)) = (&meta, last_purged) {
        if meta.last_log_id.is_none_or(|l| l.index < purged.index) {
            return Err(damaged(
                "the snapshot".into(),
                format!("it ends before the purged log ({purged})"),
            ));
        }
    }
    Ok(checked)
}

/// How many records one scrub step checks before it yields.
pub(crate) const SCRUB_BATCH: usize = 2000;

/// Checks the checksum of the records of `tree` from `after` on, at most
/// [`SCRUB_BATCH`]; returns the last key checked (`None` at the end).
pub(crate) fn scrub(
    tree: &sled::Tree,
    name: &str,
    after: Option<&[u8]>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let range = match after {
        Some(k) => {
            tree.range::<&[u8], _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
        }
        None => tree.iter(),
    };
    let mut last = None;
    for item in range.take(SCRUB_BATCH) {
        let (key, value) = item.map_err(StoreError::read(name.to_string()))?;
        unseal(&value, || format!("{name} record {key:02x?}"))?;
        last = Some(key.to_vec());
    }
    Ok(last)
}
