//! The reconciler: makes this node's IPVS table match the committed desired
//! state, and keeps it so.
//!
//! [`plan`] is the pure part (desired, kernel, owned → changes). [`Engine`]
//! runs one pass against a [`Kernel`]: read the services in scope, plan,
//! record new owned services, apply the changes (one failing change does not
//! stop the others), remember what failed. [`run`] is the loop: a pass over
//! the services that changed after every applied Raft entry (it never reads
//! Raft, only the state machine's watch channel), a full resync on a timer
//! that reads the whole table and repairs drift, retries with backoff, and
//! a pass when a drain's grace period ends.
//!
//! Start-up is a full pass, never a flush: a node restarted with its kernel
//! already matching makes no change, so established connections survive.

pub mod owned;
pub mod plan;
pub mod table;

pub use crate::api::json::{FailedChange, ReconcileStatus};
pub use owned::{Owned, OwnedError};
pub use table::{TableError, TablePublisher, TableReader};

use crate::api::json::KernelTable;
use crate::config::Ownership;
use crate::errors::chain;
use crate::health::HealthTable;
use crate::ipvs::vip::VipTable;
use crate::ipvs::{Change, Kernel};
use crate::model::clock::{rfc3339, unix_ms};
use crate::model::{DesiredState, ServiceEntry, ServiceKey};
use crate::store::{Committed, StateWatch};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Above this many changed services, one dump of the table is cheaper than
/// reading them one by one.
const FULL_PASS_ABOVE: usize = 64;

/// First and longest wait before retrying failed changes.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Which services a pass reads and plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole table (start-up, resync).
    All,
    /// Only these services (a change, a retry, a drain's end).
    Services(BTreeSet<ServiceKey>),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Changes the kernel accepted.
    pub applied: usize,
    /// Changes it refused (also kept in [`Engine::failed`] until they pass).
    pub failed: usize,
    /// Foreign services seen (full passes only).
    pub foreign: Option<Vec<ServiceKey>>,
    /// The pass could not read the kernel or record ownership, so it
    /// changed nothing.
    pub error: Option<String>,
    /// Each change attempted: its kind and whether the kernel accepted it.
    pub kinds: Vec<(&'static str, bool)>,
}

/// One node's table and what it knows about it.
pub struct Engine<K> {
    kernel: K,
    /// The VIP interface, when this node binds service addresses.
    vips: Option<Box<dyn VipTable>>,
    /// What the VIP interface held after the last sync (`None`: unknown).
    bound: Option<BTreeSet<IpAddr>>,
    /// Why addresses could not be bound or removed, retried every pass.
    vip_failures: Vec<(String, String)>,
    owned: Owned,
    ownership: Ownership,
    /// Changes that failed in the last pass over their service.
    failed: BTreeMap<ServiceKey, Vec<(Change, String)>>,
    /// Passes in a row that failed, per service.
    attempts: BTreeMap<ServiceKey, u32>,
}

impl<K: Kernel> Engine<K> {
    pub fn new(kernel: K, owned: Owned, ownership: Ownership) -> Engine<K> {
        Engine {
            kernel,
            vips: None,
            bound: None,
            vip_failures: Vec::new(),
            owned,
            ownership,
            failed: BTreeMap::new(),
            attempts: BTreeMap::new(),
        }
    }

    /// Binds the addresses of `bind_address` services through `vips`.
    pub fn with_vips(mut self, vips: Box<dyn VipTable>) -> Engine<K> {
        self.vips = Some(vips);
        self
    }

    /// The addresses on the VIP interface after the last sync.
    pub fn bound(&self) -> Vec<IpAddr> {
        self.bound.iter().flatten().copied().collect()
    }

    /// Whether anything awaits a retry.
    pub fn has_failures(&self) -> bool {
        !self.failed.is_empty() || !self.vip_failures.is_empty()
    }

    pub fn kernel(&mut self) -> &mut K {
        &mut self.kernel
    }

    pub fn owned(&self) -> &BTreeSet<ServiceKey> {
        self.owned.keys()
    }

    /// The whole table as the kernel holds it now, with the counters, and
    /// the services this node owns (what `GET /api/v1/node/kernel` shows).
    pub fn table(&mut self) -> Result<KernelTable, String> {
        let info = self.kernel.info().map_err(|e| chain(&e))?;
        let services = self.kernel.services().map_err(|e| chain(&e))?;
        Ok(KernelTable {
            info,
            services,
            owned: self.owned.keys().iter().copied().collect(),
            target: BTreeMap::new(),
        })
    }

    /// Services with changes awaiting a retry.
    pub fn failing(&self) -> BTreeSet<ServiceKey> {
        self.failed.keys().copied().collect()
    }

    /// Every change awaiting a retry, for the status.
    pub fn failed(&self) -> Vec<FailedChange> {
        self.failed
            .iter()
            .flat_map(|(key, changes)| {
                let attempts = self.attempts.get(key).copied().unwrap_or(0);
                changes.iter().map(move |(change, error)| FailedChange {
                    service: crate::model::ids::service_id(key),
                    change: change.to_string(),
                    error: error.clone(),
                    attempts,
                })
            })
            .chain(
                self.vip_failures
                    .iter()
                    .map(|(change, error)| FailedChange {
                        service: "vip".into(),
                        change: change.clone(),
                        error: error.clone(),
                        attempts: 1,
                    }),
            )
            .collect()
    }

    /// Makes the services in `scope` match `desired` at `now_ms`.
    pub fn pass(
        &mut self,
        desired: &DesiredState,
        health: &HealthTable,
        scope: &Scope,
        now_ms: u64,
    ) -> PassReport {
        let kernel = match self.read(scope) {
            Ok(kernel) => kernel,
            Err(e) => {
                return PassReport {
                    error: Some(e),
                    ..PassReport::default()
                }
            }
        };
        let keys = match scope {
            Scope::All => None,
            Scope::Services(keys) => Some(keys),
        };
        let plan = plan::plan(
            desired,
            &kernel,
            keys,
            self.owned.keys(),
            self.ownership,
            health,
            now_ms,
        );
        // Own before creating: a crash after the change must not leave a
        // service that a restarted node would take for someone else's.
        if let Err(e) = self.owned.update(plan.adopt.iter().copied(), []) {
            return PassReport {
                error: Some(chain(&e)),
                ..PassReport::default()
            };
        }
        let results = self.kernel.apply_batch(&plan.changes);
        let mut report = PassReport {
            foreign: keys.is_none().then(|| plan.foreign.clone()),
            ..PassReport::default()
        };
        let mut released = plan.release.clone();
        let mut failed: BTreeMap<ServiceKey, Vec<(Change, String)>> = BTreeMap::new();
        for (change, result) in plan.changes.iter().zip(results) {
            report.kinds.push((kind(change), result.is_ok()));
            match result {
                Ok(()) => {
                    report.applied += 1;
                    if let Change::DelService(key) = change {
                        released.insert(*key);
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    if let Some(key) = service_of(change) {
                        failed
                            .entry(key)
                            .or_default()
                            .push((change.clone(), chain(&e)));
                    }
                }
            }
        }
        if let Err(e) = self.owned.update([], released) {
            report.error = Some(chain(&e));
        }
        // The pass re-judged every service in scope: forget their old
        // failures, keep the new ones.
        match keys {
            None => self.failed.clear(),
            Some(keys) => self.failed.retain(|k, _| !keys.contains(k)),
        }
        self.attempts.retain(|k, _| failed.contains_key(k));
        for key in failed.keys() {
            *self.attempts.entry(*key).or_default() += 1;
        }
        self.failed.extend(failed);
        self.sync_vips(desired, keys.is_none(), now_ms, &mut report);
        report
    }

    /// Makes the VIP interface hold the addresses of the services that ask
    /// for it. Skipped when nothing changed since the last sync (except on
    /// full passes, which repair drift), and on hosts that never bound an
    /// address (the interface is not created for nothing).
    fn sync_vips(
        &mut self,
        desired: &DesiredState,
        full: bool,
        now_ms: u64,
        report: &mut PassReport,
    ) {
        let Some(vips) = self.vips.as_mut() else {
            return;
        };
        let wanted = plan::vips(desired, now_ms);
        let unchanged = self.bound.as_ref() == Some(&wanted) && self.vip_failures.is_empty();
        if unchanged && !full {
            return;
        }
        if wanted.is_empty() && self.bound.as_ref().is_none_or(BTreeSet::is_empty) {
            match vips.addresses() {
                Ok(current) if current.is_empty() => {
                    self.bound = Some(current);
                    return;
                }
                _ => {}
            }
        }
        let sync = vips.sync(&wanted);
        report.applied += sync.added.len() + sync.removed.len();
        self.vip_failures = sync
            .failed
            .iter()
            .map(|(addr, e)| (format!("bind {addr}"), chain(e)))
            .chain(
                sync.error
                    .iter()
                    .map(|e| ("set up the VIP interface".to_string(), chain(e))),
            )
            .collect();
        report.failed += self.vip_failures.len();
        self.bound = vips.addresses().ok();
    }

    /// The kernel's services in scope, by key.
    fn read(&mut self, scope: &Scope) -> Result<BTreeMap<ServiceKey, ServiceEntry>, String> {
        let entries = match scope {
            Scope::All => self.kernel.services().map_err(|e| chain(&e))?,
            Scope::Services(keys) => {
                let mut entries = Vec::with_capacity(keys.len());
                for key in keys {
                    if let Some(entry) = self.kernel.service(key).map_err(|e| chain(&e))? {
                        entries.push(entry);
                    }
                }
                entries
            }
        };
        Ok(entries.into_iter().map(|e| (e.service.key, e)).collect())
    }
}

/// A change's kind, for the metrics.
fn kind(change: &Change) -> &'static str {
    match change {
        Change::AddService(_) => "add_service",
        Change::EditService(_) => "edit_service",
        Change::DelService(_) => "delete_service",
        Change::AddDest(..) => "add_server",
        Change::EditDest(..) => "edit_server",
        Change::DelDest(..) => "delete_server",
        Change::Flush => "flush",
        Change::Zero(_) => "zero",
        Change::SetTimeouts(_) => "set_timeouts",
    }
}

fn service_of(change: &Change) -> Option<ServiceKey> {
    match change {
        Change::AddService(s) | Change::EditService(s) => Some(s.key),
        Change::DelService(k)
        | Change::AddDest(k, _)
        | Change::EditDest(k, _)
        | Change::DelDest(k, _) => Some(*k),
        Change::Flush | Change::Zero(_) | Change::SetTimeouts(_) => None,
    }
}

/// The reconciler's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `on` or `memory`, for the status.
    pub kernel: String,
    pub ownership: Ownership,
    pub resync: Duration,
}

/// Why the loop wakes up.
enum Wake {
    Changed,
    Health,
    Resync,
    Retry,
    DrainOver,
    Ramp,
    Stop,
}

/// Where the loop reports what it does.
pub struct Outputs {
    /// The status (`GET /api/v1/node`; `?wait=` reads its programmed index).
    pub status: watch::Sender<ReconcileStatus>,
    /// The kernel table, read when asked.
    pub table: TablePublisher,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Runs passes until `shutdown` completes, publishing the status and the
/// table on `out`. The engine's kernel calls block, so each pass runs on a
/// blocking thread.
pub async fn run<K: Kernel + Send + 'static>(
    engine: Engine<K>,
    state: StateWatch,
    mut health_rx: watch::Receiver<Arc<HealthTable>>,
    settings: Settings,
    out: Outputs,
    shutdown: impl Future<Output = ()>,
) {
    let Outputs {
        status,
        mut table,
        metrics,
    } = out;
    tokio::pin!(shutdown);
    let mut rx = state.subscribe();
    let mut committed: Committed = rx.borrow_and_update().clone();
    let mut health: Arc<HealthTable> = health_rx.borrow_and_update().clone();
    let mut engine = Some(engine);
    let mut scope = Scope::All;
    let mut resync_due = Instant::now() + settings.resync;
    let mut retry: Option<(Instant, Duration)> = None;
    status.send_modify(|s| {
        s.kernel = settings.kernel.clone();
        s.ownership = format!("{:?}", settings.ownership).to_lowercase();
    });
    let mut is_resync = false;
    loop {
        // One pass.
        let Some(mut current) = engine.take() else {
            return;
        };
        let desired: Arc<DesiredState> = committed.desired.clone();
        let pass_health = health.clone();
        let pass_scope = scope.clone();
        let started = std::time::Instant::now();
        let joined = tokio::task::spawn_blocking(move || {
            let report = current.pass(&desired, &pass_health, &pass_scope, unix_ms());
            (current, report)
        })
        .await;
        let (done, report) = match joined {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "a reconcile pass panicked; the reconciler stops");
                status.send_modify(|s| s.error = Some(format!("reconciler stopped: {e}")));
                return;
            }
        };
        metrics.pass(&crate::metrics::PassMetrics {
            elapsed: started.elapsed(),
            changes: &report.kinds,
            resync: is_resync,
        });
        let now = SystemTime::now();
        let failed = done.failed();
        let bound = done.bound();
        let read_failed = report.error.is_some();
        log_pass(&report, &scope);
        status.send_modify(|s| {
            s.seen_index = committed.applied_index();
            s.passes += 1;
            s.changes += report.applied as u64;
            if is_resync {
                s.drift_repaired += report.applied as u64;
                s.last_resync = Some(rfc3339(now));
            }
            if let Some(foreign) = &report.foreign {
                s.foreign = foreign.iter().map(crate::model::ids::service_id).collect();
            }
            s.error = report.error.clone();
            s.pending = failed.len();
            s.vips = bound;
            s.failed = failed.clone();
            if report.error.is_none() && failed.is_empty() {
                s.programmed_index = committed.applied_index();
                s.last_success = Some(rfc3339(now));
            }
        });
        let failing = done.failing();
        let has_failures = done.has_failures();
        engine = Some(done);
        retry = if read_failed || has_failures {
            let wait = retry.map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
            Some((Instant::now() + wait, wait))
        } else {
            None
        };
        let drain_due = next_drain_deadline(&committed.desired, unix_ms());
        let ramping = ramping(&committed.desired, &health, unix_ms());
        // Slow start moves weights in steps; a second apart is smooth
        // enough and cheap (a pass over the ramping services only).
        let ramp_due = (!ramping.is_empty()).then(|| Instant::now() + RAMP_STEP);

        // Wait for the next reason to pass; reads of the table asked for
        // meanwhile are served between passes.
        let wake = loop {
            // `None`: the API or the metrics asked for the table.
            let wake = tokio::select! {
                changed = rx.changed() => Some(if changed.is_ok() { Wake::Changed } else { Wake::Stop }),
                changed = health_rx.changed() => Some(if changed.is_ok() { Wake::Health } else { Wake::Stop }),
                _ = tokio::time::sleep_until(resync_due) => Some(Wake::Resync),
                _ = sleep_until_opt(retry.map(|(at, _)| at)) => Some(Wake::Retry),
                _ = sleep_until_opt(drain_due) => Some(Wake::DrainOver),
                _ = sleep_until_opt(ramp_due) => Some(Wake::Ramp),
                asked = table.requested() => (!asked).then_some(Wake::Stop),
                _ = &mut shutdown => Some(Wake::Stop),
            };
            if let Some(wake) = wake {
                break wake;
            }
            let Some(mut current) = engine.take() else {
                return;
            };
            let request = table.take_request();
            let read = tokio::task::spawn_blocking(move || {
                let read = current.table();
                (current, read)
            })
            .await;
            match read {
                Ok((done, read)) => {
                    engine = Some(done);
                    table.publish(request, read);
                }
                Err(e) => {
                    tracing::error!(error = %e, "a read of the kernel table panicked; the reconciler stops");
                    status.send_modify(|s| s.error = Some(format!("reconciler stopped: {e}")));
                    return;
                }
            }
        };
        is_resync = false;
        scope = match wake {
            Wake::Stop => return,
            Wake::Changed => {
                let next = rx.borrow_and_update().clone();
                let keys = next.desired.changed_since(&committed.desired);
                committed = next;
                let mut keys = keys;
                if retry.is_some() && !read_failed {
                    keys.extend(failing);
                }
                if read_failed || keys.len() > FULL_PASS_ABOVE {
                    Scope::All
                } else {
                    Scope::Services(keys)
                }
            }
            Wake::Resync => {
                resync_due = Instant::now() + settings.resync;
                is_resync = true;
                Scope::All
            }
            Wake::Retry if read_failed => Scope::All,
            Wake::Retry => Scope::Services(failing),
            Wake::DrainOver => Scope::Services(draining(&committed.desired)),
            Wake::Health => {
                let next = health_rx.borrow_and_update().clone();
                let keys = next.changed(&health);
                health = next;
                Scope::Services(keys)
            }
            Wake::Ramp => Scope::Services(ramping),
        };
    }
}

/// Logs what a pass did, when it did anything.
fn log_pass(report: &PassReport, scope: &Scope) {
    let services = match scope {
        Scope::All => "all".to_string(),
        Scope::Services(keys) => keys.len().to_string(),
    };
    if let Some(error) = &report.error {
        tracing::warn!(%error, services, "reconcile pass could not run; retrying");
    } else if report.failed > 0 {
        tracing::warn!(
            applied = report.applied,
            failed = report.failed,
            services,
            "reconcile pass left changes failed; retrying"
        );
    } else if report.applied > 0 {
        tracing::info!(applied = report.applied, services, "reconciled the kernel");
    }
}

/// When the next drain in `desired` ends, as a tokio instant.
fn next_drain_deadline(desired: &DesiredState, now_ms: u64) -> Option<Instant> {
    let next = desired
        .services
        .values()
        .filter_map(|cfg| {
            cfg.draining
                .iter()
                .chain(cfg.draining_servers.values())
                .map(|d| d.deadline_ms())
                .filter(|&deadline| deadline > now_ms)
                .min()
        })
        .min()?;
    Some(Instant::now() + Duration::from_millis(next - now_ms))
}

/// How often the weights of recovering servers step up (slow start).
const RAMP_STEP: Duration = Duration::from_secs(1);

/// Services with a server ramping up (slow start) at `now_ms`.
fn ramping(desired: &DesiredState, health: &HealthTable, now_ms: u64) -> BTreeSet<ServiceKey> {
    if health.servers.is_empty() {
        return BTreeSet::new();
    }
    desired
        .services
        .iter()
        .filter(|(_, cfg)| health.ramping(cfg, now_ms))
        .map(|(key, _)| *key)
        .collect()
}

/// Services with a drain in progress (or just over).
fn draining(desired: &DesiredState) -> BTreeSet<ServiceKey> {
    desired
        .services
        .iter()
        .filter(|(_, cfg)| cfg.draining.is_some() || !cfg.draining_servers.is_empty())
        .map(|(key, _)| *key)
        .collect()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// With `IPVS_KERNEL=off` nothing is programmed: the status follows the
/// applied index, so `?wait=applied` still means "applied on every node".
pub async fn follow_applied(
    state: StateWatch,
    status: watch::Sender<ReconcileStatus>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut rx = state.subscribe();
    status.send_modify(|s| s.kernel = "off".into());
    loop {
        let index = rx.borrow_and_update().applied_index();
        status.send_modify(|s| {
            s.seen_index = index;
            s.programmed_index = index;
        });
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = &mut shutdown => return,
        }
    }
}

#[cfg(test)]
mod tests;
