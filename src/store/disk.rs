//! The sled database behind one handle that outlives a failing disk, and the
//! one thread that makes writes durable.
//!
//! Every write goes through [`Disk::write`], which keeps it (a re-runnable
//! closure, in the journal) until a flush has made it durable. When a write
//! or a flush fails — the disk is full, or the device reports an I/O error —
//! sled refuses every later write (it keeps the first I/O error for good),
//! so the flush thread takes over: it reports the failure once, waits until
//! the directory accepts writes again, reopens the database, redoes the
//! journal on it and flushes. Writers and flush waiters just wait meanwhile:
//! openraft sees a slow disk, never an error, so its core neither stops nor
//! acknowledges anything that is not on disk; the node says why in its
//! readiness and recovers by itself when space returns.
//!
//! Flushing: sled 0.34's `flush_async` can deadlock when called
//! concurrently, and the blocking `flush` must not run on an async worker
//! thread, so every flush goes through the thread here. It takes every
//! request queued so far, flushes once, writes the witness (what is now
//! acknowledged, see `witness.rs`), then answers them all in arrival order:
//! concurrent appends share one flush (group commit), and a request is
//! answered only after a flush that began after it was queued.

use super::witness::{Acknowledged, Witness};
use super::StoreError;
use crate::metrics::stages::{Stage, WriteStages};
use crate::raft::TypeConfig;
use openraft::storage::LogFlushed;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};

/// Names of the sled trees; see `log.rs` and `state_machine.rs` for their keys.
const LOG_TREE: &str = "log";
const RAFT_TREE: &str = "raft";
const SERVICES_TREE: &str = "services";
const STATE_TREE: &str = "state";
const SNAPSHOT_TREE: &str = "snapshot";

/// How long opening waits for the directory lock that a database dropped a
/// moment ago may still hold.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The probe written before a reopen: enough room for sled's next segments.
const PROBE_BYTES: usize = 2 << 20;

/// Between two attempts to get the disk back, at most.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How often a disk that still fails is mentioned in the log again.
const REMINDER: Duration = Duration::from_secs(300);

/// The trees of the one database.
#[derive(Clone)]
pub(crate) struct Trees {
    pub(crate) log: sled::Tree,
    pub(crate) raft: sled::Tree,
    pub(crate) services: sled::Tree,
    pub(crate) state: sled::Tree,
    pub(crate) snapshot: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db) -> sled::Result<Trees> {
        Ok(Trees {
            log: db.open_tree(LOG_TREE)?,
            raft: db.open_tree(RAFT_TREE)?,
            services: db.open_tree(SERVICES_TREE)?,
            state: db.open_tree(STATE_TREE)?,
            snapshot: db.open_tree(SNAPSHOT_TREE)?,
        })
    }
}

pub(crate) struct Database {
    db: sled::Db,
    pub(crate) trees: Trees,
}

impl Database {
    /// Opens sled in `path`, waiting up to [`LOCK_WAIT`] for its lock.
    ///
    /// sled 0.34 writes its buffers on pool threads that keep the database
    /// (and so its file lock) alive for a moment after the last handle is
    /// dropped; reopening at once, as a restart, a recovery or a test does,
    /// would fail spuriously. A lock still held after the wait is a real
    /// conflict (two processes on one directory) and is reported.
    pub(crate) fn open(path: &Path) -> sled::Result<Database> {
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(path).open() {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                result => break result?,
            }
        };
        let trees = Trees::open(&db)?;
        Ok(Database { db, trees })
    }

    pub(crate) fn flush(&self) -> sled::Result<usize> {
        self.db.flush()
    }
}

/// Picks one tree of the database.
type TreeOf = fn(&Trees) -> &sled::Tree;

/// A write that can be run again on a reopened database.
type Redo = Arc<dyn Fn(&Trees) -> sled::Result<()> + Send + Sync>;

/// Writes not yet covered by a successful flush, in order.
#[derive(Default)]
struct Journal {
    next: u64,
    writes: VecDeque<(u64, Redo)>,
}

impl Journal {
    fn push(&mut self, redo: Redo) {
        self.writes.push_back((self.next, redo));
        self.next += 1;
    }

    /// The sequence number the next write gets: a flush that starts now
    /// covers every write below it.
    fn mark(&self) -> u64 {
        self.next
    }

    fn trim(&mut self, below: u64) {
        while self.writes.front().is_some_and(|(seq, _)| *seq < below) {
            self.writes.pop_front();
        }
    }
}

/// Whether the node can persist, as `/readyz`, the status and the metrics
/// report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskStatus {
    /// Set while writes fail: the error and since when.
    pub failing: Option<Failing>,
    /// Writes or flushes that failed since the start.
    pub write_failures: u64,
    /// Times the database was reopened after a failure.
    pub recoveries: u64,
    /// A damaged record found while running (a checksum that did not
    /// match): the node stops, and its start-up check decides.
    pub damaged: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failing {
    /// What could not be written, and the disk's error.
    pub error: String,
    /// Unix time in milliseconds of the first failure.
    pub since_ms: u64,
}

enum Request {
    /// Appended log entries: tell openraft they are persisted.
    Log(LogFlushed<TypeConfig>),
    /// Anything else (vote, truncation, snapshot): wake the caller.
    Wait(oneshot::Sender<()>),
    /// A write failed: reopen the database once the disk takes writes.
    Recover,
}

struct Shared {
    /// The data directory (RAFT_VOL_DIR) and sled's directory inside it.
    dir: PathBuf,
    sled_dir: PathBuf,
    /// `None` only while a reopen after a failure is under way and failed.
    db: RwLock<Option<Database>>,
    journal: Mutex<Journal>,
    /// What the next witness will say; updated by the log store after each
    /// write it describes (so it never names something not written).
    acked: Mutex<Acknowledged>,
    status: watch::Sender<DiskStatus>,
    /// Bumped by every reopen (and every recovery request answered), which
    /// is what a writer whose write failed waits for.
    generation: watch::Sender<u64>,
    /// Where the flushes' and applies' times go, once the node gives it.
    stages: std::sync::OnceLock<WriteStages>,
    #[cfg(test)]
    full: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The flush thread; it ends, and is joined, when the last [`Disk`] handle
/// is dropped.
struct FlushThread {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FlushThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread after it answers what is queued.
        lock(&self.tx).take();
        if let Some(thread) = lock(&self.thread).take() {
            if thread.join().is_err() {
                tracing::error!("the store's flush thread panicked");
            }
        }
    }
}

/// The database and its flush thread; clones share them.
#[derive(Clone)]
pub(crate) struct Disk {
    shared: Arc<Shared>,
    flusher: Arc<FlushThread>,
}

impl Disk {
    /// Takes over an open database; `witness` is written after every flush,
    /// starting from `acked`.
    pub(crate) fn start(
        dir: &Path,
        sled_dir: &Path,
        db: Database,
        witness: Witness,
        acked: Acknowledged,
    ) -> Result<Disk, StoreError> {
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            sled_dir: sled_dir.to_path_buf(),
            db: RwLock::new(Some(db)),
            journal: Mutex::default(),
            acked: Mutex::new(acked),
            status: watch::Sender::new(DiskStatus::default()),
            generation: watch::Sender::new(0),
            stages: std::sync::OnceLock::new(),
            #[cfg(test)]
            full: Default::default(),
        });
        let (tx, rx) = mpsc::channel();
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || run(&shared, &rx, witness))
                .map_err(StoreError::SpawnFlusher)?
        };
        Ok(Disk {
            shared,
            flusher: Arc::new(FlushThread {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Runs `f` on the trees. Reads never fail because of a failing disk:
    /// sled serves them from its cache and its files.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Trees) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut f = Some(f);
        loop {
            {
                let guard = self
                    .shared
                    .db
                    .read()
                    .unwrap_or_else(PoisonError::into_inner);
                if let (Some(db), Some(f)) = (guard.as_ref(), f.take()) {
                    return f(&db.trees);
                }
            }
            // A reopen is under way; it puts a database back in moments.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes through `op`; once it returns, the write is readable and will
    /// be durable after the next flush. While the disk fails, waits until it
    /// is back (the failure is reported in [`DiskStatus`]). Other errors
    /// (sled's own) are returned.
    pub(crate) async fn write(
        &self,
        what: &str,
        op: impl Fn(&Trees) -> sled::Result<()> + Send + Sync + 'static,
    ) -> Result<(), StoreError> {
        let op: Redo = Arc::new(op);
        loop {
            let generation = *self.shared.generation.borrow();
            match self.try_write(&op) {
                Ok(()) => return Ok(()),
                Err(sled::Error::Io(e)) => {
                    self.shared.failed(what, &e);
                    self.send(Request::Recover)?;
                    let mut rx = self.shared.generation.subscribe();
                    let _ = rx.wait_for(|g| *g > generation).await;
                    // A write that fails again does not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) => {
                    return Err(StoreError::Write {
                        what: what.to_string(),
                        source,
                    })
                }
            }
        }
    }

    /// [`Disk::write`] for callers that cannot wait (a drop, the purge
    /// thread): one attempt; on an I/O error the recovery is started and
    /// the error returned.
    pub(crate) fn write_now(
        &self,
        what: &str,
        op: impl Fn(&Trees) -> sled::Result<()> + Send + Sync + 'static,
    ) -> Result<(), StoreError> {
        let op: Redo = Arc::new(op);
        self.try_write(&op).map_err(|source| {
            if let sled::Error::Io(e) = &source {
                self.shared.failed(what, e);
                let _ = self.send(Request::Recover);
            }
            StoreError::Write {
                what: what.to_string(),
                source,
            }
        })
    }

    /// Runs `op` and journals it, both under the read lock: a reopen (which
    /// takes the write lock) then either redoes it or runs after it.
    fn try_write(&self, op: &Redo) -> sled::Result<()> {
        let guard = loop {
            let guard = self
                .shared
                .db
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if guard.is_some() {
                break guard;
            }
            drop(guard);
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(db) = guard.as_ref() else {
            return Err(sled::Error::ReportableBug("no database".into()));
        };
        self.shared.injected()?;
        op(&db.trees)?;
        lock(&self.shared.journal).push(op.clone());
        Ok(())
    }

    /// Updates what the next witness says (after the write it describes).
    pub(crate) fn acknowledge(&self, update: impl FnOnce(&mut Acknowledged)) {
        update(&mut lock(&self.shared.acked));
    }

    /// Reports `callback` to openraft once everything written so far is on
    /// disk (and in the witness).
    pub(crate) fn log_flushed(&self, callback: LogFlushed<TypeConfig>) -> Result<(), StoreError> {
        self.send(Request::Log(callback))
    }

    /// Records the times of this store's flushes and applies in `stages`
    /// from now on (the first call counts).
    pub(crate) fn record_stages(&self, stages: WriteStages) {
        let _ = self.shared.stages.set(stages);
    }

    /// Records one pass through `stage`, when stages are recorded.
    pub(crate) fn observe(&self, stage: Stage, took: Duration) {
        self.shared.observe(stage, took);
    }

    /// Returns once everything written so far is on disk.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Wait(tx))?;
        rx.await.map_err(|_| StoreError::Flush {
            what: "writes".into(),
            source: gone(),
        })
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        lock(&self.flusher.tx)
            .as_ref()
            .and_then(|tx| tx.send(request).ok())
            .ok_or_else(|| StoreError::Flush {
                what: "writes".into(),
                source: gone(),
            })
    }

    /// Whether the disk takes writes, as of now.
    pub(crate) fn status(&self) -> watch::Receiver<DiskStatus> {
        self.shared.status.subscribe()
    }

    /// Records a damaged record found while running.
    pub(crate) fn damaged(&self, what: String) {
        self.shared.status.send_modify(|s| {
            if s.damaged.is_none() {
                tracing::error!(damage = %what, "the store is damaged; this node stops");
                s.damaged = Some(what);
            }
        });
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Checks the checksums of every record, a batch at a time, on a
    /// blocking thread; a bad one is reported as damage. Ends at the first
    /// damage found.
    pub(crate) async fn scrub(&self) -> Result<(), StoreError> {
        let trees: [(&'static str, TreeOf); 5] = [
            (LOG_TREE, |t| &t.log),
            (RAFT_TREE, |t| &t.raft),
            (SERVICES_TREE, |t| &t.services),
            (STATE_TREE, |t| &t.state),
            (SNAPSHOT_TREE, |t| &t.snapshot),
        ];
        for (name, tree) in trees {
            let mut after: Option<Vec<u8>> = None;
            loop {
                let disk = self.clone();
                let from = after.take();
                let step = tokio::task::spawn_blocking(move || {
                    disk.read(|t| super::verify::scrub(tree(t), name, from.as_deref()))
                })
                .await
                .map_err(|e| StoreError::Corrupt {
                    what: format!("the scrub of the {name} tree"),
                    problem: e.to_string(),
                })?;
                match step {
                    Ok(Some(last)) => after = Some(last),
                    Ok(None) => break,
                    Err(e @ StoreError::Corrupt { .. }) => {
                        self.damaged(format!(
                            "{}: {}",
                            self.dir().display(),
                            crate::errors::chain(&e)
                        ));
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                }
                // Others get the disk between batches.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::other("the store's flush thread has stopped")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    /// Notes a failed write: reported (and logged) once per outage.
    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.status.send_modify(|s| {
            s.write_failures += 1;
            if s.failing.is_none() {
                let error = format!("cannot write {what} under {}: {error}", self.dir.display());
                tracing::error!(
                    %error,
                    "the disk does not take writes: this node stops acknowledging appends and \
                     votes until it does, and recovers by itself then"
                );
                s.failing = Some(Failing {
                    error,
                    since_ms: unix_ms(SystemTime::now()),
                });
            }
        });
    }

    fn flush_and_witness(&self, witness: &mut Witness) -> io::Result<()> {
        let acked = lock(&self.acked).clone();
        let started = Instant::now();
        {
            let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = guard.as_ref() else {
                return Err(io::Error::other("the database is being reopened"));
            };
            self.injected()?;
            db.db.flush().map_err(io_error)?;
        }
        let flushed = Instant::now();
        write_witness(witness, &acked)?;
        self.observe(Stage::Flush, flushed - started);
        self.observe(Stage::Witness, flushed.elapsed());
        Ok(())
    }

    /// Records one pass through `stage`, when stages are recorded.
    fn observe(&self, stage: Stage, took: Duration) {
        if let Some(stages) = self.stages.get() {
            stages.observe(stage, took);
        }
    }

    /// Writes a file of [`PROBE_BYTES`] and syncs it: whether the directory
    /// has room and takes writes again.
    fn probe(&self) -> io::Result<()> {
        self.injected()?;
        let path = self.dir.join(".disk-probe");
        let result = (|| {
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&vec![0u8; PROBE_BYTES])?;
            file.sync_data()
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// Reopens the database and redoes the journal on it, then flushes and
    /// writes the witness. The old database is dropped first (sled refuses
    /// writes for good after an I/O error); if the new one cannot be opened
    /// there is none until the next attempt.
    fn reopen(&self, witness: &mut Witness) -> io::Result<usize> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        slot.take();
        let db = Database::open(&self.sled_dir).map_err(io_error)?;
        let journal = lock(&self.journal);
        let redo = (|| {
            for (_, write) in &journal.writes {
                write(&db.trees)?;
            }
            db.db.flush().map(drop)
        })();
        // Readable even if the redo failed: reads go on while we retry.
        *slot = Some(db);
        redo.map_err(io_error)?;
        let n = journal.writes.len();
        drop(journal);
        drop(slot);
        write_witness(witness, &lock(&self.acked).clone())?;
        Ok(n)
    }

    /// Until the disk is back: probe, reopen, redo, flush. Then clears the
    /// journal, and reports and logs the recovery.
    fn recover(&self, witness: &mut Witness, cause: &io::Error) {
        self.failed("the store", cause);
        let started = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut last_error = cause.to_string();
        let mut reminded = Instant::now();
        loop {
            let attempt = self.probe().and_then(|()| self.reopen(witness));
            match attempt {
                Ok(redone) => {
                    let mut journal = lock(&self.journal);
                    let mark = journal.mark();
                    journal.trim(mark);
                    drop(journal);
                    self.status.send_modify(|s| {
                        s.failing = None;
                        s.recoveries += 1;
                    });
                    self.generation.send_modify(|g| *g += 1);
                    tracing::info!(
                        after_s = started.elapsed().as_secs_f64(),
                        redone,
                        "the disk takes writes again; the store is reopened and this node \
                         acknowledges again"
                    );
                    return;
                }
                Err(e) => {
                    let error = e.to_string();
                    if error != last_error || reminded.elapsed() >= REMINDER {
                        tracing::warn!(
                            %error,
                            failing_s = started.elapsed().as_secs(),
                            "the disk still does not take writes"
                        );
                        last_error = error;
                        reminded = Instant::now();
                    }
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

fn run(shared: &Shared, rx: &mpsc::Receiver<Request>, mut witness: Witness) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mark = lock(&shared.journal).mark();
        match shared.flush_and_witness(&mut witness) {
            Ok(()) => lock(&shared.journal).trim(mark),
            Err(e) => shared.recover(&mut witness, &e),
        }
        let mut recovery_asked = false;
        for request in batch {
            match request {
                Request::Log(callback) => callback.log_io_completed(Ok(())),
                Request::Wait(tx) => {
                    // The waiter may have given up; nothing to tell then.
                    let _ = tx.send(());
                }
                Request::Recover => recovery_asked = true,
            }
        }
        if recovery_asked {
            // A writer saw an error this flush did not: whatever it was, its
            // retry runs after this point.
            shared.generation.send_modify(|g| *g += 1);
        }
    }
}

/// Writes the witness; an error names its file.
fn write_witness(witness: &mut Witness, acked: &Acknowledged) -> io::Result<()> {
    witness
        .write(acked)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", witness.file().display())))
}

fn io_error(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Shared {
    /// A failure the tests inject: every write, flush and probe fails as
    /// on a full disk while it is set (the real thing is tested on a small
    /// tmpfs by tests/faults.rs).
    fn injected(&self) -> io::Result<()> {
        #[cfg(test)]
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

#[cfg(test)]
impl Disk {
    /// The trees, for tests that write records behind the store's back.
    pub(crate) fn trees(&self) -> Trees {
        let guard = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .map(|db| db.trees.clone())
            .expect("an open database")
    }

    pub(crate) fn inject_full(&self, on: bool) {
        self.shared
            .full
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}
