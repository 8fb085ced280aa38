//! One engine per database file, across processes: the second is refused while the first
//! lives, and accepted once it is gone, however it ended.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use galactic_war::app::{AppState, FailureKind};

use crate::util::TestDb;

const HOLD_DB: &str = "GWAR_TEST_HOLD_DB";

/// Run in a child process by the tests below: opens the database, says so, and holds it
/// until its standard input closes (then it exits normally), or it is killed.
#[test]
#[ignore = "helper process for the single-daemon tests"]
fn hold_database_helper() {
    let Ok(path) = std::env::var(HOLD_DB) else {
        return;
    };
    let db = TestDb::new();
    let mut settings = db.settings(|_| {});
    settings.database = galactic_war::settings::DatabaseUrl::File(path.into());
    let _app = AppState::open(&settings).expect("the first engine opens");
    println!("holding");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn spawn_holder(db: &TestDb) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "single_daemon::hold_database_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD_DB, db.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("holding"));
    assert!(ready, "the helper process opened the database");
    // Keep reading so the helper never writes into a closed pipe on its way out.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn assert_refused(db: &TestDb) {
    match AppState::open(&db.settings(|_| {})) {
        Err(err) if err.kind == FailureKind::InUse => {
            assert!(err.to_string().contains("in use by another"), "{err}")
        }
        Err(other) => panic!("expected InUse, got {other}"),
        Ok(_) => panic!("a second engine opened the same database"),
    }
}

#[test]
fn a_second_engine_is_refused_until_the_first_process_is_killed() {
    let db = TestDb::new();
    let mut holder = spawn_holder(&db);
    assert_refused(&db);
    holder.kill().unwrap(); // SIGKILL: no chance to clean up
    holder.wait().unwrap();
    let app = AppState::open(&db.settings(|_| {})).expect("the lock died with its process");
    app.create_galaxy("after", crate::util::blitz(), Some(1), 0)
        .unwrap();
}

#[test]
fn a_second_engine_is_accepted_after_the_first_process_exits() {
    let db = TestDb::new();
    let mut holder = spawn_holder(&db);
    assert_refused(&db);
    drop(holder.stdin.take()); // the holder's cue to exit normally
    assert!(holder.wait().unwrap().success());
    AppState::open(&db.settings(|_| {})).expect("the first process is gone");
}
