//! `galactic_war::serve::serve` run in this test's process, as a program linking the
//! library would: real listeners on loopback, real HTTP, a real SQLite file, stopped by a
//! shutdown token instead of a signal. Served twice in a row on the same file: the first
//! server leaves nothing behind (no signal handler, no lock, no global) that stops the
//! second, which finds what the first saved.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

use galactic_war::serve::{
    serve, Listener, Listeners, Notifier, Shutdown, ShutdownReport, ShutdownTrigger, StartError,
    EX_CONFIG, EX_OK,
};
use galactic_war::settings::{DatabaseUrl, Settings};

/// A server running on a thread of this process.
struct Running {
    game: SocketAddr,
    admin: SocketAddr,
    trigger: ShutdownTrigger,
    thread: JoinHandle<Result<ShutdownReport, StartError>>,
}

fn start(settings: &Settings) -> Running {
    let game = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (game_addr, admin_addr) = (game.local_addr().unwrap(), admin.local_addr().unwrap());
    let listeners = Listeners {
        game,
        admin: Listener::Tcp(admin),
    };
    let (trigger, shutdown) = Shutdown::new();
    let settings = settings.clone();
    let thread =
        std::thread::spawn(move || serve(&settings, listeners, shutdown, &Notifier::none()));
    Running {
        game: game_addr,
        admin: admin_addr,
        trigger,
        thread,
    }
}

/// One request on its own connection; the status and the body. The listener is bound
/// before `serve` starts, so a request sent early waits in the backlog until it serves.
fn ask(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

#[test]
fn serve_runs_in_process_until_its_token_fires_and_reports_what_it_saved() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        database: DatabaseUrl::File(dir.path().join("game.db")),
        ..Settings::default()
    };

    let first = start(&settings);
    let (status, body) = ask(first.game, "POST", "/galaxies/g?seed=1");
    assert_eq!(status, 201, "{body}");
    assert!(body.starts_with(r#"{"name":"g","tick":"#), "{body}");
    let (status, body) = ask(first.admin, "GET", "/healthz");
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"status":"ok","persistence":{"state":"healthy","dirty_systems":0,"last_error":null},"creation":"open"}"#
        )
    );
    first.trigger.trigger();
    let report = first.thread.join().unwrap().unwrap();
    assert!(report.all_saved(), "{report:?}");
    assert!(report.lost.is_empty() && report.flush.unsaved.is_empty());
    assert_eq!(report.exit_code(), EX_OK);
    assert!(
        TcpStream::connect(first.game).is_err(),
        "no longer listening"
    );

    // The same file again, in the same process; this time stopped by dropping the only
    // trigger, as a program that just lets go of its server would.
    let second = start(&settings);
    let (status, body) = ask(second.game, "GET", "/galaxies");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        r#"{"galaxies":[{"name":"g","loaded":false,"owner":null}],"total":1,"offset":0,"limit":100}"#
    );
    let (status, body) = ask(second.game, "GET", "/galaxies/g?limit=1");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""system_count":200"#), "{body}");
    drop(second.trigger);
    let report = second.thread.join().unwrap().unwrap();
    assert_eq!(report.exit_code(), EX_OK, "{report:?}");
}

#[test]
fn start_up_errors_carry_their_exit_status() {
    let error = Settings::from_lookup(|name| {
        (name == "GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL").then(|| "soon".to_owned())
    })
    .map_err(StartError::from)
    .unwrap_err();
    assert_eq!(error.exit_code(), EX_CONFIG);
    let message = error.to_string();
    assert!(
        message.contains("GWAR_PERSISTENCE_AUTO_SAVE_INTERVAL") && message.contains("soon"),
        "{message}"
    );
}
