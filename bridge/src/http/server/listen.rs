//! The sockets the server listens on: TCP (plain HTTP or HTTPS) and Unix sockets (plain HTTP, for
//! a local proxy or scraper; file permissions decide who may connect). Syntax and defaults:
//! docs/api.md "Listeners, TLS and HTTP/2".

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::tls::Tls;

/// A bound listening socket.
#[derive(Debug)]
pub enum Socket {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A listening socket and how its connections are served.
#[derive(Debug)]
pub struct Listener {
    pub socket: Socket,
    /// HTTPS when set.
    pub tls: Option<Tls>,
}

impl From<tokio::net::TcpListener> for Listener {
    fn from(l: tokio::net::TcpListener) -> Self {
        Self { socket: Socket::Tcp(l), tls: None }
    }
}

impl Listener {
    /// Where it listens, for logs.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match &self.socket {
            Socket::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("{scheme}://{a}"),
                Err(_) => format!("{scheme}://?"),
            },
            Socket::Unix(l) => {
                match l.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned)) {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:?".to_owned(),
                }
            }
        }
    }
}

/// Errors binding a Unix socket listener.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error("{path} exists and is not a socket; refusing to replace it (remove it or choose another path)")]
    NotASocket { path: PathBuf },
    #[error("{path} is in use by a running server (stop it, or choose another path)")]
    InUse { path: PathBuf },
    #[error("cannot {op} the socket {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no group named {group} (for the socket {path}; give a group name or gid)")]
    NoGroup { group: String, path: PathBuf },
}

/// Who may connect to a Unix socket listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAccess {
    /// Permission bits of the socket file (connecting needs write permission).
    pub mode: u32,
    /// The socket file's group (name or gid); None: the process's.
    pub group: Option<String>,
}

fn resolve_group(group: &str, path: &Path) -> Result<nix::unistd::Gid, UnixSocketError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(gid));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        _ => Err(UnixSocketError::NoGroup { group: group.to_owned(), path: path.to_owned() }),
    }
}

/// Binds a Unix socket at `path` with `access`. A socket file left by a server that is gone is
/// removed first (nothing answers a connect to it); a live one, or a file that is not a socket,
/// is an error. Call inside the tokio runtime.
pub fn bind_unix(
    path: &Path,
    access: &UnixAccess,
    backlog: u32,
) -> Result<tokio::net::UnixListener, UnixSocketError> {
    let io =
        |op: &'static str| move |source| UnixSocketError::Io { op, path: path.to_owned(), source };
    let gid = access.group.as_deref().map(|g| resolve_group(g, path)).transpose()?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(UnixSocketError::NotASocket { path: path.to_owned() })
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(UnixSocketError::InUse { path: path.to_owned() }),
            Err(_) => std::fs::remove_file(path).map_err(io("remove the stale"))?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspect")(e)),
    }
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(io("create"))?;
    socket.set_nonblocking(true).map_err(io("configure"))?;
    socket.bind(&SockAddr::unix(path).map_err(io("name"))?).map_err(io("bind"))?;
    // Permissions before listen: nobody can connect before they are right.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
        .map_err(io("set the mode of"))?;
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| io("set the group of")(io::Error::from(e)))?;
    }
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX)).map_err(io("listen on"))?;
    let std: std::os::unix::net::UnixListener = socket.into();
    tokio::net::UnixListener::from_std(std).map_err(io("register"))
}

/// An accepted connection, before a worker takes it.
#[derive(Debug)]
pub(super) enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

/// Accepts one connection: the stream and, for TCP, the peer's address.
pub(super) async fn accept(socket: &Socket) -> io::Result<(Accepted, Option<SocketAddr>)> {
    match socket {
        Socket::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            // No Nagle: a response's last partial segment must not wait for the client's
            // delayed ACK.
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Ok((Accepted::Tcp(s.into_std()?), Some(peer)))
        }
        Socket::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Accepted::Unix(s.into_std()?), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> UnixAccess {
        UnixAccess { mode: 0o640, group: None }
    }

    #[tokio::test]
    async fn a_unix_socket_gets_its_mode_and_replaces_only_a_stale_socket() {
        use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("http.sock");
        // Stale: a socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        let live = bind_unix(&path, &access(), 16).expect("stale socket replaced");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        // Live: refused, and left in place.
        let e = bind_unix(&path, &access(), 16).expect_err("in use").to_string();
        assert!(e.contains("in use") && e.contains("http.sock"), "{e}");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok(), "still served");
        drop(live);
        // Not a socket: refused, and the file kept.
        let file = dir.path().join("file");
        std::fs::write(&file, "data").expect("write");
        let e = bind_unix(&file, &access(), 16).expect_err("not a socket").to_string();
        assert!(e.contains("not a socket") && e.contains("file"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "data");
        // An unknown group is named.
        let g = UnixAccess { mode: 0o660, group: Some("no-such-group-qrng".into()) };
        let e = bind_unix(&dir.path().join("g.sock"), &g, 16).expect_err("group").to_string();
        assert!(e.contains("no-such-group-qrng"), "{e}");
    }
}
