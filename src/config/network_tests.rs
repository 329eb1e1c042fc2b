use super::*;

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

#[test]
fn ranges_contain_what_their_prefix_says() {
    let loopback = net("127.0.0.0/8");
    assert!(loopback.contains("127.0.0.1".parse().unwrap()));
    assert!(loopback.contains("127.255.1.2".parse().unwrap()));
    assert!(loopback.contains("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!loopback.contains("128.0.0.1".parse().unwrap()));
    assert!(!loopback.contains("::1".parse().unwrap()));
    assert!(net("::1").contains("::1".parse().unwrap()));
    assert!(!net("::1").contains("::2".parse().unwrap()));
    assert!(net("10.1.0.0/12").contains("10.15.255.255".parse().unwrap()));
    assert!(!net("10.1.0.0/12").contains("10.16.0.0".parse().unwrap()));
    assert!(net("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
    assert!(net("[2001:db8::]/32").contains("2001:db8:1::5".parse().unwrap()));
}

#[test]
fn bad_ranges_are_refused_with_their_text() {
    for bad in [
        "",
        "127.0.0.1/33",
        "::1/129",
        "localhost",
        "10.0.0.0/x",
        "1.2.3/8",
    ] {
        let error = bad.parse::<IpNetwork>().unwrap_err();
        assert!(error.contains(bad), "{error}");
    }
}
