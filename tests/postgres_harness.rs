//! The PostgreSQL test harness itself (tests/common/postgres.rs), without the engine:
//! a cluster starts, gives each test a database, takes connections, survives an
//! immediate stop and a restart on the same port, terminates a chosen session, and
//! applies a per-database statement timeout; and the primary + standby pair
//! (tests/common/replica.rs): a row committed with synchronous replication is on the
//! standby, a killed primary's standby is promoted and takes writes, and a new standby of
//! the new primary makes the next cycle possible.

#[path = "common/postgres.rs"]
mod postgres_cluster;
#[path = "common/replica.rs"]
mod replica;

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

/// A row in table `t` of database `db` on the server at `port`, if any.
fn values_at(port: u16, db: &str) -> Vec<i64> {
    replica::client_at(port, db)
        .query("SELECT v FROM t ORDER BY v", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_synchronous_pair_fails_over_and_is_rebuilt_for_another_cycle() {
    use replica::{Pair, Replication};
    let Some(mut pair) = Pair::start(Replication::Sync) else {
        return;
    };
    let [first, second] = pair.ports();
    assert_ne!(first, second);
    assert_eq!(pair.primary_port(), first);
    assert_eq!(pair.standby_port(), Some(second));
    assert_eq!(
        pair.url("game"),
        format!(
            "postgres://postgres@127.0.0.1:{first},127.0.0.1:{second}/game\
             ?target_session_attrs=read-write"
        )
    );
    pair.create_database("game");
    pair.client("game")
        .batch_execute("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (1)")
        .unwrap();
    // Synchronous: the commit answered once the standby had it (received; replay follows).
    let mode: String = pair
        .client("postgres")
        .query_one("SELECT sync_state FROM pg_stat_replication", &[])
        .unwrap()
        .get(0);
    assert_eq!(mode, "sync");
    pair.wait_replayed();
    assert_eq!(values_at(second, "game"), [1]);
    let read_only = pair
        .standby_client("game")
        .batch_execute("INSERT INTO t VALUES (99)");
    assert!(read_only.is_err(), "the standby refuses writes");

    let mut rows = vec![1];
    for cycle in 1..=2 {
        let (old, new) = (pair.primary_port(), pair.standby_port().unwrap());
        pair.kill_primary();
        assert!(postgres::Config::new()
            .host("127.0.0.1")
            .port(old)
            .user("postgres")
            .dbname("game")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
            .is_err());
        let took = pair.promote();
        eprintln!("cycle {cycle}: promotion took {took:?}");
        assert_eq!(pair.primary_port(), new);
        assert_eq!(pair.standby_port(), None);
        // Every row committed before the kill is there, and the promoted server commits
        // alone until it has a standby again.
        assert_eq!(values_at(new, "game"), rows);
        rows.push(cycle * 10);
        pair.client("game")
            .batch_execute(&format!("INSERT INTO t VALUES ({})", cycle * 10))
            .unwrap();
        pair.rebuild_standby();
        assert_eq!(
            pair.standby_port(),
            Some(old),
            "the new standby takes the old port"
        );
        rows.push(cycle * 10 + 1);
        pair.client("game")
            .batch_execute(&format!("INSERT INTO t VALUES ({})", cycle * 10 + 1))
            .unwrap();
        pair.wait_replayed();
        assert_eq!(values_at(old, "game"), rows);
    }
    // The multi-host URL finds the primary whichever server it is.
    let mut by_url = postgres::Config::new()
        .host("127.0.0.1")
        .port(first)
        .host("127.0.0.1")
        .port(second)
        .user("postgres")
        .dbname("game")
        .target_session_attrs(postgres::config::TargetSessionAttrs::ReadWrite)
        .connect(postgres::NoTls)
        .unwrap();
    by_url.batch_execute("INSERT INTO t VALUES (1000)").unwrap();
}

#[test]
fn an_asynchronous_pair_streams_and_fails_over() {
    use replica::{Pair, Replication};
    let Some(mut pair) = Pair::start(Replication::Async) else {
        return;
    };
    pair.create_database("game");
    pair.client("game")
        .batch_execute("CREATE TABLE t (v BIGINT); INSERT INTO t VALUES (5)")
        .unwrap();
    let mode: String = pair
        .client("postgres")
        .query_one("SELECT sync_state FROM pg_stat_replication", &[])
        .unwrap()
        .get(0);
    assert_eq!(mode, "async");
    pair.wait_replayed();
    let standby = pair.standby_port().unwrap();
    pair.kill_primary();
    pair.promote();
    assert_eq!(pair.primary_port(), standby);
    assert_eq!(values_at(standby, "game"), [5]);
    pair.client("game")
        .batch_execute("INSERT INTO t VALUES (6)")
        .unwrap();
}
