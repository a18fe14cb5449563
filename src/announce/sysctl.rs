//! Kernel settings (`/proc/sys`) a mode needs: set them, or with
//! `SYSCTLS=leave` only compare, and report each one either way. The
//! network ones are per network namespace, like everything the node does.

use crate::announce::settings::Sysctls;
use crate::api::json::SysctlView;
use std::path::Path;

/// A setting a mode wants: its dotted name, the value, and why (shown to
/// the operator next to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub value: String,
    pub why: &'static str,
}

impl Wanted {
    pub fn new(name: impl Into<String>, value: impl Into<String>, why: &'static str) -> Wanted {
        Wanted {
            name: name.into(),
            value: value.into(),
            why,
        }
    }
}

/// Sets (or checks) each setting under `root` (`/proc/sys` on a host),
/// returning what each holds afterwards. One that fails does not stop
/// the others.
pub fn apply(root: &Path, wanted: &[Wanted], policy: Sysctls) -> Vec<SysctlView> {
    wanted
        .iter()
        .map(|w| {
            let path = root.join(w.name.replace('.', "/"));
            let read = || std::fs::read_to_string(&path).map(|v| v.trim().to_string());
            let mut problem = None;
            let mut value = read()
                .map_err(|e| problem = Some(format!("cannot read it: {e}")))
                .ok();
            if policy == Sysctls::Set
                && value.as_deref() != Some(w.value.as_str())
                && problem.is_none()
            {
                match std::fs::write(&path, &w.value) {
                    Ok(()) => value = read().ok(),
                    Err(e) => problem = Some(format!("cannot set it: {e}")),
                }
            }
            let ok = value.as_deref() == Some(w.value.as_str());
            if !ok && problem.is_none() {
                problem = Some(match policy {
                    Sysctls::Leave => "differs, and SYSCTLS=leave".to_string(),
                    Sysctls::Set => "the kernel kept another value".to_string(),
                });
            }
            SysctlView {
                name: w.name.clone(),
                wanted: w.value.clone(),
                value,
                why: w.why.to_string(),
                ok,
                problem,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_checks_and_reports_each_setting() {
        let root = std::env::temp_dir().join(format!("ipvs-sysctl-{}", std::process::id()));
        let dir = root.join("net/ipv4/vs");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sloppy_tcp"), "0\n").unwrap();
        std::fs::write(dir.join("expire_nodest_conn"), "1\n").unwrap();
        let wanted = [
            Wanted::new("net.ipv4.vs.sloppy_tcp", "1", "pick up flows"),
            Wanted::new("net.ipv4.vs.expire_nodest_conn", "1", "expire"),
            Wanted::new("net.ipv4.vs.missing", "1", "absent"),
        ];
        let left = apply(&root, &wanted, Sysctls::Leave);
        assert!(!left[0].ok);
        assert_eq!(left[0].value.as_deref(), Some("0"));
        assert!(left[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("SYSCTLS=leave"));
        assert!(left[1].ok, "{:?}", left[1]);
        assert!(left[2].problem.as_deref().unwrap().contains("cannot read"));
        let set = apply(&root, &wanted, Sysctls::Set);
        assert!(set[0].ok, "{:?}", set[0]);
        assert_eq!(
            std::fs::read_to_string(dir.join("sloppy_tcp")).unwrap(),
            "1"
        );
        assert!(!set[2].ok);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
