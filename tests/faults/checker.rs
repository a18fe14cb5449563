//! A linearizability checker: the search of Wing and Gong with the
//! memoisation of Lowe ("Testing for linearizability", Concurrency and
//! Computation 2017), as Porcupine (github.com/anishathalye/porcupine)
//! implements it, over a model that may be nondeterministic (its sets of
//! states are the search's states, as Porcupine's NondeterministicModel).
//!
//! An operation whose outcome is unknown (the client timed out, the node
//! died) returns "at infinity": it may take effect anywhere after its call,
//! or (placed last) never. The test target cross-checks this checker
//! against stateright's `LinearizabilityTester` on random small histories.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// What the checked object does, one operation at a time.
pub trait Model {
    type State: Clone + Eq + Hash + Ord + std::fmt::Debug;
    type Input: std::fmt::Debug;
    type Output: std::fmt::Debug;
    fn init(&self) -> Self::State;
    /// Every state the operation `input` answering `output` may lead to
    /// from `state`; none if it cannot answer that there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Vec<Self::State>;
}

/// One operation of the history. `ret` is `None` when its outcome is
/// unknown.
#[derive(Debug, Clone)]
pub struct Op<I, O> {
    pub input: I,
    pub output: O,
    pub call: u64,
    pub ret: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order fits; the longest prefix of calls that could be ordered.
    Violation {
        ordered: usize,
        of: usize,
    },
    /// The search ran out of time (say so; never count it as a pass).
    Unknown,
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// The other entry of the same operation.
    other: usize,
    prev: usize,
    next: usize,
}

/// A bit set of linearized operations.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Checks whether `ops` can be ordered as the model allows, respecting
/// real time (an operation that returned before another was called comes
/// first).
pub fn check<M: Model>(model: &M, ops: &[Op<M::Input, M::Output>], budget: Duration) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events by time; a call before a return at the same instant (they
    // count as concurrent). Entry 0 is the list head.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.call, true, i));
        events.push((op.ret.unwrap_or(u64::MAX), false, i));
    }
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    let head = 0;
    let mut list: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    list.push(Entry {
        op: usize::MAX,
        is_call: false,
        other: 0,
        prev: 0,
        next: 1,
    });
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (k, &(_, is_call, op)) in events.iter().enumerate() {
        let at = k + 1;
        list.push(Entry {
            op,
            is_call,
            other: 0,
            prev: at - 1,
            next: if k + 1 == events.len() {
                usize::MAX
            } else {
                at + 1
            },
        });
        if is_call {
            call_at[op] = at;
        } else {
            ret_at[op] = at;
        }
    }
    for op in 0..n {
        list[call_at[op]].other = ret_at[op];
        list[ret_at[op]].other = call_at[op];
    }
    let lift = |list: &mut Vec<Entry>, at: usize| {
        // Unlinks the call `at` and its return.
        let (p, nx) = (list[at].prev, list[at].next);
        list[p].next = nx;
        if nx != usize::MAX {
            list[nx].prev = p;
        }
        let r = list[at].other;
        let (p, nx) = (list[r].prev, list[r].next);
        list[p].next = nx;
        if nx != usize::MAX {
            list[nx].prev = p;
        }
    };
    let unlift = |list: &mut Vec<Entry>, at: usize| {
        let r = list[at].other;
        let (p, nx) = (list[r].prev, list[r].next);
        list[p].next = r;
        if nx != usize::MAX {
            list[nx].prev = r;
        }
        let (p, nx) = (list[at].prev, list[at].next);
        list[p].next = at;
        if nx != usize::MAX {
            list[nx].prev = at;
        }
    };

    let started = Instant::now();
    let mut steps = 0u64;
    let mut cache: HashSet<(Bits, Vec<M::State>)> = HashSet::new();
    let mut linearized = Bits::new(n);
    let mut state: Vec<M::State> = vec![model.init()];
    let mut stack: Vec<(usize, Vec<M::State>)> = Vec::new();
    let mut longest = 0;
    let mut entry = list[head].next;
    while list[head].next != usize::MAX {
        steps += 1;
        if steps.is_multiple_of(4096) && started.elapsed() > budget {
            return Verdict::Unknown;
        }
        let e = list[entry];
        if e.is_call {
            let op = &ops[e.op];
            let mut next: Vec<M::State> = state
                .iter()
                .flat_map(|s| model.step(s, &op.input, &op.output))
                .collect();
            next.sort();
            next.dedup();
            let mut moved = false;
            if !next.is_empty() {
                let mut bits = linearized.clone();
                bits.set(e.op);
                if cache.insert((bits.clone(), next.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    linearized = bits;
                    longest = longest.max(linearized.count());
                    lift(&mut list, entry);
                    entry = list[head].next;
                    moved = true;
                }
            }
            if !moved {
                entry = e.next;
            }
        } else {
            // A return whose call could not be placed: undo the last choice.
            let Some((at, before)) = stack.pop() else {
                return Verdict::Violation {
                    ordered: longest,
                    of: n,
                };
            };
            state = before;
            linearized.clear(list[at].op);
            unlift(&mut list, at);
            entry = list[at].next;
        }
    }
    Verdict::Linearizable
}
