//! Write benchmark of a 3-node cluster on loopback: acknowledged writes per
//! second with 1 and with 64 concurrent clients, p50/p99 latency, and the time
//! from kill -9 of the leader to the next acknowledged write.
//!
//! Each write is a `PUT` of a real server's weight, sent round-robin to all
//! three nodes (followers forward to the leader); every acknowledged write is
//! committed by a quorum and flushed to disk first. Each client owns one
//! service, so writes do not conflict.
//!
//! `--services N` adds N idle services of 10 servers each (in one
//! `PUT /api/v1/config`), to measure writes into a large table.
//!
//! Usage: bench_cluster [--binary target/release/ipvs-manager] [--seconds 10] [--services 0]

use serde_json::json;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Node {
    name: String,
    http: u16,
    raft: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start(binary: &str, dir: &std::path::Path, node: &mut Node, join: Option<u16>) {
    let mut cmd = Command::new(binary);
    cmd.env("SERVER_PORT", node.http.to_string())
        .env("RAFT_PORT", node.raft.to_string())
        .env("RAFT_NODE_ID", &node.name)
        .env("RAFT_VOL_DIR", dir.join(&node.name))
        .env("IPVS_KERNEL", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(port) = join {
        cmd.env("RAFT_LEADER", format!("127.0.0.1:{port}"));
    }
    node.child = Some(cmd.spawn().expect("start node"));
}

async fn wait_voters(http: &reqwest::Client, port: u16, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/api/v1/cluster"))
            .send()
            .await
        {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                let voters = v["members"]
                    .as_array()
                    .map_or(0, |m| m.iter().filter(|m| m["voter"] == true).count());
                if voters == n && !v["leader_id"].is_null() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cluster did not form");
}

struct Run {
    writes: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `clients` tasks writing for `seconds`; writes go to `ports` round-robin.
async fn load(http: &reqwest::Client, ports: &[u16], clients: usize, seconds: u64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, stop, latencies, ports) = (
            http.clone(),
            stop.clone(),
            latencies.clone(),
            ports.to_vec(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let port = ports[(c + n) % ports.len()];
                let url = format!(
                    "http://127.0.0.1:{port}/api/v1/services/tcp-192.0.2.{}-80/servers/198.51.100.1-8080",
                    c + 1
                );
                let t = Instant::now();
                let ok = http
                    .put(url)
                    .json(&json!({"address": "198.51.100.1", "port": 8080, "weight": n % 100 + 1}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    mine.push(t.elapsed());
                }
            }
            latencies.lock().expect("lock").extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    let mut latencies = std::mem::take(&mut *latencies.lock().expect("lock"));
    latencies.sort();
    Run {
        writes: latencies.len(),
        elapsed,
        latencies,
    }
}

#[tokio::main]
async fn main() {
    let mut binary = "target/release/ipvs-manager".to_string();
    let mut seconds = 10u64;
    let mut idle_services = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--binary" => binary = args.next().expect("--binary value"),
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds value")
            }
            "--services" => {
                idle_services = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--services value")
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node {
            name: format!("node{i}"),
            http: free_port(),
            raft: free_port(),
            child: None,
        })
        .collect();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let first = nodes[0].http;
    start(&binary, dir.path(), &mut nodes[0], None);
    wait_voters(&http, first, 1).await;
    for node in nodes.iter_mut().skip(1) {
        start(&binary, dir.path(), node, Some(first));
    }
    wait_voters(&http, first, 3).await;
    // One service per client, and the idle ones, in one write.
    let mut services: Vec<serde_json::Value> = (0..64)
        .map(|c| {
            json!({"protocol": "tcp", "address": format!("192.0.2.{}", c + 1), "port": 80,
                   "servers": [{"address": "198.51.100.1", "port": 8080}]})
        })
        .collect();
    services.extend((0..idle_services).map(|i| {
        let servers: Vec<_> = (0..10)
            .map(|s| json!({"address": format!("10.1.{}.{}", s, i % 250 + 1), "port": 8080}))
            .collect();
        json!({"protocol": "tcp", "address": format!("10.0.{}.{}", i / 250, i % 250 + 1),
               "port": 80, "servers": servers})
    }));
    let r = http
        .put(format!("http://127.0.0.1:{first}/api/v1/config"))
        .json(&json!({ "services": services }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("create services");
    assert!(r.status().is_success(), "create services: {}", r.status());
    let ports: Vec<u16> = if std::env::var_os("BENCH_LEADER_ONLY").is_some() {
        vec![first]
    } else {
        nodes.iter().map(|n| n.http).collect()
    };
    println!("| clients | acknowledged writes/s | p50 | p99 |");
    println!("|---|---|---|---|");
    for clients in [1, 64] {
        let run = load(&http, &ports, clients, seconds).await;
        println!(
            "| {clients} | {:.0} | {:.2} ms | {:.2} ms |",
            run.writes as f64 / run.elapsed.as_secs_f64(),
            percentile(&run.latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&run.latencies, 0.99).as_secs_f64() * 1000.0,
        );
    }

    // Failover: kill -9 the leader, then write to the survivors until one
    // write is acknowledged.
    let view: serde_json::Value = http
        .get(format!("http://127.0.0.1:{first}/api/v1/cluster"))
        .send()
        .await
        .expect("cluster")
        .json()
        .await
        .expect("cluster json");
    let leader = view["leader_id"].as_str().expect("leader").to_string();
    let idx = nodes
        .iter()
        .position(|n| n.name == leader)
        .expect("leader node");
    let survivors: Vec<u16> = nodes
        .iter()
        .filter(|n| n.name != leader)
        .map(|n| n.http)
        .collect();
    let killed = Instant::now();
    if let Some(mut child) = nodes[idx].child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut n = 0usize;
    let failover = loop {
        n += 1;
        let port = survivors[n % survivors.len()];
        let ok = http
            .put(format!("http://127.0.0.1:{port}/api/v1/services/tcp-192.0.2.1-80/servers/198.51.100.1-8080"))
            .json(&json!({"address": "198.51.100.1", "port": 8080, "weight": n % 100 + 1}))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break killed.elapsed();
        }
        if killed.elapsed() > Duration::from_secs(30) {
            panic!("no write acknowledged within 30 s of the leader's death");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!();
    println!(
        "failover: kill -9 of the leader to the next acknowledged write: {} ms",
        failover.as_millis()
    );
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
