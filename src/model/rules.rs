//! Rules of IPVS that do not depend on the host, in one place: the API's
//! validation, the ipvsadm parser and `MemoryKernel` each apply them from
//! here, so what one refuses the others refuse, for the same reason.

use super::ServiceFlags;
use std::net::IpAddr;

/// ipvsadm's `MAX_TIMEOUT`: 31 days, the largest persistence timeout (`-p`,
/// and the API's `persistence.timeout`) and protocol timeout (`--set`).
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// The largest weight: the kernel keeps it in an `int` (a larger value
/// arrives negative and `ip_vs_add_dest` answers ERANGE), and ipvsadm 1.31
/// as Debian ships it takes 0 to `INT_MAX` (a Debian patch; upstream's
/// ipvsadm stops at 65535). Both checked in the VM (tests/kernel/limits.rs).
pub const MAX_WEIGHT: u32 = i32::MAX as u32;

/// The largest connection threshold (`-x`, `-y`): ipvsadm reads them with
/// `string_to_number(0, INT_MAX)` (its man page says 65535, wrongly), and
/// the kernel, although the attribute is a u32, refuses an upper threshold
/// above `INT_MAX` with EINVAL (6.1.0-57, checked in the VM; a lower one
/// above it is above the upper one, ERANGE).
pub const MAX_THRESHOLD: u32 = i32::MAX as u32;

/// Why an IPv4 persistence netmask is refused for the cluster, if it is:
/// one whose ones are not contiguous (`255.0.255.0`). The kernel and
/// ipvsadm take any 32 bits (IPVS groups clients by `address & mask`), but
/// such a mask puts unrelated networks in one group — 10.1.2.3 and 10.9.2.3
/// share a persistence entry under 255.0.255.0 — which is never what a
/// persistence granularity means. `kernel restore` still takes what
/// `ipvsadm -R` takes; only the cluster's desired state refuses it.
pub fn netmask_with_holes(mask: std::net::Ipv4Addr) -> Option<String> {
    let bits = u32::from(mask);
    // Contiguous: the complement is 0…01…1, so adding one gives a power of
    // two (or 0 for the all-zero mask, whose complement is all ones).
    let complement = !bits;
    if complement & complement.wrapping_add(1) == 0 {
        return None;
    }
    let prefix = bits.leading_ones();
    let example = std::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    Some(format!(
        "{mask} has holes (its one bits are not contiguous): IPVS groups clients by \
         address & mask, so it would put unrelated networks in one persistence group; \
         give a prefix mask such as {example} (/{prefix})"
    ))
}

/// A scheduler flag (ipvsadm's `-b`): its name, its bit, and the scheduler
/// that gives the bit that name (`None`: the generic name, any scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedFlag {
    pub name: &'static str,
    pub bit: u32,
    pub scheduler: Option<&'static str>,
}

const fn flag(name: &'static str, bit: u32, scheduler: Option<&'static str>) -> SchedFlag {
    SchedFlag {
        name,
        bit,
        scheduler,
    }
}

/// The scheduler flags by name, as ipvsadm knows them: sh and mh name the
/// first two bits (fallback, port); every scheduler takes the generic
/// flag-1..3.
pub const SCHED_FLAGS: &[SchedFlag] = &[
    flag("sh-fallback", ServiceFlags::SCHED1, Some("sh")),
    flag("sh-port", ServiceFlags::SCHED2, Some("sh")),
    flag("mh-fallback", ServiceFlags::SCHED1, Some("mh")),
    flag("mh-port", ServiceFlags::SCHED2, Some("mh")),
    flag("flag-1", ServiceFlags::SCHED1, None),
    flag("flag-2", ServiceFlags::SCHED2, None),
    flag("flag-3", ServiceFlags::SCHED3, None),
];

/// The flag called `name`.
pub fn sched_flag(name: &str) -> Option<SchedFlag> {
    SCHED_FLAGS.iter().copied().find(|f| f.name == name)
}

/// The name of `bit` for `scheduler`: its own name where it has one, else
/// the generic one.
pub fn sched_flag_name(bit: u32, scheduler: &str) -> Option<&'static str> {
    let of = |f: &&SchedFlag| f.bit == bit;
    SCHED_FLAGS
        .iter()
        .filter(of)
        .find(|f| f.scheduler == Some(scheduler))
        .or_else(|| {
            SCHED_FLAGS
                .iter()
                .filter(of)
                .find(|f| f.scheduler.is_none())
        })
        .map(|f| f.name)
}

/// Why the kernel refuses `addr` as a real server whatever the host's
/// addresses (`ip_vs_new_dest`, EINVAL): IPv4 needs an address
/// `inet_addr_type` calls local or unicast, IPv6 a unicast, non-link-local
/// one unless it routes to loopback. What depends on the host is not
/// checked: the kernel accepts link-local and IPv4-mapped addresses that
/// are local to the host, and refuses the broadcast address of a local
/// IPv4 subnet.
pub fn refused_destination(addr: &IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) if a.octets()[0] == 0 => Some("0.0.0.0/8 is not a host address"),
        IpAddr::V4(a) if a.is_broadcast() => Some("it is the broadcast address"),
        IpAddr::V4(a) if a.is_multicast() => Some("it is a multicast address"),
        IpAddr::V6(a) if a.is_unspecified() => Some(":: is not a host address"),
        IpAddr::V6(a) if a.is_multicast() => Some("it is a multicast address"),
        IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
            Some("the kernel refuses link-local real servers")
        }
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped address: give the IPv4 address instead")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bit_is_named_by_its_scheduler_or_generically() {
        assert_eq!(
            sched_flag_name(ServiceFlags::SCHED1, "sh"),
            Some("sh-fallback")
        );
        assert_eq!(sched_flag_name(ServiceFlags::SCHED2, "mh"), Some("mh-port"));
        assert_eq!(sched_flag_name(ServiceFlags::SCHED3, "sh"), Some("flag-3"));
        assert_eq!(sched_flag_name(ServiceFlags::SCHED1, "rr"), Some("flag-1"));
        assert_eq!(sched_flag_name(ServiceFlags::ONE_PACKET, "rr"), None);
        assert_eq!(
            sched_flag("sh-port").map(|f| f.bit),
            Some(ServiceFlags::SCHED2)
        );
        assert_eq!(sched_flag("one-packet"), None);
    }

    #[test]
    fn netmasks_with_holes_are_named() {
        for mask in [
            "255.255.255.255",
            "255.255.255.254",
            "255.255.255.0",
            "255.128.0.0",
            "0.0.0.0",
        ] {
            assert_eq!(netmask_with_holes(mask.parse().unwrap()), None, "{mask}");
        }
        let why = netmask_with_holes("255.0.255.0".parse().unwrap()).unwrap();
        assert!(why.contains("255.0.255.0 has holes"), "{why}");
        assert!(why.contains("255.0.0.0 (/8)"), "{why}");
        for mask in ["0.0.0.10", "255.255.0.255", "0.255.255.255"] {
            let mask: std::net::Ipv4Addr = mask.parse().unwrap();
            assert!(netmask_with_holes(mask).is_some(), "{mask}");
        }
        // The largest contiguous one before the holes is suggested.
        let why = netmask_with_holes("0.255.255.255".parse().unwrap()).unwrap();
        assert!(why.contains("0.0.0.0 (/0)"), "{why}");
    }

    #[test]
    fn destinations_the_kernel_refuses_everywhere() {
        for refused in [
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "fe80::1",
            "::ffff:192.0.2.1",
        ] {
            let addr: IpAddr = refused.parse().unwrap();
            assert!(refused_destination(&addr).is_some(), "{refused}");
        }
        for accepted in ["192.0.2.1", "127.0.0.1", "2001:db8::1", "::1"] {
            let addr: IpAddr = accepted.parse().unwrap();
            assert_eq!(refused_destination(&addr), None, "{accepted}");
        }
    }
}
