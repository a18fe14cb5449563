//! Virtual IPs bound on the node: the [`VipTable`] trait, [`LinkVips`] (the
//! real interface, over rtnetlink) and [`MemoryVips`] (a scriptable fake).
//!
//! Direct routing and local delivery need a service's address to be local on
//! the load balancer, without the node answering ARP or neighbour discovery
//! for it on its real network. The usual way, and ours, is a dummy interface
//! of our own (`ipvs0` by default; dummies never answer ARP) holding each
//! such address as a host address: /32 or /128, so that no subnet route comes
//! with it. Because the interface is ours, "what should be bound" is simply
//! "what is on it": [`VipTable::sync`] removes every address it does not want,
//! and needs no record of what it added before.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use rtnetlink::{LinkDummy, LinkUnspec};

/// The interface ipvs-manager binds virtual IPs on unless told otherwise.
pub const DEFAULT_INTERFACE: &str = "ipvs0";

/// IFNAMSIZ less the terminating NUL: the longest name the kernel accepts.
const IFNAME_MAX: usize = 15;

/// The addresses ipvs-manager keeps on its own interface (default `ipvs0`, a dummy
/// link created if missing and set up). The interface belongs to ipvs-manager:
/// every address on it that is not wanted is removed.
pub trait VipTable: Send {
    /// Makes the interface hold exactly `wanted` (IPv4 as /32, IPv6 as /128, IPv6 with nodad),
    /// creating the interface when missing and setting it up. Returns what it changed.
    /// One failing address does not stop the others; errors are collected per address.
    fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> VipReport;
    /// The addresses on the interface now (empty when it does not exist).
    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, VipError>;
}

/// What one [`VipTable::sync`] changed, and what it could not.
#[derive(Debug, Default)]
pub struct VipReport {
    /// The interface did not exist and was created.
    pub created: bool,
    /// The interface was down (or just created) and was set up.
    pub set_up: bool,
    /// Addresses bound, in address order.
    pub added: Vec<IpAddr>,
    /// Addresses unbound, in address order. An address present with another
    /// prefix length (added by hand) is removed and added again, so it is
    /// listed in both.
    pub removed: Vec<IpAddr>,
    /// Addresses that could not be added or removed, each with its reason;
    /// the others were still handled.
    pub failed: Vec<(IpAddr, VipError)>,
    /// The interface itself could not be found, created, set up or listed:
    /// no address was touched.
    pub error: Option<VipError>,
}

impl VipReport {
    /// Nothing changed and nothing failed: the interface already held
    /// exactly what was wanted.
    pub fn is_empty(&self) -> bool {
        !self.changed() && self.is_ok()
    }

    /// Something on the node changed (interface or addresses).
    pub fn changed(&self) -> bool {
        self.created || self.set_up || !self.added.is_empty() || !self.removed.is_empty()
    }

    /// No failure, neither of the interface nor of an address.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.failed.is_empty()
    }
}

/// Errors of the VIP table. Each names the interface, and the address when
/// there is one; the kernel's errno, when it gave one, is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("invalid interface name {name:?}: {problem}")]
    InvalidName { name: String, problem: &'static str },
    #[error("cannot open a route netlink socket for interface {ifname}")]
    Socket {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to look up interface {ifname}")]
    Lookup {
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// The name is taken by an interface that is not a dummy. It may be a
    /// real NIC (a misconfiguration, or an alternative name matching), and
    /// owning an interface means removing its other addresses: refused.
    #[error(
        "interface {ifname} is {kind}, not a dummy interface: ipvs-manager removes every \
         address it does not want from its interface, so it only manages a dummy one \
         (delete {ifname} or choose another name)"
    )]
    NotDummy { ifname: String, kind: String },
    #[error("failed to create dummy interface {ifname}")]
    Create {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to set interface {ifname} up")]
    SetUp {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to list the addresses of interface {ifname}")]
    List {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to add {address}/{} to interface {ifname}",
        host_prefix(address)
    )]
    Add {
        address: IpAddr,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to remove {address}/{prefix_len} from interface {ifname}")]
    Remove {
        address: IpAddr,
        prefix_len: u8,
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("{address} cannot be bound on interface {ifname}: {problem}")]
    NotBindable {
        address: IpAddr,
        ifname: String,
        problem: &'static str,
    },
}

impl VipError {
    /// The address the error is about, if it is about one.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            VipError::Add { address, .. }
            | VipError::Remove { address, .. }
            | VipError::NotBindable { address, .. } => Some(*address),
            _ => None,
        }
    }

    /// The kernel's errno, when the kernel refused (for an error policy:
    /// EPERM will not go away by retrying, EBUSY may).
    pub fn errno(&self) -> Option<i32> {
        match self {
            VipError::Socket { source, .. }
            | VipError::Lookup { source, .. }
            | VipError::Create { source, .. }
            | VipError::SetUp { source, .. }
            | VipError::List { source, .. }
            | VipError::Add { source, .. }
            | VipError::Remove { source, .. } => source.raw_os_error(),
            VipError::InvalidName { .. }
            | VipError::NotDummy { .. }
            | VipError::NotBindable { .. } => None,
        }
    }
}

/// Checks a name the way the kernel's `dev_valid_name` does, so a bad name
/// is refused when the table is made, with a message, not by the first sync.
pub fn validate_ifname(name: &str) -> Result<(), VipError> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > IFNAME_MAX {
        Some("it is longer than 15 bytes (the kernel's IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not interface names")
    } else if name.contains('/') {
        Some("it contains '/'")
    } else if name.contains(':') {
        // The kernel refuses ':' too: it separates IPv4 address labels.
        Some("it contains ':'")
    } else if name.contains(char::is_whitespace) {
        Some("it contains whitespace")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(VipError::InvalidName {
            name: name.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The prefix length a virtual IP is bound with: a host address, so that no
/// subnet route (which would pull a whole network onto the dummy) comes with it.
pub fn host_prefix(address: &IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Why `address` cannot be a virtual IP, if it cannot. Both tables apply
/// this before asking the kernel, so the fake refuses what the real one does.
fn not_bindable(address: &IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(a) if a.is_unspecified() => Some("0.0.0.0 is not a host address"),
        IpAddr::V4(a) if a.octets()[0] == 0 => Some("0.0.0.0/8 is not a host address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("it is the broadcast address"),
        IpAddr::V6(a) if a.is_unspecified() => Some(":: is not a host address"),
        a if a.is_multicast() => Some("it is a multicast address"),
        // The kernel refuses ::1 off `lo`; 127/8 is local through `lo` already.
        a if a.is_loopback() => Some("loopback addresses belong to lo"),
        _ => None,
    }
}

/// How long one netlink request may wait for its answer. Route netlink
/// answers inside the system call, so this only ends a request whose answer
/// never comes (netlink-proto skips a reply it cannot decode, and a skipped
/// acknowledgement would otherwise wait forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The real VIP table: a dummy interface of the network namespace that the
/// thread calling [`LinkVips::new`] was in, changed over route netlink.
///
/// Its methods block. Call them from a plain thread or from tokio's
/// `spawn_blocking`, never from inside an async task: the table drives its
/// own small single-threaded runtime, and tokio refuses to start a runtime
/// inside another one's task.
pub struct LinkVips {
    ifname: String,
    // Declared before the runtime so it is dropped first.
    handle: rtnetlink::Handle,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for LinkVips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkVips")
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

/// The interface as the kernel describes it.
struct Link {
    index: u32,
    up: bool,
    /// `IFLA_INFO_KIND`; `None` for devices without one (physical NICs, lo).
    kind: Option<InfoKind>,
}

/// One address of the interface, as dumped.
struct Bound {
    address: IpAddr,
    message: AddressMessage,
}

impl LinkVips {
    /// Opens a route netlink socket in the calling thread's network
    /// namespace; the table works in that namespace from then on, whichever
    /// thread uses it. Nothing is changed until [`VipTable::sync`].
    pub fn new(ifname: &str) -> Result<LinkVips, VipError> {
        validate_ifname(ifname)?;
        let socket_error = |source| VipError::Socket {
            ifname: ifname.to_owned(),
            source,
        };
        // Current-thread: a sync is a handful of requests, not worth worker
        // threads; the calling thread drives the socket while it waits.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(socket_error)?;
        // The socket registers with the runtime's reactor as it is created.
        let (connection, handle, _unsolicited) = {
            let _context = runtime.enter();
            rtnetlink::new_connection().map_err(socket_error)?
        };
        // Runs only while a request is being waited for (inside block_on).
        runtime.spawn(connection);
        Ok(LinkVips {
            ifname: ifname.to_owned(),
            handle,
            runtime,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Runs one request to completion (or to [`REQUEST_TIMEOUT`]).
    fn block_on<T>(
        &self,
        request: impl Future<Output = Result<T, rtnetlink::Error>>,
    ) -> Result<T, io::Error> {
        self.runtime.block_on(async {
            match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                Ok(answer) => answer.map_err(cause),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer from the kernel within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                )),
            }
        })
    }

    /// The interface, or `None` when no interface has the name.
    fn link(&self) -> Result<Option<Link>, VipError> {
        let request = self.handle.link().get().match_name(self.ifname.clone());
        let first = self.block_on(async { request.execute().try_next().await });
        match first {
            Ok(Some(message)) => Ok(Some(link_of(&message))),
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(VipError::Lookup {
                ifname: self.ifname.clone(),
                source,
            }),
        }
    }

    /// Finds or creates the interface and sets it up; notes both in `report`.
    fn ensure_link(&self, report: &mut VipReport) -> Result<Link, VipError> {
        let link = match self.link()? {
            Some(link) => link,
            None => {
                // Created down, so that the IPv6 address generation mode is
                // set before the kernel would generate a link-local address
                // (see `set_up`).
                let message = LinkDummy::new(&self.ifname).build();
                match self.block_on(self.handle.link().add(message).execute()) {
                    Ok(()) => report.created = true,
                    // Someone created it meanwhile: take it as found.
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(source) => {
                        return Err(VipError::Create {
                            ifname: self.ifname.clone(),
                            source,
                        })
                    }
                }
                self.link()?.ok_or_else(|| VipError::Lookup {
                    ifname: self.ifname.clone(),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "the interface is gone right after it was created",
                    ),
                })?
            }
        };
        if link.kind != Some(InfoKind::Dummy) {
            return Err(VipError::NotDummy {
                ifname: self.ifname.clone(),
                kind: match &link.kind {
                    Some(kind) => format!("a {kind} interface"),
                    None => "a device without a link kind (a physical NIC or lo)".to_owned(),
                },
            });
        }
        if !link.up {
            self.set_up(link.index)?;
            report.set_up = true;
        }
        Ok(link)
    }

    fn set_up(&self, index: u32) -> Result<(), VipError> {
        // A dummy gets an IPv6 link-local address when it comes up, which
        // the next sync would then remove as unwanted. Address generation
        // "none" avoids that churn. Best effort: it fails where IPv6 is
        // disabled, and then there is no link-local address either.
        let no_link_local = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        if let Err(e) = self.block_on(self.handle.link().set(no_link_local).execute()) {
            tracing::debug!(
                interface = %self.ifname,
                error = %e,
                "cannot turn off IPv6 link-local address generation"
            );
        }
        let up = LinkUnspec::new_with_index(index).up().build();
        self.block_on(self.handle.link().set(up).execute())
            .map_err(|source| VipError::SetUp {
                ifname: self.ifname.clone(),
                source,
            })
    }

    fn bound(&self, index: u32) -> Result<Vec<Bound>, VipError> {
        let request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let messages = self
            .block_on(request.try_collect::<Vec<_>>())
            .map_err(|source| VipError::List {
                ifname: self.ifname.clone(),
                source,
            })?;
        Ok(messages.into_iter().filter_map(bound_of).collect())
    }

    fn add(&self, index: u32, address: IpAddr) -> Result<(), VipError> {
        let mut request = self
            .handle
            .address()
            .add(index, address, host_prefix(&address));
        if address.is_ipv6() {
            // Duplicate address detection would hold the address tentative
            // (unusable) for a while; a VIP is ours by configuration.
            request.message_mut().header.flags = AddressHeaderFlags::Nodad;
        }
        self.block_on(request.execute())
            .map_err(|source| VipError::Add {
                address,
                ifname: self.ifname.clone(),
                source,
            })
    }

    fn remove(&self, bound: &Bound) -> Result<(), VipError> {
        // Only what identifies the address: family, prefix, interface and the
        // address attributes exactly as dumped.
        let mut message = AddressMessage::default();
        message.header.family = bound.message.header.family;
        message.header.prefix_len = bound.message.header.prefix_len;
        message.header.index = bound.message.header.index;
        message.attributes = bound
            .message
            .attributes
            .iter()
            .filter(|a| matches!(a, AddressAttribute::Address(_) | AddressAttribute::Local(_)))
            .cloned()
            .collect();
        match self.block_on(self.handle.address().del(message).execute()) {
            Ok(()) => Ok(()),
            // Already gone: removing an IPv4 primary address takes its
            // secondaries with it (without promote_secondaries).
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(source) => Err(VipError::Remove {
                address: bound.address,
                prefix_len: bound.message.header.prefix_len,
                ifname: self.ifname.clone(),
                source,
            }),
        }
    }

    fn try_sync(&self, wanted: &BTreeSet<IpAddr>, report: &mut VipReport) -> Result<(), VipError> {
        let link = self.ensure_link(report)?;
        let bound = self.bound(link.index)?;
        let (keep, remove): (Vec<&Bound>, Vec<&Bound>) = bound.iter().partition(|b| {
            wanted.contains(&b.address) && holds_as_wanted(b) && not_bindable(&b.address).is_none()
        });
        let held: BTreeSet<IpAddr> = keep.iter().map(|b| b.address).collect();
        // Removals first: an IPv6 address held with another prefix must be
        // gone before it can be added as /128 (same address, EEXIST).
        let mut removed = Vec::new();
        for b in remove {
            match self.remove(b) {
                Ok(()) => removed.push(b.address),
                Err(e) => report.failed.push((b.address, e)),
            }
        }
        removed.sort();
        removed.dedup();
        report.removed = removed;
        for &address in wanted.difference(&held) {
            let result = match not_bindable(&address) {
                Some(problem) => Err(VipError::NotBindable {
                    address,
                    ifname: self.ifname.clone(),
                    problem,
                }),
                None => self.add(link.index, address),
            };
            match result {
                Ok(()) => report.added.push(address),
                Err(e) => report.failed.push((address, e)),
            }
        }
        Ok(())
    }
}

impl VipTable for LinkVips {
    fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> VipReport {
        let mut report = VipReport::default();
        if let Err(e) = self.try_sync(wanted, &mut report) {
            report.error = Some(e);
        }
        report
    }

    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, VipError> {
        match self.link()? {
            None => Ok(BTreeSet::new()),
            Some(link) => Ok(self
                .bound(link.index)?
                .into_iter()
                .map(|b| b.address)
                .collect()),
        }
    }
}

/// rtnetlink's error as an `io::Error` source: the errno when the kernel
/// refused, a description otherwise.
fn cause(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => {
            // Negative errno on the wire; checked, as it comes from outside.
            let errno = message.raw_code().checked_neg().unwrap_or(i32::MAX);
            io::Error::from_raw_os_error(errno)
        }
        rtnetlink::Error::RequestFailed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the route netlink connection is closed",
        ),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn link_of(message: &LinkMessage) -> Link {
    let kind = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind.clone()),
            _ => None,
        }),
        _ => None,
    });
    Link {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        kind,
    }
}

/// The local address of a dumped address message; `None` for messages
/// without one (nothing this table could have added).
fn bound_of(message: AddressMessage) -> Option<Bound> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links, and the only one IPv6 usually sends.
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    Some(Bound {
        address: local.or(address)?,
        message,
    })
}

/// Whether a bound address is held the way [`VipTable::sync`] binds it:
/// a host prefix, and (IPv6) not refused by duplicate address detection.
fn holds_as_wanted(bound: &Bound) -> bool {
    let dad_failed = bound
        .message
        .header
        .flags
        .contains(AddressHeaderFlags::Dadfailed)
        || bound.message.attributes.iter().any(
            |a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Dadfailed)),
        );
    bound.message.header.prefix_len == host_prefix(&bound.address) && !dad_failed
}

/// What a scripted failure of [`MemoryVips`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipOp {
    /// Creating, setting up or listing the interface (in `sync` and in
    /// `addresses`).
    Link,
    Add(IpAddr),
    Remove(IpAddr),
}

struct Fault {
    op: VipOp,
    errno: i32,
    /// `None` fails every match for good.
    remaining: Option<usize>,
}

#[derive(Default)]
struct MemoryState {
    /// `None` while the interface does not exist.
    link: Option<MemoryLink>,
    faults: Vec<Fault>,
    syncs: usize,
}

#[derive(Default)]
struct MemoryLink {
    up: bool,
    addresses: BTreeSet<IpAddr>,
}

impl MemoryState {
    /// Fires the first fault for `op`, if any, and uses it up.
    fn fire(&mut self, op: VipOp) -> Option<io::Error> {
        let pos = self.faults.iter().position(|f| f.op == op)?;
        let fault = self.faults.get_mut(pos)?;
        let errno = fault.errno;
        if let Some(left) = fault.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.faults.remove(pos);
            }
        }
        Some(io::Error::from_raw_os_error(errno))
    }
}

/// An in-memory VIP table with [`LinkVips`]'s rules (name validation,
/// bindable addresses, creation and set-up of the interface, removal of every
/// unwanted address), scripted failures, and "by hand" changes as an
/// operator would make them.
///
/// Clones share one interface: a test keeps a clone to script and inspect
/// while the code under test owns another.
#[derive(Clone)]
pub struct MemoryVips {
    ifname: String,
    state: Arc<Mutex<MemoryState>>,
}

impl std::fmt::Debug for MemoryVips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryVips")
            .field("ifname", &self.ifname)
            .field("exists", &state.link.is_some())
            .field("up", &state.link.as_ref().is_some_and(|l| l.up))
            .field("addresses", &state.link.as_ref().map(|l| &l.addresses))
            .finish()
    }
}

impl MemoryVips {
    /// A table whose interface does not exist yet.
    pub fn new(ifname: &str) -> Result<MemoryVips, VipError> {
        validate_ifname(ifname)?;
        Ok(MemoryVips {
            ifname: ifname.to_owned(),
            state: Arc::default(),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panicking test thread leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the interface by hand (down), as `ip link add NAME type
    /// dummy` would; no-op when it exists.
    pub fn create_by_hand(&self) {
        self.state().link.get_or_insert_with(MemoryLink::default);
    }

    /// Sets the interface down by hand; false when it does not exist.
    pub fn set_down_by_hand(&self) -> bool {
        match self.state().link.as_mut() {
            Some(link) => {
                link.up = false;
                true
            }
            None => false,
        }
    }

    /// Binds an address by hand (creating the interface if missing), as an
    /// operator's `ip addr add` would; the next sync removes it unless
    /// wanted.
    pub fn add_by_hand(&self, address: IpAddr) {
        self.state()
            .link
            .get_or_insert_with(MemoryLink::default)
            .addresses
            .insert(address);
    }

    /// Deletes the interface and its addresses, as `ip link del` would.
    pub fn delete_by_hand(&self) {
        self.state().link = None;
    }

    /// Whether the interface exists.
    pub fn exists(&self) -> bool {
        self.state().link.is_some()
    }

    /// Whether the interface exists and is up.
    pub fn is_up(&self) -> bool {
        self.state().link.as_ref().is_some_and(|l| l.up)
    }

    /// The addresses on the interface, without going through the trait (no
    /// fault fires).
    pub fn current(&self) -> BTreeSet<IpAddr> {
        self.state()
            .link
            .as_ref()
            .map(|l| l.addresses.clone())
            .unwrap_or_default()
    }

    /// Makes the next `times` operations matching `op` fail with `errno`
    /// (`None`: every one, until [`MemoryVips::clear_faults`]).
    pub fn fail(&self, op: VipOp, errno: i32, times: Option<usize>) {
        if times == Some(0) {
            return;
        }
        self.state().faults.push(Fault {
            op,
            errno,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// How many times [`VipTable::sync`] was called.
    pub fn syncs(&self) -> usize {
        self.state().syncs
    }

    fn try_sync(
        &self,
        state: &mut MemoryState,
        wanted: &BTreeSet<IpAddr>,
        report: &mut VipReport,
    ) -> Result<(), VipError> {
        let ifname = || self.ifname.clone();
        if state.link.is_none() {
            if let Some(source) = state.fire(VipOp::Link) {
                return Err(VipError::Create {
                    ifname: ifname(),
                    source,
                });
            }
            state.link = Some(MemoryLink::default());
            report.created = true;
        }
        if !state.link.as_ref().is_some_and(|l| l.up) {
            if let Some(source) = state.fire(VipOp::Link) {
                return Err(VipError::SetUp {
                    ifname: ifname(),
                    source,
                });
            }
            report.set_up = true;
        }
        if let Some(source) = state.fire(VipOp::Link) {
            return Err(VipError::List {
                ifname: ifname(),
                source,
            });
        }
        let present = match state.link.as_mut() {
            Some(link) => {
                link.up = true;
                link.addresses.clone()
            }
            None => BTreeSet::new(),
        };
        for &address in &present {
            if wanted.contains(&address) && not_bindable(&address).is_none() {
                continue;
            }
            match state.fire(VipOp::Remove(address)) {
                Some(source) => report.failed.push((
                    address,
                    VipError::Remove {
                        address,
                        prefix_len: host_prefix(&address),
                        ifname: ifname(),
                        source,
                    },
                )),
                None => {
                    if let Some(link) = state.link.as_mut() {
                        link.addresses.remove(&address);
                    }
                    report.removed.push(address);
                }
            }
        }
        for &address in wanted {
            if present.contains(&address) && not_bindable(&address).is_none() {
                continue;
            }
            let failure = match not_bindable(&address) {
                Some(problem) => Some(VipError::NotBindable {
                    address,
                    ifname: ifname(),
                    problem,
                }),
                None => state.fire(VipOp::Add(address)).map(|source| VipError::Add {
                    address,
                    ifname: ifname(),
                    source,
                }),
            };
            match failure {
                Some(e) => report.failed.push((address, e)),
                None => {
                    if let Some(link) = state.link.as_mut() {
                        link.addresses.insert(address);
                    }
                    report.added.push(address);
                }
            }
        }
        Ok(())
    }
}

impl VipTable for MemoryVips {
    fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> VipReport {
        let mut report = VipReport::default();
        let mut state = self.state();
        state.syncs += 1;
        if let Err(e) = self.try_sync(&mut state, wanted, &mut report) {
            report.error = Some(e);
        }
        report
    }

    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, VipError> {
        let mut state = self.state();
        if state.link.is_none() {
            return Ok(BTreeSet::new());
        }
        if let Some(source) = state.fire(VipOp::Link) {
            return Err(VipError::List {
                ifname: self.ifname.clone(),
                source,
            });
        }
        Ok(state
            .link
            .as_ref()
            .map(|l| l.addresses.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["ipvs0", "a", "vip-lb_1.x", "fifteen-bytes-0", "ünï"] {
            assert!(validate_ifname(good).is_ok(), "{good:?} should be valid");
        }
        let cases = [
            ("", "it is empty"),
            ("sixteen-bytes-00", "longer than 15 bytes"),
            ("ünïcödé-ünï", "longer than 15 bytes"),
            (".", "are not interface names"),
            ("..", "are not interface names"),
            ("a/b", "'/'"),
            ("eth0:1", "':'"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("ab\n", "whitespace"),
            ("a\0b", "NUL"),
        ];
        for (name, problem) in cases {
            let err = validate_ifname(name).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("{name:?}")) && text.contains(problem),
                "{name:?}: {text}"
            );
            assert!(matches!(err, VipError::InvalidName { .. }));
            assert!(MemoryVips::new(name).is_err(), "{name:?}");
            assert!(LinkVips::new(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn host_prefixes() {
        assert_eq!(host_prefix(&ip("192.0.2.1")), 32);
        assert_eq!(host_prefix(&ip("2001:db8::1")), 128);
    }

    #[test]
    fn unusable_addresses_are_refused() {
        let refused = [
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ip("0.1.2.3"),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            ip("224.0.0.1"),
            ip("127.0.0.1"),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip("ff02::1"),
        ];
        for address in refused {
            assert!(not_bindable(&address).is_some(), "{address}");
        }
        for address in ["192.0.2.1", "10.0.0.1", "2001:db8::1", "fe80::1"] {
            assert_eq!(not_bindable(&ip(address)), None, "{address}");
        }
    }

    #[test]
    fn first_sync_creates_the_interface_and_binds() {
        let mut vips = MemoryVips::new("ipvs0").unwrap();
        assert!(!vips.exists());
        assert_eq!(vips.addresses().unwrap(), BTreeSet::new());

        let wanted = set(&["192.0.2.10", "2001:db8::10"]);
        let report = vips.sync(&wanted);
        assert!(report.created && report.set_up, "{report:?}");
        assert_eq!(report.added, vec![ip("192.0.2.10"), ip("2001:db8::10")]);
        assert!(report.removed.is_empty() && report.is_ok() && report.changed());
        assert!(vips.exists() && vips.is_up());
        assert_eq!(vips.addresses().unwrap(), wanted);

        let again = vips.sync(&wanted);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(vips.syncs(), 2);
    }

    #[test]
    fn unwanted_addresses_are_removed() {
        let mut vips = MemoryVips::new("ipvs0").unwrap();
        vips.sync(&set(&["192.0.2.10", "2001:db8::10"]));
        vips.add_by_hand(ip("198.51.100.7"));

        let report = vips.sync(&set(&["192.0.2.10"]));
        assert_eq!(report.removed, vec![ip("198.51.100.7"), ip("2001:db8::10")]);
        assert!(report.added.is_empty() && report.is_ok() && !report.set_up);
        assert_eq!(vips.current(), set(&["192.0.2.10"]));

        let report = vips.sync(&BTreeSet::new());
        assert_eq!(report.removed, vec![ip("192.0.2.10")]);
        assert!(vips.exists() && vips.is_up() && vips.current().is_empty());
    }

    #[test]
    fn an_existing_interface_is_reused_and_set_up() {
        let mut vips = MemoryVips::new("ipvs0").unwrap();
        vips.create_by_hand();
        vips.add_by_hand(ip("203.0.113.5"));
        assert!(vips.exists() && !vips.is_up());

        let report = vips.sync(&set(&["192.0.2.20"]));
        assert!(!report.created && report.set_up, "{report:?}");
        assert_eq!(report.added, vec![ip("192.0.2.20")]);
        assert_eq!(report.removed, vec![ip("203.0.113.5")]);

        vips.set_down_by_hand();
        let report = vips.sync(&set(&["192.0.2.20"]));
        assert!(report.set_up && report.added.is_empty() && report.removed.is_empty());

        vips.delete_by_hand();
        assert_eq!(vips.addresses().unwrap(), BTreeSet::new());
        let report = vips.sync(&set(&["192.0.2.20"]));
        assert!(report.created && report.added == vec![ip("192.0.2.20")]);
    }

    #[test]
    fn one_failing_address_does_not_stop_the_others() {
        let mut vips = MemoryVips::new("ipvs0").unwrap();
        vips.add_by_hand(ip("198.51.100.1"));
        vips.add_by_hand(ip("198.51.100.2"));
        vips.fail(VipOp::Add(ip("192.0.2.2")), libc::EPERM, Some(1));
        vips.fail(VipOp::Remove(ip("198.51.100.1")), libc::EBUSY, Some(1));

        let wanted = set(&["192.0.2.1", "192.0.2.2", "224.0.0.1", "2001:db8::1"]);
        let report = vips.sync(&wanted);
        assert_eq!(report.added, vec![ip("192.0.2.1"), ip("2001:db8::1")]);
        assert_eq!(report.removed, vec![ip("198.51.100.2")]);
        assert!(report.error.is_none() && !report.is_ok());
        let failed: Vec<_> = report.failed.iter().map(|(a, _)| *a).collect();
        assert_eq!(
            failed,
            vec![ip("198.51.100.1"), ip("192.0.2.2"), ip("224.0.0.1")]
        );
        for (address, error) in &report.failed {
            assert_eq!(error.address(), Some(*address));
            assert!(error.to_string().contains("ipvs0"), "{error}");
        }
        let (_, add) = &report.failed[1];
        assert_eq!(add.errno(), Some(libc::EPERM));
        assert_eq!(
            add.to_string(),
            "failed to add 192.0.2.2/32 to interface ipvs0"
        );
        assert!(std::error::Error::source(add).is_some());
        let (_, remove) = &report.failed[0];
        assert_eq!(remove.errno(), Some(libc::EBUSY));
        let (_, multicast) = &report.failed[2];
        assert!(matches!(multicast, VipError::NotBindable { .. }));
        assert_eq!(multicast.errno(), None);

        // The faults were used up: the next sync finishes the job.
        let report = vips.sync(&wanted);
        assert_eq!(report.added, vec![ip("192.0.2.2")]);
        assert_eq!(report.removed, vec![ip("198.51.100.1")]);
        assert_eq!(
            report.failed.len(),
            1,
            "the multicast address stays refused"
        );
        assert_eq!(
            vips.current(),
            set(&["192.0.2.1", "192.0.2.2", "2001:db8::1"])
        );
    }

    #[test]
    fn interface_failures_touch_no_address() {
        let mut vips = MemoryVips::new("ipvs0").unwrap();
        vips.fail(VipOp::Link, libc::EPERM, Some(1));
        let report = vips.sync(&set(&["192.0.2.1"]));
        assert!(matches!(report.error, Some(VipError::Create { .. })));
        assert!(!report.changed() && report.failed.is_empty() && !vips.exists());

        vips.create_by_hand();
        vips.fail(VipOp::Link, libc::ENOMEM, Some(1));
        let report = vips.sync(&set(&["192.0.2.1"]));
        assert!(matches!(report.error, Some(VipError::SetUp { .. })));
        assert!(!vips.is_up() && vips.current().is_empty());

        vips.fail(VipOp::Link, libc::EIO, None);
        assert!(matches!(vips.addresses(), Err(VipError::List { .. })));
        let report = vips.sync(&set(&["192.0.2.1"]));
        let error = report.error.unwrap();
        assert!(matches!(error, VipError::SetUp { .. }));
        assert_eq!(error.errno(), Some(libc::EIO));

        vips.clear_faults();
        assert!(vips.sync(&set(&["192.0.2.1"])).is_ok());
        assert_eq!(vips.addresses().unwrap(), set(&["192.0.2.1"]));
    }

    #[test]
    fn clones_share_the_interface() {
        let script = MemoryVips::new("ipvs0").unwrap();
        let mut owned: Box<dyn VipTable> = Box::new(script.clone());
        owned.sync(&set(&["192.0.2.1"]));
        assert_eq!(script.current(), set(&["192.0.2.1"]));
        script.add_by_hand(ip("192.0.2.99"));
        assert_eq!(
            owned.addresses().unwrap(),
            set(&["192.0.2.1", "192.0.2.99"])
        );
        assert_eq!(script.syncs(), 1);
    }

    #[test]
    fn reports_tell_changes_from_failures() {
        let empty = VipReport::default();
        assert!(empty.is_empty() && empty.is_ok() && !empty.changed());
        let failed = VipReport {
            error: Some(VipError::NotDummy {
                ifname: "ipvs0".into(),
                kind: "a bridge interface".into(),
            }),
            ..VipReport::default()
        };
        assert!(!failed.is_empty() && !failed.is_ok() && !failed.changed());
    }
}
