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
//!
//! [`link`] changes the real interface, [`memory`] keeps the same rules in
//! memory with scripted failures (the reconciler's tests and
//! `IPVS_KERNEL=memory` use it), as `ipvs::{netlink, memory}` do for IPVS.

pub mod link;
pub mod memory;

pub use link::LinkVips;
pub use memory::{MemoryVips, VipOp};

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

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

#[cfg(test)]
mod tests;
