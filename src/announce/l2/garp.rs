//! Telling the network where an address now lives: gratuitous ARP (IPv4)
//! and unsolicited Neighbour Advertisements (IPv6), built here byte by byte
//! and sent as whole Ethernet frames through an `AF_PACKET` socket (which
//! needs CAP_NET_RAW).
//!
//! Neighbours take them as updates of entries they already have (Linux
//! creates new entries from them only with `arp_accept` /
//! `accept_untracked_na`), which is the case that matters: the router's
//! entry for the address still names the old owner's MAC.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

/// A MAC address.
pub type Mac = [u8; 6];

pub(super) const ETH_P_ARP: u16 = 0x0806;
pub(super) const ETH_P_IPV6: u16 = 0x86dd;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
pub(super) const ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// NA flags: Override (the receiver replaces the link-layer address it has).
const NA_OVERRIDE: u32 = 0x2000_0000;
/// NDP option: target link-layer address.
const TARGET_LINK_LAYER: u8 = 2;
/// The shortest Ethernet frame without its FCS; shorter ones are padded.
const MIN_FRAME: usize = 60;
const BROADCAST: Mac = [0xff; 6];
/// ff02::1, all nodes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The frames that announce `address` at `mac`: for IPv4 a gratuitous ARP
/// request and a gratuitous ARP reply (some neighbours heed only one of the
/// two), for IPv6 one unsolicited NA with the override flag.
pub fn frames(address: IpAddr, mac: Mac) -> Vec<Vec<u8>> {
    match address {
        IpAddr::V4(a) => vec![arp(a, mac, ARP_REQUEST), arp(a, mac, ARP_REPLY)],
        IpAddr::V6(a) => vec![unsolicited_na(a, mac)],
    }
}

pub(super) fn ethernet(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MIN_FRAME + 26);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

/// A gratuitous ARP: sender and target protocol address both `address`,
/// broadcast. The request leaves the target hardware address zero (RFC
/// 5227's ARP announcement), the reply sets it to broadcast.
fn arp(address: Ipv4Addr, mac: Mac, operation: u16) -> Vec<u8> {
    let mut frame = ethernet(BROADCAST, mac, ETH_P_ARP);
    frame.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&operation.to_be_bytes());
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(if operation == ARP_REPLY {
        &BROADCAST
    } else {
        &[0; 6]
    });
    frame.extend_from_slice(&address.octets());
    frame.resize(MIN_FRAME, 0);
    frame
}

/// An unsolicited Neighbour Advertisement for `address` from itself to all
/// nodes, override set, carrying `mac` as the target link-layer address.
fn unsolicited_na(address: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    icmp.extend_from_slice(&NA_OVERRIDE.to_be_bytes());
    icmp.extend_from_slice(&address.octets());
    icmp.extend_from_slice(&[TARGET_LINK_LAYER, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&address, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    // 33:33 and the low 32 bits of the group (RFC 2464).
    let mut dst = [0x33, 0x33, 0, 0, 0, 0];
    dst[2..].copy_from_slice(&ALL_NODES.octets()[12..]);
    let mut frame = ethernet(dst, mac, ETH_P_IPV6);
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no class or flow
    let length = u16::try_from(icmp.len()).unwrap_or(u16::MAX);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.push(ICMPV6);
    frame.push(255); // hop limit: receivers drop NDP with any other
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The Internet checksum of an ICMPv6 message with its pseudo-header.
pub(super) fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    add(&length.to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(0xffff))
}

/// An `AF_PACKET` socket that sends frames out of one interface.
pub struct Sender {
    socket: OwnedFd,
    link: nix::sys::socket::LinkAddr,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("ifindex", &self.link.ifindex())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Opens the socket for `interface` (CAP_NET_RAW), in the calling
    /// thread's network namespace.
    pub fn open(interface: &str) -> io::Result<Sender> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
        // getifaddrs gives each interface's link-layer address as the
        // kernel's sockaddr_ll: its index and MAC, the destination a packet
        // socket sends to.
        let link = nix::ifaddrs::getifaddrs()
            .map_err(io::Error::from)?
            .filter(|i| i.interface_name == interface)
            .find_map(|i| i.address.as_ref()?.as_link_addr().copied())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("interface {interface} has no link-layer address"),
                )
            })?;
        // Protocol 0: it receives nothing, it only sends.
        let socket = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from)?;
        Ok(Sender { socket, link })
    }

    /// The interface's MAC.
    pub fn mac(&self) -> Mac {
        self.link.addr().unwrap_or_default()
    }

    /// The interface's link-layer address (its index and MAC).
    pub fn link(&self) -> nix::sys::socket::LinkAddr {
        self.link
    }

    /// Sends the frames announcing `address` from this interface.
    pub fn announce(&self, address: IpAddr) -> io::Result<()> {
        for frame in frames(address, self.mac()) {
            nix::sys::socket::sendto(
                self.socket.as_raw_fd(),
                &frame,
                &self.link,
                nix::sys::socket::MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn gratuitous_arp_bytes() {
        let frames = frames("10.80.0.1".parse().unwrap(), MAC);
        assert_eq!(frames.len(), 2);
        #[rustfmt::skip]
        let request: Vec<u8> = [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], &MAC, &[0x08, 0x06],
            &[0, 1, 0x08, 0, 6, 4, 0, 1], &MAC, &[10, 80, 0, 1],
            &[0, 0, 0, 0, 0, 0], &[10, 80, 0, 1],
        ].concat();
        assert_eq!(&frames[0][..42], &request[..]);
        assert_eq!(frames[0].len(), 60);
        assert!(frames[0][42..].iter().all(|b| *b == 0));
        // The reply: operation 2, target hardware address broadcast.
        assert_eq!(&frames[1][20..22], &[0, 2]);
        assert_eq!(&frames[1][32..38], &[0xff; 6]);
        assert_eq!(&frames[1][38..42], &[10, 80, 0, 1]);
    }

    #[test]
    fn unsolicited_na_bytes() {
        let vip: Ipv6Addr = "2001:db8::80".parse().unwrap();
        let frames = frames(IpAddr::V6(vip), MAC);
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(&f[14..22], &[0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(&f[22..38], &vip.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(&icmp[..2], &[136, 0]);
        assert_eq!(&icmp[4..8], &[0x20, 0, 0, 0], "override only");
        assert_eq!(&icmp[8..24], &vip.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        // The checksum verifies: summing with it in place gives zero.
        assert_eq!(icmpv6_checksum(&vip, &ALL_NODES, icmp), 0);
        // The value Python's ones'-complement sum gives over the same
        // pseudo-header and message (a second, independent computation).
        assert_eq!(&icmp[2..4], &[0x79, 0xed]);
    }
}
