//! The server side of STARTTLS for scripted test servers: a TLS acceptor
//! with a test certificate over the connection a [`super::Peer`] holds,
//! line reading inside TLS, and the SMTP conversation inside TLS that
//! accepts one message (EHLO, MAIL, RCPT, DATA, QUIT). The plaintext part
//! before STARTTLS stays with each test, since that is what tests vary.
//!
//! Contract: nothing here panics on what the client sends; a failed
//! handshake is an `Err` with OpenSSL's text, a lost connection ends the
//! conversation with `<EOF>` (or `<EOF in DATA>`) in the transcript. Every
//! loop is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslStream};

use super::Peer;

/// Longest line read inside TLS, and most commands of one conversation.
const MAX_LINE: usize = 4096;
const MAX_COMMANDS: usize = 100;

/// One line from the TLS stream, without CRLF (bounded).
pub fn read_tls_line(stream: &mut SslStream<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => {
                let text = String::from_utf8_lossy(&line);
                return Some(text.trim_end_matches('\r').to_string());
            }
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

/// The server handshake with `cert` (a PEM chain) and `key` on the
/// connection, after the caller's `220` reply to STARTTLS (nothing may be
/// buffered in the peer's reader).
pub fn accept_tls(conn: &Peer, cert: &Path, key: &Path) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| format!("<no acceptor: {e}>"))?;
    builder
        .set_certificate_chain_file(cert)
        .map_err(|e| format!("<no certificate: {e}>"))?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| format!("<no key: {e}>"))?;
    let acceptor = builder.build();
    let stream = conn
        .stream()
        .try_clone()
        .map_err(|e| format!("<no stream: {e}>"))?;
    acceptor
        .accept(stream)
        .map_err(|e| format!("<handshake failed: {e}>"))
}

/// The SMTP conversation inside TLS: `ehlo` answers EHLO (whole reply,
/// CRLFs included), MAIL and RCPT get 250, DATA takes the message up to
/// its dot and `queued` answers it, QUIT ends it. The client's commands
/// (and "." after a complete message) go to `transcript`.
pub fn smtp_in_tls(
    tls: &mut SslStream<TcpStream>,
    ehlo: &[u8],
    queued: &str,
    transcript: &mut Vec<String>,
) {
    for _ in 0..MAX_COMMANDS {
        let Some(line) = read_tls_line(tls) else {
            transcript.push("<EOF>".into());
            return;
        };
        let verb = line
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        transcript.push(line);
        let reply: Vec<u8> = match verb.as_str() {
            "EHLO" => ehlo.to_vec(),
            "MAIL" => b"250 2.1.0 Ok\r\n".to_vec(),
            "RCPT" => b"250 2.1.5 Ok\r\n".to_vec(),
            "DATA" => {
                let _ = tls.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n");
                let mut complete = false;
                for _ in 0..10_000 {
                    match read_tls_line(tls) {
                        Some(body) if body == "." => {
                            complete = true;
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                if !complete {
                    transcript.push("<EOF in DATA>".into());
                    return;
                }
                transcript.push(".".into());
                format!("{queued}\r\n").into_bytes()
            }
            "QUIT" => {
                let _ = tls.write_all(b"221 2.0.0 Bye\r\n");
                return;
            }
            _ => b"502 5.5.2 Error: command not recognized\r\n".to_vec(),
        };
        let _ = tls.write_all(&reply);
    }
}
