//! Parser tests: every option in its short and long form, ipvsadm's defaults
//! and rules, and every error. The expectations were checked against the real
//! ipvsadm 1.31 (what it sends to the kernel for each line); where we differ
//! on purpose, the test says so.

use super::super::{parse_command, parse_restore, CommandError};
use crate::ipvs::{Change, Timeouts};
use crate::model::{
    DestKey, Destination, Family, Forward, Netmask, Persistence, Protocol, Scheduler, ServiceFlags,
    ServiceKey, Tunnel, TunnelChecksum, TunnelType, VirtualService,
};
use std::net::{IpAddr, Ipv4Addr};

fn parse(line: &str) -> Result<Change, CommandError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse_command(&words)
}

fn ok(line: &str) -> Change {
    match parse(line) {
        Ok(c) => c,
        Err(e) => panic!("{line:?} should parse: {e}"),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn inet(protocol: Protocol, addr: &str, port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol,
        addr: ip(addr),
        port,
    }
}

fn tcp(addr: &str, port: u16) -> ServiceKey {
    inet(Protocol::Tcp, addr, port)
}

fn fwm(family: Family, mark: u32) -> ServiceKey {
    ServiceKey::Fwmark { family, mark }
}

fn svc(key: ServiceKey) -> VirtualService {
    VirtualService::new(key)
}

fn with_sched(mut s: VirtualService, name: &str) -> VirtualService {
    s.scheduler = Scheduler::new(name).expect("test scheduler");
    s
}

fn persistent(mut s: VirtualService, timeout: u32, netmask: Netmask) -> VirtualService {
    s.persistence = Some(Persistence { timeout, netmask });
    s
}

fn with_flags(mut s: VirtualService, bits: u32) -> VirtualService {
    s.flags = ServiceFlags::default().with(bits);
    s
}

fn dst(addr: &str, port: u16, forward: Forward) -> Destination {
    Destination {
        addr: ip(addr),
        port,
        forward,
        weight: 1,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

fn tun(kind: TunnelType, port: u16, checksum: TunnelChecksum) -> Forward {
    Forward::Tunnel(Tunnel {
        kind,
        port,
        checksum,
    })
}

const V4_HOST: Netmask = Netmask::V4(Ipv4Addr::BROADCAST);

#[test]
fn service_commands() {
    let web = tcp("10.0.0.1", 80);
    let cases: Vec<(&str, Change)> = vec![
        ("-A -t 10.0.0.1:80", Change::AddService(svc(web))),
        (
            "--add-service --tcp-service 10.0.0.1:80",
            Change::AddService(svc(web)),
        ),
        (
            "--add-service --tcp-service=10.0.0.1:80",
            Change::AddService(svc(web)),
        ),
        // popt clusters: -At, and a value glued to its option, with or without "=".
        ("-At 10.0.0.1:80", Change::AddService(svc(web))),
        ("-At10.0.0.1:80", Change::AddService(svc(web))),
        ("-A -t=10.0.0.1:80", Change::AddService(svc(web))),
        ("-E -t 10.0.0.1:80", Change::EditService(svc(web))),
        (
            "--edit-service -t 10.0.0.1:80 -s rr",
            Change::EditService(with_sched(svc(web), "rr")),
        ),
        ("-D -t 10.0.0.1:80", Change::DelService(web)),
        ("--delete-service -t 10.0.0.1:80", Change::DelService(web)),
        (
            "-A -u 10.0.0.1:53",
            Change::AddService(svc(inet(Protocol::Udp, "10.0.0.1", 53))),
        ),
        (
            "-A --udp-service 10.0.0.1:53",
            Change::AddService(svc(inet(Protocol::Udp, "10.0.0.1", 53))),
        ),
        (
            "-A --sctp-service 10.0.0.1:3868",
            Change::AddService(svc(inet(Protocol::Sctp, "10.0.0.1", 3868))),
        ),
        ("-A -f 1", Change::AddService(svc(fwm(Family::Ipv4, 1)))),
        (
            "-A --fwmark-service 4294967295",
            Change::AddService(svc(fwm(Family::Ipv4, u32::MAX))),
        ),
        ("-A -f +5", Change::AddService(svc(fwm(Family::Ipv4, 5)))),
        ("-A -f 1 -6", Change::AddService(svc(fwm(Family::Ipv6, 1)))),
        (
            "-A -f 1 --ipv6",
            Change::AddService(svc(fwm(Family::Ipv6, 1))),
        ),
        // ipvsadm lets -6 repeat, and --sort is a no-op accepted anywhere.
        (
            "-A -f 1 -6 -6 --sort",
            Change::AddService(svc(fwm(Family::Ipv6, 1))),
        ),
        ("-D -f 7 -6", Change::DelService(fwm(Family::Ipv6, 7))),
        (
            "-A -t [2001:db8::1]:80",
            Change::AddService(svc(tcp("2001:db8::1", 80))),
        ),
        (
            "-A -t 10.0.0.1:80 -s rr",
            Change::AddService(with_sched(svc(web), "rr")),
        ),
        (
            "-A -t 10.0.0.1:80 --scheduler=sh",
            Change::AddService(with_sched(svc(web), "sh")),
        ),
        ("-C", Change::Flush),
        ("--clear", Change::Flush),
        ("-Z", Change::Zero(None)),
        ("--zero", Change::Zero(None)),
        ("-Z -t 10.0.0.1:80", Change::Zero(Some(web))),
        ("-Z -f 3 -6", Change::Zero(Some(fwm(Family::Ipv6, 3)))),
        (
            "--set 900 120 300",
            Change::SetTimeouts(Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            }),
        ),
        // Timeouts are plain arguments: popt takes them from anywhere.
        (
            "10 --set 20 -- 30",
            Change::SetTimeouts(Timeouts {
                tcp: 10,
                tcp_fin: 20,
                udp: 30,
            }),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(ok(line), want, "{line}");
    }
}

#[test]
fn persistence() {
    let web = tcp("10.0.0.1", 80);
    let v6 = tcp("2001:db8::1", 80);
    let mask24 = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
    let cases: Vec<(&str, VirtualService)> = vec![
        // libipvs's default is 360 s (ipvsadm(8) claims 300).
        ("-A -t 10.0.0.1:80 -p", persistent(svc(web), 360, V4_HOST)),
        (
            "-A -t 10.0.0.1:80 --persistent",
            persistent(svc(web), 360, V4_HOST),
        ),
        ("-A -t 10.0.0.1:80 -p 60", persistent(svc(web), 60, V4_HOST)),
        (
            "-A -t 10.0.0.1:80 --persistent 60",
            persistent(svc(web), 60, V4_HOST),
        ),
        (
            "-A -t 10.0.0.1:80 --persistent=60",
            persistent(svc(web), 60, V4_HOST),
        ),
        ("-A -t 10.0.0.1:80 -p60", persistent(svc(web), 60, V4_HOST)),
        ("-A -t 10.0.0.1:80 -p=60", persistent(svc(web), 60, V4_HOST)),
        (
            "-A -t 10.0.0.1:80 -p 2678400",
            persistent(svc(web), 2_678_400, V4_HOST),
        ),
        // -p's timeout is optional: a next word starting with '-' is not it.
        (
            "-A -t 10.0.0.1:80 -p -s rr",
            persistent(with_sched(svc(web), "rr"), 360, V4_HOST),
        ),
        // Port 0 is fine for a persistent service, and so is no port.
        (
            "-A -t 10.0.0.1:0 -p",
            persistent(svc(tcp("10.0.0.1", 0)), 360, V4_HOST),
        ),
        (
            "-A -t 10.0.0.1 -p",
            persistent(svc(tcp("10.0.0.1", 0)), 360, V4_HOST),
        ),
        (
            "-A -t 10.0.0.1:80 -p 60 -M 255.255.255.0",
            persistent(svc(web), 60, mask24),
        ),
        (
            "-A -t 10.0.0.1:80 -p 60 --netmask 255.255.255.0",
            persistent(svc(web), 60, mask24),
        ),
        // ipvsadm does not check that a mask is contiguous; nor does the kernel.
        (
            "-A -t 10.0.0.1:80 -p 60 -M 255.0.255.0",
            persistent(svc(web), 60, Netmask::V4(Ipv4Addr::new(255, 0, 255, 0))),
        ),
        (
            "-A -t [2001:db8::1]:80 -p",
            persistent(svc(v6), 360, Netmask::V6(128)),
        ),
        (
            "-A -t [2001:db8::1]:80 -p 60 -M 64",
            persistent(svc(v6), 60, Netmask::V6(64)),
        ),
        (
            "-A -f 1 -6 -p -M 48",
            persistent(svc(fwm(Family::Ipv6, 1)), 360, Netmask::V6(48)),
        ),
        (
            "-A -f 1 -p -M 255.255.0.0",
            persistent(
                svc(fwm(Family::Ipv4, 1)),
                360,
                Netmask::V4(Ipv4Addr::new(255, 255, 0, 0)),
            ),
        ),
        // Ours: -M applies whatever its position. ipvsadm reads it before it
        // knows the family here and then silently resets it to 128.
        (
            "-A -M 64 -t [2001:db8::1]:80 -p",
            persistent(svc(v6), 360, Netmask::V6(64)),
        ),
        // An unbracketed IPv6 address has no port: it is all address.
        (
            "-A -t 2001:db8::1:80 -p",
            persistent(svc(tcp("2001:db8::1:80", 0)), 360, Netmask::V6(128)),
        ),
        // -M without -p: accepted, and meaningless (no persistence to apply it to).
        ("-A -t 10.0.0.1:80 -M 255.255.255.0", svc(web)),
    ];
    for (line, want) in cases {
        assert_eq!(ok(line), Change::AddService(want), "{line}");
    }
}

#[test]
fn service_options() {
    let udp = inet(Protocol::Udp, "10.0.0.1", 53);
    let web = tcp("10.0.0.1", 80);
    let mut sip = persistent(svc(inet(Protocol::Udp, "10.0.0.1", 5060)), 60, V4_HOST);
    sip.pe_name = Some("sip".to_string());
    let mut pe_only = svc(web);
    pe_only.pe_name = Some("sip".to_string());
    let sched12 = ServiceFlags::SCHED1 | ServiceFlags::SCHED2;
    let cases: Vec<(&str, VirtualService)> = vec![
        (
            "-A -u 10.0.0.1:53 -o",
            with_flags(svc(udp), ServiceFlags::ONE_PACKET),
        ),
        (
            "-A -u 10.0.0.1:53 --ops",
            with_flags(svc(udp), ServiceFlags::ONE_PACKET),
        ),
        (
            "-A -f 1 -o",
            with_flags(svc(fwm(Family::Ipv4, 1)), ServiceFlags::ONE_PACKET),
        ),
        ("-A -u 10.0.0.1:5060 -p 60 --pe sip", sip.clone()),
        ("-A -u 10.0.0.1:5060 -p 60 --pe=sip", sip),
        // ipvsadm sends an engine without persistence too.
        ("-A -t 10.0.0.1:80 --pe sip", pe_only),
        (
            "-A -t 10.0.0.1:80 -s sh -b sh-fallback",
            with_flags(with_sched(svc(web), "sh"), ServiceFlags::SCHED1),
        ),
        (
            "-A -t 10.0.0.1:80 -s sh -b sh-port",
            with_flags(with_sched(svc(web), "sh"), ServiceFlags::SCHED2),
        ),
        (
            "-A -t 10.0.0.1:80 -s sh -b sh-port,sh-fallback",
            with_flags(with_sched(svc(web), "sh"), sched12),
        ),
        // -b is read last, against the final scheduler.
        (
            "-A -t 10.0.0.1:80 -b sh-port -s sh",
            with_flags(with_sched(svc(web), "sh"), ServiceFlags::SCHED2),
        ),
        (
            "-A -t 10.0.0.1:80 -s mh --sched-flags mh-fallback,mh-port",
            with_flags(with_sched(svc(web), "mh"), sched12),
        ),
        (
            "-A -t 10.0.0.1:80 -b flag-1,flag-2,flag-3",
            with_flags(svc(web), sched12 | ServiceFlags::SCHED3),
        ),
        (
            "-A -t 10.0.0.1:80 -s sh -b flag-3",
            with_flags(with_sched(svc(web), "sh"), ServiceFlags::SCHED3),
        ),
        // Empty items are skipped, as strtok does.
        (
            "-A -t 10.0.0.1:80 -b ,flag-1,,flag-2",
            with_flags(svc(web), sched12),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(ok(line), Change::AddService(want), "{line}");
    }
}

#[test]
fn destination_commands() {
    let web = tcp("10.0.0.1", 80);
    let v6 = tcp("2001:db8::1", 80);
    let f1 = fwm(Family::Ipv4, 1);
    let weighted = |mut d: Destination, w: u32| {
        d.weight = w;
        d
    };
    let cases: Vec<(&str, Change)> = vec![
        // Direct routing is the default, and it uses the service port.
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2",
            Change::AddDest(web, dst("10.0.0.2", 80, Forward::Route)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080",
            Change::AddDest(web, dst("10.0.0.2", 80, Forward::Route)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g",
            Change::AddDest(web, dst("10.0.0.2", 80, Forward::Route)),
        ),
        (
            "--add-server -t 10.0.0.1:80 --real-server 10.0.0.2:8080 --gatewaying",
            Change::AddDest(web, dst("10.0.0.2", 80, Forward::Route)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m",
            Change::AddDest(web, dst("10.0.0.2", 8080, Forward::Masq)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 --masquerading",
            Change::AddDest(web, dst("10.0.0.2", 8080, Forward::Masq)),
        ),
        // Without a port, the service's.
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m",
            Change::AddDest(web, dst("10.0.0.2", 80, Forward::Masq)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -i",
            Change::AddDest(
                web,
                dst(
                    "10.0.0.2",
                    80,
                    tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                ),
            ),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 --ipip",
            Change::AddDest(
                web,
                dst(
                    "10.0.0.2",
                    80,
                    tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                ),
            ),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 5",
            Change::AddDest(web, weighted(dst("10.0.0.2", 80, Forward::Masq), 5)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m --weight=0",
            Change::AddDest(web, weighted(dst("10.0.0.2", 80, Forward::Masq), 0)),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -mw7",
            Change::AddDest(web, weighted(dst("10.0.0.2", 80, Forward::Masq), 7)),
        ),
        // Debian's ipvsadm (and the kernel) take weights up to INT_MAX.
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -w 2147483647",
            Change::AddDest(
                web,
                weighted(dst("10.0.0.2", 80, Forward::Masq), i32::MAX as u32),
            ),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -x 100 -y 50",
            Change::AddDest(
                web,
                Destination {
                    upper_threshold: 100,
                    lower_threshold: 50,
                    ..dst("10.0.0.2", 80, Forward::Masq)
                },
            ),
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m --u-threshold 2147483647 --l-threshold=1",
            Change::AddDest(
                web,
                Destination {
                    upper_threshold: i32::MAX as u32,
                    lower_threshold: 1,
                    ..dst("10.0.0.2", 80, Forward::Masq)
                },
            ),
        ),
        (
            "-e -t 10.0.0.1:80 -r 10.0.0.2 -m -w 3",
            Change::EditDest(web, weighted(dst("10.0.0.2", 80, Forward::Masq), 3)),
        ),
        (
            "--edit-server -t 10.0.0.1:80 -r 10.0.0.2",
            Change::EditDest(web, dst("10.0.0.2", 80, Forward::Route)),
        ),
        // -d does not force the service port: what -r says, or the service's.
        (
            "-d -t 10.0.0.1:80 -r 10.0.0.2:8080",
            Change::DelDest(
                web,
                DestKey {
                    addr: ip("10.0.0.2"),
                    port: 8080,
                },
            ),
        ),
        (
            "--delete-server -t 10.0.0.1:80 -r 10.0.0.2",
            Change::DelDest(
                web,
                DestKey {
                    addr: ip("10.0.0.2"),
                    port: 80,
                },
            ),
        ),
        // Fwmark services keep the destination port, whatever the method.
        (
            "-a -f 1 -r 10.0.0.2:8080",
            Change::AddDest(f1, dst("10.0.0.2", 8080, Forward::Route)),
        ),
        (
            "-a -f 1 -r 10.0.0.2 -m",
            Change::AddDest(f1, dst("10.0.0.2", 0, Forward::Masq)),
        ),
        (
            "-a -f 1 -6 -r [2001:db8::2]:0",
            Change::AddDest(fwm(Family::Ipv6, 1), dst("2001:db8::2", 0, Forward::Route)),
        ),
        // IPv6, and tunnels across families.
        (
            "-a -t [2001:db8::1]:80 -r [2001:db8::2]:8080 -m",
            Change::AddDest(v6, dst("2001:db8::2", 8080, Forward::Masq)),
        ),
        (
            "-a -t [2001:db8::1]:80 -r 2001:db8::2 -m",
            Change::AddDest(v6, dst("2001:db8::2", 80, Forward::Masq)),
        ),
        (
            "-a -t [2001:db8::1]:80 -r 10.0.0.2 -i",
            Change::AddDest(
                v6,
                dst(
                    "10.0.0.2",
                    80,
                    tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                ),
            ),
        ),
        (
            "-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -i",
            Change::AddDest(
                web,
                dst(
                    "2001:db8::2",
                    80,
                    tun(TunnelType::Ipip, 0, TunnelChecksum::None),
                ),
            ),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(ok(line), want, "{line}");
    }
}

#[test]
fn tunnel_options() {
    let base = "-a -t 10.0.0.1:80 -r 10.0.0.2 -i";
    let cases: Vec<(&str, Forward)> = vec![
        (
            "--tun-type ipip",
            tun(TunnelType::Ipip, 0, TunnelChecksum::None),
        ),
        (
            "--tun-type gue --tun-port 6080",
            tun(TunnelType::Gue, 6080, TunnelChecksum::None),
        ),
        (
            "--tun-type=gue --tun-port=6080 --tun-nocsum",
            tun(TunnelType::Gue, 6080, TunnelChecksum::None),
        ),
        (
            "--tun-type gue --tun-port 65535 --tun-csum",
            tun(TunnelType::Gue, 65535, TunnelChecksum::Csum),
        ),
        (
            "--tun-type gue --tun-port 1 --tun-remcsum",
            tun(TunnelType::Gue, 1, TunnelChecksum::RemCsum),
        ),
        (
            "--tun-type gre",
            tun(TunnelType::Gre, 0, TunnelChecksum::None),
        ),
        (
            "--tun-type gre --tun-nocsum",
            tun(TunnelType::Gre, 0, TunnelChecksum::None),
        ),
        (
            "--tun-type gre --tun-csum",
            tun(TunnelType::Gre, 0, TunnelChecksum::Csum),
        ),
    ];
    for (opts, want) in cases {
        let line = format!("{base} {opts}");
        assert_eq!(
            ok(&line),
            Change::AddDest(tcp("10.0.0.1", 80), dst("10.0.0.2", 80, want)),
            "{line}"
        );
    }
}

#[test]
fn errors_name_the_problem() {
    // (line, words the message must contain)
    let cases: &[(&str, &[&str])] = &[
        ("", &["no command"]),
        ("-t 10.0.0.1:80 -A", &["command must come first", "-t"]),
        ("-L -n", &["-L", "lists the table"]),
        ("-S", &["-S"]),
        ("-R", &["-R"]),
        ("-h", &["-h"]),
        ("--start-daemon master", &["--start-daemon", "sync daemon"]),
        ("-A -E -t 10.0.0.1:80", &["one command", "-E"]),
        ("-A -t 10.0.0.1:80 --bogus", &["unknown option --bogus"]),
        ("-A -t 10.0.0.1:80 -q", &["unknown option -q"]),
        ("-A -t 10.0.0.1:80 --weigh 5", &["unknown option --weigh"]),
        ("-A -t 10.0.0.1:80 -s", &["-s", "needs a value"]),
        ("-A -t 10.0.0.1:80 -o=1", &["-o", "takes no value"]),
        ("-C --clear=yes", &["--clear", "takes no value"]),
        ("-A", &["needs a service"]),
        ("-a -t 10.0.0.1:80", &["needs a real server"]),
        (
            "-A -t 10.0.0.1:80 extra",
            &["unexpected argument \"extra\""],
        ),
        ("-A -t 10.0.0.1:80 -t 10.0.0.2:80", &["-t", "twice"]),
        ("-A -t 10.0.0.1:80 -f 1", &["-f", "twice", "first as -t"]),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m -g",
            &["-g", "forwarding-method", "twice"],
        ),
        (
            "-A -t 10.0.0.1:80 -w 1",
            &["-w", "weight", "not valid with -A"],
        ),
        (
            "-A -t 10.0.0.1:80 -r 10.0.0.2",
            &["-r", "not valid with -A"],
        ),
        ("-A -t 10.0.0.1:80 -n", &["-n", "numeric", "not valid"]),
        ("-A -t 10.0.0.1:80 --stats", &["--stats", "not valid"]),
        ("-D -t 10.0.0.1:80 -s rr", &["-s", "not valid with -D"]),
        (
            "-d -t 10.0.0.1:80 -r 10.0.0.2 -w 1",
            &["-w", "not valid with -d"],
        ),
        ("-C -t 10.0.0.1:80", &["-t", "not valid with -C"]),
        (
            "--set 1 2 3 -t 10.0.0.1:80",
            &["-t", "not valid with --set"],
        ),
        ("-Z -r 10.0.0.2", &["-r", "not valid with -Z"]),
        (
            "-A -t 10.0.0.1:99999",
            &["invalid port \"99999\"", "-t 10.0.0.1:99999"],
        ),
        ("-A -t 10.0.0.1:", &["invalid port \"\""]),
        (
            "-A -t 10.0.0.1:http",
            &["service name \"http\"", "numeric port"],
        ),
        (
            "-A -t localhost:80",
            &["host name \"localhost\"", "numeric"],
        ),
        (
            "-A -t 10.0.0.256:80",
            &["invalid IPv4 address \"10.0.0.256\""],
        ),
        (
            "-A -t 010.0.0.1:80",
            &["invalid IPv4 address \"010.0.0.1\""],
        ),
        ("-A -t 80", &["missing address", "-t 80"]),
        ("-A -t [2001:db8::1]", &["needs a port"]),
        ("-A -t [2001:db8::1", &["missing ']'"]),
        ("-A -t [10.0.0.1]:80", &["brackets are for IPv6"]),
        ("-A -t [2001:db8::zz]:80", &["invalid IPv6 address"]),
        (
            "-A -t 2001:db8::zz:80",
            &["write IPv6 addresses in brackets"],
        ),
        ("-A -t 10.0.0.1:80 -6", &["-6 must follow -f"]),
        ("-A -6 -f 1", &["-6 must follow -f"]),
        ("-A -f 0", &["invalid fwmark \"0\""]),
        ("-A -f 4294967296", &["invalid fwmark"]),
        ("-A -f 0x10", &["invalid fwmark \"0x10\""]),
        ("-A -t 10.0.0.1:0", &["port 0", "persistent"]),
        ("-A -t 10.0.0.1", &["port 0", "persistent"]),
        ("-E -t 10.0.0.1", &["port 0"]),
        ("-A -t 10.0.0.1:80 -o", &["one-packet", "UDP"]),
        ("-A --sctp-service 10.0.0.1:80 -o", &["one-packet", "UDP"]),
        (
            "-A -t 10.0.0.1:80 -p 0",
            &["invalid persistence timeout \"0\"", "-p"],
        ),
        (
            "-A -t 10.0.0.1:80 -p 2678401",
            &["invalid persistence timeout", "2678400"],
        ),
        (
            "-A -t 10.0.0.1:80 -p rr",
            &["invalid persistence timeout \"rr\""],
        ),
        (
            "-A -t 10.0.0.1:80 --persistent=",
            &["invalid persistence timeout \"\""],
        ),
        (
            "-A -t 10.0.0.1:80 -p 60 -M 24",
            &["dotted netmask", "-M 24"],
        ),
        (
            "-A -t 10.0.0.1:80 -p 60 -M 255.255.255.256",
            &["invalid IPv4 netmask"],
        ),
        (
            "-A -t [2001:db8::1]:80 -p 60 -M 255.255.255.0",
            &["IPv6 service takes a prefix length", "-M 255.255.255.0"],
        ),
        (
            "-A -t [2001:db8::1]:80 -p 60 -M 0",
            &["invalid IPv6 prefix length \"0\""],
        ),
        (
            "-A -t [2001:db8::1]:80 -p 60 -M 129",
            &["invalid IPv6 prefix length \"129\""],
        ),
        (
            "-A -f 1 -6 -p -M 255.255.255.0",
            &["IPv6 service takes a prefix length"],
        ),
        (
            "-A -t 10.0.0.1:80 -s abcdefghijklmnop",
            &["invalid scheduler", "-s"],
        ),
        ("-A -t 10.0.0.1:80 -s RR", &["invalid scheduler \"RR\""]),
        (
            "-A -t 10.0.0.1:80 --pe SIP",
            &["invalid persistence engine \"SIP\""],
        ),
        (
            "-A -t 10.0.0.1:80 -b bogus",
            &["invalid scheduler flag \"bogus\""],
        ),
        (
            "-A -t 10.0.0.1:80 -b sh-port",
            &["sh-port needs scheduler sh", "not wlc"],
        ),
        (
            "-A -t 10.0.0.1:80 -s mh -b sh-fallback",
            &["sh-fallback needs scheduler sh", "not mh"],
        ),
        (
            "-A -t 10.0.0.1:80 -s sh -b mh-port",
            &["mh-port needs scheduler mh"],
        ),
        ("-A -t 10.0.0.1:80 -b ,", &["no scheduler flag"]),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -w 2147483648",
            &["invalid weight \"2147483648\"", "-w"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -w -1",
            &["invalid weight \"-1\""],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -w x",
            &["invalid weight \"x\""],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -x 2147483648",
            &["invalid connection threshold", "-x"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 --l-threshold -5",
            &["invalid connection threshold", "--l-threshold"],
        ),
        (
            "-a -t 10.0.0.1:80 -r host.example -m",
            &["host name", "-r host.example"],
        ),
        (
            "-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -m",
            &["IPv6", "IPv4", "tunnelled"],
        ),
        ("-a -t [2001:db8::1]:80 -r 10.0.0.2", &["only tunnelled"]),
        ("-a -f 1 -r [2001:db8::2]:80", &["only tunnelled"]),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -m --tun-type gre",
            &["--tun-type", "-i"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-csum",
            &["--tun-csum", "-i"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan",
            &["invalid tunnel type \"vxlan\""],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue",
            &["gue tunnels need --tun-port"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 0",
            &["invalid tunnel port \"0\""],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 65536",
            &["invalid tunnel port"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 1 --tun-nocsum --tun-csum",
            &["--tun-nocsum and --tun-csum exclude each other"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-port 6080",
            &["--tun-port is not valid for gre"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum",
            &["--tun-remcsum is not valid for gre"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-csum",
            &["--tun-csum is not valid for ipip"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-port 6080",
            &["--tun-port is not valid for ipip"],
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-info",
            &["--tun-info", "not valid"],
        ),
        ("--set 10 20", &["needs 3 timeout values"]),
        ("--set 10 20 30 40", &["unexpected argument \"40\""]),
        ("--set 2678401 0 0", &["invalid tcp timeout \"2678401\""]),
        ("--set 0 x 0", &["invalid tcpfin timeout \"x\""]),
        ("--set 0 0 -1", &["unknown option -1"]),
    ];
    for (line, needles) in cases {
        let err = match parse(line) {
            Ok(c) => panic!("{line:?} should fail, got {c:?}"),
            Err(e) => e.to_string(),
        };
        for needle in *needles {
            assert!(err.contains(needle), "{line:?}: {err:?} lacks {needle:?}");
        }
    }
}

#[test]
fn restore_input() {
    let input = "\
# a comment line (ipvsadm 1.31 itself stops at it)

ipvsadm -A -t 10.0.0.1:80 -s rr\r
\t-a -t 10.0.0.1:80 -r 10.0.0.2 -m   # trailing comment
-A -f 1 -6 -s ipvsadm wlc
-C";
    let got = parse_restore(input).expect("valid input");
    let web = tcp("10.0.0.1", 80);
    assert_eq!(
        got,
        vec![
            (3, Change::AddService(with_sched(svc(web), "rr"))),
            (4, Change::AddDest(web, dst("10.0.0.2", 80, Forward::Masq))),
            // ipvsadm's reader drops the word "ipvsadm" wherever it stands.
            (5, Change::AddService(svc(fwm(Family::Ipv6, 1)))),
            (6, Change::Flush),
        ]
    );
    assert_eq!(parse_restore("").expect("empty"), vec![]);
    assert_eq!(parse_restore("\n\n  \n# x\n").expect("blank"), vec![]);
}

#[test]
fn restore_errors_name_the_line() {
    let input = "-A -t 10.0.0.1:80\n\n-A -t 10.0.0.1:99999\n-A -t 10.0.0.2:0\n";
    let err = parse_restore(input).expect_err("bad port");
    assert_eq!(err.line, 3);
    assert_eq!(
        err.to_string(),
        "line 3: invalid port \"99999\" (expected 0 to 65535) in -t 10.0.0.1:99999"
    );
    let err = parse_restore("-C\n-L\n").expect_err("list");
    assert_eq!(err.line, 2);
    assert!(
        err.to_string().starts_with("line 2: -L lists the table"),
        "{err}"
    );
}

#[test]
fn never_panics_on_odd_words() {
    let words = [
        "",
        "-",
        "--",
        "---",
        "-=",
        "--=",
        "=",
        "-A",
        "-t",
        "[",
        "]",
        "[]:",
        "[:]:1",
        ":",
        "::",
        "-p",
        "-p=",
        "-b",
        ",",
        "-M",
        "é",
        "-é",
        "--é",
        "-tñ",
        "\u{0}",
        "1:2:3",
        "-6",
        "--set",
        "-1",
        "99999999999999999999999",
        "-f",
        "-r",
        "-i",
        "--tun-type",
        "gue",
    ];
    // Every pair and triple of odd words, after each command.
    for cmd in [
        "-A", "-a", "-D", "-d", "-E", "-e", "-Z", "-C", "--set", "-L",
    ] {
        for a in words {
            for b in words {
                let _ = parse_command(&[cmd, a, b]);
                for c in ["-t", "10.0.0.1:80", "-p", "-r"] {
                    let _ = parse_command(&[cmd, a, b, c]);
                    let _ = parse_command(&[a, cmd, b, c]);
                }
            }
        }
    }
}
