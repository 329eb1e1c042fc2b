//! The entry points for fuzzers and corpus replay: each takes `&[u8]` and
//! must never panic, whatever the bytes. Besides the code's own panics they
//! check a few promises of its contract with `assert!` (reply text is
//! printable and capped; a candidate list is non-empty, bounded, of enabled
//! families and without our own addresses): a failed assertion is a bug.
//!
//! One function per input mailhop takes from outside: [`smtp_reply`] (server
//! bytes into replies), [`job_line`] (client bytes into checked jobs),
//! [`nexthop`] (next-hop text into destinations), [`config`] (TOML text into
//! a configuration), [`dns_mx`] (DNS datagrams into an MX candidate
//! list), [`throttle_verdict`] (result diagnostics, which quote server
//! replies, into the scheduler's verdict), [`lmtp_ingress`] (an MTA's
//! LMTP conversation with the ingress), [`lmtp_data`] (the message bytes
//! after DATA into the spooled message), [`tlsa`] (TLSA records and
//! certificates into a DANE verdict), [`message_facts`] (a message into
//! the facts read before MAIL FROM, and into its DATA wire form) and [`mta_sts_policy`] (an MTA-STS
//! policy file, and TXT records, into a policy) and [`mime_downgrade`]
//! (a message into its 8-bit to 7-bit converted form). Each drives the same code
//! the daemon runs on that input, down to the first step that would do I/O, and touches every result so nothing is
//! optimised away. The fuzz crate in `tests/fuzz/` calls these (one line per
//! target) and `tests/fuzz_corpora.rs` replays the committed corpora through
//! them, so a crash the fuzzer once found stays a regression test.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::dns::DnsLookup;
use crate::dns::stub::ReplayedReplies;
use crate::job::{self, Job, MessageRef};
use crate::message::Message;
use crate::mxlist::{self, AddressPreference, MxSettings};
use crate::nexthop::{self, Protocol, ServiceLookup};
use crate::server::{LineRef, LineSplitter};
use crate::smtp::ehlo::Extensions;
use crate::transport::{Connection, Transport};

/// Server bytes → replies, as a session reads them: through
/// [`Connection::read_reply`] (line splitting, caps, multi-line assembly)
/// until the stream ends. Byte 0 picks the reply text limit, byte 1 how
/// many bytes each read returns (so lines straddle reads); the rest is what
/// the server sent. Every reply is also read as an EHLO reply.
pub fn smtp_reply(data: &[u8]) {
    let (Some(&limit), Some(&chunk), Some(rest)) = (data.first(), data.get(1), data.get(2..))
    else {
        return;
    };
    let limit = 16 + usize::from(limit) * 16;
    let stream = Stream {
        data: rest,
        chunk: usize::from(chunk).max(1),
    };
    let mut conn = Connection::new(stream, limit);
    // Each reply consumes at least one byte: bounded by the input.
    for _ in 0..=rest.len() {
        let Ok(reply) = conn.read_reply(Duration::from_secs(1)) else {
            break;
        };
        assert!(reply.text.len() <= limit, "reply text over its cap");
        assert!(
            reply.text.bytes().all(|b| (0x20..0x7f).contains(&b)),
            "reply text not printable ASCII"
        );
        assert!(reply.code <= 999, "reply code over three digits");
        let status = reply.status();
        std::hint::black_box((
            status,
            reply.is_positive(),
            reply.is_intermediate(),
            reply.is_protocol_violation(),
            reply.lines().map(str::len).sum::<usize>(),
        ));
        let ext = Extensions::from_reply(&reply);
        std::hint::black_box((ext.size_limit(), ext));
    }
}

/// A server that sends `data`, `chunk` bytes per read, then closes.
struct Stream<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Stream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        let (now, later) = self.data.split_at(n);
        buf.get_mut(..n)
            .ok_or_else(|| io::Error::other("short buffer"))?
            .copy_from_slice(now);
        self.data = later;
        Ok(n)
    }
}

impl Write for Stream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Stream<'_> {
    fn set_recv_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }

    fn set_send_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

/// Client bytes → jobs, as the daemon's connection reader takes them: split
/// into lines (a small line cap, so the too-long path is reached), each
/// line through the one-pass parse and check and through
/// [`job::parse_job`]; a checked job then through what the worker does
/// before the network (its next hop, its addresses, its inline message, the
/// chaining test).
pub fn job_line(data: &[u8]) {
    let mut splitter = LineSplitter::new(2048);
    splitter.feed_with(data, |event| {
        if let LineRef::Line(line) = event {
            one_job_line(line);
        }
        true
    });
    if let Some(line) = splitter.finish() {
        one_job_line(&line);
    }
}

fn one_job_line(raw: &[u8]) {
    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
    if let Ok(job) = serde_json::from_slice::<Job>(line) {
        std::hint::black_box(job.check().is_ok());
    }
    match job::parse_job(line) {
        Ok(job) => checked_job(&job),
        Err(error) => {
            std::hint::black_box(error);
        }
    }
}

fn checked_job(job: &job::CheckedJob) {
    for rcpt in &job.recipients {
        std::hint::black_box(crate::smtp::command::check_address(&rcpt.address).is_ok());
        std::hint::black_box(job::notify_flags(rcpt.notify.as_deref()).is_ok());
        // Without a next hop the domain would choose the destination.
        if let Some((_, domain)) = rcpt.address.rsplit_once('@') {
            std::hint::black_box(nexthop::check_recipient_domain(domain).is_ok());
        }
    }
    smtputf8_addresses(job);
    // The worker's time arithmetic on arrival_time.
    std::hint::black_box(crate::dispatch::arrival(job));
    std::hint::black_box(crate::smtp::command::check_address(&job.sender).is_ok());
    if let Some(hop) = &job.nexthop {
        let protocol = match job.transport {
            job::TransportKind::Smtp => Protocol::Smtp,
            job::TransportKind::Lmtp => Protocol::Lmtp,
        };
        std::hint::black_box(nexthop::parse_nexthop(hop, protocol, 25, &FixedServices).is_ok());
    }
    if let MessageRef::Data { data } = &job.message {
        let message = Message::Inline(data.clone().into_bytes());
        std::hint::black_box(message.facts().is_ok());
        static SETTINGS: std::sync::OnceLock<crate::config::Settings> = std::sync::OnceLock::new();
        let settings = SETTINGS.get_or_init(|| crate::config::Config::default().settings());
        let plan = crate::plan::Plan::of(job, settings, &FixedServices);
        std::hint::black_box(crate::dispatch::follower(job, &plan, &message).is_some());
    }
}

/// The SMTPUTF8 decision and A-label forms of a job's addresses: the wire
/// form of an address keeps its local part and is either the address
/// itself or all ASCII; without SMTPUTF8 a plan never refuses mail that
/// did not request it, and a refusal always has UTF-8 to refuse for.
fn smtputf8_addresses(job: &job::CheckedJob) {
    use crate::smtp::smtputf8::{self, AddressUtf8, Plan};
    let addresses = std::iter::once(job.sender.as_str())
        .chain(job.recipients.iter().map(|r| r.address.as_str()));
    for address in addresses {
        let wire = smtputf8::wire_address(address);
        if wire != address {
            assert!(wire.is_ascii(), "a non-ASCII A-label form: {wire:?}");
            assert_eq!(
                smtputf8::classify(address),
                AddressUtf8::Domain,
                "changed an address whose local part is not ASCII"
            );
            let local = |a: &str| a.rsplit_once('@').map(|(l, _)| l.to_string());
            assert_eq!(local(&wire), local(address), "the local part changed");
        }
    }
    for requested in [false, true] {
        for header in [false, true] {
            let facts = smtputf8::facts(
                true,
                requested,
                &job.sender,
                job.recipients.iter().map(|r| r.address.as_str()),
                header,
            );
            for offered in [false, true] {
                let plan = facts.plan(offered);
                if plan == Plan::Refuse {
                    assert!(requested && !offered && facts.required(), "{facts:?}");
                }
                if plan == Plan::Smtputf8 {
                    assert!(requested && offered);
                }
            }
        }
    }
}

/// services(5) without the file: a few fixed names.
struct FixedServices;

impl ServiceLookup for FixedServices {
    fn tcp_port(&self, name: &str) -> Option<u16> {
        match name {
            "relay" => Some(2525),
            "mail-alt" => Some(10025),
            _ => None,
        }
    }
}

/// Next-hop text → destinations. Byte 0: bit 0 picks LMTP, the rest the
/// default port (25, 24, else a multiple of 516); the other bytes are the text (lossy UTF-8:
/// next hops arrive as JSON or TOML strings).
pub fn nexthop(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let protocol = if head & 1 == 1 {
        Protocol::Lmtp
    } else {
        Protocol::Smtp
    };
    let default_port = match head >> 1 {
        0 => 25,
        1 => 24,
        n => u16::from(n) * 516,
    };
    let text = String::from_utf8_lossy(rest);
    match nexthop::parse_nexthop(&text, protocol, default_port, &FixedServices) {
        Ok(list) => {
            for destination in &list {
                std::hint::black_box((destination.text(), destination.display_host()));
            }
        }
        Err(error) => {
            std::hint::black_box(error.to_string());
        }
    }
    std::hint::black_box(nexthop::parse_port(&text, &FixedServices).is_ok());
}

/// TOML text → configuration or error, as `mailhop daemon --config` loads
/// it, then the derived values the daemon computes from a loaded one.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // The loader reads the file as UTF-8 and refuses anything else.
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            std::hint::black_box(config.validate().is_ok());
            std::hint::black_box(config.smtp.parsed_bind_address().is_ok());
            std::hint::black_box(config.smtp.parsed_bind_address6().is_ok());
            std::hint::black_box(config.dns.parsed_nameservers().is_ok());
            std::hint::black_box(config.dns.parsed_inet_protocols().is_ok());
            std::hint::black_box(config.settings());
            std::hint::black_box(crate::tls_policy::Policies::new(&config.tls));
        }
        Err(error) => {
            std::hint::black_box(error.to_string());
        }
    }
}

/// DNS datagrams → the MX candidate list of `example.test`. Byte 0 holds
/// the settings (address families, preference, randomisation, balancing,
/// MX-lookup error handling, loop detection and own addresses) and whether
/// the destination is `[example.test]` (host route, no MX); byte 1 seeds
/// the shuffle. Then datagrams, each behind a two-byte big-endian length
/// (TCP framing): every lookup the route makes (the MX query first, then
/// the A/AAAA queries of the exchanges) is answered by the next one,
/// checked against its question and classified exactly as a reply from
/// the network is; a missing datagram is a timeout.
pub fn dns_mx(data: &[u8]) {
    let (Some(&flags), Some(&seed), Some(mut rest)) = (data.first(), data.get(1), data.get(2..))
    else {
        return;
    };
    let mut replies = Vec::new();
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (datagram, after) = tail.split_at(len);
        replies.push(datagram);
        rest = after;
    }
    let bit = |n: u8| flags & (1 << n) != 0;
    let settings = MxSettings {
        ipv4: !bit(0) || !bit(1),
        ipv6: !bit(0) || bit(1),
        address_preference: match (bit(2), bit(3)) {
            (false, false) => AddressPreference::Any,
            (true, false) => AddressPreference::Ipv4,
            _ => AddressPreference::Ipv6,
        },
        randomize_addresses: !bit(4),
        balance_inet_protocols: true,
        mx_address_limit: if bit(5) { 2 } else { 5 },
        ignore_mx_lookup_error: bit(6),
        defer_if_no_mx_address_found: bit(6) && bit(4),
        loop_detect: true,
        own_addresses: if bit(3) && !bit(2) {
            vec![[192, 0, 2, 1].into(), [127, 0, 0, 1].into()]
        } else {
            Vec::new()
        },
    };
    let dns = ReplayedReplies::new(replies);
    let mut rng = StdRng::seed_from_u64(u64::from(seed));
    let route = if bit(7) {
        mxlist::host_route("example.test", &dns, &settings, &mut rng)
    } else {
        mxlist::domain_route("example.test", &dns, &settings, &mut rng)
    };
    match route {
        Ok(route) => {
            let candidates = &route.candidates;
            assert!(!candidates.is_empty(), "a route without candidates");
            assert!(
                candidates.len() <= mxlist::RR_LIST_LIMIT,
                "more candidates than the list limit"
            );
            for candidate in candidates {
                assert!(
                    match candidate.addr {
                        IpAddr::V4(_) => settings.ipv4,
                        IpAddr::V6(_) => settings.ipv6,
                    },
                    "a candidate of a disabled address family"
                );
                assert!(
                    !settings.own_addresses.contains(&candidate.addr),
                    "our own address among the candidates"
                );
            }
            std::hint::black_box(route);
        }
        Err(error) => {
            let dsn = error.dsn();
            assert!(
                !dsn.text.chars().any(char::is_control),
                "control character in a DSN text"
            );
            std::hint::black_box((error.makes_nexthop_final(), dsn));
        }
    }
    // The replies left over answer the TXT and TLSA lookups of MTA-STS,
    // TLS-RPT and DANE: the same reading, other record types.
    let answers = [
        dns.txt("_mta-sts.example.test")
            .map(|a| (a.records.len(), a.canonical)),
        dns.tlsa("_25._tcp.mx.example.test")
            .map(|a| (a.records.len(), a.canonical)),
    ];
    for (count, canonical) in answers.into_iter().flatten() {
        assert!(count > 0, "an empty answer is NoData");
        assert!(
            canonical.is_none_or(|name| !name.ends_with('.') || name == "."),
            "a canonical name with its trailing dot"
        );
    }
}

/// Recipient results → the scheduler's verdict ([`crate::shaping::verdict`]),
/// as a finished job's answer is read: every line of the input after byte
/// 0 is one recipient's diagnostic (server text quoted in it); the bits of
/// byte 0 pick each recipient's status (two bits per recipient, cycling)
/// and whether its status code is 4.7.0 or 4.4.1. Checks the verdict's
/// promises: a throttle or a site failure only when every recipient was
/// deferred, and the throttle's reply is text of the input.
pub fn throttle_verdict(data: &[u8]) {
    use crate::job::RecipientResult;
    use crate::recipients::Status;
    use crate::shaping::verdict::{Verdict, remote_reply, verdict};
    let Some((&bits, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let recipients: Vec<RecipientResult> = text
        .split('\n')
        .take(50)
        .enumerate()
        .map(|(i, diagnostic)| {
            let pick = (bits >> ((i % 4) * 2)) & 3;
            RecipientResult {
                address: format!("r{i}@example.test"),
                status: match pick {
                    0 => Status::Sent,
                    1 => Status::Bounced,
                    _ => Status::Deferred,
                },
                dsn: if pick == 2 { "4.7.0" } else { "4.4.1" }.into(),
                relay: None,
                diagnostic: diagnostic.to_string(),
                tls: None,
                tls_policy: None,
                success_dsn: None,
            }
        })
        .collect();
    for recipient in &recipients {
        std::hint::black_box(remote_reply(&recipient.diagnostic));
    }
    let all_deferred = recipients.iter().all(|r| r.status == Status::Deferred);
    match verdict(&crate::config::builtin_throttle_rules(), &recipients) {
        Verdict::Throttled { reply, .. } => {
            assert!(all_deferred, "a throttle with a recipient not deferred");
            assert!(text.contains(reply.as_str()), "a reply not in the input");
        }
        Verdict::SiteFailure { .. } => {
            assert!(all_deferred, "a site failure with a recipient not deferred");
        }
        Verdict::Reached | Verdict::Nothing => {}
    }
}

/// An MTA's bytes → the ingress's LMTP conversation
/// ([`crate::ingress::lmtp`]): each line is a command, or, after a 354, a
/// message line until the final dot, after which the transaction is done.
/// Checks that every reply is CRLF-terminated lines of a 3-digit code,
/// and that a transaction reaches DATA only with a sender and recipients.
pub fn lmtp_ingress(data: &[u8]) {
    use crate::ingress::lmtp::{DataLine, Server, Step};
    let mut server = Server::new("fuzz.test", 1_000_000);
    let mut in_data = false;
    for line in data.split(|&b| b == b'\n').take(5000) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if in_data {
            if Server::data_line(line) == DataLine::End {
                in_data = false;
                server.transaction_done();
            }
            continue;
        }
        let step = server.command(line);
        let text = match &step {
            Step::Reply(text) | Step::Data(text) | Step::Close(text) => text,
        };
        assert!(text.ends_with("\r\n"), "a reply without CRLF");
        for reply_line in text.split_terminator("\r\n") {
            let code = reply_line.get(..3).unwrap_or("");
            assert!(
                code.bytes().all(|b| b.is_ascii_digit()),
                "bad reply {reply_line:?}"
            );
        }
        match step {
            Step::Data(_) => {
                assert!(
                    !server.envelope().recipients.is_empty(),
                    "DATA without RCPT"
                );
                in_data = true;
            }
            Step::Close(_) => return,
            Step::Reply(_) => {}
        }
    }
}

/// LMTP DATA bytes → the message the ingress spools: byte 0 picks how many
/// bytes each read returns (1 to 256), the rest is what the MTA sent after
/// 354. Checks that reading in pieces gives exactly what reading at once
/// gives (output, bytes taken, end found), and both what a plain
/// line-by-line reading gives: lines end with LF or CRLF, a line that is
/// only a dot ends the message when it and the line before end with CRLF
/// (Postfix's `smtpd_forbid_bare_newline = normalize`), is dropped when
/// either ends with a bare LF, and a leading dot of any other line is
/// dropped (RFC 5321 section 4.5.2). So no smuggling variant ends the data
/// early.
pub fn lmtp_data(data: &[u8]) {
    use crate::ingress::data::DataReceiver;
    let (Some(&size), Some(input)) = (data.first(), data.get(1..)) else {
        return;
    };
    let piece = usize::from(size) + 1;
    let mut whole = DataReceiver::new();
    let mut whole_out = Vec::new();
    let whole_taken = whole.feed(input, &mut whole_out);
    let mut pieces = DataReceiver::new();
    let mut pieces_out = Vec::new();
    let mut pieces_taken = 0;
    for chunk in input.chunks(piece) {
        if pieces.done() {
            break;
        }
        pieces_taken += pieces.feed(chunk, &mut pieces_out);
    }
    assert_eq!(whole_out, pieces_out, "pieces change the message");
    assert_eq!(whole_taken, pieces_taken, "pieces change where it ends");
    assert_eq!(whole.done(), pieces.done());
    assert_eq!(
        whole.size(),
        u64::try_from(whole_out.len()).unwrap_or(u64::MAX)
    );
    // The reference: line by line.
    let mut reference = Vec::new();
    let mut taken = 0;
    let mut ended = false;
    let mut prev_bare_lf = false;
    for line in input.split_inclusive(|&b| b == b'\n') {
        taken += line.len();
        if line.ends_with(b"\n") {
            let bare_lf = !line.ends_with(b"\r\n");
            let content = line
                .strip_suffix(b"\r\n")
                .or_else(|| line.strip_suffix(b"\n"))
                .unwrap_or(line);
            if content == b"." {
                if !bare_lf && !prev_bare_lf {
                    ended = true;
                    break;
                }
                prev_bare_lf = bare_lf;
                continue;
            }
            prev_bare_lf = bare_lf;
        } else if line == b".\r" {
            // An unfinished line that may yet be the final dot: held back.
            break;
        }
        reference.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    assert_eq!(whole.done(), ended, "end of data");
    if ended {
        assert_eq!(whole_taken, taken, "bytes taken");
        assert_eq!(whole_out, reference, "the message");
    } else {
        assert_eq!(whole_taken, input.len());
        assert_eq!(whole_out, reference, "the message so far");
    }
}

/// TLSA RDATA and certificate bytes → the DANE verdict: byte 0 is the RDATA's length (capped by the input), then
/// the RDATA, then the rest as a two-certificate "chain" (split at its
/// middle) in DER. Checks that unusable records never match and that the
/// verdict is the same for the records in either order when one of them
/// is unusable.
pub fn tlsa(data: &[u8]) {
    use crate::dane::{Tlsa, Verdict, verify_chain};
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (rdata, certs) = rest.split_at(len);
    let Ok(record) = Tlsa::from_rdata(rdata) else {
        return;
    };
    let _ = record.presentation();
    let (first, second) = certs.split_at(certs.len() / 2);
    let chain = vec![first.to_vec(), second.to_vec()];
    let verdict = verify_chain(std::slice::from_ref(&record), &chain);
    if !record.usable() {
        assert_eq!(
            verdict,
            Verdict::NoUsableRecords,
            "an unusable record decided"
        );
    }
    let unusable = Tlsa {
        usage: 1,
        ..record.clone()
    };
    assert_eq!(
        verify_chain(&[unusable.clone(), record.clone()], &chain),
        verify_chain(&[record, unusable], &chain),
        "an unusable record changed the verdict"
    );
}

/// A message → its facts (issue 16, `TLS-Required: No`) and its wire
/// form: reading it from memory and from a reader give the same facts, and
/// the header scan agrees with a plain line-by-line reading of the header
/// (fields unfolded, names compared without case, the value "No" without
/// case and blanks; a non-ASCII byte before the first empty line); the
/// DATA wire form is the same in pieces and has no bare CR, no bare LF and
/// no lone dot line (see `message_wire_form`).
pub fn message_facts(data: &[u8]) {
    use crate::smtp::body::{facts_of, has_tls_required_no, scan};
    let in_memory = facts_of(data);
    if let Ok(read) = scan(data) {
        assert_eq!(in_memory, read, "facts differ between memory and reader");
    }
    // The reference: the header's lines, continuation lines appended.
    let text = String::from_utf8_lossy(data);
    // A line without a colon starts no field: its continuation lines
    // belong to nothing (a name folded before its colon is no field).
    let mut fields: Vec<Option<String>> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(Some(last)) = fields.last_mut() {
                last.push_str(line);
            }
            continue;
        }
        fields.push(line.contains(':').then(|| line.to_string()));
    }
    let reference = fields.iter().flatten().any(|field| {
        field.split_once(':').is_some_and(|(name, value)| {
            name.trim_matches([' ', '\t'])
                .eq_ignore_ascii_case("TLS-Required")
                && value.trim().eq_ignore_ascii_case("no")
        })
    });
    assert_eq!(has_tls_required_no(data), reference, "TLS-Required: No");
    // The header's non-ASCII fact, by Postfix's header end (mime_state.c,
    // is_header.c): the header runs up to the empty line or the first line
    // that is neither a field (name, optional blanks, colon) nor, after a
    // field, a continuation (a blank or a stray CR first); a byte >= 0x80
    // in a field's value or a continuation counts.
    let mut any_field = false;
    let mut header_utf8 = false;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let Some(&first) = content.first() else {
            break;
        };
        if content == b"\r" {
            break;
        }
        if any_field && matches!(first, b' ' | b'\t' | b'\r') {
            if !content.is_ascii() {
                header_utf8 = true;
                break;
            }
            continue;
        }
        let name_len = content
            .iter()
            .take_while(|&&b| b.is_ascii_graphic() && b != b':')
            .count();
        let after_name = content.get(name_len..).unwrap_or_default();
        let blanks = after_name
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let value = match after_name.get(blanks..) {
            Some([b':', value @ ..]) if name_len > 0 => value,
            _ => break,
        };
        any_field = true;
        if !value.is_ascii() {
            header_utf8 = true;
            break;
        }
    }
    assert_eq!(in_memory.utf8_header, header_utf8, "header UTF-8");
    message_wire_form(data);
}

/// The message in DATA wire form (stray CRs replaced, the default): in
/// pieces (sized by the input's first byte) exactly as at once, and safe
/// from SMTP smuggling: no CR without LF, no LF without CR, no line that is
/// a lone dot (the caller's `.CRLF` is the only end), every line ended.
fn message_wire_form(data: &[u8]) {
    use crate::smtp::body::{BodyEncoder, encode_all};
    let limit = match data.len() % 3 {
        0 => 998,
        1 => 0,
        _ => 40,
    };
    let mut whole = Vec::new();
    encode_all(data, limit, &mut whole);
    let piece = usize::from(data.first().copied().unwrap_or(0)) % 64 + 1;
    let mut encoder = BodyEncoder::new(limit);
    let mut pieces = Vec::new();
    for chunk in data.chunks(piece) {
        encoder.encode(chunk, &mut pieces);
    }
    encoder.finish(&mut pieces);
    assert_eq!(whole, pieces, "pieces change the wire form");
    let mut previous = None;
    for (i, &b) in whole.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(whole.get(i + 1), Some(&b'\n'), "bare CR on the wire");
        }
        if b == b'\n' {
            assert_eq!(previous, Some(b'\r'), "bare LF on the wire");
        }
        previous = Some(b);
    }
    assert!(whole.is_empty() || whole.ends_with(b"\r\n"), "unended line");
    assert!(
        !whole.split(|&b| b == b'\n').any(|line| line == b".\r"),
        "a lone dot line before the end"
    );
}

/// An MTA-STS policy file (RFC 8461 section 3.2) → [`crate::mta_sts::StsPolicy`],
/// as fetched; its lines also as the TXT records of `_mta-sts` (section
/// 3.1). Checks the parser's promises: `max_age` within the limit, an
/// `mx` pattern unless the mode is none, every pattern normalised (it
/// parses back to itself) and matching a host made from it, and the
/// policy unchanged through the cache file's JSON.
pub fn mta_sts_policy(data: &[u8]) {
    use crate::mta_sts::policy::MAX_AGE_LIMIT;
    use crate::mta_sts::{Mode, MxPattern, StsPolicy, parse_policy, record};
    if let Ok(text) = std::str::from_utf8(data) {
        let records: Vec<String> = text.lines().map(str::to_owned).collect();
        if let Ok(id) = record::policy_id(&records) {
            assert!(
                !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
                "invalid id accepted"
            );
        }
    }
    let Ok(policy) = parse_policy(data) else {
        return;
    };
    assert!(policy.max_age <= MAX_AGE_LIMIT, "max_age over the limit");
    assert!(
        policy.mode == Mode::None || !policy.mx.is_empty(),
        "enforce or testing without mx"
    );
    for pattern in &policy.mx {
        assert_eq!(
            MxPattern::parse(pattern.as_str()).as_ref(),
            Ok(pattern),
            "pattern not normalised"
        );
        let host = match pattern.as_str().strip_prefix("*.") {
            Some(domain) => format!("mx.{domain}"),
            None => pattern.as_str().to_ascii_uppercase(),
        };
        assert!(pattern.matches(&host), "pattern does not match {host}");
        assert!(policy.matches(&format!("{host}.")), "trailing dot refused");
    }
    let json = serde_json::to_string(&policy).unwrap_or_default();
    let back: Result<StsPolicy, _> = serde_json::from_str(&json);
    assert_eq!(back.ok().as_ref(), Some(&policy), "JSON round trip");
}

/// TXT texts (one per line) → the TLSRPT record a domain publishes
/// (RFC 8460 section 3). Checks that a record found has report addresses,
/// and that no `mailto:` address carries a control character or blank
/// (it becomes the report message's recipient and `To:` header).
pub fn tlsrpt_record(data: &[u8]) {
    use crate::tlsrpt::record::{Rua, select};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let texts: Vec<String> = text.lines().map(str::to_owned).collect();
    let Ok(record) = select(&texts) else {
        return;
    };
    assert!(!record.rua.is_empty(), "a record without report addresses");
    for rua in &record.rua {
        if let Rua::Mailto(address) = rua {
            assert!(
                !address.is_empty() && !address.chars().any(|c| c.is_control() || c == ' '),
                "a mailto address with a control character or blank: {address:?}"
            );
        }
    }
}

/// A message → its 8-bit to 7-bit MIME conversion
/// ([`crate::smtp::mime::Downgrader`]) and wire form. Byte 0 picks the
/// size of the pieces the input is fed in, byte 1 the limits (small ones
/// half the time, so nesting and cut boundaries are reached); the rest is
/// the message. Promises: the output does not depend on how the input is
/// split; every byte above 127 in the output is one the converter passed
/// unconverted (a header or a part it does not convert), never one of its
/// own; it never writes more such bytes than the input has; a nesting
/// error is the same either way; the in-memory and streamed wire forms
/// agree.
pub fn mime_downgrade(data: &[u8]) {
    use crate::smtp::mime::{self, Downgrader, MimeLimits};
    let (Some(&piece), Some(&knobs), Some(message)) = (data.first(), data.get(1), data.get(2..))
    else {
        return;
    };
    let limits = if knobs & 1 == 0 {
        MimeLimits::default()
    } else {
        MimeLimits {
            nesting_limit: usize::from(knobs >> 1 & 3) + 1,
            boundary_length_limit: usize::from(knobs >> 3 & 7) + 1,
            header_size_limit: usize::from(knobs >> 6) * 40 + 1,
        }
    };
    let run = |size: usize| {
        let mut d = Downgrader::new(limits);
        let mut out = Vec::new();
        let mut result = Ok(());
        for chunk in message.chunks(size.max(1)) {
            result = d.feed(chunk, &mut out);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = d.finish(&mut out);
        }
        (out, result, d.passed_8bit())
    };
    let (whole, whole_result, passed) = run(message.len());
    let (split, split_result, _) = run(usize::from(piece));
    assert_eq!(whole_result, split_result, "error depends on the split");
    if whole_result.is_ok() {
        assert_eq!(whole, split, "output depends on the split");
    }
    let high = |bytes: &[u8]| bytes.iter().filter(|&&b| b >= 0x80).count() as u64;
    assert!(high(message) >= passed, "more 8-bit bytes passed than read");
    if whole_result.is_ok() {
        assert_eq!(high(&whole), passed, "the converter wrote an 8-bit byte");
    }
    let mut in_memory = Vec::new();
    let memory_result = mime::encode_all_downgraded(
        message,
        crate::smtp::body::BodyEncoder::new(998),
        limits,
        &mut in_memory,
    );
    let mut streamed = Vec::new();
    let stream_result = mime::write_body_downgraded(
        message,
        &mut streamed,
        crate::smtp::body::BodyEncoder::new(998),
        limits,
    );
    assert_eq!(memory_result.is_ok(), whole_result.is_ok());
    assert_eq!(stream_result.is_ok(), whole_result.is_ok());
    if whole_result.is_ok() {
        assert_eq!(
            in_memory, streamed,
            "in-memory and streamed wire forms differ"
        );
    }
}

/// The SASL client against a hostile server (issue 17): the first byte
/// picks the mechanism (SCRAM-SHA-256, PLAIN, LOGIN), the rest is split at
/// NUL bytes into the server's challenges, answered in turn until the
/// mechanism refuses one (an error, never a panic); a SCRAM exchange
/// succeeds only after a server-final `v=` message (the seed with RFC
/// 7677's vector does; random input cannot prove the password). The same bytes as a password
/// table's text must parse or be refused with a line number, and a table
/// that parses is looked up without panicking.
pub fn sasl_exchange(data: &[u8]) {
    use crate::sasl::Kind;
    use crate::sasl::Mechanism;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let kind = Kind::ALL[usize::from(pick) % Kind::ALL.len()];
    // RFC 7677's user, password and client nonce: its vector is a seed.
    let mut mechanism = Mechanism::start(kind, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
    let _ = mechanism.initial_response();
    let mut last: &[u8] = &[];
    for challenge in rest.split(|&b| b == 0).take(8) {
        if mechanism.respond(challenge).is_err() {
            break;
        }
        last = challenge;
    }
    if kind == Kind::ScramSha256 && mechanism.finish().is_ok() {
        // Only a server-final message with the right signature verifies
        // (the last challenge the mechanism took).
        assert!(
            last.starts_with(b"v="),
            "SCRAM accepted without a server signature"
        );
    }
    let text = String::from_utf8_lossy(rest);
    if let Ok(table) = crate::sasl::PasswordTable::parse(&text) {
        let _ = table.lookup("mx.example.com", "example.com");
        let _ = table.lookup("", "[192.0.2.1]:587");
    }
}

/// Redis replies → the feed's reading of them: the input is raw RESP bytes
/// (RESP2 or RESP3), parsed by the redis crate's own parser as the
/// connection does, and that one value is read as each reply the feed
/// parses: XREADGROUP ([`crate::feed::parse_read`]), XAUTOCLAIM
/// ([`crate::feed::parse_autoclaim`]), XINFO GROUPS and XPENDING (`mailhop
/// feed status`), HGETALL (claims and settled progress, through the crate's
/// conversion). Promises: every stream name returned is a string of the
/// input, every entry the first two-item array at its place with a string
/// id, its job a bulk string of the input; an XREADGROUP reply in RESP3's
/// map form reads as the same reply in RESP2's array form; each status
/// line is one printable line.
pub fn feed_replies(data: &[u8]) {
    use redis::Value;

    use crate::feed::{Entry, parse_autoclaim, parse_read, status};

    /// Every string (bulk or simple) and every two-item array of `value`.
    fn walk<'a>(value: &'a Value, strings: &mut Vec<&'a [u8]>, pairs: &mut Vec<&'a [Value]>) {
        let children: Vec<&Value> = match value {
            Value::BulkString(b) => {
                strings.push(b);
                return;
            }
            Value::SimpleString(s) => {
                strings.push(s.as_bytes());
                return;
            }
            Value::Array(items) | Value::Set(items) => {
                if items.len() == 2 {
                    pairs.push(items);
                }
                items.iter().collect()
            }
            Value::Map(kv) => kv.iter().flat_map(|(k, v)| [k, v]).collect(),
            Value::Attribute { data, attributes } => std::iter::once(&**data)
                .chain(attributes.iter().flat_map(|(k, v)| [k, v]))
                .collect(),
            Value::Push { data, .. } => data.iter().collect(),
            _ => Vec::new(),
        };
        for child in children {
            walk(child, strings, pairs);
        }
    }
    fn is_text(value: &Value, text: &[u8]) -> bool {
        match value {
            Value::BulkString(b) => b == text,
            Value::SimpleString(s) => s.as_bytes() == text,
            _ => false,
        }
    }

    let Ok(value) = redis::parse_redis_value(data) else {
        return;
    };
    let mut strings = Vec::new();
    let mut pairs = Vec::new();
    walk(&value, &mut strings, &mut pairs);
    let check = |entry: &Entry| {
        assert!(
            pairs
                .iter()
                .any(|pair| is_text(&pair[0], entry.id.as_bytes())),
            "entry id {:?} is not the first of a two-item array of the input",
            entry.id
        );
        if let Some(job) = &entry.job {
            assert!(
                strings.contains(&job.as_slice()),
                "job of {:?} is not a string of the input",
                entry.id
            );
        }
    };

    let read = parse_read(value.clone());
    let mut total = 0;
    for (stream, entries) in &read {
        assert!(
            strings.contains(&stream.as_bytes()),
            "stream {stream:?} is not a string of the input"
        );
        entries.iter().for_each(check);
        total += entries.len();
    }
    assert!(total <= pairs.len(), "more entries than two-item arrays");
    if let Value::Map(kv) = &value {
        let resp2 = Value::Array(
            kv.iter()
                .map(|(k, v)| Value::Array(vec![k.clone(), v.clone()]))
                .collect(),
        );
        assert_eq!(parse_read(resp2), read, "RESP2 and RESP3 forms disagree");
    }

    let claimed = parse_autoclaim(value.clone());
    claimed.iter().for_each(check);
    if let Some(cursor) = crate::feed::autoclaim_cursor(&value) {
        // A cursor goes back to Redis as an argument: id-shaped only.
        let (ms, seq) = cursor.split_once('-').unwrap_or(("", ""));
        assert!(
            !ms.is_empty() && !seq.is_empty(),
            "cursor {cursor:?} not an id"
        );
        assert!(
            ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit()),
            "cursor {cursor:?} not an id"
        );
    }
    assert!(
        claimed.len() <= pairs.len(),
        "more entries than two-item arrays"
    );

    for (name, lines) in [
        ("group", status::group_lines(&value, "mailhop")),
        ("consumer", status::consumer_lines(&value)),
    ] {
        for line in lines.lines() {
            assert!(
                line.starts_with(&format!("  {name} ")),
                "{name} line {line:?} not one line"
            );
            assert!(
                !line.chars().any(char::is_control),
                "{name} line {line:?} has a control character"
            );
        }
        assert!(lines.is_empty() || lines.ends_with('\n'));
    }
    // What status (XLEN, claims) and a claim (settled progress) convert.
    let _ = redis::from_redis_value_ref::<i64>(&value);
    if let Ok(hash) = redis::from_redis_value_ref::<Vec<(String, String)>>(&value) {
        for (index, json) in hash {
            let _ = index.parse::<usize>();
            let _ = serde_json::from_str::<crate::job::RecipientResult>(&json);
        }
    }
}
