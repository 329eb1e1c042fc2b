use std::net::SocketAddr;

use super::*;

fn endpoint(port: u16) -> Endpoint {
    Endpoint::Inet(SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn broken_tls_is_remembered_for_its_period_only() {
    let memory = TlsMemory::new();
    let t0 = Instant::now();
    let period = Duration::from_secs(60);
    assert!(!memory.skip_tls_at(&endpoint(25), "mx[127.0.0.1]:25", t0));
    memory.handshake_failed_at(&endpoint(25), period, t0);
    assert!(memory.skip_tls_at(&endpoint(25), "mx", t0 + Duration::from_secs(59)));
    assert!(!memory.skip_tls_at(&endpoint(26), "mx", t0));
    assert_eq!(memory.counters().skipped_handshakes, 1);
    assert!(!memory.skip_tls_at(&endpoint(25), "mx", t0 + Duration::from_secs(61)));
    assert_eq!(memory.counters().broken_servers, 0);
}

#[test]
fn zero_period_remembers_nothing() {
    let memory = TlsMemory::new();
    let t0 = Instant::now();
    memory.handshake_failed_at(&endpoint(25), Duration::ZERO, t0);
    assert!(!memory.skip_tls_at(&endpoint(25), "mx", t0));
    assert_eq!(memory.counters(), TlsCounters::default());
}

#[test]
fn a_completed_handshake_forgets_broken_tls() {
    let memory = TlsMemory::new();
    let t0 = Instant::now();
    memory.handshake_failed_at(&endpoint(25), Duration::from_secs(60), t0);
    assert_eq!(memory.counters().broken_servers, 1);
    memory.handshake_ok(&endpoint(25));
    assert!(!memory.skip_tls_at(&endpoint(25), "mx", t0));
}

#[test]
fn resumed_line_says_so() {
    let info = TlsInfo {
        version: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
        cipher_bits: (256, 256),
        trust: tls::Trust::Untrusted,
        peer_name: None,
        fingerprint: None,
    };
    let relay = "mx[127.0.0.1]:25";
    assert_eq!(
        established_line(&info, relay, false),
        "Untrusted TLS connection established to mx[127.0.0.1]:25: \
         TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    );
    assert!(established_line(&info, relay, true).ends_with("(256/256 bits) (session resumed)"));
}
