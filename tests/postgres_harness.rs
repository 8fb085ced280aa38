//! The PostgreSQL test harness itself (tests/common/postgres.rs), without the engine:
//! a cluster starts, gives each test a database, takes connections, survives an
//! immediate stop and a restart on the same port, terminates a chosen session, and
//! applies a per-database statement timeout.

#[path = "common/postgres.rs"]
mod postgres_cluster;

use std::time::Duration;

use postgres_cluster::{shared, Cluster, APPLICATION_NAME};

#[test]
fn each_test_gets_a_fresh_database_on_the_shared_cluster() {
    let Some(cluster) = shared() else { return };
    let (one, two) = (cluster.database(), cluster.database());
    assert_ne!(one.name, two.name);
    assert_eq!(
        one.url(),
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            cluster.port(),
            one.name
        )
    );
    one.execute("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (41), (1)");
    assert_eq!(one.query_i64s("SELECT sum(v)::bigint FROM t"), [42]);
    let found = two
        .client()
        .query("SELECT 1 FROM pg_tables WHERE tablename = 't'", &[])
        .unwrap();
    assert!(found.is_empty(), "databases are separate");
    let version = one.query_i64s("SELECT current_setting('server_version_num')::bigint")[0];
    assert!(version >= 150_000, "PostgreSQL 15 or newer, got {version}");
    // The server listens where the URL says, and keeps its socket in its own directory.
    let socket = postgres_cluster::dir_of(cluster).join(format!(".s.PGSQL.{}", cluster.port()));
    assert!(socket.exists(), "{socket:?}");
}

#[test]
fn a_stopped_server_starts_again_on_the_same_port_with_its_data() {
    let Some(cluster) = Cluster::private() else {
        return;
    };
    let db = cluster.database();
    db.execute("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (7)");
    let mut held = db.client();
    cluster.stop();
    assert!(
        held.query("SELECT 1", &[]).is_err(),
        "an open connection fails while the server is down"
    );
    assert!(postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.port())
        .user("postgres")
        .dbname(&db.name)
        .connect_timeout(Duration::from_secs(5))
        .connect(postgres::NoTls)
        .is_err());
    cluster.restart();
    assert_eq!(
        db.query_i64s("SELECT v FROM t"),
        [7],
        "committed rows survive"
    );
    // And once more: a cluster is stopped and started as often as a test likes.
    cluster.stop();
    cluster.restart();
    assert_eq!(db.query_i64s("SELECT count(*) FROM t"), [1]);
    let dir = postgres_cluster::dir_of(&cluster).to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "a dropped cluster removes its directory");
}

#[test]
fn a_session_is_terminated_by_its_application_name() {
    let Some(cluster) = shared() else { return };
    let db = cluster.database();
    let mut engine = postgres::Config::new()
        .host("127.0.0.1")
        .port(cluster.port())
        .user("postgres")
        .dbname(&db.name)
        .application_name(APPLICATION_NAME)
        .connect(postgres::NoTls)
        .unwrap();
    engine.query("SELECT 1", &[]).unwrap();
    assert_eq!(db.engine_sessions(), 1);
    assert_eq!(db.terminate_engine_sessions(), 1);
    assert!(
        engine.query("SELECT 1", &[]).is_err(),
        "the session is gone"
    );
    assert_eq!(db.engine_sessions(), 0);
}

#[test]
fn a_database_statement_timeout_applies_to_new_sessions() {
    let Some(cluster) = shared() else { return };
    let db = cluster.database();
    db.set_statement_timeout(Duration::from_millis(100));
    let error = db
        .client()
        .batch_execute("SELECT pg_sleep(5)")
        .expect_err("the statement is cancelled");
    assert!(
        error.to_string().contains("statement timeout") || format!("{error:?}").contains("57014"),
        "{error:?}"
    );
}
