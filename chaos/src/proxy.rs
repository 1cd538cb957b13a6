//! A TCP proxy for one directed peer link, so the nemesis can cut it without a server
//! change. A replica listens on its own member entry's `peer_addr` and dials the others'
//! (one connection per direction, opening with `Hello`), so each replica's config names,
//! as every other member's address, the proxy of the link from it to that member.
//!
//! Cut, the proxy closes the link's open connections and every new one at once; the
//! sender's transport reconnects with backoff, and once the link passes again the next
//! attempt gets through. Bytes of a cut connection that were not yet forwarded are lost,
//! as a frame cut mid-way would be on a real network.
//!
//! Slowed, it holds each chunk it reads for the delay before forwarding it: every message
//! arrives at least that late, and a burst waits behind the chunk before it.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often an idle accept or read checks whether the link was cut or the proxy stopped.
const POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const BUFFER_BYTES: usize = 64 << 10;

#[derive(Default)]
struct Flags {
    cut: AtomicBool,
    stopped: AtomicBool,
    delay_ms: AtomicU64,
}

impl Flags {
    fn closed(&self) -> bool {
        self.cut.load(Ordering::SeqCst) || self.stopped.load(Ordering::SeqCst)
    }
}

/// Forwards connections accepted on its listener to `target` until cut or dropped.
pub struct Proxy {
    flags: Arc<Flags>,
}

impl Proxy {
    /// Starts forwarding from `listener` (already bound) to `target`.
    pub fn start(listener: TcpListener, target: SocketAddr) -> std::io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        let flags = Arc::new(Flags::default());
        let accepting = flags.clone();
        thread::spawn(move || accept_loop(&listener, target, &accepting));
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
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.flags.stopped.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, target: SocketAddr, flags: &Arc<Flags>) {
    while !flags.stopped.load(Ordering::SeqCst) {
        let inbound = match listener.accept() {
            Ok((inbound, _)) => inbound,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
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
        let _ = forward_both_ways(inbound, outbound, flags);
    }
}

fn forward_both_ways(
    inbound: TcpStream,
    outbound: TcpStream,
    flags: &Arc<Flags>,
) -> std::io::Result<()> {
    for stream in [&inbound, &outbound] {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
    }
    let (inbound2, outbound2) = (inbound.try_clone()?, outbound.try_clone()?);
    let (there, back) = (flags.clone(), flags.clone());
    thread::spawn(move || copy(inbound, outbound, &there));
    thread::spawn(move || copy(outbound2, inbound2, &back));
    Ok(())
}

/// Copies `from` to `to` until either end closes or the link is cut, then shuts both down
/// (so the copy the other way ends too).
fn copy(mut from: TcpStream, mut to: TcpStream, flags: &Flags) {
    let mut buffer = vec![0u8; BUFFER_BYTES];
    while !flags.closed() {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                let delay = flags.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                if flags.closed() || to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue
            }
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy::start(listener, echo_server()).unwrap();
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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy::start(listener, echo_server()).unwrap();
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
}
