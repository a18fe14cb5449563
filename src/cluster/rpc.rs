//! The Raft transport, server side: the HTTP routes on RAFT_PORT that hand
//! peers' RPCs to the local Raft, the route a follower uses to forward a
//! client's write to the leader, and the one a stopping leader uses to ask
//! a follower to take over.

use super::batch::{Batcher, MAX_BATCH};
use super::handover::{Handover, ELECT_PATH};
use super::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use super::quorum::{Contact, QUORUM_AGE_HEADER};
use super::removal::{NotAMember, Removal, REMOVED_PATH};
use super::succession::EARLIER_LEADER_HEADER;
use super::{READ_INDEX_PATH, WRITE_PATH};
use crate::metrics::stages::{Stage, WriteStages};
use crate::model::Command;
use crate::raft::{Raft, TypeConfig, WriteResult};
use actix_web::web::{self, Data, Json};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};

/// Registers the RPC routes; they need `Data<Raft>`, `Data<Batcher>`,
/// `Data<Handover>`, `Data<Contact>` and `Data<WriteStages>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(APPEND_PATH, web::post().to(append))
        .route(VOTE_PATH, web::post().to(vote))
        .route(SNAPSHOT_PATH, web::post().to(snapshot))
        .route(WRITE_PATH, web::post().to(write))
        .route(READ_INDEX_PATH, web::get().to(read_index))
        .route(ELECT_PATH, web::post().to(elect))
        .route(REMOVED_PATH, web::post().to(removed));
}

/// An append from the leader, to Raft. One Raft accepts (it did not see a
/// newer leader) also tells this node when the leader last had a quorum
/// ([`QUORUM_AGE_HEADER`]), and its answer tells the leader when an
/// earlier leader last reached this node ([`EARLIER_LEADER_HEADER`]).
async fn append(
    raft: Data<Raft>,
    contact: Data<Contact>,
    stages: Data<WriteStages>,
    http: actix_web::HttpRequest,
    req: Json<AppendEntriesRequest<TypeConfig>>,
) -> actix_web::HttpResponse {
    let leader = req.vote.leader_id.node_id;
    let term = req.vote.leader_id.term;
    // Before Raft sees it: an append Raft accepts has always been noted.
    contact.succession().arrived(term);
    let age = http
        .headers()
        .get(QUORUM_AGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let carries = !req.entries.is_empty();
    let started = std::time::Instant::now();
    let answer = raft.append_entries(req.into_inner()).await;
    if carries {
        stages.observe(Stage::Appended, started.elapsed());
    }
    let accepted = matches!(
        answer,
        Ok(AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict)
    );
    let mut response = actix_web::HttpResponse::Ok();
    if accepted {
        if let Some(age) = age {
            contact.acknowledged(leader, age);
        }
        // This node took `term`: nothing earlier is accepted any more.
        let earlier = contact.succession().header_for(term);
        response.insert_header((EARLIER_LEADER_HEADER, earlier));
    }
    response.json(answer)
}

/// A vote request, from a member: to Raft. From a node that is no member
/// of this node's (initialised) membership: 410 with that membership's log
/// id, which tells a removed node it was removed (see `removal`); its
/// request never reaches Raft.
async fn vote(raft: Data<Raft>, req: Json<VoteRequest<u64>>) -> actix_web::HttpResponse {
    let metrics = raft.metrics().borrow().clone();
    let membership = &metrics.membership_config;
    let candidate = req.vote.leader_id.node_id;
    if membership.log_id().is_some() && membership.membership().get_node(&candidate).is_none() {
        let by = membership
            .membership()
            .get_node(&metrics.id)
            .map_or_else(|| metrics.id.to_string(), |n| n.name.clone());
        return actix_web::HttpResponse::Gone().json(NotAMember {
            by,
            membership: *membership.log_id(),
        });
    }
    actix_web::HttpResponse::Ok().json(raft.vote(req.into_inner()).await)
}

/// [`REMOVED_PATH`]: the leader says this node was removed.
async fn removed(removal: Data<Removal>, notice: Json<NotAMember>) -> actix_web::HttpResponse {
    tracing::info!(by = %notice.by, "told this node was removed from the cluster");
    removal.heard(notice.into_inner());
    actix_web::HttpResponse::Ok().finish()
}

async fn snapshot(
    raft: Data<Raft>,
    req: Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl actix_web::Responder {
    Json(raft.install_snapshot(req.into_inner()).await)
}

async fn write(
    batcher: Data<Batcher>,
    handover: Data<Handover>,
    cmds: Json<Vec<Command>>,
) -> actix_web::HttpResponse {
    let cmds = cmds.into_inner();
    if cmds.len() > MAX_BATCH {
        return actix_web::HttpResponse::BadRequest()
            .body(format!("at most {MAX_BATCH} writes per request"));
    }
    if cmds
        .iter()
        .any(|c| matches!(c.unkeyed(), Command::Batch(_)))
    {
        // Only the leader's batcher makes batches (it keeps their revisions
        // unique); a peer forwards single writes.
        return actix_web::HttpResponse::BadRequest().body("a forwarded write must not be a batch");
    }
    let results: Vec<WriteResult> = if handover.is_active() {
        // No leader to name yet: the forwarding node waits for the election.
        let refused =
            RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::empty()));
        vec![Err(refused); cmds.len()]
    } else {
        // Queued in order: the first poll of each proposal enqueues it.
        futures_util::future::join_all(cmds.into_iter().map(|cmd| batcher.propose(cmd))).await
    };
    actix_web::HttpResponse::Ok().json(results)
}

/// Confirms this node leads and returns the index a read must wait for
/// (`null` when it does not lead).
async fn read_index(writer: Data<super::Writer>) -> Json<Option<u64>> {
    Json(writer.leader_read_index().await)
}

/// The leader is stopping and this node holds its whole log: stand for
/// election now.
async fn elect(raft: Data<Raft>) -> actix_web::HttpResponse {
    match raft.trigger().elect().await {
        Ok(()) => {
            tracing::info!("the leader is stopping and asked this node to take over");
            actix_web::HttpResponse::Ok().json(serde_json::json!({"electing": true}))
        }
        Err(e) => actix_web::HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}
