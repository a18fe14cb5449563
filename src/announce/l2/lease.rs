//! The lease arithmetic of `ANNOUNCE=l2`, on both sides, as pure functions
//! of monotonic instants (ARCHITECTURE.md, "Bringing traffic", has the argument).
//!
//! - A node renews every `lease/5`, measuring from when it SENT the
//!   renewal (t_s): on an OK answer it may hold its addresses until
//!   t_s + lease ([`NodeLease`]), and drops them then by itself.
//! - The leader receives the renewal at t_r ≥ t_s and counts the node as
//!   possibly holding until t_r + [`Timing::fence`]: its lease plus a
//!   margin for its reaction.
//! - An agent that cannot drop (killed, hung) is not fenced by time: each
//!   address it held carries a kernel lifetime of ⌈lease⌉ seconds
//!   ([`Timing::kernel_lifetime_s`]), which ends it, and a node takes an
//!   address only once no other host answers for it (`probe`). The kernel's
//!   timer is coarse — whole seconds, and checked at most once a second
//!   after any address change on the host — so the leader does not wait
//!   for it; the probe sees the copy while it lasts.
//! - The leader grants a renewal received at t_r only once a quorum
//!   accepted appends of its term sent after t_r − [`Timing::slack`]
//!   (`cluster::succession`), waiting [`Timing::confirm_within`] at most.
//!   So every grant by an earlier leader came before the slack after the
//!   instant after which no earlier leader reached a quorum: a new leader
//!   counts every node as renewed at that instant (its election, or
//!   earlier from what a quorum of voters told it) plus the slack,
//!   `earlier` below.

use std::time::{Duration, Instant};

/// The least the leader adds for the node's reaction: waking at its
/// deadline and removing the address over netlink on a busy host (see
/// [`Timing::margin`]).
pub const MARGIN: Duration = Duration::from_millis(250);

/// The timing that follows from L2_LEASE_MS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease: Duration,
}

impl Timing {
    pub fn new(lease_ms: u32) -> Timing {
        Timing {
            lease: Duration::from_millis(u64::from(lease_ms)),
        }
    }

    /// M: [`MARGIN`], or a quarter of the lease when longer (slow hosts
    /// react slowly too).
    pub fn margin(&self) -> Duration {
        MARGIN.max(self.lease / 4)
    }

    /// How often a node renews.
    pub fn renew_every(&self) -> Duration {
        self.lease / 5
    }

    /// How long before receiving a renewal the appends a quorum accepted
    /// to confirm its grant may have been sent: a tenth of the lease. The
    /// leader needs no new heartbeat round for most grants (heartbeats go
    /// every 50 ms, and on a slow host many answer later than that), and a
    /// new leader counts it in its wait.
    pub fn slack(&self) -> Duration {
        self.lease / 10
    }

    /// How long a renewal waits for a quorum to confirm the leader: the
    /// node gives up after one renewal period, so a little less.
    pub fn confirm_within(&self) -> Duration {
        self.renew_every() * 3 / 4
    }

    /// The lifetime the kernel gives an owned address, in whole seconds
    /// (its unit): the lease rounded up, so that it never ends before the
    /// lease of the grant that set it.
    pub fn kernel_lifetime_s(&self) -> u32 {
        let ms = self.lease.as_millis().max(1);
        u32::try_from(ms.div_ceil(1000)).unwrap_or(u32::MAX)
    }

    /// How long after receiving a node's renewal the leader counts it as
    /// possibly holding addresses: past the node's own deadline, plus the
    /// margin.
    pub fn fence(&self) -> Duration {
        self.lease + self.margin()
    }

    /// A node whose last renewal is younger than this is live: it may be
    /// given addresses (it missed no more than a couple of renewals).
    pub fn live_for(&self) -> Duration {
        self.lease / 2
    }

    /// How long a new leader gives every live node to reach it with a
    /// renewal: two renewal periods. Until then, a node it has not heard
    /// from keeps what it owns ([`still_hearing`]).
    pub fn hearing(&self) -> Duration {
        self.renew_every() * 2
    }
}

/// A node's own lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLease {
    until: Option<Instant>,
}

impl NodeLease {
    /// The leader granted the renewal this node sent at `sent`.
    pub fn granted(&mut self, timing: &Timing, sent: Instant) {
        let until = sent + timing.lease;
        if self.until.is_none_or(|u| until > u) {
            self.until = Some(until);
        }
    }

    /// Whether it holds at `now`.
    pub fn valid(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Time left at `now` (`None`: not held).
    pub fn left(&self, now: Instant) -> Option<Duration> {
        self.until
            .and_then(|u| u.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// When it runs out, if held.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Given up (the node stops).
    pub fn drop_it(&mut self) {
        self.until = None;
    }
}

/// The leader's view of one node's lease, from `earlier` (no earlier
/// leader's grant came after it) and when it last received the node's
/// renewal.
pub fn may_hold(
    timing: &Timing,
    earlier: Instant,
    received: Option<Instant>,
    now: Instant,
) -> bool {
    let from = received.map_or(earlier, |r| r.max(earlier));
    now < from + timing.fence()
}

/// The first instant after `now` at which [`may_hold`] or [`live`] of a
/// node changes (`None`: neither ever will), so that the leader places the
/// addresses of a silent node the moment its fence ends, not at its next
/// periodic look.
pub fn next_change(
    timing: &Timing,
    earlier: Instant,
    received: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let fence_ends = received.map_or(earlier, |r| r.max(earlier)) + timing.fence();
    let live_ends = received.map(|r| r + timing.live_for());
    [Some(fence_ends), live_ends]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
}

/// Whether a leader elected at `elected` may not yet have heard every live
/// node at `now`. A node it has not heard from then keeps the addresses it
/// owns: after a leaderless spell longer than the lease every earlier grant
/// has ended, and without this the first node to renew would win every
/// address whose owner let go during the spell (a returning node taking
/// back what it lost, whose election caused the spell).
pub fn still_hearing(timing: &Timing, elected: Instant, now: Instant) -> bool {
    now < elected + timing.hearing()
}

/// Whether a node that renewed at `received` is live at `now`.
pub fn live(timing: &Timing, received: Option<Instant>, now: Instant) -> bool {
    received.is_some_and(|r| now.saturating_duration_since(r) < timing.live_for())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_default_timing() {
        let t = Timing::new(1000);
        assert_eq!(t.renew_every(), ms(200));
        assert_eq!(t.kernel_lifetime_s(), 1);
        assert_eq!(t.margin(), MARGIN);
        assert_eq!(t.fence(), ms(1250));
        // A long lease: a wider margin, and a kernel lifetime never shorter
        // than the lease.
        let long = Timing::new(5500);
        assert_eq!(long.kernel_lifetime_s(), 6);
        assert_eq!(long.margin(), ms(1375));
        assert_eq!(long.fence(), ms(5500 + 1375));
        assert_eq!(Timing::new(200).fence(), ms(200 + 250));
        assert_eq!(Timing::new(200).kernel_lifetime_s(), 1);
    }

    #[test]
    fn a_node_holds_from_when_it_sent_not_from_the_answer() {
        let t = Timing::new(1000);
        let t0 = Instant::now();
        let mut lease = NodeLease::default();
        assert!(!lease.valid(t0));
        // Sent at t0, answered 400 ms later: held until t0 + 1 s.
        lease.granted(&t, t0);
        assert!(lease.valid(t0 + ms(999)));
        assert!(!lease.valid(t0 + ms(1000)));
        assert_eq!(lease.left(t0 + ms(400)), Some(ms(600)));
        assert_eq!(lease.left(t0 + ms(1000)), None);
        // A late answer to an older renewal never shortens it.
        lease.granted(&t, t0 + ms(200));
        lease.granted(&t, t0 + ms(100));
        assert_eq!(lease.until(), Some(t0 + ms(1200)));
        lease.drop_it();
        assert!(!lease.valid(t0));
    }

    #[test]
    fn the_leader_fences_past_the_node() {
        let t = Timing::new(1000);
        let elected = Instant::now();
        let sent = elected + ms(5000);
        let received = sent + ms(30);
        // The node drops by itself at sent + lease at the latest.
        let mut lease = NodeLease::default();
        lease.granted(&t, sent);
        let node_drops = lease.until().unwrap();
        let fenced_until = received + t.fence();
        assert!(fenced_until >= node_drops + t.margin());
        assert!(may_hold(&t, elected, Some(received), fenced_until - ms(1)));
        assert!(!may_hold(&t, elected, Some(received), fenced_until));
        assert!(live(&t, Some(received), received + ms(499)));
        assert!(!live(&t, Some(received), received + ms(500)));
        assert!(!live(&t, None, received));
    }

    #[test]
    fn a_new_leader_waits_out_grants_of_the_old_one() {
        let t = Timing::new(1000);
        // No earlier leader's grant came after `earlier`; the node it went
        // to holds until then + lease at the latest.
        let earlier = Instant::now();
        let node_drops = earlier + t.lease;
        for node in [None, Some(earlier - ms(100))] {
            assert!(may_hold(&t, earlier, node, node_drops + t.margin() - ms(1)));
            assert!(!may_hold(&t, earlier, node, earlier + t.fence()));
        }
        // A renewal after it counts from its own time.
        let later = earlier + ms(2000);
        assert!(may_hold(
            &t,
            earlier,
            Some(later),
            later + t.fence() - ms(1)
        ));
        assert!(!may_hold(&t, earlier, Some(later), later + t.fence()));
    }

    #[test]
    fn the_next_change_is_when_a_fence_or_liveness_ends() {
        let t = Timing::new(1000);
        let earlier = Instant::now();
        // Never heard from: its fence, counted from `earlier`, ends next.
        let next = next_change(&t, earlier, None, earlier).unwrap();
        assert_eq!(next, earlier + t.fence());
        assert!(may_hold(&t, earlier, None, next - ms(1)));
        assert!(!may_hold(&t, earlier, None, next));
        // Renewed later: liveness ends first, then the fence.
        let received = earlier + ms(3000);
        let live_ends = next_change(&t, earlier, Some(received), received).unwrap();
        assert_eq!(live_ends, received + t.live_for());
        assert!(live(&t, Some(received), live_ends - ms(1)));
        assert!(!live(&t, Some(received), live_ends));
        let fence_ends = next_change(&t, earlier, Some(received), live_ends).unwrap();
        assert_eq!(fence_ends, received + t.fence());
        // After both: nothing changes any more.
        assert_eq!(next_change(&t, earlier, Some(received), fence_ends), None);
    }

    #[test]
    fn a_new_leader_hears_every_live_node_before_it_moves_addresses() {
        let t = Timing::new(1000);
        let elected = Instant::now();
        // A live node renews every period and is granted within one more.
        assert!(t.hearing() >= t.renew_every() + t.confirm_within());
        assert!(still_hearing(&t, elected, elected + t.hearing() - ms(1)));
        assert!(!still_hearing(&t, elected, elected + t.hearing()));
        // Shorter than a fence: it delays no failover a fence allows.
        assert!(t.hearing() < t.fence());
    }

    #[test]
    fn a_grant_waits_less_than_the_node_does() {
        for lease in [200, 1000, 5500] {
            let t = Timing::new(lease);
            assert!(t.confirm_within() < t.renew_every());
            assert!(!t.confirm_within().is_zero());
            assert!(t.slack() < t.renew_every());
        }
        assert_eq!(Timing::new(1000).slack(), ms(100));
    }
}
