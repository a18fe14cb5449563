//! Printer fixtures: ipvsadm 1.31's `-Ln` (every column mode) and `-Sn`
//! output for one table that exercises every branch of its printer. The
//! expected text was produced by the real ipvsadm 1.31 (Debian 1:1.31-1)
//! fed this table through a stand-in for the IPVS netlink family.

use super::super::{list, save, ListOptions};
use crate::ipvs::Info;
use crate::model::{
    DestEntry, Destination, Family, Forward, Netmask, Persistence, Protocol, Scheduler,
    ServiceEntry, ServiceFlags, ServiceKey, Stats, Tunnel, TunnelChecksum, TunnelType,
    VirtualService,
};
use std::net::{IpAddr, Ipv4Addr};

pub(super) const INFO: Info = Info {
    version: 0x010201,
    conn_tab_size: 4096,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("fixture address")
}

fn inet(protocol: Protocol, addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol,
        addr: ip(addr),
        port,
    }
}

fn service(key: ServiceKey, scheduler: &str) -> VirtualService {
    let mut s = VirtualService::new(key);
    s.scheduler = Scheduler::new(scheduler).expect("fixture scheduler");
    s
}

fn dest(addr: &str, port: u16, forward: Forward, weight: u32) -> DestEntry {
    DestEntry::new(Destination {
        addr: ip(addr),
        port,
        forward,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
    })
}

fn tunnel(kind: TunnelType, port: u16, checksum: TunnelChecksum) -> Forward {
    Forward::Tunnel(Tunnel {
        kind,
        port,
        checksum,
    })
}

/// Counters from `base` up, spanning every print_largenum range.
fn stats(base: u64) -> Stats {
    Stats {
        conns: base,
        inpkts: base * 1_000 + 7,
        outpkts: 99_999_999,
        inbytes: 100_000_000 + base,
        outbytes: 123_456_789_012_345 + base,
        cps: base % 100,
        inpps: 1_000_000_000 * base,
        outpps: 5,
        inbps: 99_999_999_999,
        outbps: u64::MAX - base,
    }
}

fn entry(service: VirtualService, destinations: Vec<DestEntry>) -> ServiceEntry {
    ServiceEntry {
        service,
        stats: Stats::default(),
        destinations,
    }
}

/// One table with every kind of service and destination, in an order the
/// kernel could report (ipvsadm sorts it).
pub(super) fn fixture() -> Vec<ServiceEntry> {
    let mut web = entry(
        service(inet(Protocol::Tcp, "10.0.0.1", 80), "wlc"),
        vec![
            dest("10.0.1.2", 8080, Forward::Masq, 3),
            dest("10.0.1.1", 80, Forward::Route, 1),
            dest("192.168.1.1", 80, Forward::Route, 0),
        ],
    );
    web.stats = stats(1);
    for (i, d) in web.destinations.iter_mut().enumerate() {
        d.active_conns = 10 * i as u32 + 1;
        d.inactive_conns = 1000 * i as u32;
        d.persistent_conns = i as u32;
        d.stats = stats(i as u64 + 2);
    }
    if let Some(d) = web.destinations.get_mut(0) {
        d.dest.upper_threshold = 500;
        d.dest.lower_threshold = 100;
        d.stats.conns = 5_000_000_000; // libipvs keeps the low 32 bits
    }

    let mut dns = entry(service(inet(Protocol::Udp, "10.0.0.1", 53), "rr"), vec![]);
    dns.service.flags = ServiceFlags::default().with(ServiceFlags::ONE_PACKET);

    let mut sticky = entry(
        service(inet(Protocol::Tcp, "200.0.0.1", 443), "sh"),
        vec![dest("10.0.3.1", 443, Forward::Route, 1)],
    );
    sticky.service.flags = ServiceFlags::default()
        .with(ServiceFlags::SCHED1)
        .with(ServiceFlags::SCHED2);
    sticky.service.persistence = Some(Persistence {
        timeout: 3600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });

    let any_port = {
        let mut e = entry(service(inet(Protocol::Tcp, "10.0.0.9", 0), "lc"), vec![]);
        e.service.persistence = Some(Persistence {
            timeout: 360,
            netmask: Netmask::host(Family::Ipv4),
        });
        e
    };

    let sctp = entry(
        service(inet(Protocol::Sctp, "10.0.0.2", 3868), "rr"),
        vec![dest("10.0.4.1", 3868, Forward::Masq, 1)],
    );

    let mut v6 = entry(
        service(inet(Protocol::Tcp, "2001:db8::1", 80), "mh"),
        vec![
            dest("2001:db8::20", 8080, Forward::Masq, 2),
            dest(
                "10.0.5.1",
                80,
                tunnel(TunnelType::Gue, 6080, TunnelChecksum::Csum),
                1,
            ),
            dest("::ffff:10.0.5.2", 80, Forward::Masq, 1),
        ],
    );
    v6.service.flags = ServiceFlags::default().with(ServiceFlags::SCHED2);
    v6.service.persistence = Some(Persistence {
        timeout: 300,
        netmask: Netmask::V6(64),
    });
    v6.service.pe_name = Some("sip".to_string());

    let sip = {
        let mut e = entry(service(inet(Protocol::Udp, "10.0.0.3", 5060), "rr"), vec![]);
        e.service.persistence = Some(Persistence {
            timeout: 120,
            netmask: Netmask::host(Family::Ipv4),
        });
        e.service.pe_name = Some("sip".to_string());
        e
    };

    let tunnels = entry(
        service(
            ServiceKey::Fwmark {
                family: Family::Ipv4,
                mark: 1,
            },
            "wrr",
        ),
        vec![
            dest(
                "10.0.6.1",
                0,
                tunnel(TunnelType::Ipip, 0, TunnelChecksum::None),
                1,
            ),
            dest(
                "10.0.6.2",
                0,
                tunnel(TunnelType::Gue, 65535, TunnelChecksum::RemCsum),
                2,
            ),
            dest(
                "10.0.6.3",
                0,
                tunnel(TunnelType::Gre, 0, TunnelChecksum::Csum),
                3,
            ),
            dest(
                "10.0.6.4",
                0,
                tunnel(TunnelType::Gre, 0, TunnelChecksum::None),
                4,
            ),
            dest("10.0.6.5", 8080, Forward::Masq, 5),
            dest(
                "2001:db8::6",
                0,
                tunnel(TunnelType::Ipip, 0, TunnelChecksum::None),
                6,
            ),
        ],
    );

    let mut fwm6 = entry(
        service(
            ServiceKey::Fwmark {
                family: Family::Ipv6,
                mark: 2,
            },
            "rr",
        ),
        vec![dest("2001:db8::7", 0, Forward::Route, 1)],
    );
    fwm6.service.flags = ServiceFlags::default()
        .with(ServiceFlags::SCHED1)
        .with(ServiceFlags::SCHED3)
        .with(ServiceFlags::ONE_PACKET);

    let big_mark = entry(
        service(
            ServiceKey::Fwmark {
                family: Family::Ipv4,
                mark: 3_000_000_000,
            },
            "wlc",
        ),
        vec![],
    );

    vec![
        v6, web, tunnels, dns, big_mark, sticky, sctp, fwm6, any_port, sip,
    ]
}

fn lines(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

#[test]
fn empty_table() {
    assert_eq!(
        list(&INFO, &[], &ListOptions::default()),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        ])
    );
    assert_eq!(save(&[]), "");
}
#[test]
fn list_plain() {
    assert_eq!(
        list(&INFO, &fixture(), &ListOptions::default()),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
            "FWM  -1294967296 wlc",
            "TCP  200.0.0.1:443 sh (sh-fallback,sh-port) persistent 3600 mask 255.255.255.0",
            "  -> 10.0.3.1:443                 Route   1      0          0         ",
            "TCP  10.0.0.1:80 wlc",
            "  -> 192.168.1.1:80               Route   0      21         2000      ",
            "  -> 10.0.1.1:80                  Route   1      11         1000      ",
            "  -> 10.0.1.2:8080                Masq    3      1          0         ",
            "TCP  10.0.0.9:0 lc persistent 360",
            "UDP  10.0.0.1:53 rr ops",
            "UDP  10.0.0.3:5060 rr persistent 120 pe sip",
            "SCTP 10.0.0.2:3868 rr",
            "  -> 10.0.4.1:3868                Masq    1      0          0         ",
            "TCP  [2001:db8::1]:80 mh (mh-port) persistent 300 mask 64 pe sip",
            "  -> [::ffff:10.0.5.2]:80         Masq    1      0          0         ",
            "  -> 10.0.5.1:80                  Tunnel  1      0          0         ",
            "  -> [2001:db8::20]:8080          Masq    2      0          0         ",
            "FWM  1 wrr",
            "  -> 10.0.6.1:0                   Tunnel  1      0          0         ",
            "  -> 10.0.6.2:0                   Tunnel  2      0          0         ",
            "  -> 10.0.6.3:0                   Tunnel  3      0          0         ",
            "  -> 10.0.6.4:0                   Tunnel  4      0          0         ",
            "  -> 10.0.6.5:8080                Masq    5      0          0         ",
            "  -> [2001:db8::6]:0              Tunnel  6      0          0         ",
            "FWM  2 IPv6 rr (flag-1,flag-3) ops",
            "  -> [2001:db8::7]:0              Route   1      0          0         ",
        ])
    );
}

#[test]
fn list_stats() {
    assert_eq!(
        list(
            &INFO,
            &fixture(),
            &ListOptions {
                stats: true,
                ..ListOptions::default()
            }
        ),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296                         0        0        0        0        0",
            "TCP  200.0.0.1:443                       0        0        0        0        0",
            "  -> 10.0.3.1:443                        0        0        0        0        0",
            "TCP  10.0.0.1:80                         1     1007 99999999  100000K     123T",
            "  -> 192.168.1.1:80                      4     4007 99999999  100000K     123T",
            "  -> 10.0.1.1:80                         3     3007 99999999  100000K     123T",
            "  -> 10.0.1.2:8080                 705032K     2007 99999999  100000K     123T",
            "TCP  10.0.0.9:0                          0        0        0        0        0",
            "UDP  10.0.0.1:53                         0        0        0        0        0",
            "UDP  10.0.0.3:5060                       0        0        0        0        0",
            "SCTP 10.0.0.2:3868                       0        0        0        0        0",
            "  -> 10.0.4.1:3868                       0        0        0        0        0",
            "TCP  [2001:db8::1]:80                    0        0        0        0        0",
            "  -> [::ffff:10.0.5.2]:80                0        0        0        0        0",
            "  -> 10.0.5.1:80                         0        0        0        0        0",
            "  -> [2001:db8::20]:8080                 0        0        0        0        0",
            "FWM  1                                   0        0        0        0        0",
            "  -> 10.0.6.1:0                          0        0        0        0        0",
            "  -> 10.0.6.2:0                          0        0        0        0        0",
            "  -> 10.0.6.3:0                          0        0        0        0        0",
            "  -> 10.0.6.4:0                          0        0        0        0        0",
            "  -> 10.0.6.5:8080                       0        0        0        0        0",
            "  -> [2001:db8::6]:0                     0        0        0        0        0",
            "FWM  2 IPv6                              0        0        0        0        0",
            "  -> [2001:db8::7]:0                     0        0        0        0        0",
        ])
    );
}

#[test]
fn list_stats_exact() {
    assert_eq!(
        list(&INFO, &fixture(), &ListOptions { stats: true, exact: true, ..ListOptions::default() }),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296                         0        0        0        0        0",
            "TCP  200.0.0.1:443                       0        0        0        0        0",
            "  -> 10.0.3.1:443                        0        0        0        0        0",
            "TCP  10.0.0.1:80                         1     1007 99999999 100000001 123456789012346",
            "  -> 192.168.1.1:80                      4     4007 99999999 100000004 123456789012349",
            "  -> 10.0.1.1:80                         3     3007 99999999 100000003 123456789012348",
            "  -> 10.0.1.2:8080                705032704     2007 99999999 100000002 123456789012347",
            "TCP  10.0.0.9:0                          0        0        0        0        0",
            "UDP  10.0.0.1:53                         0        0        0        0        0",
            "UDP  10.0.0.3:5060                       0        0        0        0        0",
            "SCTP 10.0.0.2:3868                       0        0        0        0        0",
            "  -> 10.0.4.1:3868                       0        0        0        0        0",
            "TCP  [2001:db8::1]:80                    0        0        0        0        0",
            "  -> [::ffff:10.0.5.2]:80                0        0        0        0        0",
            "  -> 10.0.5.1:80                         0        0        0        0        0",
            "  -> [2001:db8::20]:8080                 0        0        0        0        0",
            "FWM  1                                   0        0        0        0        0",
            "  -> 10.0.6.1:0                          0        0        0        0        0",
            "  -> 10.0.6.2:0                          0        0        0        0        0",
            "  -> 10.0.6.3:0                          0        0        0        0        0",
            "  -> 10.0.6.4:0                          0        0        0        0        0",
            "  -> 10.0.6.5:8080                       0        0        0        0        0",
            "  -> [2001:db8::6]:0                     0        0        0        0        0",
            "FWM  2 IPv6                              0        0        0        0        0",
            "  -> [2001:db8::7]:0                     0        0        0        0        0",
        ])
    );
}

#[test]
fn list_rate() {
    assert_eq!(
        list(
            &INFO,
            &fixture(),
            &ListOptions {
                rate: true,
                ..ListOptions::default()
            }
        ),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296                         0        0        0        0        0",
            "TCP  200.0.0.1:443                       0        0        0        0        0",
            "  -> 10.0.3.1:443                        0        0        0        0        0",
            "TCP  10.0.0.1:80                         1    1000M        5   99999M18446744T",
            "  -> 192.168.1.1:80                      4 4000000000        5    1215M    4294M",
            "  -> 10.0.1.1:80                         3 3000000000        5    1215M    4294M",
            "  -> 10.0.1.2:8080                       2 2000000000        5    1215M    4294M",
            "TCP  10.0.0.9:0                          0        0        0        0        0",
            "UDP  10.0.0.1:53                         0        0        0        0        0",
            "UDP  10.0.0.3:5060                       0        0        0        0        0",
            "SCTP 10.0.0.2:3868                       0        0        0        0        0",
            "  -> 10.0.4.1:3868                       0        0        0        0        0",
            "TCP  [2001:db8::1]:80                    0        0        0        0        0",
            "  -> [::ffff:10.0.5.2]:80                0        0        0        0        0",
            "  -> 10.0.5.1:80                         0        0        0        0        0",
            "  -> [2001:db8::20]:8080                 0        0        0        0        0",
            "FWM  1                                   0        0        0        0        0",
            "  -> 10.0.6.1:0                          0        0        0        0        0",
            "  -> 10.0.6.2:0                          0        0        0        0        0",
            "  -> 10.0.6.3:0                          0        0        0        0        0",
            "  -> 10.0.6.4:0                          0        0        0        0        0",
            "  -> 10.0.6.5:8080                       0        0        0        0        0",
            "  -> [2001:db8::6]:0                     0        0        0        0        0",
            "FWM  2 IPv6                              0        0        0        0        0",
            "  -> [2001:db8::7]:0                     0        0        0        0        0",
        ])
    );
}

#[test]
fn list_rate_exact() {
    assert_eq!(
        list(&INFO, &fixture(), &ListOptions { rate: true, exact: true, ..ListOptions::default() }),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296                         0        0        0        0        0",
            "TCP  200.0.0.1:443                       0        0        0        0        0",
            "  -> 10.0.3.1:443                        0        0        0        0        0",
            "TCP  10.0.0.1:80                         1 1000000000        5 99999999999 18446744073709551614",
            "  -> 192.168.1.1:80                      4 4000000000        5 1215752191 4294967291",
            "  -> 10.0.1.1:80                         3 3000000000        5 1215752191 4294967292",
            "  -> 10.0.1.2:8080                       2 2000000000        5 1215752191 4294967293",
            "TCP  10.0.0.9:0                          0        0        0        0        0",
            "UDP  10.0.0.1:53                         0        0        0        0        0",
            "UDP  10.0.0.3:5060                       0        0        0        0        0",
            "SCTP 10.0.0.2:3868                       0        0        0        0        0",
            "  -> 10.0.4.1:3868                       0        0        0        0        0",
            "TCP  [2001:db8::1]:80                    0        0        0        0        0",
            "  -> [::ffff:10.0.5.2]:80                0        0        0        0        0",
            "  -> 10.0.5.1:80                         0        0        0        0        0",
            "  -> [2001:db8::20]:8080                 0        0        0        0        0",
            "FWM  1                                   0        0        0        0        0",
            "  -> 10.0.6.1:0                          0        0        0        0        0",
            "  -> 10.0.6.2:0                          0        0        0        0        0",
            "  -> 10.0.6.3:0                          0        0        0        0        0",
            "  -> 10.0.6.4:0                          0        0        0        0        0",
            "  -> 10.0.6.5:8080                       0        0        0        0        0",
            "  -> [2001:db8::6]:0                     0        0        0        0        0",
            "FWM  2 IPv6                              0        0        0        0        0",
            "  -> [2001:db8::7]:0                     0        0        0        0        0",
        ])
    );
}

#[test]
fn list_thresholds() {
    assert_eq!(
        list(
            &INFO,
            &fixture(),
            &ListOptions {
                thresholds: true,
                ..ListOptions::default()
            }
        ),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296 wlc",
            "TCP  200.0.0.1:443 sh (sh-fallback,sh-port) persistent 3600 mask 255.255.255.0",
            "  -> 10.0.3.1:443                 0          0          0          0         ",
            "TCP  10.0.0.1:80 wlc",
            "  -> 192.168.1.1:80               0          0          21         2000      ",
            "  -> 10.0.1.1:80                  0          0          11         1000      ",
            "  -> 10.0.1.2:8080                500        100        1          0         ",
            "TCP  10.0.0.9:0 lc persistent 360",
            "UDP  10.0.0.1:53 rr ops",
            "UDP  10.0.0.3:5060 rr persistent 120 pe sip",
            "SCTP 10.0.0.2:3868 rr",
            "  -> 10.0.4.1:3868                0          0          0          0         ",
            "TCP  [2001:db8::1]:80 mh (mh-port) persistent 300 mask 64 pe sip",
            "  -> [::ffff:10.0.5.2]:80         0          0          0          0         ",
            "  -> 10.0.5.1:80                  0          0          0          0         ",
            "  -> [2001:db8::20]:8080          0          0          0          0         ",
            "FWM  1 wrr",
            "  -> 10.0.6.1:0                   0          0          0          0         ",
            "  -> 10.0.6.2:0                   0          0          0          0         ",
            "  -> 10.0.6.3:0                   0          0          0          0         ",
            "  -> 10.0.6.4:0                   0          0          0          0         ",
            "  -> 10.0.6.5:8080                0          0          0          0         ",
            "  -> [2001:db8::6]:0              0          0          0          0         ",
            "FWM  2 IPv6 rr (flag-1,flag-3) ops",
            "  -> [2001:db8::7]:0              0          0          0          0         ",
        ])
    );
}

#[test]
fn list_persistent_conn() {
    assert_eq!(
        list(
            &INFO,
            &fixture(),
            &ListOptions {
                persistent_conn: true,
                ..ListOptions::default()
            }
        ),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
            "  -> RemoteAddress:Port",
            "FWM  -1294967296 wlc",
            "TCP  200.0.0.1:443 sh (sh-fallback,sh-port) persistent 3600 mask 255.255.255.0",
            "  -> 10.0.3.1:443                 1         0           0          0         ",
            "TCP  10.0.0.1:80 wlc",
            "  -> 192.168.1.1:80               0         2           21         2000      ",
            "  -> 10.0.1.1:80                  1         1           11         1000      ",
            "  -> 10.0.1.2:8080                3         0           1          0         ",
            "TCP  10.0.0.9:0 lc persistent 360",
            "UDP  10.0.0.1:53 rr ops",
            "UDP  10.0.0.3:5060 rr persistent 120 pe sip",
            "SCTP 10.0.0.2:3868 rr",
            "  -> 10.0.4.1:3868                1         0           0          0         ",
            "TCP  [2001:db8::1]:80 mh (mh-port) persistent 300 mask 64 pe sip",
            "  -> [::ffff:10.0.5.2]:80         1         0           0          0         ",
            "  -> 10.0.5.1:80                  1         0           0          0         ",
            "  -> [2001:db8::20]:8080          2         0           0          0         ",
            "FWM  1 wrr",
            "  -> 10.0.6.1:0                   1         0           0          0         ",
            "  -> 10.0.6.2:0                   2         0           0          0         ",
            "  -> 10.0.6.3:0                   3         0           0          0         ",
            "  -> 10.0.6.4:0                   4         0           0          0         ",
            "  -> 10.0.6.5:8080                5         0           0          0         ",
            "  -> [2001:db8::6]:0              6         0           0          0         ",
            "FWM  2 IPv6 rr (flag-1,flag-3) ops",
            "  -> [2001:db8::7]:0              1         0           0          0         ",
        ])
    );
}

#[test]
fn list_tun_info() {
    assert_eq!(
        list(
            &INFO,
            &fixture(),
            &ListOptions {
                tun_info: true,
                ..ListOptions::default()
            }
        ),
        lines(&[
            "IP Virtual Server version 1.2.1 (size=4096)",
            "Prot LocalAddress:Port Scheduler Flags",
            "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
            "FWM  -1294967296 wlc",
            "TCP  200.0.0.1:443 sh (sh-fallback,sh-port) persistent 3600 mask 255.255.255.0",
            "  -> 10.0.3.1:443                 Route   n/a           1      0          0         ",
            "TCP  10.0.0.1:80 wlc",
            "  -> 192.168.1.1:80               Route   n/a           0      21         2000      ",
            "  -> 10.0.1.1:80                  Route   n/a           1      11         1000      ",
            "  -> 10.0.1.2:8080                Masq    n/a           3      1          0         ",
            "TCP  10.0.0.9:0 lc persistent 360",
            "UDP  10.0.0.1:53 rr ops",
            "UDP  10.0.0.3:5060 rr persistent 120 pe sip",
            "SCTP 10.0.0.2:3868 rr",
            "  -> 10.0.4.1:3868                Masq    n/a           1      0          0         ",
            "TCP  [2001:db8::1]:80 mh (mh-port) persistent 300 mask 64 pe sip",
            "  -> [::ffff:10.0.5.2]:80         Masq    n/a           1      0          0         ",
            "  -> 10.0.5.1:80                  Tunnel  gue:6080:+c   1      0          0         ",
            "  -> [2001:db8::20]:8080          Masq    n/a           2      0          0         ",
            "FWM  1 wrr",
            "  -> 10.0.6.1:0                   Tunnel  ipip          1      0          0         ",
            "  -> 10.0.6.2:0                   Tunnel  gue:65535:r+c 2      0          0         ",
            "  -> 10.0.6.3:0                   Tunnel  gre:+c        3      0          0         ",
            "  -> 10.0.6.4:0                   Tunnel  gre:-c        4      0          0         ",
            "  -> 10.0.6.5:8080                Masq    n/a           5      0          0         ",
            "  -> [2001:db8::6]:0              Tunnel  ipip          6      0          0         ",
            "FWM  2 IPv6 rr (flag-1,flag-3) ops",
            "  -> [2001:db8::7]:0              Route   n/a           1      0          0         ",
        ])
    );
}

#[test]
fn save_rules() {
    // ipvsadm -Sn prints the same lines except two: it writes mark 3000000000
    // as "-f -1294967296" (which -R refuses) and drops " -x 500 -y 100".
    assert_eq!(
        save(&fixture()),
        lines(&[
            "-A -f 3000000000 -s wlc",
            "-A -t 200.0.0.1:443 -s sh -p 3600 -M 255.255.255.0 -b sh-fallback,sh-port",
            "-a -t 200.0.0.1:443 -r 10.0.3.1:443 -g -w 1",
            "-A -t 10.0.0.1:80 -s wlc",
            "-a -t 10.0.0.1:80 -r 192.168.1.1:80 -g -w 0",
            "-a -t 10.0.0.1:80 -r 10.0.1.1:80 -g -w 1",
            "-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 3 -x 500 -y 100",
            "-A -t 10.0.0.9:0 -s lc -p 360",
            "-A -u 10.0.0.1:53 -s rr -o",
            "-A -u 10.0.0.3:5060 -s rr -p 120 --pe sip",
            "-A --sctp-service 10.0.0.2:3868 -s rr",
            "-a --sctp-service 10.0.0.2:3868 -r 10.0.4.1:3868 -m -w 1",
            "-A -t [2001:db8::1]:80 -s mh -p 300 -M 64 --pe sip -b mh-port",
            "-a -t [2001:db8::1]:80 -r [::ffff:10.0.5.2]:80 -m -w 1",
            "-a -t [2001:db8::1]:80 -r 10.0.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum",
            "-a -t [2001:db8::1]:80 -r [2001:db8::20]:8080 -m -w 2",
            "-A -f 1 -s wrr",
            "-a -f 1 -r 10.0.6.1:0 -i -w 1 --tun-type ipip",
            "-a -f 1 -r 10.0.6.2:0 -i -w 2 --tun-type gue --tun-port 65535 --tun-remcsum",
            "-a -f 1 -r 10.0.6.3:0 -i -w 3 --tun-type gre --tun-csum",
            "-a -f 1 -r 10.0.6.4:0 -i -w 4 --tun-type gre --tun-nocsum",
            "-a -f 1 -r 10.0.6.5:8080 -m -w 5",
            "-a -f 1 -r [2001:db8::6]:0 -i -w 6 --tun-type ipip",
            "-A -f 2 -6 -s rr -o -b flag-1,flag-3",
            "-a -f 2 -6 -r [2001:db8::7]:0 -g -w 1",
        ])
    );
}

#[test]
fn one_column_mode_wins_like_ipvsadm() {
    // ipvsadm accepts several list options at once and prints the first of
    // stats, rate, thresholds, persistent-conn, tun-info.
    let table = fixture();
    let only = |opts: ListOptions| list(&INFO, &table, &opts);
    let all = ListOptions {
        stats: true,
        rate: true,
        thresholds: true,
        persistent_conn: true,
        tun_info: true,
        exact: false,
    };
    assert_eq!(
        only(all),
        only(ListOptions {
            stats: true,
            ..ListOptions::default()
        })
    );
    let no_stats = ListOptions {
        stats: false,
        ..all
    };
    assert_eq!(
        only(no_stats),
        only(ListOptions {
            rate: true,
            ..ListOptions::default()
        })
    );
    let thresholds_down = ListOptions {
        rate: false,
        ..no_stats
    };
    assert_eq!(
        only(thresholds_down),
        only(ListOptions {
            thresholds: true,
            ..ListOptions::default()
        })
    );
    // --exact changes nothing outside stats and rates.
    assert_eq!(
        only(ListOptions {
            exact: true,
            ..ListOptions::default()
        }),
        only(ListOptions::default())
    );
}

#[test]
fn long_names_are_cut_like_ipvsadm() {
    // Numeric IPv4 names never reach ipvsadm's 33/28-character cuts, and IPv6
    // names are never cut: they push the columns right instead.
    let key = ServiceKey::Inet {
        protocol: Protocol::Sctp,
        addr: ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
        port: 65535,
    };
    let mut e = entry(
        service(key, "wlc"),
        vec![dest(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff1",
            65535,
            Forward::Masq,
            1,
        )],
    );
    e.stats.conns = 1;
    let out = list(
        &INFO,
        &[e],
        &ListOptions {
            stats: true,
            ..ListOptions::default()
        },
    );
    assert_eq!(
        out.lines().skip(3).collect::<Vec<_>>(),
        vec![
            "SCTP [ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535        1        0        0        0        0",
            "  -> [ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff1]:65535        0        0        0        0        0",
        ]
    );
}
