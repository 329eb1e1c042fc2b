//! The `[[ingress]]` entries: LMTP listeners through which an MTA hands
//! its outbound mail to mailhop (docs/behind-postfix.md). Owns their keys,
//! defaults, documentation and checks, and the typed [`IngressListener`]
//! the daemon runs them from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use super::error::Invalid;

/// `deadline`'s default: well below Postfix's lmtp_data_done_timeout
/// (600 s), so that the MTA hears from mailhop before it gives up.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// `end_of_data_grace`'s default: deadline + grace stays below 600 s.
pub const DEFAULT_END_OF_DATA_GRACE: Duration = Duration::from_secs(120);
/// `max_message_size`'s default: Postfix's message_size_limit.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 10_240_000;

/// One `[[ingress]]` table as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressEntry {
    /// "unix:/run/mailhop/lmtp.sock" or "inet:127.0.0.1:2003".
    pub listen: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nexthop: String,
    #[serde(default = "default_transport")]
    pub transport: String,
    #[serde(default = "default_deadline", with = "duration_str")]
    pub deadline: Duration,
    #[serde(default = "default_grace", with = "duration_str")]
    pub end_of_data_grace: Duration,
    #[serde(default = "default_max_size")]
    pub max_message_size: u64,
    #[serde(default)]
    pub allow_non_loopback: bool,
}

fn default_transport() -> String {
    "smtp".into()
}

fn default_deadline() -> Duration {
    DEFAULT_DEADLINE
}

fn default_grace() -> Duration {
    DEFAULT_END_OF_DATA_GRACE
}

fn default_max_size() -> u64 {
    DEFAULT_MAX_MESSAGE_SIZE
}

impl IngressEntry {
    /// The keys of an entry as the man page documents them.
    pub(super) const KEYS: &'static [(&'static str, &'static str, &'static str)] = &[
        (
            "listen",
            "string, required",
            "Where the listener takes LMTP connections: \"unix:/run/mailhop/lmtp.sock\" (a \
             UNIX socket with [daemon] socket_mode and socket_group, and the job socket's \
             access control by peer credentials: root, the daemon's user, allowed_uids, \
             allowed_groups) or \"inet:127.0.0.1:2003\" (TCP, loopback only unless \
             allow_non_loopback). Postfix: default_transport = lmtp:unix:/run/mailhop/lmtp.sock.",
        ),
        (
            "nexthop",
            "string",
            "Where the mail goes, written as a job's nexthop (\"[smarthost.example]:587\", \
             \"example.com\"). Empty (the default): each recipient's domain, by MX lookup, or \
             [smtp] relayhost when set; the recipients of one message are then delivered as one \
             job per domain.",
        ),
        (
            "transport",
            "string",
            "The protocol mailhop speaks outward: \"smtp\" (the default) or \"lmtp\" (needs \
             nexthop).",
        ),
        (
            "deadline",
            "duration",
            "A recipient not settled this long after the end of the message gets 451 4.3.0 and \
             its delivery is cancelled before it starts (a job still waiting is never started; \
             a running one sends no message body). Default \"300s\", well below Postfix's \
             lmtp_data_done_timeout (600s).",
        ),
        (
            "end_of_data_grace",
            "duration",
            "When the deadline passes while a message body is already on its way to a server, \
             how much longer mailhop waits for that server's reply before answering 4.3.0 (the \
             message may then be delivered twice, never lost). Default \"120s\": deadline plus \
             grace stays below lmtp_data_done_timeout.",
        ),
        (
            "max_message_size",
            "integer",
            "Largest message accepted, in bytes, announced with SIZE (0: no limit). Mirrors \
             Postfix's message_size_limit (10240000).",
        ),
        (
            "allow_non_loopback",
            "boolean",
            "Allow an inet listener on an address other than loopback. The LMTP ingress has no \
             authentication: keep it on loopback or a UNIX socket. Default false.",
        ),
    ];
}

/// Where a listener listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IngressListen {
    Unix(PathBuf),
    Inet(SocketAddr),
}

impl std::fmt::Display for IngressListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressListen::Unix(path) => write!(f, "unix:{}", path.display()),
            IngressListen::Inet(addr) => write!(f, "inet:{addr}"),
        }
    }
}

/// The protocol an ingress's mail goes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngressTransport {
    Smtp,
    Lmtp,
}

/// One listener, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressListener {
    pub listen: IngressListen,
    /// `None`: each recipient's domain (or relayhost).
    pub nexthop: Option<String>,
    pub transport: IngressTransport,
    pub deadline: Duration,
    pub end_of_data_grace: Duration,
    /// 0: no limit.
    pub max_message_size: u64,
}

/// `unix:PATH` (absolute) or `inet:ADDRESS:PORT` (`inet:[::1]:2003`).
pub fn parse_ingress_listen(text: &str) -> Result<IngressListen, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("{text:?}: a unix: path must be absolute"));
        }
        if path.len() > 100 {
            return Err(format!(
                "{text:?}: a UNIX socket path must be at most 100 bytes"
            ));
        }
        return Ok(IngressListen::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = text.strip_prefix("inet:") {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            format!(
                "{text:?}: expected inet:ADDRESS:PORT, as inet:127.0.0.1:2003 or inet:[::1]:2003"
            )
        })?;
        if addr.port() == 0 {
            return Err(format!("{text:?}: port 0"));
        }
        return Ok(IngressListen::Inet(addr));
    }
    Err(format!(
        "{text:?}: expected \"unix:/path\" or \"inet:ADDRESS:PORT\""
    ))
}

impl IngressEntry {
    /// The typed listener, or what is wrong with the entry.
    pub fn listener(&self) -> Result<IngressListener, String> {
        let listen = parse_ingress_listen(&self.listen).map_err(|e| format!("listen: {e}"))?;
        if let IngressListen::Inet(addr) = &listen
            && !addr.ip().is_loopback()
            && !self.allow_non_loopback
        {
            return Err(format!(
                "listen: {addr} is not a loopback address; the LMTP ingress has no authentication (set allow_non_loopback = true to allow it)"
            ));
        }
        let transport = match self.transport.as_str() {
            "smtp" => IngressTransport::Smtp,
            "lmtp" => IngressTransport::Lmtp,
            other => {
                return Err(format!(
                    "transport: {other:?}: expected \"smtp\" or \"lmtp\""
                ));
            }
        };
        let nexthop = self.nexthop.trim();
        if nexthop.chars().any(char::is_control) {
            return Err("nexthop: control characters".into());
        }
        if transport == IngressTransport::Lmtp && nexthop.is_empty() {
            return Err("transport \"lmtp\" needs a nexthop".into());
        }
        if self.deadline.is_zero() {
            return Err("deadline: must be more than 0s".into());
        }
        Ok(IngressListener {
            listen,
            nexthop: (!nexthop.is_empty()).then(|| nexthop.to_string()),
            transport,
            deadline: self.deadline,
            end_of_data_grace: self.end_of_data_grace,
            max_message_size: self.max_message_size,
        })
    }
}

/// Every entry is valid and no two listen on the same place.
pub(super) fn check_ingress(entries: &[IngressEntry]) -> Result<(), Invalid> {
    let mut seen = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let listener = entry.listener().map_err(|message| Invalid {
            index: Some(index),
            message,
        })?;
        if seen.contains(&listener.listen) {
            return Err(Invalid {
                index: Some(index),
                message: format!("listen: {} is used by another [[ingress]]", listener.listen),
            });
        }
        seen.push(listener.listen);
    }
    Ok(())
}

/// `[daemon] spool_directory`: an absolute path.
pub(super) fn check_spool_directory(path: &str) -> Result<(), Invalid> {
    if !path.starts_with('/') {
        return Err(format!("{path:?}: must be an absolute path").into());
    }
    Ok(())
}

#[cfg(test)]
#[path = "ingress_tests.rs"]
mod tests;
