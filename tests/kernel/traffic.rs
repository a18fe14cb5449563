//! Real traffic through IPVS NAT on a [`Site`], configured with plain
//! ipvsadm: the rig the cluster trials will use, proven on the kernel alone.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use libtest_mimic::Failed;

use crate::support::traffic::get;
use crate::support::{Backend, Held, IpvsConnection, Netns, Site};

const VIP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 1), 80));

/// The backends listen on another port than the VIP's, so the trial also
/// sees NAT rewrite the port.
const PORT: u16 = 8080;

/// wrr over weights 1, 2, 3 splits requests exactly in proportion; a backend
/// set to weight 0 gets no new connection but keeps its established one;
/// once that one is closed the backend can go.
pub fn nat_follows_weights_and_quiesces() -> Result<(), Failed> {
    let site = Site::new(3, 0);
    let backends: Vec<Backend> = site
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| Backend::start(ns, &format!("backend{}", i + 1), backend(i)))
        .collect();
    let lb = site.director_ns();
    let mut weights = vec![1, 2, 3];
    let mut rules = format!("-A -t {VIP} -s wrr\n");
    for (i, weight) in weights.iter().enumerate() {
        rules += &format!("-a -t {VIP} -r {} -m -w {weight}\n", backend(i));
    }
    lb.ipvsadm_input(&["-R"], &rules);

    // wrr restarts its round whenever a destination changes, and a round of
    // sum(weights) connections follows the weights exactly.
    assert_eq!(requests(&site.client, 60)?, shares(&backends, &weights, 10));

    let mut held = Held::open(&site.client, VIP)?;
    let quiesced = backends
        .iter()
        .position(|b| b.name() == held.backend())
        .ok_or_else(|| format!("unknown backend {:?}", held.backend()))?;
    let source = held.local_addr();
    let expected = IpvsConnection {
        protocol: "TCP".into(),
        expires: Duration::ZERO,
        state: "ESTABLISHED".into(),
        source,
        service: VIP,
        destination: backend(quiesced),
    };
    assert_eq!(entry_of(lb, source), Some(expected.clone()));

    let target = backend(quiesced).to_string();
    lb.ipvsadm(&["-e", "-t", &VIP.to_string(), "-r", &target, "-m", "-w", "0"]);
    weights[quiesced] = 0;
    assert_eq!(requests(&site.client, 12)?, shares(&backends, &weights, 4));
    let line = "still there";
    assert_eq!(held.exchange(line)?, format!("{} {line}", held.backend()));
    assert_eq!(entry_of(lb, source), Some(expected.clone()));

    let closed = IpvsConnection {
        state: "TIME_WAIT".into(),
        ..expected
    };
    // close() has seen the backend's FIN come back: the director has passed
    // both, and the entry lingers in TIME_WAIT.
    held.close()?;
    assert_eq!(entry_of(lb, source), Some(closed));

    lb.ipvsadm(&["-d", "-t", &VIP.to_string(), "-r", &target]);
    assert!(!lb.ipvsadm(&["-Sn"]).contains(&target));
    assert_eq!(requests(&site.client, 6)?, shares(&backends, &weights, 2));
    Ok(())
}

fn backend(i: usize) -> SocketAddr {
    SocketAddr::from((Site::backend_addr(i), PORT))
}

/// `n` requests to the VIP, one connection each: answers per backend.
fn requests(client: &Netns, n: usize) -> Result<BTreeMap<String, usize>, Failed> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(get(client, VIP)?).or_insert(0) += 1;
    }
    Ok(counts)
}

/// What [`requests`] should count for `rounds` full wrr rounds.
fn shares(backends: &[Backend], weights: &[usize], rounds: usize) -> BTreeMap<String, usize> {
    backends
        .iter()
        .zip(weights)
        .filter(|(_, &weight)| weight > 0)
        .map(|(b, weight)| (b.name().to_owned(), weight * rounds))
        .collect()
}

/// The entry of the connection from `source` on the director, its expiry
/// zeroed (it counts down).
fn entry_of(lb: &Netns, source: SocketAddr) -> Option<IpvsConnection> {
    lb.ipvs_connections()
        .into_iter()
        .find(|c| c.source == source)
        .map(|c| IpvsConnection {
            expires: Duration::ZERO,
            ..c
        })
}

/// Moving the director moves new connections to its table; a connection
/// only the old director knew breaks (no connection sync between them).
pub fn director_moves() -> Result<(), Failed> {
    let mut site = Site::new(1, 1);
    let _backend = Backend::start(&site.backends[0], "backend1", backend(0));
    let rules = format!("-A -t {VIP} -s rr\n-a -t {VIP} -r {} -m\n", backend(0));
    for lb in &site.lbs[1..] {
        lb.ipvsadm_input(&["-R"], &rules);
    }

    let mut before = Held::open(&site.client, VIP)?;
    assert_eq!(before.exchange("via lb2")?, "backend1 via lb2");
    site.set_director(2);
    let mut after = Held::open(&site.client, VIP)?;
    assert_eq!(after.exchange("via lb3")?, "backend1 via lb3");

    let (lb2, lb3) = (&site.lbs[1], &site.lbs[2]);
    let states = |source| {
        let state = |lb| entry_of(lb, source).map(|c| c.state);
        (state(lb2), state(lb3))
    };
    let established = Some("ESTABLISHED".to_owned());
    assert_eq!(states(before.local_addr()), (established.clone(), None));
    assert_eq!(states(after.local_addr()), (None, established));

    // lb3 has no entry for it: IPVS leaves the packet to lb3's own stack,
    // which knows no such connection and resets it.
    let lost = before.exchange("lost").unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::ConnectionReset, "{lost}");
    after.close()?;
    Ok(())
}
