use super::*;

#[test]
fn parses_valid_codes() {
    assert_eq!(StatusCode::parse("5.1.1"), Ok(StatusCode::new(5, 1, 1)));
    assert_eq!(StatusCode::parse("4.7.123"), Ok(StatusCode::new(4, 7, 123)));
    assert_eq!(
        StatusCode::parse("2.0.0").map(|c| c.to_string()),
        Ok("2.0.0".into())
    );
}

#[test]
fn rejects_invalid_codes_saying_why() {
    for bad in ["", "5", "3.1.1", "x.1.1", "55.1.1"] {
        assert_eq!(
            StatusCode::parse(bad),
            Err(StatusParseError::Class),
            "{bad}"
        );
    }
    for bad in ["5.1", "5.1.1.1", "5..1", "5.1234.1", "5.1.a", "5.", "4.4.l"] {
        assert_eq!(
            StatusCode::parse(bad),
            Err(StatusParseError::Number),
            "{bad}"
        );
    }
}

#[test]
fn soft_keeps_subject_and_detail() {
    assert_eq!(StatusCode::new(5, 3, 0).soft().to_string(), "4.3.0");
}

#[test]
fn loop_status_is_x_4_6() {
    assert!(MAIL_LOOP.is_loop());
    assert!(MAIL_LOOP_BACKUP_MX.is_loop());
    assert!(!NO_ROUTE.is_loop());
    assert!(!HOST_NOT_FOUND.is_loop());
}

#[test]
fn named_codes_read_as_postfix_writes_them() {
    for (code, text) in [
        (OK, "2.0.0"),
        (REPLY_SOFT, "4.0.0"),
        (REPLY_HARD, "5.0.0"),
        (PROTOCOL_ERROR, "5.5.0"),
        (SYSTEM_TROUBLE, "4.3.0"),
        (CONFIG_PROBLEM, "4.3.5"),
        (MESSAGE_TOO_BIG, "5.3.4"),
        (BIND_FAILED, "4.4.0"),
        (CONNECT_FAILED, "4.4.1"),
        (CONNECTION_LOST, "4.4.2"),
        (DNS_RETRY, "4.4.3"),
        (DNS_FAIL, "5.4.3"),
        (NO_ROUTE, "4.4.4"),
        (HOST_NOT_FOUND, "5.4.4"),
        (MAIL_LOOP, "5.4.6"),
        (MAIL_LOOP_BACKUP_MX, "4.4.6"),
        (NULL_MX, "5.1.0"),
        (BAD_RECIPIENT_SYNTAX, "5.1.3"),
        (BAD_SENDER_SYNTAX, "5.1.7"),
        (TLS_NOT_OFFERED, "4.7.4"),
        (TLS_PROBLEM, "4.7.5"),
        (SMTPUTF8_REQUIRED, "5.6.7"),
    ] {
        assert_eq!(code.to_string(), text);
        assert_eq!(StatusCode::parse(text), Ok(code));
    }
}
