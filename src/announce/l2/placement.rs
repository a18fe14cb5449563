//! Who owns each service address: a pure function of the committed owners
//! and what the leader knows of each node's lease, run by the leader.
//!
//! - sticky: an owner keeps an address while its lease lives, it is not
//!   stopping and it can serve it (or no live node can): a node coming back
//!   takes nothing back;
//! - spread: an address without an owner goes to the live node that can
//!   serve it with the fewest addresses (ties: the smallest name), or, when
//!   none can, to the live node with the fewest; the addresses fewest nodes
//!   can serve are placed first;
//! - fenced: an address moves only once no other node may still hold it.
//!   Away from a silent owner, only after its lease has certainly run out;
//!   away from a live one, in two steps — first no owner (the owner drops
//!   it), then, once it reported (having applied that change) that it no
//!   longer holds it, the new owner. A stopping node that reported it holds
//!   nothing hands over in one step.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What the leader knows of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// It renewed recently: it may be given addresses.
    pub live: bool,
    /// Its lease may still run (renewed within the lease and the margin,
    /// or the leader is too new to know): it may hold addresses.
    pub may_hold: bool,
    /// It said it is stopping (and holds nothing from then on).
    pub stopping: bool,
    /// What it said in its last renewal: the addresses it can serve...
    pub can_serve: BTreeSet<IpAddr>,
    /// ...the addresses it held when it sent it...
    pub holds: BTreeSet<IpAddr>,
    /// ...and the last log index it had applied then (`None`: no renewal).
    pub applied: Option<u64>,
}

impl NodeState {
    /// The node may hold `vip`: its lease may run and it has not shown,
    /// after applying every owner change up to `owners_index`, that it
    /// does not.
    fn may_hold(&self, vip: IpAddr, owners_index: u64) -> bool {
        if !self.may_hold {
            return false;
        }
        let seen_all = self.applied.is_some_and(|a| a >= owners_index);
        !seen_all || self.holds.contains(&vip)
    }
}

/// The owners to commit: `vips` every service address now, `owners` the
/// committed owners (set at log index `owners_index`), `nodes` what the
/// leader knows of every node.
pub fn place(
    vips: &BTreeSet<IpAddr>,
    owners: &BTreeMap<IpAddr, String>,
    owners_index: u64,
    nodes: &BTreeMap<String, NodeState>,
) -> BTreeMap<IpAddr, String> {
    let none = NodeState::default();
    let node = |name: &str| nodes.get(name).unwrap_or(&none);
    let can_serve = |name: &str, vip: IpAddr| node(name).can_serve.contains(&vip);
    let candidates: Vec<&String> = nodes
        .iter()
        .filter(|(_, n)| n.live && !n.stopping)
        .map(|(name, _)| name)
        .collect();
    let mut next: BTreeMap<IpAddr, String> = BTreeMap::new();
    // Addresses to place once the ones kept are counted.
    let mut free = Vec::new();
    for &vip in vips {
        let Some(owner) = owners.get(&vip) else {
            // Nobody may hold it: a node that still might (it owned it
            // before and has not shown it dropped it) keeps it unowned.
            let held = nodes.values().any(|n| n.may_hold(vip, owners_index));
            if !held {
                free.push(vip);
            }
            continue;
        };
        let state = node(owner);
        let someone_serves = candidates.iter().any(|c| can_serve(c, vip));
        let keeps = state.live && !state.stopping && (can_serve(owner, vip) || !someone_serves);
        if keeps {
            next.insert(vip, owner.clone());
            continue;
        }
        if !state.may_hold(vip, owners_index) {
            // Certainly gone from the owner: straight to another node.
            free.push(vip);
        } else if state.live && !state.stopping {
            // Live but unable to serve it: the owner drops it first.
        } else {
            // Silent or stopping, and may still hold it: wait for its
            // lease to run out (or for it to say it let go).
            next.insert(vip, owner.clone());
        }
    }
    let mut load: BTreeMap<&String, usize> = candidates.iter().map(|c| (*c, 0)).collect();
    for owner in next.values() {
        if let Some(n) = load.get_mut(owner) {
            *n += 1;
        }
    }
    // The addresses fewest nodes can serve first, so that the choice left
    // for them is not taken by addresses that had others.
    let serving_count = |vip: IpAddr| candidates.iter().filter(|c| can_serve(c, vip)).count();
    free.sort_by_key(|vip| (serving_count(*vip), *vip));
    for vip in free {
        let serving: Vec<&String> = candidates
            .iter()
            .copied()
            .filter(|c| can_serve(c, vip))
            .collect();
        let pool = if serving.is_empty() {
            &candidates
        } else {
            &serving
        };
        // Fewest first, then the smallest name: the same answer on every
        // leader for the same inputs.
        let chosen = pool
            .iter()
            .min_by_key(|c| (load.get(**c).copied().unwrap_or(0), **c))
            .copied();
        if let Some(chosen) = chosen {
            *load.entry(chosen).or_insert(0) += 1;
            next.insert(vip, chosen.clone());
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 80, 0, n])
    }

    fn vips(ns: &[u8]) -> BTreeSet<IpAddr> {
        ns.iter().map(|n| ip(*n)).collect()
    }

    /// A live node that renewed after applying `applied`, serving `serves`
    /// and holding `holds`.
    fn live(serves: &[u8], holds: &[u8], applied: u64) -> NodeState {
        NodeState {
            live: true,
            may_hold: true,
            stopping: false,
            can_serve: vips(serves),
            holds: vips(holds),
            applied: Some(applied),
        }
    }

    fn owners(pairs: &[(u8, &str)]) -> BTreeMap<IpAddr, String> {
        pairs.iter().map(|(n, o)| (ip(*n), o.to_string())).collect()
    }

    fn nodes(list: Vec<(&str, NodeState)>) -> BTreeMap<String, NodeState> {
        list.into_iter().map(|(n, s)| (n.to_string(), s)).collect()
    }

    #[test]
    fn new_addresses_spread_over_the_nodes_that_can_serve_them() {
        let all = [1, 2, 3, 4, 5, 6];
        let n = nodes(vec![
            ("a", live(&all, &[], 1)),
            ("b", live(&all, &[], 1)),
            ("c", live(&[1, 2], &[], 1)),
        ]);
        let placed = place(&vips(&all), &BTreeMap::new(), 1, &n);
        let count = |who: &str| placed.values().filter(|o| *o == who).count();
        assert_eq!(placed.len(), 6);
        assert_eq!((count("a"), count("b"), count("c")), (2, 2, 2));
        // c could only take the two it serves.
        assert_eq!((&placed[&ip(1)][..], &placed[&ip(2)][..]), ("c", "c"));
        for n in [3, 4, 5, 6] {
            assert_ne!(placed[&ip(n)], "c");
        }
        // Deterministic: the same inputs, the same answer.
        assert_eq!(place(&vips(&all), &BTreeMap::new(), 1, &n), placed);
    }

    #[test]
    fn an_owner_keeps_its_addresses_and_a_returning_node_takes_none_back() {
        let n = nodes(vec![
            ("a", live(&[1, 2], &[], 5)),
            ("b", live(&[1, 2], &[1, 2], 5)),
        ]);
        let now = owners(&[(1, "b"), (2, "b")]);
        assert_eq!(place(&vips(&[1, 2]), &now, 5, &n), now);
    }

    #[test]
    fn nobody_able_to_serve_still_gets_an_owner() {
        let n = nodes(vec![("a", live(&[], &[], 1)), ("b", live(&[], &[], 1))]);
        let placed = place(&vips(&[1]), &BTreeMap::new(), 1, &n);
        assert_eq!(placed, owners(&[(1, "a")]));
        // And keeps it while nobody else can either.
        assert_eq!(place(&vips(&[1]), &placed, 2, &n), placed);
    }

    #[test]
    fn a_silent_owner_keeps_its_addresses_until_its_lease_is_out() {
        let silent = NodeState {
            live: false,
            ..live(&[1], &[1], 3)
        };
        let n = nodes(vec![("a", silent.clone()), ("b", live(&[1], &[], 3))]);
        let now = owners(&[(1, "a")]);
        assert_eq!(place(&vips(&[1]), &now, 3, &n), now, "its lease may run");
        let expired = NodeState {
            may_hold: false,
            ..silent
        };
        let n = nodes(vec![("a", expired), ("b", live(&[1], &[], 3))]);
        assert_eq!(place(&vips(&[1]), &now, 3, &n), owners(&[(1, "b")]));
    }

    #[test]
    fn a_live_owner_that_cannot_serve_lets_go_before_another_takes_over() {
        let now = owners(&[(1, "a")]);
        let n = nodes(vec![("a", live(&[], &[1], 7)), ("b", live(&[1], &[], 7))]);
        // Step one: no owner.
        let step = place(&vips(&[1]), &now, 7, &n);
        assert!(step.is_empty(), "{step:?}");
        // Committed at 8; a renewal sent before a applied it proves nothing.
        let stale = nodes(vec![("a", live(&[], &[], 7)), ("b", live(&[1], &[], 8))]);
        assert!(place(&vips(&[1]), &step, 8, &stale).is_empty());
        // a applied 8 and holds it still: wait.
        let holding = nodes(vec![("a", live(&[], &[1], 8)), ("b", live(&[1], &[], 8))]);
        assert!(place(&vips(&[1]), &step, 8, &holding).is_empty());
        // a applied 8 and dropped it: step two.
        let dropped = nodes(vec![("a", live(&[], &[], 8)), ("b", live(&[1], &[], 8))]);
        assert_eq!(place(&vips(&[1]), &step, 8, &dropped), owners(&[(1, "b")]));
    }

    #[test]
    fn a_stopping_node_that_let_go_hands_over_at_once() {
        let now = owners(&[(1, "a"), (2, "a")]);
        let stopping = NodeState {
            stopping: true,
            ..live(&[1, 2], &[], 4)
        };
        let n = nodes(vec![("a", stopping), ("b", live(&[1, 2], &[], 4))]);
        assert_eq!(
            place(&vips(&[1, 2]), &now, 4, &n),
            owners(&[(1, "b"), (2, "b")])
        );
        // Still holding (its release not heard yet): it keeps them.
        let holding = NodeState {
            stopping: true,
            ..live(&[1, 2], &[1], 4)
        };
        let n = nodes(vec![("a", holding), ("b", live(&[1, 2], &[], 4))]);
        assert_eq!(
            place(&vips(&[1, 2]), &now, 4, &n),
            owners(&[(1, "a"), (2, "b")])
        );
    }

    #[test]
    fn a_new_leader_places_nothing_a_node_it_has_not_heard_may_hold() {
        // c has not renewed with this leader, whose grace still covers it.
        let unknown = NodeState {
            may_hold: true,
            ..NodeState::default()
        };
        let n = nodes(vec![("b", live(&[1], &[], 9)), ("c", unknown)]);
        let now = owners(&[(1, "c")]);
        assert_eq!(place(&vips(&[1]), &now, 9, &n), now);
        // An unowned address waits too: c might hold it from before.
        assert!(place(&vips(&[1]), &BTreeMap::new(), 9, &n).is_empty());
    }

    #[test]
    fn addresses_no_service_has_lose_their_owner() {
        let n = nodes(vec![("a", live(&[1], &[1, 2], 2))]);
        let placed = place(&vips(&[1]), &owners(&[(1, "a"), (2, "a")]), 2, &n);
        assert_eq!(placed, owners(&[(1, "a")]));
    }
}
