use super::*;

fn text(step: Step) -> String {
    match step {
        Step::Reply(text) | Step::Data(text) | Step::Close(text) => text,
    }
}

fn code(step: Step) -> String {
    text(step).get(..3).unwrap_or("").to_string()
}

fn ready() -> Server {
    let mut server = Server::new("mailhop.test", 10_240_000);
    assert!(text(server.command(b"LHLO postfix.test\r\n")).starts_with("250-mailhop.test"));
    server
}

#[test]
fn lhlo_announces_the_extensions() {
    let mut server = Server::new("mailhop.test", 1000);
    assert_eq!(server.greeting(), "220 mailhop.test LMTP mailhop\r\n");
    let reply = text(server.command(b"LHLO client"));
    for keyword in [
        "PIPELINING",
        "SIZE 1000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "REQUIRETLS",
        "XFORWARD NAME ADDR",
    ] {
        assert!(reply.contains(keyword), "{reply}");
    }
    assert!(reply.ends_with("\r\n") && reply.lines().last().unwrap().starts_with("250 "));
    assert_eq!(code(server.command(b"EHLO client")), "500");
    assert_eq!(code(server.command(b"LHLO")), "501");
}

#[test]
fn a_transaction_collects_the_envelope_with_its_parameters() {
    let mut server = ready();
    let step = server
        .command(b"MAIL FROM:<a@x.test> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=Q+2B1 SMTPUTF8 REQUIRETLS\r\n");
    assert_eq!(code(step), "250");
    assert_eq!(
        code(server.command(b"RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40y.test")),
        "250"
    );
    assert_eq!(code(server.command(b"RCPT TO:<c@y.test>")), "250");
    assert!(matches!(server.command(b"DATA"), Step::Data(text) if text.starts_with("354 ")));
    let envelope = server.envelope();
    assert_eq!(envelope.sender, "a@x.test");
    assert_eq!(envelope.size, Some(1234));
    assert!(envelope.eight_bit && envelope.smtputf8 && envelope.requiretls);
    assert_eq!(envelope.ret, Some(RetWord::Hdrs));
    assert_eq!(envelope.envid.as_deref(), Some("Q+1"));
    assert_eq!(envelope.recipients.len(), 2);
    assert_eq!(
        envelope.recipients[0].orcpt.as_deref(),
        Some("rfc822;b@y.test")
    );
    assert_eq!(
        envelope.recipients[0].notify,
        Some(vec![NotifyWord::Success, NotifyWord::Failure])
    );
    server.transaction_done();
    assert!(server.envelope().recipients.is_empty());
    assert_eq!(code(server.command(b"MAIL FROM:<>")), "250");
}

#[test]
fn commands_out_of_order_and_bad_parameters_are_refused() {
    let mut server = Server::new("mailhop.test", 100);
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test>")), "503");
    assert!(text(server.command(b"LHLO c")).starts_with("250"));
    assert_eq!(code(server.command(b"RCPT TO:<b@y.test>")), "503");
    assert_eq!(code(server.command(b"DATA")), "503");
    assert_eq!(code(server.command(b"MAIL FROM:a@x.test")), "501");
    assert_eq!(
        code(server.command(b"MAIL FROM:<a@x.test> SIZE=1000")),
        "552"
    );
    assert_eq!(
        code(server.command(b"MAIL FROM:<a@x.test> BODY=BINARYMIME")),
        "501"
    );
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test> FOO=1")), "555");
    assert_eq!(code(server.command(b"MAIL FROM:<a\x01@x.test>")), "501");
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test>")), "250");
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test>")), "503");
    assert_eq!(code(server.command(b"RCPT TO:<>")), "501");
    assert_eq!(
        code(server.command(b"RCPT TO:<b@y.test> NOTIFY=NEVER,DELAY")),
        "501"
    );
    assert_eq!(code(server.command(b"DATA")), "503");
    assert_eq!(code(server.command(b"FROB")), "502");
    assert_eq!(code(server.command(&[0xff, 0xfe])), "500");
    assert_eq!(code(server.command(&vec![b'A'; MAX_COMMAND + 1])), "500");
    assert_eq!(code(server.command(b"RSET")), "250");
    assert_eq!(code(server.command(b"RCPT TO:<b@y.test>")), "503");
    assert!(matches!(server.command(b"QUIT"), Step::Close(_)));
}

#[test]
fn recipients_are_bounded() {
    let mut server = ready();
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test>")), "250");
    for n in 0..MAX_RECIPIENTS {
        let line = format!("RCPT TO:<r{n}@y.test>");
        assert_eq!(code(server.command(line.as_bytes())), "250");
    }
    assert_eq!(code(server.command(b"RCPT TO:<more@y.test>")), "452");
}

#[test]
fn xforward_attributes_are_kept_for_the_session() {
    let mut server = ready();
    assert_eq!(
        code(server.command(b"XFORWARD NAME=client.test ADDR=192.0.2.1 IDENT=4Xyz+20Q")),
        "250"
    );
    assert_eq!(code(server.command(b"XFORWARD BOGUS=1")), "501");
    assert_eq!(code(server.command(b"MAIL FROM:<a@x.test>")), "250");
    assert_eq!(code(server.command(b"XFORWARD NAME=x")), "503");
    let ident = server
        .envelope()
        .xforward
        .iter()
        .find(|(name, _)| name == "IDENT")
        .map(|(_, value)| value.clone());
    assert_eq!(ident.as_deref(), Some("4Xyz Q"));
    server.transaction_done();
    assert_eq!(server.envelope().xforward.len(), 3);
    // The next message's attributes replace those of the same name.
    assert_eq!(
        code(server.command(b"XFORWARD IDENT=5Next SOURCE=REMOTE")),
        "250"
    );
    let attributes: Vec<(&str, &str)> = server
        .envelope()
        .xforward
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attributes,
        [
            ("NAME", "client.test"),
            ("ADDR", "192.0.2.1"),
            ("IDENT", "5Next"),
            ("SOURCE", "REMOTE")
        ]
    );
}

#[test]
fn message_lines_are_dot_unstuffed_until_the_final_dot() {
    assert_eq!(Server::data_line(b"hello"), DataLine::Line(b"hello"));
    assert_eq!(Server::data_line(b"..leading"), DataLine::Line(b".leading"));
    assert_eq!(Server::data_line(b"."), DataLine::End);
    assert_eq!(Server::data_line(b""), DataLine::Line(b""));
}

#[test]
fn recipient_replies_carry_the_remote_verdict() {
    assert_eq!(
        recipient_reply(
            "b@y.test",
            Status::Sent,
            "2.0.0",
            "250 2.0.0 Ok: queued as 4Xyz"
        ),
        "250 2.0.0 <b@y.test> 250 2.0.0 Ok: queued as 4Xyz\r\n"
    );
    assert_eq!(
        recipient_reply(
            "b@y.test",
            Status::Bounced,
            "5.1.1",
            "host mx.y.test[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)"
        ),
        "550 5.1.1 <b@y.test> host mx.y.test[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)\r\n"
    );
    // The remote code of the same class is kept.
    assert!(
        recipient_reply(
            "b@y.test",
            Status::Deferred,
            "4.2.2",
            "host mx[192.0.2.1] said: 452 4.2.2 over quota (in reply to RCPT TO command)"
        )
        .starts_with("452 4.2.2 ")
    );
    // No reply quoted, a bad DSN, control characters: safe defaults.
    assert_eq!(
        recipient_reply(
            "b@y.test",
            Status::Deferred,
            "9.9",
            "connect to x: refused\r\nEVIL"
        ),
        "451 4.0.0 <b@y.test> connect to x: refused  EVIL\r\n"
    );
}
