//! Delivery jobs and their results: the wire types of the job protocol
//! (newline-delimited JSON) and of `mailhop send --json`, plus the
//! Postfix-style text form of a result.
//!
//! Parsing is strict (`deny_unknown_fields`): a malformed job is an error
//! naming the problem, never a guess.

use serde::{Deserialize, Serialize};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::nexthop::Protocol;
use crate::recipients::{Settled, Status, TlsPolicyNote, TlsSummary};
use crate::smtp::client::Recipient;
use crate::smtp::command::{Notify, Ret};

/// SMTP or LMTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Smtp,
    Lmtp,
}

/// One recipient of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecipient {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<NotifyWord>>,
}

impl JobRecipient {
    /// A recipient with its address only (no ORCPT, no NOTIFY).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            orcpt: None,
            notify: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyWord {
    Success,
    Failure,
    Delay,
    Never,
}

/// Turns a job's notify list into DSN NOTIFY flags; "never" with others is an error.
pub fn notify_flags(words: Option<&[NotifyWord]>) -> Result<Notify, String> {
    let mut notify = Notify::default();
    for word in words.unwrap_or(&[]) {
        match word {
            NotifyWord::Success => notify.success = true,
            NotifyWord::Failure => notify.failure = true,
            NotifyWord::Delay => notify.delay = true,
            NotifyWord::Never => notify.never = true,
        }
    }
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err("notify: \"never\" cannot be combined with other conditions".into());
    }
    Ok(notify)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetWord {
    Full,
    Hdrs,
}

impl From<RetWord> for Ret {
    fn from(word: RetWord) -> Self {
        match word {
            RetWord::Full => Ret::Full,
            RetWord::Hdrs => Ret::Hdrs,
        }
    }
}

/// Where the message is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "MessageFields")]
pub enum MessageRef {
    Path {
        path: String,
    },
    Data {
        data: String,
    },
    /// `{"fd":true}`: the file descriptor passed with SCM_RIGHTS on the
    /// job's connection (the next one received, in order; see
    /// docs/job-protocol.md). Only the daemon takes it.
    Fd {
        fd: bool,
    },
}

/// The `message` object as it is parsed: one pass, no buffering (an
/// untagged enum would first copy the object into serde's `Content`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFields {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    fd: Option<bool>,
}

impl TryFrom<MessageFields> for MessageRef {
    type Error = &'static str;

    fn try_from(fields: MessageFields) -> Result<Self, Self::Error> {
        match (fields.path, fields.data, fields.fd) {
            (Some(path), None, None) => Ok(MessageRef::Path { path }),
            (None, Some(data), None) => Ok(MessageRef::Data { data }),
            (None, None, Some(true)) => Ok(MessageRef::Fd { fd: true }),
            (None, None, Some(false)) => Err("message: \"fd\" must be true"),
            _ => Err("message must have exactly one of \"path\", \"data\" and \"fd\""),
        }
    }
}

/// Connection-cache hints of a job (Postfix's qmgr CONN_LOAD / CONN_STORE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheHints {
    #[serde(default)]
    pub load: bool,
    #[serde(default)]
    pub store: bool,
}

/// One delivery job, as a line of the job protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub id: String,
    #[serde(default)]
    pub transport: TransportKind,
    /// Default: `[smtp] relayhost` when set, else each recipient's domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<String>,
    pub sender: String,
    /// At most [`MAX_RECIPIENTS`] are read: a longer list is refused
    /// while it is parsed, before it takes memory.
    #[serde(deserialize_with = "bounded_recipients")]
    pub recipients: Vec<JobRecipient>,
    pub message: MessageRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<RetWord>,
    /// The sender requested SMTPUTF8 (Postfix's SMTPUTF8_FLAG_REQUESTED;
    /// see `smtp::smtputf8` for when it is required).
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 8689 REQUIRETLS: deliver only over TLS to an authenticated
    /// server (DANE, MTA-STS, verify, secure) that announces REQUIRETLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
    /// When the message entered the mail system, UNIX seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheHints>,
}

/// A job that cannot be run: the error result of the protocol.
/// `kind` says what went wrong (`mailhop send` picks its exit code from
/// it); `retryable: true` (left out when false) marks temporary trouble
/// on the daemon's side (too many connections, no file descriptors, a
/// quota): the same job may succeed later, and `mailhop send` exits 75.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The job's id when it could be read.
    pub id: Option<String>,
    pub error: String,
    #[serde(default)]
    pub kind: JobErrorKind,
    #[serde(default, skip_serializing_if = "is_false")]
    pub retryable: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl JobError {
    fn of(kind: JobErrorKind, id: Option<String>, error: impl Into<String>) -> Self {
        Self {
            id,
            error: error.into(),
            kind,
            retryable: kind == JobErrorKind::Temporary,
        }
    }

    /// The job is malformed or a field is wrong (`invalid job: ...`,
    /// `malformed job: ...`).
    pub fn invalid(id: Option<String>, error: impl Into<String>) -> Self {
        Self::of(JobErrorKind::InvalidJob, id, error)
    }

    /// The peer may not submit jobs or read the message.
    pub fn permission_denied(id: Option<String>, error: impl Into<String>) -> Self {
        Self::of(JobErrorKind::PermissionDenied, id, error)
    }

    /// The message cannot be read.
    pub fn unreadable_message(id: Option<String>, error: impl Into<String>) -> Self {
        Self::of(JobErrorKind::UnreadableMessage, id, error)
    }

    /// Anything else the daemon refuses (a line or command it cannot take,
    /// trouble inside the daemon).
    pub fn other(id: Option<String>, error: impl Into<String>) -> Self {
        Self::of(JobErrorKind::Other, id, error)
    }

    /// A retryable error: temporary trouble, try the job again later.
    pub fn temporary(id: Option<String>, error: impl Into<String>) -> Self {
        Self::of(JobErrorKind::Temporary, id, error)
    }

    /// What kind of refusal this is (an answer that says `retryable` is
    /// temporary whatever its kind).
    pub fn kind(&self) -> JobErrorKind {
        if self.retryable {
            JobErrorKind::Temporary
        } else {
            self.kind
        }
    }
}

/// The kinds of error answers: the `kind` field of the protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorKind {
    /// Temporary trouble on the daemon's side (`retryable`).
    Temporary,
    /// The peer may not submit jobs or read the message.
    PermissionDenied,
    /// The message file cannot be read.
    UnreadableMessage,
    /// A field is wrong, or the line is not a job.
    InvalidJob,
    /// Anything else: a line or command the daemon cannot take, or
    /// trouble inside the daemon.
    #[default]
    Other,
}

/// Most recipients one job may have, whatever the configuration says
/// (`[daemon] max_recipients` may only lower it).
pub const MAX_RECIPIENTS: usize = 10_000;

/// Latest `arrival_time` a job may carry: 9999-12-31 23:59:59 UTC. Later
/// values cannot be a real time and would overflow time arithmetic.
pub const MAX_ARRIVAL_TIME: u64 = 253_402_300_799;
/// The recipient list, refused as soon as it grows past
/// [`MAX_RECIPIENTS`] (a 16 MiB line could otherwise hold a million).
fn bounded_recipients<'de, D>(deserializer: D) -> Result<Vec<JobRecipient>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<JobRecipient>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of recipients")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(rcpt) = seq.next_element::<JobRecipient>()? {
                if out.len() >= MAX_RECIPIENTS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_RECIPIENTS} recipients"
                    )));
                }
                out.push(rcpt);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// What a line that is not a valid job still tells: its `id` when that is
/// a string, and whether it is a control command. Parsed without keeping
/// anything else (unknown fields are skipped, not stored).
#[derive(Deserialize, Default)]
pub struct LineProbe {
    #[serde(default)]
    pub id: ProbeId,
    #[serde(default)]
    pub command: Option<serde::de::IgnoredAny>,
}

/// A probed `id`: the string, or nothing for any other value.
#[derive(Default)]
pub struct ProbeId(pub Option<String>);

impl<'de> Deserialize<'de> for ProbeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ProbeId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProbeId, E> {
                Ok(ProbeId(Some(v.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<ProbeId, E> {
                Ok(ProbeId(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ProbeId, E> {
                Ok(ProbeId(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ProbeId, E> {
                Ok(ProbeId(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ProbeId, E> {
                Ok(ProbeId(None))
            }
            fn visit_unit<E>(self) -> Result<ProbeId, E> {
                Ok(ProbeId(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ProbeId, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(ProbeId(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ProbeId, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(ProbeId(None))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Probes a line that did not parse as a job (see [`LineProbe`]); `None`
/// when it is not a JSON object at all.
pub fn probe_line(line: &[u8]) -> Option<LineProbe> {
    serde_json::from_slice::<LineProbe>(line).ok()
}

/// Parses and checks one protocol line. The error names the problem and
/// carries the id whenever the line had one. Nothing but the job itself is
/// built: no intermediate JSON tree (a hostile line of a million small
/// objects costs no more than its bytes).
pub fn parse_job(line: &[u8]) -> Result<CheckedJob, JobError> {
    let job: Job = match serde_json::from_slice(line) {
        Ok(job) => job,
        Err(e) => {
            let kind = match e.classify() {
                serde_json::error::Category::Data => "invalid job",
                _ => "malformed job",
            };
            let id = probe_line(line).and_then(|p| p.id.0);
            return Err(JobError::invalid(id, format!("{kind}: {e}")));
        }
    };
    job.into_checked()
}

/// A job that passed [`Job::check`], with what delivery reads from it
/// parsed once: the recipients as the SMTP client takes them (NOTIFY
/// flags parsed), the protocol, the arrival time. Only
/// [`Job::into_checked`] makes one; it reads as the [`Job`] it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedJob {
    job: Job,
    envelope_recipients: Vec<Recipient>,
    protocol: Protocol,
    arrival: Option<SystemTime>,
}

impl std::ops::Deref for CheckedJob {
    type Target = Job;

    fn deref(&self) -> &Job {
        &self.job
    }
}

impl CheckedJob {
    /// The job's recipients as the SMTP client takes them, in job order.
    pub fn envelope_recipients(&self) -> &[Recipient] {
        &self.envelope_recipients
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// `arrival_time` as a time (`None` without one).
    pub fn arrival(&self) -> Option<SystemTime> {
        self.arrival
    }

    pub fn job(&self) -> &Job {
        &self.job
    }
}

/// The job's text fields that must not carry control characters (they
/// reach SMTP commands and log lines) and have no per-recipient outcome
/// to carry the error.
fn control_free(field: &str, text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err(format!("invalid job: {field} contains a control character"));
    }
    Ok(())
}

impl Job {
    /// An SMTP job with the required fields; every other field takes its
    /// protocol default (set them with struct update syntax).
    pub fn new(
        id: impl Into<String>,
        sender: impl Into<String>,
        recipients: impl IntoIterator<Item = JobRecipient>,
        message: MessageRef,
    ) -> Self {
        Self {
            id: id.into(),
            transport: TransportKind::Smtp,
            nexthop: None,
            sender: sender.into(),
            recipients: recipients.into_iter().collect(),
            message,
            envid: None,
            ret: None,
            smtputf8: false,
            requiretls: false,
            arrival_time: None,
            cache: None,
        }
    }

    /// Checks the job ([`Job::check`]) and parses what delivery reads
    /// from it, once.
    pub fn into_checked(self) -> Result<CheckedJob, JobError> {
        let error = |e: String| JobError::invalid(Some(self.id.clone()), e);
        self.check().map_err(error)?;
        let envelope_recipients = self
            .recipients
            .iter()
            .map(|rcpt| {
                Ok(Recipient {
                    address: rcpt.address.clone(),
                    orcpt: rcpt.orcpt.clone(),
                    notify: notify_flags(rcpt.notify.as_deref())?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(error)?;
        let protocol = match self.transport {
            TransportKind::Smtp => Protocol::Smtp,
            TransportKind::Lmtp => Protocol::Lmtp,
        };
        // check() refused a time no clock can hold.
        let arrival = self
            .arrival_time
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
        Ok(CheckedJob {
            job: self,
            envelope_recipients,
            protocol,
            arrival,
        })
    }

    /// Checks what serde cannot: limits and combinations.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 256 || self.id.chars().any(char::is_control) {
            return Err("invalid job: id must be 1 to 256 printable characters".into());
        }
        if self.recipients.is_empty() {
            return Err("invalid job: no recipients".into());
        }
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(format!(
                "invalid job: more than {MAX_RECIPIENTS} recipients"
            ));
        }
        // Control characters in the sender or a recipient address are the
        // recipients' outcome, as in Postfix: bounced 5.1.7 / 5.1.3.
        for rcpt in &self.recipients {
            notify_flags(rcpt.notify.as_deref())?;
            if let Some(orcpt) = &rcpt.orcpt {
                control_free("orcpt", orcpt)?;
            }
        }
        if let Some(envid) = &self.envid {
            control_free("envid", envid)?;
        }
        if let Some(nexthop) = &self.nexthop {
            control_free("nexthop", nexthop)?;
        }
        if let MessageRef::Path { path } = &self.message {
            control_free("message path", path)?;
        }
        if self.transport == TransportKind::Lmtp && self.nexthop.is_none() {
            return Err("invalid job: LMTP needs a nexthop".into());
        }
        if self.arrival_time.is_some_and(|t| t > MAX_ARRIVAL_TIME) {
            return Err(format!(
                "invalid job: arrival_time must be at most {MAX_ARRIVAL_TIME} (UNIX seconds)"
            ));
        }
        Ok(())
    }
}

/// One recipient's result. Answers are written by [`JobResult::write_json`]:
/// a new field goes there too (its test compares with serde's output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientResult {
    pub address: String,
    pub status: Status,
    pub dsn: String,
    pub relay: Option<String>,
    pub diagnostic: String,
    /// The TLS of the deciding session; null for plaintext or no session.
    pub tls: Option<TlsSummary>,
    /// The TLS policy of the deciding server (level, source, reason); null
    /// when no server decided.
    #[serde(default)]
    pub tls_policy: Option<TlsPolicyNote>,
    /// Only for a sent recipient that asked NOTIFY=SUCCESS: what a DSN
    /// generator needs (RFC 3464's per-recipient fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_dsn: Option<SuccessDsn>,
}

/// The per-recipient fields of a success notification (RFC 3464 section
/// 2.3) for a recipient that asked NOTIFY=SUCCESS and was sent. `notify`
/// false: the server announced DSN and NOTIFY went on with the recipient,
/// so no notification is due from this hop (Postfix's smtp_rcpt_done);
/// true: the server did not, and the caller owes one with `action`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessDsn {
    pub notify: bool,
    /// "relayed", or "delivered" (LMTP with `[lmtp] assume_final`).
    pub action: String,
    /// Original-Recipient: the job's ORCPT as sent (`type;xtext`).
    pub original_recipient: String,
    /// Final-Recipient: `rfc822;address` (`utf-8;address` when not ASCII).
    pub final_recipient: String,
    /// Remote-MTA: `dns;host` of the server that accepted.
    pub remote_mta: Option<String>,
    /// Diagnostic-Code: `smtp;` and the server's reply.
    pub diagnostic_code: String,
}

impl SuccessDsn {
    /// The fields for `recipient` sent with `duty` by `relay` (`host[addr]:port`)
    /// with the server's `reply`; `None` unless the recipient asked NOTIFY=SUCCESS.
    pub fn for_recipient(
        recipient: &crate::smtp::client::Recipient,
        duty: Option<crate::recipients::SuccessDuty>,
        relay: Option<&str>,
        reply: &str,
    ) -> Option<Self> {
        use crate::recipients::SuccessDuty;
        let duty = duty?;
        if !recipient.notify.success {
            return None;
        }
        let (notify, action) = match duty {
            SuccessDuty::PassedOn => (false, "relayed"),
            SuccessDuty::Owed(action) => (true, action),
        };
        let kind = if recipient.address.is_ascii() {
            "rfc822;"
        } else {
            "utf-8;"
        };
        Some(Self {
            notify,
            action: action.to_string(),
            original_recipient: crate::smtp::command::orcpt_value(
                recipient.orcpt.as_deref(),
                &recipient.address,
                !recipient.address.is_ascii(),
            ),
            final_recipient: [kind, recipient.address.as_str()].concat(),
            remote_mta: relay.map(|relay| {
                let host = relay.split_once('[').map_or(relay, |(host, _)| host);
                ["dns;", host].concat()
            }),
            diagnostic_code: ["smtp;", reply].concat(),
        })
    }
}

/// The result of one job (see [`JobResult::write_json`] for its JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    pub id: String,
    pub recipients: Vec<RecipientResult>,
    /// Transcript summary (daemon results): servers tried, failure reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<String>>,
}

impl JobResult {
    pub fn new(id: impl Into<String>, settled: Vec<Settled>) -> Self {
        Self {
            log: None,
            id: id.into(),
            recipients: settled
                .into_iter()
                .map(|s| RecipientResult {
                    address: s.address,
                    status: s.outcome.status,
                    dsn: s.outcome.dsn.to_string(),
                    relay: s.outcome.relay,
                    diagnostic: s.outcome.diagnostic,
                    tls: s.outcome.tls,
                    tls_policy: s.outcome.tls_policy,
                    success_dsn: None,
                })
                .collect(),
        }
    }

    /// [`JobResult::new`] with the success-DSN fields of each sent recipient
    /// that asked NOTIFY=SUCCESS; `recipients` in the job's order, as `settled`.
    pub fn with_success_dsn(
        id: impl Into<String>,
        settled: Vec<Settled>,
        recipients: &[crate::smtp::client::Recipient],
    ) -> Self {
        let fields: Vec<Option<SuccessDsn>> = settled
            .iter()
            .zip(recipients)
            .map(|(s, recipient)| {
                SuccessDsn::for_recipient(
                    recipient,
                    s.outcome.success,
                    s.outcome.relay.as_deref(),
                    &s.outcome.diagnostic,
                )
            })
            .collect();
        let mut result = Self::new(id, settled);
        for (r, field) in result.recipients.iter_mut().zip(fields) {
            r.success_dsn = field;
        }
        result
    }

    /// One Postfix-style line per recipient.
    pub fn text_lines(&self) -> Vec<String> {
        self.recipients
            .iter()
            .map(|r| {
                format!(
                    "to=<{}>, relay={}, dsn={}, status={} ({})",
                    crate::recipients::printable_address(&r.address),
                    r.relay.as_deref().unwrap_or("none"),
                    r.dsn,
                    r.status.as_str(),
                    r.diagnostic
                )
            })
            .collect()
    }

    /// Appends the result's JSON, byte for byte what `serde_json` writes
    /// for it, without serde's per-field and per-byte machinery: strings
    /// that need no escaping (the usual ones) are copied whole, others go
    /// through `serde_json`'s own escaping.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        push_json_str(out, &self.id);
        out.extend_from_slice(b",\"recipients\":[");
        for (i, r) in self.recipients.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"address\":");
            push_json_str(out, &r.address);
            out.extend_from_slice(b",\"status\":\"");
            out.extend_from_slice(r.status.as_str().as_bytes());
            out.extend_from_slice(b"\",\"dsn\":");
            push_json_str(out, &r.dsn);
            out.extend_from_slice(b",\"relay\":");
            match &r.relay {
                Some(relay) => push_json_str(out, relay),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"diagnostic\":");
            push_json_str(out, &r.diagnostic);
            out.extend_from_slice(b",\"tls\":");
            match &r.tls {
                Some(tls) => {
                    out.extend_from_slice(b"{\"version\":");
                    push_json_str(out, &tls.version);
                    out.extend_from_slice(b",\"cipher\":");
                    push_json_str(out, &tls.cipher);
                    out.extend_from_slice(if tls.verified {
                        b",\"verified\":true,\"trust\":"
                    } else {
                        b",\"verified\":false,\"trust\":"
                    });
                    push_json_str(out, &tls.trust);
                    out.push(b'}');
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"tls_policy\":");
            match &r.tls_policy {
                Some(policy) => {
                    out.extend_from_slice(b"{\"level\":");
                    push_json_str(out, &policy.level);
                    out.extend_from_slice(b",\"source\":");
                    push_json_str(out, &policy.source);
                    out.extend_from_slice(b",\"reason\":");
                    push_json_str(out, &policy.reason);
                    out.push(b'}');
                }
                None => out.extend_from_slice(b"null"),
            }
            if let Some(dsn) = &r.success_dsn {
                out.extend_from_slice(if dsn.notify {
                    b",\"success_dsn\":{\"notify\":true,\"action\":"
                } else {
                    b",\"success_dsn\":{\"notify\":false,\"action\":"
                });
                push_json_str(out, &dsn.action);
                out.extend_from_slice(b",\"original_recipient\":");
                push_json_str(out, &dsn.original_recipient);
                out.extend_from_slice(b",\"final_recipient\":");
                push_json_str(out, &dsn.final_recipient);
                out.extend_from_slice(b",\"remote_mta\":");
                match &dsn.remote_mta {
                    Some(mta) => push_json_str(out, mta),
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b",\"diagnostic_code\":");
                push_json_str(out, &dsn.diagnostic_code);
                out.push(b'}');
            }
            out.push(b'}');
        }
        out.push(b']');
        if let Some(log) = &self.log {
            out.extend_from_slice(b",\"log\":[");
            for (i, line) in log.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_str(out, line);
            }
            out.push(b']');
        }
        out.push(b'}');
    }

    /// sysexits-style summary: 0 all sent, 75 some deferred and none
    /// bounced, 69 some bounced.
    pub fn exit_code(&self) -> i32 {
        if self.recipients.iter().any(|r| r.status == Status::Bounced) {
            69
        } else if self.recipients.iter().any(|r| r.status == Status::Deferred) {
            75
        } else {
            0
        }
    }
}

/// Appends `text` as a JSON string: copied between quotes when no byte
/// needs escaping (no `"`, `\\` or control character), else escaped by
/// `serde_json`, so the bytes are always the ones it would write.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Checked without early exit, so the compiler can use vector compares.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        // Writing to a Vec cannot fail; keep the JSON valid regardless.
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
