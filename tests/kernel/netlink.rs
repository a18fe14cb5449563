//! The netlink client and codec against the real kernel: every command, read
//! back; the kernel's errors mapped to reasons; the in-memory kernel giving
//! the same answers as the real one for the same changes.

use libtest_mimic::Failed;

use crate::support::Netns;
use ipvs_manager::ipvs::codec::{DaemonAttr, IP_VS_STATE_BACKUP, IP_VS_STATE_MASTER};
use ipvs_manager::ipvs::memory::MemoryKernel;
use ipvs_manager::ipvs::netlink::NetlinkKernel;
use ipvs_manager::ipvs::{Change, Kernel, KernelError, Reason, Timeouts};
use ipvs_manager::model::*;
use std::net::{IpAddr, Ipv4Addr};

fn tcp(addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: addr.parse().unwrap(),
        port,
    }
}

fn service(key: ServiceKey, scheduler: &str) -> VirtualService {
    let mut s = VirtualService::new(key);
    s.scheduler = Scheduler::new(scheduler).unwrap();
    s
}

fn dest(addr: &str, port: u16, forward: Forward, weight: u32) -> Destination {
    Destination {
        forward,
        weight,
        ..Destination::new(addr.parse().unwrap(), port)
    }
}

fn connect() -> NetlinkKernel {
    NetlinkKernel::connect().expect("connect to IPVS")
}

fn ok_all(results: Vec<Result<(), KernelError>>) {
    for r in results {
        if let Err(e) = r {
            panic!("{}", ipvs_manager::errors::chain(&e));
        }
    }
}

/// A wide table: every protocol, both families, fwmark, every scheduler,
/// flags, persistence, pe, and every forwarding method and tunnel option.
fn wide_table() -> Vec<(VirtualService, Vec<Destination>)> {
    let mut out = Vec::new();
    for (i, sched) in [
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
    ]
    .iter()
    .enumerate()
    {
        let mut s = service(tcp(&format!("10.30.0.{}", i + 1), 80), sched);
        if *sched == "sh" || *sched == "mh" {
            s.flags = s
                .flags
                .with(ServiceFlags::SCHED1)
                .with(ServiceFlags::SCHED2);
        }
        out.push((
            s,
            vec![dest(
                &format!("10.31.0.{}", i + 1),
                8080,
                Forward::Masq,
                i as u32,
            )],
        ));
    }
    let mut udp6 = service(
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: "2001:db8:30::1".parse().unwrap(),
            port: 53,
        },
        "rr",
    );
    udp6.flags = udp6.flags.with(ServiceFlags::ONE_PACKET);
    udp6.persistence = Some(Persistence {
        timeout: 600,
        netmask: Netmask::V6(64),
    });
    out.push((
        udp6,
        vec![
            dest("2001:db8:31::1", 53, Forward::Masq, 0),
            dest("2001:db8:31::2", 53, Forward::Route, 5),
        ],
    ));
    let mut sctp = service(
        ServiceKey::Inet {
            protocol: Protocol::Sctp,
            addr: "10.30.1.1".parse().unwrap(),
            port: 3868,
        },
        "wlc",
    );
    sctp.persistence = Some(Persistence {
        timeout: 3600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    out.push((sctp, vec![dest("10.31.1.1", 3868, Forward::Masq, 1)]));
    let mut sip = service(
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: "10.30.1.2".parse().unwrap(),
            port: 5060,
        },
        "rr",
    );
    sip.persistence = Some(Persistence {
        timeout: 120,
        netmask: Netmask::host(Family::Ipv4),
    });
    sip.pe_name = Some("sip".into());
    out.push((sip, vec![]));
    let tun = |kind, port, checksum| {
        Forward::Tunnel(Tunnel {
            kind,
            port,
            checksum,
        })
    };
    let mut thresholds = dest("10.31.2.9", 80, Forward::Masq, 4);
    thresholds.upper_threshold = 100;
    thresholds.lower_threshold = 20;
    out.push((
        service(tcp("10.30.2.1", 80), "rr"),
        vec![
            dest(
                "10.31.2.1",
                80,
                tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                1,
            ),
            dest(
                "10.31.2.2",
                80,
                tun(TunnelType::Gue, 6080, TunnelChecksum::None),
                1,
            ),
            dest(
                "10.31.2.3",
                80,
                tun(TunnelType::Gue, 6081, TunnelChecksum::Csum),
                1,
            ),
            dest(
                "10.31.2.4",
                80,
                tun(TunnelType::Gue, 6082, TunnelChecksum::RemCsum),
                1,
            ),
            dest(
                "10.31.2.5",
                80,
                tun(TunnelType::Gre, 0, TunnelChecksum::Csum),
                1,
            ),
            dest(
                "2001:db8:31::5",
                80,
                tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                2,
            ),
            dest("10.31.2.6", 80, Forward::Route, 1),
            dest("10.31.2.7", 80, Forward::Local, 1),
            dest("10.31.2.8", 80, Forward::Bypass, 1),
            thresholds,
        ],
    ));
    let fwm = ServiceKey::Fwmark {
        family: Family::Ipv4,
        mark: 7,
    };
    out.push((
        service(fwm, "wrr"),
        vec![dest("10.31.3.1", 0, Forward::Route, 3)],
    ));
    let fwm6 = ServiceKey::Fwmark {
        family: Family::Ipv6,
        mark: 0xffff_ffff,
    };
    out.push((
        service(fwm6, "sh"),
        vec![dest("2001:db8:31::9", 0, Forward::Route, 1)],
    ));
    out
}

fn add_all(table: &[(VirtualService, Vec<Destination>)]) -> Vec<Change> {
    let mut changes = Vec::new();
    for (s, dests) in table {
        changes.push(Change::AddService(s.clone()));
        for d in dests {
            changes.push(Change::AddDest(s.key, *d));
        }
    }
    changes
}

/// What the kernel holds, without counters, sorted for comparison.
fn config(entries: Vec<ServiceEntry>) -> Vec<(VirtualService, Vec<Destination>)> {
    let mut out: Vec<_> = entries
        .into_iter()
        .map(|e| {
            let mut d: Vec<Destination> = e.destinations.into_iter().map(|d| d.dest).collect();
            d.sort_by_key(|d| d.key());
            (e.service, d)
        })
        .collect();
    out.sort_by_key(|(s, _)| s.key);
    out
}

/// `table` sorted like [`config`], for comparison with the kernel's view.
fn sorted(
    mut table: Vec<(VirtualService, Vec<Destination>)>,
) -> Vec<(VirtualService, Vec<Destination>)> {
    for (_, d) in &mut table {
        d.sort_by_key(|d| d.key());
    }
    table.sort_by_key(|(s, _)| s.key);
    table
}

/// GET_INFO: the version and table size ipvsadm prints in its header.
pub fn info_and_timeouts() -> Result<(), Failed> {
    let ns = Netns::new();
    ns.run(|| {
        let mut k = connect();
        let info = k.info().unwrap();
        assert_eq!(info.version_string(), "1.2.1");
        assert!(info.conn_tab_size > 0);
        assert_eq!(
            k.timeouts().unwrap(),
            Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            }
        );
        k.apply(&Change::SetTimeouts(Timeouts {
            tcp: 1000,
            tcp_fin: 0,
            udp: 30,
        }))
        .unwrap();
        assert_eq!(
            k.timeouts().unwrap(),
            Timeouts {
                tcp: 1000,
                tcp_fin: 120,
                udp: 30
            }
        );
    });
    assert_eq!(
        ns.ipvsadm(&["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 1000 120 30\n"
    );
    Ok(())
}

/// NEW_SERVICE and NEW_DEST for every kind of service and destination read
/// back identically through GET_SERVICE / GET_DEST dumps, and single GET.
pub fn every_kind_of_service_round_trips() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    let table = wide_table();
    ns.run(|| {
        let mut k = connect();
        ok_all(k.apply_batch(&add_all(&table)));
        assert_eq!(config(k.services().unwrap()), sorted(table.clone()));
        for (s, dests) in &table {
            let one = k.service(&s.key).unwrap().expect("single GET_SERVICE");
            assert_eq!(&one.service, s);
            assert_eq!(one.destinations.len(), dests.len());
        }
        assert!(k.service(&tcp("10.99.99.99", 1)).unwrap().is_none());
    });
    Ok(())
}

/// SET_SERVICE and SET_DEST change in place; DEL_DEST and DEL_SERVICE
/// remove; ZERO and FLUSH act on the whole table.
pub fn edit_delete_zero_flush() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    ns.run(|| {
        let mut k = connect();
        let key = tcp("10.40.0.1", 80);
        let mut s = service(key, "rr");
        let d = dest("10.41.0.1", 80, Forward::Masq, 1);
        ok_all(k.apply_batch(&[Change::AddService(s.clone()), Change::AddDest(key, d)]));
        s.scheduler = Scheduler::new("wlc").unwrap();
        s.persistence = Some(Persistence {
            timeout: 30,
            netmask: Netmask::host(Family::Ipv4),
        });
        let mut d2 = d;
        d2.weight = 9;
        d2.upper_threshold = 10;
        d2.lower_threshold = 1;
        ok_all(k.apply_batch(&[Change::EditService(s.clone()), Change::EditDest(key, d2)]));
        let got = k.service(&key).unwrap().unwrap();
        assert_eq!(got.service, s);
        assert_eq!(got.destinations[0].dest, d2);
        ok_all(k.apply_batch(&[Change::Zero(Some(key)), Change::Zero(None)]));
        ok_all(k.apply_batch(&[Change::DelDest(key, d.key())]));
        assert!(k.service(&key).unwrap().unwrap().destinations.is_empty());
        ok_all(k.apply_batch(&[Change::DelService(key)]));
        assert!(k.services().unwrap().is_empty());
        ok_all(k.apply_batch(&add_all(&[(s, vec![d])])));
        ok_all(k.apply_batch(&[Change::Flush]));
        assert!(k.services().unwrap().is_empty());
    });
    Ok(())
}

/// NEW_DAEMON, GET_DAEMON and DEL_DAEMON.
pub fn sync_daemon() -> Result<(), Failed> {
    let ns = Netns::new();
    ns.ip(&["link", "add", "sync0", "type", "dummy"]);
    ns.ip(&["link", "set", "sync0", "multicast", "on", "up"]);
    ns.run(|| {
        let mut k = connect();
        assert!(k.daemons().unwrap().is_empty());
        // The daemon of the committed captures: its reply is compared with
        // them byte for byte here (the capture trial cannot start a second
        // daemon in the same VM run).
        k.start_daemon(crate::capture::daemon_attrs()).unwrap();
        let daemons = k.daemons().unwrap();
        assert_eq!(daemons.len(), 1);
        assert!(daemons[0].contains(&DaemonAttr::State(IP_VS_STATE_BACKUP)));
        assert!(daemons[0].contains(&DaemonAttr::McastIfn("sync0".into())));
        assert!(daemons[0].contains(&DaemonAttr::SyncId(7)));
        assert_eq!(
            crate::capture::daemon_section(&mut k).unwrap(),
            crate::capture::committed_section("get_daemon_dump").unwrap(),
            "the daemon dump differs from tests/data/captures/replies.hex"
        );
        let dup = k.start_daemon(crate::capture::daemon_attrs());
        assert!(dup.is_err(), "a second backup daemon is refused");
        k.stop_daemon(IP_VS_STATE_BACKUP).unwrap();
        assert!(k.daemons().unwrap().is_empty());
        assert!(k.stop_daemon(IP_VS_STATE_MASTER).is_err());
    });
    Ok(())
}

/// The kernel's refusals come back as typed reasons naming the change, one
/// result per change, and a failure does not stop the rest of the batch.
pub fn errors_are_typed_and_per_change() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    ns.run(|| {
        let mut k = connect();
        let key = tcp("10.50.0.1", 80);
        let mut thresholds = dest("10.51.0.2", 80, Forward::Masq, 1);
        thresholds.upper_threshold = 5;
        thresholds.lower_threshold = 10;
        let changes = vec![
            Change::AddService(service(key, "rr")),
            Change::AddService(service(key, "rr")),
            Change::AddService(service(tcp("10.50.0.2", 80), "nosuchsched")),
            Change::AddDest(
                tcp("10.50.0.3", 80),
                dest("10.51.0.1", 80, Forward::Masq, 1),
            ),
            Change::AddDest(key, thresholds),
            Change::AddDest(key, dest("10.51.0.3", 80, Forward::Masq, 1)),
            Change::AddDest(key, dest("10.51.0.3", 80, Forward::Masq, 1)),
            Change::EditDest(key, dest("10.51.0.4", 80, Forward::Masq, 1)),
            Change::DelService(tcp("10.50.0.9", 80)),
        ];
        let results = k.apply_batch(&changes);
        let reasons: Vec<Option<Reason>> = results
            .iter()
            .map(|r| r.as_ref().err().and_then(KernelError::reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                None,
                Some(Reason::ServiceExists),
                Some(Reason::UnknownSchedulerOrEngine),
                Some(Reason::NoSuchService),
                Some(Reason::OutOfRange),
                None,
                Some(Reason::DestExists),
                Some(Reason::NoSuchDest),
                Some(Reason::NoSuchService),
            ]
        );
        let message = ipvs_manager::errors::chain(results[1].as_ref().unwrap_err());
        assert_eq!(
            message,
            "failed to add service TCP 10.50.0.1:80: service already exists (EEXIST)"
        );
        // The memory kernel answers the same batch the same way.
        let mut mem = MemoryKernel::new();
        let mem_reasons: Vec<Option<Reason>> = mem
            .apply_batch(&changes)
            .iter()
            .map(|r| r.as_ref().err().and_then(KernelError::reason))
            .collect();
        assert_eq!(
            mem_reasons, reasons,
            "in-memory kernel matches the real one"
        );
        assert_eq!(
            config(mem.services().unwrap()),
            config(k.services().unwrap())
        );
    });
    Ok(())
}

/// The in-memory kernel and the real one agree on a long sequence of mixed
/// valid and invalid changes: same result per change, same final table.
pub fn memory_kernel_matches_real_kernel() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    let table = wide_table();
    let mut changes = add_all(&table);
    // Replays (all duplicates), edits, deletions, and more invalid changes.
    changes.extend(add_all(&table[..3]));
    for (s, dests) in &table {
        let mut s2 = s.clone();
        s2.scheduler = Scheduler::new("rr").unwrap();
        changes.push(Change::EditService(s2));
        for d in dests {
            let mut d2 = *d;
            d2.weight += 1;
            changes.push(Change::EditDest(s.key, d2));
        }
    }
    let mixed = dest("2001:db8:31::77", 80, Forward::Masq, 1);
    changes.push(Change::AddDest(table[0].0.key, mixed));
    let mut gue_no_port = dest(
        "10.31.9.9",
        80,
        Forward::Tunnel(Tunnel {
            kind: TunnelType::Gue,
            port: 0,
            checksum: TunnelChecksum::None,
        }),
        1,
    );
    changes.push(Change::AddDest(table[0].0.key, gue_no_port));
    gue_no_port.weight = u32::MAX;
    changes.push(Change::AddDest(table[1].0.key, gue_no_port));
    let mut pe_missing = service(tcp("10.30.9.1", 80), "rr");
    pe_missing.pe_name = Some("nope".into());
    changes.push(Change::AddService(pe_missing));
    changes.push(Change::DelDest(table[0].0.key, table[0].1[0].key()));
    changes.push(Change::DelDest(table[0].0.key, table[0].1[0].key()));
    changes.push(Change::DelService(table[2].0.key));
    changes.push(Change::Zero(Some(table[2].0.key)));
    ns.run(|| {
        let mut k = connect();
        let mut mem = MemoryKernel::new();
        let real = k.apply_batch(&changes);
        let fake = mem.apply_batch(&changes);
        for ((change, r), f) in changes.iter().zip(&real).zip(&fake) {
            let (r, f) = (
                r.as_ref().err().map(|e| e.reason()),
                f.as_ref().err().map(|e| e.reason()),
            );
            assert_eq!(f, r, "memory vs kernel for: {change}");
        }
        assert_eq!(
            config(mem.services().unwrap()),
            config(k.services().unwrap())
        );
    });
    Ok(())
}

/// Thousands of changes in one batch: all applied, one result each, and a
/// failure in the middle reported at its own index.
pub fn large_batch_is_pipelined() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    let mut changes = Vec::new();
    for i in 0..500u32 {
        let key = tcp(&format!("10.60.{}.{}", i / 250, i % 250 + 1), 80);
        changes.push(Change::AddService(service(key, "wlc")));
        for j in 0..5u32 {
            let idx = i * 5 + j;
            let addr = IpAddr::V4(Ipv4Addr::new(10, 61, (idx / 256) as u8, (idx % 256) as u8));
            changes.push(Change::AddDest(key, Destination::new(addr, 8080)));
        }
    }
    let bad_at = 1234;
    changes.insert(bad_at, Change::DelService(tcp("10.69.0.1", 1)));
    ns.run(|| {
        let mut k = connect();
        let results = k.apply_batch(&changes);
        assert_eq!(results.len(), changes.len());
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == bad_at, "change {i}: {:?}", r);
        }
        let entries = k.services().unwrap();
        assert_eq!(entries.len(), 500);
        assert_eq!(
            entries.iter().map(|e| e.destinations.len()).sum::<usize>(),
            2500
        );
    });
    Ok(())
}

/// Without CAP_NET_ADMIN the binary says what is missing and how to fix it.
pub fn missing_capability_is_reported() -> Result<(), Failed> {
    let ns = Netns::new();
    let out = ns
        .unprivileged(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["kernel", "list"])
        .output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAP_NET_ADMIN"), "stderr: {stderr}");
    Ok(())
}
