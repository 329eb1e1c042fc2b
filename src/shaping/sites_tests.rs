use super::*;

#[test]
fn domains_with_the_same_mx_hosts_share_a_site() {
    let sites = MxSites::default();
    sites.learn(
        "a.example",
        ["mx2.provider.net.", "MX1.provider.net", "mx1.provider.net"].into_iter(),
    );
    sites.learn(
        "b.example",
        ["mx1.provider.net", "mx2.provider.net"].into_iter(),
    );
    sites.learn("c.example", ["mail.c.example"].into_iter());
    let a = sites.site_of("A.example").unwrap();
    assert_eq!(a, "mx:mx1.provider.net,mx2.provider.net");
    assert_eq!(sites.site_of("b.example"), Some(a));
    assert_eq!(
        sites.site_of("c.example").as_deref(),
        Some("mx:mail.c.example")
    );
    assert_eq!(sites.site_of("unknown.example"), None);
}

#[test]
fn no_host_learns_nothing_and_the_map_stays_bounded() {
    let sites = MxSites::default();
    sites.learn("a.example", std::iter::empty());
    assert_eq!(sites.site_of("a.example"), None);
    for n in 0..(MAX_DOMAINS + 10) {
        sites.learn(&format!("d{n}.example"), ["mx.example"].into_iter());
    }
    let len = sites.map.lock().unwrap().len();
    assert!(len <= MAX_DOMAINS, "{len}");
}
