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
use crate::model::{DesiredState, ServiceConfig, ServiceKey};
use imbl::ordmap::DiffItem;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

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

/// Every VIP of the desired state, with this node's verdict (a persistent
/// map: publishing it after a change of one address copies nothing).
pub type Servable = imbl::OrdMap<IpAddr, Vip>;

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
    Tracker::new(Arc::new(desired.clone()), health, reconcile).servable
}

/// The services with `bind_address` on each address, in key order.
type ByAddress = BTreeMap<IpAddr, BTreeSet<ServiceKey>>;

/// The address `cfg` makes a VIP, if any.
fn vip_of(cfg: &ServiceConfig) -> Option<IpAddr> {
    match cfg.service.key {
        ServiceKey::Inet { addr, .. } if cfg.options.bind_address => Some(addr),
        _ => None,
    }
}

/// Keeps [`Servable`] up to date: a change of health or of the
/// reconciler's status may change any verdict, so it recomputes all; a
/// change of the desired state only those of the addresses whose services
/// changed (found by the persistent maps' diff, which skips what the two
/// states share): under a stream of writes to thousands of services,
/// recomputing every address on every apply took a sixth of the leader's
/// CPU.
pub struct Tracker {
    desired: Arc<DesiredState>,
    by_address: ByAddress,
    servable: Servable,
}

impl Tracker {
    pub fn new(
        desired: Arc<DesiredState>,
        health: &HealthTable,
        reconcile: Option<&ReconcileStatus>,
    ) -> Tracker {
        let mut by_address = ByAddress::new();
        for cfg in desired.services.values() {
            if let Some(addr) = vip_of(cfg) {
                by_address.entry(addr).or_default().insert(cfg.service.key);
            }
        }
        let failing = failing(reconcile);
        let servable = by_address
            .iter()
            .map(|(address, keys)| {
                let vip = verdict(*address, keys, &desired, health, reconcile, &failing);
                (*address, vip)
            })
            .collect();
        Tracker {
            desired,
            by_address,
            servable,
        }
    }

    /// The verdicts as they stand.
    pub fn servable(&self) -> &Servable {
        &self.servable
    }

    /// Takes in a new desired state, with health and status unchanged
    /// since the last call; whether any verdict changed.
    pub fn desired_changed(
        &mut self,
        desired: Arc<DesiredState>,
        health: &HealthTable,
        reconcile: Option<&ReconcileStatus>,
    ) -> bool {
        let mut touched = BTreeSet::new();
        for change in self.desired.services.diff(&desired.services) {
            let (old, new) = match change {
                DiffItem::Add(_, new) => (None, Some(new)),
                DiffItem::Update { old, new } => (Some(old.1), Some(new.1)),
                DiffItem::Remove(_, old) => (Some(old), None),
            };
            if let Some((cfg, addr)) = old.and_then(|c| Some((c, vip_of(c)?))) {
                if let Some(keys) = self.by_address.get_mut(&addr) {
                    keys.remove(&cfg.service.key);
                }
                touched.insert(addr);
            }
            if let Some((cfg, addr)) = new.and_then(|c| Some((c, vip_of(c)?))) {
                self.by_address
                    .entry(addr)
                    .or_default()
                    .insert(cfg.service.key);
                touched.insert(addr);
            }
        }
        self.desired = desired;
        let failing = failing(reconcile);
        let mut changed = false;
        for address in touched {
            let keys = self.by_address.get(&address).filter(|k| !k.is_empty());
            let next =
                keys.map(|keys| verdict(address, keys, &self.desired, health, reconcile, &failing));
            let now = self.servable.get(&address);
            if now == next.as_ref() {
                continue;
            }
            changed = true;
            match next {
                Some(vip) => {
                    self.servable.insert(address, vip);
                }
                None => {
                    self.by_address.remove(&address);
                    self.servable.remove(&address);
                }
            }
        }
        changed
    }
}

/// The services the reconciler could not program (API ids).
fn failing(reconcile: Option<&ReconcileStatus>) -> BTreeSet<&str> {
    reconcile
        .map(|r| r.failed.iter().map(|f| f.service.as_str()).collect())
        .unwrap_or_default()
}

/// This node's verdict on `address`, carried by the services `keys`.
fn verdict(
    address: IpAddr,
    keys: &BTreeSet<ServiceKey>,
    desired: &DesiredState,
    health: &HealthTable,
    reconcile: Option<&ReconcileStatus>,
    failing: &BTreeSet<&str>,
) -> Vip {
    let services: Vec<String> = keys.iter().map(service_id).collect();
    let why_not = keys.iter().zip(&services).find_map(|(key, id)| {
        let cfg = desired.services.get(key)?;
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
    Vip { services, why_not }
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
        let vip = &s[&"192.0.2.1".parse::<IpAddr>().unwrap()];
        assert_eq!(vip.services, ["tcp-192.0.2.1-80", "tcp-192.0.2.1-443"]);
        assert!(vip.can_serve());
    }

    #[test]
    fn a_node_cannot_serve_before_programming_or_without_the_address() {
        let desired: DesiredState = [service("192.0.2.1", 80, true, &["10.0.0.1"])]
            .into_iter()
            .collect();
        let why = |r: Option<&ReconcileStatus>| {
            servable(&desired, &HealthTable::default(), r)[&"192.0.2.1".parse::<IpAddr>().unwrap()]
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
            servable(&desired, health, Some(&status))[&"192.0.2.1".parse::<IpAddr>().unwrap()]
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

    #[test]
    fn the_tracker_agrees_with_a_full_recomputation_after_every_change() {
        let status = programmed(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        let mut desired = DesiredState::default();
        let mut tracker = Tracker::new(
            Arc::new(desired.clone()),
            &HealthTable::default(),
            Some(&status),
        );
        let put = |d: &mut DesiredState, cfg: ServiceConfig| {
            d.services.insert(cfg.service.key, Arc::new(cfg));
        };
        let key = |addr: &str, port: u16| ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
        };
        let mut draining = service("192.0.2.1", 443, true, &["10.0.0.1"]);
        draining.draining = Some(Drain {
            since_ms: 1,
            grace: 30,
        });
        type Step = Box<dyn Fn(&mut DesiredState)>;
        let steps: Vec<(&str, Step)> = vec![
            (
                "a first VIP",
                Box::new(move |d| put(d, service("192.0.2.1", 80, true, &["10.0.0.1"]))),
            ),
            (
                "a second service on it",
                Box::new(move |d| put(d, service("192.0.2.1", 443, true, &["10.0.0.1"]))),
            ),
            (
                "an unbound service",
                Box::new(move |d| put(d, service("192.0.2.2", 80, false, &["10.0.0.1"]))),
            ),
            (
                "it becomes bound",
                Box::new(move |d| put(d, service("192.0.2.2", 80, true, &["10.0.0.1"]))),
            ),
            ("one drains", Box::new(move |d| put(d, draining.clone()))),
            (
                "a server added, verdict unchanged",
                Box::new(move |d| {
                    put(d, service("192.0.2.2", 80, true, &["10.0.0.1", "10.0.0.2"]))
                }),
            ),
            (
                "the drained one goes",
                Box::new(move |d| {
                    d.services.remove(&key("192.0.2.1", 443));
                }),
            ),
            (
                "unbound again",
                Box::new(move |d| put(d, service("192.0.2.2", 80, false, &["10.0.0.1"]))),
            ),
            (
                "the last of an address goes",
                Box::new(move |d| {
                    d.services.remove(&key("192.0.2.1", 80));
                }),
            ),
            (
                "a third address",
                Box::new(move |d| put(d, service("192.0.2.3", 53, true, &["10.0.0.3"]))),
            ),
        ];
        for (what, step) in steps {
            let before = tracker.servable().clone();
            step(&mut desired);
            let changed = tracker.desired_changed(
                Arc::new(desired.clone()),
                &HealthTable::default(),
                Some(&status),
            );
            let full = servable(&desired, &HealthTable::default(), Some(&status));
            assert_eq!(tracker.servable(), &full, "{what}");
            assert_eq!(changed, before != full, "{what}");
        }
        assert_eq!(tracker.servable().len(), 1);
        assert!(tracker
            .by_address
            .keys()
            .all(|a| tracker.servable().contains_key(a)));
    }
}
