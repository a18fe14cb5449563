//! The announcement's series: the mode and its state, each service address
//! (can serve, announced, since when), the BGP sessions, the L2 lease, the
//! sync daemons and the kernel settings — all read from the node's
//! [`AnnounceView`] at scrape time.

use crate::api::json::AnnounceView;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BgpPeerLabels {
    peer: String,
    peer_as: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SysctlLabels {
    name: String,
}

/// Unix seconds of an RFC 3339 time, when it is one.
fn unix_seconds(time: Option<&str>) -> Option<i64> {
    let t = humantime::parse_rfc3339(time?).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

fn family<
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
>(
    r: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) {
    let f = Family::<L, Gauge>::default();
    for (labels, value) in series {
        f.get_or_create(&labels).set(value);
    }
    r.register(name, help, f);
}

pub(super) fn announce_gauges(r: &mut Registry, a: &AnnounceView) {
    family(
        r,
        "ipvs_manager_announce_state",
        "1 for this node's announcement mode (ANNOUNCE) and its state now",
        [(
            ModeLabels {
                mode: a.mode.clone(),
                state: a.state.clone(),
            },
            1,
        )],
    );
    if let Some(since) = unix_seconds(a.since.as_deref()) {
        super::gauge(
            r,
            "ipvs_manager_announce_state_change_timestamp_seconds",
            "Unix time the announcement state last changed",
            since,
        );
    }
    let vip = |address: &std::net::IpAddr| VipLabels {
        address: address.to_string(),
    };
    family(
        r,
        "ipvs_manager_vip_can_serve",
        "1 while this node can serve the service address (programmed, a server up, not draining)",
        a.vips
            .iter()
            .map(|v| (vip(&v.address), i64::from(v.can_serve))),
    );
    family(
        r,
        "ipvs_manager_vip_announced",
        "1 while this node announces the service address (bgp: route offered; l2: held, answering ARP/ND)",
        a.vips.iter().map(|v| (vip(&v.address), i64::from(v.announced))),
    );
    family(
        r,
        "ipvs_manager_vip_announced_change_timestamp_seconds",
        "Unix time the address was last announced or withdrawn here",
        a.vips
            .iter()
            .filter_map(|v| Some((vip(&v.address), unix_seconds(v.since.as_deref())?))),
    );
    if let Some(bgp) = &a.bgp {
        let peer = |p: &crate::api::json::BgpPeerView| BgpPeerLabels {
            peer: p.address.to_string(),
            peer_as: p.asn.to_string(),
        };
        family(
            r,
            "ipvs_manager_bgp_session_up",
            "1 while the BGP session with the router is established",
            bgp.peers
                .iter()
                .map(|p| (peer(p), i64::from(p.state == "Established"))),
        );
        family(
            r,
            "ipvs_manager_bgp_routes_exported",
            "Host routes this node exports to the router now",
            bgp.peers
                .iter()
                .filter_map(|p| Some((peer(p), i64::try_from(p.exported?).ok()?))),
        );
        family(
            r,
            "ipvs_manager_bgp_bfd_up",
            "1 while the BFD session with the router is up",
            bgp.peers
                .iter()
                .filter_map(|p| Some((peer(p), i64::from(p.bfd.as_deref()? == "Up")))),
        );
    }
    if let Some(l2) = &a.l2 {
        super::gauge(
            r,
            "ipvs_manager_l2_lease_held",
            "1 while this node holds its lease: it may hold the addresses it owns",
            i64::from(l2.lease_held),
        );
        let left = l2.lease_left_ms.unwrap_or(0);
        let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        g.set(left as f64 / 1000.0);
        r.register(
            "ipvs_manager_l2_lease_remaining_seconds",
            "Seconds the lease has left without a renewal",
            g,
        );
    }
    if let Some(sync) = &a.sync {
        family(
            r,
            "ipvs_manager_sync_daemon_running",
            "1 while the kernel runs the IPVS connection-sync daemon in this role",
            [("master", sync.master), ("backup", sync.backup)].map(|(role, on)| {
                (
                    RoleLabels {
                        role: role.to_string(),
                    },
                    i64::from(on),
                )
            }),
        );
    }
    family(
        r,
        "ipvs_manager_sysctl_ok",
        "1 while the kernel setting the announcement mode needs holds the wanted value",
        a.sysctls.iter().map(|s| {
            (
                SysctlLabels {
                    name: s.name.clone(),
                },
                i64::from(s.ok),
            )
        }),
    );
}
