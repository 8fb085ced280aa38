//! The answers of a daemon that listens but cannot serve the game yet: start-up waits for
//! its database (a PostgreSQL URL whose servers answer, none as a primary yet). `GET
//! /healthz` says `degraded` with the reason, as for any database that is not saving;
//! every other request gets 503 with `Retry-After: 1` and the reason, and changes
//! nothing. The same on both listeners: nothing here reads or writes any state but the
//! reason.

use parking_lot::Mutex;
use serde_json::json;

use super::message::{Handler, Reply, Request, Response};

/// The handler of a daemon still starting.
pub struct Starting {
    reason: Mutex<String>,
}

impl Starting {
    pub fn new(reason: String) -> Starting {
        Starting {
            reason: Mutex::new(reason),
        }
    }

    /// What start-up waits for now.
    pub fn set_reason(&self, reason: String) {
        *self.reason.lock() = reason;
    }
}

impl Handler for Starting {
    fn handle(&self, request: &Request) -> Reply {
        let reason = self.reason.lock().clone();
        if request.path == "/healthz" && request.method == "GET" {
            return Reply::Now(Response::json(
                200,
                &json!({
                    "status": "degraded",
                    "persistence": {
                        "state": "retrying",
                        "dirty_systems": 0,
                        "last_error": reason,
                    },
                    "creation": "closed: starting",
                }),
            ));
        }
        let mut refused = Response::error(503, &format!("the daemon is starting: {reason}"));
        refused.headers.push(("Retry-After", "1".to_owned()));
        Reply::Now(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn answer(handler: &Starting, method: &str, path: &str) -> Response {
        match handler.handle(&request(method, path)) {
            Reply::Now(response) => response,
            Reply::Later(later) => later.answer(),
        }
    }

    #[test]
    fn health_is_degraded_with_the_reason_and_everything_else_waits() {
        let handler = Starting::new("no primary yet".into());
        let health = answer(&handler, "GET", "/healthz");
        assert_eq!(health.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&health.body).unwrap();
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["persistence"]["state"], "retrying");
        assert_eq!(body["persistence"]["last_error"], "no primary yet");
        handler.set_reason("still none".into());
        for (method, path) in [
            ("POST", "/galaxies/g"),
            ("GET", "/galaxies"),
            ("POST", "/admin/save"),
            ("POST", "/healthz"),
        ] {
            let refused = answer(&handler, method, path);
            assert_eq!(refused.status, 503, "{method} {path}");
            assert!(String::from_utf8_lossy(&refused.body).contains("still none"));
            assert!(refused.headers.contains(&("Retry-After", "1".to_owned())));
        }
    }
}
