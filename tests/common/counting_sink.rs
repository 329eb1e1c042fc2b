//! A small SMTP server for the Redis feed's tests (tests/feed*.rs): it
//! counts accepted messages per recipient, answers "450" to RCPT for
//! addresses starting with "defer" (counted as `rcpt:<address>`), and
//! gauges concurrent transactions (most at once, start times), with an
//! optional hold before the end-of-data reply. Stopped when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A minimal SMTP server counting accepted messages per recipient.
pub struct CountingSink {
    pub port: u16,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    pub gauge: Arc<Gauge>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CountingSink {
    pub fn start() -> CountingSink {
        Self::start_with(Duration::ZERO)
    }

    /// A sink that waits `hold` before answering the end of DATA.
    pub fn start_with(hold: Duration) -> CountingSink {
        let gauge = Arc::new(Gauge {
            hold,
            ..Gauge::default()
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let counts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, g) = (Arc::clone(&counts), Arc::clone(&stop), Arc::clone(&gauge));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let c = Arc::clone(&c);
                        let g = Arc::clone(&g);
                        thread::spawn(move || serve(stream, &c, &g));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingSink {
            port,
            counts,
            gauge,
            stop,
            thread: Some(thread),
        }
    }

    pub fn nexthop(&self) -> String {
        format!("[127.0.0.1]:{}", self.port)
    }

    pub fn counts(&self) -> HashMap<String, u32> {
        self.counts.lock().expect("counts").clone()
    }
}

impl Drop for CountingSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Transactions in progress at the sink (MAIL to the end of DATA's reply,
/// RSET or the session's end), and the most at once.
#[derive(Default)]
pub struct Gauge {
    pub hold: Duration,
    pub now: AtomicUsize,
    pub most: AtomicUsize,
    /// When each transaction started (its MAIL arrived).
    pub starts: Mutex<Vec<Instant>>,
}

/// One transaction counted by a [`Gauge`] while it lives.
struct InTransaction<'a>(&'a Gauge);

impl<'a> InTransaction<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.most.fetch_max(now, Ordering::SeqCst);
        if let Ok(mut starts) = gauge.starts.lock() {
            starts.push(Instant::now());
        }
        InTransaction(gauge)
    }
}

impl Drop for InTransaction<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One SMTP session; ends when the client closes or after 60 s idle.
fn serve(stream: TcpStream, counts: &Mutex<HashMap<String, u32>>, gauge: &Gauge) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(stream);
    let mut rcpts: Vec<String> = Vec::new();
    let mut transaction: Option<InTransaction<'_>> = None;
    let _ = out.write_all(b"220 counter ESMTP\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 counter\r\n"
        } else if upper.starts_with("MAIL") || upper.starts_with("RSET") {
            rcpts.clear();
            drop(transaction.take());
            if upper.starts_with("MAIL") {
                transaction.replace(InTransaction::new(gauge));
            }
            b"250 2.0.0 Ok\r\n"
        } else if upper.starts_with("RCPT") {
            let addr = line
                .split('<')
                .nth(1)
                .and_then(|r| r.split('>').next())
                .unwrap_or("")
                .to_string();
            if addr.starts_with("defer") {
                // Counted per attempt, answered "try again later".
                *counts
                    .lock()
                    .expect("counts")
                    .entry(format!("rcpt:{addr}"))
                    .or_default() += 1;
                b"450 4.2.0 try again later\r\n"
            } else {
                rcpts.push(addr);
                b"250 2.1.5 Ok\r\n"
            }
        } else if upper.starts_with("DATA") {
            let _ = out.write_all(b"354 go ahead\r\n");
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
            }
            let mut map = counts.lock().expect("counts");
            for r in rcpts.drain(..) {
                *map.entry(r).or_default() += 1;
            }
            drop(map);
            if !gauge.hold.is_zero() {
                thread::sleep(gauge.hold);
            }
            let _ = out.write_all(b"250 2.0.0 queued\r\n");
            drop(transaction.take());
            continue;
        } else if upper.starts_with("QUIT") {
            let _ = out.write_all(b"221 2.0.0 bye\r\n");
            return;
        } else {
            b"250 2.0.0 Ok\r\n"
        };
        if out.write_all(reply).is_err() {
            return;
        }
    }
}
