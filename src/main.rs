//! The paxkv command line.

use std::process::ExitCode;

use paxkv::sim::{self, SimOptions};

const USAGE: &str = "usage:
  paxkv sim --seed N [--bug NAME]... [--safety-ms MS] [--no-acceptor-memory-check] [--trace]
      replay one simulated run exactly
  paxkv sim --seeds COUNT [--first-seed N] [--threads T] [--bug NAME]...
      run many seeds and report totals";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sim") => run_sim(&args[1..]),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

struct SimArgs {
    seed: Option<u64>,
    seeds: Option<u64>,
    first_seed: u64,
    threads: usize,
    bugs: Vec<String>,
    safety_ms: Option<u64>,
    trace: bool,
    no_acceptor_memory_check: bool,
}

fn parse_sim_args(args: &[String]) -> Result<SimArgs, String> {
    let mut parsed = SimArgs {
        seed: None,
        seeds: None,
        first_seed: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        bugs: Vec::new(),
        safety_ms: None,
        trace: false,
        no_acceptor_memory_check: false,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let number = |text: &String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: {text:?} is not a number"))
        };
        match flag.as_str() {
            "--seed" => parsed.seed = Some(number(value()?)?),
            "--seeds" => parsed.seeds = Some(number(value()?)?),
            "--first-seed" => parsed.first_seed = number(value()?)?,
            "--threads" => parsed.threads = number(value()?)? as usize,
            "--bug" => parsed.bugs.push(value()?.clone()),
            "--safety-ms" => parsed.safety_ms = Some(number(value()?)?),
            "--trace" => parsed.trace = true,
            "--no-acceptor-memory-check" => parsed.no_acceptor_memory_check = true,
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(parsed)
}

fn run_sim(args: &[String]) -> Result<ExitCode, String> {
    let args = parse_sim_args(args)?;
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
    let count = args.seeds.ok_or_else(|| USAGE.to_string())?;
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
