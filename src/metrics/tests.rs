//! The exposition in both formats, from a scrape with a service of each
//! kind: each format's layout, the build and process metrics, and no empty
//! label.

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

fn render(format: Format) -> String {
    let m = Metrics::default();
    m.request("metrics", 200, Duration::from_millis(3));
    m.pass(&PassMetrics {
        elapsed: Duration::from_millis(2),
        changes: &[("add_service", true)],
        resync: false,
    });
    let kernel = [
        entry(inet(), "198.51.100.11", 8080),
        entry(fwmark(), "198.51.100.12", 0),
    ];
    m.render(
        &Scrape {
            raft: &crate::raft::typ::RaftMetrics::new_initial(1),
            reconcile: &ReconcileStatus::default(),
            kernel: Some(&kernel),
            health: &[],
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
