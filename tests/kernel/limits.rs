//! What ipvsadm 1.31 (Debian's) and the 6.1 kernel really accept for
//! weights, thresholds and persistence netmasks: the facts behind
//! `model::rules::{MAX_WEIGHT, MAX_THRESHOLD, netmask_with_holes}` (the
//! cluster refuses what they refuse, and masks with holes besides), and
//! `kernel restore` still taking exactly what `ipvsadm -R` takes.

use std::io::Write;
use std::process::Stdio;

use libtest_mimic::Failed;

use crate::support::Netns;
use ipvs_manager::ipvs::memory::MemoryKernel;
use ipvs_manager::ipvs::netlink::NetlinkKernel;
use ipvs_manager::ipvs::{Change, Kernel, KernelError, Reason};
use ipvs_manager::model::{Destination, Forward, Protocol, ServiceKey};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

pub fn what_ipvsadm_and_the_kernel_accept() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    ns.ipvsadm(&["-A", "-t", "10.0.0.1:80"]);
    let add = |server: &str, extra: &[&str]| {
        let mut args = vec!["-a", "-t", "10.0.0.1:80", "-r", server, "-m"];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // Weights: 0 to INT_MAX in ipvsadm (Debian's patch; upstream stops at
    // 65535) and in the kernel, whose weight is an int.
    for (server, weight) in [
        ("10.1.0.1", "65535"),
        ("10.1.0.2", "65536"),
        ("10.1.0.3", "2147483647"),
    ] {
        ipvsadm(&ns, &add(server, &["-w", weight]))?;
    }
    let err = ipvsadm(&ns, &add("10.1.0.4", &["-w", "2147483648"])).unwrap_err();
    assert!(err.contains("illegal weight"), "{err}");
    let key = ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "10.0.0.1".parse()?,
        port: 80,
    };
    let dest = |addr: &str| Destination {
        forward: Forward::Masq,
        ..Destination::new(addr.parse().expect("address"), 80)
    };
    let over_int = ns.run(|| -> Result<(), KernelError> {
        let mut k = NetlinkKernel::connect()?;
        k.apply(&Change::AddDest(
            key,
            Destination {
                weight: 1 << 31,
                ..dest("10.1.0.5")
            },
        ))
    });
    assert_eq!(
        over_int.err().and_then(|e| e.reason()),
        Some(Reason::OutOfRange),
        "a weight of 2^31 reaches the kernel negative: ERANGE"
    );

    // Thresholds: ipvsadm stops at INT_MAX (its man page says 65535) ...
    ipvsadm(&ns, &add("10.1.0.6", &["-x", "2147483647", "-y", "1"]))?;
    let err = ipvsadm(&ns, &add("10.1.0.7", &["-x", "2147483648"])).unwrap_err();
    assert!(err.contains("illegal u_threshold"), "{err}");
    // ... and the kernel refuses an upper threshold above INT_MAX too
    // (EINVAL, 6.1.0-57: after its weight and lower-above-upper checks,
    // before looking the destination up), though the attribute is a u32.
    let dest_with = |addr: &str, weight: u32, upper: u32, lower: u32| Destination {
        weight,
        upper_threshold: upper,
        lower_threshold: lower,
        ..dest(addr)
    };
    let missing = ServiceKey::Inet {
        protocol: Protocol::Tcp,
        addr: "10.0.0.99".parse()?,
        port: 80,
    };
    let big = 1u32 << 31;
    let cases = vec![
        Change::AddDest(key, dest_with("10.1.1.1", 1, big, 0)),
        Change::AddDest(key, dest_with("10.1.1.2", 1, u32::MAX, u32::MAX)),
        Change::AddDest(missing, dest_with("10.1.1.3", 1, u32::MAX, 0)),
        Change::AddDest(key, dest_with("10.1.1.4", big, u32::MAX, 0)),
        Change::AddDest(key, dest_with("10.1.1.5", 1, 0, big)),
        Change::AddDest(key, dest_with("10.1.1.6", 1, big, u32::MAX)),
        Change::EditDest(key, dest_with("10.1.0.1", 1, u32::MAX, 0)),
        Change::EditDest(key, dest_with("10.1.9.9", 1, u32::MAX, 0)),
        Change::AddDest(
            key,
            dest_with("10.1.1.7", 1, i32::MAX as u32, i32::MAX as u32),
        ),
    ];
    let reasons = |results: Vec<Result<(), KernelError>>| -> Vec<Option<Reason>> {
        results
            .iter()
            .map(|r| r.as_ref().err().and_then(KernelError::reason))
            .collect()
    };
    let (real, table) = ns.run(|| -> Result<_, KernelError> {
        let mut k = NetlinkKernel::connect()?;
        let real = reasons(k.apply_batch(&cases));
        Ok((real, k.services()?))
    })?;
    use Reason::{Invalid, NoSuchService, OutOfRange};
    assert_eq!(
        real,
        vec![
            Some(Invalid),
            Some(Invalid),
            Some(NoSuchService),
            Some(OutOfRange),
            Some(OutOfRange),
            Some(OutOfRange),
            Some(Invalid),
            Some(Invalid),
            None,
        ]
    );
    // The in-memory kernel, which checks restores, answers the same.
    let mut memory = MemoryKernel::from_entries(table);
    let _ = memory.apply(&Change::DelDest(key, dest("10.1.1.7").key()));
    assert_eq!(reasons(memory.apply_batch(&cases)), real);

    // Netmasks: any 32 bits, holes included, in ipvsadm and the kernel.
    ipvsadm(
        &ns,
        &["-A", "-t", "10.0.0.2:80", "-p", "-M", "255.0.255.0"].map(String::from),
    )?;
    let saved = ns.ipvsadm(&["-Sn"]);
    assert!(
        saved.contains("-A -t 10.0.0.2:80 -s wlc -p 360 -M 255.0.255.0"),
        "{saved}"
    );

    // kernel restore takes what ipvsadm -R takes, and refuses what it
    // refuses, with the limit named.
    let fresh = Netns::load_balancer();
    let rules = "-A -t 10.0.0.3:80 -p 60 -M 255.0.255.0\n\
                 -a -t 10.0.0.3:80 -r 10.1.0.9 -m -w 2147483647 -x 2147483647\n";
    kernel_restore(&fresh, rules)?;
    let ours = fresh.ipvsadm(&["-Sn"]);
    let theirs = Netns::load_balancer();
    theirs.ipvsadm_input(&["-R"], rules);
    assert_eq!(ours, theirs.ipvsadm(&["-Sn"]));
    for bad in [
        "-a -t 10.0.0.3:80 -r 10.1.0.10 -w 2147483648\n",
        "-a -t 10.0.0.3:80 -r 10.1.0.10 -x 2147483648\n",
    ] {
        let err = kernel_restore(&fresh, bad).unwrap_err();
        assert!(
            err.contains("line 1: invalid") && err.contains("0 to 2147483647"),
            "{err}"
        );
        let by_ipvsadm = fresh.run(|| {
            let mut child = std::process::Command::new("ipvsadm")
                .arg("-R")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut input) = child.stdin.take() {
                input.write_all(bad.as_bytes())?;
            }
            child.wait_with_output()
        })?;
        assert!(
            !String::from_utf8_lossy(&by_ipvsadm.stderr).is_empty(),
            "ipvsadm -R took {bad:?}"
        );
    }
    assert_eq!(fresh.ipvsadm(&["-Sn"]), ours, "nothing changed");
    Ok(())
}

/// ipvsadm in `ns`; its stderr when it fails.
fn ipvsadm(ns: &Netns, args: &[String]) -> Result<(), String> {
    let out = ns
        .cmd("ipvsadm")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `ipvs-manager kernel restore` of `rules` in `ns`; its stderr when it
/// fails.
fn kernel_restore(ns: &Netns, rules: &str) -> Result<(), String> {
    let mut child = ns
        .cmd(BINARY)
        .args(["kernel", "restore"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(rules.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
