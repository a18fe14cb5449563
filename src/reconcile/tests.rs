//! Table tests of the plan, and passes of the engine against the in-memory
//! kernel (with injected failures).

use super::plan::{plan, target, vips, Plan};
use super::*;
use crate::health::HealthTable;
use crate::ipvs::memory::MemoryKernel;
use crate::model::{
    DestEntry, Destination, Drain, Forward, Protocol, ServiceConfig, ServiceOptions, VirtualService,
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

fn desired(configs: Vec<ServiceConfig>) -> DesiredState {
    configs.into_iter().collect()
}

fn entry(service: VirtualService, dests: &[Destination]) -> ServiceEntry {
    ServiceEntry {
        service,
        stats: Default::default(),
        destinations: dests.iter().copied().map(DestEntry::new).collect(),
    }
}

fn kernel(entries: Vec<ServiceEntry>) -> BTreeMap<ServiceKey, ServiceEntry> {
    entries.into_iter().map(|e| (e.service.key, e)).collect()
}

fn owned(ports: &[u16]) -> BTreeSet<ServiceKey> {
    ports.iter().map(|p| key(*p)).collect()
}

const NOW: u64 = 1_000_000;

fn drain(grace: u32, ago_s: u64) -> Drain {
    Drain {
        since_ms: NOW - ago_s * 1000,
        grace,
    }
}

/// One row: the desired state, the kernel, the owned set and ownership →
/// the expected changes and foreign services.
struct Row {
    name: &'static str,
    desired: DesiredState,
    kernel: Vec<ServiceEntry>,
    owned: &'static [u16],
    ownership: Ownership,
    changes: Vec<Change>,
    foreign: Vec<ServiceKey>,
}

fn row(name: &'static str, desired: DesiredState, kernel: Vec<ServiceEntry>) -> Row {
    Row {
        name,
        desired,
        kernel,
        owned: &[],
        ownership: Ownership::Managed,
        changes: vec![],
        foreign: vec![],
    }
}

#[test]
fn plans_the_minimal_changes() {
    let web = VirtualService::new(key(80));
    let rr = VirtualService {
        scheduler: crate::model::Scheduler::new("rr").unwrap(),
        ..web.clone()
    };
    let d1 = dest(1, 1);
    let d2 = dest(2, 1);
    let mut draining_server = config(80, &[d1, d2]);
    draining_server
        .draining_servers
        .insert(d2.key(), drain(30, 10));
    let mut drained_server = config(80, &[d1, d2]);
    drained_server
        .draining_servers
        .insert(d2.key(), drain(30, 31));
    let mut draining_service = config(80, &[d1, d2]);
    draining_service.draining = Some(drain(60, 1));
    let mut drained_service = config(80, &[d1, d2]);
    drained_service.draining = Some(drain(60, 61));

    let rows = vec![
        Row {
            changes: vec![
                Change::AddService(web.clone()),
                Change::AddDest(key(80), d1),
                Change::AddDest(key(80), d2),
            ],
            ..row("empty kernel", desired(vec![config(80, &[d1, d2])]), vec![])
        },
        row(
            "kernel already matches",
            desired(vec![config(80, &[d1, d2])]),
            vec![entry(web.clone(), &[d1, d2])],
        ),
        Row {
            changes: vec![Change::EditService(rr.clone())],
            ..row(
                "scheduler changes in place",
                desired(vec![ServiceConfig::new(rr.clone(), [d1], 1)]),
                vec![entry(web.clone(), &[d1])],
            )
        },
        Row {
            changes: vec![
                Change::EditDest(key(80), dest(1, 5)),
                Change::EditDest(
                    key(80),
                    Destination {
                        forward: Forward::Route,
                        ..d2
                    },
                ),
            ],
            ..row(
                "weight and forwarding change in place",
                desired(vec![config(
                    80,
                    &[
                        dest(1, 5),
                        Destination {
                            forward: Forward::Route,
                            ..d2
                        },
                    ],
                )]),
                vec![entry(web.clone(), &[d1, d2])],
            )
        },
        Row {
            changes: vec![
                Change::DelDest(key(80), d1.key()),
                Change::AddDest(key(80), dest(3, 1)),
            ],
            ..row(
                "servers removed before servers added",
                desired(vec![config(80, &[d2, dest(3, 1)])]),
                vec![entry(web.clone(), &[d1, d2])],
            )
        },
        Row {
            owned: &[81],
            changes: vec![Change::DelService(key(81))],
            foreign: vec![key(82)],
            ..row(
                "owned services go, foreign ones stay",
                desired(vec![config(80, &[])]),
                vec![
                    entry(web.clone(), &[]),
                    entry(VirtualService::new(key(81)), &[d1]),
                    entry(VirtualService::new(key(82)), &[d1]),
                ],
            )
        },
        Row {
            ownership: Ownership::All,
            changes: vec![Change::DelService(key(82))],
            ..row(
                "owning the whole table",
                desired(vec![]),
                vec![entry(VirtualService::new(key(82)), &[d1])],
            )
        },
        Row {
            changes: vec![Change::EditDest(key(80), dest(2, 0))],
            ..row(
                "a draining server goes to weight 0",
                desired(vec![draining_server]),
                vec![entry(web.clone(), &[d1, d2])],
            )
        },
        Row {
            changes: vec![Change::DelDest(key(80), d2.key())],
            ..row(
                "a drained server is deleted",
                desired(vec![drained_server]),
                vec![entry(web.clone(), &[d1, dest(2, 0)])],
            )
        },
        Row {
            changes: vec![
                Change::EditDest(key(80), dest(1, 0)),
                Change::EditDest(key(80), dest(2, 0)),
            ],
            ..row(
                "a draining service keeps its servers at weight 0",
                desired(vec![draining_service]),
                vec![entry(web.clone(), &[d1, d2])],
            )
        },
        Row {
            owned: &[80],
            changes: vec![Change::DelService(key(80))],
            ..row(
                "a drained service is deleted",
                desired(vec![drained_service]),
                vec![entry(web.clone(), &[dest(1, 0), dest(2, 0)])],
            )
        },
    ];
    for r in rows {
        let got = plan(
            &r.desired,
            &kernel(r.kernel),
            None,
            &owned(r.owned),
            r.ownership,
            &HealthTable::default(),
            NOW,
        );
        assert_eq!(got.changes, r.changes, "{}", r.name);
        assert_eq!(got.foreign, r.foreign, "{}", r.name);
    }
}

#[test]
fn ownership_is_recorded_and_released() {
    let state = desired(vec![config(80, &[]), config(81, &[])]);
    let table = kernel(vec![entry(VirtualService::new(key(81)), &[])]);
    let got = plan(
        &state,
        &table,
        None,
        &owned(&[90]),
        Ownership::Managed,
        &HealthTable::default(),
        NOW,
    );
    assert_eq!(
        got,
        Plan {
            changes: vec![Change::AddService(VirtualService::new(key(80)))],
            foreign: vec![],
            adopt: owned(&[80, 81]),
            release: owned(&[90]),
        }
    );
}

#[test]
fn a_scoped_plan_touches_only_its_services() {
    let state = desired(vec![config(80, &[dest(1, 1)]), config(81, &[dest(1, 1)])]);
    let table = kernel(vec![
        entry(VirtualService::new(key(80)), &[]),
        entry(VirtualService::new(key(81)), &[]),
    ]);
    let scope = owned(&[81]);
    let got = plan(
        &state,
        &table,
        Some(&scope),
        &owned(&[]),
        Ownership::All,
        &HealthTable::default(),
        NOW,
    );
    assert_eq!(got.changes, vec![Change::AddDest(key(81), dest(1, 1))]);
}

#[test]
fn targets_changes_and_vips() {
    let mut cfg = config(80, &[dest(1, 1)]);
    assert_eq!(
        target(&cfg, &HealthTable::default(), NOW)
            .unwrap()
            .dests
            .len(),
        1
    );
    cfg.draining = Some(drain(5, 6));
    assert_eq!(target(&cfg, &HealthTable::default(), NOW), None);

    let old = desired(vec![config(80, &[]), config(81, &[])]);
    let mut new = old.clone();
    Arc::make_mut(new.services.get_mut(&key(81)).unwrap()).revision = 7;
    new.services.remove(&key(80));
    new.services.insert(key(82), Arc::new(config(82, &[])));
    assert_eq!(new.changed_since(&old), owned(&[80, 81, 82]));

    let mut bound = config(443, &[]);
    bound.options = ServiceOptions {
        bind_address: true,
        ..ServiceOptions::default()
    };
    let state = desired(vec![bound, config(80, &[])]);
    assert_eq!(
        vips(&state, NOW),
        BTreeSet::from(["192.0.2.1".parse().unwrap()])
    );
}

fn engine(kernel: MemoryKernel) -> Engine<MemoryKernel> {
    Engine::new(
        kernel,
        Owned::in_memory(BTreeSet::new()),
        Ownership::Managed,
    )
}

/// 1,000 services of three servers each.
fn big_state() -> DesiredState {
    desired(
        (1..=1000)
            .map(|port| config(port, &[dest(1, 1), dest(2, 2), dest(3, 3)]))
            .collect(),
    )
}

#[test]
fn a_matching_kernel_gets_no_change_and_one_change_costs_little() {
    let state = big_state();
    let mut e = engine(MemoryKernel::new());
    let report = e.pass(&state, &HealthTable::default(), &Scope::All, NOW);
    assert_eq!(report.applied, 4000);
    assert_eq!(e.owned().len(), 1000);

    // A restart: a new engine on the same table makes no change.
    let table = std::mem::take(e.kernel());
    let mut e = Engine::new(
        table,
        Owned::in_memory(e.owned().clone()),
        Ownership::Managed,
    );
    e.kernel().reset_counters();
    let report = e.pass(&state, &HealthTable::default(), &Scope::All, NOW);
    assert_eq!((report.applied, report.failed), (0, 0));
    assert_eq!(e.kernel().attempted(), 0);

    // One weight among 3,000 servers: one read, one edit.
    let mut next = state.clone();
    let cfg = Arc::make_mut(next.services.get_mut(&key(500)).unwrap());
    cfg.servers.insert(dest(2, 2).key(), dest(2, 9));
    cfg.revision = 2;
    let scope = Scope::Services(next.changed_since(&state));
    e.kernel().reset_counters();
    let report = e.pass(&next, &HealthTable::default(), &scope, NOW);
    assert_eq!(report.applied, 1);
    assert_eq!(e.kernel().attempted(), 1);
    assert_eq!(e.kernel().queries(), 1);
    assert_eq!(
        e.kernel().applied(),
        &[Change::EditDest(key(500), dest(2, 9))]
    );
}

#[test]
fn failed_changes_are_retried_until_they_pass() {
    let state = big_state();
    let mut kernel = MemoryKernel::new();
    // The kernel refuses one server twice (as ENOMEM would), and one
    // service's creation once.
    kernel.fail_when(
        |c| matches!(c, Change::AddDest(k, d) if *k == key(7) && d.weight == 2),
        libc::ENOMEM,
        Some(2),
    );
    kernel.fail_when(
        |c| matches!(c, Change::AddService(s) if s.key == key(9)),
        libc::ENOMEM,
        Some(1),
    );
    let mut e = engine(kernel);
    let first = e.pass(&state, &HealthTable::default(), &Scope::All, NOW);
    // The failures did not stop the other 3,990-odd changes.
    assert_eq!(first.failed, 1 + 4);
    assert_eq!(first.applied, 4000 - 5);
    assert_eq!(e.failing(), owned(&[7, 9]));
    let failed = e.failed();
    assert!(
        failed
            .iter()
            .any(|f| f.change.contains("10.0.0.2:80") && f.error.contains("ENOMEM")),
        "{failed:?}"
    );

    let second = e.pass(
        &state,
        &HealthTable::default(),
        &Scope::Services(e.failing()),
        NOW,
    );
    assert_eq!((second.applied, second.failed), (4, 1));
    assert_eq!(e.failing(), owned(&[7]));
    assert_eq!(e.failed()[0].attempts, 2);

    let third = e.pass(
        &state,
        &HealthTable::default(),
        &Scope::Services(e.failing()),
        NOW,
    );
    assert_eq!((third.applied, third.failed), (1, 0));
    assert!(e.failed().is_empty());
    // Converged: a full pass finds nothing to do.
    assert_eq!(
        e.pass(&state, &HealthTable::default(), &Scope::All, NOW)
            .applied,
        0
    );
}

#[test]
fn an_unreadable_kernel_changes_nothing() {
    let mut kernel = MemoryKernel::new();
    kernel.fail_queries(libc::EPERM, Some(1));
    let mut e = engine(kernel);
    let report = e.pass(
        &desired(vec![config(80, &[])]),
        &HealthTable::default(),
        &Scope::All,
        NOW,
    );
    assert!(report.error.is_some());
    assert_eq!(e.kernel().attempted(), 0);
    assert!(e.owned().is_empty());
}

#[test]
fn service_addresses_are_bound_when_asked_for() {
    use crate::ipvs::vip::MemoryVips;
    let vips = MemoryVips::new("ipvs0").unwrap();
    let mut e = engine(MemoryKernel::new()).with_vips(Box::new(vips.clone()));
    // Nothing asks for an address: the interface is not even created.
    e.pass(
        &desired(vec![config(80, &[])]),
        &HealthTable::default(),
        &Scope::All,
        NOW,
    );
    assert!(!vips.exists());

    let mut bound = config(443, &[]);
    bound.options.bind_address = true;
    let state = desired(vec![bound.clone(), config(80, &[])]);
    let scope = Scope::Services(owned(&[443]));
    e.pass(&state, &HealthTable::default(), &scope, NOW);
    let vip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert_eq!(vips.current(), BTreeSet::from([vip]));
    assert_eq!(e.bound(), vec![vip]);

    // Removed by hand: a full pass (resync) puts it back.
    vips.delete_by_hand();
    e.pass(&state, &HealthTable::default(), &Scope::All, NOW);
    assert_eq!(vips.current(), BTreeSet::from([vip]));

    // No longer asked for: unbound.
    bound.options.bind_address = false;
    bound.revision = 2;
    e.pass(
        &desired(vec![bound, config(80, &[])]),
        &HealthTable::default(),
        &scope,
        NOW,
    );
    assert!(vips.current().is_empty());
}
