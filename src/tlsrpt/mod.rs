//! SMTP TLS Reporting (RFC 8460): what every TLS attempt of the deliverers
//! came to, counted per policy domain and UTC day, and the daily reports
//! made of the counts — written to `[tls_rpt] report_directory` and, with
//! `[tls_rpt] submit`, mailed to the domain's `mailto:` addresses through
//! mailhop's own workers.
//!
//! This module owns the choice of what is counted and where reports go:
//! - The policy domain is the next-hop domain of the delivery (the
//!   recipient domain, or a relay's domain), for DANE as for MTA-STS, as
//!   Postfix does; IP-literal and UNIX-socket next hops have none.
//! - Counted are sessions under a DANE policy (policy type `tlsa`, one
//!   policy per MX host with its TLSA records), under an MTA-STS policy
//!   (`sts`, the lines noted with [`TlsRpt::note_sts_policy`]) and, with
//!   `[tls_rpt] no_policy_found`, every other TLS attempt
//!   (`no-policy-found`). A session is one TLS handshake: success when it
//!   completed and the certificate satisfied the level, else the RFC 8460
//!   result type of the failure ([`tls_failure_result`]); a server that
//!   does not offer STARTTLS at a level that requires TLS is
//!   `starttls-not-supported`; a "dane-only" refusal before any connection
//!   is counted from its cause ([`dane_refusal_result`]). Sessions taken
//!   from the connection cache made no handshake and are not counted
//!   (Postfix's default, smtp_tlsrpt_skip_reused_handshakes = yes); level "none", and
//!   level "may" with a server that offers no STARTTLS, are no TLS attempt.
//! - Reports are made for every counted domain, but written (and sent)
//!   only for those whose `_smtp._tls` TXT lookup finds exactly one valid
//!   record when the day is written (looked up then, cached an hour), so
//!   counting costs no DNS lookup on the delivery path.
//!
//! Layout: `record` (the TXT record, pure), `aggregate` (the shared,
//! bounded counts), `report` (the JSON and file name, pure), `message`
//! (the RFC 8460 section 5.3 mail, pure) and this file, the edge: DNS,
//! files, submission.
//!
//! # Error contract
//!
//! Nothing here panics or blocks delivery: counting takes one short lock;
//! a report that cannot be written or submitted is logged and dropped
//! ([`Flushed`] counts them), and the counts of its day are gone with it.

pub mod aggregate;
pub mod message;
pub mod record;
pub mod report;

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use aggregate::{
    Aggregator, Day, DomainDay, FailureKey, Outcome, PolicyKey, PolicyType, ResultType,
};
pub use record::{Rua, TlsRptRecord};
pub use report::Report;

use crate::config::Config;
use crate::dane_policy::{DaneRefusal, RefusalKind};
use crate::dns::DnsLookup;
use crate::job::{Job, JobRecipient, MessageRef};
use crate::tls::{CertProblem, TlsFailure};
use crate::tls_policy::{Level, Policy, PolicySource};

/// How long a TLSRPT record lookup (or its absence) is kept.
const RECORD_TTL: Duration = Duration::from_secs(3600);
/// Domains whose record lookup is kept at once.
const MAX_CACHED_RECORDS: usize = 10_000;
/// Domains whose MTA-STS policy is kept at once.
const MAX_STS_POLICIES: usize = 10_000;

/// Hands a report message to the daemon's workers (see
/// [`TlsRpt::set_submitter`]); the error says why it was not taken.
pub type SubmitFn = Box<dyn Fn(Job) -> Result<(), String> + Send + Sync>;

/// The `[tls_rpt]` settings, made once.
#[derive(Clone, Debug)]
pub struct Settings {
    pub report_directory: PathBuf,
    pub organization_name: String,
    pub contact_info: String,
    /// Our host name: the TLS-Report-Submitter and file names.
    pub submitter: String,
    /// Envelope sender and From: of submitted reports.
    pub sender: String,
    pub no_policy_found: bool,
    pub submit: bool,
}

impl Settings {
    /// From `[tls_rpt]`, with the documented fallbacks of empty values.
    pub fn from_config(config: &Config) -> Self {
        let t = &config.tls_rpt;
        let submitter = config.myhostname();
        let sender = if t.sender.trim().is_empty() {
            format!("postmaster@{submitter}")
        } else {
            t.sender.trim().to_string()
        };
        Settings {
            report_directory: PathBuf::from(&t.report_directory),
            organization_name: if t.organization_name.trim().is_empty() {
                submitter.clone()
            } else {
                t.organization_name.trim().to_string()
            },
            contact_info: if t.contact_info.trim().is_empty() {
                sender.clone()
            } else {
                t.contact_info.trim().to_string()
            },
            submitter,
            sender,
            no_policy_found: t.no_policy_found,
            submit: t.submit,
        }
    }
}

/// One TLS attempt as the deliverer saw it.
#[derive(Clone, Copy, Debug)]
pub struct Session<'a> {
    /// The policy domain (the next-hop domain).
    pub domain: &'a str,
    /// The MX host name (receiving-mx-hostname).
    pub mx_host: &'a str,
    pub receiving_ip: Option<IpAddr>,
    /// Our source address (sending-mta-ip).
    pub sending_ip: Option<IpAddr>,
}

/// The RFC 8460 result type of a failed handshake; `None` for a local
/// problem (configuration), which says nothing about the receiver.
pub fn tls_failure_result(failure: &TlsFailure) -> Option<ResultType> {
    match failure {
        TlsFailure::Handshake(_) => Some(ResultType::ValidationFailure),
        TlsFailure::NotVerified(problem, _) => Some(match problem {
            CertProblem::NameMismatch => ResultType::CertificateHostMismatch,
            CertProblem::Expired => ResultType::CertificateExpired,
            CertProblem::NotTrusted | CertProblem::NoCertificate => {
                ResultType::CertificateNotTrusted
            }
            CertProblem::Fingerprint | CertProblem::TlsaMismatch => ResultType::ValidationFailure,
        }),
        TlsFailure::Config(_) => None,
    }
}

/// The RFC 8460 result type of a "dane-only" refusal; `None` for a local
/// configuration problem.
pub fn dane_refusal_result(refusal: &DaneRefusal) -> Option<ResultType> {
    match refusal.kind {
        RefusalKind::Config => None,
        RefusalKind::LookupError => Some(ResultType::DnssecInvalid),
        RefusalKind::NoTlsa => Some(ResultType::DaneRequired),
        RefusalKind::Unusable => Some(ResultType::TlsaInvalid),
    }
}

/// A next-hop host that can be a policy domain: a name, not an address
/// literal or a path.
pub fn policy_domain(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.');
    let bad = host.is_empty()
        || host.parse::<IpAddr>().is_ok()
        || host.contains(['[', ']', '/', ':', ' ', '!'])
        || !host.contains('.') && host.eq_ignore_ascii_case("localhost");
    (!bad).then(|| host.to_ascii_lowercase())
}

/// What one flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Report files written.
    pub written: Vec<PathBuf>,
    /// Domain-days without a TLSRPT record (not written).
    pub no_record: usize,
    /// Reports that could not be written.
    pub failed: usize,
    /// Messages handed to the workers.
    pub submitted: usize,
}

/// The reporter: counts, settings and the edges. One per daemon (or
/// `mailhop send --direct` run), shared by every deliverer.
pub struct TlsRpt {
    settings: Settings,
    counts: Aggregator,
    dns: Arc<dyn DnsLookup>,
    records: Mutex<HashMap<String, (Instant, Option<TlsRptRecord>)>>,
    sts: Mutex<HashMap<String, PolicyKey>>,
    submitter: Mutex<Option<SubmitFn>>,
}

impl std::fmt::Debug for TlsRpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRpt")
            .field("settings", &self.settings)
            .field("domain_days", &self.counts.len())
            .finish_non_exhaustive()
    }
}

impl TlsRpt {
    /// `None` unless `[tls_rpt] enabled`.
    pub fn from_config(config: &Config, dns: Arc<dyn DnsLookup>) -> Option<Arc<TlsRpt>> {
        config
            .tls_rpt
            .enabled
            .then(|| Arc::new(TlsRpt::new(Settings::from_config(config), dns)))
    }

    pub fn new(settings: Settings, dns: Arc<dyn DnsLookup>) -> Self {
        TlsRpt {
            settings,
            counts: Aggregator::new(),
            dns,
            records: Mutex::default(),
            sts: Mutex::default(),
            submitter: Mutex::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counts (for tests and status).
    pub fn counts(&self) -> &Aggregator {
        &self.counts
    }

    /// Where report messages go when `[tls_rpt] submit` is on (the daemon
    /// sets its worker pool here).
    pub fn set_submitter(&self, submit: SubmitFn) {
        *self
            .submitter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(submit);
    }

    /// The policy a session under `policy` is counted under, or `None`
    /// when it is not counted.
    fn policy_key(&self, domain: &str, policy: &Policy, mx_host: &str) -> Option<PolicyKey> {
        // DANE, or its "encrypt" fallback for unusable TLSA records (which
        // keeps them).
        if policy.level == Level::Dane
            || (policy.source == PolicySource::Dane && !policy.tlsa.is_empty())
        {
            return Some(PolicyKey {
                policy_type: PolicyType::Tlsa,
                policy_string: policy.tlsa.iter().map(|r| r.presentation()).collect(),
                mx_host: vec![mx_host.to_ascii_lowercase()],
            });
        }
        if policy.source == PolicySource::MtaSts {
            return Some(self.sts_policy(domain));
        }
        (self.settings.no_policy_found && policy.level != Level::None).then(PolicyKey::no_policy)
    }

    /// The MTA-STS policy noted for `domain` (an empty `sts` policy when
    /// none was).
    fn sts_policy(&self, domain: &str) -> PolicyKey {
        let sts = self.sts.lock().unwrap_or_else(PoisonError::into_inner);
        sts.get(&domain.to_ascii_lowercase())
            .cloned()
            .unwrap_or(PolicyKey {
                policy_type: PolicyType::Sts,
                policy_string: Vec::new(),
                mx_host: Vec::new(),
            })
    }

    fn failure(session: &Session<'_>, result_type: ResultType) -> Outcome {
        Outcome::Failure(FailureKey {
            result_type,
            sending_mta_ip: session.sending_ip,
            receiving_mx_hostname: (!session.mx_host.is_empty())
                .then(|| session.mx_host.to_ascii_lowercase()),
            receiving_ip: session.receiving_ip,
        })
    }

    /// Counts one TLS attempt under the server's `policy`: `None` a
    /// success, else the failure's result type.
    pub fn record_session(
        &self,
        policy: &Policy,
        session: &Session<'_>,
        result: Option<ResultType>,
    ) {
        let Some(domain) = policy_domain(session.domain) else {
            return;
        };
        let Some(key) = self.policy_key(&domain, policy, session.mx_host) else {
            return;
        };
        // A session under the fallback of unusable TLSA records is a TLSA
        // failure even when TLS itself worked (RFC 8460 tlsa-invalid).
        let fallback = policy.level != Level::Dane
            && policy.source == PolicySource::Dane
            && !policy.tlsa.is_empty();
        let outcome = match result {
            None if fallback => Self::failure(session, ResultType::TlsaInvalid),
            None => Outcome::Success,
            Some(result_type) => Self::failure(session, result_type),
        };
        self.counts
            .record(SystemTime::now(), &domain, &key, outcome);
    }

    /// Counts a server that a "dane-only" policy refused before any
    /// connection (policy type `tlsa` without records).
    pub fn record_dane_refusal(&self, domain: &str, mx_host: &str, refusal: &DaneRefusal) {
        let (Some(domain), Some(result_type)) =
            (policy_domain(domain), dane_refusal_result(refusal))
        else {
            return;
        };
        let key = PolicyKey {
            policy_type: PolicyType::Tlsa,
            policy_string: Vec::new(),
            mx_host: vec![mx_host.to_ascii_lowercase()],
        };
        let session = Session {
            domain: &domain,
            mx_host,
            receiving_ip: None,
            sending_ip: None,
        };
        self.counts.record(
            SystemTime::now(),
            &domain,
            &key,
            Self::failure(&session, result_type),
        );
    }

    /// For the MTA-STS code: the policy that applies to `domain` now — the
    /// policy file's lines (`version: STSv1`, `mode: ...`, `mx: ...`,
    /// `max_age: ...`) and its `mx` patterns. Sessions of a delivery whose
    /// [`Policy::source`] is [`PolicySource::MtaSts`] are then counted
    /// under it by the deliverer's hook; call this before delivering.
    pub fn note_sts_policy(&self, domain: &str, lines: &[String], mx_patterns: &[String]) {
        let Some(domain) = policy_domain(domain) else {
            return;
        };
        let mut sts = self.sts.lock().unwrap_or_else(PoisonError::into_inner);
        if !sts.contains_key(&domain) && sts.len() >= MAX_STS_POLICIES {
            sts.clear();
        }
        sts.insert(
            domain,
            PolicyKey {
                policy_type: PolicyType::Sts,
                policy_string: lines.to_vec(),
                mx_host: mx_patterns.to_vec(),
            },
        );
    }

    /// For the MTA-STS code: a failure of the policy itself for `domain` —
    /// [`ResultType::StsPolicyFetchError`] (the HTTPS fetch failed),
    /// [`ResultType::StsPolicyInvalid`] (it did not parse) or
    /// [`ResultType::StsWebpkiInvalid`] (the policy host's certificate did
    /// not verify) — counted once per attempt under the last noted policy
    /// (or an empty `sts` one). `session` names the server when one was
    /// involved.
    pub fn record_sts_failure(
        &self,
        domain: &str,
        result_type: ResultType,
        session: Option<&Session<'_>>,
    ) {
        let Some(domain) = policy_domain(domain) else {
            return;
        };
        let key = self.sts_policy(&domain);
        let none = Session {
            domain: &domain,
            mx_host: "",
            receiving_ip: None,
            sending_ip: None,
        };
        let outcome = Self::failure(session.unwrap_or(&none), result_type);
        self.counts
            .record(SystemTime::now(), &domain, &key, outcome);
    }

    /// The TLSRPT record of `domain`, through the cache.
    fn lookup_record(&self, domain: &str) -> Option<TlsRptRecord> {
        let now = Instant::now();
        {
            let cache = self.records.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, found)) = cache.get(domain)
                && now.saturating_duration_since(*at) < RECORD_TTL
            {
                return found.clone();
            }
        }
        let name = record::record_name(domain);
        let found = match self.dns.txt(&name) {
            Ok(answer) => match record::select(&answer.records) {
                Ok(found) => Some(found),
                Err(why) => {
                    log::debug!("tls_rpt: {name}: {why}");
                    None
                }
            },
            Err(e) => {
                log::debug!("tls_rpt: TXT lookup {name}: {e}");
                None
            }
        };
        let mut cache = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_RECORDS {
            cache.clear();
        }
        cache.insert(domain.to_string(), (now, found.clone()));
        found
    }

    /// Writes (and submits) the reports of the days that ended before
    /// `now`'s day, or of every day counted with `all` (a one-shot process
    /// that will not see the day end).
    pub fn flush(&self, now: SystemTime, all: bool) -> Flushed {
        let mut flushed = Flushed::default();
        for counts in self.counts.take(now, all) {
            let Some(found) = self.lookup_record(&counts.domain) else {
                flushed.no_record += 1;
                log::debug!(
                    "tls_rpt: {} {}: no TLSRPT record; report dropped",
                    counts.domain,
                    counts.day.date()
                );
                continue;
            };
            self.write_and_submit(&counts, &found, now, &mut flushed);
        }
        if flushed.failed > 0 || !flushed.written.is_empty() {
            log::info!(
                "tls_rpt: {} report(s) written, {} failed, {} message(s) submitted, {} domain-day(s) without a TLSRPT record",
                flushed.written.len(),
                flushed.failed,
                flushed.submitted,
                flushed.no_record
            );
        }
        flushed
    }

    fn write_and_submit(
        &self,
        counts: &DomainDay,
        found: &TlsRptRecord,
        now: SystemTime,
        flushed: &mut Flushed,
    ) {
        let s = &self.settings;
        let unique = format!("{:016x}", rand::random::<u64>());
        let report_id = format!(
            "{}.{}.{unique}@{}",
            counts.day.date(),
            counts.domain,
            s.submitter
        );
        let json =
            Report::build(counts, &s.organization_name, &s.contact_info, &report_id).to_json();
        let name = report::file_name(&s.submitter, &counts.domain, counts.day, &unique, "json");
        match write_atomically(&s.report_directory, &name, json.as_bytes()) {
            Ok(path) => {
                log::info!(
                    "tls_rpt: report {report_id} for {} {} written to {}",
                    counts.domain,
                    counts.day.date(),
                    path.display()
                );
                flushed.written.push(path);
            }
            Err(e) => {
                log::warn!(
                    "tls_rpt: cannot write the report for {} {} in {}: {e}",
                    counts.domain,
                    counts.day.date(),
                    s.report_directory.display()
                );
                flushed.failed += 1;
            }
        }
        if !s.submit {
            return;
        }
        let date = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let attachment =
            report::file_name(&s.submitter, &counts.domain, counts.day, &unique, "json.gz");
        for rua in &found.rua {
            let to = match rua {
                Rua::Mailto(to) => to,
                Rua::Https(uri) => {
                    log::warn!(
                        "tls_rpt: {}: https report address {uri} is not supported; report {report_id} not sent there",
                        counts.domain
                    );
                    continue;
                }
            };
            let parts = message::Parts {
                from: &s.sender,
                to,
                policy_domain: &counts.domain,
                submitter: &s.submitter,
                report_id: &report_id,
                file_name: &attachment,
                json: &json,
                date,
                unique: &unique,
            };
            match self.submit(&parts) {
                Ok(()) => flushed.submitted += 1,
                Err(e) => log::warn!("tls_rpt: report {report_id} to <{to}> not submitted: {e}"),
            }
        }
    }

    /// Builds the message of `parts` and hands it to the submitter.
    fn submit(&self, parts: &message::Parts<'_>) -> Result<(), String> {
        let bytes =
            message::build(parts).map_err(|e| format!("cannot compress the report: {e}"))?;
        let data = String::from_utf8(bytes).map_err(|_| "the message is not ASCII".to_string())?;
        let job = Job::new(
            format!("tlsrpt-{}", parts.unique),
            parts.from,
            [JobRecipient::new(parts.to)],
            MessageRef::Data { data },
        );
        let submitter = self
            .submitter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match submitter.as_ref() {
            Some(submit) => submit(job),
            None => Err("no worker pool to submit through (only the daemon submits)".into()),
        }
    }
}

/// Writes `data` to `dir/name` through a temporary file in `dir` renamed
/// into place (readers never see a partial report). Creates `dir`.
pub fn write_atomically(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tlsrpt")
        .tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    let path = dir.join(name);
    temp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

#[cfg(test)]
#[path = "tlsrpt_tests.rs"]
mod tests;
