//! The HTTP workers' allocation rule (see `src/http/server.rs`): answering a system read or
//! an order grows no block and allocates nothing over 1 KiB, because either takes a lock of
//! glibc's allocator arenas, which the workers share with each other and with the
//! persistence threads. Counted with a global allocator in this test binary, over real
//! requests on loopback.
//!
//! Only the request path is counted: the worker thread that serves the test's keep-alive
//! connection (running the handler, building the response and writing it; the poller
//! thread reads and parses the request), found by the handler wrapper marking its own
//! thread. The server under test has a single worker, so one thread serves them all. Everything else in the process is left out — above all
//! the idle workers, which on a loaded machine are still registering on the connection
//! queue when counting starts (crossbeam's waker list grows: reallocations that are not the
//! request path's), and the client, which allocates nothing while counting anyway.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use galactic_war::app::{AppState, PersistenceState};
use galactic_war::model::{GalaxyConfig, StructureKind};
use galactic_war::serve::Listener;
use galactic_war::testing::{
    Api, Endpoint, Handler, HttpMetrics, HttpServer, Limits, Reply, Request,
};

/// The system allocator, counting reallocations and large blocks on the thread under test
/// while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Every allocation counted, small ones too: proof that the request path was seen at all.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static REALLOCS: AtomicUsize = AtomicUsize::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(0);

/// glibc's per-thread cache takes blocks up to about this size.
const SMALL: usize = 1024;

thread_local! {
    /// Set by [`Marking`] on the worker that serves the test's connection. A `const`
    /// `Cell<bool>` needs no lazy initialisation and no destructor, so reading it inside
    /// the allocator neither allocates nor recurses.
    static UNDER_TEST: Cell<bool> = const { Cell::new(false) };
}

/// Whether this allocation is the request path's: counting, on the thread under test.
fn counted() -> bool {
    COUNTING.load(Ordering::Relaxed) && UNDER_TEST.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is passed unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            if layout.size() > SMALL {
                LARGE.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The API, marking the worker thread that calls it as the thread under test. The server
/// has one worker, so the mark covers every request's path on the worker: the handler,
/// building the answer, writing it and handing the connection back to the poller.
struct Marking(Api);

impl Handler for Marking {
    fn handle(&self, request: &Request) -> Reply {
        UNDER_TEST.with(|under_test| under_test.set(true));
        self.0.handle(request)
    }
}

/// Builds complete at once and resources never run out, so every order is a 201.
fn config() -> GalaxyConfig {
    let mut text = String::from(
        "system_count = 50\n[size]\nx = 20\ny = 20\n\
         [systems.resources]\nmetal = 1000000000\ncrew = 1000000000\nwater = 1000000000\n",
    );
    for kind in StructureKind::ALL.map(StructureKind::as_str) {
        text += &format!(
            "[systems.structures.{kind}]\nstarting_level = 1\n\
             [systems.structures.{kind}.production]\nmetal = 10\n\
             [systems.structures.{kind}.storage]\nmetal = 1000000000000\n\
             [systems.structures.{kind}.cost]\nmetal = 1\ncrew = 1\nwater = 1\ntime = 0\n"
        );
    }
    GalaxyConfig::from_toml(&text).unwrap().0
}

/// Sends `request` and reads the whole answer into `buffer` without allocating; returns
/// the status.
fn exchange(stream: &mut TcpStream, request: &[u8], buffer: &mut [u8]) -> u16 {
    stream.write_all(request).unwrap();
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..]).unwrap();
        assert!(read > 0, "the server closed the connection");
        filled += read;
        let Some(head) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head_text = std::str::from_utf8(&buffer[..head]).unwrap();
        let length: usize = head_text
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .map_or(0, |value| value.parse().unwrap());
        if filled >= head + 4 + length {
            assert_eq!(filled, head + 4 + length, "one answer per request");
            return head_text[9..12].parse().unwrap();
        }
    }
}

#[test]
fn reads_and_orders_grow_no_block_and_allocate_nothing_large() {
    let app = AppState::without_engine(PersistenceState::Disabled, None);
    app.create_galaxy("g", config(), Some(1), 0).unwrap();
    let places: Vec<(u32, u32)> = app
        .galaxy_copy("g")
        .unwrap()
        .systems()
        .iter()
        .map(|s| (s.x, s.y))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = Arc::new(HttpMetrics::default());
    let api = Arc::new(Marking(Api::new(app, metrics.clone(), None, None)));
    let endpoint = Endpoint {
        listener: Listener::Tcp(listener),
        handler: api,
        own_max_connections: None,
    };
    let limits = Limits {
        workers: 1,
        ..Limits::default()
    };
    let server = HttpServer::start(vec![endpoint], limits, metrics).unwrap();

    // Every request is built before counting starts.
    let request = |method: &str, suffix: &str, (x, y): (u32, u32)| {
        format!(
            "{method} /galaxies/g/systems/{x}/{y}{suffix} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let requests: Vec<(Vec<u8>, u16)> = places
        .iter()
        .flat_map(|&at| {
            [
                (request("GET", "", at), 200),
                (request("POST", "/build/colony", at), 201),
            ]
        })
        .collect();
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    // A first pass warms the connection's buffers and the worker's caches up.
    for (request, status) in &requests {
        assert_eq!(exchange(&mut stream, request, &mut buffer), *status);
    }
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..4 {
        for (request, status) in &requests {
            assert_eq!(exchange(&mut stream, request, &mut buffer), *status);
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    let (reallocs, large) = (
        REALLOCS.load(Ordering::SeqCst),
        LARGE.load(Ordering::SeqCst),
    );
    drop(stream);
    server.shutdown();
    // Answering allocates small blocks (the request's strings, the JSON body): none seen
    // would mean the wrong thread was watched, and the zeros below would prove nothing.
    assert!(
        ALLOCS.load(Ordering::SeqCst) >= 4 * requests.len(),
        "the request path was not counted"
    );
    assert_eq!(
        (reallocs, large),
        (0, 0),
        "reallocations and blocks over {SMALL} bytes in {} requests",
        4 * requests.len()
    );
}
