//! The HTTP side of the daemon.
//!
//! - [`server`]: a bounded HTTP/1.1 server: one poller thread and a fixed pool of workers.
//! - [`message`]: the server's public face, plain types: requests, responses, handlers,
//!   listeners, endpoints, limits.
//! - `poller`: the event loop that owns every socket that is not with a worker.
//! - `conn`: a connection, its socket and buffers, and a request assembled from its bytes.
//! - `parse`: request heads and bodies (`Content-Length` or chunked), incrementally.
//! - `worker`: runs handlers.
//! - `answer`: writes responses (with their `Date`) and hands connections back.
//! - `waiting`: threads that hold the answers a handler made wait (a durable order's
//!   commit), so that no worker waits on them.
//! - [`routes`]: the API (README, *The HTTP API*) on top of [`crate::app::AppState`].
//! - `error`: the API's refusals, and the one place where errors become statuses.
//! - `url`: a request target's path segments and query pairs, percent-decoded.
//! - [`json`]: the JSON bodies of the answers, built from the model's and the app's plain
//!   values.
//! - [`metrics`]: HTTP counters and the Prometheus exposition of `GET /metrics`.
//! - [`origin`]: the admin listener's `Host` and `Origin` checks (DNS rebinding, CSRF).
//! - [`listen`]: binding the admin listener's Unix socket, replacing only a stale one.
//! - [`starting`]: the answers of a daemon still waiting for its database at start-up.

mod answer;
mod conn;
mod error;
pub mod json;
pub mod listen;
pub mod message;
pub mod metrics;
pub mod origin;
mod parse;
mod poller;
pub mod routes;
pub mod server;
pub mod starting;
mod url;
mod waiting;
mod worker;
