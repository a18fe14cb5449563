//! Request validation: JSON bodies in, model types out, or an [`ApiError`]
//! listing every problem found, each with its code and the JSON path of its
//! field (`services[3].servers[2].weight`). Pure functions: the HTTP handlers
//! call them with the body bytes and, for PUT and PATCH, the resource as it
//! stands; nothing here panics, whatever the bytes.
//!
//! The rules are the kernel's (`ip_vs_ctl.c`, as [`crate::ipvs::memory`]
//! emulates them) and ipvsadm's (1.31), so that what the API accepts the
//! reconciler can program, and they are checked here, before anything is
//! written to the log:
//! - an inet service needs `protocol`, `address` and `port`; a fwmark
//!   service `fwmark` (1 to 2^32-1) and optionally `family` (default
//!   `ipv4`, as ipvsadm's `-f` without `-6`); the two sets exclude each
//!   other. Port 0 is refused unless the service is persistent (ipvsadm's
//!   "zero port specified for non-persistent service": a persistent port-0
//!   service takes every port of the address).
//! - `scheduler` is one of [`Scheduler::KNOWN`] (default `wlc`, ipvsadm's).
//! - `flags`: `sh-fallback`/`sh-port` only with `sh`, `mh-fallback`/
//!   `mh-port` only with `mh` (ipvsadm's `parse_sched_flags`); `one-packet`
//!   only for UDP and fwmark services (ipvsadm's "One-Packet Scheduling is
//!   only for UDP virtual services").
//! - `persistence`: `timeout` 1 to 2,678,400 s (ipvsadm's `-p` range;
//!   default 360, ipvsadm's `-p` without a value); `netmask` a dotted IPv4
//!   mask for IPv4 services, a prefix length 1 to 128 for IPv6 ones (as
//!   `-M`), default the host mask (one client address per entry). An IPv4
//!   mask with holes (`255.0.255.0`) is refused although the kernel and
//!   ipvsadm take it ([`crate::model::rules::netmask_with_holes`] says why).
//! - `pe`: only `sip` (the one engine mainline Linux has), and only with
//!   persistence: the kernel consults the engine only when it looks up a
//!   persistence template, so an engine on a non-persistent service would
//!   be accepted and silently do nothing. (Stricter than ipvsadm, which
//!   takes it.)
//! - a server's `address` must be of the service's family unless `forward`
//!   is `tunnel` (the kernel's rule for mixed-family destinations), and not
//!   one the kernel refuses as a destination whatever the host (0.0.0.0/8,
//!   broadcast, multicast; `::`, link-local, IPv4-mapped); `port` defaults
//!   to the service's (0 for fwmark services), as with ipvsadm's `-r addr`;
//!   `weight` 0 to 2^31-1 (the kernel's int, and ipvsadm's limit);
//!   thresholds 0 to 2^31-1 (ipvsadm's limit, and the kernel's: 6.1 refuses
//!   an upper threshold above it) with the lower one not above the upper one
//!   even when the upper one is 0 (the kernel refuses that with ERANGE).
//!
//! Every problem is reported, not only the first: a rule that needs
//! another field reads that field itself rather than wait for the whole
//! identity to be valid (`port` 0 is named even when `address` is bad).
//! - `tunnel` only with `forward: tunnel` (default then: ipip); per type as
//!   ipvsadm's `tunnel_types_v_options`: `gue` needs `port` (1 to 65535),
//!   `ipip` and `gre` take none; `ipip` takes no checksum option, `gre` not
//!   `remcsum`. A `null` tunnel port means none, and so does 0, so a GET
//!   result can be sent back as it is.
//!
//! Identities are immutable: a PUT or PATCH body may omit the identity
//! fields (they come from the URL), and where it has them they must name
//! the same resource, as must `id`. `revision` is accepted and ignored
//! (If-Match carries the precondition). A service's `servers` are changed
//! through its servers routes or `PUT /api/v1/config`; a service PUT or
//! PATCH may carry them only unchanged.

use super::body::read_json;
use super::error::{ApiError, ErrorCode, MAX_BODY_BYTES, MAX_CONFIG_BODY_BYTES};
use super::ids;
use super::json::JoinRequest;
use super::view;
use crate::model::rules::{MAX_THRESHOLD, MAX_WEIGHT};
use crate::model::{
    DestKey, Destination, Family, Forward, HealthCheck, Netmask, Persistence, Protocol, Scheduler,
    ServiceConfig, ServiceFlags, ServiceKey, ServiceOptions, ServiceSpec, Tunnel, TunnelChecksum,
    TunnelType, VirtualService,
};
use json_patch::merge as merge_patch;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

mod health;
mod reader;

pub use health::{CHECK_FIELDS, POLICY_FIELDS};

use reader::{index_path, integer, object, one_of, quoted, type_name, Got, Obj, Problems};

/// Fields a service object accepts.
pub const SERVICE_FIELDS: &[&str] = &[
    "id",
    "revision",
    "protocol",
    "address",
    "port",
    "fwmark",
    "family",
    "scheduler",
    "persistence",
    "flags",
    "pe",
    "servers",
    "bind_address",
    "drain_grace",
    "draining",
    "health_check",
    "health_policy",
];
/// Fields of `persistence`.
pub const PERSISTENCE_FIELDS: &[&str] = &["timeout", "netmask"];
/// Fields a real server object accepts.
pub const SERVER_FIELDS: &[&str] = &[
    "id",
    "address",
    "port",
    "weight",
    "forward",
    "upper_threshold",
    "lower_threshold",
    "tunnel",
    "draining",
    "health_check",
    "health",
];
/// Fields of `tunnel`.
pub const TUNNEL_FIELDS: &[&str] = &["type", "port", "checksum"];
/// Fields of the `PUT /api/v1/config` body.
pub const CONFIG_FIELDS: &[&str] = &["services"];
/// Fields of the `POST /api/v1/cluster/join` body.
pub const JOIN_FIELDS: &[&str] = &["id", "raft_addr", "api_addr"];

/// The service flags by name: `one-packet`, and the scheduler flags that
/// sh and mh name ([`crate::model::rules::SCHED_FLAGS`]; the API has no
/// use for the generic flag-N), each with its bit and the scheduler it
/// needs (`None`: any scheduler, but see `one-packet`).
pub fn flag_table() -> impl Iterator<Item = (&'static str, u32, Option<&'static str>)> {
    let sched = crate::model::rules::SCHED_FLAGS
        .iter()
        .filter(|f| f.scheduler.is_some())
        .map(|f| (f.name, f.bit, f.scheduler));
    std::iter::once(("one-packet", ServiceFlags::ONE_PACKET, None)).chain(sched)
}

/// The only persistence engine mainline Linux ships.
pub const PERSISTENCE_ENGINES: &[&str] = &["sip"];

/// The longest persistence timeout: ipvsadm's limit.
pub const MAX_PERSISTENCE_TIMEOUT: u32 = crate::model::rules::MAX_TIMEOUT;

/// Longest node name (as `RAFT_NODE_ID` allows).
const MAX_NODE_ID: usize = 64;

// --- entry points: what the HTTP handlers call ---

/// `POST /api/v1/services`: a service with its optional `servers`.
pub fn parse_service_create(body: &[u8]) -> Result<ServiceSpec, ApiError> {
    let value = read_json(body, MAX_BODY_BYTES)?;
    let mut p = Problems::default();
    let spec = service_spec(&value, "", &mut p);
    p.finish(spec)
}

/// `PUT /api/v1/services/{id}`: the service's new settings. `current` is
/// the service as it stands (for its identity and servers).
pub fn parse_service_replace(
    body: &[u8],
    current: &ServiceConfig,
) -> Result<(VirtualService, ServiceOptions), ApiError> {
    let value = read_json(body, MAX_BODY_BYTES)?;
    service_update(&value, current)
}

/// `PATCH /api/v1/services/{id}`: a JSON merge patch applied to the
/// service as GET shows it, then validated whole as a PUT body. The handler
/// should send the result with `if_revision` = `current.revision` when the
/// client gave no If-Match, so that a change committed between its read and
/// the write is not overwritten with stale values.
pub fn parse_service_patch(
    body: &[u8],
    current: &ServiceConfig,
) -> Result<(VirtualService, ServiceOptions), ApiError> {
    let patch = read_patch(body)?;
    let mut doc = json_of(&view::service_view(current))?;
    merge_patch(&mut doc, &patch);
    service_update(&doc, current)
}

/// `POST /api/v1/services/{id}/servers`: a new real server of `service`.
pub fn parse_server_create(body: &[u8], service: &ServiceKey) -> Result<ServerSpec, ApiError> {
    let value = read_json(body, MAX_BODY_BYTES)?;
    let mut p = Problems::default();
    let server = server_spec(&value, "", Some(service), None, &mut p);
    p.finish(server)
}

/// `PUT /api/v1/services/{id}/servers/{server_id}`: the server's new
/// settings; `server` is the key from the URL.
pub fn parse_server_replace(
    body: &[u8],
    service: &ServiceKey,
    server: &DestKey,
) -> Result<ServerSpec, ApiError> {
    let value = read_json(body, MAX_BODY_BYTES)?;
    server_update(&value, service, server)
}

/// `PATCH /api/v1/services/{id}/servers/{server_id}`: a merge patch onto the
/// server as GET shows it (see [`parse_service_patch`] for `if_revision`).
pub fn parse_server_patch(
    body: &[u8],
    service: &ServiceKey,
    current: &Destination,
    current_check: Option<&HealthCheck>,
) -> Result<ServerSpec, ApiError> {
    let patch = read_patch(body)?;
    let mut doc = json_of(&view::server_view(current, None))?;
    if let (Some(check), Value::Object(map)) = (current_check, &mut doc) {
        map.insert("health_check".into(), view::check_view(check));
    }
    merge_patch(&mut doc, &patch);
    server_update(&doc, service, &current.key())
}

/// A real server and its own health check, as a request gives them.
pub type ServerSpec = (Destination, Option<HealthCheck>);

/// `PUT /api/v1/config`: `{"services": [service, ...]}`, each service with
/// its servers; no service twice. `{"services": []}` empties the
/// configuration; `{}` is refused, so that a truncated body cannot.
pub fn parse_config(body: &[u8]) -> Result<Vec<ServiceSpec>, ApiError> {
    let value = read_json(body, MAX_CONFIG_BODY_BYTES)?;
    let mut p = Problems::default();
    let specs = config(&value, &mut p);
    p.finish(specs)
}

/// `POST /api/v1/cluster/join`: `{"id", "raft_addr", "api_addr"}`.
pub fn parse_join(body: &[u8]) -> Result<JoinRequest, ApiError> {
    let value = read_json(body, MAX_BODY_BYTES)?;
    let mut p = Problems::default();
    let join = join(&value, &mut p);
    p.finish(join)
}

const PROTOCOLS: &[(&str, Protocol)] = &[
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("sctp", Protocol::Sctp),
];
const FAMILIES: &[(&str, Family)] = &[("ipv4", Family::Ipv4), ("ipv6", Family::Ipv6)];

/// The forwarding methods by name, without their tunnel options (read
/// from `tunnel` once the method is known).
const METHODS: &[(&str, Forward)] = &[
    ("masq", Forward::Masq),
    ("dr", Forward::Route),
    ("tunnel", Forward::TUNNEL),
];
const TUNNEL_TYPES: &[(&str, TunnelType)] = &[
    ("ipip", TunnelType::Ipip),
    ("gue", TunnelType::Gue),
    ("gre", TunnelType::Gre),
];
const CHECKSUMS: &[(&str, TunnelChecksum)] = &[
    ("none", TunnelChecksum::None),
    ("csum", TunnelChecksum::Csum),
    ("remcsum", TunnelChecksum::RemCsum),
];

const PORT: (i128, i128) = (0, 65535);

/// An address as IPVS stores it: a plain IPv4 or IPv6 literal.
fn address(obj: &Obj<'_>, name: &str, p: &mut Problems) -> Got<IpAddr> {
    match obj.str(name, p) {
        Got::Ok(s) => match s.parse::<IpAddr>() {
            Ok(a) => Got::Ok(a),
            Err(_) => {
                let hint = if s.starts_with('[') {
                    " (write IPv6 addresses without brackets)"
                } else if s.contains('/') {
                    " (an address, not a network)"
                } else if s.contains('%') {
                    " (zone ids are not allowed)"
                } else if s.contains(':') && s.contains('.') && !s.contains("::") {
                    " (the port is a field of its own)"
                } else {
                    ""
                };
                p.push(
                    ErrorCode::InvalidAddress,
                    &obj.path(name),
                    format!("{} is not an IPv4 or IPv6 address{hint}", quoted(s)),
                );
                Got::Bad
            }
        },
        Got::Absent => Got::Absent,
        Got::Bad => Got::Bad,
    }
}

// --- services ---

/// A service with its servers (POST, and each service of a config).
fn service_spec(value: &Value, at: &str, p: &mut Problems) -> Option<ServiceSpec> {
    let obj = object(value, at, "a service", SERVICE_FIELDS, p)?;
    let service = service(&obj, None, p);
    let options = options(&obj, service.as_ref().map(|s| &s.key), p);
    let key = service.as_ref().map(|s| s.key);
    let servers = match obj.array("servers", p) {
        Got::Ok(items) => servers(items, &obj.path("servers"), key.as_ref(), p),
        Got::Absent => Some(Vec::new()),
        Got::Bad => None,
    };
    let servers = servers?;
    if let Some(options) = &options {
        fallback_apart(&obj, options, servers.iter().map(|(d, _)| d.key()), p);
    }
    let server_checks = servers
        .iter()
        .filter_map(|(d, c)| Some((d.key(), c.clone()?)))
        .collect();
    Some(ServiceSpec {
        service: service?,
        servers: servers.into_iter().map(|(d, _)| d).collect(),
        options: options?,
        server_checks,
    })
}

/// The fallback ("sorry") server takes the traffic when the service's own
/// servers are all down, so it must not be one of them.
fn fallback_apart(
    obj: &Obj<'_>,
    options: &ServiceOptions,
    mut servers: impl Iterator<Item = DestKey>,
    p: &mut Problems,
) {
    if let Some(fallback) = &options.health_policy.fallback {
        if servers.any(|k| k == fallback.key()) {
            p.push(
                ErrorCode::InvalidValue,
                &reader::join_path(&obj.path("health_policy"), "fallback"),
                format!(
                    "{} is one of the service's servers; the fallback takes the traffic \
                     when they are all down, so it must be another server",
                    fallback.key()
                ),
            );
        }
    }
}

/// A server added to a service must not be the service's fallback server
/// (see [`fallback_apart`]); `address` is named, as the server's identity.
pub fn not_the_fallback(options: &ServiceOptions, server: &DestKey) -> Result<(), ApiError> {
    match &options.health_policy.fallback {
        Some(fallback) if fallback.key() == *server => Err(ApiError::at(
            ErrorCode::InvalidValue,
            "address",
            format!(
                "{server} is the service's fallback server (health_policy.fallback), which \
                 takes the traffic when its servers are all down, so it cannot be one of them: \
                 add another server, or change the policy first"
            ),
        )),
        _ => Ok(()),
    }
}

/// Longest drain a removal may ask for: a day.
pub const MAX_DRAIN_GRACE: u32 = 86_400;

/// `bind_address` and `drain_grace` of a service (`key`: its identity when
/// valid). `draining` is response-only: accepted, so that a GET can be sent
/// back, and ignored.
fn options(obj: &Obj<'_>, key: Option<&ServiceKey>, p: &mut Problems) -> Option<ServiceOptions> {
    let before = p.len();
    let bind_address = match obj.get("bind_address") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            p.push(
                ErrorCode::InvalidValue,
                &obj.path("bind_address"),
                format!(
                    "bind_address must be true or false, got {}",
                    type_name(other)
                ),
            );
            false
        }
    };
    let fwmark = matches!(key, Some(ServiceKey::Fwmark { .. })) || obj.has("fwmark");
    if bind_address && fwmark {
        p.push(
            ErrorCode::InvalidValue,
            &obj.path("bind_address"),
            "a firewall-mark service has no address to bind; bind_address needs \
             protocol/address/port",
        );
    }
    let drain_grace = match obj.get("drain_grace") {
        None | Some(Value::Null) => None,
        Some(_) => obj
            .int_in(
                "drain_grace",
                (0, i128::from(MAX_DRAIN_GRACE)),
                ErrorCode::InvalidValue,
                "drain_grace is the seconds a removed server drains, 0 to 86400",
                p,
            )
            .ok()
            .map(|n| n as u32),
    };
    let health_check = health::health_check(obj, "health_check", p);
    if let (Some(Some(check)), Some(ServiceKey::Fwmark { .. })) = (&health_check, key) {
        health::needs_port(check, &obj.path("health_check"), p);
    }
    let health_policy = health::health_policy(obj, key, p);
    if p.len() > before {
        return None;
    }
    Some(ServiceOptions {
        bind_address,
        drain_grace,
        health_check: health_check?,
        health_policy: health_policy?,
    })
}

/// The settings of a service (everything but `servers`), with `id` checked
/// against the identity; on PUT and PATCH, the identity against the URL's
/// (`expected`).
fn service(
    obj: &Obj<'_>,
    expected: Option<&ServiceKey>,
    p: &mut Problems,
) -> Option<VirtualService> {
    let before = p.len();
    let key = service_key(obj, p);
    let family = key.ok().map(|k| k.family());
    let scheduler = scheduler(obj, p);
    let persistence = persistence(obj, family, p);
    // Flags are judged against the scheduler the service will have: the
    // default one when none is given, none at all when it is invalid.
    let effective = scheduler
        .as_ref()
        .map(Scheduler::clone)
        .or(Scheduler::default());
    let flags = flags(obj, given_protocol(obj), effective.as_ref(), p);
    let pe = pe(obj, persistence, p);
    // Read from the field, not the key: a bad address must not hide it.
    let port_zero = !obj.has("fwmark") && obj.get("port").and_then(integer) == Some(0);
    if port_zero && persistence == Got::Absent {
        p.push(
            ErrorCode::InvalidPort,
            &obj.path("port"),
            "port 0 is only allowed for a persistent service (which then takes every port \
             of its address); give a port from 1 to 65535 or add persistence",
        );
    }
    if let Got::Ok(key) = key {
        match expected {
            // A changed identity makes `id` stale too; the identity field
            // is the problem to name.
            Some(want) if *want != key => {
                identity_mismatch(obj, &service_identity(want), &service_identity(&key), p)
            }
            _ => check_id(obj, &ids::service_id(&key), p),
        }
    }
    // `revision` is response-only and ignored, but must still be one.
    let _ = obj.int_in(
        "revision",
        (0, i128::from(u64::MAX)),
        ErrorCode::InvalidValue,
        "revision is a log index (0 or more)",
        p,
    );
    if p.len() > before {
        return None;
    }
    Some(VirtualService {
        key: key.ok()?,
        scheduler: scheduler.or(Scheduler::default())?,
        flags: flags?,
        persistence: persistence.or(None)?,
        pe_name: pe?,
    })
}

/// The protocol of an inet service as the body gives it, whether or not
/// the rest of the identity is valid (`None` for a fwmark service, or when
/// `protocol` is absent or invalid, which is reported elsewhere).
fn given_protocol(obj: &Obj<'_>) -> Option<Protocol> {
    if obj.has("fwmark") {
        return None;
    }
    let name = obj.get("protocol")?.as_str()?;
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// `id` in a body must be the id of the identity the body has.
fn check_id(obj: &Obj<'_>, expected: &str, p: &mut Problems) {
    if let Got::Ok(id) = obj.str("id", p) {
        if id != expected {
            p.push(
                ErrorCode::IdentityMismatch,
                &obj.path("id"),
                format!(
                    "id {} does not match the identity in the body, whose id is \
                     {expected:?} (id is read-only: it is derived from the identity)",
                    quoted(id)
                ),
            );
        }
    }
}

fn service_key(obj: &Obj<'_>, p: &mut Problems) -> Got<ServiceKey> {
    if obj.has("fwmark") {
        let mut conflict = false;
        for name in ["protocol", "address", "port"] {
            if obj.has(name) {
                conflict = true;
                p.push(
                    ErrorCode::ConflictingFields,
                    &obj.path(name),
                    format!(
                        "{name} cannot be given with fwmark: a service is either protocol, \
                         address and port, or fwmark and family"
                    ),
                );
            }
        }
        let family = one_of(obj, "family", FAMILIES, p);
        let mark = obj.int_in(
            "fwmark",
            (1, u32::MAX.into()),
            ErrorCode::InvalidFwmark,
            "fwmark must be 1 to 4294967295",
            p,
        );
        return match (family.or(Family::Ipv4), mark, conflict) {
            (Some(family), Got::Ok(mark), false) => Got::Ok(ServiceKey::Fwmark {
                family,
                mark: u32::try_from(mark).unwrap_or_default(),
            }),
            _ => Got::Bad,
        };
    }
    let why = " (or fwmark, for a firewall-mark service)";
    let protocol = one_of(obj, "protocol", PROTOCOLS, p);
    let protocol = obj.require("protocol", protocol, why, p);
    let addr = address(obj, "address", p);
    let addr = obj.require("address", addr, why, p);
    let port = obj.int_in(
        "port",
        PORT,
        ErrorCode::InvalidPort,
        "port must be 1 to 65535",
        p,
    );
    let port = obj.require("port", port, why, p);
    let family = one_of(obj, "family", FAMILIES, p);
    if let (Got::Ok(family), Some(addr)) = (family, addr) {
        if family != Family::of(&addr) {
            p.push(
                ErrorCode::WrongFamily,
                &obj.path("family"),
                format!(
                    "family is {family} but address {addr} is {}",
                    Family::of(&addr)
                ),
            );
            return Got::Bad;
        }
    }
    match (protocol, addr, port) {
        (Some(protocol), Some(addr), Some(port)) => Got::Ok(ServiceKey::Inet {
            protocol,
            addr,
            port: u16::try_from(port).unwrap_or_default(),
        }),
        _ => Got::Bad,
    }
}

fn scheduler(obj: &Obj<'_>, p: &mut Problems) -> Got<Scheduler> {
    match obj.str("scheduler", p) {
        Got::Ok(name) => match Scheduler::new(name) {
            Ok(s) if s.is_known() => Got::Ok(s),
            _ => {
                p.push(
                    ErrorCode::UnknownScheduler,
                    &obj.path("scheduler"),
                    format!(
                        "unknown scheduler {}; the schedulers are: {}",
                        quoted(name),
                        Scheduler::KNOWN.join(", ")
                    ),
                );
                Got::Bad
            }
        },
        Got::Absent => Got::Absent,
        Got::Bad => Got::Bad,
    }
}

/// `persistence`; `Got::Absent` means not persistent.
fn persistence(
    obj: &Obj<'_>,
    family: Option<Family>,
    p: &mut Problems,
) -> Got<Option<Persistence>> {
    let Some(value) = obj.get("persistence") else {
        return Got::Absent;
    };
    let at = obj.path("persistence");
    let Some(inner) = object(value, &at, "persistence", PERSISTENCE_FIELDS, p) else {
        return Got::Bad;
    };
    let before = p.len();
    let timeout = inner.int_in(
        "timeout",
        (1, MAX_PERSISTENCE_TIMEOUT.into()),
        ErrorCode::InvalidTimeout,
        &format!("timeout must be 1 to {MAX_PERSISTENCE_TIMEOUT} seconds"),
        p,
    );
    let netmask = netmask(&inner, family, p);
    if p.len() > before {
        return Got::Bad;
    }
    let timeout = timeout
        .map(|t| u32::try_from(t).unwrap_or_default())
        .or(Persistence::DEFAULT_TIMEOUT);
    // Without a family (the identity is bad, already reported) there is no
    // default mask to give; the service is refused anyway.
    match (timeout, netmask.ok().or_else(|| family.map(Netmask::host))) {
        (Some(timeout), Some(netmask)) => Got::Ok(Some(Persistence { timeout, netmask })),
        _ => Got::Bad,
    }
}

fn netmask(obj: &Obj<'_>, family: Option<Family>, p: &mut Problems) -> Got<Netmask> {
    let Some(value) = obj.get("netmask") else {
        return Got::Absent;
    };
    let at = obj.path("netmask");
    let wrong = |p: &mut Problems, message: &str| {
        p.push(ErrorCode::WrongFamily, &at, message);
        Got::Bad
    };
    match value {
        Value::String(text) => {
            let Ok(mask) = text.parse::<Ipv4Addr>() else {
                p.push(
                    ErrorCode::InvalidNetmask,
                    &at,
                    format!(
                        "{} is not a netmask: an IPv4 service takes a dotted mask such \
                         as \"255.255.255.0\", an IPv6 service a prefix length such as 64",
                        quoted(text)
                    ),
                );
                return Got::Bad;
            };
            if family == Some(Family::Ipv6) {
                return wrong(
                    p,
                    "an IPv6 service takes a prefix length (1 to 128) as its netmask, not a \
                     dotted IPv4 mask",
                );
            }
            if let Some(why) = crate::model::rules::netmask_with_holes(mask) {
                p.push(ErrorCode::InvalidNetmask, &at, why);
                return Got::Bad;
            }
            Got::Ok(Netmask::V4(mask))
        }
        Value::Number(_) => {
            let prefix = integer(value);
            if family == Some(Family::Ipv4) {
                return wrong(
                    p,
                    "an IPv4 service takes a dotted netmask such as \"255.255.255.0\", not a \
                     prefix length",
                );
            }
            match prefix
                .and_then(|n| u8::try_from(n).ok())
                .filter(|n| (1..=128).contains(n))
            {
                Some(prefix) => Got::Ok(Netmask::V6(prefix)),
                None => {
                    p.push(
                        ErrorCode::InvalidNetmask,
                        &at,
                        format!("an IPv6 prefix length must be 1 to 128, got {value}"),
                    );
                    Got::Bad
                }
            }
        }
        other => {
            p.push(
                ErrorCode::InvalidType,
                &at,
                format!(
                    "netmask must be a dotted IPv4 mask (string) or an IPv6 prefix length \
                     (integer), got {}",
                    type_name(other)
                ),
            );
            Got::Bad
        }
    }
}

/// `flags`; `protocol`: the inet service's protocol (`None` for fwmark
/// services, which take one-packet, or when it is not known).
fn flags(
    obj: &Obj<'_>,
    protocol: Option<Protocol>,
    scheduler: Option<&Scheduler>,
    p: &mut Problems,
) -> Option<ServiceFlags> {
    let items = match obj.array("flags", p) {
        Got::Ok(items) => items,
        Got::Absent => return Some(ServiceFlags::default()),
        Got::Bad => return None,
    };
    let at = obj.path("flags");
    let before = p.len();
    let mut flags = ServiceFlags::default();
    for (i, item) in items.iter().enumerate() {
        let here = index_path(&at, i);
        let Value::String(name) = item else {
            p.push(
                ErrorCode::InvalidType,
                &here,
                format!("a flag is a string, got {}", type_name(item)),
            );
            continue;
        };
        let Some((_, bit, needs)) = flag_table().find(|(n, _, _)| n == name) else {
            let names: Vec<&str> = flag_table().map(|(n, _, _)| n).collect();
            p.push(
                ErrorCode::UnknownFlag,
                &here,
                format!(
                    "unknown flag {}; the flags are: {}",
                    quoted(name),
                    names.join(", ")
                ),
            );
            continue;
        };
        // Compatibility is judged only against a valid scheduler and
        // identity; a bad one is reported already.
        if let (Some(needs), Some(scheduler)) = (needs, scheduler) {
            if scheduler.as_str() != needs {
                p.push(
                    ErrorCode::FlagNotAllowed,
                    &here,
                    format!(
                        "{name} is a flag of the {needs} scheduler, and this service's \
                         scheduler is {scheduler}"
                    ),
                );
                continue;
            }
        }
        if bit == ServiceFlags::ONE_PACKET {
            if let Some(protocol) = protocol {
                if protocol != Protocol::Udp {
                    p.push(
                        ErrorCode::FlagNotAllowed,
                        &here,
                        format!(
                            "one-packet scheduling is only for UDP and fwmark services, not \
                             {protocol}"
                        ),
                    );
                    continue;
                }
            }
        }
        flags = flags.with(bit);
    }
    (p.len() == before).then_some(flags)
}

/// `pe`, which needs persistence.
fn pe(
    obj: &Obj<'_>,
    persistence: Got<Option<Persistence>>,
    p: &mut Problems,
) -> Option<Option<String>> {
    match obj.str("pe", p) {
        Got::Absent => Some(None),
        Got::Bad => None,
        Got::Ok(name) if !PERSISTENCE_ENGINES.contains(&name) => {
            p.push(
                ErrorCode::UnknownPe,
                &obj.path("pe"),
                format!(
                    "unknown persistence engine {}; the engines are: {}",
                    quoted(name),
                    PERSISTENCE_ENGINES.join(", ")
                ),
            );
            None
        }
        Got::Ok(name) => {
            if persistence == Got::Absent {
                p.push(
                    ErrorCode::PeWithoutPersistence,
                    &obj.path("pe"),
                    format!(
                        "the {name} persistence engine needs persistence: set persistence \
                         (the kernel uses an engine only for persistent services)"
                    ),
                );
                return None;
            }
            Some(Some(name.to_string()))
        }
    }
}

/// A PUT or PATCH of a service: its identity must stay, its servers too.
fn service_update(
    value: &Value,
    current: &ServiceConfig,
) -> Result<(VirtualService, ServiceOptions), ApiError> {
    let key = current.service.key;
    let mut p = Problems::default();
    let Some(filled) = fill_identity(
        value,
        &service_identity(&key),
        foreign_identity(&key),
        &mut p,
    ) else {
        return p.finish(None);
    };
    let Some(obj) = object(&filled, "", "a service", SERVICE_FIELDS, &mut p) else {
        return p.finish(None);
    };
    let service = service(&obj, Some(&key), &mut p);
    let options = options(&obj, Some(&key), &mut p);
    if let Got::Ok(items) = obj.array("servers", &mut p) {
        let at = obj.path("servers");
        if let Some(list) = servers(items, &at, Some(&key), &mut p) {
            let given: BTreeMap<DestKey, Destination> =
                list.into_iter().map(|(d, _)| (d.key(), d)).collect();
            if given != current.servers {
                p.push(
                    ErrorCode::ReadOnly,
                    &at,
                    "a service's servers cannot be changed with PUT or PATCH on the service: \
                     use /api/v1/services/{id}/servers, or PUT /api/v1/config; send them \
                     unchanged or leave them out",
                );
            }
        }
    }
    if let Some(options) = &options {
        fallback_apart(&obj, options, current.servers.keys().copied(), &mut p);
    }
    p.finish(service.zip(options))
}

/// A PUT or PATCH of a real server: its address and port must stay.
fn server_update(
    value: &Value,
    service: &ServiceKey,
    current: &DestKey,
) -> Result<ServerSpec, ApiError> {
    let mut p = Problems::default();
    let identity = server_identity(current);
    let Some(filled) = fill_identity(value, &identity, &[], &mut p) else {
        return p.finish(None);
    };
    let got = server_spec(&filled, "", Some(service), Some(current), &mut p);
    p.finish(got)
}

/// The identity fields of a service as JSON, as its view has them.
fn service_identity(key: &ServiceKey) -> Vec<(&'static str, Value)> {
    match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => vec![
            ("protocol", Value::from(protocol.to_string())),
            ("address", Value::from(addr.to_string())),
            ("port", Value::from(*port)),
        ],
        ServiceKey::Fwmark { family, mark } => vec![
            ("fwmark", Value::from(*mark)),
            ("family", Value::from(family.to_string())),
        ],
    }
}

fn server_identity(key: &DestKey) -> Vec<(&'static str, Value)> {
    vec![
        ("address", Value::from(key.addr.to_string())),
        ("port", Value::from(key.port)),
    ]
}

/// The body with the identity fields it leaves out taken from the URL's
/// resource. `foreign` are the identity fields of the other kind of service
/// (fwmark against protocol/address/port): a body that has one names
/// another resource as it stands, and filling in the rest would only add
/// confusing conflicts, so that is reported here.
fn fill_identity(
    value: &Value,
    identity: &[(&'static str, Value)],
    foreign: &[&str],
    p: &mut Problems,
) -> Option<Value> {
    let Value::Object(map) = value else {
        p.push(
            ErrorCode::InvalidType,
            "",
            format!("expected a JSON object, got {}", type_name(value)),
        );
        return None;
    };
    let present = |name: &str| map.get(name).is_some_and(|v| !v.is_null());
    let mut mismatch = false;
    for name in foreign.iter().filter(|n| present(n)) {
        mismatch = true;
        let identity: Vec<String> = identity.iter().map(|(n, v)| format!("{n} {v}")).collect();
        p.push(
            ErrorCode::IdentityMismatch,
            name,
            format!(
                "{name} cannot be set on this service: its identity is {} and cannot \
                 change (create a new service and delete this one)",
                identity.join(", ")
            ),
        );
    }
    if mismatch {
        return None;
    }
    let mut filled = map.clone();
    for (name, v) in identity {
        if !present(name) {
            filled.insert((*name).to_string(), v.clone());
        }
    }
    Some(Value::Object(filled))
}

/// The identity fields of the other kind of service than `key`'s.
fn foreign_identity(key: &ServiceKey) -> &'static [&'static str] {
    match key {
        ServiceKey::Inet { .. } => &["fwmark"],
        ServiceKey::Fwmark { .. } => &["protocol", "address", "port"],
    }
}

/// Reports each identity field whose value names another resource.
fn identity_mismatch(
    obj: &Obj<'_>,
    want: &[(&'static str, Value)],
    got: &[(&'static str, Value)],
    p: &mut Problems,
) {
    for ((name, want), (_, got)) in want.iter().zip(got) {
        if want != got {
            p.push(
                ErrorCode::IdentityMismatch,
                &obj.path(name),
                format!(
                    "{name} is {got} but the resource has {want}: the identity of a \
                     resource cannot change (create a new one and delete this one)"
                ),
            );
        }
    }
}

// --- servers ---

/// A list of servers, none twice.
fn servers(
    items: &[Value],
    at: &str,
    service: Option<&ServiceKey>,
    p: &mut Problems,
) -> Option<Vec<ServerSpec>> {
    let before = p.len();
    let mut seen: HashMap<DestKey, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = index_path(at, i);
        let Some((dest, check)) = server_spec(item, &here, service, None, p) else {
            continue;
        };
        if let Some(first) = seen.insert(dest.key(), i) {
            p.push(
                ErrorCode::Duplicate,
                &here,
                format!(
                    "server {} is listed twice (also at {})",
                    dest.key(),
                    index_path(at, first)
                ),
            );
        }
        out.push((dest, check));
    }
    (p.len() == before).then_some(out)
}

/// A real server with its own `health_check` (see [`server`]).
fn server_spec(
    value: &Value,
    at: &str,
    service: Option<&ServiceKey>,
    expected: Option<&DestKey>,
    p: &mut Problems,
) -> Option<ServerSpec> {
    let before = p.len();
    let dest = server(value, at, service, expected, p);
    let check = match value {
        Value::Object(_) => {
            // Opened again for the one field; `server` reported the rest.
            let obj = object(value, at, "a server", &[], &mut Problems::default())?;
            let check = health::health_check(&obj, "health_check", p);
            if let (Some(Some(check)), Some(d)) = (&check, &dest) {
                if d.port == 0 {
                    health::needs_port(check, &obj.path("health_check"), p);
                }
            }
            check
        }
        _ => None,
    };
    if p.len() > before {
        return None;
    }
    Some((dest?, check?))
}

/// One real server of `service` (`None`: the service is invalid, so the
/// checks against it are skipped); on PUT and PATCH, with the URL's
/// address and port (`expected`).
fn server(
    value: &Value,
    at: &str,
    service: Option<&ServiceKey>,
    expected: Option<&DestKey>,
    p: &mut Problems,
) -> Option<Destination> {
    let obj = object(value, at, "a server", SERVER_FIELDS, p)?;
    let before = p.len();
    let addr = address(&obj, "address", p);
    let addr = obj.require("address", addr, "", p);
    if let Some(addr) = addr {
        if let Some(why) = crate::model::rules::refused_destination(&addr) {
            p.push(
                ErrorCode::InvalidAddress,
                &obj.path("address"),
                format!("{addr} cannot be a real server: {why}"),
            );
        }
    }
    let service_port = match service {
        Some(ServiceKey::Inet { port, .. }) => Some(*port),
        Some(ServiceKey::Fwmark { .. }) => Some(0),
        None => None,
    };
    let port = obj
        .int_in(
            "port",
            PORT,
            ErrorCode::InvalidPort,
            "port must be 0 to 65535",
            p,
        )
        .map(|n| u16::try_from(n).unwrap_or_default());
    let port = match port {
        Got::Ok(port) => Some(port),
        Got::Absent => service_port,
        Got::Bad => None,
    };
    let weight = obj
        .int_in(
            "weight",
            (0, MAX_WEIGHT.into()),
            ErrorCode::InvalidWeight,
            &format!(
                "weight must be 0 to {MAX_WEIGHT} (the kernel's limit, a signed 32-bit \
                 number, and ipvsadm's; 0 takes no new connections)"
            ),
            p,
        )
        .map(|n| u32::try_from(n).unwrap_or_default())
        .or(1);
    let upper = threshold(&obj, "upper_threshold", p);
    let lower = threshold(&obj, "lower_threshold", p);
    if let (Some(upper), Some(lower)) = (upper, lower) {
        if lower > upper {
            p.push(
                ErrorCode::InvalidThreshold,
                &obj.path("lower_threshold"),
                format!(
                    "lower_threshold ({lower}) is above upper_threshold ({upper}); the kernel \
                     refuses that even when upper_threshold is 0 (no limit)"
                ),
            );
        }
    }
    let method = one_of(&obj, "forward", METHODS, p);
    let forward = match method {
        Got::Ok(Forward::Tunnel(_)) => tunnel(&obj, p).map(Forward::Tunnel),
        Got::Ok(plain) => forward_plain(&obj, plain, p),
        Got::Absent => forward_plain(&obj, Forward::Masq, p),
        Got::Bad => None,
    };
    if let (Some(service), Some(addr), Got::Ok(method)) = (service, addr, method_or_default(method))
    {
        let (service_family, family) = (service.family(), Family::of(&addr));
        if family != service_family && !method.is_tunnel() {
            p.push(
                ErrorCode::WrongFamily,
                &obj.path("address"),
                format!(
                    "{addr} is {family} and the service is {service_family}; a server of \
                     the other family needs forward: tunnel"
                ),
            );
        }
    }
    if let (Some(addr), Some(port)) = (addr, port) {
        let key = DestKey { addr, port };
        match expected {
            Some(want) if *want != key => {
                identity_mismatch(&obj, &server_identity(want), &server_identity(&key), p)
            }
            _ => check_id(&obj, &ids::server_id(&key), p),
        }
    }
    if p.len() > before {
        return None;
    }
    Some(Destination {
        addr: addr?,
        port: port?,
        forward: forward?,
        weight: weight?,
        upper_threshold: upper?,
        lower_threshold: lower?,
    })
}

fn method_or_default(method: Got<Forward>) -> Got<Forward> {
    match method {
        Got::Absent => Got::Ok(Forward::Masq),
        other => other,
    }
}

fn threshold(obj: &Obj<'_>, name: &str, p: &mut Problems) -> Option<u32> {
    obj.int_in(
        name,
        (0, MAX_THRESHOLD.into()),
        ErrorCode::InvalidThreshold,
        &format!(
            "{name} must be 0 to {MAX_THRESHOLD} (the kernel's and ipvsadm's limit; 0: no \
             limit)"
        ),
        p,
    )
    .map(|n| u32::try_from(n).unwrap_or_default())
    .or(0)
}

/// A forwarding method without options: `tunnel` must be absent.
fn forward_plain(obj: &Obj<'_>, forward: Forward, p: &mut Problems) -> Option<Forward> {
    if obj.has("tunnel") {
        p.push(
            ErrorCode::TunnelNotAllowed,
            &obj.path("tunnel"),
            "tunnel options need forward: tunnel (set tunnel to null for masq or dr)",
        );
        return None;
    }
    Some(forward)
}

/// The tunnel options of a tunnel-forwarded server (default: ipip).
fn tunnel(obj: &Obj<'_>, p: &mut Problems) -> Option<Tunnel> {
    let Some(value) = obj.get("tunnel") else {
        return Some(Tunnel::default());
    };
    let inner = object(
        value,
        &obj.path("tunnel"),
        "tunnel options",
        TUNNEL_FIELDS,
        p,
    )?;
    let before = p.len();
    let kind = one_of(&inner, "type", TUNNEL_TYPES, p).or(TunnelType::Ipip);
    let checksum = one_of(&inner, "checksum", CHECKSUMS, p).or(TunnelChecksum::None);
    let port = inner.int("port", p);
    // An invalid type is reported already; the port and checksum are still
    // checked as far as they can be without it.
    let port = match (kind, port) {
        (_, Got::Bad) => None,
        (_, Got::Ok(n)) if u16::try_from(n).is_err() => {
            p.push(
                ErrorCode::InvalidPort,
                &inner.path("port"),
                format!("the tunnel port must be 1 to 65535, got {n}"),
            );
            None
        }
        (Some(TunnelType::Gue), Got::Absent | Got::Ok(0)) => {
            p.push(
                ErrorCode::TunnelPortRequired,
                &inner.path("port"),
                "a gue tunnel needs its UDP port (1 to 65535)",
            );
            None
        }
        (Some(TunnelType::Gue), Got::Ok(n)) => u16::try_from(n).ok(),
        (None, _) => None,
        (Some(_), Got::Absent | Got::Ok(0)) => Some(0),
        (Some(other), Got::Ok(_)) => {
            p.push(
                ErrorCode::TunnelOptionNotAllowed,
                &inner.path("port"),
                format!("a {} tunnel takes no port (only gue does)", other.name()),
            );
            None
        }
    };
    let refused = match (kind, checksum) {
        (Some(TunnelType::Ipip), Some(TunnelChecksum::Csum | TunnelChecksum::RemCsum)) => {
            Some("an ipip tunnel takes no checksum option")
        }
        (Some(TunnelType::Gre), Some(TunnelChecksum::RemCsum)) => {
            Some("a gre tunnel takes checksum none or csum, not remcsum")
        }
        _ => None,
    };
    if let Some(why) = refused {
        p.push(
            ErrorCode::TunnelOptionNotAllowed,
            &inner.path("checksum"),
            why,
        );
    }
    if p.len() > before {
        return None;
    }
    Some(Tunnel {
        kind: kind?,
        port: port?,
        checksum: checksum?,
    })
}

// --- config and join ---

fn config(value: &Value, p: &mut Problems) -> Option<Vec<ServiceSpec>> {
    if value.is_array() {
        p.push(
            ErrorCode::InvalidType,
            "",
            "the configuration is an object, {\"services\": [...]}, not a bare list",
        );
        return None;
    }
    let obj = object(value, "", "a configuration", CONFIG_FIELDS, p)?;
    let items = obj.array("services", p);
    let items = obj.require(
        "services",
        items,
        " ({\"services\": []} empties the configuration)",
        p,
    )?;
    let at = obj.path("services");
    let mut seen: HashMap<ServiceKey, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = index_path(&at, i);
        let Some(spec) = service_spec(item, &here, p) else {
            continue;
        };
        if let Some(first) = seen.insert(spec.service.key, i) {
            p.push(
                ErrorCode::Duplicate,
                &here,
                format!(
                    "service {} is listed twice (also at {})",
                    spec.service.key,
                    index_path(&at, first)
                ),
            );
        }
        out.push(spec);
    }
    p.is_empty().then_some(out)
}

fn join(value: &Value, p: &mut Problems) -> Option<JoinRequest> {
    let obj = object(value, "", "a join request", JOIN_FIELDS, p)?;
    let id = obj.str("id", p);
    let id = obj.require("id", id, " (the new node's RAFT_NODE_ID)", p);
    if let Some(id) = id {
        let ok = !id.is_empty()
            && id.len() <= MAX_NODE_ID
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            p.push(
                ErrorCode::InvalidValue,
                "id",
                format!(
                    "a node id is 1 to {MAX_NODE_ID} letters, digits, '-', '_' or '.', got {}",
                    quoted(id)
                ),
            );
        }
    }
    let mut addr = |name: &str| -> Option<String> {
        let got = obj.str(name, p);
        let text = obj.require(name, got, " (ip:port)", p)?;
        match text.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && !a.ip().is_unspecified() => Some(a.to_string()),
            _ => {
                p.push(
                    ErrorCode::InvalidAddress,
                    name,
                    format!(
                        "{name} must be the ip:port peers reach the node at (no wildcard \
                         address, no port 0), got {}",
                        quoted(text)
                    ),
                );
                None
            }
        }
    };
    let raft_addr = addr("raft_addr");
    let api_addr = addr("api_addr");
    if !p.is_empty() {
        return None;
    }
    Some(JoinRequest {
        id: id?.to_string(),
        raft_addr: raft_addr?,
        api_addr: api_addr?,
    })
}

// --- helpers ---

/// A PATCH body: a JSON object (a merge patch that is not an object would
/// replace the whole resource with a non-resource).
fn read_patch(body: &[u8]) -> Result<Value, ApiError> {
    let patch = read_json(body, MAX_BODY_BYTES)?;
    if !patch.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidType,
            format!(
                "a PATCH body is a JSON merge patch: an object of the fields to change \
                 (null removes one), got {}",
                type_name(&patch)
            ),
        ));
    }
    Ok(patch)
}

fn json_of<T: serde::Serialize>(view: &T) -> Result<Value, ApiError> {
    serde_json::to_value(view).map_err(ApiError::internal)
}
