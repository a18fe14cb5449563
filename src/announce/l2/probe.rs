//! Before taking an address, asking the network whether another host
//! still answers for it: an ARP probe (RFC 5227: sender address 0.0.0.0, so
//! nobody's cache learns from it) for IPv4, a duplicate-address-detection
//! Neighbour Solicitation (source ::) for IPv6. Any ARP frame whose sender
//! is the address, or Neighbour Advertisement for it, from another MAC
//! means a copy is still live — typically the kernel of an owner whose
//! agent was killed, which holds the address until its lifetime ends — and
//! the node does not take the address yet.
//!
//! This is what makes the leader's fence independent of the kernel's
//! coarse lifetime timer (see `lease`): the fence covers agents that can
//! drop, the probe sees copies that cannot.

use super::garp::{ethernet, icmpv6_checksum, Mac, ETH_P_ARP, ETH_P_IPV6, ICMPV6};
use nix::sys::socket::{self, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// How many probes, how far apart, and how long to listen after the last:
/// on one LAN an answer takes well under a millisecond; three probes ride
/// out a lost frame.
pub const PROBES: u32 = 3;
pub const PROBE_INTERVAL: Duration = Duration::from_millis(30);
pub const LISTEN_AFTER: Duration = Duration::from_millis(60);

/// The frame that asks who holds `address`, from `mac`.
pub fn frame(address: IpAddr, mac: Mac) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => arp_probe(a, mac),
        IpAddr::V6(a) => dad_solicitation(a, mac),
    }
}

/// An ARP request for `address` with sender protocol address 0.0.0.0.
fn arp_probe(address: Ipv4Addr, mac: Mac) -> Vec<u8> {
    let mut frame = ethernet([0xff; 6], mac, ETH_P_ARP);
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&address.octets());
    frame.resize(60, 0);
    frame
}

/// The solicited-node multicast group of `address` (RFC 4291).
fn solicited_node(address: Ipv6Addr) -> Ipv6Addr {
    let o = address.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A Neighbour Solicitation for `address` from the unspecified address to
/// its solicited-node group: a holder answers with an advertisement to all
/// nodes (RFC 4862's duplicate address detection).
fn dad_solicitation(address: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let group = solicited_node(address);
    let mut icmp = Vec::with_capacity(24);
    icmp.extend_from_slice(&[NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(&address.octets());
    let sum = icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &group, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut dst = [0x33, 0x33, 0, 0, 0, 0];
    dst[2..].copy_from_slice(&group.octets()[12..]);
    let mut frame = ethernet(dst, mac, ETH_P_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    let length = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(ICMPV6);
    frame.push(255);
    frame.extend_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    frame.extend_from_slice(&group.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// Which of `addresses` `frame` shows held by another host, and its MAC:
/// an ARP frame sent from the address, or an advertisement for it, whose
/// sender is not `own`.
pub fn held_elsewhere(
    frame: &[u8],
    addresses: &BTreeSet<IpAddr>,
    own: Mac,
) -> Option<(IpAddr, Mac)> {
    let source: Mac = frame.get(6..12)?.try_into().ok()?;
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let (address, mac) = match ethertype {
        ETH_P_ARP => {
            // Ethernet/IPv4 only: hardware 1, protocol 0x0800, lengths 6 and 4.
            if frame.get(14..20)? != [0, 1, 0x08, 0, 6, 4] {
                return None;
            }
            let sender: Mac = frame.get(22..28)?.try_into().ok()?;
            let ip: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
            (IpAddr::from(ip), sender)
        }
        ETH_P_IPV6 => {
            // No extension headers: NDP is sent without them.
            if *frame.get(20)? != ICMPV6 || *frame.get(54)? != NEIGHBOR_ADVERTISEMENT {
                return None;
            }
            let target: [u8; 16] = frame.get(62..78)?.try_into().ok()?;
            (IpAddr::from(target), source)
        }
        _ => return None,
    };
    (addresses.contains(&address) && mac != own && source != own).then_some((address, mac))
}

/// The kernel-side filter of the listening socket (classic BPF): ARP
/// frames, and IPv6 frames carrying an ICMPv6 Neighbour Advertisement; so
/// a busy interface's traffic never reaches this process.
fn filter() -> [socket2::SockFilter; 9] {
    use socket2::SockFilter as F;
    const LDH_ABS: u16 = 0x28;
    const LDB_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    [
        F::new(LDH_ABS, 0, 0, 12),                              // 0: ethertype
        F::new(JEQ_K, 5, 0, u32::from(ETH_P_ARP)),              // 1: ARP → 7
        F::new(JEQ_K, 0, 5, u32::from(ETH_P_IPV6)),             // 2: else not IPv6 → 8
        F::new(LDB_ABS, 0, 0, 20),                              // 3: next header
        F::new(JEQ_K, 0, 3, u32::from(ICMPV6)),                 // 4: not ICMPv6 → 8
        F::new(LDB_ABS, 0, 0, 54),                              // 5: ICMPv6 type
        F::new(JEQ_K, 0, 1, u32::from(NEIGHBOR_ADVERTISEMENT)), // 6: not NA → 8
        F::new(RET_K, 0, 0, 0x0004_0000),                       // 7: accept
        F::new(RET_K, 0, 0, 0),                                 // 8: drop
    ]
}

/// A packet socket on the interface of `link` that receives what
/// [`filter`] lets through, opened for one probe (so it buffers nothing
/// between probes).
fn listener(link: &LinkAddr) -> io::Result<OwnedFd> {
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(io::Error::from)?;
    let fd = socket2::Socket::from(fd);
    fd.attach_filter(&filter())?;
    let fd = OwnedFd::from(fd);
    // Bound to the interface; protocol 0 in the address keeps ETH_P_ALL.
    socket::bind(fd.as_raw_fd(), link).map_err(io::Error::from)?;
    // Frames from other interfaces queued before the bind.
    set_timeout(&fd, Duration::from_millis(1))?;
    let mut buf = [0u8; 128];
    while socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok() {}
    Ok(fd)
}

fn set_timeout(fd: &OwnedFd, wait: Duration) -> io::Result<()> {
    let wait = nix::sys::time::TimeVal::new(
        i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        i64::from(wait.subsec_micros().max(1000)),
    );
    socket::setsockopt(fd, socket::sockopt::ReceiveTimeout, &wait).map_err(io::Error::from)
}

/// Probes `addresses` from the interface of `link` (whose MAC is ours):
/// [`PROBES`] probes each, [`PROBE_INTERVAL`] apart, listening until
/// [`LISTEN_AFTER`] past the last. Returns those another host answered for,
/// with its MAC. Blocking: about 120 ms.
pub fn probe(link: &LinkAddr, addresses: &BTreeSet<IpAddr>) -> io::Result<BTreeMap<IpAddr, Mac>> {
    let own: Mac = link.addr().unwrap_or_default();
    let fd = listener(link)?;
    let mut answered = BTreeMap::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    for round in 0..PROBES {
        for &address in addresses {
            socket::sendto(
                fd.as_raw_fd(),
                &frame(address, own),
                link,
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
        }
        let until = if round + 1 == PROBES {
            start + PROBE_INTERVAL * (PROBES - 1) + LISTEN_AFTER
        } else {
            start + PROBE_INTERVAL * (round + 1)
        };
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            set_timeout(&fd, left)?;
            match socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => {
                    if let Some((address, mac)) = held_elsewhere(&buf[..n], addresses, own) {
                        answered.insert(address, mac);
                    }
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }
    Ok(answered)
}

/// A MAC as operators write it.
pub fn mac_text(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: Mac = [0x02, 0, 0, 0, 0, 1];
    const OTHER: Mac = [0x02, 0, 0, 0, 0, 2];

    fn set(a: &[&str]) -> BTreeSet<IpAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn arp_probe_bytes() {
        let f = frame("10.80.0.1".parse().unwrap(), OWN);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0xff; 6][..], &OWN, &[0x08, 0x06],
            &[0, 1, 0x08, 0, 6, 4, 0, 1], &OWN, &[0, 0, 0, 0],
            &[0; 6], &[10, 80, 0, 1],
        ].concat();
        assert_eq!(&f[..42], &want[..]);
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn dad_solicitation_bytes() {
        let vip: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        let f = frame(IpAddr::V6(vip), OWN);
        assert_eq!(f.len(), 14 + 40 + 24);
        // To the solicited-node group ff02::1:ff12:3456 and its MAC.
        assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!(&f[14..22], &[0x60, 0, 0, 0, 0, 24, 58, 255]);
        assert_eq!(&f[22..38], &[0; 16], "from the unspecified address");
        assert_eq!(&f[38..54], &group.octets());
        let icmp = &f[54..];
        assert_eq!(&icmp[..2], &[135, 0]);
        assert_eq!(&icmp[4..8], &[0; 4]);
        assert_eq!(&icmp[8..24], &vip.octets());
        assert_eq!(icmpv6_checksum(&Ipv6Addr::UNSPECIFIED, &group, icmp), 0);
    }

    /// The reply Linux sends to a probe: from the holder, sender address
    /// the probed one, to the prober's MAC.
    fn arp_reply(address: [u8; 4], from: Mac, to: Mac) -> Vec<u8> {
        [
            &to[..],
            &from,
            &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2],
            &from,
            &address,
            &to,
            &[0, 0, 0, 0],
        ]
        .concat()
    }

    #[test]
    fn an_answer_from_another_host_shows_the_address_held() {
        let vips = set(&["10.80.0.1", "2001:db8::80"]);
        let reply = arp_reply([10, 80, 0, 1], OTHER, OWN);
        assert_eq!(
            held_elsewhere(&reply, &vips, OWN),
            Some(("10.80.0.1".parse().unwrap(), OTHER))
        );
        // Our own frames, other addresses and truncated frames do not.
        assert_eq!(
            held_elsewhere(&arp_reply([10, 80, 0, 1], OWN, OWN), &vips, OWN),
            None
        );
        assert_eq!(
            held_elsewhere(&arp_reply([10, 80, 0, 2], OTHER, OWN), &vips, OWN),
            None
        );
        assert_eq!(held_elsewhere(&reply[..30], &vips, OWN), None);
        assert_eq!(held_elsewhere(&[], &vips, OWN), None);
        // A probe (sender 0.0.0.0) is no answer.
        let probe = frame("10.80.0.1".parse().unwrap(), OTHER);
        assert_eq!(held_elsewhere(&probe, &vips, OWN), None);
        // A holder's gratuitous ARP is one.
        let garp = &super::super::garp::frames("10.80.0.1".parse().unwrap(), OTHER)[0];
        assert!(held_elsewhere(garp, &vips, OWN).is_some());
        // An advertisement for the IPv6 address from another MAC is one; a
        // solicitation is not.
        let v6: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let na = &super::super::garp::frames(IpAddr::V6(v6), OTHER)[0];
        assert_eq!(
            held_elsewhere(na, &vips, OWN),
            Some((IpAddr::V6(v6), OTHER))
        );
        assert_eq!(
            held_elsewhere(&frame(IpAddr::V6(v6), OTHER), &vips, OWN),
            None
        );
        let mine = &super::super::garp::frames(IpAddr::V6(v6), OWN)[0];
        assert_eq!(held_elsewhere(mine, &vips, OWN), None);
        assert_eq!(mac_text(&OTHER), "02:00:00:00:00:02");
    }
}
