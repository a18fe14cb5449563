//! Build script: names the git revision the binary is built from, for the
//! `ipvs_manager_build_info` metric. Outside a git checkout of this crate
//! (a source tarball, no git installed) the revision is `unknown`; the
//! script never fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
    };
    // Only this crate's own checkout: a tarball unpacked inside another
    // repository must not report that repository's revision.
    let toplevel = git(&["rev-parse", "--show-toplevel"]);
    let ours = toplevel.is_some_and(|t| same_dir(Path::new(&t), &dir));
    let revision = ours
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten();
    println!(
        "cargo:rustc-env=IPVS_MANAGER_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rerun-if-changed=build.rs");
    if ours {
        // Run again when HEAD moves: HEAD names the branch (a checkout
        // changes it) and its reflog grows with every commit, reset or
        // checkout. Paths from git itself, which knows where a worktree
        // keeps them. Only existing files: cargo reruns a script that names
        // a missing one on every build.
        for name in ["HEAD", "logs/HEAD"] {
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", name]) {
                if Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
