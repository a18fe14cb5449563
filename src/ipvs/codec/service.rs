//! Service attributes (IPVS_SVC_ATTR_*), nested in IPVS_CMD_ATTR_SERVICE.

use super::stats::{self, StatsAttr};
use super::{
    addr_bytes, c_string, default_nla, emit_c_string, emit_nlas, fixed, nlas_len, parse_nlas,
    u16_be, u16_ne, u32_ne, DecodeError,
};
use netlink_packet_core::{DefaultNla, Nla, NlaBuffer};

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// `struct ip_vs_flags`: the kernel applies `(old & !mask) | (flags & mask)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagsValue {
    pub flags: u32,
    pub mask: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    /// Address family, native u16.
    Af(u16),
    /// IP protocol number, native u16.
    Protocol(u16),
    /// 4 or 16 bytes in network order; replies always carry 16.
    Addr(Vec<u8>),
    /// Port in host order (big-endian on the wire).
    Port(u16),
    Fwmark(u32),
    SchedName(String),
    Flags(FlagsValue),
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Raw 4 bytes read natively: for IPv4 the mask's bytes in network
    /// order, for IPv6 the prefix length.
    Netmask(u32),
    Stats(Vec<StatsAttr>),
    PeName(String),
    Stats64(Vec<StatsAttr>),
    Other(DefaultNla),
}

pub(super) fn parse(nla: &NlaBuffer<&[u8]>) -> Result<ServiceAttr, DecodeError> {
    use ServiceAttr::*;
    let v = nla.value();
    Ok(match nla.kind() {
        IPVS_SVC_ATTR_AF => Af(u16_ne("service af", v)?),
        IPVS_SVC_ATTR_PROTOCOL => Protocol(u16_ne("service protocol", v)?),
        IPVS_SVC_ATTR_ADDR => Addr(addr_bytes("service address", v)?),
        IPVS_SVC_ATTR_PORT => Port(u16_be("service port", v)?),
        IPVS_SVC_ATTR_FWMARK => Fwmark(u32_ne("service fwmark", v)?),
        IPVS_SVC_ATTR_SCHED_NAME => SchedName(c_string("service scheduler", v)?),
        IPVS_SVC_ATTR_FLAGS => {
            let b: [u8; 8] = fixed("service flags", v)?;
            let (f, m) = b.split_at(4);
            Flags(FlagsValue {
                flags: u32_ne("service flags", f)?,
                mask: u32_ne("service flags mask", m)?,
            })
        }
        IPVS_SVC_ATTR_TIMEOUT => Timeout(u32_ne("service timeout", v)?),
        IPVS_SVC_ATTR_NETMASK => Netmask(u32_ne("service netmask", v)?),
        IPVS_SVC_ATTR_STATS => Stats(parse_nlas(v, "service stats", stats::parse32)?),
        IPVS_SVC_ATTR_PE_NAME => PeName(c_string("service pe", v)?),
        IPVS_SVC_ATTR_STATS64 => Stats64(parse_nlas(v, "service stats64", stats::parse64)?),
        _ => Other(default_nla(nla)?),
    })
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        use ServiceAttr::*;
        match self {
            Af(_) | Protocol(_) | Port(_) => 2,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            Addr(a) => a.len(),
            SchedName(s) | PeName(s) => s.len() + 1,
            Flags(_) => 8,
            Stats(s) | Stats64(s) => nlas_len(s),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttr::*;
        match self {
            Af(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Addr(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags(_) => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS,
            PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use ServiceAttr::*;
        match self {
            Af(v) | Protocol(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Port(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Fwmark(v) | Timeout(v) | Netmask(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Addr(a) => buf[..a.len()].copy_from_slice(a),
            SchedName(s) | PeName(s) => emit_c_string(buf, s),
            Flags(f) => {
                buf[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            Stats(s) | Stats64(s) => emit_nlas(s, buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}
