//! Counter attributes (IPVS_STATS_ATTR_*), nested in a service's or
//! destination's STATS (32-bit counters, 64-bit byte counts) or STATS64
//! (all 64-bit).

use super::{default_nla, u32_ne, u64_ne, DecodeError};
use crate::model::Stats;
use netlink_packet_core::{DefaultNla, Nla, NlaBuffer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatsField {
    Conns,
    InPkts,
    OutPkts,
    InBytes,
    OutBytes,
    Cps,
    InPps,
    OutPps,
    InBps,
    OutBps,
}

impl StatsField {
    const ALL: [StatsField; 10] = [
        StatsField::Conns,
        StatsField::InPkts,
        StatsField::OutPkts,
        StatsField::InBytes,
        StatsField::OutBytes,
        StatsField::Cps,
        StatsField::InPps,
        StatsField::OutPps,
        StatsField::InBps,
        StatsField::OutBps,
    ];

    /// IPVS_STATS_ATTR_CONNS = 1 … IPVS_STATS_ATTR_OUTBPS = 10.
    fn kind(self) -> u16 {
        self as u16 + 1
    }

    fn from_kind(kind: u16) -> Option<StatsField> {
        Self::ALL.get(usize::from(kind).checked_sub(1)?).copied()
    }

    fn name(self) -> &'static str {
        match self {
            StatsField::Conns => "stats conns",
            StatsField::InPkts => "stats inpkts",
            StatsField::OutPkts => "stats outpkts",
            StatsField::InBytes => "stats inbytes",
            StatsField::OutBytes => "stats outbytes",
            StatsField::Cps => "stats cps",
            StatsField::InPps => "stats inpps",
            StatsField::OutPps => "stats outpps",
            StatsField::InBps => "stats inbps",
            StatsField::OutBps => "stats outbps",
        }
    }

    fn slot(self, s: &mut Stats) -> &mut u64 {
        match self {
            StatsField::Conns => &mut s.conns,
            StatsField::InPkts => &mut s.inpkts,
            StatsField::OutPkts => &mut s.outpkts,
            StatsField::InBytes => &mut s.inbytes,
            StatsField::OutBytes => &mut s.outbytes,
            StatsField::Cps => &mut s.cps,
            StatsField::InPps => &mut s.inpps,
            StatsField::OutPps => &mut s.outpps,
            StatsField::InBps => &mut s.inbps,
            StatsField::OutBps => &mut s.outbps,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttr {
    U32(StatsField, u32),
    U64(StatsField, u64),
    /// IPVS_STATS_ATTR_PAD and anything newer.
    Other(DefaultNla),
}

/// STATS: byte counters are u64, everything else u32.
pub(super) fn parse32(nla: &NlaBuffer<&[u8]>) -> Result<StatsAttr, DecodeError> {
    match StatsField::from_kind(nla.kind()) {
        Some(f @ (StatsField::InBytes | StatsField::OutBytes)) => {
            Ok(StatsAttr::U64(f, u64_ne(f.name(), nla.value())?))
        }
        Some(f) => Ok(StatsAttr::U32(f, u32_ne(f.name(), nla.value())?)),
        None => Ok(StatsAttr::Other(default_nla(nla)?)),
    }
}

/// STATS64: every counter is u64.
pub(super) fn parse64(nla: &NlaBuffer<&[u8]>) -> Result<StatsAttr, DecodeError> {
    match StatsField::from_kind(nla.kind()) {
        Some(f) => Ok(StatsAttr::U64(f, u64_ne(f.name(), nla.value())?)),
        None => Ok(StatsAttr::Other(default_nla(nla)?)),
    }
}

/// Folds counter attributes into [`Stats`].
pub(crate) fn to_stats(attrs: &[StatsAttr]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        match *a {
            StatsAttr::U32(f, v) => *f.slot(&mut s) = u64::from(v),
            StatsAttr::U64(f, v) => *f.slot(&mut s) = v,
            StatsAttr::Other(_) => {}
        }
    }
    s
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::U32(..) => 4,
            StatsAttr::U64(..) => 8,
            StatsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::U32(f, _) | StatsAttr::U64(f, _) => f.kind(),
            StatsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            StatsAttr::U32(_, v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::U64(_, v) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}
