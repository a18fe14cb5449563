//! Persistent Raft storage: the log, the vote, the state machine and its
//! snapshots, in one sled database under the node's data directory
//! (`RAFT_VOL_DIR`), implementing openraft's storage-v2 traits.
//!
//! [`open`] gives the two halves openraft takes: [`LogStore`] (log and vote,
//! see [`log`]) and [`StateMachineStore`] (typed service records, snapshots,
//! see [`state_machine`]). The state machine publishes every committed
//! state on a watch channel ([`StateWatch`]), which is how the rest of the
//! process reads the desired configuration without talking to Raft.
//!
//! Reopening a directory resumes exactly where it stopped: same log, vote,
//! committed id, applied state and snapshot.

mod codec;
mod error;
mod flush;
pub mod log;
pub mod state_machine;
#[cfg(test)]
mod tests;

pub use error::StoreError;
pub use log::{LogReader, LogStore};
pub use state_machine::{Committed, SnapshotBuilder, StateMachineStore, StateWatch};

use flush::Flusher;
use state_machine::Trees;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sled database's directory inside the data directory.
const DB_DIR: &str = "sled";

/// Names of the sled trees; see [`log`] and [`state_machine`] for their keys.
const LOG_TREE: &str = "log";
const RAFT_TREE: &str = "raft";
const SERVICES_TREE: &str = "services";
const STATE_TREE: &str = "state";
const SNAPSHOT_TREE: &str = "snapshot";

/// How long [`open`] waits for the directory lock that a store dropped a
/// moment ago may still hold.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens the sled database, waiting up to [`LOCK_WAIT`] for its lock.
///
/// sled 0.34 writes its buffers on pool threads that keep the database (and
/// so its file lock) alive for a moment after the last handle is dropped;
/// reopening at once, as a restart or a test does, would fail spuriously.
/// A lock still held after the wait is a real conflict (two processes on one
/// directory) and is reported.
fn open_db(path: &Path) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Err(sled::Error::Io(e))
                if e.to_string().starts_with("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Flushes the whole database. Applied state is written unflushed (openraft
/// re-applies from the flushed log after a crash); a clean shutdown flushes
/// it too, so that the next start has nothing to re-apply.
pub struct FlushHandle(Arc<Flusher>);

impl FlushHandle {
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush("the state at shutdown").await
    }
}

/// Opens (creating if needed) the store in `dir` and loads the state machine.
///
/// The directory is locked while either half (or a [`LogReader`]) is alive;
/// a second process opening it gets [`StoreError::Open`].
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(DB_DIR);
    let open_error = |source| StoreError::Open {
        dir: path.clone(),
        source,
    };
    let db = open_db(&path).map_err(open_error)?;
    let tree = |name: &str| db.open_tree(name).map_err(open_error);
    let (log, raft) = (tree(LOG_TREE)?, tree(RAFT_TREE)?);
    let trees = Trees {
        services: tree(SERVICES_TREE)?,
        state: tree(STATE_TREE)?,
        snapshot: tree(SNAPSHOT_TREE)?,
    };
    let flusher = Arc::new(Flusher::start(db)?);
    let state_machine = StateMachineStore::load(trees, flusher.clone())?;
    Ok((LogStore::new(log, raft, flusher)?, state_machine))
}
