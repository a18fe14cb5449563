//! `ANNOUNCE=bgp`: host routes for the addresses this node can serve, in a
//! kernel table ([`routes`]) that BIRD 2 ([`bird`], run by the node, read
//! through its control socket: [`control`]) or the operator's own speaker
//! exports to the routers. Every healthy node announces, so the routers
//! spread flows over all of them (ECMP).
//!
//! The order that keeps traffic flowing: on every change of the servable
//! set the table is synced (withdrawals first); on stop the table is
//! emptied, BIRD is watched until no established peer has a route of ours
//! left, a short settle lets the routers reprogram, and only then does BIRD
//! stop and the node exit — its kernel still forwarding meanwhile.

pub mod bird;
pub mod control;
pub mod routes;

use super::settings::{Bgp, SettingError, Speaker, Sysctls};
use super::sysctl::{self, Wanted};
use super::{servable, set_state, Context, Ledger};
use crate::api::json::{AnnounceView, BgpPeerView, BgpView};
use crate::config::KernelMode;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the table is re-synced (an operator's `ip route flush` is
/// undone within it) and BIRD's sessions are read.
const TICK: Duration = Duration::from_secs(1);

/// How long, on stop, the node waits for BIRD to have withdrawn every
/// route from every established peer.
const WITHDRAW_WAIT: Duration = Duration::from_secs(5);

/// After the withdrawal left, the routers' time to reprogram their FIB
/// before the speaker goes (a speaker that stops closes its sessions,
/// which makes the routers drop its routes anyway; this only keeps the
/// order certain).
const SETTLE: Duration = Duration::from_millis(500);

/// How long peers may take to come up before the node reports it cannot
/// announce.
const START_GRACE: Duration = Duration::from_secs(30);

/// Tables the kernel uses itself: the node empties its table of anything
/// else, so it must never be one of these.
const RESERVED_TABLES: [(u32, &str); 3] = [(253, "default"), (254, "main"), (255, "local")];

/// Checks the host has what the mode needs.
pub fn check(cfg: &Bgp, kernel: KernelMode) -> Result<(), SettingError> {
    if let Some((_, name)) = RESERVED_TABLES.iter().find(|(t, _)| *t == cfg.table) {
        return Err(SettingError {
            variable: "ANNOUNCE_TABLE",
            problem: format!(
                "{} is the kernel's {name} table; ipvs-manager owns ANNOUNCE_TABLE and \
                 deletes every other route in it: choose a free table (default 221)",
                cfg.table
            ),
        });
    }
    if kernel == KernelMode::Off {
        return Err(SettingError {
            variable: "ANNOUNCE",
            problem: "ANNOUNCE=bgp announces the addresses this node serves, and with \
                      IPVS_KERNEL=off it serves none: set IPVS_KERNEL=on (or ANNOUNCE=none)"
                .into(),
        });
    }
    if cfg.speaker == Speaker::Bird {
        bird::version(&cfg.bird_binary).map_err(|problem| SettingError {
            variable: "BIRD_BINARY",
            problem: format!(
                "{problem}: BGP_SPEAKER=bird needs BIRD 2 (`apt install bird2`), or set \
                 BIRD_BINARY to its path, or BGP_SPEAKER=external to use your own speaker"
            ),
        })?;
    }
    Ok(())
}

/// The kernel settings that let a node take over flows the routers move to
/// it mid-stream (ECMP rehashes when a next hop comes or goes).
pub fn wanted_sysctls() -> Vec<Wanted> {
    vec![
        Wanted::new(
            "net.ipv4.vs.sloppy_tcp",
            "1",
            "a TCP flow the routers move here mid-stream (its SYN went to another \
             node) is scheduled instead of dropped; with the mh scheduler it goes to \
             the same server as before",
        ),
        Wanted::new(
            "net.ipv4.vs.sloppy_sctp",
            "1",
            "the same for SCTP associations",
        ),
        Wanted::new(
            "net.ipv4.vs.expire_nodest_conn",
            "1",
            "a connection whose server was removed is expired at its next packet, \
             so the client gets a quick reset and its retry is scheduled anew, \
             instead of silence until the entry times out",
        ),
    ]
}

/// What the node knows of its speaker, for the view.
#[derive(Default)]
struct Speech {
    report: Option<bird::Report>,
    /// Why BIRD's state is unknown or bad.
    problem: Option<String>,
}

/// Announces until `stop`, then withdraws and returns.
pub async fn run(ctx: Context, stop: impl Future<Output = ()>) {
    let Context {
        cfg,
        vol_dir,
        mut servable,
        status,
        ..
    } = ctx;
    tokio::pin!(stop);
    let Some(bgp) = cfg.bgp.clone() else {
        // Settings validation makes this unreachable; report rather than panic.
        status.send_modify(|v| {
            set_state(
                v,
                "failed",
                Some("ANNOUNCE=bgp without its settings".into()),
            )
        });
        stop.await;
        return;
    };
    let started = Instant::now();
    status.send_modify(|v| {
        v.mode = "bgp".into();
        set_state(v, "starting", None);
        v.bgp = Some(view(&bgp, &Speech::default()));
    });
    let wanted = wanted_sysctls();
    let proc_sys = Path::new("/proc/sys");
    let mut sysctls = sysctl::apply(proc_sys, &wanted, cfg.sysctls);
    log_sysctls(&sysctls);

    let mut bird = match bgp.speaker {
        Speaker::Bird => {
            let mut bird = bird::Bird::new(&bgp.bird_binary, &vol_dir.join("bird"));
            if let Err(problem) = bird.prepare(&bgp).await {
                tracing::error!(%problem, "cannot prepare BIRD");
                bird.problem = Some(problem);
            }
            Some(bird)
        }
        Speaker::External => None,
    };
    let mut table: Option<routes::RouteTable> = None;
    let mut ledger = Ledger::default();
    let mut ever_established = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut servable_open = true;
    let mut now;
    loop {
        now = servable.borrow_and_update().clone();
        let serving = servable::serving(&now);
        // The table first: withdrawing must not wait on BIRD. The stop
        // interrupts a step in flight (both halves are re-runnable, and the
        // withdrawal syncs the table again): a step slowed by a starved CPU
        // or a slow BIRD must not delay the withdrawal.
        let step = async {
            let synced = sync_table(&mut table, bgp.table, &serving).await;
            (synced, speak(bird.as_mut(), &bgp).await)
        };
        let ((announced, table_problem), speech) = tokio::select! {
            biased;
            _ = &mut stop => break,
            stepped = step => stepped,
        };
        // Modules load late (IPVS's settings appear with ip_vs): retry what
        // is not right yet.
        if cfg.sysctls == Sysctls::Set && sysctls.iter().any(|s| !s.ok) {
            let again = sysctl::apply(proc_sys, &wanted, cfg.sysctls);
            if again != sysctls {
                log_sysctls(&again);
            }
            sysctls = again;
        }
        let established = speech
            .report
            .as_ref()
            .is_some_and(|r| r.sessions.values().any(|s| s.state == "Established"));
        ever_established |= established;
        let problem = table_problem.or_else(|| speech.problem.clone());
        let (state, problem) = match problem {
            Some(p) if started.elapsed() < START_GRACE && !ever_established && bird.is_some() => {
                ("starting", Some(p))
            }
            Some(p) if table.is_none() || speech.report.is_none() || !established => {
                ("failed", Some(p))
            }
            p => (
                if announced.is_empty() {
                    "idle"
                } else {
                    "announcing"
                },
                p,
            ),
        };
        let vips = ledger.views(&now, &announced, &BTreeMap::new(), |_| {
            Some("its route is not in the table yet".into())
        });
        status.send_modify(|v| {
            set_state(v, state, problem);
            v.vips = vips;
            v.bgp = Some(view(&bgp, &speech));
            v.sysctls = sysctls.clone();
        });
        tokio::select! {
            r = servable.changed(), if servable_open => {
                // The sender goes as the node stops; the stop arm follows.
                servable_open = r.is_ok();
            }
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
    }
    withdraw(&status, &bgp, &mut table, bird.as_mut(), &mut ledger, &now).await;
}

/// Empties the table, waits (bounded) until BIRD has withdrawn everything
/// from every established peer, lets the routers settle, stops BIRD.
async fn withdraw(
    status: &tokio::sync::watch::Sender<AnnounceView>,
    bgp: &Bgp,
    table: &mut Option<routes::RouteTable>,
    bird: Option<&mut bird::Bird>,
    ledger: &mut Ledger,
    servable: &servable::Servable,
) {
    let begun = Instant::now();
    status.send_modify(|v| set_state(v, "withdrawn", Some("stopping: routes withdrawn".into())));
    let (announced, problem) = match empty_table(bgp.table).await {
        Ok(Ok(synced)) => (synced.announced, None),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot empty the announcement table from its own thread; trying again");
            sync_table(table, bgp.table, &BTreeSet::new()).await
        }
        // No thread: the usual way.
        Err(_) => sync_table(table, bgp.table, &BTreeSet::new()).await,
    };
    match problem {
        Some(problem) => tracing::error!(%problem, "cannot empty the announcement table on stop"),
        None => tracing::info!(
            ms = begun.elapsed().as_millis() as u64,
            table = bgp.table,
            "stopping: announcement table emptied"
        ),
    }
    let vips = ledger.views(servable, &announced, &BTreeMap::new(), |_| {
        Some("withdrawn: the node is stopping".into())
    });
    status.send_modify(|v| v.vips = vips);
    match bird {
        Some(bird) => {
            let end = Instant::now() + WITHDRAW_WAIT;
            loop {
                let left = match bird::report(&bird.socket, bgp.bfd.is_some()).await {
                    Ok(report) => exported_left(&report),
                    // No BIRD, no routes announced by it.
                    Err(e) => {
                        tracing::warn!(error = %e, "BIRD does not answer while withdrawing");
                        Vec::new()
                    }
                };
                if left.is_empty() {
                    tracing::info!(
                        ms = begun.elapsed().as_millis() as u64,
                        "BIRD withdrew every route from every established peer"
                    );
                    break;
                }
                if Instant::now() >= end {
                    tracing::warn!(
                        peers = ?left,
                        "BIRD still exports routes after {} s; stopping it anyway (the peers \
                         drop its routes when its sessions close)",
                        WITHDRAW_WAIT.as_secs()
                    );
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(SETTLE).await;
            bird.stop().await;
        }
        // The operator's speaker learns the change in milliseconds; give it
        // and the routers the same settle.
        None => tokio::time::sleep(SETTLE * 2).await,
    }
    if let Some(t) = table.take() {
        drop(t);
    }
    tracing::info!(
        ms = begun.elapsed().as_millis() as u64,
        "routes withdrawn; the announcer stops"
    );
}

/// Empties the table from a thread of its own, with its own socket and
/// runtime: as the node stops, its runtime is busy stopping everything else
/// (seen under emulation: 1.5 s before a shared-runtime netlink request was
/// answered), and the withdrawal must not queue behind that.
fn empty_table(id: u32) -> tokio::sync::oneshot::Receiver<std::io::Result<routes::Synced>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("bgp-withdraw".into())
        .spawn(move || {
            let emptied = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .and_then(|runtime| {
                    runtime.block_on(async {
                        routes::RouteTable::open(id)?.sync(&BTreeSet::new()).await
                    })
                });
            let _ = tx.send(emptied);
        });
    if let Err(e) = spawned {
        // The sender went with the closure: the receiver reports it.
        tracing::warn!(error = %e, "cannot start a thread to empty the announcement table");
    }
    rx
}

/// The established sessions that still export routes.
fn exported_left(report: &bird::Report) -> Vec<String> {
    report
        .sessions
        .iter()
        .filter(|(_, s)| s.state == "Established" && s.exported != Some(0))
        .map(|(name, s)| format!("{name}: {:?} exported", s.exported))
        .collect()
}

/// Syncs the table to `serving`, opening the socket when needed; the
/// addresses announced afterwards and what went wrong.
async fn sync_table(
    table: &mut Option<routes::RouteTable>,
    id: u32,
    serving: &BTreeSet<IpAddr>,
) -> (BTreeSet<IpAddr>, Option<String>) {
    if table.is_none() {
        match routes::RouteTable::open(id) {
            Ok(t) => *table = Some(t),
            Err(e) => {
                return (
                    BTreeSet::new(),
                    Some(format!("cannot open route netlink for table {id}: {e}")),
                )
            }
        }
    }
    let Some(t) = table.as_ref() else {
        return (BTreeSet::new(), None);
    };
    match t.sync(serving).await {
        Ok(synced) => {
            if !synced.added.is_empty() || synced.removed > 0 {
                tracing::info!(
                    table = id,
                    added = ?synced.added,
                    removed = synced.removed,
                    announced = ?synced.announced,
                    "announcement table synced"
                );
            }
            (synced.announced, None)
        }
        Err(e) => {
            tracing::error!(table = id, error = %e, "cannot sync the announcement table");
            // What is there is what the routers see.
            let announced = t.announced().await.unwrap_or_default();
            // A fresh socket next time, in case this one is what broke.
            *table = None;
            (announced, Some(format!("table {id}: {e}")))
        }
    }
}

/// Keeps BIRD running and reads its sessions.
async fn speak(bird: Option<&mut bird::Bird>, bgp: &Bgp) -> Speech {
    let Some(bird) = bird else {
        return Speech::default();
    };
    if !bird.supervise() {
        return Speech {
            report: None,
            problem: Some(
                bird.problem
                    .clone()
                    .unwrap_or_else(|| "BIRD is not running".into()),
            ),
        };
    }
    match bird::report(&bird.socket, bgp.bfd.is_some()).await {
        Ok(report) => {
            bird.answered();
            let down: Vec<String> = bgp
                .peers
                .iter()
                .enumerate()
                .filter_map(|(i, peer)| {
                    let state = report
                        .sessions
                        .get(&bird::protocol_name(i))
                        .map_or("unknown", |s| s.state.as_str());
                    (state != "Established")
                        .then(|| format!("peer {} (AS {}) is {state}", peer.address, peer.asn))
                })
                .collect();
            Speech {
                report: Some(report),
                problem: (!down.is_empty()).then(|| down.join("; ")),
            }
        }
        Err(e) => Speech {
            report: None,
            problem: Some(format!("BIRD does not answer: {e}")),
        },
    }
}

/// The `bgp` part of the view.
fn view(bgp: &Bgp, speech: &Speech) -> BgpView {
    BgpView {
        speaker: match bgp.speaker {
            Speaker::Bird => "bird",
            Speaker::External => "external",
        }
        .into(),
        local_as: bgp.local_as,
        router_id: bgp.router_id,
        table: bgp.table,
        bfd_detect_ms: bgp.bfd.map(|(interval, multiplier)| interval * multiplier),
        peers: bgp
            .peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let session = speech
                    .report
                    .as_ref()
                    .and_then(|r| r.sessions.get(&bird::protocol_name(i)));
                BgpPeerView {
                    address: peer.address,
                    asn: peer.asn,
                    state: session.map_or_else(|| "unknown".into(), |s| s.state.clone()),
                    since: session.and_then(|s| s.since.clone()),
                    exported: session.and_then(|s| s.exported),
                    bfd: bgp.bfd.and_then(|_| {
                        let bfd = &speech.report.as_ref()?.bfd;
                        Some(
                            bfd.get(&peer.address)
                                .cloned()
                                .unwrap_or_else(|| "none".into()),
                        )
                    }),
                }
            })
            .collect(),
    }
}

fn log_sysctls(sysctls: &[crate::api::json::SysctlView]) {
    for s in sysctls {
        match &s.problem {
            None => {
                tracing::info!(name = %s.name, value = ?s.value, "kernel setting as ANNOUNCE=bgp wants it")
            }
            Some(problem) => {
                tracing::warn!(name = %s.name, wanted = %s.wanted, value = ?s.value, %problem, "kernel setting not as ANNOUNCE=bgp wants it")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announce::settings::Peer;
    use std::net::Ipv4Addr;

    fn settings(speaker: Speaker, binary: &str, table: u32) -> Bgp {
        Bgp {
            local_as: 65001,
            peers: vec![Peer {
                address: "192.0.2.1".parse().unwrap(),
                asn: 65000,
            }],
            router_id: Ipv4Addr::new(10, 0, 0, 2),
            speaker,
            bfd: Some((100, 3)),
            bird_binary: binary.into(),
            table,
        }
    }

    #[test]
    fn check_names_the_variable_and_the_fix() {
        let e = check(
            &settings(Speaker::Bird, "/nonexistent/bird", 221),
            KernelMode::On,
        )
        .unwrap_err();
        assert_eq!(e.variable, "BIRD_BINARY");
        assert!(e.problem.contains("apt install bird2"), "{e}");
        // The operator's own speaker needs no BIRD here.
        check(
            &settings(Speaker::External, "/nonexistent/bird", 221),
            KernelMode::On,
        )
        .unwrap();
        for table in [253, 254, 255] {
            let e = check(&settings(Speaker::External, "bird", table), KernelMode::On).unwrap_err();
            assert_eq!(e.variable, "ANNOUNCE_TABLE");
        }
        let e = check(&settings(Speaker::External, "bird", 221), KernelMode::Off).unwrap_err();
        assert_eq!(e.variable, "ANNOUNCE");
    }

    #[test]
    fn the_view_shows_each_peer_as_bird_reports_it() {
        let bgp = settings(Speaker::Bird, "bird", 221);
        let unknown = view(&bgp, &Speech::default());
        assert_eq!(unknown.bfd_detect_ms, Some(300));
        assert_eq!(unknown.peers[0].state, "unknown");
        assert_eq!(unknown.peers[0].bfd, None);
        let mut report = bird::Report::default();
        report.sessions.insert(
            "peer1".into(),
            control::Session {
                state: "Established".into(),
                since: Some("2026-12-07T03:40:47Z".into()),
                exported: Some(2),
            },
        );
        report.bfd.insert("192.0.2.1".parse().unwrap(), "Up".into());
        let speech = Speech {
            report: Some(report.clone()),
            problem: None,
        };
        let v = view(&bgp, &speech);
        assert_eq!(v.peers[0].state, "Established");
        assert_eq!(v.peers[0].exported, Some(2));
        assert_eq!(v.peers[0].bfd.as_deref(), Some("Up"));
        assert_eq!(exported_left(&report), ["peer1: Some(2) exported"]);
        report.sessions.get_mut("peer1").unwrap().exported = Some(0);
        assert!(exported_left(&report).is_empty());
        // A session that is not established holds nothing at the peer.
        report.sessions.get_mut("peer1").unwrap().state = "Active".into();
        report.sessions.get_mut("peer1").unwrap().exported = None;
        assert!(exported_left(&report).is_empty());
    }

    #[test]
    fn the_sysctls_are_ipvs_ones() {
        let names: Vec<String> = wanted_sysctls().into_iter().map(|w| w.name).collect();
        assert_eq!(
            names,
            [
                "net.ipv4.vs.sloppy_tcp",
                "net.ipv4.vs.sloppy_sctp",
                "net.ipv4.vs.expire_nodest_conn"
            ]
        );
    }
}
