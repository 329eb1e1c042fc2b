use super::*;

#[test]
fn plain_sends_its_message_with_auth() {
    let mut m = Mechanism::start(Kind::Plain, "user", "pencil", "");
    assert_eq!(m.initial_response().unwrap(), b"\0user\0pencil");
    assert!(m.respond(b"").is_err());
    assert!(m.finish().is_ok());
}

#[test]
fn plain_answers_an_empty_challenge_once() {
    let mut m = Mechanism::start(Kind::Plain, "user", "pencil", "");
    assert_eq!(m.respond(b"").unwrap(), b"\0user\0pencil");
    assert!(m.respond(b"").is_err());
}

#[test]
fn login_answers_user_then_password_then_fails() {
    let mut m = Mechanism::start(Kind::Login, "user", "pencil", "");
    assert_eq!(m.initial_response(), None);
    assert_eq!(m.respond(b"Username:").unwrap(), b"user");
    assert_eq!(m.respond(b"Password:").unwrap(), b"pencil");
    let err = m.respond(b"More:").unwrap_err();
    assert_eq!(err.to_string(), "unexpected LOGIN challenge");
}

#[test]
fn scram_success_needs_the_server_signature() {
    let m = Mechanism::start(Kind::ScramSha256, "user", "pencil", "abc");
    assert!(m.finish().is_err());
    assert_eq!(format!("{m:?}"), "SCRAM-SHA-256");
}
