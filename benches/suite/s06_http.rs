//! Section 6: HTTP over loopback. Three `galactic-war` daemons (the binary operators run,
//! each its own process, started with the contract's defaults), persistence on, off, and
//! off again as the control; 16 keep-alive clients saturate one server at a time, each
//! server going first in turn, ratios paired within rounds.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::daemon::{http_load, serve, HTTP_CLIENTS};
use crate::harness::{median, paired_ratio, row, Run};

/// Per route (`[GET, POST]`): the median req/s of each server, and the medians of the
/// ratios on/off and control/off taken within each round.
struct HttpResult {
    on: [f64; 2],
    off: [f64; 2],
    /// A second server with persistence off. Its ratio to `off` is what the measurement
    /// reads for two identical servers, i.e. its resolution.
    control: [f64; 2],
    on_ratio: [f64; 2],
    control_ratio: [f64; 2],
}

/// GET and POST req/s with persistence on, off, and off again (the control): `rounds`
/// rounds, each measuring every server on both routes, the servers taking turns at going
/// first; ratios paired within rounds.
///
/// The clients saturate the server (16 connections, as many as it has workers): with only
/// a few synchronous clients on two cores, throughput is set by scheduling luck (two
/// identical servers measured 0.6-1.6x each other sample by sample, 0.73-1.08x in
/// medians), which hides a 5% difference; saturated, it is set by the CPU each request
/// costs, which is what persistence could add to.
fn http(dir: &Path, duration: Duration, rounds: usize) -> HttpResult {
    let servers = [
        serve(dir, "on", true, &[]),
        serve(dir, "off", false, &[]),
        serve(dir, "control", false, &[]),
    ];
    let mut samples: [[Vec<f64>; 2]; 3] = Default::default();
    for round in 0..rounds {
        for (route, method, status) in [(0, "GET", 200), (1, "POST", 201)] {
            for turn in 0..servers.len() {
                let side = (round + turn) % servers.len();
                let served = &servers[side];
                let paths = if route == 0 {
                    &served.get
                } else {
                    &served.post
                };
                samples[side][route].push(http_load(
                    served.addr,
                    HTTP_CLIENTS,
                    HTTP_CLIENTS,
                    duration,
                    method,
                    paths.clone(),
                    status,
                ));
            }
        }
    }
    drop(servers);
    let ratios =
        |side: usize, route: usize| paired_ratio(&samples[side][route], &samples[1][route]);
    HttpResult {
        on_ratio: [ratios(0, 0), ratios(0, 1)],
        control_ratio: [ratios(2, 0), ratios(2, 1)],
        on: samples[0].clone().map(median),
        off: samples[1].clone().map(median),
        control: samples[2].clone().map(median),
    }
}

/// Section 6: measures, prints its rows and puts its JSON in `out`.
pub fn run(run: &Run, out: &mut Map<String, Value>) {
    let (quick, dir) = (run.quick, run.dir.as_path());
    // A multiple of three, so that each server goes first equally often.
    let (rounds, duration) = if quick {
        (6, Duration::from_millis(120))
    } else {
        // Many short rounds: the median of 36 paired ratios. Two identical servers
        // read 0.96-1.07 x each other this way, 0.88-1.19 x with 12 rounds of 400 ms.
        (36, Duration::from_millis(120))
    };
    let h = http(dir, duration, rounds);
    for (route, what) in [(0, "GET system"), (1, "POST build")] {
        row(
            &format!("6. HTTP {what}, req/s, persistence on vs off"),
            format!("{:.0}", h.on[route]),
            format!("{:.0}", h.off[route]),
            Some(h.on_ratio[route]),
            "≥ 0.95",
        );
        row(
            &format!("6. HTTP {what}, req/s, control: two servers with persistence off"),
            format!("{:.0}", h.control[route]),
            format!("{:.0}", h.off[route]),
            Some(h.control_ratio[route]),
            "1 ± resolution",
        );
    }
    out.insert(
        "http".into(),
        json!({"clients": HTTP_CLIENTS, "get_on": h.on[0], "get_off": h.off[0], "get_control": h.control[0],
               "post_on": h.on[1], "post_off": h.off[1], "post_control": h.control[1],
               "get_ratio": h.on_ratio[0], "post_ratio": h.on_ratio[1],
               "get_control_ratio": h.control_ratio[0], "post_control_ratio": h.control_ratio[1]}),
    );
}
