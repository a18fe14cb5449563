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
//! - It grants only while a quorum acknowledged it within [`GRANT_AGE`]. A
//!   grant by an old leader at t_r needs an acknowledgement at ≥ t_r − G
//!   from a voter that then voted for the new leader, so t_r < t_election +
//!   G: a new leader counts every node as renewed at t_election + G.

use std::time::{Duration, Instant};

/// A leader grants renewals only while a quorum acknowledged it this
/// recently (at least; see [`Timing::grant_age`]): the `G` of the
/// leader-change argument. The argument holds for any G; a small one keeps
/// a new leader's wait short, a large one keeps a leader on a slow host
/// (heartbeats every 50 ms, acknowledgements late) granting.
pub const GRANT_AGE: Duration = Duration::from_millis(300);

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

    /// G: [`GRANT_AGE`], or 3/10 of the lease when longer (a long lease says
    /// the network or the hosts are slow, and a leader refusing renewals
    /// for late acknowledgements would make the addresses flap).
    pub fn grant_age(&self) -> Duration {
        GRANT_AGE.max(self.lease * 3 / 10)
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

/// The leader's view of one node's lease, from when it became leader and
/// when it last received the node's renewal.
pub fn may_hold(
    timing: &Timing,
    elected: Instant,
    received: Option<Instant>,
    now: Instant,
) -> bool {
    // Whatever an earlier leader granted, it granted before elected + G.
    let grace = elected + timing.grant_age();
    let from = match received {
        Some(r) => r.max(grace),
        None => grace,
    };
    now < from + timing.fence()
}

/// The first instant after `now` at which [`may_hold`] or [`live`] of a
/// node changes (`None`: neither ever will), so that the leader places the
/// addresses of a silent node the moment its fence ends, not at its next
/// periodic look.
pub fn next_change(
    timing: &Timing,
    elected: Instant,
    received: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    let grace = elected + timing.grant_age();
    let fence_ends = received.map_or(grace, |r| r.max(grace)) + timing.fence();
    let live_ends = received.map(|r| r + timing.live_for());
    [Some(fence_ends), live_ends]
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .min()
}

/// Whether a node that renewed at `received` is live at `now`.
pub fn live(timing: &Timing, received: Option<Instant>, now: Instant) -> bool {
    received.is_some_and(|r| now.saturating_duration_since(r) < timing.live_for())
}

/// Whether the leader may grant now: it leads and a quorum acknowledged it
/// within [`Timing::grant_age`] (`quorum_age` `None`: it leads alone).
pub fn may_grant(timing: &Timing, leads: bool, quorum_age: Option<Duration>, alone: bool) -> bool {
    leads
        && match quorum_age {
            Some(age) => age < timing.grant_age(),
            None => alone,
        }
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
        let elected = Instant::now();
        // The old leader's last grant came before elected + G; the node it
        // went to holds until then + lease.
        let old_grant = elected + t.grant_age() - ms(1);
        let node_drops = old_grant + t.lease;
        for node in [None, Some(elected - ms(100))] {
            assert!(may_hold(&t, elected, node, node_drops + t.margin() - ms(1)));
            assert!(!may_hold(
                &t,
                elected,
                node,
                elected + t.grant_age() + t.fence()
            ));
        }
        // A renewal after the election counts from its own time.
        let later = elected + ms(2000);
        assert!(may_hold(
            &t,
            elected,
            Some(later),
            later + t.fence() - ms(1)
        ));
    }

    #[test]
    fn the_next_change_is_when_a_fence_or_liveness_ends() {
        let t = Timing::new(1000);
        let elected = Instant::now();
        let grace = elected + t.grant_age();
        // Never heard from: its fence, counted from the grace, ends next.
        let next = next_change(&t, elected, None, elected).unwrap();
        assert_eq!(next, grace + t.fence());
        assert!(may_hold(&t, elected, None, next - ms(1)));
        assert!(!may_hold(&t, elected, None, next));
        // Renewed later: liveness ends first, then the fence.
        let received = elected + ms(3000);
        let live_ends = next_change(&t, elected, Some(received), received).unwrap();
        assert_eq!(live_ends, received + t.live_for());
        assert!(live(&t, Some(received), live_ends - ms(1)));
        assert!(!live(&t, Some(received), live_ends));
        let fence_ends = next_change(&t, elected, Some(received), live_ends).unwrap();
        assert_eq!(fence_ends, received + t.fence());
        // After both: nothing changes any more.
        assert_eq!(next_change(&t, elected, Some(received), fence_ends), None);
    }

    #[test]
    fn the_leader_grants_only_with_fresh_quorum_contact() {
        let t = Timing::new(1000);
        assert_eq!(t.grant_age(), GRANT_AGE);
        assert!(may_grant(&t, true, Some(ms(50)), false));
        assert!(!may_grant(&t, true, Some(ms(300)), false));
        assert!(!may_grant(&t, false, Some(ms(10)), false));
        assert!(may_grant(&t, true, None, true));
        assert!(!may_grant(&t, true, None, false));
        // A long lease tolerates later acknowledgements.
        let slow = Timing::new(3000);
        assert_eq!(slow.grant_age(), ms(900));
        assert!(may_grant(&slow, true, Some(ms(800)), false));
    }
}
