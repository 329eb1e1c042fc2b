use super::*;
use crate::smtp::reply::ReplyParser;

fn ehlo(lines: &[&str]) -> Extensions {
    let mut parser = ReplyParser::new(2048);
    let reply = lines
        .iter()
        .find_map(|l| parser.push_line(l.as_bytes()))
        .expect("complete reply");
    Extensions::from_reply(&reply)
}

#[test]
fn smtp_sink_keywords() {
    let ext = ehlo(&[
        "250-sink.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-AUTH PLAIN LOGIN",
        "250-AUTH=PLAIN LOGIN",
        "250-XCLIENT NAME HELO",
        "250-XFORWARD NAME ADDR PROTO HELO",
        "250-ENHANCEDSTATUSCODES",
        "250-DSN",
        "250 ",
    ]);
    assert!(ext.pipelining && ext.eightbitmime && ext.dsn && ext.enhancedstatuscodes);
    assert!(!ext.smtputf8 && !ext.starttls);
    assert_eq!(ext.size, None);
    assert_eq!(ext.auth, vec!["LOGIN", "PLAIN"]);
}

#[test]
fn size_forms() {
    assert_eq!(
        ehlo(&["250-x", "250 SIZE 10240000"]).size_limit(),
        Some(10_240_000)
    );
    assert_eq!(ehlo(&["250-x", "250 SIZE"]).size, Some(0));
    assert_eq!(ehlo(&["250-x", "250 SIZE"]).size_limit(), None);
    assert_eq!(ehlo(&["250-x", "250 size junk"]).size_limit(), None);
}

#[test]
fn smtputf8_implies_8bitmime_and_case_is_ignored() {
    let ext = ehlo(&["250-x", "250-smtputf8", "250 starttls"]);
    assert!(ext.smtputf8 && ext.eightbitmime && ext.starttls);
}

#[test]
fn greeting_line_is_not_a_keyword() {
    assert!(!ehlo(&["250 PIPELINING"]).pipelining);
}

#[test]
fn requiretls_is_recorded() {
    assert!(ehlo(&["250-x", "250 REQUIRETLS"]).requiretls);
    assert!(!ehlo(&["250-x", "250 STARTTLS"]).requiretls);
}
