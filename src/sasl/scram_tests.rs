use super::*;

// RFC 7677 section 3.
const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

#[test]
fn rfc7677_test_vector() {
    let mut scram = Scram::new("user", "pencil", NONCE);
    assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let final_msg = scram.respond(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(final_msg).unwrap(), CLIENT_FINAL);
    assert!(!scram.verified());
    assert_eq!(scram.respond(SERVER_FINAL.as_bytes()).unwrap(), b"");
    assert!(scram.verified());
    assert_eq!(scram.respond(b""), Err(ScramError::OutOfOrder));
}

#[test]
fn wrong_server_signature_fails() {
    let mut scram = Scram::new("user", "pencil", NONCE);
    scram.client_first();
    scram.respond(SERVER_FIRST.as_bytes()).unwrap();
    let forged = "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    assert_eq!(scram.respond(forged.as_bytes()), Err(ScramError::Signature));
    assert!(!scram.verified());
}

#[test]
fn wrong_password_gives_another_proof_and_no_verification() {
    let mut scram = Scram::new("user", "wrong", NONCE);
    scram.client_first();
    let final_msg = scram.respond(SERVER_FIRST.as_bytes()).unwrap();
    assert_ne!(String::from_utf8(final_msg).unwrap(), CLIENT_FINAL);
    assert_eq!(
        scram.respond(SERVER_FINAL.as_bytes()),
        Err(ScramError::Signature)
    );
}

#[test]
fn server_error_is_reported() {
    let mut scram = Scram::new("user", "pencil", NONCE);
    scram.client_first();
    scram.respond(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(
        scram.respond(b"e=invalid-proof"),
        Err(ScramError::Server("invalid-proof".into()))
    );
}

#[test]
fn bad_server_first_messages() {
    let cases: &[(&str, ScramError)] = &[
        (
            "r=otherNonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ScramError::Nonce,
        ),
        (
            "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            ScramError::Nonce,
        ),
        (
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
            ScramError::Iterations(0),
        ),
        (
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4000000",
            ScramError::Iterations(4_000_000),
        ),
        (
            "r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=4096",
            ScramError::Malformed("salt"),
        ),
        (
            "r=rOprNGfwEbeRWgbNEkqOx,i=4096",
            ScramError::Malformed("server-first"),
        ),
        (
            "m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22Z,i=1",
            ScramError::Malformed("server-first (mandatory extension)"),
        ),
        ("garbage", ScramError::Malformed("server-first")),
        (
            "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=x",
            ScramError::Malformed("iteration count"),
        ),
    ];
    for (msg, want) in cases {
        let mut scram = Scram::new("user", "pencil", NONCE);
        scram.client_first();
        assert_eq!(scram.respond(msg.as_bytes()).as_ref(), Err(want), "{msg}");
    }
    let mut scram = Scram::new("user", "pencil", NONCE);
    scram.client_first();
    assert!(scram.respond(&[0xff, 0xfe]).is_err());
}

#[test]
fn user_names_are_escaped() {
    let mut scram = Scram::new("a=b,c", "x", "n");
    assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=n");
}

#[test]
fn every_prefix_of_the_server_final_fails_cleanly() {
    for cut in 0..SERVER_FINAL.len() {
        let mut scram = Scram::new("user", "pencil", NONCE);
        scram.client_first();
        scram.respond(SERVER_FIRST.as_bytes()).unwrap();
        assert!(
            scram.respond(&SERVER_FINAL.as_bytes()[..cut]).is_err(),
            "{cut}"
        );
    }
}

#[test]
fn arbitrary_server_first_messages_never_panic() {
    let mut seed = 0x2545_f491_u32;
    let alphabet = b"r=s,i0123456789abcXYZ+/=%$,,=rOprNGfwEbeRWgbNEkqO";
    for round in 0..2000 {
        let len = (round % 90) + 1;
        let msg: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                alphabet[(seed as usize) % alphabet.len()]
            })
            .collect();
        let mut scram = Scram::new("user", "pencil", NONCE);
        scram.client_first();
        let _ = scram.respond(&msg);
    }
    for cut in 0..SERVER_FIRST.len() {
        let mut scram = Scram::new("user", "pencil", NONCE);
        scram.client_first();
        let _ = scram.respond(&SERVER_FIRST.as_bytes()[..cut]);
    }
}

/// SASLprep (RFC 4013): non-ASCII spaces map to SPACE and soft hyphens
/// vanish, so the proof is the one for the prepared password; a password
/// SASLprep refuses is used as given.
#[test]
fn the_password_is_prepared_with_saslprep() {
    let prepared = Scram::new("user", "pass word", "nonce");
    let mapped = Scram::new("user", "pass\u{a0}wo\u{ad}rd", "nonce");
    assert_eq!(prepared.password, mapped.password);
    let refused = Scram::new("user", "bad\u{7}", "nonce");
    assert_eq!(refused.password, "bad\u{7}");
}
