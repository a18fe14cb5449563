//! Cluster membership: how a node starts (resume, bootstrap or join), and the
//! leader's side of joining and removing members.

use super::peer_auth::Peers;
pub use crate::api::json::JoinRequest;
use crate::raft::Raft;
use crate::raft::{node_id, typ, NodeId, NodeInfo};
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Path of the join endpoint on the HTTP API.
pub const JOIN_PATH: &str = "/api/v1/cluster/join";

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("raft storage or state error")]
    Raft(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "node name {name:?} hashes to the id of member {existing:?}; choose another RAFT_NODE_ID"
    )]
    IdCollision { name: String, existing: String },
    #[error("{0:?} is not a member of this cluster")]
    NotMember(String),
    #[error(
        "{name:?} is already a member, at {existing}; a second node of that name cannot join. \
         To replace that host: remove it (ipvs-manager cluster remove {name}), then start the new \
         one with RAFT_LEADER"
    )]
    NameTaken { name: String, existing: NodeInfo },
    #[error("removing {0:?} would leave the cluster without voters")]
    LastVoter(String),
    #[error("this node is not the leader")]
    NotLeader,
    /// Another membership change is being committed (openraft takes one
    /// at a time): nothing was done.
    #[error("another membership change is in progress; nothing was done, retry in a moment")]
    Busy,
}

fn raft_err(e: impl std::error::Error + Send + Sync + 'static) -> MembershipError {
    MembershipError::Raft(Box::new(e))
}

/// A refused membership change in the operator's terms; openraft's own
/// messages carry raw log ids and node hashes.
fn change_err(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, NodeInfo>>,
) -> MembershipError {
    use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::Busy,
        other => raft_err(other),
    }
}

/// How this node entered the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// It had state: resumed, RAFT_LEADER ignored.
    Resumed,
    /// First node: a one-node cluster with itself as leader.
    Bootstrapped,
    /// A member added it as a voter.
    Joined,
}

/// Brings this node into its cluster. A node with state never re-initialises
/// (that could split the brain); a new node without RAFT_LEADER bootstraps;
/// a new node with RAFT_LEADER asks that member to add it, retrying until it
/// succeeds (the member may still be starting).
pub async fn start(
    raft: &Raft,
    peers: &Peers,
    me: &NodeInfo,
    join: Option<&str>,
) -> Result<Start, MembershipError> {
    if raft.is_initialized().await.map_err(raft_err)? {
        return Ok(Start::Resumed);
    }
    let Some(member) = join else {
        let id = node_id(&me.name);
        raft.initialize(BTreeMap::from([(id, me.clone())]))
            .await
            .map_err(raft_err)?;
        return Ok(Start::Bootstrapped);
    };
    join_through(peers, me, member).await?;
    Ok(Start::Joined)
}

/// Asks `member` (its API or Raft address) to add this node, retrying until
/// it has (the member may still be starting). Harmless for a member already.
pub async fn join_through(
    peers: &Peers,
    me: &NodeInfo,
    member: &str,
) -> Result<(), MembershipError> {
    let req = JoinRequest {
        id: me.name.clone(),
        raft_addr: me.raft_addr.clone(),
        api_addr: me.api_addr.clone(),
    };
    let url = format!("http://{member}{JOIN_PATH}");
    let mut delay = Duration::from_millis(200);
    loop {
        let sent = match peers.post_json(&url, &req) {
            Ok(request) => request.send().await,
            Err(e) => return Err(raft_err(e)),
        };
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) if resp.status() == reqwest::StatusCode::UNAUTHORIZED => {
                let body = resp.text().await.unwrap_or_default();
                tracing::warn!(
                    %url,
                    %body,
                    "join refused (401): if that member's API wants a token, set RAFT_LEADER \
                     to its Raft address (host:RAFT_PORT); if the cluster secret is refused, \
                     this node's CLUSTER_SECRET differs; retrying"
                );
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                tracing::warn!(%url, %status, %body, "join refused; retrying");
            }
            Err(e) => tracing::warn!(%url, error = %e, "join failed; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// On the leader: adds the node as a learner, waits until it has caught up,
/// then makes it a voter. Joining twice is harmless.
pub async fn add_member(raft: &Raft, req: &JoinRequest) -> Result<(), MembershipError> {
    let metrics: typ::RaftMetrics = raft.metrics().borrow().clone();
    if check_join(metrics.membership_config.membership(), req)? == Joining::Already {
        return Ok(());
    }
    let (id, node) = (node_id(&req.id), joining_node(req));
    raft.add_learner(id, node, true).await.map_err(change_err)?;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(change_err)?;
    Ok(())
}

/// What a join would do to a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joining {
    /// Added (as a learner, then a voter).
    New,
    /// Made a voter: it is a learner already.
    Promoted,
    /// Nothing: it is a voter already (joining twice is harmless).
    Already,
}

/// The node a join request describes.
fn joining_node(req: &JoinRequest) -> NodeInfo {
    NodeInfo {
        name: req.id.clone(),
        raft_addr: req.raft_addr.clone(),
        api_addr: req.api_addr.clone(),
    }
}

/// What adding `req` to `membership` would do, or why it is refused: a
/// name whose id is another member's, or a member's name at other
/// addresses. Pure: the leader's join and its dry run share it.
pub fn check_join(
    membership: &typ::Membership,
    req: &JoinRequest,
) -> Result<Joining, MembershipError> {
    let id = node_id(&req.id);
    let Some(existing) = membership.get_node(&id) else {
        return Ok(Joining::New);
    };
    if existing.name != req.id {
        return Err(MembershipError::IdCollision {
            name: req.id.clone(),
            existing: existing.name.clone(),
        });
    }
    if *existing != joining_node(req) {
        return Err(MembershipError::NameTaken {
            name: req.id.clone(),
            existing: existing.clone(),
        });
    }
    Ok(if membership.voter_ids().any(|v| v == id) {
        Joining::Already
    } else {
        Joining::Promoted
    })
}

/// The member `name` of `membership` and whether it votes, or why it
/// cannot be removed (no such member, the last voter). Pure: the leader's
/// removal and its dry run share it.
pub fn check_remove(
    membership: &typ::Membership,
    name: &str,
) -> Result<(NodeInfo, bool), MembershipError> {
    let id: NodeId = node_id(name);
    let Some(removed) = membership.get_node(&id).cloned() else {
        return Err(MembershipError::NotMember(name.to_string()));
    };
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.contains(&id) && voters.len() == 1 {
        return Err(MembershipError::LastVoter(name.to_string()));
    }
    Ok((removed, voters.contains(&id)))
}

/// On the leader: removes the member named `name` (voter and node), and
/// returns what the cluster knew of it.
pub async fn remove_member(raft: &Raft, name: &str) -> Result<NodeInfo, MembershipError> {
    let id: NodeId = node_id(name);
    let metrics: typ::RaftMetrics = raft.metrics().borrow().clone();
    let (removed, voter) = check_remove(metrics.membership_config.membership(), name)?;
    if voter {
        raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(change_err)?;
    }
    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
        .await
        .map_err(change_err)?;
    Ok(removed)
}
