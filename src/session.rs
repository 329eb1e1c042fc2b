//! The one place where the protocol meets I/O: drives a [`Client`] over a
//! [`Connection`] until the transaction is over, streaming the message body
//! from its source.
//!
//! Contract: returns when the client is idle (transaction done, connection
//! usable) or closed; every failure has been fed to the client, which turned
//! it into per-recipient results. [`close`] ends a session politely.

use std::io::{self, Read, Write};

use crate::config::Timeouts;
use crate::smtp::body::{BodyEncoder, BodyError, write_body_with};
use crate::smtp::client::{Action, Client, IoFailure, Phase};
use crate::smtp::mime::{DowngradeError, encode_all_downgraded, write_body_downgraded};
use crate::transport::{Connection, Transport, classify, strerror};

/// Where the message bytes come from; opened once per delivery attempt.
pub trait MessageSource: Send + Sync {
    fn open(&self) -> io::Result<Box<dyn Read + '_>>;

    /// The whole message, when it is held in memory: then the body and
    /// the final `.` go out in one write.
    fn in_memory(&self) -> Option<&[u8]> {
        None
    }
}

/// The timeout for a phase.
pub fn phase_timeout(timeouts: &Timeouts, phase: Phase) -> std::time::Duration {
    match phase {
        Phase::Greeting | Phase::Hello(_) => timeouts.helo,
        Phase::Mail => timeouts.mail,
        Phase::Rcpt => timeouts.rcpt,
        Phase::Data => timeouts.data_init,
        Phase::Body => timeouts.data_xfer,
        Phase::Dot => timeouts.data_done,
        Phase::Rset | Phase::RsetProbe => timeouts.rset,
        Phase::Quit => timeouts.quit,
        Phase::StartTls => timeouts.starttls,
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Transaction over; the connection can be reused or closed with [`close`].
    Idle,
    /// The connection is finished.
    Closed,
    /// The server accepted STARTTLS: the caller must do the handshake
    /// (see [`drive`]).
    StartTls,
}

/// Why a TLS handshake did not give a usable session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRefusal {
    /// What the open recipients get (4.7.5 ...), unless `retry_plain`.
    pub dsn: crate::dsn::Dsn,
    /// Level may and the message is old enough: reconnect in plaintext.
    pub retry_plain: bool,
}

/// Performs the TLS handshake for a session (STARTTLS).
pub trait TlsHandler<T> {
    fn handshake(&mut self, stream: T) -> Result<T, TlsRefusal>;
}

/// For sessions that never use TLS.
pub struct NoTls;

impl<T> TlsHandler<T> for NoTls {
    fn handshake(&mut self, _stream: T) -> Result<T, TlsRefusal> {
        Err(TlsRefusal {
            dsn: crate::dsn::Dsn::new(
                crate::dsn::TLS_PROBLEM,
                "Cannot start TLS: TLS is not available for this session",
            ),
            retry_plain: false,
        })
    }
}

/// Runs a session to its end, doing the STARTTLS handshake through `tls`
/// when the client asks for it. Bytes already received after the 220 reply
/// to STARTTLS are never read as replies: they fail the session (4.7.5).
/// Returns the connection when it is still usable (idle).
pub fn drive<T: Transport>(
    conn: Connection<T>,
    client: &mut Client,
    timeouts: &Timeouts,
    message: &dyn MessageSource,
    line_length_limit: usize,
    tls: &mut dyn TlsHandler<T>,
) -> (Option<Connection<T>>, RunEnd) {
    drive_with(
        conn,
        client,
        timeouts,
        message,
        line_length_limit,
        tls,
        &mut || None,
    )
}

/// Bytes to send right behind the final dot, in the same write (the next
/// transaction's commands; see [`crate::chain`]). Asked once per message
/// held in memory; None: nothing.
pub type Follow<'a> = dyn FnMut() -> Option<Vec<u8>> + 'a;

/// As [`drive`], with `follow` asked for bytes to send behind the message.
pub fn drive_with<T: Transport>(
    mut conn: Connection<T>,
    client: &mut Client,
    timeouts: &Timeouts,
    message: &dyn MessageSource,
    line_length_limit: usize,
    tls: &mut dyn TlsHandler<T>,
    follow: &mut Follow<'_>,
) -> (Option<Connection<T>>, RunEnd) {
    for _ in 0..4 {
        match run_with(
            &mut conn,
            client,
            timeouts,
            message,
            line_length_limit,
            follow,
        ) {
            RunEnd::StartTls => {
                if conn.buffered() > 0 {
                    log::warn!(
                        "{} bytes received after the STARTTLS reply and before the TLS handshake: possible response injection",
                        conn.buffered()
                    );
                    let dsn = crate::dsn::Dsn::new(
                        crate::dsn::TLS_PROBLEM,
                        "Cannot start TLS: unexpected data after the STARTTLS reply",
                    );
                    client.on_tls_failure(&dsn, false);
                    return (None, RunEnd::Closed);
                }
                let limit = conn.reply_limit();
                match tls.handshake(conn.into_inner()) {
                    Ok(stream) => {
                        conn = Connection::new(stream, limit);
                        client.tls_started();
                    }
                    Err(refusal) => {
                        client.on_tls_failure(&refusal.dsn, refusal.retry_plain);
                        return (None, RunEnd::Closed);
                    }
                }
            }
            RunEnd::Idle => return (Some(conn), RunEnd::Idle),
            RunEnd::Closed => return (None, RunEnd::Closed),
        }
    }
    client.on_local_failure("internal error: repeated STARTTLS");
    (None, RunEnd::Closed)
}

thread_local! {
    /// The wire form of in-memory messages (see `send_body`).
    static WIRE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Largest wire buffer kept between messages.
const WIRE_KEEP: usize = 256 * 1024;

/// How long to look for a reply the server sent before dropping the body.
const EARLY_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Most actions one session may take: a bound against any state-machine bug.
const MAX_ACTIONS: usize = 1_000_000;

/// Runs the client until it is idle or closed.
pub fn run<T: Transport>(
    conn: &mut Connection<T>,
    client: &mut Client,
    timeouts: &Timeouts,
    message: &dyn MessageSource,
    line_length_limit: usize,
) -> RunEnd {
    run_with(
        conn,
        client,
        timeouts,
        message,
        line_length_limit,
        &mut || None,
    )
}

/// As [`run`], with `follow` asked for bytes to send behind the message.
pub fn run_with<T: Transport>(
    conn: &mut Connection<T>,
    client: &mut Client,
    timeouts: &Timeouts,
    message: &dyn MessageSource,
    line_length_limit: usize,
    follow: &mut Follow<'_>,
) -> RunEnd {
    conn.set_per_request_deadline(timeouts.per_request_deadline);
    // Whether the next job's commands went out behind the message: then
    // bytes left unread at the end may be their replies.
    let followed = std::cell::Cell::new(false);
    let mut follow = || {
        let next = follow();
        if next.is_some() {
            followed.set(true);
        }
        next
    };
    for _ in 0..MAX_ACTIONS {
        match client.next_action() {
            Action::Send { bytes, phase } => {
                // An RSET goes out with nothing else awaited: bytes already
                // here answer no command (more replies than commands).
                if phase == Phase::Rset && !followed.get() && conn.buffered() > 0 {
                    client.on_unread_replies();
                    if client.desynchronised() {
                        continue;
                    }
                }
                if let Err(failure) = conn.send(&bytes, phase_timeout(timeouts, phase)) {
                    client.on_io_failure(failure);
                }
            }
            Action::Receive(phase) => match conn
                .read_reply_strict(phase_timeout(timeouts, phase), client.strict_replies())
            {
                Ok(reply) => client.on_reply(reply),
                Err(failure) => client.on_io_failure(failure),
            },
            Action::SendBody => {
                // A daemon job answered at shutdown sends no body: its
                // recipients were told "deferred".
                match crate::progress::may_send_body() {
                    crate::progress::BodyGate::Send => send_body(
                        conn,
                        client,
                        timeouts,
                        message,
                        line_length_limit,
                        &mut follow,
                    ),
                    crate::progress::BodyGate::Cut => {
                        client.on_local_failure(crate::progress::CUT_TEXT)
                    }
                    crate::progress::BodyGate::Held(text) => client.on_local_failure(&text),
                }
            }
            Action::StartTls => return RunEnd::StartTls,
            Action::Idle => {
                // More replies than commands: the session is out of step.
                if !followed.get() && conn.buffered() > 0 {
                    client.on_unread_replies();
                    if client.desynchronised() {
                        return RunEnd::Closed;
                    }
                }
                return RunEnd::Idle;
            }
            Action::Close => return RunEnd::Closed,
        }
    }
    log::error!("session exceeded {MAX_ACTIONS} protocol actions; closing");
    client.on_local_failure("internal error: session did not terminate");
    RunEnd::Closed
}

/// The body encoder for this client's message.
fn encoder(client: &Client, line_length_limit: usize) -> BodyEncoder {
    BodyEncoder::new(line_length_limit).replace_stray_cr(client.replace_stray_cr())
}

fn send_body<T: Transport>(
    conn: &mut Connection<T>,
    client: &mut Client,
    timeouts: &Timeouts,
    message: &dyn MessageSource,
    line_length_limit: usize,
    follow: &mut Follow<'_>,
) {
    if let Some(bytes) = message.in_memory() {
        // The worker's wire buffer, reused from message to message.
        let mut wire = WIRE.with(|w| std::mem::take(&mut *w.borrow_mut()));
        wire.clear();
        if let Some(limits) = client.mime_downgrade() {
            if let Err(e) =
                encode_all_downgraded(bytes, encoder(client, line_length_limit), limits, &mut wire)
            {
                if wire.capacity() <= WIRE_KEEP {
                    WIRE.with(|w| *w.borrow_mut() = wire);
                }
                client.on_mime_failure(e);
                return;
            }
        } else {
            crate::smtp::body::encode_all_with(
                bytes,
                encoder(client, line_length_limit),
                &mut wire,
            );
        }
        wire.extend_from_slice(crate::smtp::command::DOT);
        if client.take_pipelined_quit() {
            wire.extend_from_slice(crate::smtp::command::QUIT);
        } else if let Some(next) = follow() {
            wire.extend_from_slice(&next);
        }
        let sent = conn.send_data(&wire, timeouts.data_xfer, timeouts.min_data_rate);
        if wire.capacity() <= WIRE_KEEP {
            WIRE.with(|w| *w.borrow_mut() = wire);
        }
        match sent {
            Ok(()) => client.body_sent(),
            Err(failure) => body_write_failed(conn, client, failure),
        }
        return;
    }
    let source = match message.open() {
        Ok(source) => source,
        Err(e) => {
            client.on_local_failure(&format!("cannot open message: {}", strerror(&e)));
            return;
        }
    };
    let mut writer = match conn.data_writer(timeouts.data_xfer, timeouts.min_data_rate) {
        Ok(writer) => writer,
        Err(failure) => {
            client.on_io_failure(failure);
            return;
        }
    };
    let written = match client.mime_downgrade() {
        Some(limits) => write_body_downgraded(
            source,
            &mut writer,
            encoder(client, line_length_limit),
            limits,
        ),
        None => write_body_with(source, &mut writer, encoder(client, line_length_limit))
            .map_err(DowngradeError::Body),
    };
    match written {
        Ok(_) => {}
        Err(DowngradeError::Mime(e)) => {
            // Postfix: a hard MIME error while converting disconnects
            // ungracefully (no final dot).
            client.on_mime_failure(e);
            return;
        }
        Err(DowngradeError::Body(BodyError::Read(e))) => {
            client.on_local_failure(&format!("error reading message: {}", strerror(&e)));
            return;
        }
        Err(DowngradeError::Body(BodyError::Write(e))) => {
            body_write_failed(conn, client, classify(&e));
            return;
        }
    }
    let quit = client.take_pipelined_quit();
    let end: &[u8] = if quit {
        b".\r\nQUIT\r\n"
    } else {
        crate::smtp::command::DOT
    };
    // The final dot under the same deadline as the content.
    if let Err(e) = writer.write_all(end).and_then(|()| writer.flush()) {
        client.on_io_failure(classify(&e));
        return;
    }
    client.body_sent();
}

/// Writing the body failed. A server that hung up mid-body may have said
/// why first (e.g. "552 5.3.4 message too big"): report that, as Postfix
/// does.
fn body_write_failed<T: Transport>(
    conn: &mut Connection<T>,
    client: &mut Client,
    failure: IoFailure,
) {
    if failure != IoFailure::Timeout
        && let Ok(reply) = conn.read_reply(EARLY_REPLY_WAIT)
        && matches!(reply.code / 100, 4 | 5)
    {
        client.on_early_reply(reply, failure);
        return;
    }
    client.on_io_failure(failure);
}

/// Ends an idle session with QUIT and drains what the client still wants.
pub fn close<T: Transport>(conn: &mut Connection<T>, client: &mut Client, timeouts: &Timeouts) {
    client.quit();
    struct NoMessage;
    impl MessageSource for NoMessage {
        fn open(&self) -> io::Result<Box<dyn Read + '_>> {
            Err(io::Error::other("no message after QUIT"))
        }
    }
    let _ = run(conn, client, timeouts, &NoMessage, 0);
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
