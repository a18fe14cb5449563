//! Resource ids: their exact form, what parses, what is a 404, and the
//! round trip for every key.

use super::*;
use crate::api::ids::{parse_server_id, parse_service_id, server_id, service_id};
use proptest::prelude::*;
use std::net::IpAddr;

#[test]
fn service_ids() {
    let udp6 = ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "2001:db8::10".parse().unwrap(),
        port: 53,
    };
    let sctp = ServiceKey::Inet {
        protocol: Protocol::Sctp,
        addr: "::ffff:192.0.2.1".parse().unwrap(),
        port: 0,
    };
    for (key, id) in [
        (tcp("192.0.2.10", 80), "tcp-192.0.2.10-80"),
        (udp6, "udp-2001_db8__10-53"),
        (sctp, "sctp-__ffff_192.0.2.1-0"),
        (fwmark(Family::Ipv4, 5), "fwmark-ipv4-5"),
        (fwmark(Family::Ipv6, u32::MAX), "fwmark-ipv6-4294967295"),
    ] {
        assert_eq!(service_id(&key), id);
        assert_eq!(parse_service_id(id).unwrap(), key, "{id}");
    }
}

#[test]
fn server_ids() {
    for (key, id) in [
        (dkey("198.51.100.11", 8080), "198.51.100.11-8080"),
        (dkey("2001:db8::11", 0), "2001_db8__11-0"),
        (dkey("::", 65535), "__-65535"),
    ] {
        assert_eq!(server_id(&key), id);
        assert_eq!(parse_server_id(id).unwrap(), key, "{id}");
    }
}

#[test]
fn hand_typed_spellings_name_the_same_resource() {
    let key = ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "2001:db8::10".parse().unwrap(),
        port: 80,
    };
    for id in [
        "tcp-2001:db8::10-80",
        "tcp-2001_DB8_0_0_0_0_0_10-80",
        "tcp-2001_db8__10-080",
    ] {
        assert_eq!(parse_service_id(id).unwrap(), key, "{id}");
    }
    assert_eq!(
        parse_server_id("2001:db8::11-8080").unwrap(),
        dkey("2001:db8::11", 8080)
    );
}

#[test]
fn what_is_not_an_id_is_a_404() {
    for id in [
        "",
        "tcp",
        "tcp-",
        "tcp-192.0.2.10",
        "tcp-192.0.2.10-",
        "tcp-192.0.2.10-65536",
        "tcp-192.0.2.10-+80",
        "tcp-192.0.2.10--80",
        "tcp-192.0.2.10-80-1",
        "TCP-192.0.2.10-80",
        "icmp-192.0.2.10-80",
        "tcp-192.0.2-80",
        "tcp-[2001_db8__1]-80",
        "tcp-fe80__1%eth0-80",
        "tcp-www.example.com-80",
        "fwmark-5",
        "fwmark-ipv4",
        "fwmark-ipv4-",
        "fwmark-ipv4-4294967296",
        "fwmark-ipv4--1",
        "fwmark-inet-5",
        "fwmark-ipv4-5-1",
        "192.0.2.10:80",
        "tcp 192.0.2.10 80",
    ] {
        let err = parse_service_id(id).unwrap_err();
        assert_eq!(
            (err.code(), err.status()),
            (ErrorCode::NotFound, 404),
            "{id:?}"
        );
    }
    for id in [
        "",
        "198.51.100.11",
        "198.51.100.11-",
        "-80",
        "198.51.100.11-99999",
        "x-80",
        "198.51.100.11:80",
    ] {
        let err = parse_server_id(id).unwrap_err();
        assert_eq!(err.status(), 404, "{id:?}");
    }
}

fn any_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn any_service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            any_addr(),
            any::<u16>()
        )
            .prop_map(|(protocol, addr, port)| ServiceKey::Inet {
                protocol,
                addr,
                port
            }),
        (
            prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)],
            any::<u32>()
        )
            .prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
    ]
}

/// Characters that need no percent-encoding in a path segment (RFC 3986
/// unreserved).
fn url_safe(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

proptest! {
    #[test]
    fn service_ids_round_trip(key in any_service_key()) {
        let id = service_id(&key);
        prop_assert!(url_safe(&id), "{}", id);
        prop_assert_eq!(parse_service_id(&id).unwrap(), key);
    }

    #[test]
    fn server_ids_round_trip(addr in any_addr(), port in any::<u16>()) {
        let key = DestKey { addr, port };
        let id = server_id(&key);
        prop_assert!(url_safe(&id), "{}", id);
        prop_assert_eq!(parse_server_id(&id).unwrap(), key);
    }

    #[test]
    fn id_parsers_never_panic(text in "\\PC{0,60}") {
        let _ = parse_service_id(&text);
        let _ = parse_server_id(&text);
    }

    #[test]
    fn distinct_keys_have_distinct_ids(a in any_service_key(), b in any_service_key()) {
        prop_assert_eq!(a == b, service_id(&a) == service_id(&b));
    }
}
