//! The node's configuration: every setting is an environment variable (the
//! way operators already start it) and a `--flag` of the same name.

pub use crate::metrics::MetricsDetail;
use clap::{ArgAction, Args, ValueEnum};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// Settings of one cluster node (`ipvs-manager` with no subcommand).
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// HTTP port: REST API, web UI and cluster management (0: a free port,
    /// which the start-up line `listening … api=ADDR` names).
    #[arg(long, env = "SERVER_PORT", default_value_t = 2221)]
    pub server_port: u16,
    /// Port of the Raft transport between nodes (a separate listener; 0: a
    /// free port, named by `listening … raft=ADDR`).
    #[arg(long, env = "RAFT_PORT", default_value_t = 1111)]
    pub raft_port: u16,
    /// This node's unique name in the cluster.
    #[arg(long, env = "RAFT_NODE_ID", default_value = "node1")]
    pub raft_node_id: String,
    /// Directory for the Raft log, vote, snapshots and state (created if
    /// missing).
    #[arg(long, env = "RAFT_VOL_DIR", default_value = "./data")]
    pub raft_vol_dir: PathBuf,
    /// Address (host:port) of a running member, its API or its Raft port,
    /// used only by a new node to join; a node that already has state
    /// resumes and ignores it.
    #[arg(long, env = "RAFT_LEADER")]
    pub raft_leader: Option<String>,
    /// Address both listeners bind to.
    #[arg(long, env = "BIND_ADDR", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind_addr: IpAddr,
    /// Address peers use to reach this node; defaults to BIND_ADDR and is
    /// required when binding a wildcard address.
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise_addr: Option<IpAddr>,
    /// `on`: program this host's IPVS table (needs the ip_vs module and
    /// CAP_NET_ADMIN); `off`: replicate and serve, never touch the kernel;
    /// `memory`: program an in-memory table instead (demos and tests).
    #[arg(long, env = "IPVS_KERNEL", value_enum, default_value_t = KernelMode::On)]
    pub ipvs_kernel: KernelMode,
    /// Seconds between full resyncs, which read the whole kernel table back
    /// and repair drift.
    #[arg(long, env = "RESYNC_INTERVAL", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub resync_interval: u64,
    /// Seconds a removed real server (or service) drains at weight 0 before
    /// it is deleted, when the request and the service name no grace period.
    #[arg(long, env = "DRAIN_GRACE", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=86_400))]
    pub drain_grace: u32,
    /// Which kernel services this node may change or remove: `managed`
    /// (those in the desired state and those it created) or `all` (the whole
    /// table: anything else in it is removed).
    #[arg(long, env = "IPVS_OWNERSHIP", value_enum, default_value_t = Ownership::Managed)]
    pub ipvs_ownership: Ownership,
    /// Interface that holds the addresses of services with `bind_address`
    /// (a dummy link, created if missing; every address on it is managed).
    #[arg(long, env = "VIP_INTERFACE", default_value = "ipvs0")]
    pub vip_interface: String,
    /// What a node does when its start-up check finds its store damaged (a
    /// lost log tail, a record whose checksum fails, a missing file):
    /// `refuse` to start, naming the file and the record (exit status 65);
    /// or `rejoin`: have the leader remove it from the cluster, move the
    /// damaged state aside (RAFT_VOL_DIR/damaged-TIME/), and join again with
    /// an empty store that catches up from the leader. Rejoining needs the
    /// other voters to form a quorum.
    #[arg(long, env = "STORE_DAMAGE", value_enum, default_value_t = StoreDamage::Refuse)]
    pub store_damage: StoreDamage,
    /// Take a snapshot (and compact the log) after this many new entries.
    /// Compaction briefly slows writes, and entries are small (a few hundred
    /// bytes), so the default is large, in the spirit of etcd's 100,000.
    #[arg(long, env = "RAFT_SNAPSHOT_LOGS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub raft_snapshot_logs: u64,
    /// How often the leader reaches every member (ms). It is also how long
    /// one append may take: openraft gives up on an append after one
    /// interval, so a member whose network round trip and disk flush take
    /// longer cannot keep up. Raise it, with RAFT_ELECTION_TIMEOUT_MS, on
    /// slow hosts or links (etcd's heartbeat-interval is 100).
    #[arg(long, env = "RAFT_HEARTBEAT_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(10..=10_000))]
    pub raft_heartbeat_ms: u64,
    /// A follower that hears no leader for this long (to twice this, drawn
    /// at random) stands for election (ms). At least three heartbeats. A
    /// dead leader is replaced after about twice this; a node without
    /// contact with a quorum for ten times this says so (`no_quorum`).
    #[arg(long, env = "RAFT_ELECTION_TIMEOUT_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(30..=60_000))]
    pub raft_election_timeout_ms: u64,
    /// File of API tokens, one a line: `admin TOKEN` (everything) or `read
    /// TOKEN` (reads only). With it, changes need an admin token and reads
    /// a token (see API_OPEN_READS); without it, the API listens on
    /// loopback only (see API_OPEN).
    #[arg(long, env = "API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// With API_TOKENS_FILE: serve reads (GET) without a token.
    #[arg(long, env = "API_OPEN_READS", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub api_open_reads: bool,
    /// Without API_TOKENS_FILE: serve the API unauthenticated on BIND_ADDR
    /// anyway (by default it then listens on loopback only).
    #[arg(long, env = "API_OPEN", default_value_t = false, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub api_open: bool,
    /// Shared by every node of the cluster (32 characters or more): every
    /// request between nodes is signed with it (HMAC-SHA256), and the Raft
    /// port refuses any that is not, so a node without it can neither join
    /// nor send Raft messages.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// Serve the API over TLS with this certificate chain (PEM, the
    /// server's certificate first); needs TLS_KEY_FILE. Reloaded on SIGHUP.
    #[arg(long, env = "TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of TLS_CERT_FILE (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Requests the API answers at once; more get 503 `overloaded` with
    /// Retry-After at once, so a flood costs little memory (bodies are read
    /// only within the limit).
    #[arg(long, env = "API_MAX_REQUESTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub api_max_requests: u32,
    /// Connections the API holds open at once; more wait in the kernel's
    /// accept queue.
    #[arg(long, env = "API_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_connections: u32,
    /// What `/metrics` exposes per real server: `server` (every series,
    /// per service and per real server) or `service` (per service only:
    /// the real servers' series are left out and summed per service, which
    /// at thousands of services is a tenth of the series).
    #[arg(long, env = "METRICS_DETAIL", value_enum, default_value_t = MetricsDetail::Server)]
    pub metrics_detail: MetricsDetail,
    /// How traffic reaches the node (ANNOUNCE and its mode's settings).
    #[command(
        flatten,
        next_help_heading = "Traffic to this node (node settings: ANNOUNCE and its modes)"
    )]
    pub announce: crate::announce::settings::AnnounceArgs,
}

/// The API's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A secret setting: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelMode {
    On,
    Off,
    Memory,
}

/// See `STORE_DAMAGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreDamage {
    /// Refuse to start.
    Refuse,
    /// Set the damaged state aside and rejoin as a learner.
    Rejoin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// Services in the desired state, and those this node created.
    Managed,
    /// Every service in the table.
    All,
}

impl Ownership {
    /// The ownership named as the node's report names it (`all`,
    /// `managed`); anything else is the default, `managed`.
    pub fn named(name: &str) -> Ownership {
        <Ownership as ValueEnum>::from_str(name, true).unwrap_or(Ownership::Managed)
    }
}

/// Validated node settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    pub vol_dir: PathBuf,
    pub http_bind: SocketAddr,
    pub raft_bind: SocketAddr,
    /// What peers and clients are told to use.
    pub http_advertise: SocketAddr,
    pub raft_advertise: SocketAddr,
    pub join: Option<String>,
    pub kernel: KernelMode,
    pub snapshot_logs: u64,
    pub raft_timing: RaftTiming,
    pub store_damage: StoreDamage,
    pub resync_interval: std::time::Duration,
    pub drain_grace: u32,
    pub ownership: Ownership,
    pub vip_interface: String,
    pub api_tokens_file: Option<PathBuf>,
    pub api_open_reads: bool,
    /// No token and no API_OPEN: the API was moved to loopback.
    pub api_loopback_only: bool,
    pub cluster_secret: Option<Secret>,
    /// Serve the API over TLS.
    pub tls: Option<TlsFiles>,
    pub api_max_requests: u32,
    pub api_max_connections: u32,
    pub metrics_detail: MetricsDetail,
    pub announce: crate::announce::settings::AnnounceConfig,
}

/// RAFT_HEARTBEAT_MS and RAFT_ELECTION_TIMEOUT_MS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    /// The shortest election timeout; the longest is twice it.
    pub election_timeout_ms: u64,
}

impl RaftTiming {
    /// Without contact with a quorum for this long, a node knows it has
    /// none: five of the longest election timeouts, so that an election
    /// under way is not taken for a loss (2 s by default).
    pub fn lost_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_ms * 10)
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "RAFT_NODE_ID must be 1 to 64 characters of letters, digits, '-', '_' or '.', got {0:?}"
    )]
    NodeName(String),
    #[error("ADVERTISE_ADDR is required when BIND_ADDR is the wildcard {0}: peers cannot reach a wildcard address")]
    AdvertiseRequired(IpAddr),
    #[error("ADVERTISE_ADDR must be a concrete address, not the wildcard {0}")]
    AdvertiseWildcard(IpAddr),
    #[error("SERVER_PORT and RAFT_PORT must differ (both {0})")]
    SamePorts(u16),
    #[error(
        "CLUSTER_SECRET is {0} characters; at least {min} are needed (make one with `openssl rand -hex 32`)",
        min = crate::cluster::peer_auth::MIN_SECRET_LEN
    )]
    WeakSecret(usize),
    #[error("TLS_CERT_FILE and TLS_KEY_FILE go together: {0} is set, the other is not")]
    TlsPair(&'static str),
    #[error(
        "RAFT_ELECTION_TIMEOUT_MS is {election} ms, less than three RAFT_HEARTBEAT_MS ({heartbeat} ms): \
         followers would stand for election between heartbeats; raise it to at least {least}",
        least = heartbeat * 3
    )]
    ElectionTimeout { election: u64, heartbeat: u64 },
    #[error(
        "L2_LEASE_MS is {lease} ms: with RAFT_HEARTBEAT_MS={heartbeat} the leader cannot confirm a \
         renewal within its lease (it needs two heartbeats within 3/20 of the lease); \
         raise it to at least {least}, or lower RAFT_HEARTBEAT_MS",
        least = (heartbeat * 40).div_ceil(3)
    )]
    LeaseShort { lease: u32, heartbeat: u64 },
    #[error(transparent)]
    Announce(#[from] crate::announce::settings::SettingError),
}

impl NodeArgs {
    pub fn validate(&self) -> Result<NodeConfig, ConfigError> {
        let name = &self.raft_node_id;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(ConfigError::NodeName(name.clone()));
        }
        // 0 is a port the kernel picks (each its own).
        if self.server_port == self.raft_port && self.server_port != 0 {
            return Err(ConfigError::SamePorts(self.server_port));
        }
        let advertise = match self.advertise_addr {
            Some(a) if a.is_unspecified() => return Err(ConfigError::AdvertiseWildcard(a)),
            Some(a) => a,
            None if self.bind_addr.is_unspecified() => {
                return Err(ConfigError::AdvertiseRequired(self.bind_addr))
            }
            None => self.bind_addr,
        };
        let cluster_secret = self.cluster_secret.clone().filter(|s| !s.0.is_empty());
        if let Some(secret) = &cluster_secret {
            if secret.0.chars().count() < crate::cluster::peer_auth::MIN_SECRET_LEN {
                return Err(ConfigError::WeakSecret(secret.0.chars().count()));
            }
        }
        let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        let tls = match (path(&self.tls_cert_file), path(&self.tls_key_file)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::TlsPair("TLS_CERT_FILE")),
            (None, Some(_)) => return Err(ConfigError::TlsPair("TLS_KEY_FILE")),
        };
        let tokens = self
            .api_tokens_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        // An API without tokens is for this host's own use unless the
        // operator says otherwise; peers never need it (they talk on the
        // Raft port).
        let loopback_only = tokens.is_none() && !self.api_open && !self.bind_addr.is_loopback();
        let api_ip = match self.bind_addr {
            _ if !loopback_only => self.bind_addr,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let api_advertise = if loopback_only { api_ip } else { advertise };
        let raft_timing = RaftTiming {
            heartbeat_ms: self.raft_heartbeat_ms,
            election_timeout_ms: self.raft_election_timeout_ms,
        };
        if raft_timing.election_timeout_ms < raft_timing.heartbeat_ms * 3 {
            return Err(ConfigError::ElectionTimeout {
                election: raft_timing.election_timeout_ms,
                heartbeat: raft_timing.heartbeat_ms,
            });
        }
        let announce = self.announce.validate(advertise)?;
        if let Some(l2) = &announce.l2 {
            // A grant waits Timing::confirm_within (3/20 of the lease) for
            // a quorum's acceptance of an append: two heartbeats must fit.
            let confirm_ms = crate::announce::l2::lease::Timing::new(l2.lease_ms)
                .confirm_within()
                .as_millis();
            if confirm_ms < u128::from(raft_timing.heartbeat_ms) * 2 {
                return Err(ConfigError::LeaseShort {
                    lease: l2.lease_ms,
                    heartbeat: raft_timing.heartbeat_ms,
                });
            }
        }
        Ok(NodeConfig {
            name: name.clone(),
            vol_dir: self.raft_vol_dir.clone(),
            http_bind: SocketAddr::new(api_ip, self.server_port),
            raft_bind: SocketAddr::new(self.bind_addr, self.raft_port),
            http_advertise: SocketAddr::new(api_advertise, self.server_port),
            raft_advertise: SocketAddr::new(advertise, self.raft_port),
            join: self.raft_leader.clone().filter(|l| !l.is_empty()),
            kernel: self.ipvs_kernel,
            snapshot_logs: self.raft_snapshot_logs,
            raft_timing,
            store_damage: self.store_damage,
            resync_interval: std::time::Duration::from_secs(self.resync_interval),
            drain_grace: self.drain_grace,
            ownership: self.ipvs_ownership,
            vip_interface: self.vip_interface.clone(),
            api_tokens_file: tokens,
            api_open_reads: self.api_open_reads,
            api_loopback_only: loopback_only,
            cluster_secret,
            tls,
            api_max_requests: self.api_max_requests,
            api_max_connections: self.api_max_connections,
            metrics_detail: self.metrics_detail,
            announce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Test {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn parse(args: &[&str]) -> Result<NodeConfig, ConfigError> {
        let mut argv = vec!["ipvs-manager"];
        argv.extend_from_slice(args);
        Test::try_parse_from(argv).unwrap().node.validate()
    }

    #[test]
    fn embedded_defaults_start_a_single_node() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.name, "node1");
        assert_eq!(c.http_bind, "127.0.0.1:2221".parse().unwrap());
        assert_eq!(c.raft_bind, "127.0.0.1:1111".parse().unwrap());
        assert_eq!(c.http_advertise, c.http_bind);
        assert_eq!(c.vol_dir, PathBuf::from("./data"));
        assert_eq!(c.join, None);
        assert_eq!(c.kernel, KernelMode::On);
    }

    #[test]
    fn flags_and_their_checks() {
        let c = parse(&[
            "--server-port",
            "2222",
            "--raft-port",
            "1112",
            "--raft-node-id",
            "lb-2.dc1",
            "--raft-leader",
            "127.0.0.1:2221",
            "--bind-addr",
            "0.0.0.0",
            "--advertise-addr",
            "10.0.0.2",
            "--ipvs-kernel",
            "off",
        ])
        .unwrap();
        // No token: the API stays on loopback, the Raft port does not.
        assert_eq!(c.http_bind, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(c.http_advertise, c.http_bind);
        assert!(c.api_loopback_only);
        assert_eq!(c.raft_bind, "0.0.0.0:1112".parse().unwrap());
        assert_eq!(c.raft_advertise, "10.0.0.2:1112".parse().unwrap());
        assert_eq!(c.join.as_deref(), Some("127.0.0.1:2221"));
        assert_eq!(c.kernel, KernelMode::Off);

        let wildcard: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(
            parse(&["--bind-addr", "0.0.0.0"]),
            Err(ConfigError::AdvertiseRequired(wildcard))
        );
        assert_eq!(
            parse(&["--bind-addr", "::", "--advertise-addr", "::"]),
            Err(ConfigError::AdvertiseWildcard("::".parse().unwrap()))
        );
        assert_eq!(
            parse(&["--raft-node-id", "a b"]),
            Err(ConfigError::NodeName("a b".into()))
        );
        assert_eq!(
            parse(&["--server-port", "1111"]),
            Err(ConfigError::SamePorts(1111))
        );
        // Port 0: the kernel picks one for each listener.
        let c = parse(&["--raft-port", "0", "--server-port", "0"]).unwrap();
        assert_eq!((c.raft_bind.port(), c.http_bind.port()), (0, 0));
    }

    #[test]
    fn raft_timing_defaults_and_its_checks() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.raft_timing,
            RaftTiming {
                heartbeat_ms: 50,
                election_timeout_ms: 200
            }
        );
        assert_eq!(
            c.raft_timing.lost_after(),
            crate::cluster::quorum::LOST_AFTER
        );
        let slow = parse(&[
            "--raft-heartbeat-ms",
            "200",
            "--raft-election-timeout-ms",
            "1000",
        ])
        .unwrap();
        assert_eq!(slow.raft_timing.lost_after().as_secs(), 10);
        let err = parse(&[
            "--raft-heartbeat-ms",
            "100",
            "--raft-election-timeout-ms",
            "250",
        ])
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::ElectionTimeout {
                election: 250,
                heartbeat: 100
            }
        );
        assert!(err.to_string().contains("at least 300"), "{err}");
        // l2: a renewal's confirmation must fit two heartbeats.
        let l2 = |lease: &str, heartbeat: &str| {
            parse(&[
                "--announce",
                "l2",
                "--announce-interface",
                "eth0",
                "--l2-lease-ms",
                lease,
                "--raft-heartbeat-ms",
                heartbeat,
                "--raft-election-timeout-ms",
                "1000",
            ])
        };
        assert!(l2("3000", "200").is_ok());
        let err = l2("1000", "200").unwrap_err();
        assert_eq!(
            err,
            ConfigError::LeaseShort {
                lease: 1000,
                heartbeat: 200
            }
        );
        assert!(err.to_string().contains("at least 2667"), "{err}");
    }

    #[test]
    fn the_api_is_on_loopback_unless_tokens_or_opened() {
        let tokens = ["--bind-addr", "10.0.0.2", "--api-tokens-file", "/etc/t"];
        let c = parse(&tokens).unwrap();
        assert_eq!(c.http_bind, "10.0.0.2:2221".parse().unwrap());
        assert!(!c.api_loopback_only);
        assert_eq!(c.api_tokens_file, Some(PathBuf::from("/etc/t")));
        let c = parse(&["--bind-addr", "10.0.0.2", "--api-open"]).unwrap();
        assert_eq!(c.http_bind, "10.0.0.2:2221".parse().unwrap());
        let c = parse(&["--bind-addr", "10.0.0.2", "--api-open=false"]).unwrap();
        assert_eq!(c.http_bind, "127.0.0.1:2221".parse().unwrap());
        assert_eq!(c.raft_bind, "10.0.0.2:1111".parse().unwrap());
        let c = parse(&["--bind-addr", "fd00::2"]).unwrap();
        assert_eq!(c.http_bind, "[::1]:2221".parse().unwrap());
        assert_eq!(c.api_tokens_file, None);
        let c = parse(&["--api-open-reads=yes", "--api-tokens-file", "/t"]).unwrap();
        assert!(c.api_open_reads);
        // Loopback already: nothing moves.
        let c = parse(&[]).unwrap();
        assert!(!c.api_loopback_only);
    }

    #[test]
    fn tls_needs_both_files() {
        let c = parse(&["--tls-cert-file", "/c.pem", "--tls-key-file", "/k.pem"]).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(
            parse(&["--tls-cert-file", "/c.pem"]),
            Err(ConfigError::TlsPair("TLS_CERT_FILE"))
        );
        assert_eq!(
            parse(&["--tls-key-file", "/k.pem"]),
            Err(ConfigError::TlsPair("TLS_KEY_FILE"))
        );
    }

    #[test]
    fn metrics_detail_is_server_or_service() {
        assert_eq!(parse(&[]).unwrap().metrics_detail, MetricsDetail::Server);
        let c = parse(&["--metrics-detail", "service"]).unwrap();
        assert_eq!(c.metrics_detail, MetricsDetail::Service);
        // A bad value stops start-up, naming the variable and the values.
        let Err(e) = Test::try_parse_from(["ipvs-manager", "--metrics-detail", "servers"]) else {
            panic!("servers accepted");
        };
        let said = e.to_string();
        assert!(said.contains("invalid value 'servers'"), "{said}");
        assert!(said.contains("METRICS_DETAIL"), "{said}");
        assert!(
            said.contains("[possible values: server, service]"),
            "{said}"
        );
    }

    #[test]
    fn the_cluster_secret_is_long_and_never_shown() {
        let secret = "s3cret-s3cret-s3cret-s3cret-s3cret";
        let c = parse(&["--cluster-secret", secret]).unwrap();
        assert_eq!(c.cluster_secret.as_ref().map(Secret::expose), Some(secret));
        assert!(!format!("{c:?}").contains(secret));
        assert_eq!(
            parse(&["--cluster-secret", "short"]),
            Err(ConfigError::WeakSecret(5))
        );
    }
}
