//! The grammar of the `[shaping]` values and their typed form
//! ([`ShapingSettings`]): concurrency feedback ("1/concurrency"), rates
//! ("200/s"), throttle rules and per-destination entries. Parsed once per
//! configuration; the scheduler ([`crate::shaping`]) reads only these.

use std::time::Duration;

use super::error::Invalid;
use super::tables::{DestinationShapeEntry, ShapingConfig, ThrottleRuleEntry};

/// A concurrency feedback value (qmgr_feedback.c): a fixed amount, or
/// one divided by the window or by its square root.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Feedback {
    Fixed(f64),
    PerWindow,
    PerSqrtWindow,
}

impl Feedback {
    /// The feedback for a destination whose window is `window` (at least 1).
    pub fn value(self, window: f64) -> f64 {
        let window = window.max(1.0);
        match self {
            Feedback::Fixed(value) => value,
            Feedback::PerWindow => 1.0 / window,
            Feedback::PerSqrtWindow => 1.0 / window.sqrt(),
        }
    }
}

/// "1/concurrency", "1/sqrt_concurrency" or a number from 0 to 1.
pub fn parse_feedback(text: &str) -> Result<Feedback, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match compact.as_str() {
        "1/concurrency" => return Ok(Feedback::PerWindow),
        "1/sqrt_concurrency" => return Ok(Feedback::PerSqrtWindow),
        _ => {}
    }
    let value = match compact.split_once('/') {
        Some((num, den)) => {
            let num: f64 = num.parse().map_err(|_| bad_feedback(text))?;
            let den: f64 = den.parse().map_err(|_| bad_feedback(text))?;
            if den <= 0.0 {
                return Err(bad_feedback(text));
            }
            num / den
        }
        None => compact.parse().map_err(|_| bad_feedback(text))?,
    };
    if !(0.0..=1.0).contains(&value) || !value.is_finite() {
        return Err(bad_feedback(text));
    }
    Ok(Feedback::Fixed(value))
}

fn bad_feedback(text: &str) -> String {
    format!(
        "invalid value {text:?}, expected \"1/concurrency\", \"1/sqrt_concurrency\" or a number from 0 to 1"
    )
}

/// A message rate: `count` deliveries per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The time between two deliveries at this rate (GCRA's emission
    /// interval).
    pub fn interval(self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// "200/s", "3000/min", "50000/h" (also "sec", "second", "m", "minute",
/// "hour"); "" is no rate.
pub fn parse_rate(text: &str) -> Result<Option<Rate>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || {
        format!(
            "invalid value {text:?}, expected a rate such as \"200/s\", \"3000/min\" or \"50000/h\""
        )
    };
    let (count, unit) = text.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok(Some(Rate { count, per }))
}

/// A rule saying which replies mean "slow down": every part given must
/// match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThrottleRule {
    /// "421"; empty: any.
    pub reply_code: String,
    /// An enhanced status code or its prefix; empty: any.
    pub dsn: String,
    /// Lowercase text the reply must contain; empty: any.
    pub text: String,
}

impl ThrottleRule {
    fn of(entry: &ThrottleRuleEntry) -> Result<Self, String> {
        let code = entry.reply_code.trim();
        if !code.is_empty()
            && (code.len() != 3
                || !code.bytes().all(|b| b.is_ascii_digit())
                || !code.starts_with('4'))
        {
            return Err(format!(
                "invalid reply_code {code:?}, expected a three-digit 4xx code such as \"421\""
            ));
        }
        let dsn = entry.dsn.trim();
        if !dsn.is_empty()
            && (!dsn.starts_with("4.") || !dsn.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        {
            return Err(format!(
                "invalid dsn {dsn:?}, expected a 4.x.x status code or a prefix such as \"4.7.\""
            ));
        }
        if code.is_empty() && dsn.is_empty() && entry.text.trim().is_empty() {
            return Err(String::from(
                "a throttle rule needs at least one of reply_code, dsn and text",
            ));
        }
        Ok(Self {
            reply_code: code.to_string(),
            dsn: dsn.to_string(),
            text: entry.text.trim().to_ascii_lowercase(),
        })
    }

    /// A built-in rule.
    fn builtin(reply_code: &str, dsn: &str, text: &str) -> Self {
        Self {
            reply_code: reply_code.into(),
            dsn: dsn.into(),
            text: text.to_ascii_lowercase(),
        }
    }
}

/// The built-in throttle rules: the documented throttling replies of the
/// large providers and the usual texts of connection and rate limits. A
/// 4xx reply is needed for each (a 5xx is never a throttle). A bare 421
/// is not one by itself: servers also send it when they shut down or time
/// out (4.3.x, 4.4.x), which Postfix treats as a site failure.
pub fn builtin_throttle_rules() -> Vec<ThrottleRule> {
    vec![
        // 421 with a policy code (RFC 3463 4.7.x): "421 4.7.0 Too many
        // connections", Gmail's "421 4.7.0 Try again later, closing
        // connection", "421 4.7.28 ... unusual rate of unsolicited mail".
        ThrottleRule::builtin("421", "4.7.", ""),
        // Yahoo/AOL: "421 4.7.0 [TSS04] Messages from ... temporarily
        // deferred due to unexpected volume or user complaints".
        ThrottleRule::builtin("", "", "[ts0"),
        ThrottleRule::builtin("", "", "[tss0"),
        // Gmail: "450 4.2.1 The user you are trying to contact is
        // receiving mail at a rate that prevents additional messages".
        ThrottleRule::builtin("", "4.7.28", ""),
        ThrottleRule::builtin("", "", "receiving mail at a rate"),
        // Microsoft: "451 4.7.500 Server busy. Please try again later",
        // 4.7.650/4.7.651 (IP reputation throttling).
        ThrottleRule::builtin("", "4.7.500", ""),
        ThrottleRule::builtin("", "4.7.650", ""),
        ThrottleRule::builtin("", "4.7.651", ""),
        ThrottleRule::builtin("", "", "server busy"),
        // The usual texts of connection and rate limits.
        ThrottleRule::builtin("", "", "rate limit"),
        ThrottleRule::builtin("", "", "too many connections"),
        ThrottleRule::builtin("", "", "too many concurrent"),
        ThrottleRule::builtin("", "", "too many messages"),
        ThrottleRule::builtin("", "", "too fast"),
        ThrottleRule::builtin("", "4.7.0", "temporarily deferred"),
    ]
}

/// Settings for the destinations matching a pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationShape {
    /// Lowercase: "example.com", ".example.com", "[10.0.0.1]:2525", "*".
    pub pattern: String,
    pub concurrency_limit: Option<u32>,
    pub initial_concurrency: Option<u32>,
    /// `Some(None)`: the entry says "no rate".
    pub rate: Option<Option<Rate>>,
    pub rate_delay: Option<Duration>,
}

impl DestinationShape {
    fn of(entry: &DestinationShapeEntry) -> Result<Self, String> {
        let pattern = entry.pattern.trim().to_ascii_lowercase();
        if pattern.is_empty() {
            return Err(String::from(
                "a [[shaping.destination]] entry needs a pattern",
            ));
        }
        if entry.initial_concurrency == Some(0) {
            return Err(String::from("initial_concurrency must be at least 1"));
        }
        let rate = match &entry.rate {
            Some(text) => Some(parse_rate(text)?),
            None => None,
        };
        Ok(Self {
            pattern,
            concurrency_limit: entry.concurrency_limit,
            initial_concurrency: entry.initial_concurrency,
            rate,
            rate_delay: entry.rate_delay,
        })
    }

    /// Does the pattern match this destination name (lowercase)?
    pub fn matches(&self, name: &str) -> bool {
        let pattern = self.pattern.as_str();
        if pattern == "*" || pattern == name {
            return true;
        }
        // ".example.com": every subdomain of example.com (not itself).
        pattern.starts_with('.') && name.len() > pattern.len() && name.ends_with(pattern)
    }
}

/// The typed `[shaping]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapingSettings {
    pub enabled: bool,
    /// 0: no limit.
    pub concurrency_limit: u32,
    pub initial_concurrency: u32,
    pub positive_feedback: Feedback,
    pub negative_feedback: Feedback,
    pub failed_cohort_limit: u32,
    pub dead_time: Duration,
    pub rate_delay: Duration,
    pub rate: Option<Rate>,
    pub waiting_limit: usize,
    pub group_by_mx_site: bool,
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub retry_time: Duration,
    /// The rules in force: the configured ones, then the built-in ones
    /// (when on).
    pub throttle_rules: Vec<ThrottleRule>,
    pub destinations: Vec<DestinationShape>,
}

impl Default for ShapingSettings {
    fn default() -> Self {
        Self::of(&ShapingConfig::default()).unwrap_or_else(|_| Self::unshaped())
    }
}

impl ShapingSettings {
    /// The typed form of a checked table (a value that does not parse,
    /// possible only in an unvalidated one, errs).
    pub fn of(config: &ShapingConfig) -> Result<Self, String> {
        let mut throttle_rules = config
            .throttle_rule
            .iter()
            .map(ThrottleRule::of)
            .collect::<Result<Vec<_>, _>>()?;
        if config.builtin_throttle_rules {
            throttle_rules.extend(builtin_throttle_rules());
        }
        Ok(Self {
            enabled: config.enabled,
            concurrency_limit: config.destination_concurrency_limit,
            initial_concurrency: config.initial_destination_concurrency.max(1),
            positive_feedback: parse_feedback(&config.destination_concurrency_positive_feedback)?,
            negative_feedback: parse_feedback(&config.destination_concurrency_negative_feedback)?,
            failed_cohort_limit: config.destination_concurrency_failed_cohort_limit,
            dead_time: config.minimal_backoff_time,
            rate_delay: config.destination_rate_delay,
            rate: parse_rate(&config.destination_rate)?,
            waiting_limit: config.destination_waiting_limit.max(1),
            group_by_mx_site: config.group_by_mx_site,
            backoff: config.throttle_backoff,
            backoff_max: config.throttle_backoff_max.max(config.throttle_backoff),
            retry_time: config.throttle_retry_time,
            throttle_rules,
            destinations: config
                .destination
                .iter()
                .map(DestinationShape::of)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }

    /// No shaping at all.
    pub fn unshaped() -> Self {
        Self {
            enabled: false,
            concurrency_limit: 0,
            initial_concurrency: 1,
            positive_feedback: Feedback::PerWindow,
            negative_feedback: Feedback::PerWindow,
            failed_cohort_limit: 0,
            dead_time: Duration::from_secs(300),
            rate_delay: Duration::ZERO,
            rate: None,
            waiting_limit: usize::MAX,
            group_by_mx_site: false,
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            retry_time: Duration::ZERO,
            throttle_rules: Vec::new(),
            destinations: Vec::new(),
        }
    }
}

pub(super) fn check_feedback(text: &str) -> Result<(), Invalid> {
    parse_feedback(text).map(|_| ()).map_err(Invalid::from)
}

pub(super) fn check_rate(text: &str) -> Result<(), Invalid> {
    parse_rate(text).map(|_| ()).map_err(Invalid::from)
}

pub(super) fn check_initial_concurrency(value: &u32) -> Result<(), Invalid> {
    if *value == 0 {
        return Err(String::from("invalid value 0, expected at least 1").into());
    }
    Ok(())
}

pub(super) fn check_throttle_rules(entries: &[ThrottleRuleEntry]) -> Result<(), Invalid> {
    for entry in entries {
        ThrottleRule::of(entry).map_err(Invalid::from)?;
    }
    Ok(())
}

pub(super) fn check_destination_shapes(entries: &[DestinationShapeEntry]) -> Result<(), Invalid> {
    for entry in entries {
        DestinationShape::of(entry).map_err(Invalid::from)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "shaping_tests.rs"]
mod tests;
