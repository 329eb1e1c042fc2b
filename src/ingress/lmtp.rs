//! The LMTP server conversation of the ingress (RFC 2033), without I/O:
//! command lines in, replies and envelope events out. LHLO (with
//! PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SMTPUTF8, SIZE, DSN,
//! REQUIRETLS and XFORWARD), MAIL FROM with SIZE, BODY, RET, ENVID,
//! SMTPUTF8 and REQUIRETLS, RCPT TO
//! with NOTIFY and ORCPT, DATA (the message lines, dot-unstuffed, go to
//! the caller), RSET, NOOP, XFORWARD and QUIT. After the final dot the
//! caller delivers the transaction and answers with [`recipient_reply`],
//! one reply per accepted recipient, in RCPT order.
//!
//! Error contract: nothing here panics on input; a bad command gets its
//! 5xx reply and the conversation goes on.

use crate::job::{JobRecipient, NotifyWord, RetWord};
use crate::recipients::Status;
use crate::smtp::command::check_address;

/// Most recipients of one transaction (Postfix's smtpd_recipient_limit).
pub const MAX_RECIPIENTS: usize = 1000;
/// Longest command line accepted (RFC 5321's 512 plus parameters).
pub const MAX_COMMAND: usize = 4096;

/// One transaction's envelope, as MAIL and RCPT gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<JobRecipient>,
    pub envid: Option<String>,
    pub ret: Option<RetWord>,
    pub smtputf8: bool,
    /// MAIL FROM ... REQUIRETLS (RFC 8689): the job gets `requiretls`.
    pub requiretls: bool,
    /// BODY=8BITMIME.
    pub eight_bit: bool,
    /// The SIZE the client announced.
    pub size: Option<u64>,
    /// XFORWARD attributes (NAME, ADDR, IDENT, ...), as sent.
    pub xforward: Vec<(String, String)>,
}

/// What the caller does after a command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this reply (CRLF-terminated lines).
    Reply(String),
    /// Send this reply (354), then pass the message lines to
    /// [`Server::data_line`] until it says the message ended.
    Data(String),
    /// Send this reply, then close the connection.
    Close(String),
}

/// A line of the message, or its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataLine<'a> {
    /// A message line, dot-unstuffed, without its line end.
    Line(&'a [u8]),
    /// The final dot: deliver [`Server::envelope`].
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Greeted,
    Ready,
    Mail,
}

/// One LMTP conversation.
#[derive(Debug)]
pub struct Server {
    hostname: String,
    max_size: u64,
    state: State,
    envelope: Envelope,
}

impl Server {
    /// A conversation of `hostname`, accepting messages up to `max_size`
    /// bytes (0: no limit).
    pub fn new(hostname: impl Into<String>, max_size: u64) -> Self {
        Self {
            hostname: hostname.into(),
            max_size,
            state: State::Greeted,
            envelope: Envelope::default(),
        }
    }

    /// The greeting.
    pub fn greeting(&self) -> String {
        format!("220 {} LMTP mailhop\r\n", self.hostname)
    }

    /// The transaction's envelope (after the final dot: what to deliver).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The transaction is answered: a new one may start (XFORWARD
    /// attributes are kept: a client may send them once per session, and
    /// Postfix sends them again, replacing them, for each message).
    pub fn transaction_done(&mut self) {
        let xforward = std::mem::take(&mut self.envelope.xforward);
        self.envelope = Envelope {
            xforward,
            ..Envelope::default()
        };
        if self.state == State::Mail {
            self.state = State::Ready;
        }
    }

    /// One command line (without or with its CRLF).
    pub fn command(&mut self, line: &[u8]) -> Step {
        if line.len() > MAX_COMMAND {
            return reply("500 5.5.2 Error: line too long");
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return reply("500 5.5.2 Error: bad UTF-8 syntax");
        };
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, rest) = match text.split_once(' ') {
            Some((verb, rest)) => (verb, rest.trim()),
            None => (text, ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "LHLO" => self.lhlo(rest),
            "HELO" | "EHLO" => reply("500 5.5.1 Error: this is LMTP: use LHLO"),
            "MAIL" => self.mail(rest),
            "RCPT" => self.rcpt(rest),
            "DATA" => self.data(),
            "RSET" => {
                self.transaction_done();
                reply("250 2.0.0 Ok")
            }
            "NOOP" => reply("250 2.0.0 Ok"),
            "XFORWARD" => self.xforward(rest),
            "QUIT" => Step::Close("221 2.0.0 Bye\r\n".into()),
            "" => reply("500 5.5.2 Error: bad syntax"),
            _ => reply("502 5.5.2 Error: command not recognized"),
        }
    }

    fn lhlo(&mut self, name: &str) -> Step {
        if name.is_empty() {
            return reply("501 5.5.4 Syntax: LHLO hostname");
        }
        self.transaction_done();
        self.state = State::Ready;
        let size = if self.max_size > 0 {
            format!("250-SIZE {}\r\n", self.max_size)
        } else {
            "250-SIZE\r\n".into()
        };
        Step::Reply(format!(
            "250-{}\r\n250-PIPELINING\r\n{size}250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
             250-SMTPUTF8\r\n250-DSN\r\n250-REQUIRETLS\r\n250 XFORWARD NAME ADDR PROTO HELO IDENT SOURCE\r\n",
            self.hostname
        ))
    }

    fn mail(&mut self, rest: &str) -> Step {
        match self.state {
            State::Greeted => return reply("503 5.5.1 Error: send LHLO first"),
            State::Mail => return reply("503 5.5.1 Error: nested MAIL command"),
            State::Ready => {}
        }
        let Some((address, params)) = path_and_params(rest, "FROM:") else {
            return reply("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        if check_address(address).is_err() {
            return reply("501 5.1.7 Bad sender address syntax");
        }
        let mut envelope = Envelope {
            sender: address.to_string(),
            xforward: std::mem::take(&mut self.envelope.xforward),
            ..Envelope::default()
        };
        for param in params {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(size) if self.max_size > 0 && size > self.max_size => {
                        self.envelope.xforward = envelope.xforward;
                        return reply("552 5.3.4 Error: message file too big");
                    }
                    Ok(size) => envelope.size = Some(size),
                    Err(_) => {
                        self.envelope.xforward = envelope.xforward;
                        return reply("501 5.5.4 Bad SIZE parameter");
                    }
                },
                "BODY" => match value.to_ascii_uppercase().as_str() {
                    "8BITMIME" => envelope.eight_bit = true,
                    "7BIT" => {}
                    _ => {
                        self.envelope.xforward = envelope.xforward;
                        return reply("501 5.5.4 Bad BODY parameter");
                    }
                },
                "RET" => match value.to_ascii_uppercase().as_str() {
                    "FULL" => envelope.ret = Some(RetWord::Full),
                    "HDRS" => envelope.ret = Some(RetWord::Hdrs),
                    _ => {
                        self.envelope.xforward = envelope.xforward;
                        return reply("501 5.5.4 Bad RET parameter");
                    }
                },
                "ENVID" if !value.is_empty() => envelope.envid = Some(xtext_decode(value)),
                "SMTPUTF8" if value.is_empty() => envelope.smtputf8 = true,
                "REQUIRETLS" if value.is_empty() => envelope.requiretls = true,
                _ => {
                    self.envelope.xforward = envelope.xforward;
                    return reply("555 5.5.4 Unsupported option");
                }
            }
        }
        self.envelope = envelope;
        self.state = State::Mail;
        reply("250 2.1.0 Ok")
    }

    fn rcpt(&mut self, rest: &str) -> Step {
        if self.state != State::Mail {
            return reply("503 5.5.1 Error: need MAIL command");
        }
        if self.envelope.recipients.len() >= MAX_RECIPIENTS {
            return reply("452 4.5.3 Error: too many recipients");
        }
        let Some((address, params)) = path_and_params(rest, "TO:") else {
            return reply("501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if address.is_empty() || check_address(address).is_err() {
            return reply("501 5.1.3 Bad recipient address syntax");
        }
        let mut recipient = JobRecipient::new(address);
        for param in params {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key.to_ascii_uppercase().as_str() {
                "NOTIFY" => match notify_words(value) {
                    Some(words) => recipient.notify = Some(words),
                    None => return reply("501 5.5.4 Bad NOTIFY parameter"),
                },
                "ORCPT" if !value.is_empty() => recipient.orcpt = Some(xtext_decode(value)),
                _ => return reply("555 5.5.4 Unsupported option"),
            }
        }
        self.envelope.recipients.push(recipient);
        reply("250 2.1.5 Ok")
    }

    fn data(&mut self) -> Step {
        if self.state != State::Mail || self.envelope.recipients.is_empty() {
            return reply("503 5.5.1 Error: need RCPT command");
        }
        Step::Data("354 End data with <CR><LF>.<CR><LF>\r\n".into())
    }

    fn xforward(&mut self, rest: &str) -> Step {
        if self.state == State::Mail {
            return reply("503 5.5.1 Error: XFORWARD not allowed in a transaction");
        }
        let mut attributes = Vec::new();
        for item in rest.split_whitespace() {
            let Some((name, value)) = item.split_once('=') else {
                return reply("501 5.5.4 Syntax: XFORWARD attribute=value...");
            };
            let name = name.to_ascii_uppercase();
            if !["NAME", "ADDR", "PROTO", "HELO", "IDENT", "SOURCE", "PORT"]
                .contains(&name.as_str())
            {
                return reply("501 5.5.4 Bad XFORWARD attribute name");
            }
            attributes.push((name, xtext_decode(value)));
        }
        if attributes.is_empty() {
            return reply("501 5.5.4 Syntax: XFORWARD attribute=value...");
        }
        // A newer value replaces an older one of the same name (Postfix
        // sends the attributes again for each message of a session).
        self.envelope
            .xforward
            .retain(|(name, _)| !attributes.iter().any(|(new, _)| new == name));
        self.envelope.xforward.extend(attributes);
        reply("250 2.0.0 Ok")
    }

    /// One line of the message (without its line end): dot-unstuffed, or
    /// the end.
    pub fn data_line(line: &[u8]) -> DataLine<'_> {
        match line {
            b"." => DataLine::End,
            [b'.', rest @ ..] => DataLine::Line(rest),
            _ => DataLine::Line(line),
        }
    }
}

fn reply(text: &str) -> Step {
    Step::Reply(format!("{text}\r\n"))
}

/// `FROM:<addr> PARAM...` → the address and the parameters (a space
/// after the colon is tolerated, as Postfix does).
fn path_and_params<'a>(
    rest: &'a str,
    keyword: &str,
) -> Option<(&'a str, impl Iterator<Item = &'a str>)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let path = rest.get(keyword.len()..)?.trim_start();
    let inner = path.strip_prefix('<')?;
    let end = inner.find('>')?;
    let address = inner.get(..end)?;
    let params = inner.get(end + 1..)?;
    if !params.is_empty() && !params.starts_with(' ') {
        return None;
    }
    Some((address, params.split_whitespace()))
}

/// NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY.
fn notify_words(value: &str) -> Option<Vec<NotifyWord>> {
    let mut words = Vec::new();
    for word in value.split(',') {
        words.push(match word.to_ascii_uppercase().as_str() {
            "NEVER" => NotifyWord::Never,
            "SUCCESS" => NotifyWord::Success,
            "FAILURE" => NotifyWord::Failure,
            "DELAY" => NotifyWord::Delay,
            _ => return None,
        });
    }
    let never = words.contains(&NotifyWord::Never);
    (!words.is_empty() && (!never || words.len() == 1)).then_some(words)
}

/// RFC 3461 xtext: `+XX` is the byte XX (a malformed `+` stays as is).
pub fn xtext_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'+'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            out.push(value);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The LMTP reply for one recipient's outcome (after the final dot), so
/// that the MTA's log and bounce carry the remote server's verdict:
/// `status`, the enhanced code `dsn` and `diagnostic` (the remote reply
/// as mailhop reports it, e.g. `host mx[192.0.2.1] said: 550 5.1.1 ...`).
pub fn recipient_reply(address: &str, status: Status, dsn: &str, diagnostic: &str) -> String {
    let class = match status {
        Status::Sent => '2',
        Status::Deferred => '4',
        Status::Bounced => '5',
    };
    // The remote server's own code when its reply is quoted and of the
    // same class (450, 452, 552, ...), else the class's usual one.
    let code = crate::shaping::verdict::remote_reply(diagnostic)
        .and_then(|(reply, _)| reply.get(..3))
        .filter(|code| code.starts_with(class) && code.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or(match status {
            Status::Sent => "250",
            Status::Deferred => "451",
            Status::Bounced => "550",
        });
    let valid_dsn = dsn.len() <= 11
        && dsn
            .split('.')
            .map(|part| part.parse::<u16>().is_ok())
            .filter(|ok| *ok)
            .count()
            == 3
        && dsn.starts_with(class);
    let dsn = if valid_dsn {
        dsn
    } else {
        match status {
            Status::Sent => "2.0.0",
            Status::Deferred => "4.0.0",
            Status::Bounced => "5.0.0",
        }
    };
    // One line: no CR/LF or other control characters from the network.
    let text: String = diagnostic
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(900)
        .collect();
    let address: String = address
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{code} {dsn} <{address}> {text}\r\n")
}

#[cfg(test)]
#[path = "lmtp_tests.rs"]
mod tests;
