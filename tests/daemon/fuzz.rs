//! Random requests against a running daemon: never a panic, never a 5xx for a client's
//! mistake, every response well-formed, and the daemon serving afterwards.
//! `GWAR_FUZZ_CASES` sets the number of requests (2000 by default).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::util::{parse_reply, Daemon};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "galaxies",
            "systems",
            "build",
            "admin",
            "save",
            "backup",
            "healthz",
            "metrics",
            "g",
            "fuzz",
            "colony",
            "hatchery",
            "castle",
            "0",
            "1",
            "-1",
            "4294967296",
            "99999999999999999999",
            "%00",
            "%2e%2e",
            "..",
            "",
            "a\"b",
            "%zz",
            "%ff",
            "~",
            "*",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9_%.-]{0,70}",
    ]
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec![
        "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "FOO", "get",
    ]);
    let query = prop::sample::select(vec![
        "",
        "?seed=1",
        "?seed=-1",
        "?preset=classic",
        "?preset=nope",
        "?x",
        "?seed=1&preset=blitz",
        "?&&",
    ]);
    let header = prop::sample::select(vec![
        "Connection: keep-alive",
        "Expect: 100-continue",
        "Authorization: Bearer nope",
        "Authorization: Basic",
        "Content-Type: text/plain",
        "X-Empty:",
        "Accept: */*",
    ]);
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..300),
        Just(b"system_count = 2\n[size]\nx = 1\ny = 1\n[systems]\n".to_vec()),
        Just(b"system_count = [".to_vec()),
    ];
    (
        method,
        prop::collection::vec(segment(), 0..8),
        query,
        prop::collection::vec(header, 0..3),
        body,
    )
        .prop_map(|(method, segments, query, headers, body)| {
            let mut raw = format!(
                "{method} /{}{query} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n",
                segments.join("/")
            );
            for header in headers {
                raw.push_str(header);
                raw.push_str("\r\n");
            }
            raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            raw
        })
}

#[test]
fn random_requests_never_break_the_daemon() {
    let cases = std::env::var("GWAR_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&request(), |raw| {
            let reply = parse_reply(&daemon.raw(&raw));
            let shown = String::from_utf8_lossy(&raw).into_owned();
            prop_assert!(
                (200..500).contains(&reply.status),
                "{} for {shown:?}: {}",
                reply.status,
                reply.body
            );
            // A HEAD answer is a GET's without its body (RFC 9110 §9.3.2).
            if raw.starts_with(b"HEAD ") {
                prop_assert!(reply.body.is_empty(), "{shown:?}: {}", reply.body);
            } else if reply.status >= 400 {
                let json: serde_json::Value = serde_json::from_str(&reply.body).map_err(|e| {
                    TestCaseError::fail(format!("not JSON ({e}) for {shown:?}: {}", reply.body))
                })?;
                prop_assert!(json["error"].is_string(), "{shown:?}: {}", reply.body);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(daemon.get("/healthz").status, 200, "still serving");
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
