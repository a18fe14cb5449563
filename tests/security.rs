//! Who may talk to a node: API tokens (admin, read, none, wrong), the API
//! kept on loopback without them, and refusals of bad security settings at
//! start-up. Real processes, as in tests/cluster.rs.

// Tests: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

#[path = "cluster/harness.rs"]
mod harness;

use harness::{Cluster, Join};
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");
const ADMIN: &str = "adm1n-7c0e5b3f9a2d4e6f8b1c3d5e7f9a0b2c";
const READ: &str = "read-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Status, `WWW-Authenticate` and JSON body of a request.
fn answer(req: RequestBuilder) -> (u16, Option<String>, Value) {
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.json().unwrap_or(Value::Null);
    (status, challenge, body)
}

/// A token file in `dir`, readable by its owner only.
fn token_file(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("# ops team\nadmin {ADMIN}\n\n# dashboards\nread {READ}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

fn web() -> Value {
    json!({"protocol": "tcp", "address": "192.0.2.10", "port": 80,
           "servers": [{"address": "198.51.100.11", "port": 8080}]})
}

/// Runs the CLI against `server` with `env`: success, stdout and stderr.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BINARY)
        .args(args)
        .env_remove("IPVS_MANAGER_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With tokens, reads need a read or admin token and changes an admin one:
/// 401 (with `WWW-Authenticate: Bearer`) without a token or with a wrong
/// one, 403 for a read token on a change, which writes nothing. Probes stay
/// open, and the nodes still work together (forwarded writes, ?wait, reads
/// consistent with the leader, the cluster view) without any token between
/// them. The CLI sends its token.
#[test]
fn tokens_guard_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path());
    let mut c = Cluster::new(3);
    // The first node's API wants a token: the others join through its Raft
    // port (its API would answer 401).
    for (i, node) in c.nodes.iter_mut().enumerate() {
        node.env = vec![("API_TOKENS_FILE".into(), tokens.clone())];
        if i > 0 {
            node.join = Some(Join::Raft(0));
        }
    }
    c.configure_client(Some(ADMIN), None);
    c.start_all();
    let http = client();
    let url = |i: usize, path: &str| c.nodes[i].url(path);
    let follower = (0..3).find(|&i| Some(i) != c.leader()).unwrap();

    for open in ["/healthz", "/readyz", "/api/v1/openapi.json"] {
        assert_eq!(answer(http.get(url(follower, open))).0, 200, "{open}");
    }
    let services = url(follower, "/api/v1/services");
    let (status, challenge, body) = answer(http.get(&services));
    assert_eq!(status, 401);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"ipvs-manager\""));
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    for wrong in [
        format!("Bearer {ADMIN}x"),
        "Bearer".to_string(),
        format!("Basic {ADMIN}"),
        format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]),
    ] {
        let (status, _, body) = answer(http.get(&services).header("Authorization", &wrong));
        assert_eq!(status, 401, "{wrong}: {body}");
        let (status, _, _) = answer(
            http.post(&services)
                .header("Authorization", &wrong)
                .json(&web()),
        );
        assert_eq!(status, 401, "{wrong}");
    }
    assert_eq!(answer(http.get(url(0, "/metrics"))).0, 401);
    assert_eq!(
        answer(http.get(url(0, "/metrics")).bearer_auth(READ)).0,
        200
    );

    // A read token reads, and may not change anything.
    assert_eq!(answer(http.get(&services).bearer_auth(READ)).0, 200);
    let before = c.cluster_view(0).unwrap()["commit_index"].clone();
    let (status, _, body) = answer(http.post(&services).bearer_auth(READ).json(&web()));
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let (status, _, _) = answer(
        http.delete(url(0, "/api/v1/cluster/members/node3"))
            .bearer_auth(READ),
    );
    assert_eq!(status, 403);
    assert_eq!(c.cluster_view(0).unwrap()["commit_index"], before);

    // An admin token changes, through a follower, waiting for every kernel:
    // the nodes ask each other on their Raft ports, without tokens.
    let (status, _, body) = answer(
        http.post(url(follower, "/api/v1/services?wait=applied"))
            .bearer_auth(ADMIN)
            .json(&web()),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _, config) = answer(
        http.get(url(follower, "/api/v1/config?consistent=true"))
            .bearer_auth(READ),
    );
    assert_eq!(status, 200);
    assert_eq!(config["services"][0]["id"], "tcp-192.0.2.10-80");
    let view = c.cluster_view(follower).unwrap();
    let members = view["members"].as_array().unwrap();
    assert!(members.iter().all(|m| m["reachable"] == true), "{view}");

    // The CLI: no token, the API's refusal; a token, the answer.
    let server = url(follower, "");
    let (ok, _, err) = cli(&["list", "--server", &server], &[]);
    assert!(!ok);
    assert!(
        err.contains("401") && err.contains("IPVS_MANAGER_TOKEN"),
        "{err}"
    );
    let (ok, out, err) = cli(
        &["list", "--server", &server],
        &[("IPVS_MANAGER_TOKEN", READ)],
    );
    assert!(ok, "{err}");
    assert!(out.contains("TCP  192.0.2.10:80"), "{out}");
    let (ok, out, err) = cli(&["save", "--token", READ, "--server", &server], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("-A -t 192.0.2.10:80"), "{out}");
}

/// API_OPEN_READS opens reads but not changes; SIGHUP rotates tokens.
#[test]
fn reads_can_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(1);
    c.nodes[0].env = vec![
        ("API_TOKENS_FILE".into(), token_file(dir.path())),
        ("API_OPEN_READS".into(), "true".into()),
    ];
    c.start_all();
    let http = client();
    let services = c.nodes[0].url("/api/v1/services");
    assert_eq!(answer(http.get(&services)).0, 200);
    assert_eq!(answer(http.post(&services).json(&web())).0, 401);
    assert_eq!(
        answer(http.post(&services).bearer_auth(READ).json(&web())).0,
        403
    );
    assert_eq!(
        answer(http.post(&services).bearer_auth(ADMIN).json(&web())).0,
        201
    );

    // SIGHUP reads the token file again: a rotated admin token.
    let rotated = "adm1n-rotated-000000000000000000000000";
    let one = format!("{services}/tcp-192.0.2.10-80?grace=0");
    std::fs::write(dir.path().join("tokens"), format!("admin {rotated}\n")).unwrap();
    signal(c.nodes[0].pid().unwrap(), "HUP");
    // The probe deletes a service that does not exist (404 while the old
    // token still works), so it cannot remove the one deleted below.
    let absent = format!("{services}/tcp-192.0.2.99-80?grace=0");
    c.wait(Duration::from_secs(10), "the new token", || {
        answer(http.delete(&absent).bearer_auth(ADMIN)).0 == 401
    });
    let (status, _, body) = answer(http.delete(&one).bearer_auth(rotated));
    assert_eq!(status, 204, "{body}");
    // A broken file is refused, and the tokens in service stay.
    std::fs::write(dir.path().join("tokens"), "admin x\n").unwrap();
    signal(c.nodes[0].pid().unwrap(), "HUP");
    c.wait(Duration::from_secs(10), "the refusal in the log", || {
        c.nodes[0].log().contains("kept the API tokens in service")
    });
    let created = answer(http.post(&services).bearer_auth(rotated).json(&web()));
    assert_eq!(created.0, 201);
}

/// Reads `stream` until what it sent contains `until` or it ends; all it
/// sent.
fn read_events(stream: &mut reqwest::blocking::Response, until: &str) -> String {
    use std::io::Read;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// An open watch is no way around a revoked token: after SIGHUP removes
/// it, the watch's next event is an error, and the stream ends.
#[test]
fn a_revoked_token_ends_its_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(1);
    c.nodes[0].env = vec![("API_TOKENS_FILE".into(), token_file(dir.path()))];
    c.configure_client(Some(ADMIN), None);
    c.start_all();
    let http = client();
    let services = c.nodes[0].url("/api/v1/services");
    let mut watch = http
        .get(format!("{services}?watch=true"))
        .bearer_auth(READ)
        .send()
        .unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    assert!(read_events(&mut watch, "event: sync").contains("event: sync"));

    std::fs::write(dir.path().join("tokens"), format!("admin {ADMIN}\n")).unwrap();
    signal(c.nodes[0].pid().unwrap(), "HUP");
    c.wait(Duration::from_secs(10), "the read token revoked", || {
        answer(http.get(&services).bearer_auth(READ)).0 == 401
    });
    let created = answer(http.post(&services).bearer_auth(ADMIN).json(&web()));
    assert_eq!(created.0, 201, "{}", created.2);
    // To its end: the stream must close by itself (the client's timeout
    // would fail the read otherwise).
    let rest = read_events(&mut watch, "\u{0}");
    assert!(rest.contains("event: error"), "{rest}");
    assert!(rest.contains("unknown token"), "{rest}");
    assert!(
        !rest.contains("192.0.2.10"),
        "a change after the revocation: {rest}"
    );
}

/// Watches hold slots of their own, API_MAX_REQUESTS of them: one over
/// is refused at once (503), and a closed one frees its slot.
#[test]
fn watches_are_limited_and_free_their_slots() {
    let mut c = Cluster::new(1);
    c.nodes[0].env = vec![("API_MAX_REQUESTS".into(), "2".into())];
    c.start_all();
    let http = client();
    let url = c.nodes[0].url("/api/v1/node?watch=true");
    let open = || http.get(&url).send().unwrap();
    let first = open();
    let second = open();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (status, _, body) = answer(http.get(&url));
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("watches"), "{body}");
    // Requests have their own slots: the two watches take none of them.
    assert_eq!(answer(http.get(c.nodes[0].url("/api/v1/services"))).0, 200);
    // A client gone is noticed at the next write: an idle watch writes a
    // keep-alive comment every 5 s.
    drop(first);
    c.wait(Duration::from_secs(20), "the closed watch's slot", || {
        http.get(&url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
}

/// Whether something listens on `addr`.
fn listens(addr: &str) -> bool {
    std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)).is_ok()
}

/// Without tokens, a node bound to every address keeps its API on
/// loopback (127.0.0.1 only, not 127.0.0.2) while its Raft port serves the
/// peers; API_OPEN=true serves the API on BIND_ADDR.
#[test]
fn without_tokens_the_api_stays_on_loopback() {
    for open in [false, true] {
        let mut c = Cluster::new(1);
        c.nodes[0].env = vec![
            ("BIND_ADDR".into(), "0.0.0.0".into()),
            ("ADVERTISE_ADDR".into(), "127.0.0.1".into()),
            ("API_OPEN".into(), open.to_string()),
        ];
        c.start_all();
        let (api, raft) = (c.nodes[0].http_port(), c.nodes[0].raft_port());
        assert!(listens(&format!("127.0.0.1:{api}")));
        assert!(listens(&format!("127.0.0.2:{raft}")));
        assert_eq!(
            listens(&format!("127.0.0.2:{api}")),
            open,
            "API_OPEN={open}"
        );
        let log = c.nodes[0].log();
        assert_eq!(log.contains("listens on loopback only"), !open, "{log}");
    }
}

/// Runs a node that must refuse to start: its stderr. It must not have
/// created its data directory.
fn refused(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BINARY)
        .env("RAFT_VOL_DIR", &data)
        .env("IPVS_KERNEL", "memory")
        .env("SERVER_PORT", "1")
        .env("RAFT_PORT", "2")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It exits by itself; one still running has started (killed, so the
    // test fails rather than hangs). The bound is no timing claim.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = child.try_wait().unwrap().is_some();
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(exited, "still running after 60 s: {err}");
    assert!(!out.status.success(), "started: {err}");
    assert!(!data.exists(), "the data directory was created: {err}");
    err
}

/// A bad token file stops the start before anything is touched, naming the
/// file, the line and the problem.
#[test]
fn bad_token_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let file = path.display().to_string();
    std::fs::write(&path, format!("admin {ADMIN}\nwriter {READ}\n")).unwrap();
    let err = refused(&[("API_TOKENS_FILE", &file)]);
    assert!(
        err.contains(&format!(
            "API_TOKENS_FILE {file}: line 2: unknown role \"writer\""
        )),
        "{err}"
    );
    std::fs::write(&path, "admin short\n").unwrap();
    let err = refused(&[("API_TOKENS_FILE", &file)]);
    assert!(err.contains("line 1: the token is 5 characters"), "{err}");
    let missing = dir.path().join("nope").display().to_string();
    let err = refused(&[("API_TOKENS_FILE", &missing)]);
    assert!(
        err.contains(&format!("API_TOKENS_FILE {missing}: No such file")),
        "{err}"
    );
}

const SECRET: &str = "cluster-9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a";
const WRONG: &str = "cluster-00000000000000000000000000000000";

fn term_and_leader(c: &Cluster, i: usize) -> (u64, String) {
    let view = c.cluster_view(i).unwrap();
    (
        view["term"].as_u64().unwrap(),
        view["leader_id"].as_str().unwrap_or_default().to_string(),
    )
}

/// With a cluster secret: a node with another secret, or none, is refused
/// when it asks to join (through the API or the Raft port); requests
/// without a valid signature get 401 on the Raft port and do nothing; and a
/// member restarted with the wrong secret, campaigning on its own, cannot
/// disturb the others (same leader, same term, writes go on). With the
/// right secret again it catches up.
#[test]
fn a_node_without_the_cluster_secret_is_refused() {
    let mut c = Cluster::new(5);
    for node in &mut c.nodes[..3] {
        node.env = vec![("CLUSTER_SECRET".into(), SECRET.into())];
    }
    for i in 0..3 {
        c.nodes[i].start();
        c.wait_ready(i);
    }
    c.wait_voters(3);
    assert_eq!(
        c.send(0, "POST", "/api/v1/services", Some(&web())).status(),
        201
    );

    // Joining with the wrong secret (through the API), with none (through
    // the Raft port): refused, and the cluster stays at three.
    c.nodes[3].env = vec![("CLUSTER_SECRET".into(), WRONG.into())];
    c.nodes[3].start();
    let raft0 = format!("127.0.0.1:{}", c.nodes[0].raft_port());
    c.nodes[4].join = Some(Join::Raft(0));
    c.nodes[4].start();
    c.wait(Duration::from_secs(30), "both joins refused", || {
        [3, 4]
            .iter()
            .all(|&i| c.nodes[i].log().contains("join refused (401)"))
    });
    let view = c.cluster_view(0).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 3, "{view}");
    for i in [3, 4] {
        assert_eq!(c.get(i, "/readyz").status(), 503);
        let log = c.nodes[i].log();
        assert!(log.contains("join refused (401)"), "{log}");
    }
    assert!(c.nodes[3].log().contains("CLUSTER_SECRET differs"));
    assert!(c.nodes[4].log().contains("has no CLUSTER_SECRET"));
    c.nodes[3].kill();
    c.nodes[4].kill();

    // Unsigned requests on the Raft port: 401, and nothing happens.
    let http = client();
    let before = term_and_leader(&c, 0);
    let vote = json!({"vote": {"leader_id": {"term": before.0 + 5, "node_id": 1}, "committed": false},
                      "last_log_id": null});
    for (method, path, body) in [
        ("POST", "/raft/vote", Some(vote)),
        ("POST", "/raft/write", Some(json!([{"DeleteService": {}}]))),
        ("POST", "/raft/elect", None),
        ("GET", "/raft/node", None),
        ("DELETE", "/raft/members/node2", None),
    ] {
        let url = format!("http://{raft0}{path}");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = http.request(method, &url);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let (status, _, body) = answer(req.header("X-Ipvs-Manager-Peer", "t=1,mac=00"));
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
    }
    assert_eq!(term_and_leader(&c, 0), before);

    // A member back with the wrong secret campaigns alone: its vote
    // requests are refused, so the others keep their leader and term.
    let follower = (0..3)
        .find(|&i| c.nodes[c.leader().unwrap()].name != c.nodes[i].name)
        .unwrap();
    let healthy = (0..3).find(|&i| i != follower).unwrap();
    c.nodes[follower].kill();
    c.nodes[follower].env = vec![("CLUSTER_SECRET".into(), WRONG.into())];
    c.nodes[follower].start();
    let before = term_and_leader(&c, healthy);
    // It campaigns alone once its election timeout passes.
    c.wait(Duration::from_secs(30), "the outsider campaigning", || {
        c.http
            .get(c.nodes[follower].url("/api/v1/node"))
            .send()
            .ok()
            .and_then(|r| r.json::<Value>().ok())
            .is_some_and(|v| v["term"].as_u64() > Some(before.0))
            && c.nodes[follower]
                .log()
                .contains("refused our cluster secret")
    });
    let service = json!({"protocol": "udp", "address": "192.0.2.53", "port": 53});
    assert_eq!(
        c.send(healthy, "POST", "/api/v1/services", Some(&service))
            .status(),
        201
    );
    assert_eq!(term_and_leader(&c, healthy), before);
    let theirs: Value = c.get(follower, "/api/v1/node").json().unwrap();
    assert!(
        theirs["term"].as_u64() > Some(before.0),
        "it campaigned: {theirs}"
    );
    let log = c.nodes[follower].log();
    assert!(log.contains("refused our cluster secret"), "{log}");

    // The right secret again: it follows the leader and catches up.
    c.nodes[follower].kill();
    c.nodes[follower].env = vec![("CLUSTER_SECRET".into(), SECRET.into())];
    c.nodes[follower].start();
    c.wait_ready(follower);
    let want = c.converged(healthy);
    assert_eq!(want["services"].as_array().unwrap().len(), 2, "{want}");
}

/// A test CA.
fn ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ipvs-manager test CA");
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for 127.0.0.1 and localhost signed by `ca`:
/// certificate PEM, key PEM, certificate DER.
fn server_cert(ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// The certificate `url` presents.
fn served_certificate(ca_pem: &str, url: &str) -> Vec<u8> {
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap();
    let r = http.get(url).send().unwrap();
    let info = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} {pid}");
}

/// TLS end to end: two nodes serve their API over TLS with a certificate of
/// a test CA; a client trusting the CA reads and writes (a follower
/// forwards, ?wait=applied), the CLI with --ca-file too; plain HTTP and
/// clients that do not trust the CA get nothing. SIGHUP puts a renewed
/// certificate in service; a broken one is refused and the one in service
/// stays.
#[test]
fn the_api_serves_tls_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (cert, key, first) = server_cert(&ca);
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();

    let mut c = Cluster::new(2);
    for (i, node) in c.nodes.iter_mut().enumerate() {
        node.scheme = "https";
        node.env = vec![
            ("TLS_CERT_FILE".into(), cert_file.display().to_string()),
            ("TLS_KEY_FILE".into(), key_file.display().to_string()),
        ];
        if i > 0 {
            node.join = Some(Join::Raft(0));
        }
    }
    c.configure_client(None, Some(ca.pem().as_bytes()));
    c.start_all();
    let r = c.send(1, "POST", "/api/v1/services?wait=applied", Some(&web()));
    assert_eq!(r.status(), 201);
    assert_eq!(c.config(0)["services"][0]["id"], "tcp-192.0.2.10-80");

    let url = c.nodes[0].url("/api/v1/services");
    let plain = url.replacen("https://", "http://", 1);
    let sent = client().get(&plain).send();
    assert!(sent.is_err() || !sent.unwrap().status().is_success());
    let untrusting = client().get(&url).send();
    assert!(untrusting.is_err(), "a client without the CA got through");

    let server = c.nodes[0].url("");
    let ca_path = ca_file.display().to_string();
    let (ok, out, err) = cli(&["list", "--server", &server, "--ca-file", &ca_path], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("TCP  192.0.2.10:80"), "{out}");
    let (ok, _, err) = cli(&["list", "--server", &server], &[]);
    assert!(!ok);
    assert!(err.contains("cannot reach"), "{err}");

    // SIGHUP: the renewed certificate for new connections.
    assert_eq!(served_certificate(&ca.pem(), &url), first);
    let (cert, key, renewed) = server_cert(&ca);
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    signal(c.nodes[0].pid().unwrap(), "HUP");
    c.wait(Duration::from_secs(10), "the renewed certificate", || {
        served_certificate(&ca.pem(), &url) == renewed
    });
    assert!(c.nodes[0]
        .log()
        .contains("SIGHUP: reloaded the TLS certificate"));

    // A broken key: refused with the file named, the renewed pair stays.
    std::fs::write(&key_file, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    signal(c.nodes[0].pid().unwrap(), "HUP");
    c.wait(Duration::from_secs(10), "the refusal in the log", || {
        c.nodes[0]
            .log()
            .contains("kept the TLS certificate in service")
    });
    assert!(c.nodes[0]
        .log()
        .contains(&format!("TLS_KEY_FILE {}", key_file.display())));
    assert_eq!(served_certificate(&ca.pem(), &url), renewed);
    assert_eq!(c.get(0, "/readyz").status(), 200);
}

/// Missing or half-configured TLS stops the start, naming the setting.
#[test]
fn bad_tls_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "x").unwrap();
    let key = key.display().to_string();
    let err = refused(&[("TLS_CERT_FILE", &missing), ("TLS_KEY_FILE", &key)]);
    assert!(
        err.contains(&format!("TLS_CERT_FILE {missing}: No such file")),
        "{err}"
    );
    let err = refused(&[("TLS_KEY_FILE", &key)]);
    assert!(
        err.contains("TLS_CERT_FILE and TLS_KEY_FILE go together"),
        "{err}"
    );
}

/// The peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// A flood against one node (a node that takes 8 requests at once): 32
/// clients hammering reads, writes and 1 MiB bodies, and 64 connections
/// that never finish their request. The node refuses what it cannot take
/// at once (503 `overloaded` with Retry-After), keeps answering its
/// liveness probe, drops the stalled connections, and stays small; the
/// cluster keeps serving writes through another node; and every write
/// acknowledged to anyone is on every node afterwards.
#[test]
fn a_flood_against_one_node_leaves_the_cluster_serving() {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    let mut c = Cluster::new(3);
    c.nodes[0].env = vec![("API_MAX_REQUESTS".into(), "8".into())];
    c.start_all();
    let flooded = c.nodes[0].url("");
    let stop = Arc::new(AtomicBool::new(false));
    let port = Arc::new(AtomicU32::new(1));
    let answers: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();

    let mut threads = Vec::new();
    for t in 0..32 {
        let (stop, port, answers, acked) =
            (stop.clone(), port.clone(), answers.clone(), acked.clone());
        let base = flooded.clone();
        threads.push(std::thread::spawn(move || {
            let http = client();
            let big = vec![b' '; (1 << 20) + 1];
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (req, id) = match (t + i) % 4 {
                    0 => (
                        http.get(format!("{base}/api/v1/config?consistent=true")),
                        None,
                    ),
                    1 => (http.get(format!("{base}/metrics")), None),
                    2 => {
                        let p = port.fetch_add(1, Ordering::SeqCst);
                        let body = json!({"protocol": "tcp", "address": "192.0.2.20", "port": p});
                        (
                            http.post(format!("{base}/api/v1/services")).json(&body),
                            Some(format!("tcp-192.0.2.20-{p}")),
                        )
                    }
                    _ => (
                        http.post(format!("{base}/api/v1/services"))
                            .header("Content-Type", "application/json")
                            .body(big.clone()),
                        None,
                    ),
                };
                let key = match req.send() {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        if status == 503 {
                            assert!(r.headers().contains_key("retry-after"));
                        }
                        let body: Value = r.json().unwrap_or(Value::Null);
                        if status == 201 {
                            acked.lock().unwrap().extend(id);
                        }
                        format!("{status} {}", body["error"]["code"].as_str().unwrap_or(""))
                    }
                    Err(_) => "transport error".to_string(),
                };
                *answers.lock().unwrap().entry(key).or_default() += 1;
            }
        }));
    }
    // Connections that send half a request head and then nothing.
    let stalled: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s =
                std::net::TcpStream::connect(format!("127.0.0.1:{}", c.nodes[0].http_port()))
                    .unwrap();
            s.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile, writes through another node.
    let other = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let base = c.nodes[1].url("");
        std::thread::spawn(move || {
            let http = client();
            let (mut ok, mut failed) = (0, 0);
            let mut p = 1;
            while !stop.load(Ordering::SeqCst) {
                let body = json!({"protocol": "udp", "address": "192.0.2.30", "port": p});
                match http
                    .post(format!("{base}/api/v1/services"))
                    .json(&body)
                    .send()
                {
                    Ok(r) if r.status() == 201 => {
                        acked.lock().unwrap().push(format!("udp-192.0.2.30-{p}"));
                        ok += 1;
                    }
                    _ => failed += 1,
                }
                p += 1;
            }
            (ok, failed)
        })
    };

    // The flooded node stays alive and says so at once.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let start = Instant::now();
        let r = client().get(format!("{flooded}/healthz")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
    // The stalled connections were closed (5 s to send a request head).
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let (ok, failed) = other.join().unwrap();

    let answers = answers.lock().unwrap().clone();
    let peak = peak_rss_mib(c.nodes[0].pid().unwrap());
    eprintln!(
        "flooded node answered: {answers:?}, peak RSS {peak} MiB; \
         the other node: {ok} writes, {failed} failed"
    );
    assert!(
        answers.get("503 overloaded").copied().unwrap_or(0) > 0,
        "{answers:?}"
    );
    assert!(answers.get("201 ").copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(answers.get("200 ").copied().unwrap_or(0) > 0, "{answers:?}");
    for key in answers.keys() {
        assert!(
            ["200 ", "201 ", "413 body_too_large", "503 overloaded"].contains(&key.as_str()),
            "unexpected answer {key}: {answers:?}"
        );
    }
    assert!(
        ok >= 10 && failed == 0,
        "{ok} writes, {failed} failed through the other node"
    );
    assert!(peak < 256, "the flooded node peaked at {peak} MiB");

    // Afterwards: the flooded node serves, and every acknowledged write is
    // on every node.
    let r = c.send(0, "POST", "/api/v1/services", Some(&web()));
    assert_eq!(r.status(), 201);
    let config = c.converged(0);
    let held: std::collections::BTreeSet<&str> = config["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !held.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}
