//! Durations in the configuration file: `"<integer><unit>"` strings,
//! unit `ms`, `s`, `m`, `h`, `d` or `w`, parsed into [`Duration`] and written
//! back as whole seconds or milliseconds; the serde helpers of duration keys.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a duration string looks like, for error messages.
const DURATION_EXPECTED: &str =
    "a duration string: an integer followed by ms, s, m, h, d or w, such as \"30s\"";

/// Parses `"<digits><unit>"`, unit one of `ms`, `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let fail = |why: &str| Err(format!("invalid duration {text:?}: {why}"));
    if digits.is_empty() {
        if text.starts_with('-') {
            return fail("negative durations are not allowed");
        }
        return fail(&format!("expected {DURATION_EXPECTED}"));
    }
    if unit.is_empty() {
        return fail("missing unit (ms, s, m, h, d or w)");
    }
    let Ok(count) = digits.parse::<u64>() else {
        return fail("number too large");
    };
    let seconds_per_unit: u64 = match unit {
        "ms" => return Ok(Duration::from_millis(count)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return fail(&format!(
                "unknown unit {unit:?}, expected ms, s, m, h, d or w"
            ));
        }
    };
    match count.checked_mul(seconds_per_unit) {
        Some(seconds) => Ok(Duration::from_secs(seconds)),
        None => fail("number too large"),
    }
}

/// Formats a duration the way Postfix writes them: whole seconds as `"Ns"`,
/// anything else as `"Nms"`.  Fails for durations that are not a whole
/// number of milliseconds (or too many of them for a `u64`).
pub fn format_duration(duration: Duration) -> Result<String, String> {
    if duration.subsec_nanos() == 0 {
        return Ok(format!("{}s", duration.as_secs()));
    }
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!(
            "duration {duration:?} is not a whole number of milliseconds"
        ));
    }
    match u64::try_from(duration.as_millis()) {
        Ok(millis) => Ok(format!("{millis}ms")),
        Err(_) => Err(format!("duration {duration:?} is too large")),
    }
}

/// A duration as it appears in the file.
struct DurationStr(Duration);

impl Serialize for DurationStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = format_duration(self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DurationStr, E> {
                parse_duration(text).map(DurationStr).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// `#[serde(with)]` module for `Duration` fields.
pub(super) mod duration_str {
    use super::DurationStr;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        DurationStr(*value).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        DurationStr::deserialize(deserializer).map(|d| d.0)
    }
}

/// `#[serde(with)]` module for `Option<Duration>` fields.
pub(super) mod opt_duration_str {
    use super::DurationStr;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        value.map(DurationStr).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<DurationStr>::deserialize(deserializer).map(|d| d.map(|d| d.0))
    }
}
