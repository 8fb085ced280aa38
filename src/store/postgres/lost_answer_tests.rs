//! Commits whose answer is lost, for real: the server commits, and the connection breaks
//! before its answer reaches the writer (as when the primary dies right after a commit, or
//! the network between them does). [`LoseAnswer`] is a TCP relay between the writer and
//! the test server that, once armed, passes the next `COMMIT` on, reads the server's
//! answer to it (so the commit is done on the server), and closes both ends instead of
//! passing the answer back. The writer then calls again, as the engine's writer does after
//! a failure, with the `progress` (or the batch) of before that commit: exactly the state
//! it is in when an answer is lost.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ::postgres::config::Host;
use ::postgres::Config;

use super::super::{CreationProgress, FailureKind, ReadStore, WriteStore};
use super::tests::{
    archive_row, as_new, as_restore, identity, new_galaxy, take_batch, terminate_writer, TestDb,
};
use super::{PostgresReader, PostgresWriter};
use crate::model::StructureKind;

/// The simple-query message the `postgres` crate sends to commit a transaction.
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

#[derive(Default)]
struct Switches {
    /// The next `COMMIT` is to have its answer lost.
    armed: AtomicBool,
    /// Answers lost so far.
    lost: AtomicUsize,
    stopped: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

/// A relay from a loopback port of its own to the server that loses, when armed, the
/// answer to one `COMMIT`.
struct LoseAnswer {
    addr: SocketAddr,
    switches: Arc<Switches>,
}

impl LoseAnswer {
    fn start(upstream: SocketAddr) -> LoseAnswer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let switches = Arc::new(Switches::default());
        let accepting = switches.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                relay(client, server, accepting.clone());
            }
        });
        LoseAnswer { addr, switches }
    }

    /// `url` (a TCP server's) through this relay.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap();
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"));
        format!(
            "{scheme}://{}127.0.0.1:{}/{path}",
            user.unwrap_or_default(),
            self.addr.port()
        )
    }

    /// The next `COMMIT` is committed on the server and its answer never arrives.
    fn arm(&self) {
        self.switches.armed.store(true, Ordering::SeqCst);
    }

    fn lost(&self) -> usize {
        self.switches.lost.load(Ordering::SeqCst)
    }
}

impl Drop for LoseAnswer {
    fn drop(&mut self) {
        self.switches.stopped.store(true, Ordering::SeqCst);
        for socket in self.switches.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees it is stopped.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Two pumps, one each way. The one towards the server notes an armed `COMMIT` before
/// passing it on; the one towards the client, seeing that note, reads the answer and
/// closes both ends instead of passing it on.
fn relay(client: TcpStream, server: TcpStream, switches: Arc<Switches>) {
    let commit_sent = Arc::new(AtomicBool::new(false));
    let clones = (client.try_clone(), server.try_clone());
    let (Ok(client_in), Ok(server_out)) = clones else {
        return;
    };
    {
        let mut sockets = switches.sockets.lock().unwrap();
        for socket in [&client, &server] {
            if let Ok(clone) = socket.try_clone() {
                sockets.push(clone);
            }
        }
    }
    let (noted, up) = (commit_sent.clone(), switches.clone());
    std::thread::spawn(move || {
        let (mut from, mut to) = (client_in, server_out);
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // What came before, less than a whole `COMMIT`, and what came now: each
            // `COMMIT` is seen once, the read that completes it.
            tail.extend_from_slice(&buf[..n]);
            if tail.windows(COMMIT.len()).any(|w| w == COMMIT) {
                tail.clear();
                if up.armed.swap(false, Ordering::SeqCst) {
                    noted.store(true, Ordering::SeqCst);
                }
            } else {
                let keep = tail.len().saturating_sub(COMMIT.len() - 1);
                tail.drain(..keep);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = (server, client);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if commit_sent.load(Ordering::SeqCst) {
                // The server answered the commit: it is done there. The writer never hears.
                switches.lost.fetch_add(1, Ordering::SeqCst);
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// A database for one test, a relay to its server, and a writer through the relay;
/// `None` when no server is configured, or it is not reached over TCP.
fn through_relay(tag: &str) -> Option<(TestDb, LoseAnswer, PostgresWriter)> {
    let db = TestDb::new(tag)?;
    let config: Config = db.url.parse().unwrap();
    let (Some(Host::Tcp(host)), Some(&port)) =
        (config.get_hosts().first(), config.get_ports().first())
    else {
        eprintln!("skipped: the test server is not reached over TCP");
        return None;
    };
    let upstream = (host.as_str(), port)
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let relay = LoseAnswer::start(upstream);
    let writer = PostgresWriter::open(&relay.url(&db.url), identity("http://a", 15)).unwrap();
    Some((db, relay, writer))
}

fn stored_systems(db: &TestDb, name: &str) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM systems WHERE galaxy_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_creation_chunk_whose_commit_answer_was_lost_is_settled_never_written_twice() {
    let Some((db, relay, mut store)) = through_relay("lostchunk") else {
        return;
    };
    let reader = PostgresReader::open(&db.url).unwrap();
    // 200 systems in chunks of 64: 0..64, 64..128, 128..192, 192..200. The answer lost
    // is the first chunk's, a middle one's, and the last one's (the galaxy exists).
    for (name, lost_at) in [("first", 0), ("middle", 1), ("last", 3)] {
        let galaxy = new_galaxy(name);
        let mut progress = CreationProgress::default();
        let lost_before = relay.lost();
        as_new(&galaxy, |new| {
            for chunk in 0.. {
                if progress.written == galaxy.systems().len() {
                    break;
                }
                let before = progress.written;
                if chunk != lost_at {
                    store.create_chunk(new, &mut progress, 64).unwrap();
                    continue;
                }
                relay.arm();
                let err = store.create_chunk(new, &mut progress, 64).unwrap_err();
                assert_eq!(err.kind(), FailureKind::Unavailable, "{name}: {err}");
                assert_eq!(relay.lost(), lost_before + 1, "{name}: the answer was lost");
                assert!(progress.is_unsettled(), "{name}: its outcome is unknown");
                assert_eq!(progress.written, before, "{name}: nothing known written");
                let end = (before + 64).min(200);
                assert_eq!(stored_systems(&db, name), end as i64, "{name}: committed");
                // The writer's retry, with the progress of before the commit.
                let stats = store.create_chunk(new, &mut progress, 64).unwrap();
                assert!(!progress.is_unsettled(), "{name}: settled");
                assert_eq!(progress.written, end, "{name}: taken as written");
                assert_eq!(stats.systems, (end - before) as u64);
                assert_eq!(stored_systems(&db, name), end as i64, "{name}: not twice");
            }
        });
        assert_eq!(
            reader.load_galaxy(name).unwrap(),
            Some(galaxy.clone()),
            "{name}"
        );
        assert!(store.ids.contains_key(name), "{name}: its ids are cached");
        assert_eq!(
            store.owned().get(name),
            Some(&1),
            "{name}: owned under epoch 1"
        );
    }
    // A connection broken before the commit was sent: nothing was written, and that is
    // known (the writer refuses the creation at once and removes what it wrote).
    let galaxy = new_galaxy("cut");
    let mut progress = CreationProgress::default();
    as_new(&galaxy, |new| {
        store.create_chunk(new, &mut progress, 64).unwrap();
        terminate_writer(&db, &mut store);
        let err = store.create_chunk(new, &mut progress, 64).unwrap_err();
        assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
        assert!(!progress.is_unsettled(), "no commit was sent");
        assert_eq!(progress.written, 64);
        while !store.purge_chunk("cut", 1000).unwrap().1 {}
    });
    assert_eq!(db.count("systems"), 600);
    assert_eq!(db.count("structures"), 3 * 200 * 5);
    assert_eq!(db.count("galaxy_jobs"), 0, "every creation finished");
    // The cached ids are right: a batch on the galaxy whose last answer was lost writes.
    let mut galaxy = new_galaxy("last");
    let (x, y) = galaxy.systems()[5].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    store
        .write_batch(&[], &[take_batch(&mut galaxy, 200)])
        .unwrap();
    assert_eq!(reader.load_galaxy("last").unwrap(), Some(galaxy));
}

#[test]
fn a_batch_whose_commit_answer_was_lost_is_written_again_to_the_same_rows() {
    let Some((db, relay, mut store)) = through_relay("lostbatch") else {
        return;
    };
    let reader = PostgresReader::open(&db.url).unwrap();
    let mut galaxy = new_galaxy("g");
    as_new(&galaxy, |new| {
        let mut progress = CreationProgress::default();
        store.create_chunk(new, &mut progress, 1000).unwrap();
    });
    // A build (an event inserted), resources spent, a tick: lost, then sent again.
    let (x, y) = galaxy.systems()[3].coords();
    galaxy
        .build(200, x.into(), y.into(), StructureKind::Hatchery)
        .unwrap();
    let batch = take_batch(&mut galaxy, 200);
    relay.arm();
    let err = store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert_eq!(relay.lost(), 1);
    assert_eq!(db.count("events"), 1, "committed");
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(db.count("events"), 1, "the event is not inserted twice");
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy.clone()));

    // A build completed and two more started, one on the same system: lost, then again.
    let (x, y) = galaxy.systems()[0].coords();
    let (x, y) = (u64::from(x), u64::from(y));
    galaxy
        .build(300, x, y, StructureKind::AsteroidMine)
        .unwrap();
    galaxy
        .build(500, x, y, StructureKind::WaterHarvester)
        .unwrap();
    let batch = take_batch(&mut galaxy, 500);
    relay.arm();
    store
        .write_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(relay.lost(), 2);
    let events = db.count("events");
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(db.count("events"), events, "no event twice");
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy.clone()));

    // The final batch of a stop, which releases the galaxy: lost, then sent again.
    let (x, y) = galaxy.systems()[9].coords();
    galaxy
        .build(700, x.into(), y.into(), StructureKind::Colony)
        .unwrap();
    let batch = take_batch(&mut galaxy, 700);
    relay.arm();
    store
        .write_final_batch(&[], std::slice::from_ref(&batch))
        .unwrap_err();
    assert_eq!(relay.lost(), 3);
    store.write_final_batch(&[], &[batch]).unwrap();
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    let owner: Option<String> = db
        .client()
        .query_one(
            "SELECT owner FROM galaxy_owners WHERE galaxy_name = 'g'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, None, "released");
}

#[test]
fn an_archive_whose_commit_answer_was_lost_is_settled_by_the_next_call() {
    let Some((db, relay, mut store)) = through_relay("lostarchive") else {
        return;
    };
    let reader = PostgresReader::open(&db.url).unwrap();
    let galaxy = new_galaxy("g");
    as_new(&galaxy, |new| {
        store
            .create_chunk(new, &mut CreationProgress::default(), 1000)
            .unwrap();
    });
    let body = crate::archive::encode(&galaxy);
    relay.arm();
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
    assert_eq!(relay.lost(), 1);
    assert_eq!(db.count("galaxy_archives"), 1, "committed");
    assert!(
        store.unsettled_archives.contains("g"),
        "its outcome is unknown"
    );
    // The writer's retry: taken as made, nothing written twice.
    assert_eq!(
        store
            .write_archive(&archive_row(&galaxy, &body))
            .unwrap()
            .rows,
        2
    );
    assert!(store.unsettled_archives.is_empty(), "settled");
    assert_eq!(db.count("galaxy_archives"), 1);
    assert_eq!(db.count("galaxy_jobs"), 1);
    assert!(!reader.galaxy_exists("g").unwrap());
    // Settled: one more is an archive of a name taken, as ever.
    let err = store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::Exists, "{err}");
    while !store.purge_chunk("g", 1000).unwrap().1 {}

    // A restore whose last chunk's answer is lost: the galaxy exists and its archive is
    // gone, both from that commit; the retry settles it as created.
    as_restore(&galaxy, |new| {
        let mut progress = CreationProgress::default();
        store.create_chunk(new, &mut progress, 150).unwrap();
        relay.arm();
        let err = store.create_chunk(new, &mut progress, 150).unwrap_err();
        assert_eq!(err.kind(), FailureKind::Unavailable, "{err}");
        assert!(progress.is_unsettled());
        assert_eq!(db.count("galaxy_archives"), 0, "committed with the galaxy");
        store.create_chunk(new, &mut progress, 150).unwrap();
        assert_eq!(
            progress.written,
            galaxy.systems().len(),
            "settled as created"
        );
    });
    assert_eq!(reader.load_galaxy("g").unwrap(), Some(galaxy));
    assert!(reader.archives().unwrap().is_empty());
}

#[test]
fn a_galaxy_put_back_after_a_lost_archive_answer_is_made_live_by_its_next_batch() {
    let Some((db, relay, mut store)) = through_relay("unarchive") else {
        return;
    };
    let reader = PostgresReader::open(&db.url).unwrap();
    let mut galaxy = new_galaxy("g");
    as_new(&galaxy, |new| {
        store
            .create_chunk(new, &mut CreationProgress::default(), 1000)
            .unwrap();
    });
    let body = crate::archive::encode(&galaxy);
    relay.arm();
    store
        .write_archive(&archive_row(&galaxy, &body))
        .unwrap_err();
    assert_eq!(db.count("galaxy_archives"), 1, "committed, the answer lost");
    assert!(!reader.galaxy_exists("g").unwrap());
    // The engine gave up settling and put the galaxy back, changed in full: its next
    // batch makes it live again in the same transaction.
    galaxy.mark_all_changed();
    let batch = take_batch(&mut galaxy, 700);
    store.write_batch(&[], &[batch]).unwrap();
    assert_eq!(db.count("galaxy_archives"), 0);
    assert_eq!(db.count("galaxy_jobs"), 0);
    let loaded = reader.load_galaxy("g").unwrap().expect("live again");
    assert!(loaded.systems() == galaxy.systems(), "saved in full");
    assert!(store.unsettled_archives.is_empty());
}
