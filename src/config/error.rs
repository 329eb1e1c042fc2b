//! Configuration errors and where they are: [`ConfigError`], the internal
//! `Invalid`/`Problem` of a failed check, and finding the dotted key and the
//! line of a problem in the TOML text.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::tables::{
    CacheConfig, DaemonConfig, DnsConfig, LmtpConfig, LogConfig, SmtpConfig, TlsConfig,
};

/// A configuration problem.  `Display`: `line N: key: message`, leaving out
/// the parts that are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line in the TOML text, when known.
    pub line: Option<usize>,
    /// Dotted key such as `smtp.port`, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A value that failed its check; `index` is the array element, if any.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) index: Option<usize>,
    pub(super) message: String,
}

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid {
            index: None,
            message,
        }
    }
}

impl Invalid {
    pub(super) fn at(self, key: &str) -> Problem {
        Problem {
            key: key.to_owned(),
            index: self.index,
            message: self.message,
        }
    }
}

/// A failed check, located by dotted key (and array index).
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) index: Option<usize>,
    pub(super) message: String,
}

impl Problem {
    /// Turns the problem into an error, finding its line in `source` (the
    /// text and its parsed document) when the key is written there.
    pub(super) fn into_error(self, source: Option<(&str, &DeTable<'_>)>) -> ConfigError {
        let line = source.and_then(|(text, doc)| {
            let path: Vec<&str> = self.key.split('.').collect();
            span_of(doc, &path, self.index).map(|span| line_at(text, span.start))
        });
        ConfigError {
            line,
            key: Some(self.key),
            message: self.message,
        }
    }
}

// ---------------------------------------------------------------------------
// Locating errors in the text.
// ---------------------------------------------------------------------------

/// 1-based line of byte `offset`.
pub(super) fn line_at(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}

/// Rejects a table written as another type (`smtp = []`, `[[smtp]]`),
/// which serde would otherwise read as a sequence of field values.
pub(super) fn check_table_types(text: &str, doc: &DeTable<'_>) -> Result<(), ConfigError> {
    const TABLES: [&str; 7] = [
        SmtpConfig::TABLE,
        LmtpConfig::TABLE,
        DnsConfig::TABLE,
        TlsConfig::TABLE,
        DaemonConfig::TABLE,
        CacheConfig::TABLE,
        LogConfig::TABLE,
    ];
    for (key, value) in doc.iter() {
        let name = key.get_ref().as_ref();
        if TABLES.contains(&name) && !value.get_ref().is_table() {
            return Err(ConfigError {
                line: Some(line_at(text, value.span().start)),
                key: Some(name.to_owned()),
                message: format!(
                    "invalid type: {}, expected a table",
                    value.get_ref().type_str()
                ),
            });
        }
    }
    Ok(())
}

/// Converts a `toml` error (syntax or deserialization) into a
/// [`ConfigError`], finding the key at the error's position in `doc`.
pub(super) fn toml_error(text: &str, doc: &DeTable<'_>, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map(|span| span.start);
    let path = offset.and_then(|offset| key_at(doc, offset));
    let mut message = err.message().trim_end().to_owned();
    if let Some(path) = &path {
        message = place_unknown_field(&message, path);
    }
    ConfigError {
        line: offset.map(|offset| line_at(text, offset)),
        key: path.map(|path| path.join(".")),
        message,
    }
}

/// Adds the table to serde's "unknown field `x`, expected ..." message.
pub(super) fn place_unknown_field(message: &str, path: &[String]) -> String {
    const PREFIX: &str = "unknown field `";
    let Some(rest) = message.strip_prefix(PREFIX) else {
        return message.to_owned();
    };
    let Some(end) = rest.find('`') else {
        return message.to_owned();
    };
    let (name, tail) = rest.split_at(end + 1);
    let place = match path.split_last() {
        Some((_, parent)) if !parent.is_empty() => format!(" in [{}]", parent.join(".")),
        _ => String::from(" at the top level"),
    };
    format!("{PREFIX}{name}{place}{tail}")
}

/// Whether `span` covers byte `offset` (an empty span covers its start).
pub(super) fn covers(span: &Range<usize>, offset: usize) -> bool {
    span.contains(&offset) || (span.is_empty() && span.start == offset)
}

/// The dotted key path of the smallest key or value covering `offset`.
pub(super) fn key_at(doc: &DeTable<'_>, offset: usize) -> Option<Vec<String>> {
    let mut best = None;
    walk_table(doc, offset, &mut Vec::new(), &mut best);
    best.map(|(_, path)| path)
}

type Best = Option<(usize, Vec<String>)>;

pub(super) fn consider(span: &Range<usize>, offset: usize, path: &[String], best: &mut Best) {
    if covers(span, offset) && best.as_ref().is_none_or(|(len, _)| span.len() <= *len) {
        *best = Some((span.len(), path.to_vec()));
    }
}

pub(super) fn walk_table(
    table: &DeTable<'_>,
    offset: usize,
    path: &mut Vec<String>,
    best: &mut Best,
) {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        consider(&key.span(), offset, path, best);
        consider(&value.span(), offset, path, best);
        walk_value(value.get_ref(), offset, path, best);
        path.pop();
    }
}

pub(super) fn walk_value(
    value: &DeValue<'_>,
    offset: usize,
    path: &mut Vec<String>,
    best: &mut Best,
) {
    match value {
        DeValue::Table(table) => walk_table(table, offset, path, best),
        DeValue::Array(items) => {
            for item in items.iter() {
                consider(&item.span(), offset, path, best);
                walk_value(item.get_ref(), offset, path, best);
            }
        }
        _ => {}
    }
}

/// Span of the key at `path` (or of its element `index`) in `doc`.
pub(super) fn span_of(
    doc: &DeTable<'_>,
    path: &[&str],
    index: Option<usize>,
) -> Option<Range<usize>> {
    let (first, rest) = path.split_first()?;
    let (key, value) = doc
        .iter()
        .find(|(key, _)| key.get_ref().as_ref() == *first)?;
    if rest.is_empty() {
        let item = index.and_then(|i| value.get_ref().as_array().and_then(|items| items.get(i)));
        return Some(item.map_or_else(|| key.span(), |item| item.span()));
    }
    span_of(value.get_ref().as_table()?, rest, index)
}
