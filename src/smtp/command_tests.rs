use super::*;

#[test]
fn refuses_injection() {
    for bad in [
        "a@b\r\nRCPT TO:<x@y>",
        "a\n@b",
        "a\0@b",
        "a\t@b",
        "\u{7f}@b",
    ] {
        assert_eq!(
            check_address(bad),
            Err(AddressError::ControlCharacter),
            "{bad:?}"
        );
    }
    assert_eq!(check_address(&"a".repeat(2000)), Err(AddressError::TooLong));
    assert!(check_address("").is_ok());
    assert!(check_address("user@example.test").is_ok());
    assert!(check_address("üser@example.test").is_ok());
}

#[test]
fn quoting() {
    assert_eq!(quote_address("user@x.test"), "user@x.test");
    assert_eq!(
        quote_address("first.last+tag@x.test"),
        "first.last+tag@x.test"
    );
    assert_eq!(quote_address("a b@x.test"), "\"a b\"@x.test");
    assert_eq!(quote_address("a\"b@x.test"), "\"a\\\"b\"@x.test");
    assert_eq!(quote_address("a..b@x.test"), "\"a..b\"@x.test");
    assert_eq!(quote_address("\"a b\"@x.test"), "\"a b\"@x.test");
    assert_eq!(quote_address("<evil>@x.test"), "\"<evil>\"@x.test");
    assert_eq!(quote_address(""), "");
    assert_eq!(quote_address("postmaster"), "postmaster");
}

#[test]
fn xtext_encoding() {
    assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
    assert_eq!(xtext("ü"), "+C3+BC");
}

#[test]
fn mail_and_rcpt_commands() {
    let params = MailParams {
        requiretls: false,
        size: Some(1234),
        body: Some(BodyType::EightBitMime),
        ret: Some(Ret::Hdrs),
        envid: Some("id 1".into()),
        smtputf8: true,
    };
    assert_eq!(
        mail_from("s@x.test", &params),
        b"MAIL FROM:<s@x.test> SIZE=1234 BODY=8BITMIME ENVID=id+201 RET=HDRS SMTPUTF8\r\n"
    );
    assert_eq!(mail_from("", &MailParams::default()), b"MAIL FROM:<>\r\n");
    let requiretls = MailParams {
        requiretls: true,
        ..MailParams::default()
    };
    assert_eq!(
        mail_from("s@x.test", &requiretls),
        b"MAIL FROM:<s@x.test> REQUIRETLS\r\n"
    );
    let rcpt = RcptParams {
        notify: Some("SUCCESS,FAILURE"),
        orcpt: Some(orcpt_value(None, "r@y.test", false)),
    };
    assert_eq!(
        rcpt_to("r@y.test", &rcpt),
        b"RCPT TO:<r@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@y.test\r\n"
    );
}

#[test]
fn orcpt_forms() {
    assert_eq!(
        orcpt_value(Some("rfc822;a+b@x"), "r@y", false),
        "rfc822;a+2Bb@x"
    );
    assert_eq!(orcpt_value(Some("a@x"), "r@y", false), "rfc822;a@x");
    assert_eq!(orcpt_value(None, "r@y", false), "rfc822;r@y");
    assert_eq!(orcpt_value(None, "a b@y", false), "rfc822;\"a+20b\"@y");
    assert_eq!(orcpt_value(None, "üser@y", true), "utf-8;üser@y");
    assert_eq!(orcpt_value(None, "ü+x@y", true), "utf-8;ü\\x{2B}x@y");
    assert_eq!(orcpt_value(None, "üser@y", false), "rfc822;+C3+BCser@y");
    assert_eq!(
        orcpt_value(Some("utf-8;ü=1@y"), "r@y", true),
        "utf-8;ü\\x{3D}1@y"
    );
}

#[test]
fn notify_values() {
    assert_eq!(Notify::default().value(), None);
    for (s, f, d, want) in [
        (true, false, false, "SUCCESS"),
        (false, true, false, "FAILURE"),
        (false, false, true, "DELAY"),
        (true, true, false, "SUCCESS,FAILURE"),
        (false, true, true, "FAILURE,DELAY"),
        (true, true, true, "SUCCESS,FAILURE,DELAY"),
    ] {
        let notify = Notify {
            success: s,
            failure: f,
            delay: d,
            never: false,
        };
        assert_eq!(notify.value(), Some(want));
    }
    assert_eq!(
        Notify {
            never: true,
            ..Default::default()
        }
        .value(),
        Some("NEVER")
    );
    assert_eq!(
        Notify {
            success: true,
            delay: true,
            ..Default::default()
        }
        .value(),
        Some("SUCCESS,DELAY")
    );
}
