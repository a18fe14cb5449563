//! What can go wrong in the store, naming the operation and the record.

use crate::raft::NodeId;
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use std::io;
use std::path::PathBuf;

/// A storage failure. Each variant names what was being done; the cause is
/// the `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to create the store directory {dir}")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to open the store in {dir}")]
    Open {
        dir: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "{} holds {dir}: one directory serves one node; stop that process, or give this \
         node a RAFT_VOL_DIR of its own",
        LockHolder::describe(holder.as_ref())
    )]
    Locked {
        dir: PathBuf,
        /// The process holding the lock, when the kernel says
        /// (`/proc/locks`).
        holder: Option<LockHolder>,
    },
    #[error("RAFT_VOL_DIR {dir} belongs to node {owner:?}, not to {node:?}: start it with RAFT_NODE_ID={owner}, or give {node} a directory of its own")]
    OtherNode {
        dir: PathBuf,
        owner: String,
        node: String,
    },
    #[error("failed to read or write {path}")]
    Witness {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the store is damaged: {0}")]
    Damaged(Damage),
    #[error("failed to start the store's flush thread")]
    SpawnFlusher(#[source] io::Error),
    #[error("failed to start the log purge thread")]
    SpawnPurger(#[source] io::Error),
    #[error("failed to read {what}")]
    Read {
        what: String,
        #[source]
        source: sled::Error,
    },
    #[error("failed to write {what}")]
    Write {
        what: String,
        #[source]
        source: sled::Error,
    },
    #[error("failed to flush {what} to disk")]
    Flush {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to encode {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to decode {what}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("corrupt {what}: {problem}")]
    Corrupt { what: String, problem: String },
}

/// The process that holds a file lock: its pid and command name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub name: String,
}

impl LockHolder {
    /// Who holds the `flock` on `file`, from `/proc/locks` (`ID: FLOCK
    /// ADVISORY WRITE PID MAJ:MIN:INODE START END`), which names the file
    /// by its device and inode; `None` when it cannot be told.
    pub fn of(file: &std::path::Path) -> Option<LockHolder> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(file).ok()?;
        let dev = meta.dev();
        // glibc's major()/minor() of a dev_t.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        let pid = locks.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "->" marks a waiter, which holds nothing.
            match fields.as_slice() {
                [_, "FLOCK", _, _, pid, file, ..] if *file == wanted => pid.parse().ok(),
                _ => None,
            }
        })?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|n| n.trim_end().to_string())
            .unwrap_or_else(|_| "?".to_string());
        Some(LockHolder { pid, name })
    }

    /// Who holds a lock, as the subject of a sentence.
    fn describe(holder: Option<&LockHolder>) -> String {
        match holder {
            Some(h) if h.pid == std::process::id() => {
                format!("this very process (pid {}, the store opened twice)", h.pid)
            }
            Some(h) if h.name == "ipvs-manager" => {
                format!("another ipvs-manager process (pid {})", h.pid)
            }
            Some(h) => format!("another process, {} (pid {}),", h.name, h.pid),
            None => "another process (another ipvs-manager with the same RAFT_VOL_DIR?)".into(),
        }
    }
}

/// A damaged file or record, found by a check: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{problem}", file.display(), if record.is_empty() { String::from(": ") } else { format!(": {record}: ") })]
pub struct Damage {
    pub file: PathBuf,
    /// The record (empty when the whole file is meant).
    pub record: String,
    pub problem: String,
}

impl StoreError {
    pub(crate) fn damaged(
        file: &std::path::Path,
        record: impl Into<String>,
        problem: impl Into<String>,
    ) -> StoreError {
        StoreError::Damaged(Damage {
            file: file.to_path_buf(),
            record: record.into(),
            problem: problem.into(),
        })
    }

    pub(crate) fn read(what: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Read { what, source }
    }

    pub(crate) fn write(what: impl Into<String>) -> impl FnOnce(sled::Error) -> StoreError {
        let what = what.into();
        move |source| StoreError::Write { what, source }
    }

    /// The openraft form, for the storage traits; the chain of causes is
    /// kept in the message.
    pub(crate) fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// A sled transaction whose closure never aborts; only storage can fail.
pub(crate) fn transaction_error(
    e: sled::transaction::TransactionError<std::convert::Infallible>,
) -> sled::Error {
    match e {
        sled::transaction::TransactionError::Storage(e) => e,
        sled::transaction::TransactionError::Abort(never) => match never {},
    }
}
