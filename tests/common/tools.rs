//! The one tool finder of the integration tests: where the external test
//! peers are (smtp-sink, dnsmasq, postfix, pflogsumm, systemd-analyze,
//! make, ...), whether we are root, and the one way a test skips.
//!
//! Contract: a missing peer prints a loud `SKIPPED:` line straight to fd 2
//! (the test harness captures `eprintln!` of passing tests) and the caller
//! returns early; under `CI=true` it panics instead, because CI must never
//! skip silently. `MAILHOP_SMTP_SINK`, `MAILHOP_DNSMASQ` and
//! `MAILHOP_POSTFIX` override the search for their tool (a path that is
//! not a file counts as "not installed").

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directories searched after PATH (a non-root PATH lacks the sbin
/// ones; Debian puts smtp-sink, postfix, dnsmasq and pflogsumm there).
const TOOL_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/local/sbin",
    "/sbin",
    "/usr/bin",
    "/usr/local/bin",
    "/bin",
];

/// True when the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when `CI=true`: nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (a loud `SKIPPED: {reason}` on fd 2) or, under `CI=true`, panics
/// with `{reason} but CI=true`.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("{reason} but CI=true");
    }
    let _ = writeln!(io::stderr(), "SKIPPED: {reason}");
}

/// Skips with a loud `SKIPPED: {reason}` even under `CI=true`: for what
/// CI is not expected to provide (journald, a root-only check).
pub fn skip_even_in_ci(reason: &str) {
    let _ = writeln!(io::stderr(), "SKIPPED: {reason}");
}

/// False (after [`skip`]) when not root.
pub fn need_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("{what} needs root"));
    false
}

/// A program: the file named by the environment variable `env` (if set;
/// not a file means "not installed"), else `name` in PATH or in the
/// sbin/bin directories.
pub fn find_tool_env(name: &str, env: Option<&str>) -> Option<PathBuf> {
    if let Some(path) = env.and_then(std::env::var_os) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let from_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    from_path
        .into_iter()
        .chain(TOOL_DIRS.iter().map(|d| Path::new(d).join(name)))
        .find(|p| p.is_file())
}

/// A program in PATH or in the sbin/bin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    find_tool_env(name, None)
}

/// The tool, or `None` after a loud SKIPPED line naming its package;
/// panics when `CI=true`.
pub fn require_tool(name: &str, package: &str) -> Option<PathBuf> {
    require(find_tool(name), name, package)
}

fn require(found: Option<PathBuf>, name: &str, package: &str) -> Option<PathBuf> {
    if found.is_none() {
        skip(&format!(
            "{name} not installed (package {package}; run scripts/install-test-deps.sh)"
        ));
    }
    found
}

/// The smtp-sink binary, if installed (`MAILHOP_SMTP_SINK` overrides).
pub fn sink_binary() -> Option<PathBuf> {
    find_tool_env("smtp-sink", Some("MAILHOP_SMTP_SINK"))
}

/// The smtp-sink binary; `None` (after a loud notice) when it is missing.
pub fn require_sink() -> Option<PathBuf> {
    require(sink_binary(), "smtp-sink", "postfix")
}

/// The dnsmasq binary, if installed (`MAILHOP_DNSMASQ` overrides).
pub fn dnsmasq_binary() -> Option<PathBuf> {
    find_tool_env("dnsmasq", Some("MAILHOP_DNSMASQ"))
}

/// The dnsmasq binary; `None` (after a loud notice) when it is missing.
pub fn require_dnsmasq() -> Option<PathBuf> {
    require(dnsmasq_binary(), "dnsmasq", "dnsmasq")
}

/// The postfix(1) command, if installed (`MAILHOP_POSTFIX` overrides).
pub fn postfix_binary() -> Option<PathBuf> {
    find_tool_env("postfix", Some("MAILHOP_POSTFIX"))
}
