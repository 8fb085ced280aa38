//! A soak: sustained orders and reads from several clients while auto-saves run. Memory
//! does not grow beyond what the galaxies need, the dirty set stays within the systems
//! touched, and nothing fails. `GWAR_SOAK_SECS` sets the duration (10 s by default); a
//! long run is `GWAR_SOAK_SECS=600 cargo test --release --test daemon soak -- --nocapture`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::util::Daemon;

const CONFIG: &str = "system_count = 500\n[size]\nx = 50\ny = 50\n\
    [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n\
    [systems.structures.colony]\nstarting_level = 1\n\
    [systems.structures.colony.cost]\nmetal = 1\ntime = 0\n";

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One request on a keep-alive connection; the status.
fn exchange(reader: &mut BufReader<TcpStream>, method: &str, path: &str) -> u16 {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: 0\r\n\r\n");
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    status
}

#[test]
fn a_soak_keeps_memory_and_the_dirty_set_bounded() {
    let secs: u64 = std::env::var("GWAR_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("GWAR_PERSISTENCE_COALESCING_DELAY_MS", "20"),
            ("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL", "1"),
        ],
    );
    let mut systems = Vec::new();
    for galaxy in ["soak1", "soak2"] {
        assert_eq!(
            daemon
                .request("POST", &format!("/galaxies/{galaxy}?seed=3"), CONFIG)
                .status,
            201
        );
        for (x, y) in crate::util::systems(&daemon, galaxy) {
            systems.push((galaxy, x, y));
        }
    }
    let systems = Arc::new(systems);
    let stop = Arc::new(AtomicBool::new(false));
    let (orders, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4usize)
        .map(|c| {
            let (systems, stop, orders, reads) =
                (systems.clone(), stop.clone(), orders.clone(), reads.clone());
            let addr = daemon.addr;
            std::thread::spawn(move || {
                let mut reader = BufReader::new(TcpStream::connect(addr).unwrap());
                let mut i = c * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let (galaxy, x, y) = systems[i % systems.len()];
                    if i % 3 == 0 {
                        assert_eq!(
                            exchange(
                                &mut reader,
                                "GET",
                                &format!("/galaxies/{galaxy}/systems/{x}/{y}")
                            ),
                            200
                        );
                        reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let path = format!("/galaxies/{galaxy}/systems/{x}/{y}/build/colony");
                        assert_eq!(exchange(&mut reader, "POST", &path), 201);
                        orders.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut max_dirty = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        samples.push(resident_kib(daemon.pid()));
        let health = daemon.get("/healthz").json();
        assert_eq!(health["status"], "ok", "{health}");
        max_dirty = max_dirty.max(health["persistence"]["dirty_systems"].as_u64().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
    let metrics = daemon.get("/metrics").body;
    assert!(
        metrics.contains("gwar_persistence_errors_total 0"),
        "{metrics}"
    );
    // Memory: after the first seconds (allocator warm-up), no growth beyond noise.
    let warm = samples[samples.len().min(4) - 1];
    let last = *samples.last().unwrap();
    eprintln!(
        "soak: {secs} s, {} orders, {} reads, RSS {} KiB after warm-up, {} KiB at the end, max dirty {max_dirty} of {} systems",
        orders.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        warm,
        last,
        systems.len()
    );
    assert!(
        last <= warm + 8 * 1024,
        "RSS grew from {warm} KiB to {last} KiB"
    );
    assert!(
        max_dirty <= systems.len() as u64,
        "dirty {max_dirty} > {} systems",
        systems.len()
    );
    assert!(orders.load(Ordering::Relaxed) > 0);
}
