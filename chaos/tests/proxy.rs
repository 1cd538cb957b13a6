//! The frame-aware link proxy over a local TCP pair: a lossy link drops whole frames but
//! never a connection's first, and the same ones for the same seed; a reordering link only
//! swaps neighbours and loses nothing; an oversized length passes through unparsed.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use paxkv_chaos::proxy::{LinkFaults, Proxy};

/// A server that reads each connection to its end and sends what it got.
fn sink_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let sender = sender.clone();
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stream.read_to_end(&mut bytes);
                let _ = sender.send(bytes);
            });
        }
    });
    (addr, receiver)
}

fn proxy_to(target: SocketAddr, seed: u64) -> (Proxy, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (Proxy::start(listener, target, seed).unwrap(), addr)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).unwrap();
    [&length.to_be_bytes()[..], body].concat()
}

/// Frames 0 .. count, each body its number (and a varying tail, so frames differ in
/// length), sent in one burst through `addr`; the frames that arrived, by number.
fn send_numbered(addr: SocketAddr, count: u32, arrived: &mpsc::Receiver<Vec<u8>>) -> Vec<u32> {
    let mut bytes = Vec::new();
    for n in 0..count {
        let tail = vec![7u8; usize::try_from(n % 50).unwrap()];
        bytes.extend(frame(&[&n.to_be_bytes()[..], &tail].concat()));
    }
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(&bytes).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let received = arrived.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut numbers = Vec::new();
    let mut rest = &received[..];
    while !rest.is_empty() {
        let length = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let body = &rest[4..4 + usize::try_from(length).unwrap()];
        let n = u32::from_be_bytes(body[..4].try_into().unwrap());
        assert_eq!(
            body.len(),
            4 + usize::try_from(n % 50).unwrap(),
            "frame {n} whole"
        );
        numbers.push(n);
        rest = &rest[4 + body.len()..];
    }
    numbers
}

fn lossy(loss: f64) -> LinkFaults {
    LinkFaults {
        loss,
        ..LinkFaults::default()
    }
}

#[test]
fn a_lossy_link_drops_whole_frames_never_the_first_and_the_same_ones_for_a_seed() {
    let (sink, arrived) = sink_server();
    let (proxy, addr) = proxy_to(sink, 42);
    proxy.set_faults(lossy(0.5));
    let first = send_numbered(addr, 400, &arrived);
    assert_eq!(first[0], 0, "the first frame always passes");
    assert!(first.windows(2).all(|w| w[0] < w[1]), "in order: {first:?}");
    assert!((120..=280).contains(&first.len()), "{} of 400", first.len());
    let counts = proxy.counts();
    assert_eq!(counts.frames, 400);
    assert_eq!(counts.dropped, 400 - first.len() as u64);

    // Another proxy with the same seed: its first connection drops the same frames.
    let (again, again_addr) = proxy_to(sink, 42);
    again.set_faults(lossy(0.5));
    assert_eq!(send_numbered(again_addr, 400, &arrived), first);
    let (other, other_addr) = proxy_to(sink, 43);
    other.set_faults(lossy(0.5));
    assert_ne!(send_numbered(other_addr, 400, &arrived), first);

    // Everything lost but the Hello; and nothing once the loss is off again.
    proxy.set_faults(lossy(1.0));
    assert_eq!(send_numbered(addr, 50, &arrived), vec![0]);
    proxy.set_faults(LinkFaults::default());
    assert_eq!(
        send_numbered(addr, 50, &arrived),
        (0..50).collect::<Vec<_>>()
    );
}

#[test]
fn a_reordering_link_sends_a_held_frame_after_the_next_and_loses_none() {
    let (sink, arrived) = sink_server();
    let (proxy, addr) = proxy_to(sink, 7);
    proxy.set_faults(LinkFaults {
        reorder: 0.3,
        ..LinkFaults::default()
    });
    let numbers = send_numbered(addr, 400, &arrived);
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..400).collect::<Vec<_>>(), "each frame once");
    assert_eq!(numbers[0], 0, "the first frame always passes");
    // Only neighbours trade places: a held frame goes out right after the next one.
    for (at, &n) in numbers.iter().enumerate() {
        assert!(n.abs_diff(u32::try_from(at).unwrap()) <= 1, "{numbers:?}");
    }
    let swapped = numbers.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(swapped >= 30, "{swapped} swaps in {numbers:?}");
    assert!(proxy.counts().reordered >= swapped as u64);
}

#[test]
fn an_oversized_length_passes_unparsed_even_where_every_frame_is_dropped() {
    // Over TCP: a length of 4 GiB - 1 is forwarded as its bytes come, even on a link
    // that drops every frame it parses.
    let (sink, arrived) = sink_server();
    let (proxy, addr) = proxy_to(sink, 3);
    proxy.set_faults(lossy(1.0));
    let hello = frame(b"hello");
    let oversized = [&u32::MAX.to_be_bytes()[..], &[9u8; 1000]].concat();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(&[&hello[..], &oversized].concat())
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let received = arrived.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(received, [&hello[..], &oversized].concat());
    assert_eq!(proxy.counts().oversized, 1);
    assert_eq!(proxy.counts().dropped, 0);
}
