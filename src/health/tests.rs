//! The health overlay on what the kernel should hold: down servers out of
//! rotation, drains winning, fail-open and fallback when all are down.

use super::*;
use crate::model::{CheckKind, HealthCheck, Protocol, VirtualService};

fn check() -> HealthCheck {
    HealthCheck::new(CheckKind::Tcp)
}

fn key() -> ServiceKey {
    ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "192.0.2.1".parse().unwrap(),
        port: 80,
    }
}

fn server(last: u8, weight: u32) -> Destination {
    Destination {
        weight,
        ..Destination::new(format!("198.51.100.{last}").parse().unwrap(), 80)
    }
}

/// A service with servers .1 (weight 3) and .2 (weight 5), both checked.
fn cfg() -> ServiceConfig {
    let mut cfg = ServiceConfig::new(VirtualService::new(key()), [server(1, 3), server(2, 5)], 1);
    cfg.options.health_check = Some(check());
    cfg
}

fn table(states: &[(u8, bool, Option<u64>)]) -> HealthTable {
    HealthTable {
        servers: states
            .iter()
            .map(|&(last, up, since_ms)| {
                ((key(), server(last, 0).key()), ServerState { up, since_ms })
            })
            .collect(),
    }
}

fn weights(cfg: &ServiceConfig, t: &HealthTable, now: u64) -> Vec<(u8, u32)> {
    let mut dests = cfg.servers.clone();
    overlay(cfg, &mut dests, t, now);
    dests
        .values()
        .map(|d| match d.addr {
            std::net::IpAddr::V4(a) => (a.octets()[3], d.weight),
            std::net::IpAddr::V6(_) => (0, d.weight),
        })
        .collect()
}

#[test]
fn a_down_server_gets_weight_zero_or_goes() {
    let mut c = cfg();
    let t = table(&[(1, false, Some(10)), (2, true, None)]);
    assert_eq!(weights(&c, &t, 100), vec![(1, 0), (2, 5)]);
    c.options.health_policy.remove_unhealthy = true;
    assert_eq!(weights(&c, &t, 100), vec![(2, 5)]);
}

#[test]
fn servers_without_a_check_are_left_alone() {
    let mut c = cfg();
    c.options.health_check = None;
    c.server_checks.insert(server(1, 0).key(), check());
    // .2 has no check: a stale entry for it changes nothing.
    let t = table(&[(1, false, Some(10)), (2, false, Some(10))]);
    assert_eq!(weights(&c, &t, 100), vec![(1, 0), (2, 5)]);
    // A check of kind none is no check.
    c.server_checks.insert(
        server(1, 0).key(),
        HealthCheck {
            kind: CheckKind::None,
            ..check()
        },
    );
    assert_eq!(weights(&c, &t, 100), vec![(1, 3), (2, 5)]);
}

#[test]
fn a_recovered_server_ramps_up_over_slow_start() {
    let mut c = cfg();
    c.options.health_policy.slow_start_ms = 10_000;
    let t = table(&[(1, true, Some(1_000)), (2, true, None)]);
    assert_eq!(weights(&c, &t, 1_000), vec![(1, 1), (2, 5)]);
    assert_eq!(weights(&c, &t, 11_000), vec![(1, 3), (2, 5)]);
    assert!(t.ramping(&c, 5_000));
    assert!(!t.ramping(&c, 11_000));
}

#[test]
fn a_drained_server_stays_drained_when_healthy() {
    let mut c = cfg();
    c.draining_servers.insert(
        server(1, 0).key(),
        crate::model::Drain {
            since_ms: 0,
            grace: 60,
        },
    );
    let t = table(&[(1, true, Some(1_000)), (2, true, None)]);
    let mut dests = crate::reconcile::plan::target(&c, &t, 2_000)
        .expect("a target")
        .dests;
    assert_eq!(dests[&server(1, 0).key()].weight, 0);
    // And all-down counts the servers that take traffic: .2 alone.
    let t = table(&[(1, true, None), (2, false, Some(5))]);
    assert!(all_down(&c, &t));
    overlay(&c, &mut dests, &t, 2_000);
    assert_eq!(dests[&server(2, 0).key()].weight, 5, "fail open");
}

#[test]
fn all_down_fails_open_or_falls_back() {
    let mut c = cfg();
    let t = table(&[(1, false, Some(10)), (2, false, Some(10))]);
    assert!(all_down(&c, &t));
    assert_eq!(weights(&c, &t, 100), vec![(1, 3), (2, 5)]);
    c.options.health_policy.fallback = Some(server(9, 0));
    assert_eq!(weights(&c, &t, 100), vec![(1, 0), (2, 0), (9, 1)]);
    c.options.health_policy.remove_unhealthy = true;
    assert_eq!(weights(&c, &t, 100), vec![(9, 1)]);
    // One server back: the fallback goes.
    let t = table(&[(1, true, Some(20)), (2, false, Some(10))]);
    assert!(!all_down(&c, &t));
    assert_eq!(weights(&c, &t, 100), vec![(1, 3)]);
}

#[test]
fn changed_names_the_services() {
    let a = table(&[(1, true, None)]);
    let b = table(&[(1, false, Some(5))]);
    assert_eq!(a.changed(&b), [key()].into());
    assert!(a.changed(&a).is_empty());
    assert_eq!(a.changed(&HealthTable::default()), [key()].into());
}
