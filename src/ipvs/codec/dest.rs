//! Destination attributes (IPVS_DEST_ATTR_*), nested in IPVS_CMD_ATTR_DEST.

use super::stats::{self, StatsAttr};
use super::{
    addr_bytes, default_nla, emit_nlas, nlas_len, parse_nlas, u16_be, u16_ne, u32_ne, u8_ne,
    DecodeError,
};
use netlink_packet_core::{DefaultNla, Nla, NlaBuffer};

const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
const IPVS_DEST_ATTR_STATS: u16 = 10;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IPVS_DEST_ATTR_STATS64: u16 = 12;
const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    /// 4 or 16 bytes in network order; replies always carry 16.
    Addr(Vec<u8>),
    /// Port in host order (big-endian on the wire).
    Port(u16),
    /// IP_VS_CONN_F_* forwarding code (the kernel masks it with 0x7).
    FwdMethod(u32),
    /// Native u32; the kernel stores a signed int and rejects negatives.
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    ActiveConns(u32),
    InactiveConns(u32),
    PersistentConns(u32),
    Stats(Vec<StatsAttr>),
    /// Destination family when it differs from the service's (tunnels).
    AddrFamily(u16),
    Stats64(Vec<StatsAttr>),
    /// 0 ipip, 1 gue, 2 gre.
    TunType(u8),
    /// Host order (big-endian on the wire).
    TunPort(u16),
    /// 0 nocsum, 1 csum, 2 remcsum (native).
    TunFlags(u16),
    Other(DefaultNla),
}

pub(super) fn parse(nla: &NlaBuffer<&[u8]>) -> Result<DestAttr, DecodeError> {
    use DestAttr::*;
    let v = nla.value();
    Ok(match nla.kind() {
        IPVS_DEST_ATTR_ADDR => Addr(addr_bytes("destination address", v)?),
        IPVS_DEST_ATTR_PORT => Port(u16_be("destination port", v)?),
        IPVS_DEST_ATTR_FWD_METHOD => FwdMethod(u32_ne("destination forwarding method", v)?),
        IPVS_DEST_ATTR_WEIGHT => Weight(u32_ne("destination weight", v)?),
        IPVS_DEST_ATTR_U_THRESH => UpperThreshold(u32_ne("destination upper threshold", v)?),
        IPVS_DEST_ATTR_L_THRESH => LowerThreshold(u32_ne("destination lower threshold", v)?),
        IPVS_DEST_ATTR_ACTIVE_CONNS => ActiveConns(u32_ne("destination active conns", v)?),
        IPVS_DEST_ATTR_INACT_CONNS => InactiveConns(u32_ne("destination inactive conns", v)?),
        IPVS_DEST_ATTR_PERSIST_CONNS => PersistentConns(u32_ne("destination persistent conns", v)?),
        IPVS_DEST_ATTR_STATS => Stats(parse_nlas(v, "destination stats", stats::parse32)?),
        IPVS_DEST_ATTR_ADDR_FAMILY => AddrFamily(u16_ne("destination address family", v)?),
        IPVS_DEST_ATTR_STATS64 => Stats64(parse_nlas(v, "destination stats64", stats::parse64)?),
        IPVS_DEST_ATTR_TUN_TYPE => TunType(u8_ne("destination tunnel type", v)?),
        IPVS_DEST_ATTR_TUN_PORT => TunPort(u16_be("destination tunnel port", v)?),
        IPVS_DEST_ATTR_TUN_FLAGS => TunFlags(u16_ne("destination tunnel flags", v)?),
        _ => Other(default_nla(nla)?),
    })
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Addr(a) => a.len(),
            TunType(_) => 1,
            Port(_) | AddrFamily(_) | TunPort(_) | TunFlags(_) => 2,
            FwdMethod(_) | Weight(_) | UpperThreshold(_) | LowerThreshold(_) | ActiveConns(_)
            | InactiveConns(_) | PersistentConns(_) => 4,
            Stats(s) | Stats64(s) => nlas_len(s),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Addr(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactiveConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistentConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS,
            AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64,
            TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use DestAttr::*;
        match self {
            Addr(a) => buf[..a.len()].copy_from_slice(a),
            TunType(v) => buf[0] = *v,
            Port(v) | TunPort(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            AddrFamily(v) | TunFlags(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            FwdMethod(v) | Weight(v) | UpperThreshold(v) | LowerThreshold(v) | ActiveConns(v)
            | InactiveConns(v) | PersistentConns(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Stats(s) | Stats64(s) => emit_nlas(s, buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}
