//! The SASL AUTH client (Postfix's `smtp_sasl_*`, RFC 4954): which
//! mechanism to use with a server, the mechanisms themselves and the
//! per-destination password table.
//!
//! - [`SecurityOptions`]: Postfix's (Cyrus SASL's) security option words
//!   (`noplaintext`, `noanonymous`, `noactive`, `nodictionary`,
//!   `mutual_auth`) and which of our mechanisms each one excludes.
//! - [`choose`]: the server's AUTH list, narrowed by the mechanism filter
//!   (`smtp_sasl_mechanism_filter`) and the security options of the
//!   connection (plaintext, TLS, verified TLS), gives one mechanism, best
//!   first: SCRAM-SHA-256, then PLAIN, then LOGIN.
//! - [`Mechanism`] (in `mech`): PLAIN, LOGIN and SCRAM-SHA-256 (`scram`) as
//!   I/O-free state machines: an optional initial response, then one
//!   response per server challenge; a SCRAM server whose signature does not
//!   verify is a failure.
//! - [`PasswordTable`] (in `table`): the `key user:password` file of
//!   `smtp_sasl_password_maps`, looked up by server host name, then by the
//!   next-hop destination as written; the file must be owned by the
//!   daemon's user and closed to group and other.
//!
//! Nothing here does network I/O or panics on input. Errors: [`MechError`]
//! (a challenge the mechanism cannot answer; its text goes into Postfix's
//! "cannot authenticate to server" diagnostic), [`ChooseError`] (no
//! mechanism left), [`TableError`] (the password file). Passwords are never
//! part of a `Debug` form or an error text.

mod mech;
mod scram;
mod table;

pub use mech::{MechError, Mechanism};
pub use table::{Credential, PasswordTable, TableError};

/// The mechanisms mailhop implements, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ScramSha256,
    Plain,
    Login,
}

impl Kind {
    /// Every implemented mechanism, in order of preference.
    pub const ALL: [Kind; 3] = [Kind::ScramSha256, Kind::Plain, Kind::Login];

    /// The mechanism's name in the AUTH command.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ScramSha256 => "SCRAM-SHA-256",
            Kind::Plain => "PLAIN",
            Kind::Login => "LOGIN",
        }
    }

    /// Whether the mechanism sends the password itself (in base64).
    fn plaintext(self) -> bool {
        matches!(self, Kind::Plain | Kind::Login)
    }

    /// Whether the mechanism resists active attacks and authenticates the
    /// server (as Cyrus SASL flags SCRAM: noactive, mutual_auth).
    fn mutual(self) -> bool {
        matches!(self, Kind::ScramSha256)
    }
}

/// Postfix's `smtp_sasl_security_options` words. Each excludes the
/// mechanisms that lack the property; an empty list allows every
/// mechanism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Excludes mechanisms that send the password (PLAIN, LOGIN).
    pub noplaintext: bool,
    /// Excludes mechanisms open to active (non-dictionary) attacks: PLAIN,
    /// LOGIN.
    pub noactive: bool,
    /// Excludes mechanisms open to passive dictionary attacks: all three
    /// that mailhop implements.
    pub nodictionary: bool,
    /// Excludes anonymous mechanisms (mailhop implements none).
    pub noanonymous: bool,
    /// Requires mechanisms that authenticate the server: SCRAM-SHA-256.
    pub mutual_auth: bool,
}

impl SecurityOptions {
    /// The words of one option list, as Postfix spells them (case does not
    /// matter). Err names the unknown word.
    pub fn parse<S: AsRef<str>>(words: &[S]) -> Result<Self, String> {
        let mut options = SecurityOptions::default();
        for word in words {
            let word = word.as_ref();
            match word.to_ascii_lowercase().as_str() {
                "noplaintext" => options.noplaintext = true,
                "noactive" => options.noactive = true,
                "nodictionary" => options.nodictionary = true,
                "noanonymous" => options.noanonymous = true,
                "mutual_auth" => options.mutual_auth = true,
                _ => {
                    return Err(format!(
                        "unknown SASL security option \"{word}\" (expected noplaintext, \
                         noactive, nodictionary, noanonymous or mutual_auth)"
                    ));
                }
            }
        }
        Ok(options)
    }

    /// Whether a mechanism passes these options.
    pub fn allows(self, kind: Kind) -> bool {
        !(self.noplaintext && kind.plaintext()
            || self.noactive && !kind.mutual()
            || self.nodictionary
            || self.mutual_auth && !kind.mutual())
    }
}

/// Why no mechanism can be used with a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChooseError {
    /// The AUTH list is empty after the mechanism filter (Postfix: "offered
    /// no compatible authentication mechanisms for this type of connection
    /// security").
    NoneOffered,
    /// The mechanisms left are unknown to mailhop or refused by the
    /// security options (Cyrus SASL's "no mechanism available").
    NoMechanism,
}

/// The server's AUTH mechanisms that pass `filter` (Postfix's
/// `smtp_sasl_mechanism_filter`: names compared without case; empty keeps
/// all), in the server's order.
pub fn filter_offered(offered: &[String], filter: &[String]) -> Vec<String> {
    offered
        .iter()
        .filter(|m| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(m)))
        .cloned()
        .collect()
}

/// The best mechanism that the server offers (after the filter) and the
/// options allow.
pub fn choose(
    offered: &[String],
    filter: &[String],
    options: SecurityOptions,
) -> Result<Kind, ChooseError> {
    let left = filter_offered(offered, filter);
    if left.is_empty() {
        return Err(ChooseError::NoneOffered);
    }
    Kind::ALL
        .into_iter()
        .find(|kind| {
            options.allows(*kind) && left.iter().any(|m| m.eq_ignore_ascii_case(kind.name()))
        })
        .ok_or(ChooseError::NoMechanism)
}

/// Base64 (RFC 4648, with padding) of `bytes`, as AUTH exchanges it.
pub fn encode64(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    openssl::base64::encode_block(bytes)
}

/// Decodes a server challenge; `None` when it is not base64. An empty
/// text is an empty challenge.
pub fn decode64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    let body = text.trim_end_matches('=');
    if !text.len().is_multiple_of(4)
        || text.len() - body.len() > 2
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
    {
        return None;
    }
    openssl::base64::decode_block(text).ok()
}

/// A fresh client nonce for SCRAM: 18 random bytes in base64 (printable,
/// no comma). `None` when the system's random source fails.
pub fn fresh_nonce() -> Option<String> {
    let mut bytes = [0u8; 18];
    openssl::rand::rand_bytes(&mut bytes).ok()?;
    Some(encode64(&bytes))
}

/// What the SMTP client needs to authenticate to one server: the
/// credential found for it and the settings of `[sasl]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuth {
    pub credential: Credential,
    /// `smtp_sasl_mechanism_filter` (empty: every mechanism).
    pub filter: Vec<String>,
    /// `smtp_sasl_security_options`: without TLS.
    pub options: SecurityOptions,
    /// `smtp_sasl_tls_security_options`: over TLS whose server was not
    /// authenticated.
    pub tls_options: SecurityOptions,
    /// `smtp_sasl_tls_verified_security_options`: over TLS whose server
    /// certificate was verified.
    pub tls_verified_options: SecurityOptions,
    /// `smtp_sasl_auth_soft_bounce`: a 5xx AUTH reply defers (4.x.x).
    pub soft_bounce: bool,
    /// The SCRAM client nonce (fresh per session).
    pub nonce: String,
}

/// The SASL client settings of a deliverer: the password table and the
/// typed `[sasl]` values, made at start and on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    pub table: PasswordTable,
    pub filter: Vec<String>,
    pub options: SecurityOptions,
    pub tls_options: SecurityOptions,
    pub tls_verified_options: SecurityOptions,
    pub soft_bounce: bool,
}

impl Setup {
    /// What the client needs for the server `host` of `destination`, when
    /// the table has a credential for it (None: no AUTH, as Postfix "talks
    /// like strangers"). A fresh SCRAM nonce each time.
    pub fn client_auth(&self, host: &str, destination: &str) -> Option<ClientAuth> {
        let credential = self.table.lookup(host, destination)?.clone();
        Some(ClientAuth {
            credential,
            filter: self.filter.clone(),
            options: self.options,
            tls_options: self.tls_options,
            tls_verified_options: self.tls_verified_options,
            soft_bounce: self.soft_bounce,
            // Without a random source SCRAM cannot be done safely: an
            // empty nonce makes the server's check fail the exchange.
            nonce: fresh_nonce().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
