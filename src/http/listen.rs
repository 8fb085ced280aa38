//! Binding the listeners: TCP sockets with a deep accept queue, and a Unix socket for the
//! admin listener (`GWAR_ADMIN_LISTEN=unix:PATH`).
//!
//! The standard library listens with a backlog of 128: when more clients connect at once
//! (every player reconnecting after a restart), the kernel drops their SYNs and each
//! waits a second for its retry. [`LISTEN_BACKLOG`] connections wait in the kernel
//! instead, for the poller to accept them (the kernel caps it at `net.core.somaxconn`).
//!
//! A daemon killed with `kill -9` leaves its socket file behind, and binding over it fails;
//! deleting whatever is at the path would let a second daemon steal a live daemon's
//! socket, or delete a file that is not ours. So the file is removed only when it is a
//! socket and nothing answers on it; anything else is an error naming the path.
//! The daemon removes the socket file again when it stops.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

/// Connections the kernel queues for a listener before the poller accepts them.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a TCP listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as the
/// standard library sets it, so a restart does not wait out old connections' TIME_WAIT).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Why a Unix socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum UnixBindError {
    #[error("{}: another process is listening on this socket", .0.display())]
    InUse(PathBuf),
    #[error("{}: exists and is not a socket; not removed", .0.display())]
    NotASocket(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Binds `path`, first removing a stale socket file left there by a process that died.
/// The socket's permissions come from the umask (the systemd unit's `UMask=0077`: only
/// the service's user and root may connect).
pub fn bind_unix(path: &Path) -> Result<UnixListener, UnixBindError> {
    let io_error = |source| UnixBindError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(error)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(UnixBindError::NotASocket(path.to_path_buf()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(UnixBindError::InUse(path.to_path_buf())),
            // Refused: a socket file nobody listens on, left by a process that died.
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(io_error)?;
                log::info!("removed a stale socket file: {}", path.display());
            }
            Err(error) => return Err(io_error(error)),
        },
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io_error)?;
    socket
        .bind(&SockAddr::unix(path).map_err(io_error)?)
        .map_err(io_error)?;
    socket.listen(LISTEN_BACKLOG).map_err(io_error)?;
    Ok(UnixListener::from(std::os::fd::OwnedFd::from(socket)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_listener_queues_the_full_backlog() {
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        // `ss` shows a listening socket's backlog as its Send-Q.
        let Ok(output) = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
        else {
            eprintln!("ss is not installed: the backlog is not checked");
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout);
        let send_q: Vec<&str> = text.split_whitespace().take(3).collect();
        let expected = LISTEN_BACKLOG.min(somaxconn()).to_string();
        assert_eq!(send_q, ["LISTEN", "0", expected.as_str()], "{text}");
    }

    /// The kernel's cap on a listen backlog.
    fn somaxconn() -> i32 {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG)
    }

    #[test]
    fn a_fresh_path_binds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let _listener = bind_unix(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let live = bind_unix(&path).unwrap();
        assert!(matches!(bind_unix(&path), Err(UnixBindError::InUse(_))));
        assert!(
            UnixStream::connect(&path).is_ok(),
            "the live one still answers"
        );
        drop(live); // the file stays, as after kill -9
        assert!(path.exists());
        let _again = bind_unix(&path).unwrap();
        assert!(UnixStream::connect(&path).is_ok());
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "precious").unwrap();
        let error = bind_unix(&path).unwrap_err();
        assert!(matches!(error, UnixBindError::NotASocket(_)), "{error}");
        assert!(error.to_string().contains("admin.sock"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        let missing_dir = dir.path().join("no/such/dir/admin.sock");
        assert!(matches!(
            bind_unix(&missing_dir),
            Err(UnixBindError::Io { .. })
        ));
    }
}
