//! `ANNOUNCE=l2`: one owner per address on a flat network, chosen through
//! Raft and fenced by leases.
//!
//! Two tasks run on every node:
//! - the holder ([`hold`]): renews this node's lease with the leader every
//!   `lease/5` ([`RENEW_PATH`]), and holds on ANNOUNCE_INTERFACE exactly the
//!   addresses the committed state gives it while its lease is valid,
//!   announcing each one it takes (gratuitous ARP/unsolicited NA, repeated
//!   every L2_GARP_REFRESH);
//! - the placer ([`place_while_leading`]): on the leader only, commits the
//!   owners [`placement::place`] decides from the renewals it received.
//!
//! The timing and why it is safe are in [`lease`].

pub mod garp;
pub mod lease;
pub mod link;
pub mod placement;
pub mod probe;

use super::settings::{SettingError, Sysctls, L2};
use super::sysctl::{self, Wanted};
use super::{set_state, Context, Servable};
use crate::api::json::{AnnounceView, L2View};
use crate::cluster::peer_auth::Peers;
use crate::cluster::quorum::Contact;
use crate::config::KernelMode;
use crate::model::clock::rfc3339;
use crate::model::Command;
use crate::raft::Raft;
use crate::store::StateWatch;
use actix_web::web::{self, Data, Json};
use lease::{NodeLease, Timing};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// `POST` on the leader's Raft port: a node's [`Renewal`], answered by a
/// [`Grant`].
pub const RENEW_PATH: &str = "/raft/l2/renew";

/// Checks the host has what the mode needs: the interface exists.
pub fn check(cfg: &L2, kernel: KernelMode) -> Result<(), SettingError> {
    if kernel == KernelMode::On && !link::exists(&cfg.interface) {
        return Err(SettingError {
            variable: "ANNOUNCE_INTERFACE",
            problem: format!(
                "no interface {} on this host: name the interface on the clients' network \
                 (see `ip link`)",
                cfg.interface
            ),
        });
    }
    Ok(())
}

/// The kernel settings l2 needs on ANNOUNCE_INTERFACE.
pub fn wanted_sysctls(interface: &str) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    for scope in ["all", interface] {
        wanted.push(Wanted::new(
            format!("net.ipv4.conf.{scope}.arp_ignore"),
            "1",
            "answer ARP only for addresses on the interface asked: every node holds the \
             service addresses on its VIP interface, only the owner on ANNOUNCE_INTERFACE",
        ));
        wanted.push(Wanted::new(
            format!("net.ipv4.conf.{scope}.arp_announce"),
            "2",
            "never use a service address as the source of this node's own ARP requests, \
             which would point neighbours at a node that does not own it",
        ));
    }
    wanted
}

/// A node's lease renewal, and what the leader places from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub node: String,
    /// The last log index the node had applied when it sent this.
    pub applied: u64,
    pub can_serve: BTreeSet<IpAddr>,
    /// The addresses it held on ANNOUNCE_INTERFACE when it sent this.
    pub holds: BTreeSet<IpAddr>,
    /// It is stopping: it holds nothing any more and wants no address.
    #[serde(default)]
    pub stopping: bool,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub granted: bool,
    /// Why not, when not.
    pub why_not: Option<String>,
}

/// The leader's record of the renewals it received, shared by the Raft
/// port's route and the placer.
#[derive(Debug, Clone)]
pub struct Leases {
    inner: Arc<Mutex<Book>>,
    /// The committed state: which owners a renewal must have applied.
    state: StateWatch,
    /// What confirms this node's grants and bounds its predecessors'.
    contact: Contact,
}

#[derive(Debug)]
struct Book {
    /// This node's timing (L2_LEASE_MS must be the same on every node).
    timing: Timing,
    /// The term this node leads in, and when it first saw itself leading
    /// in it (no earlier than its election: the safe side).
    leading: Option<(u64, Instant)>,
    renewals: HashMap<String, (Instant, Renewal)>,
}

impl Default for Book {
    fn default() -> Book {
        Book {
            timing: Timing::new(1000),
            leading: None,
            renewals: HashMap::new(),
        }
    }
}

impl Leases {
    pub fn new(state: StateWatch, contact: Contact) -> Leases {
        Leases {
            inner: Arc::default(),
            state,
            contact,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the timing this node grants and fences with.
    pub fn set_timing(&self, timing: Timing) {
        self.book().timing = timing;
    }

    fn timing(&self) -> Timing {
        self.book().timing
    }

    /// Takes note of the leadership; `Some((term, elected))` when this
    /// node leads.
    fn observe(&self, raft: &Raft) -> Option<(u64, Instant)> {
        let m = raft.metrics().borrow().clone();
        let mut book = self.book();
        if m.state != ServerState::Leader {
            book.leading = None;
            book.renewals.clear();
            return None;
        }
        let term = m.vote.leader_id().term;
        match book.leading {
            Some((t, at)) if t == term => Some((term, at)),
            _ => {
                // A new term: nothing heard in an older one counts. This
                // node took the term, so no earlier leader reaches it any
                // more: its own word on them, as a voter's.
                let now = Instant::now();
                book.leading = Some((term, now));
                book.renewals.clear();
                let succession = self.contact.succession();
                succession.told(m.id, term, succession.earlier_than(term));
                Some((term, now))
            }
        }
    }

    /// While this node leads: an instant after which no earlier leader
    /// granted anything — its election, or earlier once a quorum of voters
    /// told when an earlier leader last reached them — plus the slack a
    /// grant's confirmation may have had; and when it was elected.
    fn earlier(&self, raft: &Raft) -> Option<(Instant, Instant)> {
        let (term, elected) = self.observe(raft)?;
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        // Joint configurations: the election alone (a quorum of one of
        // them need not meet every quorum that confirmed an old grant).
        let slack = self.timing().slack();
        if membership.get_joint_config().len() != 1 {
            return Some((elected + slack, elected));
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let told = self.contact.succession().earlier_bound(term, &voters);
        Some((told.map_or(elected, |t| t.min(elected)) + slack, elected))
    }

    /// Answers a renewal received now: granted once a quorum accepted
    /// appends of this term sent after now less the slack (see
    /// `cluster::succession` and [`Timing::slack`]).
    pub async fn renew(&self, raft: &Raft, renewal: Renewal) -> Grant {
        let received = Instant::now();
        let Some((term, _)) = self.observe(raft) else {
            return refuse("this node does not lead");
        };
        let m = raft.metrics().borrow().clone();
        let member = m
            .membership_config
            .membership()
            .nodes()
            .any(|(_, n)| n.name == renewal.node);
        if !member {
            // A removed node gets no lease (and no address).
            return refuse("this node is not a member of the cluster");
        }
        // A node that has not applied the latest owners (paused, or slow to
        // apply) would hold what it owned before them: its grant waits
        // until it has.
        let owners_index = self.state.current().desired.vip_owners.index;
        if !renewal.stopping && renewal.applied < owners_index {
            return refuse(&format!(
                "the node has applied up to log index {}, not the address owners set at {}",
                renewal.applied, owners_index
            ));
        }
        let voters: BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
        let timing = self.timing();
        let since = received.checked_sub(timing.slack()).unwrap_or(received);
        let within = timing.confirm_within();
        if !self.confirmed(term, &voters, m.id, since, within).await {
            return refuse(&format!(
                "no quorum confirmed this node's leadership within {} ms",
                within.as_millis()
            ));
        }
        if self.observe(raft).map(|(t, _)| t) != Some(term) {
            return refuse("this node no longer leads");
        }
        self.book()
            .renewals
            .insert(renewal.node.clone(), (received, renewal));
        Grant {
            granted: true,
            why_not: None,
        }
    }

    /// Waits up to `within` until a quorum of `voters` accepted appends of
    /// `term` sent at or after `since`.
    async fn confirmed(
        &self,
        term: u64,
        voters: &BTreeSet<u64>,
        me: u64,
        since: Instant,
        within: Duration,
    ) -> bool {
        let succession = self.contact.succession();
        // Subscribed before looking: no acceptance is missed in between.
        let mut changed = succession.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if succession
                .confirmed(term, voters, me)
                .is_some_and(|at| at >= since)
            {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// What the leader knows of each node, for the placement; `None` when
    /// this node does not lead.
    fn nodes(
        &self,
        raft: &Raft,
        timing: &Timing,
    ) -> Option<BTreeMap<String, placement::NodeState>> {
        let (earlier, elected) = self.earlier(raft)?;
        let now = Instant::now();
        let hearing = lease::still_hearing(timing, elected, now);
        let m = raft.metrics().borrow().clone();
        let book = self.book();
        let mut nodes: BTreeMap<String, placement::NodeState> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(_, n)| {
                let state = placement::NodeState {
                    may_hold: hearing || lease::may_hold(timing, earlier, None, now),
                    ..Default::default()
                };
                (n.name.clone(), state)
            })
            .collect();
        for (name, (received, r)) in &book.renewals {
            // A node removed since it renewed may still hold addresses
            // until its lease ends, but it is given none.
            let member = nodes.contains_key(name);
            nodes.insert(
                name.clone(),
                placement::NodeState {
                    live: member && lease::live(timing, Some(*received), now),
                    may_hold: lease::may_hold(timing, earlier, Some(*received), now),
                    stopping: r.stopping,
                    can_serve: r.can_serve.clone(),
                    holds: r.holds.clone(),
                    applied: Some(r.applied),
                },
            );
        }
        Some(nodes)
    }

    /// When the leader's view of some node next changes by time alone (a
    /// fence or a liveness running out); `None` when this node does not
    /// lead or nothing will.
    fn next_change(&self, raft: &Raft, timing: &Timing) -> Option<Instant> {
        let (earlier, elected) = self.earlier(raft)?;
        let now = Instant::now();
        let book = self.book();
        let heard = Some(elected + timing.hearing()).filter(|t| *t > now);
        // `None`: every member not heard from in this term.
        std::iter::once(None)
            .chain(book.renewals.values().map(|(received, _)| Some(*received)))
            .filter_map(|received| lease::next_change(timing, earlier, received, now))
            .chain(heard)
            .min()
    }
}

fn refuse(why: &str) -> Grant {
    Grant {
        granted: false,
        why_not: Some(why.to_string()),
    }
}

/// Registers [`RENEW_PATH`]; it needs `Data<Raft>` and `Data<Leases>`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(RENEW_PATH, web::post().to(renew_route));
}

async fn renew_route(
    raft: Data<Raft>,
    leases: Data<Leases>,
    renewal: Json<Renewal>,
) -> Json<Grant> {
    Json(leases.renew(&raft, renewal.into_inner()).await)
}

/// Announces until `stop`: the holder on every node, the placer while this
/// node leads; on `stop`, every address dropped and a release sent.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    let Some(cfg) = ctx.cfg.l2.clone() else {
        return super::report_only(ctx.servable, ctx.status, stop).await;
    };
    let timing = Timing::new(cfg.lease_ms);
    ctx.leases.set_timing(timing);
    let (stop_tx, stop_rx) = watch::channel(false);
    let placer = tokio::spawn(place_while_leading(
        ctx.writer.raft().clone(),
        ctx.writer.batcher().clone(),
        ctx.leases.clone(),
        ctx.state.clone(),
        ctx.servable.clone(),
        timing,
        stop_rx,
    ));
    hold(ctx, cfg, timing, stop).await;
    let _ = stop_tx.send(true);
    let _ = placer.await;
}

/// The leader's side: every `lease/10`, the moment a silent node's fence
/// ends, and whenever the committed state or the servable addresses
/// change, the owners placed from the renewals, committed when they differ.
async fn place_while_leading(
    raft: Raft,
    // This node's own proposals only, never the writer that forwards: see
    // below.
    batcher: crate::cluster::batch::Batcher,
    leases: Leases,
    state: StateWatch,
    mut servable: watch::Receiver<Servable>,
    timing: Timing,
    mut stop: watch::Receiver<bool>,
) {
    let mut committed = state.subscribe();
    // Twice per renewal period, for whatever else changes (a node's
    // renewal saying it can serve another address).
    let mut tick = tokio::time::interval(timing.renew_every() / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Besides the tick: the moment a silent node's fence ends.
        let far = Instant::now() + Duration::from_secs(3600);
        let fence_ends = leases.next_change(&raft, &timing).unwrap_or(far);
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(fence_ends.into()) => {}
            r = committed.changed() => if r.is_err() { return },
            r = servable.changed() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(nodes) = leases.nodes(&raft, &timing) else {
            continue;
        };
        let vips: BTreeSet<IpAddr> = servable.borrow().keys().copied().collect();
        let current = state.current();
        let owners = &current.desired.vip_owners;
        let next = placement::place(&vips, &owners.owners, owners.index, &nodes);
        if next != owners.owners {
            tracing::info!(owners = ?next, "placing the service addresses");
            // Proposed on this node only, never forwarded: a leader deposed
            // while its proposal waits must not have its decision committed
            // by the next leader, which places from what it knows itself.
            // (Forwarded, a partitioned leader's stale "no owner" reached its
            // successor once the link was back and took the address from its
            // live owner.)
            let proposed = batcher.propose(Command::SetVipOwners(next));
            match tokio::time::timeout(timing.fence(), proposed).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not commit the address owners"),
                Err(_) => tracing::warn!("the address owners were not committed in time"),
            }
        }
    }
}

/// What the holder reports.
struct Report {
    held: BTreeSet<IpAddr>,
    /// Given to this node but not taken yet, and why.
    waiting: BTreeMap<IpAddr, String>,
    lease: NodeLease,
    last_announcement: Option<SystemTime>,
    problem: Option<String>,
}

/// The node's side, until `stop`.
async fn hold(ctx: Context, cfg: L2, timing: Timing, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let status = ctx.status.clone();
    status.send_modify(|v| {
        set_state(v, "starting", None);
        v.l2 = Some(l2_view(&cfg, &timing, &NodeLease::default(), None));
    });
    let sysctls = if ctx.kernel == KernelMode::On {
        sysctl::apply(
            std::path::Path::new("/proc/sys"),
            &wanted_sysctls(&cfg.interface),
            ctx.cfg.sysctls,
        )
    } else {
        Vec::new()
    };
    let sysctl_problem = sysctls.iter().find(|s| !s.ok).map(|s| {
        format!(
            "{} is {:?}, not {} ({}){}",
            s.name,
            s.value.as_deref().unwrap_or("unreadable"),
            s.wanted,
            s.problem.as_deref().unwrap_or(""),
            if ctx.cfg.sysctls == Sysctls::Leave {
                ": other nodes' copies of the addresses may answer ARP"
            } else {
                ""
            }
        )
    });
    status.send_modify(|v| v.sysctls = sysctls);
    // The interface: opened until it works (a NIC may come later).
    let mut holder = loop {
        match Holder::open(&cfg).await {
            Ok(h) => break h,
            Err(e) => {
                status.send_modify(|v| {
                    set_state(v, "failed", Some(format!("{}: {e}", cfg.interface)))
                });
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut stop => {
                        status.send_modify(|v| set_state(v, "withdrawn", None));
                        return;
                    }
                }
            }
        }
    };
    // What an earlier run left (killed, or the host rebooted with the
    // addresses in a configuration file): gone until the cluster says.
    holder
        .sync(&BTreeSet::new(), false, |_| "left by an earlier run".into())
        .await;
    let mut report = Report {
        held: BTreeSet::new(),
        waiting: BTreeMap::new(),
        lease: NodeLease::default(),
        last_announcement: None,
        problem: None,
    };
    let mut ledger = super::Ledger::default();
    let show = |report: &mut Report, ledger: &mut super::Ledger| {
        publish(&ctx, &cfg, &timing, report, ledger, &sysctl_problem)
    };
    let mut committed = ctx.state.subscribe();
    let mut servable = ctx.servable.clone();
    let mut garp_due: BTreeMap<IpAddr, (Instant, u32)> = BTreeMap::new();
    let mut next_renewal = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_renewal {
            next_renewal = now + timing.renew_every();
            let granted = renew(&ctx, &holder, &timing, &mut report).await;
            let wanted = wanted(&ctx, &report.lease);
            let taken = holder
                .sync(&wanted, granted, |a| why_released(&ctx, &report, a))
                .await;
            for address in taken {
                garp_due.insert(address, (Instant::now(), 0));
            }
        } else {
            // Between renewals only drops: an add sets a kernel lifetime,
            // which must start from a grant.
            let wanted = wanted(&ctx, &report.lease);
            let keep: BTreeSet<IpAddr> = holder.held.intersection(&wanted).copied().collect();
            holder
                .sync(&keep, false, |a| why_released(&ctx, &report, a))
                .await;
        }
        report.held = holder.held.clone();
        report.waiting = holder.waiting.clone();
        garp_due.retain(|a, _| report.held.contains(a));
        // Announcements due: at take-over, then 1, 2 and 4 s later (a copy
        // the kernel of a killed owner still held may have answered in
        // between), then every L2_GARP_REFRESH.
        let now = Instant::now();
        for (address, (due, sent)) in garp_due.iter_mut() {
            if *due > now {
                continue;
            }
            match holder.announce(*address) {
                Ok(()) => report.last_announcement = Some(SystemTime::now()),
                Err(e) => {
                    tracing::warn!(%address, error = %e, "cannot send a gratuitous ARP/NA")
                }
            }
            *sent += 1;
            let after = match *sent {
                1 => Some(Duration::from_secs(1)),
                2 => Some(Duration::from_secs(1)),
                3 => Some(Duration::from_secs(2)),
                _ if cfg.garp_refresh_s > 0 => {
                    Some(Duration::from_secs(u64::from(cfg.garp_refresh_s)))
                }
                _ => None,
            };
            *due = match after {
                Some(d) => now + d,
                None => now + Duration::from_secs(86_400 * 365),
            };
        }
        show(&mut report, &mut ledger);
        // Sleep until the next renewal, the lease's end, an announcement,
        // or a change of owners or servable addresses (renewed at once: a
        // new owner takes its address without waiting a period).
        let mut wake = next_renewal;
        if let Some(until) = report.lease.until().filter(|u| *u > Instant::now()) {
            wake = wake.min(until);
        }
        if let Some((due, _)) = garp_due.values().min() {
            wake = wake.min(*due);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            r = committed.changed() => {
                if r.is_err() { break }
                next_renewal = Instant::now();
            }
            r = servable.changed() => {
                if r.is_err() { break }
                next_renewal = Instant::now();
            }
            _ = &mut stop => break,
        }
    }
    // Stopping: drop everything, then tell the leader at once, so that it
    // hands the addresses over without waiting for the lease to run out.
    holder
        .sync(&BTreeSet::new(), false, |_| "this node is stopping".into())
        .await;
    report.held = holder.held.clone();
    report.lease.drop_it();
    let release = Renewal {
        node: ctx.name.clone(),
        applied: ctx.state.current().applied_index(),
        can_serve: BTreeSet::new(),
        holds: holder.held.clone(),
        stopping: true,
    };
    let _ = send_renewal(&ctx, &release, timing.renew_every()).await;
    show(&mut report, &mut ledger);
    status.send_modify(|v| set_state(v, "withdrawn", None));
}

/// The addresses this node may hold now: those the committed state gives
/// it, while its lease is valid.
fn wanted(ctx: &Context, lease: &NodeLease) -> BTreeSet<IpAddr> {
    if !lease.valid(Instant::now()) {
        return BTreeSet::new();
    }
    let current = ctx.state.current();
    let vips = ctx.servable.borrow();
    owned_by(&current.desired.vip_owners.owners, &ctx.name, &vips)
}

/// Why this node let `address` go, for its log: an operator reading why an
/// address moved finds the cause on the node that dropped it.
fn why_released(ctx: &Context, report: &Report, address: IpAddr) -> String {
    if !report.lease.valid(Instant::now()) {
        return match &report.problem {
            Some(problem) => format!("its lease ran out ({problem})"),
            None => "its lease ran out".into(),
        };
    }
    match ctx.state.current().desired.vip_owners.owners.get(&address) {
        Some(owner) if *owner != ctx.name => return format!("the cluster gave it to {owner}"),
        Some(_) => {}
        None => return "the cluster moves it (no owner until this node lets go)".into(),
    }
    match ctx.servable.borrow().get(&address) {
        None => "no service has it any more".into(),
        Some(vip) => match &vip.why_not {
            Some(why) => format!("this node cannot serve it: {why}"),
            None => "no longer wanted".into(),
        },
    }
}

/// The addresses of `owners` that are `me`'s and still service addresses.
pub fn owned_by(owners: &BTreeMap<IpAddr, String>, me: &str, vips: &Servable) -> BTreeSet<IpAddr> {
    owners
        .iter()
        .filter(|(a, o)| *o == me && vips.contains_key(*a))
        .map(|(a, _)| *a)
        .collect()
}

/// What a renewal says the node holds: what it holds now, and what the
/// grant it asks for lets it take right after (the addresses the state it
/// applied gives it). A renewal sent just before the node adds an address
/// must not read as "let go": the leader would give the address to another
/// node as soon as this one fell silent, while its kernel may still hold
/// it for the lifetime the grant let it set.
pub fn claimed(
    held: &BTreeSet<IpAddr>,
    owners: &BTreeMap<IpAddr, String>,
    me: &str,
    vips: &Servable,
) -> BTreeSet<IpAddr> {
    let mut claimed = held.clone();
    claimed.extend(owned_by(owners, me, vips));
    claimed
}

/// Renews with the leader; `true` when granted (the kernel lifetimes of the
/// addresses kept are then refreshed).
async fn renew(ctx: &Context, holder: &Holder, timing: &Timing, report: &mut Report) -> bool {
    let current = ctx.state.current();
    // One read of the watch, copied: two guards alive at once in one
    // statement deadlock against a sender waiting between them.
    let vips = ctx.servable.borrow().clone();
    let renewal = Renewal {
        node: ctx.name.clone(),
        applied: current.applied_index(),
        can_serve: super::servable::serving(&vips),
        holds: claimed(
            &holder.held,
            &current.desired.vip_owners.owners,
            &ctx.name,
            &vips,
        ),
        stopping: false,
    };
    let sent = Instant::now();
    let problem = match send_renewal(ctx, &renewal, timing.renew_every()).await {
        Ok(Grant { granted: true, .. }) => None,
        Ok(Grant { why_not, .. }) => Some(format!(
            "lease not renewed: {}",
            why_not.unwrap_or_else(|| "refused".into())
        )),
        Err(e) => Some(format!("lease not renewed: {e}")),
    };
    // Logged when it changes, not at every renewal.
    match (&report.problem, &problem) {
        (None, Some(now)) => tracing::warn!(problem = %now, "the lease is not renewed"),
        (Some(_), None) => tracing::info!("the lease is renewed again"),
        _ => {}
    }
    let granted = problem.is_none();
    if granted {
        report.lease.granted(timing, sent);
    }
    report.problem = problem;
    granted
}

/// Sends a renewal to the leader: in-process when this node leads. Gives up
/// after `patience` — one renewal period: a leader that does not answer
/// within it may be dead, and the next renewal must go to its successor
/// before this node's lease runs out (waiting longer, a node whose leader
/// died dropped its own addresses for a moment, and a new leader heard
/// from the nodes it could give addresses to late).
async fn send_renewal(
    ctx: &Context,
    renewal: &Renewal,
    patience: Duration,
) -> Result<Grant, String> {
    let raft = ctx.writer.raft();
    let (me, leader) = {
        let m = raft.metrics().borrow().clone();
        (m.id, m.current_leader)
    };
    match crate::cluster::leader(raft) {
        _ if leader == Some(me) => Ok(ctx.leases.renew(raft, renewal.clone()).await),
        Some((_, node)) => post_renewal(&ctx.peers, &node.raft_addr, renewal, patience).await,
        None => Err("no leader known".into()),
    }
}

async fn post_renewal(
    peers: &Peers,
    raft_addr: &str,
    renewal: &Renewal,
    patience: Duration,
) -> Result<Grant, String> {
    let request = peers
        .post_json(&format!("http://{raft_addr}{RENEW_PATH}"), renewal)
        .map_err(|e| e.to_string())?;
    let answer = request
        .timeout(patience)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("the leader at {raft_addr} did not answer: {e}"))?;
    answer
        .json()
        .await
        .map_err(|e| format!("the leader's answer: {e}"))
}

/// ANNOUNCE_INTERFACE and what this node holds on it.
struct Holder {
    link: link::AnnounceLink,
    sender: Option<garp::Sender>,
    lifetime_s: u32,
    held: BTreeSet<IpAddr>,
    /// The addresses given to this node that it did not take at its last
    /// try, and why: another host still answered for them.
    waiting: BTreeMap<IpAddr, String>,
}

impl Holder {
    async fn open(cfg: &L2) -> std::io::Result<Holder> {
        let link = link::AnnounceLink::open(&cfg.interface).await?;
        let sender = match garp::Sender::open(&cfg.interface) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(interface = %cfg.interface, error = %e,
                    "cannot open a packet socket (CAP_NET_RAW?): no gratuitous ARP/NA");
                None
            }
        };
        let mut holder = Holder {
            link,
            sender,
            lifetime_s: Timing::new(cfg.lease_ms).kernel_lifetime_s(),
            held: BTreeSet::new(),
            waiting: BTreeMap::new(),
        };
        holder.held = holder.link.ours().await?;
        Ok(holder)
    }

    /// Makes the interface hold `wanted` (of ours); `refresh`: renew the
    /// lifetimes of those kept too; `why` says, for the log, why an address
    /// is released. Returns the addresses newly taken.
    async fn sync(
        &mut self,
        wanted: &BTreeSet<IpAddr>,
        refresh: bool,
        why: impl Fn(IpAddr) -> String,
    ) -> Vec<IpAddr> {
        if let Ok(now) = self.link.ours().await {
            self.held = now;
        }
        for address in self.held.difference(wanted).copied().collect::<Vec<_>>() {
            match self.link.release(address).await {
                Ok(()) => {
                    let why = why(address);
                    tracing::info!(%address, interface = %self.link.ifname(), %why, "released");
                    self.held.remove(&address);
                }
                Err(e) => tracing::warn!(%address, error = %e, "cannot release"),
            }
        }
        let new: BTreeSet<IpAddr> = wanted.difference(&self.held).copied().collect();
        self.waiting = self.still_answered(&new).await;
        let mut taken = Vec::new();
        for &address in wanted {
            let new = !self.held.contains(&address);
            if (!new && !refresh) || self.waiting.contains_key(&address) {
                continue;
            }
            match self.link.hold(address, self.lifetime_s).await {
                Ok(()) => {
                    if new {
                        tracing::info!(%address, interface = %self.link.ifname(), "took over");
                        taken.push(address);
                    }
                    self.held.insert(address);
                }
                Err(e) => tracing::warn!(%address, error = %e, "cannot hold"),
            }
        }
        taken
    }

    /// Which of the addresses about to be taken another host still answers
    /// for, and why they wait ([`probe`]). All of them when the probe cannot
    /// run: an address nobody checked could have two holders.
    async fn still_answered(&self, new: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, String> {
        if new.is_empty() {
            return BTreeMap::new();
        }
        let Some(sender) = &self.sender else {
            let why = "no packet socket (CAP_NET_RAW) to check that no other host holds it";
            return new.iter().map(|a| (*a, why.to_string())).collect();
        };
        let (link, asked) = (sender.link(), new.clone());
        let found = tokio::task::spawn_blocking(move || probe::probe(&link, &asked)).await;
        match found {
            Ok(Ok(answered)) => answered
                .into_iter()
                .map(|(address, mac)| {
                    tracing::info!(%address, mac = %probe::mac_text(&mac),
                        "another host still answers for the address: not taking it yet");
                    let why = format!(
                        "{} still answers for it (a stopped owner's kernel holds it until \
                         its lifetime ends)",
                        probe::mac_text(&mac)
                    );
                    (address, why)
                })
                .collect(),
            Ok(Err(e)) => {
                let why = format!("cannot check that no other host holds it: {e}");
                new.iter().map(|a| (*a, why.clone())).collect()
            }
            Err(e) => {
                let why = format!("the probe failed: {e}");
                new.iter().map(|a| (*a, why.clone())).collect()
            }
        }
    }

    fn announce(&self, address: IpAddr) -> std::io::Result<()> {
        match &self.sender {
            Some(s) => s.announce(address),
            None => Err(std::io::Error::other("no packet socket")),
        }
    }
}

fn l2_view(cfg: &L2, timing: &Timing, lease: &NodeLease, last: Option<SystemTime>) -> L2View {
    let left = lease.left(Instant::now());
    L2View {
        interface: cfg.interface.clone(),
        lease_ms: u32::try_from(timing.lease.as_millis()).unwrap_or(u32::MAX),
        lease_held: left.is_some(),
        lease_left_ms: left.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        last_announcement: last.map(rfc3339),
    }
}

fn publish(
    ctx: &Context,
    cfg: &L2,
    timing: &Timing,
    report: &mut Report,
    ledger: &mut super::Ledger,
    sysctl_problem: &Option<String>,
) {
    let current = ctx.state.current();
    let owners = &current.desired.vip_owners.owners;
    let servable = ctx.servable.borrow().clone();
    let lease_valid = report.lease.valid(Instant::now());
    let waiting = &report.waiting;
    let vips = ledger.views(&servable, &report.held, owners, |address| {
        Some(match owners.get(&address) {
            None => "no owner yet".to_string(),
            Some(o) if *o != ctx.name => format!("{o} owns it"),
            Some(_) if !lease_valid => "this node's lease is not valid".to_string(),
            Some(_) => match waiting.get(&address) {
                Some(why) => format!("not taken yet: {why}"),
                None => "being taken".to_string(),
            },
        })
    });
    let view: &mut dyn FnMut(&mut AnnounceView) = &mut |v| {
        let state = if report.held.is_empty() {
            "idle"
        } else {
            "announcing"
        };
        set_state(
            v,
            state,
            report.problem.clone().or_else(|| sysctl_problem.clone()),
        );
        v.vips = vips.clone();
        v.l2 = Some(l2_view(
            cfg,
            timing,
            &report.lease,
            report.last_announcement,
        ));
    };
    ctx.status.send_modify(view);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::Vip;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 80, 0, n])
    }

    #[test]
    fn a_renewal_claims_what_its_grant_lets_the_node_take() {
        let vips: Servable = [ip(1), ip(2)]
            .into_iter()
            .map(|a| {
                let vip = Vip {
                    services: vec![],
                    why_not: None,
                };
                (a, vip)
            })
            .collect();
        let owners: BTreeMap<IpAddr, String> =
            [(ip(1), "lb1".to_string()), (ip(2), "lb2".to_string())].into();
        let none = BTreeSet::new();
        // Just given ip(1), not yet holding it: claimed all the same.
        assert_eq!(claimed(&none, &owners, "lb1", &vips), [ip(1)].into());
        // Another node's address is never claimed.
        assert!(!claimed(&none, &owners, "lb1", &vips).contains(&ip(2)));
        // Given up in the state but still on the interface: still claimed,
        // until the node has dropped it.
        let held = [ip(1)].into();
        assert_eq!(
            claimed(&held, &BTreeMap::new(), "lb1", &vips),
            [ip(1)].into()
        );
        assert!(claimed(&none, &BTreeMap::new(), "lb1", &vips).is_empty());
    }
}
