//! The binary on this machine's own kernel: without IPVS (as on the machines
//! this project builds on) every kernel command fails at once with the fix in
//! the message; with IPVS it lists the table.

use std::process::Command;

#[test]
fn kernel_list_reports_missing_ipvs_or_lists() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["kernel", "list"])
        .output()
        .expect("run ipvs-manager");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        assert!(
            out.status.success() || stderr.contains("CAP_NET_ADMIN"),
            "{stderr}"
        );
    } else {
        assert!(!out.status.success());
        assert_eq!(
            stderr.trim_end(),
            "ipvs-manager: IPVS is not available in this kernel (the \"IPVS\" generic netlink \
             family is missing): load it with `modprobe ip_vs`, or use a kernel built with \
             CONFIG_IP_VS"
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .args(["kernel", "frobnicate"])
        .output()
        .expect("run ipvs-manager");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'frobnicate'"));
}

/// A node (IPVS_KERNEL=on, the default) on a kernel without IPVS refuses to
/// start, with the fix and the way to run without the kernel, before it
/// creates anything.
#[test]
fn node_refuses_to_start_without_ipvs() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        return; // this kernel has IPVS: the VM trials cover the refusal
    }
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_ipvs-manager"))
        .env("RAFT_VOL_DIR", &data)
        .env("SERVER_PORT", "2399")
        .env("RAFT_PORT", "1399")
        .env_remove("IPVS_KERNEL")
        .output()
        .expect("run ipvs-manager");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("IPVS is not available"), "{stderr}");
    assert!(stderr.contains("modprobe ip_vs"), "{stderr}");
    assert!(stderr.contains("IPVS_KERNEL=off"), "{stderr}");
    assert!(!data.exists(), "nothing is created before the check");
}
