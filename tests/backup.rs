//! Backups and what may empty a cluster: `backup` and `restore --backup`
//! round trips compared field by field, a cluster rebuilt from a backup
//! after every node's data is gone, and `-C` and `restore` asking before
//! they remove (refusing without a terminal, a pseudo-terminal answering
//! the prompt), with what they remove draining. Real node processes
//! (tests/cluster/harness.rs, in-memory kernels) and the CLI as operators
//! run it.

#[path = "cluster/harness.rs"]
mod harness;

use harness::Cluster;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-manager");

/// Every setting an operator can make, none at its default: scheduler,
/// flags, persistence (both families), engine, `bind_address`,
/// `drain_grace`, health check and policy with a fallback server; servers
/// with weights, thresholds, every forwarding method and tunnel option,
/// and a check of their own.
fn everything() -> Value {
    json!({"services": [
        {"protocol": "tcp", "address": "192.0.2.10", "port": 443, "scheduler": "sh",
         "flags": ["sh-fallback", "sh-port"],
         "persistence": {"timeout": 600, "netmask": "255.255.255.0"}, "pe": "sip",
         "bind_address": true, "drain_grace": 700,
         "health_check": {"kind": "http", "method": "HEAD", "path": "/healthz",
                          "expect": [200, 204], "body": "ok", "host": "web.example",
                          "port": 8081, "interval": 2.5, "timeout": 1.5, "rise": 3, "fall": 4},
         "health_policy": {"unhealthy": "remove", "slow_start": 30, "all_down": "fallback",
                           "fallback": {"address": "198.51.100.99", "port": 80, "weight": 2}},
         "servers": [
            {"address": "198.51.100.11", "port": 8443, "weight": 3, "forward": "masq",
             "upper_threshold": 100, "lower_threshold": 50,
             "health_check": {"kind": "tcp", "address": "198.51.100.111", "port": 22,
                              "interval": 1, "timeout": 0.5, "rise": 1, "fall": 2}},
            {"address": "2001:db8::12", "port": 443, "weight": 0, "forward": "tunnel",
             "tunnel": {"type": "gue", "port": 6080, "checksum": "remcsum"}},
            {"address": "198.51.100.13", "port": 443, "weight": 5, "forward": "dr"}]},
        {"protocol": "udp", "address": "192.0.2.53", "port": 53, "scheduler": "rr",
         "flags": ["one-packet"],
         "health_check": {"kind": "dns", "payload": "example.org", "interval": 3, "timeout": 1,
                          "rise": 2, "fall": 2},
         "health_policy": {"unhealthy": "zero", "slow_start": 0.5, "all_down": "fail-open"},
         "servers": [{"address": "198.51.100.21", "port": 53, "forward": "tunnel",
                      "tunnel": {"type": "gre", "checksum": "csum"}}]},
        {"fwmark": 7, "family": "ipv6", "scheduler": "mh", "flags": ["mh-port"],
         "persistence": {"timeout": 30, "netmask": 64},
         "servers": [{"address": "2001:db8::31", "port": 0, "weight": 9, "forward": "dr"}]}
    ]})
}

/// A run of the CLI: exit status, stdout, stderr.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `ipvs-manager ARGS`, with `stdin` (none: /dev/null) and no terminal.
fn cli(args: &[&str], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipvs-manager");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `ipvs-manager ARGS`, which must succeed; its stdout.
fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let run = cli(args, stdin);
    assert!(run.ok, "{args:?} failed: {}", run.stderr);
    run.stdout
}

/// Node `i`'s services (consistent with the leader) without their
/// revisions, which a restore or a new cluster gives anew.
fn services(c: &Cluster, i: usize) -> Vec<Value> {
    let mut services = c.config(i)["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in &mut services {
        if let Some(o) = s.as_object_mut() {
            o.remove("revision");
        }
    }
    services
}

/// The paths where `a` and `b` differ (`[0].servers[1].weight: 3 != 1`).
fn differences(at: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                if x.contains_key(key) != y.contains_key(key) {
                    out.push(format!("{at}.{key}: {va} != {vb} (present in one only)"));
                } else {
                    differences(&format!("{at}.{key}"), va, vb, out);
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{at}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} != {b}")),
        _ => {}
    }
}

/// Field by field: every field of every service and server the same.
fn assert_same(got: &[Value], want: &[Value]) {
    let mut diff = Vec::new();
    differences(
        "services",
        &Value::from(got.to_vec()),
        &Value::from(want.to_vec()),
        &mut diff,
    );
    assert!(diff.is_empty(), "differences:\n{}", diff.join("\n"));
}

/// The fixture came back with nothing at its default (a guard: a field
/// the API dropped on the way in would make the comparison vacuous).
fn assert_nothing_default(services: &[Value]) {
    let web = &services[0];
    for (field, default) in [
        ("scheduler", json!("wlc")),
        ("flags", json!([])),
        ("persistence", Value::Null),
        ("pe", Value::Null),
        ("bind_address", json!(false)),
        ("drain_grace", Value::Null),
        ("health_check", Value::Null),
        ("health_policy", Value::Null),
    ] {
        assert_ne!(web.get(field).unwrap_or(&Value::Null), &default, "{field}");
    }
    let masq = &web["servers"][0];
    assert_eq!(
        (
            &masq["weight"],
            &masq["upper_threshold"],
            &masq["lower_threshold"]
        ),
        (&json!(3), &json!(100), &json!(50))
    );
    assert!(masq["health_check"].is_object(), "{masq}");
    let tunnel = web["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["forward"] == "tunnel"))
        .expect("a tunnel server");
    assert_eq!(tunnel["tunnel"]["checksum"], "remcsum", "{tunnel}");
    assert_eq!(services.len(), 3);
}

/// A backup's envelope, checked; its services.
fn envelope(text: &str, node: &str) -> Vec<Value> {
    let backup: Value = serde_json::from_str(text).expect("a backup is JSON");
    assert_eq!(backup["format"], "ipvs-manager-backup", "{backup}");
    assert_eq!(backup["version"], 1, "{backup}");
    assert_eq!(backup["node"], node, "{backup}");
    assert!(backup["applied_index"].as_u64() > Some(0), "{backup}");
    let created = backup["created"].as_str().expect("created");
    assert!(is_rfc3339_utc(created), "{created}");
    backup["services"].as_array().cloned().expect("services")
}

/// RFC 3339 in UTC to the second (`2026-12-01T10:00:00Z`), roughly.
fn is_rfc3339_utc(t: &str) -> bool {
    t.len() == 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T'
}

/// backup → `-C --yes` (everything drains) → `restore --backup`: every
/// service back in service with every field as it was.
#[test]
fn a_backup_undoes_a_clear_field_by_field() {
    let c = Cluster::start(1);
    let (status, body) = c.send_retrying(0, "PUT", "/api/v1/config", Some(&everything()));
    assert_eq!(status, 200, "{body}");
    let before = services(&c, 0);
    assert_nothing_default(&before);
    let server = c.nodes[0].url("");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.json");
    let file = file.to_str().expect("utf-8 path");
    let said = ok(&["backup", "--file", file, "--server", &server], None);
    assert!(
        said.starts_with("backed up 3 services and 5 real servers from node1 (applied index "),
        "{said}"
    );
    let text = std::fs::read_to_string(file).expect("the backup file");
    assert_same(
        &envelope(&text, "node1"),
        &c.config(0)["services"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    // On stdout, the same services.
    let stdout = ok(&["backup", "--server", &server], None);
    assert_eq!(envelope(&stdout, "node1"), envelope(&text, "node1"));

    let cleared = ok(&["-C", "--yes", "--server", &server], None);
    assert!(
        cleared.starts_with("cleared the desired state: 3 services and 5 real servers drain"),
        "{cleared}"
    );
    let draining = services(&c, 0);
    assert!(
        draining.iter().all(|s| s["draining"].is_object()),
        "{draining:?}"
    );

    let restored = ok(&["restore", "--backup", file, "--server", &server], None);
    assert!(restored.contains("3 services changed"), "{restored}");
    assert_same(&services(&c, 0), &before);

    // A damaged backup is refused naming the field, and changes nothing.
    let mut bad: Value = serde_json::from_str(&text).expect("json");
    bad["services"][0]["servers"][0]["weight"] = json!(-1);
    std::fs::write(file, bad.to_string()).expect("write");
    let run = cli(&["restore", "--backup", file, "--server", &server], None);
    assert!(!run.ok);
    assert!(
        run.stderr.contains(": services[0].servers[0].weight: "),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert_same(&services(&c, 0), &before);
}

/// Disaster recovery: three nodes, a backup, every node killed and its
/// data directory deleted; a new first node, `restore --backup`, the others
/// joining with RAFT_LEADER: the same configuration, field by field, and
/// every new node's kernel programmed with it. A server draining when the
/// backup was taken is not brought back.
#[test]
fn a_new_cluster_is_built_from_a_backup() {
    let mut c = Cluster::start(3);
    let (status, body) =
        c.send_retrying(1, "PUT", "/api/v1/config?wait=applied", Some(&everything()));
    assert_eq!(status, 200, "{body}");
    let drained = "/api/v1/services/tcp-192.0.2.10-443/servers/198.51.100.13-443?grace=3600";
    let (status, body) = c.send_retrying(2, "DELETE", drained, None);
    assert_eq!(status, 202, "{body}");
    let mut want = services(&c, 0);
    assert_nothing_default(&want);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.json");
    let file = file.to_str().expect("utf-8 path");
    ok(
        &["backup", "--file", file, "--server", &c.nodes[1].url("")],
        None,
    );

    for node in &mut c.nodes {
        node.kill();
        std::fs::remove_dir_all(&node.dir).expect("delete the data directory");
        assert!(!node.dir.exists());
    }
    // The new cluster: a first node that bootstraps, the backup, then the
    // others join.
    c.nodes[0].start();
    c.wait_ready(0);
    assert_eq!(services(&c, 0), Vec::<Value>::new(), "a new, empty cluster");
    let restored = ok(
        &["restore", "--backup", file, "--server", &c.nodes[0].url("")],
        None,
    );
    assert!(
        restored.starts_with(
            "not restored, draining when the backup was taken: 198.51.100.13:443 of TCP \
             192.0.2.10:443\n"
        ),
        "{restored}"
    );
    assert!(restored.contains("+ TCP 192.0.2.10:443\n"), "{restored}");
    for i in 1..3 {
        c.nodes[i].start();
        c.wait_ready(i);
    }
    c.wait_voters(3);

    // What the old cluster had, but the drained server.
    let web = &mut want[0];
    if let Some(servers) = web["servers"].as_array_mut() {
        servers.retain(|s| s["draining"].is_null());
    }
    let got = c.converged(0)["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let got: Vec<Value> = got
        .into_iter()
        .map(|mut s| {
            if let Some(o) = s.as_object_mut() {
                o.remove("revision");
            }
            s
        })
        .collect();
    assert_same(&got, &want);

    // Every node's kernel holds it, as its reconciler computes it (drains
    // and its own health checks applied).
    let ids: Vec<&str> = want.iter().filter_map(|s| s["id"].as_str()).collect();
    for i in 0..3 {
        let server = c.nodes[i].url("");
        c.wait(Duration::from_secs(20), "the kernel programmed", || {
            let table: Value = c.get(i, "/api/v1/node/kernel").json().unwrap_or_default();
            let targets: Vec<&str> = table["target"]
                .as_object()
                .map(|t| t.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let diff = cli(&["diff", "--output", "json", "--server", &server], None);
            let diff: Value = serde_json::from_str(&diff.stdout).unwrap_or_default();
            table["services"].as_array().map(Vec::len) == Some(ids.len())
                && ids.iter().all(|id| targets.contains(id))
                && diff["in_sync"] == true
        });
    }
}

/// Five services of two servers each, the first with its own drain_grace.
fn five() -> Value {
    let services: Vec<Value> = (81..=85)
        .map(|port| {
            let mut s = json!({"protocol": "tcp", "address": "192.0.2.20", "port": port,
                "servers": [{"address": "198.51.100.1", "port": port},
                            {"address": "198.51.100.2", "port": port}]});
            if port == 81 {
                s["drain_grace"] = json!(600);
            }
            s
        })
        .collect();
    json!({ "services": services })
}

/// The rules that keep services on ports `keep`, in ipvsadm's syntax.
fn rules(keep: &[u16]) -> String {
    keep.iter()
        .map(|port| {
            format!(
                "-A -t 192.0.2.20:{port} -s wlc\n\
                 -a -t 192.0.2.20:{port} -r 198.51.100.1:{port} -m -w 1\n\
                 -a -t 192.0.2.20:{port} -r 198.51.100.2:{port} -m -w 1\n"
            )
        })
        .collect()
}

/// `(port, grace)` of each draining service.
fn drains(c: &Cluster) -> Vec<(u64, u64)> {
    services(c, 0)
        .iter()
        .filter(|s| s["draining"].is_object())
        .map(|s| {
            (
                s["port"].as_u64().unwrap_or_default(),
                s["draining"]["grace"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// Without a terminal, `-C` and a `restore` removing more than 3 services
/// refuse, naming the counts and `--yes`, and change nothing; with `--yes`
/// what they remove drains (the service's drain_grace, else DRAIN_GRACE),
/// with `--now` it goes at once; a restore removing 3 goes without asking.
#[test]
fn removing_much_asks_and_drains() {
    let mut c = Cluster::new(1);
    c.nodes[0].env.push(("DRAIN_GRACE".into(), "120".into()));
    c.start_all();
    let (status, body) = c.send_retrying(0, "PUT", "/api/v1/config", Some(&five()));
    assert_eq!(status, 200, "{body}");
    let server = c.nodes[0].url("");
    let before = c.config(0);

    let run = cli(&["-C", "--server", &server], None);
    assert!(!run.ok);
    assert_eq!(
        run.stderr,
        "ipvs-manager: this would remove 5 services and 10 real servers from the cluster's \
         desired state: nothing changed; add --yes to go ahead (from a terminal, you are asked \
         instead)\n"
    );
    let run = cli(&["restore", "--server", &server], Some(&rules(&[85])));
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("this would remove 4 services and 8 real servers"),
        "{}",
        run.stderr
    );
    // A dry run asks nothing.
    let plan = ok(
        &["restore", "--dry-run", "--server", &server],
        Some(&rules(&[85])),
    );
    assert!(
        plan.contains("4 services would change, 1 unchanged (dry run: nothing committed)\n"),
        "{plan}"
    );
    // And what each kernel would change: the removed services drain at
    // weight 0.
    assert!(
        plan.contains(
            "node1: kernel\n  ~ edit destination 198.51.100.1:81 of service TCP 192.0.2.20:81\n"
        ),
        "{plan}"
    );
    assert_eq!(c.config(0), before, "nothing changed");

    // Three is a handful: no question; they drain.
    let out = ok(&["restore", "--server", &server], Some(&rules(&[84, 85])));
    assert_eq!(
        out,
        "- TCP 192.0.2.20:81\n- TCP 192.0.2.20:82\n- TCP 192.0.2.20:83\n\
         3 services changed, 2 unchanged\n\
         3 services and 6 real servers drain (weight 0) for their service's drain_grace, else \
         the node's DRAIN_GRACE, then go\n"
    );
    assert_eq!(drains(&c), vec![(81, 600), (82, 120), (83, 120)]);
    // Listed as draining, at weight 0.
    let list = ok(&["list", "--server", &server], None);
    let line = list
        .lines()
        .find(|l| l.contains("192.0.2.20:81 "))
        .unwrap_or_default();
    assert!(line.contains("(draining, "), "{list}");

    // --now: at once; what drains already drains on.
    let out = ok(&["-C", "--yes", "--now", "--server", &server], None);
    assert_eq!(
        out,
        "cleared the desired state: 2 services and 4 real servers removed at once\n"
    );
    assert_eq!(c.get(0, "/api/v1/services/tcp-192.0.2.20-85").status(), 404);
    assert_eq!(drains(&c), vec![(81, 600), (82, 120), (83, 120)]);
    assert_eq!(
        ok(&["-C", "--server", &server], None),
        "nothing to clear: the desired state has no service, or only services draining already\n"
    );

    // -C --yes: it drains, for --grace or the services' own. (The five
    // back first, drains ended.)
    let (status, body) = c.send_retrying(
        0,
        "PUT",
        "/api/v1/config?grace=0&undrain=true",
        Some(&five()),
    );
    assert_eq!(status, 200, "{body}");
    let out = ok(&["-C", "--yes", "--grace", "5m", "--server", &server], None);
    assert!(
        out.contains("5 services and 10 real servers drain (weight 0) for 300 s"),
        "{out}"
    );
    assert_eq!(
        drains(&c),
        vec![(81, 300), (82, 300), (83, 300), (84, 300), (85, 300)]
    );
    let (status, body) = c.send_retrying(0, "PUT", "/api/v1/config?undrain=true", Some(&five()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(drains(&c), vec![]);
    ok(&["-C", "--yes", "--server", &server], None);
    assert_eq!(
        drains(&c),
        vec![(81, 600), (82, 120), (83, 120), (84, 120), (85, 120)]
    );

    // The options are -C's only; a bad --grace names itself.
    let run = cli(
        &["-D", "-t", "192.0.2.20:81", "--yes", "--server", &server],
        None,
    );
    assert!(run.stderr.contains("go with -C only"), "{}", run.stderr);
    let run = cli(&["-C", "--grace", "soon", "--server", &server], None);
    assert!(
        run.stderr.contains("--grace: not a duration"),
        "{}",
        run.stderr
    );
    // The API names a bad ?grace and changes nothing.
    let r = c.send(0, "PUT", "/api/v1/config?grace=-1", Some(&five()));
    assert_eq!(r.status().as_u16(), 400);
    let err: Value = r.json().unwrap_or_default();
    assert_eq!(err["error"]["field"], "?grace", "{err}");
}

/// Runs `command` (a shell command line) under a pseudo-terminal
/// (util-linux `script`), typing `typed` into it; its exit status and what
/// the terminal showed.
fn on_a_terminal(command: &str, typed: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script (Debian: bsdutils)");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(typed.as_bytes()).expect("type");
    // Held open until the command ends: an end of input could reach the
    // terminal as an end of file before the question is asked.
    let out = child.wait_with_output().expect("wait");
    drop(pipe);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), shown)
}

/// On a terminal, `-C` and a large `restore` ask, naming the counts: `n`
/// changes nothing, `y` goes ahead (the restore reads its rules on stdin
/// and the answer from the terminal).
#[test]
fn the_prompt_is_answered_on_a_terminal() {
    let c = Cluster::start(1);
    let (status, body) = c.send_retrying(0, "PUT", "/api/v1/config", Some(&five()));
    assert_eq!(status, 200, "{body}");
    let server = c.nodes[0].url("");
    let before = c.config(0);
    let clear = format!("{BIN} -C --server {server}");

    let (ok_no, shown) = on_a_terminal(&clear, "n\n");
    assert!(!ok_no, "{shown}");
    assert!(
        shown.contains(
            "remove 5 services and 10 real servers from the cluster's desired state? [y/N]"
        ),
        "{shown}"
    );
    assert!(shown.contains("not confirmed: nothing changed"), "{shown}");
    assert_eq!(c.config(0), before);

    let dir = tempfile::tempdir().expect("tempdir");
    let rules_file = dir.path().join("rules");
    std::fs::write(&rules_file, rules(&[85])).expect("rules");
    let restore = format!(
        "{BIN} restore --server {server} < {}",
        rules_file.to_str().expect("utf-8 path")
    );
    let (ok_yes, shown) = on_a_terminal(&restore, "y\n");
    assert!(ok_yes, "{shown}");
    assert!(
        shown.contains("remove 4 services and 8 real servers from the cluster's desired state?"),
        "{shown}"
    );
    assert!(shown.contains("4 services changed, 1 unchanged"), "{shown}");
    assert_eq!(drains(&c).len(), 4);

    let (ok_yes, shown) = on_a_terminal(&clear, "y\n");
    assert!(ok_yes, "{shown}");
    assert!(
        shown.contains("remove 1 service and 2 real servers from the cluster's desired state?"),
        "{shown}"
    );
    assert!(
        shown.contains("cleared the desired state: 1 service"),
        "{shown}"
    );
    assert_eq!(drains(&c).len(), 5);
}
