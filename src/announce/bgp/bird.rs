//! The managed BIRD 2 (BGP_SPEAKER=bird): the configuration ipvs-manager
//! writes for it, and the child process it runs and restarts.
//!
//! BIRD learns ANNOUNCE_TABLE through a `protocol kernel` with `learn`
//! (the routes are alien to it) and exports only those host routes to each
//! peer. It learns them from netlink notifications as they happen (measured
//! with BIRD 2.0.12: a route deleted from the table was withdrawn from the
//! peer within a few milliseconds with `scan time 60`); the periodic scan
//! is only a safety net.

use super::control::{self, Control, ControlError, Reply};
use crate::announce::settings::Bgp;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Seconds between BIRD's scans of the table: a safety net only, changes
/// come as netlink notifications.
const SCAN_TIME: u32 = 10;

/// BIRD's name for the BGP protocol of `BGP_PEERS`' entry `index`.
pub fn protocol_name(index: usize) -> String {
    format!("peer{}", index + 1)
}

/// The configuration text for `cfg`.
pub fn config(cfg: &Bgp) -> String {
    let mut c = String::new();
    let t = cfg.table;
    let _ = write!(
        c,
        "# Written by ipvs-manager (ANNOUNCE=bgp, BGP_SPEAKER=bird) at every start:\n\
         # change the settings, not this file.\n\
         router id {router_id};\n\
         log stderr all;\n\
         # BIRD runs with TZ=UTC: ipvs-manager reports these times as RFC 3339.\n\
         timeformat base iso long;\n\
         timeformat log iso long;\n\
         timeformat protocol iso long;\n\
         timeformat route iso long;\n\
         \n\
         protocol device {{\n\
         }}\n\
         \n\
         # The host routes of the addresses this node can serve, which\n\
         # ipvs-manager keeps in table {t}. Learnt, never written back.\n\
         protocol kernel vips4 {{\n\
         \x20 kernel table {t};\n\
         \x20 learn;\n\
         \x20 scan time {SCAN_TIME};\n\
         \x20 ipv4 {{ import all; export none; }};\n\
         }}\n\
         protocol kernel vips6 {{\n\
         \x20 kernel table {t};\n\
         \x20 learn;\n\
         \x20 scan time {SCAN_TIME};\n\
         \x20 ipv6 {{ import all; export none; }};\n\
         }}\n\
         \n\
         # Only those host routes leave this node.\n\
         filter vip_routes {{\n\
         \x20 if proto != \"vips4\" && proto != \"vips6\" then reject;\n\
         \x20 if net.type = NET_IP4 && net.len = 32 then accept;\n\
         \x20 if net.type = NET_IP6 && net.len = 128 then accept;\n\
         \x20 reject;\n\
         }}\n",
        router_id = cfg.router_id,
    );
    if let Some((interval, multiplier)) = cfg.bfd {
        let _ = write!(
            c,
            "\nprotocol bfd {{\n\
             \x20 interface \"*\" {{ interval {interval} ms; multiplier {multiplier}; }};\n\
             \x20 multihop {{ interval {interval} ms; multiplier {multiplier}; }};\n\
             }}\n"
        );
    }
    for (i, peer) in cfg.peers.iter().enumerate() {
        let family = match peer.address {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        };
        let _ = write!(
            c,
            "\nprotocol bgp {name} {{\n\
             \x20 local as {local};\n\
             \x20 neighbor {address} as {asn};\n{bfd}\
             \x20 {family} {{ import none; export filter vip_routes; }};\n\
             }}\n",
            name = protocol_name(i),
            local = cfg.local_as,
            address = peer.address,
            asn = peer.asn,
            bfd = if cfg.bfd.is_some() { "  bfd on;\n" } else { "" },
        );
    }
    c
}

/// What BIRD says of the sessions: BGP protocols by name, BFD by neighbour.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub sessions: BTreeMap<String, control::Session>,
    pub bfd: BTreeMap<IpAddr, String>,
}

/// Asks BIRD, over its control socket, how the sessions are.
pub async fn report(socket: &Path, bfd: bool) -> Result<Report, ControlError> {
    let mut control = Control::connect(socket).await?;
    let protocols = control.command("show protocols all").await?;
    let bfd = match bfd {
        true => control::parse_bfd(&control.command("show bfd sessions").await?),
        false => BTreeMap::new(),
    };
    Ok(Report {
        sessions: control::parse_protocols(&protocols),
        bfd,
    })
}

/// Tells the BIRD on `socket` to shut down (`down`); `Ok` when it took the
/// command.
async fn down(socket: &Path) -> Result<Reply, ControlError> {
    Control::connect(socket).await?.command("down").await
}

/// The BIRD child: started, watched, restarted with a growing delay when it
/// dies, stopped on request.
pub struct Bird {
    binary: String,
    pub conf: PathBuf,
    pub socket: PathBuf,
    child: Option<tokio::process::Child>,
    /// Not before this instant may it be started again.
    next_start: Instant,
    backoff: Duration,
    /// Why it is not running, while it is not.
    pub problem: Option<String>,
    pub restarts: u32,
}

impl Bird {
    /// BIRD's files live under `dir` (RAFT_VOL_DIR/bird).
    pub fn new(binary: &str, dir: &Path) -> Bird {
        Bird {
            binary: binary.to_string(),
            conf: dir.join("bird.conf"),
            socket: dir.join("bird.ctl"),
            child: None,
            next_start: Instant::now(),
            backoff: Duration::from_secs(1),
            problem: None,
            restarts: 0,
        }
    }

    /// Writes the configuration and makes sure no BIRD of an earlier run
    /// (left behind by a kill -9 of the node) still speaks on our socket:
    /// two speakers for one node would confuse the routers.
    pub async fn prepare(&mut self, cfg: &Bgp) -> Result<(), String> {
        let dir = self.conf.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        crate::files::write_whole(&self.conf, config(cfg).as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.conf.display()))?;
        if down(&self.socket).await.is_ok() {
            tracing::warn!(socket = %self.socket.display(),
                "a BIRD of an earlier run still answered on the control socket: told it to shut down");
            let end = Instant::now() + Duration::from_secs(10);
            while Control::connect(&self.socket).await.is_ok() && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Starts BIRD when it is not running (and its restart delay is over);
    /// notes why when it died. Returns whether it runs.
    pub fn supervise(&mut self) -> bool {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(None) => return true,
                Ok(Some(status)) => {
                    let why = format!("BIRD exited ({status}); restarting it");
                    tracing::error!(binary = %self.binary, %status, "BIRD exited; restarting it");
                    self.problem = Some(why);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot wait for BIRD; restarting it");
                    self.problem = Some(format!("cannot wait for BIRD: {e}"));
                }
            }
            self.child = None;
            self.next_start = Instant::now() + self.backoff;
            self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
            self.restarts += 1;
            return false;
        }
        if Instant::now() < self.next_start {
            return false;
        }
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("-f")
            .arg("-c")
            .arg(&self.conf)
            .arg("-s")
            .arg(&self.socket)
            // Its times, read back over the socket, are then UTC.
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            // BIRD's log (stderr) joins the node's, as the operator reads it.
            .stdout(Stdio::null())
            .kill_on_drop(true);
        match command.spawn() {
            Ok(child) => {
                tracing::info!(pid = child.id(), conf = %self.conf.display(), "BIRD started");
                self.child = Some(child);
                true
            }
            Err(e) => {
                tracing::error!(binary = %self.binary, error = %e, "cannot start BIRD");
                self.problem = Some(format!("cannot start BIRD_BINARY {:?}: {e}", self.binary));
                self.next_start = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                false
            }
        }
    }

    /// BIRD answered: it is up, and a later death restarts it quickly.
    pub fn answered(&mut self) {
        self.problem = None;
        self.backoff = Duration::from_secs(1);
    }

    /// Shuts BIRD down: `down` over the socket (it closes its sessions
    /// cleanly), then a kill when it has not gone within a few seconds.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Err(e) = down(&self.socket).await {
            tracing::warn!(error = %e, "BIRD did not take `down`; killing it");
        }
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(Ok(status)) => tracing::info!(%status, "BIRD stopped"),
            _ => {
                tracing::warn!("BIRD did not stop within 5 s; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Whether `binary` runs and is BIRD 2: its `--version` (on stderr) says
/// `BIRD version 2.…`.
pub fn version(binary: &str) -> Result<String, String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {binary:?}: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("BIRD version "))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "{binary:?} --version does not say it is BIRD: {:?}",
                text.trim()
            )
        })?;
    if !version.starts_with("2.") {
        return Err(format!(
            "{binary:?} is BIRD {version}; ipvs-manager writes BIRD 2's configuration"
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::settings::{Peer, Speaker};
    use std::net::Ipv4Addr;

    fn settings(bfd: Option<(u32, u32)>) -> Bgp {
        Bgp {
            local_as: 65001,
            peers: vec![
                Peer {
                    address: "192.0.2.1".parse().unwrap(),
                    asn: 65000,
                },
                Peer {
                    address: "2001:db8::1".parse().unwrap(),
                    asn: 4_200_000_000,
                },
            ],
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            speaker: Speaker::Bird,
            bfd,
            bird_binary: "bird".into(),
            table: 221,
        }
    }

    #[test]
    fn the_config_learns_the_table_and_exports_only_its_host_routes() {
        let text = config(&settings(Some((100, 3))));
        for needle in [
            "router id 10.0.0.2;",
            "protocol device {",
            "protocol kernel vips4 {\n  kernel table 221;\n  learn;\n  scan time 10;\n  ipv4 { import all; export none; };",
            "protocol kernel vips6 {\n  kernel table 221;",
            "if proto != \"vips4\" && proto != \"vips6\" then reject;",
            "net.len = 32 then accept",
            "net.len = 128 then accept",
            "protocol bfd {\n  interface \"*\" { interval 100 ms; multiplier 3; };",
            "protocol bgp peer1 {\n  local as 65001;\n  neighbor 192.0.2.1 as 65000;\n  bfd on;\n  ipv4 { import none; export filter vip_routes; };\n}",
            "protocol bgp peer2 {\n  local as 65001;\n  neighbor 2001:db8::1 as 4200000000;\n  bfd on;\n  ipv6 { import none; export filter vip_routes; };\n}",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let plain = config(&settings(None));
        assert!(!plain.contains("bfd"), "{plain}");
    }

    /// BIRD itself parses the text (`bird -p`), where it is installed.
    #[test]
    fn bird_accepts_the_config() {
        let bird = Path::new("/usr/sbin/bird");
        if !bird.exists() {
            eprintln!("no {}: skipped", bird.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for bfd in [Some((50, 5)), None] {
            let conf = dir.path().join("bird.conf");
            std::fs::write(&conf, config(&settings(bfd))).unwrap();
            let out = std::process::Command::new(bird)
                .arg("-p")
                .arg("-c")
                .arg(&conf)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(version(bird.to_str().unwrap()).unwrap().starts_with("2."));
        assert!(version("/bin/true")
            .unwrap_err()
            .contains("not say it is BIRD"));
        assert!(version("/nonexistent/bird")
            .unwrap_err()
            .contains("cannot run"));
    }

    /// deploy/bird-external.conf (for BGP_SPEAKER=external) is a whole
    /// configuration BIRD accepts, learning table 221 like ours.
    #[test]
    fn the_external_speaker_snippet_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/bird-external.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "kernel table 221;",
            "learn;",
            "export filter ipvs_vips;",
            "bfd on;",
        ] {
            assert!(
                text.contains(needle),
                "{needle:?} not in {}",
                path.display()
            );
        }
        let bird = Path::new("/usr/sbin/bird");
        if !bird.exists() {
            eprintln!("no {}: parse skipped", bird.display());
            return;
        }
        let out = std::process::Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
