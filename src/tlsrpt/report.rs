//! The aggregate report of one policy domain and day as RFC 8460 section
//! 4.4 defines its JSON, and the report's file name (section 5.3).
//!
//! Pure: [`Report::build`] turns the counts of an [`super::DomainDay`] into
//! the serde structs; serialising them gives the report. Field names and
//! order follow the RFC; optional fields that are unknown are left out.

use std::net::IpAddr;

use serde::Serialize;

use super::aggregate::{Day, DomainDay, PolicyType, ResultType};

/// The report (RFC 8460 section 4.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    #[serde(rename = "organization-name")]
    pub organization_name: String,
    #[serde(rename = "date-range")]
    pub date_range: DateRange,
    #[serde(rename = "contact-info")]
    pub contact_info: String,
    #[serde(rename = "report-id")]
    pub report_id: String,
    pub policies: Vec<PolicyReport>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DateRange {
    /// RFC 3339: "2016-04-01T00:00:00Z".
    #[serde(rename = "start-datetime")]
    pub start_datetime: String,
    #[serde(rename = "end-datetime")]
    pub end_datetime: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyReport {
    pub policy: PolicyDescription,
    pub summary: Summary,
    #[serde(rename = "failure-details", skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetail>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyDescription {
    #[serde(rename = "policy-type")]
    pub policy_type: PolicyType,
    #[serde(rename = "policy-string", skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    #[serde(rename = "policy-domain")]
    pub policy_domain: String,
    #[serde(rename = "mx-host", skip_serializing_if = "Vec::is_empty")]
    pub mx_host: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Summary {
    #[serde(rename = "total-successful-session-count")]
    pub total_successful_session_count: u64,
    #[serde(rename = "total-failure-session-count")]
    pub total_failure_session_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailureDetail {
    #[serde(rename = "result-type")]
    pub result_type: ResultType,
    #[serde(rename = "sending-mta-ip", skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    #[serde(
        rename = "receiving-mx-hostname",
        skip_serializing_if = "Option::is_none"
    )]
    pub receiving_mx_hostname: Option<String>,
    #[serde(rename = "receiving-ip", skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    #[serde(rename = "failed-session-count")]
    pub failed_session_count: u64,
}

/// "2016-04-01T00:00:00Z" for the first second of `day`.
pub fn start_datetime(day: Day) -> String {
    format!("{}T00:00:00Z", day.date())
}

/// "2016-04-01T23:59:59Z" for the last second of `day`.
pub fn end_datetime(day: Day) -> String {
    format!("{}T23:59:59Z", day.date())
}

impl Report {
    /// The report of `counts`, by `organization` with `contact`.
    pub fn build(counts: &DomainDay, organization: &str, contact: &str, report_id: &str) -> Self {
        let policies = counts
            .policies
            .iter()
            .map(|(key, counted)| PolicyReport {
                policy: PolicyDescription {
                    policy_type: key.policy_type,
                    policy_string: key.policy_string.clone(),
                    policy_domain: counts.domain.clone(),
                    mx_host: key.mx_host.clone(),
                },
                summary: Summary {
                    total_successful_session_count: counted.successful,
                    total_failure_session_count: counted.failed,
                },
                failure_details: counted
                    .failures
                    .iter()
                    .map(|(row, &count)| FailureDetail {
                        result_type: row.result_type,
                        sending_mta_ip: row.sending_mta_ip,
                        receiving_mx_hostname: row.receiving_mx_hostname.clone(),
                        receiving_ip: row.receiving_ip,
                        failed_session_count: count,
                    })
                    .collect(),
            })
            .collect();
        Report {
            organization_name: organization.to_string(),
            date_range: DateRange {
                start_datetime: start_datetime(counts.day),
                end_datetime: end_datetime(counts.day),
            },
            contact_info: contact.to_string(),
            report_id: report_id.to_string(),
            policies,
        }
    }

    /// The JSON text (pretty-printed).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and addresses cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Keeps the characters a file name may safely hold (RFC 8460 section 5.3
/// names are "sender!domain!begin!end!id"); others become '_'.
fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The report's file name (RFC 8460 section 5.3):
/// `submitter!policy-domain!begin-timestamp!end-timestamp!unique-id.ext`,
/// the timestamps in UNIX seconds; `extension` is "json" or "json.gz".
pub fn file_name(
    submitter: &str,
    domain: &str,
    day: Day,
    unique_id: &str,
    extension: &str,
) -> String {
    format!(
        "{}!{}!{}!{}!{}.{extension}",
        file_safe(submitter),
        file_safe(domain),
        day.start_secs(),
        day.end_secs(),
        file_safe(unique_id)
    )
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
