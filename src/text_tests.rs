use super::*;

#[test]
fn numbers_match_display() {
    for n in (0..1000).chain([1_000_000, u64::MAX]) {
        let mut s = String::new();
        push_u64(&mut s, n);
        assert_eq!(s, n.to_string());
    }
}

#[test]
fn addresses_match_display() {
    for text in [
        "0.0.0.0",
        "127.0.0.1",
        "10.200.3.45",
        "255.255.255.255",
        "::1",
        "2001:db8::25",
        "::ffff:192.0.2.1",
    ] {
        let addr: IpAddr = text.parse().unwrap();
        assert_eq!(ip_string(addr), addr.to_string(), "{text}");
    }
}
