//! [`LinkVips`]: the VIP table on a real dummy interface, over route
//! netlink (rtnetlink).

use super::{host_prefix, not_bindable, validate_ifname, VipError, VipReport, VipTable};
use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::net::IpAddr;
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
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for LinkVips {
    /// The table may be dropped anywhere, an async task included (the
    /// reconciler's, as the node stops), where dropping a runtime panics:
    /// it is shut down without waiting instead.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
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
            runtime: Some(runtime),
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
        let Some(runtime) = &self.runtime else {
            return Err(io::Error::other("the VIP table is closed"));
        };
        runtime.block_on(async {
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
/// A route netlink error as the `io::Error` it stands for (the kernel's
/// errno when it refused).
pub(crate) fn cause(error: rtnetlink::Error) -> io::Error {
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
    Some(Bound {
        address: local_address(&message)?,
        message,
    })
}

/// The interface's own address in an address message (also what the l2
/// holder reads back of its own).
pub fn local_address(message: &AddressMessage) -> Option<IpAddr> {
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
    local.or(address)
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
