//! Snapshot transfer between replicas, on a connection of its own to the peer listener, so
//! a transfer never delays consensus traffic:
//!
//! ```text
//! fetcher                                 sender
//! SnapshotFetch { from, min_slot, cluster }  --->
//!                                   <---  SnapshotOffer { slot, version, bytes, checksum }
//!                                         (or SnapshotUnavailable { reason })
//! SnapshotRead { offset }           --->
//!                                   <---  SnapshotData { offset, data, checksum } ... to the end
//! ```
//!
//! The bytes are the snapshot file's (zstd-compressed, checksummed chunks; see `file`), each
//! frame with a CRC32C of its own. The fetcher appends to `incoming-<slot>.pxs` and checks
//! every frame's offset and checksum; after a broken connection it asks again and resumes
//! from the bytes it has (also after a restart: the partial file stays). A complete file is
//! verified whole against the offer before it is installed. The sender paces what it
//! sends to `transfer_bytes_per_sec` (shared by all its transfers) and serves at most
//! `transfer_streams_max` at once.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

use super::{file, SharedCatalog, Slot, SnapshotError, SnapshotInfo};
use crate::consensus::NodeId;
use crate::metrics::ReplicaMetrics;
use crate::wire::{encode_frame, read_frame, PeerFrame, TransportError, DEFAULT_CLUSTER};

#[derive(Clone, Debug)]
pub struct StreamOptions {
    /// What one replica sends of snapshots per second, over all its transfers.
    pub transfer_bytes_per_sec: u64,
    /// Transfers one replica sends at once; beyond it a fetcher is told to try later.
    pub transfer_streams_max: usize,
    /// Bytes per data frame.
    pub transfer_chunk_bytes: usize,
    /// A fetch whose connection carries nothing for this long is broken off (and resumed).
    pub idle_timeout_ms: u64,
    /// The cluster this replica belongs to, named in every fetch (see `transport`).
    pub cluster: String,
}

impl Default for StreamOptions {
    fn default() -> StreamOptions {
        StreamOptions {
            transfer_bytes_per_sec: 64 << 20,
            transfer_streams_max: 2,
            transfer_chunk_bytes: 1 << 20,
            idle_timeout_ms: 5_000,
            cluster: DEFAULT_CLUSTER.to_string(),
        }
    }
}

/// Paces bytes to a rate: each send waits until the budget it spends is due.
struct Pacer {
    bytes_per_sec: u64,
    next_free: Mutex<Option<Instant>>,
}

impl Pacer {
    async fn take(&self, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let start = {
            let mut next_free = self.next_free.lock().expect("pacer lock");
            let now = Instant::now();
            let start = next_free.map_or(now, |free| free.max(now));
            *next_free = Some(start + cost);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// The sending side, shared by a replica's inbound connections.
#[derive(Clone)]
pub struct Sender {
    catalog: SharedCatalog,
    options: StreamOptions,
    pacer: Arc<Pacer>,
    streams: Arc<Semaphore>,
    metrics: ReplicaMetrics,
}

impl Sender {
    pub fn new(catalog: SharedCatalog, options: StreamOptions, metrics: ReplicaMetrics) -> Sender {
        Sender {
            catalog,
            pacer: Arc::new(Pacer {
                bytes_per_sec: options.transfer_bytes_per_sec,
                next_free: Mutex::new(None),
            }),
            streams: Arc::new(Semaphore::new(options.transfer_streams_max.max(1))),
            options,
            metrics,
        }
    }

    /// Serves one fetch (its `SnapshotFetch` already read) until the file is sent or the
    /// fetcher goes away.
    pub async fn serve(
        &self,
        stream: TcpStream,
        min_slot: Slot,
        frame_bytes_max: u32,
    ) -> Result<(), TransportError> {
        let (mut reader, writer) = stream.into_split();
        let mut writer = BufWriter::new(writer);
        let send = |frame: PeerFrame| encode_frame(&frame, frame_bytes_max);
        let permit = self.streams.try_acquire();
        let latest = self.catalog.lock().expect("catalog lock").latest().cloned();
        let opened = match (&permit, latest) {
            (Err(_), _) => Err("the sender is at transfer_streams_max".to_string()),
            (Ok(_), Some(info)) if info.slot >= min_slot => match File::open(&info.path) {
                Ok(file) => Ok((info, file)),
                Err(error) => Err(format!("snapshot {} unreadable: {error}", info.slot)),
            },
            (Ok(_), latest) => Err(format!(
                "no snapshot at or after slot {min_slot} (newest: {:?})",
                latest.map(|info| info.slot)
            )),
        };
        let (info, mut file) = match opened {
            Ok(opened) => opened,
            Err(reason) => {
                let frame = send(PeerFrame::SnapshotUnavailable { reason })?;
                return Ok(write_frame(&mut writer, &frame).await?);
            }
        };
        let offer = PeerFrame::SnapshotOffer {
            slot: info.slot,
            version: info.version,
            bytes: info.bytes,
            checksum: info.checksum,
        };
        // A fetcher that goes silent (its host died, a partition holds the connection open)
        // must not hold a stream slot for ever.
        let idle = Duration::from_millis(self.options.idle_timeout_ms.max(1));
        let stalled = || TransportError::Protocol("the fetcher stopped reading".into());
        let frame = send(offer)?;
        timeout(idle, write_frame(&mut writer, &frame))
            .await
            .map_err(|_| stalled())??;
        let request = timeout(idle, read_frame(&mut reader, frame_bytes_max));
        let mut offset = match request.await.map_err(|_| stalled())?? {
            PeerFrame::SnapshotRead { offset } if offset <= info.bytes => offset,
            other => {
                return Err(TransportError::Protocol(format!(
                    "expected SnapshotRead within {} bytes, got {}",
                    info.bytes,
                    other.kind()
                )))
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        let chunk = self.options.transfer_chunk_bytes.max(1);
        let mut buffer = vec![0u8; chunk];
        while offset < info.bytes {
            let take = usize::try_from((info.bytes - offset).min(chunk as u64)).expect("fits");
            file.read_exact(&mut buffer[..take])?;
            self.pacer.take(take).await;
            let data = buffer[..take].to_vec();
            let checksum = crc32c::crc32c(&data);
            let frame = send(PeerFrame::SnapshotData {
                offset,
                data,
                checksum,
            })?;
            timeout(idle, write_frame(&mut writer, &frame))
                .await
                .map_err(|_| stalled())??;
            self.metrics.snapshot_sent_bytes.inc_by(take as u64);
            offset += take as u64;
        }
        Ok(())
    }
}

async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    frame: &[u8],
) -> std::io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the peer has no snapshot to send: {0}")]
    Unavailable(String),
    #[error("no frame for {0} ms")]
    Idle(u64),
}

impl From<std::io::Error> for FetchError {
    fn from(error: std::io::Error) -> FetchError {
        FetchError::Snapshot(SnapshotError::Io(error))
    }
}

/// One attempt to fetch the newest snapshot at or after `min_slot` from the replica at
/// `address`, resuming a partial file of the same slot. Returns the complete file,
/// verified, at its `incoming` path.
pub async fn fetch(
    address: SocketAddr,
    me: NodeId,
    min_slot: Slot,
    catalog: &SharedCatalog,
    options: &StreamOptions,
    frame_bytes_max: u32,
    metrics: &ReplicaMetrics,
) -> Result<SnapshotInfo, FetchError> {
    let idle = Duration::from_millis(options.idle_timeout_ms.max(1));
    let idle_error = || FetchError::Idle(options.idle_timeout_ms);
    let stream = timeout(idle, TcpStream::connect(address))
        .await
        .map_err(|_| idle_error())??;
    stream.set_nodelay(true)?;
    let (mut reader, writer) = stream.into_split();
    let mut writer = BufWriter::new(writer);
    let request = PeerFrame::SnapshotFetch {
        from: me,
        min_slot,
        cluster: options.cluster.clone(),
    };
    write_frame(&mut writer, &encode_frame(&request, frame_bytes_max)?).await?;
    let offer = timeout(idle, read_frame(&mut reader, frame_bytes_max))
        .await
        .map_err(|_| idle_error())??;
    let (slot, version, bytes, checksum) = match offer {
        PeerFrame::SnapshotOffer {
            slot,
            version,
            bytes,
            checksum,
        } if slot >= min_slot => (slot, version, bytes, checksum),
        PeerFrame::SnapshotUnavailable { reason } => return Err(FetchError::Unavailable(reason)),
        other => {
            return Err(TransportError::Protocol(format!(
                "expected an offer, got {}",
                other.kind()
            ))
            .into())
        }
    };
    let (path, stale) = {
        let catalog = catalog.lock().expect("catalog lock");
        let stale: Vec<PathBuf> = (catalog.incoming().into_iter())
            .filter(|(other, _)| *other != slot)
            .map(|(_, path)| path)
            .collect();
        (catalog.incoming_path(slot), stale)
    };
    for path in stale {
        let _ = fs::remove_file(path);
    }
    let mut partial = OpenOptions::new().create(true).append(true).open(&path)?;
    let mut offset = partial.metadata()?.len();
    if offset > bytes {
        partial.set_len(0)?;
        offset = 0;
    }
    let read = PeerFrame::SnapshotRead { offset };
    write_frame(&mut writer, &encode_frame(&read, frame_bytes_max)?).await?;
    while offset < bytes {
        let frame = timeout(idle, read_frame(&mut reader, frame_bytes_max))
            .await
            .map_err(|_| idle_error())??;
        let PeerFrame::SnapshotData {
            offset: at,
            data,
            checksum: frame_checksum,
        } = frame
        else {
            return Err(
                TransportError::Protocol(format!("expected data, got {}", frame.kind())).into(),
            );
        };
        if at != offset || data.is_empty() || offset + data.len() as u64 > bytes {
            // A lost or reordered frame: keep what is written, resume on the next attempt.
            return Err(TransportError::Protocol(format!(
                "data at {at} (+{}) while expecting {offset} of {bytes}",
                data.len()
            ))
            .into());
        }
        if crc32c::crc32c(&data) != frame_checksum {
            return Err(
                TransportError::Protocol(format!("data at {at} fails its checksum")).into(),
            );
        }
        partial.write_all(&data)?;
        offset += data.len() as u64;
        metrics.snapshot_received_bytes.inc_by(data.len() as u64);
    }
    partial.sync_all()?;
    drop(partial);
    let verified = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || file::verify(&path))
            .await
            .map_err(|error| SnapshotError::Corrupt(format!("verification panicked: {error}")))?
    };
    let matches = |info: &SnapshotInfo| {
        (info.slot, info.version, info.bytes, info.checksum) == (slot, version, bytes, checksum)
    };
    match verified {
        Ok(info) if matches(&info) => Ok(info),
        other => {
            // Start over next time: the bytes on disk are not the offered file.
            let _ = fs::remove_file(&path);
            Err(match other {
                Err(error) => error.into(),
                Ok(info) => SnapshotError::Corrupt(format!(
                    "received slot {} ({} bytes, checksum {:08x}), offered slot {slot} ({bytes} bytes, checksum {checksum:08x})",
                    info.slot, info.bytes, info.checksum
                ))
                .into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::snapshot::Catalog;

    const MAX: u32 = 64 << 20;

    /// A sender's catalog holding one snapshot of `raw_bytes` of incompressible data.
    fn sender_catalog(dir: &std::path::Path, raw_bytes: usize) -> (SharedCatalog, SnapshotInfo) {
        let checkpoint = dir.join("checkpoint");
        fs::create_dir(&checkpoint).unwrap();
        let mut state = 0x2545_f491_u64;
        let data: Vec<u8> = (0..raw_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        fs::write(checkpoint.join("000009.sst"), data).unwrap();
        let mut catalog = Catalog::open(&dir.join("snapshots")).unwrap();
        let info = file::pack(&checkpoint, 77, 12, &catalog.path_for(77)).unwrap();
        catalog.insert(info.clone());
        (catalog.shared(), info)
    }

    /// Serves fetches the way the transport does; returns the address.
    async fn serve(sender: Sender) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let sender = sender.clone();
                tokio::spawn(async move {
                    if let Ok(PeerFrame::SnapshotFetch { min_slot, .. }) =
                        read_frame(&mut stream, MAX).await
                    {
                        let _ = sender.serve(stream, min_slot, MAX).await;
                    }
                });
            }
        });
        address
    }

    /// Forwards to `target`; the first connection is cut after `cut_after` bytes from the
    /// sender, and `flip_at` (if any) flips one byte of the sender's stream.
    async fn proxy(target: SocketAddr, cut_after: usize, flip_at: Option<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                tokio::spawn(async move {
                    let server = TcpStream::connect(target).await.unwrap();
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buffer = vec![0u8; 8192];
                    let mut forwarded = 0usize;
                    loop {
                        let Ok(read) = server_read.read(&mut buffer).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        let mut chunk = buffer[..read].to_vec();
                        if let Some(at) =
                            flip_at.filter(|at| (forwarded..forwarded + read).contains(at))
                        {
                            chunk[at - forwarded] ^= 0x01;
                        }
                        if first && forwarded + read > cut_after {
                            let keep = cut_after.saturating_sub(forwarded);
                            let _ = client_write.write_all(&chunk[..keep]).await;
                            return; // drops both halves: the connection breaks
                        }
                        if client_write.write_all(&chunk).await.is_err() {
                            return;
                        }
                        forwarded += read;
                    }
                });
            }
        });
        address
    }

    /// A sender serving one snapshot, and a receiver's empty catalog.
    struct Setup {
        /// Holds both catalogs until the test ends.
        _dir: tempfile::TempDir,
        info: SnapshotInfo,
        metrics: ReplicaMetrics,
        sender: SocketAddr,
        receiver: SharedCatalog,
        options: StreamOptions,
    }

    impl Setup {
        async fn new(raw_bytes: usize, bytes_per_sec: u64) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let (catalog, info) = sender_catalog(dir.path(), raw_bytes);
            let metrics = ReplicaMetrics::unregistered();
            let options = options(bytes_per_sec);
            let sender = serve(Sender::new(catalog, options.clone(), metrics.clone())).await;
            let receiver = Catalog::open(&dir.path().join("receiver")).unwrap();
            Setup {
                _dir: dir,
                info,
                metrics,
                sender,
                receiver: receiver.shared(),
                options,
            }
        }

        async fn fetch(&self, via: SocketAddr, min_slot: Slot) -> Result<SnapshotInfo, FetchError> {
            let (receiver, metrics) = (&self.receiver, &self.metrics);
            fetch(via, 2, min_slot, receiver, &self.options, MAX, metrics).await
        }
    }

    fn options(bytes_per_sec: u64) -> StreamOptions {
        StreamOptions {
            transfer_bytes_per_sec: bytes_per_sec,
            transfer_streams_max: 2,
            transfer_chunk_bytes: 64 << 10,
            idle_timeout_ms: 2_000,
            ..StreamOptions::default()
        }
    }

    #[tokio::test]
    async fn a_broken_transfer_resumes_where_it_stopped_and_arrives_whole() {
        let setup = Setup::new(700 << 10, 0).await;
        let info = &setup.info;
        let address = proxy(setup.sender, 300 << 10, None).await;
        let first = setup.fetch(address, 70).await;
        assert!(first.is_err(), "the cut transfer succeeded");
        let partial = setup.receiver.lock().unwrap().incoming_path(77);
        let kept = fs::metadata(&partial).unwrap().len();
        assert!(
            kept > 0 && kept < info.bytes,
            "kept {kept} of {}",
            info.bytes
        );
        let received_before = setup.metrics.snapshot_received_bytes.get();
        let fetched = setup.fetch(address, 70).await.unwrap();
        let got = (fetched.slot, fetched.bytes, fetched.checksum);
        assert_eq!(got, (77, info.bytes, info.checksum));
        assert_eq!(
            fs::read(&fetched.path).unwrap(),
            fs::read(&info.path).unwrap()
        );
        // The second attempt sent only what the first did not.
        let resent = setup.metrics.snapshot_received_bytes.get() - received_before;
        assert_eq!(resent, info.bytes - kept);
    }

    #[tokio::test]
    async fn a_corrupted_frame_or_file_is_refused_and_a_missing_snapshot_is_named() {
        let setup = Setup::new(200 << 10, 0).await;
        let flipped = proxy(setup.sender, usize::MAX, Some(100 << 10)).await;
        let error = setup.fetch(flipped, 1).await.unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
        // Newer than anything the sender has.
        let error = setup.fetch(setup.sender, 78).await.unwrap_err();
        assert!(matches!(error, FetchError::Unavailable(_)), "{error}");
        // A file damaged on the sender's disk: every frame checks, the whole file does not.
        let mut bytes = fs::read(&setup.info.path).unwrap();
        bytes[60_000] ^= 0x10;
        fs::write(&setup.info.path, bytes).unwrap();
        let stale = setup.receiver.lock().unwrap().incoming_path(77);
        let _ = fs::remove_file(&stale);
        let error = setup.fetch(setup.sender, 1).await.unwrap_err();
        let corrupt = matches!(error, FetchError::Snapshot(SnapshotError::Corrupt(_)));
        assert!(corrupt, "{error}");
        assert!(!stale.exists(), "a file that failed verification was kept");
    }

    #[tokio::test]
    async fn the_sender_paces_to_its_rate() {
        let rate = 4 << 20;
        let setup = Setup::new(1 << 20, rate).await;
        let started = Instant::now();
        setup.fetch(setup.sender, 1).await.unwrap();
        // The first frame goes at once; the rest wait for their budget.
        let bytes = setup.info.bytes;
        let floor = (bytes - (64 << 10)) as f64 / rate as f64;
        let elapsed = started.elapsed().as_secs_f64();
        assert!(
            elapsed >= floor * 0.95,
            "{bytes} bytes took {elapsed:.3} s, under {floor:.3} s"
        );
    }
}
