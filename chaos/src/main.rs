//! `paxkv-chaos`: a chaos run against a real cluster of 3 or 5 processes, or a check of a
//! saved history. See docs/chaos.md.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};

use paxkv_chaos::check::linearizable::SEARCH_STEPS_MAX;
use paxkv_chaos::cluster::{InjectedBug, Timing, REPLICAS_DEFAULT};
use paxkv_chaos::error::{ChaosError, Result};
use paxkv_chaos::nemesis;
use paxkv_chaos::report::Report;
use paxkv_chaos::run::{self, RunOptions};
use paxkv_chaos::workload::Clients;

/// Exit status when a checker found a violation (or a replica crashed).
const EXIT_VIOLATION: u8 = 1;
/// Exit status when the run or the check could not be carried out.
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "paxkv-chaos",
    version,
    about = "Fault injection and history checks for paxkv"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check a saved history (history.json of a run) and print the verdicts.
    Check {
        #[arg(long)]
        history: PathBuf,
        /// Search steps per register key before the verdict is "unknown".
        #[arg(long, default_value_t = SEARCH_STEPS_MAX)]
        search_steps_max: u64,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Seconds the clients run (the nemesis stops a few seconds before).
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Replicas in the cluster: 3 or 5. With 5, two replicas may be faulty at once.
    #[arg(long, default_value_t = REPLICAS_DEFAULT,
          value_parser = clap::builder::PossibleValuesParser::new(["3", "5"])
              .map(|s| s.parse::<usize>().expect("3 or 5")))]
    replicas: usize,
    /// Faults to inject: a comma-separated list of kill, pause, disk (or its kinds
    /// disk-stall, disk-fsync, disk-torn, disk-loss), partition (partition-isolate,
    /// partition-one-way, partition-slow, partition-split), link (link-lossy,
    /// link-reorder); or all, none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Seed of the nemesis and the clients' choices (timing is real, so a seed does not
    /// replay a run).
    #[arg(long)]
    seed: Option<u64>,
    /// The paxkv binary; default: $PAXKV_BIN, else `paxkv` next to this binary.
    #[arg(long)]
    paxkv_bin: Option<PathBuf>,
    /// Where the cluster, history.json and report.json go; default: a new directory
    /// under the system's temp directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Calls per client thread, at most.
    #[arg(long, default_value_t = 100_000)]
    ops_per_client_max: u64,
    #[arg(long, default_value_t = SEARCH_STEPS_MAX)]
    search_steps_max: u64,
    /// A known bug to switch on in every replica, to see the checkers catch it:
    /// stale-reads (needs a paxkv built with the chaos feature). Repeatable.
    #[arg(long)]
    inject_bug: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check {
            history,
            search_steps_max,
        }) => run::check_file(&history, search_steps_max),
        None => run_chaos(cli.run),
    };
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            if report.violations > 0 {
                return ExitCode::from(EXIT_VIOLATION);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("paxkv-chaos: {error}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run_chaos(args: RunArgs) -> Result<Report> {
    let nemesis = nemesis::parse(&args.nemesis)?;
    let bugs = (args.inject_bug.iter())
        .map(|name| parse_bug(name))
        .collect::<Result<Vec<_>>>()?;
    let seed = args.seed.unwrap_or_else(seed_from_time);
    let binary = match args
        .paxkv_bin
        .or_else(|| std::env::var_os("PAXKV_BIN").map(PathBuf::from))
    {
        Some(path) => path,
        None => sibling_binary()?,
    };
    let out = match args.out {
        Some(out) => out,
        None => std::env::temp_dir().join(format!("paxkv-chaos-{seed}-{}", std::process::id())),
    };
    let options = RunOptions {
        time: Duration::from_secs(args.time),
        replicas: args.replicas,
        nemesis,
        seed,
        binary,
        out,
        clients: Clients::default(),
        ops_per_client_max: args.ops_per_client_max,
        timing: Timing::default(),
        search_steps_max: args.search_steps_max,
        bugs,
    };
    eprintln!(
        "paxkv-chaos: {} s, {} replicas, seed {seed}, output in {}",
        args.time,
        args.replicas,
        options.out.display()
    );
    run::run(&options)
}

fn parse_bug(name: &str) -> Result<InjectedBug> {
    match InjectedBug::ALL.iter().find(|b| b.name() == name) {
        Some(bug) => Ok(*bug),
        None => {
            let known: Vec<&str> = InjectedBug::ALL.iter().map(|b| b.name()).collect();
            Err(ChaosError::UnknownBug {
                name: name.to_string(),
                known: known.join(", "),
            })
        }
    }
}

/// `paxkv` in the directory of this binary (both are built into the same target dir).
fn sibling_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|source| ChaosError::File {
        path: PathBuf::from("current_exe"),
        source,
    })?;
    Ok(me.with_file_name("paxkv"))
}

// A seed when none is given: it only needs to differ between runs, and is printed.
#[allow(clippy::disallowed_methods)]
fn seed_from_time() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_nanos() as u64).unwrap_or(0)
}
