//! The kernel routing table ANNOUNCE_TABLE, which belongs to ipvs-manager:
//! one blackhole host route (/32, /128) per address this node can serve,
//! nothing else. It is the interface to the BGP speaker (the managed BIRD,
//! or the operator's own), which learns it as alien routes.
//!
//! Blackhole, because a route there only has to exist: the table is in no
//! `ip rule`, so nothing is forwarded by it, and a blackhole route needs no
//! interface (the VIP interface may not exist yet; the speaker puts its own
//! address as the next hop anyway).

use futures_util::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::sys::AsyncSocket;
use rtnetlink::RouteMessageBuilder;
use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// How long one route netlink request may take (it answers inside the
/// system call; this ends only a request whose answer got lost).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A route found in the table, as far as [`plan`] needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub destination: Option<IpAddr>,
    pub prefix_len: u8,
    pub kind: RouteType,
}

impl Found {
    /// The address this is the announcement of, when it is one of ours:
    /// a blackhole host route.
    fn announces(&self) -> Option<IpAddr> {
        let host = match self.destination? {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (self.kind == RouteType::BlackHole && self.prefix_len == host)
            .then_some(self.destination)
            .flatten()
    }
}

/// What a sync must do: the routes (indexes into the found list) to delete,
/// and the addresses to add.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub remove: Vec<usize>,
    pub add: Vec<IpAddr>,
}

/// The changes that make the table hold exactly one announcement for each
/// of `wanted`: every other route goes (anything an operator or another
/// program put there, a second copy, an address no longer served).
pub fn plan(wanted: &BTreeSet<IpAddr>, found: &[Found]) -> Plan {
    let mut kept = BTreeSet::new();
    let mut plan = Plan::default();
    for (i, route) in found.iter().enumerate() {
        match route.announces() {
            Some(a) if wanted.contains(&a) && kept.insert(a) => {}
            _ => plan.remove.push(i),
        }
    }
    plan.add = wanted.difference(&kept).copied().collect();
    plan
}

/// What a sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// The addresses announced in the table now.
    pub announced: BTreeSet<IpAddr>,
    pub added: Vec<IpAddr>,
    pub removed: usize,
}

/// A route netlink connection to the table, in the network namespace the
/// node runs in.
pub struct RouteTable {
    handle: rtnetlink::Handle,
    table: u32,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for RouteTable {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl RouteTable {
    /// Opens the socket (from inside a tokio runtime, which drives it).
    pub fn open(table: u32) -> io::Result<RouteTable> {
        let (mut connection, handle, _) = rtnetlink::new_connection()?;
        // Strict checking lets the kernel dump only our table, not every
        // route of a host that may hold a full Internet table. Without it
        // (an old kernel) the dump is filtered here instead.
        let _ = connection
            .socket_mut()
            .socket_ref()
            .set_netlink_get_strict_chk(true);
        let connection = tokio::spawn(connection);
        Ok(RouteTable {
            handle,
            table,
            connection,
        })
    }

    /// The routes in the table, both families.
    async fn dump(&self) -> io::Result<Vec<RouteMessage>> {
        let mut all = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut request = RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(self.table)
                .build();
            request.header.address_family = family;
            // Under strict checking a non-zero protocol or type filters the
            // dump: ask for every route of the table.
            request.header.protocol = RouteProtocol::Unspec;
            request.header.kind = RouteType::Unspec;
            let dump = self.handle.route().get(request).execute().try_collect();
            match timed(dump).await {
                Ok(routes) => all.extend::<Vec<RouteMessage>>(routes),
                // The table does not exist until its first route.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        all.retain(|r| table_of(r) == self.table);
        Ok(all)
    }

    /// The addresses announced in the table now.
    pub async fn announced(&self) -> io::Result<BTreeSet<IpAddr>> {
        let found: Vec<Found> = self.dump().await?.iter().map(found).collect();
        Ok(found.iter().filter_map(Found::announces).collect())
    }

    /// Makes the table hold exactly the announcements of `wanted`:
    /// withdrawals first, so a node never announces more than it serves.
    pub async fn sync(&self, wanted: &BTreeSet<IpAddr>) -> io::Result<Synced> {
        let routes = self.dump().await?;
        let found: Vec<Found> = routes.iter().map(found).collect();
        let plan = plan(wanted, &found);
        for &i in &plan.remove {
            let request = self.handle.route().del(routes[i].clone()).execute();
            match timed(request).await {
                Ok(()) => {}
                // Gone already (another sync, an operator): what we wanted.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("cannot delete a route from table {}: {e}", self.table),
                    ))
                }
            }
        }
        for address in &plan.add {
            let request = self
                .handle
                .route()
                .add(announcement(*address, self.table))
                .replace()
                .execute();
            timed(request).await.map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot add the route of {address} to table {}: {e}",
                        self.table
                    ),
                )
            })?;
        }
        let mut announced: BTreeSet<IpAddr> = found
            .iter()
            .filter_map(Found::announces)
            .filter(|a| wanted.contains(a))
            .collect();
        announced.extend(&plan.add);
        Ok(Synced {
            announced,
            added: plan.add,
            removed: plan.remove.len(),
        })
    }
}

/// The route announcing `address`: `blackhole ADDRESS/32 table T proto
/// static`.
fn announcement(address: IpAddr, table: u32) -> RouteMessage {
    let mut message = match address {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .table_id(table)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .table_id(table)
            .build(),
    };
    message.header.kind = RouteType::BlackHole;
    message.header.scope = RouteScope::Universe;
    // Not `kernel` (BIRD skips those) nor `bird` (BIRD takes those for its
    // own echoes): `static` is learnt as an alien route.
    message.header.protocol = RouteProtocol::Static;
    message
}

fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn found(route: &RouteMessage) -> Found {
    let destination = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    Found {
        destination,
        prefix_len: route.header.destination_prefix_length,
        kind: route.header.kind,
    }
}

async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
) -> io::Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(answer) => answer.map_err(crate::ipvs::vip::link::cause),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no answer from the kernel within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(destination: &str, prefix_len: u8, kind: RouteType) -> Found {
        Found {
            destination: Some(destination.parse().unwrap()),
            prefix_len,
            kind,
        }
    }

    fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
        addresses.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn the_table_ends_with_one_blackhole_host_route_per_served_address() {
        let found = [
            route("192.0.2.1", 32, RouteType::BlackHole),
            // No longer served.
            route("192.0.2.2", 32, RouteType::BlackHole),
            // Not ours: a wider prefix, another type, a default route.
            route("192.0.2.0", 24, RouteType::BlackHole),
            route("192.0.2.3", 32, RouteType::Unicast),
            Found {
                destination: None,
                prefix_len: 0,
                kind: RouteType::Unicast,
            },
            route("2001:db8::1", 128, RouteType::BlackHole),
            route("2001:db8::2", 64, RouteType::BlackHole),
        ];
        let plan = plan(
            &set(&["192.0.2.1", "192.0.2.3", "2001:db8::1", "2001:db8::9"]),
            &found,
        );
        assert_eq!(plan.remove, [1, 2, 3, 4, 6]);
        assert_eq!(plan.add, Vec::from_iter(set(&["192.0.2.3", "2001:db8::9"])));
    }

    #[test]
    fn a_second_copy_goes_and_nothing_wanted_empties_the_table() {
        let found = [
            route("192.0.2.1", 32, RouteType::BlackHole),
            route("192.0.2.1", 32, RouteType::BlackHole),
        ];
        let keep = plan(&set(&["192.0.2.1"]), &found);
        assert_eq!(
            keep,
            Plan {
                remove: vec![1],
                add: vec![]
            }
        );
        let withdraw = plan(&BTreeSet::new(), &found);
        assert_eq!(withdraw.remove, [0, 1]);
        assert!(withdraw.add.is_empty());
        assert_eq!(plan(&BTreeSet::new(), &[]), Plan::default());
    }

    #[test]
    fn the_announcement_is_a_static_blackhole_in_the_table() {
        let v4 = announcement("192.0.2.1".parse().unwrap(), 221);
        assert_eq!(v4.header.kind, RouteType::BlackHole);
        assert_eq!(v4.header.protocol, RouteProtocol::Static);
        assert_eq!(table_of(&v4), 221);
        assert_eq!(found(&v4).announces(), Some("192.0.2.1".parse().unwrap()));
        let v6 = announcement("2001:db8::1".parse().unwrap(), 70000);
        assert_eq!(table_of(&v6), 70000);
        assert_eq!(v6.header.destination_prefix_length, 128);
        assert_eq!(found(&v6).announces(), Some("2001:db8::1".parse().unwrap()));
    }
}
