//! A real nginx in front of the game listener, as the README's "Running behind nginx"
//! sets it up (upstream keep-alive): players' requests pass, and no admin route can be
//! reached through it, although every request nginx forwards comes from loopback.
//!
//! Needs Debian's `nginx`; skipped with a note where it is missing, unless `CI` is set
//! (`.ci/run` installs it), where a missing nginx fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{request_at, wait_for, Daemon, Reply};

/// The nginx binary, if installed (`/usr/sbin` is not on every user's `PATH`).
fn nginx_binary() -> Option<PathBuf> {
    ["nginx", "/usr/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|bin| {
            Command::new(bin)
                .arg("-v")
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// An nginx master process with its own prefix directory; stopped on drop.
struct Nginx {
    child: Child,
    addr: std::net::SocketAddr,
    /// Its configuration, logs and temporary files; removed after it stopped.
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on a free loopback port, proxying everything to `upstream`.
    fn start(bin: &Path, upstream: std::net::SocketAddr) -> Nginx {
        // The port is free when we look; another process could take it before nginx
        // binds it, so a failed start is tried again on another port.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("nginx.conf"),
                config(dir.path(), addr, upstream),
            )
            .unwrap();
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .args(["-c", "nginx.conf", "-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut exited = false;
            let listening = wait_for(Duration::from_secs(30), || {
                exited = exited || !matches!(child.try_wait(), Ok(None));
                exited || std::net::TcpStream::connect(addr).is_ok()
            });
            if listening && !exited {
                return Nginx {
                    child,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start; its error log:\n{last_log}");
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request_at(self.addr, method, path, headers, b"")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits; SIGKILL if it does not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let stopped = wait_for(Duration::from_secs(10), || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The README's server block, with every path nginx writes inside `dir`.
fn config(dir: &Path, listen: std::net::SocketAddr, upstream: std::net::SocketAddr) -> String {
    use std::os::unix::fs::MetadataExt;
    // As root, nginx's workers would switch to an unprivileged user that cannot enter the
    // private temporary directory; /proc/self belongs to our effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let dir = dir.display();
    format!(
        "{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream galactic_war {{
        server {upstream};
        keepalive 32;
    }}
    map $request_method $gwar_creator {{
        POST    $binary_remote_addr;
        default \"\";
    }}
    limit_req_zone $gwar_creator zone=gwar_creations:10m rate=1r/m;
    server {{
        listen {listen};
        location / {{
            proxy_pass http://galactic_war;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}
        location ~ ^/galaxies/[^/]+$ {{
            limit_req zone=gwar_creations burst=3 nodelay;
            limit_req_status 429;
            proxy_pass http://galactic_war;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
        }}
    }}
}}
",
        user = if root { "user root;\n" } else { "" },
    )
}

#[test]
fn through_nginx_players_pass_and_admin_routes_do_not() {
    let Some(bin) = nginx_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install nginx (apt-get install nginx)"
        );
        eprintln!("SKIPPED: nginx is not installed here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let nginx = Nginx::start(&bin, daemon.addr);

    let created = nginx.request("POST", "/galaxies/g?seed=1", &[]);
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(
        created
            .header("server")
            .is_some_and(|s| s.starts_with("nginx")),
        "answered through nginx: {:?}",
        created.headers
    );
    let galaxy = nginx.request("GET", "/galaxies/g", &[]);
    assert_eq!(galaxy.status, 200, "{}", galaxy.body);
    let first = &galaxy.json()["systems"][0];
    let order = nginx.request(
        "POST",
        &format!(
            "/galaxies/g/systems/{}/{}/build/hatchery",
            first["x"], first["y"]
        ),
        &[],
    );
    assert_eq!(order.status, 201, "{}", order.body);
    // Creations are rate-limited per client (one a minute, bursts of three): reads and
    // orders are not.
    for name in ["g1", "g2", "g3"] {
        let created = nginx.request("POST", &format!("/galaxies/{name}"), &[]);
        assert_eq!(created.status, 201, "{name}: {}", created.body);
    }
    let limited = nginx.request("POST", "/galaxies/g4", &[]);
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(nginx.request("GET", "/galaxies/g1", &[]).status, 200);

    // Every admin route, plainly and in the disguises a path can take through a proxy,
    // with and without a token (none is configured; it must not matter).
    for (method, path, status) in [
        ("DELETE", "/galaxies/g", 405),
        ("POST", "/admin/save", 404),
        ("POST", "/admin/backup", 404),
        ("POST", "/%61dmin/backup", 404),
        ("POST", "/galaxies/../admin/backup", 404),
        ("POST", "//admin/backup", 404),
    ] {
        for headers in [&[][..], &[("Authorization", "Bearer anything")][..]] {
            let reply = nginx.request(method, path, headers);
            assert_eq!(
                reply.status, status,
                "{method} {path} {headers:?} through nginx: {}",
                reply.body
            );
        }
    }
    assert_eq!(
        nginx.request("GET", "/galaxies/g", &[]).status,
        200,
        "the galaxy is still there"
    );
    assert!(!dir.path().join("backups").exists(), "no backup was taken");
    // The operator's channel, beside nginx, works.
    assert_eq!(daemon.admin_post("/admin/save").status, 200);
}
