//! Whole jobs delivered in process over the library's scripted transport
//! (`mailhop::transport::script`, through the harness's
//! [`common::transport::ScriptedNet`]): no socket, no server thread, the
//! exact bytes the client wrote.

mod common;

use std::sync::Arc;

use common::jobs::job;
use common::transport::{ScriptedNet, Shared};
use mailhop::config::Config;
use mailhop::deliver::Deliverer;
use mailhop::dispatch;
use mailhop::job::{Job, MessageRef};
use mailhop::recipients::Status;
use mailhop::transport::script::{Step, say};

/// A job to `[192.0.2.1]:25` (a documentation address, never dialled: the
/// connector is scripted; a literal: no DNS) with an inline message.
fn inline(id: &str) -> Job {
    let mut job = job(id, "[192.0.2.1]:25", std::path::Path::new("/unused"));
    job.message = MessageRef::Data {
        data: "Subject: scripted\n\nhello\n".into(),
    };
    job
}

/// Server replies of a PIPELINING server that accepts everything.
fn accepting() -> Vec<Step> {
    vec![
        say("220 scripted.test ESMTP\r\n"),
        say("250-scripted.test\r\n250 PIPELINING\r\n"),
        say("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"),
        say("250 2.0.0 Ok: queued as T1\r\n"),
        say("221 2.0.0 Bye\r\n"),
    ]
}

fn deliverer(net: &Arc<ScriptedNet>) -> Deliverer {
    Deliverer::new(Config::default()).with_connector(Box::new(Shared(Arc::clone(net))))
}

#[test]
fn a_job_over_the_scripted_transport_is_sent_with_the_whole_transaction() {
    let net = ScriptedNet::new(vec![accepting()]);
    let result = dispatch::execute(&deliverer(&net), &inline("T1"), false).expect("job runs");
    let rcpt = &result.recipients[0];
    assert_eq!(rcpt.status, Status::Sent, "{result:?}");
    assert_eq!(rcpt.dsn, "2.0.0", "{result:?}");
    assert!(rcpt.diagnostic.contains("queued as T1"), "{result:?}");
    let written = net.written();
    assert_eq!(written.len(), 1, "{written:?}");
    let wire = &written[0].1;
    for command in [
        "EHLO ",
        "MAIL FROM:<s@x.test>",
        "RCPT TO:<T1@y.test>",
        "DATA\r\n",
        "Subject: scripted\r\n\r\nhello\r\n.\r\n",
    ] {
        assert!(wire.contains(command), "{command:?} not in {wire:?}");
    }
}

#[test]
fn a_connection_lost_before_the_greeting_defers_4_4_2_without_a_word_sent() {
    let net = ScriptedNet::new(vec![vec![Step::Hangup]]);
    let result = dispatch::execute(&deliverer(&net), &inline("T2"), false).expect("job runs");
    let rcpt = &result.recipients[0];
    assert_eq!(rcpt.status, Status::Deferred, "{result:?}");
    assert_eq!(rcpt.dsn, "4.4.2", "{result:?}");
    assert_eq!(
        rcpt.diagnostic,
        "lost connection with 192.0.2.1[192.0.2.1] while receiving the initial server greeting",
        "{result:?}"
    );
    assert_eq!(
        net.written(),
        vec![("192.0.2.1[192.0.2.1]".to_string(), String::new())]
    );
}
