//! Single-client latency probe: sequential puts, then linearizable gets, then snapshot gets,
//! on one connection, printing percentiles. Run against a live node:
//!
//! ```text
//! cargo run --release --example latency -- 127.0.0.1:9091 2000
//! ```
//!
//! One client, one request at a time, so the numbers are round-trip latency, not throughput.

use std::time::{Duration, Instant};

use paxkv::api::gen::paxkv::{GetRequest, PutRequest};
use paxkv::api::{connect, Protocol, TPaxkvSyncClient};

fn main() -> thrift::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "127.0.0.1:9091".to_string());
    let count: usize = args.next().map_or(2_000, |n| n.parse().expect("count"));
    let mut client = connect(endpoint.as_str(), Protocol::Binary)?;
    let value = vec![b'v'; 256];
    let key = |n: usize| format!("latency/{:06}", n % 1_000).into_bytes();

    let mut last_version = 0;
    let puts = measure(count, |n| {
        last_version = client.put(PutRequest::new(key(n), value.clone(), None))?;
        Ok(())
    })?;
    report("put (256 B)", &puts);
    let gets = measure(count, |n| {
        client.get(GetRequest::new(key(n), None)).map(drop)
    })?;
    report("get, linearizable", &gets);
    let snapshot = measure(count, |n| {
        client.get(GetRequest::new(key(n), last_version)).map(drop)
    })?;
    report("get at a version", &snapshot);
    Ok(())
}

fn measure(
    count: usize,
    mut call: impl FnMut(usize) -> thrift::Result<()>,
) -> thrift::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        // A measurement tool: wall time is the point.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        call(n)?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(samples)
}

fn report(name: &str, sorted: &[Duration]) {
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
    println!(
        "{name:<20} n={:<6} mean={:>8.1}us p50={:>8.1}us p90={:>8.1}us p99={:>8.1}us max={:>8.1}us",
        sorted.len(),
        micros(mean),
        micros(at(0.50)),
        micros(at(0.90)),
        micros(at(0.99)),
        micros(sorted[sorted.len() - 1]),
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}
