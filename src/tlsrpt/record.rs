//! The TLSRPT policy record (RFC 8460 section 3): the TXT record at
//! `_smtp._tls.<policy domain>` that says where a domain wants its TLS
//! reports sent.
//!
//! Pure: the caller looks the TXT records up and hands their texts here.
//! Nothing panics; a record that does not parse is an error value, and
//! [`select`] applies the RFC's rule that a domain with no valid record, or
//! with more than one, does not take reports.

/// One report address of a record's `rua=` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rua {
    /// `mailto:` with the address (percent-decoded, no `?` headers).
    Mailto(String),
    /// `https:` with the whole URI.
    Https(String),
}

/// A parsed `v=TLSRPTv1` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRptRecord {
    /// The `mailto:` and `https:` addresses, in record order (URIs of other
    /// schemes are left out).
    pub rua: Vec<Rua>,
}

/// The name of the TXT record of `domain`.
pub fn record_name(domain: &str) -> String {
    format!("_smtp._tls.{}", domain.trim_end_matches('.'))
}

/// True when `text` begins with the version field: `v=TLSRPTv1` followed
/// by the end or a field delimiter (`*WSP ";"`).
fn is_tlsrpt(text: &str) -> bool {
    text.strip_prefix("v=TLSRPTv1").is_some_and(|rest| {
        rest.trim_start_matches([' ', '\t']).is_empty()
            || rest.trim_start_matches([' ', '\t']).starts_with(';')
    })
}

/// Parses one record text (that begins with `v=TLSRPTv1`). Unknown
/// extension fields are ignored; a missing or empty `rua`, or a field
/// without `=`, is an error.
pub fn parse(text: &str) -> Result<TlsRptRecord, String> {
    if !is_tlsrpt(text) {
        return Err("the record does not begin with \"v=TLSRPTv1\"".into());
    }
    let mut rua: Option<Vec<Rua>> = None;
    for (index, field) in text.split(';').enumerate().skip(1) {
        let field = field.trim_matches([' ', '\t']);
        if field.is_empty() {
            // A trailing delimiter ("...;") is allowed.
            if index + 1 == text.split(';').count() {
                continue;
            }
            return Err("empty field".into());
        }
        let Some((name, value)) = field.split_once('=') else {
            return Err(format!("field {field:?} has no \"=\""));
        };
        if name != "rua" {
            continue;
        }
        if rua.is_some() {
            return Err("more than one rua field".into());
        }
        let mut uris = Vec::new();
        for uri in value.split(',') {
            let uri = uri.trim_matches([' ', '\t']);
            if uri.is_empty() {
                return Err("empty rua URI".into());
            }
            if let Some(rest) = strip_scheme(uri, "mailto:") {
                let address = percent_decode(rest.split('?').next().unwrap_or_default());
                // It becomes a report's recipient and To: header: no
                // control character (decoded or not), blank or bracket.
                if !address.contains('@')
                    || address
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
                {
                    return Err(format!("invalid mailto address in {uri:?}"));
                }
                uris.push(Rua::Mailto(address));
            } else if strip_scheme(uri, "https:").is_some() {
                uris.push(Rua::Https(uri.to_string()));
            }
        }
        rua = Some(uris);
    }
    match rua {
        Some(rua) if !rua.is_empty() => Ok(TlsRptRecord { rua }),
        Some(_) => Err("no mailto: or https: address in rua".into()),
        None => Err("no rua field".into()),
    }
}

/// The scheme is case-insensitive (RFC 3986).
fn strip_scheme<'a>(uri: &'a str, scheme: &str) -> Option<&'a str> {
    let head = uri.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| uri.get(scheme.len()..))
        .flatten()
}

/// `%XX` escapes decoded (RFC 6068); a malformed escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The domain's record among its TXT texts: those not beginning with
/// `v=TLSRPTv1` are discarded; exactly one must remain, and it must parse
/// (RFC 8460 section 3: otherwise the domain "does not implement TLSRPT").
/// The error says why there is none.
pub fn select(texts: &[String]) -> Result<TlsRptRecord, String> {
    let mut found = texts.iter().filter(|text| is_tlsrpt(text));
    match (found.next(), found.next()) {
        (None, _) => Err("no TLSRPT record".into()),
        (Some(_), Some(_)) => Err("more than one TLSRPT record".into()),
        (Some(text), None) => parse(text),
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
