//! Benchmark of the reconciler against real kernels, run inside the
//! real-kernel rig (see README):
//! - cold start: N services × 10 destinations desired, an empty kernel: one
//!   full pass, against `ipvsadm -R` of the same rules in a fresh namespace;
//! - restart into the matching kernel: a new engine's full pass (no change
//!   expected), against one `ipvsadm -Sn` dump;
//! - one changed weight with N services present: the netlink requests and
//!   the time of the incremental pass;
//! - a 3-node cluster, one node per namespace on a bridge: the time from a
//!   REST write on node 1 to its answer with `?wait=applied` (programmed in
//!   all three kernels), p50 and p99.
//!
//! Usage: bench_reconcile [--binary PATH] [--sizes 1000,5000] [--writes 200]

#[path = "support/bench.rs"]
mod bench;

use bench::{median, rules, sh, Netns};
use ipvs_manager::config::Ownership;
use ipvs_manager::ipvs::netlink::NetlinkKernel;
use ipvs_manager::ipvs::{text, Change};
use ipvs_manager::model::{Command, DesiredState, ServiceKey, ServiceSpec};
use ipvs_manager::reconcile::{Engine, Owned, Scope};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

/// The reconciler against ipvsadm: cold start, restart, one change, and a
/// three-node cluster's writes until programmed.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    table: bench::Tables,
    /// Service creations timed on the cluster.
    #[arg(long, default_value_t = 200)]
    writes: usize,
}

/// The desired state the rules describe.
fn desired(rules: &str) -> DesiredState {
    let mut specs: BTreeMap<ServiceKey, ServiceSpec> = BTreeMap::new();
    for (_, change) in text::parse_restore(rules).expect("rules parse") {
        match change {
            Change::AddService(service) => {
                specs.insert(
                    service.key,
                    ServiceSpec {
                        server_checks: Default::default(),
                        service,
                        servers: vec![],
                        options: Default::default(),
                    },
                );
            }
            Change::AddDest(key, dest) => specs.get_mut(&key).expect("service").servers.push(dest),
            other => panic!("unexpected rule {other}"),
        }
    }
    let mut state = DesiredState::default();
    state.apply(&Command::ReplaceAll(specs.into_values().collect()), 1);
    state
}

fn engine(keys: impl IntoIterator<Item = ServiceKey>) -> Engine<NetlinkKernel> {
    let kernel = NetlinkKernel::connect().expect("IPVS");
    Engine::new(
        kernel,
        Owned::in_memory(keys.into_iter().collect()),
        Ownership::Managed,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn table(n: usize) {
    let rules = rules(n);
    let state = desired(&rules);
    let ours = Netns::new("bench-rec-a");
    let (cold, applied) = ours.run(|| {
        let mut e = engine([]);
        let start = Instant::now();
        let report = e.pass(&state, &Default::default(), &Scope::All, 0);
        (start.elapsed(), report.applied)
    });
    assert_eq!(applied, n * 11);
    let theirs = Netns::new("bench-rec-b");
    let (restore, _) = theirs.time(&["ipvsadm", "-R"], &rules);
    drop(theirs);

    let keys: Vec<ServiceKey> = state.services.keys().copied().collect();
    let (restart, changes) = ours.run(|| {
        let mut e = engine(keys.clone());
        let start = Instant::now();
        let report = e.pass(&state, &Default::default(), &Scope::All, 0);
        (start.elapsed(), report.applied)
    });
    assert_eq!(changes, 0);
    let dump = median(
        (0..3)
            .map(|_| ours.time(&["ipvsadm", "-Sn"], "").0)
            .collect(),
    );

    let mut next = state.clone();
    let key = keys[n / 2];
    let cfg = std::sync::Arc::make_mut(next.services.get_mut(&key).expect("service"));
    let (&dkey, dest) = cfg.servers.iter_mut().next().expect("server");
    dest.weight = 99;
    cfg.revision = 2;
    let scope = Scope::Services(next.changed_since(&state));
    let (one, requests, applied) = ours.run(|| {
        let mut e = engine(keys.clone());
        let before = e.kernel().requests();
        let start = Instant::now();
        let report = e.pass(&next, &Default::default(), &scope, 0);
        (
            start.elapsed(),
            e.kernel().requests() - before,
            report.applied,
        )
    });
    assert_eq!(applied, 1, "one edit of {dkey}");
    println!(
        "{n} services x 10: cold start {:.0} ms vs ipvsadm -R {:.0} ms ({:.2}x); \
         restart into a matching kernel {:.0} ms, 0 changes (ipvsadm -Sn {:.0} ms, {:.2}x); \
         one weight change: {requests} netlink requests, {:.2} ms",
        ms(cold),
        ms(restore),
        ms(cold) / ms(restore),
        ms(restart),
        ms(dump),
        ms(restart) / ms(dump),
        ms(one),
    );
}

/// One HTTP/1.0 request; the status.
fn http(addr: &str, method: &str, path: &str, body: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Three nodes, one per namespace on a bridge; writes through node 1 with
/// `?wait=applied`.
fn cluster(binary: &str, writes: usize) {
    sh(
        "ip netns del bench-br 2>/dev/null; ip netns add bench-br && \
        ip -n bench-br link add br0 type bridge && ip -n bench-br link set br0 up",
    );
    let lbs: Vec<Netns> = (1..=3)
        .map(|i| {
            let ns = Netns::new(&format!("bench-lb{i}"));
            sh(&format!(
                "ip link add bench-v{i} netns bench-br type veth peer name eth0 netns bench-lb{i} && \
                 ip -n bench-br link set bench-v{i} master br0 up && \
                 ip -n bench-lb{i} addr add 10.77.0.{i}/24 dev eth0 && \
                 ip -n bench-lb{i} link set eth0 up"
            ));
            ns
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("bench-reconcile-{}", std::process::id()));
    let mut nodes: Vec<Child> = Vec::new();
    for (i, lb) in lbs.iter().enumerate() {
        let mut cmd = Process::new("ip");
        cmd.args(["netns", "exec", &lb.0, binary])
            .env("SERVER_PORT", "2221")
            .env("RAFT_PORT", "1111")
            .env("RAFT_NODE_ID", format!("node{}", i + 1))
            .env("RAFT_VOL_DIR", dir.join(format!("node{}", i + 1)))
            .env("BIND_ADDR", format!("10.77.0.{}", i + 1))
            // No tokens on this private network: serve the API on BIND_ADDR.
            .env("API_OPEN", "true")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if i > 0 {
            cmd.env("RAFT_LEADER", "10.77.0.1:2221");
        }
        nodes.push(cmd.spawn().expect("start node"));
        let addr = format!("10.77.0.{}:2221", i + 1);
        lb.run(|| {
            let end = Instant::now() + Duration::from_secs(60);
            while http(&addr, "GET", "/readyz", "") != 200 {
                assert!(Instant::now() < end, "node{} not ready", i + 1);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    let mut latencies = lbs[0].run(|| {
        (0..writes)
            .map(|i| {
                let body = format!(
                    r#"{{"protocol":"tcp","address":"10.9.{}.{}","port":80,"servers":[
                        {{"address":"10.2.0.1","port":8080}},{{"address":"10.2.0.2","port":8080}}]}}"#,
                    i / 250,
                    i % 250 + 1
                );
                let start = Instant::now();
                let status = http("10.77.0.1:2221", "POST", "/api/v1/services?wait=applied", &body);
                assert_eq!(status, 201, "write {i}");
                start.elapsed()
            })
            .collect::<Vec<_>>()
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "3-node cluster, {writes} writes on node 1 with ?wait=applied: programmed in all three \
         kernels after p50 {:.1} ms, p99 {:.1} ms",
        ms(at(0.5)),
        ms(at(0.99))
    );
    for mut node in nodes {
        let _ = node.kill();
        let _ = node.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
    sh("ip netns del bench-br");
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    for &n in &args.table.sizes {
        table(n);
    }
    cluster(&args.table.binary, args.writes);
}
