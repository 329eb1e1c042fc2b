//! The grammar and typed form of the `[metrics]` values: where the
//! Prometheus endpoint listens ([`MetricsListen`]) and the checks of its
//! keys.
//!
//! Pure; a value that does not parse is an `Invalid` naming the forms
//! accepted.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::error::Invalid;
use super::tables::MetricsConfig;

/// Most destinations `destination_label_limit` may name: every one is a
/// set of time series in every scrape.
pub const MAX_DESTINATION_LABELS: usize = 1000;

/// Where the metrics endpoint listens (`[metrics] listen`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// `""`: no endpoint (the default).
    Off,
    /// `"127.0.0.1:9325"`, `"[::1]:9325"`.
    Tcp(SocketAddr),
    /// `"unix:/run/mailhop/metrics.sock"`.
    Unix(PathBuf),
}

/// Parses a `listen` value.
pub fn parse_metrics_listen(value: &str) -> Result<MetricsListen, String> {
    if value.is_empty() {
        return Ok(MetricsListen::Off);
    }
    if let Some(path) = value.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "invalid value {value:?}: a UNIX socket path must be absolute (\"unix:/run/mailhop/metrics.sock\")"
            ));
        }
        // sockaddr_un holds 108 bytes with the terminating NUL.
        if path.len() > 107 || path.contains('\0') {
            return Err(format!(
                "invalid value {value:?}: a UNIX socket path has at most 107 bytes and no NUL"
            ));
        }
        return Ok(MetricsListen::Unix(PathBuf::from(path)));
    }
    value
        .parse::<SocketAddr>()
        .map(MetricsListen::Tcp)
        .map_err(|_| {
            format!(
                "invalid value {value:?}, expected \"\" (off), an address and port \
             (\"127.0.0.1:9325\", \"[::1]:9325\") or \"unix:/absolute/path\""
            )
        })
}

pub(super) fn check_metrics_listen(value: &str) -> Result<(), Invalid> {
    parse_metrics_listen(value)
        .map(|_| ())
        .map_err(Invalid::from)
}

pub(super) fn check_label_limit(value: &usize) -> Result<(), Invalid> {
    if *value > MAX_DESTINATION_LABELS {
        return Err(
            format!("invalid value {value}, expected 0 to {MAX_DESTINATION_LABELS}").into(),
        );
    }
    Ok(())
}

impl MetricsConfig {
    /// The endpoint's address; [`MetricsListen::Off`] for a value that
    /// does not parse (a checked configuration has none).
    pub fn listen_addr(&self) -> MetricsListen {
        parse_metrics_listen(&self.listen).unwrap_or(MetricsListen::Off)
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
