//! A TCP relay on loopback between a daemon and its PostgreSQL server, with the faults a
//! network can have that the server's own tools cannot make: [`Proxy::freeze`] stops
//! forwarding in both directions while every socket stays open (the kernel keeps
//! acknowledging what arrives, as a stalled middlebox or a frozen peer does), and new
//! connections are still accepted but not forwarded; [`Proxy::thaw`] forwards again,
//! what was held included; [`Proxy::cut`] closes every relayed connection at once.
//!
//! Plain threads: one accepting, and per connection one waiting to reach the server and
//! then two pumps (one each way). A pump reads only while the proxy is not frozen, so a
//! frozen proxy's buffers fill and stay full. Dropping the proxy closes everything.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a pump looks at the switches while there is nothing to read.
const TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Switches {
    frozen: AtomicBool,
    stopped: AtomicBool,
    /// Every socket of the relay, both ends, for [`Proxy::cut`] and drop.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Switches {
    fn keep(&self, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            self.sockets.lock().unwrap().push(clone);
        }
    }

    fn close_all(&self) {
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Waits while frozen; false once the proxy is stopped.
    fn wait_thawed(&self) -> bool {
        while self.frozen.load(Ordering::SeqCst) {
            if self.stopped.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(TICK);
        }
        !self.stopped.load(Ordering::SeqCst)
    }
}

/// A relay from a loopback port of its own to `upstream`.
pub struct Proxy {
    addr: SocketAddr,
    switches: Arc<Switches>,
}

impl Proxy {
    /// Starts relaying to `upstream` (the server's address).
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let switches = Arc::new(Switches::default());
        let accepting = switches.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                accepting.keep(&client);
                let switches = accepting.clone();
                std::thread::spawn(move || relay(client, upstream, switches));
            }
        });
        Proxy { addr, switches }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops forwarding both ways; sockets stay open, new connections are accepted and held.
    pub fn freeze(&self) {
        self.switches.frozen.store(true, Ordering::SeqCst);
    }

    /// Forwards again, what waited meanwhile included.
    pub fn thaw(&self) {
        self.switches.frozen.store(false, Ordering::SeqCst);
    }

    /// Closes every connection relayed so far (both ends); new ones are relayed as before.
    pub fn cut(&self) {
        self.switches.close_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switches.stopped.store(true, Ordering::SeqCst);
        self.switches.close_all();
        // Wakes the accepting thread so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One client's connection: held while frozen, then joined to a connection of its own to
/// the server, a pump each way.
fn relay(client: TcpStream, upstream: SocketAddr, switches: Arc<Switches>) {
    if !switches.wait_thawed() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    switches.keep(&server);
    let (Ok(client_in), Ok(server_in)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let back = switches.clone();
    std::thread::spawn(move || pump(server_in, client, back));
    pump(client_in, server, switches);
}

/// Copies `from` to `to` while not frozen, until either end closes.
fn pump(mut from: TcpStream, mut to: TcpStream, switches: Arc<Switches>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if !switches.wait_thawed() {
            break;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
