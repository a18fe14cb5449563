//! The size of `/metrics` at scale, for each METRICS_DETAIL: a node's
//! scrape built in memory (no cluster, no kernel) from SERVICES inet
//! services × SERVERS real servers each, every server health-checked and
//! every counter non-zero, rendered in both formats the way `GET /metrics`
//! renders it. Prints, per level and format, the families, the samples
//! (lines that are not comments: what Prometheus stores as series), the
//! bytes and the time of one render (the median of five).
//!
//! Usage: cargo run --release --example metrics_at_scale [SERVICES [SERVERS]]
//! (default 5000 10). The figures are in README, "Metrics".

use ipvs_manager::api::json::{AnnounceView, ReconcileStatus};
use ipvs_manager::cluster::quorum::QuorumState;
use ipvs_manager::health::{ProbedServer, Tracker};
use ipvs_manager::metrics::{Format, Metrics, MetricsDetail, PassMetrics, ProcessStats, Scrape};
use ipvs_manager::model::{
    CheckKind, DestEntry, Destination, HealthCheck, Protocol, ServiceEntry, ServiceKey, Stats,
    VirtualService,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Counters of a plausible size (their digits are most of a sample's
/// bytes after the labels).
fn stats(seed: u64) -> Stats {
    Stats {
        conns: 1_000_000 + seed,
        inpkts: 50_000_000 + seed,
        outpkts: 40_000_000 + seed,
        inbytes: 30_000_000_000 + seed,
        outbytes: 90_000_000_000 + seed,
        ..Default::default()
    }
}

/// `services` × `servers` in the kernel, each server probed (up, changed
/// once), the way a node with health checks on every service sees them.
fn table(
    services: usize,
    servers: usize,
) -> (
    Vec<ServiceEntry>,
    Vec<(ipvs_manager::health::Key, ProbedServer)>,
) {
    let mut kernel = Vec::with_capacity(services);
    let mut health = Vec::with_capacity(services * servers);
    for i in 0..services {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + index)),
            port: 80,
        };
        let mut destinations = Vec::with_capacity(servers);
        for j in 0..servers {
            let n = index
                .saturating_mul(servers as u32)
                .saturating_add(j as u32);
            let mut dest = Destination::new(IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n)), 8080);
            dest.weight = 100;
            let mut tracker = Tracker::default();
            tracker.since_ms = Some(1_796_637_600_000);
            health.push((
                (key, dest.key()),
                ProbedServer {
                    target: SocketAddr::new(dest.addr, dest.port),
                    check: HealthCheck::new(CheckKind::Tcp),
                    tracker,
                },
            ));
            let mut entry = DestEntry::new(dest);
            entry.active_conns = 120;
            entry.inactive_conns = 3_400;
            entry.stats = stats(u64::from(n));
            destinations.push(entry);
        }
        kernel.push(ServiceEntry {
            service: VirtualService::new(key),
            stats: stats(i as u64),
            destinations,
        });
    }
    (kernel, health)
}

fn main() -> ExitCode {
    let args: Vec<usize> = match std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>())
        .collect::<Result<Vec<usize>, _>>()
    {
        Ok(args) if args.len() <= 2 && args.iter().all(|&n| (1..=65_536).contains(&n)) => args,
        _ => {
            eprintln!("usage: metrics_at_scale [SERVICES [SERVERS]] (1 to 65536 each)");
            return ExitCode::from(2);
        }
    };
    let services = args.first().copied().unwrap_or(5_000);
    let servers = args.get(1).copied().unwrap_or(10);
    if services * servers > 1 << 20 {
        eprintln!("at most 1,048,576 real servers in all (172.16.0.0/12 holds them)");
        return ExitCode::from(2);
    }
    let (kernel, health) = table(services, servers);
    let raft = ipvs_manager::raft::typ::RaftMetrics::new_initial(1);
    let reconcile = ReconcileStatus::default();
    let store = Default::default();
    let process = ProcessStats::read();
    let quorum = QuorumState {
        ok: true,
        age: Some(Duration::from_millis(40)),
        leader: Some(1),
        uptime: Duration::from_secs(60),
        lost_after: ipvs_manager::cluster::quorum::LOST_AFTER,
    };
    let announce = AnnounceView::default();
    let scrape = Scrape {
        raft: &raft,
        reconcile: &reconcile,
        kernel: Some(&kernel),
        health: &health,
        all_down: &[],
        store: &store,
        free_bytes: Some(1 << 30),
        problems: &[],
        process: &process,
        quorum: &quorum,
        announce: &announce,
    };
    println!("{services} services x {servers} real servers, every server health-checked");
    println!(
        "{:<8} {:<12} {:>9} {:>9} {:>12} {:>10}",
        "detail", "format", "families", "samples", "bytes", "render"
    );
    for detail in [MetricsDetail::Server, MetricsDetail::Service] {
        let metrics = Metrics::new(detail);
        // A few API requests and a pass, as a running node has.
        metrics.request("metrics", 200, Duration::from_millis(3));
        metrics.request("listServices", 200, Duration::from_millis(5));
        metrics.pass(&PassMetrics {
            elapsed: Duration::from_millis(20),
            changes: &[("add_service", true)],
            resync: false,
        });
        for (format, format_name) in [
            (Format::Prometheus, "text 0.0.4"),
            (Format::OpenMetrics, "openmetrics"),
        ] {
            let mut times = Vec::new();
            let mut text = String::new();
            for _ in 0..5 {
                let start = Instant::now();
                text = metrics.render(&scrape, format);
                times.push(start.elapsed());
            }
            times.sort();
            let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
            let samples = text
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count();
            println!(
                "{:<8} {:<12} {:>9} {:>9} {:>12} {:>8.0}ms",
                match detail {
                    MetricsDetail::Server => "server",
                    MetricsDetail::Service => "service",
                },
                format_name,
                families,
                samples,
                text.len(),
                times[times.len() / 2].as_secs_f64() * 1000.0
            );
        }
    }
    ExitCode::SUCCESS
}
