//! Persistent Raft storage: the log, the vote, the state machine and its
//! snapshots, in one sled database under the node's data directory
//! (`RAFT_VOL_DIR`), implementing openraft's storage-v2 traits, with a
//! witness file beside it.
//!
//! [`open`] gives the two halves openraft takes: [`LogStore`] (log and vote,
//! see [`log`]) and [`StateMachineStore`] (typed service records, snapshots,
//! see [`state_machine`]). The state machine publishes every committed
//! state on a watch channel ([`StateWatch`]), which is how the rest of the
//! process reads the desired configuration without talking to Raft.
//!
//! Trust in the disk is earned, not assumed: every value is sealed with a
//! checksum (`codec`), the witness (`witness`) records what the node
//! acknowledged, and [`open`] checks all of it (`verify`) before Raft may
//! use the store: a damaged store is refused with the file and the record
//! named, never half-used. A disk that stops taking writes is waited out and
//! recovered from in place (`disk`). Reopening a directory resumes exactly
//! where it stopped: same log, vote, committed id, applied state and
//! snapshot.

mod codec;
mod disk;
mod error;
pub mod history;
pub mod log;
pub mod state_machine;
#[cfg(test)]
mod tests;
mod verify;
mod witness;

pub use disk::{DiskStatus, Failing};
pub use error::{Damage, LockHolder, StoreError};
pub use history::{Compacted, Revision, ServiceChange, SharedHistory};
pub use log::{LogReader, LogStore};
pub use state_machine::{Committed, SnapshotBuilder, StateMachineStore, StateWatch};
pub use verify::Checked;

use crate::raft::typ::{LogId, Vote};
use disk::{Database, Disk, Trees};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use witness::{Acknowledged, Witness};

/// The sled database's directory inside the data directory.
const DB_DIR: &str = "sled";

/// Key of the `raft` tree naming the layout of every record.
pub(crate) const FORMAT: &str = "store_format";
/// This layout: sealed records, the witness, the records' digest. (1: the
/// JSON records of earlier versions, migrated on open.)
const STORE_FORMAT: u32 = 2;

/// Flushes the whole database. Applied state is written unflushed (openraft
/// re-applies from the flushed log after a crash); a clean shutdown flushes
/// it too, so that the next start has nothing to re-apply.
pub struct FlushHandle(Disk);

impl FlushHandle {
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.0.flush().await
    }
}

/// Checks every record's checksum while the node runs (sled's reads as it
/// serves them), reporting damage in [`DiskStatus::damaged`].
pub struct Scrubber(Disk);

impl Scrubber {
    /// One pass over every record; `Err` names the damaged one (also
    /// reported in the status), or why the pass could not run.
    pub async fn pass(&self) -> Result<(), StoreError> {
        self.0.scrub().await
    }
}

/// Free bytes (for an unprivileged process) on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Where the files of a data directory are, for messages and for moving a
/// damaged state aside.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    vec![dir.join(DB_DIR), Witness::path(dir)]
}

/// Opens (creating if needed) the store in `dir` for the node named `node`,
/// checks it, and loads the state machine.
///
/// The directory is locked while either half (or a [`LogReader`]) is alive;
/// a second process opening it gets [`StoreError::Locked`]. A directory of
/// another node is [`StoreError::OtherNode`]; a store that fails its check
/// is [`StoreError::Damaged`], naming the file and the record.
pub fn open(dir: &Path, node: &str) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let sled_dir = dir.join(DB_DIR);
    let had_sled = sled_dir.join("db").exists();
    let witness = if Witness::path(dir).exists() {
        Some(Witness::open(dir, node)?)
    } else {
        None
    };
    let db = quietly(&sled_dir, || {
        Database::open(&sled_dir).map_err(|source| match &source {
            sled::Error::Io(e) if e.to_string().starts_with("could not acquire lock") => {
                StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder: LockHolder::of(&sled_dir.join("db")),
                }
            }
            // The device's own I/O errors (permissions, EIO) are not the
            // files' content; everything else sled refuses is.
            sled::Error::Io(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                StoreError::Open {
                    dir: sled_dir.clone(),
                    source,
                }
            }
            _ => StoreError::damaged(&sled_dir, "", format!("sled cannot read it: {source}")),
        })
    })?;
    let (witness, acked) = quietly(&sled_dir, || prepare(dir, node, &db, witness, had_sled))?;
    let checked = quietly(&sled_dir, || verify::check(&db.trees, &acked, &sled_dir))?;
    let vote: Option<Vote> =
        codec::get(&db.trees.raft, log::VOTE).map_err(|e| unreadable(&sled_dir, e))?;
    tracing::debug!(
        entries = checked.entries,
        services = checked.services,
        "the store passed its check"
    );
    // The check proved the store holds at least what the witness said; from
    // now on the witness says what the store holds.
    let acked = Acknowledged {
        last_log: checked.last_log,
        vote,
    };
    let disk = Disk::start(dir, &sled_dir, db, witness, acked)?;
    let state_machine = quietly(&sled_dir, || StateMachineStore::load(disk.clone()))?;
    let log = quietly(&sled_dir, || LogStore::new(disk))?;
    Ok((log, state_machine))
}

/// Brings the database to [`STORE_FORMAT`] and returns its witness: a new
/// store gets its format record and a new witness; a store of format 1 is
/// migrated (every value sealed, the digest written) after a witness naming
/// its current state is created. A store of this format without its
/// witness, or a witness without its store, is damage: what the node
/// acknowledged can no longer be checked.
fn prepare(
    dir: &Path,
    node: &str,
    db: &Database,
    witness: Option<(Witness, Acknowledged)>,
    had_sled: bool,
) -> Result<(Witness, Acknowledged), StoreError> {
    let t = &db.trees;
    let raw_format = t.raft.get(FORMAT).map_err(StoreError::read(FORMAT))?;
    let format: Option<u32> = match &raw_format {
        Some(bytes) => Some(codec::decode(bytes, || FORMAT.to_string()).map_err(|e| {
            StoreError::damaged(&dir.join(DB_DIR), FORMAT, crate::errors::chain(&e))
        })?),
        None => None,
    };
    let empty = [&t.log, &t.raft, &t.services, &t.state, &t.snapshot]
        .iter()
        .all(|tree| tree.is_empty());
    match (format, witness) {
        (Some(STORE_FORMAT), Some(w)) => Ok(w),
        (Some(STORE_FORMAT), None) => Err(StoreError::damaged(
            &Witness::path(dir),
            "",
            "missing, while the store beside it has state: what this node acknowledged cannot be checked",
        )),
        (Some(other), _) => Err(StoreError::damaged(
            &dir.join(DB_DIR),
            FORMAT,
            format!("format {other}, which this version ({STORE_FORMAT}) does not read: a newer ipvs-manager wrote it"),
        )),
        (None, Some((_, acked))) if empty && acked != Acknowledged::default() => {
            Err(StoreError::damaged(
                &dir.join(DB_DIR),
                "",
                format!(
                    "{}, but this node acknowledged the log up to {}",
                    if had_sled { "empty" } else { "missing" },
                    acked.last_log.map_or("its start".into(), |l| l.to_string())
                ),
            ))
        }
        (None, witness) if empty => {
            let witness = match witness {
                Some(w) => w,
                None => (Witness::create(dir, node)?, Acknowledged::default()),
            };
            set_format(db)?;
            Ok(witness)
        }
        (None, witness) => {
            let witness = match witness {
                Some(w) => w,
                None => (Witness::create(dir, node)?, legacy_acknowledged(t)?),
            };
            migrate(db)?;
            tracing::info!(dir = %dir.display(), "migrated the store to format {STORE_FORMAT} (checksummed records)");
            Ok(witness)
        }
    }
}

fn set_format(db: &Database) -> Result<(), StoreError> {
    let bytes = codec::encode(&STORE_FORMAT, || FORMAT.into())?;
    db.trees
        .raft
        .insert(FORMAT, bytes)
        .map_err(StoreError::write(FORMAT))?;
    db.flush()
        .map(drop)
        .map_err(StoreError::write("the store format"))
}

/// What a store of format 1 holds, read as it was written (plain JSON).
fn legacy_acknowledged(t: &Trees) -> Result<Acknowledged, StoreError> {
    let raw = |tree: &sled::Tree, key: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(tree
            .get(key)
            .map_err(StoreError::read(key.to_string()))?
            .map(|v| payload(&v).to_vec()))
    };
    let vote: Option<Vote> = match raw(&t.raft, log::VOTE)? {
        Some(json) => Some(codec::decode_json(&json, || "the vote".into())?),
        None => None,
    };
    let last_purged: Option<LogId> = match raw(&t.raft, log::LAST_PURGED)? {
        Some(json) => Some(codec::decode_json(&json, || "the purge marker".into())?),
        None => None,
    };
    let last_entry = match t
        .log
        .last()
        .map_err(StoreError::read("the last log entry"))?
    {
        Some((_, v)) => {
            let entry: crate::raft::typ::Entry =
                codec::decode_json(payload(&v), || "the last log entry".into())?;
            Some(entry.log_id)
        }
        None => None,
    };
    Ok(Acknowledged {
        last_log: last_entry.max(last_purged),
        vote,
    })
}

/// A value's JSON, whether sealed already (a migration that stopped half
/// way) or not.
fn payload(value: &[u8]) -> &[u8] {
    match value.first() {
        Some(&codec::SEALED_V1) if value.len() >= 5 => &value[5..],
        _ => value,
    }
}

/// Seals every value of a format-1 store and writes the service digest and
/// the format record; a crash half way leaves a store this runs on again.
fn migrate(db: &Database) -> Result<(), StoreError> {
    let t = &db.trees;
    for (name, tree) in [
        ("log", &t.log),
        ("raft", &t.raft),
        ("services", &t.services),
        ("state", &t.state),
        ("snapshot", &t.snapshot),
    ] {
        let mut batch = sled::Batch::default();
        for item in tree.iter() {
            let (key, value) = item.map_err(StoreError::read(format!("the {name} tree")))?;
            if value.first() == Some(&codec::SEALED_V1) {
                continue;
            }
            let json = if name == "snapshot" && &*key == state_machine::SNAPSHOT_SEQ.as_bytes() {
                // Format 1 kept the counter as 8 bytes, big-endian.
                let seq = <[u8; 8]>::try_from(value.as_ref()).map_or(0, u64::from_be_bytes);
                serde_json::to_vec(&seq).map_err(|source| StoreError::Encode {
                    what: "the snapshot sequence number".into(),
                    source,
                })?
            } else {
                value.to_vec()
            };
            batch.insert(key, codec::seal(&json));
        }
        tree.apply_batch(batch)
            .map_err(StoreError::write(format!("the {name} tree")))?;
    }
    let mut digest = state_machine::Digest::default();
    for item in t.services.iter() {
        let (key, value) = item.map_err(StoreError::read("service records"))?;
        digest.add(&key, &value);
    }
    let bytes = codec::encode(&digest, || state_machine::DIGEST.into())?;
    t.state
        .insert(state_machine::DIGEST, bytes)
        .map_err(StoreError::write(state_machine::DIGEST))?;
    set_format(db)
}

thread_local! {
    /// Set while [`quietly`] runs on this thread.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside [`quietly`]: the binary's panic hook
/// stays silent then, since the panic becomes an error that names the file.
pub fn panics_are_reported_as_errors() -> bool {
    QUIET.with(Cell::get)
}

/// A read that sled refused for a reason other than the device's I/O (it
/// found corruption) is damage of its files.
fn unreadable(sled_dir: &Path, e: StoreError) -> StoreError {
    match e {
        StoreError::Read { what, source } if !matches!(source, sled::Error::Io(_)) => {
            StoreError::damaged(sled_dir, what, format!("sled cannot read it: {source}"))
        }
        other => other,
    }
}

/// Runs `f`, turning a panic inside sled (which it does on some damaged
/// files) into damage of `file`, named, instead of a crash.
fn quietly<T>(file: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let before = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(before));
    result
        .map(|r| r.map_err(|e| unreadable(file, e)))
        .unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            Err(StoreError::damaged(
                file,
                "",
                format!("sled failed reading it: {message}"),
            ))
        })
}
