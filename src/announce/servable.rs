//! Which service addresses this node can serve right now, and why not the
//! others: the one rule both announcement modes follow (a node announces,
//! or may own, only what it can serve).
//!
//! An address is a VIP when a `bind_address` service has it. The node can
//! serve it when every service on it is programmed in this node's kernel
//! (a first pass done, no change failing, the address bound) and none is
//! draining away. A service whose probed servers are all down still counts
//! when it fails open (its weights kept) or has a fallback server: the node
//! still forwards its traffic. With `all_down: withdraw` it does not: the
//! kernel keeps the weights (connections already here are not cut) but the
//! address is withdrawn here, so that nodes that still reach a server take
//! the traffic.

use crate::api::json::ReconcileStatus;
use crate::health::HealthTable;
use crate::model::ids::service_id;
use crate::model::{DesiredState, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One service address and whether this node can serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// The services on the address (API ids).
    pub services: Vec<String>,
    /// Why the node cannot serve it; `None`: it can.
    pub why_not: Option<String>,
}

impl Vip {
    pub fn can_serve(&self) -> bool {
        self.why_not.is_none()
    }
}

/// Every VIP of the desired state, with this node's verdict.
pub type Servable = BTreeMap<IpAddr, Vip>;

/// The addresses in `servable` this node can serve.
pub fn serving(servable: &Servable) -> BTreeSet<IpAddr> {
    servable
        .iter()
        .filter(|(_, v)| v.can_serve())
        .map(|(a, _)| *a)
        .collect()
}

/// Works out [`Servable`] from the desired state, this node's health view
/// and its reconciler's status (`None` with no kernel: nothing is served).
pub fn servable(
    desired: &DesiredState,
    health: &HealthTable,
    reconcile: Option<&ReconcileStatus>,
) -> Servable {
    let mut by_address: BTreeMap<IpAddr, Vec<ServiceKey>> = BTreeMap::new();
    for cfg in desired.services.values() {
        if !cfg.options.bind_address {
            continue;
        }
        if let ServiceKey::Inet { addr, .. } = cfg.service.key {
            by_address.entry(addr).or_default().push(cfg.service.key);
        }
    }
    let failing: BTreeSet<&str> = reconcile
        .map(|r| r.failed.iter().map(|f| f.service.as_str()).collect())
        .unwrap_or_default();
    by_address
        .into_iter()
        .map(|(address, keys)| {
            let services: Vec<String> = keys.iter().map(service_id).collect();
            let why_not = keys.iter().zip(&services).find_map(|(key, id)| {
                let cfg = &desired.services[key];
                let reconcile = match reconcile {
                    None => return Some("this node programs no kernel (IPVS_KERNEL=off)".into()),
                    Some(r) => r,
                };
                if reconcile.passes == 0 {
                    return Some("the kernel is not programmed yet".into());
                }
                if failing.contains(id.as_str()) {
                    return Some(format!("{id} could not be programmed in the kernel"));
                }
                if !reconcile.vips.contains(&address) {
                    return Some(format!("{address} is not bound on the VIP interface"));
                }
                if cfg.draining.is_some() {
                    return Some(format!("{id} is draining away"));
                }
                // Fail-open and fallback services still forward; only
                // `all_down: withdraw` gives the address up.
                let withdraw = cfg.options.health_policy.withdraw;
                if withdraw && crate::health::all_down(cfg, health) {
                    return Some(format!("every server of {id} is down on this node"));
                }
                None
            });
            (address, Vip { services, why_not })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::ServerState;
    use crate::model::{
        CheckKind, Destination, Drain, HealthCheck, Protocol, ServiceConfig, VirtualService,
    };

    fn service(addr: &str, port: u16, bind: bool, servers: &[&str]) -> ServiceConfig {
        let key = ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
        };
        let dests = servers
            .iter()
            .map(|s| Destination::new(s.parse().unwrap(), port));
        let mut cfg = ServiceConfig::new(VirtualService::new(key), dests, 1);
        cfg.options.bind_address = bind;
        cfg.options.health_check = Some(HealthCheck::new(CheckKind::Tcp));
        cfg
    }

    fn programmed(vips: &[&str]) -> ReconcileStatus {
        ReconcileStatus {
            passes: 1,
            vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_bound_addresses_are_vips_and_all_their_services_count() {
        let desired: DesiredState = [
            service("192.0.2.1", 80, true, &["10.0.0.1"]),
            service("192.0.2.1", 443, true, &["10.0.0.1"]),
            service("192.0.2.2", 80, false, &["10.0.0.1"]),
        ]
        .into_iter()
        .collect();
        let s = servable(
            &desired,
            &HealthTable::default(),
            Some(&programmed(&["192.0.2.1"])),
        );
        assert_eq!(s.len(), 1, "{s:?}");
        let vip = &s[&"192.0.2.1".parse().unwrap()];
        assert_eq!(vip.services, ["tcp-192.0.2.1-80", "tcp-192.0.2.1-443"]);
        assert!(vip.can_serve());
    }

    #[test]
    fn a_node_cannot_serve_before_programming_or_without_the_address() {
        let desired: DesiredState = [service("192.0.2.1", 80, true, &["10.0.0.1"])]
            .into_iter()
            .collect();
        let why = |r: Option<&ReconcileStatus>| {
            servable(&desired, &HealthTable::default(), r)[&"192.0.2.1".parse().unwrap()]
                .why_not
                .clone()
        };
        assert!(why(None).unwrap().contains("IPVS_KERNEL=off"));
        assert!(why(Some(&ReconcileStatus::default()))
            .unwrap()
            .contains("not programmed"));
        assert!(why(Some(&programmed(&[]))).unwrap().contains("not bound"));
        let mut failing = programmed(&["192.0.2.1"]);
        failing.failed.push(crate::api::json::FailedChange {
            service: "tcp-192.0.2.1-80".into(),
            change: "add".into(),
            error: "EINVAL".into(),
            attempts: 1,
        });
        assert!(why(Some(&failing))
            .unwrap()
            .contains("could not be programmed"));
        assert_eq!(why(Some(&programmed(&["192.0.2.1"]))), None);
    }

    #[test]
    fn all_servers_down_withdraws_only_when_the_policy_says_so() {
        let mut cfg = service("192.0.2.1", 80, true, &["10.0.0.1", "10.0.0.2"]);
        cfg.options.health_policy.withdraw = true;
        let key = cfg.service.key;
        let down = ServerState {
            up: false,
            since_ms: Some(1),
        };
        let mut health = HealthTable::default();
        for d in cfg.servers.keys() {
            health.servers.insert((key, *d), down);
        }
        let status = programmed(&["192.0.2.1"]);
        let verdict = |cfg: &ServiceConfig, health: &HealthTable| {
            let desired: DesiredState = [cfg.clone()].into_iter().collect();
            servable(&desired, health, Some(&status))[&"192.0.2.1".parse().unwrap()]
                .why_not
                .clone()
        };
        assert!(verdict(&cfg, &health).unwrap().contains("every server"));
        // One up is enough.
        let first = *cfg.servers.keys().next().unwrap();
        let mut one_up = health.clone();
        one_up.servers.insert(
            (key, first),
            ServerState {
                up: true,
                since_ms: Some(2),
            },
        );
        assert_eq!(verdict(&cfg, &one_up), None);
        // Failing open, or with a fallback server, the node still forwards.
        let mut fail_open = cfg.clone();
        fail_open.options.health_policy.withdraw = false;
        assert_eq!(verdict(&fail_open, &health), None);
        let mut with_fallback = fail_open.clone();
        with_fallback.options.health_policy.fallback =
            Some(Destination::new("10.0.0.9".parse().unwrap(), 80));
        assert_eq!(verdict(&with_fallback, &health), None);
        cfg.draining = Some(Drain {
            since_ms: 1,
            grace: 30,
        });
        assert!(verdict(&cfg, &HealthTable::default())
            .unwrap()
            .contains("draining"));
    }
}
