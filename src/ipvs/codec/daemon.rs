//! Sync-daemon attributes (IPVS_DAEMON_ATTR_*), nested in IPVS_CMD_ATTR_DAEMON.

use super::{c_string, default_nla, emit_c_string, fixed, u16_ne, u32_ne, u8_ne, DecodeError};
use netlink_packet_core::{DefaultNla, Nla, NlaBuffer};

const IPVS_DAEMON_ATTR_STATE: u16 = 1;
const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// Daemon state bits.
pub const IP_VS_STATE_MASTER: u32 = 1;
pub const IP_VS_STATE_BACKUP: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttr {
    /// IP_VS_STATE_MASTER or IP_VS_STATE_BACKUP.
    State(u32),
    /// Multicast interface name (at most 15 bytes).
    McastIfn(String),
    SyncId(u32),
    SyncMaxLen(u16),
    /// IPv4 group address, 4 bytes in network order.
    McastGroup([u8; 4]),
    McastGroup6([u8; 16]),
    McastPort(u16),
    McastTtl(u8),
    Other(DefaultNla),
}

pub(super) fn parse(nla: &NlaBuffer<&[u8]>) -> Result<DaemonAttr, DecodeError> {
    use DaemonAttr::*;
    let v = nla.value();
    Ok(match nla.kind() {
        IPVS_DAEMON_ATTR_STATE => State(u32_ne("daemon state", v)?),
        IPVS_DAEMON_ATTR_MCAST_IFN => McastIfn(c_string("daemon mcast_ifn", v)?),
        IPVS_DAEMON_ATTR_SYNC_ID => SyncId(u32_ne("daemon sync_id", v)?),
        IPVS_DAEMON_ATTR_SYNC_MAXLEN => SyncMaxLen(u16_ne("daemon sync_maxlen", v)?),
        IPVS_DAEMON_ATTR_MCAST_GROUP => McastGroup(fixed("daemon mcast_group", v)?),
        IPVS_DAEMON_ATTR_MCAST_GROUP6 => McastGroup6(fixed("daemon mcast_group6", v)?),
        // Native order, as the kernel's nla_get_u16 reads it (ip_vs_ctl.c).
        IPVS_DAEMON_ATTR_MCAST_PORT => McastPort(u16_ne("daemon mcast_port", v)?),
        IPVS_DAEMON_ATTR_MCAST_TTL => McastTtl(u8_ne("daemon mcast_ttl", v)?),
        _ => Other(default_nla(nla)?),
    })
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        use DaemonAttr::*;
        match self {
            State(_) | SyncId(_) => 4,
            McastIfn(s) => s.len() + 1,
            SyncMaxLen(_) | McastPort(_) => 2,
            McastGroup(_) => 4,
            McastGroup6(_) => 16,
            McastTtl(_) => 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DaemonAttr::*;
        match self {
            State(_) => IPVS_DAEMON_ATTR_STATE,
            McastIfn(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            SyncMaxLen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use DaemonAttr::*;
        match self {
            State(v) | SyncId(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            McastIfn(s) => emit_c_string(buf, s),
            SyncMaxLen(v) | McastPort(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            McastGroup(a) => buf[..4].copy_from_slice(a),
            McastGroup6(a) => buf[..16].copy_from_slice(a),
            McastTtl(v) => buf[0] = *v,
            Other(nla) => nla.emit_value(buf),
        }
    }
}
