//! The size of `GET /api/v1/traffic` at scale: SERVICES inet services ×
//! SERVERS real servers in the desired state and in each of NODES members'
//! kernels, summarized and assembled by the same code a node runs
//! ([`ipvs_manager::node::traffic`]), without a cluster. Prints, idle
//! (every counter zero, as a fresh table) and busy (every rate non-zero and
//! different each round, 90 rounds so every sparkline is full): the whole
//! table, the changes after the previous answer (`?since=`), one member's
//! summary as its peers poll it, and one service's history on one member.
//!
//! Usage: cargo run --release --example traffic_at_scale [SERVICES [SERVERS [NODES]]]
//! (default 5000 10 3). The figures are in README, "Traffic".

use ipvs_manager::api::json::NodeTrafficSummary;
use ipvs_manager::health::HealthTable;
use ipvs_manager::model::{
    DesiredState, DestEntry, Destination, Protocol, ServiceConfig, ServiceEntry, ServiceKey, Stats,
    VirtualService,
};
use ipvs_manager::node::traffic::{summarize, Board, History, HISTORY};
use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Instant;

/// The desired state and a kernel table holding it, rates scaled by
/// `busy` (0: idle).
fn setup(services: usize, servers: usize) -> (DesiredState, Vec<ServiceEntry>) {
    let mut configs = Vec::with_capacity(services);
    let mut kernel = Vec::with_capacity(services);
    for i in 0..services {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + index)),
            port: 80,
        };
        let dests: Vec<Destination> = (0..servers)
            .map(|j| {
                let n = index
                    .saturating_mul(servers as u32)
                    .saturating_add(j as u32);
                Destination::new(IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n)), 8080)
            })
            .collect();
        configs.push(ServiceConfig::new(
            VirtualService::new(key),
            dests.iter().copied(),
            1,
        ));
        kernel.push(ServiceEntry {
            service: VirtualService::new(key),
            stats: Stats::default(),
            destinations: dests.into_iter().map(DestEntry::new).collect(),
        });
    }
    (configs.into_iter().collect(), kernel)
}

/// Plausible traffic for round `round`: a few hundred connections a
/// second, megabytes a second, connections in the thousands.
fn busy(kernel: &mut [ServiceEntry], round: u64) {
    for (i, e) in kernel.iter_mut().enumerate() {
        let n = i as u64 + round;
        e.stats = Stats {
            cps: 100 + n % 400,
            inbps: 1_000_000 + n * 37,
            outbps: 20_000_000 + n * 91,
            inpps: 3_000 + n % 1000,
            outpps: 5_000 + n % 1000,
            ..Default::default()
        };
        for d in &mut e.destinations {
            d.active_conns = 120 + (n % 50) as u32;
            d.inactive_conns = 3_400 + (n % 300) as u32;
        }
    }
}

fn size(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

fn arg(n: usize, default: usize) -> Result<usize, String> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(a) => a.parse().map_err(|_| format!("not a number: {a}")),
    }
}

fn main() -> ExitCode {
    let parsed = (|| Ok::<_, String>((arg(1, 5000)?, arg(2, 10)?, arg(3, 3)?)))();
    let Ok((services, servers, nodes)) = parsed else {
        eprintln!("usage: traffic_at_scale [SERVICES [SERVERS [NODES]]]");
        return ExitCode::FAILURE;
    };
    let (desired, mut kernel) = setup(services, servers);
    let health = HealthTable::default();
    let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let ids: Vec<String> = desired
        .services
        .keys()
        .map(ipvs_manager::api::service_id)
        .collect();
    let mut board = Board::default();
    let mut history = History::default();
    println!("{services} services x {servers} real servers x {nodes} nodes");
    println!("state  answer                          bytes      build");
    for (state, rounds) in [("idle", 2u64), ("busy", HISTORY as u64)] {
        for round in 0..rounds {
            if state == "busy" {
                busy(&mut kernel, round);
            }
            let started = Instant::now();
            history.record(round * 10_000, &kernel);
            let own = NodeTrafficSummary {
                kernel: true,
                sampled_at_ms: Some(round * 10_000),
                read_failures: 0,
                services: summarize(&desired, Some(&kernel), &health),
            };
            // Every member the same table: the sizes depend on the digits.
            let members: Vec<(String, Option<&NodeTrafficSummary>)> =
                names.iter().map(|n| (n.clone(), Some(&own))).collect();
            board = board.next(ids.iter().cloned(), &members);
            let built = started.elapsed();
            if round + 1 == rounds {
                let full = board.view(None);
                let since = board.view(Some(full.sample - 1));
                println!(
                    "{state}   GET /api/v1/traffic       {:>12} {:>8.0?}",
                    size(&full),
                    built
                );
                println!(
                    "{state}   GET ...?since=(previous)  {:>12}   ({} rows)",
                    size(&since),
                    since.services.len()
                );
                println!("{state}   a member's summary        {:>12}", size(&own));
            }
        }
    }
    if let Some(key) = desired.services.keys().next() {
        println!(
            "busy   one service's 15-min history on one member: {} bytes",
            size(&history.series(key))
        );
    }
    ExitCode::SUCCESS
}
