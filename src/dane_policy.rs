//! The per-server DANE decision (RFC 7672 section 2.2, as Postfix's
//! `dane_init` makes it): for a destination whose policy asks for "dane"
//! or "dane-only", what one MX host's DNSSEC status and TLSA records make
//! of that policy before the server is tried — DANE with its usable TLSA
//! records, a fallback level ("may", "encrypt") with the reason, or a
//! refusal that skips the server with 4.7.5.
//!
//! I/O-free: the TLSA lookup is a closure (the deliverer passes the stub
//! resolver's). Nothing here panics; every outcome is a value.

pub use crate::config::InsecureMxPolicy;
use crate::dane::Tlsa;
use crate::dns::{Answer, DnsError, DnsErrorKind};
use crate::tls_policy::{DaneMode, Level, Policy, PolicySource};

/// What the deliverer knows when it decides for one server.
#[derive(Clone, Copy, Debug)]
pub struct DaneContext<'a> {
    /// `[dns] support = "dnssec"`.
    pub dnssec_lookups: bool,
    /// `[dns] ignore_mx_lookup_error` (which ignores DNSSEC problems too).
    pub ignore_mx_lookup_error: bool,
    pub insecure_mx_policy: InsecureMxPolicy,
    /// The destination as written, for warnings.
    pub destination: &'a str,
    /// The MX host name (`_PORT._tcp.<host>` is the TLSA name).
    pub host: &'a str,
    pub port: u16,
    /// The host is an IP literal: no TLSA name.
    pub host_is_ip: bool,
    /// `Some(validated)` when the route came from an MX lookup.
    pub mx_secure: Option<bool>,
    /// The address records of the host were validated.
    pub addr_secure: bool,
    /// The host name is an alias of this name (the end of its CNAME
    /// chain): its TLSA records are looked for there first.
    pub canonical: Option<&'a str>,
}

/// A server that cannot be tried under the policy: skipped with this DSN
/// text (status 4.7.5); `warning` is logged (Postfix: the administrator's
/// fault) when set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaneRefusal {
    pub text: String,
    pub warning: Option<String>,
    /// Why, for TLS reports ([`crate::tlsrpt`]).
    pub kind: RefusalKind,
}

/// The cause of a [`DaneRefusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// A local configuration problem (DNSSEC lookups off ...).
    Config,
    /// The TLSA lookup failed (not "no records": SERVFAIL, bogus ...).
    LookupError,
    /// "dane-only" and the host has no DNSSEC-validated TLSA records.
    NoTlsa,
    /// "dane-only" and the host's TLSA records cannot authenticate.
    Unusable,
}

/// Why DANE does not apply to a server, in Postfix's three kinds.
enum Incompatible {
    /// The configuration (DNSSEC lookups off ...): "dane" → may with a
    /// warning, "dane-only" → configuration problem.
    Config(String),
    /// The destination has no DNSSEC or no TLSA: "dane" → may, "dane-only"
    /// → refused with the reason.
    Destination(&'static str),
    /// TLSA records exist but cannot authenticate: "dane" → encrypt,
    /// "dane-only" → refused with the reason.
    CannotAuthenticate(&'static str),
}

/// The policy `policy` (level [`Level::Dane`] with a [`DaneMode`]) becomes
/// for one server; `lookup_tlsa` is asked for `_PORT._tcp.HOST` only when
/// the host's records are secure. A policy without `dane` is returned as it
/// is.
pub fn decide(
    policy: &Policy,
    context: &DaneContext<'_>,
    lookup_tlsa: impl FnMut(&str) -> Result<Answer<Tlsa>, DnsError>,
) -> Result<Policy, DaneRefusal> {
    let Some(mode) = policy.dane else {
        return Ok(policy.clone());
    };
    let level_name = match mode {
        DaneMode::Opportunistic => "dane",
        DaneMode::Mandatory => "dane-only",
    };
    let incompatible = |why: Incompatible| fall_back(policy, mode, why);
    if !context.dnssec_lookups {
        return incompatible(Incompatible::Config(format!(
            "{}: {level_name} configured with dnssec lookups disabled",
            context.destination
        )));
    }
    if context.ignore_mx_lookup_error && context.mx_secure.is_some() {
        return incompatible(Incompatible::Config(format!(
            "{}: {level_name} configured with MX lookup errors ignored",
            context.destination
        )));
    }
    let mx_insecure = context.mx_secure == Some(false);
    if mx_insecure
        && (mode == DaneMode::Mandatory || context.insecure_mx_policy == InsecureMxPolicy::May)
    {
        return incompatible(Incompatible::Destination("non DNSSEC destination"));
    }
    // The host's own records decide whether its TLSA records are looked up
    // (an insecure host has none that count: "no TLSA records found").
    if context.host_is_ip || !context.addr_secure {
        return incompatible(Incompatible::Destination("no TLSA records found"));
    }
    // RFC 7672 section 2.2.2: an alias's TLSA records are looked for at
    // the end of its CNAME chain first, then at the name itself; a failed
    // lookup at the first is not followed by the second.
    let mut lookup_tlsa = lookup_tlsa;
    let mut bases: Vec<&str> = Vec::with_capacity(2);
    bases.extend(
        context
            .canonical
            .filter(|c| !c.eq_ignore_ascii_case(context.host)),
    );
    bases.push(context.host);
    let mut found = Vec::new();
    let mut name = String::new();
    for base in &bases {
        name = format!("_{}._tcp.{base}", context.port);
        match lookup_tlsa(&name) {
            Ok(answer) if answer.authenticated && !answer.records.is_empty() => {
                found = answer.records;
                break;
            }
            // An unsigned answer in a signed zone cannot happen with a
            // validating resolver; treat it as no records, as Postfix does.
            Ok(_) => {}
            Err(e) if matches!(e.kind, DnsErrorKind::NotFound | DnsErrorKind::NoData) => {}
            Err(e) => {
                return Err(DaneRefusal {
                    text: format!("TLSA lookup error for {}:{}", context.host, context.port),
                    warning: Some(format!("DANE TLSA lookup problem: {name}: {e}")),
                    kind: RefusalKind::LookupError,
                });
            }
        }
    }
    let records = found;
    if records.is_empty() {
        return incompatible(Incompatible::Destination("no TLSA records found"));
    }
    let usable: Vec<Tlsa> = records.iter().filter(|r| r.usable()).cloned().collect();
    if usable.is_empty() {
        // The records stay with the "encrypt" fallback: TLS-RPT reports
        // them (policy type tlsa, result tlsa-invalid).
        return incompatible(Incompatible::CannotAuthenticate("TLSA records unusable")).map(
            |mut fallback| {
                fallback.tlsa = records;
                fallback
            },
        );
    }
    if mx_insecure && context.insecure_mx_policy == InsecureMxPolicy::Encrypt {
        return incompatible(Incompatible::CannotAuthenticate(
            "Verification not possible, MX RRset is insecure",
        ));
    }
    let count = usable.len();
    let mut decided = policy.clone();
    decided.level = Level::Dane;
    decided.dane = None;
    decided.tlsa = usable;
    decided.half_dane = mx_insecure;
    // DANE-TA certificates must name the MX host, or the end of its CNAME
    // chain (RFC 7672 section 3.2.2).
    decided.matches = bases
        .iter()
        .map(|base| crate::tls_policy::MatchRule::Name(base.to_string()))
        .collect();
    decided.source = PolicySource::Dane;
    decided.reason = format!(
        "{count} usable TLSA record{} for {name}{}",
        if count == 1 { "" } else { "s" },
        if mx_insecure {
            " (MX RRset insecure: half-dane, never Verified)"
        } else {
            ""
        }
    );
    Ok(decided)
}

/// Postfix's `dane_incompat`: the fallback of "dane", the refusal of
/// "dane-only".
fn fall_back(policy: &Policy, mode: DaneMode, why: Incompatible) -> Result<Policy, DaneRefusal> {
    let (level, reason, warning, kind) = match why {
        Incompatible::Config(text) => (Level::May, text.clone(), Some(text), RefusalKind::Config),
        Incompatible::Destination(text) => {
            (Level::May, text.to_string(), None, RefusalKind::NoTlsa)
        }
        Incompatible::CannotAuthenticate(text) => (
            Level::Encrypt,
            text.to_string(),
            None,
            RefusalKind::Unusable,
        ),
    };
    if mode == DaneMode::Mandatory {
        return Err(match warning {
            Some(warning) => DaneRefusal {
                text: "client TLS configuration problem".into(),
                warning: Some(warning),
                kind,
            },
            None => DaneRefusal {
                text: reason,
                warning: None,
                kind,
            },
        });
    }
    if let Some(warning) = &warning {
        log::warn!("{warning}");
    }
    let mut decided = policy.clone();
    decided.level = level;
    decided.dane = None;
    decided.tlsa = Vec::new();
    decided.matches = Vec::new();
    decided.source = PolicySource::Dane;
    decided.reason = reason;
    Ok(decided)
}

#[cfg(test)]
#[path = "dane_policy_tests.rs"]
mod tests;
