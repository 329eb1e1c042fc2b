//! mailhop: an SMTP/LMTP outbound delivery agent with Postfix smtp(8)/lmtp(8)
//! semantics.
//!
//! Layers, pure first:
//! - [`dsn`], [`smtp`] (replies, commands, EHLO, the session state machine,
//!   body encoding), [`nexthop`], [`outcome`], [`recipients`], [`config`]:
//!   no I/O, table-tested.
//! - [`transport`], [`connect`], [`session`], [`deliver`]: the edges, each
//!   behind a small trait so tests can script faults.
//! - [`pool`], [`progress`], [`server`], [`daemon`], [`stats`]: the job
//!   service (`mailhop daemon`): worker pool, per-job progress and outcome
//!   lines, socket protocol, life cycle, counters; [`metrics`], its
//!   Prometheus endpoint.
//! - [`plan`] (a job's next-hop groups, keys and destinations, made once
//!   per job), [`reuse`] (session cache
//!   keys, lookup order, store rules), [`recipient_log`] (the one
//!   per-recipient log line).
//! - [`shaping`]: per-destination admission control in the daemon
//!   (concurrency feedback, rates, throttling pauses, dead destinations).
//! - [`ingress`]: the LMTP ingress (mailhop behind an MTA).
//! - [`dane`]: TLSA records and their match against a server's chain
//!   (RFC 7672; pure, not yet wired into delivery).
//! - [`cli`]: the `mailhop` command; [`status_view`], the text of
//!   `mailhop status`.

pub mod cache;
pub mod chain;
pub mod cli;
pub mod config;
pub mod connect;
pub mod daemon;
pub mod dane;
pub mod dane_policy;
pub mod deliver;
pub mod dispatch;
pub mod dns;
pub mod dsn;
pub mod feed;
pub mod fuzzing;
pub mod health;
pub mod ingress;
pub mod interfaces;
pub mod job;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod mta_sts;
pub mod mxlist;
pub mod nexthop;
pub mod outcome;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod recipient_log;
pub mod recipients;
pub mod resolve;
pub mod reuse;
pub mod sasl;
pub mod server;
pub mod session;
pub mod shaping;
pub mod smtp;
pub mod stats;
pub mod status_view;
pub mod text;
pub mod tls;
pub mod tls_memory;
pub mod tls_policy;
pub mod tlsrpt;
pub mod transport;
