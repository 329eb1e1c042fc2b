//! The report as a mail message (RFC 8460 section 5.3): multipart/report
//! with report-type "tlsrpt", a short human-readable part and the JSON
//! report gzip-compressed as an `application/tlsrpt+gzip` attachment.
//!
//! Pure apart from compression in memory: [`build`] returns the message
//! bytes (CRLF line ends, 7-bit) or the compressor's error.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::aggregate::Day;

/// What the message says.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    /// From: and the envelope sender.
    pub from: &'a str,
    /// The rua address.
    pub to: &'a str,
    pub policy_domain: &'a str,
    /// The submitter's domain (our host name).
    pub submitter: &'a str,
    pub report_id: &'a str,
    /// The attachment's name (`...json.gz`).
    pub file_name: &'a str,
    /// The JSON report.
    pub json: &'a str,
    /// UNIX seconds of the Date: header.
    pub date: u64,
    /// A unique token for Message-ID and the MIME boundary.
    pub unique: &'a str,
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

/// "Fri, 01 Apr 2016 00:00:00 +0000" (RFC 5322).
pub fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let day = Day(secs / 86_400);
    let date = day.date();
    let mut fields = date.split('-');
    let (year, month, mday) = (
        fields.next().unwrap_or("1970"),
        fields
            .next()
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(1),
        fields.next().unwrap_or("01"),
    );
    let weekday = usize::try_from(day.0 % 7).unwrap_or(0);
    let rest = secs % 86_400;
    format!(
        "{}, {mday} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS.get(weekday).unwrap_or(&"Thu"),
        MONTHS.get(month.saturating_sub(1)).unwrap_or(&"Jan"),
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Base64 in lines of 76 characters, each ended with CRLF.
fn base64_lines(data: &[u8]) -> String {
    let encoded = openssl::base64::encode_block(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// The whole message, headers and body, CRLF line ends.
pub fn build(parts: &Parts<'_>) -> io::Result<Vec<u8>> {
    let compressed = gzip(parts.json.as_bytes())?;
    let boundary = format!("----=_tlsrpt_{}", parts.unique);
    let submitter = parts.submitter;
    let mut text = String::new();
    let mut line = |l: &str| {
        text.push_str(l);
        text.push_str("\r\n");
    };
    line(&format!("From: <{}>", parts.from));
    line(&format!("To: <{}>", parts.to));
    line(&format!("Date: {}", rfc5322_date(parts.date)));
    line(&format!(
        "Subject: Report Domain: {} Submitter: {submitter} Report-ID: <{}>",
        parts.policy_domain, parts.report_id
    ));
    line(&format!("TLS-Report-Domain: {}", parts.policy_domain));
    line(&format!("TLS-Report-Submitter: {submitter}"));
    line(&format!(
        "Message-ID: <tlsrpt.{}@{submitter}>",
        parts.unique
    ));
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\""
    ));
    line("");
    line("This is a multipart message in MIME format.");
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/plain; charset=\"us-ascii\"");
    line("Content-Transfer-Encoding: 7bit");
    line("");
    line(&format!(
        "This is an aggregate TLS report (RFC 8460) from {submitter} for {},",
        parts.policy_domain
    ));
    line(&format!("report ID {}.", parts.report_id));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: application/tlsrpt+gzip");
    line("Content-Transfer-Encoding: base64");
    line("Content-Disposition: attachment;");
    line(&format!("\tfilename=\"{}\"", parts.file_name));
    line("");
    text.push_str(&base64_lines(&compressed));
    text.push_str(&format!("--{boundary}--\r\n"));
    Ok(text.into_bytes())
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
