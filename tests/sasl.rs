//! SASL AUTH client end to end: `mailhop send --direct` against a private
//! Postfix smtpd whose SASL is a private Dovecot (`smtpd_sasl_type =
//! dovecot`, passwd-file with `{PLAIN}` passwords, mechanisms PLAIN, LOGIN
//! and SCRAM-SHA-256). Two smtpd listeners, both accepting mail only from
//! authenticated clients (`smtpd_recipient_restrictions =
//! permit_sasl_authenticated, reject`):
//!
//! - `postfix/sasl/smtpd` on 127.0.0.2 announces AUTH in plaintext;
//! - `postfix/authonly/smtpd` on 127.0.0.3 has `smtpd_tls_auth_only =
//!   yes`: AUTH only after STARTTLS.
//!
//! Cases: right password (delivered; Postfix logs sasl_method and
//! sasl_username), wrong password (Postfix's wording, deferred with the
//! soft bounce), the mechanism filter choosing LOGIN, SCRAM-SHA-256 under
//! the default security options, PLAIN after STARTTLS allowed by
//! tls_security_options, and the failures without TLS: a server that
//! announces AUTH only over TLS is talked to without AUTH (as Postfix does:
//! its relay refusal bounces the mail), and the default options leave no
//! mechanism in plaintext ("no mechanism available"), a filter that leaves
//! nothing gives "offered no compatible authentication mechanisms". The
//! password table must be closed to group and other.
//!
//! Each test starts its own Dovecot and Postfix and stops them; under
//! `CI=true` a missing Postfix or Dovecot fails the test.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;

use common::certs::Pki;
use common::dovecot::Dovecot;
use common::postfix::{Listener, Postfix};
use common::{Delivery, Line, Run, Workdir};

const SASL_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const AUTH_ONLY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const USER: &str = "alice";
const PASSWORD: &str = "pencil-7";
const RCPT: &str = "b@y.test";

/// The servers of one test.
struct Lab {
    // Postfix first: it is stopped before the Dovecot it uses.
    pf: Postfix,
    _dovecot: Dovecot,
    _pki: Pki,
}

impl Lab {
    fn start() -> Option<Lab> {
        let dovecot = Dovecot::start(&[(USER, PASSWORD)])?;
        let pki = Pki::generate();
        let socket = dovecot.auth_socket();
        let sasl = [
            "smtpd_sasl_auth_enable=yes".to_string(),
            "smtpd_sasl_type=dovecot".to_string(),
            format!("smtpd_sasl_path={}", socket.display()),
            "smtpd_recipient_restrictions=permit_sasl_authenticated,reject".to_string(),
        ];
        let plain_cert = pki.issue("sasl.tls.test");
        let only_cert = pki.issue("authonly.tls.test");
        let mut auth_only = sasl.to_vec();
        auth_only.push("smtpd_tls_auth_only=yes".into());
        let pf = Postfix::start_with(
            &pki,
            &[
                Listener::new(SASL_ADDR, "sasl", &plain_cert.chain).with_options(&sasl),
                Listener::new(AUTH_ONLY_ADDR, "authonly", &only_cert.chain)
                    .with_options(&auth_only),
            ],
        )?;
        Some(Lab {
            pf,
            _dovecot: dovecot,
            _pki: pki,
        })
    }

    fn nexthop(&self, addr: Ipv4Addr) -> String {
        format!("[{addr}]:{}", self.pf.listener_port)
    }

    fn relay(&self, addr: Ipv4Addr) -> String {
        format!("{addr}[{addr}]:{}", self.pf.listener_port)
    }

    /// `mailhop send` to `addr` with this `[tls]` level and these `[sasl]`
    /// lines, the password table holding `password` for the destination.
    fn send(&self, addr: Ipv4Addr, level: &str, sasl: &str, password: &str) -> Run {
        let work = Workdir::new();
        let table = work.file_with_mode(
            "sasl_passwd",
            format!(
                "# the destination as written in the job\n{} {USER}:{password}\n",
                self.nexthop(addr)
            )
            .as_bytes(),
            0o600,
        );
        let config = config(level, &table, sasl);
        Delivery::to(&self.nexthop(addr))
            .rcpt(RCPT)
            .raw_config(&config)
            .run()
    }

    /// The `client=` line of the smtpd session that took the message.
    fn client_line(&self, program: &str) -> String {
        let sessions = self.pf.wait_sessions_of(program, 1);
        sessions
            .iter()
            .flat_map(|s| s.lines.iter())
            .find(|l| l.contains(": client="))
            .cloned()
            .unwrap_or_else(|| panic!("no client= line; maillog:\n{}", self.pf.maillog()))
    }
}

fn config(level: &str, table: &Path, sasl: &str) -> String {
    format!(
        "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"10s\"\n\
         [tls]\nsecurity_level = \"{level}\"\n\
         [sasl]\nauth_enable = true\npassword_maps = {:?}\n{sasl}\n",
        table.display().to_string()
    )
}

fn one_line(run: &Run) -> Line {
    let lines = run.lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    lines[0].clone()
}

#[test]
fn right_password_plain_is_delivered() {
    let Some(lab) = Lab::start() else { return };
    // No options: PLAIN is allowed in plaintext (SCRAM-SHA-256, which
    // would be preferred, is filtered out).
    let sasl = "security_options = []\nmechanism_filter = [\"PLAIN\"]";
    let run = lab.send(SASL_ADDR, "none", sasl, PASSWORD);
    let line = one_line(&run);
    assert_eq!(line.status, "sent", "{run:#?}");
    assert_eq!(line.relay, lab.relay(SASL_ADDR));
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(
        client.ends_with(&format!("sasl_method=PLAIN, sasl_username={USER}")),
        "{client}"
    );
    assert!(
        !run.stderr.contains(PASSWORD),
        "password in the log: {run:#?}"
    );
}

#[test]
fn wrong_password_is_deferred_with_postfixs_words() {
    let Some(lab) = Lab::start() else { return };
    let sasl = "security_options = []\nmechanism_filter = [\"PLAIN\"]";
    let run = lab.send(SASL_ADDR, "none", sasl, "wrong");
    let line = one_line(&run);
    assert_eq!(line.status, "deferred", "{run:#?}");
    // 535 5.7.8 made 4.7.8 by auth_soft_bounce.
    assert_eq!(line.dsn, "4.7.8", "{run:#?}");
    let prefix = format!(
        "SASL authentication failed; server {addr}[{addr}] said: 535 5.7.8 Error: authentication failed",
        addr = SASL_ADDR
    );
    assert!(line.diagnostic.starts_with(&prefix), "{run:#?}");
    let sessions = lab.pf.wait_sessions_of("postfix/sasl/smtpd", 1);
    assert!(sessions[0].counts().contains("auth=0/1"), "{sessions:?}");
    assert!(
        sessions[0]
            .disconnect()
            .is_some_and(|d| !d.contains("mail=")),
        "{sessions:?}"
    );
}

#[test]
fn mechanism_filter_picks_login() {
    let Some(lab) = Lab::start() else { return };
    let run = lab.send(
        SASL_ADDR,
        "none",
        "security_options = []\nmechanism_filter = [\"login\"]",
        PASSWORD,
    );
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(client.contains("sasl_method=LOGIN"), "{client}");
}

#[test]
fn scram_sha_256_under_the_default_options() {
    let Some(lab) = Lab::start() else { return };
    // Defaults: noplaintext, noanonymous: only SCRAM-SHA-256 is allowed.
    let run = lab.send(SASL_ADDR, "none", "", PASSWORD);
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/sasl/smtpd");
    assert!(
        client.ends_with(&format!("sasl_method=SCRAM-SHA-256, sasl_username={USER}")),
        "{client}"
    );
    // A wrong password fails the same way with SCRAM.
    let run = lab.send(SASL_ADDR, "none", "", "wrong");
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.8"),
        "{run:#?}"
    );
}

#[test]
fn default_options_leave_no_plaintext_mechanism() {
    let Some(lab) = Lab::start() else { return };
    let run = lab.send(
        SASL_ADDR,
        "none",
        "mechanism_filter = [\"plain\", \"login\"]",
        PASSWORD,
    );
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.0"),
        "{run:#?}"
    );
    assert_eq!(
        line.diagnostic,
        format!(
            "SASL authentication failed; cannot authenticate to server {SASL_ADDR}[{SASL_ADDR}]: no mechanism available"
        )
    );
    let run = lab.send(
        SASL_ADDR,
        "none",
        "mechanism_filter = [\"cram-md5\"]",
        PASSWORD,
    );
    let line = one_line(&run);
    assert_eq!(
        (line.status.as_str(), line.dsn.as_str()),
        ("deferred", "4.7.0"),
        "{run:#?}"
    );
    assert_eq!(
        line.diagnostic,
        format!(
            "SASL authentication failed: server {SASL_ADDR}[{SASL_ADDR}] offered no compatible \
             authentication mechanisms for this type of connection security"
        )
    );
}

#[test]
fn tls_required_before_auth() {
    let Some(lab) = Lab::start() else { return };
    // PLAIN (the filter) is allowed over TLS by tls_security_options.
    let sasl = "mechanism_filter = [\"plain\"]\n\
                security_options = [\"noplaintext\", \"noanonymous\"]\n\
                tls_security_options = [\"noanonymous\"]";
    let run = lab.send(AUTH_ONLY_ADDR, "may", sasl, PASSWORD);
    assert_eq!(one_line(&run).status, "sent", "{run:#?}");
    let client = lab.client_line("postfix/authonly/smtpd");
    assert!(client.contains("sasl_method=PLAIN"), "{client}");
    let session = &lab.pf.wait_sessions_of("postfix/authonly/smtpd", 1)[0];
    assert!(
        session.counts().contains("starttls=1") && session.counts().contains("auth=1"),
        "{session:?}"
    );
    // Without TLS the server announces no AUTH: Postfix's client then
    // talks without authentication, and the server refuses the relay.
    let run = lab.send(AUTH_ONLY_ADDR, "none", sasl, PASSWORD);
    let line = one_line(&run);
    assert_eq!(line.status, "bounced", "{run:#?}");
    assert_eq!(line.dsn, "5.7.1", "{run:#?}");
    assert!(
        line.diagnostic.contains("(in reply to RCPT TO command)"),
        "{run:#?}"
    );
}

#[test]
fn password_table_open_to_others_is_refused() {
    let Some(lab) = Lab::start() else { return };
    let work = Workdir::new();
    let table = work.file_with_mode(
        "sasl_passwd",
        format!("{} {USER}:{PASSWORD}\n", lab.nexthop(SASL_ADDR)).as_bytes(),
        0o644,
    );
    let run = Delivery::to(&lab.nexthop(SASL_ADDR))
        .rcpt(RCPT)
        .raw_config(&config("none", &table, ""))
        .run();
    assert_eq!(run.code, 78, "{run:#?}");
    assert!(run.stderr.contains("mode 0644"), "{run:#?}");
    assert!(!run.stderr.contains(PASSWORD), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
}
