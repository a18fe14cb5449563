//! Write latency side by side with etcd, on one machine, with one load
//! generator: a 3-member etcd (Debian's `etcd-server`, puts through its JSON
//! gateway) and a 3-node ipvs-manager (`IPVS_KERNEL=off`, creates of
//! services), each started fresh for every measurement, on loopback.
//!
//! Every request is a distinct write — a new key for etcd, a new service for
//! ipvs-manager — from N keep-alive connections for `--seconds`, sent to the
//! leader or round-robin to all three members. Both systems acknowledge a
//! write only once a quorum has it on disk (etcd's fsync per batch; the
//! node's flush per log append). Printed per measurement: acknowledged
//! writes/s, p50, p99, p99.9 and max latency, and ipvs-manager's ratios to
//! etcd's from the same run.
//!
//! Usage: bench_versus_etcd [--binary target/release/ipvs-manager]
//!        [--etcd /usr/bin/etcd] [--seconds 10] [--connections 1,64,256]
//!        [--to leader,round-robin] [--only etcd|ipvs-manager] [--timeline]
//!        [--stages] (`--help` says what each does)

use serde_json::json;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Etcd,
    IpvsManager,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::IpvsManager => "ipvs-manager",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum To {
    Leader,
    RoundRobin,
}

impl To {
    fn name(self) -> &'static str {
        match self {
            To::Leader => "leader",
            To::RoundRobin => "round-robin",
        }
    }
}

/// Write latency side by side with etcd (see the source's documentation).
#[derive(clap::Parser)]
struct Args {
    /// The ipvs-manager binary.
    #[arg(long, default_value = "target/release/ipvs-manager")]
    binary: String,
    /// etcd's binary (Debian's etcd-server).
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: String,
    /// How long each measurement runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Client connections, comma-separated: one measurement each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 256],
          value_parser = clap::value_parser!(u64).range(1..))]
    connections: Vec<u64>,
    /// Where the requests go, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [To::Leader, To::RoundRobin])]
    to: Vec<To>,
    /// Measure one system only.
    #[arg(long, value_enum)]
    only: Option<System>,
    /// Print each run's writes, p99 and max per quarter second, to see
    /// whether the slow writes come together (a stall) or spread.
    #[arg(long)]
    timeline: bool,
    /// After each ipvs-manager run, print each node's write stages from
    /// its `ipvs_manager_write_stage_seconds` histogram.
    #[arg(long)]
    stages: bool,
    /// Measure each line this many times, the systems taking turns, and
    /// add each figure's median: on a shared machine one run's ratios
    /// move by more than many changes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
}

impl Args {
    fn systems(&self) -> Vec<System> {
        self.only
            .map_or(vec![System::Etcd, System::IpvsManager], |s| vec![s])
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Three running members of one system; killed on drop.
struct Cluster {
    system: System,
    /// Each member's client (HTTP) port.
    ports: Vec<u16>,
    /// The leader's index in `ports`.
    leader: usize,
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn quiet(cmd: &mut Command) -> &mut Command {
    cmd.stdout(Stdio::null()).stderr(Stdio::null())
}

async fn start_etcd(http: &reqwest::Client, etcd: &str) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = quiet(
            Command::new(etcd)
                .arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(dir.path().join(format!("m{i}")))
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(&initial)
                .arg("--initial-cluster-state")
                .arg("new"),
        )
        .spawn()
        .map_err(|e| format!("start {etcd}: {e} (install Debian's etcd-server)"))?;
        children.push(child);
    }
    let ports: Vec<u16> = ports.iter().map(|(c, _)| *c).collect();
    let mut cluster = Cluster {
        system: System::Etcd,
        ports,
        leader: 0,
        children,
        _dir: dir,
    };
    // The leader: the member whose id every member names as leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ids = Vec::new();
        let mut leader = None;
        for port in &cluster.ports {
            let status = json_answer(
                http.post(format!("http://127.0.0.1:{port}/v3/maintenance/status"))
                    .json(&json!({})),
            )
            .await
            .unwrap_or_default();
            ids.push(status["header"]["member_id"].as_str().map(String::from));
            leader = leader.or(status["leader"].as_str().map(String::from));
        }
        if let Some(i) = leader.and_then(|l| ids.iter().position(|id| id.as_deref() == Some(&l))) {
            cluster.leader = i;
            return Ok(cluster);
        }
        if Instant::now() > deadline {
            return Err("etcd did not elect a leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start_ipvs_manager(http: &reqwest::Client, binary: &str) -> Result<Cluster, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let nodes: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut children = Vec::new();
    for (i, (port, raft)) in nodes.iter().enumerate() {
        let mut cmd = Command::new(binary);
        cmd.env("SERVER_PORT", port.to_string())
            .env("RAFT_PORT", raft.to_string())
            .env("RAFT_NODE_ID", format!("node{}", i + 1))
            .env("RAFT_VOL_DIR", dir.path().join(format!("node{}", i + 1)))
            .env("IPVS_KERNEL", "off")
            .env("RUST_LOG", "warn");
        if i > 0 {
            cmd.env("RAFT_LEADER", format!("127.0.0.1:{}", nodes[0].0));
        }
        children.push(
            quiet(&mut cmd)
                .spawn()
                .map_err(|e| format!("start {binary}: {e}"))?,
        );
        // The first node bootstraps before the others join it.
        if i == 0 {
            voters(http, nodes[0].0, 1).await?;
        }
    }
    let leader = voters(http, nodes[0].0, 3).await?;
    let ports: Vec<u16> = nodes.iter().map(|(p, _)| *p).collect();
    Ok(Cluster {
        system: System::IpvsManager,
        leader: (0..3)
            .find(|i| leader == format!("node{}", i + 1))
            .ok_or(format!("unknown leader {leader}"))?,
        ports,
        children,
        _dir: dir,
    })
}

/// The JSON answer to `request`, if it got one.
async fn json_answer(request: reqwest::RequestBuilder) -> Option<serde_json::Value> {
    request.send().await.ok()?.json().await.ok()
}

/// Waits until the cluster behind `port` has `n` voters and a leader; its
/// name.
async fn voters(http: &reqwest::Client, port: u16, n: usize) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let view = json_answer(http.get(format!("http://127.0.0.1:{port}/api/v1/cluster"))).await;
        if let Some(v) = view {
            let voters = v["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
            if let (true, Some(leader)) = (voters == n, v["leader_id"].as_str()) {
                return Ok(leader.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("the cluster did not reach {n} voters within 30 s"))
}

/// The address of write number `id`: a distinct service for ipvs-manager,
/// a distinct key (with a service-sized value) for etcd.
fn request(http: &reqwest::Client, system: System, port: u16, id: u64) -> reqwest::RequestBuilder {
    let address = format!("10.{}.{}.{}", (id >> 16) & 255, (id >> 8) & 255, id & 255);
    let port_no = 1 + (id >> 24);
    let service = json!({"protocol": "tcp", "address": address, "port": port_no,
                         "scheduler": "wlc"});
    match system {
        System::IpvsManager => http
            .post(format!("http://127.0.0.1:{port}/api/v1/services"))
            .json(&service),
        System::Etcd => {
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            http.post(format!("http://127.0.0.1:{port}/v3/kv/put"))
                .json(&json!({
                    "key": b64(&format!("/services/tcp-{address}-{port_no}")),
                    "value": b64(&service.to_string()),
                }))
        }
    }
}

struct Measured {
    writes: usize,
    failed: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// Each acknowledged write: when it was sent (from the start) and how
    /// long it took, in sending order per connection.
    timeline: Vec<(Duration, Duration)>,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }
}

/// `connections` clients, each on its own keep-alive connection, writing
/// distinct records for `seconds`.
async fn load(cluster: &Cluster, to: To, connections: usize, seconds: u64) -> Measured {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1));
    let results = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let begin = Instant::now();
    let ports = match to {
        To::Leader => vec![cluster.ports[cluster.leader]],
        To::RoundRobin => cluster.ports.clone(),
    };
    let start = begin;
    let mut tasks = Vec::new();
    for c in 0..connections {
        // One client per connection: a pool of one, kept alive.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let (stop, next, results, ports) =
            (stop.clone(), next.clone(), results.clone(), ports.clone());
        let system = cluster.system;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut failed = 0;
            let port = ports[c % ports.len()];
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let ok = request(&http, system, port, id)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    mine.push((t - begin, t.elapsed()));
                } else {
                    failed += 1;
                }
            }
            let mut results = results.lock().expect("lock");
            results.0.extend(mine);
            results.1 += failed;
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let (timeline, failed): (Vec<(Duration, Duration)>, usize) =
        std::mem::take(&mut *results.lock().expect("lock"));
    let mut latencies: Vec<Duration> = timeline.iter().map(|(_, l)| *l).collect();
    latencies.sort();
    Measured {
        writes: latencies.len(),
        failed,
        elapsed,
        latencies,
        timeline,
    }
}

/// A measurement's figures as printed: writes a second, then p50, p99,
/// p99.9 and max in seconds, and the failed writes.
#[derive(Clone, Copy, Debug)]
struct Figures {
    per_second: f64,
    quantiles: [f64; 4],
    failed: usize,
}

impl Figures {
    fn of(m: &Measured) -> Figures {
        Figures {
            per_second: m.per_second(),
            quantiles: [0.5, 0.99, 0.999, 1.0].map(|q| m.quantile(q).as_secs_f64()),
            failed: m.failed,
        }
    }

    /// Each figure's median over `runs` (the upper one of an even count).
    fn median(runs: &[Figures]) -> Figures {
        let median = |value: &dyn Fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(value).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        Figures {
            per_second: median(&|f| f.per_second),
            quantiles: [0, 1, 2, 3].map(|i| median(&|f| f.quantiles[i])),
            failed: runs.iter().map(|f| f.failed).sum(),
        }
    }

    fn row(&self, to: To, connections: u64, system: &str) -> String {
        let [p50, p99, p999, max] = self.quantiles.map(|s| format!("{:.2}", s * 1000.0));
        format!(
            "| {} | {connections} | {system} | {:.0} | {p50} | {p99} | {p999} | {max} | {} |",
            to.name(),
            self.per_second,
            self.failed
        )
    }

    /// This measurement's figures over `etcd`'s, as a row.
    fn ratio_row(&self, etcd: &Figures, to: To, connections: u64, label: &str) -> String {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        let [p50, p99, p999, max] =
            [0, 1, 2, 3].map(|i| format!("{:.2}×", ratio(self.quantiles[i], etcd.quantiles[i])));
        format!(
            "| {} | {connections} | ratio ipvs-manager / etcd{label} | {:.2}× | {p50} | {p99} | {p999} | {max} | |",
            to.name(),
            ratio(self.per_second, etcd.per_second),
        )
    }
}

/// Writes sent in each quarter second, with their p99 and max.
fn print_timeline(m: &Measured) {
    let window = Duration::from_millis(250);
    let mut windows: Vec<Vec<Duration>> = Vec::new();
    for (sent, latency) in &m.timeline {
        let i = (sent.as_millis() / window.as_millis()) as usize;
        if windows.len() <= i {
            windows.resize(i + 1, Vec::new());
        }
        windows[i].push(*latency);
    }
    for (i, mut w) in windows.into_iter().enumerate() {
        w.sort();
        let at = |q: f64| w.get(((w.len().max(1) - 1) as f64 * q).round() as usize);
        println!(
            "    {:>6.2} s  {:>5} writes  p99 {:>8} ms  max {:>8} ms",
            i as f64 * window.as_secs_f64(),
            w.len(),
            at(0.99).map_or("-".into(), |d| ms(*d)),
            at(1.0).map_or("-".into(), |d| ms(*d)),
        );
    }
}

/// Each node's write stages over the run, from its histogram: count, mean,
/// and the bucket bounds p50 and p99 fall under (the buckets double, so a
/// bound is within 2× of the value), as table rows.
async fn print_stages(http: &reqwest::Client, cluster: &Cluster) -> String {
    let mut out = String::new();
    for (i, port) in cluster.ports.iter().enumerate() {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let Ok(text) = http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        else {
            continue;
        };
        let text = text.text().await.unwrap_or_default();
        let role = if i == cluster.leader {
            "leader"
        } else {
            "follower"
        };
        for StageHistogram {
            stage,
            buckets,
            sum,
        } in stage_histograms(&text)
        {
            let total = buckets.last().map_or(0.0, |(_, n)| *n);
            let mean = sum / total.max(1.0) * 1000.0;
            let under = |q: f64| {
                buckets
                    .iter()
                    .find(|(_, n)| *n >= q * total)
                    .map_or("?".to_string(), |(le, _)| match *le {
                        le if le.is_infinite() => "+Inf".to_string(),
                        le => format!("≤ {:.2}", le * 1000.0),
                    })
            };
            out.push_str(&format!(
                "|  | node{} ({role}) | stage {stage} | {total:.0} times | mean {mean:.3} ms | p50 {} ms | p99 {} ms |  |  |\n",
                i + 1,
                under(0.5),
                under(0.99)
            ));
        }
    }
    out
}

/// One stage's histogram in an exposition: its cumulative buckets (`le`,
/// count) and the seconds spent in it, summed.
struct StageHistogram {
    stage: String,
    buckets: Vec<(f64, f64)>,
    sum: f64,
}

/// Each stage's histogram in an exposition.
fn stage_histograms(text: &str) -> Vec<StageHistogram> {
    let mut stages: Vec<StageHistogram> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("ipvs_manager_write_stage_seconds_") else {
            continue;
        };
        let Some((series, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let Some(stage) = label("stage") else {
            continue;
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let at = match stages.iter().position(|h| h.stage == stage) {
            Some(at) => at,
            None => {
                stages.push(StageHistogram {
                    stage,
                    buckets: Vec::new(),
                    sum: 0.0,
                });
                stages.len() - 1
            }
        };
        let h = &mut stages[at];
        match (series, label("le")) {
            ("bucket", Some(le)) if le == "+Inf" => h.buckets.push((f64::INFINITY, value)),
            ("bucket", Some(le)) => h.buckets.push((le.parse().unwrap_or(f64::NAN), value)),
            ("sum", _) => h.sum = value,
            _ => {}
        }
    }
    stages
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    if args.systems().contains(&System::Etcd) && !Path::new(&args.etcd).exists() {
        eprintln!(
            "bench_versus_etcd: {} not found: install Debian's etcd-server (apt-get install etcd-server)",
            args.etcd
        );
        return std::process::ExitCode::FAILURE;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    println!("| to | connections | system | acknowledged writes/s | p50 ms | p99 ms | p99.9 ms | max ms | failed |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for to in &args.to {
        for connections in &args.connections {
            let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); args.systems().len()];
            for _ in 0..args.repeat {
                for (system, figures) in args.systems().iter().zip(&mut runs) {
                    let cluster = match system {
                        System::Etcd => start_etcd(&http, &args.etcd).await,
                        System::IpvsManager => start_ipvs_manager(&http, &args.binary).await,
                    };
                    let cluster = match cluster {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("bench_versus_etcd: {e}");
                            return std::process::ExitCode::FAILURE;
                        }
                    };
                    let m = load(&cluster, *to, *connections as usize, args.seconds).await;
                    let stages = if args.stages && *system == System::IpvsManager {
                        print_stages(&http, &cluster).await
                    } else {
                        String::new()
                    };
                    drop(cluster);
                    let f = Figures::of(&m);
                    println!("{}", f.row(*to, *connections, system.name()));
                    if args.timeline {
                        print_timeline(&m);
                    }
                    print!("{stages}");
                    figures.push(f);
                }
                if let [etcd, ours] = runs.as_slice() {
                    if let (Some(e), Some(o)) = (etcd.last(), ours.last()) {
                        println!("{}", o.ratio_row(e, *to, *connections, ""));
                    }
                }
            }
            if args.repeat > 1 {
                let medians: Vec<Figures> = runs.iter().map(|r| Figures::median(r)).collect();
                let label = format!(", median of {}", args.repeat);
                for (system, f) in args.systems().iter().zip(&medians) {
                    println!(
                        "{}",
                        f.row(*to, *connections, &format!("{}{label}", system.name()))
                    );
                }
                if let [etcd, ours] = medians.as_slice() {
                    println!("{}", ours.ratio_row(etcd, *to, *connections, &label));
                }
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
