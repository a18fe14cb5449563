//! The cluster's desired IPVS configuration and the commands that change it.
//!
//! This is what the Raft log replicates: each committed [`Command`] is
//! applied, in log order, by [`DesiredState::apply`] on every node, so the
//! function must be deterministic and total (every outcome, including a
//! refusal, is a [`CommandResult`], never a panic). Checks that depend on the
//! current state — existence, duplicates, `If-Match` revisions — happen here,
//! at apply time, so that concurrent writers through different nodes are
//! ordered by the log and never overwrite each other silently.

use super::{DestKey, Destination, HealthCheck, HealthPolicy, ServiceKey, VirtualService};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A virtual service with its real servers, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub service: VirtualService,
    /// Real servers by address and port (a list on the wire: JSON map keys
    /// must be strings).
    #[serde(with = "as_list")]
    pub servers: BTreeMap<DestKey, Destination>,
    /// Log index of the last change to this service or any of its servers;
    /// sent as the ETag and checked against `If-Match`.
    pub revision: u64,
    #[serde(default)]
    pub options: ServiceOptions,
    /// Set while the whole service is being removed: every server at weight
    /// 0 in the kernels until the grace period ends, then the service goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining: Option<Drain>,
    /// Servers being removed (they are still in `servers`): weight 0 in the
    /// kernels until their grace period ends.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "drain_list"
    )]
    pub draining_servers: BTreeMap<DestKey, Drain>,
    /// Servers with a health check of their own (overriding the service's).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "check_list"
    )]
    pub server_checks: BTreeMap<DestKey, HealthCheck>,
}

/// What a service asks of each node beyond its kernel entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOptions {
    /// Bind the service's address on every node (on the VIP interface), as
    /// direct routing and local delivery need.
    #[serde(default)]
    pub bind_address: bool,
    /// Seconds a removed server (or the removed service) is drained before
    /// it is deleted, when the removal names no grace period; `None`: the
    /// node's default (`DRAIN_GRACE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_grace: Option<u32>,
    /// How every node probes the servers (unless a server has its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// What a node does with the servers its probes find down.
    #[serde(default)]
    pub health_policy: HealthPolicy,
}

/// A removal in progress. The start is the accepting node's wall clock,
/// carried in the command so that every node agrees on the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Unix time in milliseconds when the removal was asked for.
    pub since_ms: u64,
    /// Seconds to keep the server at weight 0 before deleting it.
    pub grace: u32,
}

/// How a removal asks to drain. The grace period is settled when the
/// command is applied, from the service as the log has it then: a node that
/// accepted the request before it applied a change of the service's
/// `drain_grace` still gets the new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// Unix time in milliseconds of the request (the accepting node's clock).
    pub since_ms: u64,
    /// The grace period the request names (`?grace=`), if it names one.
    pub grace: Option<u32>,
    /// The accepting node's `DRAIN_GRACE`, for a service without
    /// `drain_grace`.
    pub default_grace: u32,
}

impl DrainRequest {
    /// The drain for `cfg`: `None` when its grace period is 0 (delete now).
    pub fn drain_for(&self, cfg: &ServiceConfig) -> Option<Drain> {
        let grace = self
            .grace
            .or(cfg.options.drain_grace)
            .unwrap_or(self.default_grace);
        (grace > 0).then_some(Drain {
            since_ms: self.since_ms,
            grace,
        })
    }
}

impl Drain {
    /// Unix time in milliseconds when the server (or service) is deleted.
    pub fn deadline_ms(&self) -> u64 {
        self.since_ms
            .saturating_add(u64::from(self.grace).saturating_mul(1000))
    }

    pub fn is_over(&self, now_ms: u64) -> bool {
        now_ms >= self.deadline_ms()
    }
}

impl ServiceConfig {
    /// A new configuration with default options and nothing draining.
    pub fn new(
        service: VirtualService,
        servers: impl IntoIterator<Item = Destination>,
        revision: u64,
    ) -> ServiceConfig {
        ServiceConfig {
            service,
            servers: servers.into_iter().map(|d| (d.key(), d)).collect(),
            revision,
            options: ServiceOptions::default(),
            draining: None,
            draining_servers: BTreeMap::new(),
            server_checks: BTreeMap::new(),
        }
    }

    /// The check a node runs on `server`: its own, else the service's;
    /// `None` when it is not probed.
    pub fn check_of(&self, server: &DestKey) -> Option<&HealthCheck> {
        self.server_checks
            .get(server)
            .or(self.options.health_check.as_ref())
            .filter(|c| c.probes())
    }

    /// The earliest moment something in this service stops draining.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.draining
            .iter()
            .chain(self.draining_servers.values())
            .map(Drain::deadline_ms)
            .min()
    }
}

/// A service and its servers as a client supplies them (no revision yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub service: VirtualService,
    pub servers: Vec<Destination>,
    #[serde(default)]
    pub options: ServiceOptions,
    /// Servers' own health checks.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "check_list"
    )]
    pub server_checks: BTreeMap<DestKey, HealthCheck>,
}

/// Servers' health checks as a list of `[server, check]` pairs.
mod check_list {
    use crate::model::{DestKey, HealthCheck};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<DestKey, HealthCheck>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<DestKey, HealthCheck>, D::Error> {
        Ok(Vec::<(DestKey, HealthCheck)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// Draining servers as a list of `[server, drain]` pairs.
mod drain_list {
    use super::Drain;
    use crate::model::DestKey;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<DestKey, Drain>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<DestKey, Drain>, D::Error> {
        Ok(Vec::<(DestKey, Drain)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

/// The whole desired configuration.
///
/// The table is a persistent B-tree of shared services ([`Services`]): the
/// state is copied on every apply while readers hold the published
/// version, and a copy then shares everything but the path to the service
/// an entry changes (a `BTreeMap` of `Arc`s still cost a node per service
/// to copy and to drop: at 60,000 services, a third of a leader's CPU). A
/// change copies the one service it touches ([`Arc::make_mut`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    #[serde(with = "services_as_list")]
    pub services: Services,
    /// `ANNOUNCE=l2`: which node owns each service address (absent: none),
    /// as the leader decided ([`Command::SetVipOwners`]). Absent from states
    /// written before l2 existed, and left out when empty, so that those
    /// decode and encode exactly as before.
    #[serde(default, skip_serializing_if = "VipOwners::is_empty")]
    pub vip_owners: VipOwners,
}

/// The l2 owners of the service addresses, and the log index of the entry
/// that last set them: a node that reports having applied that index has
/// seen every owner change so far (see `announce::l2::placement`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipOwners {
    pub owners: BTreeMap<std::net::IpAddr, String>,
    pub index: u64,
}

impl VipOwners {
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty() && self.index == 0
    }
}

/// A state of these services.
impl FromIterator<ServiceConfig> for DesiredState {
    fn from_iter<I: IntoIterator<Item = ServiceConfig>>(configs: I) -> DesiredState {
        DesiredState {
            services: configs
                .into_iter()
                .map(|cfg| (cfg.service.key, Arc::new(cfg)))
                .collect(),
            vip_owners: VipOwners::default(),
        }
    }
}

/// Serialises a map as the list of its values, each of which knows its key.
mod as_list {
    use super::{Destination, ServiceConfig};
    use crate::model::{DestKey, ServiceKey};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A value that carries its own map key.
    pub trait Keyed {
        type Key: Ord;
        fn map_key(&self) -> Self::Key;
    }

    impl Keyed for Destination {
        type Key = DestKey;
        fn map_key(&self) -> DestKey {
            self.key()
        }
    }

    impl Keyed for Arc<ServiceConfig> {
        type Key = ServiceKey;
        fn map_key(&self) -> ServiceKey {
            self.service.key
        }
    }

    pub fn serialize<S, V>(map: &BTreeMap<V::Key, V>, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        V: Keyed + Serialize,
    {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D, V>(d: D) -> Result<BTreeMap<V::Key, V>, D::Error>
    where
        D: Deserializer<'de>,
        V: Keyed + Deserialize<'de>,
    {
        let list = Vec::<V>::deserialize(d)?;
        Ok(list.into_iter().map(|v| (v.map_key(), v)).collect())
    }
}

/// The services by key, as [`DesiredState`] holds them.
pub type Services = imbl::OrdMap<ServiceKey, Arc<ServiceConfig>>;

/// [`Services`] as a list of services, as `as_list` does for a `BTreeMap`.
mod services_as_list {
    use super::{ServiceConfig, Services};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(map: &Services, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Services, D::Error> {
        let list = Vec::<Arc<ServiceConfig>>::deserialize(d)?;
        Ok(list.into_iter().map(|v| (v.service.key, v)).collect())
    }
}

/// A change to the desired state: the payload of a Raft log entry. Changes
/// are per resource, so writers to different services never conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates a service (with optional servers); refused if it exists.
    CreateService(ServiceSpec),
    /// Replaces a service's settings, keeping its servers.
    UpdateService {
        service: VirtualService,
        #[serde(default)]
        options: ServiceOptions,
        if_revision: Option<u64>,
    },
    /// Removes a service and its servers: at once (`drain` absent, or a
    /// grace of 0), or after draining them.
    DeleteService {
        key: ServiceKey,
        if_revision: Option<u64>,
        #[serde(default)]
        drain: Option<DrainRequest>,
    },
    /// Adds a real server; refused if it exists.
    CreateServer {
        service: ServiceKey,
        server: Destination,
        if_revision: Option<u64>,
        /// Its own health check, overriding the service's.
        #[serde(default)]
        health_check: Option<HealthCheck>,
    },
    /// Replaces a real server's settings (its own health check included).
    UpdateServer {
        service: ServiceKey,
        server: Destination,
        if_revision: Option<u64>,
        #[serde(default)]
        health_check: Option<HealthCheck>,
    },
    /// Removes a real server: at once (`drain` absent, or a grace of 0), or
    /// after draining it.
    DeleteServer {
        service: ServiceKey,
        server: DestKey,
        if_revision: Option<u64>,
        #[serde(default)]
        drain: Option<DrainRequest>,
    },
    /// Ends a drain whose grace period is over (proposed by the leader): the
    /// server, or the whole service when `server` is `None`, is deleted if
    /// it is still draining since `since_ms`; otherwise nothing changes.
    FinishDrain {
        service: ServiceKey,
        server: Option<DestKey>,
        since_ms: u64,
    },
    /// Replaces the whole configuration in one entry (`PUT /api/v1/config`,
    /// `restore`). Services whose content is unchanged keep their revision.
    /// What it leaves out goes at once. Written for `PUT /api/v1/config`
    /// with `?grace=0` (every version applies it the same way), and by
    /// every version before [`Command::Replace`].
    ReplaceAll(Vec<ServiceSpec>),
    /// [`Command::ReplaceAll`] with a say over drains. With `drain`, what it
    /// removes drains as a `DELETE` drains it: a service it leaves out
    /// drains whole, a server it leaves out of a service it keeps drains,
    /// for the request's grace period, else the service's `drain_grace`,
    /// else the accepting node's `DRAIN_GRACE`, and the leader's drain
    /// janitor ends them ([`Command::FinishDrain`]); without, it goes at
    /// once. With `undrain`, what it gives is in service: drains of the
    /// services and servers it names end (a backup restored, a `-C` undone).
    /// A variant of its own, not fields added to `ReplaceAll`, so that the
    /// entries already on disk (`{"ReplaceAll": [...]}`) decode and apply
    /// as before.
    Replace {
        services: Vec<ServiceSpec>,
        drain: Option<DrainRequest>,
        #[serde(default)]
        undrain: bool,
    },
    /// A client's write under an `Idempotency-Key`: applied once; a later
    /// write with the same key gets the first outcome (see
    /// [`super::requests`]). Applied by [`super::requests::Requests::apply`].
    Keyed {
        key: String,
        /// Digest of the request, to tell a retry from a reused key.
        fingerprint: String,
        /// When the accepting node took it (unix ms): the clock expiry
        /// runs on.
        at_ms: u64,
        command: Box<Command>,
    },
    /// Concurrent writes the leader coalesced into one log entry, applied in
    /// order, each with its own result. A batch names every service at most
    /// once and holds no `ReplaceAll` (see `cluster::batch`), so a revision
    /// — the entry's index — still names one version of a service.
    Batch(Vec<Command>),
    /// `ANNOUNCE=l2`: the owner of every service address, as the leader
    /// placed them (the whole map: an address it leaves out has no owner).
    /// Proposed only by the leader; services are untouched.
    SetVipOwners(BTreeMap<std::net::IpAddr, String>),
}

impl Command {
    /// The services this command changes when it applies; for `ReplaceAll`,
    /// those of the new set (the old set is the current state's).
    pub fn services(&self) -> Vec<ServiceKey> {
        match self {
            Command::CreateService(spec) => vec![spec.service.key],
            Command::UpdateService { service, .. } => vec![service.key],
            Command::DeleteService { key, .. } => vec![*key],
            Command::CreateServer { service, .. }
            | Command::UpdateServer { service, .. }
            | Command::DeleteServer { service, .. }
            | Command::FinishDrain { service, .. } => vec![*service],
            Command::ReplaceAll(specs)
            | Command::Replace {
                services: specs, ..
            } => specs.iter().map(|s| s.service.key).collect(),
            Command::Keyed { command, .. } => command.services(),
            Command::Batch(cmds) => cmds.iter().flat_map(Command::services).collect(),
            Command::SetVipOwners(_) => Vec::new(),
        }
    }

    /// The command itself, without the `Idempotency-Key` it was sent with.
    pub fn unkeyed(&self) -> &Command {
        match self {
            Command::Keyed { command, .. } => command.unkeyed(),
            other => other,
        }
    }

    /// Whether this command replaces the whole configuration (itself or
    /// within a batch).
    pub fn replaces_all(&self) -> bool {
        match self {
            Command::ReplaceAll(_) | Command::Replace { .. } => true,
            Command::Keyed { command, .. } => command.replaces_all(),
            Command::Batch(cmds) => cmds.iter().any(Command::replaces_all),
            _ => false,
        }
    }
}

/// What applying a command did. Refusals are results, not errors: they are
/// replicated decisions, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Applied; the affected service now has this revision (for
    /// `ReplaceAll` and deletions, the log index).
    Applied {
        revision: u64,
    },
    /// The service does not exist.
    NoSuchService(ServiceKey),
    /// The real server does not exist.
    NoSuchServer(ServiceKey, DestKey),
    ServiceExists(ServiceKey),
    ServerExists(ServiceKey, DestKey),
    /// `If-Match` named another revision.
    RevisionMismatch {
        current: u64,
    },
    /// A `FinishDrain` for a drain that was cancelled, replaced or already
    /// finished.
    NotDraining,
    /// The results of a [`Command::Batch`], in its order.
    Batch(Vec<CommandResult>),
    /// A [`Command::Keyed`] whose key was seen before with the same
    /// request: nothing was applied; this is what the first write gave, at
    /// log index `index`.
    Replayed {
        index: u64,
        first: Box<CommandResult>,
    },
    /// A [`Command::Keyed`] whose key was seen before with another request:
    /// nothing was applied.
    KeyReused,
}

impl CommandResult {
    /// The services `cmd` changed, given that applying it gave `self`.
    pub fn changed(&self, cmd: &Command) -> Vec<ServiceKey> {
        match (cmd, self) {
            (Command::Batch(cmds), CommandResult::Batch(results)) => cmds
                .iter()
                .zip(results)
                .flat_map(|(cmd, result)| result.changed(cmd))
                .collect(),
            (Command::Keyed { command, .. }, result) => result.changed(command),
            (_, CommandResult::Applied { .. }) => cmd.services(),
            _ => Vec::new(),
        }
    }
}

impl DesiredState {
    /// Services whose configuration differs between `old` and this state:
    /// the scope of an incremental reconcile pass, and the probes a health
    /// monitor restarts. A service's revision changes with every change to
    /// it or its servers, so comparing revisions is enough.
    pub fn changed_since(&self, old: &DesiredState) -> BTreeSet<ServiceKey> {
        let mut keys = BTreeSet::new();
        for (key, cfg) in &self.services {
            if old.services.get(key).map(|c| c.revision) != Some(cfg.revision) {
                keys.insert(*key);
            }
        }
        for key in old.services.keys() {
            if !self.services.contains_key(key) {
                keys.insert(*key);
            }
        }
        keys
    }

    /// Applies `cmd`, committed at log `index`.
    pub fn apply(&mut self, cmd: &Command, index: u64) -> CommandResult {
        use CommandResult::*;
        match cmd {
            Command::CreateService(spec) => {
                let key = spec.service.key;
                if self.services.contains_key(&key) {
                    return ServiceExists(key);
                }
                self.services.insert(key, Arc::new(config(spec, index)));
                Applied { revision: index }
            }
            Command::UpdateService {
                service,
                options,
                if_revision,
            } => self.edit(&service.key, *if_revision, index, |cfg| {
                cfg.service = service.clone();
                cfg.options = options.clone();
                Ok(())
            }),
            Command::DeleteService {
                key,
                if_revision,
                drain,
            } => {
                let Some(cfg) = self.services.get(key) else {
                    return NoSuchService(*key);
                };
                if let Some(mismatch) = check_revision(cfg, *if_revision) {
                    return mismatch;
                }
                match drain.and_then(|d| d.drain_for(cfg)) {
                    Some(drain) => self.edit(key, None, index, |cfg| {
                        cfg.draining = Some(earlier(cfg.draining, drain));
                        Ok(())
                    }),
                    None => {
                        self.services.remove(key);
                        Applied { revision: index }
                    }
                }
            }
            Command::CreateServer {
                service,
                server,
                if_revision,
                health_check,
            } => self.edit(service, *if_revision, index, |cfg| {
                let key = server.key();
                if cfg.servers.contains_key(&key) {
                    return Err(ServerExists(cfg.service.key, key));
                }
                cfg.servers.insert(key, *server);
                set_check(cfg, key, health_check);
                Ok(())
            }),
            Command::UpdateServer {
                service,
                server,
                if_revision,
                health_check,
            } => self.edit(service, *if_revision, index, |cfg| {
                let key = server.key();
                match cfg.servers.get_mut(&key) {
                    Some(existing) => {
                        *existing = *server;
                        set_check(cfg, key, health_check);
                        Ok(())
                    }
                    None => Err(NoSuchServer(cfg.service.key, key)),
                }
            }),
            Command::DeleteServer {
                service,
                server,
                if_revision,
                drain,
            } => self.edit(service, *if_revision, index, |cfg| {
                if !cfg.servers.contains_key(server) {
                    return Err(NoSuchServer(cfg.service.key, *server));
                }
                match drain.and_then(|d| d.drain_for(cfg)) {
                    Some(drain) => {
                        let current = cfg.draining_servers.get(server).copied();
                        cfg.draining_servers
                            .insert(*server, earlier(current, drain));
                    }
                    None => {
                        cfg.servers.remove(server);
                        cfg.draining_servers.remove(server);
                        cfg.server_checks.remove(server);
                    }
                }
                Ok(())
            }),
            Command::FinishDrain {
                service,
                server,
                since_ms,
            } => {
                let Some(shared) = self.services.get_mut(service) else {
                    return NoSuchService(*service);
                };
                let draining = match server {
                    None => shared.draining,
                    Some(server) => shared.draining_servers.get(server).copied(),
                };
                if draining.map(|d| d.since_ms) != Some(*since_ms) {
                    return NotDraining;
                }
                let cfg = Arc::make_mut(shared);
                match server {
                    None => {
                        self.services.remove(service);
                    }
                    Some(server) => {
                        cfg.servers.remove(server);
                        cfg.draining_servers.remove(server);
                        cfg.server_checks.remove(server);
                        cfg.revision = index;
                    }
                }
                Applied { revision: index }
            }
            Command::ReplaceAll(specs) => {
                self.services = self.replaced(specs, index, None, false);
                Applied { revision: index }
            }
            Command::Replace {
                services,
                drain,
                undrain,
            } => {
                self.services = self.replaced(services, index, drain.as_ref(), *undrain);
                Applied { revision: index }
            }
            Command::Batch(cmds) => Batch(cmds.iter().map(|c| self.apply(c, index)).collect()),
            // Its key is the state machine's to check (requests::Requests
            // applies keyed commands); here it is the command alone, as in a
            // rehearsal.
            Command::Keyed { command, .. } => self.apply(command, index),
            Command::SetVipOwners(owners) => {
                self.vip_owners = VipOwners {
                    owners: owners.clone(),
                    index,
                };
                Applied { revision: index }
            }
        }
    }

    /// The services after `ReplaceAll(specs)` (`drain` absent, `undrain`
    /// false) or `Replace` committed at `index`. Services whose content is
    /// unchanged keep their revision. A replacement never cuts a drain
    /// short: a draining server or service that `specs` leaves out, or gives
    /// as configured or at weight 0 (as `save` prints it), goes on draining;
    /// giving it other settings takes it back into service, and so does
    /// giving it at all with `undrain`. With `drain`, what `specs` leaves
    /// out starts draining as a `DELETE` would drain it (a grace period of 0
    /// removes it at once); without, it goes at once.
    pub fn replaced(
        &self,
        specs: &[ServiceSpec],
        index: u64,
        drain: Option<&DrainRequest>,
        undrain: bool,
    ) -> Services {
        let mut next = Services::new();
        for spec in specs {
            let mut cfg = config(spec, index);
            let kept = self.services.get(&spec.service.key).and_then(|old| {
                carry_drains(old, &mut cfg, undrain);
                if let Some(drain) = drain {
                    drain_left_out_servers(old, &mut cfg, drain);
                }
                cfg.revision = old.revision;
                // Unchanged: the same record, revision and all.
                (**old == cfg).then(|| old.clone())
            });
            let cfg = kept.unwrap_or_else(|| {
                cfg.revision = index;
                Arc::new(cfg)
            });
            next.insert(spec.service.key, cfg);
        }
        for (key, old) in &self.services {
            if next.contains_key(key) {
                continue;
            }
            if old.draining.is_some() {
                next.insert(*key, old.clone());
            } else if let Some(drain) = drain.and_then(|d| d.drain_for(old)) {
                // As DeleteService with a drain: the whole service at
                // weight 0 until its deadline, its settings as they were.
                let mut cfg = ServiceConfig::clone(old);
                cfg.draining = Some(drain);
                cfg.revision = index;
                next.insert(*key, Arc::new(cfg));
            }
        }
        next
    }

    /// Runs `change` on an existing service after the revision check, and
    /// bumps its revision when the change succeeds.
    fn edit(
        &mut self,
        key: &ServiceKey,
        if_revision: Option<u64>,
        index: u64,
        change: impl FnOnce(&mut ServiceConfig) -> Result<(), CommandResult>,
    ) -> CommandResult {
        let Some(shared) = self.services.get_mut(key) else {
            return CommandResult::NoSuchService(*key);
        };
        if let Some(mismatch) = check_revision(shared, if_revision) {
            return mismatch;
        }
        // Copies the service if a reader still holds it.
        let cfg = Arc::make_mut(shared);
        match change(cfg) {
            Ok(()) => {
                cfg.revision = index;
                CommandResult::Applied { revision: index }
            }
            Err(refused) => refused,
        }
    }
}

/// Sets (or, with `None`, clears) a server's own health check.
fn set_check(cfg: &mut ServiceConfig, server: DestKey, check: &Option<HealthCheck>) {
    match check {
        Some(check) => {
            cfg.server_checks.insert(server, check.clone());
        }
        None => {
            cfg.server_checks.remove(&server);
        }
    }
}

fn config(spec: &ServiceSpec, index: u64) -> ServiceConfig {
    ServiceConfig {
        options: spec.options.clone(),
        server_checks: spec
            .server_checks
            .iter()
            .filter(|(k, _)| spec.servers.iter().any(|d| d.key() == **k))
            .map(|(k, c)| (*k, c.clone()))
            .collect(),
        ..ServiceConfig::new(spec.service.clone(), spec.servers.iter().copied(), index)
    }
}

/// Keeps `old`'s drains in its replacement `new` where the replacement does
/// not take the drained server (or service) back (with `undrain`, all it
/// gives it takes back): see [`DesiredState::replaced`].
fn carry_drains(old: &ServiceConfig, new: &mut ServiceConfig, undrain: bool) {
    // A drained server given as configured, or at the weight 0 it has in
    // the kernels while it drains.
    let as_draining = |was: &Destination, given: &Destination| {
        !undrain && (given == was || *given == Destination { weight: 0, ..*was })
    };
    if let (Some(drain), false) = (old.draining, undrain) {
        let servers_as_before = new.servers.len() == old.servers.len()
            && old
                .servers
                .iter()
                .all(|(k, was)| new.servers.get(k).is_some_and(|d| as_draining(was, d)));
        if old.service == new.service && old.options == new.options && servers_as_before {
            new.servers = old.servers.clone();
            new.draining = Some(drain);
            new.draining_servers = old.draining_servers.clone();
            return;
        }
    }
    for (dkey, drain) in &old.draining_servers {
        let Some(was) = old.servers.get(dkey) else {
            continue;
        };
        match new.servers.get(dkey) {
            Some(given) if !as_draining(was, given) => continue,
            Some(_) => {}
            // Left out: it drains on, with its own health check.
            None => {
                if let Some(check) = old.server_checks.get(dkey) {
                    new.server_checks.insert(*dkey, check.clone());
                }
            }
        }
        new.servers.insert(*dkey, *was);
        new.draining_servers.insert(*dkey, *drain);
    }
}

/// Drains the servers of `old` that its replacement `new` leaves out (and
/// that are not draining already: [`carry_drains`] kept those), as a
/// `DeleteServer` would: with the grace period the replacement gives the
/// service. They stay in `new.servers`, with their own health checks, until
/// the drain ends.
fn drain_left_out_servers(old: &ServiceConfig, new: &mut ServiceConfig, drain: &DrainRequest) {
    if new.draining.is_some() {
        // The whole service goes on draining, servers and all.
        return;
    }
    let Some(drain) = drain.drain_for(new) else {
        return;
    };
    for (dkey, was) in &old.servers {
        if new.servers.contains_key(dkey) {
            continue;
        }
        new.servers.insert(*dkey, *was);
        new.draining_servers.insert(*dkey, drain);
        if let Some(check) = old.server_checks.get(dkey) {
            new.server_checks.insert(*dkey, check.clone());
        }
    }
}

/// Of a drain in progress and a new one, the one that ends first: asking
/// again with a shorter grace period hurries a removal, a longer one does
/// not delay it.
fn earlier(current: Option<Drain>, new: Drain) -> Drain {
    match current {
        Some(current) if current.deadline_ms() <= new.deadline_ms() => current,
        _ => new,
    }
}

fn check_revision(cfg: &ServiceConfig, if_revision: Option<u64>) -> Option<CommandResult> {
    match if_revision {
        Some(r) if r != cfg.revision => Some(CommandResult::RevisionMismatch {
            current: cfg.revision,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: "192.0.2.1".parse().unwrap(),
            port,
        }
    }

    fn server(last: u8) -> Destination {
        Destination::new(format!("198.51.100.{last}").parse().unwrap(), 80)
    }

    fn create(port: u16) -> Command {
        Command::CreateService(ServiceSpec {
            server_checks: Default::default(),
            options: Default::default(),
            service: VirtualService::new(key(port)),
            servers: vec![server(1)],
        })
    }

    #[test]
    fn commands_in_log_order() {
        use CommandResult::*;
        let mut s = DesiredState::default();
        let add2 = Command::CreateServer {
            health_check: None,
            service: key(80),
            server: server(2),
            if_revision: None,
        };
        let steps: Vec<(Command, CommandResult)> = vec![
            (create(80), Applied { revision: 1 }),
            (create(80), ServiceExists(key(80))),
            (add2.clone(), Applied { revision: 3 }),
            (add2, ServerExists(key(80), server(2).key())),
            (
                Command::UpdateServer {
                    health_check: None,
                    service: key(80),
                    server: Destination {
                        weight: 5,
                        ..server(2)
                    },
                    if_revision: Some(1),
                },
                RevisionMismatch { current: 3 },
            ),
            (
                Command::UpdateServer {
                    health_check: None,
                    service: key(80),
                    server: Destination {
                        weight: 5,
                        ..server(2)
                    },
                    if_revision: Some(3),
                },
                Applied { revision: 6 },
            ),
            (
                Command::DeleteServer {
                    drain: Default::default(),
                    service: key(80),
                    server: server(9).key(),
                    if_revision: None,
                },
                NoSuchServer(key(80), server(9).key()),
            ),
            (
                Command::DeleteService {
                    drain: Default::default(),
                    key: key(81),
                    if_revision: None,
                },
                NoSuchService(key(81)),
            ),
            (
                Command::DeleteService {
                    drain: Default::default(),
                    key: key(80),
                    if_revision: Some(6),
                },
                Applied { revision: 9 },
            ),
        ];
        for (i, (cmd, want)) in steps.into_iter().enumerate() {
            assert_eq!(s.apply(&cmd, i as u64 + 1), want, "step {}: {cmd:?}", i + 1);
        }
        assert!(s.services.is_empty());
    }

    #[test]
    fn a_batch_applies_in_order_with_one_result_each() {
        let mut s = DesiredState::default();
        s.apply(&create(80), 1);
        let batch = Command::Batch(vec![
            create(81),
            create(80),
            Command::DeleteService {
                drain: Default::default(),
                key: key(80),
                if_revision: Some(1),
            },
        ]);
        let result = s.apply(&batch, 2);
        assert_eq!(
            result,
            CommandResult::Batch(vec![
                CommandResult::Applied { revision: 2 },
                CommandResult::ServiceExists(key(80)),
                CommandResult::Applied { revision: 2 },
            ])
        );
        // The refused create changed nothing; the others changed theirs.
        assert_eq!(result.changed(&batch), vec![key(81), key(80)]);
        assert_eq!(batch.services(), vec![key(81), key(80), key(80)]);
        assert!(!batch.replaces_all());
        assert_eq!(
            s.services.keys().copied().collect::<Vec<_>>(),
            vec![key(81)]
        );
    }

    #[test]
    fn refusals_change_nothing() {
        let mut s = DesiredState::default();
        s.apply(&create(80), 1);
        let before = s.clone();
        s.apply(&create(80), 2);
        s.apply(
            &Command::UpdateService {
                options: Default::default(),
                service: VirtualService::new(key(80)),
                if_revision: Some(7),
            },
            3,
        );
        assert_eq!(s, before);
    }

    #[test]
    fn replace_all_keeps_revisions_of_unchanged_services() {
        let mut s = DesiredState::default();
        s.apply(&create(80), 1);
        s.apply(&create(81), 2);
        let spec = |port, servers| ServiceSpec {
            server_checks: Default::default(),
            options: Default::default(),
            service: VirtualService::new(key(port)),
            servers,
        };
        let result = s.apply(
            &Command::ReplaceAll(vec![spec(80, vec![server(1)]), spec(82, vec![])]),
            3,
        );
        assert_eq!(result, CommandResult::Applied { revision: 3 });
        let revisions: Vec<(u16, u64)> = s
            .services
            .iter()
            .map(|(k, c)| match k {
                ServiceKey::Inet { port, .. } => (*port, c.revision),
                ServiceKey::Fwmark { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(revisions, vec![(80, 1), (82, 3)]);
    }

    #[test]
    fn state_and_commands_survive_json() {
        let mut s = DesiredState::default();
        s.apply(&create(80), 1);
        s.apply(&create(443), 2);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<DesiredState>(&json).unwrap(), s);
        let cmd = create(8080);
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
    }

    #[test]
    fn removals_drain_then_finish() {
        use CommandResult::*;
        let mut s = DesiredState::default();
        s.apply(&create(80), 1);
        let drain = |since_ms, grace| {
            Some(DrainRequest {
                since_ms,
                grace: Some(grace),
                default_grace: 30,
            })
        };
        let remove = |grace: Option<DrainRequest>| Command::DeleteServer {
            service: key(80),
            server: server(1).key(),
            if_revision: None,
            drain: grace,
        };
        assert_eq!(
            s.apply(&remove(drain(1_000, 60)), 2),
            Applied { revision: 2 }
        );
        let cfg = &s.services[&key(80)];
        assert!(cfg.servers.contains_key(&server(1).key()));
        assert_eq!(cfg.next_deadline_ms(), Some(61_000));
        // Asking again with a longer grace does not delay it; a shorter one
        // hurries it.
        s.apply(&remove(drain(2_000, 300)), 3);
        assert_eq!(s.services[&key(80)].next_deadline_ms(), Some(61_000));
        s.apply(&remove(drain(2_000, 10)), 4);
        assert_eq!(s.services[&key(80)].next_deadline_ms(), Some(12_000));
        // A finish for a drain that was replaced changes nothing.
        let finish = |since_ms| Command::FinishDrain {
            service: key(80),
            server: Some(server(1).key()),
            since_ms,
        };
        let before = s.clone();
        assert_eq!(s.apply(&finish(1_000), 5), NotDraining);
        assert_eq!(s, before);
        assert_eq!(s.apply(&finish(2_000), 6), Applied { revision: 6 });
        assert!(s.services[&key(80)].servers.is_empty());
        assert!(s.services[&key(80)].draining_servers.is_empty());

        // The whole service: drains, then goes.
        let delete = Command::DeleteService {
            key: key(80),
            if_revision: None,
            drain: drain(5_000, 30),
        };
        assert_eq!(s.apply(&delete, 7), Applied { revision: 7 });
        assert!(s.services[&key(80)].draining.is_some());
        let finish_service = Command::FinishDrain {
            service: key(80),
            server: None,
            since_ms: 5_000,
        };
        assert_eq!(s.apply(&finish_service, 8), Applied { revision: 8 });
        assert!(s.services.is_empty());

        // Grace 0 deletes at once.
        s.apply(&create(81), 9);
        let now = Command::DeleteService {
            key: key(81),
            if_revision: None,
            drain: drain(9_000, 0),
        };
        s.apply(&now, 10);
        assert!(s.services.is_empty());

        // Without ?grace: the service's drain_grace, as applied, else the
        // accepting node's default.
        s.apply(&create(82), 11);
        let remove_82 = |default_grace| Command::DeleteServer {
            service: key(82),
            server: server(1).key(),
            if_revision: None,
            drain: Some(DrainRequest {
                since_ms: 0,
                grace: None,
                default_grace,
            }),
        };
        s.apply(&remove_82(30), 12);
        assert_eq!(s.services[&key(82)].next_deadline_ms(), Some(30_000));
        Arc::make_mut(s.services.get_mut(&key(82)).unwrap())
            .options
            .drain_grace = Some(5);
        s.apply(&remove_82(30), 13);
        assert_eq!(s.services[&key(82)].next_deadline_ms(), Some(5_000));
        Arc::make_mut(s.services.get_mut(&key(82)).unwrap())
            .options
            .drain_grace = Some(0);
        s.apply(&remove_82(30), 14);
        assert!(s.services[&key(82)].servers.is_empty());
    }

    #[test]
    fn a_replacement_never_cuts_a_drain_short() {
        let drain = Some(DrainRequest {
            since_ms: 1_000,
            grace: Some(60),
            default_grace: 30,
        });
        let two = |weight_of_2: u32| ServiceSpec {
            server_checks: Default::default(),
            options: Default::default(),
            service: VirtualService::new(key(80)),
            servers: vec![
                server(1),
                Destination {
                    weight: weight_of_2,
                    ..server(2)
                },
            ],
        };
        let draining = |s: &DesiredState| s.services[&key(80)].draining_servers.len();
        let mut s = DesiredState::default();
        s.apply(&Command::ReplaceAll(vec![two(1)]), 1);
        s.apply(
            &Command::DeleteServer {
                service: key(80),
                server: server(2).key(),
                if_revision: None,
                drain,
            },
            2,
        );
        assert_eq!(draining(&s), 1);
        // Given as configured, at weight 0 (as `save` prints it), or left
        // out: still draining, and the service keeps its revision.
        for spec in [two(1), two(0), spec_of(80, vec![server(1)])] {
            let mut next = s.clone();
            next.apply(&Command::ReplaceAll(vec![spec]), 3);
            assert_eq!(next, s);
        }
        // Given another weight: taken back into service.
        s.apply(&Command::ReplaceAll(vec![two(5)]), 4);
        assert_eq!(draining(&s), 0);
        assert_eq!(s.services[&key(80)].servers[&server(2).key()].weight, 5);

        // A whole service draining goes on when left out or given as it is
        // (its servers at 0), and ends when given other settings.
        s.apply(
            &Command::DeleteService {
                key: key(80),
                if_revision: None,
                drain,
            },
            5,
        );
        let zeroed = ServiceSpec {
            server_checks: Default::default(),
            servers: two(0)
                .servers
                .into_iter()
                .map(|d| Destination { weight: 0, ..d })
                .collect(),
            ..two(0)
        };
        for specs in [vec![], vec![zeroed]] {
            let mut next = s.clone();
            next.apply(&Command::ReplaceAll(specs), 6);
            assert_eq!(next, s);
        }
        let mut rr = two(5);
        rr.service.scheduler = crate::model::Scheduler::new("rr").unwrap();
        s.apply(&Command::ReplaceAll(vec![rr]), 7);
        assert_eq!(s.services[&key(80)].draining, None);
    }

    #[test]
    fn a_draining_replacement_drains_what_it_leaves_out() {
        let mut s = DesiredState::default();
        let mut slow = spec_of(81, vec![server(1)]);
        slow.options.drain_grace = Some(5);
        s.apply(
            &Command::ReplaceAll(vec![
                spec_of(80, vec![server(1), server(2)]),
                slow,
                spec_of(82, vec![server(1)]),
            ]),
            1,
        );
        let request = |since_ms, grace| DrainRequest {
            since_ms,
            grace,
            default_grace: 30,
        };
        let keep_80 = || Command::Replace {
            services: vec![spec_of(80, vec![server(1)])],
            undrain: false,
            drain: Some(request(1_000, None)),
        };
        assert_eq!(
            s.apply(&keep_80(), 2),
            CommandResult::Applied { revision: 2 }
        );
        let drain = |grace| Drain {
            since_ms: 1_000,
            grace,
        };
        // A server left out drains (the node's default), still a server;
        // services left out drain whole (their own drain_grace, else the
        // default), with their settings and servers as they were.
        let web = &s.services[&key(80)];
        assert_eq!(web.revision, 2);
        assert!(web.servers.contains_key(&server(2).key()));
        assert_eq!(web.draining_servers[&server(2).key()], drain(30));
        assert_eq!(s.services[&key(81)].draining, Some(drain(5)));
        assert_eq!(s.services[&key(81)].options.drain_grace, Some(5));
        assert_eq!(s.services[&key(82)].draining, Some(drain(30)));
        assert_eq!(s.services[&key(82)].servers.len(), 1);
        // The same replacement again (a retry, `restore` twice) restarts
        // no drain and changes nothing.
        let before = s.clone();
        s.apply(
            &Command::Replace {
                services: vec![spec_of(80, vec![server(1)])],
                undrain: false,
                drain: Some(request(9_000, None)),
            },
            3,
        );
        assert_eq!(s, before);
        // They end as a DELETE's drains end: by the leader's FinishDrain.
        assert_eq!(s.services[&key(81)].next_deadline_ms(), Some(6_000));
        let finish = |port, server: Option<DestKey>| Command::FinishDrain {
            service: key(port),
            server,
            since_ms: 1_000,
        };
        s.apply(&finish(81, None), 4);
        s.apply(&finish(82, None), 5);
        s.apply(&finish(80, Some(server(2).key())), 6);
        assert_eq!(
            s.services.keys().copied().collect::<Vec<_>>(),
            vec![key(80)]
        );
        assert_eq!(s.services[&key(80)].servers.len(), 1);
        assert!(s.services[&key(80)].draining_servers.is_empty());

        // A grace of 0 asked for: as ReplaceAll, everything at once.
        let mut a = before.clone();
        let mut b = before.clone();
        a.apply(
            &Command::Replace {
                services: vec![spec_of(80, vec![server(1)]), spec_of(83, vec![])],
                undrain: false,
                drain: Some(request(1_000, Some(0))),
            },
            7,
        );
        b.apply(
            &Command::ReplaceAll(vec![spec_of(80, vec![server(1)]), spec_of(83, vec![])]),
            7,
        );
        assert_eq!(a, b);

        // With undrain, what it gives is in service again (an accidental
        // clear undone); what it leaves out drains on, not restarted.
        let mut slow = spec_of(81, vec![server(1)]);
        slow.options.drain_grace = Some(5);
        let mut back = before.clone();
        back.apply(
            &Command::Replace {
                services: vec![spec_of(80, vec![server(1), server(2)]), slow],
                drain: Some(request(2_000, None)),
                undrain: true,
            },
            8,
        );
        assert!(back.services[&key(80)].draining_servers.is_empty());
        assert_eq!(back.services[&key(80)].servers.len(), 2);
        assert_eq!(back.services[&key(81)].draining, None);
        assert_eq!(back.services[&key(81)].revision, 8);
        assert_eq!(back.services[&key(82)], before.services[&key(82)]);
        // A draining server it leaves out drains on too.
        let mut partly = before.clone();
        partly.apply(
            &Command::Replace {
                services: vec![spec_of(80, vec![server(1)])],
                drain: None,
                undrain: true,
            },
            9,
        );
        assert_eq!(
            partly.services[&key(80)].draining_servers[&server(2).key()],
            drain(30)
        );
    }

    /// Entries written before `Replace` existed, as they are on
    /// disk (these bytes are what the version before it wrote), decode as
    /// they did and still remove at once.
    #[test]
    fn replace_all_entries_on_disk_decode_and_apply_as_before() {
        let on_disk = r#"{"ReplaceAll":[{"service":{"key":{"Inet":{"protocol":"Tcp","addr":"192.0.2.1","port":80}},"scheduler":"wlc","flags":0,"persistence":null,"pe_name":null},"servers":[{"addr":"198.51.100.1","port":80,"forward":"Masq","weight":1,"upper_threshold":0,"lower_threshold":0}],"options":{"bind_address":false,"health_policy":{"remove_unhealthy":false,"slow_start_ms":0}}}]}"#;
        let cmd: Command = serde_json::from_str(on_disk).expect("an old entry decodes");
        assert_eq!(cmd, Command::ReplaceAll(vec![spec_of(80, vec![server(1)])]));
        let mut s = DesiredState::default();
        s.apply(&create(81), 1);
        s.apply(&cmd, 2);
        assert_eq!(
            s.services.keys().copied().collect::<Vec<_>>(),
            vec![key(80)]
        );
        // And the new variant survives JSON.
        let new = Command::Replace {
            services: vec![spec_of(80, vec![])],
            drain: Some(DrainRequest {
                since_ms: 1,
                grace: Some(2),
                default_grace: 3,
            }),
            undrain: true,
        };
        let json = serde_json::to_string(&new).expect("encodes");
        assert_eq!(serde_json::from_str::<Command>(&json).ok(), Some(new));
    }

    fn spec_of(port: u16, servers: Vec<Destination>) -> ServiceSpec {
        ServiceSpec {
            server_checks: Default::default(),
            options: Default::default(),
            service: VirtualService::new(key(port)),
            servers,
        }
    }
}
