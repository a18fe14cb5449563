//! The Raft transport, client side: openraft's RPCs as JSON over HTTP to the
//! peer's RAFT_PORT. One `reqwest::Client` (a connection pool) is shared by
//! every peer, so an RPC reuses a kept-alive connection instead of opening
//! one each time.

use super::peer_auth::Peers;
use super::quorum::{Contact, QUORUM_AGE_HEADER};
use super::removal::{NotAMember, Removal};
use super::succession::{Succession, EARLIER_LEADER_HEADER};
use crate::metrics::stages::{Stage, WriteStages};
use crate::raft::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Instant;

/// Paths of the Raft RPCs on RAFT_PORT.
pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";

/// Creates one [`PeerClient`] per peer, all sharing one connection pool.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
    removal: Removal,
    contact: Contact,
    stages: WriteStages,
}

impl Network {
    /// `removal` hears a peer's answer that this node is no member;
    /// `contact` is what this node knows of its quorum, told to followers
    /// with every append; each append that carries entries is timed in
    /// `stages`.
    pub fn new(peers: Peers, removal: Removal, contact: Contact, stages: WriteStages) -> Network {
        Network {
            peers,
            removal,
            contact,
            stages,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        PeerClient {
            peers: self.peers.clone(),
            removal: self.removal.clone(),
            contact: self.contact.clone(),
            stages: self.stages.clone(),
            target,
            base: format!("http://{}", node.raft_addr),
        }
    }
}

/// Sends RPCs to one peer.
pub struct PeerClient {
    peers: Peers,
    removal: Removal,
    contact: Contact,
    stages: WriteStages,
    target: NodeId,
    base: String,
}

impl PeerClient {
    /// POSTs `req` and decodes the peer's `Result<Resp, E>`. Connection
    /// failures are `Unreachable` (openraft backs off), other transport
    /// failures `Network`, and the peer's own refusal a `RemoteError`.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let resp = self.send(path, req, option).await?;
        self.decode(resp).await
    }

    /// POSTs `req`; the peer's answer once it is a success.
    async fn send<Req, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<reqwest::Response, RPCError<NodeId, NodeInfo, E>>
    where
        Req: Serialize,
        E: std::error::Error,
    {
        let mut request = self
            .peers
            .post_json(&format!("{}{path}", self.base), req)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if path == APPEND_PATH {
            if let Some(age) = self.contact.state().age {
                request = request.header(QUORUM_AGE_HEADER, age.as_millis().to_string());
            }
        }
        let resp = request
            .timeout(option.hard_ttl())
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let err = std::io::Error::other(format!(
                "{path}: the peer refused our cluster secret (401): CLUSTER_SECRET differs"
            ));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        if status == reqwest::StatusCode::GONE {
            // A member that has no such member as this node: the notice
            // goes to `removal`; the RPC fails as any refusal does.
            if let Ok(notice) = resp.json::<NotAMember>().await {
                self.removal.heard(notice);
            }
            let err = std::io::Error::other(format!(
                "{path}: this node is no member of {}'s cluster (HTTP {status})",
                self.base
            ));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        if !status.is_success() {
            let err = std::io::Error::other(format!("{path} answered HTTP {status}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        Ok(resp)
    }

    /// Decodes the peer's `Result<Resp, E>`.
    async fn decode<Resp, E>(
        &self,
        resp: reqwest::Response,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let result: Result<Resp, E> = resp
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        // What the l2 leases learn from appends (see `succession`): when
        // the voter accepted one of this term sent when, and what it says
        // of earlier leaders.
        let term = rpc.vote.leader_id.term;
        let carries = !rpc.entries.is_empty();
        let sent = Instant::now();
        let resp = self.send(APPEND_PATH, &rpc, &option).await?;
        let earlier = resp
            .headers()
            .get(EARLIER_LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(Succession::parse_header);
        let answer = self.decode(resp).await?;
        if carries {
            self.stages.observe(Stage::Replicated, sent.elapsed());
        }
        if matches!(
            answer,
            AppendEntriesResponse::Success
                | AppendEntriesResponse::PartialSuccess(_)
                | AppendEntriesResponse::Conflict
        ) {
            let succession = self.contact.succession();
            succession.accepted(self.target, term, sent);
            if let Some((told_term, at)) = earlier.filter(|(t, _)| *t == term) {
                succession.told(self.target, told_term, at);
            }
        }
        Ok(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(SNAPSHOT_PATH, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(VOTE_PATH, &rpc, &option).await
    }
}
