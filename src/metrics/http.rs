//! The metrics endpoint's HTTP server: one thread that accepts on a TCP
//! or UNIX listener and serves one request per connection, in turn:
//! `GET /metrics` (or `HEAD`) gets a scrape, in OpenMetrics text when the
//! request's `Accept` asks for it, else the Prometheus text format 0.0.4;
//! any other path gets 404, any other method 405, a request that does not
//! parse 400. The request is parsed by `httparse`.
//!
//! Bounded: a request is at most [`REQUEST_MAX`] bytes and must arrive
//! within [`REQUEST_TIME`]; a response must be taken within
//! [`RESPONSE_TIME`] (after the answer to an overlong request, at most 64
//! KiB more are read and dropped, for at most half a second, so that the
//! close does not reset the answer away); one connection at a time, so a client that stalls
//! delays other scrapes by at most those times and costs the daemon no
//! thread or descriptor beyond the one connection. (tiny_http, the usual
//! small sync server, serves each connection on a thread of its own with
//! no read timeout: any client of the port could take threads and
//! descriptors from delivery.)
//!
//! Error contract: [`bind`] returns a text naming the address for the
//! daemon's startup error. Once serving, nothing a client sends stops the
//! endpoint: a failed connection is dropped (logged at debug level), and a
//! failing accept is logged and retried after a pause.

use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::stat::{Mode, umask};

use crate::config::MetricsListen;

use super::recorder::{Format, Recorder};
use super::snapshot::Snapshot;

/// Longest request accepted (request line and headers).
pub const REQUEST_MAX: usize = 8192;
/// Most headers a request may have.
const HEADERS_MAX: usize = 64;
/// Time for the whole request to arrive.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Time for each write of the response.
pub const RESPONSE_TIME: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors...).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What the endpoint reads at each scrape: the daemon's status.
pub type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A bound, not yet serving endpoint.
pub struct Endpoint {
    listener: Listener,
    /// The socket file we created (UNIX), removed by [`Endpoint::remove_file`].
    bound: Option<BoundFile>,
    describe: String,
}

/// A UNIX socket file we created, known by device and inode.
#[derive(Clone, Debug)]
pub struct BoundFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundFile {
    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::info!("cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// Binds the endpoint's listener; `Ok(None)` when `listen` is off.
pub fn bind(listen: &MetricsListen) -> Result<Option<Endpoint>, String> {
    match listen {
        MetricsListen::Off => Ok(None),
        MetricsListen::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .map_err(|e| format!("metrics.listen: cannot listen on {addr}: {e}"))?;
            let describe = match listener.local_addr() {
                Ok(local) => format!("http://{local}/metrics"),
                Err(_) => format!("http://{addr}/metrics"),
            };
            Ok(Some(Endpoint {
                listener: Listener::Tcp(listener),
                bound: None,
                describe,
            }))
        }
        MetricsListen::Unix(path) => {
            let (listener, bound) = bind_unix(path)?;
            Ok(Some(Endpoint {
                listener: Listener::Unix(listener),
                bound: Some(bound),
                describe: format!("unix:{} /metrics", path.display()),
            }))
        }
    }
}

/// Binds a UNIX socket with mode 0660, replacing a stale socket file
/// (one nobody listens on) but nothing else.
fn bind_unix(path: &Path) -> Result<(UnixListener, BoundFile), String> {
    let name = path.display();
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "metrics.listen: {name}: another process is listening on it"
                ));
            }
            fs::remove_file(path).map_err(|e| {
                format!("metrics.listen: cannot remove the stale socket {name}: {e}")
            })?;
        }
        Ok(_) => return Err(format!("metrics.listen: {name} exists and is not a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("metrics.listen: {name}: {e}")),
    }
    // The umask gives the mode at bind: nobody connects before it is right.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| format!("metrics.listen: cannot listen on {name}: {e}"))?;
    let meta = fs::symlink_metadata(path).map_err(|e| format!("metrics.listen: {name}: {e}"))?;
    Ok((
        listener,
        BoundFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

impl Endpoint {
    /// Where it listens: "http://127.0.0.1:9325/metrics".
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The TCP port it listens on (TCP endpoints).
    pub fn port(&self) -> Option<u16> {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr().ok().map(|a| a.port()),
            Listener::Unix(_) => None,
        }
    }

    /// The socket file to remove at exit (UNIX endpoints).
    pub fn bound_file(&self) -> Option<BoundFile> {
        self.bound.clone()
    }

    /// Serves scrapes on a thread of its own until the process exits.
    pub fn serve(self, recorder: Arc<Recorder>, snapshot: Option<SnapshotFn>) -> io::Result<()> {
        let Endpoint { listener, .. } = self;
        thread::Builder::new()
            .name("metrics-http".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let scrape = |format| recorder.render(snapshot.as_ref().map(|f| f()), format);
                loop {
                    let accepted = match &listener {
                        Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                            s.set_read_timeout(Some(REQUEST_TIME))?;
                            s.set_write_timeout(Some(RESPONSE_TIME))?;
                            Ok(Conn::Tcp(s))
                        }),
                        Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                            s.set_read_timeout(Some(REQUEST_TIME))?;
                            s.set_write_timeout(Some(RESPONSE_TIME))?;
                            Ok(Conn::Unix(s))
                        }),
                    };
                    match accepted {
                        Ok(mut conn) => {
                            let served =
                                catch_unwind(AssertUnwindSafe(|| handle(&mut conn, &scrape)));
                            match served {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => log::debug!("metrics: a request failed: {e}"),
                                Err(_) => log::error!("metrics: a request handler panicked"),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::warn!("metrics: accept: {e}");
                            thread::sleep(ACCEPT_PAUSE);
                        }
                    }
                }
            })
            .map(|_| ())
    }
}

enum Conn {
    Tcp(std::net::TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Unix(s) => s.flush(),
        }
    }
}

impl Conn {
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Conn::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }
}

/// How much of an overlong request is read and dropped after the answer,
/// and for how long: closing with unread input would reset the
/// connection, and the client could lose the answer.
const DRAIN_MAX: usize = 65_536;
const DRAIN_TIME: Duration = Duration::from_millis(500);

/// Reads one request from `conn` and answers it.
fn handle(conn: &mut Conn, scrape: &dyn Fn(Format) -> String) -> io::Result<()> {
    let request = read_request(conn, Instant::now() + REQUEST_TIME)?;
    let response = respond(&request, scrape);
    conn.write_all(&response)?;
    conn.flush()?;
    conn.finish()?;
    if request.len() >= REQUEST_MAX {
        conn.set_read_timeout(DRAIN_TIME)?;
        let deadline = Instant::now() + DRAIN_TIME;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < DRAIN_MAX && Instant::now() < deadline {
            match conn.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    }
    Ok(())
}

/// The bytes of one request head, up to the blank line; a request that
/// is longer than [`REQUEST_MAX`] is returned cut there (it then does not
/// parse and gets 400). An error when the client sends nothing complete
/// in time or closes first.
pub(super) fn read_request(conn: &mut impl Read, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the end of the request",
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let room = REQUEST_MAX.saturating_sub(buf.len());
        buf.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
        if memchr::memmem::find(&buf, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&buf, b"\n\n").is_some()
            || buf.len() >= REQUEST_MAX
        {
            return Ok(buf);
        }
    }
}

/// The whole response to a request head.
pub(super) fn respond(request: &[u8], scrape: &dyn Fn(Format) -> String) -> Vec<u8> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let complete = matches!(parsed.parse(request), Ok(httparse::Status::Complete(_)));
    let (Some(method), Some(target), true) = (parsed.method, parsed.path, complete) else {
        return response(400, "Bad Request", TEXT, b"bad request\n", false, &[]);
    };
    let head = method == "HEAD";
    if method != "GET" && !head {
        return response(
            405,
            "Method Not Allowed",
            TEXT,
            b"only GET and HEAD\n",
            head,
            &["Allow: GET, HEAD"],
        );
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return response(
            404,
            "Not Found",
            TEXT,
            b"not found; the metrics are at /metrics\n",
            head,
            &[],
        );
    }
    let openmetrics = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("accept")
            && std::str::from_utf8(h.value)
                .is_ok_and(|v| v.contains("application/openmetrics-text"))
    });
    let format = if openmetrics {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    };
    let body = scrape(format);
    response(200, "OK", format.content_type(), body.as_bytes(), head, &[])
}

const TEXT: &str = "text/plain; charset=utf-8";

fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
    extra: &[&str],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(body);
    }
    bytes
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
