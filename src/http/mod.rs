//! The HTTP side of the daemon.
//!
//! - [`server`]: a bounded, blocking HTTP/1.1 server with a fixed pool of workers.
//! - [`routes`]: the API of CONTRACT §5 on top of [`crate::app::AppState`], and the one
//!   place where errors become statuses.
//! - [`metrics`]: HTTP counters and the Prometheus exposition of `GET /metrics`.
//! - [`listen`]: binding the admin listener's Unix socket, replacing only a stale one.

pub mod listen;
pub mod metrics;
pub mod routes;
pub mod server;
