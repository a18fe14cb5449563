//! Model → response JSON: services with their id, revision and servers
//! (sorted), the whole configuration, request bodies for clients, and the
//! plan of a configuration replacement (`PUT /api/v1/config?dry_run=true`).
//!
//! Every view is total: the model can hold values the API never accepts
//! (`Local` and `Bypass` forwarding, scheduler flag bits without a name for
//! the scheduler), because the kernel can report them; they are shown by
//! their kernel names rather than hidden.

use super::ids;
use super::json::{
    ConfigPlan, ConfigView, DrainView, NetmaskView, PersistenceView, ServerView, ServiceChange,
    ServiceView, TunnelView,
};
use crate::model::clock::rfc3339_ms;
use crate::model::{
    DesiredState, DestKey, Destination, Drain, DrainRequest, Forward, HealthCheck, HealthPolicy,
    Netmask, ServiceConfig, ServiceFlags, ServiceKey, ServiceSpec, Services, TunnelChecksum,
    TunnelType, VirtualService,
};
use serde_json::Value;
use std::collections::BTreeSet;

/// A service as responses show it.
pub fn service_view(cfg: &ServiceConfig) -> ServiceView {
    let servers = cfg
        .servers
        .keys()
        .filter_map(|key| server_of(cfg, key))
        .collect();
    ServiceView {
        bind_address: cfg.options.bind_address,
        drain_grace: cfg.options.drain_grace,
        draining: cfg.draining.as_ref().map(drain_view),
        health_check: cfg.options.health_check.as_ref().map(check_view),
        health_policy: policy_view(&cfg.options.health_policy),
        ..view_of(&cfg.service, cfg.revision, servers)
    }
}

/// One server of `cfg` as responses show it: with its drain and its own
/// health check.
pub fn server_of(cfg: &ServiceConfig, key: &DestKey) -> Option<ServerView> {
    let dest = cfg.servers.get(key)?;
    Some(ServerView {
        health_check: cfg.server_checks.get(key).map(check_view),
        ..server_view(dest, cfg.draining_servers.get(key))
    })
}

/// A health check as `health_check` shows it (seconds, as requests give
/// them).
pub fn check_view(check: &HealthCheck) -> Value {
    let seconds = |ms: u32| Value::from(f64::from(ms) / 1000.0);
    let mut view = serde_json::json!({
        "kind": check.kind.name(),
        "interval": seconds(check.interval_ms),
        "timeout": seconds(check.timeout_ms),
        "rise": check.rise,
        "fall": check.fall,
    });
    if let Value::Object(map) = &mut view {
        if let Some(addr) = check.address {
            map.insert("address".into(), addr.to_string().into());
        }
        if let Some(port) = check.port {
            map.insert("port".into(), port.into());
        }
        if let Some(http) = &check.http {
            map.insert("method".into(), http.method.clone().into());
            map.insert("path".into(), http.path.clone().into());
            map.insert("expect".into(), http.expect.clone().into());
            if let Some(body) = &http.body {
                map.insert("body".into(), body.clone().into());
            }
            if let Some(host) = &http.host {
                map.insert("host".into(), host.clone().into());
            }
        }
        if let Some(payload) = &check.payload {
            map.insert("payload".into(), payload.clone().into());
        }
    }
    view
}

/// `health_policy`, absent when it is the default.
pub fn policy_view(policy: &HealthPolicy) -> Option<Value> {
    if *policy == HealthPolicy::default() {
        return None;
    }
    let mut fallback = policy.fallback.as_ref().map(|d| {
        let mut v = serde_json::to_value(server_view(d, None)).unwrap_or(Value::Null);
        strip(&mut v, &["id"]);
        v
    });
    Some(serde_json::json!({
        "unhealthy": if policy.remove_unhealthy { "remove" } else { "zero" },
        "slow_start": f64::from(policy.slow_start_ms) / 1000.0,
        "all_down": match (&fallback, policy.withdraw) {
            (Some(_), _) => "fallback",
            (None, true) => "withdraw",
            (None, false) => "fail-open",
        },
        "fallback": fallback.take(),
    }))
}

/// A drain as responses show it.
pub fn drain_view(drain: &Drain) -> DrainView {
    DrainView {
        since: rfc3339_ms(drain.since_ms),
        grace: drain.grace,
        until: rfc3339_ms(drain.deadline_ms()),
    }
}

/// Every service of the state, in key order (`GET /api/v1/services`).
pub fn services_view(state: &DesiredState) -> Vec<ServiceView> {
    state
        .services
        .values()
        .map(|cfg| service_view(cfg))
        .collect()
}

/// `GET /api/v1/config`.
pub fn config_view(state: &DesiredState) -> ConfigView {
    ConfigView {
        services: services_view(state),
    }
}

/// A real server as responses show it, with its drain when it is being
/// removed.
pub fn server_view(dest: &Destination, draining: Option<&Drain>) -> ServerView {
    let (forward, tunnel) = match dest.forward {
        Forward::Masq => ("masq", None),
        Forward::Route => ("dr", None),
        Forward::Tunnel(t) => ("tunnel", Some(tunnel_view(t))),
        Forward::Local => ("local", None),
        Forward::Bypass => ("bypass", None),
    };
    ServerView {
        id: ids::server_id(&dest.key()),
        address: dest.addr.to_string(),
        port: dest.port,
        weight: dest.weight,
        forward: forward.to_string(),
        upper_threshold: dest.upper_threshold,
        lower_threshold: dest.lower_threshold,
        tunnel,
        draining: draining.map(drain_view),
        health_check: None,
        health: Default::default(),
    }
}

/// A service's servers, sorted by address then port.
pub fn servers_view(cfg: &ServiceConfig) -> Vec<ServerView> {
    service_view(cfg).servers
}

/// The `POST /api/v1/services` body that creates `spec` (for clients such as
/// the CLI): the view without the response-only `id` and `revision`.
pub fn service_request(spec: &ServiceSpec) -> Value {
    let mut servers: Vec<&Destination> = spec.servers.iter().collect();
    servers.sort_by_key(|d| d.key());
    let servers = servers
        .into_iter()
        .map(|d| ServerView {
            health_check: spec.server_checks.get(&d.key()).map(check_view),
            ..server_view(d, None)
        })
        .collect();
    let view = ServiceView {
        bind_address: spec.options.bind_address,
        drain_grace: spec.options.drain_grace,
        health_check: spec.options.health_check.as_ref().map(check_view),
        health_policy: policy_view(&spec.options.health_policy),
        ..view_of(&spec.service, 0, servers)
    };
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    strip(&mut value, &["id", "revision"]);
    if let Some(Value::Array(servers)) = value.get_mut("servers") {
        for server in servers {
            strip(server, &["id"]);
        }
    }
    value
}

/// The `POST …/servers` (or `PUT …/servers/{id}`) body for `dest`.
pub fn server_request(dest: &Destination) -> Value {
    let mut value = serde_json::to_value(server_view(dest, None)).unwrap_or(Value::Null);
    strip(&mut value, &["id"]);
    value
}

/// The `PUT /api/v1/config` body that sets exactly `specs`.
pub fn config_request(specs: &[ServiceSpec]) -> Value {
    let services: Vec<Value> = specs.iter().map(service_request).collect();
    serde_json::json!({ "services": services })
}

/// What replacing `current` with `next` changes: the state machine's own
/// result (`ReplaceAll`, or `Replace` with `drain` and `undrain`) compared
/// with `current` (so drains that go on, and services that keep their
/// revision, count as unchanged); see [`plan_changes`].
pub fn plan_replacement(
    current: &DesiredState,
    next: &[ServiceSpec],
    drain: Option<&DrainRequest>,
    undrain: bool,
) -> ConfigPlan {
    let next = current.replaced(next, u64::MAX, drain, undrain);
    let keys: BTreeSet<ServiceKey> = current
        .services
        .keys()
        .chain(next.keys())
        .copied()
        .collect();
    plan_changes(current, &next, &keys)
}

/// What the services `keys` change from `before` to `after`. A service or
/// server is `removed` when it goes, or when its drain starts (it goes
/// once the drain is over); one taken back from a drain is changed.
pub fn plan_changes(
    before: &DesiredState,
    after: &Services,
    keys: &BTreeSet<ServiceKey>,
) -> ConfigPlan {
    let mut plan = ConfigPlan::default();
    for key in keys {
        let (old, new) = match (before.services.get(key), after.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => {
                plan.added.push(ids::service_id(key));
                continue;
            }
            (Some(old), Some(new)) if old.draining.is_none() && new.draining.is_some() => {
                plan.removed.push(ids::service_id(key));
                continue;
            }
            (Some(_), None) => {
                plan.removed.push(ids::service_id(key));
                continue;
            }
            (Some(old), Some(new)) => (old, new),
        };
        let mut change = ServiceChange {
            id: ids::service_id(key),
            settings: old.service != new.service
                || old.options != new.options
                || old.draining != new.draining,
            ..ServiceChange::default()
        };
        // Gone, or draining from now on, in the servers' order.
        let mut removed = BTreeSet::new();
        for (dkey, dest) in &new.servers {
            let (was_draining, draining) = (
                old.draining_servers.get(dkey),
                new.draining_servers.get(dkey),
            );
            match old.servers.get(dkey) {
                None => change.servers_added.push(ids::server_id(dkey)),
                Some(_) if was_draining.is_none() && draining.is_some() => {
                    removed.insert(*dkey);
                }
                Some(was)
                    if was != dest
                        || was_draining != draining
                        || old.server_checks.get(dkey) != new.server_checks.get(dkey) =>
                {
                    change.servers_changed.push(ids::server_id(dkey))
                }
                Some(_) => {}
            }
        }
        removed.extend(old.servers.keys().filter(|k| !new.servers.contains_key(k)));
        change.servers_removed = removed.iter().map(ids::server_id).collect();
        if change.settings
            || !change.servers_added.is_empty()
            || !change.servers_changed.is_empty()
            || !change.servers_removed.is_empty()
        {
            plan.changed.push(change);
        } else {
            plan.unchanged += 1;
        }
    }
    plan
}

/// The names of a service's flags, as `flags` lists them.
pub fn flag_names(service: &VirtualService) -> Vec<String> {
    let flags = service.flags;
    let sched = service.scheduler.as_str();
    let mut names = Vec::new();
    if flags.contains(ServiceFlags::ONE_PACKET) {
        names.push("one-packet".to_string());
    }
    // SCHED1/SCHED2 mean fallback/port for sh and mh alike; other
    // schedulers give them no name, and ipvsadm prints them as flag-N.
    for bit in [
        ServiceFlags::SCHED1,
        ServiceFlags::SCHED2,
        ServiceFlags::SCHED3,
    ] {
        if let Some(name) = flags
            .contains(bit)
            .then(|| crate::model::rules::sched_flag_name(bit, sched))
            .flatten()
        {
            names.push(name.to_string());
        }
    }
    names
}

fn view_of(service: &VirtualService, revision: u64, servers: Vec<ServerView>) -> ServiceView {
    let key = service.key;
    let (protocol, address, port, fwmark, family) = match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => (
            Some(protocol.to_string()),
            Some(addr.to_string()),
            Some(port),
            None,
            None,
        ),
        ServiceKey::Fwmark { family, mark } => {
            (None, None, None, Some(mark), Some(family.to_string()))
        }
    };
    ServiceView {
        id: ids::service_id(&key),
        revision,
        protocol,
        address,
        port,
        fwmark,
        family,
        scheduler: service.scheduler.to_string(),
        persistence: service.persistence.map(|p| PersistenceView {
            timeout: p.timeout,
            netmask: match p.netmask {
                Netmask::V4(mask) => NetmaskView::Mask(mask),
                Netmask::V6(prefix) => NetmaskView::Prefix(prefix),
            },
        }),
        flags: flag_names(service),
        pe: service.pe_name.clone(),
        servers,
        bind_address: false,
        drain_grace: None,
        draining: None,
        health_check: None,
        health_policy: None,
    }
}

fn tunnel_view(t: crate::model::Tunnel) -> TunnelView {
    TunnelView {
        kind: t.kind.name().to_string(),
        port: (t.kind == TunnelType::Gue).then_some(t.port),
        checksum: match t.checksum {
            TunnelChecksum::None => "none",
            TunnelChecksum::Csum => "csum",
            TunnelChecksum::RemCsum => "remcsum",
        }
        .to_string(),
    }
}

fn strip(value: &mut Value, keys: &[&str]) {
    if let Value::Object(map) = value {
        for key in keys {
            map.remove(*key);
        }
    }
}
