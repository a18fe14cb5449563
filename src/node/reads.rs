//! Reads of the desired state, as the API shows it: from the state this
//! node has applied, or — [`linearize`] first, `?consistent=true` — from a
//! state that includes every write acknowledged before the read.

use super::writes::APPLY_WAIT;
use super::Node;
use crate::api::json::{ConfigView, ServerView, ServiceView};
use crate::api::{view, ApiError};
use crate::model::{DestKey, ServiceKey};

/// Confirms leadership (on the leader) or waits until this node has applied
/// the leader's commit index, so the read that follows sees every write
/// acknowledged before it.
pub async fn linearize(node: &Node) -> Result<(), ApiError> {
    let Some(target) = node.writer.read_index().await else {
        return Err(ApiError::no_leader(1));
    };
    let mut rx = node.state.subscribe();
    let caught_up = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|c| c.applied_index() >= target))
        .await
        .is_ok_and(|r| r.is_ok());
    if caught_up {
        Ok(())
    } else {
        Err(ApiError::unavailable(1, "this node is behind the leader"))
    }
}

/// `GET /api/v1/services`, each server with every node's view of its health.
pub fn list_services(node: &Node) -> Vec<ServiceView> {
    let mut views = view::services_view(&node.desired());
    super::health::add_views(node, &mut views);
    views
}

/// `GET /api/v1/services/{id}`: the service and its revision.
pub fn get_service(node: &Node, key: &ServiceKey) -> Result<(u64, ServiceView), ApiError> {
    let desired = node.desired();
    let cfg = desired
        .services
        .get(key)
        .ok_or_else(|| ApiError::no_such_service(key))?;
    let mut views = [view::service_view(cfg)];
    super::health::add_views(node, &mut views);
    let [view] = views;
    Ok((cfg.revision, view))
}

/// `GET /api/v1/services/{id}/servers`.
pub fn list_servers(node: &Node, key: &ServiceKey) -> Result<Vec<ServerView>, ApiError> {
    get_service(node, key).map(|(_, view)| view.servers)
}

/// `GET /api/v1/services/{id}/servers/{server_id}`: the server and its
/// service's revision.
pub fn get_server(
    node: &Node,
    key: &ServiceKey,
    server: &DestKey,
) -> Result<(u64, ServerView), ApiError> {
    let desired = node.desired();
    let cfg = desired
        .services
        .get(key)
        .ok_or_else(|| ApiError::no_such_service(key))?;
    let view = view::server_of(cfg, server).ok_or_else(|| ApiError::no_such_server(key, server))?;
    Ok((cfg.revision, view))
}

/// `GET /api/v1/config`.
pub fn config(node: &Node) -> ConfigView {
    view::config_view(&node.desired())
}
