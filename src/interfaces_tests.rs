use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

#[test]
fn all_includes_loopback() {
    let own = OwnAddresses::from_config("all", &[], true, true);
    assert!(own.interfaces.contains(&ip("127.0.0.1")), "{own:?}");
}

#[test]
fn explicit_lists_and_proxies() {
    let own = OwnAddresses::from_config(
        "192.0.2.1, [2001:db8::1] mail.example",
        &["198.51.100.7".into(), "[ipv6:2001:db8::9]".into()],
        true,
        true,
    );
    assert_eq!(own.interfaces, vec![ip("192.0.2.1"), ip("2001:db8::1")]);
    assert_eq!(own.proxies, vec![ip("198.51.100.7"), ip("2001:db8::9")]);
    assert_eq!(own.all().len(), 4);
}

#[test]
fn families_are_filtered() {
    let own = OwnAddresses::from_config("loopback-only", &[], true, false);
    assert_eq!(own.interfaces, vec![ip("127.0.0.1")]);
}

#[test]
fn implicit_source_needs_exactly_one_non_loopback_address() {
    let one = OwnAddresses::from_config("192.0.2.1", &[], true, true);
    assert_eq!(one.implicit_source(false), Some(ip("192.0.2.1")));
    assert_eq!(one.implicit_source(true), None);
    let two = OwnAddresses::from_config("192.0.2.1 192.0.2.2", &[], true, true);
    assert_eq!(two.implicit_source(false), None);
    let lo = OwnAddresses::from_config("127.0.0.1", &[], true, true);
    assert_eq!(lo.implicit_source(false), None);
}
