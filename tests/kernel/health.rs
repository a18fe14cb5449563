//! Health checks against real kernels: a 3-node cluster probes real HTTP
//! backends from each load balancer's namespace; a backend that stops
//! answering leaves every node's IPVS table (weight 0) within interval ×
//! fall, traffic through the VIP avoids it, and it comes back after rise
//! successes. Drains win over health; all-down follows the policy.

use crate::reconcile::{http, saved, start_cluster, wait_for};
use crate::support::traffic::get;
use crate::support::{Backend, Site};
use libtest_mimic::Failed;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SERVICE: &str = "/api/v1/services/tcp-10.80.0.1-80";
const INTERVAL: f64 = 0.5;
const FALL: u32 = 2;

/// Node `lb`'s probe of `server` (`10.78.0.12-8080`), from its report.
fn probe(site: &Site, lb: usize, server: &str) -> Value {
    let node = http(&site.lbs[lb], lb, "GET", "/api/v1/node", None).1;
    node["health"]["servers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["server"] == server).cloned())
        .unwrap_or(Value::Null)
}

/// Milliseconds since the Unix epoch on this host (the nodes' clock: they
/// run in this VM).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn backend(site: &Site, i: usize) -> Backend {
    let addr = SocketAddr::from((Site::backend_addr(i), 8080));
    Backend::start(&site.backends[i], &format!("backend{}", i + 1), addr)
}

/// `-a` lines of every load balancer's table, as `(backend index, weight)`.
fn weights(site: &Site) -> Vec<Vec<(usize, u32)>> {
    site.lbs
        .iter()
        .map(|lb| {
            let mut out: Vec<(usize, u32)> = saved(lb)
                .iter()
                .filter(|l| l.starts_with("-a "))
                .filter_map(|l| {
                    let words: Vec<&str> = l.split_whitespace().collect();
                    let server = words.get(words.iter().position(|w| *w == "-r")? + 1)?;
                    let weight = words.get(words.iter().position(|w| *w == "-w")? + 1)?;
                    let i = (0..5)
                        .find(|i| server.starts_with(&format!("{}:", Site::backend_addr(*i))))?;
                    Some((i, weight.parse().ok()?))
                })
                .collect();
            out.sort();
            out
        })
        .collect()
}

fn everywhere(table: &[(usize, u32)]) -> Vec<Vec<(usize, u32)>> {
    vec![table.to_vec(); 3]
}

pub fn dead_backends_leave_every_kernel() -> Result<(), Failed> {
    let site = Site::new(4, 0);
    let mut backends: Vec<Option<Backend>> = (0..3).map(|i| Some(backend(&site, i))).collect();
    let nodes = start_cluster(&site)?;
    let logs = || {
        nodes
            .iter()
            .map(|n| n.log())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let servers: Vec<Value> = (0..3)
        .map(|i| json!({"address": Site::backend_addr(i).to_string(), "port": 8080, "weight": 1}))
        .collect();
    let service = json!({
        "protocol": "tcp", "address": "10.80.0.1", "port": 80, "scheduler": "rr",
        "health_check": {"kind": "http", "path": "/health", "body": "backend",
                         "interval": INTERVAL, "timeout": 0.4, "rise": 2, "fall": FALL},
        "servers": servers,
    });
    let (status, body) = http(
        &site.lbs[0],
        0,
        "POST",
        "/api/v1/services?wait=applied",
        Some(&service),
    );
    assert_eq!(status, 201, "{body}");
    let all_up = [(0, 1), (1, 1), (2, 1)];
    wait_for(Duration::from_secs(20), "every kernel programmed", || {
        weights(&site) == everywhere(&all_up)
    })
    .map_err(|e| format!("{e:?}\n{:?}", weights(&site)))?;
    // Every node probes every server and finds it up.
    for lb in 0..3 {
        wait_for(Duration::from_secs(20), "three servers probed up", || {
            let node = http(&site.lbs[lb], lb, "GET", "/api/v1/node", None).1;
            let probes = node["health"]["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            probes.len() == 3
                && probes
                    .iter()
                    .all(|p| p["state"] == "up" && p["latency_us"].is_u64())
        })?;
    }
    let applied = http(&site.lbs[0], 0, "GET", "/api/v1/node", None).1["last_applied"].clone();

    // backend2 stops answering: weight 0 in every kernel within interval ×
    // fall, plus a reconcile pass (the VM is emulated: a generous margin).
    let checks = |lb: usize, server: &str| probe(&site, lb, server)["checks"].as_u64();
    let checks_at_stop: Vec<Option<u64>> = (0..3).map(|lb| checks(lb, "10.78.0.12-8080")).collect();
    drop(backends[1].take());
    let stopped = Instant::now();
    let stopped_ms = unix_ms();
    wait_for(
        Duration::from_secs(15),
        "backend2 at weight 0 everywhere",
        || weights(&site) == everywhere(&[(0, 1), (1, 0), (2, 1)]),
    )
    .map_err(|e| format!("{e:?}\n{:?}\n{}", weights(&site), logs()))?;
    let took = stopped.elapsed();
    eprintln!(
        "backend2 out of every kernel {took:?} after it stopped (interval × fall = {} s)",
        INTERVAL * f64::from(FALL)
    );
    // Detection takes at most fall probes (the first failing one comes
    // within an interval, then fall - 1 more), by each node's own record of
    // when the server went down (`since`, to the second, on this VM's
    // clock) and of the probes it made: the reconcile pass and this test's
    // polling are not part of it, and the interval is the one the node
    // achieved since the stop (the configured one, unless an emulated VM
    // on a busy host runs its probes late).
    for (lb, at_stop) in checks_at_stop.iter().enumerate() {
        let probe = probe(&site, lb, "10.78.0.12-8080");
        let made = probe["checks"]
            .as_u64()
            .zip(*at_stop)
            .map_or(1, |(now, then)| now.saturating_sub(then).max(1));
        let interval = Duration::from_millis(unix_ms().saturating_sub(stopped_ms) / made)
            .max(Duration::from_secs_f64(INTERVAL));
        let detection = interval * FALL;
        assert_eq!(probe["state"], "down", "{probe}");
        let since = probe["since"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .ok_or_else(|| format!("no since: {probe}"))?;
        let after = Duration::from_millis(since.as_millis() as u64)
            .saturating_sub(Duration::from_millis(stopped_ms));
        // `since` is cut to the second: one more second of slack.
        assert!(
            after <= detection + Duration::from_secs(1),
            "lb{lb} saw it down {after:?} after it stopped, more than {detection:?}: {probe}"
        );
    }
    assert_eq!(
        http(&site.lbs[0], 0, "GET", "/api/v1/node", None).1["last_applied"],
        applied,
        "health never writes to the Raft log"
    );
    // Traffic through the VIP avoids it.
    let vip: SocketAddr = "10.80.0.1:80".parse()?;
    for _ in 0..12 {
        let name = get(&site.client, vip)?;
        assert_ne!(name, "backend2");
    }

    // Back after rise successes.
    backends[1] = Some(backend(&site, 1));
    wait_for(Duration::from_secs(15), "backend2 back everywhere", || {
        weights(&site) == everywhere(&all_up)
    })
    .map_err(|e| format!("{e:?}\n{:?}", weights(&site)))?;

    // A drained server that is healthy stays at 0.
    let (status, body) = http(
        &site.lbs[1],
        1,
        "DELETE",
        &format!("{SERVICE}/servers/10.78.0.11-8080?grace=600&wait=applied"),
        None,
    );
    assert_eq!(status, 202, "{body}");
    // It stays there while every node probes it healthy three more times.
    let checks = |lb: usize| probe(&site, lb, "10.78.0.11-8080")["checks"].as_u64();
    let before: Vec<Option<u64>> = (0..3).map(checks).collect();
    wait_for(
        Duration::from_secs(15),
        "three more probes everywhere",
        || (0..3).all(|lb| checks(lb) >= before[lb].map(|n| n + 3)),
    )?;
    assert_eq!(weights(&site), everywhere(&[(0, 0), (1, 1), (2, 1)]));

    // All the serving servers down: fail open (weights kept), reported.
    drop(backends[1].take());
    drop(backends[2].take());
    for lb in 0..3 {
        wait_for(
            Duration::from_secs(15),
            "the service reported all down",
            || {
                let node = http(&site.lbs[lb], lb, "GET", "/api/v1/node", None).1;
                node["health"]["all_down"] == json!(["tcp-10.80.0.1-80"])
            },
        )?;
    }
    assert_eq!(weights(&site), everywhere(&[(0, 0), (1, 1), (2, 1)]));
    // With a fallback server, it takes the traffic.
    let sorry = backend(&site, 3);
    let policy = json!({"health_policy": {"all_down": "fallback",
        "fallback": {"address": Site::backend_addr(3).to_string(), "port": 8080}}});
    let (status, body) = http(
        &site.lbs[2],
        2,
        "PATCH",
        &format!("{SERVICE}?wait=applied"),
        Some(&policy),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        Duration::from_secs(15),
        "the fallback server in every kernel",
        || weights(&site) == everywhere(&[(0, 0), (1, 0), (2, 0), (3, 1)]),
    )
    .map_err(|e| format!("{e:?}\n{:?}", weights(&site)))?;
    assert_eq!(get(&site.client, vip)?, sorry.name());
    Ok(())
}
