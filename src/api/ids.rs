//! Resource ids: stable, URL-safe names derived from a service's or real
//! server's identity, and their parsers.
//!
//! A service id is `{protocol}-{address}-{port}` (`tcp-192.0.2.10-80`) or
//! `fwmark-{family}-{mark}` (`fwmark-ipv4-5`); a server id is
//! `{address}-{port}` (`198.51.100.11-8080`). IPv6 addresses are written in
//! their canonical (RFC 5952) form with `_` for `:` (`tcp-2001_db8__10-80`),
//! so every id is one path segment of unreserved characters that needs no
//! percent-encoding. Ids are derived, never stored: the same service has the
//! same id on every node and after every restart, and there is no id table
//! to keep in step with the state.
//!
//! Parsing is lenient where it cannot be ambiguous — any spelling of the
//! address that names the same one, `:` as well as `_` — so a hand-typed id
//! works; responses always carry the canonical form. Anything that is not an
//! id is a 404, as a URL naming no resource is.

use super::error::{ApiError, ErrorCode};
use crate::model::{DestKey, Family, Protocol, ServiceKey};
use std::net::IpAddr;
use std::str::FromStr;

/// The id of a service.
pub fn service_id(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => format!("{protocol}-{}-{port}", address(addr)),
        ServiceKey::Fwmark { family, mark } => format!("fwmark-{family}-{mark}"),
    }
}

/// The id of a real server within its service.
pub fn server_id(key: &DestKey) -> String {
    format!("{}-{}", address(&key.addr), key.port)
}

/// The service an id names; a 404 error if it names none.
pub fn parse_service_id(id: &str) -> Result<ServiceKey, ApiError> {
    service_key(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no service has the id {id:?}: service ids look like tcp-192.0.2.10-80, \
                 udp-2001_db8__10-53 or fwmark-ipv4-5"
            ),
        )
    })
}

/// The real server an id names; a 404 error if it names none.
pub fn parse_server_id(id: &str) -> Result<DestKey, ApiError> {
    dest_key(id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no server has the id {id:?}: server ids look like 198.51.100.11-8080 or \
                 2001_db8__11-8080"
            ),
        )
    })
}

fn service_key(id: &str) -> Option<ServiceKey> {
    let (head, rest) = id.split_once('-')?;
    if head == "fwmark" {
        let (family, mark) = rest.split_once('-')?;
        let family = match family {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            _ => return None,
        };
        return Some(ServiceKey::Fwmark {
            family,
            mark: number(mark)?,
        });
    }
    let protocol = match head {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return None,
    };
    let (addr, port) = rest.rsplit_once('-')?;
    Some(ServiceKey::Inet {
        protocol,
        addr: parse_address(addr)?,
        port: number(port)?,
    })
}

fn dest_key(id: &str) -> Option<DestKey> {
    let (addr, port) = id.rsplit_once('-')?;
    Some(DestKey {
        addr: parse_address(addr)?,
        port: number(port)?,
    })
}

/// The address as it appears in ids.
fn address(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.to_string().replace(':', "_"),
    }
}

fn parse_address(text: &str) -> Option<IpAddr> {
    // `-` would make the split above ambiguous, `%` (a zone) is not an
    // address IPVS stores; std's parser refuses both anyway.
    IpAddr::from_str(&text.replace('_', ":")).ok()
}

/// Decimal digits only: `u16::from_str` also takes a leading `+`, and one
/// resource should not answer to `+80` and `80` alike.
fn number<T: FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
