//! The VIP table's rules, on [`MemoryVips`].

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|s| ip(s)).collect()
}

#[test]
fn interface_names_follow_the_kernel() {
    for good in ["ipvs0", "a", "vip-lb_1.x", "fifteen-bytes-0", "ünï"] {
        assert!(validate_ifname(good).is_ok(), "{good:?} should be valid");
    }
    let cases = [
        ("", "it is empty"),
        ("sixteen-bytes-00", "longer than 15 bytes"),
        ("ünïcödé-ünï", "longer than 15 bytes"),
        (".", "are not interface names"),
        ("..", "are not interface names"),
        ("a/b", "'/'"),
        ("eth0:1", "':'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("ab\n", "whitespace"),
        ("a\0b", "NUL"),
    ];
    for (name, problem) in cases {
        let err = validate_ifname(name).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{name:?}")) && text.contains(problem),
            "{name:?}: {text}"
        );
        assert!(matches!(err, VipError::InvalidName { .. }));
        assert!(MemoryVips::new(name).is_err(), "{name:?}");
        assert!(LinkVips::new(name).is_err(), "{name:?}");
    }
}

#[test]
fn host_prefixes() {
    assert_eq!(host_prefix(&ip("192.0.2.1")), 32);
    assert_eq!(host_prefix(&ip("2001:db8::1")), 128);
}

#[test]
fn unusable_addresses_are_refused() {
    let refused = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ip("0.1.2.3"),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        ip("224.0.0.1"),
        ip("127.0.0.1"),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip("ff02::1"),
    ];
    for address in refused {
        assert!(not_bindable(&address).is_some(), "{address}");
    }
    for address in ["192.0.2.1", "10.0.0.1", "2001:db8::1", "fe80::1"] {
        assert_eq!(not_bindable(&ip(address)), None, "{address}");
    }
}

#[test]
fn first_sync_creates_the_interface_and_binds() {
    let mut vips = MemoryVips::new("ipvs0").unwrap();
    assert!(!vips.exists());
    assert_eq!(vips.addresses().unwrap(), BTreeSet::new());

    let wanted = set(&["192.0.2.10", "2001:db8::10"]);
    let report = vips.sync(&wanted);
    assert!(report.created && report.set_up, "{report:?}");
    assert_eq!(report.added, vec![ip("192.0.2.10"), ip("2001:db8::10")]);
    assert!(report.removed.is_empty() && report.is_ok() && report.changed());
    assert!(vips.exists() && vips.is_up());
    assert_eq!(vips.addresses().unwrap(), wanted);

    let again = vips.sync(&wanted);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(vips.syncs(), 2);
}

#[test]
fn unwanted_addresses_are_removed() {
    let mut vips = MemoryVips::new("ipvs0").unwrap();
    vips.sync(&set(&["192.0.2.10", "2001:db8::10"]));
    vips.add_by_hand(ip("198.51.100.7"));

    let report = vips.sync(&set(&["192.0.2.10"]));
    assert_eq!(report.removed, vec![ip("198.51.100.7"), ip("2001:db8::10")]);
    assert!(report.added.is_empty() && report.is_ok() && !report.set_up);
    assert_eq!(vips.current(), set(&["192.0.2.10"]));

    let report = vips.sync(&BTreeSet::new());
    assert_eq!(report.removed, vec![ip("192.0.2.10")]);
    assert!(vips.exists() && vips.is_up() && vips.current().is_empty());
}

#[test]
fn an_existing_interface_is_reused_and_set_up() {
    let mut vips = MemoryVips::new("ipvs0").unwrap();
    vips.create_by_hand();
    vips.add_by_hand(ip("203.0.113.5"));
    assert!(vips.exists() && !vips.is_up());

    let report = vips.sync(&set(&["192.0.2.20"]));
    assert!(!report.created && report.set_up, "{report:?}");
    assert_eq!(report.added, vec![ip("192.0.2.20")]);
    assert_eq!(report.removed, vec![ip("203.0.113.5")]);

    vips.set_down_by_hand();
    let report = vips.sync(&set(&["192.0.2.20"]));
    assert!(report.set_up && report.added.is_empty() && report.removed.is_empty());

    vips.delete_by_hand();
    assert_eq!(vips.addresses().unwrap(), BTreeSet::new());
    let report = vips.sync(&set(&["192.0.2.20"]));
    assert!(report.created && report.added == vec![ip("192.0.2.20")]);
}

#[test]
fn one_failing_address_does_not_stop_the_others() {
    let mut vips = MemoryVips::new("ipvs0").unwrap();
    vips.add_by_hand(ip("198.51.100.1"));
    vips.add_by_hand(ip("198.51.100.2"));
    vips.fail(VipOp::Add(ip("192.0.2.2")), libc::EPERM, Some(1));
    vips.fail(VipOp::Remove(ip("198.51.100.1")), libc::EBUSY, Some(1));

    let wanted = set(&["192.0.2.1", "192.0.2.2", "224.0.0.1", "2001:db8::1"]);
    let report = vips.sync(&wanted);
    assert_eq!(report.added, vec![ip("192.0.2.1"), ip("2001:db8::1")]);
    assert_eq!(report.removed, vec![ip("198.51.100.2")]);
    assert!(report.error.is_none() && !report.is_ok());
    let failed: Vec<_> = report.failed.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        failed,
        vec![ip("198.51.100.1"), ip("192.0.2.2"), ip("224.0.0.1")]
    );
    for (address, error) in &report.failed {
        assert_eq!(error.address(), Some(*address));
        assert!(error.to_string().contains("ipvs0"), "{error}");
    }
    let (_, add) = &report.failed[1];
    assert_eq!(add.errno(), Some(libc::EPERM));
    assert_eq!(
        add.to_string(),
        "failed to add 192.0.2.2/32 to interface ipvs0"
    );
    assert!(std::error::Error::source(add).is_some());
    let (_, remove) = &report.failed[0];
    assert_eq!(remove.errno(), Some(libc::EBUSY));
    let (_, multicast) = &report.failed[2];
    assert!(matches!(multicast, VipError::NotBindable { .. }));
    assert_eq!(multicast.errno(), None);

    // The faults were used up: the next sync finishes the job.
    let report = vips.sync(&wanted);
    assert_eq!(report.added, vec![ip("192.0.2.2")]);
    assert_eq!(report.removed, vec![ip("198.51.100.1")]);
    assert_eq!(
        report.failed.len(),
        1,
        "the multicast address stays refused"
    );
    assert_eq!(
        vips.current(),
        set(&["192.0.2.1", "192.0.2.2", "2001:db8::1"])
    );
}

#[test]
fn interface_failures_touch_no_address() {
    let mut vips = MemoryVips::new("ipvs0").unwrap();
    vips.fail(VipOp::Link, libc::EPERM, Some(1));
    let report = vips.sync(&set(&["192.0.2.1"]));
    assert!(matches!(report.error, Some(VipError::Create { .. })));
    assert!(!report.changed() && report.failed.is_empty() && !vips.exists());

    vips.create_by_hand();
    vips.fail(VipOp::Link, libc::ENOMEM, Some(1));
    let report = vips.sync(&set(&["192.0.2.1"]));
    assert!(matches!(report.error, Some(VipError::SetUp { .. })));
    assert!(!vips.is_up() && vips.current().is_empty());

    vips.fail(VipOp::Link, libc::EIO, None);
    assert!(matches!(vips.addresses(), Err(VipError::List { .. })));
    let report = vips.sync(&set(&["192.0.2.1"]));
    let error = report.error.unwrap();
    assert!(matches!(error, VipError::SetUp { .. }));
    assert_eq!(error.errno(), Some(libc::EIO));

    vips.clear_faults();
    assert!(vips.sync(&set(&["192.0.2.1"])).is_ok());
    assert_eq!(vips.addresses().unwrap(), set(&["192.0.2.1"]));
}

#[test]
fn clones_share_the_interface() {
    let script = MemoryVips::new("ipvs0").unwrap();
    let mut owned: Box<dyn VipTable> = Box::new(script.clone());
    owned.sync(&set(&["192.0.2.1"]));
    assert_eq!(script.current(), set(&["192.0.2.1"]));
    script.add_by_hand(ip("192.0.2.99"));
    assert_eq!(
        owned.addresses().unwrap(),
        set(&["192.0.2.1", "192.0.2.99"])
    );
    assert_eq!(script.syncs(), 1);
}

#[test]
fn reports_tell_changes_from_failures() {
    let empty = VipReport::default();
    assert!(empty.is_empty() && empty.is_ok() && !empty.changed());
    let failed = VipReport {
        error: Some(VipError::NotDummy {
            ifname: "ipvs0".into(),
            kind: "a bridge interface".into(),
        }),
        ..VipReport::default()
    };
    assert!(!failed.is_empty() && !failed.is_ok() && !failed.changed());
}
