//! Runs the probes: one task per probed server, started, replaced and
//! stopped as the desired state changes, each firing once per interval at
//! its own offset within it (so that 5,000 checks a second arrive evenly,
//! not in a burst). Results go into the shared [`Health`]; a change of state
//! republishes the [`HealthTable`] the reconciler watches.

use super::probe::Prober;
use super::state::{Outcome, Tracker};
use super::{HealthTable, Key, ServerState};
use crate::model::{DesiredState, HealthCheck};
use crate::store::Committed;
use std::collections::BTreeMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A server being probed, with its latest results.
#[derive(Debug, Clone)]
pub struct ProbedServer {
    /// Where the probes go (the check's address and port overrides applied).
    pub target: SocketAddr,
    pub check: HealthCheck,
    pub tracker: Tracker,
}

/// This node's health checking, shared by the probe tasks (which record),
/// the reconciler (which watches the table) and the API (which reads it).
pub struct Health {
    table: watch::Sender<Arc<HealthTable>>,
    probed: Mutex<BTreeMap<Key, ProbedServer>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Health {
    pub fn new(metrics: Option<Arc<crate::metrics::Metrics>>) -> Arc<Health> {
        Arc::new(Health {
            table: watch::Sender::new(Arc::new(HealthTable::default())),
            probed: Mutex::new(BTreeMap::new()),
            metrics,
        })
    }

    /// The table as of now, and every change from here on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthTable>> {
        self.table.subscribe()
    }

    /// Every probed server and its latest results.
    pub fn snapshot(&self) -> Vec<(Key, ProbedServer)> {
        self.lock().iter().map(|(k, p)| (*k, p.clone())).collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Key, ProbedServer>> {
        // A probe task that panicked mid-update leaves a tracker at worst
        // one probe behind; keep going rather than poison every reader.
        self.probed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a probe of `key` (as configured by `check`: a result of a
    /// check that was just replaced is dropped).
    pub fn record(&self, key: &Key, check: &HealthCheck, outcome: &Outcome, now_ms: u64) {
        let changed = {
            let mut probed = self.lock();
            let Some(server) = probed.get_mut(key).filter(|s| s.check == *check) else {
                return;
            };
            let changed = server
                .tracker
                .record(outcome, check.rise, check.fall, now_ms);
            if let Some(m) = &self.metrics {
                m.health_probe(key, outcome, &server.tracker);
            }
            changed.then(|| (server.tracker.clone(), server.target))
        };
        if let Some((tracker, target)) = changed {
            if tracker.up {
                tracing::info!(service = %key.0, server = %key.1, %target, "real server is up");
            } else {
                tracing::warn!(
                    service = %key.0, server = %key.1, %target,
                    error = tracker.error.as_deref().unwrap_or(""),
                    "real server is down"
                );
            }
            self.table.send_modify(|t| {
                Arc::make_mut(t).servers.insert(
                    *key,
                    ServerState {
                        up: tracker.up,
                        since_ms: tracker.since_ms,
                    },
                );
            });
        }
    }

    /// Makes the probed set what `wanted` says: new servers start up, a
    /// server whose check changed keeps its state, a server no longer
    /// probed is forgotten.
    fn reconfigure(&self, wanted: &BTreeMap<Key, (SocketAddr, HealthCheck)>) {
        let mut probed = self.lock();
        probed.retain(|k, _| wanted.contains_key(k));
        for (key, (target, check)) in wanted {
            let entry = probed.entry(*key).or_insert_with(|| ProbedServer {
                target: *target,
                check: check.clone(),
                tracker: Tracker::default(),
            });
            entry.target = *target;
            entry.check = check.clone();
        }
        let states: BTreeMap<Key, ServerState> = probed
            .iter()
            .map(|(k, p)| {
                (
                    *k,
                    ServerState {
                        up: p.tracker.up,
                        since_ms: p.tracker.since_ms,
                    },
                )
            })
            .collect();
        drop(probed);
        self.table.send_if_modified(|t| {
            if t.servers == states {
                return false;
            }
            Arc::make_mut(t).servers = states;
            true
        });
    }
}

/// What to probe for `desired`: every server with a check, where.
pub fn wanted(desired: &DesiredState) -> BTreeMap<Key, (SocketAddr, HealthCheck)> {
    let mut out = BTreeMap::new();
    for (skey, cfg) in &desired.services {
        for (dkey, dest) in &cfg.servers {
            if let Some(check) = cfg.check_of(dkey) {
                let addr = check.address.unwrap_or(dest.addr);
                let port = check.port.unwrap_or(dest.port);
                out.insert((*skey, *dkey), (SocketAddr::new(addr, port), check.clone()));
            }
        }
    }
    out
}

/// Runs the probes of the committed desired state (`rx`: the state
/// machine's, [`crate::store::StateWatch::subscribe`]) until `shutdown`.
pub async fn run(
    health: Arc<Health>,
    mut rx: watch::Receiver<Committed>,
    prober: Prober,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tasks: BTreeMap<Key, ((SocketAddr, HealthCheck), AbortHandle)> = BTreeMap::new();
    // Offsets within the interval: stable per server, random per process.
    let spread = std::collections::hash_map::RandomState::new();
    loop {
        let desired = rx.borrow_and_update().desired.clone();
        let wanted = wanted(&desired);
        health.reconfigure(&wanted);
        tasks.retain(|key, (spec, task)| {
            let keep = wanted.get(key) == Some(spec);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, spec) in wanted {
            if tasks.contains_key(&key) {
                continue;
            }
            let interval = u64::from(spec.1.interval_ms.max(1));
            let offset = Duration::from_millis(spread.hash_one(key) % interval);
            let task = tokio::spawn(probe_loop(
                health.clone(),
                key,
                spec.clone(),
                prober.clone(),
                offset,
            ));
            tasks.insert(key, (spec, task.abort_handle()));
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = &mut shutdown => break,
        }
    }
    for (_, (_, task)) in tasks {
        task.abort();
    }
}

/// Probes one server every interval, starting `offset` into the first.
async fn probe_loop(
    health: Arc<Health>,
    key: Key,
    (target, check): (SocketAddr, HealthCheck),
    prober: Prober,
    offset: Duration,
) {
    let interval = Duration::from_millis(u64::from(check.interval_ms.max(1)));
    let mut next = Instant::now() + offset;
    loop {
        tokio::time::sleep_until(next).await;
        let outcome = prober.probe(&check, target).await;
        health.record(&key, &check, &outcome, crate::reconcile::unix_ms());
        // A probe never outlasts its interval (timeout < interval); a
        // runtime too busy to keep up skips beats rather than bursting.
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}
