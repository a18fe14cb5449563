//! The register the clients share: one real server's weight, with the
//! service's revision (its ETag) as a version. Reads are `?consistent=true`
//! GETs; writes are PUTs, blind or with `If-Match` (compare and set).
//! Every write writes a value never written before, so a write always
//! changes the revision.

use super::checker::Model;

/// A revision the history has shown, or only a bound on it (after a write
/// whose answer was lost, the new revision is some number above the old).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rev {
    Known(u64),
    Above(u64),
}

impl Rev {
    fn could_be(self, r: u64) -> bool {
        match self {
            Rev::Known(k) => k == r,
            Rev::Above(b) => r > b,
        }
    }
    /// Whether a later write may have revision `r`.
    fn before(self, r: u64) -> bool {
        match self {
            Rev::Known(k) | Rev::Above(k) => r > k,
        }
    }
    fn floor(self) -> u64 {
        match self {
            Rev::Known(k) | Rev::Above(k) => k,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    pub value: u64,
    pub rev: Rev,
}

#[derive(Debug, Clone)]
pub enum Input {
    Read,
    Write(u64),
    /// Write the value if the revision is still this one.
    Cas {
        if_rev: u64,
        value: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A read's value and revision.
    Value(u64, u64),
    /// A write's (or successful compare-and-set's) new revision.
    Written(u64),
    /// 412: the revision had moved on.
    Mismatch,
    /// No answer, or one that does not say whether it happened.
    Unknown,
}

/// The register, starting at `value` at revision `rev`.
pub struct Register {
    pub value: u64,
    pub rev: u64,
}

impl Model for Register {
    type State = State;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> State {
        State {
            value: self.value,
            rev: Rev::Known(self.rev),
        }
    }

    fn step(&self, s: &State, input: &Input, output: &Output) -> Vec<State> {
        let written = |value, rev| State { value, rev };
        match (input, output) {
            (Input::Read, Output::Value(v, r)) if *v == s.value && s.rev.could_be(*r) => {
                vec![written(*v, Rev::Known(*r))]
            }
            (Input::Read, Output::Unknown) => vec![*s],
            (Input::Write(v), Output::Written(r)) if s.rev.before(*r) => {
                vec![written(*v, Rev::Known(*r))]
            }
            (Input::Write(v), Output::Unknown) => vec![written(*v, Rev::Above(s.rev.floor()))],
            (Input::Cas { if_rev, value }, Output::Written(r))
                if s.rev.could_be(*if_rev) && r > if_rev =>
            {
                vec![written(*value, Rev::Known(*r))]
            }
            (Input::Cas { if_rev, .. }, Output::Mismatch) if s.rev != Rev::Known(*if_rev) => {
                vec![*s]
            }
            (Input::Cas { if_rev, value }, Output::Unknown) => {
                let mut next = vec![*s];
                if s.rev.could_be(*if_rev) {
                    next.push(written(*value, Rev::Above(*if_rev)));
                }
                next
            }
            _ => Vec::new(),
        }
    }
}
