//! Health checks as the API shows them: this node's own (with the weight
//! each server has in this node's kernel because of them), and the other
//! members' as last polled over their Raft ports.

use super::Node;
use crate::api::{self, json};
use crate::health::HealthTable;
use crate::model::{DesiredState, ServiceKey};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// This node's health checks as its report shows them, with the weight
/// each server has in this node's kernel because of them (the target the
/// reconciler programs: [`crate::reconcile::plan::target`]).
pub fn local(node: &Node) -> json::NodeHealthView {
    let desired = node.desired();
    let table = node.health.table();
    let now = crate::model::clock::unix_ms();
    let mut targets = BTreeMap::new();
    let servers = node
        .health
        .snapshot()
        .into_iter()
        .map(|((skey, dkey), probed)| {
            let weight = desired.services.get(&skey).and_then(|cfg| {
                let target = targets
                    .entry(skey)
                    .or_insert_with(|| crate::reconcile::plan::target(cfg, &table, now));
                target.as_ref()?.dests.get(&dkey).map(|d| d.weight)
            });
            let t = &probed.tracker;
            json::ProbeView {
                service: api::service_id(&skey),
                server: api::server_id(&dkey),
                target: probed.target.to_string(),
                kind: probed.check.kind.name().to_string(),
                health: json::ServerHealthView {
                    state: if t.up { "up" } else { "down" }.to_string(),
                    since: t.since_ms.map(crate::model::clock::rfc3339_ms),
                    checks: t.checks,
                    latency_us: t.latency_us,
                    error: t.error.clone(),
                    weight,
                },
            }
        })
        .collect();
    json::NodeHealthView {
        servers,
        all_down: all_down(&desired, &table)
            .iter()
            .map(api::service_id)
            .collect(),
    }
}

/// Services whose probed servers are all down on this node.
pub fn all_down(desired: &DesiredState, table: &HealthTable) -> Vec<ServiceKey> {
    if table.servers.is_empty() {
        return Vec::new();
    }
    desired
        .services
        .values()
        .filter(|cfg| crate::health::all_down(cfg, table))
        .map(|cfg| cfg.service.key)
        .collect()
}

/// Adds every node's view of each probed server to `views`: this node's
/// now, the others' as last polled.
pub fn add_views(node: &Node, views: &mut [json::ServiceView]) {
    let mut by_server: BTreeMap<(String, String), BTreeMap<String, json::ServerHealthView>> =
        BTreeMap::new();
    let mine = local(node).servers;
    let peers = node
        .peer_health
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    for (name, probes) in std::iter::once((node.me.name.clone(), mine)).chain(peers) {
        for p in probes {
            by_server
                .entry((p.service, p.server))
                .or_default()
                .insert(name.clone(), p.health);
        }
    }
    if by_server.is_empty() {
        return;
    }
    for view in views {
        for server in &mut view.servers {
            if let Some(health) = by_server.remove(&(view.id.clone(), server.id.clone())) {
                server.health = health;
            }
        }
    }
}

/// Polls the other members' health checks every two seconds while any
/// server is probed, for the `health` of each server in service responses.
pub async fn poll_peers(node: Arc<Node>, mut stop: impl Future<Output = ()> + Unpin) {
    loop {
        let probed = node
            .desired()
            .services
            .values()
            .any(|cfg| cfg.servers.keys().any(|k| cfg.check_of(k).is_some()));
        let mut polled = BTreeMap::new();
        if probed {
            for (name, raft_addr) in node.members() {
                if name == node.me.name {
                    continue;
                }
                let report =
                    super::reports::peer_report(&node, &raft_addr, Duration::from_secs(1), None);
                if let Some(report) = report.await {
                    polled.insert(name, report.health.servers);
                }
            }
        }
        if let Ok(mut peers) = node.peer_health.lock() {
            *peers = polled;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut stop => return,
        }
    }
}
