//! Membership changes asked of this node: the leader performs them, any
//! other member forwards them to the leader's Raft port and passes its
//! answer back.

use super::{Node, Relayed};
use crate::api::json::MembershipDryRun;
use crate::api::{self, ApiError};
use crate::cluster::membership::{self, JoinRequest, Joining, MembershipError};
use crate::cluster::removal::{NotAMember, REMOVED_PATH};
use crate::cluster::{leader, MEMBERS_PATH};
use std::time::Duration;

/// What a membership change answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// This node (the leader) made the change.
    Done,
    /// The leader's answer to the forwarded request.
    Relayed(Relayed),
}

/// `POST /api/v1/cluster/join` (and the leader's side on the Raft port):
/// adds the node as a learner, then a voter once it has caught up.
pub async fn join(node: &Node, join: &JoinRequest) -> Result<Changed, ApiError> {
    if node.is_leader() {
        membership::add_member(node.raft(), join)
            .await
            .map_err(membership_error)?;
        return Ok(Changed::Done);
    }
    let url = format!(
        "http://{}{}",
        leader_raft_addr(node)?,
        membership::JOIN_PATH
    );
    let resp = node
        .peers
        .post_json(&url, join)
        .map_err(ApiError::internal)?
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .map_err(forward_error)?;
    relay(resp).await.map(Changed::Relayed)
}

/// `POST /api/v1/cluster/join?dry_run=true`: what the join would do, as
/// this node sees the membership; nothing changes.
pub fn rehearse_join(node: &Node, join: &JoinRequest) -> Result<MembershipDryRun, ApiError> {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let joining = membership::check_join(membership, join).map_err(membership_error)?;
    let mut members = names(membership.nodes().map(|(_, n)| n));
    let mut voters = names(
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id)),
    );
    let change = match joining {
        Joining::New => format!(
            "{} joins at {} (Raft {}): a learner until it has caught up, then a voter",
            join.id, join.api_addr, join.raft_addr
        ),
        Joining::Promoted => format!("{}, a learner, becomes a voter", join.id),
        Joining::Already => format!("nothing: {} is a voter already", join.id),
    };
    members.insert(join.id.clone());
    voters.insert(join.id.clone());
    Ok(MembershipDryRun {
        dry_run: true,
        status: 200,
        change,
        quorum: voters.len() / 2 + 1,
        members: members.into_iter().collect(),
        voters: voters.into_iter().collect(),
    })
}

/// `DELETE /api/v1/cluster/members/{node_id}?dry_run=true`: what the
/// removal would do, as this node sees the membership; nothing changes.
pub fn rehearse_remove(node: &Node, name: &str) -> Result<MembershipDryRun, ApiError> {
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let (removed, voter) = membership::check_remove(membership, name).map_err(membership_error)?;
    let members = names(
        membership
            .nodes()
            .map(|(_, n)| n)
            .filter(|n| n.name != removed.name),
    );
    let voters = names(
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id))
            .filter(|n| n.name != removed.name),
    );
    let change = format!(
        "{name} ({}) leaves the cluster{}; it is told, stops taking part and exits",
        removed.api_addr,
        if voter { ", and no longer votes" } else { "" }
    );
    Ok(MembershipDryRun {
        dry_run: true,
        status: 204,
        change,
        quorum: voters.len() / 2 + 1,
        members: members.into_iter().collect(),
        voters: voters.into_iter().collect(),
    })
}

/// Members' names, sorted.
fn names<'n>(
    nodes: impl Iterator<Item = &'n crate::raft::NodeInfo>,
) -> std::collections::BTreeSet<String> {
    nodes.map(|n| n.name.clone()).collect()
}

/// `DELETE /api/v1/cluster/members/{node_id}` (and the leader's side on the
/// Raft port).
pub async fn remove(node: &Node, name: &str) -> Result<Changed, ApiError> {
    if node.is_leader() {
        let removed = membership::remove_member(node.raft(), name)
            .await
            .map_err(membership_error)?;
        tell_removed(node, &removed).await;
        return Ok(Changed::Done);
    }
    let resp = node
        .peers
        .delete(&format!(
            "http://{}{MEMBERS_PATH}/{name}",
            leader_raft_addr(node)?
        ))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(forward_error)?;
    relay(resp).await.map(Changed::Relayed)
}

/// A membership change forwarded to the leader that got no answer: not
/// delivered (definite) or lost on the way back (unknown).
fn forward_error(e: reqwest::Error) -> ApiError {
    if e.is_connect() {
        ApiError::unavailable(1, format!("the leader could not be reached: {e}"))
    } else {
        ApiError::outcome_unknown(
            format!("the leader did not answer: {}", crate::errors::chain(&e)),
            "run `ipvs-manager cluster status` to check",
        )
    }
}

/// `POST /raft/members/{name}/rejoin` on the Raft port: node `name` is about
/// to rejoin with an empty store (`STORE_DAMAGE=rejoin`), so the leader
/// removes it first (forwarded there from any member): neither its vote
/// nor its old log — the leader's replication state of it — may count any
/// more. A node that is no member is fine. It then joins anew.
pub async fn forget(node: &Node, name: &str) -> Result<Changed, ApiError> {
    if node.is_leader() {
        match membership::remove_member(node.raft(), name).await {
            Ok(_) => tracing::info!(node = name, "removed: it rejoins with an empty store"),
            Err(MembershipError::NotMember(_)) => {}
            Err(e) => return Err(membership_error(e)),
        }
        return Ok(Changed::Done);
    }
    let resp = node
        .peers
        .request(
            reqwest::Method::POST,
            &format!(
                "http://{}{MEMBERS_PATH}/{name}/rejoin",
                leader_raft_addr(node)?
            ),
            Vec::new(),
        )
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(forward_error)?;
    relay(resp).await.map(Changed::Relayed)
}

/// Tells a removed node so, at once: it stops taking part before its
/// election timeout would have it campaign (see `cluster::removal`). One
/// attempt; a node that does not hear it learns at its first vote request.
async fn tell_removed(node: &Node, removed: &crate::raft::NodeInfo) {
    let metrics = node.raft().metrics().borrow().clone();
    let notice = NotAMember {
        by: node.me.name.clone(),
        membership: *metrics.membership_config.log_id(),
    };
    let url = format!("http://{}{REMOVED_PATH}", removed.raft_addr);
    let told = match node.peers.post_json(&url, &notice) {
        Ok(request) => request
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    tracing::info!(node = %removed.name, told, "removed from the cluster");
}

/// Where to forward a membership change: the leader's Raft port.
fn leader_raft_addr(node: &Node) -> Result<String, ApiError> {
    leader(node.raft())
        .map(|(_, leader)| leader.raft_addr)
        .ok_or_else(|| ApiError::no_leader(1))
}

/// A peer's answer, read whole.
pub(super) async fn relay(resp: reqwest::Response) -> Result<Relayed, ApiError> {
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| ApiError::unavailable(1, e))?;
    Ok(Relayed {
        status,
        body: body.to_vec(),
    })
}

fn membership_error(e: MembershipError) -> ApiError {
    use MembershipError::*;
    match e {
        NotMember(name) => ApiError::new(
            api::ErrorCode::NotFound,
            format!("{name:?} is not a member of this cluster"),
        ),
        IdCollision { .. } | LastVoter(_) | NameTaken { .. } => {
            ApiError::new(api::ErrorCode::AlreadyExists, e.to_string())
        }
        NotLeader => ApiError::no_leader(1),
        Busy => ApiError::unavailable(1, e.to_string()),
        // Proposed, then no answer: it may have been made.
        Raft(_) => ApiError::outcome_unknown(
            crate::errors::chain(&e),
            "run `ipvs-manager cluster status` to check",
        ),
    }
}
