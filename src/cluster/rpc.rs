//! The Raft transport, server side: the HTTP routes on RAFT_PORT that hand
//! peers' RPCs to the local Raft, and the route a follower uses to forward a
//! client's write to the leader.

use super::network::{APPEND_PATH, SNAPSHOT_PATH, VOTE_PATH};
use crate::model::{Command, CommandResult};
use crate::raft::{NodeInfo, TypeConfig};
use actix_web::web::{self, Data, Json};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{Deserialize, Serialize};

pub type Raft = openraft::Raft<TypeConfig>;

/// Path of a forwarded client write.
pub const WRITE_PATH: &str = "/raft/write";

/// What a committed write did: its log index and the state machine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    pub index: u64,
    pub result: CommandResult,
}

pub type WriteResult = Result<WriteOutcome, RaftError<u64, ClientWriteError<u64, NodeInfo>>>;

/// Registers the RPC routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(APPEND_PATH, web::post().to(append))
        .route(VOTE_PATH, web::post().to(vote))
        .route(SNAPSHOT_PATH, web::post().to(snapshot))
        .route(WRITE_PATH, web::post().to(write));
}

async fn append(
    raft: Data<Raft>,
    req: Json<AppendEntriesRequest<TypeConfig>>,
) -> impl actix_web::Responder {
    Json(raft.append_entries(req.into_inner()).await)
}

async fn vote(raft: Data<Raft>, req: Json<VoteRequest<u64>>) -> impl actix_web::Responder {
    Json(raft.vote(req.into_inner()).await)
}

async fn snapshot(
    raft: Data<Raft>,
    req: Json<InstallSnapshotRequest<TypeConfig>>,
) -> impl actix_web::Responder {
    Json(raft.install_snapshot(req.into_inner()).await)
}

async fn write(raft: Data<Raft>, cmd: Json<Command>) -> impl actix_web::Responder {
    Json(client_write(&raft, cmd.into_inner()).await)
}

/// Proposes `cmd` on this node, which must be the leader.
pub async fn client_write(raft: &Raft, cmd: Command) -> WriteResult {
    let resp = raft.client_write(cmd).await?;
    Ok(WriteOutcome {
        index: resp.log_id.index,
        result: resp.data,
    })
}
