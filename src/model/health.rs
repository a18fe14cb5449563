//! Health checks as configured: what each node probes its real servers with
//! ([`HealthCheck`], on a service and inherited by its servers, or on one
//! server), and what a node does with an unhealthy server ([`HealthPolicy`]).
//! Replicated like the rest of the configuration; the results are not (each
//! node probes from where it stands: see `crate::health`).

use super::Destination;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How a real server is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Milliseconds between the starts of two probes.
    pub interval_ms: u32,
    /// Milliseconds a probe may take; less than the interval.
    pub timeout_ms: u32,
    /// Successes in a row that make a down server up.
    pub rise: u32,
    /// Failures in a row that make an up server down.
    pub fall: u32,
    /// Probe this address instead of the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Probe this port instead of the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http`/`https`: the request and what a healthy answer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// `udp`: the datagram sent (a reply of any content is success); `dns`:
    /// the name queried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CheckKind {
    /// No probing: the server is always healthy.
    None,
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP request is answered with an expected status (and body).
    Http,
    /// The same over TLS (certificates are not verified: back-ends often
    /// carry self-signed ones, and the check is of liveness, not identity).
    Https,
    /// A datagram is answered.
    Udp,
    /// A DNS query for `payload` is answered without a server failure.
    Dns,
}

impl CheckKind {
    pub const ALL: [(&'static str, CheckKind); 6] = [
        ("none", CheckKind::None),
        ("tcp", CheckKind::Tcp),
        ("http", CheckKind::Http),
        ("https", CheckKind::Https),
        ("udp", CheckKind::Udp),
        ("dns", CheckKind::Dns),
    ];

    pub fn name(self) -> &'static str {
        CheckKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("none", |(n, _)| n)
    }

    pub fn is_http(self) -> bool {
        matches!(self, CheckKind::Http | CheckKind::Https)
    }
}

/// The request of an `http`/`https` check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    pub method: String,
    pub path: String,
    /// Healthy statuses.
    pub expect: Vec<u16>,
    /// A healthy answer's body contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The `Host` header (default: the probed address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl HealthCheck {
    /// Defaults: every 2 s, 1 s timeout, up after 2 successes, down after 3
    /// failures (close to keepalived's and gorb's, a little faster).
    pub const INTERVAL_MS: u32 = 2000;
    pub const TIMEOUT_MS: u32 = 1000;
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;

    /// A check of `kind` with the default timing and nothing overridden.
    pub fn new(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            interval_ms: HealthCheck::INTERVAL_MS,
            timeout_ms: HealthCheck::TIMEOUT_MS,
            rise: HealthCheck::RISE,
            fall: HealthCheck::FALL,
            address: None,
            port: None,
            http: None,
            payload: None,
        }
    }

    /// Whether it probes at all.
    pub fn probes(&self) -> bool {
        self.kind != CheckKind::None
    }
}

/// What a node does about its unhealthy servers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Remove an unhealthy server from the kernel instead of setting its
    /// weight to 0 (which lets its established connections finish).
    #[serde(default)]
    pub remove_unhealthy: bool,
    /// Milliseconds over which a recovered server's weight ramps up from 1
    /// to its configured weight (0: at once).
    #[serde(default)]
    pub slow_start_ms: u32,
    /// When every checked server is down: `None` keeps them all at their
    /// configured weights (fail open: better a slow service than none);
    /// `Some` sends all traffic to this "sorry" server instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Destination>,
    /// When every checked server is down: keep the weights in this node's
    /// kernel (fail open: connections already here are not cut) but stop
    /// announcing the address (ANNOUNCE), so that nodes that still reach a
    /// server take its traffic. Never with a fallback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withdraw: bool,
}
