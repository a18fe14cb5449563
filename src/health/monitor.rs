//! Runs the probes: one task per probed server, started, replaced and
//! stopped as the desired state changes, each firing once per interval at
//! its own offset within it (so that 5,000 checks a second arrive evenly,
//! not in a burst). Results go into the shared [`Health`]; a change of state
//! republishes the [`HealthTable`] the reconciler watches.

use super::probe::Prober;
use super::state::{Outcome, Tracker};
use super::{HealthTable, Key, ServerState};
use crate::model::{DesiredState, DestKey, HealthCheck, ServiceKey};
use crate::store::Committed;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    observer: Option<Arc<dyn ProbeObserver>>,
}

/// Told of every recorded probe (the metrics count them); a trait so that
/// health checking does not depend on what counts.
pub trait ProbeObserver: Send + Sync {
    fn probed(&self, outcome: &Outcome);
}

impl Health {
    pub fn new(observer: Option<Arc<dyn ProbeObserver>>) -> Arc<Health> {
        Arc::new(Health {
            table: watch::Sender::new(Arc::new(HealthTable::default())),
            probed: Mutex::new(BTreeMap::new()),
            observer,
        })
    }

    /// The table as of now, and every change from here on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HealthTable>> {
        self.table.subscribe()
    }

    /// The table as of now.
    pub fn table(&self) -> Arc<HealthTable> {
        self.table.borrow().clone()
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
            if let Some(observer) = &self.observer {
                observer.probed(outcome);
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

    /// Makes the probed servers of the `services` what `wanted` (their
    /// servers to probe) says: new servers start up, a server whose check
    /// changed keeps its state, a server no longer probed is forgotten.
    /// Other services are not looked at, so a write costs what it changes.
    fn reconfigure(
        &self,
        services: &BTreeSet<ServiceKey>,
        wanted: &BTreeMap<Key, (SocketAddr, HealthCheck)>,
    ) {
        let mut probed = self.lock();
        let gone: Vec<Key> = services
            .iter()
            .flat_map(|s| probed.range(range_of(s)).map(|(k, _)| *k))
            .filter(|k| !wanted.contains_key(k))
            .collect();
        for key in &gone {
            probed.remove(key);
        }
        let mut added = Vec::new();
        for (key, (target, check)) in wanted {
            let entry = probed.entry(*key).or_insert_with(|| {
                added.push(*key);
                ProbedServer {
                    target: *target,
                    check: check.clone(),
                    tracker: Tracker::default(),
                }
            });
            entry.target = *target;
            entry.check = check.clone();
        }
        drop(probed);
        if gone.is_empty() && added.is_empty() {
            return;
        }
        self.table.send_modify(|t| {
            let t = Arc::make_mut(t);
            for key in &gone {
                t.servers.remove(key);
            }
            for key in &added {
                t.servers.insert(
                    *key,
                    ServerState {
                        up: true,
                        since_ms: None,
                    },
                );
            }
        });
    }
}

/// Every key of `service`'s servers, for a range over a map keyed by
/// (service, server).
fn range_of(service: &ServiceKey) -> std::ops::RangeInclusive<Key> {
    let lowest = DestKey {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: 0,
    };
    let highest = DestKey {
        addr: IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        port: u16::MAX,
    };
    (*service, lowest)..=(*service, highest)
}

/// What to probe for the `services` of `desired`: every server with a
/// check, where.
pub fn wanted<'a>(
    desired: &'a DesiredState,
    services: impl IntoIterator<Item = &'a ServiceKey>,
) -> BTreeMap<Key, (SocketAddr, HealthCheck)> {
    let mut out = BTreeMap::new();
    for skey in services {
        let Some(cfg) = desired.services.get(skey) else {
            continue;
        };
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
    let mut current = Arc::new(DesiredState::default());
    loop {
        let desired = rx.borrow_and_update().desired.clone();
        // Only the services whose revision moved: a write to one service
        // among thousands touches that one's probes.
        let services = desired.changed_since(&current);
        current = desired;
        let wanted = wanted(&current, &services);
        health.reconfigure(&services, &wanted);
        let stale: Vec<Key> = services
            .iter()
            .flat_map(|s| tasks.range(range_of(s)).map(|(k, _)| *k))
            .filter(|k| wanted.get(k) != tasks.get(k).map(|(spec, _)| spec))
            .collect();
        for key in stale {
            if let Some((_, task)) = tasks.remove(&key) {
                task.abort();
            }
        }
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
        health.record(&key, &check, &outcome, crate::model::clock::unix_ms());
        // A probe never outlasts its interval (timeout < interval); a
        // runtime too busy to keep up skips beats rather than bursting.
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::probe::{Failure, Reason};
    use crate::model::{CheckKind, Destination, Protocol, ServiceConfig, VirtualService};

    fn service(port: u16, servers: &[u8]) -> ServiceConfig {
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        };
        let mut cfg = ServiceConfig::new(
            VirtualService::new(key),
            servers
                .iter()
                .map(|l| Destination::new(format!("198.51.100.{l}").parse().unwrap(), 80)),
            1,
        );
        cfg.options.health_check = Some(HealthCheck {
            rise: 1,
            fall: 1,
            ..HealthCheck::new(CheckKind::Tcp)
        });
        cfg
    }

    fn state(services: &[ServiceConfig]) -> DesiredState {
        services.iter().cloned().collect()
    }

    #[test]
    fn a_change_touches_only_its_service() {
        let health = Health::new(None);
        let (a, b) = (service(80, &[1, 2]), service(81, &[3]));
        let first = state(&[a.clone(), b.clone()]);
        let all: BTreeSet<ServiceKey> = first.services.keys().copied().collect();
        health.reconfigure(&all, &wanted(&first, &all));
        assert_eq!(health.table().servers.len(), 3);
        // b's server goes down.
        let (bkey, check) = {
            let snap = health.snapshot();
            let (k, p) = snap.iter().find(|(k, _)| k.0 == b.service.key).unwrap();
            (*k, p.check.clone())
        };
        let down: super::Outcome = Err(Failure::new(Reason::Refused, "refused"));
        health.record(&bkey, &check, &down, 5);
        // a loses a server: only a is looked at, b's state stays.
        let next = state(&[service(80, &[1]), b]);
        let changed: BTreeSet<ServiceKey> = [a.service.key].into();
        health.reconfigure(&changed, &wanted(&next, &changed));
        let table = health.table();
        assert_eq!(table.servers.len(), 2);
        assert!(!table.servers[&bkey].up);
        let removed = DestKey {
            addr: "198.51.100.2".parse().unwrap(),
            port: 80,
        };
        assert!(range_of(&a.service.key).contains(&(a.service.key, removed)));
        assert!(!table.servers.contains_key(&(a.service.key, removed)));
    }
}
