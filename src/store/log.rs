//! The Raft log and vote: openraft's [`RaftLogStorage`].
//!
//! Entries live in the `log` tree, keyed by index; the vote, the committed
//! log id and the last purged log id in the `raft` tree. Appends and votes
//! reach openraft as persisted only after a flush (see `store/flush.rs`).

use super::codec::{self, decode, decode_log_key, encode, log_key};
use super::flush::Flusher;
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
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The Raft log and vote, persisted in sled.
pub struct LogStore {
    log: sled::Tree,
    raft: sled::Tree,
    flusher: Arc<Flusher>,
    purger: Arc<Purger>,
}

/// A read-only view of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    log: sled::Tree,
    purger: Arc<Purger>,
}

/// Deletes purged entries on a thread of its own. Purging follows every
/// snapshot and removes thousands of entries; done inline it stalled the
/// Raft core for tens of milliseconds. The purge marker is written first and
/// the first kept index published here, so readers skip purged entries that
/// are not deleted yet, and entries left over by a crash are deleted at the
/// next open.
struct Purger {
    /// Index of the first entry not purged (0: nothing purged).
    first_kept: AtomicU64,
    jobs: Mutex<Option<mpsc::Sender<u64>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Purger {
    fn start(log: sled::Tree, first_kept: u64) -> Result<Arc<Purger>, StoreError> {
        let (tx, rx) = mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("raft-log-purge".into())
            .spawn(move || {
                while let Ok(mut upto) = rx.recv() {
                    // Coalesce queued purges: only the highest matters.
                    while let Ok(next) = rx.try_recv() {
                        upto = upto.max(next);
                    }
                    if let Err(e) = delete_upto(&log, upto) {
                        tracing::warn!(error = %e, upto, "deleting purged log entries failed; retried at the next purge");
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

/// Deletes the entries up to `upto`, in batches.
fn delete_upto(log: &sled::Tree, upto: u64) -> Result<(), StoreError> {
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for key in log.range(..=log_key(upto)).keys().take(1024) {
            batch.remove(key.map_err(StoreError::read("log entries"))?);
            n += 1;
        }
        if n == 0 {
            return Ok(());
        }
        log.apply_batch(batch)
            .map_err(StoreError::write(format!("log purge up to {upto}")))?;
    }
}

impl LogStore {
    pub(crate) fn new(
        log: sled::Tree,
        raft: sled::Tree,
        flusher: Arc<Flusher>,
    ) -> Result<LogStore, StoreError> {
        let last_purged: Option<LogId> = codec::get(&raft, LAST_PURGED)?;
        let purger = Purger::start(log.clone(), last_purged.map_or(0, |l| l.index + 1))?;
        Ok(LogStore {
            log,
            raft,
            flusher,
            purger,
        })
    }

    #[cfg(test)]
    pub(crate) fn log_tree(&self) -> &sled::Tree {
        &self.log
    }

    #[cfg(test)]
    pub(crate) fn raft_tree(&self) -> &sled::Tree {
        &self.raft
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        codec::get(&self.raft, key)
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = encode(value, || key.to_string())?;
        self.raft
            .insert(key, bytes)
            .map_err(StoreError::write(key))?;
        Ok(())
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, StoreError> {
        let last_purged_log_id: Option<LogId> = self.get(LAST_PURGED)?;
        let last = match self
            .log
            .last()
            .map_err(StoreError::read("the last log entry"))?
        {
            // Only purged entries not deleted yet: the log is empty.
            Some((key, _)) if decode_log_key(&key)? < self.purger.first_kept() => None,
            Some((key, value)) => Some(decode_entry(&key, &value)?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    /// Writes `entries` atomically. A single entry is one `insert`: sled
    /// makes a multi-key batch atomic by sealing and writing out its IO
    /// buffer, a disk write (on sled's IO threads) that a leader appending
    /// one entry at a time would pay on every append, on top of the flush.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StoreError> {
        let mut records = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            records.push((
                log_key(index),
                encode(&entry, || format!("log entry {index}"))?,
            ));
        }
        let written = if let [(key, value)] = records.as_slice() {
            self.log.insert(key, value.as_slice()).map(drop)
        } else {
            let mut batch = sled::Batch::default();
            for (key, value) in records {
                batch.insert(&key, value);
            }
            self.log.apply_batch(batch)
        };
        written.map_err(StoreError::write("log entries"))
    }

    /// Removes entries from `index` on.
    fn remove_from(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(log_key(index)..).keys() {
            batch.remove(key.map_err(StoreError::read("log entries"))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(StoreError::write(format!("log truncation from {index}")))
    }

    /// Records `upto` as purged; the purger deletes the entries (readers
    /// skip them from now on).
    fn purge_upto(&self, upto: &LogId) -> Result<(), StoreError> {
        self.put(LAST_PURGED, upto)?;
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
    log: &sled::Tree,
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
    log.range(range)
        .map(|item| {
            let (key, value) = item.map_err(StoreError::read("log entries"))?;
            decode_entry(&key, &value)
        })
        .collect()
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
        read_entries(&self.log, range, self.purger.first_kept())
            .map_err(logs_error(ErrorVerb::Read))
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.log, range, self.purger.first_kept())
            .map_err(logs_error(ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state().map_err(logs_error(ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: self.log.clone(),
            purger: self.purger.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put(VOTE, vote).map_err(vote_error(ErrorVerb::Write))?;
        self.flusher
            .flush(VOTE)
            .await
            .map_err(vote_error(ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get(VOTE).map_err(vote_error(ErrorVerb::Read))
    }

    /// Written, not flushed: a committed id lost in a crash is only older,
    /// and openraft learns the commit point again from the leader. Any later
    /// append or vote flushes it anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let result = match committed {
            Some(id) => self.put(COMMITTED, &id),
            None => self
                .raft
                .remove(COMMITTED)
                .map(drop)
                .map_err(StoreError::write(COMMITTED)),
        };
        result.map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.get(COMMITTED)
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
        // Readable as soon as written; persisted (and reported) after the flush.
        self.write_entries(entries)
            .and_then(|()| self.flusher.log_flushed(callback))
            .map_err(logs_error(ErrorVerb::Write))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the log");
        self.remove_from(log_id.index)
            .map_err(logs_error(ErrorVerb::Delete))?;
        self.flusher
            .flush("log truncation")
            .await
            .map_err(logs_error(ErrorVerb::Delete))
    }

    /// Not flushed: if a crash loses the purge, the entries and the older
    /// marker come back together, which is a valid, longer log.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the log");
        self.purge_upto(&log_id)
            .map_err(logs_error(ErrorVerb::Delete))
    }
}
