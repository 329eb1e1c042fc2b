//! The counts of TLS results behind the reports: per policy domain and UTC
//! day, per policy, the successful sessions and the failed ones by result
//! type, sending and receiving address and MX host (RFC 8460 section 4).
//!
//! One [`Aggregator`] is shared by every worker (an `Arc`, one `Mutex` held
//! for a map update only). It is bounded: at most [`MAX_DOMAIN_DAYS`]
//! domain-days, [`MAX_POLICIES`] policies per domain-day and
//! [`MAX_FAILURE_ROWS`] failure-detail rows per policy. A session past a
//! bound is dropped (and counted in [`Aggregator::dropped`]) rather than
//! growing memory. I/O-free; the clock is the caller's (`now` arguments),
//! so day rollover is tested with made-up times. Nothing panics: a
//! poisoned lock is taken over.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Domain-days kept at once (a day's domains plus yesterday's unwritten).
pub const MAX_DOMAIN_DAYS: usize = 10_000;
/// Policies of one domain in one day (DANE: one per MX host).
pub const MAX_POLICIES: usize = 32;
/// Distinct failure-detail rows of one policy in one day.
pub const MAX_FAILURE_ROWS: usize = 100;

/// A UTC day, as days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u64);

impl Day {
    /// The UTC day of `time` (before 1970: day 0).
    pub fn of(time: SystemTime) -> Day {
        Day(time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400))
    }

    /// UNIX time of the day's first second.
    pub fn start_secs(self) -> u64 {
        self.0.saturating_mul(86_400)
    }

    /// UNIX time of the day's last second.
    pub fn end_secs(self) -> u64 {
        self.start_secs().saturating_add(86_399)
    }

    /// "2016-04-01".
    pub fn date(self) -> String {
        let (year, month, day) = civil_from_days(self.0);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// Howard Hinnant's days-to-civil algorithm for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days.saturating_add(719_468);
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// RFC 8460 section 4.3: what kind of policy applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum PolicyType {
    /// DANE: the MX host's TLSA records.
    #[serde(rename = "tlsa")]
    Tlsa,
    /// MTA-STS.
    #[serde(rename = "sts")]
    Sts,
    /// Neither (the level of `[tls]` or a policy table entry).
    #[serde(rename = "no-policy-found")]
    NoPolicyFound,
}

/// One policy as a report names it (within its domain).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub policy_type: PolicyType,
    /// `tlsa`: the TLSA records in presentation form; `sts`: the policy
    /// file's lines; `no-policy-found`: empty.
    pub policy_string: Vec<String>,
    /// `tlsa`: the MX host; `sts`: the policy's `mx` patterns.
    pub mx_host: Vec<String>,
}

impl PolicyKey {
    pub fn no_policy() -> Self {
        PolicyKey {
            policy_type: PolicyType::NoPolicyFound,
            policy_string: Vec::new(),
            mx_host: Vec::new(),
        }
    }
}

/// RFC 8460 section 4.3 result types of a failed session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    StarttlsNotSupported,
    CertificateHostMismatch,
    CertificateExpired,
    CertificateNotTrusted,
    ValidationFailure,
    TlsaInvalid,
    DnssecInvalid,
    DaneRequired,
    StsPolicyFetchError,
    StsPolicyInvalid,
    StsWebpkiInvalid,
}

impl ResultType {
    /// The word of the report: "certificate-host-mismatch".
    pub fn name(self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }
}

/// One failure-detail row's key (RFC 8460 section 4.4).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureKey {
    pub result_type: ResultType,
    pub sending_mta_ip: Option<IpAddr>,
    pub receiving_mx_hostname: Option<String>,
    pub receiving_ip: Option<IpAddr>,
}

/// How one session ended, for the counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// TLS established and the policy satisfied.
    Success,
    Failure(FailureKey),
}

/// The counts of one policy in one day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub successful: u64,
    pub failed: u64,
    /// Failed sessions per row; rows past [`MAX_FAILURE_ROWS`] count only
    /// in `failed`.
    pub failures: BTreeMap<FailureKey, u64>,
}

/// Everything counted for one domain in one day: what a report is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainDay {
    pub domain: String,
    pub day: Day,
    /// In the order first seen.
    pub policies: Vec<(PolicyKey, Counts)>,
}

/// The shared counts; see the module documentation.
#[derive(Debug, Default)]
pub struct Aggregator {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    days: BTreeMap<(Day, String), Vec<(PolicyKey, Counts)>>,
    dropped: u64,
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one session of `domain` (lower-cased here) under `policy` at
    /// `now`. False when a bound dropped it.
    pub fn record(
        &self,
        now: SystemTime,
        domain: &str,
        policy: &PolicyKey,
        outcome: Outcome,
    ) -> bool {
        let key = (
            Day::of(now),
            domain.trim_end_matches('.').to_ascii_lowercase(),
        );
        let mut state = self.state();
        if !state.days.contains_key(&key) && state.days.len() >= MAX_DOMAIN_DAYS {
            state.dropped += 1;
            return false;
        }
        let policies = state.days.entry(key).or_default();
        let index = match policies.iter().position(|(p, _)| p == policy) {
            Some(index) => index,
            None if policies.len() >= MAX_POLICIES => {
                state.dropped += 1;
                return false;
            }
            None => {
                policies.push((policy.clone(), Counts::default()));
                policies.len() - 1
            }
        };
        let Some((_, counts)) = policies.get_mut(index) else {
            return false;
        };
        match outcome {
            Outcome::Success => counts.successful += 1,
            Outcome::Failure(row) => {
                counts.failed += 1;
                if let Some(n) = counts.failures.get_mut(&row) {
                    *n += 1;
                } else if counts.failures.len() < MAX_FAILURE_ROWS {
                    counts.failures.insert(row, 1);
                }
            }
        }
        true
    }

    /// Takes the domain-days that ended before the day of `now` (all of
    /// them with `all`), oldest first.
    pub fn take(&self, now: SystemTime, all: bool) -> Vec<DomainDay> {
        let today = Day::of(now);
        let mut state = self.state();
        let keep = if all {
            BTreeMap::new()
        } else {
            state.days.split_off(&(today, String::new()))
        };
        let ended = std::mem::replace(&mut state.days, keep);
        ended
            .into_iter()
            .map(|((day, domain), policies)| DomainDay {
                domain,
                day,
                policies,
            })
            .collect()
    }

    /// Domain-days held now.
    pub fn len(&self) -> usize {
        self.state().days.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions dropped by a bound since start.
    pub fn dropped(&self) -> u64 {
        self.state().dropped
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
