//! Stopping: SIGTERM saves what was acknowledged; SIGKILL after a save loses nothing saved;
//! a locked database makes the exit status say so; a second signal exits at once.

use std::time::{Duration, Instant};

use crate::util::{first_system, sqlite, stored_events, Daemon};

#[test]
fn sigterm_right_after_an_order_saves_it() {
    let dir = tempfile::tempdir().unwrap();
    // A minute-long batch window: only the shutdown flush can save the order in time.
    let mut daemon = Daemon::start(
        dir.path(),
        &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "60000")],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = first_system(&daemon, "g");
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    assert_eq!(stored_events(&daemon.database(), "g"), 0, "not saved yet");
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    assert_eq!(stored_events(&daemon.database(), "g"), 1);
    assert!(daemon.log().contains("everything saved"));
}

#[test]
fn kill_9_after_admin_save_keeps_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "60000")],
    );
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = first_system(&daemon, "g");
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    let saved = daemon.admin_post("/admin/save");
    assert_eq!(saved.status, 200);
    assert_eq!(saved.json()["saved_systems"], 1);
    daemon.kill9();
    let integrity: String = sqlite(&daemon.database())
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(stored_events(&daemon.database(), "g"), 1);
    // And a restarted daemon serves it.
    let daemon = Daemon::start(dir.path(), &[]);
    let system = daemon.get(&format!("/galaxies/g/systems/{x}/{y}")).json();
    assert_eq!(system["events"][0]["structure"], "hatchery");
}

/// A daemon whose database another connection holds locked (the lock is returned), with
/// one acknowledged order in galaxy `name` that the writer cannot save.
fn locked_with_an_unsaved_order(
    dir: &std::path::Path,
    name: &str,
    shutdown_timeout: &str,
) -> (Daemon, rusqlite::Connection) {
    let daemon = Daemon::start(
        dir,
        &[
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "60000"),
            ("GWAR_PERSISTENCE_SHUTDOWN_TIMEOUT", shutdown_timeout),
        ],
    );
    assert_eq!(daemon.post(&format!("/galaxies/{name}?seed=1")).status, 201);
    let (x, y) = first_system(&daemon, name);
    let locker = sqlite(&daemon.database());
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let order = daemon.post(&format!("/galaxies/{name}/systems/{x}/{y}/build/hatchery"));
    assert_eq!(order.status, 201);
    (daemon, locker)
}

#[test]
fn shutdown_with_a_locked_database_exits_non_zero_naming_the_galaxy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, locker) = locked_with_an_unsaved_order(dir.path(), "stuck", "1");
    let status = daemon.terminate();
    assert_ne!(status.code(), Some(0));
    let log = daemon.log();
    assert!(
        log.contains("galaxy 'stuck': 1 systems were not saved"),
        "log:\n{log}"
    );
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, locker) = locked_with_an_unsaved_order(dir.path(), "slow", "60");
    daemon.signal("TERM");
    assert!(crate::util::wait_for(Duration::from_secs(10), || daemon
        .log()
        .contains("shutting down")));
    let second = Instant::now();
    daemon.signal("INT");
    let status = daemon.wait(Duration::from_secs(30));
    assert_ne!(status.code(), Some(0));
    // Far less than the 60 s the final flush was allowed.
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "took {:?}",
        second.elapsed()
    );
    assert!(daemon.log().contains("second signal"));
    locker.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn an_idle_keep_alive_connection_does_not_hold_up_shutdown() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    // A client that keeps its connection open after one request, then says nothing.
    let mut idle = std::net::TcpStream::connect(daemon.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let started = Instant::now();
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(30)).success());
    // Well inside the 5 s idle timeout the connection would otherwise be given.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

/// Bytes queued to send on the TCP socket from `local` to `remote` (loopback, IPv4), from
/// /proc/net/tcp.
fn send_queue(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<u64> {
    let hex = |addr: std::net::SocketAddr| match addr {
        std::net::SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        std::net::SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
                return None;
            }
            u64::from_str_radix(fields.get(4)?.split(':').next()?, 16).ok()
        })
}

/// Bug: a client that pipelined requests and never read the answers held the shutdown
/// for the whole 10 s request timeout, since its answer was still being sent; a stopping
/// server now gives any answer 2 s to leave.
#[test]
fn a_client_that_never_reads_does_not_hold_up_shutdown() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/full").status, 201);
    // Far more answers than the socket buffers hold, never read.
    let request = b"GET /galaxies/full?limit=1000 HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut deaf = std::net::TcpStream::connect(daemon.addr).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = deaf.write_all(&request.repeat(4000));
    // Until the server's answers to it are stuck in its send buffer.
    let (client, server) = (deaf.local_addr().unwrap(), daemon.addr);
    assert!(crate::util::wait_for(Duration::from_secs(30), || {
        send_queue(server, client).is_some_and(|queued| queued > 64 * 1024)
    }));
    let started = Instant::now();
    daemon.signal("TERM");
    assert!(daemon.wait(Duration::from_secs(30)).success());
    // Well inside the 10 s the answer would otherwise be given.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    drop(deaf);
}
