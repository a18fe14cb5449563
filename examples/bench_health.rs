//! Health-check benchmark: how much CPU a node spends on 5,000 (and
//! 10,000) TCP checks a second, and whether it keeps the pace.
//!
//! The checks are the node's own code (`health::run` with the real prober)
//! against 5,000 distinct servers (127.0.x.y on 20 ports) served by a child
//! process, so that this process's CPU time (getrusage) is the probing
//! alone: connect, record, schedule.
//!
//! Run: `cargo run --release --example bench_health`

use ipvs_manager::health::{probe::Prober, Health};
use ipvs_manager::model::{
    CheckKind, Command, DesiredState, Destination, HealthCheck, Protocol, ServiceKey, ServiceSpec,
    VirtualService,
};
use ipvs_manager::store::Committed;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORTS: u16 = 20;
const SERVERS: usize = 5_000;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("serve") {
        return serve();
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the servers");
    let mut first_line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut first_line,
    )
    .expect("the servers' ports");
    let base: u16 = first_line.trim().parse().expect("a port");
    println!(
        "health checks: {SERVERS} TCP servers on 127.0.x.y, ports {base}..{}",
        base + PORTS - 1
    );
    println!(
        "{:>14} {:>12} {:>10} {:>12} {:>10}",
        "target/s", "done/s", "CPU %", "CPU µs/check", "failed"
    );
    for interval_ms in [1000, 500] {
        let r = run(base, interval_ms);
        println!(
            "{:>14} {:>12.0} {:>9.1}% {:>12.1} {:>10}",
            SERVERS as u64 * 1000 / u64::from(interval_ms),
            r.rate,
            r.cpu_share * 100.0,
            r.cpu_per_check_us,
            r.failed
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

struct Figures {
    rate: f64,
    cpu_share: f64,
    cpu_per_check_us: f64,
    failed: u64,
}

fn run(base: u16, interval_ms: u32) -> Figures {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let health = Health::new(None);
        let (tx, rx) = tokio::sync::watch::channel(Committed {
            applied: None,
            desired: Arc::new(desired(base, interval_ms)),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ipvs_manager::health::run(
            health.clone(),
            rx,
            Prober::new(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        // One interval to spread out, one more to settle.
        tokio::time::sleep(Duration::from_millis(u64::from(interval_ms) * 2)).await;
        let (checks0, failed0) = totals(&health);
        let (cpu0, t0) = (cpu_time(), Instant::now());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (checks1, failed1) = totals(&health);
        let (cpu1, elapsed) = (cpu_time(), t0.elapsed());
        let _ = stop_tx.send(());
        let _ = task.await;
        drop(tx);
        let checks = (checks1 - checks0) as f64;
        let cpu = (cpu1 - cpu0).as_secs_f64();
        Figures {
            rate: checks / elapsed.as_secs_f64(),
            cpu_share: cpu / elapsed.as_secs_f64(),
            cpu_per_check_us: cpu * 1e6 / checks.max(1.0),
            failed: failed1 - failed0,
        }
    })
}

/// Probes so far, and servers down now.
fn totals(health: &Health) -> (u64, u64) {
    let snapshot = health.snapshot();
    let checks = snapshot.iter().map(|(_, p)| p.tracker.checks).sum();
    let failed = snapshot
        .iter()
        .filter(|(_, p)| p.tracker.error.is_some())
        .count() as u64;
    (checks, failed)
}

/// 50 services of 100 servers each, every server checked over TCP.
fn desired(base: u16, interval_ms: u32) -> DesiredState {
    let check = HealthCheck {
        interval_ms,
        timeout_ms: interval_ms / 2,
        ..HealthCheck::new(CheckKind::Tcp)
    };
    let mut state = DesiredState::default();
    for s in 0..SERVERS / 100 {
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, s as u8 + 1)),
            port: 80,
        };
        let servers = (0..100)
            .map(|i| {
                let n = s * 100 + i;
                Destination::new(
                    IpAddr::V4(Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250) as u8 + 1)),
                    base + (n as u16 % PORTS),
                )
            })
            .collect();
        let mut spec = ServiceSpec {
            service: VirtualService::new(key),
            servers,
            options: Default::default(),
            server_checks: Default::default(),
        };
        spec.options.health_check = Some(check.clone());
        state.apply(&Command::CreateService(spec), 1);
    }
    state
}

/// This process's user + system CPU time, from /proc/self/stat (in
/// USER_HZ, which Linux fixes at 100 for this file).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the
    // command name (the state is field 3, here 0).
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// The child: accepts and closes connections on PORTS consecutive ports
/// (printing the first) until killed.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (listeners, base) = 'find: loop {
            let first = tokio::net::TcpListener::bind("0.0.0.0:0")
                .await
                .expect("bind");
            let base = first.local_addr().expect("addr").port();
            let mut all = vec![first];
            for p in 1..PORTS {
                match tokio::net::TcpListener::bind(("0.0.0.0", base + p)).await {
                    Ok(l) => all.push(l),
                    Err(_) => continue 'find,
                }
            }
            break (all, base);
        };
        println!("{base}");
        for l in listeners {
            tokio::spawn(async move {
                while let Ok((conn, _)) = l.accept().await {
                    drop(conn);
                }
            });
        }
        std::future::pending::<()>().await;
    });
}
