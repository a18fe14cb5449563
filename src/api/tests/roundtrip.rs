//! Property tests: every valid service survives view → JSON → validation
//! unchanged (so views and validators agree on every field), and no input
//! makes a parser panic.

use super::*;
use crate::api::validate::{
    parse_config, parse_join, parse_server_create, parse_server_patch, parse_service_create,
    parse_service_patch, parse_service_replace,
};
use crate::api::view::{service_request, service_view};
use crate::model::{
    Forward, Netmask, Persistence, Scheduler, ServiceFlags, ServiceSpec, Tunnel, TunnelChecksum,
    TunnelType,
};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn v4() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 4]>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("kernel-refused", |a| {
            a.octets()[0] != 0 && !a.is_broadcast() && !a.is_multicast()
        })
        .prop_map(IpAddr::V4)
}

fn v6() -> impl Strategy<Value = IpAddr> {
    any::<[u8; 16]>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("kernel-refused", |a| {
            !a.is_unspecified()
                && !a.is_multicast()
                && a.segments()[0] & 0xffc0 != 0xfe80
                && a.to_ipv4_mapped().is_none()
        })
        .prop_map(IpAddr::V6)
}

fn key() -> impl Strategy<Value = ServiceKey> {
    let protocol = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    prop_oneof![
        (protocol, prop_oneof![v4(), v6()], 0..=u16::MAX).prop_map(|(protocol, addr, port)| {
            ServiceKey::Inet {
                protocol,
                addr,
                port,
            }
        }),
        (any::<bool>(), 1..=u32::MAX).prop_map(|(v6, mark)| ServiceKey::Fwmark {
            family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
            mark,
        }),
    ]
}

fn forward() -> impl Strategy<Value = Forward> {
    let tunnel = prop_oneof![
        Just((TunnelType::Ipip, 0u16, TunnelChecksum::None)),
        (1..=u16::MAX, 0..3u16).prop_map(|(port, c)| (
            TunnelType::Gue,
            port,
            TunnelChecksum::from_code(c).unwrap_or_default()
        )),
        (0..2u16).prop_map(|c| (
            TunnelType::Gre,
            0,
            TunnelChecksum::from_code(c).unwrap_or_default()
        )),
    ];
    prop_oneof![
        Just(Forward::Masq),
        Just(Forward::Route),
        tunnel.prop_map(|(kind, port, checksum)| Forward::Tunnel(Tunnel {
            kind,
            port,
            checksum
        })),
    ]
}

/// A server valid for a service of `family`.
fn server(family: Family) -> impl Strategy<Value = Destination> {
    (
        any::<bool>(),
        v4(),
        v6(),
        any::<u16>(),
        forward(),
        0..=i32::MAX as u32,
        0..=crate::model::rules::MAX_THRESHOLD,
        0..=crate::model::rules::MAX_THRESHOLD,
    )
        .prop_map(move |(other, a4, a6, port, forward, weight, t1, t2)| {
            // The other family only with tunnel forwarding.
            let other = other && matches!(forward, Forward::Tunnel(_));
            let addr = match (family, other) {
                (Family::Ipv4, false) | (Family::Ipv6, true) => a4,
                _ => a6,
            };
            Destination {
                addr,
                port,
                forward,
                weight,
                upper_threshold: t1.max(t2),
                lower_threshold: t1.min(t2),
            }
        })
}

fn spec() -> impl Strategy<Value = ServiceSpec> {
    key().prop_flat_map(|key| {
        let family = key.family();
        let netmask = match family {
            // Prefix masks: the API refuses one with holes.
            Family::Ipv4 => (0..=32u32)
                .prop_map(|prefix| {
                    Netmask::V4(Ipv4Addr::from(
                        u32::MAX.checked_shl(32 - prefix).unwrap_or(0),
                    ))
                })
                .boxed(),
            Family::Ipv6 => (1..=128u8).prop_map(Netmask::V6).boxed(),
        };
        (
            Just(key),
            prop::sample::select(Scheduler::KNOWN),
            proptest::option::of((1..=2_678_400u32, netmask)),
            any::<(bool, bool, bool, bool)>(),
            prop::collection::vec(server(family), 0..6),
        )
            .prop_map(|(key, sched, persistence, (one, s1, s2, pe), servers)| {
                let mut service = VirtualService::new(key);
                service.scheduler = Scheduler::new(sched).unwrap();
                service.persistence =
                    persistence.map(|(timeout, netmask)| Persistence { timeout, netmask });
                // Port 0 only with persistence.
                if let ServiceKey::Inet { port: 0, .. } = key {
                    if service.persistence.is_none() {
                        service.persistence = Some(Persistence {
                            timeout: 360,
                            netmask: Netmask::host(key.family()),
                        });
                    }
                }
                let udp_or_fwmark = !matches!(
                    key,
                    ServiceKey::Inet {
                        protocol: Protocol::Tcp | Protocol::Sctp,
                        ..
                    }
                );
                if one && udp_or_fwmark {
                    service.flags = service.flags.with(ServiceFlags::ONE_PACKET);
                }
                if matches!(sched, "sh" | "mh") {
                    if s1 {
                        service.flags = service.flags.with(ServiceFlags::SCHED1);
                    }
                    if s2 {
                        service.flags = service.flags.with(ServiceFlags::SCHED2);
                    }
                }
                if pe && service.persistence.is_some() {
                    service.pe_name = Some("sip".into());
                }
                // One server per address and port, sorted as views sort.
                let servers: BTreeMap<_, _> = servers.into_iter().map(|d| (d.key(), d)).collect();
                ServiceSpec {
                    server_checks: Default::default(),
                    options: Default::default(),
                    service,
                    servers: servers.into_values().collect(),
                }
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_valid_service_survives_the_round_trip(spec in spec()) {
        // As a client would POST it.
        let body = serde_json::to_vec(&service_request(&spec)).unwrap();
        let parsed = parse_service_create(&body);
        prop_assert_eq!(parsed.as_ref().ok(), Some(&spec), "{:?}", parsed.as_ref().err());
        // As GET shows it, sent back with PUT, and patched with nothing.
        let cfg = config(spec.service.clone(), &spec.servers, 9);
        let view = serde_json::to_vec(&service_view(&cfg)).unwrap();
        prop_assert_eq!(parse_service_replace(&view, &cfg).ok(), Some((spec.service.clone(), spec.options.clone())));
        prop_assert_eq!(parse_service_patch(b"{}", &cfg).ok(), Some((spec.service.clone(), spec.options)));
        // Each server on its own.
        for d in &spec.servers {
            let one = serde_json::to_vec(&crate::api::view::server_view(d, None)).unwrap();
            prop_assert_eq!(parse_server_create(&one, &spec.service.key).ok(), Some((*d, None)));
            prop_assert_eq!(parse_server_patch(b"{}", &spec.service.key, d, None).ok(), Some((*d, None)));
        }
    }

    #[test]
    fn no_bytes_make_a_parser_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let key = tcp("192.0.2.10", 80);
        let cfg = config(VirtualService::new(key), &[dest("198.51.100.1", 80)], 1);
        let _ = parse_service_create(&bytes);
        let _ = parse_service_replace(&bytes, &cfg);
        let _ = parse_service_patch(&bytes, &cfg);
        let _ = parse_server_create(&bytes, &key);
        let _ = parse_server_patch(&bytes, &key, &dest("198.51.100.1", 80), None);
        let _ = parse_config(&bytes);
        let _ = parse_join(&bytes);
    }

    #[test]
    fn no_json_makes_a_parser_panic(value in json_value()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let key = fwmark(Family::Ipv6, 3);
        let cfg = config(VirtualService::new(key), &[dest("2001:db8::1", 0)], 1);
        let _ = parse_service_create(&bytes);
        let _ = parse_service_patch(&bytes, &cfg);
        let _ = parse_server_patch(&bytes, &key, &dest("2001:db8::1", 0), None);
        let _ = parse_config(&bytes);
        // Every refusal is a 4xx with a code and a message.
        if let Err(e) = parse_service_patch(&bytes, &cfg) {
            prop_assert!((400..500).contains(&e.status()), "{}", e);
            prop_assert!(!e.message().is_empty());
        }
    }
}

/// JSON values made of the API's own field names and plausible values, so
/// that the generator reaches the validators' rules, not only "unknown
/// field".
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let names = prop::sample::select(
        [
            "protocol",
            "address",
            "port",
            "fwmark",
            "family",
            "scheduler",
            "persistence",
            "timeout",
            "netmask",
            "flags",
            "pe",
            "servers",
            "weight",
            "forward",
            "upper_threshold",
            "lower_threshold",
            "tunnel",
            "type",
            "checksum",
            "id",
            "revision",
            "services",
        ]
        .as_slice(),
    );
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0..70000i64).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            [
                "tcp",
                "udp",
                "sctp",
                "192.0.2.10",
                "2001:db8::1",
                "ipv4",
                "ipv6",
                "sh",
                "mh",
                "wlc",
                "sh-port",
                "one-packet",
                "sip",
                "masq",
                "dr",
                "tunnel",
                "gue",
                "gre",
                "ipip",
                "csum",
                "remcsum",
                "255.255.255.0",
                "",
                "x",
            ]
            .as_slice()
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(names.clone(), inner, 0..8).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
