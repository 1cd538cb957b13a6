//! Shared by the chaos crate's integration tests.
use std::path::PathBuf;
use std::process::Command;

/// Builds the `paxkv` binary (a no-op when it is current) and returns its path: it sits in
/// the profile directory above this test's `deps/`.
pub fn paxkv_binary() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "paxkv", "--bin", "paxkv"])
        .current_dir(&workspace)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of paxkv failed");
    let me = std::env::current_exe().expect("current_exe");
    let deps = me.parent().expect("deps/");
    deps.parent().expect("the profile directory").join("paxkv")
}
