use super::*;
use crate::cache::EndpointLabel;
use crate::connect::Endpoint;
use crate::smtp::command::Notify;
use crate::transport::Connection;
use crate::transport::script::Scripted;

fn follower(id: &str, nexthop: &str) -> Follower {
    Follower {
        job_id: id.into(),
        key: NexthopKey::new(nexthop),
        protocol: Protocol::Smtp,
        envelope: Envelope {
            requiretls: false,
            sender: "s@x.test".into(),
            recipients: vec![crate::smtp::client::Recipient {
                address: "r@y.test".into(),
                orcpt: None,
                notify: Notify::default(),
            }],
            envid: None,
            ret: None,
            smtputf8: false,
        },
        facts: MessageFacts {
            tls_required_no: false,
            utf8_header: false,
            size: 1,
            has_8bit: false,
        },
        message_digest: message_digest(b"m"),
    }
}

fn session() -> IdleSession {
    IdleSession {
        conn: Connection::new(Box::new(Scripted::new(Vec::new())), 2048),
        extensions: crate::smtp::ehlo::Extensions::default(),
        endpoint: EndpointLabel {
            lmtp: false,
            endpoint: Endpoint::Inet("127.0.0.1:25".parse().expect("address")),
            tls_level: crate::tls_policy::Level::None,
            verified_identity: String::new(),
            helo_name: "h.test".into(),
            sasl_username: String::new(),
        },
        display: "h[127.0.0.1]".into(),
        relay: "h[127.0.0.1]:25".into(),
        tls: None,
        connected_at: std::time::Instant::now(),
        uses: 1,
        primed: None,
    }
}

#[test]
fn a_follower_is_offered_to_its_own_route_once() {
    let chain = Chain::default();
    chain.clear();
    chain.offer(7, follower("B", "[MX.example]:25"));
    assert!(
        chain
            .take_follower(&NexthopKey::new("[mx.example]:26"), Protocol::Smtp)
            .is_none()
    );
    assert!(
        chain
            .take_follower(&NexthopKey::new("[mx.example]:25"), Protocol::Lmtp)
            .is_none()
    );
    let (ticket, taken) = chain
        .take_follower(&NexthopKey::new("[mx.example]:25"), Protocol::Smtp)
        .expect("offered");
    assert_eq!((ticket, taken.job_id.as_str()), (7, "B"));
    assert!(
        chain
            .take_follower(&NexthopKey::new("[mx.example]:25"), Protocol::Smtp)
            .is_none()
    );
}

#[test]
fn a_handed_session_waits_only_for_its_ticket() {
    let chain = Chain::default();
    chain.clear();
    chain.hand_over(2, 9, session());
    assert!(chain.take_handed(|_, _| true).is_none(), "no job runs");
    chain.keep_only_for(2);
    assert!(
        chain.take_handed(|s, _| s.endpoint.lmtp).is_none(),
        "not wanted"
    );
    assert!(
        chain.take_handed(|_, digest| digest == 8).is_none(),
        "other message"
    );
    assert!(chain.take_handed(|_, digest| digest == 9).is_some());
    // The same job id means nothing: another ticket never gets it.
    chain.hand_over(2, 9, session());
    chain.offer(3, follower("B", "x"));
    chain.keep_only_for(3);
    assert!(
        chain.take_handed(|_, _| true).is_none(),
        "ticket 2's session is gone"
    );
    assert!(
        chain
            .take_follower(&NexthopKey::new("x"), Protocol::Smtp)
            .is_none(),
        "stale offer"
    );
    // A session its job did not use is dropped when the job is done.
    chain.hand_over(4, 9, session());
    chain.keep_only_for(4);
    chain.job_done(4);
    chain.keep_only_for(4);
    assert!(
        chain.take_handed(|_, _| true).is_none(),
        "cleared after the job ran"
    );
}
