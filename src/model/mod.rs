//! Validated domain types shared by every layer: virtual services, real servers
//! (destinations), their keys and options. No I/O lives here.
//!
//! The vocabulary is ipvsadm's and the kernel's: a *service* is identified by a
//! [`ServiceKey`], carries a scheduler, flags and optional persistence; a
//! *destination* (real server) belongs to one service and has a forwarding
//! method, a weight and connection thresholds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub mod clock;
mod desired;
mod health;
pub mod ids;
pub mod requests;
pub mod rules;
mod stats;

pub use desired::{
    Command, CommandResult, DesiredState, Drain, DrainRequest, ServiceConfig, ServiceOptions,
    ServiceSpec, Services, VipOwners,
};
pub use health::{CheckKind, HealthCheck, HealthPolicy, HttpCheck};
pub use stats::Stats;

use serde::{Deserialize, Serialize};

/// Address family of a service or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;

    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The kernel's `AF_*` number.
    pub fn af(self) -> u16 {
        match self {
            Family::Ipv4 => Self::AF_INET,
            Family::Ipv6 => Self::AF_INET6,
        }
    }

    pub fn from_af(af: u16) -> Option<Family> {
        match af {
            Self::AF_INET => Some(Family::Ipv4),
            Self::AF_INET6 => Some(Family::Ipv6),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// Transport protocol of an address+port service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number the kernel uses.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(n: u16) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Upper-case name as ipvsadm prints it in listings.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// What identifies a virtual service in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceKey {
    /// A protocol + address + port service (`-t`, `-u`, `--sctp-service`).
    Inet {
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    /// A firewall-mark service (`-f`).
    Fwmark { family: Family, mark: u32 },
}

impl ServiceKey {
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Inet { addr, .. } => Family::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

/// `address:port` with IPv6 addresses in brackets, as ipvsadm writes them.
pub struct AddrPort<'a>(pub &'a IpAddr, pub u16);

impl fmt::Display for AddrPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet {
                protocol,
                addr,
                port,
            } => write!(f, "{} {}", protocol.ipvsadm_name(), AddrPort(addr, *port)),
            ServiceKey::Fwmark {
                family: Family::Ipv4,
                mark,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                family: Family::Ipv6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// Scheduler name. The kernel accepts any scheduler whose module is loaded;
/// [`Scheduler::KNOWN`] lists the ones mainline Linux ships.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scheduler(String);

impl Scheduler {
    /// Longest name the kernel stores (IP_VS_SCHEDNAME_MAXLEN - 1).
    pub const MAX_LEN: usize = 15;
    pub const KNOWN: &'static [&'static str] = &[
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
        "twos",
    ];

    /// ipvsadm's default scheduler.
    pub fn default_name() -> Scheduler {
        Scheduler("wlc".to_string())
    }

    /// Accepts any syntactically valid name (the kernel decides whether it
    /// exists); see [`Scheduler::is_known`].
    pub fn new(name: &str) -> Result<Scheduler, String> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(format!(
                "scheduler name must be 1 to {} characters, got {:?}",
                Self::MAX_LEN,
                name
            ));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("invalid scheduler name {name:?}"));
        }
        Ok(Scheduler(name.to_string()))
    }

    pub fn is_known(&self) -> bool {
        Self::KNOWN.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler::default_name()
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Service flags the operator sets (`-o`, `-b`). Persistence is carried by
/// [`Persistence`] and the kernel-internal "hashed" bit is never stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    pub const PERSISTENT: u32 = 0x1;
    /// Kernel-internal: set on every service in the hash table.
    pub const HASHED: u32 = 0x2;
    pub const ONE_PACKET: u32 = 0x4;
    /// sh-fallback / mh-fallback (`flag-1` for other schedulers).
    pub const SCHED1: u32 = 0x8;
    /// sh-port / mh-port (`flag-2` for other schedulers).
    pub const SCHED2: u32 = 0x10;
    /// `flag-3`.
    pub const SCHED3: u32 = 0x20;
    /// Bits a [`ServiceFlags`] may hold.
    pub const SETTABLE: u32 = Self::ONE_PACKET | Self::SCHED1 | Self::SCHED2 | Self::SCHED3;

    /// Keeps the settable bits of a kernel flag word, dropping persistence
    /// (modelled separately), the hashed bit and anything unknown.
    pub fn from_kernel(bits: u32) -> ServiceFlags {
        ServiceFlags(bits & Self::SETTABLE)
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn contains(self, bit: u32) -> bool {
        self.0 & bit == bit
    }

    pub fn with(self, bit: u32) -> ServiceFlags {
        ServiceFlags((self.0 | bit) & Self::SETTABLE)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The persistence granularity: an IPv4 netmask or an IPv6 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Netmask {
    V4(Ipv4Addr),
    V6(u8),
}

impl Netmask {
    /// The kernel's default: one client address per persistence entry.
    pub fn host(family: Family) -> Netmask {
        match family {
            Family::Ipv4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Family::Ipv6 => Netmask::V6(128),
        }
    }

    pub fn family(self) -> Family {
        match self {
            Netmask::V4(_) => Family::Ipv4,
            Netmask::V6(_) => Family::Ipv6,
        }
    }

    pub fn is_host(self) -> bool {
        self == Netmask::host(self.family())
    }
}

impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(p) => write!(f, "{p}"),
        }
    }
}

/// Persistent service settings (`-p`, `-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Persistence {
    /// Seconds a client stays with the same destination.
    pub timeout: u32,
    pub netmask: Netmask,
}

impl Persistence {
    /// ipvsadm's default `-p` timeout: IPVS_SVC_PERSISTENT_TIMEOUT, 6
    /// minutes (its man page says 300 s; the code uses 360).
    pub const DEFAULT_TIMEOUT: u32 = 360;
}

/// A virtual service as configured (everything the kernel lets you set).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VirtualService {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub flags: ServiceFlags,
    pub persistence: Option<Persistence>,
    /// Persistence engine (`--pe`), e.g. `sip`.
    pub pe_name: Option<String>,
}

impl VirtualService {
    pub fn new(key: ServiceKey) -> VirtualService {
        VirtualService {
            key,
            scheduler: Scheduler::default(),
            flags: ServiceFlags::default(),
            persistence: None,
            pe_name: None,
        }
    }
}

/// Tunnel encapsulation of a tunnel-forwarded destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TunnelType {
    #[default]
    Ipip,
    Gue,
    Gre,
}

impl TunnelType {
    pub fn code(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }

    pub fn from_code(c: u8) -> Option<TunnelType> {
        match c {
            0 => Some(TunnelType::Ipip),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipip",
            TunnelType::Gue => "gue",
            TunnelType::Gre => "gre",
        }
    }
}

/// Checksum option of GUE/GRE tunnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum TunnelChecksum {
    #[default]
    None,
    Csum,
    RemCsum,
}

impl TunnelChecksum {
    pub fn code(self) -> u16 {
        match self {
            TunnelChecksum::None => 0,
            TunnelChecksum::Csum => 1,
            TunnelChecksum::RemCsum => 2,
        }
    }

    pub fn from_code(c: u16) -> Option<TunnelChecksum> {
        match c {
            0 => Some(TunnelChecksum::None),
            1 => Some(TunnelChecksum::Csum),
            2 => Some(TunnelChecksum::RemCsum),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TunnelChecksum::None => "nocsum",
            TunnelChecksum::Csum => "csum",
            TunnelChecksum::RemCsum => "remcsum",
        }
    }
}

/// Tunnel options of a tunnel-forwarded destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Tunnel {
    pub kind: TunnelType,
    /// Destination UDP port of GUE encapsulation; 0 otherwise.
    pub port: u16,
    pub checksum: TunnelChecksum,
}

/// How packets reach a destination (ipvsadm's `-m`, `-g`, `-i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Forward {
    /// NAT (`-m`).
    Masq,
    /// Delivered to the local host.
    Local,
    /// IP tunnelling (`-i`).
    Tunnel(Tunnel),
    /// Direct routing (`-g`).
    Route,
    Bypass,
}

impl Forward {
    /// The kernel's `IP_VS_CONN_F_*` forwarding code.
    pub fn code(self) -> u32 {
        match self {
            Forward::Masq => 0,
            Forward::Local => 1,
            Forward::Tunnel(_) => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
        }
    }

    /// ipvsadm's name in `-Ln` listings.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Forward::Masq => "Masq",
            Forward::Local => "Local",
            Forward::Tunnel(_) => "Tunnel",
            Forward::Route => "Route",
            Forward::Bypass => "Bypass",
        }
    }

    /// Tunnelling, its options not yet known (a parser's placeholder,
    /// until it has read them).
    pub const TUNNEL: Forward = Forward::Tunnel(Tunnel {
        kind: TunnelType::Ipip,
        port: 0,
        checksum: TunnelChecksum::None,
    });

    pub fn is_tunnel(self) -> bool {
        matches!(self, Forward::Tunnel(_))
    }

    pub fn tunnel(self) -> Option<Tunnel> {
        match self {
            Forward::Tunnel(t) => Some(t),
            _ => None,
        }
    }
}

/// Identity of a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DestKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        AddrPort(&self.addr, self.port).fmt(f)
    }
}

/// A real server (destination) as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: Forward,
    /// 0 stops new connections; the kernel stores a non-negative `int`.
    pub weight: u32,
    /// Upper connection threshold (0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub lower_threshold: u32,
}

impl Destination {
    pub fn new(addr: IpAddr, port: u16) -> Destination {
        Destination {
            addr,
            port,
            forward: Forward::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn key(&self) -> DestKey {
        DestKey {
            addr: self.addr,
            port: self.port,
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }
}

/// A service as the kernel reports it: configuration, counters and its
/// destinations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub service: VirtualService,
    pub stats: Stats,
    pub destinations: Vec<DestEntry>,
}

/// A destination as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestEntry {
    pub dest: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: Stats,
}

impl DestEntry {
    pub fn new(dest: Destination) -> DestEntry {
        DestEntry {
            dest,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
        }
    }
}
