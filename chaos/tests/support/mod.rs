//! Shared by the chaos crate's integration tests.
use std::path::PathBuf;

/// The `paxkv` binary in the profile directory above this test's `deps/`.
///
/// It is not built from here: a nested `cargo build -p paxkv` resolves features for that
/// package alone, so it would rebuild the binary other tests of the same run are using,
/// without the workspace's features. `scripts/test.sh` builds it first with the rest of the
/// workspace (`cargo build --release --workspace --all-targets --all-features`).
pub fn paxkv_binary() -> PathBuf {
    let me = std::env::current_exe().expect("current_exe");
    let deps = me.parent().expect("deps/");
    let binary = deps.parent().expect("the profile directory").join("paxkv");
    assert!(
        binary.exists(),
        "{} is missing: build it first with \
         cargo build --release --workspace --all-targets --all-features",
        binary.display()
    );
    binary
}
