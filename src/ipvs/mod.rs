//! The IPVS kernel layer: the generic-netlink codec, the [`Kernel`] trait with
//! its netlink and in-memory implementations, the connection table
//! ([`conn`], from /proc), the ipvsadm text format, and the virtual IPs
//! bound on the node ([`vip`]).
//!
//! Only this module knows netlink. Layers above speak in [`Change`]s and
//! [`ServiceEntry`]s, and in sets of addresses for [`vip::VipTable`].

pub mod codec;
pub mod conn;
mod error;
pub mod memory;
pub mod netlink;
pub mod text;
pub mod vip;

pub use error::{KernelError, Reason};

use crate::model::{DestKey, Destination, ServiceEntry, ServiceKey, VirtualService};
use std::fmt;

/// Connection timeouts of the IPVS protocol handlers (`ipvsadm --set`), in
/// seconds. In a change, 0 means "leave unchanged", as in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// Version and connection-table size the kernel reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// Encoded as 0xMMmmpp (0x010201 = 1.2.1).
    pub version: u32,
    pub conn_tab_size: u32,
}

impl Info {
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// One change to the kernel's IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddService(VirtualService),
    EditService(VirtualService),
    DelService(ServiceKey),
    AddDest(ServiceKey, Destination),
    EditDest(ServiceKey, Destination),
    DelDest(ServiceKey, DestKey),
    /// Remove every service (`ipvsadm -C`).
    Flush,
    /// Zero the counters of one service, or of all.
    Zero(Option<ServiceKey>),
    SetTimeouts(Timeouts),
}

impl Change {
    /// `+` for what it adds, `~` for what it edits in place, `-` for what
    /// it removes (the marks of `diff` and of a dry run's kernel plan).
    pub fn sign(&self) -> char {
        match self {
            Change::AddService(_) | Change::AddDest(..) => '+',
            Change::EditService(_) | Change::EditDest(..) | Change::SetTimeouts(_) => '~',
            Change::Zero(_) => '~',
            Change::DelService(_) | Change::DelDest(..) | Change::Flush => '-',
        }
    }
}

impl fmt::Display for Change {
    /// What the change does, for error messages: "add service TCP 10.0.0.1:80".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddService(s) => write!(f, "add service {}", s.key),
            Change::EditService(s) => write!(f, "edit service {}", s.key),
            Change::DelService(k) => write!(f, "delete service {k}"),
            Change::AddDest(k, d) => write!(f, "add destination {} to service {k}", d.key()),
            Change::EditDest(k, d) => write!(f, "edit destination {} of service {k}", d.key()),
            Change::DelDest(k, d) => write!(f, "delete destination {d} of service {k}"),
            Change::Flush => f.write_str("flush all services"),
            Change::Zero(Some(k)) => write!(f, "zero counters of service {k}"),
            Change::Zero(None) => f.write_str("zero all counters"),
            Change::SetTimeouts(t) => write!(
                f,
                "set timeouts tcp {} tcpfin {} udp {}",
                t.tcp, t.tcp_fin, t.udp
            ),
        }
    }
}

/// Access to an IPVS table: the real kernel of this network namespace, or an
/// in-memory stand-in with the same rules.
pub trait Kernel {
    /// Every service with its destinations, in the kernel's order.
    fn services(&mut self) -> Result<Vec<ServiceEntry>, KernelError>;

    /// One service with its destinations, or `None` when absent.
    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, KernelError>;

    /// Applies one change.
    fn apply(&mut self, change: &Change) -> Result<(), KernelError> {
        self.apply_batch(std::slice::from_ref(change))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Applies changes in order. Like the kernel, a failed change does not
    /// stop the ones after it: the result has one entry per change.
    fn apply_batch(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>>;

    fn info(&mut self) -> Result<Info, KernelError>;

    fn timeouts(&mut self) -> Result<Timeouts, KernelError>;
}

/// A boxed kernel is a kernel: the node picks the real or the in-memory
/// table at start-up.
impl<K: Kernel + ?Sized> Kernel for Box<K> {
    fn services(&mut self) -> Result<Vec<ServiceEntry>, KernelError> {
        (**self).services()
    }

    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, KernelError> {
        (**self).service(key)
    }

    fn apply_batch(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        (**self).apply_batch(changes)
    }

    fn info(&mut self) -> Result<Info, KernelError> {
        (**self).info()
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        (**self).timeouts()
    }
}
