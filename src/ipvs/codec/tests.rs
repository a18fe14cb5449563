//! Codec tests: byte layouts of the traps (byte order per attribute), round
//! trips of every change, and arbitrary bytes that must never panic.

use super::*;
use crate::ipvs::{Change, Timeouts};
use crate::model::*;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: addr.parse().unwrap(),
        port,
    }
}

/// Finds the raw value of the first attribute of `kind` in `buf`.
fn raw_attr(buf: &[u8], kind: u16) -> Vec<u8> {
    NlasIterator::new(buf)
        .map(|n| n.unwrap())
        .find(|n| n.kind() == kind)
        .map(|n| n.value().to_vec())
        .unwrap_or_else(|| panic!("attribute {kind} missing"))
}

#[test]
fn service_request_byte_order() {
    let mut svc = VirtualService::new(tcp("10.1.2.3", 8080));
    svc.persistence = Some(Persistence {
        timeout: 3600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    let bytes = change_request(&Change::AddService(svc)).attrs_bytes();
    let nested = raw_attr(&bytes, 1);
    assert_eq!(raw_attr(&nested, 1), 2u16.to_ne_bytes(), "AF native");
    assert_eq!(raw_attr(&nested, 2), 6u16.to_ne_bytes(), "protocol native");
    let mut addr = vec![10, 1, 2, 3];
    addr.resize(16, 0);
    assert_eq!(raw_attr(&nested, 3), addr, "16-byte address, network order");
    assert_eq!(raw_attr(&nested, 4), [0x1f, 0x90], "port big-endian");
    assert_eq!(raw_attr(&nested, 6), b"wlc\0", "scheduler NUL-terminated");
    let mut flags = 1u32.to_ne_bytes().to_vec();
    flags.extend_from_slice(&u32::MAX.to_ne_bytes());
    assert_eq!(
        raw_attr(&nested, 7),
        flags,
        "persistent flag with full mask"
    );
    assert_eq!(
        raw_attr(&nested, 8),
        3600u32.to_ne_bytes(),
        "timeout native"
    );
    assert_eq!(
        raw_attr(&nested, 9),
        [255, 255, 255, 0],
        "IPv4 netmask in network order"
    );
}

#[test]
fn fwmark_and_ipv6_netmask_are_native() {
    let mut svc = VirtualService::new(ServiceKey::Fwmark {
        family: Family::Ipv6,
        mark: 0x01020304,
    });
    svc.persistence = Some(Persistence {
        timeout: 60,
        netmask: Netmask::V6(64),
    });
    let bytes = change_request(&Change::AddService(svc)).attrs_bytes();
    let nested = raw_attr(&bytes, 1);
    assert_eq!(raw_attr(&nested, 1), 10u16.to_ne_bytes());
    assert_eq!(raw_attr(&nested, 5), 0x01020304u32.to_ne_bytes());
    assert_eq!(raw_attr(&nested, 9), 64u32.to_ne_bytes());
}

#[test]
fn dest_request_byte_order() {
    let dest = Destination {
        addr: "2001:db8::7".parse().unwrap(),
        port: 443,
        forward: Forward::Tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 6080,
            checksum: TunnelChecksum::RemCsum,
        }),
        weight: 70000,
        upper_threshold: 10,
        lower_threshold: 5,
    };
    let bytes = change_request(&Change::AddDest(tcp("10.0.0.1", 443), dest)).attrs_bytes();
    let nested = raw_attr(&bytes, 2);
    assert_eq!(raw_attr(&nested, 11), 10u16.to_ne_bytes(), "dest family");
    assert_eq!(
        raw_attr(&nested, 2),
        443u16.to_be_bytes(),
        "port big-endian"
    );
    assert_eq!(
        raw_attr(&nested, 3),
        2u32.to_ne_bytes(),
        "tunnel forwarding"
    );
    assert_eq!(
        raw_attr(&nested, 4),
        70000u32.to_ne_bytes(),
        "weight is a native u32"
    );
    assert_eq!(raw_attr(&nested, 13), [1], "gue");
    assert_eq!(
        raw_attr(&nested, 14),
        6080u16.to_be_bytes(),
        "tunnel port big-endian"
    );
    assert_eq!(raw_attr(&nested, 15), 2u16.to_ne_bytes(), "remcsum native");
    assert_eq!(raw_attr(&nested, 5), 10u32.to_ne_bytes());
    assert_eq!(raw_attr(&nested, 6), 5u32.to_ne_bytes());
}

fn sample_changes() -> Vec<Change> {
    let mut svc = VirtualService::new(tcp("192.0.2.1", 80));
    svc.scheduler = Scheduler::new("sh").unwrap();
    svc.flags = ServiceFlags::default()
        .with(ServiceFlags::SCHED1)
        .with(ServiceFlags::ONE_PACKET);
    svc.pe_name = Some("sip".into());
    let key = svc.key;
    let dest = Destination::new("192.0.2.10".parse().unwrap(), 8080);
    vec![
        Change::AddService(svc.clone()),
        Change::EditService(svc),
        Change::DelService(key),
        Change::AddDest(key, dest),
        Change::EditDest(key, dest),
        Change::DelDest(key, dest.key()),
        Change::Flush,
        Change::Zero(None),
        Change::Zero(Some(key)),
        Change::SetTimeouts(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }),
    ]
}

#[test]
fn every_request_decodes_to_itself() {
    for change in sample_changes() {
        let msg = change_request(&change);
        let decoded = IpvsMessage::decode(msg.cmd, &msg.attrs_bytes()).unwrap();
        assert_eq!(decoded, msg, "{change}");
    }
}

#[test]
fn requests_carry_the_right_command() {
    let cmds: Vec<u8> = sample_changes()
        .iter()
        .map(|c| change_request(c).cmd.into())
        .collect();
    assert_eq!(cmds, [1, 2, 3, 5, 6, 7, 17, 16, 16, 12]);
}

/// A NEW_SERVICE reply as the kernel builds it (ip_vs_genl_fill_service):
/// 16-byte address, hashed flag set, stats with padding attributes.
fn kernel_style_service_reply() -> Vec<u8> {
    let stats = vec![
        StatsAttr::U32(StatsField::Conns, 7),
        StatsAttr::U32(StatsField::InPkts, 70),
        StatsAttr::U32(StatsField::OutPkts, 60),
        StatsAttr::U64(StatsField::InBytes, 7000),
        StatsAttr::U64(StatsField::OutBytes, 6000),
    ];
    let mut stats64: Vec<StatsAttr> = vec![StatsAttr::Other(netlink_packet_core::DefaultNla::new(
        11,
        vec![],
    ))];
    stats64.extend(stats.iter().map(|s| match s {
        StatsAttr::U32(f, v) => StatsAttr::U64(*f, u64::from(*v)),
        other => other.clone(),
    }));
    let mut addr = vec![0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let msg = IpvsMessage::new(
        IpvsCmd::NewService,
        vec![IpvsAttr::Service(vec![
            ServiceAttr::Af(2),
            ServiceAttr::Protocol(17),
            ServiceAttr::Addr(addr),
            ServiceAttr::Port(53),
            ServiceAttr::SchedName("rr".into()),
            ServiceAttr::Flags(FlagsValue {
                flags: 0x2 | 0x1,
                mask: u32::MAX,
            }),
            ServiceAttr::Timeout(300),
            ServiceAttr::Netmask(u32::from_ne_bytes([255, 255, 0, 0])),
            ServiceAttr::Stats(stats),
            ServiceAttr::Stats64(stats64),
            ServiceAttr::Other(netlink_packet_core::DefaultNla::new(99, vec![1, 2, 3])),
        ])],
    );
    msg.attrs_bytes()
}

#[test]
fn reply_decodes_to_the_model_and_emits_back_identically() {
    let bytes = kernel_style_service_reply();
    let msg = IpvsMessage::decode(IpvsCmd::NewService, &bytes).unwrap();
    assert_eq!(
        msg.attrs_bytes(),
        bytes,
        "unknown attribute and padding survive"
    );
    let entry = service_entry(msg.service().unwrap()).unwrap();
    assert_eq!(
        entry.service.key,
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port: 53
        }
    );
    assert!(
        entry.service.flags.is_empty(),
        "hashed bit is not a setting"
    );
    assert_eq!(
        entry.service.persistence,
        Some(Persistence {
            timeout: 300,
            netmask: Netmask::V4(Ipv4Addr::new(255, 255, 0, 0))
        })
    );
    assert_eq!(entry.stats.conns, 7);
    assert_eq!(entry.stats.outbytes, 6000);
}

#[test]
fn ipv6_dest_reply() {
    let addr: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let attrs = vec![
        DestAttr::Addr(addr.octets().to_vec()),
        DestAttr::Port(80),
        DestAttr::FwdMethod(3),
        DestAttr::Weight(0),
        DestAttr::UpperThreshold(0),
        DestAttr::LowerThreshold(0),
        DestAttr::ActiveConns(4),
        DestAttr::InactiveConns(2),
        DestAttr::PersistentConns(1),
        DestAttr::AddrFamily(10),
    ];
    let entry = dest_entry(&attrs, Family::Ipv4).unwrap();
    assert_eq!(entry.dest.addr, IpAddr::V6(addr));
    assert_eq!(entry.dest.forward, Forward::Route);
    assert_eq!(entry.dest.weight, 0);
    assert_eq!(
        (
            entry.active_conns,
            entry.inactive_conns,
            entry.persistent_conns
        ),
        (4, 2, 1)
    );
}

#[test]
fn short_attributes_are_typed_errors() {
    // A service nest whose port attribute has 1 byte instead of 2.
    let bad_port = [12u8, 0, 1, 0, 5, 0, 4, 0, 0x50, 0, 0, 0];
    match IpvsMessage::decode(IpvsCmd::NewService, &bad_port) {
        Err(DecodeError::Length {
            attr,
            expected: 2,
            got: 1,
        }) => assert_eq!(attr, "service port"),
        other => panic!("unexpected {other:?}"),
    }
    // An attribute header claiming more bytes than there are.
    let truncated = [40u8, 0, 1, 0, 1, 2];
    assert!(matches!(
        IpvsMessage::decode(IpvsCmd::NewService, &truncated),
        Err(DecodeError::Nla { .. })
    ));
    assert!(matches!(
        IpvsMessage::decode_genl(&[1, 1]),
        Err(DecodeError::ShortHeader(2))
    ));
}

#[test]
fn info_reply_uses_its_own_attribute_space() {
    let msg = IpvsMessage::new(
        IpvsCmd::SetInfo,
        vec![IpvsAttr::Version(0x010201), IpvsAttr::ConnTabSize(4096)],
    );
    let decoded = IpvsMessage::decode(IpvsCmd::SetInfo, &msg.attrs_bytes()).unwrap();
    assert_eq!(decoded, msg);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// Arbitrary bytes in any command's attribute space: an error or a
    /// message, never a panic; whatever decodes emits and decodes again to
    /// the same message.
    #[test]
    fn arbitrary_bytes_never_panic(cmd in 0u8..20, bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(msg) = IpvsMessage::decode(IpvsCmd::from(cmd), &bytes) {
            let again = IpvsMessage::decode(msg.cmd, &msg.attrs_bytes()).unwrap();
            prop_assert_eq!(again, msg.clone());
            if let Some(s) = msg.service() {
                let _ = service_entry(s);
            }
            if let Some(d) = msg.dest() {
                let _ = dest_entry(d, Family::Ipv4);
                let _ = dest_entry(d, Family::Ipv6);
            }
        }
    }

    /// Well-formed nests with random attribute kinds and values exercise the
    /// typed parsers rather than the outer framing.
    #[test]
    fn random_attributes_in_valid_framing(
        outer in 1u16..8,
        inner in proptest::collection::vec((0u16..20, proptest::collection::vec(any::<u8>(), 0..24)), 0..12),
    ) {
        let nested: Vec<netlink_packet_core::DefaultNla> = inner.into_iter().map(|(k, v)| netlink_packet_core::DefaultNla::new(k, v)).collect();
        let mut inner_bytes = vec![0; nested.as_slice().buffer_len()];
        nested.as_slice().emit(&mut inner_bytes);
        let outer_nla = [netlink_packet_core::DefaultNla::new(outer, inner_bytes)];
        let mut bytes = vec![0; outer_nla.as_slice().buffer_len()];
        outer_nla.as_slice().emit(&mut bytes);
        for cmd in [IpvsCmd::NewService, IpvsCmd::NewDest, IpvsCmd::NewDaemon, IpvsCmd::SetInfo] {
            if let Ok(msg) = IpvsMessage::decode(cmd, &bytes) {
                prop_assert_eq!(IpvsMessage::decode(cmd, &msg.attrs_bytes()).unwrap(), msg.clone());
                if let Some(s) = msg.service() { let _ = service_entry(s); }
                if let Some(d) = msg.dest() { let _ = dest_entry(d, Family::Ipv6); }
            }
        }
    }
}

/// Replies captured from a real 6.1 kernel by the real-kernel rig
/// (tests/kernel/capture.rs, which also checks they are still current).
const CAPTURES: &str = include_str!("../../../tests/data/captures/replies.hex");

fn captured(section: &str) -> Vec<Vec<u8>> {
    let mut lines = CAPTURES
        .lines()
        .skip_while(|l| *l != format!("[{section}]"));
    assert!(lines.next().is_some(), "section {section} missing");
    lines
        .take_while(|l| !l.starts_with('['))
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

/// Decodes one captured payload and checks it emits back byte for byte.
fn decode_captured(payload: &[u8]) -> IpvsMessage {
    let msg = IpvsMessage::decode_genl(payload).unwrap();
    let mut emitted = vec![u8::from(msg.cmd), IPVS_GENL_VERSION, 0, 0];
    emitted.extend(msg.attrs_bytes());
    assert_eq!(emitted, payload, "emit == captured for {:?}", msg.cmd);
    msg
}

#[test]
fn captured_service_replies() {
    let mut got: Vec<VirtualService> = captured("get_service_dump")
        .iter()
        .map(|p| {
            let msg = decode_captured(p);
            assert_eq!(msg.cmd, IpvsCmd::NewService);
            service_entry(msg.service().unwrap()).unwrap().service
        })
        .collect();
    got.sort_by_key(|s| s.key);
    let mut web = VirtualService::new(tcp("10.80.0.1", 80));
    web.scheduler = Scheduler::new("wrr").unwrap();
    web.persistence = Some(Persistence {
        timeout: 3600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    let mut dns = VirtualService::new(ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "2001:db8:80::1".parse().unwrap(),
        port: 53,
    });
    dns.scheduler = Scheduler::new("sh").unwrap();
    dns.flags = ServiceFlags::default()
        .with(ServiceFlags::SCHED1)
        .with(ServiceFlags::SCHED2)
        .with(ServiceFlags::ONE_PACKET);
    let mut fwm = VirtualService::new(ServiceKey::Fwmark {
        family: Family::Ipv6,
        mark: 9,
    });
    fwm.scheduler = Scheduler::new("rr").unwrap();
    fwm.persistence = Some(Persistence {
        timeout: 60,
        netmask: Netmask::V6(64),
    });
    let mut sip = VirtualService::new(ServiceKey::Inet {
        protocol: Protocol::Udp,
        addr: "10.80.0.2".parse().unwrap(),
        port: 5060,
    });
    sip.scheduler = Scheduler::new("rr").unwrap();
    sip.persistence = Some(Persistence {
        timeout: 120,
        netmask: Netmask::host(Family::Ipv4),
    });
    sip.pe_name = Some("sip".into());
    let mut want = vec![web.clone(), dns, fwm, sip];
    want.sort_by_key(|s| s.key);
    assert_eq!(got, want);

    let single = captured("get_service");
    assert_eq!(single.len(), 1);
    let msg = decode_captured(&single[0]);
    assert_eq!(service_entry(msg.service().unwrap()).unwrap().service, web);
}

#[test]
fn captured_dest_replies() {
    let mut got: Vec<DestEntry> = captured("get_dest_dump")
        .iter()
        .map(|p| {
            let msg = decode_captured(p);
            assert_eq!(msg.cmd, IpvsCmd::NewDest);
            dest_entry(msg.dest().unwrap(), Family::Ipv4).unwrap()
        })
        .collect();
    got.sort_by_key(|d| d.dest.key());
    let tunnel = |kind, port, checksum| {
        Forward::Tunnel(Tunnel {
            kind,
            port,
            checksum,
        })
    };
    let want = vec![
        Destination {
            forward: Forward::Masq,
            weight: 3,
            upper_threshold: 100,
            lower_threshold: 10,
            ..Destination::new("10.81.0.1".parse().unwrap(), 8080)
        },
        Destination {
            forward: tunnel(TunnelType::Gue, 6080, TunnelChecksum::Csum),
            ..Destination::new("10.81.0.2".parse().unwrap(), 80)
        },
        Destination {
            forward: tunnel(TunnelType::Ipip, 0, TunnelChecksum::None),
            weight: 0,
            ..Destination::new("2001:db8:81::1".parse().unwrap(), 80)
        },
    ];
    assert_eq!(got.iter().map(|d| d.dest).collect::<Vec<_>>(), want);
    assert!(got
        .iter()
        .all(|d| d.active_conns == 0 && d.stats == Stats::default()));
}

#[test]
fn captured_info_config_and_daemon_replies() {
    let info = decode_captured(&captured("get_info")[0]);
    assert_eq!(info.cmd, IpvsCmd::SetInfo);
    assert_eq!(
        info.attrs,
        vec![IpvsAttr::Version(0x010201), IpvsAttr::ConnTabSize(4096)]
    );

    let config = decode_captured(&captured("get_config")[0]);
    assert_eq!(
        config.attrs,
        vec![
            IpvsAttr::TimeoutTcp(900),
            IpvsAttr::TimeoutTcpFin(120),
            IpvsAttr::TimeoutUdp(300)
        ]
    );

    let daemon = decode_captured(&captured("get_daemon_dump")[0]);
    assert_eq!(daemon.cmd, IpvsCmd::NewDaemon);
    let IpvsAttr::Daemon(attrs) = &daemon.attrs[0] else {
        panic!("no daemon attribute: {daemon:?}");
    };
    assert!(attrs.contains(&DaemonAttr::State(IP_VS_STATE_BACKUP)));
    assert!(attrs.contains(&DaemonAttr::McastIfn("sync0".into())));
    assert!(attrs.contains(&DaemonAttr::SyncId(7)));
    assert!(attrs.contains(&DaemonAttr::McastGroup([224, 0, 0, 81])));
}

#[test]
fn unknown_attribute_keeps_both_flags() {
    // Type 0x7f with NLA_F_NESTED | NLA_F_NET_BYTEORDER, 4-byte value.
    let bytes = [8u8, 0, 0x7f, 0xc0, 1, 2, 3, 4];
    let msg = IpvsMessage::decode(IpvsCmd::NewService, &bytes).unwrap();
    assert_eq!(msg.attrs_bytes(), bytes);
}
