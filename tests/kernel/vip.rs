//! The VIP table against the real kernel: `LinkVips` creates and owns its
//! dummy interface, binds exactly the wanted addresses, and leaves every
//! other interface alone. `ip -j` is the oracle for what is bound.

use std::collections::BTreeSet;
use std::net::IpAddr;

use libtest_mimic::Failed;
use serde_json::Value;

use crate::support::Netns;
use ipvs_manager::errors::chain;
use ipvs_manager::ipvs::vip::{LinkVips, VipError, VipReport, VipTable};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|s| ip(s)).collect()
}

/// One address as `ip -j addr` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Shown {
    address: IpAddr,
    prefix_len: u64,
    nodad: bool,
}

fn shown(address: &str, prefix_len: u64, nodad: bool) -> Shown {
    Shown {
        address: ip(address),
        prefix_len,
        nodad,
    }
}

/// The JSON object `ip -j [-d] ...` prints for `dev`.
fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let out = ns.ip(args);
    let mut parsed: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("ip {args:?} printed no JSON ({e}):\n{out}"));
    parsed
        .get_mut(0)
        .map(Value::take)
        .unwrap_or_else(|| panic!("ip {args:?} showed no interface:\n{out}"))
}

/// Every address on `dev`, as `ip -j addr show dev DEV` lists it.
fn addresses_shown(ns: &Netns, dev: &str) -> BTreeSet<Shown> {
    let link = ip_json(ns, &["-j", "addr", "show", "dev", dev]);
    let infos = link["addr_info"].as_array().cloned().unwrap_or_default();
    infos
        .iter()
        .map(|info| Shown {
            address: ip(info["local"].as_str().unwrap()),
            prefix_len: info["prefixlen"].as_u64().unwrap(),
            nodad: info["nodad"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// `ip -j -d link show dev DEV`: flags, kind, address generation mode.
struct LinkShown {
    index: u64,
    up: bool,
    kind: Option<String>,
    addr_gen_mode: Option<String>,
}

fn link_shown(ns: &Netns, dev: &str) -> LinkShown {
    let link = ip_json(ns, &["-j", "-d", "link", "show", "dev", dev]);
    LinkShown {
        index: link["ifindex"].as_u64().unwrap(),
        up: link["flags"]
            .as_array()
            .is_some_and(|flags| flags.iter().any(|f| f == "UP")),
        kind: link["linkinfo"]["info_kind"].as_str().map(str::to_owned),
        addr_gen_mode: link["inet6_addr_gen_mode"].as_str().map(str::to_owned),
    }
}

/// A table opened inside `ns`: its socket belongs to the namespace, so the
/// calls the trial then makes from its own thread act there.
fn open(ns: &Netns) -> LinkVips {
    ns.run(|| LinkVips::new("ipvs0"))
        .unwrap_or_else(|e| panic!("{}", chain(&e)))
}

/// Fails with the whole report unless it has no error at all.
fn ok(report: VipReport) -> Result<VipReport, Failed> {
    if report.is_ok() {
        return Ok(report);
    }
    let mut text = String::new();
    if let Some(e) = &report.error {
        text += &format!("interface: {}\n", chain(e));
    }
    for (address, e) in &report.failed {
        text += &format!("{address}: {}\n", chain(e));
    }
    Err(format!("sync failed:\n{text}{report:?}").into())
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), Failed> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}").into())
    }
}

/// The whole life of the interface in a fresh load-balancer namespace: the
/// first sync creates `ipvs0` and binds; the same set again changes nothing;
/// smaller sets, and addresses added by hand, are pruned; `d0` and `lo`,
/// which hold addresses of their own, are never touched.
pub fn sync_creates_binds_and_prunes() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    let others = |ns: &Netns| (addresses_shown(ns, "d0"), addresses_shown(ns, "lo"));
    let before = others(&ns);
    let mut vips = open(&ns);
    expect(
        "addresses before the first sync",
        vips.addresses()?,
        set(&[]),
    )?;

    let wanted = set(&["192.0.2.10", "2001:db8::10"]);
    let report = ok(vips.sync(&wanted))?;
    expect("created", (report.created, report.set_up), (true, true))?;
    expect(
        "added",
        report.added,
        vec![ip("192.0.2.10"), ip("2001:db8::10")],
    )?;
    expect("removed", report.removed, vec![])?;
    expect(
        "ip addr show dev ipvs0",
        addresses_shown(&ns, "ipvs0"),
        [
            shown("192.0.2.10", 32, false),
            shown("2001:db8::10", 128, true),
        ]
        .into(),
    )?;
    let link = link_shown(&ns, "ipvs0");
    expect("ipvs0 is up", link.up, true)?;
    expect("ipvs0 kind", link.kind.as_deref(), Some("dummy"))?;
    expect(
        "ipvs0 inet6_addr_gen_mode",
        link.addr_gen_mode.as_deref(),
        Some("none"),
    )?;
    expect("addresses()", vips.addresses()?, wanted.clone())?;
    // The socket, not the calling thread, decides the namespace: this thread
    // is in the VM's initial namespace, which has no ipvs0.
    let initial = std::process::Command::new("ip")
        .args(["link", "show", "dev", "ipvs0"])
        .output()?;
    expect(
        "ipvs0 in the initial namespace",
        initial.status.success(),
        false,
    )?;

    let again = vips.sync(&wanted);
    if !again.is_empty() {
        return Err(format!("the same set again changed something: {again:?}").into());
    }

    let report = ok(vips.sync(&set(&["192.0.2.10"])))?;
    expect("removed", report.removed, vec![ip("2001:db8::10")])?;
    expect("added", report.added, vec![])?;
    expect(
        "after the smaller set",
        addresses_shown(&ns, "ipvs0"),
        [shown("192.0.2.10", 32, false)].into(),
    )?;

    // By hand: two strangers, and a wanted address with a subnet prefix
    // (which would route a whole /24 to the dummy): all three go, and the
    // wanted one comes back as a host address.
    ns.ip(&["addr", "add", "198.51.100.7/24", "dev", "ipvs0"]);
    ns.ip(&["addr", "add", "192.0.2.30/24", "dev", "ipvs0"]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8::99/64",
        "dev",
        "ipvs0",
        "nodad",
    ]);
    let report = ok(vips.sync(&set(&["192.0.2.10", "192.0.2.30"])))?;
    expect(
        "removed",
        report.removed,
        vec![ip("192.0.2.30"), ip("198.51.100.7"), ip("2001:db8::99")],
    )?;
    expect("added", report.added, vec![ip("192.0.2.30")])?;
    expect(
        "after the hand-made addresses",
        addresses_shown(&ns, "ipvs0"),
        [
            shown("192.0.2.10", 32, false),
            shown("192.0.2.30", 32, false),
        ]
        .into(),
    )?;

    let report = ok(vips.sync(&set(&[])))?;
    expect(
        "removed",
        report.removed,
        vec![ip("192.0.2.10"), ip("192.0.2.30")],
    )?;
    expect("ipvs0 emptied", addresses_shown(&ns, "ipvs0"), [].into())?;
    expect("ipvs0 stays up", link_shown(&ns, "ipvs0").up, true)?;
    expect("d0 and lo untouched", others(&ns), before)?;
    Ok(())
}

/// An `ipvs0` made by hand is taken over, not recreated: down with an
/// address, it is set up and pruned; up with its kernel-made IPv6
/// link-local address, that address goes too.
pub fn existing_interface_is_reused() -> Result<(), Failed> {
    let down = Netns::new();
    down.ip(&["link", "add", "ipvs0", "type", "dummy"]);
    down.ip(&["addr", "add", "203.0.113.5/32", "dev", "ipvs0"]);
    let index = link_shown(&down, "ipvs0").index;
    let mut vips = open(&down);
    let report = ok(vips.sync(&set(&["192.0.2.20"])))?;
    expect(
        "created, set up",
        (report.created, report.set_up),
        (false, true),
    )?;
    expect("added", report.added, vec![ip("192.0.2.20")])?;
    expect("removed", report.removed, vec![ip("203.0.113.5")])?;
    let link = link_shown(&down, "ipvs0");
    expect("same interface", link.index, index)?;
    expect("up", link.up, true)?;
    expect(
        "ipvs0",
        addresses_shown(&down, "ipvs0"),
        [shown("192.0.2.20", 32, false)].into(),
    )?;

    let up = Netns::new();
    up.ip(&["link", "add", "ipvs0", "type", "dummy"]);
    up.ip(&["link", "set", "ipvs0", "up"]);
    let link_local: Vec<IpAddr> = addresses_shown(&up, "ipvs0")
        .into_iter()
        .map(|s| s.address)
        .collect();
    let mut vips = open(&up);
    let report = ok(vips.sync(&set(&["2001:db8::20"])))?;
    expect(
        "created, set up",
        (report.created, report.set_up),
        (false, false),
    )?;
    expect("removed", report.removed, link_local)?;
    expect(
        "ipvs0",
        addresses_shown(&up, "ipvs0"),
        [shown("2001:db8::20", 128, true)].into(),
    )?;
    let again = vips.sync(&set(&["2001:db8::20"]));
    if !again.is_empty() {
        return Err(format!("the same set again changed something: {again:?}").into());
    }
    Ok(())
}

/// A name taken by an interface that is not a dummy is refused before any
/// address is touched (owning it would strip its addresses); a kernel
/// refusal of one address leaves the others bound.
pub fn refusals_are_reported() -> Result<(), Failed> {
    let ns = Netns::new();
    ns.ip(&["link", "add", "ipvs0", "type", "bridge"]);
    ns.ip(&["addr", "add", "203.0.113.9/24", "dev", "ipvs0"]);
    let mut vips = open(&ns);
    let report = vips.sync(&set(&["192.0.2.40"]));
    match &report.error {
        Some(VipError::NotDummy { kind, .. }) if kind.contains("bridge") => {}
        _ => return Err(format!("expected NotDummy for a bridge: {report:?}").into()),
    }
    expect("changed", report.changed(), false)?;
    expect(
        "the bridge's address",
        addresses_shown(&ns, "ipvs0"),
        [shown("203.0.113.9", 24, false)].into(),
    )?;

    // IPv6 switched off on the interface: the kernel refuses the IPv6
    // address (EACCES), the IPv4 one is bound all the same.
    let ns = Netns::new();
    ns.ip(&["link", "add", "ipvs0", "type", "dummy"]);
    ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/ipvs0/disable_ipv6", "1"))?;
    let mut vips = open(&ns);
    let report = vips.sync(&set(&["192.0.2.50", "2001:db8::50", "224.0.0.5"]));
    expect("interface error", report.error.is_none(), true)?;
    expect("added", report.added.clone(), vec![ip("192.0.2.50")])?;
    let failed: Vec<(IpAddr, Option<i32>)> = report
        .failed
        .iter()
        .map(|(address, e)| (*address, e.errno()))
        .collect();
    expect(
        "failed",
        failed,
        vec![
            (ip("224.0.0.5"), None),
            (ip("2001:db8::50"), Some(libc::EACCES)),
        ],
    )?;
    let (_, refused) = &report.failed[1];
    expect(
        "message",
        refused.to_string(),
        "failed to add 2001:db8::50/128 to interface ipvs0".to_owned(),
    )?;
    expect(
        "ipvs0",
        addresses_shown(&ns, "ipvs0"),
        [shown("192.0.2.50", 32, false)].into(),
    )?;
    Ok(())
}

/// The way the reconciler calls it: from `spawn_blocking` inside a
/// multi-threaded runtime, whose pool threads are in the initial namespace.
pub fn works_from_spawn_blocking() -> Result<(), Failed> {
    let ns = Netns::new();
    let mut vips = open(&ns);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let report = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || vips.sync(&set(&["192.0.2.60"])))
            .await
            .map_err(|e| Failed::from(format!("the blocking task failed: {e}")))
    })?;
    ok(report)?;
    expect(
        "ipvs0",
        addresses_shown(&ns, "ipvs0"),
        [shown("192.0.2.60", 32, false)].into(),
    )
}
