//! The announcement settings (`ANNOUNCE` and the variables of each mode),
//! parsed and checked before anything is touched: a bad one refuses start-up
//! with a message naming the variable and the fix.

use clap::{ArgAction, Args, ValueEnum};
use std::net::{IpAddr, Ipv4Addr};

/// How traffic for the service addresses reaches this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Nothing announced: the network brings the traffic (static routes,
    /// an external speaker); the node only binds and programs.
    None,
    /// Host routes for the addresses it can serve, to BGP routers through
    /// BIRD 2 (ECMP across every healthy node).
    Bgp,
    /// One owner per address on a flat network, decided through Raft; the
    /// owner answers ARP/ND for it and sends gratuitous ARP/unsolicited NA.
    L2,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Bgp => "bgp",
            Mode::L2 => "l2",
        }
    }
}

/// Who speaks BGP in `ANNOUNCE=bgp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// ipvs-manager runs BIRD 2 with a configuration it writes.
    Bird,
    /// The operator's own BIRD or FRR takes the routes from ANNOUNCE_TABLE.
    External,
}

/// Whether the node sets the kernel settings its mode needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sysctls {
    /// Set them (and report any that could not be set).
    Set,
    /// Leave them as they are, and report those that differ.
    Leave,
}

/// The announcement settings, as given.
#[derive(Debug, Clone, Args)]
pub struct AnnounceArgs {
    /// How traffic for service addresses (`bind_address` services) reaches
    /// this node: `none` (the network's business), `bgp` (host routes to
    /// BGP_PEERS through BIRD 2, ECMP) or `l2` (one owner per address on
    /// ANNOUNCE_INTERFACE, gratuitous ARP/NA, chosen through Raft).
    #[arg(long, env = "ANNOUNCE", value_enum, default_value_t = Mode::None)]
    pub announce: Mode,
    /// `l2`: the interface on the clients' network that the owner of an
    /// address holds it on and announces it from.
    #[arg(long, env = "ANNOUNCE_INTERFACE")]
    pub announce_interface: Option<String>,
    /// `bgp`: the kernel routing table this node fills with a host route
    /// for every address it can serve (BIRD, or your own speaker, exports
    /// it).
    #[arg(long, env = "ANNOUNCE_TABLE", default_value_t = 221,
          value_parser = clap::value_parser!(u32).range(1..=0xFFFF_FFFE))]
    pub announce_table: u32,
    /// `bgp`: this node's AS number.
    #[arg(long, env = "BGP_LOCAL_AS")]
    pub bgp_local_as: Option<u32>,
    /// `bgp`: the routers, `ASN@ADDRESS` each, comma-separated
    /// (`65000@192.0.2.1,65000@2001:db8::1`).
    #[arg(long, env = "BGP_PEERS")]
    pub bgp_peers: Option<String>,
    /// `bgp`: BIRD's router id (an IPv4 address); defaults to
    /// ADVERTISE_ADDR (or BIND_ADDR) when that is IPv4.
    #[arg(long, env = "BGP_ROUTER_ID")]
    pub bgp_router_id: Option<Ipv4Addr>,
    /// `bgp`: who speaks BGP: `bird` (ipvs-manager runs BIRD 2) or
    /// `external` (fill ANNOUNCE_TABLE only; see deploy/README.md).
    #[arg(long, env = "BGP_SPEAKER", value_enum, default_value_t = Speaker::Bird)]
    pub bgp_speaker: Speaker,
    /// `bgp`: BFD on every session, so a dead host's routes go within
    /// BGP_BFD_INTERVAL_MS × BGP_BFD_MULTIPLIER.
    #[arg(long, env = "BGP_BFD", default_value_t = true, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub bgp_bfd: bool,
    /// `bgp`: BFD's transmit and receive interval, in milliseconds.
    #[arg(long, env = "BGP_BFD_INTERVAL_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(10..=10_000))]
    pub bgp_bfd_interval_ms: u32,
    /// `bgp`: BFD packets missed before the session is declared down.
    #[arg(long, env = "BGP_BFD_MULTIPLIER", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(2..=255))]
    pub bgp_bfd_multiplier: u32,
    /// `bgp` with BGP_SPEAKER=bird: the BIRD 2 daemon to run.
    #[arg(long, env = "BIRD_BINARY", default_value = "bird")]
    pub bird_binary: String,
    /// `l2`: milliseconds an owner holds its addresses without renewing
    /// its lease with the leader; past it, it gives them up, and only
    /// after it (and a margin) may the leader give them to another node.
    #[arg(long, env = "L2_LEASE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(200..=60_000))]
    pub l2_lease_ms: u32,
    /// `l2`: seconds between the gratuitous ARPs/unsolicited NAs an owner
    /// repeats for its addresses (switches and routers age their tables);
    /// 0: only when it takes an address over.
    #[arg(long, env = "L2_GARP_REFRESH", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub l2_garp_refresh: u32,
    /// `set` (default): set the kernel settings the mode needs (ARP
    /// behaviour, IPVS's sloppy TCP and the like) and report any that
    /// could not be; `leave`: change none, report those that differ.
    #[arg(long, env = "SYSCTLS", value_enum, default_value_t = Sysctls::Set)]
    pub sysctls: Sysctls,
    /// Run IPVS's connection-sync daemon (master and backup) on this
    /// interface, so established connections survive an address moving to
    /// another node.
    #[arg(long, env = "SYNC_INTERFACE")]
    pub sync_interface: Option<String>,
    /// The sync id, the same on every node of the cluster (1–255); the
    /// kernel drops sync messages with another id.
    #[arg(long, env = "SYNC_ID", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=255))]
    pub sync_id: u8,
    /// The sync daemon's multicast group.
    #[arg(long, env = "SYNC_GROUP", default_value_t = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 81)))]
    pub sync_group: IpAddr,
    /// The sync daemon's UDP port.
    #[arg(long, env = "SYNC_PORT", default_value_t = 8848,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub sync_port: u16,
    /// The sync daemon's multicast TTL.
    #[arg(long, env = "SYNC_TTL", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..))]
    pub sync_ttl: u8,
}

/// One BGP router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    pub address: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
}

/// `ANNOUNCE=bgp`'s settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub local_as: u32,
    pub peers: Vec<Peer>,
    pub router_id: Ipv4Addr,
    pub speaker: Speaker,
    /// `(interval, multiplier)`, `None`: BFD off.
    pub bfd: Option<(u32, u32)>,
    pub bird_binary: String,
    pub table: u32,
}

/// `ANNOUNCE=l2`'s settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2 {
    pub interface: String,
    pub lease_ms: u32,
    pub garp_refresh_s: u32,
}

/// The connection-sync daemon's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sync {
    pub interface: String,
    pub sync_id: u8,
    pub group: IpAddr,
    pub port: u16,
    pub ttl: u8,
}

/// The announcement settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    pub mode: Mode,
    pub bgp: Option<Bgp>,
    pub l2: Option<L2>,
    pub sync: Option<Sync>,
    pub sysctls: Sysctls,
}

impl Default for AnnounceConfig {
    fn default() -> AnnounceConfig {
        AnnounceConfig {
            mode: Mode::None,
            bgp: None,
            l2: None,
            sync: None,
            sysctls: Sysctls::Set,
        }
    }
}

/// A bad announcement setting: the variable, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingError {
    pub variable: &'static str,
    pub problem: String,
}

fn bad(variable: &'static str, problem: impl Into<String>) -> SettingError {
    SettingError {
        variable,
        problem: problem.into(),
    }
}

impl AnnounceArgs {
    /// Checks the settings of the chosen mode; `advertise` is the node's
    /// address (the default BGP router id when IPv4).
    pub fn validate(&self, advertise: IpAddr) -> Result<AnnounceConfig, SettingError> {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let bgp = match self.announce {
            Mode::Bgp => {
                let local_as = self.bgp_local_as.filter(|a| *a != 0).ok_or_else(|| {
                    bad(
                        "BGP_LOCAL_AS",
                        "ANNOUNCE=bgp needs this node's AS number (1 to 4294967295)",
                    )
                })?;
                let peers = parse_peers(given(&self.bgp_peers).as_deref().unwrap_or(""))?;
                let router_id = match (self.bgp_router_id, advertise) {
                    (Some(id), _) if id.is_unspecified() => {
                        return Err(bad("BGP_ROUTER_ID", "0.0.0.0 is not a router id"))
                    }
                    (Some(id), _) => id,
                    (None, IpAddr::V4(a)) => a,
                    (None, IpAddr::V6(_)) => {
                        return Err(bad(
                            "BGP_ROUTER_ID",
                            "this node's address is IPv6, so BGP needs a router id: set \
                             BGP_ROUTER_ID to an IPv4 address unique among the routers",
                        ))
                    }
                };
                if self.bird_binary.trim().is_empty() {
                    return Err(bad("BIRD_BINARY", "is empty; leave it unset for `bird`"));
                }
                Some(Bgp {
                    local_as,
                    peers,
                    router_id,
                    speaker: self.bgp_speaker,
                    bfd: self
                        .bgp_bfd
                        .then_some((self.bgp_bfd_interval_ms, self.bgp_bfd_multiplier)),
                    bird_binary: self.bird_binary.clone(),
                    table: self.announce_table,
                })
            }
            _ => None,
        };
        let l2 = match self.announce {
            Mode::L2 => {
                let interface = given(&self.announce_interface).ok_or_else(|| {
                    bad(
                        "ANNOUNCE_INTERFACE",
                        "ANNOUNCE=l2 needs the interface on the clients' network (e.g. eth0)",
                    )
                })?;
                crate::ipvs::vip::validate_ifname(&interface)
                    .map_err(|e| bad("ANNOUNCE_INTERFACE", e.to_string()))?;
                Some(L2 {
                    interface,
                    lease_ms: self.l2_lease_ms,
                    garp_refresh_s: self.l2_garp_refresh,
                })
            }
            _ => None,
        };
        let sync = match given(&self.sync_interface) {
            Some(interface) => {
                crate::ipvs::vip::validate_ifname(&interface)
                    .map_err(|e| bad("SYNC_INTERFACE", e.to_string()))?;
                if !self.sync_group.is_multicast() {
                    return Err(bad(
                        "SYNC_GROUP",
                        format!("{} is not a multicast address", self.sync_group),
                    ));
                }
                Some(Sync {
                    interface,
                    sync_id: self.sync_id,
                    group: self.sync_group,
                    port: self.sync_port,
                    ttl: self.sync_ttl,
                })
            }
            None => None,
        };
        Ok(AnnounceConfig {
            mode: self.announce,
            bgp,
            l2,
            sync,
            sysctls: self.sysctls,
        })
    }
}

/// Parses `BGP_PEERS`: `ASN@ADDRESS`, comma-separated, at least one.
pub fn parse_peers(text: &str) -> Result<Vec<Peer>, SettingError> {
    let mut peers = Vec::new();
    for (i, item) in text.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let n = i + 1;
        let (asn, address) = item.split_once('@').ok_or_else(|| {
            bad(
                "BGP_PEERS",
                format!(
                    "peer {n} ({item:?}) has no AS: write it as ASN@ADDRESS, e.g. 65000@{item}"
                ),
            )
        })?;
        let asn: u32 = asn.trim().parse().ok().filter(|a| *a != 0).ok_or_else(|| {
            bad(
                "BGP_PEERS",
                format!("peer {n} ({item:?}): {asn:?} is not an AS number (1 to 4294967295)"),
            )
        })?;
        let address: IpAddr = address.trim().parse().map_err(|_| {
            bad(
                "BGP_PEERS",
                format!("peer {n} ({item:?}): {address:?} is not an IP address"),
            )
        })?;
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            return Err(bad(
                "BGP_PEERS",
                format!("peer {n} ({item:?}): {address} cannot be a BGP neighbour"),
            ));
        }
        if peers.iter().any(|p: &Peer| p.address == address) {
            return Err(bad(
                "BGP_PEERS",
                format!("peer {n} ({item:?}): {address} is named twice"),
            ));
        }
        peers.push(Peer { asn, address });
    }
    if peers.is_empty() {
        return Err(bad(
            "BGP_PEERS",
            "ANNOUNCE=bgp needs at least one router, as ASN@ADDRESS (e.g. 65000@192.0.2.1)",
        ));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Test {
        #[command(flatten)]
        announce: AnnounceArgs,
    }

    fn parse(args: &[&str]) -> Result<AnnounceConfig, SettingError> {
        let mut argv = vec!["ipvs-manager"];
        argv.extend_from_slice(args);
        Test::try_parse_from(argv)
            .unwrap()
            .announce
            .validate("10.0.0.2".parse().unwrap())
    }

    #[test]
    fn none_is_the_default_and_needs_nothing() {
        let c = parse(&[]).unwrap();
        assert_eq!(c, AnnounceConfig::default());
    }

    #[test]
    fn bgp_needs_an_as_and_peers_with_theirs() {
        let e = parse(&["--announce", "bgp", "--bgp-peers", "65000@192.0.2.1"]).unwrap_err();
        assert_eq!(e.variable, "BGP_LOCAL_AS");
        let e = parse(&["--announce", "bgp", "--bgp-local-as", "65001"]).unwrap_err();
        assert_eq!(e.variable, "BGP_PEERS");
        let e = parse(&[
            "--announce",
            "bgp",
            "--bgp-local-as",
            "65001",
            "--bgp-peers",
            "65000@192.0.2.1, 192.0.2.2",
        ])
        .unwrap_err();
        assert_eq!(e.variable, "BGP_PEERS");
        assert!(e.problem.contains("peer 2"), "{e}");
        assert!(e.problem.contains("no AS"), "{e}");
        let c = parse(&[
            "--announce",
            "bgp",
            "--bgp-local-as",
            "65001",
            "--bgp-peers",
            "65000@192.0.2.1,65002@2001:db8::1",
        ])
        .unwrap();
        let bgp = c.bgp.unwrap();
        assert_eq!(bgp.peers.len(), 2);
        assert_eq!(bgp.peers[1].asn, 65002);
        assert_eq!(bgp.router_id, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(bgp.bfd, Some((100, 3)));
        assert_eq!(bgp.table, 221);
    }

    #[test]
    fn bad_peers_are_named() {
        for (text, needle) in [
            ("x@192.0.2.1", "not an AS number"),
            ("0@192.0.2.1", "not an AS number"),
            ("65000@nowhere", "not an IP address"),
            ("65000@127.0.0.1", "cannot be a BGP neighbour"),
            ("65000@192.0.2.1,65001@192.0.2.1", "named twice"),
            ("", "at least one router"),
        ] {
            let e = parse_peers(text).unwrap_err();
            assert!(e.problem.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn l2_needs_an_interface() {
        let e = parse(&["--announce", "l2"]).unwrap_err();
        assert_eq!(e.variable, "ANNOUNCE_INTERFACE");
        let e = parse(&["--announce", "l2", "--announce-interface", "a/b"]).unwrap_err();
        assert_eq!(e.variable, "ANNOUNCE_INTERFACE");
        let c = parse(&["--announce", "l2", "--announce-interface", "eth0"]).unwrap();
        assert_eq!(c.l2.unwrap().lease_ms, 1000);
    }

    #[test]
    fn the_sync_daemon_needs_a_multicast_group() {
        let c = parse(&["--sync-interface", "eth1"]).unwrap();
        let sync = c.sync.unwrap();
        assert_eq!((sync.sync_id, sync.port, sync.ttl), (1, 8848, 1));
        let e = parse(&["--sync-interface", "eth1", "--sync-group", "10.0.0.1"]).unwrap_err();
        assert_eq!(e.variable, "SYNC_GROUP");
    }
}
