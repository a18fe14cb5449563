//! Rejoining with an empty store after the start-up check found this node's
//! store damaged (`STORE_DAMAGE=rejoin`).
//!
//! A voter that forgets what it acknowledged can make a quorum out of
//! nothing: with an empty log it would vote for a candidate missing entries
//! the old quorum committed. So the node must not take part again as a
//! voter until it has caught up, and must not take part at all before the
//! cluster stops counting it: before Raft starts here, a member is asked to
//! have the leader remove this node (a membership change the remaining
//! voters commit; removal rather than demotion to a learner, since the
//! leader would otherwise keep tracking the old log it replicated there,
//! which openraft takes for a log that went back in time). Only then is the
//! damaged state set aside, an empty store opened, and the node joins like
//! a new one (learner, catch up by snapshot, voter). A marker file keeps
//! the node on this path across restarts, so that an empty directory is
//! never mistaken for a new cluster to bootstrap.
//!
//! The members to ask come from [`KnownMembers`], a file the node keeps
//! current beside its store (the damaged store itself may be unreadable),
//! and from RAFT_LEADER.

use super::peer_auth::Peers;
use super::MEMBERS_PATH;
use crate::raft::NodeInfo;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The members this node last knew, in its data directory.
const MEMBERS_FILE: &str = "cluster-members.json";
/// Present while a rejoin is under way.
const MARKER: &str = "rejoining.json";

#[derive(Debug, thiserror::Error)]
pub enum RejoinError {
    #[error("no member to rejoin through: {dir} has no {MEMBERS_FILE} with other members; set RAFT_LEADER to a member's address")]
    NoMembers { dir: PathBuf },
    #[error("the cluster refused to remove this node before it rejoins: {0}")]
    Refused(String),
    #[error("failed to set the damaged state aside")]
    SetAside(#[source] std::io::Error),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The file of members, with a checksum of its list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMembers {
    pub members: Vec<NodeInfo>,
    #[serde(default)]
    crc32: u32,
}

impl KnownMembers {
    pub fn new(mut members: Vec<NodeInfo>) -> KnownMembers {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let crc32 = checksum(&members);
        KnownMembers { members, crc32 }
    }

    /// The members last saved in `dir`; none if the file is missing or
    /// damaged (it is a hint, RAFT_LEADER is the other).
    pub fn load(dir: &Path) -> KnownMembers {
        let read = std::fs::read(dir.join(MEMBERS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<KnownMembers>(&b).ok());
        match read {
            Some(known) if known.crc32 == checksum(&known.members) => known,
            _ => KnownMembers::default(),
        }
    }

    /// Saves the list (write, fsync, rename), if it differs from `dir`'s.
    pub fn save(&self, dir: &Path) -> Result<(), RejoinError> {
        if KnownMembers::load(dir) == *self {
            return Ok(());
        }
        write_atomically(&dir.join(MEMBERS_FILE), self)
    }
}

fn checksum(members: &[NodeInfo]) -> u32 {
    crc32fast::hash(&serde_json::to_vec(members).unwrap_or_default())
}

fn write_atomically(path: &Path, value: &impl Serialize) -> Result<(), RejoinError> {
    let write = || -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        crate::files::write_whole(path, &json)
    };
    write().map_err(|source| RejoinError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A rejoin under way: whom to ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejoin {
    /// Raft or API addresses (`host:port`) of members to ask, in order.
    pub through: Vec<String>,
    /// Why (the damage found), for the log and the operator.
    pub reason: String,
}

impl Rejoin {
    /// A rejoin started by an earlier run that did not finish it.
    pub fn pending(dir: &Path) -> Option<Rejoin> {
        let bytes = std::fs::read(dir.join(MARKER)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts a rejoin of node `me`: the members to ask (RAFT_LEADER first,
    /// then the known members' Raft ports), written down before anything
    /// is changed.
    pub fn begin(
        dir: &Path,
        me: &str,
        join: Option<&str>,
        reason: String,
    ) -> Result<Rejoin, RejoinError> {
        let mut through: Vec<String> = join.map(str::to_string).into_iter().collect();
        for m in KnownMembers::load(dir).members {
            if m.name != me && !through.contains(&m.raft_addr) {
                through.push(m.raft_addr);
            }
        }
        if through.is_empty() {
            return Err(RejoinError::NoMembers {
                dir: dir.to_path_buf(),
            });
        }
        let rejoin = Rejoin { through, reason };
        write_atomically(&dir.join(MARKER), &rejoin)?;
        Ok(rejoin)
    }

    /// Asks the members in turn until one has the leader remove node `name`
    /// (or says it is no member); retries while none can (no leader, no
    /// quorum, unreachable), since the node must not take part before.
    /// Returns the member that answered, to join through.
    pub async fn forget(&self, peers: &Peers, name: &str) -> Result<String, RejoinError> {
        let mut delay = Duration::from_millis(200);
        let mut attempts = 0u32;
        loop {
            for member in &self.through {
                let url = format!("http://{member}{MEMBERS_PATH}/{name}/rejoin");
                let answer = peers
                    .request(reqwest::Method::POST, &url, Vec::new())
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => return Ok(member.clone()),
                    // The leader refused for a reason a retry does not cure
                    // (the last voter, another node of that name).
                    Ok(r) if r.status().is_client_error() && r.status().as_u16() != 404 => {
                        let body = r.text().await.unwrap_or_default();
                        return Err(RejoinError::Refused(body));
                    }
                    Ok(r) => {
                        if attempts.is_multiple_of(10) {
                            let status = r.status();
                            let body = r.text().await.unwrap_or_default();
                            tracing::warn!(%member, %status, %body, "waiting for the cluster to remove this node before it rejoins");
                        }
                    }
                    Err(e) => {
                        if attempts.is_multiple_of(10) {
                            tracing::warn!(%member, error = %e, "waiting for a member to remove this node before it rejoins");
                        }
                    }
                }
            }
            attempts += 1;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// The rejoin is over: the node is a voter again.
    pub fn finish(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(MARKER));
    }
}

/// Moves `files` (the store's) into `dir/damaged-<unix time>/`, kept for
/// whoever wants to look at them; returns that directory.
pub fn set_aside(dir: &Path, files: &[PathBuf]) -> Result<PathBuf, RejoinError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = dir.join(format!("damaged-{stamp}"));
    std::fs::create_dir_all(&aside).map_err(RejoinError::SetAside)?;
    for file in files {
        if let Some(name) = file.file_name() {
            if file.exists() {
                std::fs::rename(file, aside.join(name)).map_err(RejoinError::SetAside)?;
            }
        }
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(RejoinError::SetAside)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, port: u16) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            raft_addr: format!("127.0.0.1:{port}"),
            api_addr: format!("127.0.0.1:{}", port + 1000),
        }
    }

    #[test]
    fn known_members_round_trip_and_a_damaged_file_is_ignored() {
        let dir = tempfile::TempDir::new().unwrap();
        assert_eq!(KnownMembers::load(dir.path()).members, vec![]);
        let known = KnownMembers::new(vec![node("node2", 1112), node("node1", 1111)]);
        known.save(dir.path()).unwrap();
        let loaded = KnownMembers::load(dir.path());
        assert_eq!(loaded, known);
        assert_eq!(loaded.members[0].name, "node1");

        let path = dir.path().join(MEMBERS_FILE);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("1112", "1113");
        std::fs::write(&path, text).unwrap();
        assert_eq!(KnownMembers::load(dir.path()).members, vec![]);
    }

    #[test]
    fn a_rejoin_asks_raft_leader_first_then_the_others_and_is_remembered() {
        let dir = tempfile::TempDir::new().unwrap();
        let err = Rejoin::begin(dir.path(), "node2", None, "damage".into()).unwrap_err();
        assert!(err.to_string().contains("RAFT_LEADER"), "{err}");

        KnownMembers::new(vec![
            node("node1", 1111),
            node("node2", 1112),
            node("node3", 1113),
        ])
        .save(dir.path())
        .unwrap();
        let r = Rejoin::begin(dir.path(), "node2", Some("10.0.0.1:2221"), "damage".into()).unwrap();
        assert_eq!(
            r.through,
            ["10.0.0.1:2221", "127.0.0.1:1111", "127.0.0.1:1113"]
        );
        assert_eq!(Rejoin::pending(dir.path()), Some(r));
        Rejoin::finish(dir.path());
        assert_eq!(Rejoin::pending(dir.path()), None);
    }

    #[test]
    fn set_aside_moves_the_files_into_a_directory_of_their_own() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("sled")).unwrap();
        std::fs::write(dir.path().join("sled").join("db"), b"x").unwrap();
        std::fs::write(dir.path().join("acknowledged"), b"y").unwrap();
        let files = [
            dir.path().join("sled"),
            dir.path().join("acknowledged"),
            dir.path().join("absent"),
        ];
        let aside = set_aside(dir.path(), &files).unwrap();
        assert!(!dir.path().join("sled").exists());
        assert_eq!(std::fs::read(aside.join("sled").join("db")).unwrap(), b"x");
        assert_eq!(std::fs::read(aside.join("acknowledged")).unwrap(), b"y");
    }
}
