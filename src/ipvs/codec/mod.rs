//! The IPVS generic-netlink family ("IPVS", version 1): one message type,
//! one enum per attribute space, kernel constants beside the code that uses
//! them (authority: `include/uapi/linux/ip_vs.h`, `net/netfilter/ipvs/ip_vs_ctl.c`).
//!
//! Decoding never panics and never drops what it does not understand: unknown
//! attributes are kept as `Other(DefaultNla)` and emitted again unchanged, so
//! a decoded kernel message emits back to the same bytes.

mod convert;
mod daemon;
mod dest;
mod service;
mod stats;

pub use convert::{change_request, dest_entry, service_entry, service_key_attrs};
pub use daemon::{DaemonAttr, IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER};
pub use dest::DestAttr;
pub use service::{FlagsValue, ServiceAttr};
pub use stats::{StatsAttr, StatsField};

use netlink_packet_core::{
    DecodeError as CoreDecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLA_F_NESTED,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

/// Generic netlink family name and version of IPVS.
pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

// Top-level attributes (IPVS_CMD_ATTR_*).
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_CMD_ATTR_DAEMON: u16 = 3;
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// Attributes of the GET_INFO reply (IPVS_INFO_ATTR_*): a separate space whose
// numbers collide with the command attributes above.
const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// A malformed message or attribute. Carries which attribute was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{attr}: expected {expected} bytes, got {got}")]
    Length {
        attr: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{attr}: not a NUL-terminated UTF-8 string")]
    String { attr: &'static str },
    #[error("malformed attribute in {space}: {detail}")]
    Nla { space: &'static str, detail: String },
    #[error("generic netlink payload of {0} bytes is shorter than its 4-byte header")]
    ShortHeader(usize),
    #[error("netlink message: {0}")]
    Netlink(String),
    #[error("kernel reply: {0}")]
    Reply(String),
}

/// IPVS commands (IPVS_CMD_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    /// Only sent by the kernel, as the reply to `GetInfo`.
    SetInfo,
    GetInfo,
    Zero,
    Flush,
    Other(u8),
}

impl From<u8> for IpvsCmd {
    fn from(n: u8) -> Self {
        use IpvsCmd::*;
        match n {
            1 => NewService,
            2 => SetService,
            3 => DelService,
            4 => GetService,
            5 => NewDest,
            6 => SetDest,
            7 => DelDest,
            8 => GetDest,
            9 => NewDaemon,
            10 => DelDaemon,
            11 => GetDaemon,
            12 => SetConfig,
            13 => GetConfig,
            14 => SetInfo,
            15 => GetInfo,
            16 => Zero,
            17 => Flush,
            n => Other(n),
        }
    }
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        use IpvsCmd::*;
        match c {
            NewService => 1,
            SetService => 2,
            DelService => 3,
            GetService => 4,
            NewDest => 5,
            SetDest => 6,
            DelDest => 7,
            GetDest => 8,
            NewDaemon => 9,
            DelDaemon => 10,
            GetDaemon => 11,
            SetConfig => 12,
            GetConfig => 13,
            SetInfo => 14,
            GetInfo => 15,
            Zero => 16,
            Flush => 17,
            Other(n) => n,
        }
    }
}

impl IpvsCmd {
    /// Whether the message's top-level attributes are in the info space.
    fn carries_info(self) -> bool {
        matches!(self, IpvsCmd::SetInfo | IpvsCmd::GetInfo)
    }
}

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttr {
    Service(Vec<ServiceAttr>),
    Dest(Vec<DestAttr>),
    Daemon(Vec<DaemonAttr>),
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    /// GET_INFO reply: IPVS version, 0xMMmmpp.
    Version(u32),
    /// GET_INFO reply: connection hash table size.
    ConnTabSize(u32),
    Other(DefaultNla),
}

/// One IPVS generic-netlink message: a command and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: Vec<IpvsAttr>,
    /// Whether the top-level nests (service, destination, daemon) carry
    /// NLA_F_NESTED. Requests set it, as libnl does for ipvsadm; the kernel's
    /// replies do not. Kept so that a decoded message emits back unchanged.
    pub nested_flag: bool,
}

impl IpvsMessage {
    /// A request: nests flagged NLA_F_NESTED.
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> IpvsMessage {
        IpvsMessage {
            cmd,
            attrs,
            nested_flag: true,
        }
    }

    /// Decodes the attributes of a message whose command is `cmd` (the
    /// command decides the attribute space).
    pub fn decode(cmd: IpvsCmd, attrs: &[u8]) -> Result<IpvsMessage, DecodeError> {
        // True unless a nest comes without the flag (vacuously true for
        // messages without nests, which emit the same either way).
        let nested_flag = cmd.carries_info()
            || NlasIterator::new(attrs).filter_map(Result::ok).all(|nla| {
                !matches!(
                    nla.kind(),
                    IPVS_CMD_ATTR_SERVICE | IPVS_CMD_ATTR_DEST | IPVS_CMD_ATTR_DAEMON
                ) || nla.nested_flag()
            });
        let attrs = if cmd.carries_info() {
            parse_nlas(attrs, "info attributes", parse_info_attr)?
        } else {
            parse_nlas(attrs, "command attributes", parse_cmd_attr)?
        };
        Ok(IpvsMessage {
            cmd,
            attrs,
            nested_flag,
        })
    }

    /// Decodes a whole generic-netlink payload: the 4-byte genl header
    /// followed by attributes.
    pub fn decode_genl(payload: &[u8]) -> Result<IpvsMessage, DecodeError> {
        let (header, attrs) = payload
            .split_at_checked(4)
            .ok_or(DecodeError::ShortHeader(payload.len()))?;
        IpvsMessage::decode(IpvsCmd::from(header[0]), attrs)
    }

    /// Attributes as wire bytes (without the genl header).
    pub fn attrs_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }

    /// Sets NLA_F_NESTED on the emitted top-level nests when asked to.
    fn flag_nests(&self, buf: &mut [u8]) {
        if !self.nested_flag || self.cmd.carries_info() {
            return;
        }
        let mut off = 0;
        for attr in &self.attrs {
            let len = nlas_len(std::slice::from_ref(attr));
            if matches!(
                attr,
                IpvsAttr::Service(_) | IpvsAttr::Dest(_) | IpvsAttr::Daemon(_)
            ) {
                if let Some(kind) = buf.get_mut(off + 2..off + 4) {
                    let k = u16::from_ne_bytes([kind[0], kind[1]]) | NLA_F_NESTED;
                    kind.copy_from_slice(&k.to_ne_bytes());
                }
            }
            off += len;
        }
    }

    /// The nested service attributes, if any.
    pub fn service(&self) -> Option<&[ServiceAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(s) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The nested destination attributes, if any.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(d) => Some(d.as_slice()),
            _ => None,
        })
    }
}

fn parse_cmd_attr(nla: &NlaBuffer<&[u8]>) -> Result<IpvsAttr, DecodeError> {
    let v = nla.value();
    Ok(match nla.kind() {
        IPVS_CMD_ATTR_SERVICE => IpvsAttr::Service(parse_nlas(v, "service", service::parse)?),
        IPVS_CMD_ATTR_DEST => IpvsAttr::Dest(parse_nlas(v, "destination", dest::parse)?),
        IPVS_CMD_ATTR_DAEMON => IpvsAttr::Daemon(parse_nlas(v, "daemon", daemon::parse)?),
        IPVS_CMD_ATTR_TIMEOUT_TCP => IpvsAttr::TimeoutTcp(u32_ne("timeout_tcp", v)?),
        IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => IpvsAttr::TimeoutTcpFin(u32_ne("timeout_tcp_fin", v)?),
        IPVS_CMD_ATTR_TIMEOUT_UDP => IpvsAttr::TimeoutUdp(u32_ne("timeout_udp", v)?),
        _ => IpvsAttr::Other(default_nla(nla)?),
    })
}

fn parse_info_attr(nla: &NlaBuffer<&[u8]>) -> Result<IpvsAttr, DecodeError> {
    let v = nla.value();
    Ok(match nla.kind() {
        IPVS_INFO_ATTR_VERSION => IpvsAttr::Version(u32_ne("info version", v)?),
        IPVS_INFO_ATTR_CONN_TAB_SIZE => IpvsAttr::ConnTabSize(u32_ne("info conn_tab_size", v)?),
        _ => IpvsAttr::Other(default_nla(nla)?),
    })
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        use IpvsAttr::*;
        match self {
            Service(a) => nlas_len(a),
            Dest(a) => nlas_len(a),
            Daemon(a) => nlas_len(a),
            TimeoutTcp(_) | TimeoutTcpFin(_) | TimeoutUdp(_) | Version(_) | ConnTabSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use IpvsAttr::*;
        match self {
            Service(_) => IPVS_CMD_ATTR_SERVICE,
            Dest(_) => IPVS_CMD_ATTR_DEST,
            Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Version(_) => IPVS_INFO_ATTR_VERSION,
            ConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use IpvsAttr::*;
        match self {
            Service(a) => emit_nlas(a, buf),
            Dest(a) => emit_nlas(a, buf),
            Daemon(a) => emit_nlas(a, buf),
            TimeoutTcp(v) | TimeoutTcpFin(v) | TimeoutUdp(v) | Version(v) | ConnTabSize(v) => {
                buf[..4].copy_from_slice(&v.to_ne_bytes())
            }
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        nlas_len(&self.attrs)
    }

    fn emit(&self, buffer: &mut [u8]) {
        emit_nlas(&self.attrs, buffer);
        self.flag_nests(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, CoreDecodeError> {
        IpvsMessage::decode(IpvsCmd::from(header.cmd), buf)
            .map_err(|e| CoreDecodeError::from(e.to_string()))
    }
}

// ---- helpers shared by the attribute spaces ----

/// Parses every attribute of `buf` with `parse`, naming `space` in errors.
pub(crate) fn parse_nlas<T>(
    buf: &[u8],
    space: &'static str,
    parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(buf)
        .map(|nla| {
            let nla = nla.map_err(|e| DecodeError::Nla {
                space,
                detail: e.to_string(),
            })?;
            parse(&nla)
        })
        .collect()
}

pub(crate) fn default_nla(nla: &NlaBuffer<&[u8]>) -> Result<DefaultNla, DecodeError> {
    DefaultNla::parse(nla).map_err(|e| DecodeError::Nla {
        space: "unknown attribute",
        detail: e.to_string(),
    })
}

pub(crate) fn fixed<const N: usize>(attr: &'static str, v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| DecodeError::Length {
        attr,
        expected: N,
        got: v.len(),
    })
}

pub(crate) fn u8_ne(attr: &'static str, v: &[u8]) -> Result<u8, DecodeError> {
    fixed::<1>(attr, v).map(|b| b[0])
}

pub(crate) fn u16_ne(attr: &'static str, v: &[u8]) -> Result<u16, DecodeError> {
    fixed(attr, v).map(u16::from_ne_bytes)
}

pub(crate) fn u16_be(attr: &'static str, v: &[u8]) -> Result<u16, DecodeError> {
    fixed(attr, v).map(u16::from_be_bytes)
}

pub(crate) fn u32_ne(attr: &'static str, v: &[u8]) -> Result<u32, DecodeError> {
    fixed(attr, v).map(u32::from_ne_bytes)
}

pub(crate) fn u64_ne(attr: &'static str, v: &[u8]) -> Result<u64, DecodeError> {
    fixed(attr, v).map(u64::from_ne_bytes)
}

/// A NUL-terminated string attribute; the kernel pads with NULs, which are
/// kept out of the value.
pub(crate) fn c_string(attr: &'static str, v: &[u8]) -> Result<String, DecodeError> {
    let end = v
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::String { attr })?;
    String::from_utf8(v[..end].to_vec()).map_err(|_| DecodeError::String { attr })
}

/// An address attribute: 4 bytes (IPv4) or 16 (IPv6, and every address the
/// kernel sends back, whose family comes from a separate AF attribute).
pub(crate) fn addr_bytes(attr: &'static str, v: &[u8]) -> Result<Vec<u8>, DecodeError> {
    match v.len() {
        4 | 16 => Ok(v.to_vec()),
        got => Err(DecodeError::Length {
            attr,
            expected: 16,
            got,
        }),
    }
}

/// Emits attributes with the type field exactly as `kind()` gives it, flags
/// included. (netlink-packet-core's emitter rebuilds the flags one at a time
/// and loses NLA_F_NET_BYTEORDER when NLA_F_NESTED is also set, so an
/// unknown attribute with both would not survive a round trip.)
pub(crate) fn emit_nlas<T: Nla>(attrs: &[T], buf: &mut [u8]) {
    let mut off = 0;
    for attr in attrs {
        let len = attr.value_len();
        let padded = (len + 3) & !3;
        buf[off..off + 2].copy_from_slice(&((len + 4) as u16).to_ne_bytes());
        buf[off + 2..off + 4].copy_from_slice(&attr.kind().to_ne_bytes());
        attr.emit_value(&mut buf[off + 4..off + 4 + len]);
        buf[off + 4 + len..off + 4 + padded].fill(0);
        off += 4 + padded;
    }
}

/// Bytes [`emit_nlas`] writes.
pub(crate) fn nlas_len<T: Nla>(attrs: &[T]) -> usize {
    attrs.iter().map(|a| 4 + ((a.value_len() + 3) & !3)).sum()
}

/// Emits a string with its terminating NUL.
pub(crate) fn emit_c_string(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

#[cfg(test)]
mod tests;
