//! The replicated state machine: openraft's [`RaftStateMachine`] over typed
//! records, its snapshots, and the watch channel that publishes it.
//!
//! Trees:
//! - `services`: one record per virtual service, key `codec::service_key`,
//!   value the [`ServiceConfig`] (JSON); and one per write remembered under
//!   its `Idempotency-Key` ([`crate::model::requests`]), key
//!   `codec::request_key`, value the [`Remembered`] write; and, once l2
//!   owners were set, one record (`codec::OWNERS_RECORD`) holding them;
//! - `state`: the last applied log id and the last applied membership;
//! - `snapshot`: the current snapshot (`meta`, `data`) and the counter that
//!   makes snapshot ids unique (`seq`).
//!
//! Applying changes the in-memory mirror; the records reach the disk in
//! checkpoints: the services changed since the last one and the new `state`
//! in one sled transaction, so the records on disk always match the last
//! applied log id they are stored with. A checkpoint is written every
//! [`CHECKPOINT_ENTRIES`] entries or [`CHECKPOINT_INTERVAL`], before every
//! snapshot and when the store is dropped; unflushed, like every apply
//! before it. The periodic ones are written on a blocking thread while
//! applies go on (one at a time, in order; a snapshot, an install and the
//! drop wait for it first). The log is what makes writes durable: after a crash openraft
//! re-applies the entries after the recovered checkpoint. (A transaction
//! per apply cost a disk write of its own on sled's IO threads.) Snapshots
//! are flushed, and with them the checkpoint before them, because openraft
//! purges the log they cover.
//!
//! Each checkpoint also stores the [`Digest`] of the records of that tree
//! (their count and a sum of their hashes), so that the start-up check
//! finds a record that vanished, not only one whose checksum fails.

use super::codec::{self, decode, encode, get, unseal, OWNERS_RECORD};
use super::disk::Disk;
use super::error::transaction_error;
use super::history::{History, ServiceChange, SharedHistory, HISTORY_CHANGES};
use super::StoreError;
use crate::model::requests::{Remembered, Requests};
use crate::model::{CommandResult, DesiredState, ServiceConfig, ServiceKey, VipOwners};
use crate::raft::typ::{
    Entry, EntryPayload, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use crate::raft::TypeConfig;
use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries applied between two checkpoints at most (bounds what a restart
/// after a crash re-applies)...
pub(crate) const CHECKPOINT_ENTRIES: u64 = 1000;
/// ...and the time between two, while entries are being applied. Short, so
/// that each is small: sled writes out everything it holds at the next
/// log flush, and a second's worth of created services in one checkpoint
/// held every write behind that flush for 100–300 ms.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Keys of the `state` tree.
pub(crate) const LAST_APPLIED: &str = "last_applied";
pub(crate) const LAST_MEMBERSHIP: &str = "last_membership";
pub(crate) const DIGEST: &str = "digest";
/// Keys of the `snapshot` tree.
pub(crate) const SNAPSHOT_META: &str = "meta";
pub(crate) const SNAPSHOT_DATA: &str = "data";
pub(crate) const SNAPSHOT_SEQ: &str = "seq";

/// The service records as a whole: how many, and the wrapping sum of a
/// hash of each (key and sealed value). Order-free, so a checkpoint updates
/// it with the records it writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Digest {
    pub(crate) records: u64,
    pub(crate) sum: u64,
}

/// The hash of one record in the [`Digest`].
pub(crate) fn record_hash(key: &[u8], value: &[u8]) -> u64 {
    (u64::from(crc32fast::hash(key)) << 32) | u64::from(crc32fast::hash(value))
}

impl Digest {
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        self.records += 1;
        self.sum = self.sum.wrapping_add(record_hash(key, value));
    }

    fn add_hash(&mut self, hash: u64) {
        self.records += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    fn remove_hash(&mut self, hash: u64) {
        self.records = self.records.saturating_sub(1);
        self.sum = self.sum.wrapping_sub(hash);
    }
}

/// Version of the snapshot data layout, checked on install.
const SNAPSHOT_FORMAT: u32 = 1;

/// The committed desired state as of a log position: what the rest of the
/// process reads instead of talking to Raft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The last log entry applied; `None` before the first.
    pub applied: Option<LogId>,
    pub desired: Arc<DesiredState>,
}

impl Committed {
    /// Index of the last applied entry (0 before any, which is also the
    /// index of openraft's first entry: compare whole [`Committed`] values,
    /// or `applied`, to detect changes).
    pub fn applied_index(&self) -> u64 {
        self.applied.map_or(0, |id| id.index)
    }
}

/// A cloneable handle on the published state; it outlives handing the
/// [`StateMachineStore`] to openraft.
#[derive(Debug, Clone)]
pub struct StateWatch {
    rx: watch::Receiver<Committed>,
    requests: Arc<RwLock<Requests>>,
    history: Arc<SharedHistory>,
}

impl StateWatch {
    /// A receiver that sees every later apply and snapshot install (coalesced
    /// if it reads slower than they come; the latest value always wins). The
    /// channel closes when the state machine is dropped.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }

    /// The state as of now.
    pub fn current(&self) -> Committed {
        self.rx.borrow().clone()
    }

    /// The write remembered under `key`, as of the last apply.
    pub fn remembered(&self, key: &str) -> Option<Remembered> {
        read(&self.requests).get(key).cloned()
    }

    /// The recent changes to the services, by revision: recorded after
    /// each apply is published, so nothing in it is ahead of
    /// [`Self::current`].
    pub fn history(&self) -> &SharedHistory {
        &self.history
    }
}

/// The table of remembered writes, read; a panic elsewhere while holding
/// the lock leaves a table that is still whole (every change is one call).
fn read(requests: &RwLock<Requests>) -> std::sync::RwLockReadGuard<'_, Requests> {
    requests
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(requests: &RwLock<Requests>) -> std::sync::RwLockWriteGuard<'_, Requests> {
    requests
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The snapshot data, as stored and as sent to followers (JSON).
#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    desired: &'a DesiredState,
    requests: &'a Requests,
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    desired: DesiredState,
    /// Absent from snapshots taken before writes were remembered.
    #[serde(default)]
    requests: Requests,
}

/// The state machine: typed records in sled, mirrored in memory.
pub struct StateMachineStore {
    disk: Disk,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// The in-memory mirror of `services`; shared with the published value
    /// and snapshot builders, copied on write.
    desired: Arc<DesiredState>,
    published: watch::Sender<Committed>,
    /// The writes remembered under their keys; shared with [`StateWatch`].
    requests: Arc<RwLock<Requests>>,
    /// The recent changes to the services; shared with [`StateWatch`].
    history: Arc<SharedHistory>,
    /// Services changed since the last checkpoint.
    dirty: BTreeSet<ServiceKey>,
    /// Remembered writes added or forgotten since the last checkpoint.
    dirty_requests: BTreeSet<String>,
    /// The l2 owners changed since the last checkpoint.
    dirty_owners: bool,
    /// Index of the last applied entry at the last checkpoint, and when it
    /// was written.
    checkpoint: (u64, Instant),
    /// The hash of each record (by record key) as the last checkpoint wrote
    /// it, and their digest.
    hashes: HashMap<Vec<u8>, u64>,
    digest: Digest,
    /// The checkpoint being written on a blocking thread, if any: applies
    /// go on meanwhile (written in line, a checkpoint of a few thousand
    /// records stalled every write for 100–300 ms once a second).
    writing: Option<Writing>,
    /// A background checkpoint failed: its records were taken as written
    /// (the next checkpoint leaves them out), so no later one may be
    /// trusted; every later checkpoint fails, and with it the node.
    checkpoint_failed: bool,
}

/// A checkpoint on its way to the disk; its outcome arrives on `done` (in a
/// mutex only because the store must be `Sync`; one owner uses it).
struct Writing {
    done: Mutex<std::sync::mpsc::Receiver<Result<(), StoreError>>>,
}

impl Writing {
    /// Writes `checkpoint`'s records and state on a blocking thread.
    fn start(disk: Disk, services: sled::Batch, state: sled::Batch) -> Writing {
        let (tx, done) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let written = runtime.block_on(disk.write("applied entries", move |t| {
                write_records(t, &services, &state)
            }));
            let _ = tx.send(written);
        });
        Writing {
            done: Mutex::new(done),
        }
    }

    fn done(&self) -> std::sync::MutexGuard<'_, std::sync::mpsc::Receiver<Result<(), StoreError>>> {
        self.done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The outcome if the write has ended.
    fn poll(&self) -> Option<Result<(), StoreError>> {
        match self.done().try_recv() {
            Ok(result) => Some(result),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(lost_writer())),
        }
    }

    /// Waits for the outcome, blocking the thread (at drop).
    fn wait_now(self) -> Result<(), StoreError> {
        let outcome = self.done().recv();
        outcome.unwrap_or_else(|_| Err(lost_writer()))
    }

    /// Waits for the outcome without blocking the runtime.
    async fn wait(self) -> Result<(), StoreError> {
        tokio::task::spawn_blocking(move || self.wait_now())
            .await
            .unwrap_or_else(|_| Err(lost_writer()))
    }
}

/// A checkpoint writer that ended without saying how the write went.
fn lost_writer() -> StoreError {
    StoreError::Corrupt {
        what: "the state machine checkpoint".into(),
        problem: "its writer ended without an outcome".into(),
    }
}

/// A frozen copy of the state machine, taken by
/// [`RaftStateMachine::get_snapshot_builder`]; later applies do not change it.
pub struct SnapshotBuilder {
    /// Why the checkpoint before this snapshot failed: then the snapshot
    /// fails too, so that openraft purges nothing.
    checkpoint: Option<StoreError>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    desired: Arc<DesiredState>,
    requests: Requests,
    disk: Disk,
}

impl StateMachineStore {
    /// Loads the state machine from the store (checked by `verify` first).
    pub(crate) fn load(disk: Disk) -> Result<StateMachineStore, StoreError> {
        let (last_applied, last_membership, desired, mut requests, hashes, digest) =
            disk.read(|t| {
                let last_applied: Option<LogId> = get(&t.state, LAST_APPLIED)?.flatten();
                let last_membership: StoredMembership =
                    get(&t.state, LAST_MEMBERSHIP)?.unwrap_or_default();
                let mut desired = DesiredState::default();
                let mut requests = Requests::default();
                let mut hashes = HashMap::new();
                let mut digest = Digest::default();
                for item in t.services.iter() {
                    let (key, value) = item.map_err(StoreError::read("service records"))?;
                    match decode_record(&key, &value)? {
                        Record::Service(cfg) => {
                            desired.services.insert(cfg.service.key, Arc::new(*cfg));
                        }
                        Record::Request(entry) => requests.insert(entry),
                        Record::Owners(owners) => desired.vip_owners = owners,
                    }
                    let hash = record_hash(&key, &value);
                    digest.add_hash(hash);
                    hashes.insert(key.to_vec(), hash);
                }
                Ok((
                    last_applied,
                    last_membership,
                    desired,
                    requests,
                    hashes,
                    digest,
                ))
            })?;
        // What was read is what the disk holds: nothing to write back.
        requests.take_changed();
        let desired = Arc::new(desired);
        let (published, _) = watch::channel(Committed {
            applied: last_applied,
            desired: desired.clone(),
        });
        Ok(StateMachineStore {
            disk,
            last_applied,
            last_membership,
            desired,
            published,
            requests: Arc::new(RwLock::new(requests)),
            history: Arc::new(SharedHistory::new(History::new(
                last_applied.map_or(0, |id| id.index),
                HISTORY_CHANGES,
            ))),
            dirty: BTreeSet::new(),
            dirty_requests: BTreeSet::new(),
            dirty_owners: false,
            checkpoint: (last_applied.map_or(0, |id| id.index), Instant::now()),
            hashes,
            digest,
            writing: None,
            checkpoint_failed: false,
        })
    }

    fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |id| id.index)
    }

    /// Records that the disk now holds the applied state.
    fn checkpointed(&mut self) {
        self.dirty.clear();
        self.dirty_requests.clear();
        self.dirty_owners = false;
        self.checkpoint = (self.applied_index(), Instant::now());
    }

    #[cfg(test)]
    pub(crate) fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Waits for the checkpoint being written in the background, if any.
    #[cfg(test)]
    pub(crate) async fn settle_checkpoint(&mut self) -> Result<(), StoreError> {
        self.finish_checkpoint().await
    }

    /// Records this store's flush and apply times in `stages` (see
    /// `metrics::stages`).
    pub fn record_stages(&self, stages: crate::metrics::stages::WriteStages) {
        self.disk.record_stages(stages);
    }

    /// A handle that flushes this store's database, for the last step of
    /// shutdown (after Raft has stopped writing).
    pub fn flush_handle(&self) -> super::FlushHandle {
        super::FlushHandle(self.disk.clone())
    }

    /// Whether the disk takes writes; see [`super::DiskStatus`].
    pub fn disk_status(&self) -> watch::Receiver<super::DiskStatus> {
        self.disk.status()
    }

    /// A handle that checks every record's checksum in the background.
    pub fn scrubber(&self) -> super::Scrubber {
        super::Scrubber(self.disk.clone())
    }

    /// A handle on the published state, to keep after the store is handed
    /// to openraft.
    pub fn watch(&self) -> StateWatch {
        StateWatch {
            rx: self.published.subscribe(),
            requests: self.requests.clone(),
            history: self.history.clone(),
        }
    }

    /// A receiver that sees every later apply and snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<Committed> {
        self.published.subscribe()
    }

    /// The state as of the last apply.
    pub fn current(&self) -> Committed {
        Committed {
            applied: self.last_applied,
            desired: self.desired.clone(),
        }
    }

    fn publish(&self) {
        self.published.send_replace(self.current());
    }

    /// Applies `entries` to the mirror; returns the results, the services
    /// they changed, and each entry's changes for the history.
    fn apply_to_mirror(&mut self, entries: impl IntoIterator<Item = Entry>) -> Applied {
        let mut results = Vec::new();
        let mut touched = BTreeSet::new();
        let mut history = Vec::new();
        let mut requests = write(&self.requests);
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                // Not a client command; `Applied` tells a membership change's
                // caller at which index it took effect.
                EntryPayload::Blank => {
                    results.push(CommandResult::Applied { revision: index });
                    history.push((index, Vec::new()));
                }
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    results.push(CommandResult::Applied { revision: index });
                    history.push((index, Vec::new()));
                }
                EntryPayload::Normal(cmd) => {
                    // Copies the mirror once per call while readers hold the
                    // published version; free afterwards.
                    let desired = Arc::make_mut(&mut self.desired);
                    // Every service the entry may change, with its revision
                    // before: a change is a revision that differs after
                    // (refusals and no-ops change none), whatever the
                    // command's result says.
                    let mut named = cmd.services();
                    if cmd.replaces_all() {
                        touched.extend(desired.services.keys().copied());
                        named.extend(desired.services.keys().copied());
                    }
                    named.sort();
                    named.dedup();
                    let before: Vec<Option<u64>> = named
                        .iter()
                        .map(|key| desired.services.get(key).map(|c| c.revision))
                        .collect();
                    let owners_before = desired.vip_owners.index;
                    let result = requests.apply(desired, &cmd, index);
                    self.dirty_owners |= desired.vip_owners.index != owners_before;
                    touched.extend(result.changed(&cmd));
                    results.push(result);
                    let changes = named
                        .iter()
                        .zip(before)
                        .filter_map(|(key, before)| {
                            let after = desired.services.get(key);
                            (after.map(|c| c.revision) != before).then(|| ServiceChange {
                                key: *key,
                                service: after.cloned(),
                            })
                        })
                        .collect();
                    history.push((index, changes));
                }
            }
        }
        self.dirty_requests.extend(requests.take_changed());
        Applied {
            results,
            touched,
            history,
        }
    }

    /// Whether enough was applied since the last checkpoint to write one.
    fn checkpoint_due(&self) -> bool {
        let (index, at) = self.checkpoint;
        self.applied_index().saturating_sub(index) >= CHECKPOINT_ENTRIES
            || at.elapsed() >= CHECKPOINT_INTERVAL
    }

    /// The records of the services changed since the last checkpoint as
    /// the mirror has them, and the applied state with the new digest.
    fn checkpoint(&self) -> Result<Checkpoint, StoreError> {
        let mut services = sled::Batch::default();
        let mut hashes = Vec::new();
        let mut digest = self.digest;
        let mut put = |record: Vec<u8>, value: Option<Vec<u8>>| {
            if let Some(old) = self.hashes.get(&record) {
                digest.remove_hash(*old);
            }
            match value {
                Some(value) => {
                    let hash = record_hash(&record, &value);
                    digest.add_hash(hash);
                    hashes.push((record.clone(), Some(hash)));
                    services.insert(record, value);
                }
                None => {
                    hashes.push((record.clone(), None));
                    services.remove(record);
                }
            }
        };
        for key in &self.dirty {
            let value = match self.desired.services.get(key) {
                Some(cfg) => Some(encode(cfg, || format!("service {key}"))?),
                None => None,
            };
            put(codec::service_key(key), value);
        }
        let requests = read(&self.requests);
        for key in &self.dirty_requests {
            let value = match requests.get(key) {
                Some(entry) => Some(encode(entry, || format!("remembered request {key:?}"))?),
                None => None,
            };
            put(codec::request_key(key), value);
        }
        drop(requests);
        if self.dirty_owners {
            put(
                OWNERS_RECORD.to_vec(),
                owners_record(&self.desired.vip_owners)?,
            );
        }
        let state = state_batch(&self.last_applied, &self.last_membership, &digest)?;
        Ok(Checkpoint {
            services,
            state,
            hashes,
            digest,
        })
    }

    /// Remembers what a checkpoint wrote.
    fn checkpoint_written(&mut self, hashes: Vec<(Vec<u8>, Option<u64>)>, digest: Digest) {
        for (key, hash) in hashes {
            match hash {
                Some(h) => self.hashes.insert(key, h),
                None => self.hashes.remove(&key),
            };
        }
        self.digest = digest;
        self.checkpointed();
    }

    /// Starts writing a checkpoint in the background unless one is still
    /// being written (then the next apply tries again). An earlier one that
    /// failed fails this call: the node stops, as for any storage error.
    fn start_checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(writing) = &self.writing {
            match writing.poll() {
                None => return Ok(()),
                Some(outcome) => {
                    self.writing = None;
                    self.failed_if(outcome)?;
                }
            }
        }
        self.failed_if(Ok(()))?;
        let Checkpoint {
            services,
            state,
            hashes,
            digest,
        } = self.checkpoint()?;
        // Checkpoints reach the disk in order: the next starts only once
        // this one ended, and each holds every record changed since the one
        // before it, so the hashes can be taken as written now.
        self.writing = Some(Writing::start(self.disk.clone(), services, state));
        self.checkpoint_written(hashes, digest);
        Ok(())
    }

    /// Waits for the checkpoint being written, if any.
    async fn finish_checkpoint(&mut self) -> Result<(), StoreError> {
        let outcome = match self.writing.take() {
            Some(writing) => writing.wait().await,
            None => Ok(()),
        };
        self.failed_if(outcome)
    }

    /// Passes on a background checkpoint's `outcome`, remembering a
    /// failure; once one failed, every call fails.
    fn failed_if(&mut self, outcome: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(e) = outcome {
            self.checkpoint_failed = true;
            return Err(e);
        }
        if self.checkpoint_failed {
            return Err(StoreError::Corrupt {
                what: "the state machine checkpoint".into(),
                problem: "an earlier checkpoint failed to be written".into(),
            });
        }
        Ok(())
    }

    /// Writes the records of the services changed since the last checkpoint
    /// as the mirror has them, and the applied state, in one transaction,
    /// after the one being written in the background.
    async fn write_checkpoint(&mut self) -> Result<(), StoreError> {
        self.finish_checkpoint().await?;
        let Checkpoint {
            services,
            state,
            hashes,
            digest,
        } = self.checkpoint()?;
        self.disk
            .write("applied entries", move |t| {
                write_records(t, &services, &state)
            })
            .await?;
        self.checkpoint_written(hashes, digest);
        Ok(())
    }

    /// [`Self::write_checkpoint`] without waiting for a failing disk (at drop).
    fn write_checkpoint_now(&mut self) -> Result<(), StoreError> {
        let outcome = self.writing.take().map_or(Ok(()), Writing::wait_now);
        self.failed_if(outcome)?;
        let Checkpoint {
            services,
            state,
            hashes,
            digest,
        } = self.checkpoint()?;
        self.disk.write_now("applied entries", move |t| {
            write_records(t, &services, &state)
        })?;
        self.checkpoint_written(hashes, digest);
        Ok(())
    }

    /// Replaces every record, the applied state and the current snapshot
    /// with the snapshot's, in one transaction, and flushes.
    async fn install(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        // An older checkpoint landing after the snapshot would undo it.
        self.finish_checkpoint().await?;
        let what = || format!("snapshot {}", meta.snapshot_id);
        let snap = decode_snapshot(&data, meta)?;

        let mut services = Vec::new();
        let mut hashes = HashMap::new();
        let mut digest = Digest::default();
        for (key, cfg) in &snap.desired.services {
            services.push((
                codec::service_key(key),
                encode(cfg, || format!("service {key}"))?,
            ));
        }
        for entry in snap.requests.iter() {
            services.push((
                codec::request_key(&entry.key),
                encode(entry, || format!("remembered request {:?}", entry.key))?,
            ));
        }
        if let Some(value) = owners_record(&snap.desired.vip_owners)? {
            services.push((OWNERS_RECORD.to_vec(), value));
        }
        for (record, value) in &services {
            let hash = record_hash(record, value);
            digest.add_hash(hash);
            hashes.insert(record.clone(), hash);
        }
        let state = state_batch(&snap.last_applied, &snap.last_membership, &digest)?;
        let meta_bytes = sled::IVec::from(encode(meta, what)?);
        let data_bytes = sled::IVec::from(codec::seal(&data));
        self.disk
            .write(&what(), move |t| {
                // Every record goes: computed inside, so that a redo after a
                // reopen removes exactly what is there then.
                let mut batch = sled::Batch::default();
                for key in t.services.iter().keys() {
                    batch.remove(key?);
                }
                for (key, value) in &services {
                    batch.insert(key.as_slice(), value.as_slice());
                }
                (&t.services, &t.state, &t.snapshot)
                    .transaction(|(s, m, sn)| {
                        s.apply_batch(&batch)?;
                        m.apply_batch(&state)?;
                        sn.insert(SNAPSHOT_META, meta_bytes.clone())?;
                        sn.insert(SNAPSHOT_DATA, data_bytes.clone())?;
                        Ok::<_, ConflictableTransactionError<Infallible>>(())
                    })
                    .map_err(transaction_error)
            })
            .await?;
        self.last_applied = snap.last_applied;
        self.last_membership = snap.last_membership;
        self.desired = Arc::new(snap.desired);
        let mut requests = snap.requests;
        requests.take_changed();
        *write(&self.requests) = requests;
        self.hashes = hashes;
        self.digest = digest;
        self.checkpointed();
        self.disk.flush().await?;
        self.publish();
        self.history.restart(self.applied_index());
        Ok(())
    }
}

/// What applying a run of entries did.
struct Applied {
    results: Vec<CommandResult>,
    /// The services to write at the next checkpoint.
    touched: BTreeSet<ServiceKey>,
    /// Each entry's index and the services it changed, for the history.
    history: Vec<(u64, Vec<ServiceChange>)>,
}

/// What a checkpoint writes, and the hashes it leaves.
struct Checkpoint {
    services: sled::Batch,
    state: sled::Batch,
    hashes: Vec<(Vec<u8>, Option<u64>)>,
    digest: Digest,
}

/// One record of the `services` tree.
pub(crate) enum Record {
    Service(Box<ServiceConfig>),
    Request(Remembered),
    Owners(VipOwners),
}

/// The owners record's value; `None` (no record) while there are none.
fn owners_record(owners: &VipOwners) -> Result<Option<Vec<u8>>, StoreError> {
    if owners.is_empty() {
        return Ok(None);
    }
    encode(owners, || "the l2 owners".into()).map(Some)
}

/// Decodes a record of the `services` tree, checking that it is stored
/// under its own key.
pub(crate) fn decode_record(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    let what = || format!("service record {key:02x?}");
    let misplaced = |holds: String| StoreError::Corrupt {
        what: what(),
        problem: format!("it holds {holds}"),
    };
    if key == OWNERS_RECORD {
        return Ok(Record::Owners(decode(value, what)?));
    }
    if key.first() == Some(&codec::REQUEST_RECORD) {
        let entry: Remembered = decode(value, what)?;
        if codec::request_key(&entry.key) != key {
            return Err(misplaced(format!("the remembered request {:?}", entry.key)));
        }
        return Ok(Record::Request(entry));
    }
    let cfg: ServiceConfig = decode(value, what)?;
    if codec::service_key(&cfg.service.key) != key {
        return Err(misplaced(format!("service {}", cfg.service.key)));
    }
    Ok(Record::Service(Box::new(cfg)))
}

/// A checkpoint's records and applied state, in one transaction.
fn write_records(
    t: &super::disk::Trees,
    services: &sled::Batch,
    state: &sled::Batch,
) -> sled::Result<()> {
    (&t.services, &t.state)
        .transaction(|(s, m)| {
            s.apply_batch(services)?;
            m.apply_batch(state)?;
            Ok::<_, ConflictableTransactionError<Infallible>>(())
        })
        .map_err(transaction_error)
}

/// Snapshot data checked against the metadata it travels with.
fn decode_snapshot(data: &[u8], meta: &SnapshotMeta) -> Result<SnapshotIn, StoreError> {
    let what = || format!("snapshot {}", meta.snapshot_id);
    let snap: SnapshotIn = codec::decode_json(data, what)?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(StoreError::Corrupt {
            what: what(),
            problem: format!(
                "format {} (this version reads {SNAPSHOT_FORMAT})",
                snap.format
            ),
        });
    }
    if snap.last_applied != meta.last_log_id || snap.last_membership != meta.last_membership {
        return Err(StoreError::Corrupt {
            what: what(),
            problem: "its data is not the state its metadata describes".into(),
        });
    }
    Ok(snap)
}

/// Checks the stored snapshot's data against its metadata (start-up check).
pub(crate) fn check_stored_snapshot(
    tree: &sled::Tree,
    meta: &SnapshotMeta,
) -> Result<(), StoreError> {
    let what = || format!("snapshot {}", meta.snapshot_id);
    let data = tree
        .get(SNAPSHOT_DATA)
        .map_err(StoreError::read("the current snapshot"))?
        .ok_or_else(|| StoreError::Corrupt {
            what: what(),
            problem: "its data is missing".into(),
        })?;
    decode_snapshot(unseal(&data, what)?, meta)?;
    codec::get::<u64>(tree, SNAPSHOT_SEQ)?;
    Ok(())
}

/// The `state` tree's records for this applied state.
fn state_batch(
    last_applied: &Option<LogId>,
    last_membership: &StoredMembership,
    digest: &Digest,
) -> Result<sled::Batch, StoreError> {
    let mut state = sled::Batch::default();
    state.insert(LAST_APPLIED, encode(last_applied, || LAST_APPLIED.into())?);
    state.insert(
        LAST_MEMBERSHIP,
        encode(last_membership, || LAST_MEMBERSHIP.into())?,
    );
    state.insert(DIGEST, encode(digest, || DIGEST.into())?);
    Ok(state)
}

/// The current snapshot stored in `tree`, if any.
fn current_snapshot(tree: &sled::Tree) -> Result<Option<Snapshot>, StoreError> {
    let Some(meta) = get::<SnapshotMeta>(tree, SNAPSHOT_META)? else {
        return Ok(None);
    };
    let what = || format!("snapshot {}", meta.snapshot_id);
    let data = tree
        .get(SNAPSHOT_DATA)
        .map_err(StoreError::read("the current snapshot"))?
        .ok_or_else(|| StoreError::Corrupt {
            what: what(),
            problem: "its data is missing".into(),
        })?;
    let data = unseal(&data, what)?.to_vec();
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(data)),
    }))
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
) -> impl FnOnce(StoreError) -> StorageError {
    let subject = ErrorSubject::Snapshot(meta.map(|m| m.signature()));
    move |e| e.into_storage(subject, verb)
}

impl SnapshotBuilder {
    /// The next snapshot sequence number of this store, persisted, so that
    /// snapshot ids stay unique across restarts. (Built one at a time.)
    async fn next_seq(&self) -> Result<u64, StoreError> {
        let old: Option<u64> = self.disk.read(|t| get(&t.snapshot, SNAPSHOT_SEQ))?;
        let seq = old.unwrap_or(0).wrapping_add(1);
        let bytes = sled::IVec::from(encode(&seq, || SNAPSHOT_SEQ.into())?);
        self.disk
            .write("the snapshot sequence number", move |t| {
                t.snapshot.insert(SNAPSHOT_SEQ, bytes.clone()).map(drop)
            })
            .await?;
        Ok(seq)
    }

    /// Serialises the frozen state and stores it as the current snapshot,
    /// unless a newer one (installed meanwhile) is already there.
    async fn build(&mut self) -> Result<Snapshot, StoreError> {
        if let Some(e) = self.checkpoint.take() {
            return Err(e);
        }
        let data = serde_json::to_vec(&SnapshotOut {
            format: SNAPSHOT_FORMAT,
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            desired: &self.desired,
            requests: &self.requests,
        })
        .map_err(|source| StoreError::Encode {
            what: "snapshot".into(),
            source,
        })?;
        let sealed = sled::IVec::from(codec::seal(&data));
        let seq = self.next_seq().await?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: match self.last_applied {
                Some(id) => format!("{}-{}-{seq}", id.leader_id, id.index),
                None => format!("none-{seq}"),
            },
        };
        let what = || format!("snapshot {}", meta.snapshot_id);
        let meta_bytes = sled::IVec::from(encode(&meta, what)?);
        let last_log_id = meta.last_log_id;
        self.disk
            .write(&what(), move |t| {
                t.snapshot
                    .transaction(|t| {
                        let newer_stored = match t.get(SNAPSHOT_META)? {
                            Some(bytes) => unseal(&bytes, String::new)
                                .ok()
                                .and_then(|json| serde_json::from_slice::<SnapshotMeta>(json).ok())
                                .is_some_and(|stored| stored.last_log_id > last_log_id),
                            None => false,
                        };
                        if !newer_stored {
                            t.insert(SNAPSHOT_META, meta_bytes.clone())?;
                            t.insert(SNAPSHOT_DATA, sealed.clone())?;
                        }
                        Ok::<_, ConflictableTransactionError<Infallible>>(())
                    })
                    .map_err(transaction_error)
            })
            .await?;
        self.disk.flush().await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build()
            .await
            .map_err(snapshot_error(None, ErrorVerb::Write))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let before = self.last_applied;
        let Applied {
            results,
            touched,
            history,
        } = self.apply_to_mirror(entries);
        if self.last_applied == before {
            return Ok(results);
        }
        self.dirty.extend(touched);
        if self.checkpoint_due() {
            // On failure the mirror is ahead of the disk; openraft stops the
            // node on any storage error, and a restart reloads from the disk.
            // (A failing disk is waited out, not an error.)
            let subject = match self.last_applied {
                Some(id) => ErrorSubject::Apply(id),
                None => ErrorSubject::StateMachine,
            };
            self.start_checkpoint()
                .map_err(|e| e.into_storage(subject, ErrorVerb::Write))?;
        }
        self.publish();
        // After publishing: a watch shows nothing that a read of this node
        // would not show yet.
        self.history.record(history);
        self.disk
            .observe(crate::metrics::stages::Stage::Apply, started.elapsed());
        Ok(results)
    }

    /// Checkpoints first: the snapshot's flush then persists a checkpoint at
    /// least as recent as the snapshot, so the entries openraft purges after
    /// it are never needed to rebuild the state at a restart.
    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            checkpoint: self.write_checkpoint().await.err(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            desired: self.desired.clone(),
            requests: read(&self.requests).clone(),
            disk: self.disk.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        tracing::info!(snapshot = %meta.snapshot_id, bytes = snapshot.get_ref().len(), "installing snapshot");
        self.install(meta, snapshot.into_inner())
            .await
            .map_err(snapshot_error(Some(meta), ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let snapshot = self.disk.read(|t| current_snapshot(&t.snapshot));
        if let Err(e @ StoreError::Corrupt { .. }) = &snapshot {
            self.disk.damaged(crate::errors::chain(e));
        }
        snapshot.map_err(snapshot_error(None, ErrorVerb::Read))
    }
}

impl Drop for StateMachineStore {
    /// A store stopped in order leaves nothing to re-apply (the shutdown's
    /// last flush persists this checkpoint).
    fn drop(&mut self) {
        let pending = self.writing.is_some();
        if pending || self.applied_index() != self.checkpoint.0 || !self.dirty.is_empty() {
            if let Err(e) = self.write_checkpoint_now() {
                tracing::warn!(error = %e, "writing the state machine checkpoint at shutdown failed; the log is re-applied at the next start");
            }
        }
    }
}
