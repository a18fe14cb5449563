//! ipvs-manager as a service on a host: the systemd unit and the deploy kit
//! (checked by systemd's own tools and against the settings the binary
//! knows), and the service-manager protocol of a real node process.

// Tests: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "cluster/harness.rs"]
mod harness;

use clap::CommandFactory;
use harness::{Cluster, Join};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `systemd-analyze`, or a failure that says how to get it.
fn systemd_analyze() -> Command {
    let path = Path::new("/usr/bin/systemd-analyze");
    assert!(
        path.exists(),
        "systemd-analyze is missing: install the systemd package (tests/vm/setup.sh does)"
    );
    Command::new(path)
}

/// The unit as installed, but starting the binary under test (verify checks
/// that ExecStart= is executable).
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo("systemd/ipvs-manager.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/bin/ipvs-manager\n"));
    let unit = unit.replace(
        "\nExecStart=/usr/local/bin/ipvs-manager\n",
        &format!("\nExecStart={BINARY}\n"),
    );
    let path = dir.join("ipvs-manager.service");
    std::fs::write(&path, unit).unwrap();
    path
}

/// `systemd-analyze verify` accepts the unit without a single complaint
/// (an unknown or misspelt key is only a warning there, so any output
/// fails), and `systemd-analyze security` rates its sandbox.
#[test]
fn unit_passes_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = systemd_analyze().arg("verify").arg(&unit).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "verify failed:\n{said}");
    assert!(
        !said.contains("ipvs-manager.service"),
        "verify complained:\n{said}"
    );

    // 0 is fully locked down, 10 is no sandbox; --threshold is in tenths.
    let out = systemd_analyze()
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for must in [
        "Type=notify",
        "WatchdogSec=",
        "EnvironmentFile=/etc/ipvs-manager/ipvs-manager.env",
        "Restart=on-failure",
        "StateDirectory=ipvs-manager",
        "Environment=RAFT_VOL_DIR=/var/lib/ipvs-manager",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE\n",
        "ReadWritePaths=-/proc/sys/net/ipv4/conf -/proc/sys/net/ipv4/vs -/proc/sys/net/ipv6/conf\n",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ] {
        let unit = std::fs::read_to_string(&unit).unwrap();
        assert!(unit.contains(must), "the unit lacks {must:?}");
    }
}

/// Variables of an environment file (`NAME=value`), and those it shows
/// commented out (`#NAME=value`).
fn env_file(path: &Path) -> (Vec<(String, String)>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut set = Vec::new();
    let mut documented = BTreeSet::new();
    for line in text.lines() {
        let (commented, line) = match line.strip_prefix('#') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !is_name {
            continue;
        }
        documented.insert(name.to_string());
        if !commented {
            set.push((name.to_string(), value.to_string()));
        }
    }
    (set, documented)
}

/// Every variable the node reads, by name, with its `--flag`.
fn node_variables() -> Vec<(String, String)> {
    let cli = ipvs_manager::cli::Cli::command();
    cli.get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            Some((env, a.get_long()?.to_string()))
        })
        // The CLI's own variables are not the node's.
        .filter(|(env, _)| !env.starts_with("IPVS_MANAGER_"))
        .collect()
}

/// Parses and validates the node settings an environment file gives.
fn validate(vars: &[(String, String)]) -> Result<ipvs_manager::config::NodeConfig, String> {
    let flags = node_variables();
    let mut argv = vec!["ipvs-manager".to_string()];
    for (name, value) in vars {
        if ipvs_manager::logging::VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let (_, long) = flags
            .iter()
            .find(|(env, _)| env == name)
            .unwrap_or_else(|| panic!("{name} is not a variable ipvs-manager reads"));
        argv.push(format!("--{long}={value}"));
    }
    let cli = <ipvs_manager::cli::Cli as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| e.to_string())?;
    cli.node.validate().map_err(|e| e.to_string())
}

/// The template documents every variable the node reads (and nothing
/// else), as installed it is a valid configuration, and so is each host of
/// the three-host example.
#[test]
fn env_files_match_the_settings() {
    let (set, documented) = env_file(&repo("deploy/ipvs-manager.env"));
    let mut known: BTreeSet<String> = node_variables().into_iter().map(|(e, _)| e).collect();
    known.extend(ipvs_manager::logging::VARIABLES.map(String::from));
    assert_eq!(documented, known, "deploy/ipvs-manager.env vs --help");
    let config = validate(&set).unwrap();
    assert_eq!(config.http_bind.to_string(), "127.0.0.1:2221");

    let mut names = BTreeSet::new();
    for host in ["lb1", "lb2", "lb3"] {
        let (set, _) = env_file(&repo(&format!("deploy/example-3-hosts/{host}.env")));
        let config = validate(&set).unwrap_or_else(|e| panic!("{host}.env: {e}"));
        assert_eq!(config.name, host);
        assert_eq!(config.join.is_some(), host != "lb1", "{host}");
        assert!(
            !config.api_loopback_only,
            "{host}: tokens, so the API is served"
        );
        names.insert(config.raft_advertise);
    }
    assert_eq!(names.len(), 3);
}

/// install.sh stages the binary, the unit, the settings (named after the
/// host) and the module entry; a second run upgrades and keeps the settings.
#[test]
fn install_script_lays_out_the_host() {
    let root = tempfile::tempdir().unwrap();
    let install = || {
        let out = Command::new("bash")
            .arg(repo("deploy/install.sh"))
            .args(["--binary", BINARY, "--root"])
            .arg(root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    install();
    let file = |p: &str| root.path().join(p);
    let mode = |p: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(file(p)).unwrap().permissions().mode() & 0o7777
    };
    assert_eq!(mode("usr/local/bin/ipvs-manager"), 0o755);
    assert_eq!(
        std::fs::read(file("usr/local/bin/ipvs-manager")).unwrap(),
        std::fs::read(BINARY).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(file("etc/systemd/system/ipvs-manager.service")).unwrap(),
        std::fs::read_to_string(repo("systemd/ipvs-manager.service")).unwrap()
    );
    let modules = std::fs::read_to_string(file("etc/modules-load.d/ipvs-manager.conf")).unwrap();
    assert!(modules.lines().any(|l| l == "ip_vs"), "{modules}");
    assert_eq!(mode("etc/ipvs-manager"), 0o750);
    assert_eq!(mode("etc/ipvs-manager/ipvs-manager.env"), 0o640);
    let (set, _) = env_file(&file("etc/ipvs-manager/ipvs-manager.env"));
    let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(set.contains(&("RAFT_NODE_ID".into(), host)), "{set:?}");

    std::fs::write(
        file("etc/ipvs-manager/ipvs-manager.env"),
        "RAFT_NODE_ID=mine\n",
    )
    .unwrap();
    let said = install();
    assert!(said.contains("kept"), "{said}");
    assert_eq!(
        std::fs::read_to_string(file("etc/ipvs-manager/ipvs-manager.env")).unwrap(),
        "RAFT_NODE_ID=mine\n"
    );
    assert!(file("etc/ipvs-manager/ipvs-manager.env.dist").exists());
}

/// The notifications a node sends to the socket systemd would listen on.
struct Manager {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Manager {
    fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Manager {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next notification, within `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits for a notification containing `line`; returns it and those
    /// before it.
    fn until(&self, line: &str, limit: Duration) -> (String, Vec<String>) {
        let start = Instant::now();
        let mut before = Vec::new();
        while let Some(left) = limit.checked_sub(start.elapsed()) {
            match self.next(left) {
                Some(m) if m.lines().any(|l| l == line) => return (m, before),
                Some(m) => before.push(m),
                None => break,
            }
        }
        panic!("no {line} within {limit:?}; got {before:?}");
    }
}

/// Under a service manager: READY=1 arrives only once the node serves and
/// has programmed its kernel (here: a restarted node whose in-memory table
/// starts empty), then WATCHDOG=1 pings, and SIGTERM sends STOPPING=1 and
/// exits 0.
#[test]
fn node_notifies_ready_watchdog_and_stopping() {
    let manager = Manager::new();
    let mut c = Cluster::new(1);
    c.nodes[0].env = vec![
        ("NOTIFY_SOCKET".into(), manager.path.display().to_string()),
        ("WATCHDOG_USEC".into(), "400000".into()),
    ];
    c.nodes[0].start();
    let (ready, before) = manager.until("READY=1", Duration::from_secs(30));
    assert!(
        ready.contains("STATUS=leader, term 1, 1 members"),
        "{ready}"
    );
    assert!(
        before
            .iter()
            .any(|m| m.contains("STATUS=entering the cluster")),
        "{before:?}"
    );
    let service = json!({"protocol": "tcp", "address": "192.0.2.10", "port": 80,
                         "servers": [{"address": "198.51.100.11", "port": 8080}]});
    let r = c.send(0, "POST", "/api/v1/services?wait=applied", Some(&service));
    assert_eq!(r.status(), 201);
    // Fed at half the timeout: several pings in a second.
    for _ in 0..3 {
        manager.until("WATCHDOG=1", Duration::from_secs(2));
    }
    assert_eq!(
        c.nodes[0]
            .terminate(Duration::from_secs(20))
            .map(|s| s.code()),
        Some(Some(0)),
        "{}",
        c.nodes[0].log()
    );
    manager.until("STOPPING=1", Duration::from_secs(1));

    // Restarted: its (in-memory) kernel starts empty, and READY=1 comes
    // once the first pass has programmed it, with the API serving.
    c.nodes[0].start();
    manager.until("READY=1", Duration::from_secs(30));
    let node: Value = c.get(0, "/api/v1/node").json().unwrap();
    assert!(node["reconcile"]["passes"].as_u64() >= Some(1), "{node}");
    let kernel: Value = c.get(0, "/api/v1/node/kernel").json().unwrap();
    let services = kernel["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "{kernel}");
    assert_eq!(c.get(0, "/readyz").status(), 200);
}

/// Creates services through every node in turn until stopped; the ids of
/// those acknowledged (201).
/// Writes services until `stop`, round robin over `urls`; the ids of the
/// acknowledged ones, also counted in `acks` as they come.
fn writer(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut acked = Vec::new();
        let mut port = 1u32;
        while !stop.load(Ordering::SeqCst) {
            let url = &urls[port as usize % urls.len()];
            let body = json!({"protocol": "tcp", "address": "192.0.2.10", "port": port});
            let sent = http
                .post(format!("{url}/api/v1/services"))
                .json(&body)
                .send();
            match sent {
                Ok(r) if r.status() == 201 => {
                    acked.push(format!("tcp-192.0.2.10-{port}"));
                    acks.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
            port += 1;
        }
        acked
    })
}

/// The services a node serves, by id.
fn service_ids(config: &Value) -> BTreeSet<String> {
    config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// SIGTERM of the leader of three under a stream of writes: it finishes
/// what it has in flight, hands leadership to a follower, exits 0; the
/// others go on serving writes, and no acknowledged write is lost.
#[test]
fn sigterm_of_the_leader_hands_over_and_loses_no_write() {
    let mut c = Cluster::start(3);
    let old = c.leader().expect("a leader");
    let urls = c.nodes.iter().map(|n| n.url("")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicUsize::new(0));
    let writes = writer(urls, stop.clone(), acks.clone());
    // Writes are flowing when the leader is told to stop.
    c.wait(Duration::from_secs(20), "writes acknowledged", || {
        acks.load(Ordering::SeqCst) > 10
    });

    let status = c.nodes[old].terminate(Duration::from_secs(30));
    let log = c.nodes[old].log();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{log}");
    assert!(log.contains("handed leadership over"), "{log}");
    let new = c.leader().expect("a new leader");
    assert_ne!(new, old);
    // The survivors take writes again.
    let service = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53});
    let r = c.send(new, "POST", "/api/v1/services", Some(&service));
    assert_eq!(r.status(), 201);
    // And the writer's own writes go on after the handover.
    let after = acks.load(Ordering::SeqCst);
    c.wait(Duration::from_secs(20), "writes after the handover", || {
        acks.load(Ordering::SeqCst) > after + 5
    });
    stop.store(true, Ordering::SeqCst);
    let acked = writes.join().unwrap();
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());

    let held = service_ids(&c.converged(new));
    let lost: Vec<&String> = acked.iter().filter(|id| !held.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");

    // The old leader comes back as a follower with everything.
    c.nodes[old].start();
    c.wait_ready(old);
    let config = c.converged(new);
    let theirs: Value = c.get(old, "/api/v1/config").json().unwrap();
    assert_eq!(theirs, config);
}

/// Nodes ask each other only on their Raft ports: a new node joins through
/// a member's Raft address as well as through its API.
#[test]
fn a_node_joins_through_a_members_raft_port() {
    let mut c = Cluster::new(2);
    c.nodes[0].start();
    c.wait_ready(0);
    c.nodes[1].join = Some(Join::Raft(0));
    c.nodes[1].start();
    c.wait_voters(2);
    let r = c.send(
        1,
        "POST",
        "/api/v1/services",
        Some(&json!(
        {"protocol": "tcp", "address": "192.0.2.10", "port": 80})),
    );
    assert_eq!(r.status(), 201);
    let view = c.cluster_view(1).unwrap();
    let reachable = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reachable"] == true);
    assert_eq!(reachable.count(), 2, "{view}");
}
