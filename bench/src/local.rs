//! The floors a replicated write cannot beat on this machine, measured through the same loop
//! as the servers: one disk flush ([`FsyncTarget`]) and one loopback round trip
//! ([`TcpRttTarget`]). Their clients treat the workload's `put` as the probe; nothing else.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use super::{BenchClient, ErrorKind, OpError, Outcome, Target};

fn io_error(context: &str, error: std::io::Error) -> OpError {
    OpError::new(ErrorKind::Io, format!("{context}: {error}"))
}

fn unsupported(operation: &str) -> OpError {
    OpError::unsupported(operation, "a local floor")
}

/// One measurement of a floor; the workload's `put` runs it.
pub trait Probe: Send {
    fn probe(&mut self, value: &[u8]) -> Result<(), OpError>;
}

/// A floor's client: `put` is its probe, and every other operation is unsupported.
pub struct FloorClient<P>(P);

impl<P: Probe> BenchClient for FloorClient<P> {
    fn put(&mut self, _key: &[u8], value: &[u8]) -> Result<(), OpError> {
        self.0.probe(value)
    }

    fn put_batch(&mut self, _pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), OpError> {
        Err(unsupported("preload"))
    }

    fn get(&mut self, _key: &[u8]) -> Result<(), OpError> {
        Err(unsupported("get"))
    }

    fn read_version(&mut self) -> Result<i64, OpError> {
        Err(unsupported("read_version"))
    }

    fn get_at(&mut self, _key: &[u8], _version: i64) -> Result<(), OpError> {
        Err(unsupported("get_at"))
    }

    fn txn(&mut self, _keys: [&[u8]; 2], _value: &[u8]) -> Result<Outcome, OpError> {
        Err(unsupported("txn"))
    }

    fn cas_increment(&mut self, _key: &[u8]) -> Result<Outcome, OpError> {
        Err(unsupported("cas"))
    }
}

/// Appends the value (4 KiB by default) to a fresh file in `dir` and fdatasyncs it, as a
/// WAL append does: the flush includes the file's growing length.
pub struct FsyncTarget {
    dir: PathBuf,
}

impl FsyncTarget {
    pub fn new(dir: &Path) -> FsyncTarget {
        FsyncTarget {
            dir: dir.to_path_buf(),
        }
    }
}

/// The probe file; removed when the client is dropped.
pub struct FsyncClient {
    file: File,
    path: PathBuf,
}

impl Drop for FsyncClient {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Target for FsyncTarget {
    type Connection = ();
    type Client = FloorClient<FsyncClient>;

    fn name(&self) -> &'static str {
        "local"
    }

    fn connect(&self, _endpoint: &str) -> Result<(), OpError> {
        Ok(())
    }

    fn client(&self, _connection: &Arc<()>) -> Result<Self::Client, OpError> {
        let path = self
            .dir
            .join(format!("paxkv-bench-fsync-{}", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&format!("create {}", path.display()), e))?;
        Ok(FloorClient(FsyncClient { file, path }))
    }

    fn batch_pairs_max(&self) -> usize {
        1
    }
}

impl Probe for FsyncClient {
    fn probe(&mut self, value: &[u8]) -> Result<(), OpError> {
        self.file
            .write_all(value)
            .map_err(|e| io_error("append", e))?;
        self.file.sync_data().map_err(|e| io_error("fdatasync", e))
    }
}

/// A ping-pong of the value (64 bytes by default) with an echo thread over loopback TCP,
/// Nagle off on both ends, as the Thrift connections have it.
pub struct TcpRttTarget {
    echo: SocketAddr,
}

impl TcpRttTarget {
    /// Starts the echo listener on a free loopback port. Its threads live as long as the
    /// process (a run is one process); each connection's thread ends when its peer closes.
    pub fn start() -> Result<TcpRttTarget, OpError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| io_error("bind 127.0.0.1:0", e))?;
        let echo = listener
            .local_addr()
            .map_err(|e| io_error("local_addr", e))?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo_until_closed(stream));
            }
        });
        Ok(TcpRttTarget { echo })
    }
}

fn echo_until_closed(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

pub struct TcpRttClient {
    stream: TcpStream,
    reply: Vec<u8>,
}

impl Target for TcpRttTarget {
    type Connection = ();
    type Client = FloorClient<TcpRttClient>;

    fn name(&self) -> &'static str {
        "local"
    }

    fn connect(&self, _endpoint: &str) -> Result<(), OpError> {
        Ok(())
    }

    fn client(&self, _connection: &Arc<()>) -> Result<Self::Client, OpError> {
        let stream = TcpStream::connect(self.echo).map_err(|e| io_error("connect", e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| io_error("set_nodelay", e))?;
        Ok(FloorClient(TcpRttClient {
            stream,
            reply: Vec::new(),
        }))
    }

    fn batch_pairs_max(&self) -> usize {
        1
    }
}

impl Probe for TcpRttClient {
    fn probe(&mut self, value: &[u8]) -> Result<(), OpError> {
        self.stream
            .write_all(value)
            .map_err(|e| io_error("send", e))?;
        self.reply.resize(value.len(), 0);
        self.stream
            .read_exact(&mut self.reply)
            .map_err(|e| io_error("receive", e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{run, BenchConfig, Stop, Workload};
    use super::*;

    #[test]
    fn fsync_floor_appends_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BenchConfig::new(Workload::Fsync, Vec::new());
        config.stop = Stop::Ops(20);
        let report = run(&FsyncTarget::new(dir.path()), &config).unwrap();
        assert_eq!((report.ops, report.errors), (20, 0));
        assert!(report.p50_us > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn tcp_round_trips_echo() {
        let mut config = BenchConfig::new(Workload::TcpRtt, Vec::new());
        config.stop = Stop::Ops(200);
        let report = run(&TcpRttTarget::start().unwrap(), &config).unwrap();
        assert_eq!((report.ops, report.errors), (200, 0));
    }
}
