//! SCRAM-SHA-256 client (RFC 5802, RFC 7677) on OpenSSL's PBKDF2, HMAC and
//! SHA-256, without channel binding (gs2 header "n,,"):
//!
//! ```text
//! client-first  n,,n=USER,r=CNONCE
//! server-first  r=CNONCE+SNONCE,s=SALT,i=ITERATIONS   (checked)
//! client-final  c=biws,r=CNONCE+SNONCE,p=PROOF
//! server-final  v=SIGNATURE                          (verified) | e=ERROR
//! then          "" (empty response), server says 235
//! ```
//!
//! Errors: [`ScramError`] for a message out of order, malformed, with a
//! nonce that does not extend ours, an iteration count outside
//! 1..=[`MAX_ITERATIONS`], a server error (`e=`), or a server signature
//! that does not match (the server does not know the password: it is not
//! the one we meant to talk to). The user name is escaped as RFC 5802
//! says; the password is prepared with SASLprep (RFC 4013), as RFC 5802
//! section 5.1 asks, and used as given when SASLprep refuses it (a
//! prohibited or unassigned character: the server may still know it so).

use openssl::hash::{MessageDigest, hash};
use openssl::memcmp;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use super::{decode64, encode64};

/// Most PBKDF2 iterations a server may ask for (a bound on the work a
/// hostile server can make us do; RFC 7677 asks for at least 4096).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// gs2 header: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScramError {
    /// A challenge arrived when none was expected.
    OutOfOrder,
    Malformed(&'static str),
    /// The server's nonce does not start with ours.
    Nonce,
    Iterations(u32),
    /// The server ended the exchange with `e=...`.
    Server(String),
    /// The server's signature is wrong.
    Signature,
    /// OpenSSL failed.
    Crypto(String),
}

impl std::fmt::Display for ScramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScramError::OutOfOrder => f.write_str("unexpected SCRAM-SHA-256 challenge"),
            ScramError::Malformed(what) => write!(f, "malformed SCRAM-SHA-256 {what}"),
            ScramError::Nonce => f.write_str("SCRAM-SHA-256 server nonce does not extend ours"),
            ScramError::Iterations(n) => {
                write!(f, "SCRAM-SHA-256 iteration count {n} out of range")
            }
            ScramError::Server(e) => write!(f, "SCRAM-SHA-256 server error: {e}"),
            ScramError::Signature => f.write_str("SCRAM-SHA-256 server signature mismatch"),
            ScramError::Crypto(e) => write!(f, "SCRAM-SHA-256 crypto failure: {e}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    SentFirst,
    SentFinal,
    Verified,
    Done,
}

/// One SCRAM-SHA-256 exchange.
pub struct Scram {
    username: String,
    password: String,
    nonce: String,
    state: State,
    client_first_bare: String,
    server_signature: Vec<u8>,
    /// The server's signature matched.
    verified: bool,
}

impl Scram {
    pub fn new(username: &str, password: &str, nonce: &str) -> Self {
        Self {
            username: username.into(),
            password: stringprep::saslprep(password)
                .map_or_else(|_| password.to_string(), |prepared| prepared.into_owned()),
            nonce: nonce.into(),
            state: State::Start,
            client_first_bare: String::new(),
            server_signature: Vec::new(),
            verified: false,
        }
    }

    /// The client-first message.
    pub fn client_first(&mut self) -> String {
        self.client_first_bare = format!("n={},r={}", escape_name(&self.username), self.nonce);
        self.state = State::SentFirst;
        format!("{GS2_HEADER}{}", self.client_first_bare)
    }

    /// The server's signature was checked.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The answer to a server message.
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, ScramError> {
        match self.state {
            State::Start if challenge.is_empty() => Ok(self.client_first().into_bytes()),
            State::SentFirst => self.client_final(challenge).map(String::into_bytes),
            State::SentFinal => {
                self.check_server_final(challenge)?;
                self.state = State::Verified;
                self.verified = true;
                Ok(Vec::new())
            }
            _ => {
                self.state = State::Done;
                Err(ScramError::OutOfOrder)
            }
        }
    }

    fn client_final(&mut self, challenge: &[u8]) -> Result<String, ScramError> {
        let server_first =
            std::str::from_utf8(challenge).map_err(|_| ScramError::Malformed("server-first"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for (i, attr) in server_first.split(',').enumerate() {
            let (name, value) = attr
                .split_once('=')
                .ok_or(ScramError::Malformed("server-first"))?;
            match (i, name) {
                (0, "m") => {
                    return Err(ScramError::Malformed("server-first (mandatory extension)"));
                }
                (0, "r") => nonce = Some(value),
                (1, "s") => salt = Some(value),
                (2, "i") => iterations = Some(value),
                (0..=2, _) => return Err(ScramError::Malformed("server-first")),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ScramError::Malformed("server-first"));
        };
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Nonce);
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed("server nonce"));
        }
        let salt = decode64(salt)
            .filter(|s| !s.is_empty())
            .ok_or(ScramError::Malformed("salt"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(ScramError::Iterations(iterations));
        }
        let salted = salted_password(self.password.as_bytes(), &salt, iterations)?;
        let client_key = hmac(&salted, b"Client Key")?;
        let stored_key = sha256(&client_key)?;
        let without_proof = format!("c={},r={nonce}", encode64(GS2_HEADER.as_bytes()));
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes())?;
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(&salted, b"Server Key")?;
        self.server_signature = hmac(&server_key, auth_message.as_bytes())?;
        self.state = State::SentFinal;
        Ok(format!("{without_proof},p={}", encode64(&proof)))
    }

    fn check_server_final(&mut self, challenge: &[u8]) -> Result<(), ScramError> {
        self.state = State::Done;
        let text =
            std::str::from_utf8(challenge).map_err(|_| ScramError::Malformed("server-final"))?;
        let first = text.split(',').next().unwrap_or("");
        if let Some(error) = first.strip_prefix("e=") {
            let shown: String = error
                .chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect();
            return Err(ScramError::Server(shown));
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(decode64)
            .ok_or(ScramError::Malformed("server-final"))?;
        if signature.len() != self.server_signature.len()
            || !memcmp::eq(&signature, &self.server_signature)
        {
            return Err(ScramError::Signature);
        }
        Ok(())
    }
}

/// RFC 5802's saslname: "=" as "=3D", "," as "=2C".
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Result<Vec<u8>, ScramError> {
    let mut out = vec![0u8; 32];
    let rounds = usize::try_from(iterations).map_err(|e| ScramError::Crypto(e.to_string()))?;
    openssl::pkcs5::pbkdf2_hmac(password, salt, rounds, MessageDigest::sha256(), &mut out)
        .map_err(|e| ScramError::Crypto(e.to_string()))?;
    Ok(out)
}

fn hmac(key: &[u8], data: &[u8]) -> Result<Vec<u8>, ScramError> {
    let crypto = |e: openssl::error::ErrorStack| ScramError::Crypto(e.to_string());
    let key = PKey::hmac(key).map_err(crypto)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key).map_err(crypto)?;
    signer.update(data).map_err(crypto)?;
    signer.sign_to_vec().map_err(crypto)
}

fn sha256(data: &[u8]) -> Result<Vec<u8>, ScramError> {
    hash(MessageDigest::sha256(), data)
        .map(|d| d.to_vec())
        .map_err(|e| ScramError::Crypto(e.to_string()))
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
