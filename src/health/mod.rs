//! Node-local health checking of real servers. Each node probes every
//! server that has a check, from its own network position, and keeps the
//! results to itself: they never enter the Raft log (a flapping server would
//! churn it, and what one node cannot reach another may). The reconciler
//! reads the published [`HealthTable`] and lowers the weights of down
//! servers in this node's kernel only ([`overlay`]).
//!
//! - `probe`: one probe (tcp, http, https, udp, dns) within a timeout.
//! - `state`: the rise/fall state machine and the slow-start ramp (pure).
//! - `monitor`: one task per probed server on the async runtime, spread
//!   over the interval so that thousands do not fire together.

pub mod monitor;
pub mod probe;
pub mod state;

pub use monitor::{run, Health, ProbeObserver, ProbedServer};
pub use state::{Outcome, Tracker};

use crate::model::{DestKey, Destination, ServiceConfig, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};

/// A probed server: its service and itself.
pub type Key = (ServiceKey, DestKey);

/// What the reconciler needs to know of a probed server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerState {
    pub up: bool,
    /// When it last changed state (unix ms); `None` while it is in the state
    /// it started in (up).
    pub since_ms: Option<u64>,
}

/// The state of every probed server on this node, republished whenever one
/// changes state (not on every probe).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthTable {
    pub servers: BTreeMap<Key, ServerState>,
}

impl HealthTable {
    pub fn get(&self, service: &ServiceKey, server: &DestKey) -> Option<ServerState> {
        self.servers.get(&(*service, *server)).copied()
    }

    fn is_down(&self, service: &ServiceKey, server: &DestKey) -> bool {
        self.get(service, server).is_some_and(|s| !s.up)
    }

    /// The services whose servers' states differ between two tables.
    pub fn changed(&self, other: &HealthTable) -> BTreeSet<ServiceKey> {
        let mut keys = BTreeSet::new();
        for (key, state) in &self.servers {
            if other.servers.get(key) != Some(state) {
                keys.insert(key.0);
            }
        }
        for key in other.servers.keys() {
            if !self.servers.contains_key(key) {
                keys.insert(key.0);
            }
        }
        keys
    }

    /// Services with a server ramping up at `now_ms` (slow start), which the
    /// reconciler revisits until the ramps end.
    pub fn ramping(&self, cfg: &ServiceConfig, now_ms: u64) -> bool {
        let slow = u64::from(cfg.options.health_policy.slow_start_ms);
        slow > 0
            && cfg.servers.keys().any(|k| {
                self.get(&cfg.service.key, k).is_some_and(|s| {
                    s.up && s.since_ms.is_some_and(|t| now_ms.saturating_sub(t) < slow)
                })
            })
    }
}

/// Whether every server of `cfg` that takes traffic is probed and down:
/// then removing them all would leave the service with nothing, and the
/// policy decides (fail open, or the fallback server).
pub fn all_down(cfg: &ServiceConfig, table: &HealthTable) -> bool {
    let mut serving = cfg
        .servers
        .keys()
        .filter(|k| cfg.draining.is_none() && !cfg.draining_servers.contains_key(k))
        .peekable();
    serving.peek().is_some()
        && serving.all(|k| cfg.check_of(k).is_some() && table.is_down(&cfg.service.key, k))
}

/// Lowers the weights of `dests` (what the kernel should hold for `cfg`,
/// drains applied) by this node's view of their health: down servers to 0
/// (or out, with `unhealthy: remove`), recovering ones ramped (slow start).
/// The configured weight and drains always win: health only lowers. When
/// every server is down the policy decides: fail open (configured weights
/// stay) or the fallback server takes the traffic.
pub fn overlay(
    cfg: &ServiceConfig,
    dests: &mut BTreeMap<DestKey, Destination>,
    table: &HealthTable,
    now_ms: u64,
) {
    let policy = &cfg.options.health_policy;
    let key = cfg.service.key;
    if all_down(cfg, table) {
        let Some(fallback) = policy.fallback else {
            return;
        };
        if policy.remove_unhealthy {
            dests.clear();
        } else {
            dests.values_mut().for_each(|d| d.weight = 0);
        }
        dests.insert(
            fallback.key(),
            Destination {
                weight: fallback.weight.max(1),
                ..fallback
            },
        );
        return;
    }
    dests.retain(|k, d| {
        if cfg.check_of(k).is_none() {
            return true;
        }
        match table.get(&key, k) {
            Some(ServerState { up: false, .. }) => {
                d.weight = 0;
                !policy.remove_unhealthy
            }
            Some(ServerState {
                up: true,
                since_ms: Some(since),
            }) => {
                d.weight = state::ramped_weight(d.weight, since, policy.slow_start_ms, now_ms);
                true
            }
            _ => true,
        }
    });
}

#[cfg(test)]
mod tests;
