use super::*;
use crate::transport::script::{Scripted, say};

fn idle(conn: Connection<Box<dyn Transport>>) -> IdleSession {
    IdleSession {
        conn,
        extensions: Extensions::default(),
        endpoint: EndpointLabel {
            lmtp: false,
            endpoint: Endpoint::Inet("127.0.0.1:25".parse().expect("address")),
            tls_level: Level::None,
            verified_identity: String::new(),
            helo_name: "h.test".into(),
            sasl_username: String::new(),
        },
        display: "h[127.0.0.1]".into(),
        relay: "h[127.0.0.1]:25".into(),
        tls: None,
        connected_at: Instant::now(),
        uses: 1,
        primed: None,
    }
}

#[test]
fn a_session_with_unread_replies_is_never_stored() {
    let cache = SessionCache::new(CacheConfig::default());
    // The end-of-data reply and a stray one arrived in one read.
    let stream: Box<dyn Transport> = Box::new(Scripted::new(vec![say(
        "250 2.0.0 Ok\r\n250 2.0.0 stray\r\n",
    )]));
    let mut conn = Connection::new(stream, 2048);
    conn.read_reply(Duration::ZERO).expect("reply");
    cache.store(idle(conn), None);
    assert_eq!(cache.stats().stored, 0);
    let stream: Box<dyn Transport> = Box::new(Scripted::new(Vec::new()));
    cache.store(idle(Connection::new(stream, 2048)), None);
    assert_eq!(cache.stats().stored, 1, "a clean session is kept");
}
