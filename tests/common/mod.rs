//! The one harness of the integration tests (each `tests/*.rs` includes it
//! with `mod common;`), one file per concern:
//!
//! - [`tools`]: finding test peers (smtp-sink, dnsmasq, postfix, ...),
//!   `is_root`, and the one way to skip (loud; a panic under `CI=true`);
//! - [`run`]: running `mailhop send --direct` ([`Delivery`],
//!   [`run_mailhop`]) and parsing its results ([`Run`], [`Line`]);
//! - [`sink`]: real `smtp-sink` peers ([`Sink`]) and a refusing port
//!   ([`ClosedPort`]);
//! - [`scripted_server`]: the in-process scripted SMTP/LMTP server
//!   ([`Server`], [`Behaviour`], [`smtp_server`]);
//! - [`daemon`]: a `mailhop daemon` guard ([`daemon::Daemon`]) and a
//!   job-protocol client ([`daemon::Client`]);
//! - [`transport`]: the library's in-process scripted transport behind a
//!   connector ([`transport::ScriptedNet`]), for deliveries without sockets;
//! - [`jobs`]: job builders (JSON lines and [`mailhop::job::Job`]s);
//! - [`dnsmasq`], [`postfix`], [`certs`]: throwaway name servers, a private
//!   Postfix instance and a test PKI;
//! - [`https`]: an in-process HTTPS server (OpenSSL, the test PKI) serving
//!   one settable reply, e.g. an MTA-STS policy;
//! - [`postfix_relay`]: a private Postfix whose smtp(8) relays held,
//!   released mail to a next hop (the reference for content conversion);
//! - [`postfix_front`]: a private Postfix in front of mailhop, delivering
//!   over LMTP to mailhop's ingress socket;
//! - [`dnssec_lab`]: nsd with a signed and an unsigned zone behind a
//!   validating unbound (the DANE tests' DNS).
//!
//! Contract: everything here is bounded in count and time. Every server a
//! test starts is owned by a guard whose `Drop` stops it (processes are
//! killed and reaped, server threads are joined), so a failing test leaves
//! nothing running. Every test has its own ports and directories, so tests
//! run in parallel safely.

// Each test crate uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod counting_sink;
pub mod daemon;
pub mod dnsmasq;
pub mod dnssec_lab;
pub mod dovecot;
pub mod https;
pub mod jobs;
pub mod postfix;
pub mod postfix_front;
pub mod postfix_relay;
pub mod redis;
pub mod run;
pub mod scripted_server;
pub mod sink;
pub mod starttls;
pub mod tools;
pub mod transport;

use std::fs;
use std::net::TcpListener;

pub use run::*;
pub use scripted_server::*;
pub use sink::*;
pub use tools::*;

/// How a loopback peer is named in diagnostics.
pub const PEER: &str = "127.0.0.1[127.0.0.1]";

/// The `relay=` value for a TCP peer on loopback.
pub fn relay(port: u16) -> String {
    format!("{PEER}:{port}")
}

/// A `[127.0.0.1]:port` destination.
pub fn nexthop(port: u16) -> String {
    format!("[127.0.0.1]:{port}")
}

/// The machine's host name, as mailhop uses it for `$myhostname`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .expect("read /proc/sys/kernel/hostname")
}

/// The EHLO command mailhop sends (`EHLO $myhostname`).
pub fn ehlo() -> String {
    format!("EHLO {}", hostname())
}

/// A server reply as a result line's diagnostic quotes it.
pub fn said(reply: &str, command: &str) -> String {
    format!("host {PEER} said: {reply} (in reply to {command} command)")
}

/// A port nobody listens on right now (bound, read, dropped).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
