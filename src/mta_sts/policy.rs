//! The MTA-STS policy file (RFC 8461 section 3.2) and its MX patterns
//! (section 4.1): from the bytes served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` to a [`StsPolicy`],
//! and whether an MX host name matches it.
//!
//! Pure: no I/O. The file is lines of `key: value` ended by LF or CRLF;
//! `version: STSv1`, `mode` (`enforce`, `testing` or `none`) and `max_age`
//! are required, `mx` (one pattern per line, at least one unless the mode
//! is `none`) may repeat, unknown keys are ignored, a repeated single key
//! keeps its first value, empty lines are tolerated. `max_age` above
//! [`MAX_AGE_LIMIT`] (one year) is cut to it. An MX pattern is a host name
//! or `*.` and a domain; the wildcard stands for exactly one left-most
//! label; matching ignores case and a trailing dot.
//!
//! Error contract: [`parse_policy`] never panics (it is a fuzz target);
//! every reason a file is refused is an [`MtaStsError::Policy`] naming the
//! line.

use serde::{Deserialize, Serialize};

use super::MtaStsError;

/// The largest `max_age` (RFC 8461: 31557600 seconds, about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deliver only to matching MX hosts over authenticated TLS.
    Enforce,
    /// Report what enforce would refuse, deliver as without a policy.
    Testing,
    /// The domain withdrew its policy.
    None,
}

impl Mode {
    /// The word of the policy file and of logs.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// One `mx:` pattern: a host name, or `*.` and a domain; lower case,
/// without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MxPattern(String);

impl MxPattern {
    /// Parses one pattern (case and a trailing dot are normalised).
    pub fn parse(text: &str) -> Result<Self, MtaStsError> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let domain = lower.strip_prefix("*.").unwrap_or(&lower);
        if !is_domain(domain) {
            return Err(MtaStsError::Policy(format!("invalid mx pattern {text:?}")));
        }
        Ok(MxPattern(lower))
    }

    /// The pattern as normalised.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the MX host `host` matches: equal to the pattern, or, for
    /// `*.domain`, one label (not empty, no dot) followed by `.domain`.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        match self.0.strip_prefix("*.") {
            Some(domain) => host.split_once('.').is_some_and(|(label, rest)| {
                !label.is_empty() && rest.eq_ignore_ascii_case(domain)
            }),
            None => host.eq_ignore_ascii_case(&self.0),
        }
    }
}

impl TryFrom<String> for MxPattern {
    type Error = MtaStsError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        MxPattern::parse(&text)
    }
}

impl From<MxPattern> for String {
    fn from(pattern: MxPattern) -> Self {
        pattern.0
    }
}

/// Letters, digits and inner hyphens in labels of 1 to 63 bytes, at
/// least two labels (RFC 5321 Domain; a pattern for a TLD is refused).
fn is_domain(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A parsed policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsPolicy {
    pub mode: Mode,
    /// The `mx` patterns in file order.
    pub mx: Vec<MxPattern>,
    /// Seconds the policy may be cached (at most [`MAX_AGE_LIMIT`]).
    pub max_age: u64,
}

impl StsPolicy {
    /// Whether the MX host `host` matches one of the patterns.
    pub fn matches(&self, host: &str) -> bool {
        self.mx.iter().any(|pattern| pattern.matches(host))
    }
}

/// Parses a policy file's bytes (UTF-8; LF or CRLF line ends).
pub fn parse_policy(bytes: &[u8]) -> Result<StsPolicy, MtaStsError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| MtaStsError::Policy("the policy is not UTF-8 text".into()))?;
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_matches([' ', '\t']).is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(MtaStsError::Policy(format!("line {number}: no ':'")));
        };
        let value = value.trim_matches([' ', '\t']);
        match key {
            "version" if version.is_none() => version = Some(value),
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => {
                        return Err(MtaStsError::Policy(format!(
                            "line {number}: unknown mode {other:?}"
                        )));
                    }
                });
            }
            "max_age" if max_age.is_none() => {
                if value.is_empty()
                    || value.len() > 10
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(MtaStsError::Policy(format!(
                        "line {number}: max_age {value:?} is not 1 to 10 digits"
                    )));
                }
                let seconds: u64 = value.parse().map_err(|_| {
                    MtaStsError::Policy(format!("line {number}: invalid max_age {value:?}"))
                })?;
                max_age = Some(seconds.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(
                MxPattern::parse(value)
                    .map_err(|e| MtaStsError::Policy(format!("line {number}: {e}")))?,
            ),
            // Unknown keys, and the repeats of single keys.
            _ => {}
        }
    }
    match version {
        Some("STSv1") => {}
        Some(other) => {
            return Err(MtaStsError::Policy(format!(
                "version {other:?}, expected STSv1"
            )));
        }
        None => return Err(MtaStsError::Policy("no version".into())),
    }
    let mode = mode.ok_or_else(|| MtaStsError::Policy("no mode".into()))?;
    let max_age = max_age.ok_or_else(|| MtaStsError::Policy("no max_age".into()))?;
    if mx.is_empty() && mode != Mode::None {
        return Err(MtaStsError::Policy(format!(
            "mode {} without any mx pattern",
            mode.name()
        )));
    }
    Ok(StsPolicy { mode, mx, max_age })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
