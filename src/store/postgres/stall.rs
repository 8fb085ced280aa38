//! The stall watch: the client-side deadline of every PostgreSQL call
//! (`GWAR_DB_CALL_TIMEOUT_SECS`). A process-wide thread that, every [`POLL`], looks at
//! this process's TCP connections to the PostgreSQL servers the engine opened, and shuts
//! down (`shutdown(2)`, both ways) any on which a request has waited longer than the call
//! timeout for any answer.
//!
//! Why from outside: the synchronous `postgres` crate has no per-call timeout and gives no
//! access to its socket, and the kernel's own bounds (`TCP_USER_TIMEOUT`, keepalives) only
//! trip when the peer stops acknowledging. A peer that keeps the connection alive and
//! never answers (a frozen proxy, a stalled middlebox, a backend stopped with SIGSTOP)
//! defeats them, and a call would wait forever. The kernel keeps, per socket, when data
//! was last sent and last received (`tcp_info`, read through `diag.rs`): a socket whose
//! last data went out after the last data came in is waiting for an answer, and it has
//! waited since then. Shut down, the socket reads as closed: the crate's connection task
//! sees end-of-file, the blocked call returns an error (`Unavailable`), and its owner
//! drops the session and opens another at its next call, as for any broken connection.
//!
//! Invariants:
//! - Only sockets whose peer is a registered server ([`watch`]) are ever touched, and only
//!   this process's (the inode behind one of its descriptors, checked again just before
//!   the shutdown), and of those only the engine's own: the sockets that appeared while
//!   one of its sessions connected ([`claiming`]). A program that links the library and
//!   talks to the same server on connections of its own keeps them, however long its
//!   statements run — except one that is opened, and waits past the timeout, while an
//!   engine session is still connecting (a connect is bounded too, and cannot be told
//!   apart from it until it returns).
//! - A socket is waiting when data was sent strictly after the last data received. Both
//!   stamps have the kernel's tick as resolution (1–10 ms): a request sent within the
//!   same tick as the previous answer arrived shows both equal, like an idle connection
//!   whose request and answer both fell in one tick; and an answer that stops midway
//!   leaves the last data received newer than the request. Those count as waiting only
//!   while a call ([`Call`]) of this process has run longer than the timeout and the
//!   socket was last active after that call began, so an idle connection is never cut
//!   for being idle.
//! - A legitimately slow statement gets no answer before it ends, so it is abandoned at
//!   the timeout too: the writer's lock waits (3 s) and every statement the engine runs
//!   stay inside the default (5 s); migrations run under a call timeout of their own
//!   ([`MIGRATION_TIMEOUT`]).

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ::postgres::config::Host;
use ::postgres::Config;
use parking_lot::Mutex;

use super::diag::{own_sockets, socket_inode, tcp_sockets, TcpSocket};
use super::error::LOG;

/// How often the watch looks: a small share of any call timeout (at least 1 s).
const POLL: Duration = Duration::from_millis(250);

/// A server the engine talks to, by one of its addresses.
#[derive(Clone, Debug)]
struct Server {
    label: String,
    timeout: Duration,
    /// The URL's `host:port` it is, as `hosts.rs` names it.
    host: String,
}

/// The call timeout while a schema migration runs (start-up only): a migration's backfill
/// reads every row of a table in one statement, which on a large database outlasts any
/// call timeout meant for a game's statements.
pub(super) const MIGRATION_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Watch {
    /// Migrations running now: while any does, every server's timeout is at least
    /// [`MIGRATION_TIMEOUT`].
    migrating: AtomicU64,
    servers: Mutex<HashMap<SocketAddr, Server>>,
    /// Calls running now, by id: when each started.
    calls: Mutex<HashMap<u64, Instant>>,
    next_call: AtomicU64,
    /// Whether the thread runs (it starts with the first server registered).
    started: OnceLock<()>,
    /// The engine's sockets, by inode: those that appeared while its sessions connected.
    engine: Mutex<HashSet<u64>>,
    /// Engine sessions connecting now: meanwhile, a socket to a registered server is
    /// watched whoever opened it (the connecting session's is not known yet).
    connecting: AtomicU64,
    /// Host names that did not resolve (said once in the log).
    unresolved: Mutex<HashSet<String>>,
}

fn watch_state() -> &'static Watch {
    static WATCH: OnceLock<Watch> = OnceLock::new();
    WATCH.get_or_init(Watch::default)
}

/// Watches the connections to `config`'s servers (each host and port it names, resolved
/// now) with `timeout` as the call timeout, starting the watch's thread if need be. A
/// server registered twice keeps the smaller timeout. Hosts that do not resolve now and
/// Unix-domain sockets are not watched (a local socket has no network to stall), which
/// the log says.
pub(super) fn watch(config: &Config, label: &str, timeout: Duration) {
    let state = watch_state();
    register(state, config, label, timeout);
    if state.started.set(()).is_ok() {
        let spawned = std::thread::Builder::new()
            .name("gwar-pg-stall".into())
            .spawn(|| loop {
                std::thread::sleep(POLL);
                look(watch_state());
            });
        if let Err(error) = spawned {
            log::error!(target: LOG, "cannot start the PostgreSQL call timeout's watch: {error}; \
                a stalled connection is bounded by TCP's timeouts only");
        }
    }
}

/// Resolves `config`'s hosts again and watches any new address, with the label and call
/// timeout [`watch`] registered: a host name moved to another address (a managed
/// service's failover moves its endpoint's name) is watched there too. Called before each
/// session opens; nothing when nothing was registered (no engine).
pub(super) fn rewatch(config: &Config) {
    let state = watch_state();
    let registered = state
        .servers
        .lock()
        .values()
        .map(|server| (server.label.clone(), server.timeout))
        .min_by_key(|(_, timeout)| *timeout);
    if let Some((label, timeout)) = registered {
        register(state, config, &label, timeout);
    }
}

/// Registers every address `config`'s hosts resolve to now.
fn register(state: &Watch, config: &Config, label: &str, timeout: Duration) {
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut addresses: Vec<(SocketAddr, String)> = Vec::new();
    for (i, address) in config.get_hostaddrs().iter().enumerate() {
        // Named as `hosts.rs` names it: by its host name when the URL gives one.
        let host = match config.get_hosts().get(i) {
            Some(Host::Tcp(name)) => format!("{name}:{}", port_of(i)),
            _ => format!("{address}:{}", port_of(i)),
        };
        addresses.push((SocketAddr::new(address.to_canonical(), port_of(i)), host));
    }
    for (i, host) in config.get_hosts().iter().enumerate() {
        match host {
            Host::Tcp(name) => match (name.as_str(), port_of(i)).to_socket_addrs() {
                Ok(found) => addresses.extend(found.map(|a| {
                    let address = SocketAddr::new(a.ip().to_canonical(), a.port());
                    (address, format!("{name}:{}", port_of(i)))
                })),
                // Once per name: start-up may try again every second (waiting for a
                // primary), and the log need not say it every time.
                Err(error) if state.unresolved.lock().insert(name.clone()) => {
                    log::warn!(target: LOG,
                    "{label}: cannot resolve {name} for the call timeout's watch ({error}); \
                     its connections are bounded by TCP's timeouts only")
                }
                Err(_) => {}
            },
            Host::Unix(path) => log::debug!(target: LOG,
                "{label}: {} is a local socket; the call timeout does not watch it", path.display()),
        }
    }
    let mut servers = state.servers.lock();
    for (address, host) in addresses {
        let server = servers.entry(address).or_insert_with(|| Server {
            label: label.to_owned(),
            timeout,
            host,
        });
        server.timeout = server.timeout.min(timeout);
    }
}

/// A call on a PostgreSQL session, for as long as this lives: while one has run longer
/// than the timeout, a connection whose last send and receive fell in the same tick counts
/// as waiting (see the module's invariants).
pub(super) struct Call {
    id: u64,
}

impl Call {
    pub(super) fn start() -> Call {
        let state = watch_state();
        let id = state.next_call.fetch_add(1, Ordering::Relaxed);
        state.calls.lock().insert(id, Instant::now());
        Call { id }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        watch_state().calls.lock().remove(&self.id);
    }
}

/// Runs `connect` (an engine session's), and from then on watches the sockets to a
/// registered server that appeared meanwhile: the session's own, and at worst another
/// one opened by the same process at that moment.
pub(super) fn claiming<T>(connect: impl FnOnce() -> T) -> T {
    let state = watch_state();
    let before: HashSet<u64> = own_sockets().into_keys().collect();
    state.connecting.fetch_add(1, Ordering::SeqCst);
    let connected = connect();
    let appeared: Vec<u64> = own_sockets()
        .into_keys()
        .filter(|inode| !before.contains(inode))
        .collect();
    state.engine.lock().extend(appeared);
    state.connecting.fetch_sub(1, Ordering::SeqCst);
    connected
}

/// A schema migration, for as long as this lives (see [`MIGRATION_TIMEOUT`]).
pub(super) struct Migrating(());

impl Migrating {
    pub(super) fn start() -> Migrating {
        watch_state().migrating.fetch_add(1, Ordering::Relaxed);
        Migrating(())
    }
}

impl Drop for Migrating {
    fn drop(&mut self) {
        watch_state().migrating.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether `socket` has waited longer than `timeout` for an answer; `oldest_call` is how
/// long the oldest running call has run. Two ways:
/// - a request went out after the last data came in, longer than `timeout` ago: it has
///   had no answer since;
/// - a call has run longer than `timeout`, and this socket was last active during that
///   call (after it began) but not for `timeout` since: an answer stopped midway (the last
///   data came in after the request), or a request and the previous answer fell in one
///   tick. A socket last active before every running call began is idle, and left alone.
fn stalled(socket: &TcpSocket, timeout: Duration, oldest_call: Duration) -> bool {
    let ms = |ago: u32| Duration::from_millis(u64::from(ago));
    let (sent, received) = (ms(socket.sent_ago_ms), ms(socket.recv_ago_ms));
    let quiet = sent.min(received);
    if quiet < timeout {
        return false;
    }
    sent < received || (oldest_call >= timeout && quiet <= oldest_call + TICKS)
}

/// How far the kernel's stamps (counted in ticks of 1–10 ms, rounded) and our clock may
/// disagree about one moment.
const TICKS: Duration = Duration::from_millis(20);

/// Sockets already shut down, by inode, so each is logged once while its owner has not
/// closed it yet.
fn abandoned() -> &'static Mutex<HashSet<u64>> {
    static ABANDONED: OnceLock<Mutex<HashSet<u64>>> = OnceLock::new();
    ABANDONED.get_or_init(Default::default)
}

/// When the watch last abandoned a connection to each host (`host:port`, as the URL
/// names it), for `hosts.rs`: a host that hung is tried last.
fn hung() -> &'static Mutex<HashMap<String, Instant>> {
    static HUNG: OnceLock<Mutex<HashMap<String, Instant>>> = OnceLock::new();
    HUNG.get_or_init(Default::default)
}

/// When the watch last abandoned a connection to `host` (`host:port`).
pub(super) fn last_hung(host: &str) -> Option<Instant> {
    hung().lock().get(host).copied()
}

/// One look at every connection to a registered server.
fn look(state: &Watch) {
    let servers = state.servers.lock().clone();
    if servers.is_empty() {
        return;
    }
    let now = Instant::now();
    let oldest_call = state
        .calls
        .lock()
        .values()
        .map(|&started| now.saturating_duration_since(started))
        .max()
        .unwrap_or_default();
    let sockets = match tcp_sockets() {
        Ok(sockets) => sockets,
        Err(error) => {
            log::debug!(target: LOG, "the call timeout's watch cannot read the sockets: {error}");
            return;
        }
    };
    let migrating = state.migrating.load(Ordering::Relaxed) > 0;
    let connecting = state.connecting.load(Ordering::SeqCst) > 0;
    let ours = own_sockets();
    let mut abandoned = abandoned().lock();
    abandoned.retain(|inode| ours.contains_key(inode));
    let mut engine = state.engine.lock();
    engine.retain(|inode| ours.contains_key(inode));
    for socket in sockets {
        let (Some(server), Some(&fd)) = (servers.get(&socket.peer), ours.get(&socket.inode)) else {
            continue;
        };
        if !connecting && !engine.contains(&socket.inode) {
            continue;
        }
        let timeout = match migrating {
            true => server.timeout.max(MIGRATION_TIMEOUT),
            false => server.timeout,
        };
        if abandoned.contains(&socket.inode) || !stalled(&socket, timeout, oldest_call) {
            continue;
        }
        // The descriptor may have been closed and its number reused since the listing:
        // only the same socket is shut down.
        if socket_inode(fd) != Some(socket.inode) {
            continue;
        }
        abandoned.insert(socket.inode);
        hung().lock().insert(server.host.clone(), now);
        log::warn!(target: LOG,
            "{}: no answer from {} for {} ms (GWAR_DB_CALL_TIMEOUT_SECS={}): abandoning the \
             connection; its session is reopened at the next call",
            server.label, socket.peer, socket.sent_ago_ms, server.timeout.as_secs());
        if let Err(error) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both) {
            log::debug!(target: LOG, "{}: shutting a stalled connection down: {error}", server.label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name resolved again is watched at every address it has now, under the host name
    /// `hosts.rs` uses, with the registered timeout (kept at the smallest).
    #[test]
    fn addresses_are_registered_under_their_host_names() {
        let state = Watch::default();
        let config = |url: &str| url.parse::<Config>().unwrap();
        register(
            &state,
            &config("postgres://u@127.0.0.1:5999/db"),
            "db",
            Duration::from_secs(3),
        );
        register(
            &state,
            &config("postgres://u@localhost:6001,127.0.0.1:5999/db"),
            "db",
            Duration::from_secs(5),
        );
        let servers = state.servers.lock();
        let at = |port: u16| &servers[&SocketAddr::from(([127, 0, 0, 1], port))];
        assert_eq!(at(5999).host, "127.0.0.1:5999");
        assert_eq!(at(5999).timeout, Duration::from_secs(3), "the smaller kept");
        assert_eq!(at(6001).host, "localhost:6001");
        assert_eq!(at(6001).timeout, Duration::from_secs(5));
    }
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// Real sockets against a server that answers one connection and never the others:
    /// the watch shuts the engine's unanswered one down once its request has waited past
    /// the timeout, and leaves alone a connection idle since before the running call
    /// began, and an unanswered one that is not the engine's.
    #[test]
    fn the_watch_abandons_an_unanswered_request_and_leaves_an_idle_connection() {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let state = Watch::default();
        state.servers.lock().insert(
            server,
            Server {
                label: "test".into(),
                timeout: Duration::from_millis(500),
                host: server.to_string(),
            },
        );
        // Idle: one exchange, answered, then nothing.
        let mut idle = TcpStream::connect(server).unwrap();
        let (mut idle_peer, _) = listener.accept().unwrap();
        idle.write_all(b"q").unwrap();
        let mut byte = [0u8; 1];
        idle_peer.read_exact(&mut byte).unwrap();
        idle_peer.write_all(b"a").unwrap();
        idle.read_exact(&mut byte).unwrap();
        // The running call began after the idle connection's last exchange, further
        // apart than the kernel's stamps and our clock may disagree (`TICKS`).
        std::thread::sleep(Duration::from_millis(200));
        state.calls.lock().insert(0, Instant::now());
        // Unanswered: a request the server never answers.
        let mut waiting = TcpStream::connect(server).unwrap();
        let (_waiting_peer, _) = listener.accept().unwrap();
        waiting.write_all(b"q").unwrap();
        // The same, on a connection of the program's own (not the engine's).
        let mut foreign = TcpStream::connect(server).unwrap();
        let (_foreign_peer, _) = listener.accept().unwrap();
        foreign.write_all(b"q").unwrap();
        let inode = |stream: &TcpStream| socket_inode(stream.as_raw_fd()).unwrap();
        state.engine.lock().extend([inode(&idle), inode(&waiting)]);

        waiting
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let started = Instant::now();
        let abandoned = loop {
            look(&state);
            match waiting.read(&mut byte) {
                Ok(0) => break true,
                Ok(_) => panic!("the server never answers"),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break true,
            }
            if started.elapsed() > Duration::from_secs(20) {
                break false;
            }
        };
        assert!(abandoned, "the unanswered request was never abandoned");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "not before its timeout"
        );
        for (stream, what) in [(&mut idle, "idle"), (&mut foreign, "foreign")] {
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let read = stream.read(&mut byte);
            assert!(
                matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
                "the {what} connection was left open: {read:?}"
            );
        }
    }

    fn socket(sent_ago_ms: u32, recv_ago_ms: u32) -> TcpSocket {
        TcpSocket {
            inode: 1,
            peer: "127.0.0.1:5432".parse().unwrap(),
            sent_ago_ms,
            recv_ago_ms,
        }
    }

    #[test]
    fn only_a_request_unanswered_past_the_timeout_is_stalled() {
        let timeout = Duration::from_secs(2);
        let none = Duration::ZERO;
        // Sent after the last answer, long enough ago.
        assert!(stalled(&socket(2_500, 2_600), timeout, none));
        // Not long enough yet.
        assert!(!stalled(&socket(1_900, 2_600), timeout, none));
        // Idle: the answer came after the request.
        assert!(!stalled(&socket(9_000, 8_999), timeout, none));
        // Same tick: idle unless a call has run past the timeout, and the socket was
        // last active during it.
        assert!(!stalled(&socket(9_000, 9_000), timeout, none));
        assert!(!stalled(
            &socket(2_500, 2_500),
            timeout,
            Duration::from_secs(1)
        ));
        assert!(stalled(
            &socket(2_500, 2_500),
            timeout,
            Duration::from_secs(3)
        ));
        assert!(
            !stalled(&socket(9_000, 9_000), timeout, Duration::from_secs(3)),
            "idle since before the call began"
        );
        // An answer that stopped midway during a long call.
        assert!(stalled(
            &socket(2_900, 2_100),
            timeout,
            Duration::from_secs(3)
        ));
        assert!(!stalled(
            &socket(2_900, 1_900),
            timeout,
            Duration::from_secs(3)
        ));
    }
}
