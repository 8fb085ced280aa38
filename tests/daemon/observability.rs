//! `/healthz` and `/metrics`: their content, and metrics that the official Prometheus
//! client library's parser accepts.

use std::process::Command;

use crate::util::{first_system, Daemon};

#[test]
fn healthz_reports_the_persistence_state() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "60000")],
    );
    let health = daemon.get("/healthz");
    assert_eq!(health.status, 200);
    let health = health.json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["persistence"]["state"], "healthy");
    assert_eq!(health["persistence"]["dirty_systems"], 0);
    assert!(health["persistence"]["last_error"].is_null());
    daemon.post("/galaxies/g?seed=1");
    let (x, y) = first_system(&daemon, "g");
    daemon.order("g", (x, y), "hatchery");
    assert_eq!(
        daemon.get("/healthz").json()["persistence"]["dirty_systems"],
        1
    );

    let disabled_dir = tempfile::tempdir().unwrap();
    let disabled = Daemon::start(
        disabled_dir.path(),
        &[("GWAR_PERSISTENCE_ENABLED", "false")],
    );
    let health = disabled.get("/healthz").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["persistence"]["state"], "disabled");
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[test]
fn metrics_count_saves_and_requests() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    daemon.post("/galaxies/g?seed=1");
    let (x, y) = first_system(&daemon, "g");
    daemon.order("g", (x, y), "hatchery");
    daemon.get("/galaxies/nope");
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let reply = daemon.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = reply.body;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("gwar_"), "{line}");
    }
    assert!(metric_value(&text, "gwar_persistence_batches_total") >= 2.0);
    assert_eq!(
        metric_value(&text, "gwar_persistence_systems_written_total"),
        201.0
    );
    assert_eq!(metric_value(&text, "gwar_persistence_dirty_systems"), 0.0);
    assert_eq!(metric_value(&text, "gwar_galaxies_loaded"), 1.0);
    assert!(metric_value(&text, "gwar_http_requests_total{class=\"2xx\"}") >= 4.0);
    assert_eq!(
        metric_value(&text, "gwar_http_requests_total{class=\"4xx\"}"),
        1.0
    );
    assert!(text.contains("# TYPE gwar_http_request_duration_seconds histogram"));
    assert!(text.contains("gwar_persistence_state{state=\"healthy\"} 1"));
}

/// Parses the exposition with the official Python client's parser (CI installs it).
#[test]
fn metrics_parse_with_the_official_prometheus_parser() {
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(std::process::Stdio::null())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install prometheus_client (pip install prometheus_client)"
        );
        eprintln!("SKIPPED: python3 with prometheus_client is not installed here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    daemon.post("/galaxies/g?seed=1");
    daemon.get("/galaxies/nope");
    let text = daemon.get("/metrics").body;
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        families = list(text_string_to_metric_families(open(sys.argv[1]).read()))\n\
        names = {f.name for f in families}\n\
        assert 'gwar_persistence_batches' in names, names\n\
        assert 'gwar_http_request_duration_seconds' in names, names\n\
        print(len(families))\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let families: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(families >= 15, "{families} families");
}

/// `GWAR_SLOW_QUERY_MS=0` makes every store call slow: a real SQLite batch is logged at
/// warn with its kind, its duration and its rows, and counted under its kind. Nothing here
/// asserts a duration.
#[test]
fn slow_store_calls_are_logged_at_warn_and_counted_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("GWAR_SLOW_QUERY_MS", "0")]);
    let slow = |kind: &str| daemon.metric(&format!("gwar_slow_queries_total{{kind=\"{kind}\"}}"));
    let batches = slow("batch");
    assert_eq!(daemon.post("/galaxies/g?seed=1").status, 201);
    assert!(slow("create_chunk") >= 1.0, "the creation's chunk");
    let (x, y) = first_system(&daemon, "g");
    daemon.order("g", (x, y), "hatchery");
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    assert!(slow("batch") >= batches + 1.0);
    assert_eq!(slow("take"), 0.0, "SQLite takes no galaxy");
    let logged = |needle: &str| {
        crate::util::wait_for(std::time::Duration::from_secs(10), || {
            daemon
                .log()
                .lines()
                .any(|line| line.contains("WARN") && line.contains(needle))
        })
    };
    assert!(logged("slow store call: batch took"), "{}", daemon.log());
    assert!(logged("slow store call: create_chunk took"));
    let text = daemon.get("/metrics").body;
    assert!(text.contains("# TYPE gwar_slow_queries_total counter"));
    let kinds = text
        .lines()
        .filter(|line| line.starts_with("gwar_slow_queries_total{"))
        .count();
    assert_eq!(kinds, 10, "one sample per kind, whatever happened");
}
