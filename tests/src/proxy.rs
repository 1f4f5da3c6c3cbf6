//! [`RouteProxy`]: a loopback TCP proxy in front of one cluster route, which a test can cut
//! (a network partition: every open connection is shut down and new ones are refused), slow
//! down (every byte delivered late, in order) and heal. The cluster fixture puts one proxy on each ordered pair of nodes, so cutting the
//! proxies of one node isolates it while it keeps running.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// The copy buffer of one direction of one connection.
const CHUNK_BYTES: usize = 64 * 1024;

/// The most chunks held back by a delay, per direction of a connection: a reader that gets
/// this far ahead waits (the sender sees a slow link, as over a real one).
const CHUNKS_IN_FLIGHT: usize = 256;

#[derive(Default)]
struct Shared {
    cut: AtomicBool,
    /// The delay of each direction, in ms: towards the target, towards the dialer.
    delay_ms: [AtomicU64; 2],
    stopped: AtomicBool,
    /// Both ends of every open connection, to shut them down on a cut.
    open: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn shut_down_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A proxy from a loopback port to a target port, running until dropped.
pub struct RouteProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl RouteProxy {
    /// Listens on a free loopback port and forwards every connection to `target_port`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target_port: u16) -> RouteProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("a local address").port();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept(&listener, target_port, &accepting));
        RouteProxy { port, shared }
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the link: open connections are shut down, new ones closed at once.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.shut_down_all();
    }

    /// Delivers every byte `delay` late from now on (in order; zero for none): the bytes the
    /// dialer sends when `towards_target`, else the bytes the target answers.
    pub fn delay(&self, towards_target: bool, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms[usize::from(!towards_target)].store(millis, Ordering::SeqCst);
    }

    /// Heals a cut and removes a delay: new connections are forwarded again, at once.
    pub fn heal(&self) {
        for delay in &self.shared.delay_ms {
            delay.store(0, Ordering::SeqCst);
        }
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for RouteProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.shut_down_all();
        // Wakes the accepting thread so that it sees the stop and returns.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept(listener: &TcpListener, target_port: u16, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone())
        else {
            continue;
        };
        {
            let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
            // Connections closed by their ends are dropped from the list on each accept.
            open.retain(|stream| stream.peer_addr().is_ok());
            if let (Ok(client), Ok(server)) = (client.try_clone(), server.try_clone()) {
                open.push(client);
                open.push(server);
            }
        }
        for (direction, from, to) in [(0, client_reader, server), (1, server_reader, client)] {
            let shared = Arc::clone(shared);
            thread::spawn(move || copy(direction, from, to, &shared));
        }
    }
}

/// Copies one direction until either end closes or the link is cut: this thread reads, a
/// second one writes each chunk once its delay has passed.
fn copy(direction: usize, mut from: TcpStream, to: TcpStream, shared: &Arc<Shared>) {
    let (sender, receiver): (SyncSender<(Instant, Vec<u8>)>, _) = sync_channel(CHUNKS_IN_FLIGHT);
    let writer = {
        let shared = Arc::clone(shared);
        thread::spawn(move || deliver(direction, &receiver, to, &shared))
    };
    let mut buffer = vec![0; CHUNK_BYTES];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if shared.cut.load(Ordering::SeqCst)
            || sender
                .send((Instant::now(), buffer[..read].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(sender);
    let _ = writer.join();
    let _ = from.shutdown(Shutdown::Both);
}

fn deliver(
    direction: usize,
    chunks: &Receiver<(Instant, Vec<u8>)>,
    mut to: TcpStream,
    shared: &Shared,
) {
    while let Ok((read_at, chunk)) = chunks.recv() {
        let delay = Duration::from_millis(shared.delay_ms[direction].load(Ordering::SeqCst));
        if let Some(wait) = (read_at + delay).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        if shared.cut.load(Ordering::SeqCst) || to.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}
