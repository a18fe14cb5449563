//! The systemd unit on a real kernel. There is no systemd in the VM, so the
//! trial does what systemd would with `systemd/ipvs-manager.service`: the
//! ExecStart command line, with the unit's `Environment=` and then its
//! `EnvironmentFile=` (the template `deploy/install.sh` installs) in an
//! otherwise empty environment, as the unit's user would run it — not root,
//! only the unit's `AmbientCapabilities=` — with `NOTIFY_SOCKET` on a
//! socket the trial listens on and `WATCHDOG_USEC` from `WatchdogSec=`.
//! The sandbox options (ProtectSystem=, ...) are checked by
//! `systemd-analyze` in tests/service.rs, not here.

use crate::support::traffic::http_exchange;
use crate::support::Netns;
use libtest_mimic::Failed;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The uid and gid the node runs as (nobody): not root.
const NOBODY: u32 = 65534;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The `[Service]` settings of the unit, by key, in order.
fn unit_settings() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("systemd/ipvs-manager.service")).unwrap();
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn setting<'a>(unit: &'a [(String, String)], key: &str) -> &'a str {
    unit.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// `NAME=value` lines of an environment file (systemd.exec's syntax, the
/// part the template uses: comments, blank lines, optional quotes).
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// systemd's time span: `30s`, `10min`, `45`.
fn seconds(span: &str) -> u64 {
    let digits: String = span.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap();
    match &span[digits.len()..] {
        "" | "s" => n,
        "min" => n * 60,
        unit => panic!("time unit {unit:?}"),
    }
}

/// The notifications the node sends, as systemd would receive them.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Manager {
    /// Waits for a notification with `line`; returns it.
    fn until(&self, line: &str, limit: Duration) -> Result<String, Failed> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            let mut buf = [0u8; 4096];
            let Ok(n) = self.socket.recv(&mut buf) else {
                break;
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == line) {
                return Ok(message);
            }
            seen.push(message);
        }
        Err(format!("no {line} within {limit:?}; got {seen:?}").into())
    }
}

/// One HTTP/1.0 exchange with the node's API (loopback of `ns`).
fn http(ns: &Netns, method: &str, path: &str, body: &str) -> Result<(u16, String), Failed> {
    let addr = "127.0.0.1:2221".parse().expect("address");
    Ok(http_exchange(
        ns,
        addr,
        method,
        path,
        body,
        Duration::from_secs(30),
    )?)
}

/// `Uid:` and `CapEff:` of a process.
fn credentials(pid: u32) -> (String, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let caps = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (field("Uid:"), caps)
}

/// Starts the unit's command line in `ns`, as the unit's user would run.
fn start(
    ns: &Netns,
    unit: &[(String, String)],
    env: &BTreeMap<String, String>,
    log: &Path,
) -> Result<Child, Failed> {
    let exec = setting(unit, "ExecStart");
    assert_eq!(
        exec, "/usr/local/bin/ipvs-manager",
        "ExecStart has no arguments"
    );
    // Capabilities: exactly the unit's ambient set (and bounding set).
    let caps = setting(unit, "AmbientCapabilities");
    assert_eq!(caps, setting(unit, "CapabilityBoundingSet"));
    let caps: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = format!("-all,{}", caps.join(","));
    let log = std::fs::File::create(log)?;
    let child = ns.run(|| {
        Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                &format!("--inh-caps={caps}"),
                &format!("--ambient-caps={caps}"),
                &format!("--bounding-set={caps}"),
                "--no-new-privs",
            ])
            .arg(env!("CARGO_BIN_EXE_ipvs-manager"))
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
    })?;
    Ok(child)
}

/// SIGTERM, then the exit status within `limit`.
fn terminate(child: &mut Child, limit: Duration) -> Result<i32, Failed> {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(sent.success());
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err(format!("still running {limit:?} after SIGTERM").into())
}

/// The node started as the unit starts it: it runs as an unprivileged user
/// with CAP_NET_ADMIN only; READY=1 comes once it serves and has
/// programmed its kernel (a restart into a flushed table has put the
/// service back by then), WATCHDOG=1 follows; SIGTERM gives STOPPING=1 and
/// exit 0 within the unit's stop timeout, and the IPVS table stays as it
/// was, so traffic keeps flowing while the agent is down.
pub fn unit_starts_signals_and_stops() -> Result<(), Failed> {
    let unit = unit_settings();
    assert_eq!(setting(&unit, "Type"), "notify");
    let dir = tempfile::TempDir::new()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;

    // The environment systemd gives: Environment=, then EnvironmentFile=
    // (which wins), the file being the template as install.sh installs it.
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    for (_, v) in unit.iter().filter(|(k, _)| k == "Environment") {
        let (name, value) = v.split_once('=').unwrap();
        env.insert(name.to_string(), value.to_string());
    }
    assert_eq!(
        setting(&unit, "EnvironmentFile"),
        "/etc/ipvs-manager/ipvs-manager.env"
    );
    let template = std::fs::read_to_string(repo("deploy/ipvs-manager.env"))?;
    env.extend(environment_file(&template));
    // What systemd provides: the StateDirectory= (owned by the unit's user)
    // where RAFT_VOL_DIR points, the notify socket and the watchdog.
    let state = setting(&unit, "StateDirectory");
    assert_eq!(env["RAFT_VOL_DIR"], format!("/var/lib/{state}"));
    let data = dir.path().join(state);
    std::fs::create_dir(&data)?;
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY))?;
    env.insert("RAFT_VOL_DIR".into(), data.display().to_string());
    let manager = {
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
        Manager { socket, path }
    };
    env.insert("NOTIFY_SOCKET".into(), manager.path.display().to_string());
    let watchdog = seconds(setting(&unit, "WatchdogSec"));
    env.insert("WATCHDOG_USEC".into(), (watchdog * 1_000_000).to_string());
    env.insert("RUST_LOG".into(), "info".into());
    let stop_limit = Duration::from_secs(seconds(setting(&unit, "TimeoutStopSec")));

    let ns = Netns::load_balancer();
    let log = dir.path().join("log");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut node = start(&ns, &unit, &env, &log)?;
    let ready = manager.until("READY=1", Duration::from_secs(120));
    let ready = ready.map_err(|e| format!("{}\n{}", e.message().unwrap_or(""), logged()))?;
    assert!(
        ready.contains("STATUS=leader, term 1, 1 members"),
        "{ready}"
    );
    // Not root, and only CAP_NET_ADMIN (bit 12), CAP_NET_RAW (13) and
    // CAP_NET_BIND_SERVICE (10).
    let (uid, caps) = credentials(node.id());
    assert_eq!(uid.split_whitespace().next(), Some("65534"), "{uid}");
    assert_eq!(
        caps,
        1 << 12 | 1 << 13 | 1 << 10,
        "effective capabilities {caps:#x}"
    );
    assert_eq!(http(&ns, "GET", "/readyz", "")?.0, 200);
    manager.until("WATCHDOG=1", Duration::from_secs(watchdog))?;

    let service = r#"{"protocol":"tcp","address":"10.80.0.1","port":80,"scheduler":"wrr",
        "servers":[{"address":"10.1.0.11","port":8080,"weight":3}]}"#;
    let (status, body) = http(&ns, "POST", "/api/v1/services?wait=applied", service)?;
    assert_eq!(status, 201, "{body}");
    let table = ns.ipvsadm(&["-Sn"]);
    assert!(table.contains("-A -t 10.80.0.1:80 -s wrr"), "{table}");
    assert!(table.contains("-r 10.1.0.11:8080 -m -w 3"), "{table}");

    let code = terminate(&mut node, stop_limit)?;
    assert_eq!(code, 0, "{}", logged());
    manager.until("STOPPING=1", Duration::from_secs(1))?;
    assert_eq!(
        ns.ipvsadm(&["-Sn"]),
        table,
        "stopping left the table as it was"
    );

    // A restart into a flushed table: by READY=1 the service is back.
    ns.ipvsadm(&["-C"]);
    let mut node = start(&ns, &unit, &env, &log)?;
    manager
        .until("READY=1", Duration::from_secs(120))
        .map_err(|e| format!("{}\n{}", e.message().unwrap_or(""), logged()))?;
    assert_eq!(ns.ipvsadm(&["-Sn"]), table, "programmed before READY=1");
    assert_eq!(
        http(&ns, "GET", "/api/v1/services/tcp-10.80.0.1-80", "")?.0,
        200
    );
    assert_eq!(terminate(&mut node, stop_limit)?, 0, "{}", logged());
    assert_eq!(ns.ipvsadm(&["-Sn"]), table);
    Ok(())
}
