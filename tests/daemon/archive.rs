//! Archives in the database on the real daemon (README, *Archives and moving a
//! deployment*): the admin's archive and restore over HTTP, restores on demand and on an
//! admin's word only (`GWAR_ARCHIVE_RESTORE=explicit`), kill -9 racing both, orders racing
//! an archive, a damaged archive, automatic archiving (`GWAR_ARCHIVE_AFTER_SECS`), the
//! round trip on PostgreSQL and through `export --all`/`import`, and the metrics.
//!
//! The database is read behind the daemon's back: the `sqlite3` CLI for what an operator
//! would look at (rows left, archive rows), rusqlite for an archive's body, which the
//! test decodes with `galactic_war::archive::decode`.
//!
//! **Comparing answers across an archive.** The API's tick is the wall clock's second
//! (`src/http/routes.rs`, `now_tick`), and nothing pins it, so an answer read before an
//! archive and one read after a restore are never at the same tick: resources grow and
//! builds complete in between. A read changes no system (it projects them to the tick), so
//! every answer is a function of the galaxy's stored state and the tick it was answered
//! at. The tests read that state (saved, through the store's own reader) once the orders
//! are placed, and check every answer — the galaxy's page with each system's score, each
//! system's details, each colony's build menu — against what the model computes from it
//! at the answer's own tick, before the archive and again after the restore: both equal
//! the same state at their ticks, which is "every answer equals what it was before at the
//! same tick". An answer's tick is known exactly: the page names it, and a request that
//! began and ended within one wall-clock second was answered at that second (one that
//! straddles a second is asked again).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use galactic_war::model::{Galaxy, Resources, StructureKind};
use galactic_war::testing::{PostgresReader, ReadStore, SqliteReader};
use serde_json::{json, Value};

use crate::postgres_cluster as pg;
use crate::util::{
    check_survivors_of, parse_reply, run, sqlite, stored_metal, systems, text, wait_for, Daemon,
    Order, Reply, COUNTING_CONFIG,
};

/// How long a purge of a small galaxy's rows, or an archive's round, may take on a busy
/// machine: a bound on a poll, never a pause.
const DEADLINE: Duration = Duration::from_secs(30);

/// The structures ordered, in turn, on the systems of a blitz galaxy.
const KINDS: [&str; 5] = [
    "hatchery",
    "colony",
    "asteroidmine",
    "waterharvester",
    "storagedepot",
];

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn archive(daemon: &Daemon, name: &str) -> Reply {
    daemon.admin_post(&format!("/admin/galaxies/{name}/archive"))
}

fn restore(daemon: &Daemon, name: &str) -> Reply {
    daemon.admin_post(&format!("/admin/galaxies/{name}/restore"))
}

/// `GET /galaxies` on the game listener as name → archived; panics on a name listed twice
/// or an archived galaxy listed as loaded.
fn listing(daemon: &Daemon) -> BTreeMap<String, bool> {
    let reply = daemon.get("/galaxies?limit=1000");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut listed = BTreeMap::new();
    for galaxy in reply.json()["galaxies"].as_array().expect("galaxies") {
        let name = galaxy["name"].as_str().expect("a name").to_owned();
        let archived = galaxy.get("archived").and_then(Value::as_bool) == Some(true);
        if archived {
            assert_eq!(galaxy["loaded"], false, "archived, yet loaded: {galaxy}");
        }
        let again = listed.insert(name, archived);
        assert!(again.is_none(), "a galaxy listed twice: {}", reply.body);
    }
    listed
}

fn listed(pairs: &[(&str, bool)]) -> BTreeMap<String, bool> {
    pairs.iter().map(|&(n, a)| (n.to_owned(), a)).collect()
}

/// The `sqlite3` CLI's answer to `sql` on the database at `path`, trimmed.
fn sqlite3(path: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("the sqlite3 CLI does not run ({e}): install sqlite3"));
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rows of galaxy `name` in the live tables, and its archive rows, in one statement (one
/// snapshot): `(galaxies, systems, galaxy_jobs, galaxy_archives)`.
fn rows_of(path: &Path, name: &str) -> (i64, i64, i64, i64) {
    let answer = sqlite3(
        path,
        &format!(
            "SELECT (SELECT count(*) FROM galaxies WHERE name = '{name}'),
                    (SELECT count(*) FROM systems WHERE galaxy_name = '{name}'),
                    (SELECT count(*) FROM galaxy_jobs WHERE name = '{name}'),
                    (SELECT count(*) FROM galaxy_archives WHERE name = '{name}')"
        ),
    );
    let n: Vec<i64> = answer.split('|').map(|n| n.parse().unwrap()).collect();
    (n[0], n[1], n[2], n[3])
}

/// The body of the archive stored for `name`, if any.
fn archive_body(path: &Path, name: &str) -> Option<Vec<u8>> {
    use rusqlite::OptionalExtension;
    sqlite(path)
        .query_row(
            "SELECT body FROM galaxy_archives WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .expect("reads galaxy_archives")
}

fn decoded_archive(path: &Path, name: &str) -> Galaxy {
    let body = archive_body(path, name).unwrap_or_else(|| panic!("no archive of {name}"));
    galactic_war::archive::decode(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `galactic-war check --database URL` passes; its output.
fn check_passes(url: &str) -> String {
    let output = run(&["check", "--database", url], &[]);
    assert!(output.status.success(), "check {url}: {}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `GET path` on the game listener and the tick it was answered at (see the module doc).
fn get_at_tick(daemon: &Daemon, path: &str) -> (u64, Value) {
    for _ in 0..20 {
        let before = unix_now();
        let reply = daemon.get(path);
        let after = unix_now();
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        if before == after {
            return (before, reply.json());
        }
    }
    panic!("twenty GETs of {path} each straddled a second");
}

fn resources(r: Resources) -> Value {
    json!({"metal": r.metal, "crew": r.crew, "water": r.water})
}

/// What `GET /galaxies/{name}/systems/{x}/{y}` answers at `tick` for `model`.
fn expected_system(model: &mut Galaxy, tick: u64, (x, y): (u64, u64)) -> Value {
    let d = model.system_details(tick, x, y).expect("the model answers");
    let events: Vec<Value> = d
        .events
        .iter()
        .map(|e| {
            json!({"completion_tick": e.completion_tick, "action": e.action,
                   "structure": e.structure.as_str()})
        })
        .collect();
    json!({"x": d.x, "y": d.y, "score": d.score, "resources": resources(d.resources),
           "production": resources(d.production), "structures": d.structures,
           "events": events})
}

/// What `GET /galaxies/{name}/systems/{x}/{y}/colony` answers at `tick` for `model`.
fn expected_colony(model: &mut Galaxy, tick: u64, (x, y): (u64, u64)) -> Value {
    let d = model
        .structure_details(tick, x, y, StructureKind::Colony)
        .expect("the model answers");
    let builds: serde_json::Map<String, Value> = d
        .builds
        .expect("a colony's build menu")
        .iter()
        .map(|(kind, c)| {
            let cost = json!({"metal": c.metal, "crew": c.crew, "water": c.water,
                              "ticks": c.ticks});
            ((*kind).to_owned(), cost)
        })
        .collect();
    json!({"structure": "colony", "level": d.level, "production": resources(d.production),
           "builds": builds})
}

/// Every game answer about galaxy `name` — its page (each system's score; their sum is the
/// galaxy's score), each system's details, each colony's build menu — equals what `model`
/// gives at the tick it was answered at. Returns the number of answers and the galaxy's
/// score at the page's tick.
fn assert_answers_are(daemon: &Daemon, name: &str, model: &Galaxy) -> (usize, u64) {
    // One copy of the model, asked at ticks that only go up, as the daemon's galaxy is.
    let mut model = model.clone();
    let (tick, page) = get_at_tick(daemon, &format!("/galaxies/{name}?limit=10000"));
    let summaries: Vec<Value> = model
        .summaries(tick)
        .expect("the model answers")
        .iter()
        .map(|s| json!({"x": s.x, "y": s.y, "score": s.score}))
        .collect();
    let expected = json!({"name": name, "tick": tick, "system_count": model.systems().len(),
                          "systems": summaries, "offset": 0, "limit": 10000});
    assert_eq!(page, expected, "{name}'s page at tick {tick}");
    let score = model.score(tick).expect("the model answers");
    let served: u64 = page["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["score"].as_u64().unwrap())
        .sum();
    assert_eq!(served, score, "{name}'s score at tick {tick}");
    let coords: Vec<(u64, u64)> = model
        .systems()
        .iter()
        .map(|s| (u64::from(s.x), u64::from(s.y)))
        .collect();
    let mut answers = 1;
    for &(x, y) in &coords {
        let (tick, system) = get_at_tick(daemon, &format!("/galaxies/{name}/systems/{x}/{y}"));
        let expected = expected_system(&mut model, tick, (x, y));
        assert_eq!(system, expected, "{name} ({x}, {y}) at tick {tick}");
        let path = format!("/galaxies/{name}/systems/{x}/{y}/colony");
        let (tick, colony) = get_at_tick(daemon, &path);
        let expected = expected_colony(&mut model, tick, (x, y));
        assert_eq!(
            colony, expected,
            "{name} ({x}, {y})'s colony at tick {tick}"
        );
        answers += 2;
    }
    (answers, score)
}

/// Creates blitz galaxy `name` with `seed` and orders one build on every seventh system,
/// the structures in turn (builds in flight, resources spent); the systems ordered on.
fn create_and_order(daemon: &Daemon, name: &str, seed: u64) -> usize {
    let created = daemon.post(&format!("/galaxies/{name}?seed={seed}"));
    assert_eq!(created.status, 201, "{}", created.body);
    let mut ordered = 0;
    for (i, &system) in systems(daemon, name).iter().step_by(7).enumerate() {
        let order = daemon.order(name, system, KINDS[i % KINDS.len()]);
        assert_eq!(order.status, 201, "{name} {system:?}: {}", order.body);
        ordered += 1;
    }
    ordered
}

/// Saves everything, then reads galaxy `name` as stored, through `reader`.
fn saved_model(daemon: &Daemon, reader: &dyn ReadStore, name: &str) -> Galaxy {
    let saved = daemon.admin_post("/admin/save");
    assert_eq!(saved.status, 200, "{}", saved.body);
    reader
        .load_galaxy(name)
        .expect("the store reads")
        .unwrap_or_else(|| panic!("{name} is stored"))
}

/// Two galaxies with the same name, config, tick and systems.
fn assert_same_galaxy(left: &Galaxy, right: &Galaxy) {
    assert_eq!(left.name(), right.name());
    assert!(
        left.config() == right.config(),
        "{}: configs differ",
        left.name()
    );
    assert_eq!(left.tick(), right.tick(), "{}: ticks differ", left.name());
    assert!(
        left.systems() == right.systems(),
        "{}: systems differ",
        left.name()
    );
}

/// Metal per system, in (x, y) order, over HTTP.
fn served_metal(daemon: &Daemon, name: &str, coords: &[(u64, u64)]) -> Vec<i64> {
    coords
        .iter()
        .map(|(x, y)| {
            let reply = daemon.get(&format!("/galaxies/{name}/systems/{x}/{y}"));
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.json()["resources"]["metal"].as_i64().unwrap()
        })
        .collect()
}

/// One request on a connection of its own, waiting up to `timeout` for the answer; `None`
/// when the daemon cannot be reached or answers nothing (killed).
fn try_request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    (!raw.is_empty()).then(|| parse_reply(&raw))
}

/// What one client's orders came to.
struct Played {
    /// Orders the daemon applied or may have (refused ones are left out), in order.
    orders: Vec<Order>,
    /// Acknowledged (201) per system index.
    acknowledged: Vec<i64>,
    refused: usize,
}

/// Places colony orders (one metal each, see [`COUNTING_CONFIG`]) on random systems of
/// `galaxy`, one at a time, up to `most` of them. A 201 is acknowledged; a 4xx or 503 is a
/// refusal, which applies nothing, so it is not counted as sent; a 500 fails the test. No
/// answer: with `may_die` the daemon was killed (the order may or may not have been
/// applied: it counts as sent, as in [`crate::util::client`]) and the client stops;
/// without, the daemon hung and the test fails.
fn play(
    addr: SocketAddr,
    galaxy: &str,
    coords: &[(u64, u64)],
    seed: u64,
    most: usize,
    may_die: bool,
) -> Played {
    let mut played = Played {
        orders: Vec::new(),
        acknowledged: vec![0; coords.len()],
        refused: 0,
    };
    let mut rng = seed | 1;
    while played.orders.len() + played.refused < most {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let system = (rng % coords.len() as u64) as usize;
        let (x, y) = coords[system];
        let path = format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony");
        played.orders.push(Order {
            system,
            acknowledged: None,
        });
        match try_request(addr, "POST", &path, Duration::from_secs(15)) {
            Some(reply) if reply.status == 201 => {
                played.orders.last_mut().unwrap().acknowledged = Some(Instant::now());
                played.acknowledged[system] += 1;
            }
            Some(reply) if (400..500).contains(&reply.status) || reply.status == 503 => {
                played.orders.pop();
                played.refused += 1;
            }
            Some(reply) => panic!("{galaxy}: an order answered {reply:?}"),
            None if may_die => return played,
            None => panic!("{galaxy}: an order got no answer within 15 s"),
        }
    }
    played
}

// ---------------------------------------------------------------------------------------
// 1. The round trip over HTTP, across a restart
// ---------------------------------------------------------------------------------------

#[test]
fn an_archived_galaxy_leaves_its_rows_and_comes_back_after_a_restart_answering_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let db = daemon.database();
    let ordered = create_and_order(&daemon, "andromeda", 42);
    create_and_order(&daemon, "cassiopeia", 7);
    let model = saved_model(&daemon, &SqliteReader::open(&db).unwrap(), "andromeda");
    let in_flight = model.systems().iter().filter(|s| s.build.is_some()).count();
    assert!(
        in_flight > 0 && in_flight <= ordered,
        "{in_flight} builds in flight"
    );
    let (before, _) = assert_answers_are(&daemon, "andromeda", &model);
    assert_eq!(before, 1 + 2 * 200);

    let archived = archive(&daemon, "andromeda");
    assert_eq!(archived.status, 200, "{}", archived.body);
    let answer = archived.json();
    assert_eq!(answer["name"], "andromeda");
    assert_eq!(answer["archived"], true);
    assert_eq!(answer["systems"], 200);
    let bytes = answer["bytes"].as_u64().expect("bytes");
    assert!(bytes > 0, "{answer}");
    assert_eq!(
        listing(&daemon),
        listed(&[("andromeda", true), ("cassiopeia", false)])
    );
    // Its live rows go in the background, chunk by chunk; the archive row stays.
    assert!(
        wait_for(DEADLINE, || rows_of(&db, "andromeda") == (0, 0, 0, 1)),
        "rows of andromeda left (galaxies, systems, jobs, archives): {:?}",
        rows_of(&db, "andromeda")
    );
    assert_eq!(
        sqlite3(
            &db,
            "SELECT format, systems, length(body) FROM galaxy_archives WHERE name = 'andromeda'"
        ),
        format!("1|200|{bytes}")
    );
    assert_eq!(rows_of(&db, "cassiopeia"), (1, 200, 0, 0));
    // The archive is the galaxy as it was: every system, builds in flight included.
    let at_archive = decoded_archive(&db, "andromeda");
    let mut expected = model.clone();
    // The reads since the save moved its tick, and nothing else.
    expected.summaries(at_archive.tick()).unwrap();
    assert_same_galaxy(&at_archive, &expected);

    // Stopped and started again: only the database holds it now.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let checked = check_passes(&sqlite_url(&db));
    assert!(
        checked.contains("archived: 1 galaxies, 200 systems"),
        "{checked}"
    );
    let mut daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(
        listing(&daemon),
        listed(&[("andromeda", true), ("cassiopeia", false)])
    );
    // A request restores it on demand, in the request.
    let page = daemon.get("/galaxies/andromeda");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(rows_of(&db, "andromeda"), (1, 200, 0, 0));
    assert_eq!(
        listing(&daemon),
        listed(&[("andromeda", false), ("cassiopeia", false)])
    );
    let (after, _) = assert_answers_are(&daemon, "andromeda", &model);
    assert_eq!(after, before);
    assert_eq!(daemon.metric("gwar_galaxies_restored_total"), 1.0);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    check_passes(&sqlite_url(&db));
}

// ---------------------------------------------------------------------------------------
// 2. GWAR_ARCHIVE_RESTORE=explicit
// ---------------------------------------------------------------------------------------

#[test]
fn with_explicit_restores_an_archived_galaxy_answers_404_archived_until_an_admin_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[("GWAR_ARCHIVE_RESTORE", "explicit")]);
    let db = daemon.database();
    assert_eq!(daemon.post("/galaxies/andromeda?seed=42").status, 201);
    let coords = systems(&daemon, "andromeda");
    let (x, y) = coords[0];
    let build = daemon.order("andromeda", (x, y), "hatchery");
    assert_eq!(build.status, 201, "{}", build.body);
    let completion = build.json()["completion_tick"].clone();

    for reply in [archive(&daemon, "nowhere"), restore(&daemon, "nowhere")] {
        assert_eq!(reply.status, 404, "{}", reply.body);
    }
    let live = restore(&daemon, "andromeda");
    assert_eq!(live.status, 409, "restoring a live galaxy: {}", live.body);
    assert_eq!(archive(&daemon, "andromeda").status, 200);
    let again = archive(&daemon, "andromeda");
    assert_eq!(again.status, 409, "archiving it twice: {}", again.body);

    let game = [
        ("GET", "/galaxies/andromeda".to_owned()),
        ("GET", format!("/galaxies/andromeda/systems/{x}/{y}")),
        ("GET", format!("/galaxies/andromeda/systems/{x}/{y}/colony")),
        (
            "POST",
            format!("/galaxies/andromeda/systems/{x}/{y}/build/colony"),
        ),
    ];
    for (method, path) in &game {
        let reply = daemon.request(method, path, "");
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["archived"], true, "{method} {path}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("archived"), "{method} {path}: {body}");
    }
    // Nothing restored it: still archived. (A restore waits for the purge of its old rows:
    // until then it is refused with 503, so the test waits for the purge.)
    assert_eq!(listing(&daemon), listed(&[("andromeda", true)]));
    assert!(
        wait_for(DEADLINE, || rows_of(&db, "andromeda") == (0, 0, 0, 1)),
        "{:?}",
        rows_of(&db, "andromeda")
    );

    let restored = restore(&daemon, "andromeda");
    assert_eq!(restored.status, 200, "{}", restored.body);
    let answer = restored.json();
    assert_eq!(answer["name"], "andromeda");
    assert_eq!(answer["restored"], true);
    assert_eq!(answer["systems"], 200);
    assert!(answer["tick"].as_u64().is_some_and(|t| t > 0), "{answer}");
    assert_eq!(rows_of(&db, "andromeda"), (1, 200, 0, 0));
    let again = restore(&daemon, "andromeda");
    assert_eq!(again.status, 409, "restoring it twice: {}", again.body);
    // As it was: the build still in flight, and orders taken again.
    let system = daemon.get(&format!("/galaxies/andromeda/systems/{x}/{y}"));
    assert_eq!(system.status, 200, "{}", system.body);
    assert_eq!(system.json()["events"][0]["completion_tick"], completion);
    let order = daemon.order("andromeda", coords[1], "colony");
    assert_eq!(order.status, 201, "{}", order.body);

    // An admin's delete of an archived galaxy deletes its archive.
    assert_eq!(archive(&daemon, "andromeda").status, 200);
    let deleted = daemon.admin_request("DELETE", "/galaxies/andromeda", "");
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(listing(&daemon).is_empty());
    assert_eq!(rows_of(&db, "andromeda").3, 0);
    let gone = daemon.get("/galaxies/andromeda");
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert!(gone.json().get("archived").is_none(), "{}", gone.body);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

// ---------------------------------------------------------------------------------------
// 3. kill -9 racing archives and restores
// ---------------------------------------------------------------------------------------

/// Played on by a client each; `gamma` is only archived and restored by the admin.
const CRASH_GALAXIES: [&str; 3] = ["alpha", "beta", "gamma"];
const PLAYED: usize = 2;
/// `gamma`: large enough that its purge and its restore take many chunks (of about 25 ms
/// each, `CHUNK_TARGET`), so that kills land in the middle of both.
const GAMMA_SYSTEMS: usize = 20_000;
/// Coalescing delay plus one commit, with room for a slow disk on a shared machine (as in
/// `crash_loop.rs`).
const LOSS_WINDOW: Duration = Duration::from_millis(50 + 1000);
const CRASH_ENV: [(&str, &str); 2] = [
    ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "50"),
    ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
];

/// Where galaxy `name` is, read behind the daemon's back: archived or live, never both and
/// never neither, and its metal per system from whichever holds it.
fn stored_state(db: &Path, name: &str, count: usize) -> (bool, Vec<i64>) {
    let (galaxies, systems, jobs, archives) = rows_of(db, name);
    let live = galaxies == 1 && jobs == 0;
    let archived = archives == 1;
    assert!(
        live != archived,
        "{name}: live {live} and archived {archived} (rows: {galaxies} galaxies, {systems} \
         systems, {jobs} jobs, {archives} archives)"
    );
    if archived {
        let galaxy = decoded_archive(db, name);
        assert_eq!(galaxy.systems().len(), count, "{name}: archived");
        let metal = galaxy
            .systems()
            .iter()
            .map(|s| s.resources.metal as i64)
            .collect();
        (true, metal)
    } else {
        assert_eq!(
            systems as usize, count,
            "{name}: live with {systems} systems rows"
        );
        (false, stored_metal(db, name).expect("live rows"))
    }
}

/// The admin's side of the crash loop: archives and restores `galaxies` at random, at a
/// random pace, until the daemon is killed; the archives and restores that succeeded.
fn churn(admin: SocketAddr, galaxies: &[&str], seed: u64) -> (u64, u64) {
    let (mut archived, mut restored) = (0, 0);
    let mut rng = seed | 1;
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let galaxy = galaxies[(rng % galaxies.len() as u64) as usize];
        let op = if rng % 5 < 3 { "archive" } else { "restore" };
        let path = format!("/admin/galaxies/{galaxy}/{op}");
        let Some(reply) = try_request(admin, "POST", &path, Duration::from_secs(15)) else {
            return (archived, restored);
        };
        match (reply.status, op) {
            (200, "archive") => archived += 1,
            (200, _) => restored += 1,
            (409 | 503, _) => {}
            _ => panic!("{op} {galaxy}: {reply:?}"),
        }
        std::thread::sleep(Duration::from_millis((rng >> 20) % 40));
    }
}

#[test]
fn kill_9_racing_archives_and_restores_leaves_each_galaxy_live_or_archived_and_intact() {
    let cycles: u64 = ["GWAR_ARCHIVE_CRASH_CYCLES", "GWAR_CRASH_CYCLES"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("galactic_war.db");
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut random = move |below: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % below
    };
    let mut coords: Vec<Vec<(u64, u64)>> = Vec::new();
    // Where each galaxy was found after the last kill: what the next start must list.
    let mut placement: BTreeMap<String, bool> = BTreeMap::new();
    let (mut acknowledged, mut archives, mut restores, mut ended_archived) = (0, 0, 0, 0);
    // Kills that left a restore, or a purge, half done (the daemon finishes or undoes it).
    let (mut cut_restores, mut cut_purges) = (0, 0);
    let gamma = COUNTING_CONFIG.replace(
        "system_count = 40\n[size]\nx = 9\ny = 9",
        &format!("system_count = {GAMMA_SYSTEMS}\n[size]\nx = 199\ny = 199"),
    );
    let sizes = [40, 40, GAMMA_SYSTEMS];

    for cycle in 0..cycles {
        let mut daemon = Daemon::start(dir.path(), &CRASH_ENV);
        if coords.is_empty() {
            for galaxy in CRASH_GALAXIES {
                let path = format!("/galaxies/{galaxy}?seed=7");
                let config = if galaxy == "gamma" {
                    &gamma
                } else {
                    COUNTING_CONFIG
                };
                let created = daemon.request("POST", &path, config);
                assert_eq!(created.status, 201, "{}", created.body);
                coords.push(systems(&daemon, galaxy));
            }
        } else {
            assert_eq!(listing(&daemon), placement, "cycle {cycle}: the listing");
        }
        let baseline: Vec<Vec<i64>> = CRASH_GALAXIES
            .iter()
            .zip(sizes)
            .map(|(g, size)| stored_state(&db, g, size).1)
            .collect();

        let clients: Vec<_> = (0..PLAYED)
            .map(|g| {
                let (addr, galaxy, systems) = (daemon.addr, CRASH_GALAXIES[g], coords[g].clone());
                let seed = random(u64::MAX);
                std::thread::spawn(move || play(addr, galaxy, &systems, seed, usize::MAX, true))
            })
            .collect();
        // One admin on the small galaxies, one on gamma, whose restores take a while.
        let admins: Vec<_> = [&CRASH_GALAXIES[..PLAYED], &CRASH_GALAXIES[PLAYED..]]
            .into_iter()
            .map(|galaxies| {
                let (addr, seed) = (daemon.admin_addr, random(u64::MAX));
                std::thread::spawn(move || churn(addr, galaxies, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200 + random(1300)));
        let killed_at = Instant::now();
        daemon.kill9();
        let histories: Vec<Played> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        for admin in admins {
            let (a, r) = admin.join().unwrap();
            archives += a;
            restores += r;
        }

        check_passes(&sqlite_url(&db));
        placement.clear();
        for (g, galaxy) in CRASH_GALAXIES.iter().enumerate() {
            let job = sqlite3(
                &db,
                &format!("SELECT job FROM galaxy_jobs WHERE name = '{galaxy}'"),
            );
            let (archived, metal) = stored_state(&db, galaxy, sizes[g]);
            cut_restores += u64::from(archived && job == "creating");
            cut_purges += u64::from(archived && job == "deleting");
            placement.insert((*galaxy).to_owned(), archived);
            ended_archived += u64::from(archived);
            match histories.get(g) {
                Some(played) => {
                    check_survivors_of(
                        metal,
                        galaxy,
                        &baseline[g],
                        &played.orders,
                        killed_at,
                        LOSS_WINDOW,
                    );
                    acknowledged += played.acknowledged.iter().sum::<i64>();
                }
                None => assert_eq!(metal, baseline[g], "{galaxy} changed with no order"),
            }
        }
    }
    eprintln!(
        "archive crash loop: {cycles} cycles, {acknowledged} orders acknowledged, {archives} \
         archives and {restores} admin restores answered 200, {ended_archived} galaxies \
         found archived after a kill (of {}), {cut_restores} restores and {cut_purges} \
         purges cut by the kill",
        cycles * CRASH_GALAXIES.len() as u64
    );
    assert!(acknowledged > 0, "no order was ever acknowledged");
    assert!(archives > 0, "no archive ever succeeded");
}

// ---------------------------------------------------------------------------------------
// 4. Orders racing an archive
// ---------------------------------------------------------------------------------------

#[test]
fn orders_racing_an_archive_get_201_or_a_refusal_and_every_201_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let created = daemon.request("POST", "/galaxies/race?seed=7", COUNTING_CONFIG);
    assert_eq!(created.status, 201, "{}", created.body);
    let coords = systems(&daemon, "race");
    let baseline = served_metal(&daemon, "race", &coords);

    let done = Arc::new(AtomicBool::new(false));
    let archived = Arc::new(AtomicU64::new(0));
    let admin = {
        let (addr, done, archived) = (daemon.admin_addr, done.clone(), archived.clone());
        std::thread::spawn(move || {
            let mut restored = 0u64;
            let mut round = 0u64;
            while !done.load(Ordering::Relaxed) {
                round += 1;
                let reply = try_request(addr, "POST", "/admin/galaxies/race/archive", DEADLINE)
                    .expect("the admin's archive is answered");
                match reply.status {
                    200 => _ = archived.fetch_add(1, Ordering::Relaxed),
                    409 | 503 => {}
                    _ => panic!("archive: {reply:?}"),
                }
                // Every third round the admin restores it; else the next order does.
                if round.is_multiple_of(3) {
                    let reply = try_request(addr, "POST", "/admin/galaxies/race/restore", DEADLINE)
                        .expect("the admin's restore is answered");
                    match reply.status {
                        200 => restored += 1,
                        409 | 503 => {}
                        _ => panic!("restore: {reply:?}"),
                    }
                }
            }
            restored
        })
    };
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            let (addr, coords) = (daemon.addr, coords.clone());
            std::thread::spawn(move || play(addr, "race", &coords, 0x9E37 + i, 150, false))
        })
        .collect();
    let histories: Vec<Played> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    let restored = admin.join().unwrap();
    let archived = archived.load(Ordering::Relaxed);
    let refused: usize = histories.iter().map(|p| p.refused).sum();
    let mut acknowledged = vec![0i64; coords.len()];
    for played in &histories {
        for (total, n) in acknowledged.iter_mut().zip(&played.acknowledged) {
            *total += n;
        }
    }
    eprintln!(
        "race: {} orders acknowledged, {refused} refused, {archived} archives, {restored} \
         admin restores",
        acknowledged.iter().sum::<i64>()
    );
    assert!(archived > 0, "the admin never archived the galaxy");

    // Restored on demand if it ended archived: every 201 is there, and nothing else.
    let metal = served_metal(&daemon, "race", &coords);
    let spent: Vec<i64> = baseline.iter().zip(&metal).map(|(b, m)| b - m).collect();
    assert_eq!(
        spent, acknowledged,
        "metal spent per system vs orders acknowledged"
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let db = daemon.database();
    check_passes(&sqlite_url(&db));
    assert_eq!(stored_state(&db, "race", 40).1, metal, "as saved");
}

// ---------------------------------------------------------------------------------------
// 5. A damaged archive
// ---------------------------------------------------------------------------------------

#[test]
fn a_damaged_archive_is_named_by_check_answered_500_and_kept_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let db = daemon.database();
    for (name, seed) in [("damaged", 1), ("intact", 2), ("healthy", 3)] {
        let created = daemon.post(&format!("/galaxies/{name}?seed={seed}"));
        assert_eq!(created.status, 201, "{}", created.body);
    }
    for name in ["damaged", "intact"] {
        assert_eq!(archive(&daemon, name).status, 200);
        // Purged, so that nothing but the archive answers for it (a restore waits for the
        // purge of its old rows, answering 503 meanwhile).
        assert!(
            wait_for(DEADLINE, || rows_of(&db, name) == (0, 0, 0, 1)),
            "{name}: {:?}",
            rows_of(&db, name)
        );
    }
    assert!(daemon.terminate().success(), "{}", daemon.log());

    // Eight bytes of the compressed body overwritten, as a bad disk or a hand might.
    let hex = |db: &Path| {
        sqlite3(
            db,
            "SELECT hex(body) FROM galaxy_archives WHERE name = 'damaged'",
        )
    };
    let sound = hex(&db);
    sqlite3(
        &db,
        "UPDATE galaxy_archives SET body = CAST(substr(body, 1, 20) || X'DEADBEEFDEADBEEF' \
         || substr(body, 29) AS BLOB) WHERE name = 'damaged'",
    );
    let damaged = hex(&db);
    assert_ne!(damaged, sound);
    assert_eq!(damaged.len(), sound.len());

    let output = run(&["check", "--database", &sqlite_url(&db)], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let said = String::from_utf8_lossy(&output.stdout);
    let problems: Vec<&str> = said.lines().filter(|l| l.starts_with("PROBLEM")).collect();
    assert_eq!(problems.len(), 1, "{said}");
    assert!(problems[0].contains("'damaged'"), "{said}");

    let daemon = Daemon::start(dir.path(), &[]);
    for _ in 0..2 {
        let reply = daemon.get("/galaxies/damaged");
        assert_eq!(reply.status, 500, "{}", reply.body);
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains("damaged") && error.contains("archive"),
            "{}",
            reply.body
        );
    }
    let restored = restore(&daemon, "damaged");
    assert_eq!(restored.status, 500, "{}", restored.body);
    // Kept as it is, for an operator.
    assert_eq!(hex(&db), damaged);
    assert_eq!(rows_of(&db, "damaged"), (0, 0, 0, 1));
    assert_eq!(
        listing(&daemon),
        listed(&[("damaged", true), ("healthy", false), ("intact", true)])
    );
    // The others are served: one live, one restored on demand.
    for name in ["healthy", "intact"] {
        let reply = daemon.get(&format!("/galaxies/{name}"));
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        let system = systems(&daemon, name)[0];
        let order = daemon.order(name, system, "hatchery");
        assert_eq!(order.status, 201, "{name}: {}", order.body);
    }
    assert_eq!(daemon.get("/healthz").json()["status"], "ok");
    // What an operator does with it: delete it.
    let deleted = daemon.admin_request("DELETE", "/galaxies/damaged", "");
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(rows_of(&db, "damaged"), (0, 0, 0, 0));
    check_passes(&sqlite_url(&db));
}

// ---------------------------------------------------------------------------------------
// 6. Automatic archiving
// ---------------------------------------------------------------------------------------

#[test]
fn an_idle_galaxy_is_archived_automatically_and_played_or_watched_ones_are_not() {
    const IDLE_SECS: u64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let idle = IDLE_SECS.to_string();
    let mut daemon = Daemon::start(dir.path(), &[("GWAR_ARCHIVE_AFTER_SECS", &idle)]);
    for name in ["idle", "played", "watched"] {
        let created = daemon.request("POST", &format!("/galaxies/{name}"), COUNTING_CONFIG);
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let (x, y) = systems(&daemon, "played")[0];
    let (wx, wy) = systems(&daemon, "watched")[0];
    let stop = Arc::new(AtomicBool::new(false));
    // A player ordering, and one only reading (no change saved, but requests), every
    // tenth of a second: the pace of play, not a synchronisation.
    let players: Vec<_> = [
        (
            "POST",
            format!("/galaxies/played/systems/{x}/{y}/build/colony"),
            201,
        ),
        ("GET", format!("/galaxies/watched/systems/{wx}/{wy}"), 200),
    ]
    .into_iter()
    .map(|(method, path, status)| {
        let (addr, stop) = (daemon.addr, stop.clone());
        std::thread::spawn(move || {
            let mut requests = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = try_request(addr, method, &path, DEADLINE).expect("answered");
                assert_eq!(reply.status, status, "{method} {path}: {}", reply.body);
                requests += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            requests
        })
    })
    .collect();

    let never_theirs = |listed: &BTreeMap<String, bool>| {
        assert!(!listed["played"], "a played galaxy was archived");
        assert!(!listed["watched"], "a watched galaxy was archived");
    };
    let archived = wait_for(DEADLINE, || {
        let listed = listing(&daemon);
        never_theirs(&listed);
        listed["idle"]
    });
    assert!(
        archived,
        "the idle galaxy was not archived:\n{}",
        daemon.log()
    );
    // Three idle periods more of play: the others are still not archived. A bound, not a
    // synchronisation: what is checked is that something does not happen.
    let until = Instant::now() + Duration::from_secs(3 * IDLE_SECS);
    while Instant::now() < until {
        never_theirs(&listing(&daemon));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for player in players {
        assert!(player.join().unwrap() > 0);
    }
    never_theirs(&listing(&daemon));
    assert_eq!(daemon.metric("gwar_galaxies_archived_total"), 1.0);
    assert_eq!(rows_of(&daemon.database(), "idle").3, 1);
    assert!(
        daemon.log().contains("archived automatically"),
        "{}",
        daemon.log()
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

// ---------------------------------------------------------------------------------------
// 7. PostgreSQL
// ---------------------------------------------------------------------------------------

#[test]
fn on_postgres_an_archived_galaxy_leaves_its_rows_and_comes_back_answering_as_before() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let database = cluster.database();
    let url = database.url();
    let env = [("DATABASE_URL", url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &env);
    create_and_order(&daemon, "andromeda", 42);
    let model = saved_model(&daemon, &PostgresReader::open(&url).unwrap(), "andromeda");
    let (before, _) = assert_answers_are(&daemon, "andromeda", &model);

    let archived = archive(&daemon, "andromeda");
    assert_eq!(archived.status, 200, "{}", archived.body);
    assert_eq!(listing(&daemon), listed(&[("andromeda", true)]));
    let rows = |sql: &str| database.query_i64s(sql)[0];
    assert!(
        wait_for(DEADLINE, || rows(
            "SELECT count(*) FROM systems WHERE galaxy_name = 'andromeda'"
        ) == 0),
        "the live rows were not purged"
    );
    assert_eq!(rows("SELECT count(*) FROM galaxy_archives"), 1);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let checked = check_passes(&url);
    assert!(
        checked.contains("archived: 1 galaxies, 200 systems"),
        "{checked}"
    );

    let mut daemon = Daemon::start(dir.path(), &env);
    assert_eq!(listing(&daemon), listed(&[("andromeda", true)]));
    let restored = restore(&daemon, "andromeda");
    assert_eq!(restored.status, 200, "{}", restored.body);
    assert_eq!(restored.json()["systems"], 200);
    assert_eq!(rows("SELECT count(*) FROM galaxy_archives"), 0);
    assert_eq!(
        rows("SELECT count(*) FROM systems WHERE galaxy_name = 'andromeda'"),
        200
    );
    let (after, _) = assert_answers_are(&daemon, "andromeda", &model);
    assert_eq!(after, before);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    check_passes(&url);
}

#[test]
fn an_export_of_a_deployment_with_an_archived_galaxy_imports_into_postgres_equal() {
    let Some(cluster) = pg::shared() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let db = daemon.database();
    create_and_order(&daemon, "andromeda", 42);
    let tiny = "system_count = 3\n[size]\nx = 5\ny = 5\n\
                [systems.resources]\nmetal = 1000\ncrew = 1000\nwater = 1000\n\
                [systems.structures.colony]\nstarting_level = 1\n\
                [systems.structures.colony.cost]\nmetal = 10\ntime = 100000\n";
    let created = daemon.request("POST", "/galaxies/tiny", tiny);
    assert_eq!(created.status, 201, "{}", created.body);
    let order = daemon.order("tiny", systems(&daemon, "tiny")[0], "colony");
    assert_eq!(order.status, 201, "{}", order.body);
    assert_eq!(archive(&daemon, "andromeda").status, 200);
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let archived = decoded_archive(&db, "andromeda");
    let live = SqliteReader::open(&db)
        .unwrap()
        .load_galaxy("tiny")
        .unwrap()
        .expect("stored");

    let out = dir.path().join("out");
    let output = run(
        &["export", "--all", "--out", out.to_str().unwrap()],
        &[("DATABASE_URL", &sqlite_url(&db))],
    );
    assert!(output.status.success(), "{}", text(&output));
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["andromeda.gwar", "tiny.gwar"]);

    let database = cluster.database();
    let url = database.url();
    let mut import = vec!["import"];
    import.extend(files.iter().map(|f| f.to_str().unwrap()));
    let output = run(&import, &[("DATABASE_URL", &url)]);
    assert!(output.status.success(), "{}", text(&output));
    let reader = PostgresReader::open(&url).unwrap();
    assert_eq!(reader.galaxy_names().unwrap(), ["andromeda", "tiny"]);
    let load = |name| reader.load_galaxy(name).unwrap().expect("imported");
    assert_same_galaxy(&load("andromeda"), &archived);
    assert_same_galaxy(&load("tiny"), &live);
    check_passes(&url);
}

// ---------------------------------------------------------------------------------------
// 8. Metrics
// ---------------------------------------------------------------------------------------

#[test]
fn metrics_count_archives_and_restores_and_the_storage_gauges_follow() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    for name in ["first", "second"] {
        let created = daemon.request("POST", &format!("/galaxies/{name}"), COUNTING_CONFIG);
        assert_eq!(created.status, 201, "{}", created.body);
    }
    let figures = |daemon: &Daemon| -> [f64; 6] {
        [
            "gwar_galaxies_archived_total",
            "gwar_galaxies_restored_total",
            "gwar_storage_live_systems",
            "gwar_storage_archived_galaxies",
            "gwar_storage_archived_systems",
            "gwar_storage_archived_bytes",
        ]
        .map(|name| daemon.metric(name))
    };
    // The storage gauges are counted beside each scrape and show the count the scrape
    // before started: polled until they agree, with a deadline.
    let expect = |daemon: &Daemon, wanted: [f64; 6]| {
        assert!(
            wait_for(DEADLINE, || figures(daemon) == wanted),
            "{:?}, wanted {wanted:?}",
            figures(daemon)
        );
    };
    expect(&daemon, [0.0, 0.0, 80.0, 0.0, 0.0, 0.0]);
    assert!(daemon.metric("gwar_storage_live_bytes") > 0.0);

    let archived = archive(&daemon, "first");
    assert_eq!(archived.status, 200, "{}", archived.body);
    let bytes = archived.json()["bytes"].as_f64().unwrap();
    // The live rows go in the background: the live figure follows the purge.
    assert!(
        wait_for(DEADLINE, || figures(&daemon)[2] == 40.0),
        "{:?}",
        figures(&daemon)
    );
    expect(&daemon, [1.0, 0.0, 40.0, 1.0, 40.0, bytes]);

    assert_eq!(restore(&daemon, "first").status, 200);
    expect(&daemon, [1.0, 1.0, 80.0, 0.0, 0.0, 0.0]);

    // Restored on demand counts too (once its old rows are purged: before, 503).
    assert_eq!(archive(&daemon, "first").status, 200);
    assert!(
        wait_for(DEADLINE, || figures(&daemon)[2] == 40.0),
        "{:?}",
        figures(&daemon)
    );
    assert_eq!(daemon.get("/galaxies/first").status, 200);
    expect(&daemon, [2.0, 2.0, 80.0, 0.0, 0.0, 0.0]);

    // A deleted archive leaves the figures.
    assert_eq!(archive(&daemon, "second").status, 200);
    let deleted = daemon.admin_request("DELETE", "/galaxies/second", "");
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(
        wait_for(DEADLINE, || figures(&daemon)[2] == 40.0),
        "{:?}",
        figures(&daemon)
    );
    expect(&daemon, [3.0, 2.0, 40.0, 0.0, 0.0, 0.0]);
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
