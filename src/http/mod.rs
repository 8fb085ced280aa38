//! The HTTP side of the daemon.
//!
//! - [`server`]: the public face of a bounded HTTP/1.1 server (requests, responses,
//!   handlers, endpoints, limits): one poller thread and a fixed pool of workers.
//! - `poller`: the event loop that owns every socket that is not with a worker.
//! - `parse`: request heads and bodies (`Content-Length` or chunked), incrementally.
//! - `worker`: runs handlers and writes responses (with their `Date`).
//! - [`routes`]: the API of CONTRACT §5 on top of [`crate::app::AppState`], and the one
//!   place where errors become statuses.
//! - [`json`]: the JSON bodies of the answers, built from the model's and the app's plain
//!   values.
//! - [`metrics`]: HTTP counters and the Prometheus exposition of `GET /metrics`.
//! - [`listen`]: binding the admin listener's Unix socket, replacing only a stale one.

pub mod json;
pub mod listen;
pub mod metrics;
mod parse;
mod poller;
pub mod routes;
pub mod server;
mod worker;
