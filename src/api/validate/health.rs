//! `health_check` (on a service or a server) and `health_policy` (on a
//! service): JSON in, [`HealthCheck`] / [`HealthPolicy`] out, every problem
//! named by its field. Times are seconds, decimals allowed.
//!
//! Rules: `kind` is one of none, tcp, http, https, udp, dns; `timeout` is
//! below `interval` (a probe must end before the next one starts); `rise`
//! and `fall` are 1 or more; `path`, `method`, `expect`, `body` and `host`
//! only for http/https; `payload` for udp (the datagram) and dns (the name
//! queried, required there) only; `port` where the servers have none (a
//! firewall-mark service's check, or a portless server's own).

use super::reader::{object, one_of, quoted, type_name, Got, Obj, Problems};
use super::{address, PORT};
use crate::api::error::ErrorCode;
use crate::model::{CheckKind, Destination, HealthCheck, HealthPolicy, HttpCheck, ServiceKey};
use serde_json::Value;

/// Fields of `health_check`.
pub const CHECK_FIELDS: &[&str] = &[
    "kind", "interval", "timeout", "rise", "fall", "address", "port", "path", "method", "expect",
    "body", "host", "payload",
];
/// Fields of `health_policy`.
pub const POLICY_FIELDS: &[&str] = &["unhealthy", "slow_start", "all_down", "fallback"];

/// Longest interval and slow start: an hour.
const MAX_SECONDS: f64 = 3600.0;

/// The HTTP methods a check may use (no body is sent).
const HTTP_METHODS: &[(&str, &str)] = &[("GET", "GET"), ("HEAD", "HEAD"), ("OPTIONS", "OPTIONS")];

/// `obj[name]` as a health check: `None` when absent or `null`.
pub(super) fn health_check(
    obj: &Obj<'_>,
    name: &str,
    p: &mut Problems,
) -> Option<Option<HealthCheck>> {
    let Some(value) = obj.get(name) else {
        return Some(None);
    };
    let before = p.len();
    let check = object(value, &obj.path(name), "a health check", CHECK_FIELDS, p)?;
    let kind = one_of(&check, "kind", &CheckKind::ALL, p);
    let kind = check.require("kind", kind, " (none, tcp, http, https, udp or dns)", p);
    let interval = seconds(&check, "interval", HealthCheck::INTERVAL_MS, p);
    let timeout = seconds(&check, "timeout", HealthCheck::TIMEOUT_MS, p);
    if let (Some(interval), Some(timeout)) = (interval, timeout) {
        if timeout >= interval {
            p.push(
                ErrorCode::InvalidValue,
                &check.path("timeout"),
                format!(
                    "timeout ({} s) must be less than interval ({} s): a probe ends before \
                     the next one starts",
                    f64::from(timeout) / 1000.0,
                    f64::from(interval) / 1000.0
                ),
            );
        }
    }
    let rise = count(&check, "rise", HealthCheck::RISE, p);
    let fall = count(&check, "fall", HealthCheck::FALL, p);
    let addr = address(&check, "address", p).ok();
    let port = check
        .int_in(
            "port",
            (1, PORT.1),
            ErrorCode::InvalidPort,
            "port must be 1 to 65535",
            p,
        )
        .ok()
        .map(|n| u16::try_from(n).unwrap_or_default());
    let http = match kind {
        Some(k) if k.is_http() => http(&check, p),
        _ => {
            for field in ["path", "method", "expect", "body", "host"] {
                if check.has(field) {
                    p.push(
                        ErrorCode::InvalidValue,
                        &check.path(field),
                        format!("{field} is for http and https checks only"),
                    );
                }
            }
            None
        }
    };
    let payload = match check.str("payload", p) {
        Got::Ok(s) => Some(s.to_string()),
        _ => None,
    };
    match kind {
        Some(CheckKind::Dns) if payload.is_none() => p.push(
            ErrorCode::MissingField,
            &check.path("payload"),
            "payload is required for a dns check: the name to query",
        ),
        Some(CheckKind::Dns | CheckKind::Udp) | None => {}
        Some(_) if payload.is_some() => p.push(
            ErrorCode::InvalidValue,
            &check.path("payload"),
            "payload is for udp (the datagram to send) and dns (the name to query) only",
        ),
        Some(_) => {}
    }
    if p.len() > before {
        return None;
    }
    Some(Some(HealthCheck {
        kind: kind?,
        interval_ms: interval?,
        timeout_ms: timeout?,
        rise: rise?,
        fall: fall?,
        address: addr,
        port,
        http,
        payload,
    }))
}

/// A check of servers that have no port (those of firewall-mark services)
/// must name the port it probes.
pub(super) fn needs_port(check: &HealthCheck, at: &str, p: &mut Problems) {
    if check.probes() && check.port.is_none() {
        p.push(
            ErrorCode::MissingField,
            &super::reader::join_path(at, "port"),
            "port is required here: the servers of a firewall-mark service have no port of \
             their own to probe",
        );
    }
}

/// The request of an http/https check.
fn http(check: &Obj<'_>, p: &mut Problems) -> Option<HttpCheck> {
    // Every field is read even after a bad one: each problem is reported.
    let path = match check.str("path", p) {
        Got::Ok(s) if s.starts_with('/') && !s.chars().any(|c| c.is_whitespace()) => {
            Some(s.to_string())
        }
        Got::Ok(s) => {
            p.push(
                ErrorCode::InvalidValue,
                &check.path("path"),
                format!(
                    "path must start with / and have no spaces, got {}",
                    quoted(s)
                ),
            );
            None
        }
        Got::Absent => Some("/".to_string()),
        Got::Bad => None,
    };
    let method = one_of(check, "method", HTTP_METHODS, p).or("GET");
    let expect = match check.get("expect") {
        None => Some(vec![200]),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut codes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_u64().filter(|c| (100..=599).contains(c)) {
                    Some(c) => codes.push(c as u16),
                    None => p.push(
                        ErrorCode::InvalidValue,
                        &format!("{}[{i}]", check.path("expect")),
                        format!("an HTTP status is 100 to 599, got {}", type_name(item)),
                    ),
                }
            }
            Some(codes)
        }
        Some(other) => {
            p.push(
                ErrorCode::InvalidValue,
                &check.path("expect"),
                format!(
                    "expect must be a non-empty list of HTTP statuses, got {}",
                    type_name(other)
                ),
            );
            None
        }
    };
    let body = check.str("body", p).ok().map(str::to_string);
    let host = check.str("host", p).ok().map(str::to_string);
    Some(HttpCheck {
        method: method?.to_string(),
        path: path?,
        expect: expect?,
        body,
        host,
    })
}

/// Seconds (decimals allowed) as milliseconds, more than 0 and at most an
/// hour; `default` when absent.
fn seconds(obj: &Obj<'_>, name: &str, default: u32, p: &mut Problems) -> Option<u32> {
    match obj.get(name) {
        None => Some(default),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(s) if s > 0.0 && s <= MAX_SECONDS && (s * 1000.0).round() >= 1.0 => {
                Some((s * 1000.0).round() as u32)
            }
            _ => {
                p.push(
                    ErrorCode::InvalidValue,
                    &obj.path(name),
                    format!("{name} is seconds, above 0 and at most 3600, got {n}"),
                );
                None
            }
        },
        Some(other) => {
            p.push(
                ErrorCode::InvalidType,
                &obj.path(name),
                format!(
                    "{name} must be a number of seconds, got {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// `rise` or `fall`: 1 to 100 probes in a row.
fn count(obj: &Obj<'_>, name: &str, default: u32, p: &mut Problems) -> Option<u32> {
    obj.int_in(
        name,
        (1, 100),
        ErrorCode::InvalidValue,
        &format!("{name} is the number of probes in a row that change the state, 1 to 100"),
        p,
    )
    .map(|n| n as u32)
    .or(default)
}

/// `health_policy` of the service `key`: what to do with unhealthy servers.
pub(super) fn health_policy(
    obj: &Obj<'_>,
    key: Option<&ServiceKey>,
    p: &mut Problems,
) -> Option<HealthPolicy> {
    let Some(value) = obj.get("health_policy") else {
        return Some(HealthPolicy::default());
    };
    let before = p.len();
    let policy = object(
        value,
        &obj.path("health_policy"),
        "a health policy",
        POLICY_FIELDS,
        p,
    )?;
    let remove = one_of(
        &policy,
        "unhealthy",
        &[("zero", false), ("remove", true)],
        p,
    )
    .or(false);
    let slow_start = match policy.get("slow_start") {
        None => Some(0),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Some(0),
        Some(_) => seconds(&policy, "slow_start", 0, p),
    };
    let all_down = one_of(
        &policy,
        "all_down",
        &[
            ("fail-open", AllDown::FailOpen),
            ("fallback", AllDown::Fallback),
            ("withdraw", AllDown::Withdraw),
        ],
        p,
    )
    .or(AllDown::FailOpen);
    let fallback_wanted = all_down.map(|a| a == AllDown::Fallback);
    let fallback = match (fallback_wanted, policy.get("fallback")) {
        (Some(true), None) => {
            p.push(
                ErrorCode::MissingField,
                &policy.path("fallback"),
                "all_down: fallback needs fallback, the server that takes the traffic",
            );
            None
        }
        (Some(true), Some(value)) => {
            super::server(value, &policy.path("fallback"), key, None, p).map(Some)
        }
        // An invalid all_down is reported already; whether it wanted a
        // fallback is unknown, so the fallback is not a second problem.
        (None, _) => None,
        (Some(false), Some(_)) => {
            p.push(
                ErrorCode::InvalidValue,
                &policy.path("fallback"),
                "fallback is used only with all_down: fallback",
            );
            None
        }
        (_, None) => Some(None),
    };
    if p.len() > before {
        return None;
    }
    Some(HealthPolicy {
        remove_unhealthy: remove?,
        slow_start_ms: slow_start?,
        fallback: fallback?.map(|d: Destination| d),
        withdraw: all_down? == AllDown::Withdraw,
    })
}

/// `all_down`: what a node does when every probed server of a service is
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AllDown {
    FailOpen,
    Fallback,
    Withdraw,
}
