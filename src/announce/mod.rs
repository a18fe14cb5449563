//! Bringing traffic to this node (`ANNOUNCE`): which service addresses it
//! can serve ([`servable`]), and a mode that tells the network: `bgp`
//! (host routes through BIRD, every healthy node active) or `l2` (one owner
//! per address on a flat network, chosen through Raft). The kernel settings
//! a mode needs are set by [`sysctl`]; the IPVS connection-sync daemon by
//! [`sync`].
//!
//! Everything here reports into one [`AnnounceView`], shown in
//! `GET /api/v1/node`, the cluster view, `cluster status`, the web UI and
//! `/metrics`.

pub mod bgp;
pub mod l2;
pub mod servable;
pub mod settings;
pub mod sync;
pub mod sysctl;

pub use servable::{Servable, Vip};
pub use settings::{AnnounceConfig, Mode};

use crate::api::json::{AnnounceView, ReconcileStatus, VipView};
use crate::cluster::peer_auth::Peers;
use crate::cluster::quorum::Contact;
use crate::cluster::Writer;
use crate::config::KernelMode;
use crate::health::HealthTable;
use crate::model::clock::rfc3339;
use crate::store::StateWatch;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// What a mode's task works with.
pub struct Context {
    pub cfg: AnnounceConfig,
    /// This node's RAFT_NODE_ID.
    pub name: String,
    /// RAFT_VOL_DIR (a mode keeps its files under it).
    pub vol_dir: PathBuf,
    pub kernel: KernelMode,
    /// The addresses this node can serve, as they change.
    pub servable: watch::Receiver<Servable>,
    /// Where the mode reports.
    pub status: watch::Sender<AnnounceView>,
    pub writer: Writer,
    pub peers: Peers,
    pub contact: Contact,
    pub state: StateWatch,
    /// The l2 lease renewals this node received while leading (shared with
    /// the Raft port's route).
    pub leases: l2::Leases,
}

/// Checks what the settings name exists on this host (an interface, the
/// BIRD binary) before the node touches anything.
pub fn check(cfg: &AnnounceConfig, kernel: KernelMode) -> Result<(), settings::SettingError> {
    if let Some(bgp) = &cfg.bgp {
        bgp::check(bgp, kernel)?;
    }
    if let Some(l2) = &cfg.l2 {
        l2::check(l2, kernel)?;
    }
    if let Some(sync) = &cfg.sync {
        sync::check(sync, kernel)?;
    }
    Ok(())
}

/// Runs the mode's announcer until `stop`; a mode that announces withdraws
/// (and waits for the withdrawal to propagate) before it returns.
pub async fn run(ctx: Context, stop: impl Future<Output = ()> + Send + 'static) {
    if let (Some(sync), KernelMode::On) = (ctx.cfg.sync.clone(), ctx.kernel) {
        // Started before the mode announces anything: a connection taken
        // over must already be known to the node that takes it.
        let view = tokio::task::spawn_blocking(move || sync::ensure(&sync))
            .await
            .ok();
        if let Some(view) = view {
            if let Some(problem) = &view.problem {
                tracing::warn!(%problem, "IPVS connection-sync daemons");
            }
            ctx.status.send_modify(|v| v.sync = Some(view));
        }
    }
    match ctx.cfg.mode {
        Mode::None => report_only(ctx.servable, ctx.status, stop).await,
        Mode::Bgp => bgp::run(ctx, stop).await,
        Mode::L2 => l2::run(ctx, stop).await,
    }
}

/// What the node's servable addresses are worked out from.
pub struct Inputs {
    pub state: StateWatch,
    pub health: watch::Receiver<Arc<HealthTable>>,
    /// `None`: this node programs no kernel.
    pub reconcile: Option<watch::Receiver<ReconcileStatus>>,
}

/// Publishes [`Servable`] on `tx` whenever the desired state, the health
/// view or the reconciler's status changes it, until `stop`.
pub async fn follow_servable(
    inputs: Inputs,
    tx: watch::Sender<Servable>,
    stop: impl Future<Output = ()>,
) {
    let Inputs {
        state,
        mut health,
        mut reconcile,
    } = inputs;
    let mut committed = state.subscribe();
    tokio::pin!(stop);
    let mut tracker: Option<servable::Tracker> = None;
    let mut health_now = health.borrow_and_update().clone();
    let mut status_now = reconcile.as_mut().map(|r| r.borrow_and_update().clone());
    loop {
        let desired = committed.borrow_and_update().desired.clone();
        let changed = match tracker.as_mut() {
            // Only the desired state changed: only the addresses its
            // changes touch are looked at again.
            Some(t) => t.desired_changed(desired, &health_now, status_now.as_ref()),
            None => {
                tracker = Some(servable::Tracker::new(
                    desired,
                    &health_now,
                    status_now.as_ref(),
                ));
                true
            }
        };
        if let Some(t) = tracker.as_ref().filter(|_| changed) {
            tx.send_if_modified(|now| {
                let changed = now != t.servable();
                *now = t.servable().clone();
                changed
            });
        }
        let reconciled = async {
            match reconcile.as_mut() {
                Some(r) => r.changed().await,
                None => std::future::pending().await,
            }
        };
        let alive = tokio::select! {
            r = committed.changed() => r.is_ok(),
            r = health.changed() => {
                health_now = health.borrow_and_update().clone();
                tracker = None;
                r.is_ok()
            }
            r = reconciled => {
                status_now = reconcile.as_mut().map(|r| r.borrow_and_update().clone());
                tracker = None;
                r.is_ok()
            }
            _ = &mut stop => false,
        };
        if !alive {
            return;
        }
    }
}

/// Sets the node's announcement state, keeping `since` when it is the same.
pub fn set_state(view: &mut AnnounceView, state: &str, problem: Option<String>) {
    if view.state != state {
        view.state = state.to_string();
        view.since = Some(rfc3339(SystemTime::now()));
    }
    view.problem = problem;
}

/// Remembers since when each address has been announced or not, to build
/// the [`VipView`]s a mode reports.
#[derive(Debug, Default)]
pub struct Ledger {
    since: BTreeMap<IpAddr, (bool, SystemTime)>,
}

impl Ledger {
    /// The views of every address in `servable`: `announced` holds those
    /// announced now, `owners` the l2 owners, and `why_not` says why an
    /// address that is not announced is not (after "this node cannot serve
    /// it", which comes first).
    pub fn views(
        &mut self,
        servable: &Servable,
        announced: &BTreeSet<IpAddr>,
        owners: &BTreeMap<IpAddr, String>,
        why_not: impl Fn(IpAddr) -> Option<String>,
    ) -> Vec<VipView> {
        let now = SystemTime::now();
        self.since
            .retain(|a, _| servable.contains_key(a) || announced.contains(a));
        let mut addresses: BTreeSet<IpAddr> = servable.keys().copied().collect();
        addresses.extend(announced);
        addresses
            .into_iter()
            .map(|address| {
                let on = announced.contains(&address);
                let since = self.since.entry(address).or_insert((on, now));
                if since.0 != on {
                    *since = (on, now);
                }
                let vip = servable.get(&address);
                VipView {
                    address,
                    services: vip.map(|v| v.services.clone()).unwrap_or_default(),
                    can_serve: vip.is_some_and(Vip::can_serve),
                    announced: on,
                    owner: owners.get(&address).cloned(),
                    since: Some(rfc3339(since.1)),
                    why_not: match (on, vip) {
                        (true, _) => None,
                        (false, None) => Some("no service has this address any more".into()),
                        (false, Some(v)) => v.why_not.clone().or_else(|| why_not(address)),
                    },
                }
            })
            .collect()
    }
}

/// `ANNOUNCE=none`: nothing is announced; the view still shows which
/// addresses this node could serve.
pub async fn report_only(
    mut servable: watch::Receiver<Servable>,
    status: watch::Sender<AnnounceView>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut ledger = Ledger::default();
    loop {
        let now = servable.borrow_and_update().clone();
        let vips = ledger.views(&now, &BTreeSet::new(), &BTreeMap::new(), |_| {
            Some("ANNOUNCE=none: the network brings the traffic".into())
        });
        status.send_modify(|v| v.vips = vips);
        tokio::select! {
            r = servable.changed() => if r.is_err() { return },
            _ = &mut stop => return,
        }
    }
}
