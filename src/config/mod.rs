//! Configuration of mailhop: the `[smtp]`, `[lmtp]`, `[dns]`, `[tls]`,
//! `[daemon]`, `[cache]`, `[log]`, `[shaping]`, `[metrics]`, `[tls_rpt]`, `[mta_sts]` and `[sasl]` tables of the TOML configuration file,
//! their defaults, their validation and the typed settings built from them.
//!
//! This module owns every configuration key, its default value and its
//! documentation.  Each key keeps the meaning and the default of the Postfix
//! parameter it mirrors (named in the field's documentation).  All of that is
//! declared once, in the `config_table!` invocations of `tables.rs`: the
//! field, its default, the Postfix parameter and an optional value check.
//! The structs, their `Default` impls, [`Config::defaults_toml`] (and so
//! `conf/mailhop.toml`), [`Config::man_page`] (mailhop.toml(5)) and the
//! validation are generated from it, so adding a key is one line plus its
//! documentation.
//!
//! Configuration comes in two stages: the TOML text is parsed and checked
//! into the raw tables ([`Config`]), then built once, at start and on SIGHUP,
//! into typed [`Settings`] (enums for the keys that take one of a few words,
//! parsed addresses and relays) and the TLS policies
//! ([`crate::tls_policy::Policies`]).  Delivery reads only typed values.
//!
//! Durations are TOML strings made of an unsigned integer and a unit: `ms`,
//! `s`, `m`, `h`, `d` or `w` (`"30s"`, `"5m"`, `"0s"`).  They are written back
//! as whole seconds (`"300s"`) or, below a second, milliseconds (`"250ms"`).
//!
//! # Error contract
//!
//! Nothing here panics on input.  [`Config::from_toml_str`] and
//! [`Config::load`] return the first problem found as a [`ConfigError`]:
//! TOML syntax errors, unknown keys (every table denies unknown fields),
//! wrong types, out-of-range numbers and semantically invalid values (port
//! 0, unknown TLS level, malformed addresses, ...).  The error names the
//! dotted key (`smtp.port`) and the 1-based line whenever they can be
//! determined; its `Display` form is `line N: key: message`, with absent
//! parts left out.  [`Config::load`] errors that come from reading the file
//! name the path in the message; parse errors do not, so callers should
//! prefix the path they loaded.  A `Config` built in code can be checked
//! with [`Config::validate`]; the accessors that parse a string value return
//! a `Result` for the same reason, and [`Config::settings`] gives such a
//! value the behaviour delivery always gave it.
//!
//! # Layout
//!
//! - `tables`: the raw tables (the serde structs of the TOML file), their
//!   keys, defaults and per-key checks, declared once with `config_table!`;
//! - `duration`: duration strings (parse, format, serde helpers);
//! - `error`: [`ConfigError`] and locating a problem's key and line;
//! - `checks`: the value checks and parsers of single keys, and the one
//!   list splitter;
//! - `tls`: the grammar of the `[tls]` values (levels, match rules,
//!   fingerprints, protocols), shared by the checks and the TLS policy;
//! - `document`: the documents written from the key table: the defaults
//!   (`conf/mailhop.toml`) and the man page (`docs/man/mailhop.toml.5`);
//! - `settings`: the typed settings built from the tables;
//! - `shaping`: the grammar and typed form of the `[shaping]` values;
//! - `metrics`: the grammar and typed form of the `[metrics]` values.

mod checks;
mod document;
mod duration;
mod error;
mod ingress;
mod metrics;
mod network;
mod settings;
mod shaping;
mod tables;
mod tls;

use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use ingress::{
    IngressEntry, IngressListen, IngressListener, IngressTransport, parse_ingress_listen,
};
pub use metrics::{MAX_DESTINATION_LABELS, MetricsListen, parse_metrics_listen};
pub use network::IpNetwork;
pub use settings::{
    AddressPreference, DnsSupport, InetProtocols, LogFormat, ProtocolSettings, Settings, Timeouts,
};
pub use shaping::{
    DestinationShape, Feedback, Rate, ShapingSettings, ThrottleRule, builtin_throttle_rules,
    parse_feedback, parse_rate,
};
pub use tables::{
    CacheConfig, DaemonConfig, DestinationShapeEntry, DnsConfig, FeedConfig, LmtpConfig, LogConfig,
    MetricsConfig, MtaStsConfig, SaslConfig, ShapingConfig, SmtpConfig, ThrottleRuleEntry,
    TlsConfig, TlsPolicyEntry, TlsRptConfig,
};
pub use tls::{
    Digest, InsecureMxPolicy, Level, MatchRule, PolicyError, SecurityLevel, ServerName, TlsVersion,
    parse_fingerprint, parse_match_rules, parse_protocols,
};

use error::{Invalid, Problem, check_table_types, toml_error};

/// The whole configuration file.  Every table and every key is optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[smtp]`: the SMTP client.
    pub smtp: SmtpConfig,
    /// `[lmtp]`: the LMTP client.
    pub lmtp: LmtpConfig,
    /// `[dns]`: address lookups.
    pub dns: DnsConfig,
    /// `[tls]`: TLS policy.
    pub tls: TlsConfig,
    /// `[daemon]`: the job service.
    pub daemon: DaemonConfig,
    /// `[cache]`: the connection cache.
    pub cache: CacheConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[shaping]`: per-destination admission control.
    pub shaping: ShapingConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[tls_rpt]`: TLS reporting (RFC 8460).
    pub tls_rpt: TlsRptConfig,
    /// `[mta_sts]`: MTA-STS policies (RFC 8461).
    pub mta_sts: MtaStsConfig,
    /// `[sasl]`: SASL authentication to servers.
    pub sasl: SaslConfig,
    /// `[feed]`: jobs from Redis Streams.
    pub feed: FeedConfig,
    /// `[[ingress]]`: LMTP listeners taking mail from an MTA.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressEntry>,
}

impl Config {
    /// Parses and validates a configuration from TOML text.  An empty text
    /// gives [`Config::default`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let (doc, errors) = DeTable::parse_recoverable(text);
        let doc = doc.get_ref();
        if let Some(err) = errors.first() {
            return Err(toml_error(text, doc, err));
        }
        check_table_types(text, doc)?;
        let config: Config = toml::from_str(text).map_err(|err| toml_error(text, doc, &err))?;
        config
            .check()
            .map_err(|problem| problem.into_error(Some((text, doc))))?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.  A
    /// missing or unreadable file is an error naming the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            line: None,
            key: None,
            message: format!("cannot read configuration file {}: {err}", path.display()),
        })?;
        Config::from_toml_str(&text)
    }

    /// The `[[ingress]]` listeners, typed (the configuration was checked).
    pub fn ingress_listeners(&self) -> Vec<IngressListener> {
        self.ingress
            .iter()
            .filter_map(|entry| entry.listener().ok())
            .collect()
    }

    /// Checks the semantic rules (port ranges, timeouts, address syntax, ...)
    /// of a configuration built in code.  Errors name the key; they have no
    /// line since there is no text.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|problem| problem.into_error(None))
    }

    /// All semantic checks, in file order.
    fn check(&self) -> Result<(), Problem> {
        self.smtp.check_keys()?;
        self.lmtp.check_keys()?;
        self.dns.check_keys()?;
        self.tls.check_keys()?;
        self.daemon.check_keys()?;
        self.cache.check_keys()?;
        self.log.check_keys()?;
        self.shaping.check_keys()?;
        self.metrics.check_keys()?;
        self.tls_rpt.check_keys()?;
        self.mta_sts.check_keys()?;
        self.sasl.check_keys()?;
        self.feed.check_keys()?;
        if self.sasl.auth_enable && self.sasl.password_maps.is_empty() {
            return Err(Invalid::from(String::from(
                "auth_enable is true: specify a password table with sasl.password_maps",
            ))
            .at("sasl.password_maps"));
        }
        ingress::check_ingress(&self.ingress).map_err(|invalid| invalid.at("ingress"))?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
