//! In-memory IPVS table with the rules of Linux 6.1: the fake [`Kernel`] that
//! tests of the upper layers run against, and the dry run `kernel restore`
//! validates a whole batch with before it sends anything to the real kernel.
//!
//! Every rule below names the function of `net/netfilter/ipvs/ip_vs_ctl.c` it
//! comes from, and checks happen in the kernel's order, so the same mistake
//! gets the same errno (the first one the kernel would hit). Refusals are the
//! [`KernelError`] the netlink kernel produces for that errno
//! ([`KernelError::rejected`]).
//!
//! What the kernel does that a table in memory cannot know, and so is not
//! emulated: destination address checks that depend on the host's routes
//! (`ip_vs_new_dest` asks the local routing table), the sync daemon (mixed
//! families are refused while it runs), the destination trash (a destination
//! deleted and re-added within a few minutes gets its old counters back), and
//! the order of a service dump (the kernel walks its hash tables; here
//! services are listed in insertion order).
//!
//! Assumed of the codec, because the model leaves it open: a firewall-mark
//! key always carries the FWMARK attribute (so mark 0 means what the kernel
//! makes of it, see [`MemoryKernel::kernel_key`]); a service without
//! persistence is sent with the host netmask; an IPv4 netmask goes on the wire
//! in network order and an IPv6 prefix length as a native `u32`.

use super::{Change, Info, Kernel, KernelError, Timeouts};
use crate::model::{
    DestEntry, DestKey, Destination, Family, Forward, Netmask, Persistence, Protocol, ServiceEntry,
    ServiceKey, Stats, TunnelType, VirtualService,
};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A read of the table, as fault injection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// [`Kernel::services`] (a GET_SERVICE dump plus a GET_DEST dump each).
    Services,
    /// [`Kernel::service`].
    Service(ServiceKey),
    /// [`Kernel::info`].
    Info,
    /// [`Kernel::timeouts`].
    Timeouts,
}

impl fmt::Display for Query {
    /// What the query does, for error messages, worded like [`Change`]'s.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Services => f.write_str("list services"),
            Query::Service(k) => write!(f, "get service {k}"),
            Query::Info => f.write_str("get IPVS info"),
            Query::Timeouts => f.write_str("get timeouts"),
        }
    }
}

/// A scripted failure: the next calls that match fail with `errno`.
struct Fault<T> {
    matches: Box<dyn Fn(&T) -> bool + Send>,
    errno: i32,
    /// `None` fails every match for good.
    remaining: Option<usize>,
}

/// Fires the first fault that matches `item`, if any, and uses it up.
fn fire<T>(faults: &mut Vec<Fault<T>>, item: &T) -> Option<i32> {
    let pos = faults.iter().position(|f| (f.matches)(item))?;
    let fault = faults.get_mut(pos)?;
    let errno = fault.errno;
    if let Some(left) = fault.remaining.as_mut() {
        *left = left.saturating_sub(1);
        if *left == 0 {
            faults.remove(pos);
        }
    }
    Some(errno)
}

/// An IPVS table in memory that accepts and refuses changes like the Linux
/// 6.1 kernel, with scripted failures and a log of what was applied.
pub struct MemoryKernel {
    /// Services in insertion order; each one's destinations in the kernel's
    /// order (newest first).
    services: Vec<ServiceEntry>,
    /// Position of each service in `services`, so that bulk work (a restore
    /// of thousands of services is validated here) stays linear.
    index: HashMap<ServiceKey, usize>,
    timeouts: Timeouts,
    schedulers: Vec<String>,
    engines: Vec<String>,
    conn_tab_size: u32,
    hz: u32,
    ipv6: bool,
    change_faults: Vec<Fault<Change>>,
    query_faults: Vec<Fault<Query>>,
    applied: Vec<Change>,
    attempted: usize,
    batches: usize,
    queries: usize,
}

impl MemoryKernel {
    /// Schedulers mainline 6.1 ships (`twos` came later).
    pub const DEFAULT_SCHEDULERS: &'static [&'static str] = &[
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
    ];
    /// Persistence engines mainline 6.1 ships.
    pub const DEFAULT_ENGINES: &'static [&'static str] = &["sip"];
    /// IP_VS_VERSION_CODE (1.2.1).
    pub const VERSION: u32 = 0x010201;
    /// `ip_vs_conn_tab_size` with the default `conn_tab_bits` of 12.
    pub const DEFAULT_CONN_TAB_SIZE: u32 = 4096;
    /// The protocol handlers' defaults: TCP established 15 min, FIN_WAIT
    /// 2 min, UDP 5 min.
    pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    /// CONFIG_HZ of Debian's and Ubuntu's generic kernels.
    pub const DEFAULT_HZ: u32 = 250;
    /// The scheduler name that means "no scheduler": `ip_vs_add_service` and
    /// `ip_vs_edit_service` skip the module lookup for it, and
    /// `ip_vs_genl_fill_service` reports it back.
    pub const NO_SCHEDULER: &'static str = "none";
    /// IP_VS_PENAME_MAXLEN: the PE_NAME attribute policy's length limit.
    const PE_NAME_MAX_LEN: usize = 16;

    /// An empty table with 6.1's defaults.
    pub fn new() -> MemoryKernel {
        MemoryKernel {
            services: Vec::new(),
            index: HashMap::new(),
            timeouts: Self::DEFAULT_TIMEOUTS,
            schedulers: to_strings(Self::DEFAULT_SCHEDULERS),
            engines: to_strings(Self::DEFAULT_ENGINES),
            conn_tab_size: Self::DEFAULT_CONN_TAB_SIZE,
            hz: Self::DEFAULT_HZ,
            ipv6: true,
            change_faults: Vec::new(),
            query_faults: Vec::new(),
            applied: Vec::new(),
            attempted: 0,
            batches: 0,
            queries: 0,
        }
    }

    /// A table loaded from a listing of a real one (what restore validates
    /// against), kept as listed: services, destinations and counters. The
    /// listing is trusted, not re-validated; a service whose key was already
    /// loaded is skipped, as a real table cannot hold it twice.
    pub fn from_entries(entries: Vec<ServiceEntry>) -> MemoryKernel {
        let mut kernel = MemoryKernel::new();
        for entry in entries {
            if kernel.position(&entry.service.key).is_none() {
                kernel.push(entry);
            }
        }
        kernel
    }

    /// Replaces the set of loadable scheduler modules (`none` is always
    /// accepted: it is no module).
    pub fn with_schedulers<I, S>(mut self, names: I) -> MemoryKernel
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.schedulers = names.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the set of loadable persistence-engine modules.
    pub fn with_engines<I, S>(mut self, names: I) -> MemoryKernel
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.engines = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_conn_tab_size(mut self, size: u32) -> MemoryKernel {
        self.conn_tab_size = size;
        self
    }

    /// Starting protocol timeouts (0 keeps the default; values the kernel
    /// would refuse are ignored).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> MemoryKernel {
        let _ = self.set_timeouts(&timeouts);
        self
    }

    /// The kernel's tick rate, which bounds `--set` timeouts and wraps
    /// persistence timeouts (both are kept in jiffies). 0 is taken as 1.
    pub fn with_hz(mut self, hz: u32) -> MemoryKernel {
        self.hz = hz.max(1);
        self
    }

    /// Whether IPv6 is enabled; when not, `ip_vs_is_af_valid` refuses every
    /// IPv6 service and destination with EAFNOSUPPORT.
    pub fn with_ipv6(mut self, enabled: bool) -> MemoryKernel {
        self.ipv6 = enabled;
        self
    }

    // --- fault injection ---

    /// Makes the next changes matching `predicate` fail with `errno` without
    /// touching the table: `times` of them, or all with `None`. Faults are
    /// tried in the order they were added; the first match fires.
    pub fn fail_when(
        &mut self,
        predicate: impl Fn(&Change) -> bool + Send + 'static,
        errno: i32,
        times: Option<usize>,
    ) {
        if times != Some(0) {
            self.change_faults.push(Fault {
                matches: Box::new(predicate),
                errno,
                remaining: times,
            });
        }
    }

    /// Makes the next change, whatever it is, fail with `errno`.
    pub fn fail_next(&mut self, errno: i32) {
        self.fail_when(|_| true, errno, Some(1));
    }

    /// Makes the next queries matching `predicate` fail with `errno`.
    pub fn fail_query_when(
        &mut self,
        predicate: impl Fn(&Query) -> bool + Send + 'static,
        errno: i32,
        times: Option<usize>,
    ) {
        if times != Some(0) {
            self.query_faults.push(Fault {
                matches: Box::new(predicate),
                errno,
                remaining: times,
            });
        }
    }

    /// Makes the next queries of any kind fail with `errno`.
    pub fn fail_queries(&mut self, errno: i32, times: Option<usize>) {
        self.fail_query_when(|_| true, errno, times);
    }

    /// Drops every scripted failure not yet used.
    pub fn clear_faults(&mut self) {
        self.change_faults.clear();
        self.query_faults.clear();
    }

    // --- counters and inspection ---

    /// Changes that succeeded, in order.
    pub fn applied(&self) -> &[Change] {
        &self.applied
    }

    /// Changes passed to [`Kernel::apply_batch`] (or [`Kernel::apply`]),
    /// whether they succeeded or not.
    pub fn attempted(&self) -> usize {
        self.attempted
    }

    /// Calls of [`Kernel::apply_batch`] (each [`Kernel::apply`] is one).
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Queries answered or failed.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Zeroes the counters and empties the log; the table stays.
    pub fn reset_counters(&mut self) {
        self.applied.clear();
        self.attempted = 0;
        self.batches = 0;
        self.queries = 0;
    }

    /// The table as it stands, without counting a query or firing a fault.
    pub fn entries(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// The protocol timeouts, without counting a query or firing a fault.
    pub fn current_timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sets a service's traffic counters (the kernel's come from traffic).
    /// False when there is no such service.
    pub fn set_service_stats(&mut self, key: &ServiceKey, stats: Stats) -> bool {
        match self.entry_mut(key) {
            Some(entry) => {
                entry.stats = stats;
                true
            }
            None => false,
        }
    }

    /// Sets a destination's traffic counters. False when there is no such
    /// destination.
    pub fn set_dest_stats(&mut self, key: &ServiceKey, dest: &DestKey, stats: Stats) -> bool {
        match self.dest_mut(key, dest) {
            Some(d) => {
                d.stats = stats;
                true
            }
            None => false,
        }
    }

    /// Sets a destination's connection counts. False when there is no such
    /// destination.
    pub fn set_dest_conns(
        &mut self,
        key: &ServiceKey,
        dest: &DestKey,
        active: u32,
        inactive: u32,
        persistent: u32,
    ) -> bool {
        match self.dest_mut(key, dest) {
            Some(d) => {
                d.active_conns = active;
                d.inactive_conns = inactive;
                d.persistent_conns = persistent;
                true
            }
            None => false,
        }
    }

    // --- lookups ---

    fn position(&self, key: &ServiceKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    fn entry_mut(&mut self, key: &ServiceKey) -> Option<&mut ServiceEntry> {
        let at = self.position(&self.kernel_key(key).ok()?)?;
        self.services.get_mut(at)
    }

    fn push(&mut self, entry: ServiceEntry) {
        self.index.insert(entry.service.key, self.services.len());
        self.services.push(entry);
    }

    fn remove(&mut self, at: usize) {
        let entry = self.services.remove(at);
        self.index.remove(&entry.service.key);
        for (i, e) in self.services.iter().enumerate().skip(at) {
            self.index.insert(e.service.key, i);
        }
    }

    fn dest_mut(&mut self, key: &ServiceKey, dest: &DestKey) -> Option<&mut DestEntry> {
        self.entry_mut(key)?
            .destinations
            .iter_mut()
            .find(|d| d.dest.key() == *dest)
    }

    /// The service a key names, as `ip_vs_genl_parse_service` reads it:
    /// EAFNOSUPPORT for a family `ip_vs_is_af_valid` refuses; and a FWMARK
    /// attribute of 0 leaves `usvc->fwmark` 0 with protocol TCP and a zeroed
    /// address and port, so the kernel looks up — and creates — the
    /// `TCP 0.0.0.0:0` (or `[::]:0`) service, and reports it as that. The
    /// error is the errno.
    pub fn kernel_key(&self, key: &ServiceKey) -> Result<ServiceKey, i32> {
        if key.family() == Family::Ipv6 && !self.ipv6 {
            return Err(libc::EAFNOSUPPORT);
        }
        Ok(match *key {
            ServiceKey::Fwmark { family, mark: 0 } => ServiceKey::Inet {
                protocol: Protocol::Tcp,
                addr: unspecified(family),
                port: 0,
            },
            other => other,
        })
    }

    // --- the rules ---

    /// One change, checked in the kernel's order (`ip_vs_genl_set_cmd`).
    fn execute(&mut self, change: &Change) -> Result<(), i32> {
        match change {
            // ip_vs_flush: always succeeds.
            Change::Flush => {
                self.services.clear();
                self.index.clear();
                Ok(())
            }
            Change::SetTimeouts(t) => self.set_timeouts(t),
            // ip_vs_zero_all: no service attribute zeroes every service.
            Change::Zero(None) => {
                self.services.iter_mut().for_each(zero_service);
                Ok(())
            }
            Change::Zero(Some(key)) => {
                let at = self.existing(key)?;
                if let Some(entry) = self.services.get_mut(at) {
                    zero_service(entry);
                }
                Ok(())
            }
            Change::AddService(svc) => self.add_service(svc),
            Change::EditService(svc) => self.edit_service(svc),
            Change::DelService(key) => {
                let at = self.existing(key)?;
                self.remove(at);
                Ok(())
            }
            Change::AddDest(key, dest) => self.add_dest(key, dest),
            Change::EditDest(key, dest) => self.edit_dest(key, dest),
            Change::DelDest(key, dest) => self.del_dest(key, dest),
        }
    }

    /// `ip_vs_genl_set_cmd`: every command but NEW_SERVICE needs the service
    /// to exist, else ESRCH.
    fn existing(&self, key: &ServiceKey) -> Result<usize, i32> {
        let key = self.kernel_key(key)?;
        self.position(&key).ok_or(libc::ESRCH)
    }

    /// NEW_SERVICE: `ip_vs_genl_set_cmd` refuses an existing key (EEXIST)
    /// before `ip_vs_add_service` looks at the scheduler.
    fn add_service(&mut self, svc: &VirtualService) -> Result<(), i32> {
        check_attribute_policy(svc)?;
        let key = self.kernel_key(&svc.key)?;
        if self.position(&key).is_some() {
            return Err(libc::EEXIST);
        }
        let stored = self.check_service(key, svc)?;
        self.push(ServiceEntry {
            service: stored,
            stats: Stats::default(),
            destinations: Vec::new(),
        });
        Ok(())
    }

    /// SET_SERVICE: ESRCH for a missing service, then `ip_vs_edit_service`'s
    /// checks; on success scheduler, flags, persistence and engine are all
    /// replaced (the codec sends the flag mask 0xffffffff), counters and
    /// destinations stay.
    fn edit_service(&mut self, svc: &VirtualService) -> Result<(), i32> {
        check_attribute_policy(svc)?;
        let key = self.kernel_key(&svc.key)?;
        let at = self.position(&key).ok_or(libc::ESRCH)?;
        let stored = self.check_service(key, svc)?;
        if let Some(entry) = self.services.get_mut(at) {
            entry.service = stored;
        }
        Ok(())
    }

    /// What `ip_vs_add_service` and `ip_vs_edit_service` check, in their
    /// order, and the service as the kernel would report it afterwards.
    fn check_service(&self, key: ServiceKey, svc: &VirtualService) -> Result<VirtualService, i32> {
        // Scheduler module lookup (ip_vs_scheduler_get): ENOENT when it
        // cannot be loaded; "none" binds no scheduler at all.
        let sched = svc.scheduler.as_str();
        if sched != Self::NO_SCHEDULER && !self.schedulers.iter().any(|s| s == sched) {
            return Err(libc::ENOENT);
        }
        // Persistence engine (ip_vs_pe_getbyname): ENOENT when it cannot be
        // loaded. An empty name means no engine (`u->pe_name && *u->pe_name`).
        let pe_name = svc.pe_name.as_ref().filter(|n| !n.is_empty());
        if let Some(name) = pe_name {
            if !self.engines.iter().any(|e| e == name) {
                return Err(libc::ENOENT);
            }
        }
        // IPv6 services need a prefix length of 1..=128, persistent or not.
        let family = key.family();
        let netmask = svc.persistence.map_or(Netmask::host(family), |p| p.netmask);
        let raw = netmask_raw(netmask);
        if family == Family::Ipv6 && !(1..=128).contains(&u32::from_ne_bytes(raw)) {
            return Err(libc::EINVAL);
        }
        Ok(VirtualService {
            key,
            scheduler: svc.scheduler.clone(),
            flags: svc.flags,
            persistence: svc.persistence.map(|p| Persistence {
                // svc->timeout = u->timeout * HZ, an unsigned int; the reply
                // divides by HZ again.
                timeout: p.timeout.wrapping_mul(self.hz) / self.hz,
                netmask: netmask_reported(family, raw).unwrap_or(p.netmask),
            }),
            pe_name: pe_name.cloned(),
        })
    }

    /// NEW_DEST: `ip_vs_genl_set_cmd`, then `ip_vs_add_dest` and
    /// `ip_vs_new_dest`. The destination goes to the head of the list
    /// (`list_add_rcu` in `__ip_vs_update_dest`), so dumps show it first.
    /// Its port is kept as given, whatever the forwarding method: it is
    /// ipvsadm, not the kernel, that replaces a direct-routing or tunnel
    /// destination's port with the service's.
    fn add_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let at = self.existing(key)?;
        let entry = self.services.get(at).ok_or(libc::ESRCH)?;
        self.check_dest_family(entry.service.key.family(), dest.family(), dest.forward)?;
        check_dest_values(dest)?;
        if entry
            .destinations
            .iter()
            .any(|d| d.dest.key() == dest.key())
        {
            return Err(libc::EEXIST);
        }
        check_dest_address(&dest.addr)?;
        if let Some(entry) = self.services.get_mut(at) {
            entry.destinations.insert(0, DestEntry::new(*dest));
        }
        Ok(())
    }

    /// SET_DEST: `ip_vs_genl_set_cmd`, then `ip_vs_edit_dest`. Everything
    /// but the key is replaced (`__ip_vs_update_dest`); connection counts
    /// and traffic counters stay, and so does the list position.
    fn edit_dest(&mut self, key: &ServiceKey, dest: &Destination) -> Result<(), i32> {
        let at = self.existing(key)?;
        let entry = self.services.get(at).ok_or(libc::ESRCH)?;
        self.check_dest_family(entry.service.key.family(), dest.family(), dest.forward)?;
        check_dest_values(dest)?;
        let found = self
            .services
            .get_mut(at)
            .and_then(|e| {
                e.destinations
                    .iter_mut()
                    .find(|d| d.dest.key() == dest.key())
            })
            .ok_or(libc::ENOENT)?;
        found.dest = *dest;
        Ok(())
    }

    /// DEL_DEST: `ip_vs_genl_set_cmd` (no family-mix check for a delete),
    /// then `ip_vs_del_dest`: ENOENT when absent.
    fn del_dest(&mut self, key: &ServiceKey, dest: &DestKey) -> Result<(), i32> {
        let at = self.existing(key)?;
        self.check_dest_family_valid(Family::of(&dest.addr))?;
        let entry = self.services.get_mut(at).ok_or(libc::ESRCH)?;
        let pos = entry
            .destinations
            .iter()
            .position(|d| d.dest.key() == *dest)
            .ok_or(libc::ENOENT)?;
        entry.destinations.remove(pos);
        Ok(())
    }

    fn check_dest_family_valid(&self, family: Family) -> Result<(), i32> {
        if family == Family::Ipv6 && !self.ipv6 {
            return Err(libc::EAFNOSUPPORT);
        }
        Ok(())
    }

    /// `ip_vs_genl_set_cmd`: a destination family the kernel does not
    /// support is EAFNOSUPPORT; one that differs from the service's is
    /// allowed only for tunnel forwarding (any tunnel type), else EINVAL —
    /// not EAFNOSUPPORT.
    fn check_dest_family(
        &self,
        service: Family,
        dest: Family,
        forward: Forward,
    ) -> Result<(), i32> {
        self.check_dest_family_valid(dest)?;
        if dest != service && !matches!(forward, Forward::Tunnel(_)) {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// `ip_vs_set_timeout`: each value must fit `INT_MAX / HZ` seconds
    /// (EINVAL, nothing changed); 0 leaves that timeout as it is.
    fn set_timeouts(&mut self, t: &Timeouts) -> Result<(), i32> {
        let max = i32::MAX.unsigned_abs() / self.hz;
        if t.tcp > max || t.tcp_fin > max || t.udp > max {
            return Err(libc::EINVAL);
        }
        if t.tcp != 0 {
            self.timeouts.tcp = t.tcp;
        }
        if t.tcp_fin != 0 {
            self.timeouts.tcp_fin = t.tcp_fin;
        }
        if t.udp != 0 {
            self.timeouts.udp = t.udp;
        }
        Ok(())
    }

    /// Counts a query and fires the first query fault that matches.
    fn query(&mut self, query: Query) -> Result<(), KernelError> {
        self.queries += 1;
        match fire(&mut self.query_faults, &query) {
            Some(errno) => Err(query_error(&query, errno)),
            None => Ok(()),
        }
    }
}

impl Default for MemoryKernel {
    fn default() -> Self {
        MemoryKernel::new()
    }
}

impl fmt::Debug for MemoryKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKernel")
            .field("services", &self.services)
            .field("timeouts", &self.timeouts)
            .field("schedulers", &self.schedulers)
            .field("engines", &self.engines)
            .field("conn_tab_size", &self.conn_tab_size)
            .field("hz", &self.hz)
            .field("ipv6", &self.ipv6)
            .field("change_faults", &self.change_faults.len())
            .field("query_faults", &self.query_faults.len())
            .field("applied", &self.applied.len())
            .field("attempted", &self.attempted)
            .finish()
    }
}

impl Kernel for MemoryKernel {
    fn services(&mut self) -> Result<Vec<ServiceEntry>, KernelError> {
        self.query(Query::Services)?;
        Ok(self.services.clone())
    }

    /// GET_SERVICE finds the service the way `ip_vs_genl_parse_service`
    /// does (see [`MemoryKernel::kernel_key`]); the kernel's ESRCH for a
    /// missing one is `None` here.
    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, KernelError> {
        self.query(Query::Service(*key))?;
        let key = self
            .kernel_key(key)
            .map_err(|errno| query_error(&Query::Service(*key), errno))?;
        Ok(self
            .position(&key)
            .and_then(|at| self.services.get(at).cloned()))
    }

    /// Each change is checked and applied on its own, all or nothing, and a
    /// failure does not stop the ones after it (the kernel answers every
    /// message of a batch).
    fn apply_batch(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        self.batches += 1;
        changes
            .iter()
            .map(|change| {
                self.attempted += 1;
                let outcome = match fire(&mut self.change_faults, change) {
                    Some(errno) => Err(errno),
                    None => self.execute(change),
                };
                match outcome {
                    Ok(()) => {
                        self.applied.push(change.clone());
                        Ok(())
                    }
                    Err(errno) => Err(KernelError::rejected(change, errno)),
                }
            })
            .collect()
    }

    fn info(&mut self) -> Result<Info, KernelError> {
        self.query(Query::Info)?;
        Ok(Info {
            version: Self::VERSION,
            conn_tab_size: self.conn_tab_size,
        })
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        self.query(Query::Timeouts)?;
        Ok(self.timeouts)
    }
}

/// A failed read, as the netlink kernel reports one.
fn query_error(query: &Query, errno: i32) -> KernelError {
    KernelError::Query {
        what: query.to_string(),
        source: std::io::Error::from_raw_os_error(errno),
    }
}

fn to_strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

fn unspecified(family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// `ip_vs_zero_service`: traffic counters and rates of the service and its
/// destinations; connection counts describe live connections and stay.
fn zero_service(entry: &mut ServiceEntry) {
    entry.stats = Stats::default();
    for d in &mut entry.destinations {
        d.stats = Stats::default();
    }
}

/// The SERVICE attribute policy (`ip_vs_svc_policy`), which
/// `ip_vs_genl_parse_service` applies before looking the service up: a
/// PE_NAME longer than IP_VS_PENAME_MAXLEN fails the parse with EINVAL. (The
/// model already keeps scheduler names within their limit.)
fn check_attribute_policy(svc: &VirtualService) -> Result<(), i32> {
    match &svc.pe_name {
        Some(name) if name.len() > MemoryKernel::PE_NAME_MAX_LEN => Err(libc::EINVAL),
        _ => Ok(()),
    }
}

/// `ip_vs_add_dest` and `ip_vs_edit_dest`, in their order: the weight is a
/// signed int (above `i32::MAX` it is negative: ERANGE), the lower threshold
/// may not exceed the upper one even when the upper is 0 (ERANGE), the
/// upper one may not exceed `INT_MAX` (EINVAL; checked in the VM on
/// 6.1.0-57, tests/kernel/limits.rs), and GUE needs a tunnel port (EINVAL).
fn check_dest_values(dest: &Destination) -> Result<(), i32> {
    if i32::try_from(dest.weight).is_err() {
        return Err(libc::ERANGE);
    }
    if dest.lower_threshold > dest.upper_threshold {
        return Err(libc::ERANGE);
    }
    if dest.upper_threshold > crate::model::rules::MAX_THRESHOLD {
        return Err(libc::EINVAL);
    }
    if let Forward::Tunnel(t) = dest.forward {
        if t.kind == TunnelType::Gue && t.port == 0 {
            return Err(libc::EINVAL);
        }
    }
    Ok(())
}

/// `ip_vs_new_dest`, for a destination not yet in the service: EINVAL for
/// an address the kernel refuses whatever the host's addresses
/// ([`crate::model::rules::refused_destination`]).
fn check_dest_address(addr: &IpAddr) -> Result<(), i32> {
    match crate::model::rules::refused_destination(addr) {
        Some(_) => Err(libc::EINVAL),
        None => Ok(()),
    }
}

/// The four bytes the kernel keeps in `svc->netmask` for what the codec
/// sends: `ip_vs_genl_parse_service` reads the attribute raw
/// (`nla_get_be32`), an IPv4 mask being in network order and an IPv6 prefix
/// length a native `u32`.
fn netmask_raw(netmask: Netmask) -> [u8; 4] {
    match netmask {
        Netmask::V4(mask) => mask.octets(),
        Netmask::V6(prefix) => u32::from(prefix).to_ne_bytes(),
    }
}

/// Those bytes as a listing decodes them: by the service's family.
fn netmask_reported(family: Family, raw: [u8; 4]) -> Option<Netmask> {
    match family {
        Family::Ipv4 => Some(Netmask::V4(Ipv4Addr::from(raw))),
        Family::Ipv6 => u8::try_from(u32::from_ne_bytes(raw)).ok().map(Netmask::V6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::Reason;
    use crate::model::{Scheduler, ServiceFlags, Tunnel, TunnelChecksum};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn tcp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr: ip(addr),
            port,
        }
    }

    fn fwm(family: Family, mark: u32) -> ServiceKey {
        ServiceKey::Fwmark { family, mark }
    }

    fn sched(name: &str) -> Scheduler {
        Scheduler::new(name).unwrap_or_default()
    }

    fn svc(key: ServiceKey) -> VirtualService {
        VirtualService::new(key)
    }

    fn svc_with(key: ServiceKey, f: impl FnOnce(&mut VirtualService)) -> VirtualService {
        let mut s = svc(key);
        f(&mut s);
        s
    }

    fn dest(addr: &str, port: u16) -> Destination {
        Destination::new(ip(addr), port)
    }

    fn dest_with(addr: &str, port: u16, f: impl FnOnce(&mut Destination)) -> Destination {
        let mut d = dest(addr, port);
        f(&mut d);
        d
    }

    fn tunnel(kind: TunnelType, port: u16) -> Forward {
        Forward::Tunnel(Tunnel {
            kind,
            port,
            checksum: TunnelChecksum::None,
        })
    }

    fn persistent(timeout: u32, netmask: Netmask) -> Option<Persistence> {
        Some(Persistence { timeout, netmask })
    }

    const VIP: &str = "10.0.0.1";
    const VIP6: &str = "2001:db8::1";

    fn web() -> ServiceKey {
        tcp(VIP, 80)
    }

    fn web6() -> ServiceKey {
        tcp(VIP6, 80)
    }

    /// The errno a change got, or 0 for success.
    fn errno_of(result: &Result<(), KernelError>) -> i32 {
        match result {
            Ok(()) => 0,
            Err(e) => e.reason().map_or(-1, |r| r.errno()),
        }
    }

    struct Case {
        name: &'static str,
        setup: Vec<Change>,
        change: Change,
        /// 0 for success.
        errno: i32,
    }

    fn case(name: &'static str, setup: Vec<Change>, change: Change, errno: i32) -> Case {
        Case {
            name,
            setup,
            change,
            errno,
        }
    }

    fn run(kernel: &mut MemoryKernel, case: &Case) -> Vec<String> {
        let mut failures = Vec::new();
        for (i, r) in kernel.apply_batch(&case.setup).iter().enumerate() {
            if r.is_err() {
                failures.push(format!("{}: setup change {i} failed: {r:?}", case.name));
            }
        }
        let before = kernel.entries().to_vec();
        let result = kernel.apply(&case.change);
        let got = errno_of(&result);
        if got != case.errno {
            failures.push(format!(
                "{}: expected errno {}, got {got} ({result:?})",
                case.name, case.errno
            ));
        }
        if got != 0 && kernel.entries() != before.as_slice() {
            failures.push(format!(
                "{}: a refused change modified the table",
                case.name
            ));
        }
        failures
    }

    fn run_all(cases: Vec<Case>, make: impl Fn() -> MemoryKernel) {
        let failures: Vec<String> = cases.iter().flat_map(|c| run(&mut make(), c)).collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn service_rules() {
        use Change::*;
        let add_web = || AddService(svc(web()));
        run_all(
            vec![
                case("add", vec![], add_web(), 0),
                case("duplicate", vec![add_web()], add_web(), libc::EEXIST),
                case(
                    "duplicate wins over unknown scheduler",
                    vec![add_web()],
                    AddService(svc_with(web(), |s| s.scheduler = sched("twos"))),
                    libc::EEXIST,
                ),
                case(
                    "same address, other port",
                    vec![add_web()],
                    AddService(svc(tcp(VIP, 81))),
                    0,
                ),
                case(
                    "same address and port, other protocol",
                    vec![add_web()],
                    AddService(svc(ServiceKey::Inet {
                        protocol: Protocol::Udp,
                        addr: ip(VIP),
                        port: 80,
                    })),
                    0,
                ),
                case(
                    "port 0 (kernel has no persistence rule)",
                    vec![],
                    AddService(svc(tcp(VIP, 0))),
                    0,
                ),
                case(
                    "sctp",
                    vec![],
                    AddService(svc(ServiceKey::Inet {
                        protocol: Protocol::Sctp,
                        addr: ip(VIP),
                        port: 80,
                    })),
                    0,
                ),
                case("fwmark", vec![], AddService(svc(fwm(Family::Ipv4, 7))), 0),
                case(
                    "same fwmark, other family",
                    vec![AddService(svc(fwm(Family::Ipv4, 7)))],
                    AddService(svc(fwm(Family::Ipv6, 7))),
                    0,
                ),
                case(
                    "duplicate fwmark",
                    vec![AddService(svc(fwm(Family::Ipv4, 7)))],
                    AddService(svc(fwm(Family::Ipv4, 7))),
                    libc::EEXIST,
                ),
                case(
                    "fwmark 0 is TCP 0.0.0.0:0",
                    vec![AddService(svc(tcp("0.0.0.0", 0)))],
                    AddService(svc(fwm(Family::Ipv4, 0))),
                    libc::EEXIST,
                ),
                case(
                    "unknown scheduler",
                    vec![],
                    AddService(svc_with(web(), |s| s.scheduler = sched("twos"))),
                    libc::ENOENT,
                ),
                case(
                    "scheduler none",
                    vec![],
                    AddService(svc_with(web(), |s| s.scheduler = sched("none"))),
                    0,
                ),
                case(
                    "scheduler mh",
                    vec![],
                    AddService(svc_with(web(), |s| s.scheduler = sched("mh"))),
                    0,
                ),
                case(
                    "engine sip",
                    vec![],
                    AddService(svc_with(web(), |s| s.pe_name = Some("sip".into()))),
                    0,
                ),
                case(
                    "empty engine is none",
                    vec![],
                    AddService(svc_with(web(), |s| s.pe_name = Some(String::new()))),
                    0,
                ),
                case(
                    "unknown engine",
                    vec![],
                    AddService(svc_with(web(), |s| s.pe_name = Some("rtsp".into()))),
                    libc::ENOENT,
                ),
                case(
                    "scheduler checked before engine",
                    vec![],
                    AddService(svc_with(web(), |s| {
                        s.scheduler = sched("twos");
                        s.pe_name = Some("rtsp".into());
                    })),
                    libc::ENOENT,
                ),
                case(
                    "engine name over 16 chars fails the attribute policy",
                    vec![add_web()],
                    AddService(svc_with(web(), |s| s.pe_name = Some("a".repeat(17)))),
                    libc::EINVAL,
                ),
                case(
                    "engine name of 16 chars passes the policy",
                    vec![],
                    AddService(svc_with(web(), |s| s.pe_name = Some("a".repeat(16)))),
                    libc::ENOENT,
                ),
                case(
                    "ipv6 prefix 0",
                    vec![],
                    AddService(svc_with(web6(), |s| {
                        s.persistence = persistent(300, Netmask::V6(0))
                    })),
                    libc::EINVAL,
                ),
                case(
                    "ipv6 prefix 129",
                    vec![],
                    AddService(svc_with(web6(), |s| {
                        s.persistence = persistent(300, Netmask::V6(129))
                    })),
                    libc::EINVAL,
                ),
                case(
                    "ipv6 prefix 64",
                    vec![],
                    AddService(svc_with(web6(), |s| {
                        s.persistence = persistent(300, Netmask::V6(64))
                    })),
                    0,
                ),
                case(
                    "ipv6 with an ipv4 mask",
                    vec![],
                    AddService(svc_with(web6(), |s| {
                        s.persistence =
                            persistent(300, Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))
                    })),
                    libc::EINVAL,
                ),
                case(
                    "unknown scheduler before ipv6 prefix",
                    vec![],
                    AddService(svc_with(web6(), |s| {
                        s.scheduler = sched("twos");
                        s.persistence = persistent(300, Netmask::V6(0));
                    })),
                    libc::ENOENT,
                ),
                case(
                    "ipv4 mask is not validated",
                    vec![],
                    AddService(svc_with(web(), |s| {
                        s.persistence = persistent(300, Netmask::V4(Ipv4Addr::new(255, 0, 255, 0)))
                    })),
                    0,
                ),
                case(
                    "edit",
                    vec![add_web()],
                    EditService(svc_with(web(), |s| s.scheduler = sched("rr"))),
                    0,
                ),
                case("edit missing", vec![], EditService(svc(web())), libc::ESRCH),
                case(
                    "edit missing wins over unknown scheduler",
                    vec![],
                    EditService(svc_with(web(), |s| s.scheduler = sched("twos"))),
                    libc::ESRCH,
                ),
                case(
                    "edit unknown scheduler",
                    vec![add_web()],
                    EditService(svc_with(web(), |s| s.scheduler = sched("twos"))),
                    libc::ENOENT,
                ),
                case(
                    "edit unknown engine",
                    vec![add_web()],
                    EditService(svc_with(web(), |s| s.pe_name = Some("x".into()))),
                    libc::ENOENT,
                ),
                case(
                    "edit ipv6 prefix 0",
                    vec![AddService(svc(web6()))],
                    EditService(svc_with(web6(), |s| {
                        s.persistence = persistent(60, Netmask::V6(0))
                    })),
                    libc::EINVAL,
                ),
                case("delete", vec![add_web()], DelService(web()), 0),
                case("delete missing", vec![], DelService(web()), libc::ESRCH),
                case(
                    "delete twice",
                    vec![add_web(), DelService(web())],
                    DelService(web()),
                    libc::ESRCH,
                ),
                case("zero", vec![add_web()], Zero(Some(web())), 0),
                case("zero missing", vec![], Zero(Some(web())), libc::ESRCH),
                case("zero all, empty table", vec![], Zero(None), 0),
                case("flush, empty table", vec![], Flush, 0),
                case(
                    "flush",
                    vec![add_web(), AddDest(web(), dest("10.1.0.1", 80))],
                    Flush,
                    0,
                ),
            ],
            MemoryKernel::new,
        );
    }

    #[test]
    fn destination_rules() {
        use Change::*;
        let add_web = || AddService(svc(web()));
        let add_web6 = || AddService(svc(web6()));
        let rs = || dest("10.1.0.1", 8080);
        let rs6 = || Destination::new(ip(VIP6), 80);
        run_all(
            vec![
                case("add", vec![add_web()], AddDest(web(), rs()), 0),
                case(
                    "add to missing service",
                    vec![],
                    AddDest(web(), rs()),
                    libc::ESRCH,
                ),
                case(
                    "duplicate",
                    vec![add_web(), AddDest(web(), rs())],
                    AddDest(web(), rs()),
                    libc::EEXIST,
                ),
                case(
                    "duplicate with other settings",
                    vec![add_web(), AddDest(web(), rs())],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 8080, |d| d.forward = Forward::Route),
                    ),
                    libc::EEXIST,
                ),
                case(
                    "same address, other port",
                    vec![add_web(), AddDest(web(), rs())],
                    AddDest(web(), dest("10.1.0.1", 8081)),
                    0,
                ),
                case(
                    "edit",
                    vec![add_web(), AddDest(web(), rs())],
                    EditDest(web(), dest_with("10.1.0.1", 8080, |d| d.weight = 5)),
                    0,
                ),
                case(
                    "edit missing",
                    vec![add_web()],
                    EditDest(web(), rs()),
                    libc::ENOENT,
                ),
                case(
                    "edit in missing service",
                    vec![],
                    EditDest(web(), rs()),
                    libc::ESRCH,
                ),
                case(
                    "delete",
                    vec![add_web(), AddDest(web(), rs())],
                    DelDest(web(), rs().key()),
                    0,
                ),
                case(
                    "delete missing",
                    vec![add_web()],
                    DelDest(web(), rs().key()),
                    libc::ENOENT,
                ),
                case(
                    "delete in missing service",
                    vec![],
                    DelDest(web(), rs().key()),
                    libc::ESRCH,
                ),
                case(
                    "weight 0",
                    vec![add_web()],
                    AddDest(web(), dest_with("10.1.0.1", 80, |d| d.weight = 0)),
                    0,
                ),
                case(
                    "weight i32::MAX",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.weight = i32::MAX as u32),
                    ),
                    0,
                ),
                case(
                    "weight above i32::MAX",
                    vec![add_web()],
                    AddDest(web(), dest_with("10.1.0.1", 80, |d| d.weight = 1 << 31)),
                    libc::ERANGE,
                ),
                case(
                    "edit weight above i32::MAX",
                    vec![add_web(), AddDest(web(), rs())],
                    EditDest(web(), dest_with("10.1.0.1", 8080, |d| d.weight = u32::MAX)),
                    libc::ERANGE,
                ),
                case(
                    "weight checked before existence",
                    vec![add_web(), AddDest(web(), rs())],
                    AddDest(web(), dest_with("10.1.0.1", 8080, |d| d.weight = u32::MAX)),
                    libc::ERANGE,
                ),
                case(
                    "edit weight checked before existence",
                    vec![add_web()],
                    EditDest(web(), dest_with("10.1.0.1", 8080, |d| d.weight = u32::MAX)),
                    libc::ERANGE,
                ),
                case(
                    "lower above upper",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| {
                            d.upper_threshold = 10;
                            d.lower_threshold = 11;
                        }),
                    ),
                    libc::ERANGE,
                ),
                case(
                    "lower with no upper",
                    vec![add_web()],
                    AddDest(web(), dest_with("10.1.0.1", 80, |d| d.lower_threshold = 1)),
                    libc::ERANGE,
                ),
                case(
                    "lower equal to upper",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| {
                            d.upper_threshold = 10;
                            d.lower_threshold = 10;
                        }),
                    ),
                    0,
                ),
                case(
                    "upper above i32::MAX refused by 6.1.0-57",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.upper_threshold = u32::MAX),
                    ),
                    libc::EINVAL,
                ),
                case(
                    "lower above upper before upper above i32::MAX",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| {
                            d.upper_threshold = 1 << 31;
                            d.lower_threshold = u32::MAX;
                        }),
                    ),
                    libc::ERANGE,
                ),
                case(
                    "edit lower above upper",
                    vec![add_web(), AddDest(web(), rs())],
                    EditDest(
                        web(),
                        dest_with("10.1.0.1", 8080, |d| d.lower_threshold = 3),
                    ),
                    libc::ERANGE,
                ),
                case(
                    "gue without port",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.forward = tunnel(TunnelType::Gue, 0)),
                    ),
                    libc::EINVAL,
                ),
                case(
                    "gue with port",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| {
                            d.forward = tunnel(TunnelType::Gue, 6080)
                        }),
                    ),
                    0,
                ),
                case(
                    "edit to gue without port",
                    vec![add_web(), AddDest(web(), rs())],
                    EditDest(
                        web(),
                        dest_with("10.1.0.1", 8080, |d| d.forward = tunnel(TunnelType::Gue, 0)),
                    ),
                    libc::EINVAL,
                ),
                case(
                    "threshold checked before gue port",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| {
                            d.lower_threshold = 1;
                            d.forward = tunnel(TunnelType::Gue, 0);
                        }),
                    ),
                    libc::ERANGE,
                ),
                case(
                    "ipip without port",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.forward = tunnel(TunnelType::Ipip, 0)),
                    ),
                    0,
                ),
                case(
                    "gre without port",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.forward = tunnel(TunnelType::Gre, 0)),
                    ),
                    0,
                ),
                case(
                    "mixed family, masq",
                    vec![add_web()],
                    AddDest(web(), rs6()),
                    libc::EINVAL,
                ),
                case(
                    "mixed family, route",
                    vec![add_web()],
                    AddDest(
                        web(),
                        Destination {
                            forward: Forward::Route,
                            ..rs6()
                        },
                    ),
                    libc::EINVAL,
                ),
                case(
                    "mixed family, ipip",
                    vec![add_web()],
                    AddDest(
                        web(),
                        Destination {
                            forward: tunnel(TunnelType::Ipip, 0),
                            ..rs6()
                        },
                    ),
                    0,
                ),
                case(
                    "mixed family, gre",
                    vec![add_web()],
                    AddDest(
                        web(),
                        Destination {
                            forward: tunnel(TunnelType::Gre, 0),
                            ..rs6()
                        },
                    ),
                    0,
                ),
                case(
                    "mixed family, gue",
                    vec![add_web()],
                    AddDest(
                        web(),
                        Destination {
                            forward: tunnel(TunnelType::Gue, 6080),
                            ..rs6()
                        },
                    ),
                    0,
                ),
                case(
                    "ipv4 dest in ipv6 service, tunnel",
                    vec![add_web6()],
                    AddDest(
                        web6(),
                        dest_with("10.1.0.1", 80, |d| d.forward = tunnel(TunnelType::Ipip, 0)),
                    ),
                    0,
                ),
                case(
                    "mixed family checked before weight",
                    vec![add_web()],
                    AddDest(
                        web(),
                        Destination {
                            weight: u32::MAX,
                            ..rs6()
                        },
                    ),
                    libc::EINVAL,
                ),
                case(
                    "mixed family checked before existence",
                    vec![
                        add_web(),
                        AddDest(
                            web(),
                            Destination {
                                forward: tunnel(TunnelType::Ipip, 0),
                                ..rs6()
                            },
                        ),
                    ],
                    AddDest(web(), rs6()),
                    libc::EINVAL,
                ),
                case(
                    "edit mixed family away from tunnel",
                    vec![
                        add_web(),
                        AddDest(
                            web(),
                            Destination {
                                forward: tunnel(TunnelType::Ipip, 0),
                                ..rs6()
                            },
                        ),
                    ],
                    EditDest(web(), rs6()),
                    libc::EINVAL,
                ),
                case(
                    "delete mixed family",
                    vec![
                        add_web(),
                        AddDest(
                            web(),
                            Destination {
                                forward: tunnel(TunnelType::Ipip, 0),
                                ..rs6()
                            },
                        ),
                    ],
                    DelDest(web(), rs6().key()),
                    0,
                ),
                case(
                    "local forwarding",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("127.0.0.1", 80, |d| d.forward = Forward::Local),
                    ),
                    0,
                ),
                case(
                    "bypass forwarding",
                    vec![add_web()],
                    AddDest(
                        web(),
                        dest_with("10.1.0.1", 80, |d| d.forward = Forward::Bypass),
                    ),
                    0,
                ),
                case(
                    "address 0.0.0.0",
                    vec![add_web()],
                    AddDest(web(), dest("0.0.0.0", 80)),
                    libc::EINVAL,
                ),
                case(
                    "address 0.1.2.3",
                    vec![add_web()],
                    AddDest(web(), dest("0.1.2.3", 80)),
                    libc::EINVAL,
                ),
                case(
                    "address broadcast",
                    vec![add_web()],
                    AddDest(web(), dest("255.255.255.255", 80)),
                    libc::EINVAL,
                ),
                case(
                    "address multicast",
                    vec![add_web()],
                    AddDest(web(), dest("239.1.1.1", 80)),
                    libc::EINVAL,
                ),
                case(
                    "address loopback",
                    vec![add_web()],
                    AddDest(web(), dest("127.0.0.1", 80)),
                    0,
                ),
                case(
                    "address ipv6 unspecified",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("::"), 80)),
                    libc::EINVAL,
                ),
                case(
                    "address ipv6 multicast",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("ff02::1"), 80)),
                    libc::EINVAL,
                ),
                case(
                    "address ipv6 link-local",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("fe80::1"), 80)),
                    libc::EINVAL,
                ),
                case(
                    "address ipv6 v4-mapped",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("::ffff:10.1.0.1"), 80)),
                    libc::EINVAL,
                ),
                case(
                    "address ipv6 loopback",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("::1"), 80)),
                    0,
                ),
                case(
                    "address ipv6 ula",
                    vec![add_web6()],
                    AddDest(web6(), Destination::new(ip("fd00::5"), 80)),
                    0,
                ),
                case(
                    "existence checked before address",
                    vec![add_web()],
                    EditDest(web(), dest("0.0.0.0", 80)),
                    libc::ENOENT,
                ),
                case(
                    "dest in fwmark 0 service is the TCP 0.0.0.0:0 service",
                    vec![AddService(svc(tcp("0.0.0.0", 0)))],
                    AddDest(fwm(Family::Ipv4, 0), rs()),
                    0,
                ),
            ],
            MemoryKernel::new,
        );
    }

    #[test]
    fn timeout_rules() {
        use Change::*;
        let t = |tcp, tcp_fin, udp| SetTimeouts(Timeouts { tcp, tcp_fin, udp });
        let max250 = i32::MAX as u32 / 250;
        run_all(
            vec![
                case("all zero", vec![], t(0, 0, 0), 0),
                case("some", vec![], t(60, 0, 0), 0),
                case("largest at HZ 250", vec![], t(max250, max250, max250), 0),
                case("tcp too large", vec![], t(max250 + 1, 0, 0), libc::EINVAL),
                case(
                    "tcpfin too large",
                    vec![],
                    t(0, max250 + 1, 0),
                    libc::EINVAL,
                ),
                case("udp too large", vec![], t(0, 0, u32::MAX), libc::EINVAL),
            ],
            MemoryKernel::new,
        );
        run_all(
            vec![case(
                "largest at HZ 250 is too large at HZ 1000",
                vec![],
                t(max250, 0, 0),
                libc::EINVAL,
            )],
            || MemoryKernel::new().with_hz(1000),
        );
    }

    #[test]
    fn ipv6_disabled_is_eafnosupport() {
        use Change::*;
        let rs6 = Destination {
            forward: tunnel(TunnelType::Ipip, 0),
            ..Destination::new(ip("2001:db8::5"), 80)
        };
        run_all(
            vec![
                case(
                    "add ipv6 service",
                    vec![],
                    AddService(svc(web6())),
                    libc::EAFNOSUPPORT,
                ),
                case(
                    "add ipv6 fwmark",
                    vec![],
                    AddService(svc(fwm(Family::Ipv6, 1))),
                    libc::EAFNOSUPPORT,
                ),
                case(
                    "delete ipv6 service",
                    vec![],
                    DelService(web6()),
                    libc::EAFNOSUPPORT,
                ),
                case(
                    "ipv6 tunnel dest",
                    vec![AddService(svc(web()))],
                    AddDest(web(), rs6),
                    libc::EAFNOSUPPORT,
                ),
                case(
                    "ipv6 dest, missing service",
                    vec![],
                    AddDest(web(), rs6),
                    libc::ESRCH,
                ),
                case(
                    "delete ipv6 dest",
                    vec![AddService(svc(web()))],
                    DelDest(web(), rs6.key()),
                    libc::EAFNOSUPPORT,
                ),
                case("ipv4 still works", vec![], AddService(svc(web())), 0),
            ],
            || MemoryKernel::new().with_ipv6(false),
        );
    }

    #[test]
    fn schedulers_and_engines_are_configurable() {
        let mut k = MemoryKernel::new()
            .with_schedulers(["rr", "twos"])
            .with_engines(Vec::<String>::new());
        let with = |name: &str| svc_with(web(), |s| s.scheduler = sched(name));
        assert_eq!(
            errno_of(&k.apply(&Change::AddService(with("wlc")))),
            libc::ENOENT
        );
        assert_eq!(errno_of(&k.apply(&Change::AddService(with("twos")))), 0);
        let sip = svc_with(tcp(VIP, 5060), |s| {
            s.scheduler = sched("rr");
            s.pe_name = Some("sip".into());
        });
        assert_eq!(errno_of(&k.apply(&Change::AddService(sip))), libc::ENOENT);
        assert!(!MemoryKernel::DEFAULT_SCHEDULERS.contains(&"twos"));
    }

    #[test]
    fn errors_are_the_kernels() {
        let mut k = MemoryKernel::new();
        let change = Change::DelService(web());
        let result = k.apply(&change);
        let Err(err) = result else {
            panic!("deleting a missing service succeeded");
        };
        assert_eq!(err.reason(), Some(Reason::NoSuchService));
        assert_eq!(
            crate::errors::chain(&err),
            "failed to delete service TCP 10.0.0.1:80: no such service (ESRCH)"
        );
        let Err(err) = k.apply(&Change::AddDest(
            web(),
            dest_with("10.1.0.1", 80, |d| d.weight = u32::MAX),
        )) else {
            panic!("expected a refusal");
        };
        assert_eq!(err.reason(), Some(Reason::NoSuchService));
        k.apply(&Change::AddService(svc(web()))).unwrap_or_default();
        let Err(err) = k.apply(&Change::EditDest(web(), dest("10.1.0.1", 80))) else {
            panic!("expected a refusal");
        };
        assert_eq!(err.reason(), Some(Reason::NoSuchDest));
        let mixed = Change::AddDest(web(), Destination::new(ip("2001:db8::5"), 80));
        let Err(err) = k.apply(&mixed) else {
            panic!("expected a refusal");
        };
        assert_eq!(err.reason(), Some(Reason::Invalid));
    }

    #[test]
    fn stored_as_the_kernel_reports() {
        let mut k = MemoryKernel::new();
        let plain = svc_with(web(), |s| {
            s.scheduler = sched("none");
            s.flags = ServiceFlags::default().with(ServiceFlags::ONE_PACKET);
            s.pe_name = Some(String::new());
        });
        let sticky = svc_with(tcp(VIP, 443), |s| {
            s.persistence = persistent(1800, Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)));
            s.pe_name = Some("sip".into());
        });
        let fwmark0 = svc(fwm(Family::Ipv6, 0));
        for c in [&plain, &sticky, &fwmark0] {
            assert_eq!(errno_of(&k.apply(&Change::AddService(c.clone()))), 0);
        }
        let listed = k.services().unwrap_or_default();
        let got: Vec<&VirtualService> = listed.iter().map(|e| &e.service).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].scheduler.as_str(), "none");
        assert_eq!(got[0].persistence, None);
        assert_eq!(got[0].pe_name, None, "an empty engine name binds none");
        assert!(got[0].flags.contains(ServiceFlags::ONE_PACKET));
        assert_eq!(got[1], &sticky);
        assert_eq!(
            got[2].key,
            ServiceKey::Inet {
                protocol: Protocol::Tcp,
                addr: ip("::"),
                port: 0
            },
            "fwmark 0 is reported as TCP [::]:0"
        );
        // Found again by either key.
        assert!(matches!(k.service(&fwm(Family::Ipv6, 0)), Ok(Some(_))));
        assert!(matches!(k.service(&got[2].key), Ok(Some(_))));
        assert!(matches!(k.service(&tcp(VIP, 8443)), Ok(None)));
    }

    #[test]
    fn persistence_timeout_wraps_in_jiffies() {
        let mut k = MemoryKernel::new().with_hz(1000);
        let huge = u32::MAX / 1000 + 10;
        let s = svc_with(web(), |s| {
            s.persistence = persistent(huge, Netmask::host(Family::Ipv4))
        });
        assert_eq!(errno_of(&k.apply(&Change::AddService(s))), 0);
        let p = k.entries()[0].service.persistence;
        assert_eq!(p.map(|p| p.timeout), Some(huge.wrapping_mul(1000) / 1000));
        assert_ne!(p.map(|p| p.timeout), Some(huge));
    }

    #[test]
    fn edit_replaces_settings_and_keeps_counters() {
        let mut k = MemoryKernel::new();
        let rs = dest("10.1.0.1", 80);
        let first = svc_with(web(), |s| {
            s.persistence = persistent(300, Netmask::host(Family::Ipv4));
            s.pe_name = Some("sip".into());
            s.flags = ServiceFlags::default().with(ServiceFlags::SCHED1);
        });
        k.apply_batch(&[Change::AddService(first), Change::AddDest(web(), rs)]);
        let stats = Stats {
            conns: 7,
            inbytes: 1000,
            ..Stats::default()
        };
        assert!(k.set_service_stats(&web(), stats));
        assert!(k.set_dest_conns(&web(), &rs.key(), 3, 4, 5));
        let second = svc_with(web(), |s| s.scheduler = sched("rr"));
        assert_eq!(errno_of(&k.apply(&Change::EditService(second.clone()))), 0);
        let edited = dest_with("10.1.0.1", 80, |d| {
            d.weight = 9;
            d.forward = Forward::Route;
            d.upper_threshold = 100;
        });
        assert_eq!(errno_of(&k.apply(&Change::EditDest(web(), edited))), 0);
        let entry = &k.entries()[0];
        assert_eq!(
            entry.service, second,
            "persistence, engine and flags cleared"
        );
        assert_eq!(entry.stats, stats);
        assert_eq!(entry.destinations[0].dest, edited);
        assert_eq!(entry.destinations[0].active_conns, 3);
        assert_eq!(entry.destinations[0].inactive_conns, 4);
        assert_eq!(entry.destinations[0].persistent_conns, 5);
    }

    #[test]
    fn route_and_tunnel_ports_are_kept() {
        // The kernel stores the port it is given; ipvsadm is what copies the
        // service port for -g and -i.
        let mut k = MemoryKernel::new();
        let dr = dest_with("10.1.0.1", 8080, |d| d.forward = Forward::Route);
        let tun = dest_with("10.1.0.2", 9090, |d| d.forward = tunnel(TunnelType::Gre, 0));
        let results = k.apply_batch(&[
            Change::AddService(svc(web())),
            Change::AddDest(web(), dr),
            Change::AddDest(web(), tun),
        ]);
        assert!(results.iter().all(Result::is_ok));
        let ports: Vec<u16> = k.entries()[0]
            .destinations
            .iter()
            .map(|d| d.dest.port)
            .collect();
        assert_eq!(ports, [9090, 8080]);
    }

    #[test]
    fn destinations_list_newest_first() {
        let mut k = MemoryKernel::new();
        let a = dest("10.1.0.1", 80);
        let b = dest("10.1.0.2", 80);
        let c = dest("10.1.0.3", 80);
        k.apply_batch(&[
            Change::AddService(svc(web())),
            Change::AddDest(web(), a),
            Change::AddDest(web(), b),
            Change::AddDest(web(), c),
            Change::EditDest(web(), Destination { weight: 3, ..b }),
            Change::DelDest(web(), a.key()),
            Change::AddDest(web(), a),
        ]);
        let order: Vec<IpAddr> = k.entries()[0]
            .destinations
            .iter()
            .map(|d| d.dest.addr)
            .collect();
        assert_eq!(order, [a.addr, c.addr, b.addr]);
    }

    #[test]
    fn services_list_in_insertion_order() {
        let mut k = MemoryKernel::new();
        let keys = [fwm(Family::Ipv4, 3), tcp(VIP, 443), web(), tcp(VIP, 22)];
        let adds: Vec<Change> = keys
            .iter()
            .map(|key| Change::AddService(svc(*key)))
            .collect();
        k.apply_batch(&adds);
        k.apply(&Change::DelService(web())).unwrap_or_default();
        k.apply(&Change::AddService(svc(web()))).unwrap_or_default();
        let listed: Vec<ServiceKey> = k.entries().iter().map(|e| e.service.key).collect();
        assert_eq!(listed, [keys[0], keys[1], keys[3], keys[2]]);
    }

    #[test]
    fn zero_resets_stats_not_connections() {
        let other = tcp(VIP, 443);
        let rs = dest("10.1.0.1", 80);
        let busy = Stats {
            conns: 1,
            inpkts: 2,
            outbps: 3,
            ..Stats::default()
        };
        let setup = |k: &mut MemoryKernel| {
            k.apply_batch(&[
                Change::AddService(svc(web())),
                Change::AddService(svc(other)),
                Change::AddDest(web(), rs),
                Change::AddDest(other, rs),
            ]);
            for key in [web(), other] {
                assert!(k.set_service_stats(&key, busy));
                assert!(k.set_dest_stats(&key, &rs.key(), busy));
                assert!(k.set_dest_conns(&key, &rs.key(), 4, 5, 6));
            }
        };

        let mut one = MemoryKernel::new();
        setup(&mut one);
        assert_eq!(errno_of(&one.apply(&Change::Zero(Some(web())))), 0);
        let e = one.entries();
        assert_eq!(
            (e[0].stats, e[0].destinations[0].stats),
            (Stats::default(), Stats::default())
        );
        assert_eq!(e[0].destinations[0].active_conns, 4);
        assert_eq!(
            (e[1].stats, e[1].destinations[0].stats),
            (busy, busy),
            "other service untouched"
        );

        let mut all = MemoryKernel::new();
        setup(&mut all);
        assert_eq!(errno_of(&all.apply(&Change::Zero(None))), 0);
        for e in all.entries() {
            assert_eq!(e.stats, Stats::default());
            assert_eq!(e.destinations[0].stats, Stats::default());
            assert_eq!(e.destinations[0].inactive_conns, 5);
        }
    }

    #[test]
    fn timeouts_default_and_zero_means_unchanged() {
        let mut k = MemoryKernel::new();
        assert_eq!(k.timeouts().ok(), Some(MemoryKernel::DEFAULT_TIMEOUTS));
        let set = Timeouts {
            tcp: 0,
            tcp_fin: 30,
            udp: 0,
        };
        assert_eq!(errno_of(&k.apply(&Change::SetTimeouts(set))), 0);
        assert_eq!(
            k.timeouts().ok(),
            Some(Timeouts {
                tcp: 900,
                tcp_fin: 30,
                udp: 300
            })
        );
        let refused = Timeouts {
            tcp: 10,
            tcp_fin: 10,
            udp: u32::MAX,
        };
        assert_eq!(
            errno_of(&k.apply(&Change::SetTimeouts(refused))),
            libc::EINVAL
        );
        assert_eq!(
            k.current_timeouts().tcp,
            900,
            "a refused --set changes nothing"
        );
    }

    #[test]
    fn info_reports_version_and_table_size() {
        let mut k = MemoryKernel::new();
        let info = k.info().ok();
        assert_eq!(info.map(|i| i.version_string()), Some("1.2.1".to_string()));
        assert_eq!(info.map(|i| i.conn_tab_size), Some(4096));
        let mut big = MemoryKernel::new().with_conn_tab_size(1 << 20);
        assert_eq!(big.info().ok().map(|i| i.conn_tab_size), Some(1 << 20));
    }

    #[test]
    fn batch_continues_after_a_failure() {
        use Change::*;
        let mut k = MemoryKernel::new();
        let rs = dest("10.1.0.1", 80);
        let batch = [
            AddService(svc(web())),
            AddService(svc(web())),
            AddDest(web(), rs),
            AddDest(tcp(VIP, 81), rs),
            AddDest(web(), rs),
            EditDest(web(), Destination { weight: 2, ..rs }),
            DelService(tcp(VIP, 81)),
        ];
        let got: Vec<i32> = k.apply_batch(&batch).iter().map(errno_of).collect();
        assert_eq!(
            got,
            [
                0,
                libc::EEXIST,
                0,
                libc::ESRCH,
                libc::EEXIST,
                0,
                libc::ESRCH
            ]
        );
        assert_eq!(k.attempted(), batch.len());
        assert_eq!(k.batches(), 1);
        assert_eq!(
            k.applied(),
            [batch[0].clone(), batch[2].clone(), batch[5].clone()]
        );
        assert_eq!(k.entries()[0].destinations[0].dest.weight, 2);
    }

    #[test]
    fn delete_then_recreate_in_one_batch() {
        use Change::*;
        let mut k = MemoryKernel::new();
        let rs = dest("10.1.0.1", 80);
        let results = k.apply_batch(&[
            AddService(svc(web())),
            AddDest(web(), rs),
            DelService(web()),
            AddDest(web(), rs),
            AddService(svc_with(web(), |s| s.scheduler = sched("rr"))),
            AddDest(web(), rs),
            Flush,
            Zero(Some(web())),
        ]);
        let got: Vec<i32> = results.iter().map(errno_of).collect();
        assert_eq!(got, [0, 0, 0, libc::ESRCH, 0, 0, 0, libc::ESRCH]);
        assert!(k.entries().is_empty());
    }

    #[test]
    fn restore_validation_on_a_loaded_table() {
        // What `kernel restore` does: load the live table, try the batch on
        // the copy, send only if every change succeeds.
        let mut live = MemoryKernel::new();
        live.apply_batch(&[
            Change::AddService(svc(web())),
            Change::AddDest(web(), dest("10.1.0.1", 80)),
        ]);
        assert!(live.set_service_stats(
            &web(),
            Stats {
                conns: 42,
                ..Stats::default()
            }
        ));
        let snapshot = live.services().unwrap_or_default();
        let mut copy = MemoryKernel::from_entries(snapshot.clone());
        assert_eq!(copy.services().ok(), Some(snapshot.clone()));
        let batch = [
            Change::AddDest(web(), dest("10.1.0.2", 80)),
            Change::AddDest(web(), dest("10.1.0.1", 80)),
        ];
        let results = copy.apply_batch(&batch);
        assert_eq!(
            results.iter().map(errno_of).collect::<Vec<_>>(),
            [0, libc::EEXIST]
        );
        assert_eq!(
            live.entries(),
            snapshot.as_slice(),
            "the live table was not touched"
        );
    }

    #[test]
    fn from_entries_skips_duplicate_keys() {
        let entry = |sched_name: &str| ServiceEntry {
            service: svc_with(web(), |s| s.scheduler = sched(sched_name)),
            stats: Stats::default(),
            destinations: vec![DestEntry::new(dest("10.1.0.1", 80))],
        };
        let k = MemoryKernel::from_entries(vec![entry("rr"), entry("wrr")]);
        assert_eq!(k.entries().len(), 1);
        assert_eq!(k.entries()[0].service.scheduler.as_str(), "rr");
    }

    #[test]
    fn fail_next_fails_once_without_touching_the_table() {
        let mut k = MemoryKernel::new();
        k.fail_next(libc::ENOMEM);
        let add = Change::AddService(svc(web()));
        let first = k.apply(&add);
        assert_eq!(
            first.as_ref().err().and_then(KernelError::reason),
            Some(Reason::NoMemory)
        );
        assert!(k.entries().is_empty());
        assert_eq!(errno_of(&k.apply(&add)), 0);
        assert_eq!((k.attempted(), k.applied().len()), (2, 1));
    }

    #[test]
    fn fail_when_matches_and_counts_down() {
        use Change::*;
        let mut k = MemoryKernel::new();
        k.fail_when(|c| matches!(c, AddDest(..)), libc::EPERM, Some(2));
        let rs = |i: u8| dest(&format!("10.1.0.{i}"), 80);
        let got: Vec<i32> = k
            .apply_batch(&[
                AddService(svc(web())),
                AddDest(web(), rs(1)),
                AddDest(web(), rs(2)),
                AddDest(web(), rs(3)),
            ])
            .iter()
            .map(errno_of)
            .collect();
        assert_eq!(got, [0, libc::EPERM, libc::EPERM, 0]);
        assert_eq!(k.entries()[0].destinations.len(), 1);

        k.fail_when(|c| matches!(c, Flush), libc::EBUSY, None);
        for _ in 0..3 {
            assert_eq!(errno_of(&k.apply(&Flush)), libc::EBUSY);
        }
        k.fail_when(|_| true, libc::EIO, Some(0));
        assert_eq!(errno_of(&k.apply(&Zero(None))), 0, "times 0 never fires");
        k.clear_faults();
        assert_eq!(errno_of(&k.apply(&Flush)), 0);
        assert!(k.entries().is_empty());
    }

    #[test]
    fn queries_fail_on_demand() {
        let mut k = MemoryKernel::new();
        k.fail_query_when(|q| *q == Query::Services, libc::EINTR, Some(1));
        match k.services() {
            Err(KernelError::Query { what, source }) => {
                assert_eq!(what, "list services");
                assert_eq!(source.raw_os_error(), Some(libc::EINTR));
            }
            other => panic!("expected a query error, got {other:?}"),
        }
        assert!(k.services().is_ok(), "failed once only");
        k.fail_queries(libc::ENOBUFS, None);
        assert!(k.info().is_err());
        assert!(k.timeouts().is_err());
        assert!(k.service(&web()).is_err());
        assert_eq!(k.queries(), 5);
        k.clear_faults();
        assert!(k.info().is_ok());
    }

    #[test]
    fn counters_reset() {
        let mut k = MemoryKernel::new();
        k.apply(&Change::AddService(svc(web()))).unwrap_or_default();
        let _ = k.services();
        k.reset_counters();
        assert_eq!((k.attempted(), k.batches(), k.queries()), (0, 0, 0));
        assert!(k.applied().is_empty());
        assert_eq!(k.entries().len(), 1, "the table stays");
    }

    #[test]
    fn counter_setters_report_missing_targets() {
        let mut k = MemoryKernel::new();
        let rs = dest("10.1.0.1", 80);
        assert!(!k.set_service_stats(&web(), Stats::default()));
        k.apply(&Change::AddService(svc(web()))).unwrap_or_default();
        assert!(!k.set_dest_stats(&web(), &rs.key(), Stats::default()));
        assert!(!k.set_dest_conns(&web(), &rs.key(), 1, 1, 1));
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<MemoryKernel>();
    }
}
