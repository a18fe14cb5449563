//! The exposition in both formats, from a scrape with a service of each
//! kind: each format's layout, the build and process metrics, no empty
//! label, and what each METRICS_DETAIL leaves in.

use super::*;
use crate::model::{DestEntry, Destination, Family as IpFamily, Protocol, VirtualService};
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("fixture address")
}

fn inet() -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: ip("192.0.2.10"),
        port: 80,
    }
}

fn fwmark() -> ServiceKey {
    ServiceKey::Fwmark {
        family: IpFamily::Ipv4,
        mark: 7,
    }
}

fn entry(key: ServiceKey, server: &str, port: u16) -> ServiceEntry {
    ServiceEntry {
        service: VirtualService::new(key),
        stats: Default::default(),
        destinations: vec![DestEntry::new(Destination::new(ip(server), port))],
    }
}

fn process() -> ProcessStats {
    ProcessStats {
        cpu_seconds: Some(1.25),
        resident_memory_bytes: Some(20 << 20),
        virtual_memory_bytes: Some(900 << 20),
        start_time_seconds: Some(1_700_000_000.5),
        open_fds: Some(12),
        max_fds: Some(65536.0),
    }
}

/// An exposition with a sample in every kind of family: counters (with and
/// without labels), gauges, histograms, the build info; an inet and a
/// fwmark service in the kernel and all down.
/// A node announcing one address over BGP, with the parts of every mode
/// filled in so that each series is rendered.
fn announce() -> crate::api::json::AnnounceView {
    use crate::api::json::*;
    AnnounceView {
        mode: "bgp".into(),
        state: "announcing".into(),
        since: Some("2026-12-07T10:00:00Z".into()),
        problem: None,
        vips: vec![
            VipView {
                address: ip("192.0.2.10"),
                services: vec!["tcp-192.0.2.10-80".into()],
                can_serve: true,
                announced: true,
                owner: None,
                since: Some("2026-12-07T10:00:01Z".into()),
                why_not: None,
            },
            VipView {
                address: ip("192.0.2.11"),
                services: vec!["tcp-192.0.2.11-80".into()],
                can_serve: false,
                announced: false,
                owner: None,
                since: None,
                why_not: Some("every server of tcp-192.0.2.11-80 is down on this node".into()),
            },
        ],
        bgp: Some(BgpView {
            speaker: "bird".into(),
            local_as: 65001,
            router_id: "192.0.2.250".parse().unwrap(),
            table: 221,
            bfd_detect_ms: Some(300),
            peers: vec![BgpPeerView {
                address: ip("192.0.2.254"),
                asn: 65000,
                state: "Established".into(),
                since: None,
                exported: Some(1),
                bfd: Some("Up".into()),
            }],
        }),
        l2: Some(L2View {
            interface: "eth0".into(),
            lease_ms: 1000,
            lease_held: true,
            lease_left_ms: Some(750),
            last_announcement: None,
        }),
        sync: Some(SyncView {
            interface: "eth1".into(),
            sync_id: 1,
            group: ip("224.0.0.81"),
            port: 8848,
            ttl: 1,
            master: true,
            backup: false,
            problem: None,
        }),
        sysctls: vec![SysctlView {
            name: "net.ipv4.vs.sloppy_tcp".into(),
            wanted: "1".into(),
            value: Some("0".into()),
            why: "pick up flows mid-stream".into(),
            ok: false,
            problem: Some("differs, and SYSCTLS=leave".into()),
        }],
    }
}

/// The inet service's two real servers: one taking connections, one
/// drained (weight 0), both with connections.
fn inet_entry() -> ServiceEntry {
    let mut e = entry(inet(), "198.51.100.11", 8080);
    e.destinations[0].dest.weight = 3;
    e.destinations[0].active_conns = 4;
    e.destinations[0].inactive_conns = 1;
    let mut drained = DestEntry::new(Destination::new(ip("198.51.100.13"), 8080));
    drained.dest.weight = 0;
    drained.active_conns = 2;
    drained.inactive_conns = 5;
    e.destinations.push(drained);
    e
}

/// This node probes both of the inet service's servers: the first up, the
/// second down since a known time.
fn health() -> Vec<(crate::health::Key, crate::health::ProbedServer)> {
    let probed = |addr: &str, up: bool| {
        let dest = Destination::new(ip(addr), 8080);
        let mut tracker = crate::health::Tracker::default();
        tracker.up = up;
        tracker.since_ms = (!up).then_some(1_796_637_600_000);
        (
            (inet(), dest.key()),
            crate::health::ProbedServer {
                target: std::net::SocketAddr::new(dest.addr, dest.port),
                check: crate::model::HealthCheck::new(crate::model::CheckKind::Tcp),
                tracker,
            },
        )
    };
    vec![
        probed("198.51.100.11", true),
        probed("198.51.100.13", false),
    ]
}

fn render(format: Format) -> String {
    render_detail(format, MetricsDetail::Server)
}

fn render_detail(format: Format, detail: MetricsDetail) -> String {
    let m = Metrics::new(detail);
    m.request("metrics", 200, Duration::from_millis(3));
    m.pass(&PassMetrics {
        elapsed: Duration::from_millis(2),
        changes: &[("add_service", true)],
        resync: false,
    });
    let kernel = [inet_entry(), entry(fwmark(), "198.51.100.12", 0)];
    let health = health();
    m.render(
        &Scrape {
            raft: &crate::raft::typ::RaftMetrics::new_initial(1),
            reconcile: &ReconcileStatus::default(),
            kernel: Some(&kernel),
            health: &health,
            all_down: &[inet(), fwmark()],
            store: &Default::default(),
            free_bytes: Some(1 << 30),
            problems: &[],
            process: &process(),
            quorum: &crate::cluster::quorum::QuorumState {
                ok: true,
                age: Some(Duration::from_millis(40)),
                leader: Some(1),
                uptime: Duration::from_secs(60),
                lost_after: crate::cluster::quorum::LOST_AFTER,
            },
            announce: &announce(),
        },
        format,
    )
}

/// The sample lines (not comments).
fn samples(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
}

/// A sample line's metric name.
fn name(sample: &str) -> &str {
    sample.split(['{', ' ']).next().unwrap_or_default()
}

/// Checks that each sample belongs to the family of the `# TYPE` line above
/// it, named the way `format` names samples; returns the families by type.
fn families(text: &str, format: Format) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE name type");
            found.push((family.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (family, kind) = found.last().expect("a sample before any # TYPE");
        let allowed: Vec<String> = match (format, kind.as_str()) {
            (Format::OpenMetrics, "counter") => vec![format!("{family}_total")],
            (Format::OpenMetrics, "info") => vec![format!("{family}_info")],
            (_, "histogram") => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            (_, "counter" | "gauge") => vec![family.clone()],
            other => panic!("unexpected type {other:?} in {format:?}"),
        };
        assert!(
            allowed.iter().any(|a| a == name(line)),
            "{format:?}: sample {line:?} under # TYPE {family} {kind}"
        );
    }
    found
}

#[test]
fn prometheus_text_names_the_samples_in_its_type_lines() {
    let text = render(Format::Prometheus);
    let families = families(&text, Format::Prometheus);
    let has = |name: &str, kind: &str| families.contains(&(name.to_string(), kind.to_string()));
    assert!(has("ipvs_manager_api_requests_total", "counter"), "{text}");
    assert!(has("ipvs_service_connections_total", "counter"), "{text}");
    assert!(has(
        "ipvs_manager_api_request_duration_seconds",
        "histogram"
    ));
    assert!(has("ipvs_server_weight", "gauge"));
    // The info metric is a gauge named for its sample.
    assert!(has("ipvs_manager_build_info", "gauge"), "{text}");
    assert!(
        text.contains("# HELP ipvs_manager_api_requests_total API requests"),
        "{text}"
    );
    // OpenMetrics only.
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# UNIT"), "{text}");
    assert!(!families.iter().any(|(_, kind)| kind == "info"));
}

#[test]
fn openmetrics_names_the_family_and_ends_with_eof() {
    let text = render(Format::OpenMetrics);
    let families = families(&text, Format::OpenMetrics);
    let has = |name: &str, kind: &str| families.contains(&(name.to_string(), kind.to_string()));
    assert!(has("ipvs_manager_api_requests", "counter"), "{text}");
    assert!(has("ipvs_manager_build", "info"), "{text}");
    assert!(has("process_cpu_seconds", "counter"), "{text}");
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
}

/// Both formats carry the same samples; only the comments differ, and how
/// a histogram's buckets are written (where `le` goes, `5e-05` or
/// `0.00005`). Series come in no fixed order.
#[test]
fn both_formats_carry_the_same_samples() {
    let sorted = |text: &str, buckets: bool| {
        let mut lines: Vec<String> = samples(text)
            .filter(|l| buckets == name(l).ends_with("_bucket"))
            .map(|l| {
                if buckets {
                    name(l).to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        lines.sort();
        lines
    };
    let prom = render(Format::Prometheus);
    let om = render(Format::OpenMetrics);
    assert_eq!(sorted(&prom, false), sorted(&om, false));
    assert_eq!(sorted(&prom, true), sorted(&om, true));
}

#[test]
fn build_info_and_process_metrics() {
    let text = render(Format::Prometheus);
    let build = samples(&text)
        .find(|l| name(l) == "ipvs_manager_build_info")
        .expect("build info");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(build.contains(&version), "{build}");
    assert!(build.contains("revision=\""), "{build}");
    assert!(build.ends_with("} 1"), "{build}");
    for want in [
        "process_cpu_seconds_total 1.25",
        "process_resident_memory_bytes 20971520",
        "process_virtual_memory_bytes 943718400",
        "process_start_time_seconds 1700000000.5",
        "process_open_fds 12",
        "process_max_fds 65536",
    ] {
        assert!(
            samples(&text).any(|l| l == want || l == format!("{want}.0")),
            "{want} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    assert!(text.contains("# TYPE process_open_fds gauge"));
}

/// A figure /proc did not give is left out, not reported as 0.
#[test]
fn unread_process_figures_are_left_out() {
    let mut r = Registry::default();
    ProcessStats {
        open_fds: Some(5),
        ..Default::default()
    }
    .register(&mut r);
    let text = Format::Prometheus.encode(&r);
    let names: Vec<&str> = samples(&text).map(name).collect();
    assert_eq!(names, ["process_open_fds"], "{text}");
}

/// An inet service has no fwmark label, a fwmark service no address or
/// port; no series anywhere has a label with an empty value.
#[test]
fn no_label_is_empty() {
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = render(format);
        assert!(!text.contains("=\"\""), "{format:?}:\n{text}");
        for family in [
            "ipvs_service_connections_total",
            "ipvs_manager_health_all_down",
        ] {
            let lines: Vec<&str> = samples(&text).filter(|l| name(l) == family).collect();
            assert!(
                lines.contains(&format!(
                    "{family}{{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"}} {}",
                    if family.ends_with("_total") { "0" } else { "1" }
                ).as_str()),
                "{format:?}: {lines:?}"
            );
            assert!(
                lines.contains(
                    &format!(
                        "{family}{{service=\"fwmark-ipv4-7\",protocol=\"ipv4\",fwmark=\"7\"}} {}",
                        if family.ends_with("_total") { "0" } else { "1" }
                    )
                    .as_str()
                ),
                "{format:?}: {lines:?}"
            );
        }
    }
}

#[test]
fn the_announcement_is_exported() {
    let text = render(Format::Prometheus);
    let has = |line: &str| samples(&text).any(|l| l == line);
    for line in [
        "ipvs_manager_announce_state{mode=\"bgp\",state=\"announcing\"} 1",
        "ipvs_manager_announce_state_change_timestamp_seconds 1796637600",
        "ipvs_manager_vip_announced{address=\"192.0.2.10\"} 1",
        "ipvs_manager_vip_announced{address=\"192.0.2.11\"} 0",
        "ipvs_manager_vip_can_serve{address=\"192.0.2.11\"} 0",
        "ipvs_manager_vip_announced_change_timestamp_seconds{address=\"192.0.2.10\"} 1796637601",
        "ipvs_manager_bgp_session_up{peer=\"192.0.2.254\",peer_as=\"65000\"} 1",
        "ipvs_manager_bgp_routes_exported{peer=\"192.0.2.254\",peer_as=\"65000\"} 1",
        "ipvs_manager_bgp_bfd_up{peer=\"192.0.2.254\",peer_as=\"65000\"} 1",
        "ipvs_manager_l2_lease_held 1",
        "ipvs_manager_l2_lease_remaining_seconds 0.75",
        "ipvs_manager_sync_daemon_running{role=\"master\"} 1",
        "ipvs_manager_sync_daemon_running{role=\"backup\"} 0",
        "ipvs_manager_sysctl_ok{name=\"net.ipv4.vs.sloppy_tcp\"} 0",
    ] {
        assert!(has(line), "no {line:?} in:\n{text}");
    }
}

/// The per-service sums of the real servers, which both levels carry.
const SUMS: &[&str] = &[
    "ipvs_service_servers{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 2",
    "ipvs_service_servers_weighted{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 1",
    "ipvs_service_active_connections{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 6",
    "ipvs_service_inactive_connections{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 6",
    "ipvs_service_servers{service=\"fwmark-ipv4-7\",protocol=\"ipv4\",fwmark=\"7\"} 1",
    "ipvs_manager_health_servers{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 2",
    "ipvs_manager_health_servers_up{service=\"tcp-192.0.2.10-80\",protocol=\"tcp\",address=\"192.0.2.10\",port=\"80\"} 1",
];

/// The families that have a series per real server.
const PER_SERVER: &[&str] = &[
    "ipvs_server_connections_total",
    "ipvs_server_packets_in_total",
    "ipvs_server_packets_out_total",
    "ipvs_server_bytes_in_total",
    "ipvs_server_bytes_out_total",
    "ipvs_server_active_connections",
    "ipvs_server_inactive_connections",
    "ipvs_server_weight",
    "ipvs_manager_health_up",
    "ipvs_manager_health_last_change_timestamp_seconds",
];

#[test]
fn server_detail_has_every_real_server_and_the_sums() {
    let text = render(Format::Prometheus);
    for family in PER_SERVER {
        let lines: Vec<&str> = samples(&text).filter(|l| name(l) == *family).collect();
        // Kernel series: the inet service's two servers and the fwmark
        // one's; health: the two probed, and the one that changed.
        let want = match *family {
            "ipvs_manager_health_up" => 2,
            "ipvs_manager_health_last_change_timestamp_seconds" => 1,
            _ => 3,
        };
        assert_eq!(lines.len(), want, "{family}: {lines:?}");
    }
    assert!(samples(&text).any(|l| l
        == "ipvs_server_weight{service=\"tcp-192.0.2.10-80\",server=\"198.51.100.13-8080\",address=\"198.51.100.13\",port=\"8080\"} 0"));
    assert!(samples(&text).any(|l| l
        == "ipvs_manager_health_up{service=\"tcp-192.0.2.10-80\",server=\"198.51.100.13-8080\",address=\"198.51.100.13\",port=\"8080\"} 0"));
    for line in SUMS {
        assert!(
            samples(&text).any(|l| l == *line),
            "no {line:?} in:\n{text}"
        );
    }
}

/// `service` takes away exactly the series with a `server` label, their
/// `# TYPE` and `# HELP` with them, and keeps everything else as `server`
/// has it, in both formats.
#[test]
fn service_detail_is_server_detail_without_the_real_servers() {
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let full = render_detail(format, MetricsDetail::Server);
        let text = render_detail(format, MetricsDetail::Service);
        // Each sample under its family's # TYPE line.
        let families = families(&text, format);
        for family in PER_SERVER {
            let family = match format {
                Format::OpenMetrics => family.trim_end_matches("_total"),
                Format::Prometheus => family,
            };
            assert!(
                !families.iter().any(|(f, _)| f == family),
                "{format:?}: {family} in\n{text}"
            );
            assert!(
                !text.contains(&format!(" {family} ")),
                "{format:?}:\n{text}"
            );
        }
        assert!(!text.contains("server=\""), "{format:?}:\n{text}");
        for line in SUMS {
            assert!(
                samples(&text).any(|l| l == *line),
                "{format:?}: no {line:?}"
            );
        }
        let sorted = |text: &str, keep: &dyn Fn(&str) -> bool| {
            let mut lines: Vec<String> = samples(text)
                .filter(|l| keep(l))
                .map(str::to_string)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(
            sorted(&text, &|_| true),
            sorted(&full, &|l| !l.contains("server=\"")),
            "{format:?}"
        );
        if format == Format::OpenMetrics {
            assert!(text.ends_with("\n# EOF\n"));
        }
    }
}
