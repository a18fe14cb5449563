//! The reconcile plan: a pure function from (desired state, kernel table,
//! owned set) to the ordered kernel changes that make the table match.
//!
//! Everything the kernel can change in place is an edit (`EditService`,
//! `EditDest`), never a delete and re-add: connections to an edited service
//! or server are untouched. Services that are neither desired nor owned are
//! someone else's (keepalived, kube-proxy, a human) and are only reported.

use crate::config::Ownership;
use crate::health::HealthTable;
use crate::ipvs::Change;
use crate::model::{
    DesiredState, DestKey, Destination, ServiceConfig, ServiceEntry, ServiceKey, VirtualService,
};
use std::collections::{BTreeMap, BTreeSet};

/// What the kernel should hold for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: VirtualService,
    pub dests: BTreeMap<DestKey, Destination>,
}

/// What the kernel should hold for `cfg` at `now_ms`: draining servers at
/// weight 0, servers whose drain is over gone, and this node's view of
/// their health applied ([`crate::health::overlay`]); `None` once the whole
/// service has drained.
pub fn target(cfg: &ServiceConfig, health: &HealthTable, now_ms: u64) -> Option<Target> {
    if cfg.draining.is_some_and(|d| d.is_over(now_ms)) {
        return None;
    }
    let mut dests = cfg
        .servers
        .iter()
        .filter_map(|(key, dest)| {
            let drain = cfg.draining.or(cfg.draining_servers.get(key).copied());
            match drain {
                Some(d) if d.is_over(now_ms) => None,
                Some(_) => Some((*key, Destination { weight: 0, ..*dest })),
                None => Some((*key, *dest)),
            }
        })
        .collect();
    crate::health::overlay(cfg, &mut dests, health, now_ms);
    Some(Target {
        service: cfg.service.clone(),
        dests,
    })
}

/// The changes of one pass, and what they mean for ownership.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Kernel services that are not ours: left alone, reported.
    pub foreign: Vec<ServiceKey>,
    /// Services to record as owned before the changes are applied (created
    /// or adopted now), so that a crash mid-way cannot orphan them.
    pub adopt: BTreeSet<ServiceKey>,
    /// Owned services that are in neither the kernel nor the desired state:
    /// nothing left to own.
    pub release: BTreeSet<ServiceKey>,
}

/// Plans the changes that make `kernel` hold what `desired` asks for at
/// `now_ms`. `scope` limits the pass to some services (a change to one
/// service among thousands reads and plans that one only); `None` plans
/// every service of the three sources. `kernel` must hold every service of
/// the scope that the kernel has.
pub fn plan(
    desired: &DesiredState,
    kernel: &BTreeMap<ServiceKey, ServiceEntry>,
    scope: Option<&BTreeSet<ServiceKey>>,
    owned: &BTreeSet<ServiceKey>,
    ownership: Ownership,
    health: &HealthTable,
    now_ms: u64,
) -> Plan {
    let keys: BTreeSet<ServiceKey> = match scope {
        Some(keys) => keys.clone(),
        None => desired
            .services
            .keys()
            .chain(kernel.keys())
            .chain(owned.iter())
            .copied()
            .collect(),
    };
    let mut plan = Plan::default();
    for key in keys {
        let wanted = desired
            .services
            .get(&key)
            .and_then(|c| target(c, health, now_ms));
        let ours = owned.contains(&key) || ownership == Ownership::All;
        match (wanted, kernel.get(&key)) {
            (Some(wanted), None) => {
                plan.adopt.insert(key);
                plan.changes.push(Change::AddService(wanted.service));
                for dest in wanted.dests.into_values() {
                    plan.changes.push(Change::AddDest(key, dest));
                }
            }
            (Some(wanted), Some(actual)) => {
                if !owned.contains(&key) {
                    plan.adopt.insert(key);
                }
                edit(&mut plan.changes, &wanted, actual);
            }
            (None, Some(_)) if ours => plan.changes.push(Change::DelService(key)),
            (None, Some(_)) => plan.foreign.push(key),
            (None, None) => {
                if owned.contains(&key) {
                    plan.release.insert(key);
                }
            }
        }
    }
    plan
}

/// The edits that turn `actual` into `wanted`: the service's settings in
/// place, then servers removed, changed, added.
fn edit(changes: &mut Vec<Change>, wanted: &Target, actual: &ServiceEntry) {
    let key = wanted.service.key;
    if actual.service != wanted.service {
        changes.push(Change::EditService(wanted.service.clone()));
    }
    let present: BTreeMap<DestKey, &Destination> = actual
        .destinations
        .iter()
        .map(|d| (d.dest.key(), &d.dest))
        .collect();
    for dkey in present.keys() {
        if !wanted.dests.contains_key(dkey) {
            changes.push(Change::DelDest(key, *dkey));
        }
    }
    for (dkey, dest) in &wanted.dests {
        match present.get(dkey) {
            Some(current) if *current == dest => {}
            Some(_) => changes.push(Change::EditDest(key, *dest)),
            None => changes.push(Change::AddDest(key, *dest)),
        }
    }
}

/// The addresses to bind on the VIP interface at `now_ms`: those of
/// services that ask for it and have not drained away.
pub fn vips(desired: &DesiredState, now_ms: u64) -> BTreeSet<std::net::IpAddr> {
    desired
        .services
        .values()
        .filter(|cfg| cfg.options.bind_address)
        .filter(|cfg| !cfg.draining.is_some_and(|d| d.is_over(now_ms)))
        .filter_map(|cfg| match cfg.service.key {
            ServiceKey::Inet { addr, .. } => Some(addr),
            ServiceKey::Fwmark { .. } => None,
        })
        .collect()
}
