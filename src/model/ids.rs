//! Resource ids: stable, URL-safe names derived from a service's or real
//! server's identity, both ways. The API names resources by them, and the
//! reconciler and the metrics label by them.
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
//! works; ids produced here are always the canonical form.

use super::{DestKey, Family, Protocol, ServiceKey};
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

/// The service an id names, if it names one.
pub fn service_key(id: &str) -> Option<ServiceKey> {
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

/// The real server an id names, if it names one.
pub fn dest_key(id: &str) -> Option<DestKey> {
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
