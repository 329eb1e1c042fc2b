//! The `_mta-sts.<domain>` TXT record (RFC 8461 section 3.1): from the TXT
//! texts of one lookup to the policy id, or the reason there is none.
//!
//! Pure: no I/O. Records that do not start with `v=STSv1` are not MTA-STS
//! records and are discarded; of the rest exactly one must remain and be
//! well formed, else the domain has no available policy (section 3.1:
//! "If the number of resulting records is not one, or if the resulting
//! record is syntactically invalid, senders MUST assume the recipient
//! domain does not have an available MTA-STS Policy").
//!
//! Error contract: [`policy_id`] never panics; every reason for "no
//! policy" is an [`MtaStsError::Record`] whose text says what was wrong.

use super::MtaStsError;

/// Longest id (`1*32(ALPHA / DIGIT)`).
const MAX_ID_LEN: usize = 32;
/// Longest extension field name (`(ALPHA / DIGIT) *31(...)`).
const MAX_EXT_NAME_LEN: usize = 32;

/// The policy id of the one valid MTA-STS record among `texts` (each a TXT
/// record's character-strings joined).
pub fn policy_id(texts: &[String]) -> Result<String, MtaStsError> {
    let mut sts = texts.iter().filter(|text| starts_with_version(text));
    let (Some(record), None) = (sts.next(), sts.next()) else {
        let count = texts
            .iter()
            .filter(|text| starts_with_version(text))
            .count();
        return Err(MtaStsError::Record(format!(
            "{count} TXT records start with v=STSv1; exactly one is needed"
        )));
    };
    parse_record(record)
}

/// `v=STSv1` followed by a field delimiter, blanks or the end (so that
/// `v=STSv10` is not taken for one).
fn starts_with_version(text: &str) -> bool {
    text.strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

/// The id of one record that starts with `v=STSv1` (section 3.1's ABNF:
/// `sts-version 1*(*WSP field-delim *WSP sts-field) [field-delim]`).
fn parse_record(record: &str) -> Result<String, MtaStsError> {
    let invalid = |why: String| MtaStsError::Record(format!("invalid MTA-STS record: {why}"));
    let rest = record.strip_prefix("v=STSv1").unwrap_or(record);
    let mut id = None;
    let mut fields = rest.split(';');
    // What precedes the first ';' is blanks only (after the version).
    if fields.next().is_some_and(|pre| !is_blank(pre)) {
        return Err(invalid("text after v=STSv1 before the first ';'".into()));
    }
    let fields: Vec<&str> = fields.collect();
    let last = fields.len().saturating_sub(1);
    for (index, field) in fields.iter().enumerate() {
        let field = field.trim_matches([' ', '\t']);
        if field.is_empty() {
            // Only a trailing delimiter may leave an empty field.
            if index == last {
                continue;
            }
            return Err(invalid("empty field".into()));
        }
        let Some((name, value)) = field.split_once('=') else {
            return Err(invalid(format!("field {field:?} has no '='")));
        };
        if name == "id" {
            if !valid_id(value) {
                return Err(invalid(format!(
                    "id {value:?} is not 1 to 32 letters and digits"
                )));
            }
            if id.is_some() {
                return Err(invalid("more than one id".into()));
            }
            id = Some(value.to_owned());
        } else if !valid_ext_name(name) || !valid_ext_value(value) {
            return Err(invalid(format!("malformed field {field:?}")));
        }
    }
    id.ok_or_else(|| invalid("no id".into()))
}

fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b == b' ' || b == b'\t')
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_ext_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.len() <= MAX_EXT_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `1*(%x21-3A / %x3C / %x3E-7E)`: visible ASCII but ';' and '='.
fn valid_ext_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b';' && b != b'=')
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
