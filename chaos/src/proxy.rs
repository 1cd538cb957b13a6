//! A TCP proxy for one directed peer link, so the nemesis can cut, slow, thin out and
//! reorder it without a server change. A replica listens on its own member entry's
//! `peer_addr` and dials the others' (one connection per direction, opening with `Hello`),
//! so each replica's config names, as every other member's address, the proxy of the link
//! from it to that member.
//!
//! The proxy knows the transport's framing (`src/replica/transport.rs`: a big-endian u32
//! length, then that many bytes of body), so it can drop or hold back whole frames and the
//! receiver still decodes every frame it gets:
//!
//! - Cut, it closes the link's open connections and every new one at once; the sender's
//!   transport reconnects with backoff, and once the link passes again the next attempt
//!   gets through. Bytes of a cut connection that were not yet forwarded are lost, as a
//!   frame cut mid-way would be on a real network.
//! - Slowed, it holds each chunk it reads for the delay before forwarding it: every message
//!   arrives at least that late, and a burst waits behind the chunk before it.
//! - Lossy, it drops each frame with the link's loss probability, on a connection that
//!   stays open.
//! - Reordering, it holds a frame back with the link's reorder probability and sends it
//!   right after the next frame (or once the connection has been idle for `POLL`).
//!
//! A connection's first frame (the `Hello`) always passes: without it the receiver closes
//! the connection, which is a cut, not a lost message. A length above `FRAME_BYTES_MAX` is
//! not buffered: that frame is forwarded as its bytes arrive, never dropped or held (a
//! held-back frame goes out before it), and framing resumes after it.
//!
//! Which frames are dropped or held comes from a seeded RNG per connection and direction,
//! derived from the proxy's seed and the connection's number: frame k of a link's
//! connection c meets the same draws in every run with the same seed.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How often an idle accept or read checks whether the link was cut or the proxy stopped,
/// and how long a held-back frame waits for a next one at most.
const POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BUFFER_BYTES: usize = 64 << 10;
const HEADER_BYTES: usize = 4;
/// The largest frame the proxy buffers whole (to drop or hold it). Above what the
/// transport sends in practice: a slot is at most 4 MiB plus one command, a catch-up reply
/// 8 MiB plus one slot. The transport's own limit (`peer_frame_bytes_max`, 512 MiB) is far
/// higher; a frame above this one is forwarded unparsed rather than allocated.
pub const FRAME_BYTES_MAX: u32 = 32 << 20;

/// What a link does to the frames it forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkFaults {
    pub cut: bool,
    pub delay: Duration,
    /// Probability that a frame (other than a connection's first) is dropped.
    pub loss: f64,
    /// Probability that a frame is held back and sent after the next one.
    pub reorder: f64,
}

impl LinkFaults {
    /// Both faults at once on one link: cut if either cuts, the longer delay, the higher
    /// probabilities.
    pub fn union(self, other: LinkFaults) -> LinkFaults {
        LinkFaults {
            cut: self.cut || other.cut,
            delay: self.delay.max(other.delay),
            loss: self.loss.max(other.loss),
            reorder: self.reorder.max(other.reorder),
        }
    }
}

/// Frames a link has forwarded, dropped and held back, over every connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounts {
    pub frames: u64,
    pub dropped: u64,
    pub reordered: u64,
    /// Frames above `FRAME_BYTES_MAX`, forwarded unparsed.
    pub oversized: u64,
}

impl LinkCounts {
    pub fn plus(self, other: LinkCounts) -> LinkCounts {
        LinkCounts {
            frames: self.frames + other.frames,
            dropped: self.dropped + other.dropped,
            reordered: self.reordered + other.reordered,
            oversized: self.oversized + other.oversized,
        }
    }
}

#[derive(Default)]
struct Flags {
    cut: AtomicBool,
    stopped: AtomicBool,
    delay_ms: AtomicU64,
    /// `f64::to_bits` of the probabilities.
    loss: AtomicU64,
    reorder: AtomicU64,
    frames: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
    oversized: AtomicU64,
}

impl Flags {
    fn closed(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst)
    }

    fn loss(&self) -> f64 {
        f64::from_bits(self.loss.load(Ordering::SeqCst))
    }

    fn reorder(&self) -> f64 {
        f64::from_bits(self.reorder.load(Ordering::SeqCst))
    }
}

/// Forwards connections accepted on its listener to `target` until cut or dropped.
pub struct Proxy {
    flags: Arc<Flags>,
}

impl Proxy {
    /// Starts forwarding from `listener` (already bound) to `target`; `seed` decides which
    /// frames a lossy or reordering link drops or holds.
    pub fn start(listener: TcpListener, target: SocketAddr, seed: u64) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let flags = Arc::new(Flags::default());
        let accepting = flags.clone();
        thread::spawn(move || accept_loop(&listener, target, seed, &accepting));
        Ok(Proxy { flags })
    }

    /// Cuts (true) or restores (false) the link.
    pub fn set_cut(&self, cut: bool) {
        self.flags.cut.store(cut, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.flags.cut.load(Ordering::SeqCst)
    }

    /// Delays what the link forwards by `delay` from now on (zero: no delay).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.flags.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.flags.delay_ms.load(Ordering::SeqCst))
    }

    /// Sets every fault of the link at once.
    pub fn set_faults(&self, faults: LinkFaults) {
        self.set_cut(faults.cut);
        self.set_delay(faults.delay);
        let (loss, reorder) = (faults.loss.clamp(0.0, 1.0), faults.reorder.clamp(0.0, 1.0));
        self.flags.loss.store(loss.to_bits(), Ordering::SeqCst);
        self.flags
            .reorder
            .store(reorder.to_bits(), Ordering::SeqCst);
    }

    pub fn faults(&self) -> LinkFaults {
        LinkFaults {
            cut: self.is_cut(),
            delay: self.delay(),
            loss: self.flags.loss(),
            reorder: self.flags.reorder(),
        }
    }

    pub fn counts(&self) -> LinkCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        LinkCounts {
            frames: load(&self.flags.frames),
            dropped: load(&self.flags.dropped),
            reordered: load(&self.flags.reordered),
            oversized: load(&self.flags.oversized),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flags.stopped.store(true, Ordering::SeqCst);
    }
}

/// A seed for each of a link's connections and directions (splitmix64's finalizer, so
/// neighbouring inputs give unrelated seeds).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, seed: u64, flags: &Arc<Flags>) {
    let mut connections = 0u64;
    while !flags.stopped.load(Ordering::SeqCst) {
        let inbound = match listener.accept() {
            Ok((inbound, _)) => inbound,
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        if flags.closed() {
            // Dropped: the sender sees the connection closed and retries later.
            continue;
        }
        let Ok(outbound) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            continue;
        };
        connections += 1;
        let seeds = (
            derive_seed(seed, 2 * connections),
            derive_seed(seed, 2 * connections + 1),
        );
        let _ = forward_both_ways(inbound, outbound, seeds, flags);
    }
}

fn forward_both_ways(
    inbound: TcpStream,
    outbound: TcpStream,
    (there_seed, back_seed): (u64, u64),
    flags: &Arc<Flags>,
) -> std::io::Result<()> {
    for stream in [&inbound, &outbound] {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
    }
    let (inbound2, outbound2) = (inbound.try_clone()?, outbound.try_clone()?);
    let (there, back) = (flags.clone(), flags.clone());
    // The transport writes only from dialer to listener; the way back is framed the same,
    // so a protocol that answers on the same connection would meet the same faults.
    thread::spawn(move || copy(inbound, outbound, Frames::new(there_seed), &there));
    thread::spawn(move || copy(outbound2, inbound2, Frames::new(back_seed), &back));
    Ok(())
}

/// Copies `from` to `to`, frame by frame, until either end closes or the link is cut, then
/// shuts both down (so the copy the other way ends too).
fn copy(mut from: TcpStream, mut to: TcpStream, mut frames: Frames, flags: &Flags) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    let mut pieces = Vec::new();
    while !flags.closed() {
        match from.read(&mut buffer) {
            Ok(0) => {
                // The sender closed: what it sent is forwarded, a held-back frame too.
                let _ = frames.release_held(&mut to);
                break;
            }
            Ok(n) => {
                let delay = flags.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                frames.split(&buffer[..n], &mut pieces);
                let forwarded = pieces
                    .drain(..)
                    .try_for_each(|piece| frames.forward(piece, flags, &mut to));
                if flags.closed() || forwarded.is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Idle: a held-back frame waits no longer.
                if frames.release_held(&mut to).is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A stretch of one direction's bytes: a whole frame (length prefix included), or bytes
/// forwarded unparsed (an oversized frame's).
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Frame(Vec<u8>),
    /// `starts`: the first bytes (the length prefix) of an oversized frame.
    Raw {
        bytes: Vec<u8>,
        starts: bool,
    },
}

/// Where the splitter is in the byte stream.
enum State {
    Header {
        bytes: [u8; HEADER_BYTES],
        have: usize,
    },
    Body {
        frame: Vec<u8>,
        remaining: usize,
    },
    /// Inside an oversized frame: this many bytes of it still to pass unparsed.
    Raw {
        remaining: u64,
    },
}

/// One direction of one connection: splits its bytes into frames and decides each frame's
/// fate.
struct Frames {
    state: State,
    rng: StdRng,
    /// Frames seen on this connection in this direction.
    seen: u64,
    held: Option<Vec<u8>>,
}

impl Frames {
    fn new(seed: u64) -> Frames {
        Frames {
            state: State::Header {
                bytes: [0; HEADER_BYTES],
                have: 0,
            },
            rng: StdRng::seed_from_u64(seed),
            seen: 0,
            held: None,
        }
    }

    /// Appends to `pieces` what `input` completes; a partial frame stays buffered. Never
    /// allocates more than `FRAME_BYTES_MAX` plus the header for one frame.
    fn split(&mut self, mut input: &[u8], pieces: &mut Vec<Piece>) {
        while !input.is_empty() {
            input = match &mut self.state {
                State::Header { bytes, have } => {
                    let take = (HEADER_BYTES - *have).min(input.len());
                    bytes[*have..*have + take].copy_from_slice(&input[..take]);
                    *have += take;
                    if *have == HEADER_BYTES {
                        let header = *bytes;
                        self.start_body(header, pieces);
                    }
                    &input[take..]
                }
                State::Body { frame, remaining } => {
                    let take = (*remaining).min(input.len());
                    frame.extend_from_slice(&input[..take]);
                    *remaining -= take;
                    if *remaining == 0 {
                        pieces.push(Piece::Frame(std::mem::take(frame)));
                        self.state = State::header();
                    }
                    &input[take..]
                }
                State::Raw { remaining } => {
                    let take =
                        usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                    pieces.push(Piece::Raw {
                        bytes: input[..take].to_vec(),
                        starts: false,
                    });
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::header();
                    }
                    &input[take..]
                }
            };
        }
    }

    fn start_body(&mut self, header: [u8; HEADER_BYTES], pieces: &mut Vec<Piece>) {
        let bytes = u32::from_be_bytes(header);
        if bytes > FRAME_BYTES_MAX {
            pieces.push(Piece::Raw {
                bytes: header.to_vec(),
                starts: true,
            });
            self.state = State::Raw {
                remaining: u64::from(bytes),
            };
            return;
        }
        let body = usize::try_from(bytes).expect("below FRAME_BYTES_MAX");
        if body == 0 {
            pieces.push(Piece::Frame(header.to_vec()));
            self.state = State::header();
            return;
        }
        let mut frame = Vec::with_capacity(HEADER_BYTES + body);
        frame.extend_from_slice(&header);
        self.state = State::Body {
            frame,
            remaining: body,
        };
    }

    /// Writes, drops or holds one piece, as the link's faults and this frame's draws say.
    fn forward(&mut self, piece: Piece, flags: &Flags, to: &mut impl Write) -> std::io::Result<()> {
        let frame = match piece {
            Piece::Raw { bytes, starts } => {
                if starts {
                    self.seen += 1;
                    flags.frames.fetch_add(1, Ordering::SeqCst);
                    flags.oversized.fetch_add(1, Ordering::SeqCst);
                }
                self.release_held(to)?;
                return to.write_all(&bytes);
            }
            Piece::Frame(frame) => frame,
        };
        let first = self.seen == 0;
        self.seen += 1;
        flags.frames.fetch_add(1, Ordering::SeqCst);
        // Both draws for every frame, so a frame's fate depends on its number and the
        // probabilities, not on what happened to the frames before it.
        let (drop_draw, hold_draw): (f64, f64) = (self.rng.gen(), self.rng.gen());
        if first {
            return to.write_all(&frame);
        }
        if drop_draw < flags.loss() {
            flags.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        if let Some(held) = self.held.take() {
            to.write_all(&frame)?;
            return to.write_all(&held);
        }
        if hold_draw < flags.reorder() {
            flags.reordered.fetch_add(1, Ordering::SeqCst);
            self.held = Some(frame);
            return Ok(());
        }
        to.write_all(&frame)
    }

    fn release_held(&mut self, to: &mut impl Write) -> std::io::Result<()> {
        match self.held.take() {
            Some(held) => to.write_all(&held),
            None => Ok(()),
        }
    }
}

impl State {
    fn header() -> State {
        State::Header {
            bytes: [0; HEADER_BYTES],
            have: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                thread::spawn(move || {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let length = u32::try_from(body.len()).unwrap();
        [&length.to_be_bytes()[..], body].concat()
    }

    fn proxy_to(target: SocketAddr, seed: u64) -> (Proxy, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (Proxy::start(listener, target, seed).unwrap(), addr)
    }

    fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"ping")?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer)?;
        Ok(answer.to_vec())
    }

    #[test]
    fn forwards_until_cut_and_again_once_restored() {
        let (proxy, addr) = proxy_to(echo_server(), 1);
        assert_eq!(round_trip(addr).unwrap(), b"ping");

        // An open connection is closed when the link is cut.
        let mut open = TcpStream::connect(addr).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        open.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        open.read_exact(&mut answer).unwrap();
        proxy.set_cut(true);
        assert!(proxy.is_cut());
        thread::sleep(POLL * 5);
        let _ = open.write_all(b"ping");
        let mut rest = Vec::new();
        assert!(matches!(open.read_to_end(&mut rest), Ok(0) | Err(_)));
        // New connections are closed at once.
        assert!(round_trip(addr).is_err());

        proxy.set_cut(false);
        assert_eq!(round_trip(addr).unwrap(), b"ping");
    }

    #[test]
    fn a_slowed_link_forwards_late() {
        let (proxy, addr) = proxy_to(echo_server(), 1);
        let delay = Duration::from_millis(150);
        proxy.set_delay(delay);
        assert_eq!(proxy.delay(), delay);
        let clock = crate::history::Clock::start();
        assert_eq!(round_trip(addr).unwrap(), b"ping");
        // Both directions go through the proxy: the request and the echo wait.
        assert!(clock.elapsed() >= delay * 2, "{:?}", clock.elapsed());
        proxy.set_delay(Duration::ZERO);
        let clock = crate::history::Clock::start();
        assert_eq!(round_trip(addr).unwrap(), b"ping");
        assert!(clock.elapsed() < delay, "{:?}", clock.elapsed());
    }

    #[test]
    fn an_oversized_frame_is_never_buffered_and_framing_resumes_after_it() {
        let mut frames = Frames::new(0);
        let mut pieces = Vec::new();
        let length = FRAME_BYTES_MAX + 1;
        frames.split(&length.to_be_bytes(), &mut pieces);
        let chunk = vec![0u8; BUFFER_BYTES];
        let mut left = usize::try_from(length).unwrap();
        while left > 0 {
            let n = left.min(chunk.len());
            frames.split(&chunk[..n], &mut pieces);
            assert!(matches!(
                frames.state,
                State::Raw { .. } | State::Header { .. }
            ));
            left -= n;
        }
        frames.split(&frame(b"next"), &mut pieces);
        let raw: usize = (pieces.iter())
            .map(|p| match p {
                Piece::Raw { bytes, .. } => bytes.len(),
                Piece::Frame(_) => 0,
            })
            .sum();
        assert_eq!(raw, 4 + usize::try_from(length).unwrap());
        assert_eq!(pieces.last(), Some(&Piece::Frame(frame(b"next"))));
    }

    #[test]
    fn frames_split_the_same_whatever_the_chunks() {
        let bytes: Vec<u8> = (0..20u8)
            .flat_map(|n| frame(&vec![n; usize::from(n)]))
            .collect();
        let whole = {
            let mut pieces = Vec::new();
            Frames::new(0).split(&bytes, &mut pieces);
            pieces
        };
        assert_eq!(whole.len(), 20);
        let mut frames = Frames::new(0);
        let mut pieces = Vec::new();
        for byte in &bytes {
            frames.split(std::slice::from_ref(byte), &mut pieces);
        }
        assert_eq!(pieces, whole);
    }
}
