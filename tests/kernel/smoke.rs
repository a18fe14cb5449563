//! The rig itself: the VM's kernel has IPVS, ipvsadm talks to it, and each
//! network namespace is an IPVS table of its own.

use libtest_mimic::Failed;

use crate::support::Netns;

/// ipvsadm, the oracle of every other trial, round-trips a service.
pub fn ipvsadm_adds_a_service() -> Result<(), Failed> {
    let ns = Netns::new();
    ns.ipvsadm(&["-A", "-t", "10.0.0.1:80", "-s", "rr"]);
    assert_eq!(ns.ipvsadm(&["-Sn"]), "-A -t 10.0.0.1:80 -s rr\n");
    Ok(())
}

/// Two namespaces do not share services, seen both through ipvsadm and from
/// inside this process after `Netns::run` has joined each namespace.
pub fn namespaces_have_independent_tables() -> Result<(), Failed> {
    let (a, b) = (Netns::new(), Netns::new());
    a.ipvsadm(&["-A", "-t", "10.0.0.1:80", "-s", "rr"]);
    b.ipvsadm(&["-A", "-u", "10.0.0.2:53", "-s", "wlc"]);

    assert_eq!(a.ipvsadm(&["-Sn"]), "-A -t 10.0.0.1:80 -s rr\n");
    assert_eq!(b.ipvsadm(&["-Sn"]), "-A -u 10.0.0.2:53 -s wlc\n");

    // /proc/thread-self/net is the calling thread's namespace (/proc/self/net
    // would be the main thread's): addresses and ports in hex.
    let expect_table = |ns: &Netns, listed: &str, absent: &str| -> Result<(), Failed> {
        let table = ns
            .run(|| std::fs::read_to_string("/proc/thread-self/net/ip_vs"))
            .map_err(|e| format!("reading /proc/thread-self/net/ip_vs in {}: {e}", ns.name()))?;
        if table.contains(listed) && !table.contains(absent) {
            Ok(())
        } else {
            Err(format!(
                "{} should list {listed:?} and no {absent:?}:\n{table}",
                ns.name()
            )
            .into())
        }
    };
    expect_table(&a, "TCP  0A000001:0050 rr", "UDP")?;
    expect_table(&b, "UDP  0A000002:0035 wlc", "TCP")?;
    Ok(())
}
