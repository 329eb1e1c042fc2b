use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::*;

fn scrape(format: Format) -> String {
    match format {
        Format::Prometheus => "prom 1\n".into(),
        Format::OpenMetrics => "om 1\n# EOF\n".into(),
    }
}

fn text(request: &[u8]) -> String {
    String::from_utf8(respond(request, &scrape)).unwrap()
}

#[test]
fn get_metrics_is_a_scrape_in_the_prometheus_text_format() {
    let answer = text(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Content-Length: 7\r\n"), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nprom 1\n"), "{answer}");
    let query = text(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(query.ends_with("prom 1\n"), "{query}");
}

#[test]
fn an_openmetrics_accept_header_gets_openmetrics() {
    let answer = text(
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    );
    assert!(
        answer.contains(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        ),
        "{answer}"
    );
    assert!(answer.ends_with("# EOF\n"), "{answer}");
}

#[test]
fn head_has_the_headers_only() {
    let answer = text(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("Content-Length: 7\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
}

#[test]
fn other_paths_methods_and_garbage_get_errors() {
    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
        (b"GET /metrics/x HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (b"\x00\x01\x02\r\n\r\n", "400 Bad Request"),
        (b"GET /metrics HTTP/1.1\r\nHost", "400 Bad Request"),
        (b"", "400 Bad Request"),
        (b"GET /metrics HTTP/9.9\r\n\r\n", "400 Bad Request"),
    ] {
        let answer = text(request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?}: {answer}"
        );
        assert!(!answer.contains("prom 1"), "{answer}");
    }
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let answer = text(format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "too many headers: {answer}"
    );
}

/// Gives its bytes in small pieces, then `then` forever.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    then: io::ErrorKind,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at >= self.data.len() {
            if self.then == io::ErrorKind::UnexpectedEof {
                return Ok(0);
            }
            return Err(self.then.into());
        }
        let n = 3.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn a_request_is_read_to_its_blank_line_and_no_further_than_the_limit() {
    let mut slow = Trickle {
        data: b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\nrest".to_vec(),
        at: 0,
        then: io::ErrorKind::WouldBlock,
    };
    let head = read_request(&mut slow, later()).unwrap();
    assert!(head.starts_with(b"GET /metrics HTTP/1.1\r\nA: b\r\n\r\n"));
    let mut endless = Trickle {
        data: vec![b'a'; REQUEST_MAX * 3],
        at: 0,
        then: io::ErrorKind::WouldBlock,
    };
    let cut = read_request(&mut endless, later()).unwrap();
    assert_eq!(cut.len(), REQUEST_MAX);
    assert!(text(&cut).starts_with("HTTP/1.1 400 "));
}

#[test]
fn a_request_cut_short_or_too_slow_is_an_error() {
    let mut closed = Trickle {
        data: b"GET /metrics HTTP/1.1\r\n".to_vec(),
        at: 0,
        then: io::ErrorKind::UnexpectedEof,
    };
    let e = read_request(&mut closed, later()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    let mut stalled = Trickle {
        data: b"GET /metrics HTTP/1.1\r\n".to_vec(),
        at: 0,
        then: io::ErrorKind::WouldBlock,
    };
    let e = read_request(&mut stalled, later()).unwrap_err();
    assert_eq!(
        e.kind(),
        io::ErrorKind::WouldBlock,
        "the socket's read timeout"
    );
    let mut late = Trickle {
        data: b"GET /metrics HTTP/1.1\r\n".to_vec(),
        at: 0,
        then: io::ErrorKind::Interrupted,
    };
    let e = read_request(&mut late, Instant::now()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[test]
fn bind_refuses_what_is_not_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let Err(e) = bind(&MetricsListen::Unix(file.clone())) else {
        panic!("bound over a file");
    };
    assert!(e.contains("exists and is not a socket"), "{e}");
    let path = dir.path().join("m.sock");
    let endpoint = bind(&MetricsListen::Unix(path.clone())).unwrap().unwrap();
    let Err(e) = bind(&MetricsListen::Unix(path.clone())) else {
        panic!("bound twice");
    };
    assert!(e.contains("another process is listening"), "{e}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    drop(endpoint);
    // Stale now: replaced.
    let again = bind(&MetricsListen::Unix(path.clone())).unwrap().unwrap();
    again.bound_file().unwrap().remove();
    assert!(!path.exists());
    assert!(bind(&MetricsListen::Off).unwrap().is_none());
}
