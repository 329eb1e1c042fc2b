//! The client side of PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login)
//! and SCRAM-SHA-256 (RFC 7677, on `scram`) as I/O-free state machines:
//! [`Mechanism::initial_response`] once, then [`Mechanism::respond`] for
//! each server challenge (decoded from base64 by the caller), then
//! [`Mechanism::finish`] when the server says 235.
//!
//! Errors: a [`MechError`] whose text names what was wrong with the
//! server's challenge (never the password); the caller fails the session.

use super::Kind;
use super::scram::{Scram, ScramError};

/// A challenge the mechanism cannot answer, or a success it cannot accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MechError(pub String);

impl std::fmt::Display for MechError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ScramError> for MechError {
    fn from(e: ScramError) -> Self {
        MechError(e.to_string())
    }
}

/// One authentication in progress.
pub enum Mechanism {
    Plain {
        username: String,
        password: String,
        sent: bool,
    },
    Login {
        username: String,
        password: String,
        /// Challenges answered so far.
        answered: u8,
    },
    Scram(Box<Scram>),
}

impl std::fmt::Debug for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind().name())
    }
}

impl Mechanism {
    /// Starts `kind` for this user; `nonce` is SCRAM's client nonce
    /// (printable, no comma).
    pub fn start(kind: Kind, username: &str, password: &str, nonce: &str) -> Self {
        match kind {
            Kind::Plain => Mechanism::Plain {
                username: username.into(),
                password: password.into(),
                sent: false,
            },
            Kind::Login => Mechanism::Login {
                username: username.into(),
                password: password.into(),
                answered: 0,
            },
            Kind::ScramSha256 => Mechanism::Scram(Box::new(Scram::new(username, password, nonce))),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Mechanism::Plain { .. } => Kind::Plain,
            Mechanism::Login { .. } => Kind::Login,
            Mechanism::Scram(_) => Kind::ScramSha256,
        }
    }

    /// The initial response sent with the AUTH command (raw bytes), if the
    /// mechanism has one: PLAIN and SCRAM do, LOGIN waits for "Username:".
    pub fn initial_response(&mut self) -> Option<Vec<u8>> {
        match self {
            Mechanism::Plain {
                username,
                password,
                sent,
            } => {
                *sent = true;
                Some(plain_message(username, password))
            }
            Mechanism::Login { .. } => None,
            Mechanism::Scram(scram) => Some(scram.client_first().into_bytes()),
        }
    }

    /// The response to one server challenge (raw bytes).
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, MechError> {
        match self {
            Mechanism::Plain {
                username,
                password,
                sent,
            } => {
                // An empty challenge asks for the initial response that
                // was not sent with AUTH; anything else is a protocol error.
                if !*sent && challenge.is_empty() {
                    *sent = true;
                    return Ok(plain_message(username, password));
                }
                Err(MechError("unexpected PLAIN challenge".into()))
            }
            Mechanism::Login {
                username,
                password,
                answered,
            } => {
                // As Cyrus SASL: the first challenge ("Username:") gets
                // the user name, the second ("Password:") the password,
                // whatever their text.
                *answered = answered.saturating_add(1);
                match *answered {
                    1 => Ok(username.as_bytes().to_vec()),
                    2 => Ok(password.as_bytes().to_vec()),
                    _ => Err(MechError("unexpected LOGIN challenge".into())),
                }
            }
            Mechanism::Scram(scram) => Ok(scram.respond(challenge)?),
        }
    }

    /// The server said the authentication succeeded: a SCRAM exchange must
    /// have verified the server's signature by now.
    pub fn finish(&self) -> Result<(), MechError> {
        match self {
            Mechanism::Scram(scram) if !scram.verified() => Err(MechError(
                "server reported success without a verified SCRAM server signature".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// PLAIN's message: empty authorization identity, NUL, user, NUL, password.
fn plain_message(username: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(username.len() + password.len() + 2);
    out.push(0);
    out.extend_from_slice(username.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
#[path = "mech_tests.rs"]
mod tests;
