//! What a leader may promise about time, and what a new leader knows of the
//! promises of the leaders before it — for the leases of `ANNOUNCE=l2`
//! (ARCHITECTURE.md, "Bringing traffic", has the argument).
//!
//! - As follower, a node notes when each append arrives, by term, before
//!   Raft sees it ([`Succession::arrived`]). In its answer to an append of
//!   term T that Raft accepted it says how long ago an append of any
//!   earlier term last arrived ([`EARLIER_LEADER_HEADER`]): once it took
//!   T, it accepts nothing from an earlier leader, so that is when an
//!   earlier leader last reached it.
//! - As leader, a node notes, per voter, when it sent the latest append of
//!   its term that the voter accepted ([`Succession::accepted`]). A grant
//!   received at t waits until a quorum accepted appends sent after t
//!   ([`Succession::confirmed`]): then no other leader had been elected
//!   before t.
//! - A new leader takes what its voters told ([`Succession::told`]); with
//!   that from a quorum it knows a time after which no earlier leader
//!   confirmed anything ([`Succession::earlier_bound`]): a quorum that
//!   confirmed an earlier grant meets every quorum that told it.

use crate::raft::NodeId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The header on a follower's answer to an append it accepted: the append's
/// term and the milliseconds since an append of an earlier term last
/// arrived, as `"TERM AGE_MS"`.
pub const EARLIER_LEADER_HEADER: &str = "x-ipvs-manager-earlier-leader";

/// Terms a follower keeps arrivals for apart; older ones are folded into
/// one (which only makes the bound it tells later, the safe side).
const TERMS_KEPT: usize = 16;

/// Shared by the Raft transport (both sides) and the l2 leases.
#[derive(Debug)]
pub struct Succession {
    inner: Mutex<Inner>,
    /// Bumped on every acceptance, for grants waiting on one.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    /// Nothing that arrived before is known: a bound is never earlier.
    started: Instant,
    /// The latest arrival of an append, per term.
    arrivals: BTreeMap<u64, Instant>,
    /// The latest arrival of the terms folded out of `arrivals`.
    folded: Option<Instant>,
    /// The leader's side, for the latest term it heard of as leader.
    leading: Option<Leading>,
}

#[derive(Debug)]
struct Leading {
    term: u64,
    /// Per voter: when the latest append it accepted was sent.
    accepted: HashMap<NodeId, Instant>,
    /// Per voter: the earliest time it told after which no append of an
    /// earlier term reached it.
    told: HashMap<NodeId, Instant>,
}

impl Default for Succession {
    fn default() -> Succession {
        Succession::new()
    }
}

impl Succession {
    pub fn new() -> Succession {
        Succession {
            inner: Mutex::new(Inner {
                started: Instant::now(),
                arrivals: BTreeMap::new(),
                folded: None,
                leading: None,
            }),
            changed: watch::channel(0).0,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An append of `term` arrived now (noted before Raft sees it).
    pub fn arrived(&self, term: u64) {
        let now = Instant::now();
        let mut inner = self.inner();
        let at = inner.arrivals.entry(term).or_insert(now);
        *at = (*at).max(now);
        while inner.arrivals.len() > TERMS_KEPT {
            if let Some((_, at)) = inner.arrivals.pop_first() {
                inner.folded = inner.folded.max(Some(at));
            }
        }
    }

    /// No append of a term before `term` arrived after this (as far as
    /// this process knows: never before its start).
    pub fn earlier_than(&self, term: u64) -> Instant {
        let inner = self.inner();
        let latest = inner.arrivals.range(..term).map(|(_, at)| *at).max();
        [Some(inner.started), latest, inner.folded]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(inner.started)
    }

    /// The header value for an answer to an accepted append of `term`.
    pub fn header_for(&self, term: u64) -> String {
        // Whole milliseconds rounded down: the bound a leader derives is
        // never earlier than the truth.
        let age = self.earlier_than(term).elapsed().as_millis();
        format!("{term} {age}")
    }

    /// Reads [`EARLIER_LEADER_HEADER`] as received now: the term and the
    /// instant it bounds; `None` when malformed.
    pub fn parse_header(value: &str) -> Option<(u64, Instant)> {
        let (term, age) = value.split_once(' ')?;
        let term = term.parse().ok()?;
        let age = Duration::from_millis(age.parse().ok()?);
        Some((term, Instant::now().checked_sub(age)?))
    }

    /// The record of `term`, started afresh for a newer term; `None` for
    /// an older one (a late answer).
    fn leading(inner: &mut Inner, term: u64) -> Option<&mut Leading> {
        if inner.leading.as_ref().is_none_or(|l| l.term < term) {
            inner.leading = Some(Leading {
                term,
                accepted: HashMap::new(),
                told: HashMap::new(),
            });
        }
        inner.leading.as_mut().filter(|l| l.term == term)
    }

    /// `voter` accepted an append of `term` this node sent at `sent`.
    pub fn accepted(&self, voter: NodeId, term: u64, sent: Instant) {
        let mut inner = self.inner();
        if let Some(leading) = Self::leading(&mut inner, term) {
            let at = leading.accepted.entry(voter).or_insert(sent);
            *at = (*at).max(sent);
        }
        drop(inner);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// `voter`, having taken `term`, told that no append of an earlier
    /// term reached it after `at` (the earliest it told counts: each was
    /// true when told).
    pub fn told(&self, voter: NodeId, term: u64, at: Instant) {
        let mut inner = self.inner();
        if let Some(leading) = Self::leading(&mut inner, term) {
            let told = leading.told.entry(voter).or_insert(at);
            *told = (*told).min(at);
        }
    }

    /// The latest instant such that a quorum of `voters` accepted appends
    /// of `term` sent at or after it (this node, `me`, accepts its own at
    /// once); `None` before any quorum did.
    pub fn confirmed(&self, term: u64, voters: &BTreeSet<NodeId>, me: NodeId) -> Option<Instant> {
        let now = Instant::now();
        let inner = self.inner();
        let leading = inner.leading.as_ref().filter(|l| l.term == term);
        let mut sent: Vec<Instant> = voters
            .iter()
            .filter_map(|v| match *v == me {
                true => Some(now),
                false => leading.and_then(|l| l.accepted.get(v).copied()),
            })
            .collect();
        // The quorum's latest: the majority-th latest time.
        sent.sort_unstable_by(|a, b| b.cmp(a));
        sent.get(majority(voters.len())? - 1).copied()
    }

    /// An instant after which no leader of a term before `term` confirmed
    /// anything, from what `voters` told (`None` before a quorum told):
    /// the majority-th earliest of their bounds, the least that some
    /// quorum's latest can be.
    pub fn earlier_bound(&self, term: u64, voters: &BTreeSet<NodeId>) -> Option<Instant> {
        let inner = self.inner();
        let leading = inner.leading.as_ref().filter(|l| l.term == term)?;
        let mut told: Vec<Instant> = voters
            .iter()
            .filter_map(|v| leading.told.get(v).copied())
            .collect();
        told.sort_unstable();
        told.get(majority(voters.len())? - 1).copied()
    }

    /// Changes on every acceptance noted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The size of a majority of `voters` voters; `None` for none.
fn majority(voters: usize) -> Option<usize> {
    (voters > 0).then_some(voters / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_follower_tells_when_an_earlier_term_last_reached_it() {
        let s = Succession::new();
        // Nothing heard: the start bounds it.
        let start = s.earlier_than(5);
        s.arrived(3);
        let after_3 = s.earlier_than(5);
        assert!(after_3 >= start);
        std::thread::sleep(ms(5));
        // Arrivals of the term asked about, or later, do not count.
        s.arrived(5);
        s.arrived(6);
        assert_eq!(s.earlier_than(5), after_3);
        assert!(s.earlier_than(6) > after_3);
        // Asked about the earliest term it heard: only its start bounds it.
        assert_eq!(s.earlier_than(3), start);
    }

    #[test]
    fn folded_terms_still_bound_what_is_told() {
        let s = Succession::new();
        for term in 1..=(TERMS_KEPT as u64 + 4) {
            s.arrived(term);
        }
        let inner = s.inner();
        assert_eq!(inner.arrivals.len(), TERMS_KEPT);
        let folded = inner.folded.expect("terms 1-4 folded");
        drop(inner);
        // Asked about term 2, the bound still covers term 1 (and, folded
        // with it, terms 2-4: later, the safe side).
        assert_eq!(s.earlier_than(2), folded);
        assert!(s.earlier_than(TERMS_KEPT as u64 + 4) >= folded);
    }

    #[test]
    fn the_header_round_trips_on_the_safe_side() {
        let s = Succession::new();
        s.arrived(1);
        let bound = s.earlier_than(2);
        let value = s.header_for(2);
        let (term, at) = Succession::parse_header(&value).unwrap();
        assert_eq!(term, 2);
        // Read later and rounded down: never before the follower's bound.
        assert!(at >= bound, "{value}");
        for bad in ["", "2", "x 3", "2 -1", "2 3 4", "2 99999999999999999999"] {
            assert_eq!(Succession::parse_header(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_grant_is_confirmed_by_a_quorum_of_later_acceptances() {
        let s = Succession::new();
        let voters = BTreeSet::from([1, 2, 3]);
        // Sending times are past (this node's own acceptance is "now").
        let t0 = Instant::now() - ms(1000);
        assert_eq!(s.confirmed(4, &voters, 1), None);
        s.accepted(2, 4, t0);
        assert_eq!(s.confirmed(4, &voters, 1), Some(t0));
        // The quorum's latest: node 3's later acceptance.
        s.accepted(3, 4, t0 + ms(50));
        assert_eq!(s.confirmed(4, &voters, 1), Some(t0 + ms(50)));
        // An older answer does not move it back; another term's don't count.
        s.accepted(3, 4, t0 + ms(10));
        s.accepted(3, 3, t0 + ms(90));
        assert_eq!(s.confirmed(4, &voters, 1), Some(t0 + ms(50)));
        assert_eq!(s.confirmed(3, &voters, 1), None);
        // Five voters: two others must have accepted.
        let five = BTreeSet::from([1, 2, 3, 4, 5]);
        assert_eq!(s.confirmed(4, &five, 1), Some(t0));
        // A newer term starts afresh.
        s.accepted(2, 5, t0 + ms(100));
        assert_eq!(s.confirmed(4, &voters, 1), None);
        assert_eq!(s.confirmed(5, &voters, 1), Some(t0 + ms(100)));
        // Alone: confirmed now.
        let alone = BTreeSet::from([1]);
        assert!(s.confirmed(9, &alone, 1).unwrap() >= t0 + ms(1000));
    }

    #[test]
    fn a_new_leader_bounds_its_predecessors_by_a_quorums_word() {
        let s = Succession::new();
        let voters = BTreeSet::from([1, 2, 3]);
        let t0 = Instant::now();
        s.told(1, 7, t0 + ms(300));
        assert_eq!(s.earlier_bound(7, &voters), None, "one of three");
        s.told(3, 7, t0 + ms(100));
        // Majority-th earliest of {100, 300}: 300, the latest of the two.
        assert_eq!(s.earlier_bound(7, &voters), Some(t0 + ms(300)));
        // A third word lowers it to the best quorum's latest.
        s.told(2, 7, t0 + ms(200));
        assert_eq!(s.earlier_bound(7, &voters), Some(t0 + ms(200)));
        // A voter's later word never raises it.
        s.told(2, 7, t0 + ms(900));
        assert_eq!(s.earlier_bound(7, &voters), Some(t0 + ms(200)));
        // Words of a non-voter or an older term do not count.
        s.told(9, 7, t0);
        s.told(1, 6, t0);
        assert_eq!(s.earlier_bound(7, &voters), Some(t0 + ms(200)));
        assert_eq!(s.earlier_bound(8, &voters), None);
    }
}
