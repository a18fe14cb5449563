//! Translation between the domain model and IPVS attributes: requests built
//! from [`Change`]s, and [`ServiceEntry`]/[`DestEntry`] read from replies.

use super::stats::to_stats;
use super::{DecodeError, DestAttr, FlagsValue, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr};
use crate::ipvs::Change;
use crate::model::{
    DestEntry, DestKey, Destination, Family, Forward, Netmask, Persistence, Protocol, Scheduler,
    ServiceEntry, ServiceFlags, ServiceKey, Stats, Tunnel, TunnelChecksum, TunnelType,
    VirtualService,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Mask of the forwarding bits in a destination's connection flags.
const IP_VS_CONN_F_FWD_MASK: u32 = 0x7;

/// Addresses go out as a 16-byte `union nf_inet_addr`, as ipvsadm sends them.
fn addr_attr(addr: &IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    match addr {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => b.copy_from_slice(&a.octets()),
    }
    b
}

fn parse_addr(family: Family, b: &[u8], attr: &'static str) -> Result<IpAddr, DecodeError> {
    let len_err = || DecodeError::Length {
        attr,
        expected: 16,
        got: b.len(),
    };
    Ok(match family {
        Family::Ipv4 => {
            let o: [u8; 4] = b
                .get(..4)
                .ok_or_else(len_err)?
                .try_into()
                .map_err(|_| len_err())?;
            IpAddr::V4(Ipv4Addr::from(o))
        }
        Family::Ipv6 => {
            let o: [u8; 16] = b.try_into().map_err(|_| len_err())?;
            IpAddr::V6(Ipv6Addr::from(o))
        }
    })
}

/// The attributes that identify a service (AF, then fwmark or
/// protocol/address/port), as every service request and GET_DEST carry.
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    let mut attrs = vec![ServiceAttr::Af(key.family().af())];
    match key {
        ServiceKey::Fwmark { mark, .. } => attrs.push(ServiceAttr::Fwmark(*mark)),
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => {
            attrs.push(ServiceAttr::Protocol(protocol.number()));
            attrs.push(ServiceAttr::Addr(addr_attr(addr)));
            attrs.push(ServiceAttr::Port(*port));
        }
    }
    attrs
}

fn netmask_raw(mask: Netmask) -> u32 {
    match mask {
        // The mask's bytes in network order, read natively.
        Netmask::V4(m) => u32::from_ne_bytes(m.octets()),
        Netmask::V6(prefix) => u32::from(prefix),
    }
}

fn netmask_from_raw(family: Family, raw: u32) -> Netmask {
    match family {
        Family::Ipv4 => Netmask::V4(Ipv4Addr::from(raw.to_ne_bytes())),
        // Prefix lengths above 128 cannot come from a working kernel; clamp
        // rather than fail so that a listing still works.
        Family::Ipv6 => Netmask::V6(raw.min(128) as u8),
    }
}

/// Every attribute NEW_SERVICE and SET_SERVICE need, in ipvsadm's order. The
/// kernel insists on scheduler, flags, timeout and netmask even for
/// non-persistent services.
fn service_attrs(svc: &VirtualService) -> Vec<ServiceAttr> {
    let family = svc.key.family();
    let mut attrs = service_key_attrs(&svc.key);
    attrs.push(ServiceAttr::SchedName(svc.scheduler.as_str().to_string()));
    if let Some(pe) = &svc.pe_name {
        attrs.push(ServiceAttr::PeName(pe.clone()));
    }
    let persistent = svc.persistence.is_some();
    let flags = svc.flags.bits()
        | if persistent {
            ServiceFlags::PERSISTENT
        } else {
            0
        };
    attrs.push(ServiceAttr::Flags(FlagsValue {
        flags,
        mask: u32::MAX,
    }));
    let (timeout, netmask) = match svc.persistence {
        Some(p) => (p.timeout, p.netmask),
        None => (0, Netmask::host(family)),
    };
    attrs.push(ServiceAttr::Timeout(timeout));
    attrs.push(ServiceAttr::Netmask(netmask_raw(netmask)));
    attrs
}

/// Every attribute NEW_DEST and SET_DEST need, in ipvsadm's order.
fn dest_attrs(dest: &Destination) -> Vec<DestAttr> {
    let tunnel = dest.forward.tunnel().unwrap_or_default();
    vec![
        DestAttr::AddrFamily(dest.family().af()),
        DestAttr::Addr(addr_attr(&dest.addr)),
        DestAttr::Port(dest.port),
        DestAttr::FwdMethod(dest.forward.code()),
        DestAttr::Weight(dest.weight),
        DestAttr::TunType(tunnel.kind.code()),
        DestAttr::TunPort(tunnel.port),
        DestAttr::TunFlags(tunnel.checksum.code()),
        DestAttr::UpperThreshold(dest.upper_threshold),
        DestAttr::LowerThreshold(dest.lower_threshold),
    ]
}

fn dest_key_attrs(key: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(Family::of(&key.addr).af()),
        DestAttr::Addr(addr_attr(&key.addr)),
        DestAttr::Port(key.port),
    ]
}

/// The request message for one change.
pub fn change_request(change: &Change) -> IpvsMessage {
    use IpvsAttr::{Dest, Service};
    match change {
        Change::AddService(s) => {
            IpvsMessage::new(IpvsCmd::NewService, vec![Service(service_attrs(s))])
        }
        Change::EditService(s) => {
            IpvsMessage::new(IpvsCmd::SetService, vec![Service(service_attrs(s))])
        }
        Change::DelService(k) => {
            IpvsMessage::new(IpvsCmd::DelService, vec![Service(service_key_attrs(k))])
        }
        Change::AddDest(k, d) => IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![Service(service_key_attrs(k)), Dest(dest_attrs(d))],
        ),
        Change::EditDest(k, d) => IpvsMessage::new(
            IpvsCmd::SetDest,
            vec![Service(service_key_attrs(k)), Dest(dest_attrs(d))],
        ),
        Change::DelDest(k, d) => IpvsMessage::new(
            IpvsCmd::DelDest,
            vec![Service(service_key_attrs(k)), Dest(dest_key_attrs(d))],
        ),
        Change::Flush => IpvsMessage::new(IpvsCmd::Flush, vec![]),
        Change::Zero(None) => IpvsMessage::new(IpvsCmd::Zero, vec![]),
        Change::Zero(Some(k)) => {
            IpvsMessage::new(IpvsCmd::Zero, vec![Service(service_key_attrs(k))])
        }
        Change::SetTimeouts(t) => IpvsMessage::new(
            IpvsCmd::SetConfig,
            vec![
                IpvsAttr::TimeoutTcp(t.tcp),
                IpvsAttr::TimeoutTcpFin(t.tcp_fin),
                IpvsAttr::TimeoutUdp(t.udp),
            ],
        ),
    }
}

fn missing(what: &str) -> DecodeError {
    DecodeError::Reply(format!("{what} missing"))
}

/// Reads a service (without destinations) from the nested attributes of a
/// NEW_SERVICE reply.
pub fn service_entry(attrs: &[ServiceAttr]) -> Result<ServiceEntry, DecodeError> {
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, 0, 0, None, None);
    let (mut stats, mut stats64) = (None, None);
    for a in attrs {
        match a {
            ServiceAttr::Af(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => protocol = Some(*v),
            ServiceAttr::Addr(v) => addr = Some(v.as_slice()),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::Fwmark(v) => fwmark = Some(*v),
            ServiceAttr::SchedName(v) => sched = Some(v.as_str()),
            ServiceAttr::Flags(f) => flags = f.flags,
            ServiceAttr::Timeout(v) => timeout = *v,
            ServiceAttr::Netmask(v) => netmask = Some(*v),
            ServiceAttr::PeName(v) if !v.is_empty() => pe = Some(v.clone()),
            ServiceAttr::Stats(s) => stats = Some(to_stats(s)),
            ServiceAttr::Stats64(s) => stats64 = Some(to_stats(s)),
            _ => {}
        }
    }
    let af = af.ok_or_else(|| missing("service address family"))?;
    let family = Family::from_af(af)
        .ok_or_else(|| DecodeError::Reply(format!("service address family {af} unknown")))?;
    let key = match fwmark {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { family, mark },
        _ => {
            let number = protocol.ok_or_else(|| missing("service protocol"))?;
            ServiceKey::Inet {
                protocol: Protocol::from_number(number).ok_or_else(|| {
                    DecodeError::Reply(format!("service protocol {number} unknown"))
                })?,
                addr: parse_addr(
                    family,
                    addr.ok_or_else(|| missing("service address"))?,
                    "service address",
                )?,
                port: port.ok_or_else(|| missing("service port"))?,
            }
        }
    };
    let scheduler = Scheduler::new(sched.ok_or_else(|| missing("service scheduler"))?)
        .map_err(DecodeError::Reply)?;
    let persistence = (flags & ServiceFlags::PERSISTENT != 0).then(|| Persistence {
        timeout,
        netmask: netmask
            .map(|raw| netmask_from_raw(family, raw))
            .unwrap_or(Netmask::host(family)),
    });
    Ok(ServiceEntry {
        service: VirtualService {
            key,
            scheduler,
            flags: ServiceFlags::from_kernel(flags),
            persistence,
            pe_name: pe,
        },
        stats: stats64.or(stats).unwrap_or_default(),
        destinations: Vec::new(),
    })
}

/// Reads a destination from the nested attributes of a NEW_DEST reply;
/// `service_family` applies when the kernel sends no ADDR_FAMILY.
pub fn dest_entry(attrs: &[DestAttr], service_family: Family) -> Result<DestEntry, DecodeError> {
    let (mut addr, mut port, mut fwd, mut weight, mut family) = (None, None, None, 0, None);
    let (mut upper, mut lower, mut active, mut inactive, mut persist) = (0, 0, 0, 0, 0);
    let (mut tun_type, mut tun_port, mut tun_flags) = (0, 0, 0);
    let (mut stats, mut stats64): (Option<Stats>, Option<Stats>) = (None, None);
    for a in attrs {
        match a {
            DestAttr::Addr(v) => addr = Some(v.as_slice()),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => weight = *v,
            DestAttr::UpperThreshold(v) => upper = *v,
            DestAttr::LowerThreshold(v) => lower = *v,
            DestAttr::ActiveConns(v) => active = *v,
            DestAttr::InactiveConns(v) => inactive = *v,
            DestAttr::PersistentConns(v) => persist = *v,
            DestAttr::AddrFamily(v) => family = Some(*v),
            DestAttr::TunType(v) => tun_type = *v,
            DestAttr::TunPort(v) => tun_port = *v,
            DestAttr::TunFlags(v) => tun_flags = *v,
            DestAttr::Stats(s) => stats = Some(to_stats(s)),
            DestAttr::Stats64(s) => stats64 = Some(to_stats(s)),
            DestAttr::Other(_) => {}
        }
    }
    let family = match family {
        Some(af) => Family::from_af(af)
            .ok_or_else(|| DecodeError::Reply(format!("destination family {af} unknown")))?,
        None => service_family,
    };
    let addr = parse_addr(
        family,
        addr.ok_or_else(|| missing("destination address"))?,
        "destination address",
    )?;
    let code = fwd.ok_or_else(|| missing("destination forwarding method"))? & IP_VS_CONN_F_FWD_MASK;
    let forward = match code {
        0 => Forward::Masq,
        1 => Forward::Local,
        2 => Forward::Tunnel(Tunnel {
            kind: TunnelType::from_code(tun_type).ok_or_else(|| {
                DecodeError::Reply(format!("destination tunnel type {tun_type} unknown"))
            })?,
            port: tun_port,
            checksum: TunnelChecksum::from_code(tun_flags).ok_or_else(|| {
                DecodeError::Reply(format!("destination tunnel flags {tun_flags:#x} unknown"))
            })?,
        }),
        3 => Forward::Route,
        4 => Forward::Bypass,
        other => {
            return Err(DecodeError::Reply(format!(
                "destination forwarding method {other} unknown"
            )))
        }
    };
    Ok(DestEntry {
        dest: Destination {
            addr,
            port: port.ok_or_else(|| missing("destination port"))?,
            forward,
            weight,
            upper_threshold: upper,
            lower_threshold: lower,
        },
        active_conns: active,
        inactive_conns: inactive,
        persistent_conns: persist,
        stats: stats64.or(stats).unwrap_or_default(),
    })
}
