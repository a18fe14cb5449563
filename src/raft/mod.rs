//! The openraft type configuration of the cluster: what the log carries
//! ([`Command`]), what applying it answers ([`CommandResult`]), how nodes are
//! named ([`node_id`]) and described ([`NodeInfo`]), what a write returns
//! ([`WriteOutcome`]); plus [`typ`], short aliases for the generic openraft
//! types the daemon uses.
//!
//! The peer network and membership changes build on these types; storage is
//! in [`crate::store`].

use crate::model::{Command, CommandResult};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

/// A node's Raft id: [`node_id`] of its operator-given name.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The cluster's Raft types: the log replicates [`Command`]s.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// What the cluster knows about a member; carried in membership log entries,
/// so it is persisted and replicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The operator-given name (`RAFT_NODE_ID`), whose [`node_id`] is the Raft id.
    pub name: String,
    /// `host:port` of the Raft transport (`RAFT_PORT`).
    pub raft_addr: String,
    /// `host:port` of the HTTP API (`SERVER_PORT`).
    pub api_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (raft {}, api {})",
            self.name, self.raft_addr, self.api_addr
        )
    }
}

/// The Raft id of the node named `name`: the 64-bit FNV-1a hash of the
/// name's UTF-8 bytes, with 0 (openraft's default, "nobody") mapped to 1.
///
/// Stable forever: ids are persisted in votes and membership entries, so
/// changing this function would make every existing cluster unreadable.
/// Two names that hash alike cannot be members together; whoever admits
/// members must refuse a name whose id is already taken by another name.
pub fn node_id(name: &str) -> NodeId {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    if hash == 0 {
        1
    } else {
        hash
    }
}

/// This node's Raft.
pub type Raft = openraft::Raft<TypeConfig>;

/// What a committed write did: its log index and the state machine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    pub index: u64,
    pub result: CommandResult,
}

/// A write's outcome, or why Raft refused it (a follower's refusal names
/// the leader); what a forwarded write answers, one per command.
pub type WriteResult = Result<WriteOutcome, typ::RaftError<typ::ClientWriteError>>;

/// Proposes `cmd` on this node, which must be the leader.
pub async fn client_write(raft: &Raft, cmd: Command) -> WriteResult {
    let resp = raft.client_write(cmd).await?;
    Ok(WriteOutcome {
        index: resp.log_id.index,
        result: resp.data,
    })
}

/// Short names for the generic openraft types of [`TypeConfig`].
pub mod typ {
    use super::{NodeId, NodeInfo, TypeConfig};
    use openraft::error::Infallible;

    pub use super::Raft;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type Membership = openraft::Membership<NodeId, NodeInfo>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;

    pub type RaftError<E = Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RPCError<E = Infallible> = openraft::error::RPCError<NodeId, NodeInfo, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeInfo>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, NodeInfo>;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeInfo>;
    pub type InitializeError = openraft::error::InitializeError<NodeId, NodeInfo>;
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors; these values are persisted in
        // every cluster, so they must never change.
        assert_eq!(node_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(node_id("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(node_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(node_id("node1"), node_id("node1"));
        assert_ne!(node_id("node1"), node_id("node2"));
    }

    #[test]
    fn node_info_round_trips_through_json() {
        let info = NodeInfo {
            name: "node1".into(),
            raft_addr: "127.0.0.1:1111".into(),
            api_addr: "127.0.0.1:2221".into(),
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<NodeInfo>(&json).unwrap(), info);
        assert_eq!(
            info.to_string(),
            "node1 (raft 127.0.0.1:1111, api 127.0.0.1:2221)"
        );
    }
}
