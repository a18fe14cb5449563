//! Views: the exact JSON of services, servers and the configuration, flag
//! names, and the plan of a configuration replacement.

use super::*;
use crate::api::view::{
    config_request, config_view, flag_names, plan_replacement, server_view, service_view,
    services_view,
};
use crate::model::{
    Command, DesiredState, Forward, Netmask, Persistence, Scheduler, ServiceFlags, ServiceSpec,
    Tunnel, TunnelChecksum, TunnelType,
};
use serde_json::json;
use std::net::Ipv4Addr;

fn web() -> ServiceConfig {
    let mut service = VirtualService::new(tcp("192.0.2.10", 443));
    service.scheduler = Scheduler::new("wrr").unwrap();
    service.persistence = Some(Persistence {
        timeout: 600,
        netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
    });
    // Inserted out of order: the view sorts by address, then port.
    config(
        service,
        &[
            dest("198.51.100.12", 443),
            Destination {
                weight: 3,
                upper_threshold: 1000,
                lower_threshold: 800,
                ..dest("198.51.100.11", 8443)
            },
            dest("198.51.100.11", 443),
        ],
        42,
    )
}

#[test]
fn service_json() {
    let mut cfg = web();
    cfg.options.bind_address = true;
    cfg.options.drain_grace = Some(45);
    cfg.draining_servers.insert(
        dest("198.51.100.12", 443).key(),
        crate::model::Drain {
            since_ms: 1_790_000_000_000,
            grace: 45,
        },
    );
    let got = serde_json::to_value(service_view(&cfg)).unwrap();
    let server = |addr: &str, port: u16, weight: u32, upper: u32, lower: u32| {
        json!({
            "id": format!("{addr}-{port}"), "address": addr, "port": port, "weight": weight,
            "forward": "masq", "upper_threshold": upper, "lower_threshold": lower, "tunnel": null
        })
    };
    assert_eq!(
        got,
        json!({
            "id": "tcp-192.0.2.10-443",
            "revision": 42,
            "protocol": "tcp",
            "address": "192.0.2.10",
            "port": 443,
            "scheduler": "wrr",
            "persistence": {"timeout": 600, "netmask": "255.255.255.0"},
            "flags": [],
            "pe": null,
            "bind_address": true,
            "drain_grace": 45,
            "servers": [
                server("198.51.100.11", 443, 1, 0, 0),
                server("198.51.100.11", 8443, 3, 1000, 800),
                json!({
                    "id": "198.51.100.12-443", "address": "198.51.100.12", "port": 443,
                    "weight": 1, "forward": "masq", "upper_threshold": 0, "lower_threshold": 0,
                    "tunnel": null,
                    "draining": {
                        "since": "2026-09-21T14:13:20Z", "grace": 45,
                        "until": "2026-09-21T14:14:05Z"
                    }
                }),
            ]
        })
    );
}

#[test]
fn fwmark_ipv6_service_json() {
    let mut service = VirtualService::new(fwmark(Family::Ipv6, 7));
    service.scheduler = Scheduler::new("mh").unwrap();
    service.flags = ServiceFlags::default()
        .with(ServiceFlags::ONE_PACKET)
        .with(ServiceFlags::SCHED1);
    service.persistence = Some(Persistence {
        timeout: 360,
        netmask: Netmask::V6(64),
    });
    service.pe_name = Some("sip".into());
    let servers = [
        Destination {
            forward: Forward::Tunnel(Tunnel {
                kind: TunnelType::Gue,
                port: 6080,
                checksum: TunnelChecksum::RemCsum,
            }),
            ..dest("198.51.100.11", 0)
        },
        Destination {
            forward: Forward::Route,
            ..dest("2001:db8::11", 0)
        },
        Destination {
            forward: Forward::Tunnel(Tunnel::default()),
            ..dest("2001:db8::12", 0)
        },
    ];
    let got = serde_json::to_value(service_view(&config(service, &servers, 5))).unwrap();
    assert_eq!(
        got,
        json!({
            "id": "fwmark-ipv6-7",
            "revision": 5,
            "fwmark": 7,
            "family": "ipv6",
            "scheduler": "mh",
            "persistence": {"timeout": 360, "netmask": 64},
            "flags": ["one-packet", "mh-fallback"],
            "pe": "sip",
            "bind_address": false,
            "servers": [
                {"id": "198.51.100.11-0", "address": "198.51.100.11", "port": 0, "weight": 1,
                 "forward": "tunnel", "upper_threshold": 0, "lower_threshold": 0,
                 "tunnel": {"type": "gue", "port": 6080, "checksum": "remcsum"}},
                {"id": "2001_db8__11-0", "address": "2001:db8::11", "port": 0, "weight": 1,
                 "forward": "dr", "upper_threshold": 0, "lower_threshold": 0, "tunnel": null},
                {"id": "2001_db8__12-0", "address": "2001:db8::12", "port": 0, "weight": 1,
                 "forward": "tunnel", "upper_threshold": 0, "lower_threshold": 0,
                 "tunnel": {"type": "ipip", "port": null, "checksum": "none"}},
            ]
        })
    );
}

#[test]
fn flag_names_follow_the_scheduler() {
    let named = |sched: &str, bits: &[u32]| {
        let mut s = VirtualService::new(tcp("192.0.2.10", 80));
        s.scheduler = Scheduler::new(sched).unwrap();
        for bit in bits {
            s.flags = s.flags.with(*bit);
        }
        flag_names(&s)
    };
    use ServiceFlags as F;
    assert_eq!(
        named("sh", &[F::SCHED1, F::SCHED2]),
        ["sh-fallback", "sh-port"]
    );
    assert_eq!(named("mh", &[F::SCHED2]), ["mh-port"]);
    // Bits the API never sets but the kernel may report: ipvsadm's names.
    assert_eq!(named("rr", &[F::SCHED1, F::SCHED3]), ["flag-1", "flag-3"]);
    assert_eq!(named("wlc", &[]), Vec::<String>::new());
}

#[test]
fn kernel_only_forwarding_methods_are_shown_not_hidden() {
    let local = Destination {
        forward: Forward::Local,
        ..dest("198.51.100.11", 80)
    };
    assert_eq!(server_view(&local, None).forward, "local");
    let bypass = Destination {
        forward: Forward::Bypass,
        ..local
    };
    assert_eq!(server_view(&bypass, None).forward, "bypass");
}

#[test]
fn the_configuration_is_sorted_by_identity() {
    let mut state = DesiredState::default();
    let keys = [
        fwmark(Family::Ipv4, 1),
        tcp("192.0.2.10", 443),
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr: "192.0.2.10".parse().unwrap(),
            port: 53,
        },
        tcp("192.0.2.10", 80),
    ];
    for (i, key) in keys.iter().enumerate() {
        let cmd = Command::CreateService(ServiceSpec {
            server_checks: Default::default(),
            options: Default::default(),
            service: VirtualService::new(*key),
            servers: vec![],
        });
        state.apply(&cmd, i as u64 + 1);
    }
    let ids: Vec<String> = config_view(&state)
        .services
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        ids,
        [
            "tcp-192.0.2.10-80",
            "tcp-192.0.2.10-443",
            "udp-192.0.2.10-53",
            "fwmark-ipv4-1"
        ]
    );
    assert_eq!(services_view(&state).len(), 4);
    let json = serde_json::to_value(config_view(&state)).unwrap();
    assert_eq!(
        json.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["services"]
    );
}

#[test]
fn get_config_is_a_valid_put_config() {
    let mut state = DesiredState::default();
    let cur = web();
    state
        .services
        .insert(cur.service.key, std::sync::Arc::new(cur));
    let body = serde_json::to_vec(&config_view(&state)).unwrap();
    let specs = crate::api::validate::parse_config(&body).unwrap();
    let mut again = state.clone();
    again.apply(&Command::ReplaceAll(specs.clone()), 100);
    // Nothing changed, so the revision stays.
    assert_eq!(again, state);
    assert_eq!(plan_replacement(&state, &specs, None, false).unchanged, 1);
    // And the body a client builds from specs is the same configuration.
    let request = serde_json::to_vec(&config_request(&specs)).unwrap();
    assert_eq!(crate::api::validate::parse_config(&request).unwrap(), specs);
}

#[test]
fn plans() {
    let mut state = DesiredState::default();
    let cur = web();
    let gone = config(VirtualService::new(tcp("192.0.2.20", 80)), &[], 3);
    let same = config(
        VirtualService::new(fwmark(Family::Ipv4, 1)),
        &[dest("198.51.100.1", 0)],
        4,
    );
    for c in [&cur, &gone, &same] {
        state
            .services
            .insert(c.service.key, std::sync::Arc::new(c.clone()));
    }
    let spec = |c: &ServiceConfig| ServiceSpec {
        server_checks: Default::default(),
        options: Default::default(),
        service: c.service.clone(),
        servers: c.servers.values().copied().collect(),
    };
    // web: scheduler changes, one server removed, one changed, one added.
    let mut changed = spec(&cur);
    changed.service.scheduler = Scheduler::new("rr").unwrap();
    changed
        .servers
        .retain(|d| d.key() != dkey("198.51.100.12", 443));
    changed.servers[0].weight = 9;
    changed.servers.push(dest("198.51.100.13", 443));
    let new = ServiceSpec {
        server_checks: Default::default(),
        options: Default::default(),
        service: VirtualService::new(tcp("192.0.2.30", 80)),
        servers: vec![],
    };
    let plan = plan_replacement(&state, &[new, changed, spec(&same)], None, false);
    let got = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        got,
        json!({
            "added": ["tcp-192.0.2.30-80"],
            "changed": [{
                "id": "tcp-192.0.2.10-443",
                "settings": true,
                "servers_added": ["198.51.100.13-443"],
                "servers_changed": ["198.51.100.11-443"],
                "servers_removed": ["198.51.100.12-443"],
            }],
            "removed": ["tcp-192.0.2.20-80"],
            "unchanged": 1,
        })
    );
    // Empty into empty.
    assert_eq!(
        plan_replacement(&DesiredState::default(), &[], None, false),
        Default::default()
    );
}
