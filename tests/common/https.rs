//! A small in-process HTTPS server for the tests (OpenSSL, a certificate
//! of the test PKI): it answers every request with one settable
//! [`Reply`] (status, content type, body) and records each request's
//! first line and Host header. Used as the MTA-STS policy host.
//!
//! Contract: listens on 127.0.0.1 (a port the kernel chooses); serves one
//! connection at a time, each bounded (5 s read/write timeouts, a request
//! head of at most 16 KiB); accepts for at most [`LIFETIME`]. The
//! [`HttpsServer`] guard stops and joins its thread on drop, after which
//! the port refuses connections.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

/// Longest a server accepts connections.
pub const LIFETIME: Duration = Duration::from_secs(120);
/// Read and write timeout of a connection.
const IO_LIMIT: Duration = Duration::from_secs(5);
/// Largest request head read.
const HEAD_LIMIT: usize = 16 * 1024;

/// What the server answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// `200 OK`, `text/plain`, this body.
    pub fn text(body: &str) -> Self {
        Self {
            status: 200,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
        }
    }
}

/// One request: its first line and its Host header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub line: String,
    pub host: String,
}

/// The running server; stopped and joined on drop.
pub struct HttpsServer {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl HttpsServer {
    /// Serves `reply` with the certificate chain `cert` and key `key`.
    pub fn start(cert: &Path, key: &Path, reply: Reply) -> Self {
        let mut builder =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("TLS acceptor");
        builder
            .set_certificate_chain_file(cert)
            .expect("server certificate");
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .expect("server key");
        let acceptor = builder.build();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the HTTPS server");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let reply = Arc::new(Mutex::new(reply));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (serving, log, stopping) =
            (Arc::clone(&reply), Arc::clone(&requests), Arc::clone(&stop));
        let handle = thread::spawn(move || {
            let started = Instant::now();
            while !stopping.load(Ordering::SeqCst) && started.elapsed() < LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let reply = serving.lock().map(|r| r.clone());
                        if let Ok(reply) = reply
                            && let Some(request) = serve(&acceptor, stream, &reply)
                            && let Ok(mut log) = log.lock()
                        {
                            log.push(request);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            addr,
            reply,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Answers later requests with `reply`.
    pub fn set(&self, reply: Reply) {
        *self.reply.lock().expect("reply lock") = reply;
    }

    /// The requests answered so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("request log").clone()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// One connection: handshake, request head, the reply, close. `None` when
/// the handshake or the request failed.
fn serve(acceptor: &SslAcceptor, stream: TcpStream, reply: &Reply) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(IO_LIMIT)).ok()?;
    stream.set_write_timeout(Some(IO_LIMIT)).ok()?;
    let mut tls = acceptor.accept(stream).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_LIMIT {
            return None;
        }
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(buf.get(..n)?),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let host = lines
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
                .map(|(_, value)| value.trim().to_string())
        })
        .unwrap_or_default();
    let reason = match reply.status {
        200 => "OK",
        301 => "Moved Permanently",
        404 => "Not Found",
        _ => "Other",
    };
    let mut response = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if reply.status == 301 {
        response.push_str("Location: https://elsewhere.test/\r\n");
    }
    response.push_str("\r\n");
    let _ = tls.write_all(response.as_bytes());
    let _ = tls.write_all(&reply.body);
    let _ = tls.shutdown();
    Some(Request { line, host })
}
