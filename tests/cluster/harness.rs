//! Starts real `ipvs-manager` processes exactly as operators do (the
//! documented environment variables, `IPVS_KERNEL=memory`), and talks to
//! them over HTTP. A node first starts on port 0 for both listeners and the
//! harness reads the ports it got from its start-up line (`listening …
//! api=ADDR … raft=ADDR`); a restart asks for the same ports, which its
//! membership names. No port is picked here and released for a node to
//! take (another test could take it first).

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

/// The member a node joins through (`RAFT_LEADER`), by index in the
/// cluster: its API or its Raft port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    Api(usize),
    Raft(usize),
}

/// Every node's ports `(http, raft)` once it has started, by index.
type Ports = Arc<Mutex<Vec<Option<(u16, u16)>>>>;

/// One node: its process (if running), ports and data directory.
pub struct Node {
    pub name: String,
    index: usize,
    ports: Ports,
    pub dir: PathBuf,
    /// The member named in RAFT_LEADER.
    pub join: Option<Join>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// `http`, or `https` for a node whose API serves TLS.
    pub scheme: &'static str,
    child: Option<Child>,
    /// Where this run's lines begin in the (appended) log.
    log_start: usize,
}

impl Node {
    /// The ports the node bound: `(http, raft)`, once it has started.
    fn bound(&self) -> Option<(u16, u16)> {
        self.ports.lock().expect("ports")[self.index]
    }

    /// The API's port (the node must have started once).
    pub fn http_port(&self) -> u16 {
        self.bound().expect("the node has not started yet").0
    }

    /// The Raft port (the node must have started once).
    pub fn raft_port(&self) -> u16 {
        self.bound().expect("the node has not started yet").1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.http_port())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process with the documented variables, and waits until
    /// it listens (or exits).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        // Appended: a node restarted in a test keeps the log of each run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        self.log_start = self.log().len();
        let (http, raft) = self.bound().unwrap_or((0, 0));
        let mut cmd = Command::new(BINARY);
        cmd.env("SERVER_PORT", http.to_string())
            .env("RAFT_NODE_ID", &self.name)
            .env("RAFT_PORT", raft.to_string())
            .env("RAFT_VOL_DIR", &self.dir)
            .env("IPVS_KERNEL", "memory")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(join) = self.join {
            let ports = self.ports.lock().expect("ports").clone();
            let (member, port) = match join {
                Join::Api(i) => (i, ports[i].map(|p| p.0)),
                Join::Raft(i) => (i, ports[i].map(|p| p.1)),
            };
            let port = port.unwrap_or_else(|| panic!("node {member} has not started yet"));
            cmd.env("RAFT_LEADER", format!("127.0.0.1:{port}"));
        }
        self.child = Some(cmd.spawn().expect("start ipvs-manager"));
        self.wait_listening();
    }

    /// Waits for the start-up line that names the bound ports, and records
    /// them; returns early when the process exits first.
    fn wait_listening(&mut self) {
        let limit = Duration::from_secs(60);
        let start = Instant::now();
        while start.elapsed() < limit {
            let log = self.log();
            if let Some(ports) = listening(log.get(self.log_start..).unwrap_or_default()) {
                self.ports.lock().expect("ports")[self.index] = Some(ports);
                return;
            }
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not listen within {limit:?}\n{}",
            self.name,
            self.log()
        );
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to `limit`) for the process to exit; its exit
    /// status, or `None` if it was still running (it is killed then).
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {}", self.name);
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status, if the process ended by itself within `limit`
    /// (it is then no longer running); `None` while it runs.
    pub fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let sent = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
            assert!(
                sent.is_ok_and(|s| s.success()),
                "kill -{signal} {}",
                self.name
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// N nodes in a temporary directory; the first bootstraps, the others join
/// through `RAFT_LEADER`.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes and waits until every one is a voter.
    pub fn start(n: usize) -> Cluster {
        let mut c = Cluster::new(n);
        c.start_all();
        c
    }

    /// Starts every node in turn (configure them first) and waits until
    /// every one is a voter.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.nodes[i].start();
            self.wait_ready(i);
        }
        self.wait_voters(self.nodes.len());
    }

    /// Makes `http` send `Authorization: Bearer token` with every request,
    /// and trust the CA certificate `ca_pem` for https.
    pub fn configure_client(&mut self, token: Option<&str>, ca_pem: Option<&[u8]>) {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("header value");
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .default_headers(headers);
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem).expect("CA certificate");
            builder = builder.add_root_certificate(ca);
        }
        self.http = builder.build().expect("http client");
    }

    /// Nodes configured but not started.
    pub fn new(n: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<Node> = Vec::new();
        let ports: Ports = Arc::new(Mutex::new(vec![None; n]));
        for i in 0..n {
            nodes.push(Node {
                name: format!("node{}", i + 1),
                index: i,
                ports: ports.clone(),
                dir: dir.path().join(format!("node_{}_data", i + 1)),
                join: (i > 0).then_some(Join::Api(0)),
                env: Vec::new(),
                scheme: "http",
                child: None,
                log_start: 0,
            });
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        Cluster {
            nodes,
            http,
            _dir: dir,
        }
    }

    /// Waits for `/readyz` on node `i`.
    pub fn wait_ready(&self, i: usize) {
        self.wait(
            Duration::from_secs(30),
            &format!("{} ready", self.nodes[i].name),
            || {
                self.http
                    .get(self.nodes[i].url("/readyz"))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            },
        );
    }

    /// Waits until node 0's view of the cluster has `n` voters.
    pub fn wait_voters(&self, n: usize) {
        self.wait(Duration::from_secs(30), &format!("{n} voters"), || {
            self.running().any(|i| {
                self.cluster_view(i).is_some_and(|v| {
                    v["members"].as_array().is_some_and(|m| {
                        m.iter().filter(|m| m["voter"] == Value::Bool(true)).count() == n
                    })
                })
            })
        });
    }

    /// The leader's index, as node `i` sees it.
    pub fn leader(&self) -> Option<usize> {
        self.running().find_map(|i| {
            let view = self.cluster_view(i)?;
            let name = view["leader_id"].as_str()?.to_string();
            self.nodes
                .iter()
                .position(|n| n.name == name && n.is_running())
        })
    }

    pub fn get(&self, i: usize, path: &str) -> reqwest::blocking::Response {
        self.http.get(self.nodes[i].url(path)).send().expect("GET")
    }

    pub fn send(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::blocking::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.nodes[i].url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().expect("request")
    }

    /// [`Cluster::send`], sent again while the answer is the API's "try
    /// again" (503 with Retry-After: no leader during an election, which a
    /// loaded host can cause at any moment), for 20 s at most; the last
    /// answer's status and body.
    pub fn send_retrying(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String) {
        let start = Instant::now();
        loop {
            let r = self.send(i, method, path, body);
            let status = r.status().as_u16();
            let again = status == 503 && r.headers().contains_key("retry-after");
            let text = r.text().unwrap_or_default();
            if !again || start.elapsed() > Duration::from_secs(20) {
                return (status, text);
            }
            eprintln!(
                "{method} {path} on {}: 503 {text}; again",
                self.nodes[i].name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// GET /api/v1/config on node `i`, consistent with the leader.
    pub fn config(&self, i: usize) -> Value {
        self.get(i, "/api/v1/config?consistent=true")
            .json()
            .expect("config JSON")
    }

    /// Waits until every running node serves the same configuration as
    /// node `i`, and returns it.
    pub fn converged(&self, i: usize) -> Value {
        let want = self.config(i);
        self.wait(
            Duration::from_secs(20),
            "configurations to converge",
            || {
                self.running().all(|j| {
                    self.get(j, "/api/v1/config").json::<Value>().ok().as_ref() == Some(&want)
                })
            },
        );
        want
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_running())
    }

    pub fn cluster_view(&self, i: usize) -> Option<Value> {
        self.http
            .get(self.nodes[i].url("/api/v1/cluster"))
            .send()
            .ok()?
            .json()
            .ok()
    }

    /// Polls `check` until it holds, or fails the test with the node logs.
    pub fn wait(&self, limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs: String = self
            .nodes
            .iter()
            .map(|n| format!("--- {} ---\n{}", n.name, n.log()))
            .collect();
        panic!("timed out after {limit:?} waiting for {what}\n{logs}");
    }
}

/// The ports `(http, raft)` of a node's start-up line: `listening …
/// api=127.0.0.1:41235 … raft=127.0.0.1:41236` (with the log's colour
/// codes taken out).
fn listening(log: &str) -> Option<(u16, u16)> {
    // LOG_FORMAT=json: {"message":"listening",…,"api":…,"raft":…}.
    let json = log.lines().find_map(|l| {
        let fields: Value = serde_json::from_str(l).ok()?;
        (fields["message"] == "listening").then(|| {
            let port = |name: &str| fields[name].as_str()?.rsplit(':').next()?.parse().ok();
            Some((port("api")?, port("raft")?))
        })?
    });
    if json.is_some() {
        return json;
    }
    let line = log
        .lines()
        .map(strip_ansi)
        .find(|l| l.contains(": listening "))?;
    let port = |name: &str| -> Option<u16> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    };
    Some((port("api=")?, port("raft=")?))
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: up to and including the final letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
