//! The order ipvsadm lists services and destinations in: libipvs's
//! `ipvs_cmp_services` / `ipvs_cmp_dests` run through glibc's `qsort`.
//!
//! Both comparators subtract unsigned 32-bit values and read the difference
//! as a signed `int`, so 10.0.0.1 sorts *after* 200.0.0.1 (0x0a000001 -
//! 0xc8000001 wraps to a positive number), and the comparison is not even
//! transitive. With such a comparator the result depends on the sorting
//! algorithm, so we run glibc's: its `qsort` is a merge sort (`msort.c`;
//! glibc falls back to another algorithm only when it cannot allocate a
//! buffer, which a listing never hits).

use crate::model::{DestEntry, Destination, Family, ServiceEntry, ServiceKey};
use std::net::IpAddr;

/// The fields `ipvs_cmp_services` reads, as libipvs holds them.
struct ServiceSortKey {
    fwmark: u32,
    af: u16,
    protocol: u16,
    /// The address as four host-order words (IPv4 in the first, the rest 0).
    addr: [u32; 4],
    port: u16,
}

fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let s = a.segments();
            let w = |i: usize| (u32::from(s[i]) << 16) | u32::from(s[i + 1]);
            [w(0), w(2), w(4), w(6)]
        }
    }
}

impl ServiceSortKey {
    fn of(key: &ServiceKey) -> ServiceSortKey {
        match key {
            ServiceKey::Inet {
                protocol,
                addr,
                port,
            } => ServiceSortKey {
                fwmark: 0,
                af: Family::of(addr).af(),
                protocol: protocol.number(),
                addr: words(addr),
                port: *port,
            },
            // libipvs leaves protocol, address and port of a fwmark service 0.
            ServiceKey::Fwmark { family, mark } => ServiceSortKey {
                fwmark: *mark,
                af: family.af(),
                protocol: 0,
                addr: [0; 4],
                port: 0,
            },
        }
    }
}

/// `u32 - u32` read as `int`, as C does when the result lands in an `int`.
fn wrapping_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// The address part shared by both comparators; `af` is the first entry's.
fn cmp_addr(af: u16, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    if af == Family::AF_INET6 {
        a.iter()
            .zip(b)
            .map(|(x, y)| wrapping_diff(*x, *y))
            .find(|r| *r != 0)
            .unwrap_or(0)
    } else {
        wrapping_diff(a[0], b[0])
    }
}

/// libipvs's `ipvs_cmp_services`.
fn cmp_services(a: &ServiceSortKey, b: &ServiceSortKey) -> i32 {
    let r = wrapping_diff(a.fwmark, b.fwmark);
    if r != 0 {
        return r;
    }
    // u16 operands are promoted to int: these differences do not wrap.
    let r = i32::from(a.af) - i32::from(b.af);
    if r != 0 {
        return r;
    }
    let r = i32::from(a.protocol) - i32::from(b.protocol);
    if r != 0 {
        return r;
    }
    let r = cmp_addr(a.af, &a.addr, &b.addr);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// libipvs's `ipvs_cmp_dests`. A tunnel destination may have another family
/// than its neighbours; the first one's family decides how many words count.
fn cmp_dests(a: &Destination, b: &Destination) -> i32 {
    let r = cmp_addr(a.family().af(), &words(&a.addr), &words(&b.addr));
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// glibc's `msort_with_tmp` over indices: split in halves (the first one
/// `n / 2` long), sort each, merge taking from the first half while
/// `cmp(first, second) <= 0`.
fn msort(v: &mut [usize], tmp: &mut Vec<usize>, cmp: &dyn Fn(usize, usize) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let (b1, b2) = v.split_at_mut(n / 2);
    msort(b1, tmp, cmp);
    msort(b2, tmp, cmp);
    tmp.clear();
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (b1.get(i), b2.get(j)) {
        if cmp(x, y) <= 0 {
            tmp.push(x);
            i += 1;
        } else {
            tmp.push(y);
            j += 1;
        }
    }
    tmp.extend_from_slice(b1.get(i..).unwrap_or_default());
    // What is left of the second half is already in place at the end.
    for (slot, &x) in v.iter_mut().zip(tmp.iter()) {
        *slot = x;
    }
}

/// The order glibc's `qsort` puts `items` in with `cmp`, as indices.
fn glibc_order<T>(items: &[T], cmp: impl Fn(&T, &T) -> i32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut tmp = Vec::with_capacity(items.len());
    let by_index = |a: usize, b: usize| match (items.get(a), items.get(b)) {
        (Some(x), Some(y)) => cmp(x, y),
        _ => 0,
    };
    msort(&mut order, &mut tmp, &by_index);
    order
}

/// Services in ipvsadm's listing order; `services` in the kernel's order.
pub(super) fn services(services: &[ServiceEntry]) -> Vec<&ServiceEntry> {
    let keys: Vec<ServiceSortKey> = services
        .iter()
        .map(|s| ServiceSortKey::of(&s.service.key))
        .collect();
    glibc_order(&keys, cmp_services)
        .into_iter()
        .filter_map(|i| services.get(i))
        .collect()
}

/// Destinations in ipvsadm's listing order; `dests` in the kernel's order.
pub(super) fn dests(dests: &[DestEntry]) -> Vec<&DestEntry> {
    glibc_order(dests, |a, b| cmp_dests(&a.dest, &b.dest))
        .into_iter()
        .filter_map(|i| dests.get(i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort_u32(values: &[u32]) -> Vec<u32> {
        glibc_order(values, |a, b| wrapping_diff(*a, *b))
            .into_iter()
            .filter_map(|i| values.get(i).copied())
            .collect()
    }

    #[test]
    fn merge_sort_is_stable_and_sorts() {
        let items = [(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        let sorted: Vec<_> = glibc_order(&items, |a, b| a.0 - b.0)
            .into_iter()
            .filter_map(|i| items.get(i).map(|x| x.1))
            .collect();
        assert_eq!(sorted, vec!['b', 'e', 'd', 'a', 'c']);
    }

    #[test]
    fn wrapping_comparison_puts_high_addresses_first() {
        // 0x0a000001 - 0xc8000001 is positive as an int: 10.0.0.1 > 200.0.0.1.
        assert_eq!(
            sort_u32(&[0x0a00_0001, 0xc800_0001]),
            vec![0xc800_0001, 0x0a00_0001]
        );
        // Within less than 2^31 of each other, the order is the natural one.
        assert_eq!(
            sort_u32(&[0x0a00_0003, 0x0a00_0001, 0x0a00_0002]),
            vec![0x0a00_0001, 0x0a00_0002, 0x0a00_0003]
        );
    }

    #[test]
    fn non_transitive_inputs_follow_glibc_merge_order() {
        // a=0, b=0x60000000, c=0xc0000000: a<b, b<c, c<a. glibc's merge sort
        // on [a, b, c]: halves [a] and [b, c]; [b, c] stays; merge a vs b:
        // a<=b takes a, then b, c.
        let (a, b, c) = (0u32, 0x6000_0000, 0xc000_0000);
        assert_eq!(sort_u32(&[a, b, c]), vec![a, b, c]);
        // [c, a, b]: halves [c] and [a, b]; merge c vs a: c<a takes c, then a, b.
        assert_eq!(sort_u32(&[c, a, b]), vec![c, a, b]);
        // [b, c, a]: halves [b] and [c, a] -> [c, a]; merge b vs c: b<c, b first.
        assert_eq!(sort_u32(&[b, c, a]), vec![b, c, a]);
    }
}
