use super::*;

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn postfix_default_options_exclude_plaintext_mechanisms() {
    let options = SecurityOptions::parse(&["noplaintext", "noanonymous"]).unwrap();
    assert!(!options.allows(Kind::Plain));
    assert!(!options.allows(Kind::Login));
    assert!(options.allows(Kind::ScramSha256));
    let tls = SecurityOptions::parse(&["noanonymous"]).unwrap();
    assert!(tls.allows(Kind::Plain) && tls.allows(Kind::Login));
}

#[test]
fn option_words_and_unknown_word() {
    let all = SecurityOptions::parse(&["NoActive", "mutual_auth"]).unwrap();
    assert!(all.noactive && all.mutual_auth);
    assert!(!all.allows(Kind::Plain) && all.allows(Kind::ScramSha256));
    let dict = SecurityOptions::parse(&["nodictionary"]).unwrap();
    assert!(Kind::ALL.iter().all(|k| !dict.allows(*k)));
    let empty: [&str; 0] = [];
    assert_eq!(
        SecurityOptions::parse(&empty),
        Ok(SecurityOptions::default())
    );
    let err = SecurityOptions::parse(&["noplain"]).unwrap_err();
    assert!(err.contains("\"noplain\""), "{err}");
}

#[test]
fn choice_prefers_scram_then_plain_then_login() {
    let none = SecurityOptions::default();
    let offered = words(&["LOGIN", "PLAIN", "SCRAM-SHA-256", "CRAM-MD5"]);
    assert_eq!(choose(&offered, &[], none), Ok(Kind::ScramSha256));
    assert_eq!(
        choose(&words(&["LOGIN", "PLAIN"]), &[], none),
        Ok(Kind::Plain)
    );
    assert_eq!(choose(&words(&["LOGIN"]), &[], none), Ok(Kind::Login));
}

#[test]
fn filter_narrows_the_offer_without_case() {
    let none = SecurityOptions::default();
    let offered = words(&["PLAIN", "LOGIN", "SCRAM-SHA-256"]);
    assert_eq!(choose(&offered, &words(&["login"]), none), Ok(Kind::Login));
    assert_eq!(
        choose(&offered, &words(&["cram-md5"]), none),
        Err(ChooseError::NoneOffered)
    );
    assert_eq!(choose(&[], &[], none), Err(ChooseError::NoneOffered));
}

#[test]
fn options_leave_no_mechanism() {
    let options = SecurityOptions::parse(&["noplaintext", "noanonymous"]).unwrap();
    assert_eq!(
        choose(&words(&["PLAIN", "LOGIN"]), &[], options),
        Err(ChooseError::NoMechanism)
    );
    assert_eq!(
        choose(&words(&["CRAM-MD5"]), &[], SecurityOptions::default()),
        Err(ChooseError::NoMechanism)
    );
}

#[test]
fn base64_round_trip_and_garbage() {
    assert_eq!(encode64(b""), "");
    assert_eq!(encode64(b"\0user\0pencil"), "AHVzZXIAcGVuY2ls");
    assert_eq!(decode64("AHVzZXIAcGVuY2ls").unwrap(), b"\0user\0pencil");
    assert_eq!(decode64(" ").unwrap(), b"");
    assert_eq!(decode64("VXNlcm5hbWU6").unwrap(), b"Username:");
    for bad in ["abc", "ab!d", "====", "a\u{e9}bc"] {
        assert_eq!(decode64(bad), None, "{bad}");
    }
}

#[test]
fn nonces_are_fresh_and_printable() {
    let a = fresh_nonce().unwrap();
    let b = fresh_nonce().unwrap();
    assert_ne!(a, b);
    assert!(a.len() >= 24 && !a.contains(','));
}
