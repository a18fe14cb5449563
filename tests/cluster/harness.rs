//! Starts real `ipvs-manager` processes exactly as operators do (the
//! documented environment variables, `IPVS_KERNEL=memory`), each test on ports
//! of its own, and talks to them over HTTP.

// Shared by several test binaries; each uses a part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

/// A free TCP port on loopback (bound, then released for the node to take).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// One node: its process (if running), ports and data directory.
pub struct Node {
    pub name: String,
    pub http_port: u16,
    pub raft_port: u16,
    pub dir: PathBuf,
    /// HTTP port of the member named in RAFT_LEADER.
    pub join: Option<u16>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// `http`, or `https` for a node whose API serves TLS.
    pub scheme: &'static str,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.http_port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process with the documented variables.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        // Appended: a node restarted in a test keeps the log of each run.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let mut cmd = Command::new(BINARY);
        cmd.env("SERVER_PORT", self.http_port.to_string())
            .env("RAFT_NODE_ID", &self.name)
            .env("RAFT_PORT", self.raft_port.to_string())
            .env("RAFT_VOL_DIR", &self.dir)
            .env("IPVS_KERNEL", "memory")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(port) = self.join {
            cmd.env("RAFT_LEADER", format!("127.0.0.1:{port}"));
        }
        self.child = Some(cmd.spawn().expect("start ipvs-manager"));
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
        for i in 0..n {
            let join = nodes.first().map(|first: &Node| first.http_port);
            nodes.push(Node {
                name: format!("node{}", i + 1),
                http_port: free_port(),
                raft_port: free_port(),
                dir: dir.path().join(format!("node_{}_data", i + 1)),
                join,
                env: Vec::new(),
                scheme: "http",
                child: None,
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
