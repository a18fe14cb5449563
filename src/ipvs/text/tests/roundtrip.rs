//! Property tests: `parse_restore(save(table))` rebuilds any table ipvsadm can
//! express, and neither the parser nor the printers panic on any input.

use super::super::{list, parse_command, parse_restore, save, ListOptions};
use super::print::INFO;
use crate::ipvs::Change;
use crate::model::{
    DestEntry, Destination, Family, Forward, Netmask, Persistence, Protocol, Scheduler,
    ServiceEntry, ServiceFlags, ServiceKey, Stats, Tunnel, TunnelChecksum, TunnelType,
    VirtualService,
};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Ipv4), Just(Family::Ipv6)]
}

fn addr(family: Family) -> BoxedStrategy<IpAddr> {
    match family {
        Family::Ipv4 => any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed(),
        // Mostly-zero groups too, so that "::" and embedded IPv4 forms appear.
        Family::Ipv6 => prop::array::uniform8(prop_oneof![Just(0u16), Just(0xffff), any::<u16>()])
            .prop_map(|g| IpAddr::V6(Ipv6Addr::from(g)))
            .boxed(),
    }
}

fn key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        3 => (
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)],
            family().prop_flat_map(addr),
            prop_oneof![Just(0u16), any::<u16>()],
        )
            .prop_map(|(protocol, addr, port)| ServiceKey::Inet { protocol, addr, port }),
        1 => (family(), 1..=u32::MAX).prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
    ]
}

fn netmask(family: Family) -> BoxedStrategy<Netmask> {
    match family {
        Family::Ipv4 => prop_oneof![
            Just(Netmask::host(Family::Ipv4)),
            any::<u32>().prop_map(|m| Netmask::V4(Ipv4Addr::from(m))),
        ]
        .boxed(),
        Family::Ipv6 => (1u8..=128).prop_map(Netmask::V6).boxed(),
    }
}

fn service() -> impl Strategy<Value = VirtualService> {
    key().prop_flat_map(|key| {
        let needs_persistence = matches!(key, ServiceKey::Inet { port: 0, .. });
        let persistence = (
            any::<bool>(),
            1..=super::super::parse::MAX_TIMEOUT,
            netmask(key.family()),
        )
            .prop_map(move |(on, timeout, netmask)| {
                (on || needs_persistence).then_some(Persistence { timeout, netmask })
            });
        let ops_allowed = matches!(
            key,
            ServiceKey::Fwmark { .. }
                | ServiceKey::Inet {
                    protocol: Protocol::Udp,
                    ..
                }
        );
        (
            prop::sample::select(Scheduler::KNOWN),
            0u32..8,
            any::<bool>(),
            persistence,
            prop::option::of(Just("sip".to_string())),
        )
            .prop_map(move |(sched, sched_bits, ops, persistence, pe_name)| {
                let mut flags = ServiceFlags::default().with(sched_bits << 3);
                if ops && ops_allowed {
                    flags = flags.with(ServiceFlags::ONE_PACKET);
                }
                VirtualService {
                    key,
                    scheduler: Scheduler::new(sched).unwrap_or_default(),
                    flags,
                    persistence,
                    pe_name,
                }
            })
    })
}

fn forward() -> impl Strategy<Value = Forward> {
    let tunnel = prop_oneof![
        Just(Tunnel {
            kind: TunnelType::Ipip,
            port: 0,
            checksum: TunnelChecksum::None
        }),
        (
            1..=u16::MAX,
            prop_oneof![
                Just(TunnelChecksum::None),
                Just(TunnelChecksum::Csum),
                Just(TunnelChecksum::RemCsum)
            ],
        )
            .prop_map(|(port, checksum)| Tunnel {
                kind: TunnelType::Gue,
                port,
                checksum
            }),
        prop_oneof![Just(TunnelChecksum::None), Just(TunnelChecksum::Csum)].prop_map(|checksum| {
            Tunnel {
                kind: TunnelType::Gre,
                port: 0,
                checksum,
            }
        }),
    ];
    prop_oneof![
        Just(Forward::Masq),
        Just(Forward::Route),
        tunnel.prop_map(Forward::Tunnel),
    ]
}

/// A destination ipvsadm could have added to `service`.
fn destination(service: ServiceKey) -> impl Strategy<Value = Destination> {
    (
        forward(),
        any::<bool>(),
        any::<u16>(),
        0..=i32::MAX as u32,
        0..=i32::MAX as u32,
        0..=i32::MAX as u32,
    )
        .prop_flat_map(move |(forward, other_family, port, weight, upper, lower)| {
            let tunnel = matches!(forward, Forward::Tunnel(_));
            let family = match (tunnel && other_family, service.family()) {
                (false, f) => f,
                (true, Family::Ipv4) => Family::Ipv6,
                (true, Family::Ipv6) => Family::Ipv4,
            };
            // ipvsadm forces the service port on routed and tunnelled
            // destinations of address services.
            let port = match service {
                ServiceKey::Inet {
                    port: service_port, ..
                } if forward != Forward::Masq => service_port,
                _ => port,
            };
            addr(family).prop_map(move |addr| Destination {
                addr,
                port,
                forward,
                weight,
                upper_threshold: upper,
                lower_threshold: lower,
            })
        })
}

fn entry() -> impl Strategy<Value = ServiceEntry> {
    service().prop_flat_map(|service| {
        prop::collection::vec(destination(service.key), 0..5).prop_map(move |dests| {
            let mut destinations: Vec<DestEntry> = Vec::new();
            for d in dests {
                if destinations.iter().all(|e| e.dest.key() != d.key()) {
                    destinations.push(DestEntry::new(d));
                }
            }
            ServiceEntry {
                service: service.clone(),
                stats: Stats::default(),
                destinations,
            }
        })
    })
}

fn table() -> impl Strategy<Value = Vec<ServiceEntry>> {
    prop::collection::vec(entry(), 0..8).prop_map(|entries| {
        let mut table: Vec<ServiceEntry> = Vec::new();
        for e in entries {
            if table.iter().all(|t| t.service.key != e.service.key) {
                table.push(e);
            }
        }
        table
    })
}

/// Applies restored changes to an empty table, as the kernel would.
fn rebuild(
    changes: Vec<(usize, Change)>,
) -> Result<Vec<(VirtualService, Vec<Destination>)>, String> {
    let mut table: Vec<(VirtualService, Vec<Destination>)> = Vec::new();
    for (line, change) in changes {
        match change {
            Change::AddService(s) => table.push((s, Vec::new())),
            Change::AddDest(key, d) => match table.iter_mut().find(|(s, _)| s.key == key) {
                Some((_, dests)) => dests.push(d),
                None => return Err(format!("line {line}: destination before its service")),
            },
            other => return Err(format!("line {line}: unexpected change {other:?}")),
        }
    }
    Ok(table)
}

proptest! {
    #[test]
    fn save_then_restore_rebuilds_the_table(table in table()) {
        let text = save(&table);
        let changes = parse_restore(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let rebuilt = rebuild(changes).map_err(TestCaseError::fail)?;
        prop_assert_eq!(rebuilt.len(), table.len(), "{}", text);
        for entry in &table {
            let found = rebuilt.iter().find(|(s, _)| s.key == entry.service.key);
            let Some((service, dests)) = found else {
                return Err(TestCaseError::fail(format!("{} lost\n{text}", entry.service.key)));
            };
            prop_assert_eq!(service, &entry.service, "{}", text);
            let mut want: Vec<Destination> = entry.destinations.iter().map(|d| d.dest).collect();
            let mut got = dests.clone();
            want.sort_by_key(Destination::key);
            got.sort_by_key(Destination::key);
            prop_assert_eq!(got, want, "{}", text);
        }
    }

    #[test]
    fn printers_never_panic(
        table in table(),
        stats in prop::array::uniform10(any::<u64>()),
        odd in prop::sample::select(vec![Forward::Local, Forward::Bypass, Forward::Masq]),
        mode in 0usize..6,
        exact in any::<bool>(),
    ) {
        let mut table = table;
        let [a, b, c, d, e, f, g, h, i, j] = stats;
        let stats = Stats { conns: a, inpkts: b, outpkts: c, inbytes: d, outbytes: e, cps: f, inpps: g, outpps: h, inbps: i, outbps: j };
        for entry in &mut table {
            entry.stats = stats;
            for d in &mut entry.destinations {
                d.stats = stats;
                d.active_conns = a as u32;
                if d.dest.weight % 3 == 0 {
                    d.dest.forward = odd;
                }
            }
        }
        let opts = ListOptions {
            stats: mode == 1,
            rate: mode == 2,
            thresholds: mode == 3,
            persistent_conn: mode == 4,
            tun_info: mode == 5,
            exact,
        };
        let listing = list(&INFO, &table, &opts);
        // Header, two title lines, one line per service and destination.
        let lines = 3 + table.iter().map(|e| 1 + e.destinations.len()).sum::<usize>();
        prop_assert_eq!(listing.lines().count(), lines);
        let _ = save(&table);
    }

    #[test]
    fn parser_never_panics(words in prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "-A", "-E", "-D", "-a", "-e", "-d", "-C", "-Z", "--set", "-t", "-u", "-f", "-6",
                "-s", "-p", "-M", "-r", "-m", "-g", "-i", "-w", "-x", "-y", "-b", "--pe", "-o",
                "--tun-type", "--tun-port", "--tun-csum", "gue", "sh", "sh-port", "10.0.0.1:80",
                "[::1]:80", "::1", "64", "255.255.255.0", "--", "-", "0",
            ]).prop_map(str::to_string),
            ".{0,12}",
        ],
        0..10,
    )) {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let _ = parse_command(&words);
        let _ = parse_restore(&words.join(" "));
    }
}
