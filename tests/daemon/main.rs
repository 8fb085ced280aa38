//! Black-box tests of the `galactic-war` binary: spawned on a free port with a temporary
//! database, spoken to over real HTTP on loopback, stopped with real signals.

#[path = "../common/postgres.rs"]
mod postgres_cluster;
#[path = "../common/proxy.rs"]
mod proxy;
#[path = "../common/replica.rs"]
mod replica;
mod util;

mod admin_origin;
mod archive;
mod bad_requests;
mod budget;
mod crash_loop;
mod disk;
mod durable;
mod edge;
mod faults;
mod fuzz;
mod history;
mod isolation;
mod nginx;
mod notify;
mod observability;
mod operations;
mod ownership;
mod paging;
mod partition;
mod port;
mod postgres;
mod replication;
mod signals;
mod soak;
mod stall;
mod startup;
mod walkthrough;
