//! The Raft log and vote: openraft's [`RaftLogStorage`].
//!
//! Entries live in the `log` tree, keyed by index; the vote, the committed
//! log id and the last purged log id in the `raft` tree. Appends and votes
//! reach openraft as persisted only after a flush and the witness written
//! after it (see `disk.rs` and `witness.rs`).

use super::codec::{self, decode, decode_log_key, encode, log_key};
use super::disk::Disk;
use super::StoreError;
use crate::raft::typ::{Entry, LogId, StorageError, Vote};
use crate::raft::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Keys of the `raft` tree.
pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";
pub(crate) const LAST_PURGED: &str = "last_purged";

/// The Raft log and vote, persisted in sled.
pub struct LogStore {
    disk: Disk,
    purger: Arc<Purger>,
}

/// A read-only view of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    disk: Disk,
    purger: Arc<Purger>,
}

/// Deletes purged entries on a thread of its own. Purging follows every
/// snapshot and removes thousands of entries; done inline it stalled the
/// Raft core for tens of milliseconds. The purge marker is written first and
/// the first kept index published here, so readers skip purged entries that
/// are not deleted yet, and entries left over by a crash (or by a delete
/// that failed) are deleted at the next purge or open.
struct Purger {
    /// Index of the first entry not purged (0: nothing purged).
    first_kept: AtomicU64,
    jobs: Mutex<Option<mpsc::Sender<u64>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Purger {
    fn start(disk: Disk, first_kept: u64) -> Result<Arc<Purger>, StoreError> {
        let (tx, rx) = mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || {
                while let Ok(mut upto) = rx.recv() {
                    // Coalesce queued purges: only the highest matters.
                    while let Ok(next) = rx.try_recv() {
                        upto = upto.max(next);
                    }
                    if let Err(e) = delete_upto(&disk, upto) {
                        tracing::debug!(error = %e, upto, "deleting purged log entries failed; retried at the next purge");
                    }
                }
            })
            .map_err(StoreError::SpawnPurger)?;
        if first_kept > 0 {
            let _ = tx.send(first_kept - 1);
        }
        Ok(Arc::new(Purger {
            first_kept: AtomicU64::new(first_kept),
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    fn first_kept(&self) -> u64 {
        self.first_kept.load(Ordering::Acquire)
    }

    fn purge(&self, upto: u64) {
        self.first_kept.fetch_max(upto + 1, Ordering::AcqRel);
        if let Ok(jobs) = self.jobs.lock() {
            if let Some(tx) = jobs.as_ref() {
                let _ = tx.send(upto);
            }
        }
    }
}

impl Drop for Purger {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut thread) = self.thread.lock() {
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Deletes the entries up to `upto`, in batches. Best effort: what is left
/// (the disk failed meanwhile) is skipped by readers and deleted later.
fn delete_upto(disk: &Disk, upto: u64) -> Result<(), StoreError> {
    loop {
        let keys = disk.read(|t| {
            t.log
                .range(..=log_key(upto))
                .keys()
                .take(1024)
                .collect::<Result<Vec<_>, _>>()
                .map_err(StoreError::read("log entries"))
        })?;
        if keys.is_empty() {
            return Ok(());
        }
        disk.write_now(&format!("log purge up to {upto}"), move |t| {
            let mut batch = sled::Batch::default();
            for key in &keys {
                batch.remove(key.clone());
            }
            t.log.apply_batch(batch)
        })?;
    }
}

impl LogStore {
    pub(crate) fn new(disk: Disk) -> Result<LogStore, StoreError> {
        let last_purged: Option<LogId> = disk.read(|t| codec::get(&t.raft, LAST_PURGED))?;
        let purger = Purger::start(disk.clone(), last_purged.map_or(0, |l| l.index + 1))?;
        Ok(LogStore { disk, purger })
    }

    #[cfg(test)]
    pub(crate) fn disk(&self) -> &Disk {
        &self.disk
    }

    fn get<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        self.disk.read(|t| codec::get(&t.raft, key))
    }

    async fn put<T: Serialize>(&self, key: &'static str, value: &T) -> Result<(), StoreError> {
        let bytes = sled::IVec::from(encode(value, || key.to_string())?);
        self.disk
            .write(key, move |t| t.raft.insert(key, bytes.clone()).map(drop))
            .await
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId> = self.get(LAST_PURGED)?;
        let first_kept = self.purger.first_kept();
        let last = self.disk.read(|t| {
            match t
                .log
                .last()
                .map_err(StoreError::read("the last log entry"))?
            {
                // Only purged entries not deleted yet: the log is empty.
                Some((key, _)) if decode_log_key(&key)? < first_kept => Ok(None),
                Some((key, value)) => Ok(Some(decode_entry(&key, &value)?.log_id)),
                None => Ok(None),
            }
        })?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    /// Writes `entries` atomically, and names the last one in the next
    /// witness. A single entry is one `insert`: sled makes a multi-key batch
    /// atomic by sealing and writing out its IO buffer, a disk write (on
    /// sled's IO threads) that a leader appending one entry at a time would
    /// pay on every append, on top of the flush.
    async fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StoreError> {
        let mut records = Vec::new();
        let mut last = None;
        for entry in entries {
            let index = entry.log_id.index;
            last = Some(entry.log_id);
            records.push((
                sled::IVec::from(&log_key(index)),
                sled::IVec::from(encode(&entry, || format!("log entry {index}"))?),
            ));
        }
        let Some(last) = last else {
            return Ok(());
        };
        self.disk
            .write("log entries", move |t| {
                if let [(key, value)] = records.as_slice() {
                    t.log.insert(key, value.clone()).map(drop)
                } else {
                    let mut batch = sled::Batch::default();
                    for (key, value) in &records {
                        batch.insert(key, value.clone());
                    }
                    t.log.apply_batch(batch)
                }
            })
            .await?;
        self.disk.acknowledge(|a| a.last_log = Some(last));
        Ok(())
    }

    /// Removes entries from `log_id`'s index on. The witness is lowered
    /// first, and flushed, so that it never names an entry the log no
    /// longer has, even if the node stops between the two.
    async fn truncate_from(&self, log_id: LogId) -> Result<(), StoreError> {
        let index = log_id.index;
        let before = match index.checked_sub(1) {
            Some(prev) if prev >= self.purger.first_kept() => {
                read_entries(&self.disk, prev..=prev, self.purger.first_kept())?
                    .first()
                    .map(|e| e.log_id)
            }
            _ => self.get(LAST_PURGED)?,
        };
        self.disk.acknowledge(|a| {
            if a.last_log.is_some_and(|l| l.index >= index) {
                a.last_log = before;
            }
        });
        self.disk.flush().await?;
        self.disk
            .write("log truncation", move |t| {
                let mut batch = sled::Batch::default();
                for key in t.log.range(log_key(index)..).keys() {
                    batch.remove(key?);
                }
                t.log.apply_batch(batch)
            })
            .await?;
        self.disk.flush().await
    }

    /// Records `upto` as purged; the purger deletes the entries (readers
    /// skip them from now on). A purge beyond the log's end (a follower
    /// that installed a snapshot) moves the log's end there.
    async fn purge_upto(&self, upto: LogId) -> Result<(), StoreError> {
        self.put(LAST_PURGED, &upto).await?;
        self.disk.acknowledge(|a| {
            if a.last_log.is_none_or(|l| l.index < upto.index) {
                a.last_log = Some(upto);
            }
        });
        self.purger.purge(upto.index);
        Ok(())
    }
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, StoreError> {
    let index = decode_log_key(key)?;
    let entry: Entry = decode(value, || format!("log entry {index}"))?;
    if entry.log_id.index != index {
        return Err(StoreError::Corrupt {
            what: format!("log entry {index}"),
            problem: format!("it holds the entry of index {}", entry.log_id.index),
        });
    }
    Ok(entry)
}

/// Entries in `range`, never below `first_kept` (purged, maybe not yet
/// deleted).
fn read_entries<RB: RangeBounds<u64>>(
    disk: &Disk,
    range: RB,
    first_kept: u64,
) -> Result<Vec<Entry>, StoreError> {
    let bound = |b: Bound<&u64>| match b {
        Bound::Included(i) => Bound::Included(log_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let start = match range.start_bound() {
        Bound::Included(i) if *i >= first_kept => Bound::Included(log_key(*i)),
        Bound::Excluded(i) if *i >= first_kept => Bound::Excluded(log_key(*i)),
        _ => Bound::Included(log_key(first_kept)),
    };
    // sled yields nothing for an empty or reversed range (no panic).
    let range = (start, bound(range.end_bound()));
    disk.read(|t| {
        t.log
            .range(range)
            .map(|item| {
                let (key, value) = item.map_err(StoreError::read("log entries"))?;
                decode_entry(&key, &value)
            })
            .collect()
    })
}

/// A damaged entry is also reported to the node (it stops, and its start-up
/// check decides what happens), not only to openraft.
fn checked<T>(disk: &Disk, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(e @ (StoreError::Corrupt { .. } | StoreError::Decode { .. })) = &result {
        disk.damaged(format!(
            "{}: {}",
            disk.dir().display(),
            crate::errors::chain(e)
        ));
    }
    result
}

fn logs_error(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_storage(ErrorSubject::Logs, verb)
}

fn vote_error(verb: ErrorVerb) -> impl FnOnce(StoreError) -> StorageError {
    move |e| e.into_storage(ErrorSubject::Vote, verb)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = read_entries(&self.disk, range, self.purger.first_kept());
        checked(&self.disk, read).map_err(logs_error(ErrorVerb::Read))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = read_entries(&self.disk, range, self.purger.first_kept());
        checked(&self.disk, read).map_err(logs_error(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        checked(&self.disk, self.log_state()).map_err(logs_error(ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            disk: self.disk.clone(),
            purger: self.purger.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put(VOTE, vote)
            .await
            .map_err(vote_error(ErrorVerb::Write))?;
        let vote = *vote;
        self.disk.acknowledge(|a| a.vote = Some(vote));
        self.disk
            .flush()
            .await
            .map_err(vote_error(ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        checked(&self.disk, self.get(VOTE)).map_err(vote_error(ErrorVerb::Read))
    }

    /// Written, not flushed: a committed id lost in a crash is only older,
    /// and openraft learns the commit point again from the leader. Any later
    /// append or vote flushes it anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let result = match committed {
            Some(id) => self.put(COMMITTED, &id).await,
            None => {
                self.disk
                    .write(COMMITTED, |t| t.raft.remove(COMMITTED).map(drop))
                    .await
            }
        };
        result.map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        checked(&self.disk, self.get(COMMITTED))
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Readable as soon as written; persisted (and reported) after the
        // flush and the witness that covers it.
        self.write_entries(entries)
            .await
            .and_then(|()| self.disk.log_flushed(callback))
            .map_err(logs_error(ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the log");
        self.truncate_from(log_id)
            .await
            .map_err(logs_error(ErrorVerb::Delete))
    }

    /// Not flushed: if a crash loses the purge, the entries and the older
    /// marker come back together, which is a valid, longer log.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log");
        self.purge_upto(log_id)
            .await
            .map_err(logs_error(ErrorVerb::Delete))
    }
}
