//! The owned addresses on ANNOUNCE_INTERFACE, over route netlink. That
//! interface is the host's real NIC: ipvs-manager marks what it adds
//! (`IFA_PROTO` = [`OUR_PROTO`]) and only ever removes what carries the
//! mark. Each address also carries a lifetime, refreshed while the lease
//! is renewed, so that the kernel itself removes it when the agent is
//! killed or hangs (see `lease`).

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressProtocol, CacheInfo,
};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// The `IFA_PROTO` value on the addresses ipvs-manager adds ('I'); the
/// kernel's own values are 0–3.
pub const OUR_PROTO: u8 = 0x49;

/// How long one netlink request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// ANNOUNCE_INTERFACE, over an rtnetlink connection of the announcer's.
pub struct AnnounceLink {
    handle: rtnetlink::Handle,
    ifname: String,
    index: u32,
}

impl std::fmt::Debug for AnnounceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnounceLink")
            .field("ifname", &self.ifname)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Whether interface `ifname` exists in this network namespace (the check
/// at start-up).
pub fn exists(ifname: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(ifname).exists()
}

async fn timed<T>(
    what: &str,
    request: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
) -> io::Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(rtnetlink::Error::NetlinkError(m))) => {
            let errno = m.raw_code().checked_neg().unwrap_or(i32::MAX);
            let e = io::Error::from_raw_os_error(errno);
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
        Ok(Err(e)) => Err(io::Error::other(format!("{what}: {e}"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what}: no answer from the kernel"),
        )),
    }
}

impl AnnounceLink {
    /// Opens a connection (inside a tokio runtime) and finds the interface.
    pub async fn open(ifname: &str) -> io::Result<AnnounceLink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        let request = handle.link().get().match_name(ifname.to_string());
        let link = timed(&format!("looking up {ifname}"), async {
            request.execute().try_next().await
        })
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifname}")))?;
        Ok(AnnounceLink {
            handle,
            ifname: ifname.to_string(),
            index: link.header.index,
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The addresses on the interface that carry our mark.
    pub async fn ours(&self) -> io::Result<BTreeSet<IpAddr>> {
        let request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.index)
            .execute();
        let messages = timed("listing addresses", request.try_collect::<Vec<_>>()).await?;
        Ok(messages
            .iter()
            .filter(|m| m.header.index == self.index && marked(m))
            .filter_map(crate::ipvs::vip::link::local_address)
            .collect())
    }

    /// Adds `address` as a host address with our mark and a lifetime of
    /// `lifetime_s` seconds, or refreshes that lifetime when it is there.
    pub async fn hold(&self, address: IpAddr, lifetime_s: u32) -> io::Result<()> {
        let mut request = self
            .handle
            .address()
            .add(self.index, address, host_prefix(address))
            .replace();
        let message = request.message_mut();
        if address.is_ipv6() {
            // Duplicate address detection would keep it unusable for a
            // while; the cluster decided it is ours.
            message.header.flags = AddressHeaderFlags::Nodad;
        }
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(OUR_PROTO)));
        // Preferred as long as valid: the kernel schedules its removal
        // from the preferred lifetime's end.
        let mut lifetime = CacheInfo::default();
        lifetime.ifa_preferred = lifetime_s;
        lifetime.ifa_valid = lifetime_s;
        message
            .attributes
            .push(AddressAttribute::CacheInfo(lifetime));
        timed(&format!("adding {address}"), request.execute()).await
    }

    /// Removes `address` (one of [`Self::ours`]); already gone is fine.
    pub async fn release(&self, address: IpAddr) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = match address {
            IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
            IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
        };
        message.header.prefix_len = host_prefix(address);
        message.header.index = self.index;
        message.attributes.push(AddressAttribute::Local(address));
        if address.is_ipv6() {
            message.attributes = vec![AddressAttribute::Address(address)];
        }
        match timed(
            &format!("removing {address}"),
            self.handle.address().del(message).execute(),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn host_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn marked(message: &AddressMessage) -> bool {
    message
        .attributes
        .iter()
        .any(|a| matches!(a, AddressAttribute::Protocol(p) if u8::from(*p) == OUR_PROTO))
}
