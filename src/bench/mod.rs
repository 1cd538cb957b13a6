//! `paxkv bench`: the load generator of crate `paxkv-bench` (bench/, re-exported here),
//! with its paxkv target ([`PaxkvTarget`], Thrift) and the verb's dispatch: the local
//! floors, paxkv, or etcd through the `paxkv-bench-etcd` binary.
//!
//! ```no_run
//! use paxkv::api::Protocol;
//! use paxkv::bench::{run, BenchConfig, PaxkvTarget, Workload};
//!
//! let mut config = BenchConfig::new(Workload::Put, vec!["127.0.0.1:9091".into()]);
//! config.clients = 16;
//! config.connections = 16;
//! let report = run(&PaxkvTarget::new(Protocol::Binary), &config)?;
//! println!("{}", report.to_json());
//! # Ok::<(), paxkv::bench::BenchError>(())
//! ```
mod paxkv;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

pub use paxkv::{parse_counter, PaxkvClient, PaxkvConnection, PaxkvTarget};
pub use paxkv_bench::*;

use crate::api::Protocol;

/// The etcd load generator, looked for next to the running `paxkv`.
pub const ETCD_BINARY: &str = "paxkv-bench-etcd";

/// Runs `paxkv bench` and returns its exit code (see [`execute`]).
pub fn command(args: BenchArgs) -> ExitCode {
    if args.target == TargetKind::Etcd {
        return exec_etcd();
    }
    match args.workload {
        Workload::Fsync => {
            let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
            execute(&FsyncTarget::new(&dir), &args, "local")
        }
        Workload::TcpRtt => match TcpRttTarget::start() {
            Ok(target) => execute(&target, &args, "local"),
            Err(error) => fail(EXIT_UNAVAILABLE, &error.to_string()),
        },
        _ => {
            let (protocol, name) = match args.protocol {
                ProtocolArg::Binary => (Protocol::Binary, "binary"),
                ProtocolArg::Compact => (Protocol::Compact, "compact"),
            };
            execute(&PaxkvTarget::new(protocol), &args, name)
        }
    }
}

/// Replaces this process with `paxkv-bench-etcd` from the running executable's directory,
/// passing it every argument after `bench`, so its output and exit code are the verb's.
fn exec_etcd() -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name(ETCD_BINARY),
        Err(error) => return fail(EXIT_INVALID, &format!("locating this executable: {error}")),
    };
    if !binary.is_file() {
        return fail(
            EXIT_INVALID,
            &format!(
                "--target etcd needs {} and it is not there; build it with \
                 `cargo build --release --manifest-path bench-etcd/Cargo.toml` \
                 (with the CARGO_TARGET_DIR that built this paxkv)",
                binary.display()
            ),
        );
    }
    let arguments: Vec<OsString> = std::env::args_os()
        .skip(1)
        .skip_while(|arg| arg != "bench")
        .skip(1)
        .collect();
    use std::os::unix::process::CommandExt;
    let error = std::process::Command::new(&binary).args(arguments).exec();
    fail(
        EXIT_UNAVAILABLE,
        &format!("running {}: {error}", binary.display()),
    )
}
