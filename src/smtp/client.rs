//! The SMTP/LMTP client session as an I/O-free state machine: replies in,
//! actions out.
//!
//! ```text
//!  Receive(greeting) ──2xx──▶ Send EHLO|LHLO ──2xx──────────────┐
//!        │ 4xx/5xx            │ non-2xx (≠421, SMTP only)       │
//!        ▼                    ▼                                 ▼
//!    site failure        Send HELO ──2xx──┐       [STARTTLS, EHLO again]
//!                             │ non-2xx   │    [AUTH ◀─334─▶ response…]
//!                             ▼           ▼         │ 235
//!                        site failure   checks (SMTPUTF8, SIZE)
//!                                            │
//!                                       MAIL, RCPT…, DATA (pipelined when
//!                                       offered, else lock-step)
//!                                            │ 354
//!                                            ▼
//!                                       SendBody ▶ end-of-data reply(ies)
//!                                            │        (LMTP: one per rcpt)
//!                                            ▼
//!                                          Idle ──quit()──▶ QUIT ▶ Closed
//! ```
//!
//! The driver (see `session.rs`) asks [`Client::next_action`] what to do,
//! performs it, and feeds back a [`Reply`] ([`Client::on_reply`]) or a
//! transport failure ([`Client::on_io_failure`]). The client records for each
//! recipient at most one [`RcptResult`] with Postfix's diagnostics; it never
//! decides between defer and bounce (that is `outcome.rs`, which knows whether
//! this was the final server). Nothing here panics on any reply sequence.
//!
//! SASL (Postfix's `smtp_sasl_helo_login`): with [`ClientSettings::sasl`]
//! set (AUTH enabled and a credential found for this server) and AUTH in
//! the EHLO/LHLO reply (after STARTTLS: in the second one), the client
//! authenticates before MAIL FROM with the mechanism `crate::sasl::choose`
//! picks under the security options of the connection (plaintext, TLS,
//! verified TLS). A server that does not announce AUTH is talked to
//! without authentication, as Postfix does. Failures are Postfix's:
//! 4.7.0 "offered no compatible authentication mechanisms for this type
//! of connection security" (nothing left after the mechanism filter),
//! 4.7.0 "cannot authenticate to server H[A]: no mechanism available"
//! (the security options exclude what is left) or a challenge the
//! mechanism cannot answer (then `*` cancels the exchange), 4.3.0 after
//! 100 challenges, and the server's own code for a 4xx/5xx reply, "SASL
//! authentication failed; server H[A] said: ...", 5xx made 4xx by
//! `soft_bounce`. Each ends the session with QUIT; the recipients stay
//! open for the next server when the failure is soft.

use std::collections::VecDeque;

use super::command::{self, BodyType, MailParams, Notify, RcptParams, Ret};
use super::ehlo::Extensions;
use super::mime::{MimeError, MimeLimits};
use super::reply::Reply;
use super::smtputf8;
use crate::dsn::Dsn;

/// Most bytes of pipelined commands sent ahead of their replies.
const PIPELINE_WINDOW: usize = 8192;

/// Which greeting command opened the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    Ehlo,
    Helo,
    Lhlo,
}

impl Hello {
    fn name(self) -> &'static str {
        match self {
            Hello::Ehlo => "EHLO",
            Hello::Helo => "HELO",
            Hello::Lhlo => "LHLO",
        }
    }
}

/// A protocol step: selects the timeout and names the step in diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Greeting,
    Hello(Hello),
    Mail,
    Rcpt,
    Data,
    Body,
    Dot,
    Rset,
    Quit,
    /// STARTTLS command and its reply.
    StartTls,
    /// RSET checking a cached session before it is reused.
    RsetProbe,
}

impl Phase {
    /// Postfix's "while ..." words for timeouts and lost connections.
    pub fn while_text(self) -> String {
        match self {
            Phase::Greeting => "receiving the initial server greeting".into(),
            Phase::Hello(h) => format!("performing the {} handshake", h.name()),
            Phase::Mail => "sending MAIL FROM".into(),
            Phase::Rcpt => "sending RCPT TO".into(),
            Phase::Data => "sending DATA command".into(),
            Phase::Body => "sending message body".into(),
            Phase::Dot => "sending end of data -- message may be sent more than once".into(),
            Phase::Rset => "sending final RSET".into(),
            Phase::Quit => "sending QUIT".into(),
            Phase::StartTls => "receiving the STARTTLS response".into(),
            Phase::RsetProbe => "sending RSET probe".into(),
        }
    }

    /// The command name in "(in reply to X command)".
    pub fn command_name(self) -> &'static str {
        match self {
            Phase::Greeting => "initial greeting",
            Phase::Hello(h) => h.name(),
            Phase::Mail => "MAIL FROM",
            Phase::Rcpt => "RCPT TO",
            Phase::Data => "DATA",
            Phase::Body | Phase::Dot => "end of DATA",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
            Phase::StartTls => "STARTTLS",
            Phase::RsetProbe => "RSET",
        }
    }
}

/// What the driver must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes (one or more commands) under this phase's timeout.
    Send { bytes: Vec<u8>, phase: Phase },
    /// Stream the message body in wire form, then ".\r\n".
    SendBody,
    /// The server said 220 to STARTTLS: do the TLS handshake now, then call
    /// [`Client::tls_started`] or [`Client::on_tls_failure`].
    StartTls,
    /// Read one complete reply under this phase's timeout.
    Receive(Phase),
    /// The transaction is over and the connection is usable: `quit()` it (or
    /// keep it for reuse).
    Idle,
    /// Close the connection; nothing more to say.
    Close,
}

/// Why the transport failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoFailure {
    Timeout,
    /// EOF or a reset: the server went away.
    Lost,
    /// Anything else, with the OS error text.
    Other(String),
}

/// One recipient as the session knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    /// ORCPT as given by the job (`rfc822;addr` or a bare address).
    pub orcpt: Option<String>,
    pub notify: Notify,
}

/// The envelope of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub envid: Option<String>,
    pub ret: Option<Ret>,
    /// The submitter asked for SMTPUTF8.
    pub smtputf8: bool,
    /// The sender requires TLS all the way (RFC 8689 REQUIRETLS).
    pub requiretls: bool,
}

impl Envelope {
    /// SMTPUTF8 is needed: requested, and an address is not ASCII (Postfix's
    /// `DELIVERY_REQUIRES_SMTPUTF8` as far as the envelope shows; see
    /// [`Envelope::requires_smtputf8`] for the header too).
    pub fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            && (command::needs_smtputf8(&self.sender)
                || self
                    .recipients
                    .iter()
                    .any(|r| command::needs_smtputf8(&r.address)))
    }

    /// SMTPUTF8 is required: requested, and the envelope or the header
    /// (`facts.utf8_header`) has UTF-8 (Postfix's
    /// `DELIVERY_REQUIRES_SMTPUTF8`).
    pub fn requires_smtputf8(&self, facts: &MessageFacts) -> bool {
        self.needs_smtputf8() || (self.smtputf8 && facts.utf8_header)
    }
}

/// Facts about the message needed before MAIL FROM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageFacts {
    pub size: u64,
    pub has_8bit: bool,
    /// The header has `TLS-Required: No` (RFC 8689 section 5).
    pub tls_required_no: bool,
    /// The header has a non-ASCII byte (Postfix's SMTPUTF8_FLAG_HEADER).
    pub utf8_header: bool,
}

/// Fixed settings of one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    pub lmtp: bool,
    pub helo_name: String,
    pub skip_5xx_greeting: bool,
    /// `host[addr]` for diagnostics.
    pub peer: String,
    /// Postfix `smtputf8_enable`: when off, SMTPUTF8 is never requested nor required.
    pub smtputf8_enable: bool,
    /// The server's TLS policy authenticates it (DANE, MTA-STS, verify,
    /// secure): a REQUIRETLS message may only go over such a session.
    pub tls_authenticated: bool,
    /// Port 25 loop detection: a server greeting us with our own name in its
    /// EHLO/HELO reply is ourselves.
    pub loop_check: Option<LoopCheck>,
    /// What to do about STARTTLS.
    pub tls: TlsMode,
    /// `smtp.strict_reply_syntax`: once PIPELINING is in effect, a line
    /// that is not a reply line is a protocol error at once (false:
    /// Postfix's smtp_chat.c, which skips it).
    pub strict_reply_syntax: bool,
    /// Postfix's MIME output conversion (`disable_mime_output_conversion =
    /// no`) with its limits; `None`: 8-bit content is sent as it is.
    pub mime_conversion: Option<MimeLimits>,
    /// SASL authentication for this server: `[sasl] auth_enable` and a
    /// credential in the password table (None: never AUTH).
    pub sasl: Option<crate::sasl::ClientAuth>,
}

/// The session's TLS requirement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Never STARTTLS (level none, or a plaintext retry).
    #[default]
    Off,
    /// STARTTLS when offered (level may); a refused STARTTLS continues in plaintext.
    Opportunistic,
    /// TLS is required (encrypt and stronger): not offered → 4.7.4.
    Required,
    /// TLS was established before the greeting (SMTPS wrapper mode).
    Wrapped,
}

/// What the EHLO loop check needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopCheck {
    /// Our own host names: `helo_name` and `$myhostname` (Postfix compares
    /// with the latter).
    pub my_names: Vec<String>,
    /// The next-hop domain, for the diagnostic.
    pub nexthop: String,
    /// This server is a best-preference MX: 5.4.6, else 4.4.6.
    pub best_mx: bool,
}

/// What happened to one recipient in this session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptResult {
    Delivered(Dsn),
    Failed(Dsn),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Greeting,
    Hello(Hello),
    Mail,
    Rcpt(usize),
    Data,
    /// SMTP end of data: one reply for all accepted recipients.
    Dot,
    /// LMTP end of data: one reply for this recipient.
    LmtpDot(usize),
    /// A lone "." after 354 with nothing to send; the reply is ignored.
    EmptyDot,
    Rset,
    Quit,
    /// QUIT whose reply is not awaited (SMTP's `smtp_skip_quit_response`).
    QuitNoReply,
    StartTls,
    /// RSET that checks a cached session before reuse.
    RsetProbe,
    /// AUTH or a response to a 334 challenge (under the EHLO/LHLO
    /// phase, as Postfix's timeouts and diagnostics).
    Auth(Hello),
    /// `*`, cancelling an AUTH exchange we cannot continue.
    AuthCancel(Hello),
    /// RSET after a failed transaction on a reused session: its reply
    /// shows that the replies read were the transaction's own (a reply
    /// left over would be read here instead).
    VerifyRset,
}

impl Expect {
    fn phase(self) -> Phase {
        match self {
            Expect::Greeting => Phase::Greeting,
            Expect::Hello(h) => Phase::Hello(h),
            Expect::Mail => Phase::Mail,
            Expect::Rcpt(_) => Phase::Rcpt,
            Expect::Data => Phase::Data,
            Expect::Dot | Expect::LmtpDot(_) | Expect::EmptyDot => Phase::Dot,
            Expect::Rset | Expect::VerifyRset => Phase::Rset,
            Expect::Quit | Expect::QuitNoReply => Phase::Quit,
            Expect::StartTls => Phase::StartTls,
            Expect::RsetProbe => Phase::RsetProbe,
            Expect::Auth(h) | Expect::AuthCancel(h) => Phase::Hello(h),
        }
    }
}

/// An AUTH exchange in progress.
#[derive(Debug)]
struct AuthExchange {
    mechanism: crate::sasl::Mechanism,
    /// The initial response, when it did not fit on the AUTH line: sent
    /// after the server's empty 334.
    deferred: Option<String>,
    /// Challenges answered (bounded by [`AUTH_STEP_LIMIT`]).
    steps: u32,
}

/// Most 334 challenges in one AUTH exchange (Postfix's bound).
const AUTH_STEP_LIMIT: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before or inside the handshake.
    Opening,
    /// MAIL/RCPT/DATA in flight.
    Transaction,
    /// Body must be sent now.
    Body,
    /// Transaction over, connection usable.
    Idle,
    /// Closing: QUIT sent or connection dead.
    Closing,
    Closed,
}

/// The session state machine. See the module documentation.
#[derive(Debug)]
pub struct Client {
    settings: ClientSettings,
    envelope: Envelope,
    facts: MessageFacts,
    extensions: Extensions,
    stage: Stage,
    unsent: VecDeque<(Vec<u8>, Expect)>,
    pending: VecDeque<(Expect, usize)>,
    pending_bytes: usize,
    pipelining: bool,
    results: Vec<Option<RcptResult>>,
    accepted: Vec<usize>,
    mail_accepted: bool,
    transaction_failed: bool,
    handshake_done: bool,
    protocol_error: bool,
    needs_rset: bool,
    /// Phase of the last Send, for failures while writing.
    sending: Option<Phase>,
    /// TLS is up (STARTTLS done, or wrapper mode).
    tls_active: bool,
    /// The TLS handshake failed at level may and the caller chose to retry
    /// the same server in plaintext: no recipient was touched.
    retry_plain: bool,
    /// The server sent STARTTLS's 220; the handshake is due.
    tls_due: bool,
    /// TLS was required but the server did not offer STARTTLS or refused
    /// it (RFC 8460's "starttls-not-supported").
    starttls_unsupported: bool,
    /// A reused session failed its RSET probe: discard it; no recipient
    /// was touched.
    probe_failed: bool,
    /// The transaction was queued behind the RSET probe (PIPELINING).
    probe_pipelined: bool,
    /// The session ends after this transaction: QUIT may follow the final
    /// dot in the same write (SMTP with PIPELINING).
    quit_after_data: bool,
    /// QUIT went out behind the final dot.
    quit_pipelined: bool,
    /// When the handshake completed (for the log's delays).
    handshake_at: Option<std::time::Instant>,
    /// A failure inside a STARTTLS session leaves the open recipients for a
    /// plaintext retry (level may, old enough mail).
    plaintext_fallback: bool,
    /// The session was reused (cache or chain): its replies may be out of
    /// step with its commands, so any impossible reply discards it.
    reused: bool,
    /// The message went out (its end-of-data reply is awaited or read).
    body_sent_flag: bool,
    /// The RSET checking a failed transaction on a reused session went out.
    verify_sent: bool,
    /// DATA got its 354 on a reused session: only DATA can be answered
    /// with a 3xx, so the replies are in step; from here on a fault is
    /// this transaction's own and is judged as on a fresh session (a
    /// retry could deliver the message twice).
    in_step: bool,
    /// A reused session answered out of step: it was discarded and every
    /// result of it forgotten (see [`Client::desynchronised`]).
    desync: bool,
    /// The AUTH exchange under way.
    auth: Option<AuthExchange>,
    /// The mechanism this session authenticated with (235 received).
    authenticated: Option<&'static str>,
    /// The body encoder replaces a stray CR with a space (see
    /// [`Client::set_replace_stray_cr`]).
    replace_stray_cr: bool,
    /// See [`Client::set_smtputf8_a_labels`].
    smtputf8_a_labels: bool,
}

impl Client {
    pub fn new(settings: ClientSettings, envelope: Envelope, facts: MessageFacts) -> Self {
        let count = envelope.recipients.len();
        let settings_tls_wrapped = settings.tls == TlsMode::Wrapped;
        let mut pending = VecDeque::new();
        pending.push_back((Expect::Greeting, 0));
        Self {
            settings,
            envelope,
            facts,
            extensions: Extensions::default(),
            stage: Stage::Opening,
            unsent: VecDeque::new(),
            pending,
            pending_bytes: 0,
            pipelining: false,
            results: vec![None; count],
            accepted: Vec::new(),
            mail_accepted: false,
            transaction_failed: false,
            handshake_done: false,
            protocol_error: false,
            needs_rset: false,
            sending: None,
            tls_active: settings_tls_wrapped,
            retry_plain: false,
            tls_due: false,
            starttls_unsupported: false,
            probe_failed: false,
            probe_pipelined: false,
            quit_after_data: false,
            quit_pipelined: false,
            handshake_at: None,
            plaintext_fallback: false,
            reused: false,
            body_sent_flag: false,
            verify_sent: false,
            in_step: false,
            desync: false,
            auth: None,
            authenticated: None,
            replace_stray_cr: true,
            smtputf8_a_labels: true,
        }
    }

    /// The SASL mechanism this session authenticated with, if it did.
    pub fn authenticated(&self) -> Option<&'static str> {
        self.authenticated
    }

    /// `[smtp] replace_stray_cr` (Postfix's `cleanup_replace_stray_cr_lf`):
    /// whether the message body goes out with each stray CR replaced by a
    /// space (true, the default) or passed through.
    pub fn set_replace_stray_cr(&mut self, replace: bool) {
        self.replace_stray_cr = replace;
    }

    /// See [`Client::set_replace_stray_cr`].
    pub fn replace_stray_cr(&self) -> bool {
        self.replace_stray_cr
    }

    /// `[smtp] smtputf8_a_labels`: whether, in a session without SMTPUTF8,
    /// non-ASCII domains go as A-labels (true, the default, a deviation) or
    /// addresses go as they are (false, Postfix).
    pub fn set_smtputf8_a_labels(&mut self, a_labels: bool) {
        self.smtputf8_a_labels = a_labels;
    }

    /// See [`Client::retry_plain`]: with this set, a lost connection or a
    /// timeout inside a STARTTLS session does not fail the open recipients
    /// but asks for a plaintext retry of the same server.
    pub fn allow_plaintext_fallback(&mut self, allowed: bool) {
        self.plaintext_fallback = allowed;
    }

    /// When the greeting/EHLO/TLS handshake (or the RSET probe) completed.
    pub fn handshake_at(&self) -> Option<std::time::Instant> {
        self.handshake_at
    }

    /// A session taken from the connection cache: the server already
    /// greeted us and answered EHLO with `extensions`. It starts with an RSET
    /// probe; if that fails, [`Client::probe_failed`] is set and no
    /// recipient is touched, so the caller can connect afresh.
    pub fn resume(
        settings: ClientSettings,
        envelope: Envelope,
        facts: MessageFacts,
        extensions: Extensions,
        tls_active: bool,
    ) -> Self {
        let mut client = Self::new(settings, envelope, facts);
        client.pending.clear();
        client.extensions = extensions;
        client.tls_active = tls_active;
        client.reused = true;
        client
            .unsent
            .push_back((command::RSET.to_vec(), Expect::RsetProbe));
        if client.extensions.pipelining {
            // The probe travels with MAIL/RCPT/DATA in one write: one round
            // trip less than Postfix's lone RSET. A bad probe reply still
            // discards the session before any recipient result counts.
            client.start_transaction();
            client.probe_pipelined = true;
        }
        client
    }

    /// The transaction went through cleanly and the connection is idle: it
    /// may be kept for reuse (no protocol error, no failed MAIL/DATA).
    pub fn reusable(&self) -> bool {
        self.stage == Stage::Idle
            && !self.protocol_error
            && !self.transaction_failed
            && !self.needs_rset
            && !self.quit_pipelined
    }

    /// The session will not be kept: QUIT may be pipelined behind the
    /// final dot, as Postfix does for a connection it does not cache.
    pub fn set_quit_after_data(&mut self, on: bool) {
        self.quit_after_data = on;
    }

    /// Asked when the body is sent: whether QUIT goes out behind the dot
    /// (then it is recorded as sent; its reply is not waited for).
    pub fn take_pipelined_quit(&mut self) -> bool {
        let due =
            self.quit_after_data && !self.settings.lmtp && self.pipelining && !self.quit_pipelined;
        if due {
            self.quit_pipelined = true;
        }
        due
    }

    /// QUIT was sent behind the final dot: the session is over.
    pub fn quit_pipelined(&self) -> bool {
        self.quit_pipelined
    }

    /// The RSET probe of a reused session failed: nothing was done.
    pub fn probe_failed(&self) -> bool {
        self.probe_failed
    }

    /// A reused (cached or chained) session gave a reply that cannot
    /// belong to the command it was read for (garbage, a 2xx to DATA, a
    /// 3xx elsewhere, a reply nobody asked for, replies left over): the
    /// session was closed and no recipient has a result from it, so the
    /// caller retries once on a fresh connection.
    pub fn desynchronised(&self) -> bool {
        self.desync
    }

    /// This client runs on a reused session.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Whether the next reply is read strictly (a line that is not a
    /// reply line is a protocol error at once): once PIPELINING is in
    /// effect (announced in the EHLO/LHLO reply; not for that reply
    /// itself nor the greeting), and always on a reused session.
    pub fn strict_replies(&self) -> bool {
        if self.reused {
            return true;
        }
        let opening = matches!(
            self.pending.front(),
            Some((Expect::Greeting | Expect::Hello(_), _))
        );
        self.settings.strict_reply_syntax && self.extensions.pipelining && !opening
    }

    /// Commands sent whose replies have not been read yet.
    pub fn awaiting_replies(&self) -> usize {
        self.pending.len()
    }

    /// The transaction is over, and bytes the server sent are left unread
    /// although no command awaits a reply: more replies than commands.
    /// The session is never kept. On a reused session whose message was
    /// not sent (the transaction ended before the body), the replies it
    /// read were out of step: its results are discarded.
    pub fn on_unread_replies(&mut self) {
        self.protocol_error = true;
        if self.step_unproven() && !self.body_went_out() {
            log::warn!(
                "{}: reply left over on a reused session; discarding it",
                self.settings.peer
            );
            self.discard_desynchronised();
        }
    }

    /// The message went out (so its replies may have settled recipients).
    fn body_went_out(&self) -> bool {
        self.body_sent_flag
    }

    /// Forgets every result of this session and closes it.
    fn discard_desynchronised(&mut self) {
        self.desync = true;
        self.protocol_error = true;
        for slot in &mut self.results {
            *slot = None;
        }
        self.close();
    }

    /// Replies may be out of step with commands: a reused session not yet
    /// proven in step by its DATA's 354.
    fn step_unproven(&self) -> bool {
        self.reused && !self.in_step
    }

    /// On a reused session: `reply` cannot answer `expect`.
    fn impossible(expect: Expect, reply: &Reply) -> bool {
        if reply.malformed || reply.is_protocol_violation() {
            return true;
        }
        match expect {
            Expect::Data => reply.is_positive(),
            Expect::RsetProbe
            | Expect::Mail
            | Expect::Rcpt(_)
            | Expect::Dot
            | Expect::LmtpDot(_)
            | Expect::EmptyDot
            | Expect::VerifyRset => reply.is_intermediate(),
            _ => false,
        }
    }

    /// The settings this client runs with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The envelope this client delivers.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message facts this client announced.
    pub fn facts(&self) -> MessageFacts {
        self.facts
    }

    /// Extensions of the server (empty before EHLO succeeded or after HELO).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The greeting and EHLO/HELO/LHLO completed (counts towards `mx_session_limit`).
    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    /// The last transaction failed after MAIL: RSET before reusing the connection.
    pub fn needs_rset(&self) -> bool {
        self.needs_rset
    }

    /// A malformed or out-of-range reply was seen: never cache this session.
    pub fn protocol_error(&self) -> bool {
        self.protocol_error
    }

    /// What each recipient got in this session, in envelope order
    /// (`None`: nothing happened to it, e.g. the session never reached RCPT).
    pub fn results(&self) -> &[Option<RcptResult>] {
        &self.results
    }

    pub fn into_results(self) -> Vec<Option<RcptResult>> {
        self.results
    }

    /// The next thing the driver must do.
    pub fn next_action(&mut self) -> Action {
        if self.stage == Stage::Closed {
            return Action::Close;
        }
        if self.stage == Stage::Body {
            self.stage = Stage::Transaction;
            self.sending = Some(Phase::Body);
            return Action::SendBody;
        }
        if self.tls_due {
            self.tls_due = false;
            self.sending = Some(Phase::StartTls);
            return Action::StartTls;
        }
        let window = if self.pipelining { PIPELINE_WINDOW } else { 0 };
        if !self.unsent.is_empty() && (self.pending.is_empty() || self.pending_bytes < window) {
            let mut bytes = Vec::new();
            let mut phase = None;
            while let Some((cmd, _)) = self.unsent.front() {
                let fits = bytes.is_empty() || self.pending_bytes + cmd.len() <= window;
                if !fits {
                    break;
                }
                let Some((cmd, expect)) = self.unsent.pop_front() else {
                    break;
                };
                phase.get_or_insert(expect.phase());
                if expect != Expect::QuitNoReply {
                    self.pending_bytes += cmd.len();
                    self.pending.push_back((expect, cmd.len()));
                }
                if bytes.is_empty() {
                    bytes = cmd;
                } else {
                    bytes.extend_from_slice(&cmd);
                }
                if window == 0 {
                    break;
                }
            }
            let phase = phase.unwrap_or(Phase::Mail);
            self.sending = Some(phase);
            return Action::Send { bytes, phase };
        }
        if let Some((expect, _)) = self.pending.front() {
            return Action::Receive(expect.phase());
        }
        match self.stage {
            Stage::Idle => Action::Idle,
            _ => {
                self.stage = Stage::Closed;
                Action::Close
            }
        }
    }

    /// Ends an idle session politely: QUIT (LMTP waits for its reply).
    pub fn quit(&mut self) {
        if self.stage == Stage::Closed {
            return;
        }
        self.stage = Stage::Closing;
        let expect_reply = self.settings.lmtp;
        self.queue_quit(expect_reply);
    }

    /// Probes an idle session before reuse: RSET; a positive reply makes it
    /// idle again, anything else closes it.
    pub fn reset(&mut self) {
        if self.stage == Stage::Idle {
            self.stage = Stage::Closing;
            self.unsent
                .push_back((command::RSET.to_vec(), Expect::Rset));
        }
    }

    /// Feeds the reply to the oldest command awaiting one.
    pub fn on_reply(&mut self, reply: Reply) {
        let Some((expect, len)) = self.pending.pop_front() else {
            // A reply nobody asked for: a protocol error; stop talking.
            if self.step_unproven() {
                self.discard_desynchronised();
                return;
            }
            self.protocol_error = true;
            self.close();
            return;
        };
        if self.step_unproven()
            && Self::impossible(expect, &reply)
            && !matches!(expect, Expect::Quit | Expect::QuitNoReply | Expect::Rset)
        {
            log::warn!(
                "{}: reply out of step on a reused session ({} for {}); discarding the session",
                self.settings.peer,
                reply.text,
                expect.phase().command_name()
            );
            self.discard_desynchronised();
            return;
        }
        self.pending_bytes = self.pending_bytes.saturating_sub(len);
        self.sending = None;
        if reply.malformed || reply.is_protocol_violation() {
            self.protocol_error = true;
        }
        if reply.malformed && reply.code == 0 && !self.step_unproven() {
            // A reply cut short by a line that is not a reply line (with
            // PIPELINING, or past the skipping bound): the replies that
            // follow can no longer be matched with their commands.
            // Postfix's 5.5.0 for every open recipient, at once.
            log::warn!(
                "{}: non-{} response: {}",
                self.settings.peer,
                if self.settings.lmtp { "LMTP" } else { "ESMTP" },
                reply.text
            );
            self.fail_all_and_close(&reply, expect);
            return;
        }
        if reply.code == 421
            && !matches!(
                expect,
                Expect::Quit | Expect::EmptyDot | Expect::RsetProbe | Expect::Auth(_)
            )
        {
            self.fail_all_and_close(&reply, expect);
            return;
        }
        match expect {
            Expect::Greeting => self.on_greeting(&reply),
            Expect::Hello(hello) => self.on_hello(hello, &reply),
            Expect::Mail => self.on_mail(&reply),
            Expect::Rcpt(index) => self.on_rcpt(index, &reply),
            Expect::Data => self.on_data(&reply),
            Expect::Dot => self.on_dot(reply),
            Expect::LmtpDot(index) => self.on_lmtp_dot(index, &reply),
            Expect::EmptyDot => self.after_transaction(),
            Expect::Rset => {
                if reply.is_positive() {
                    self.needs_rset = false;
                    self.stage = Stage::Idle;
                } else {
                    self.quit();
                }
            }
            Expect::VerifyRset => {
                if reply.is_positive() {
                    self.after_transaction();
                } else {
                    // The reply of a command sent before (a DATA's 354 or
                    // refusal): everything was read one step late.
                    log::warn!(
                        "{}: reply out of step on a reused session ({} for RSET); discarding the session",
                        self.settings.peer,
                        reply.text
                    );
                    self.discard_desynchronised();
                }
            }
            Expect::StartTls => self.on_starttls(&reply),
            Expect::Auth(hello) => self.on_auth(hello, &reply),
            Expect::AuthCancel(_) => self.quit(),
            Expect::RsetProbe => {
                if reply.is_positive() {
                    self.handshake_done = true;
                    self.handshake_at
                        .get_or_insert_with(std::time::Instant::now);
                    if !self.probe_pipelined {
                        self.start_transaction();
                    }
                } else {
                    self.probe_failed = true;
                    if self.probe_pipelined {
                        // MAIL/RCPT/DATA are in flight: drop the connection.
                        self.close();
                    } else {
                        self.quit();
                    }
                }
            }
            Expect::Quit | Expect::QuitNoReply => {}
        }
    }

    /// The transport failed while doing the current action: every recipient
    /// still open gets 4.4.2 naming the step.
    pub fn on_io_failure(&mut self, failure: IoFailure) {
        let probing = matches!(self.pending.front(), Some((Expect::RsetProbe, _)))
            || self.sending == Some(Phase::RsetProbe);
        if probing {
            self.probe_failed = true;
            self.close();
            return;
        }
        let in_starttls_session = self.tls_active && self.settings.tls == TlsMode::Opportunistic;
        if in_starttls_session
            && self.plaintext_fallback
            && self.results.iter().any(Option::is_none)
        {
            log::info!(
                "{}: TLS session failed ({failure:?}); retrying in plaintext",
                self.settings.peer
            );
            self.retry_plain = true;
            self.close();
            return;
        }
        let phase = self
            .pending
            .front()
            .map(|(e, _)| e.phase())
            .or(self.sending)
            .unwrap_or(Phase::Quit);
        {
            // Recipients that already have a result keep it.
            let peer = &self.settings.peer;
            let text = match failure {
                IoFailure::Timeout => format!(
                    "conversation with {peer} timed out while {}",
                    phase.while_text()
                ),
                IoFailure::Lost => {
                    format!("lost connection with {peer} while {}", phase.while_text())
                }
                IoFailure::Other(err) => {
                    format!(
                        "lost connection with {peer} while {}: {err}",
                        phase.while_text()
                    )
                }
            };
            self.fail_remaining(&Dsn::new(crate::dsn::CONNECTION_LOST, text));
        }
        self.close();
    }

    /// A local problem (the message file could not be read) during the body:
    /// every open recipient gets 4.3.0 and the connection is dropped.
    pub fn on_local_failure(&mut self, text: &str) {
        let dsn = Dsn::new(
            crate::dsn::SYSTEM_TROUBLE,
            format!(
                "local data error while talking to {}: {text}",
                self.settings.peer
            ),
        );
        self.fail_remaining(&dsn);
        self.close();
    }

    /// The server answered and hung up while the body was still being sent:
    /// the reply counts as the end-of-data reply; whatever it does not settle
    /// fails with the connection loss.
    pub fn on_early_reply(&mut self, reply: Reply, failure: IoFailure) {
        self.body_sent();
        self.on_reply(reply);
        self.on_io_failure(failure);
    }

    /// The content cannot be converted to 7 bits (Postfix's
    /// `smtp_mime_fail`): every open recipient fails with the MIME error
    /// (5.6.0: the message bounces) and the connection is dropped without
    /// the final dot, the only way to cancel the transaction.
    pub fn on_mime_failure(&mut self, error: MimeError) {
        let dsn = Dsn::new(error.status(), error.text().to_string());
        self.fail_remaining(&dsn);
        self.close();
    }

    /// The content must be converted to 7 bits on its way out, with these
    /// limits: conversion is on, the server did not offer 8BITMIME and the
    /// message has 8-bit bytes (Postfix: and was not received as
    /// BODY=7BIT; mailhop has only the scan).
    pub fn mime_downgrade(&self) -> Option<MimeLimits> {
        self.settings
            .mime_conversion
            .filter(|_| !self.extensions.eightbitmime && self.facts.has_8bit)
    }

    /// The body and ".\r\n" were written; await the end-of-data reply(ies).
    pub fn body_sent(&mut self) {
        self.sending = None;
        self.body_sent_flag = true;
        if self.settings.lmtp {
            for &index in &self.accepted {
                self.pending.push_back((Expect::LmtpDot(index), 0));
            }
        } else {
            self.pending.push_back((Expect::Dot, 0));
        }
    }

    fn on_greeting(&mut self, reply: &Reply) {
        if !reply.is_positive() {
            let text = self.refused(reply);
            let mut dsn = self.failure_dsn(reply, text);
            if dsn.code.is_hard() && reply.code / 100 == 5 && self.settings.skip_5xx_greeting {
                dsn.code = dsn.code.soft();
            }
            self.fail_remaining(&dsn);
            self.quit();
            return;
        }
        let hello = if self.settings.lmtp {
            Hello::Lhlo
        } else {
            Hello::Ehlo
        };
        self.queue_hello(hello);
    }

    fn queue_hello(&mut self, hello: Hello) {
        let name = &self.settings.helo_name;
        let bytes = match hello {
            Hello::Ehlo => command::ehlo(name),
            Hello::Helo => command::helo(name),
            Hello::Lhlo => command::lhlo(name),
        };
        self.unsent.push_back((bytes, Expect::Hello(hello)));
    }

    fn on_hello(&mut self, hello: Hello, reply: &Reply) {
        if reply.is_positive() {
            // Postfix checks the EHLO reply only.
            if let Some(check) = self
                .settings
                .loop_check
                .as_ref()
                .filter(|_| hello == Hello::Ehlo)
            {
                let server_name = reply
                    .lines()
                    .next()
                    .and_then(|l| l.split_ascii_whitespace().next());
                let ours = server_name.and_then(|name| {
                    check
                        .my_names
                        .iter()
                        .find(|mine| name.eq_ignore_ascii_case(mine))
                });
                if let Some(mine) = ours {
                    log::warn!(
                        "host {} replied to {} with my own hostname {mine}",
                        self.settings.peer,
                        hello.name(),
                    );
                    let code = if check.best_mx {
                        crate::dsn::MAIL_LOOP
                    } else {
                        crate::dsn::MAIL_LOOP_BACKUP_MX
                    };
                    let dsn = Dsn::new(
                        code,
                        format!("mail for {} loops back to myself", check.nexthop),
                    );
                    self.fail_remaining(&dsn);
                    self.quit();
                    return;
                }
            }
            if hello != Hello::Helo {
                self.extensions = Extensions::from_reply(reply);
            }
            if !self.tls_active
                && matches!(
                    self.settings.tls,
                    TlsMode::Opportunistic | TlsMode::Required
                )
            {
                if self.extensions.starttls {
                    self.unsent
                        .push_back((command::STARTTLS.to_vec(), Expect::StartTls));
                    return;
                }
                if self.settings.tls == TlsMode::Required {
                    self.starttls_unsupported = true;
                    let dsn = Dsn::new(
                        crate::dsn::TLS_NOT_OFFERED,
                        format!(
                            "TLS is required, but was not offered by host {}",
                            self.settings.peer
                        ),
                    );
                    self.fail_remaining(&dsn);
                    self.quit();
                    return;
                }
            }
            self.after_hello(hello);
            return;
        }
        if hello == Hello::Ehlo {
            self.queue_hello(Hello::Helo);
            return;
        }
        let text = self.refused(reply);
        let dsn = self.failure_dsn(reply, text);
        self.fail_remaining(&dsn);
        self.quit();
    }

    fn on_starttls(&mut self, reply: &Reply) {
        if reply.code / 100 == 2 {
            self.tls_due = true;
            return;
        }
        if self.settings.tls == TlsMode::Required {
            self.starttls_unsupported = true;
            let text = format!(
                "TLS is required, but host {} refused to start TLS: {}",
                self.settings.peer, reply.text
            );
            let dsn = self.failure_dsn(reply, text);
            self.fail_remaining(&dsn);
            self.quit();
            return;
        }
        // Opportunistic TLS: carry on in plaintext.
        log::info!(
            "host {} refused to start TLS: {}; continuing in plaintext",
            self.settings.peer,
            reply.text
        );
        self.extensions.starttls = false;
        let hello = if self.settings.lmtp {
            Hello::Lhlo
        } else {
            Hello::Ehlo
        };
        self.after_hello(hello);
    }

    /// EHLO/LHLO (and STARTTLS) are done: authenticate when due, else
    /// start the transaction.
    fn after_hello(&mut self, hello: Hello) {
        if hello != Hello::Helo
            && self.extensions.auth_offered
            && let Some(auth) = self.settings.sasl.clone()
        {
            self.start_auth(hello, &auth);
            return;
        }
        self.hello_complete();
    }

    fn hello_complete(&mut self) {
        self.handshake_done = true;
        self.handshake_at
            .get_or_insert_with(std::time::Instant::now);
        self.start_transaction();
    }

    /// Chooses the mechanism and sends AUTH (Postfix's
    /// smtp_sasl_helo_login and smtp_sasl_authenticate).
    fn start_auth(&mut self, hello: Hello, auth: &crate::sasl::ClientAuth) {
        use crate::sasl::{self, ChooseError};
        let peer = self.settings.peer.clone();
        let offered: Vec<String> = self
            .extensions
            .auth
            .iter()
            .filter(|m| !m.is_empty())
            .cloned()
            .collect();
        let options = if !self.tls_active {
            auth.options
        } else if self.settings.tls_authenticated {
            auth.tls_verified_options
        } else {
            auth.tls_options
        };
        let kind = match sasl::choose(&offered, &auth.filter, options) {
            Ok(kind) => kind,
            Err(ChooseError::NoneOffered) => {
                if offered.is_empty() {
                    log::warn!("{peer} offered null AUTH mechanism list");
                } else {
                    log::warn!(
                        "{peer} offered no supported AUTH mechanisms: '{}'",
                        offered.join(" ")
                    );
                }
                self.auth_failed(format!(
                    "SASL authentication failed: server {peer} offered no compatible \
                     authentication mechanisms for this type of connection security"
                ));
                return;
            }
            Err(ChooseError::NoMechanism) => {
                self.auth_failed(format!(
                    "SASL authentication failed; cannot authenticate to server {peer}: \
                     no mechanism available"
                ));
                return;
            }
        };
        let credential = &auth.credential;
        let mut mechanism = sasl::Mechanism::start(
            kind,
            &credential.username,
            &credential.password,
            &auth.nonce,
        );
        let initial = mechanism
            .initial_response()
            .map(|raw| sasl::encode64(&raw))
            .filter(|text| !text.is_empty());
        let name = kind.name();
        // RFC 4954: the initial response only when the AUTH line fits in
        // 512 octets; otherwise it answers the server's empty challenge.
        let (line, deferred) = match initial {
            Some(text) if name.len() + text.len() + 8 <= 512 => {
                (format!("AUTH {name} {text}\r\n"), None)
            }
            other => (format!("AUTH {name}\r\n"), other),
        };
        log::debug!(
            "{peer}: SASL authentication as {} with {name}",
            credential.username
        );
        self.auth = Some(AuthExchange {
            mechanism,
            deferred,
            steps: 0,
        });
        self.unsent
            .push_back((line.into_bytes(), Expect::Auth(hello)));
    }

    fn on_auth(&mut self, hello: Hello, reply: &Reply) {
        let peer = self.settings.peer.clone();
        let Some(mut exchange) = self.auth.take() else {
            self.protocol_error = true;
            self.close();
            return;
        };
        if reply.code / 100 == 3 {
            exchange.steps += 1;
            if exchange.steps > AUTH_STEP_LIMIT {
                let dsn = Dsn::new(
                    crate::dsn::SYSTEM_TROUBLE,
                    format!(
                        "SASL authentication failed; authentication protocol loop with server {peer}"
                    ),
                );
                self.fail_remaining(&dsn);
                self.cancel_auth(hello);
                return;
            }
            // The challenge: the first line's text after the code.
            let challenge = reply.lines().next().map(|line| line.trim()).unwrap_or("");
            let response = if let Some(deferred) = exchange.deferred.take() {
                if !challenge.is_empty() {
                    self.auth_failed(format!(
                        "SASL authentication failed; non-empty initial {} challenge from server {peer}: {challenge}",
                        exchange.mechanism.kind().name()
                    ));
                    self.cancel_auth(hello);
                    return;
                }
                deferred
            } else {
                let answer = crate::sasl::decode64(challenge)
                    .ok_or_else(|| {
                        crate::sasl::MechError("malformed SASL challenge (not base64)".into())
                    })
                    .and_then(|raw| exchange.mechanism.respond(&raw));
                match answer {
                    Ok(raw) => crate::sasl::encode64(&raw),
                    Err(e) => {
                        self.auth_failed(format!(
                            "SASL authentication failed; cannot authenticate to server {peer}: {e}"
                        ));
                        self.cancel_auth(hello);
                        return;
                    }
                }
            };
            self.auth = Some(exchange);
            let mut line = response.into_bytes();
            line.extend_from_slice(b"\r\n");
            self.unsent.push_back((line, Expect::Auth(hello)));
            return;
        }
        if reply.is_positive() {
            if let Err(e) = exchange.mechanism.finish() {
                self.auth_failed(format!(
                    "SASL authentication failed; cannot authenticate to server {peer}: {e}"
                ));
                return;
            }
            self.authenticated = Some(exchange.mechanism.kind().name());
            self.hello_complete();
            return;
        }
        let text = format!(
            "SASL authentication failed; server {peer} said: {}",
            reply.text
        );
        let mut dsn = self.failure_dsn(reply, text);
        let soft_bounce = self.settings.sasl.as_ref().is_some_and(|a| a.soft_bounce);
        if soft_bounce && dsn.code.class() == 5 {
            dsn.code = dsn.code.soft();
        }
        self.fail_remaining(&dsn);
        self.quit();
    }

    /// A 4.7.0 SASL failure of every open recipient; the session ends.
    fn auth_failed(&mut self, text: String) {
        let dsn = Dsn::new(crate::dsn::SASL_FAILED, text);
        self.fail_remaining(&dsn);
        self.auth = None;
        self.quit();
    }

    /// The server awaits a response we cannot give: `*` cancels the
    /// exchange (RFC 4954), then QUIT.
    fn cancel_auth(&mut self, hello: Hello) {
        self.auth = None;
        self.stage = Stage::Closing;
        self.unsent.clear();
        self.unsent
            .push_back((b"*\r\n".to_vec(), Expect::AuthCancel(hello)));
    }

    /// The TLS handshake after STARTTLS succeeded: forget what the server
    /// said in plaintext and greet it again (RFC 3207).
    pub fn tls_started(&mut self) {
        self.sending = None;
        self.tls_active = true;
        self.extensions = Extensions::default();
        let hello = if self.settings.lmtp {
            Hello::Lhlo
        } else {
            Hello::Ehlo
        };
        self.queue_hello(hello);
    }

    /// The TLS handshake (or the certificate check) failed. With
    /// `retry_plain` the recipients are left untouched for a plaintext retry
    /// of the same server; otherwise every open recipient gets `dsn`. The
    /// connection is unusable either way.
    pub fn on_tls_failure(&mut self, dsn: &Dsn, retry_plain: bool) {
        if retry_plain {
            self.retry_plain = true;
        } else {
            self.fail_remaining(dsn);
        }
        self.close();
    }

    /// The caller should reconnect to this server without TLS.
    /// TLS was required, but the server did not offer STARTTLS or
    /// refused it: the session ended before any TLS handshake.
    pub fn starttls_unsupported(&self) -> bool {
        self.starttls_unsupported
    }

    pub fn retry_plain(&self) -> bool {
        self.retry_plain
    }

    /// TLS is up on this session.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// The SMTPUTF8 facts of this transaction (see [`smtputf8`]).
    fn smtputf8_facts(&self) -> smtputf8::Facts {
        smtputf8::Facts {
            a_labels: self.smtputf8_a_labels,
            ..smtputf8::facts(
                self.settings.smtputf8_enable,
                self.envelope.smtputf8,
                &self.envelope.sender,
                self.envelope.recipients.iter().map(|r| r.address.as_str()),
                self.facts.utf8_header,
            )
        }
    }

    fn start_transaction(&mut self) {
        let peer = self.settings.peer.clone();
        let plan = self.smtputf8_facts().plan(self.extensions.smtputf8);
        let smtputf8 = plan == smtputf8::Plan::Smtputf8;
        if plan == smtputf8::Plan::Refuse {
            let dsn = Dsn::new(
                crate::dsn::SMTPUTF8_REQUIRED,
                format!("SMTPUTF8 is required, but was not offered by host {peer}"),
            )
            .soft_non_final();
            self.fail_remaining(&dsn);
            self.stage = Stage::Idle;
            return;
        }
        if self.envelope.requiretls
            && let Some(dsn) = self.requiretls_refusal(&peer)
        {
            self.fail_remaining(&dsn);
            self.stage = Stage::Idle;
            return;
        }
        if let Some(limit) = self.extensions.size_limit()
            && self.facts.size > limit
        {
            let dsn = Dsn::new(
                crate::dsn::MESSAGE_TOO_BIG,
                format!(
                    "message size {} exceeds size limit {limit} of server {peer}",
                    self.facts.size
                ),
            );
            self.fail_remaining(&dsn);
            self.stage = Stage::Idle;
            return;
        }
        let ext = &self.extensions;
        let mail = MailParams {
            // Postfix sends no SIZE when it converts: the size would change.
            size: ext
                .size
                .filter(|_| self.mime_downgrade().is_none())
                .map(|_| self.facts.size),
            body: ext.eightbitmime.then_some(if self.facts.has_8bit {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            }),
            ret: if ext.dsn { self.envelope.ret } else { None },
            envid: if ext.dsn {
                self.envelope.envid.clone()
            } else {
                None
            },
            smtputf8,
            requiretls: self.envelope.requiretls,
        };
        // Without SMTPUTF8, non-ASCII domains go as A-labels (unless
        // smtputf8_a_labels is off: Postfix's behaviour).
        let a_labels = self.smtputf8_a_labels;
        let address = |a: &'_ str| -> String {
            if smtputf8 || !a_labels {
                a.to_owned()
            } else {
                smtputf8::wire_address(a).into_owned()
            }
        };
        self.pipelining = ext.pipelining;
        self.stage = Stage::Transaction;
        self.unsent.push_back((
            command::mail_from(&address(&self.envelope.sender), &mail),
            Expect::Mail,
        ));
        for (index, rcpt) in self.envelope.recipients.iter().enumerate() {
            if self.results.get(index).is_some_and(Option::is_some) {
                continue;
            }
            let params = if ext.dsn {
                RcptParams {
                    notify: rcpt.notify.value(),
                    orcpt: Some(command::orcpt_value(
                        rcpt.orcpt.as_deref(),
                        &rcpt.address,
                        smtputf8,
                    )),
                }
            } else {
                RcptParams::default()
            };
            self.unsent.push_back((
                command::rcpt_to(&address(&rcpt.address), &params),
                Expect::Rcpt(index),
            ));
        }
        self.unsent
            .push_back((command::DATA.to_vec(), Expect::Data));
    }

    /// Why a REQUIRETLS message cannot go to this server (RFC 8689
    /// section 4.2.1, Postfix's wording), as a failure that lets the next
    /// MX host try: no TLS or no authenticated TLS (5.7.10), or a server
    /// that does not announce REQUIRETLS (5.7.30).
    fn requiretls_refusal(&self, peer: &str) -> Option<Dsn> {
        let dsn = if !self.tls_active || !self.settings.tls_authenticated {
            Dsn::new(
                crate::dsn::REQUIRETLS_NOT_AUTHENTICATED,
                format!(
                    "Sender requested REQUIRETLS, but no {} server certificate was found. \
                     The last attempted server was {peer}",
                    if self.tls_active { "matching" } else { "TLS" }
                ),
            )
        } else if !self.extensions.requiretls {
            Dsn::new(
                crate::dsn::REQUIRETLS_NOT_OFFERED,
                format!(
                    "Sender requested REQUIRETLS, but REQUIRETLS was not offered by host {peer}"
                ),
            )
        } else {
            return None;
        };
        Some(dsn.soft_non_final())
    }

    fn on_mail(&mut self, reply: &Reply) {
        if reply.is_positive() {
            self.mail_accepted = true;
            return;
        }
        let text = self.said(reply, Phase::Mail);
        let dsn = self.failure_dsn(reply, text);
        self.fail_remaining(&dsn);
        self.transaction_failed = true;
        self.drop_unsent_transaction();
    }

    fn on_rcpt(&mut self, index: usize, reply: &Reply) {
        if self.mail_accepted {
            if reply.is_positive() {
                self.accepted.push(index);
            } else {
                let text = self.said(reply, Phase::Rcpt);
                let dsn = self.failure_dsn(reply, text);
                self.set_result(index, RcptResult::Failed(dsn));
            }
        }
        let more_rcpts = self
            .pending
            .iter()
            .map(|(e, _)| *e)
            .chain(self.unsent.iter().map(|(_, e)| *e))
            .any(|e| matches!(e, Expect::Rcpt(_)));
        if !more_rcpts && self.accepted.is_empty() {
            self.transaction_failed = true;
            self.drop_unsent_transaction();
        }
    }

    fn on_data(&mut self, reply: &Reply) {
        let deliverable =
            self.mail_accepted && !self.accepted.is_empty() && !self.transaction_failed;
        if reply.is_intermediate() {
            self.in_step = true;
            if deliverable {
                self.stage = Stage::Body;
            } else {
                self.unsent
                    .push_back((command::DOT.to_vec(), Expect::EmptyDot));
            }
            return;
        }
        if deliverable {
            let text = self.said(reply, Phase::Data);
            let dsn = self.failure_dsn(reply, text);
            self.fail_remaining(&dsn);
        }
        self.transaction_failed = true;
        self.after_transaction();
    }

    fn on_dot(&mut self, reply: Reply) {
        if reply.is_positive() {
            let dsn = Dsn::new(reply.status(), reply.text);
            let accepted = std::mem::take(&mut self.accepted);
            if let Some((&last, others)) = accepted.split_last() {
                for &index in others {
                    self.set_result(index, RcptResult::Delivered(dsn.clone()));
                }
                // The last recipient takes the reply itself.
                self.set_result(last, RcptResult::Delivered(dsn));
            }
            self.accepted = accepted;
        } else {
            let text = self.said(&reply, Phase::Dot);
            let dsn = self.failure_dsn(&reply, text);
            self.fail_remaining(&dsn);
            self.transaction_failed = true;
        }
        self.after_transaction();
    }

    fn on_lmtp_dot(&mut self, index: usize, reply: &Reply) {
        let result = if reply.is_positive() {
            RcptResult::Delivered(Dsn::new(reply.status(), reply.text.clone()))
        } else {
            let text = self.said(reply, Phase::Dot);
            RcptResult::Failed(self.failure_dsn(reply, text))
        };
        self.set_result(index, result);
        if !self
            .pending
            .iter()
            .any(|(e, _)| matches!(e, Expect::LmtpDot(_)))
        {
            self.after_transaction();
        }
    }

    fn after_transaction(&mut self) {
        if self.pending.is_empty() && self.unsent.is_empty() && self.stage != Stage::Closed {
            // On a reused session a transaction that failed before its
            // message went out may have read every reply one step late
            // (a stray reply ahead of them): one RSET more shows it, as
            // its reply would then be the DATA's.
            if self.step_unproven()
                && self.transaction_failed
                && !self.body_sent_flag
                && !self.verify_sent
            {
                self.verify_sent = true;
                self.unsent
                    .push_back((command::RSET.to_vec(), Expect::VerifyRset));
                return;
            }
            self.needs_rset = self.transaction_failed;
            self.stage = Stage::Idle;
        }
    }

    fn drop_unsent_transaction(&mut self) {
        self.unsent
            .retain(|(_, e)| !matches!(e, Expect::Rcpt(_) | Expect::Data));
        if self.pending.is_empty() {
            self.after_transaction();
        }
    }

    fn queue_quit(&mut self, expect_reply: bool) {
        self.unsent.clear();
        if expect_reply {
            self.unsent
                .push_back((command::QUIT.to_vec(), Expect::Quit));
        } else {
            // QUIT without waiting for its reply (smtp_skip_quit_response).
            self.unsent
                .push_back((command::QUIT.to_vec(), Expect::QuitNoReply));
        }
    }

    fn close(&mut self) {
        self.unsent.clear();
        self.pending.clear();
        self.pending_bytes = 0;
        self.stage = Stage::Closed;
    }

    /// Every recipient without a result fails with the server's `reply` to
    /// `expect` (refused to talk during greeting and EHLO/HELO, "said" after
    /// them), and the session closes without QUIT.
    fn fail_all_and_close(&mut self, reply: &Reply, expect: Expect) {
        let text = match expect {
            Expect::Greeting | Expect::Hello(_) => self.refused(reply),
            _ => self.said(reply, expect.phase()),
        };
        let dsn = self.failure_dsn(reply, text);
        self.fail_remaining(&dsn);
        self.close();
    }

    /// `host H[A] refused to talk to me: REPLY`.
    fn refused(&self, reply: &Reply) -> String {
        format!(
            "host {} refused to talk to me: {}",
            self.settings.peer, reply.text
        )
    }

    /// `host H[A] said: REPLY (in reply to X command)`.
    fn said(&self, reply: &Reply, phase: Phase) -> String {
        format!(
            "host {} said: {} (in reply to {} command)",
            self.settings.peer,
            reply.text,
            phase.command_name()
        )
    }

    /// The DSN for a negative reply: its own code, or 5.5.0 "Protocol error"
    /// when the reply is not a 4xx/5xx at all.
    fn failure_dsn(&self, reply: &Reply, text: String) -> Dsn {
        match reply.code / 100 {
            4 | 5 => Dsn::new(reply.status(), text),
            _ => Dsn::new(
                crate::dsn::PROTOCOL_ERROR,
                format!("Protocol error: {text}"),
            ),
        }
    }

    fn set_result(&mut self, index: usize, result: RcptResult) {
        if let Some(slot) = self.results.get_mut(index)
            && slot.is_none()
        {
            *slot = Some(result);
        }
    }

    /// Every recipient without a result gets this failure.
    fn fail_remaining(&mut self, dsn: &Dsn) {
        for slot in self.results.iter_mut().filter(|s| s.is_none()) {
            *slot = Some(RcptResult::Failed(dsn.clone()));
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
