//! The database running out and coming back under the real daemon: a full disk (a small
//! tmpfs, mounted here) where a large creation is refused, orders go on being
//! acknowledged, and once space is freed health is `healthy` with every acknowledged order
//! saved within 10 s; and a PostgreSQL server stopped while orders go on, then started
//! again: saving resumes within about 2 s of the server accepting connections.
//!
//! Mounting needs root: where it is impossible the full-disk test says so and skips,
//! except under CI (`CI` set), where it fails. The tmpfs is unmounted on drop, also when
//! a test fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::postgres_cluster as pg;
use crate::util::{request_at, systems, wait_for, Daemon, COUNTING_CONFIG};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one; `None` (after saying why) when mounting is impossible here, which under
    /// CI is a failure.
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("a mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Tmpfs { path, _dir: dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    Err(error) => error.to_string(),
                };
                assert!(
                    !pg::under_ci(),
                    "tests must mount a tmpfs under CI (run them as root): {why}"
                );
                eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes file `name` in `dir` until the filesystem refuses, or `limit` bytes; its path.
pub fn fill(dir: &Path, name: &str, limit: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut written = 0;
    while written < limit && file.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    let _ = file.sync_all();
    path
}

/// What one player's orders got: acknowledged orders per system, and how many were
/// refused (503: the daemon would not acknowledge what it could not save).
#[derive(Default)]
struct Played {
    acknowledged: HashMap<usize, i64>,
    refused: u64,
}

/// Orders colonies on the systems of `galaxy` (a [`COUNTING_CONFIG`] galaxy: every order
/// costs one metal) one after the other until `stop` is set.
fn play(
    daemon: &Daemon,
    galaxy: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Played> {
    let coords = systems(daemon, galaxy);
    let addr = daemon.addr;
    std::thread::spawn(move || {
        let mut played = Played::default();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let system = i % coords.len();
            i += 7;
            let (x, y) = coords[system];
            let path = format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony");
            let reply = request_at(addr, "POST", &path, &[], b"");
            match reply.status {
                201 => *played.acknowledged.entry(system).or_default() += 1,
                503 => played.refused += 1,
                status => panic!("order answered {status}: {}", reply.body),
            }
        }
        played
    })
}

fn health(daemon: &Daemon) -> serde_json::Value {
    daemon.get("/healthz").json()
}

fn healthy(daemon: &Daemon) -> bool {
    health(daemon)["persistence"]["state"] == "healthy"
}

/// A creation's TOML: `systems` systems with all five structures.
fn large_config(systems: u64) -> String {
    let side = ((systems as f64).sqrt() as u64) * 2;
    let mut text = format!("system_count = {systems}\n[size]\nx = {side}\ny = {side}\n");
    for kind in [
        "colony",
        "asteroidmine",
        "waterharvester",
        "hatchery",
        "storagedepot",
    ] {
        text.push_str(&format!(
            "[systems.structures.{kind}]\nstarting_level = 1\n"
        ));
    }
    text
}

/// Checks that every acknowledged order of `played` is in `metal` (as stored, in the
/// API's system order), for a galaxy of [`COUNTING_CONFIG`].
fn assert_saved(metal: &[i64], played: &Played) {
    const START: i64 = 1_000_000_000;
    for (system, &stored) in metal.iter().enumerate() {
        let acknowledged = played.acknowledged.get(&system).copied().unwrap_or(0);
        assert!(
            START - stored >= acknowledged,
            "system {system}: {acknowledged} orders acknowledged, {} saved",
            START - stored
        );
    }
}

#[test]
fn a_full_disk_starves_no_orders_and_is_recovered_within_seconds_of_freeing_space() {
    let Some(tmpfs) = Tmpfs::mount("64m") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = tmpfs.path.join("galactic_war.db");
    let url = format!("sqlite:{}", db.display());
    // The default auto-save interval (30 s): what once capped the retries' backoff. The
    // creation budget's free-disk check off (its 1 GiB default is larger than this
    // tmpfs): what is tested here is the store's own reserve for orders.
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            ("GWAR_MIN_FREE_DISK", "0"),
        ],
    );
    let created = daemon.request("POST", "/galaxies/g", COUNTING_CONFIG);
    assert_eq!(created.status, 201, "{}", created.body);
    let stop = Arc::new(AtomicBool::new(false));
    let player = play(&daemon, "g", stop.clone());

    // Room taken by something else, given back at the end.
    let ballast = fill(&tmpfs.path, "ballast", 16 << 20);
    // A creation larger than the disk: refused (at the reserve bulk work leaves for
    // orders, or when the disk is full), with an answer.
    let started = Instant::now();
    let large = daemon.request("POST", "/galaxies/large", &large_config(100_000));
    eprintln!(
        "the large creation: {} after {:?}: {}",
        large.status,
        started.elapsed(),
        large.body
    );
    assert!(
        large.status >= 400,
        "a creation larger than the disk: {}",
        large.body
    );
    large.json();
    // The rest of the disk: health says so (orders' batches fail, or bulk work waits).
    let filler = fill(&tmpfs.path, "filler", u64::MAX);
    assert!(
        wait_for(Duration::from_secs(30), || health(&daemon)["status"]
            == "degraded"),
        "{}",
        health(&daemon)
    );
    // A creation during the shortage gets an answer, not silence.
    let started = Instant::now();
    let during = daemon.request("POST", "/galaxies/during", COUNTING_CONFIG);
    let took = started.elapsed();
    eprintln!(
        "a creation during the shortage: {} after {took:?}: {}",
        during.status, during.body
    );
    assert!(during.status >= 400, "{}", during.body);
    during.json();
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    // Orders go on for a while on the full disk (the scenario's length, not a wait).
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("health on the full disk: {}", health(&daemon));

    stop.store(true, Ordering::Relaxed);
    let played = player.join().expect("the player");
    let acknowledged: i64 = played.acknowledged.values().sum();
    eprintln!(
        "{acknowledged} orders acknowledged, {} refused",
        played.refused
    );
    assert!(acknowledged > 0);

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    let saved = wait_for(Duration::from_secs(30), || {
        let health = health(&daemon);
        health["persistence"]["state"] == "healthy" && health["persistence"]["dirty_systems"] == 0
    });
    let recovered = freed.elapsed();
    eprintln!("healthy with every order saved {recovered:?} after space was freed");
    assert!(saved, "{}\n{}", health(&daemon), daemon.log());
    assert!(
        recovered <= Duration::from_secs(10),
        "recovered {recovered:?} after space was freed"
    );
    // The large creation's rows are removed, and a new creation is made.
    assert!(
        wait_for(Duration::from_secs(60), || {
            crate::util::sqlite(&db)
                .query_row(
                    "SELECT count(*) FROM galaxies WHERE name = 'large'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .is_ok_and(|n| n == 0)
        }),
        "{}",
        daemon.log()
    );
    assert!(wait_for(Duration::from_secs(10), || healthy(&daemon)));
    let after = daemon.request("POST", "/galaxies/after", COUNTING_CONFIG);
    assert_eq!(after.status, 201, "{}", after.body);

    let status = daemon.terminate();
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let metal = crate::util::stored_metal(&db, "g").expect("stored");
    assert_saved(&metal, &played);
    drop(daemon);
    drop(tmpfs);
}

/// The oldest unsaved change's age, from `/metrics`.
fn oldest_unsaved(daemon: &Daemon) -> f64 {
    let metrics = daemon.get("/metrics").body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("gwar_persistence_oldest_unsaved_seconds "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the oldest unsaved change's age")
}

#[test]
fn saving_resumes_within_two_seconds_of_the_server_coming_back() {
    let Some(cluster) = pg::Cluster::private() else {
        return;
    };
    let database = cluster.database();
    let url = database.url();
    let dir = tempfile::tempdir().unwrap();
    // The default auto-save interval (30 s): what once capped the retries' backoff.
    let mut daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
        ],
    );
    let created = daemon.request("POST", "/galaxies/g", COUNTING_CONFIG);
    assert_eq!(created.status, 201, "{}", created.body);
    let stop = Arc::new(AtomicBool::new(false));
    let player = play(&daemon, "g", stop.clone());
    assert!(wait_for(Duration::from_secs(10), || oldest_unsaved(
        &daemon
    ) < 1.0));

    cluster.stop();
    assert!(
        wait_for(Duration::from_secs(30), || health(&daemon)["persistence"]
            ["state"]
            == "retrying"),
        "{}",
        health(&daemon)
    );
    // Down long enough for the backoff to reach seconds (0.05 s doubling: 6.35 s after
    // seven failures), within the lease's deadline (12 s of the default 15 s).
    std::thread::sleep(Duration::from_secs(7));
    cluster.restart();
    // `pg_ctl start -w` returns once the server accepts connections.
    let back = Instant::now();
    let resumed = wait_for(Duration::from_secs(30), || {
        healthy(&daemon) && oldest_unsaved(&daemon) < 1.0
    });
    let took = back.elapsed();
    eprintln!("saving resumed {took:?} after the server accepted connections");
    assert!(resumed, "{}\n{}", health(&daemon), daemon.log());
    // The bound is 2 s (a probe every 500 ms, then the batch); 2 s more of slack for a
    // loaded machine: the daemon and the server share two cores with the other tests.
    assert!(
        took <= Duration::from_secs(4),
        "saving resumed {took:?} after the server came back"
    );

    stop.store(true, Ordering::Relaxed);
    let played = player.join().expect("the player");
    let acknowledged: i64 = played.acknowledged.values().sum();
    eprintln!(
        "{acknowledged} orders acknowledged, {} refused",
        played.refused
    );
    let status = daemon.terminate();
    assert!(status.success(), "{status}; log:\n{}", daemon.log());
    let metal = crate::util::stored_metal_pg(&database, "g");
    assert_saved(&metal, &played);
}
