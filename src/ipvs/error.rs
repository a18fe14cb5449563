//! Errors of the kernel layer, with the kernel's errno mapped to what it means
//! for the operation that got it.

use super::Change;
use std::fmt;

/// Why the kernel refused a change, interpreted for that change (the same
/// errno means different things for services and destinations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    ServiceExists,
    NoSuchService,
    DestExists,
    NoSuchDest,
    /// ENOENT on a service change: the scheduler or persistence-engine module
    /// is not available.
    UnknownSchedulerOrEngine,
    /// ERANGE: weight out of range or lower threshold above upper.
    OutOfRange,
    /// EINVAL: an attribute combination the kernel rejects (a destination
    /// family differing from the service's without tunnel forwarding, GUE
    /// without a port, an unusable address).
    Invalid,
    /// EAFNOSUPPORT: the family itself is unsupported (IPv6 disabled).
    FamilyNotSupported,
    PermissionDenied,
    NoMemory,
    /// Any other errno, kept as is.
    Errno(i32),
}

impl Reason {
    /// Interprets a kernel errno for `change`, following the kernel's
    /// conventions in `ip_vs_ctl.c` (ESRCH = service missing, ENOENT =
    /// destination or module missing).
    pub fn from_errno(errno: i32, change: Option<&Change>) -> Reason {
        use Change::*;
        let on_dest = matches!(change, Some(AddDest(..) | EditDest(..) | DelDest(..)));
        match errno {
            libc::EEXIST if on_dest => Reason::DestExists,
            libc::EEXIST => Reason::ServiceExists,
            libc::ESRCH => Reason::NoSuchService,
            libc::ENOENT if on_dest => Reason::NoSuchDest,
            libc::ENOENT => Reason::UnknownSchedulerOrEngine,
            libc::ERANGE => Reason::OutOfRange,
            libc::EINVAL => Reason::Invalid,
            libc::EAFNOSUPPORT => Reason::FamilyNotSupported,
            libc::EPERM => Reason::PermissionDenied,
            libc::ENOMEM => Reason::NoMemory,
            other => Reason::Errno(other),
        }
    }

    /// The errno the kernel answers with for this reason.
    pub fn errno(self) -> i32 {
        match self {
            Reason::ServiceExists | Reason::DestExists => libc::EEXIST,
            Reason::NoSuchService => libc::ESRCH,
            Reason::NoSuchDest | Reason::UnknownSchedulerOrEngine => libc::ENOENT,
            Reason::OutOfRange => libc::ERANGE,
            Reason::Invalid => libc::EINVAL,
            Reason::FamilyNotSupported => libc::EAFNOSUPPORT,
            Reason::PermissionDenied => libc::EPERM,
            Reason::NoMemory => libc::ENOMEM,
            Reason::Errno(e) => e,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Reason::ServiceExists => "service already exists",
            Reason::NoSuchService => "no such service",
            Reason::DestExists => "destination already exists",
            Reason::NoSuchDest => "no such destination",
            Reason::UnknownSchedulerOrEngine => {
                "scheduler or persistence engine not found (is its kernel module available?)"
            }
            Reason::OutOfRange => {
                "value out of range (weight must be >= 0 and the lower threshold <= the upper)"
            }
            Reason::Invalid => {
                "invalid argument (e.g. a destination of another address family without tunnel forwarding, or a GUE tunnel without a port)"
            }
            Reason::FamilyNotSupported => "address family not supported by this kernel",
            Reason::PermissionDenied => "permission denied (CAP_NET_ADMIN needed)",
            Reason::NoMemory => "kernel out of memory",
            Reason::Errno(e) => {
                return write!(f, "{}", std::io::Error::from_raw_os_error(*e));
            }
        };
        write!(f, "{text} ({})", errno_name(self.errno()))
    }
}

impl std::error::Error for Reason {}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EEXIST => "EEXIST",
        libc::ESRCH => "ESRCH",
        libc::ENOENT => "ENOENT",
        libc::ERANGE => "ERANGE",
        libc::EINVAL => "EINVAL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPERM => "EPERM",
        libc::ENOMEM => "ENOMEM",
        _ => "errno",
    }
}

/// Errors of the kernel layer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "IPVS is not available in this kernel (the \"IPVS\" generic netlink family is missing): \
         load it with `modprobe ip_vs`, or use a kernel built with CONFIG_IP_VS"
    )]
    Unavailable,
    #[error(
        "permission denied talking to IPVS: it needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied,
    /// The kernel refused one change.
    #[error("failed to {change}")]
    Rejected {
        change: String,
        #[source]
        reason: Reason,
        /// The kernel's extended-ack text, when it sent one.
        detail: Option<String>,
    },
    /// A query (list, get) failed with an errno.
    #[error("failed to {what}")]
    Query {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink socket error")]
    Io(#[from] std::io::Error),
    #[error("malformed message from the kernel")]
    Decode(#[from] super::codec::DecodeError),
    /// The change was never sent or its answer was lost (e.g. an earlier
    /// failure closed the batch).
    #[error("failed to {change}: no answer from the kernel")]
    NoAnswer { change: String },
}

impl KernelError {
    pub fn rejected(change: &Change, errno: i32) -> KernelError {
        KernelError::Rejected {
            change: change.to_string(),
            reason: Reason::from_errno(errno, Some(change)),
            detail: None,
        }
    }

    /// The reason a change was refused, if that is what happened.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            KernelError::Rejected { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}
