//! The paxkv command line: `dev` and `server` run the store, the client verbs talk to it,
//! `sim` runs the deterministic simulator, `bench` generates load.

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paxkv::node::{self, Node, NodeConfig};
use paxkv::sim::{self, SimOptions};

#[derive(Parser, Debug)]
#[command(
    name = "paxkv",
    version,
    about = "A replicated, transactional key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Three replicas in one process, on loopback: the embedded default.
    Dev(DevArgs),
    /// One replica per process: the real deployment.
    Server(ServerArgs),
    /// The deterministic simulator: replay one seed or sweep many.
    Sim(SimArgs),
    /// Closed-loop load generator against paxkv or etcd (docs/benchmarks.md).
    Bench(paxkv::bench::BenchArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(clap::Args, Debug)]
struct DevArgs {
    /// Replica N keeps its data in DIR/replica_N.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// Thrift endpoints of replicas 1, 2, 3.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9091,127.0.0.1:9092,127.0.0.1:9093"
    )]
    thrift_addrs: Vec<SocketAddr>,
    /// Peer listeners of replicas 1, 2, 3.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:6001,127.0.0.1:6002,127.0.0.1:6003"
    )]
    peer_addrs: Vec<SocketAddr>,
    /// HTTP /metrics, /health and /ready of replicas 1, 2, 3; "off" for none.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9191,127.0.0.1:9192,127.0.0.1:9193"
    )]
    metrics_addrs: Vec<String>,
    /// Check tokens and grants on the KV API too, as `paxkv server` does by default (the
    /// configuration service always does).
    #[arg(long)]
    auth: bool,
}

#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// A node's TOML config (see config/node1.toml); PAXKV_* variables override it.
    #[arg(long)]
    config: PathBuf,
    /// Create a new cluster: an empty data directory starts only with this flag (and it is
    /// ignored where the directory already holds this replica's state). Never give it to a
    /// replica that lost its data: see docs/operations.md.
    #[arg(long)]
    bootstrap: bool,
}

#[derive(clap::Args, Debug)]
struct SimArgs {
    /// Replay this one seed exactly.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds and report totals.
    #[arg(long)]
    seeds: Option<u64>,
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    threads: usize,
    /// Inject a known bug (repeatable); see `paxkv::sim::BUGS`.
    #[arg(long = "bug")]
    bugs: Vec<String>,
    #[arg(long)]
    safety_ms: Option<u64>,
    #[arg(long)]
    trace: bool,
    #[arg(long)]
    no_acceptor_memory_check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => run_dev(args),
        Command::Server(args) => run_server(args),
        Command::Sim(args) => run_sim(args),
        Command::Client(command) => return cli::run(command),
        Command::Bench(args) => return paxkv::bench::command(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("paxkv: {message}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("starting the runtime: {error}"))
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
    }
}

fn run_server(args: ServerArgs) -> Result<ExitCode, String> {
    let config = NodeConfig::load(&args.config)
        .map_err(|error| format!("config {}: {error}", args.config.display()))?;
    init_logging(&config.log);
    runtime()?.block_on(async move {
        let node = Node::start(config.clone(), args.bootstrap)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "paxkv server: replica {} of {:?}, Thrift on {}, peers on {}, data in {}",
            config.id,
            config.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            config.thrift_addr,
            config.peer_addr(),
            config.data_dir.display()
        );
        node.serve(stop_signal()).await.map_err(|e| e.to_string())?;
        println!("paxkv server: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

fn run_dev(args: DevArgs) -> Result<ExitCode, String> {
    if args.thrift_addrs.len() != 3 || args.peer_addrs.len() != 3 {
        return Err("dev runs 3 replicas: give 3 --thrift-addrs and 3 --peer-addrs".into());
    }
    init_logging("info");
    let mut configs = node::dev_configs(&args.data_dir, &args.thrift_addrs, &args.peer_addrs);
    node::set_dev_metrics_addrs(&mut configs, &args.metrics_addrs)?;
    for config in &mut configs {
        config.auth.enabled = args.auth;
    }
    runtime()?.block_on(async move {
        // Three new directories make a new cluster. Were only some empty, bootstrapping them
        // would restart replicas that lost their data as members: they join instead, as
        // new incarnations, until `paxkv admin member add` re-admits them.
        let bootstrap = (configs.iter()).all(|config| !node::identity::has_state(&config.data_dir));
        let mut nodes = Vec::new();
        for config in configs {
            println!(
                "paxkv dev: replica {} on Thrift {} (peers {}), data in {}",
                config.id,
                config.thrift_addr,
                config.peer_addr(),
                config.data_dir.display()
            );
            nodes.push(
                Node::start(config, bootstrap)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        announce_root_token(&nodes);
        let routers: Vec<_> = nodes.iter().map(|n| n.router.clone()).collect();
        tokio::spawn(announce_leaders(routers));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut serving = tokio::task::JoinSet::new();
        for node in nodes {
            let mut stopped = stopped.clone();
            serving.spawn(node.serve(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        }
        stop_signal().await;
        println!("paxkv dev: stopping");
        let _ = stop.send(true);
        for result in serving.join_all().await {
            result.map_err(|e| e.to_string())?;
        }
        println!("paxkv dev: stopped cleanly");
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints the root token (as Vault's dev server does) and writes it to the CLI's token
/// file, so that the configuration verbs work at once.
fn announce_root_token(nodes: &[Node]) {
    let Some(token) = nodes
        .iter()
        .find_map(|n| node::read_root_token(&n.config.data_dir))
    else {
        return;
    };
    println!("paxkv dev: root token {token}");
    let Some(path) = cli::token_file() else {
        return;
    };
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())
        });
    match written {
        Ok(()) => println!("paxkv dev: wrote it to {} for the CLI", path.display()),
        Err(error) => println!("paxkv dev: could not write {}: {error}", path.display()),
    }
}

/// Prints who leads whenever it changes.
async fn announce_leaders(routers: Vec<paxkv::router::PrimaryRouter>) {
    let mut announced = None;
    loop {
        let leader = routers
            .iter()
            .find(|router| router.role() == "leader")
            .map(|router| router.id());
        if leader.is_some() && leader != announced {
            println!("paxkv dev: replica {} leads", leader.unwrap_or_default());
            announced = leader;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn run_sim(args: SimArgs) -> Result<ExitCode, String> {
    let options_for = |seed: u64| -> Result<SimOptions, String> {
        let mut options = SimOptions::new(seed);
        for bug in &args.bugs {
            sim::set_bug(&mut options.bugs, bug)?;
        }
        if let Some(ms) = args.safety_ms {
            options.safety_us = ms * 1_000;
        }
        options.trace = args.trace;
        options.check_acceptor_memory = !args.no_acceptor_memory_check;
        Ok(options)
    };
    options_for(0)?;
    if let Some(seed) = args.seed {
        return match sim::run(&options_for(seed)?) {
            Ok(report) => {
                println!("{report:?}");
                Ok(ExitCode::SUCCESS)
            }
            Err(failure) => {
                println!("{failure}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let count = args
        .seeds
        .ok_or_else(|| "sim needs --seed N or --seeds COUNT".to_string())?;
    // Wall time of the whole sweep is reported to the operator; no run depends on it.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let summary = sim::sweep(args.first_seed, count, args.threads, 10, |seed| {
        options_for(seed).expect("options were checked")
    });
    println!(
        "{} seeds in {:.1}s on {} threads: {} events, {} faults, {} slots chosen, {} writes acknowledged, {} failures",
        summary.seeds,
        started.elapsed().as_secs_f64(),
        args.threads,
        summary.events,
        summary.faults,
        summary.chosen,
        summary.acknowledged,
        summary.failures.len()
    );
    for failure in &summary.failures {
        println!("\n{failure}");
    }
    Ok(if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
