//! Several daemons on one PostgreSQL database (issue 17): each galaxy owned by one daemon,
//! the others redirecting to it; a dead owner's galaxies taken after its lease; a clean
//! hand-over on SIGTERM; a paused owner (SIGSTOP, the "zombie") fenced off when it wakes,
//! stopped between batches, inside an open transaction, and in the middle of sending a
//! large batch; the server restarted under two daemons; a batch of several galaxies that
//! lost one of them.
//!
//! Each daemon gets its own game and admin ports, chosen before it starts so that its
//! advertised URL (`GWAR_ADVERTISE_URL`) is known, a short lease ([`LEASE_SECS`]) and a
//! short batch window unless a test needs unsaved changes. Galaxies are of
//! [`COUNTING_CONFIG`]'s kind: every order costs its system one metal and nothing else
//! changes metal, so stored metal counts the orders that reached the database, exactly.
//!
//! Whose session is whose in `pg_stat_activity`: every daemon's application name is the
//! same, so a daemon's sessions are found by their client ports, which `/proc` lists for
//! its process ([`sessions_of`]).
//!
//! Waiting: every wait is a poll of the condition with a generous deadline. The one
//! deliberate wait past a lease is the other daemon polled until it serves the galaxy.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::postgres_cluster::{self as pg, Database, APPLICATION_NAME};
use crate::util::{
    check_survivors_of, client, parse_reply, request_at, stored_metal_pg, wait_for, Daemon, Order,
    Reply, BIN, COUNTING_CONFIG,
};

/// `GWAR_OWNERSHIP_LEASE_SECS` for every daemon here.
const LEASE_SECS: u64 = 3;
const COALESCING_MS: u64 = 50;
/// Coalescing delay plus one commit (the fence included), with room for a busy machine.
const LOSS_WINDOW: Duration = Duration::from_millis(COALESCING_MS + 1000);
/// Anything that should happen "soon" on a busy 2-core machine.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A batch window long enough that acknowledged orders stay unsaved while a test works.
pub(crate) const UNSAVED: [(&str, &str); 2] = [
    ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "5000"),
    ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "30"),
];

/// One daemon of several, with its advertised URL.
pub struct Node {
    pub daemon: Daemon,
    /// `GWAR_ADVERTISE_URL`: `http://127.0.0.1:PORT` of its game listener.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Node {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Node {
    /// A daemon on `database_url` with the lease of these tests, a short batch window,
    /// and `extra` on top (later variables win).
    pub fn start(database_url: &str, extra: &[(&str, &str)]) -> Node {
        Node::start_as(Command::new(BIN), database_url, extra)
    }

    /// A daemon as [`Node::start`] does, on a host of its own: in a UTS namespace of its
    /// own whose host name is `host` (`unshare --uts`, which needs root), so the other
    /// daemons cannot tell that it has exited and must wait for its leases, as they would
    /// for a daemon on another machine. `None` where namespaces are not permitted (outside
    /// CI: the test says so and is skipped).
    pub fn start_on_host(host: &str, database_url: &str, extra: &[(&str, &str)]) -> Option<Node> {
        let permitted = Command::new("unshare")
            .args(["--uts", "true"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !permitted {
            assert!(
                std::env::var_os("CI").is_none(),
                "unshare --uts is not permitted here (it needs root), and CI is set"
            );
            eprintln!("skipped: unshare --uts is not permitted here (it needs root)");
            return None;
        }
        let mut command = Command::new("unshare");
        command.args([
            "--uts",
            "sh",
            "-c",
            "hostname \"$0\" && exec \"$1\"",
            host,
            BIN,
        ]);
        Some(Node::start_as(command, database_url, extra))
    }

    fn start_as(command: Command, database_url: &str, extra: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let (game, admin) = (free_port(), free_port());
        let listen = format!("127.0.0.1:{game}");
        let admin_listen = format!("127.0.0.1:{admin}");
        let url = format!("http://{listen}");
        let lease = LEASE_SECS.to_string();
        let coalescing = COALESCING_MS.to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", database_url),
            ("GWAR_LISTEN", &listen),
            ("GWAR_ADMIN_LISTEN", &admin_listen),
            ("GWAR_ADVERTISE_URL", &url),
            ("GWAR_OWNERSHIP_LEASE_SECS", &lease),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", &coalescing),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
        ];
        env.extend_from_slice(extra);
        let daemon = Daemon::start_command(command, dir.path(), &env);
        assert_eq!(daemon.addr.port(), game, "it listens where it advertises");
        Node {
            daemon,
            url,
            _dir: dir,
        }
    }

    /// Creates a galaxy of `config` (a TOML body) here; this daemon owns it.
    pub fn create(&self, galaxy: &str, config: &str) {
        let created = self.request("POST", &format!("/galaxies/{galaxy}?seed=7"), config);
        assert_eq!(created.status, 201, "{}", created.body);
    }

    /// `POST /admin/save` on the admin listener; the number of systems it saved.
    pub fn save(&self) -> u64 {
        let saved = self.admin_post("/admin/save");
        assert_eq!(saved.status, 200, "{}", saved.body);
        saved.json()["saved_systems"].as_u64().unwrap()
    }

    /// Whether `/healthz` says `ok` with persistence `healthy`.
    pub fn healthy(&self) -> bool {
        let health = self.get("/healthz");
        health.status == 200 && {
            let json = health.json();
            json["status"] == "ok" && json["persistence"]["state"] == "healthy"
        }
    }
}

/// Where a 307 sends the client: the listener and the path.
fn location(reply: &Reply) -> (SocketAddr, String) {
    let location = reply.header("Location").expect("a redirect has a Location");
    let rest = location
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("an http:// Location: {location}"));
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (host.parse().expect("host:port"), path.to_owned())
}

/// Asserts `reply` is a 307 to `owner` for `path`.
pub(crate) fn assert_redirect(reply: &Reply, owner: &Node, path: &str) {
    assert_eq!(reply.status, 307, "{}", reply.body);
    assert_eq!(
        reply.header("Location"),
        Some(format!("{}{path}", owner.url).as_str()),
        "{reply:?}"
    );
}

/// A GET that follows one redirect.
fn get_following(node: &Node, path: &str) -> Reply {
    let reply = node.get(path);
    if reply.status != 307 {
        return reply;
    }
    let (addr, path) = location(&reply);
    request_at(addr, "GET", &path, &[], b"")
}

/// Who owns each galaxy according to `GET /galaxies` on `node`: name to URL (or null).
fn listed_owners(node: &Node) -> BTreeMap<String, Option<String>> {
    let listing = node.get("/galaxies?limit=1000");
    assert_eq!(listing.status, 200, "{}", listing.body);
    listing.json()["galaxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_owned(),
                g["owner"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// A galaxy of `systems` systems on a `side` × `side` map, as [`COUNTING_CONFIG`].
fn counting_config(systems: u64, side: u64) -> String {
    COUNTING_CONFIG
        .replace("system_count = 40", &format!("system_count = {systems}"))
        .replace("x = 9\ny = 9", &format!("x = {side}\ny = {side}"))
}

/// One keep-alive HTTP connection, for the tests that send thousands of requests.
struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn call(&mut self, method: &str, path: &str) -> std::io::Result<Reply> {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            head.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        head.extend_from_slice(&body);
        Ok(parse_reply(&head))
    }

    /// An order of a colony, which must be acknowledged.
    fn order(&mut self, galaxy: &str, (x, y): (u64, u64)) {
        let reply = self
            .call(
                "POST",
                &format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony"),
            )
            .expect("the daemon answers");
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
}

/// Every system of a galaxy as `node` serves it, in (x, y) order.
pub(crate) fn all_systems(node: &Node, galaxy: &str) -> Vec<(u64, u64)> {
    let reply = node.get(&format!("/galaxies/{galaxy}?limit=10000"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["x"].as_u64().unwrap(), s["y"].as_u64().unwrap()))
        .collect()
}

/// Metal per system as `node` serves it (the galaxy must be its own), in `coords`' order.
pub(crate) fn served_metal(node: &Daemon, galaxy: &str, coords: &[(u64, u64)]) -> Vec<i64> {
    let mut conn = Conn::open(node.addr);
    coords
        .iter()
        .map(|(x, y)| {
            let reply = conn
                .call("GET", &format!("/galaxies/{galaxy}/systems/{x}/{y}"))
                .expect("the daemon answers");
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()["resources"]["metal"].as_i64().unwrap()
        })
        .collect()
}

/// A galaxy's row of `galaxy_owners`.
#[derive(Debug)]
struct Ownership {
    epoch: i64,
    owner: Option<String>,
    owner_url: Option<String>,
    /// `expires_at > now()`.
    live: bool,
}

fn ownership(db: &Database<'_>, galaxy: &str) -> Ownership {
    let row = db
        .client()
        .query_one(
            "SELECT epoch, owner, owner_url, expires_at > now() FROM galaxy_owners \
             WHERE galaxy_name = $1",
            &[&galaxy],
        )
        .unwrap_or_else(|e| panic!("galaxy_owners row of {galaxy}: {e}"));
    Ownership {
        epoch: row.get(0),
        owner: row.get(1),
        owner_url: row.get(2),
        live: row.get(3),
    }
}

/// A session of the engine in `pg_stat_activity`.
#[derive(Debug)]
pub(crate) struct Session {
    state: String,
    pub(crate) in_transaction: bool,
    wait_event_type: String,
}

/// The local TCP ports of process `pid`'s sockets, from `/proc`.
fn local_ports(pid: u32) -> HashSet<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let port = fields.get(1)?.rsplit(':').next()?;
                    inodes
                        .contains(*fields.get(9)?)
                        .then(|| u16::from_str_radix(port, 16).ok())?
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The sessions of the daemon with process id `pid` on `db` (connected directly, not
/// through a proxy).
pub(crate) fn sessions_of(db: &Database<'_>, pid: u32) -> Vec<Session> {
    let ports = local_ports(pid);
    db.client()
        .query(
            "SELECT client_port, state, xact_start IS NOT NULL, coalesce(wait_event_type, '') \
             FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE $2",
            &[&db.name, &format!("{APPLICATION_NAME}%")],
        )
        .unwrap()
        .iter()
        .filter(|row| {
            row.get::<_, Option<i32>>(0)
                .is_some_and(|port| ports.contains(&(port as u16)))
        })
        .map(|row| Session {
            state: row.get::<_, Option<String>>(1).unwrap_or_default(),
            in_transaction: row.get(2),
            wait_event_type: row.get(3),
        })
        .collect()
}

/// A session of the test's own holding a row lock on one system (`SELECT … FOR UPDATE`
/// in an open transaction); `ROLLBACK` on it releases the lock.
pub(crate) fn lock_system(db: &Database<'_>, galaxy: &str, (x, y): (u64, u64)) -> postgres::Client {
    let mut locker = db.client();
    locker.batch_execute("BEGIN").unwrap();
    locker
        .query_one(
            "SELECT id FROM systems WHERE galaxy_name = $1 AND x = $2 AND y = $3 FOR UPDATE",
            &[&galaxy, &(x as i64), &(y as i64)],
        )
        .unwrap();
    locker
}

/// Whether a session of process `pid` is inside a transaction, running a statement that
/// waits on a lock.
pub(crate) fn waits_on_a_lock(db: &Database<'_>, pid: u32) -> bool {
    sessions_of(db, pid)
        .iter()
        .any(|s| s.state == "active" && s.wait_event_type == "Lock" && s.in_transaction)
}

/// Polls `node` until it serves `galaxy` (200), after its owner's lease ran out.
pub(crate) fn wait_until_served(node: &Node, galaxy: &str) {
    let path = format!("/galaxies/{galaxy}");
    assert!(
        wait_for(PATIENCE, || node.get(&path).status == 200),
        "{} never took {galaxy}: {:?}\nlog:\n{}",
        node.url,
        node.get(&path),
        node.log()
    );
}

/// Orders through `node` on `coords`, one each; the orders per system index.
pub(crate) fn orders_on(
    node: &Node,
    galaxy: &str,
    coords: &[(u64, u64)],
    picks: &[usize],
) -> Vec<i64> {
    let mut counts = vec![0i64; coords.len()];
    let mut conn = Conn::open(node.addr);
    for &i in picks {
        conn.order(galaxy, coords[i]);
        counts[i] += 1;
    }
    counts
}

pub(crate) fn minus(base: &[i64], counts: &[i64]) -> Vec<i64> {
    base.iter().zip(counts).map(|(b, c)| b - c).collect()
}

#[test]
fn two_daemons_racing_for_a_galaxy_one_serves_it_and_the_other_redirects() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let galaxies: Vec<String> = (0..6).map(|i| format!("race{i}")).collect();
    // Created by a daemon that then stops cleanly: every galaxy free for the race.
    {
        let mut creator = Node::start(&url, &[]);
        for galaxy in &galaxies {
            creator.create(galaxy, COUNTING_CONFIG);
        }
        assert!(creator.terminate().success(), "{}", creator.log());
    }
    for galaxy in &galaxies {
        let row = ownership(&db, galaxy);
        assert_eq!(row.owner, None, "{galaxy} released: {row:?}");
    }
    let nodes = [Node::start(&url, &[]), Node::start(&url, &[])];
    for galaxy in &galaxies {
        let path = format!("/galaxies/{galaxy}");
        let barrier = Arc::new(Barrier::new(2));
        let replies: Vec<Reply> = std::thread::scope(|s| {
            let racers: Vec<_> = nodes
                .iter()
                .map(|node| {
                    let (barrier, path, addr) = (barrier.clone(), &path, node.addr);
                    s.spawn(move || {
                        barrier.wait();
                        request_at(addr, "GET", path, &[], b"")
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..2).filter(|&i| replies[i].status == 200).collect();
        assert_eq!(
            winners.len(),
            1,
            "{galaxy}: exactly one serves it: {replies:?}"
        );
        let (winner, loser) = (winners[0], 1 - winners[0]);
        assert_redirect(&replies[loser], &nodes[winner], &path);
        assert_eq!(get_following(&nodes[loser], &path).status, 200);
        let row = ownership(&db, galaxy);
        assert_eq!(row.owner_url.as_deref(), Some(nodes[winner].url.as_str()));
        assert_eq!(row.epoch, 2, "created at 1, taken once: {row:?}");
        assert!(row.live);
    }
    // Both daemons name the same owner for every galaxy.
    let (first, second) = (listed_owners(&nodes[0]), listed_owners(&nodes[1]));
    assert_eq!(first, second);
    for galaxy in &galaxies {
        let owner = first[galaxy]
            .clone()
            .expect("every galaxy has a live owner");
        assert_eq!(Some(owner), ownership(&db, galaxy).owner_url);
    }
}

#[test]
fn kill_9_of_the_owner_on_another_host_hands_its_galaxy_over_after_the_lease_with_what_was_committed(
) {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let Some(a) = Node::start_on_host("gwar-elsewhere", &db.url(), &[]) else {
        return;
    };
    let b = Node::start(&db.url(), &[]);
    kill_9_hand_over(&db, a, &b, "killed", false);
    assert!(
        !b.log().contains("has exited"),
        "b could not know that a daemon on another host exited:\n{}",
        b.log()
    );
}

#[test]
fn kill_9_of_the_owner_on_this_host_hands_its_galaxy_over_without_waiting_for_the_lease() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    // A lease far longer than the test: only knowing that the owner exited can hand over.
    let long_lease = [("GWAR_OWNERSHIP_LEASE_SECS", "3600")];
    let a = Node::start(&db.url(), &long_lease);
    let b = Node::start(&db.url(), &long_lease);
    kill_9_hand_over(&db, a, &b, "crashed", true);
    assert!(b.log().contains("has exited"), "{}", b.log());
}

/// `a` creates `galaxy` and takes orders on it until it is killed with SIGKILL; `b` is
/// sent to `a` before the kill (and after it, until `a`'s lease runs out, unless
/// `b_knows_a_exited`), and then serves exactly what was committed: a prefix of the
/// acknowledged orders holding every one older than the loss window (as the crash loop
/// checks).
fn kill_9_hand_over(
    db: &Database<'_>,
    mut a: Node,
    b: &Node,
    galaxy: &'static str,
    b_knows_a_exited: bool,
) {
    a.create(galaxy, COUNTING_CONFIG);
    let coords = all_systems(&a, galaxy);
    let baseline = stored_metal_pg(db, galaxy);
    let path = format!("/galaxies/{galaxy}");
    assert_redirect(&b.get(&path), &a, &path);
    let orders = {
        let (addr, coords) = (a.addr, coords.clone());
        std::thread::spawn(move || client(addr, galaxy, coords, 0x5eed))
    };
    // Orders pile up for a while (not synchronisation: any moment will do).
    std::thread::sleep(Duration::from_millis(800));
    let killed_at = Instant::now();
    a.kill9();
    let history: Vec<Order> = orders.join().unwrap();
    // Served once a's lease ran out; where b can tell a exited, never sent back to it
    // (perhaps a moment's 503, while the server ends the dead daemon's session).
    assert!(
        wait_for(PATIENCE, || {
            let reply = b.get(&path);
            if b_knows_a_exited {
                assert_ne!(reply.status, 307, "sent to a daemon that exited: {reply:?}");
            }
            reply.status == 200
        }),
        "{}",
        b.log()
    );
    let stored = stored_metal_pg(db, galaxy);
    assert_eq!(
        served_metal(b, galaxy, &coords),
        stored,
        "b serves what was committed"
    );
    let survivors = check_survivors_of(stored, galaxy, &baseline, &history, killed_at, LOSS_WINDOW);
    assert!(
        survivors.survived > 0,
        "some orders were committed before the kill"
    );
    let row = ownership(db, galaxy);
    assert_eq!(row.owner_url.as_deref(), Some(b.url.as_str()), "{row:?}");
    assert_eq!(row.epoch, 2, "{row:?}");
}

#[test]
fn sigterm_hands_every_acknowledged_order_over_at_once() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    // A window so long that only the final batch can save the orders.
    let mut a = Node::start(
        &url,
        &[
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "60000"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "60"),
        ],
    );
    let b = Node::start(&url, &[]);
    a.create("handed", COUNTING_CONFIG);
    let coords = all_systems(&a, "handed");
    let baseline = stored_metal_pg(&db, "handed");
    let picks: Vec<usize> = (0..60).map(|i| (i * 7) % coords.len()).collect();
    let counts = orders_on(&a, "handed", &coords, &picks);
    assert_eq!(
        stored_metal_pg(&db, "handed"),
        baseline,
        "nothing saved yet"
    );

    assert_eq!(a.terminate().code(), Some(0), "{}", a.log());
    let row = ownership(&db, "handed");
    assert_eq!(row.owner, None, "released with the last batch: {row:?}");
    assert_eq!(row.owner_url, None, "{row:?}");
    let expected = minus(&baseline, &counts);
    assert_eq!(stored_metal_pg(&db, "handed"), expected);
    // Free at once: b's first request takes it, no lease to wait out.
    let first = b.get("/galaxies/handed");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(served_metal(&b, "handed", &coords), expected);
}

/// The end of every zombie test: `a`, stopped (SIGSTOP) while owning `galaxy`, stays
/// stopped while `b` takes the galaxy, orders on it and saves; then `a` goes on
/// (`after_cont` runs right after SIGCONT). `a`'s next batch must be refused: it drops the
/// galaxy, counts and logs the loss, and redirects to `b`; the database must be `pre` (the
/// galaxy as stored when `a` stopped) with `b`'s orders, exactly what `b` serves.
fn zombie_wakes_up(
    db: &Database<'_>,
    a: &Node,
    b: &Node,
    galaxy: &str,
    coords: &[(u64, u64)],
    pre: &[i64],
    after_cont: impl FnOnce(),
) {
    wait_until_served(b, galaxy);
    let picks: Vec<usize> = (0..coords.len().min(5)).chain([0, 0]).collect();
    let counts = orders_on(b, galaxy, coords, &picks);
    assert!(b.save() > 0);
    let expected = minus(pre, &counts);
    assert_eq!(
        stored_metal_pg(db, galaxy),
        expected,
        "b's orders are stored"
    );

    a.signal("CONT");
    after_cont();
    assert!(
        wait_for(PATIENCE, || a.metric("gwar_galaxies_lost_total") >= 1.0),
        "a drops {galaxy}; log:\n{}",
        a.log()
    );
    let log = a.log();
    assert!(
        log.lines()
            .any(|line| line.contains(galaxy) && line.contains("epoch")),
        "a's log names the lost galaxy and the epochs:\n{log}"
    );
    let path = format!("/galaxies/{galaxy}");
    assert_redirect(&a.get(&path), b, &path);
    // Whatever a did after waking, it changed nothing of b's galaxy.
    b.save();
    let stored = stored_metal_pg(db, galaxy);
    assert_eq!(stored, expected, "the database is b's state");
    assert_eq!(served_metal(b, galaxy, coords), stored);
    let row = ownership(db, galaxy);
    assert_eq!(row.owner_url.as_deref(), Some(b.url.as_str()), "{row:?}");
}

#[test]
fn a_zombie_stopped_between_batches_is_fenced_off() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let a = Node::start(&url, &UNSAVED);
    let b = Node::start(&url, &[]);
    a.create("between", COUNTING_CONFIG);
    let coords = all_systems(&a, "between");
    let picks: Vec<usize> = (0..20).map(|i| (i * 3) % coords.len()).collect();
    orders_on(&a, "between", &coords, &picks);
    assert!(
        a.metric("gwar_persistence_dirty_systems") > 0.0,
        "a holds unsaved orders"
    );

    a.signal("STOP");
    // Between batches: no session of a's is inside a transaction.
    assert!(
        wait_for(PATIENCE, || {
            let sessions = sessions_of(&db, a.pid());
            !sessions.is_empty() && sessions.iter().all(|s| !s.in_transaction)
        }),
        "{:?}",
        sessions_of(&db, a.pid())
    );
    let pre = stored_metal_pg(&db, "between");
    zombie_wakes_up(&db, &a, &b, "between", &coords, &pre, || {});
}

#[test]
fn a_zombie_stopped_inside_an_open_transaction_is_fenced_off() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let a = Node::start(&url, &[]);
    let b = Node::start(&url, &[]);
    a.create("inside", COUNTING_CONFIG);
    let coords = all_systems(&a, "inside");

    // The test's own lock on the system a's next batch writes.
    let mut locker = lock_system(&db, "inside", coords[0]);
    orders_on(&a, "inside", &coords, &[0]);
    assert!(
        wait_for(PATIENCE, || waits_on_a_lock(&db, a.pid())),
        "a's batch waits on the row: {:?}",
        sessions_of(&db, a.pid())
    );
    a.signal("STOP");
    let pre = stored_metal_pg(&db, "inside");
    // a's statement goes on and its transaction stays open, its client stopped.
    locker.batch_execute("ROLLBACK").unwrap();
    // The server ends a transaction left idle (idle_in_transaction_session_timeout), so
    // that b's writes are not held up by a's row locks.
    assert!(
        wait_for(PATIENCE, || sessions_of(&db, a.pid())
            .iter()
            .all(|s| !s.in_transaction)),
        "a's open transaction is ended by the server: {:?}",
        sessions_of(&db, a.pid())
    );
    zombie_wakes_up(&db, &a, &b, "inside", &coords, &pre, || {});
}

#[test]
fn a_zombie_stopped_while_sending_a_large_batch_is_fenced_off() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], cluster.port())));
    let through_proxy = format!("postgres://postgres@{}/{}", proxy.addr, db.name);
    let a = Node::start(&through_proxy, &STREAMING);
    let b = Node::start(&db.url(), &[]);
    a.create("streaming", &counting_config(3000, 80));
    let coords = all_systems(&a, "streaming");
    assert_eq!(coords.len(), 3000);

    // An order on every system: a's next batch is thousands of rows.
    proxy.arm(16 * 1024);
    let picks: Vec<usize> = (0..coords.len()).collect();
    orders_on(&a, "streaming", &coords, &picks);
    assert!(
        proxy.wait_held(PATIENCE),
        "a's batch never sent a large message; log:\n{}",
        a.log()
    );
    a.signal("STOP");
    let pre = stored_metal_pg(&db, "streaming");
    zombie_wakes_up(&db, &a, &b, "streaming", &coords, &pre, || proxy.release());
}

#[test]
fn a_batch_of_several_galaxies_commits_the_ones_not_lost() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let a = Node::start(&url, &UNSAVED);
    let b = Node::start(&url, &[]);
    a.create("lost", COUNTING_CONFIG);
    a.create("kept", COUNTING_CONFIG);
    let (lost, kept) = (all_systems(&a, "lost"), all_systems(&a, "kept"));
    let kept_baseline = stored_metal_pg(&db, "kept");
    orders_on(&a, "lost", &lost, &[1, 2, 3]);
    let kept_counts = orders_on(&a, "kept", &kept, &(0..kept.len()).collect::<Vec<_>>());
    assert!(a.metric("gwar_persistence_dirty_systems") > 0.0);

    a.signal("STOP");
    let pre = stored_metal_pg(&db, "lost");
    // b takes only `lost`; `kept` stays a's, its lease lapsed but nobody took it.
    zombie_wakes_up(&db, &a, &b, "lost", &lost, &pre, || {});
    a.save();
    assert_eq!(
        stored_metal_pg(&db, "kept"),
        minus(&kept_baseline, &kept_counts),
        "a's orders on the galaxy it kept are saved"
    );
    assert_eq!(a.get("/galaxies/kept").status, 200);
    let row = ownership(&db, "kept");
    assert_eq!(row.owner_url.as_deref(), Some(a.url.as_str()), "{row:?}");
    assert_eq!(row.epoch, 1, "{row:?}");
}

/// Issue 23: a daemon killed in the middle of a large creation leaves the name's rows
/// behind under a `creating` job. Once its lease has run out, another daemon answers the
/// name as free on both verbs: `GET` 404, and a `POST` that takes the abandoned job over
/// at once (removing the dead rows) and creates the galaxy (201); it was 409 "already
/// exists" until the periodic take-over, up to an auto-save interval later.
#[test]
fn a_name_left_by_a_creation_killed_midway_is_free_on_another_daemon_once_the_lease_ran_out() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let a = Node::start(&db.url(), &[]);
    // No periodic take-over during the test: only asking for the name may take it.
    let b = Node::start(&db.url(), &[("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "600")]);
    let mut a = a;
    let systems = |db: &Database<'_>| -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM systems WHERE galaxy_name = 'big'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    // 300 000 systems on a's admin listener (past the public limit), killed midway.
    let creation = {
        let (addr, config) = (a.admin_addr, counting_config(300_000, 600));
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connects");
            let head = format!(
                "POST /galaxies/big?seed=7 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Content-Length: {}\r\n\r\n",
                config.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(config.as_bytes());
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            String::from_utf8_lossy(&answer).into_owned()
        })
    };
    assert!(
        wait_for(PATIENCE, || systems(&db) >= 10_000),
        "a never wrote its creation's first chunks:\n{}",
        a.log()
    );
    a.kill9();
    let answer = creation.join().unwrap();
    assert!(
        !answer.contains(" 201 "),
        "the creation finished first: {answer}"
    );
    let written = systems(&db);
    let job: String = db
        .client()
        .query_one("SELECT job FROM galaxy_jobs WHERE name = 'big'", &[])
        .unwrap()
        .get(0);
    assert_eq!((job.as_str(), written > 0), ("creating", true));
    assert!(
        wait_for(PATIENCE, || !ownership(&db, "big").live),
        "a's lease never ran out"
    );

    let started = Instant::now();
    let get = b.get("/galaxies/big");
    assert_eq!(get.status, 404, "{}", get.body);
    let post = b.request("POST", "/galaxies/big?seed=7", COUNTING_CONFIG);
    let took = started.elapsed();
    assert_eq!(post.status, 201, "{}\n{}", post.body, b.log());
    println!(
        "a creation killed after {written} systems: GET 404, then POST 201 on the other daemon \
         in {took:?} (its dead rows removed first)"
    );
    // "At once": a couple of seconds of removing the dead rows, with room for a busy
    // 2-core machine; the periodic take-over would have waited 600 s here.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        b.log()
            .contains("asked for while its rows belong to a job another daemon abandoned"),
        "{}",
        b.log()
    );
    // The galaxy works, and only the new one's rows are left.
    let coords = all_systems(&b, "big");
    assert_eq!(coords.len(), 40);
    let mut conn = Conn::open(b.addr);
    conn.order("big", coords[0]);
    assert_eq!(b.get("/galaxies/big").status, 200);
    b.save();
    assert_eq!(systems(&db), 40, "the dead creation's rows are gone");
    let left: i64 = db
        .client()
        .query_one("SELECT count(*) FROM galaxy_jobs WHERE name = 'big'", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no job left");
    let row = ownership(&db, "big");
    assert_eq!(row.owner_url.as_deref(), Some(b.url.as_str()), "{row:?}");
}

/// The zombie stopped while streaming: a batch due soon after the orders (all of them
/// acknowledged well before), never before the proxy is armed.
const STREAMING: [(&str, &str); 2] = [
    ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "1500"),
    ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "30"),
];

/// Orders through a galaxy's owner until told to stop, counting the acknowledged ones per
/// system; refusals while the database is down (503) and dropped connections are fine.
fn ordering(
    addr: SocketAddr,
    galaxy: String,
    coords: Vec<(u64, u64)>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<i64>> {
    std::thread::spawn(move || {
        let mut counts = vec![0i64; coords.len()];
        let mut i = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let (x, y) = coords[i % coords.len()];
            let path = format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony");
            let reply = request_at(addr, "POST", &path, &[], b"");
            match reply.status {
                201 => counts[i % coords.len()] += 1,
                503 => std::thread::sleep(Duration::from_millis(20)),
                other => panic!("{galaxy}: an order got {other}: {}", reply.body),
            }
            i += 1;
        }
        counts
    })
}

#[test]
fn postgres_restarted_under_two_daemons_loses_nothing_and_owns_nothing_twice() {
    // A cluster of this test's own: stopping the shared one would fail the others.
    let Some(cluster) = pg::Cluster::private() else {
        return;
    };
    let db = cluster.database();
    let url = db.url();
    let nodes = [Node::start(&url, &[]), Node::start(&url, &[])];
    let galaxies = [("r0", 0), ("r1", 0), ("r2", 1), ("r3", 1)];
    let mut coords = Vec::new();
    let mut baselines = Vec::new();
    for (galaxy, owner) in galaxies {
        nodes[owner].create(galaxy, COUNTING_CONFIG);
        coords.push(all_systems(&nodes[owner], galaxy));
        baselines.push(stored_metal_pg(&db, galaxy));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = galaxies
        .iter()
        .zip(&coords)
        .map(|(&(galaxy, owner), coords)| {
            ordering(
                nodes[owner].addr,
                galaxy.into(),
                coords.clone(),
                stop.clone(),
            )
        })
        .collect();
    assert!(wait_for(PATIENCE, || nodes
        .iter()
        .all(|n| n.metric("gwar_persistence_batches_total") > 2.0)));

    cluster.stop();
    assert!(
        wait_for(PATIENCE, || nodes.iter().all(|n| !n.healthy())),
        "both notice the server is gone"
    );
    cluster.restart();
    assert!(
        wait_for(PATIENCE, || nodes.iter().all(Node::healthy)),
        "both resume; logs:\n{}\n{}",
        nodes[0].log(),
        nodes[1].log()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counts: Vec<Vec<i64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for node in &nodes {
        node.save();
    }
    for (g, &(galaxy, owner)) in galaxies.iter().enumerate() {
        assert_eq!(
            stored_metal_pg(&db, galaxy),
            minus(&baselines[g], &counts[g]),
            "{galaxy}: every acknowledged order is stored"
        );
        assert!(counts[g].iter().sum::<i64>() > 0);
        let row = ownership(&db, galaxy);
        assert_eq!(
            row.owner_url.as_deref(),
            Some(nodes[owner].url.as_str()),
            "{row:?}"
        );
        assert_eq!(row.epoch, 1, "{galaxy} never changed hands: {row:?}");
    }
    for node in &nodes {
        assert_eq!(
            node.metric("gwar_galaxies_lost_total"),
            0.0,
            "{}",
            node.log()
        );
    }
    // One owner each: it serves, the other redirects to it.
    for &(galaxy, owner) in &galaxies {
        let path = format!("/galaxies/{galaxy}");
        assert_eq!(nodes[owner].get(&path).status, 200);
        assert_redirect(&nodes[1 - owner].get(&path), &nodes[owner], &path);
    }
}

// The harness itself, checkable before the feature lands.

#[test]
fn a_node_listens_where_it_advertises_and_its_sessions_are_found() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let mut node = Node::start(&db.url(), &[]);
    node.create("solo", COUNTING_CONFIG);
    let coords = all_systems(&node, "solo");
    assert_eq!(coords.len(), 40);
    let counts = orders_on(&node, "solo", &coords, &[0, 1, 1]);
    node.save();
    assert_eq!(
        served_metal(&node, "solo", &coords),
        stored_metal_pg(&db, "solo")
    );
    assert_eq!(counts[1], 2);
    assert!(node.metric("gwar_persistence_batches_total") >= 1.0);
    // Found by port; between batches (a renewal may be under way for a moment).
    assert!(
        wait_for(PATIENCE, || {
            let sessions = sessions_of(&db, node.pid());
            !sessions.is_empty() && sessions.iter().all(|s| !s.in_transaction)
        }),
        "{:?}",
        sessions_of(&db, node.pid())
    );
    assert!(
        sessions_of(&db, std::process::id()).is_empty(),
        "the test's are not its"
    );
    assert!(node.terminate().success());
}

#[test]
fn the_proxy_holds_the_rest_of_a_large_message_until_released() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], cluster.port())));
    let (port, name) = (proxy.addr.port(), db.name.clone());
    let connect = move || {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname(&name)
            .connect(postgres::NoTls)
            .expect("connects through the proxy")
    };
    let mut small = connect();
    assert_eq!(
        small
            .query_one("SELECT 41 + 1", &[])
            .unwrap()
            .get::<_, i32>(0),
        42
    );

    proxy.arm(64 * 1024);
    let (done, finished) = crossbeam_channel::bounded(1);
    let sender = std::thread::spawn(move || {
        let mut client = connect();
        let big = "x".repeat(200_000);
        let length: i32 = client
            .query_one("SELECT length($1::text)", &[&big])
            .unwrap()
            .get(0);
        done.send(length).unwrap();
    });
    assert!(proxy.wait_held(PATIENCE), "the large message is held");
    // Small messages on other connections still pass.
    assert_eq!(
        small.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0),
        1
    );
    assert!(
        finished.try_recv().is_err(),
        "the query cannot finish half sent"
    );
    proxy.release();
    assert_eq!(finished.recv_timeout(PATIENCE).unwrap(), 200_000);
    sender.join().unwrap();
}

/// A TCP proxy to PostgreSQL that can stop a client in the middle of a large message:
/// once armed, the next frontend message larger than the threshold is forwarded only in
/// its first half, and the rest waits until [`Proxy::release`]. Everything else, and the
/// server's side, passes through untouched.
///
/// It reads the frontend protocol's framing: untyped start-up packets (4-byte big-endian
/// length including itself; an SSL or GSS request is followed by another), then typed
/// messages (1 type byte, then the same length).
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<ProxyShared>,
}

#[derive(Default)]
struct ProxyState {
    /// Hold the next message above this many bytes.
    armed: Option<usize>,
    /// A message's first half was sent; its rest is held.
    holding: bool,
    released: bool,
}

#[derive(Default)]
struct ProxyShared {
    state: Mutex<ProxyState>,
    changed: Condvar,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared::default());
        {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for client in listener.incoming().map_while(Result::ok) {
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    // Messages are forwarded one by one: no waiting for more to fill a
                    // segment.
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let shared = shared.clone();
                    std::thread::spawn(move || pipe(client, server, &shared));
                }
            });
        }
        Proxy { addr, shared }
    }

    /// Holds the second half of the next message above `threshold` bytes.
    pub fn arm(&self, threshold: usize) {
        let mut state = self.shared.state.lock().unwrap();
        *state = ProxyState {
            armed: Some(threshold),
            ..ProxyState::default()
        };
    }

    /// Waits until a message is being held; false after `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let state = self.shared.state.lock().unwrap();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| !s.holding)
            .unwrap();
        state.holding
    }

    /// Sends the rest of the held message.
    pub fn release(&self) {
        self.shared.state.lock().unwrap().released = true;
        self.shared.changed.notify_all();
    }
}

/// One proxied connection: the server's side copied as it comes, the client's message by
/// message. Either side closing closes both.
fn pipe(client: TcpStream, server: TcpStream, shared: &ProxyShared) {
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
        return;
    };
    let downstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
        let _ = from_server.shutdown(std::net::Shutdown::Both);
    });
    let _ = forward_messages(&client, &server, shared);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = server.shutdown(std::net::Shutdown::Both);
    let _ = downstream.join();
}

fn forward_messages(
    mut client: &TcpStream,
    mut server: &TcpStream,
    shared: &ProxyShared,
) -> std::io::Result<()> {
    // Start-up packets: an SSLRequest (80877103) or GSSENCRequest (80877104) is answered
    // with one byte, and the client then sends its real start-up packet.
    loop {
        let mut length = [0u8; 4];
        client.read_exact(&mut length)?;
        let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        client.read_exact(&mut body)?;
        server.write_all(&length)?;
        server.write_all(&body)?;
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
        if !matches!(code, Some(80_877_103 | 80_877_104)) {
            break;
        }
    }
    loop {
        let mut header = [0u8; 5];
        client.read_exact(&mut header)?;
        let length = u32::from_be_bytes(header[1..].try_into().unwrap()) as usize;
        let mut message = header.to_vec();
        message.resize(1 + length, 0);
        client.read_exact(&mut message[5..])?;
        let hold = {
            let mut state = shared.state.lock().unwrap();
            match state.armed {
                Some(threshold) if message.len() > threshold => {
                    state.armed = None;
                    true
                }
                _ => false,
            }
        };
        if !hold {
            server.write_all(&message)?;
            continue;
        }
        let half = message.len() / 2;
        server.write_all(&message[..half])?;
        server.flush()?;
        let state = shared.state.lock().unwrap();
        let mut state = state;
        state.holding = true;
        shared.changed.notify_all();
        let _state = shared.changed.wait_while(state, |s| !s.released).unwrap();
        server.write_all(&message[half..])?;
    }
}

#[test]
fn the_proxy_catches_a_daemons_large_batch() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], cluster.port())));
    let through_proxy = format!("postgres://postgres@{}/{}", proxy.addr, db.name);
    let mut a = Node::start(&through_proxy, &STREAMING);
    a.create("streaming", &counting_config(3000, 80));
    let coords = all_systems(&a, "streaming");
    let baseline = stored_metal_pg(&db, "streaming");
    proxy.arm(16 * 1024);
    let picks: Vec<usize> = (0..coords.len()).collect();
    let counts = orders_on(&a, "streaming", &coords, &picks);
    assert!(proxy.wait_held(PATIENCE), "log:\n{}", a.log());
    assert_eq!(
        stored_metal_pg(&db, "streaming"),
        baseline,
        "held, not committed"
    );
    proxy.release();
    a.save();
    assert_eq!(stored_metal_pg(&db, "streaming"), minus(&baseline, &counts));
    assert!(a.terminate().success());
}

#[test]
fn a_daemons_batch_waiting_on_the_tests_row_lock_is_seen() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let db = cluster.database();
    let a = Node::start(&db.url(), &[]);
    a.create("inside", COUNTING_CONFIG);
    let coords = all_systems(&a, "inside");
    let mut locker = lock_system(&db, "inside", coords[0]);
    orders_on(&a, "inside", &coords, &[0]);
    assert!(
        wait_for(PATIENCE, || waits_on_a_lock(&db, a.pid())),
        "{:?}",
        sessions_of(&db, a.pid())
    );
    locker.batch_execute("ROLLBACK").unwrap();
    assert!(a.save() <= 1);
    assert_eq!(
        stored_metal_pg(&db, "inside"),
        served_metal(&a, "inside", &coords)
    );
}
