//! `ipvs-manager backup` and `restore --backup`: the cluster's desired state
//! as a versioned JSON document that keeps every setting an operator made
//! (health checks and policies, `drain_grace`, `bind_address`: what `save`,
//! in ipvsadm's syntax, cannot hold), and the services a backup gives back.

use super::cluster::{desired_from, Api};
use crate::api::json::NodeView;
use crate::api::ApiError;
use crate::model::{DesiredState, ServiceConfig, ServiceKey, ServiceSpec};
use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What a backup says it is, so that `restore --backup` never takes other
/// JSON (a `GET /api/v1/config` body, a plan) for one.
pub const FORMAT: &str = "ipvs-manager-backup";
/// The version of the format this build writes and reads.
pub const VERSION: u64 = 1;

/// `backup`: the desired state as a backup, on stdout or in a file.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write it to FILE instead of stdout: whole or not at all (written
    /// beside it, flushed to disk, then renamed over it), so a failed backup
    /// never replaces a good one.
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
}

/// A backup: where and when it was taken, and the services as
/// `GET /api/v1/config` showed them (ids, revisions and drains included,
/// for the record; `restore --backup` ignores ids and revisions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`] when written by this build.
    pub version: u64,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// The node that served it (`RAFT_NODE_ID`).
    pub node: String,
    /// The node's applied log index before the read: every write committed
    /// up to it is in the backup (later ones may be too).
    pub applied_index: u64,
    pub services: Vec<Value>,
}

/// What restoring a backup makes the desired state, and what it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    pub specs: Vec<ServiceSpec>,
    /// What was draining when the backup was taken: its removal had been
    /// asked for, so it is not brought back (`TCP 192.0.2.10:80`,
    /// `198.51.100.12:80 of TCP 192.0.2.10:80`).
    pub left_out: Vec<String>,
}

/// `ipvs-manager backup [--file FILE]`.
pub fn backup(api: &Api, args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let backup = take(api)?;
    let mut text = serde_json::to_vec_pretty(&backup)?;
    text.push(b'\n');
    match &args.file {
        None => std::io::stdout().lock().write_all(&text)?,
        Some(path) => {
            write_whole(path, &text)?;
            let restored = restored(&backup.services)?;
            let (services, servers) = counts(&restored.specs);
            writeln!(
                std::io::stdout().lock(),
                "backed up {services} service{} and {servers} real server{} from {} \
                 (applied index {}) to {}",
                plural(services),
                plural(servers),
                backup.node,
                backup.applied_index,
                path.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the backup through `api`: the node's applied index first, then the
/// configuration with `?consistent=true` (so everything committed by then
/// is in it); checked to restore before it is handed out.
pub fn take(api: &Api) -> anyhow::Result<Backup> {
    let node: NodeView = api.get_json("/api/v1/node")?;
    let body = api.get("/api/v1/config?consistent=true")?;
    let config: Value =
        serde_json::from_slice(&body).context("unexpected answer to GET /api/v1/config")?;
    let Some(Value::Array(services)) = config.get("services") else {
        bail!("unexpected answer to GET /api/v1/config: no \"services\" list");
    };
    // A backup that would not restore is worth nothing: find out now.
    restored(services).context("the desired state read would not restore")?;
    Ok(Backup {
        format: FORMAT.to_string(),
        version: VERSION,
        created: crate::model::clock::rfc3339(std::time::SystemTime::now()),
        node: node.id,
        applied_index: node.last_applied,
        services: services.clone(),
    })
}

/// Reads a backup (`ipvs-manager backup`'s output): its envelope checked,
/// its services validated as `PUT /api/v1/config` validates them (an error
/// names the field: `services[2].servers[0].weight`).
pub fn read(bytes: &[u8]) -> anyhow::Result<(Backup, Restored)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| anyhow!("not JSON: {e}"))?;
    if value.get("format").and_then(Value::as_str) != Some(FORMAT) {
        bail!(
            "not an ipvs-manager backup: no \"format\": {FORMAT:?} (ipvsadm rules are restored \
             without --backup)"
        );
    }
    match value.get("version") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => bail!(
            "\"version\": {v}: this ipvs-manager reads backups of version {VERSION}; restore \
             with the ipvs-manager that wrote it"
        ),
        None => bail!("\"version\": missing"),
    }
    let backup: Backup = serde_json::from_value(value).map_err(|e| anyhow!("{e}"))?;
    let restored = restored(&backup.services)?;
    Ok((backup, restored))
}

/// Reads the backup in `path` (`-`: stdin).
pub fn read_file(path: &Path) -> anyhow::Result<(Backup, Restored)> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .context("cannot read the backup from stdin")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    read(&bytes).with_context(|| format!("{}", path.display()))
}

/// The services a backup's list restores: everything as configured, but
/// what was draining (its removal was asked for before the backup).
pub fn restored(services: &[Value]) -> anyhow::Result<Restored> {
    let body = serde_json::to_vec(&serde_json::json!({ "services": services }))?;
    crate::api::validate::parse_config(&body).map_err(|e| anyhow!(problem(&e)))?;
    let state = desired_from(&body)?;
    let mut restored = Restored {
        specs: Vec::new(),
        left_out: Vec::new(),
    };
    for cfg in state.services.values() {
        let key = cfg.service.key;
        if cfg.draining.is_some() {
            restored.left_out.push(key.to_string());
            continue;
        }
        for server in cfg.draining_servers.keys() {
            restored.left_out.push(format!("{server} of {key}"));
        }
        restored.specs.push(serving(cfg));
    }
    Ok(restored)
}

/// `cfg` as a spec, without its draining servers.
fn serving(cfg: &ServiceConfig) -> ServiceSpec {
    let kept = |server| !cfg.draining_servers.contains_key(server);
    ServiceSpec {
        service: cfg.service.clone(),
        servers: cfg
            .servers
            .iter()
            .filter(|(k, _)| kept(k))
            .map(|(_, d)| *d)
            .collect(),
        options: cfg.options.clone(),
        server_checks: cfg
            .server_checks
            .iter()
            .filter(|(k, _)| kept(k))
            .map(|(k, c)| (*k, c.clone()))
            .collect(),
    }
}

/// `current` with the services of `specs` put in (`restore --backup
/// --merge`): services the backup does not name stay as they are. What
/// drains in them is left out, so that it drains on (a replacement never
/// cuts a drain short) while what `specs` gives is taken back.
pub fn merged(current: &DesiredState, specs: Vec<ServiceSpec>) -> Vec<ServiceSpec> {
    let mut table: BTreeMap<ServiceKey, ServiceSpec> = current
        .services
        .values()
        .filter(|cfg| cfg.draining.is_none())
        .map(|cfg| (cfg.service.key, serving(cfg)))
        .collect();
    for spec in specs {
        table.insert(spec.service.key, spec);
    }
    table.into_values().collect()
}

/// Services and real servers in `specs`.
pub fn counts(specs: &[ServiceSpec]) -> (usize, usize) {
    (specs.len(), specs.iter().map(|s| s.servers.len()).sum())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A validation error as one line: the field, the problem, how many more.
fn problem(e: &ApiError) -> String {
    let mut line = match e.field() {
        Some(field) => format!("{field}: {}", e.message()),
        None => e.message().to_string(),
    };
    let more = e.details().len().saturating_sub(1);
    if more > 0 {
        line.push_str(&format!(" (and {more} more problem{})", plural(more)));
    }
    line
}

/// Writes `bytes` to `path` whole or not at all ([`crate::files`]), the
/// error naming the file.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::files::write_whole(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::view::config_view;
    use crate::model::{Command, DrainRequest};

    /// Every setting an operator can make, none at its default.
    const EVERYTHING: &str = r#"{"services":[
        {"protocol":"tcp","address":"192.0.2.10","port":443,"scheduler":"sh",
         "flags":["sh-fallback","sh-port"],
         "persistence":{"timeout":600,"netmask":"255.255.255.0"},"pe":"sip",
         "bind_address":true,"drain_grace":7,
         "health_check":{"kind":"http","method":"HEAD","path":"/healthz","expect":[200,204],
                         "body":"ok","host":"web.example","port":8081,
                         "interval":2.5,"timeout":1.5,"rise":3,"fall":4},
         "health_policy":{"unhealthy":"remove","slow_start":30,"all_down":"fallback",
                          "fallback":{"address":"198.51.100.99","port":80,"weight":2}},
         "servers":[
            {"address":"198.51.100.11","port":8443,"weight":3,"forward":"masq",
             "upper_threshold":100,"lower_threshold":50,
             "health_check":{"kind":"tcp","address":"198.51.100.111","port":22,
                             "interval":1,"timeout":0.5,"rise":1,"fall":2}},
            {"address":"2001:db8::12","port":443,"weight":0,"forward":"tunnel",
             "tunnel":{"type":"gue","port":6080,"checksum":"remcsum"}},
            {"address":"198.51.100.13","port":443,"weight":5,"forward":"dr"}]},
        {"protocol":"udp","address":"192.0.2.53","port":53,"scheduler":"rr",
         "flags":["one-packet"],
         "health_check":{"kind":"dns","payload":"example.org","interval":3,"timeout":1,
                         "rise":2,"fall":2},
         "health_policy":{"unhealthy":"zero","slow_start":0.5,"all_down":"fail-open"},
         "servers":[{"address":"198.51.100.21","port":53,"forward":"tunnel",
                     "tunnel":{"type":"gre","checksum":"csum"}}]},
        {"fwmark":7,"family":"ipv6","scheduler":"mh","flags":["mh-port"],
         "persistence":{"timeout":30,"netmask":64},
         "servers":[{"address":"2001:db8::31","port":0,"weight":9,"forward":"dr"}]}]}"#;

    fn state(config: &str) -> DesiredState {
        let specs = crate::api::validate::parse_config(config.as_bytes()).expect("valid");
        let mut state = DesiredState::default();
        state.apply(&Command::ReplaceAll(specs), 5);
        state
    }

    fn backup_of(state: &DesiredState) -> Vec<u8> {
        let view = serde_json::to_value(config_view(state)).expect("view");
        let backup = Backup {
            format: FORMAT.into(),
            version: VERSION,
            created: "2026-12-01T10:00:00Z".into(),
            node: "node1".into(),
            applied_index: 5,
            services: view["services"].as_array().cloned().unwrap_or_default(),
        };
        serde_json::to_vec_pretty(&backup).expect("backup")
    }

    #[test]
    fn a_backup_restores_every_setting() {
        let before = state(EVERYTHING);
        let (backup, restored) = read(&backup_of(&before)).expect("reads");
        assert_eq!((backup.node.as_str(), backup.applied_index), ("node1", 5));
        assert!(restored.left_out.is_empty());
        let mut after = DesiredState::default();
        after.apply(&Command::ReplaceAll(restored.specs.clone()), 5);
        // Field by field, services, servers, options and servers' checks.
        assert_eq!(after, before);
        let web = &after.services.values().next().expect("a service");
        assert!(web.options.bind_address);
        assert_eq!(web.options.drain_grace, Some(7));
        assert!(web.options.health_check.is_some());
        assert!(web.options.health_policy.remove_unhealthy);
        assert!(web.options.health_policy.fallback.is_some());
        assert_eq!(web.server_checks.len(), 1);
        assert_eq!(counts(&restored.specs), (3, 5));
    }

    #[test]
    fn what_was_draining_is_not_brought_back() {
        let mut s = state(EVERYTHING);
        let drain = DrainRequest {
            since_ms: 1_000,
            grace: Some(60),
            default_grace: 30,
        };
        let web = *s.services.keys().next().expect("a service");
        let dns = *s.services.keys().nth(1).expect("a service");
        let server = "198.51.100.11:8443"
            .parse::<std::net::SocketAddr>()
            .expect("addr");
        let server = crate::model::DestKey {
            addr: server.ip(),
            port: server.port(),
        };
        s.apply(
            &Command::DeleteServer {
                service: web,
                server,
                if_revision: None,
                drain: Some(drain),
            },
            6,
        );
        s.apply(
            &Command::DeleteService {
                key: dns,
                if_revision: None,
                drain: Some(drain),
            },
            7,
        );
        let (_, restored) = read(&backup_of(&s)).expect("reads");
        assert_eq!(
            restored.left_out,
            vec![
                "198.51.100.11:8443 of TCP 192.0.2.10:443".to_string(),
                "UDP 192.0.2.53:53".to_string()
            ]
        );
        assert_eq!(counts(&restored.specs), (2, 3));
        // The server's own health check goes with it.
        assert!(restored.specs[0].server_checks.is_empty());
        // Restored into the same cluster while the drains run (as
        // `restore --backup` sends it: undrain, removals drain), nothing
        // changes: what is left out drains on.
        let mut again = s.clone();
        again.apply(
            &Command::Replace {
                services: restored.specs,
                drain: Some(drain),
                undrain: true,
            },
            8,
        );
        assert_eq!(again, s);
    }

    #[test]
    fn a_merge_keeps_what_the_backup_does_not_name() {
        let current = state(EVERYTHING);
        let (_, restored) = read(&backup_of(&state(
            r#"{"services":[{"protocol":"tcp","address":"192.0.2.10","port":443},
                            {"protocol":"tcp","address":"192.0.2.99","port":80}]}"#,
        )))
        .expect("reads");
        let specs = merged(&current, restored.specs);
        assert_eq!(specs.len(), 4);
        let web = specs
            .iter()
            .find(|s| s.service.key.to_string() == "TCP 192.0.2.10:443")
            .expect("web");
        assert!(web.servers.is_empty(), "the backup's version wins");
    }

    #[test]
    fn bad_backups_are_refused_naming_the_problem() {
        let good: Value = serde_json::from_slice(&backup_of(&state(EVERYTHING))).expect("json");
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            edit(&mut v);
            serde_json::to_vec(&v).expect("json")
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"-A -t 10.0.0.1:80\n".to_vec(), "not JSON: "),
            (
                br#"{"services":[]}"#.to_vec(),
                "not an ipvs-manager backup: no \"format\": \"ipvs-manager-backup\"",
            ),
            (
                with(&|v| v["version"] = 2.into()),
                "\"version\": 2: this ipvs-manager reads backups of version 1",
            ),
            (
                with(&|v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("version");
                    }
                }),
                "\"version\": missing",
            ),
            (with(&|v| v["extra"] = true.into()), "unknown field `extra`"),
            (
                with(&|v| v["services"][0]["servers"][0]["weight"] = (-1).into()),
                "services[0].servers[0].weight: ",
            ),
            (
                with(&|v| v["services"][1]["health_check"]["kind"] = "ping".into()),
                "services[1].health_check.kind: ",
            ),
        ];
        for (bytes, expected) in cases {
            let err = read(&bytes).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected:?} in {err:?}");
        }
    }

    #[test]
    fn a_file_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("backup.json");
        write_whole(&path, b"one").expect("written");
        write_whole(&path, b"two").expect("written");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .expect("entries");
        assert_eq!(names, vec![std::ffi::OsString::from("backup.json")]);
        let missing = dir.path().join("no/such/dir/backup.json");
        let err = write_whole(&missing, b"x").unwrap_err().to_string();
        assert!(err.starts_with("cannot write "), "{err}");
    }
}
