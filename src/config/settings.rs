//! The typed settings built from the raw tables, once per configuration (at
//! start and on SIGHUP): [`Settings`] with the per-protocol settings (the
//! `[lmtp]` keys that fall back to `[smtp]`), the enums of the keys that
//! take one of a few words ([`LogFormat`], [`DnsSupport`],
//! [`AddressPreference`], [`InetProtocols`]), `$myhostname` and the parsed
//! address values.  Nothing at delivery time compares or parses a
//! configuration string.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use super::Config;
use super::checks::{
    one_of, parse_bind_address, parse_bind_address6, parse_inet_protocols, parse_nameserver,
    valid_hostname,
};
use super::error::{ConfigError, Invalid};
use super::shaping::ShapingSettings;
use super::tables::{DnsConfig, SmtpConfig};

/// The typed settings of one configuration, see [`Config::settings`].
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `[smtp]`: `config.protocol(false)`.
    pub smtp: ProtocolSettings,
    /// `[lmtp]` over `[smtp]`: `config.protocol(true)`.
    pub lmtp: ProtocolSettings,
    /// `smtp.relayhost`; `None` when empty.
    pub relayhost: Option<String>,
    /// `dns.inet_protocols`.
    pub inet_protocols: InetProtocols,
    /// `dns.address_preference`.
    pub address_preference: AddressPreference,
    /// `dns.support`.
    pub dns_support: DnsSupport,
    /// `log.format`.
    pub log_format: LogFormat,
    /// `dns.nameservers`; empty: /etc/resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// `dns.trusted_resolvers`: whose AD bit is believed.
    pub trusted_resolvers: Vec<super::IpNetwork>,
    /// `[shaping]`.
    pub shaping: ShapingSettings,
}

impl Settings {
    /// The settings of the protocol: LMTP (`lmtp == true`) or SMTP.
    pub fn protocol(&self, lmtp: bool) -> &ProtocolSettings {
        if lmtp { &self.lmtp } else { &self.smtp }
    }
}

/// `log.format`: how the daemon logs each recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One Postfix-style line per recipient.
    #[default]
    Text,
    /// One JSON object per recipient.
    Json,
}

/// `dns.support` (Postfix `smtp_dns_support_level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnsSupport {
    /// MX lookups for unbracketed domains.
    #[default]
    Enabled,
    /// No MX lookups, only A/AAAA of the destination host.
    Disabled,
    /// As `Enabled`, and answers the resolver validated (the AD bit from a
    /// trusted resolver) count as DNSSEC-secure: needed by the DANE levels.
    Dnssec,
}

/// `dns.address_preference` (Postfix `smtp_address_preference`): which
/// family goes first among servers of one MX preference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AddressPreference {
    #[default]
    Any,
    Ipv4,
    Ipv6,
}

/// The words of a key that takes one of a few, in the order the error
/// message lists them.
macro_rules! word_enum {
    ($name:ident { $($word:literal => $variant:ident),* $(,)? }) => {
        impl $name {
            /// The word as written in the file.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// The exact word; the error is the configuration's message.
            fn from_str(text: &str) -> Result<Self, String> {
                one_of(text, &[$($word),*])?;
                match text {
                    $($word => Ok($name::$variant),)*
                    _ => Err(format!("invalid value {text:?}")),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

word_enum!(LogFormat { "text" => Text, "json" => Json });
word_enum!(DnsSupport { "enabled" => Enabled, "disabled" => Disabled, "dnssec" => Dnssec });
word_enum!(AddressPreference { "any" => Any, "ipv4" => Ipv4, "ipv6" => Ipv6 });

impl FromStr for InetProtocols {
    type Err = String;

    /// "all", "ipv4", "ipv6" or a list of them; the error is the
    /// configuration's message.
    fn from_str(text: &str) -> Result<Self, String> {
        parse_inet_protocols(text).map_err(|invalid| invalid.message)
    }
}

/// Effective per-protocol settings, see [`Config::protocol`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProtocolSettings {
    /// Default TCP port.
    pub port: u16,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Fallback relays (never inherited between protocols).
    pub fallback_relay: Vec<String>,
    /// Treat a 5xx greeting as a soft error.
    pub skip_5xx_greeting: bool,
    /// Message content line length limit; 0 means none.
    pub line_length_limit: usize,
    /// Addresses tried per nexthop; 0 means no limit.
    pub mx_address_limit: u32,
    /// Sessions per nexthop; 0 means no limit.
    pub mx_session_limit: u32,
    /// Name sent in EHLO/HELO (SMTP) or LHLO (LMTP), already resolved.
    pub helo_name: String,
    /// Local IPv4 source address, if configured.
    pub bind_address: Option<Ipv4Addr>,
    /// Local IPv6 source address, if configured.
    pub bind_address6: Option<Ipv6Addr>,
    /// Defer instead of warning when binding fails.
    pub bind_address_enforce: bool,
    /// `address_health`: how long an address that failed to connect is
    /// tried last; `None` when off (Postfix's order).
    pub address_health: Option<Duration>,
    /// `happy_eyeballs`: the delay between connect attempts of a race;
    /// `None` when off (one address at a time, as Postfix).
    pub happy_eyeballs: Option<Duration>,
    /// LMTP's `assume_final` (Postfix's lmtp_assume_final); false for SMTP.
    pub assume_final: bool,
}

/// Per-protocol time limits.  `connect == Duration::ZERO` means no limit of
/// our own (the operating system's connect timeout applies); every other
/// limit is positive in a validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Greeting and EHLO/HELO/LHLO.
    pub helo: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    pub data_xfer: Duration,
    pub data_done: Duration,
    pub quit: Duration,
    pub rset: Duration,
    /// STARTTLS reply and TLS handshake (`[tls] starttls_timeout`).
    pub starttls: Duration,
    /// Each limit covers a whole request and its whole response, not each
    /// read or write (`per_request_deadline`).
    pub per_request_deadline: bool,
    /// Bytes per second that extend the DATA deadline (`min_data_rate`).
    pub min_data_rate: u32,
}

/// Address families enabled by `dns.inet_protocols`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InetProtocols {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Config {
    /// Effective settings for SMTP (`lmtp == false`) or LMTP (`lmtp ==
    /// true`).  For LMTP, unset optional `[lmtp]` keys take the `[smtp]`
    /// value; keys that `[lmtp]` does not have (address and session limits,
    /// bind addresses) always come from `[smtp]`.  The port, the connect
    /// timeout and the fallback relays are never inherited.  Bind addresses
    /// that do not parse (possible only in an unvalidated `Config`) are
    /// reported as `None`.
    pub fn protocol(&self, lmtp: bool) -> ProtocolSettings {
        let s = &self.smtp;
        let smtp = ProtocolSettings {
            port: s.port,
            timeouts: Timeouts {
                connect: s.connect_timeout,
                helo: s.helo_timeout,
                mail: s.mail_timeout,
                rcpt: s.rcpt_timeout,
                data_init: s.data_init_timeout,
                data_xfer: s.data_xfer_timeout,
                data_done: s.data_done_timeout,
                quit: s.quit_timeout,
                rset: s.rset_timeout,
                starttls: self.tls.starttls_timeout,
                per_request_deadline: s.per_request_deadline,
                min_data_rate: s.min_data_rate,
            },
            fallback_relay: s.fallback_relay.clone(),
            skip_5xx_greeting: s.skip_5xx_greeting,
            line_length_limit: s.line_length_limit,
            mx_address_limit: s.mx_address_limit,
            mx_session_limit: s.mx_session_limit,
            helo_name: self.helo_name(),
            bind_address: s.parsed_bind_address().ok().flatten(),
            bind_address6: s.parsed_bind_address6().ok().flatten(),
            bind_address_enforce: s.bind_address_enforce,
            address_health: s.address_health.then_some(s.address_health_time),
            happy_eyeballs: s.happy_eyeballs.then_some(s.happy_eyeballs_delay),
            assume_final: false,
        };
        if !lmtp {
            return smtp;
        }
        let l = &self.lmtp;
        let t = &smtp.timeouts;
        ProtocolSettings {
            port: l.port,
            timeouts: Timeouts {
                connect: l.connect_timeout,
                helo: l.lhlo_timeout.unwrap_or(t.helo),
                mail: l.mail_timeout.unwrap_or(t.mail),
                rcpt: l.rcpt_timeout.unwrap_or(t.rcpt),
                data_init: l.data_init_timeout.unwrap_or(t.data_init),
                data_xfer: l.data_xfer_timeout.unwrap_or(t.data_xfer),
                data_done: l.data_done_timeout.unwrap_or(t.data_done),
                quit: l.quit_timeout.unwrap_or(t.quit),
                rset: l.rset_timeout.unwrap_or(t.rset),
                starttls: t.starttls,
                per_request_deadline: l.per_request_deadline.unwrap_or(t.per_request_deadline),
                min_data_rate: l.min_data_rate.unwrap_or(t.min_data_rate),
            },
            fallback_relay: l.fallback_relay.clone(),
            skip_5xx_greeting: l.skip_5xx_greeting.unwrap_or(smtp.skip_5xx_greeting),
            line_length_limit: l.line_length_limit.unwrap_or(smtp.line_length_limit),
            helo_name: match &l.lhlo_name {
                Some(name) if name.is_empty() => self.myhostname(),
                Some(name) => name.clone(),
                None => smtp.helo_name.clone(),
            },
            address_health: l
                .address_health
                .unwrap_or(s.address_health)
                .then(|| l.address_health_time.unwrap_or(s.address_health_time)),
            happy_eyeballs: l
                .happy_eyeballs
                .unwrap_or(s.happy_eyeballs)
                .then(|| l.happy_eyeballs_delay.unwrap_or(s.happy_eyeballs_delay)),
            assume_final: l.assume_final,
            ..smtp
        }
    }

    /// The typed settings, built once per configuration.  A value that does
    /// not parse (possible only in a `Config` built in code and not
    /// validated) takes the behaviour delivery always gave it: all address
    /// families, preference "any", DNS support enabled, text logs, no
    /// nameserver of its own.
    pub fn settings(&self) -> Settings {
        Settings {
            smtp: self.protocol(false),
            lmtp: self.protocol(true),
            relayhost: (!self.smtp.relayhost.is_empty()).then(|| self.smtp.relayhost.clone()),
            inet_protocols: self.dns.inet_protocols.parse().unwrap_or(InetProtocols {
                ipv4: true,
                ipv6: true,
            }),
            address_preference: self.dns.address_preference.parse().unwrap_or_default(),
            dns_support: self.dns.support.parse().unwrap_or_default(),
            log_format: self.log.format.parse().unwrap_or_default(),
            nameservers: self.dns.parsed_nameservers().unwrap_or_default(),
            trusted_resolvers: self
                .dns
                .trusted_resolvers
                .iter()
                .filter_map(|entry| entry.parse().ok())
                .collect(),
            shaping: ShapingSettings::of(&self.shaping).unwrap_or_default(),
        }
    }

    /// `smtp.helo_name`, or [`Config::myhostname`] when it is empty.
    pub fn helo_name(&self) -> String {
        if self.smtp.helo_name.is_empty() {
            self.myhostname()
        } else {
            self.smtp.helo_name.clone()
        }
    }

    /// Postfix's `$myhostname`: the system host name, read once from
    /// `/proc/sys/kernel/hostname`, else `/etc/hostname`, else
    /// `"localhost"` (a file whose content is not a valid host name is
    /// skipped).  Also the name shown for UNIX-socket LMTP servers.
    pub fn myhostname(&self) -> String {
        static HOSTNAME: OnceLock<String> = OnceLock::new();
        HOSTNAME
            .get_or_init(|| {
                hostname_from_files(&[
                    Path::new("/proc/sys/kernel/hostname"),
                    Path::new("/etc/hostname"),
                ])
            })
            .clone()
    }
}

impl SmtpConfig {
    /// `bind_address` as an address: `None` when empty.
    pub fn parsed_bind_address(&self) -> Result<Option<Ipv4Addr>, ConfigError> {
        parse_bind_address(&self.bind_address)
            .map_err(|invalid| invalid.at("smtp.bind_address").into_error(None))
    }

    /// `bind_address6` as an address: `None` when empty.
    pub fn parsed_bind_address6(&self) -> Result<Option<Ipv6Addr>, ConfigError> {
        parse_bind_address6(&self.bind_address6)
            .map_err(|invalid| invalid.at("smtp.bind_address6").into_error(None))
    }
}

impl DnsConfig {
    /// `nameservers` as socket addresses (port 53 when none is given).  An
    /// empty list means: use /etc/resolv.conf.
    pub fn parsed_nameservers(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        self.nameservers
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_nameserver(entry).map_err(|message| {
                    Invalid {
                        index: Some(index),
                        message,
                    }
                    .at("dns.nameservers")
                    .into_error(None)
                })
            })
            .collect()
    }

    /// `inet_protocols` as the set of enabled address families.
    pub fn parsed_inet_protocols(&self) -> Result<InetProtocols, ConfigError> {
        parse_inet_protocols(&self.inet_protocols)
            .map_err(|invalid| invalid.at("dns.inet_protocols").into_error(None))
    }
}

/// The first file among `paths` that holds a valid host name, else
/// `"localhost"`.
pub(super) fn hostname_from_files(paths: &[&Path]) -> String {
    paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|name| valid_hostname(name))
        .unwrap_or_else(|| String::from("localhost"))
}
