//! `/metrics` as scrapers read it: two real nodes (`IPVS_KERNEL=memory`)
//! holding an inet and a fwmark service with servers and health checks, so
//! that every metric family has samples, scraped the way Prometheus does
//! and the way curl does. Each body goes through a real parser:
//! `promtool check metrics` (Debian's prometheus package) parses and lints
//! the Prometheus text format; promtool reads no other, so the OpenMetrics
//! body goes through the OpenMetrics parser of the Prometheus project's
//! Python client (`tests/metrics/openmetrics.py`). Both are installed by
//! `tests/metrics/setup.sh`; without them the test fails, naming it.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMTOOL: &str = "/usr/bin/promtool";
/// Debian's Python, the one python3-prometheus-client installs for.
const PYTHON: &str = "/usr/bin/python3";
const SETUP: &str = "run tests/metrics/setup.sh (as root), which installs it";

/// What Prometheus 2.43 and later send when they scrape.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every family the node exposes (their sample names in the Prometheus
/// format), each of which must have samples here.
const FAMILIES: &[&str] = &[
    "ipvs_service_connections_total",
    "ipvs_service_packets_in_total",
    "ipvs_service_packets_out_total",
    "ipvs_service_bytes_in_total",
    "ipvs_service_bytes_out_total",
    "ipvs_server_connections_total",
    "ipvs_server_packets_in_total",
    "ipvs_server_packets_out_total",
    "ipvs_server_bytes_in_total",
    "ipvs_server_bytes_out_total",
    "ipvs_server_active_connections",
    "ipvs_server_inactive_connections",
    "ipvs_server_weight",
    "ipvs_service_servers",
    "ipvs_service_servers_weighted",
    "ipvs_service_active_connections",
    "ipvs_service_inactive_connections",
    "ipvs_manager_api_requests_total",
    "ipvs_manager_api_request_duration_seconds",
    "ipvs_manager_reconcile_passes_total",
    "ipvs_manager_reconcile_duration_seconds",
    "ipvs_manager_reconcile_changes_total",
    "ipvs_manager_drift_repaired_total",
    "ipvs_manager_traffic_read_failures_total",
    "ipvs_manager_write_stage_seconds",
    "ipvs_manager_reconcile_last_success_timestamp_seconds",
    "ipvs_manager_reconcile_programmed_index",
    "ipvs_manager_reconcile_pending_changes",
    "ipvs_manager_foreign_services",
    "ipvs_manager_raft_term",
    "ipvs_manager_raft_is_leader",
    "ipvs_manager_raft_leader",
    "ipvs_manager_raft_last_log_index",
    "ipvs_manager_raft_applied_index",
    "ipvs_manager_raft_replication_lag",
    "ipvs_manager_health_checks_total",
    "ipvs_manager_health_check_failures_total",
    "ipvs_manager_health_check_duration_seconds",
    "ipvs_manager_health_up",
    "ipvs_manager_health_last_change_timestamp_seconds",
    "ipvs_manager_health_all_down",
    "ipvs_manager_health_servers",
    "ipvs_manager_health_servers_up",
    "ipvs_manager_store_writable",
    "ipvs_manager_store_failing_since_timestamp_seconds",
    "ipvs_manager_store_write_failures_total",
    "ipvs_manager_store_recoveries_total",
    "ipvs_manager_store_damaged",
    "ipvs_manager_store_free_bytes",
    "ipvs_manager_ready",
    "ipvs_manager_not_ready",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
    "ipvs_manager_build_info",
];

/// Fails the test, naming the setup script, when a parser is missing.
fn parsers_installed() {
    assert!(
        std::path::Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing (Debian's prometheus package): {SETUP}"
    );
    let module = Command::new(PYTHON)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output();
    assert!(
        module.is_ok_and(|o| o.status.success()),
        "{PYTHON} cannot import prometheus_client (python3-prometheus-client): {SETUP}"
    );
}

/// Runs `program args` with `input` on its stdin: success, and what it
/// printed (stdout and stderr).
fn run(program: &str, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// A sample line's metric name.
fn name(line: &str) -> &str {
    line.split(['{', ' ']).next().unwrap_or_default()
}

fn samples(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
}

/// Whether `family` has a sample (a histogram's are its buckets, sum and
/// count).
fn has_samples(text: &str, family: &str) -> bool {
    samples(text).any(|l| {
        let n = name(l);
        n == family
            || n.strip_prefix(family)
                .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
    })
}

/// `GET /metrics` with no `Accept` header at all (reqwest always sends
/// one): the `Content-Type` of the answer.
fn content_type_without_accept(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn both_formats_parse_and_lint_clean() {
    parsers_installed();
    let c = Cluster::start(2);
    // Health-check targets: one that accepts connections, one that refuses
    // them (bound, then closed).
    let alive = TcpListener::bind("127.0.0.1:0").expect("bind");
    let alive_port = alive.local_addr().expect("addr").port();
    // Accepted and closed, so the backlog never fills (the thread ends
    // with the test process).
    std::thread::spawn(move || alive.incoming().for_each(drop));
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let check = json!({"kind": "tcp", "interval": 0.2, "timeout": 0.1, "rise": 2, "fall": 2});
    let inet = json!({
        "protocol": "tcp", "address": "127.0.0.1", "port": 9,
        "health_check": check,
        "servers": [
            {"address": "127.0.0.1", "port": alive_port, "weight": 3},
            {"address": "127.0.0.1", "port": dead_port, "weight": 5}
        ]
    });
    // A fwmark service's servers have no port: its check names one.
    let mut fwmark_check = check.clone();
    fwmark_check["port"] = json!(dead_port);
    let fwmark = json!({
        "fwmark": 7, "family": "ipv4",
        "health_check": fwmark_check,
        "servers": [{"address": "127.0.0.2"}]
    });
    for body in [inet, fwmark] {
        let (status, text) =
            c.send_retrying(0, "POST", "/api/v1/services?wait=applied", Some(&body));
        assert_eq!(status, 201, "{text}");
    }
    let leader = c.leader().expect("a leader");
    let metrics = |accept: &str| {
        c.http
            .get(c.nodes[leader].url("/metrics"))
            .header("Accept", accept)
            .send()
            .expect("GET /metrics")
    };
    // Until the probes have run: the alive server up, the fwmark service's
    // only server down (so it is all down), a refusal counted.
    let start = Instant::now();
    let missing = loop {
        let text = metrics("*/*").text().unwrap_or_default();
        let missing: Vec<&str> = FAMILIES
            .iter()
            .copied()
            .filter(|f| !has_samples(&text, f))
            .collect();
        if missing.is_empty() || start.elapsed() > Duration::from_secs(20) {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(missing.is_empty(), "families without samples: {missing:?}");

    // A write's stages, an append's two ends among them: the leader times
    // its round trip, the follower its part (both before the write was
    // acknowledged).
    let count_of = |node: usize, stage: &str| -> f64 {
        let text = c
            .http
            .get(c.nodes[node].url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let prefix = format!("ipvs_manager_write_stage_seconds_count{{stage=\"{stage}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    for stage in [
        "queued",
        "proposed",
        "flush",
        "witness",
        "apply",
        "replicated",
    ] {
        assert!(count_of(leader, stage) > 0.0, "the leader timed no {stage}");
    }
    for stage in ["appended", "flush", "witness"] {
        assert!(
            count_of(1 - leader, stage) > 0.0,
            "the follower timed no {stage}"
        );
    }

    // A plain client: no Accept, or curl's */*.
    assert_eq!(
        content_type_without_accept(c.nodes[leader].http_port()),
        PROMETHEUS_TEXT
    );
    let r = metrics("*/*");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], PROMETHEUS_TEXT);
    assert_eq!(r.headers()["vary"], "Accept");
    let prom = r.text().expect("body");
    // Prometheus' scraper.
    let r = metrics(PROMETHEUS_ACCEPT);
    assert_eq!(r.headers()["content-type"], OPENMETRICS);
    let om = r.text().expect("body");
    // What does not parse gets the default, not an error.
    let r = metrics("application/openmetrics-text;q=banana, ;;=,");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], PROMETHEUS_TEXT);

    // The real parsers. promtool prints nothing and exits 0 for a clean
    // exposition; a lint problem is a line and exit status 3. None is
    // accepted.
    let (ok, printed) = run(PROMTOOL, &["check", "metrics"], &prom);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics:\n{printed}\n{prom}"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/openmetrics.py");
    let (ok, printed) = run(PYTHON, &[script], &om);
    assert!(ok, "OpenMetrics parser:\n{printed}\n{om}");
    assert!(printed.starts_with("families="), "{printed}");

    // Each format's layout.
    assert!(!prom.contains("# EOF"), "{prom}");
    assert!(!prom.contains("# UNIT"), "{prom}");
    assert!(prom.contains("# TYPE ipvs_manager_api_requests_total counter\n"));
    assert!(prom.contains("# TYPE ipvs_manager_build_info gauge\n"));
    assert!(om.ends_with("\n# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    assert!(om.contains("# TYPE ipvs_manager_api_requests counter\n"));
    assert!(om.contains("# TYPE ipvs_manager_build info\n"));

    for (format, text) in [("prometheus", &prom), ("openmetrics", &om)] {
        for family in FAMILIES {
            assert!(has_samples(text, family), "{format}: no {family}:\n{text}");
        }
        // The build: this crate's version, and a revision (a commit, or
        // `unknown` outside a git checkout).
        let build = samples(text)
            .find(|l| name(l) == "ipvs_manager_build_info")
            .expect("build info");
        let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
        assert!(build.contains(&version), "{build}");
        assert!(
            build.contains(",revision=\"") && build.ends_with("} 1"),
            "{build}"
        );
        // The node's own process: a start time in the last hour, file
        // descriptors open below the limit.
        let value = |name_: &str| -> f64 {
            samples(text)
                .find(|l| name(l) == name_)
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{format}: {name_}"))
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} {now}"
        );
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") > value("process_open_fds"));
        assert!(value("process_resident_memory_bytes") > 0.0);
        // No label with an empty value: the fwmark service has no address
        // or port, the inet one no fwmark.
        assert!(!text.contains("=\"\""), "{format}:\n{text}");
        assert!(
            samples(text).any(|l| l
                .starts_with("ipvs_manager_health_all_down{service=\"fwmark-ipv4-7\",protocol=\"ipv4\",fwmark=\"7\"} 1")),
            "{format}:\n{text}"
        );
        assert!(
            samples(text).any(|l| l.starts_with(
                "ipvs_service_connections_total{service=\"tcp-127.0.0.1-9\",protocol=\"tcp\",address=\"127.0.0.1\",port=\"9\"} "
            )),
            "{format}:\n{text}"
        );
    }
}

/// A node with `METRICS_DETAIL=service`: no series of a real server, the
/// per-service sums there, and both formats still parse and lint clean.
#[test]
fn per_service_detail_parses_and_lints_clean() {
    parsers_installed();
    let mut c = Cluster::new(1);
    c.nodes[0]
        .env
        .push(("METRICS_DETAIL".into(), "service".into()));
    c.start_all();
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let body = json!({
        "protocol": "tcp", "address": "127.0.0.1", "port": 9,
        "health_check": {"kind": "tcp", "interval": 0.2, "timeout": 0.1, "rise": 2, "fall": 2},
        "servers": [
            {"address": "127.0.0.1", "port": dead_port, "weight": 3},
            {"address": "127.0.0.2", "port": dead_port, "weight": 5}
        ]
    });
    let (status, text) = c.send_retrying(0, "POST", "/api/v1/services?wait=applied", Some(&body));
    assert_eq!(status, 201, "{text}");
    let metrics = |accept: &str| {
        c.http
            .get(c.nodes[0].url("/metrics"))
            .header("Accept", accept)
            .send()
            .expect("GET /metrics")
            .text()
            .expect("body")
    };
    let service = "{service=\"tcp-127.0.0.1-9\",protocol=\"tcp\",address=\"127.0.0.1\",port=\"9\"}";
    let start = Instant::now();
    let prom = loop {
        let text = metrics("*/*");
        // Probed, and both servers found down.
        if text.contains(&format!("ipvs_manager_health_servers_up{service} 0"))
            || start.elapsed() > Duration::from_secs(20)
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let om = metrics(PROMETHEUS_ACCEPT);
    let (ok, printed) = run(PROMTOOL, &["check", "metrics"], &prom);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool check metrics:\n{printed}\n{prom}"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/metrics/openmetrics.py");
    let (ok, printed) = run(PYTHON, &[script], &om);
    assert!(ok, "OpenMetrics parser:\n{printed}\n{om}");
    for (format, text) in [("prometheus", &prom), ("openmetrics", &om)] {
        assert!(!text.contains("ipvs_server_"), "{format}:\n{text}");
        assert!(
            !text.contains("ipvs_manager_health_up"),
            "{format}:\n{text}"
        );
        assert!(!text.contains("server=\""), "{format}:\n{text}");
        for line in [
            format!("ipvs_service_servers{service} 2"),
            format!("ipvs_service_servers_weighted{service} 2"),
            format!("ipvs_manager_health_servers{service} 2"),
            format!("ipvs_manager_health_servers_up{service} 0"),
        ] {
            assert!(
                samples(text).any(|l| l == line),
                "{format}: no {line}:\n{text}"
            );
        }
        assert!(has_samples(text, "ipvs_service_connections_total"));
    }
}
