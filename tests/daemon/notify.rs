//! The systemd notify protocol, spoken to a real datagram socket standing in for systemd:
//! READY and STATUS at start, WATCHDOG while the writer answers (and not while it is stuck),
//! STOPPING with more stop time at shutdown.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::util::{first_system, sqlite, Daemon};

/// Messages received until `until` holds or `timeout` passes, with their arrival times.
fn receive(
    socket: &UnixDatagram,
    messages: &mut Vec<(Instant, String)>,
    timeout: Duration,
    until: impl Fn(&[(Instant, String)]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline && !until(messages) {
        if let Ok(n) = socket.recv(&mut buffer) {
            messages.push((
                Instant::now(),
                String::from_utf8_lossy(&buffer[..n]).into_owned(),
            ));
        }
    }
}

fn watchdog_times(messages: &[(Instant, String)]) -> Vec<Instant> {
    messages
        .iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn the_daemon_speaks_the_notify_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let socket_env = socket_path.to_str().unwrap().to_owned();
    let mut daemon = Daemon::start(
        dir.path(),
        &[("NOTIFY_SOCKET", &socket_env), ("WATCHDOG_USEC", "400000")],
    );
    let mut messages = Vec::new();
    receive(&socket, &mut messages, Duration::from_secs(20), |m| {
        watchdog_times(m).len() >= 3
    });
    let all: Vec<&str> = messages.iter().map(|(_, m)| m.as_str()).collect();
    assert!(all[0].lines().any(|l| l == "READY=1"), "{all:?}");
    assert!(
        all[0].contains("STATUS=0 galaxies loaded; persistence healthy"),
        "{all:?}"
    );
    assert!(watchdog_times(&messages).len() >= 3, "{all:?}");

    // A writer stuck behind a locked database gets no pings until it answers again.
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let (x, y) = first_system(&daemon, "g");
    let locker = sqlite(&daemon.database());
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert_eq!(daemon.order("g", (x, y), "hatchery").status, 201);
    let locked_at = Instant::now();
    messages.clear();
    receive(&socket, &mut messages, Duration::from_secs(8), |_| false);
    let window_end = Instant::now();
    locker.execute_batch("ROLLBACK").unwrap();
    let pings = watchdog_times(&messages);
    // The longest silence: before the first ping, between pings, or after the last.
    let longest_gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(pings.first().map(|first| *first - locked_at))
        .chain(pings.last().map(|last| window_end - *last))
        .max()
        .unwrap_or(window_end - locked_at);
    assert!(
        longest_gap >= Duration::from_secs(2),
        "pings kept coming: gap {longest_gap:?}; pings at {:?}",
        pings.iter().map(|t| *t - locked_at).collect::<Vec<_>>()
    );
    assert!(
        daemon.log().contains("did not answer"),
        "log:\n{}",
        daemon.log()
    );

    daemon.signal("TERM");
    messages.clear();
    receive(&socket, &mut messages, Duration::from_secs(20), |m| {
        m.iter().any(|(_, text)| text.contains("STOPPING=1"))
    });
    let stopping = messages
        .iter()
        .find(|(_, m)| m.contains("STOPPING=1"))
        .map(|(_, m)| m.clone())
        .expect("STOPPING=1 was sent");
    assert!(stopping.contains("EXTEND_TIMEOUT_USEC="), "{stopping}");
    assert!(daemon.wait(Duration::from_secs(30)).success());
}
