//! Binding a Unix socket for the admin listener (`GWAR_ADMIN_LISTEN=unix:PATH`).
//!
//! A daemon killed with `kill -9` leaves its socket file behind, and binding over it fails;
//! deleting whatever is at the path would let a second daemon steal a live daemon's
//! socket, or delete a file that is not ours. So the file is removed only when it is a
//! socket and nothing answers on it; anything else is an error naming the path.
//! The daemon removes the socket file again when it stops.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

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
    UnixListener::bind(path).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;

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
