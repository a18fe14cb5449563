//! The witness: what this node has acknowledged, kept beside sled and
//! written after every flush, so that a store that lost what it once
//! acknowledged is found out instead of trusted.
//!
//! Raft's safety rests on a node never forgetting a log entry it
//! acknowledged or a vote it cast. sled, given one damaged byte, can come
//! back without an error and without the tail of its log (it stops reading
//! its segments at the first bad checksum). A node that then resumed would
//! vote, or lead, with a shorter log and overwrite entries a quorum counted
//! on. The witness names the last log id and the vote as of the last flush;
//! at start-up the log must reach that id and the vote be at least that vote
//! (`store::verify`).
//!
//! The file holds two fixed-size slots, written alternately with `pwrite`
//! and `fdatasync`; each carries a sequence number and a CRC-32. A write torn
//! by a crash spoils one slot and leaves the other, older one, which is
//! still right: the flush thread tells openraft an append is persisted only
//! after the witness that covers it is on disk. The slot also names the node
//! the directory belongs to.

use super::codec::{decode_json, SEALED_V1};
use super::StoreError;
use crate::raft::typ::{LogId, Vote};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// File name inside the data directory.
pub(crate) const FILE: &str = "acknowledged";

/// Bytes per slot: one page, so that a torn write spoils one slot only.
const SLOT: usize = 4096;

const MAGIC: &[u8; 8] = b"IPVSMACK";

/// What the node has acknowledged to the cluster: every log entry up to
/// `last_log` and the vote `vote` are on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub last_log: Option<LogId>,
    pub vote: Option<Vote>,
}

/// The content of one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    seq: u64,
    /// RAFT_NODE_ID of the node whose directory this is.
    node: String,
    acked: Acknowledged,
}

/// The open witness file, written by the flush thread only.
pub(crate) struct Witness {
    file: File,
    path: PathBuf,
    node: String,
    seq: u64,
    /// What the newest slot says: a flush that changes neither the log's
    /// end nor the vote (a checkpoint's, a snapshot's) writes nothing.
    current: Option<Acknowledged>,
}

impl Witness {
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Creates the witness of a new data directory: both slots, then the
    /// file and the directory entry synced, before sled holds anything.
    pub(crate) fn create(dir: &Path, node: &str) -> Result<Witness, StoreError> {
        let path = Witness::path(dir);
        let io_error = |source| StoreError::Witness {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error)?;
        let mut witness = Witness {
            file,
            path: path.clone(),
            node: node.to_string(),
            seq: 0,
            current: None,
        };
        // Both slots hold a valid empty state: the file never has a slot
        // that was not written on purpose.
        for _ in 0..2 {
            witness.current = None;
            witness.write(&Acknowledged::default()).map_err(io_error)?;
        }
        std::fs::rename(&tmp, &path).map_err(io_error)?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
        Ok(witness)
    }

    /// Opens the witness of an existing directory and reads what it says.
    /// A directory of another node, or a file with no valid slot, is an
    /// error naming the file.
    pub(crate) fn open(dir: &Path, node: &str) -> Result<(Witness, Acknowledged), StoreError> {
        let path = Witness::path(dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Witness {
                path: path.clone(),
                source,
            })?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &file, &mut bytes).map_err(|source| StoreError::Witness {
            path: path.clone(),
            source,
        })?;
        let slot = read_slots(&bytes).map_err(|problem| StoreError::damaged(&path, "", problem))?;
        if slot.node != node {
            return Err(StoreError::OtherNode {
                dir: dir.to_path_buf(),
                owner: slot.node,
                node: node.to_string(),
            });
        }
        let witness = Witness {
            file,
            path,
            node: slot.node,
            seq: slot.seq,
            current: Some(slot.acked.clone()),
        };
        Ok((witness, slot.acked))
    }

    pub(crate) fn file(&self) -> &Path {
        &self.path
    }

    /// Records `acked`, durably, in the older slot.
    pub(crate) fn write(&mut self, acked: &Acknowledged) -> io::Result<()> {
        if self.current.as_ref() == Some(acked) {
            return Ok(());
        }
        let seq = self.seq + 1;
        let slot = encode_slot(&Slot {
            seq,
            node: self.node.clone(),
            acked: acked.clone(),
        })?;
        self.file.write_all_at(&slot, (seq % 2) * SLOT as u64)?;
        self.file.sync_data()?;
        self.seq = seq;
        self.current = Some(acked.clone());
        Ok(())
    }
}

/// A slot's bytes: magic, format byte, CRC-32 of the JSON, its length (u32
/// LE), the JSON; zero-padded to [`SLOT`].
fn encode_slot(slot: &Slot) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(slot).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(SLOT);
    out.extend_from_slice(MAGIC);
    out.push(SEALED_V1);
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    if out.len() > SLOT {
        return Err(io::Error::other(format!(
            "the witness slot needs {} bytes, more than {SLOT} (RAFT_NODE_ID too long?)",
            out.len()
        )));
    }
    out.resize(SLOT, 0);
    Ok(out)
}

fn decode_slot(bytes: &[u8]) -> Result<Slot, String> {
    let header = MAGIC.len() + 9;
    if bytes.len() < header {
        return Err(format!("{} bytes, shorter than a slot header", bytes.len()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a witness slot (bad magic)".into());
    }
    let rest = &bytes[MAGIC.len()..];
    if rest[0] != SEALED_V1 {
        return Err(format!("unknown slot format {:#04x}", rest[0]));
    }
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    let (crc, len) = (word(1), word(5) as usize);
    let json = rest
        .get(9..9 + len)
        .ok_or_else(|| format!("its length {len} runs past the slot"))?;
    let computed = crc32fast::hash(json);
    if computed != crc {
        return Err(format!(
            "checksum mismatch (stored {crc:08x}, computed {computed:08x})"
        ));
    }
    decode_json(json, String::new).map_err(|e| crate::errors::chain(&e).to_string())
}

/// The valid slot with the highest sequence number; if neither is valid,
/// what is wrong with each.
fn read_slots(bytes: &[u8]) -> Result<Slot, String> {
    let slot = |i: usize| {
        let start = i * SLOT;
        let end = (start + SLOT).min(bytes.len());
        match bytes.get(start..end) {
            Some(b) if !b.is_empty() => decode_slot(b),
            _ => Err("missing (the file is truncated)".into()),
        }
    };
    match (slot(0), slot(1)) {
        (Ok(a), Ok(b)) => Ok(if a.seq >= b.seq { a } else { b }),
        (Ok(s), Err(_)) | (Err(_), Ok(s)) => Ok(s),
        (Err(a), Err(b)) => Err(format!("no valid slot (slot 0: {a}; slot 1: {b})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn acked(index: u64) -> Acknowledged {
        Acknowledged {
            last_log: Some(LogId::new(CommittedLeaderId::new(3, 7), index)),
            vote: Some(Vote::new_committed(3, 7)),
        }
    }

    #[test]
    fn the_newest_slot_wins_and_survives_a_reopen() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut w = Witness::create(dir.path(), "node1").unwrap();
        w.write(&acked(10)).unwrap();
        w.write(&acked(11)).unwrap();
        drop(w);
        let (mut w, got) = Witness::open(dir.path(), "node1").unwrap();
        assert_eq!(got, acked(11));
        // Unchanged: nothing written (the file stays byte for byte).
        let before = std::fs::read(Witness::path(dir.path())).unwrap();
        w.write(&acked(11)).unwrap();
        assert_eq!(std::fs::read(Witness::path(dir.path())).unwrap(), before);
        w.write(&acked(12)).unwrap();
        let (_, got) = Witness::open(dir.path(), "node1").unwrap();
        assert_eq!(got, acked(12));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other_and_two_are_damage() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut w = Witness::create(dir.path(), "node1").unwrap();
        w.write(&acked(10)).unwrap();
        w.write(&acked(11)).unwrap(); // seq 4: slot 0
        drop(w);
        let path = Witness::path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 0x20; // inside slot 0's JSON
        std::fs::write(&path, &bytes).unwrap();
        let (_, got) = Witness::open(dir.path(), "node1").unwrap();
        assert_eq!(got, acked(10), "the older, intact slot");

        bytes[SLOT + 40] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = Witness::open(dir.path(), "node1").map(|_| ()).unwrap_err();
        let text = crate::errors::chain(&err);
        assert!(
            text.contains(FILE) && text.contains("checksum mismatch"),
            "{text}"
        );

        std::fs::write(&path, &bytes[..100]).unwrap();
        let err = Witness::open(dir.path(), "node1").map(|_| ()).unwrap_err();
        let text = crate::errors::chain(&err);
        assert!(text.contains("truncated"), "{text}");
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        Witness::create(dir.path(), "node1").unwrap();
        let err = Witness::open(dir.path(), "node2").map(|_| ()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("node1") && text.contains("node2"), "{text}");
    }
}
