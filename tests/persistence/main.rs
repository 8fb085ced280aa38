//! Black-box tests of the persistence engine on real SQLite files in temporary directories
//! and, for the tests written with `both_stores!`, on a real PostgreSQL server as well.

#[path = "../common/postgres.rs"]
mod postgres_cluster;
mod util;

mod concurrency;
mod faults;
mod lifecycle;
mod loads;
mod marker;
mod pg_faults;
mod restart;
mod single_daemon;
