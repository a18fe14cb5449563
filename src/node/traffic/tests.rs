//! Table tests of the history ring, a node's rows and details, and the
//! cluster's table with its changes; the kernel tables come from the
//! in-memory kernel with counters set on it; and the thread a round works on.

use super::*;
use crate::health::ServerState;
use crate::ipvs::memory::MemoryKernel;
use crate::ipvs::{Change, Kernel};
use crate::model::{
    CheckKind, Destination, HealthCheck, Protocol, ServiceConfig, Stats, VirtualService,
};

fn key(port: u16) -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "192.0.2.1".parse().unwrap(),
        port,
    }
}

fn dest(last: u8, weight: u32) -> Destination {
    Destination {
        weight,
        ..Destination::new(format!("10.0.0.{last}").parse().unwrap(), 80)
    }
}

fn config(port: u16, dests: &[Destination]) -> ServiceConfig {
    ServiceConfig::new(VirtualService::new(key(port)), dests.iter().copied(), 1)
}

/// A memory kernel holding `configs` as programmed, with `cps` on each
/// service and `(active, inactive)` connections on each destination.
fn kernel(configs: &[(ServiceConfig, u64, (u32, u32))]) -> MemoryKernel {
    let mut k = MemoryKernel::new();
    for (cfg, cps, (active, inactive)) in configs {
        k.apply(&Change::AddService(cfg.service.clone())).unwrap();
        for d in cfg.servers.values() {
            k.apply(&Change::AddDest(cfg.service.key, *d)).unwrap();
            assert!(k.set_dest_conns(&cfg.service.key, &d.key(), *active, *inactive, 0));
            let stats = Stats {
                cps: 1,
                inbps: 100,
                ..Default::default()
            };
            assert!(k.set_dest_stats(&cfg.service.key, &d.key(), stats));
        }
        let stats = Stats {
            cps: *cps,
            inbps: cps * 1000,
            outbps: cps * 2000,
            inpps: cps * 10,
            outpps: cps * 20,
            ..Default::default()
        };
        assert!(k.set_service_stats(&cfg.service.key, stats));
    }
    k
}

fn health(down: &[(u16, &Destination)]) -> HealthTable {
    HealthTable {
        servers: down
            .iter()
            .map(|(port, d)| {
                (
                    (key(*port), d.key()),
                    ServerState {
                        up: false,
                        since_ms: Some(1),
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn a_sample_sums_connections_over_destinations_and_saturates() {
    let cfg = config(80, &[dest(1, 1), dest(2, 1)]);
    let mut k = kernel(&[(cfg.clone(), 7, (3, 4))]);
    let e = k.services().unwrap();
    assert_eq!(
        Sample::of(&e[0]),
        Sample {
            active_conns: 6,
            inactive_conns: 8,
            cps: 7,
            inpps: 70,
            outpps: 140,
            inbps: 7000,
            outbps: 14000,
        }
    );
    assert!(k.set_dest_conns(&key(80), &dest(1, 1).key(), u32::MAX, 0, 0));
    let huge = Stats {
        cps: u64::MAX,
        ..Default::default()
    };
    assert!(k.set_service_stats(&key(80), huge));
    let s = Sample::of(&k.services().unwrap()[0]);
    assert_eq!((s.active_conns, s.cps), (u32::MAX, u32::MAX));
}

#[test]
fn the_history_keeps_90_samples_aligned_and_drops_removed_services() {
    let (a, b) = (config(80, &[dest(1, 1)]), config(81, &[dest(1, 1)]));
    let mut h = History::default();
    // Rounds 0..100: service 80 in every one, service 81 from round 95 on.
    for round in 0..100u64 {
        let mut list = vec![(a.clone(), round, (0, 0))];
        if round >= 95 {
            list.push((b.clone(), 1000 + round, (0, 0)));
        }
        h.record(round * 10_000, &kernel(&list).services().unwrap());
    }
    let s = h.series(&key(80));
    assert_eq!(s.at_ms.len(), HISTORY);
    assert_eq!(s.at_ms.first(), Some(&100_000), "the oldest 10 rounds gone");
    assert_eq!(s.cps.first(), Some(&10));
    assert_eq!((s.at_ms.last(), s.cps.last()), (Some(&990_000), Some(&99)));
    for series in [&s.active_conns, &s.inbps, &s.outpps] {
        assert_eq!(series.len(), HISTORY);
    }
    // The newer service's samples line up with the newest times.
    let s = h.series(&key(81));
    assert_eq!(s.at_ms, vec![950_000, 960_000, 970_000, 980_000, 990_000]);
    assert_eq!(s.cps, vec![1095, 1096, 1097, 1098, 1099]);
    // Gone from the kernel: gone from memory.
    h.record(1_000_000, &kernel(&[(b, 1, (0, 0))]).services().unwrap());
    assert_eq!(h.len(), 1);
    assert_eq!(h.series(&key(80)), json::TrafficHistory::default());
    assert_eq!(h.series(&key(81)).cps.len(), 6);
}

/// (kernel entry, servers down by health) → (up, total, programmed,
/// active connections).
type RowCase<'a> = (
    Option<&'a ServiceEntry>,
    Vec<(u16, &'a Destination)>,
    (u32, u32, bool, u64),
);

#[test]
fn a_node_row_counts_servers_up_in_its_kernel_and_health() {
    let (one, two, three) = (dest(1, 1), dest(2, 1), dest(3, 0));
    let cfg = config(80, &[one, two, three]);
    let programmed = kernel(&[(cfg.clone(), 5, (2, 3))]).services().unwrap();
    let partial = kernel(&[(config(80, &[one]), 5, (2, 3))])
        .services()
        .unwrap();
    let cases: Vec<RowCase> = vec![
        (None, vec![], (0, 3, false, 0)),
        // The third has weight 0 in the kernel: not up.
        (Some(&programmed[0]), vec![], (2, 3, true, 6)),
        (Some(&programmed[0]), vec![(80, &two)], (1, 3, true, 6)),
        // A down server of another service changes nothing.
        (Some(&programmed[0]), vec![(81, &two)], (2, 3, true, 6)),
        // Only the first server is in the kernel.
        (Some(&partial[0]), vec![], (1, 3, true, 2)),
    ];
    for (entry, down, (up, total, prog, active)) in cases {
        let row = node_row(&cfg, entry, &health(&down));
        assert_eq!(
            (
                row.servers_up,
                row.servers_total,
                row.programmed,
                row.active_conns
            ),
            (up, total, prog, active),
            "{entry:?} {down:?}"
        );
        assert!(row.reported);
        if prog {
            assert_eq!((row.cps, row.inbps, row.outbps), (5, 5000, 10000));
        }
    }
}

#[test]
fn a_detail_lists_desired_servers_and_the_kernels_others() {
    let (one, two) = (dest(1, 4), dest(2, 1));
    let mut cfg = config(80, &[one, two]);
    cfg.server_checks
        .insert(two.key(), HealthCheck::new(CheckKind::Tcp));
    // The kernel has the first server and a stray one, not the second.
    let stray = dest(9, 2);
    let entry = kernel(&[(config(80, &[one, stray]), 5, (2, 3))])
        .services()
        .unwrap();
    let d = node_detail(
        &cfg,
        Some(&entry[0]),
        &health(&[(80, &two)]),
        Default::default(),
    );
    assert!(d.programmed && d.reported);
    let got: Vec<(String, Option<u32>, &str, u64, u64)> = d
        .servers
        .iter()
        .map(|s| {
            (
                s.server.clone(),
                s.weight,
                s.health.as_str(),
                s.active_conns,
                s.cps,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.0.0.1-80".into(), Some(4), "unchecked", 2, 1),
            ("10.0.0.2-80".into(), None, "down", 0, 0),
            ("10.0.0.9-80".into(), Some(2), "unchecked", 2, 1),
        ]
    );
    let d = node_detail(&cfg, None, &HealthTable::default(), Default::default());
    assert!(!d.programmed);
    assert_eq!(d.servers[1].health, "up");
}

fn summary(rows: &[(&str, u64)]) -> json::NodeTrafficSummary {
    json::NodeTrafficSummary {
        kernel: true,
        sampled_at_ms: Some(1),
        read_failures: 0,
        services: rows
            .iter()
            .map(|(id, cps)| {
                (
                    id.to_string(),
                    json::TrafficNode {
                        servers_up: 1,
                        servers_total: 2,
                        programmed: true,
                        cps: *cps,
                        active_conns: 10,
                        reported: true,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}

/// One member, "a", with summary `s`.
fn members(s: &json::NodeTrafficSummary) -> Vec<(String, Option<&json::NodeTrafficSummary>)> {
    vec![("a".to_string(), Some(s))]
}

fn ids(v: &json::TrafficView) -> Vec<&str> {
    v.services.iter().map(|r| r.service.as_str()).collect()
}

#[test]
fn the_board_sums_members_and_marks_the_silent_one() {
    let mut b = Board::default();
    let (a, bb) = (summary(&[("s1", 3), ("s2", 0)]), summary(&[("s1", 4)]));
    b = b.next(
        ["s1".to_string(), "s2".to_string()],
        &[
            ("a".into(), Some(&a)),
            ("b".into(), Some(&bb)),
            ("c".into(), None),
        ],
    );
    let v = b.view(None);
    assert_eq!((v.sample, v.full), (1, true));
    assert_eq!(v.nodes, vec!["a", "b", "c"]);
    assert_eq!(v.unreachable, vec!["c"]);
    assert_eq!(ids(&v), vec!["s1", "s2"]);
    let s1 = &v.services[0];
    assert_eq!(
        s1.total,
        json::TrafficTotal {
            servers_up: 2,
            servers_total: 4,
            programmed: 2,
            active_conns: 20,
            inactive_conns: 0,
            cps: 7,
            inbps: 0,
            outbps: 0,
        }
    );
    assert_eq!(s1.cps, vec![7]);
    assert!(!s1.nodes["c"].reported);
    // b answered but has no s2 yet (its desired state is behind).
    let s2 = &v.services[1];
    assert!(s2.nodes["b"].reported && !s2.nodes["b"].programmed);
    assert_eq!(s2.cps, Vec::<u64>::new(), "leading zeros left out");
}

#[test]
fn since_answers_only_changes_and_removals_or_everything_when_unknown() {
    let mut b = Board::default();
    let all = |n: u64| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    let idle = summary(&[("s0", 0), ("s1", 0), ("s2", 0)]);
    b = b.next(all(3), &members(&idle));
    b = b.next(all(3), &members(&idle));
    // Idle: nothing changed after round 1.
    let v = b.view(Some(1));
    assert_eq!((v.sample, v.full), (2, false));
    assert!(v.services.is_empty() && v.removed.is_empty(), "{v:?}");
    // s1 gets traffic, s2 is removed.
    let busy = summary(&[("s0", 0), ("s1", 9)]);
    b = b.next(all(2), &members(&busy));
    let v = b.view(Some(2));
    assert_eq!(ids(&v), vec!["s1"]);
    assert_eq!(v.services[0].cps, vec![9]);
    assert_eq!(v.removed, vec!["s2"]);
    // From round 1 the same; from round 3 nothing.
    assert_eq!(b.view(Some(1)).removed, vec!["s2"]);
    let v = b.view(Some(3));
    assert!(v.services.is_empty() && v.removed.is_empty());
    // The traffic's history keeps changing s1's row while it is in it.
    b = b.next(all(2), &members(&idle));
    assert_eq!(ids(&b.view(Some(3))), vec!["s1"]);
    assert_eq!(b.view(Some(3)).services[0].cps, vec![9, 0]);
    // Unknown answers (0, the future) get everything.
    for since in [Some(0), Some(99), None] {
        let v = b.view(since);
        assert!(v.full, "{since:?}");
        assert_eq!(ids(&v), vec!["s0", "s1"]);
        assert!(v.removed.is_empty());
    }
    // Removed and back: listed as a row, not as removed.
    b = b.next(all(3), &members(&idle));
    let v = b.view(Some(2));
    assert!(v.services.iter().any(|r| r.service == "s2"));
    assert!(v.removed.is_empty());
}

#[test]
fn the_sparkline_holds_90_rounds_and_since_forgets_older_answers() {
    let mut b = Board::default();
    for round in 1..=100u64 {
        b = b.next(["s".to_string()], &members(&summary(&[("s", round)])));
    }
    let v = b.view(None);
    assert_eq!(v.services[0].cps.len(), HISTORY);
    assert_eq!(v.services[0].cps.first(), Some(&11));
    assert_eq!(v.services[0].cps.last(), Some(&100));
    assert!(!b.view(Some(10)).full, "90 rounds back is still known");
    assert!(b.view(Some(9)).full, "older is not");
}

#[test]
fn a_summary_has_a_row_for_every_desired_service() {
    let (a, b) = (config(80, &[dest(1, 1)]), config(81, &[dest(1, 1)]));
    let desired: DesiredState = vec![a.clone(), b].into_iter().collect();
    let table = kernel(&[(a, 3, (1, 1))]).services().unwrap();
    let rows = summarize(&desired, Some(&table), &HealthTable::default());
    let got: Vec<(&str, bool, u64)> = rows
        .iter()
        .map(|(id, r)| (id.as_str(), r.programmed, r.cps))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tcp-192.0.2.1-80", true, 3),
            ("tcp-192.0.2.1-81", false, 0)
        ]
    );
    let off = summarize(&desired, None, &HealthTable::default());
    assert!(off.values().all(|r| !r.programmed && r.servers_total == 1));
}

#[test]
fn answers_of_an_earlier_life_get_the_whole_table() {
    let idle = summary(&[("s", 0)]);
    let mut before = Board::starting_at(1000);
    for _ in 0..5 {
        before = before.next(["s".to_string()], &members(&idle));
    }
    assert_eq!(before.view(None).sample, 1004);
    // Restarted 60 s later: its rounds start above every earlier answer.
    let mut after = Board::starting_at(1060);
    after = after.next(["s".to_string()], &members(&idle));
    after = after.next(["s".to_string()], &members(&idle));
    assert_eq!(after.view(None).sample, 1061);
    for since in [1004, 1059] {
        assert!(after.view(Some(since)).full, "{since}");
    }
    assert!(!after.view(Some(1060)).full);
}

#[tokio::test]
async fn a_rounds_work_runs_under_sched_idle_and_returns_its_result() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
    let policy = in_background(|| thread_priority::thread_schedule_policy().ok())
        .await
        .expect("the work ran");
    assert_eq!(
        policy,
        Some(ThreadSchedulePolicy::Normal(
            NormalThreadSchedulePolicy::Idle
        ))
    );
    // This thread is left as it was.
    assert_ne!(
        thread_priority::thread_schedule_policy().ok(),
        Some(ThreadSchedulePolicy::Normal(
            NormalThreadSchedulePolicy::Idle
        ))
    );
}
