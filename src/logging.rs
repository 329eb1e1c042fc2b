//! Log output: one line per record, written with one `write(2)` to stderr
//! (RUST_LOG filters as with env_logger), in the shape mail administrators
//! and their tools (grep habits, pflogsumm) expect from Postfix:
//! `Nov 23 13:20:01 host mailhop/smtp[PID]: ID: to=<...>, ...` for delivery
//! lines and `mailhop[PID]: warning: ...` for the rest. Under journald
//! (JOURNAL_STREAM set) the timestamp and host are left to the journal.
//!
//! No control character from a job or the network reaches a log line raw:
//! every record's text, text or JSON format, stderr or journal, passes
//! through [`push_printable`] (control characters become '?', as Postfix's
//! logger does), so a hostile address, next hop or reply cannot forge lines.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Installs the logger. The daemon logs at info by default (one line per
/// recipient); the command line at warn. RUST_LOG overrides both
/// (env_logger's filter syntax).
pub fn init(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
            .build();
    let syslog_prefix = std::env::var_os("JOURNAL_STREAM").is_none();
    let logger = LineLogger {
        max_level: filter.filter(),
        filter,
        pid: std::process::id(),
        journal: (!syslog_prefix).then(Journal::connect).flatten(),
        host: syslog_prefix.then(short_hostname),
    };
    let max_level = logger.max_level;
    // Leaked once: the logger lives as long as the process.
    if log::set_logger(Box::leak(Box::new(logger))).is_err() {
        eprintln!("mailhop: logger already initialised");
        return;
    }
    log::set_max_level(max_level);
}

/// This thread's line buffer: log lines are formatted into it (no
/// allocation per line once it has grown), and while a job runs its
/// delivery lines stay there until the job's [`JobLines`] ends.
struct LineBuffer {
    /// A job is running: hold its delivery lines.
    holding: bool,
    text: String,
}

thread_local! {
    static LINES: std::cell::RefCell<LineBuffer> = const {
        std::cell::RefCell::new(LineBuffer { holding: false, text: String::new() })
    };
}

/// Most bytes of delivery lines held for one job before they are written.
const JOB_LINES_LIMIT: usize = 64 * 1024;

/// While it lives, this thread's delivery lines (`mailhop/...` targets:
/// the qmgr line and one line per recipient) are collected and then
/// written with one `write(2)`: a daemon worker holds one per job.
/// Warnings and errors are still written at once.
pub struct JobLines(());

impl JobLines {
    pub fn start() -> Self {
        LINES.with(|lines| {
            if let Ok(mut lines) = lines.try_borrow_mut() {
                lines.holding = true;
            }
        });
        JobLines(())
    }
}

impl Drop for JobLines {
    fn drop(&mut self) {
        LINES.with(|lines| {
            if let Ok(mut lines) = lines.try_borrow_mut() {
                lines.holding = false;
                if !lines.text.is_empty() {
                    write_stderr(lines.text.as_bytes());
                    lines.text.clear();
                }
                // A job with thousands of recipients grew the buffer: give
                // the memory back (a thousand idle workers would keep it).
                if lines.text.capacity() > 16 * 1024 {
                    lines.text.shrink_to(4096);
                }
            }
        });
    }
}

/// Writes the delivery lines this thread holds now (a recipient was
/// settled: its line does not wait for the end of the job).
pub fn flush_held() {
    LINES.with(|lines| {
        if let Ok(mut lines) = lines.try_borrow_mut()
            && !lines.text.is_empty()
        {
            write_stderr(lines.text.as_bytes());
            lines.text.clear();
        }
    });
}

/// Writes log text to stderr. Up to PIPE_BUF bytes go out with one
/// unlocked `write(2)`, which the kernel keeps whole (pipes, sockets of
/// journald's stream, files with their shared offset), so delivery
/// threads do not queue on std's stderr lock; longer text takes the lock.
fn write_stderr(bytes: &[u8]) {
    const PIPE_BUF: usize = 4096;
    if bytes.len() <= PIPE_BUF {
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(std::io::stderr(), rest) {
                Ok(0) => return,
                Ok(n) => rest = rest.get(n..).unwrap_or(&[]),
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
        return;
    }
    let _ = std::io::stderr().lock().write_all(bytes);
}

/// Formats each record into one line and writes it with one `write(2)` to
/// standard error (or sends it to the journal): no stream adapter between
/// a delivery thread and the file descriptor.
struct LineLogger {
    filter: env_logger::Logger,
    max_level: log::LevelFilter,
    pid: u32,
    journal: Option<Journal>,
    /// Set when lines carry a syslog timestamp and host (not under journald).
    host: Option<String>,
}

impl LineLogger {
    /// Appends the record as one line (with its newline) to `line`.
    fn write_line(&self, line: &mut String, record: &log::Record<'_>) {
        use std::fmt::Write as _;
        if let Some(host) = &self.host {
            write_syslog_time(line, SystemTime::now());
            line.push(' ');
            line.push_str(host);
            line.push(' ');
        }
        // "mailhop/smtp[PID]: text" or "mailhop[PID]: warning: text".
        let mut pid = [0u8; 20];
        let pid = crate::text::u64_digits(u64::from(self.pid), &mut pid);
        line.push_str("mailhop");
        if let Some(service) = record.target().strip_prefix("mailhop/") {
            line.push('/');
            line.push_str(service);
            line.push('[');
            line.push_str(pid);
            line.push_str("]: ");
        } else {
            line.push('[');
            line.push_str(pid);
            line.push_str("]: ");
            line.push_str(match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            });
        }
        let text_start = line.len();
        match record.args().as_str() {
            Some(text) => line.push_str(text),
            None => {
                let _ = write!(line, "{}", record.args());
            }
        }
        make_printable_from(line, text_start);
        line.push('\n');
    }
}

impl log::Log for LineLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let target = record.target();
        if target.starts_with("mailhop/")
            && let Some(journal) = &self.journal
            && journal.send(target, self.pid, &record.args().to_string())
        {
            return;
        }
        let delivery = target.starts_with("mailhop/");
        LINES.with(|lines| {
            let Ok(mut lines) = lines.try_borrow_mut() else {
                // Logging from inside a log line's formatting: a line of its own.
                let mut line = String::new();
                self.write_line(&mut line, record);
                write_stderr(line.as_bytes());
                return;
            };
            let start = lines.text.len();
            self.write_line(&mut lines.text, record);
            if delivery && lines.holding {
                if lines.text.len() >= JOB_LINES_LIMIT {
                    write_stderr(lines.text.as_bytes());
                    lines.text.clear();
                }
                return;
            }
            write_stderr(lines.text.get(start..).unwrap_or("").as_bytes());
            lines.text.truncate(start);
        });
    }

    fn flush(&self) {}
}

/// Appends `text` to `out` with every control character (C0, DEL, C1)
/// replaced by '?': the one escaping of text that goes into a log line
/// (Postfix's logger does the same). Printable ASCII is copied as it is.
pub fn push_printable(out: &mut String, text: &str) {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.push_str(text);
        return;
    }
    out.extend(text.chars().map(|c| if c.is_control() { '?' } else { c }));
}

/// [`push_printable`] into a new string.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_printable(&mut out, text);
    out
}

/// Makes `line[start..]` printable in place (a no-op for the usual line).
fn make_printable_from(line: &mut String, start: usize) {
    let Some(text) = line.get(start..) else {
        return;
    };
    if text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return;
    }
    let clean = printable(text);
    line.truncate(start);
    line.push_str(&clean);
}

/// The journal's native socket (systemd.journal-fields(7) protocol).
struct Journal {
    socket: std::os::unix::net::UnixDatagram,
}

impl Journal {
    const PATH: &'static str = "/run/systemd/journal/socket";

    fn connect() -> Option<Self> {
        let socket = std::os::unix::net::UnixDatagram::unbound().ok()?;
        socket.connect(Self::PATH).ok()?;
        Some(Self { socket })
    }

    /// One entry; false when the journal did not take it.
    fn send(&self, identifier: &str, pid: u32, message: &str) -> bool {
        let mut entry = String::with_capacity(message.len() + 96);
        entry.push_str("PRIORITY=6\nSYSLOG_FACILITY=2\n");
        entry.push_str(&format!(
            "SYSLOG_IDENTIFIER={identifier}\nSYSLOG_PID={pid}\n"
        ));
        // Single-line values only, and nothing that could forge an entry.
        entry.push_str("MESSAGE=");
        push_printable(&mut entry, message);
        entry.push('\n');
        self.socket.send(entry.as_bytes()).is_ok()
    }
}

fn short_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or("localhost").to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `Nov 23 13:20:01` (UTC), the classic syslog timestamp.
pub fn syslog_time(when: SystemTime) -> String {
    let mut text = String::with_capacity(15);
    write_syslog_time(&mut text, when);
    text
}

/// Appends [`syslog_time`] to `out` (digits written directly: this runs for
/// every log line).
fn write_syslog_time(out: &mut String, when: SystemTime) {
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (_, month, day) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    let two = |out: &mut String, n: u64, pad: char| {
        let tens = n / 10 % 10;
        out.push(if tens == 0 {
            pad
        } else {
            char::from(b'0' + tens as u8)
        });
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    out.push_str(name);
    out.push(' ');
    two(out, u64::from(day), ' ');
    out.push(' ');
    two(out, rem / 3600, '0');
    out.push(':');
    two(out, (rem % 3600) / 60, '0');
    out.push(':');
    two(out, rem % 60, '0');
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[path = "logging_tests.rs"]
mod tests;
