use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const FAKE_SERVICES_FILE: &str = "\
# Network services, Internet style
#
tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer
smtp\t\t25/tcp\t\tmail
myrelay\t\t2525/tcp\trelay-alias altrelay   # local relay port
udponly\t\t5000/udp
zeroport\t0/tcp
hugeport\t70000/tcp
garbage line without port
noslash 123
dualproto\t6000/udp
dualproto\t6001/tcp
";

/// services(5) backed by a fixed text.
struct FakeServices;

impl ServiceLookup for FakeServices {
    fn tcp_port(&self, name: &str) -> Option<u16> {
        parse_services(FAKE_SERVICES_FILE, name)
    }
}

/// A lookup that answers everything with the same port.
struct Always(u16);

impl ServiceLookup for Always {
    fn tcp_port(&self, _name: &str) -> Option<u16> {
        Some(self.0)
    }
}

fn name(n: &str) -> Host {
    Host::Name(n.to_string())
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Host {
    Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

fn v6(text: &str) -> Host {
    Host::Ip(IpAddr::V6(text.parse::<Ipv6Addr>().unwrap()))
}

fn inet(host: Host, port: u16, lookup_mx: bool, text: &str) -> Destination {
    Destination::Inet {
        host,
        port,
        lookup_mx,
        text: text.to_string(),
    }
}

fn unix(path: &str, text: &str) -> Destination {
    Destination::Unix {
        path: PathBuf::from(path),
        text: text.to_string(),
    }
}

fn smtp(text: &str) -> Result<Vec<Destination>, NextHopError> {
    parse_nexthop(text, Protocol::Smtp, 25, &FakeServices)
}

fn lmtp(text: &str) -> Result<Vec<Destination>, NextHopError> {
    parse_nexthop(text, Protocol::Lmtp, 24, &FakeServices)
}

fn label(len: usize) -> String {
    "a".repeat(len)
}

/// A name of exactly `len` bytes made of 63-byte labels.
fn long_name(len: usize) -> String {
    let mut out = String::new();
    while len - out.len() > 63 {
        out.push_str(&label(62));
        out.push('.');
    }
    out.push_str(&label(len - out.len()));
    assert!(out.len() == len && !out.ends_with('.'));
    out
}

#[test]
fn smtp_valid_single_destinations() {
    let name63 = label(63);
    let name255 = long_name(255);
    let name255_dot = format!("{name255}.");
    let cases: Vec<(&str, Destination)> = vec![
        (
            "example.com",
            inet(name("example.com"), 25, true, "example.com"),
        ),
        (
            "example.com.",
            inet(name("example.com"), 25, true, "example.com."),
        ),
        (
            "Example.COM:2525",
            inet(name("Example.COM"), 2525, true, "Example.COM:2525"),
        ),
        (
            "example.com:025",
            inet(name("example.com"), 25, true, "example.com:025"),
        ),
        (
            "example.com:65535",
            inet(name("example.com"), 65535, true, "example.com:65535"),
        ),
        (
            "example.com:1",
            inet(name("example.com"), 1, true, "example.com:1"),
        ),
        (
            "example.com:submission",
            inet(name("example.com"), 587, true, "example.com:submission"),
        ),
        ("localhost", inet(name("localhost"), 25, true, "localhost")),
        ("a", inet(name("a"), 25, true, "a")),
        (
            "mail-1.example.com:lmtp",
            inet(
                name("mail-1.example.com"),
                24,
                true,
                "mail-1.example.com:lmtp",
            ),
        ),
        (
            "_dmarc.example.com",
            inet(name("_dmarc.example.com"), 25, true, "_dmarc.example.com"),
        ),
        (
            "xn--bcher-kva.example",
            inet(
                name("xn--bcher-kva.example"),
                25,
                true,
                "xn--bcher-kva.example",
            ),
        ),
        (
            "bücher.example",
            inet(name("bücher.example"), 25, true, "bücher.example"),
        ),
        (
            "例え.テスト:2525",
            inet(name("例え.テスト"), 2525, true, "例え.テスト:2525"),
        ),
        (
            "123.example",
            inet(name("123.example"), 25, true, "123.example"),
        ),
        (
            "example.123",
            inet(name("example.123"), 25, true, "example.123"),
        ),
        // Postfix compatibility: "inet" is just a host name for SMTP.
        ("inet:25", inet(name("inet"), 25, true, "inet:25")),
        (
            "[mail.example.com]",
            inet(name("mail.example.com"), 25, false, "[mail.example.com]"),
        ),
        (
            "[mail.example.com]:587",
            inet(
                name("mail.example.com"),
                587,
                false,
                "[mail.example.com]:587",
            ),
        ),
        (
            "[mail.example.com.]",
            inet(name("mail.example.com"), 25, false, "[mail.example.com.]"),
        ),
        ("[10.0.0.1]", inet(v4(10, 0, 0, 1), 25, false, "[10.0.0.1]")),
        (
            "[10.0.0.1]:2525",
            inet(v4(10, 0, 0, 1), 2525, false, "[10.0.0.1]:2525"),
        ),
        (
            "[127.0.0.1]:smtps",
            inet(v4(127, 0, 0, 1), 465, false, "[127.0.0.1]:smtps"),
        ),
        ("10.0.0.1", inet(v4(10, 0, 0, 1), 25, false, "10.0.0.1")),
        (
            "10.0.0.1:2525",
            inet(v4(10, 0, 0, 1), 2525, false, "10.0.0.1:2525"),
        ),
        (
            "[ipv6:2001:db8::1]",
            inet(v6("2001:db8::1"), 25, false, "[ipv6:2001:db8::1]"),
        ),
        (
            "[IPv6:2001:db8::1]:2525",
            inet(v6("2001:db8::1"), 2525, false, "[IPv6:2001:db8::1]:2525"),
        ),
        ("[IPV6:::1]", inet(v6("::1"), 25, false, "[IPV6:::1]")),
        (
            "[iPv6:::ffff:1.2.3.4]",
            inet(v6("::ffff:1.2.3.4"), 25, false, "[iPv6:::ffff:1.2.3.4]"),
        ),
        (
            "[2001:db8::1]",
            inet(v6("2001:db8::1"), 25, false, "[2001:db8::1]"),
        ),
        (
            "[2001:db8::1]:submissions",
            inet(v6("2001:db8::1"), 465, false, "[2001:db8::1]:submissions"),
        ),
        (
            "2001:db8::1",
            inet(v6("2001:db8::1"), 25, false, "2001:db8::1"),
        ),
        ("::1", inet(v6("::1"), 25, false, "::1")),
        // The whole string is an IPv6 address, so ":25" is not a port.
        (
            "2001:db8::1:25",
            inet(v6("2001:db8::1:25"), 25, false, "2001:db8::1:25"),
        ),
        // Not an IPv6 address as a whole: split at the last colon.
        (
            "2001:db8::1:submission",
            inet(v6("2001:db8::1"), 587, false, "2001:db8::1:submission"),
        ),
        (
            "relay.example:myrelay",
            inet(name("relay.example"), 2525, true, "relay.example:myrelay"),
        ),
        (
            "relay.example:relay-alias",
            inet(
                name("relay.example"),
                2525,
                true,
                "relay.example:relay-alias",
            ),
        ),
        (
            "relay.example:altrelay",
            inet(name("relay.example"), 2525, true, "relay.example:altrelay"),
        ),
        (name63.as_str(), inet(name(&name63), 25, true, &name63)),
        (name255.as_str(), inet(name(&name255), 25, true, &name255)),
        (
            name255_dot.as_str(),
            inet(name(&name255), 25, true, &name255_dot),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(smtp(input), Ok(vec![expected.clone()]), "input {input:?}");
        assert_eq!(
            parse_destination(input, Protocol::Smtp, 25, &FakeServices),
            Ok(expected),
            "element {input:?}"
        );
    }
}

#[test]
fn lmtp_valid_single_destinations() {
    let path107 = format!("/{}", label(106));
    let unix107 = format!("unix:{path107}");
    let cases: Vec<(&str, Destination)> = vec![
        (
            "unix:/var/run/lmtp.sock",
            unix("/var/run/lmtp.sock", "unix:/var/run/lmtp.sock"),
        ),
        (
            "unix:private/dovecot-lmtp",
            unix("private/dovecot-lmtp", "unix:private/dovecot-lmtp"),
        ),
        // The whole string is one path: no list splitting.
        ("unix:/tmp/a b,c", unix("/tmp/a b,c", "unix:/tmp/a b,c")),
        ("unix:/a, unix:/b", unix("/a, unix:/b", "unix:/a, unix:/b")),
        (unix107.as_str(), unix(&path107, &unix107)),
        (
            "inet:mail.example.com",
            inet(name("mail.example.com"), 24, false, "mail.example.com"),
        ),
        (
            "inet:mail.example.com:2003",
            inet(
                name("mail.example.com"),
                2003,
                false,
                "mail.example.com:2003",
            ),
        ),
        (
            "inet:[10.0.0.1]:24",
            inet(v4(10, 0, 0, 1), 24, false, "[10.0.0.1]:24"),
        ),
        (
            "inet:[ipv6:::1]:lmtp",
            inet(v6("::1"), 24, false, "[ipv6:::1]:lmtp"),
        ),
        (
            "inet:127.0.0.1:2003",
            inet(v4(127, 0, 0, 1), 2003, false, "127.0.0.1:2003"),
        ),
        (
            "mail.example.com",
            inet(name("mail.example.com"), 24, false, "mail.example.com"),
        ),
        (
            "mail.example.com:smtp",
            inet(name("mail.example.com"), 25, false, "mail.example.com:smtp"),
        ),
        (
            "[mail.example.com]",
            inet(name("mail.example.com"), 24, false, "[mail.example.com]"),
        ),
        (
            "[mail.example.com]:2003",
            inet(
                name("mail.example.com"),
                2003,
                false,
                "[mail.example.com]:2003",
            ),
        ),
        (
            "[2001:db8::1]",
            inet(v6("2001:db8::1"), 24, false, "[2001:db8::1]"),
        ),
        (
            "2001:db8::1",
            inet(v6("2001:db8::1"), 24, false, "2001:db8::1"),
        ),
        ("10.1.2.3", inet(v4(10, 1, 2, 3), 24, false, "10.1.2.3")),
    ];
    for (input, expected) in cases {
        assert_eq!(lmtp(input), Ok(vec![expected.clone()]), "input {input:?}");
        assert_eq!(
            parse_destination(input, Protocol::Lmtp, 24, &FakeServices),
            Ok(expected),
            "element {input:?}"
        );
    }
}

#[test]
fn lists_with_mixed_separators() {
    let cases: Vec<(Protocol, &str, Vec<Destination>)> = vec![
        (
            Protocol::Smtp,
            "a.test, [10.0.0.1]:2525  b.test",
            vec![
                inet(name("a.test"), 25, true, "a.test"),
                inet(v4(10, 0, 0, 1), 2525, false, "[10.0.0.1]:2525"),
                inet(name("b.test"), 25, true, "b.test"),
            ],
        ),
        (
            Protocol::Smtp,
            "a.test,b.test",
            vec![
                inet(name("a.test"), 25, true, "a.test"),
                inet(name("b.test"), 25, true, "b.test"),
            ],
        ),
        (
            Protocol::Smtp,
            " ,a.test,,\t b.test\t[ipv6:::1]:2525,\t",
            vec![
                inet(name("a.test"), 25, true, "a.test"),
                inet(name("b.test"), 25, true, "b.test"),
                inet(v6("::1"), 2525, false, "[ipv6:::1]:2525"),
            ],
        ),
        (
            Protocol::Smtp,
            "2001:db8::1 [2001:db8::2]:26",
            vec![
                inet(v6("2001:db8::1"), 25, false, "2001:db8::1"),
                inet(v6("2001:db8::2"), 26, false, "[2001:db8::2]:26"),
            ],
        ),
        (
            Protocol::Lmtp,
            "inet:a.test b.test:2004",
            vec![
                inet(name("a.test"), 24, false, "a.test"),
                inet(name("b.test"), 2004, false, "b.test:2004"),
            ],
        ),
        (
            Protocol::Lmtp,
            "[10.0.0.1]:2003, unix:/run/lmtp",
            vec![
                inet(v4(10, 0, 0, 1), 2003, false, "[10.0.0.1]:2003"),
                unix("/run/lmtp", "unix:/run/lmtp"),
            ],
        ),
        (
            Protocol::Lmtp,
            "a.test inet:b.test:2004,unix:relative/sock",
            vec![
                inet(name("a.test"), 24, false, "a.test"),
                inet(name("b.test"), 2004, false, "b.test:2004"),
                unix("relative/sock", "unix:relative/sock"),
            ],
        ),
        (
            Protocol::Lmtp,
            " unix:/a unix:/b",
            vec![unix("/a", "unix:/a"), unix("/b", "unix:/b")],
        ),
    ];
    for (protocol, input, expected) in cases {
        let default = if protocol == Protocol::Smtp { 25 } else { 24 };
        assert_eq!(
            parse_nexthop(input, protocol, default, &FakeServices),
            Ok(expected),
            "input {input:?}"
        );
    }
}

#[test]
fn service_names() {
    let cases: Vec<(&str, Result<u16, String>)> = vec![
        ("smtp", Ok(25)),
        ("submission", Ok(587)),
        ("smtps", Ok(465)),
        ("submissions", Ok(465)),
        ("lmtp", Ok(24)),
        ("myrelay", Ok(2525)),
        ("relay-alias", Ok(2525)),
        ("dualproto", Ok(6001)),
        ("25", Ok(25)),
        ("00025", Ok(25)),
        ("1", Ok(1)),
        ("65535", Ok(65535)),
        ("tcpmux", Ok(1)),
        ("udponly", Err("unknown service: udponly/tcp".to_string())),
        ("zeroport", Err("unknown service: zeroport/tcp".to_string())),
        ("hugeport", Err("unknown service: hugeport/tcp".to_string())),
        ("SMTP", Err("unknown service: SMTP/tcp".to_string())),
        ("foo", Err("unknown service: foo/tcp".to_string())),
        ("mail", Ok(25)),
        ("+25", Err("unknown service: +25/tcp".to_string())),
        ("-1", Err("unknown service: -1/tcp".to_string())),
        ("2 5", Err("unknown service: 2 5/tcp".to_string())),
        (
            "bad\nname",
            Err("unknown service: bad?name/tcp".to_string()),
        ),
        ("0", Err("bad network port: 0".to_string())),
        ("000", Err("bad network port: 000".to_string())),
        ("65536", Err("bad network port: 65536".to_string())),
        ("99999", Err("bad network port: 99999".to_string())),
        (
            "184467440737095516160",
            Err("bad network port: 184467440737095516160".to_string()),
        ),
        ("", Err(MISSING_SERVICE.to_string())),
    ];
    for (service, expected) in cases {
        assert_eq!(
            parse_port(service, &FakeServices),
            expected,
            "service {service:?}"
        );
    }
}

#[test]
fn known_ports_take_precedence_over_lookup() {
    let always = Always(9999);
    for (service, port) in KNOWN_TCP_PORTS {
        assert_eq!(parse_port(service, &always), Ok(*port));
    }
    assert_eq!(parse_port("other", &always), Ok(9999));
    assert_eq!(
        parse_port("other", &Always(0)),
        Err("bad network port: other".to_string())
    );
    assert_eq!(
        parse_nexthop("h.test:whatever", Protocol::Smtp, 25, &always),
        Ok(vec![inet(name("h.test"), 9999, true, "h.test:whatever")])
    );
}

#[test]
fn smtp_bad_destinations() {
    let label64 = format!("{}.example", label(64));
    let name256 = long_name(256);
    let cases: Vec<(String, &str)> = vec![
        ("[127.0.0.1]:0".into(), "bad network port: 0"),
        ("host.test:0".into(), "bad network port: 0"),
        ("host.test:65536".into(), "bad network port: 65536"),
        ("host.test:99999".into(), "bad network port: 99999"),
        ("[10.0.0.1]:99999".into(), "bad network port: 99999"),
        ("x:foo".into(), "unknown service: foo/tcp"),
        ("host.test:+25".into(), "unknown service: +25/tcp"),
        ("unix:/tmp/sock".into(), "unknown service: /tmp/sock/tcp"),
        ("inet:[1.2.3.4]".into(), "unknown service: [1.2.3.4]/tcp"),
        (":25".into(), MISSING_HOST),
        (":".into(), MISSING_HOST),
        ("[]".into(), MISSING_HOST),
        ("[]:25".into(), MISSING_HOST),
        ("[1.2.3.4".into(), "missing \"]\""),
        ("[".into(), "missing \"]\""),
        ("[1.2.3.4]x".into(), "garbage after \"]\""),
        ("[1.2.3.4]]".into(), "garbage after \"]\""),
        ("[1.2.3.4]:".into(), MISSING_SERVICE),
        ("host:".into(), MISSING_SERVICE),
        ("[ipv6:1.2.3.4]".into(), "malformed IPv6 address"),
        ("[ipv6:]".into(), "malformed IPv6 address"),
        ("[ipv6:example.com]".into(), "malformed IPv6 address"),
        ("[2001:db8::zz]".into(), "malformed IPv6 address"),
        ("[fe80::1%eth0]".into(), "malformed IPv6 address"),
        ("[host.test:25]".into(), "malformed IPv6 address"),
        (
            "ipv6:2001:db8::1".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "bad..name".into(),
            "malformed host or domain name: empty label",
        ),
        (
            "[bad..name]".into(),
            "malformed host or domain name: empty label",
        ),
        (
            ".leading.test".into(),
            "malformed host or domain name: empty label",
        ),
        (
            "trailing.test..".into(),
            "malformed host or domain name: empty label",
        ),
        (".".into(), "malformed host or domain name: empty label"),
        ("[.]".into(), "malformed host or domain name: empty label"),
        (
            "-".into(),
            "malformed host or domain name: misplaced hyphen",
        ),
        (
            "-a.test".into(),
            "malformed host or domain name: misplaced hyphen",
        ),
        (
            "a-.test".into(),
            "malformed host or domain name: misplaced hyphen",
        ),
        (
            label64.clone(),
            "malformed host or domain name: label longer than 63 characters",
        ),
        (
            format!("bücher.{}", label(64)),
            "malformed host or domain name: label longer than 63 characters",
        ),
        (
            name256.clone(),
            "malformed host or domain name: name longer than 255 characters",
        ),
        (
            format!("[{name256}]"),
            "malformed host or domain name: name longer than 255 characters",
        ),
        (
            "a:b:c".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "a.test:25:25".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "[[1.2.3.4]".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "host\0.test".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "a\u{a0}b.test".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "a\u{85}b.test".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "a/b.test".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "a]b".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "x[1.2.3.4]".into(),
            "malformed host or domain name: invalid character",
        ),
        (
            "1.2.3.999".into(),
            "malformed host or domain name: numeric name",
        ),
        (
            "01.2.3.4".into(),
            "malformed host or domain name: numeric name",
        ),
        (
            "1.2.3".into(),
            "malformed host or domain name: numeric name",
        ),
        ("999".into(), "malformed host or domain name: numeric name"),
        (
            "[1.2.3.4.5]".into(),
            "malformed host or domain name: numeric name",
        ),
    ];
    for (input, reason) in cases {
        let expected = NextHopError {
            destination: input.clone(),
            reason: reason.to_string(),
        };
        if input.contains(char::is_control) {
            // A whole list with a control character is refused as such.
            assert_eq!(
                smtp(&input).map_err(|e| e.reason),
                Err("control character in destination list".to_string())
            );
        } else {
            assert_eq!(smtp(&input), Err(expected.clone()), "input {input:?}");
        }
        assert_eq!(
            parse_destination(&input, Protocol::Smtp, 25, &FakeServices),
            Err(expected),
            "element {input:?}"
        );
    }
}

#[test]
fn lmtp_bad_destinations() {
    let path108 = format!("/{}", label(107));
    let cases: Vec<(String, &str, &str)> = vec![
        ("unix:".into(), "unix:", "empty unix-domain name"),
        (
            "unix:/a\0b".into(),
            "unix:/a\0b",
            "unix-domain name contains a null byte",
        ),
        (format!("unix:{path108}"), "", "unix-domain name too long"),
        (
            "inet:host.test:0".into(),
            "host.test:0",
            "bad network port: 0",
        ),
        (
            "inet:[1.2.3.4]x".into(),
            "[1.2.3.4]x",
            "garbage after \"]\"",
        ),
        (
            "host.test:65536".into(),
            "host.test:65536",
            "bad network port: 65536",
        ),
        ("a.test, unix:".into(), "unix:", "empty unix-domain name"),
        ("a.test, inet:".into(), "inet:", MISSING_HOST),
        (
            "a.test, bad..name".into(),
            "bad..name",
            "malformed host or domain name: empty label",
        ),
        ("inet:a.test,[]".into(), "[]", MISSING_HOST),
        (
            "UNIX:/path".into(),
            "UNIX:/path",
            "unknown service: /path/tcp",
        ),
        (
            "inet:inet:inet:h".into(),
            "inet:inet:h",
            "unknown service: h/tcp",
        ),
    ];
    for (input, destination, reason) in cases {
        let destination = if destination.is_empty() {
            input.as_str()
        } else {
            destination
        };
        let expected = Err(NextHopError {
            destination: destination.to_string(),
            reason: reason.to_string(),
        });
        assert_eq!(lmtp(&input), expected, "input {input:?}");
    }
}

#[test]
fn unix_path_length_limit() {
    for len in [1, UNIX_PATH_LIMIT - 1] {
        let path = format!("/{}", label(len - 1));
        let text = format!("unix:{path}");
        assert_eq!(lmtp(&text), Ok(vec![unix(&path, &text)]), "length {len}");
    }
    for len in [UNIX_PATH_LIMIT, UNIX_PATH_LIMIT + 1, 4000] {
        let text = format!("unix:/{}", label(len - 1));
        assert_eq!(
            lmtp(&text).map_err(|e| e.reason),
            Err("unix-domain name too long".to_string())
        );
    }
    if cfg!(target_os = "linux") {
        assert_eq!(UNIX_PATH_LIMIT, 108);
    }
}

#[test]
fn element_only_errors() {
    // Inside a list, white space would split these; as single elements
    // they must still be rejected.
    let cases = [
        ("[1.2.3.4] :25", "garbage after \"]\""),
        (
            "a.test b.test",
            "malformed host or domain name: invalid character",
        ),
        (
            "a.test,b.test",
            "malformed host or domain name: invalid character",
        ),
        ("[a b]", "malformed host or domain name: invalid character"),
    ];
    for (input, reason) in cases {
        let err = parse_destination(input, Protocol::Smtp, 25, &FakeServices).unwrap_err();
        assert_eq!(
            (err.destination.as_str(), err.reason.as_str()),
            (input, reason)
        );
    }
}

#[test]
fn per_element_errors_name_the_element() {
    let err = smtp("a.test, b.test:0 c.test").unwrap_err();
    assert_eq!(err.destination, "b.test:0");
    assert_eq!(
        err.to_string(),
        "bad destination \"b.test:0\": bad network port: 0"
    );
    let err = smtp("ok.test [1.2.3.4").unwrap_err();
    assert_eq!(err.destination, "[1.2.3.4");
}

#[test]
fn empty_lists() {
    for input in ["", ", ,", " ", ",", "\t\t", " , \t,\t,"] {
        let expected = Err(NextHopError {
            destination: input.to_string(),
            reason: "empty destination list".to_string(),
        });
        assert_eq!(smtp(input), expected, "smtp {input:?}");
        assert_eq!(lmtp(input), expected, "lmtp {input:?}");
    }
    for input in ["inet:", "inet: , "] {
        assert_eq!(
            lmtp(input),
            Err(NextHopError {
                destination: input.to_string(),
                reason: "empty destination list".to_string(),
            })
        );
    }
    for protocol in [Protocol::Smtp, Protocol::Lmtp] {
        assert_eq!(
            parse_destination("", protocol, 25, &FakeServices),
            Err(NextHopError {
                destination: String::new(),
                reason: "empty destination".to_string(),
            })
        );
    }
}

#[test]
fn over_long_input() {
    let long = "a".repeat(5000);
    let list = format!("a.test,{}", "b.test,".repeat(800));
    let long_unix = format!("unix:/{}", "a".repeat(5000));
    for input in [long.as_str(), list.as_str(), long_unix.as_str()] {
        for protocol in [Protocol::Smtp, Protocol::Lmtp] {
            let err = parse_nexthop(input, protocol, 25, &FakeServices).unwrap_err();
            assert_eq!(err.destination, input);
            assert_eq!(err.reason, "destination list too long");
            let err = parse_destination(input, protocol, 25, &FakeServices).unwrap_err();
            assert_eq!(err.reason, "destination too long");
        }
    }
    // Exactly at the limit is accepted syntax-wise (many short elements).
    let mut at_limit = "x.test,".repeat(MAX_NEXTHOP_LEN / 7);
    while at_limit.len() < MAX_NEXTHOP_LEN {
        at_limit.push(' ');
    }
    assert_eq!(at_limit.len(), MAX_NEXTHOP_LEN);
    assert_eq!(smtp(&at_limit).map(|v| v.len()), Ok(MAX_NEXTHOP_LEN / 7));
}

#[test]
fn zero_default_port_is_rejected() {
    let err = parse_nexthop("a.test", Protocol::Smtp, 0, &FakeServices).unwrap_err();
    assert_eq!(err.reason, "bad network port: 0");
    assert_eq!(
        parse_nexthop("a.test:25", Protocol::Smtp, 0, &FakeServices),
        Ok(vec![inet(name("a.test"), 25, true, "a.test:25")])
    );
}

#[test]
fn error_display() {
    let cases = [
        (
            "[127.0.0.1]:0",
            Protocol::Smtp,
            "bad destination \"[127.0.0.1]:0\": bad network port: 0",
        ),
        (
            "x:foo",
            Protocol::Smtp,
            "bad destination \"x:foo\": unknown service: foo/tcp",
        ),
        (
            "",
            Protocol::Smtp,
            "bad destination \"\": empty destination list",
        ),
    ];
    for (input, protocol, expected) in cases {
        let err = parse_nexthop(input, protocol, 25, &FakeServices).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
    // Control characters cannot forge log lines.
    let err = parse_destination("a\nb:0", Protocol::Smtp, 25, &FakeServices).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bad destination \"a\\nb:0\": malformed host or domain name: invalid character"
    );
    let path = format!("/{}", label(200));
    let text = format!("unix:{path}");
    let err = lmtp(&text).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("bad destination \"{text}\": unix-domain name too long")
    );
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().starts_with("bad destination"));
}

#[test]
fn destination_accessors() {
    let list = lmtp("[10.0.0.1]:2003 b.test [ipv6:::1] unix:/run/lmtp").unwrap();
    let texts: Vec<&str> = list.iter().map(Destination::text).collect();
    assert_eq!(
        texts,
        ["[10.0.0.1]:2003", "b.test", "[ipv6:::1]", "unix:/run/lmtp"]
    );
    let hosts: Vec<String> = list.iter().map(Destination::display_host).collect();
    assert_eq!(hosts, ["10.0.0.1", "b.test", "::1", "/run/lmtp"]);
    let list = smtp("example.com.").unwrap();
    assert_eq!(list[0].display_host(), "example.com");
    assert_eq!(list[0].text(), "example.com.");
}

#[test]
fn services_file_parser() {
    let text = "\
# /etc/services sample\r
\r
ftp\t\t21/tcp\r
ftp\t\t21/udp\t\tfsp fspd\r
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol\r
smtps-alt 4650/tcp smtps2 # alias after port
  leading 7000/tcp
mail-ish\t2526/udp\tmailu
mail-ish\t2527/tcp\tmailt
dup 1111/tcp
dup 2222/tcp
#commented 9999/tcp
bad-port abc/tcp
bad-port 0/tcp
bad-port 65536/tcp
bad-port +5/tcp
bad-port 33/tcp
noproto 44
x 55/tcp # y 66/tcp
";
    let cases: &[(&str, Option<u16>)] = &[
        ("ftp", Some(21)),
        ("fsp", None),
        ("ssh", Some(22)),
        ("smtps-alt", Some(4650)),
        ("smtps2", Some(4650)),
        ("smtps", None),
        ("leading", Some(7000)),
        ("mail-ish", Some(2527)),
        ("mailu", None),
        ("mailt", Some(2527)),
        ("dup", Some(1111)),
        ("commented", None),
        ("#commented", None),
        ("bad-port", Some(33)),
        ("noproto", None),
        ("x", Some(55)),
        ("y", None),
        ("tcp", None),
        ("21/tcp", None),
        ("", None),
        ("SSH", None),
    ];
    for (service, expected) in cases {
        assert_eq!(
            parse_services(text, service),
            *expected,
            "service {service:?}"
        );
    }
    assert_eq!(parse_services("", "smtp"), None);
}

#[test]
fn services_file_reading() {
    let path = std::env::temp_dir().join(format!("nexthop-services-test-{}", std::process::id()));
    std::fs::write(&path, b"filed 3456/tcp filed-alias\n\xff\xfe junk 1/tcp\n").unwrap();
    assert_eq!(services_file_port(&path, "filed"), Some(3456));
    assert_eq!(services_file_port(&path, "filed-alias"), Some(3456));
    assert_eq!(services_file_port(&path, "nothere"), None);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(services_file_port(&path, "filed"), None);
    assert_eq!(
        services_file_port(Path::new("/nonexistent/dir/services"), "smtp"),
        None
    );
}

#[test]
fn system_services_known_table() {
    let system = SystemServices;
    assert_eq!(system.tcp_port("smtp"), Some(25));
    assert_eq!(system.tcp_port("submission"), Some(587));
    assert_eq!(system.tcp_port("lmtp"), Some(24));
    assert_eq!(system.tcp_port("no-such-service-xyzzy-42"), None);
    assert_eq!(
        parse_nexthop("[127.0.0.1]:smtps", Protocol::Smtp, 25, &SystemServices),
        Ok(vec![inet(
            v4(127, 0, 0, 1),
            465,
            false,
            "[127.0.0.1]:smtps"
        )])
    );
}

/// Deterministic 64-bit LCG (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check_invariants(
    input: &str,
    result: &Result<Vec<Destination>, NextHopError>,
    protocol: Protocol,
) {
    match result {
        Ok(list) => {
            assert!(!list.is_empty(), "empty Ok for {input:?}");
            assert!(input.len() <= MAX_NEXTHOP_LEN);
            for dest in list {
                assert!(!dest.text().contains(char::is_control), "{input:?}");
                match dest {
                    Destination::Inet {
                        port,
                        lookup_mx,
                        host,
                        text,
                    } => {
                        assert_ne!(*port, 0, "{input:?}");
                        assert!(!text.is_empty());
                        assert!(input.contains(text.as_str()));
                        if *lookup_mx {
                            assert_eq!(protocol, Protocol::Smtp);
                            assert!(matches!(host, Host::Name(_)));
                            assert!(!text.starts_with('['));
                        }
                        if let Host::Name(n) = host {
                            assert!(!n.is_empty() && !n.contains([':', ',', ' ', '[', ']', '\0']));
                        }
                    }
                    Destination::Unix { path, text } => {
                        assert_eq!(protocol, Protocol::Lmtp);
                        let bytes = path.as_os_str().len();
                        assert!(bytes > 0 && bytes < UNIX_PATH_LIMIT, "{input:?}");
                        assert!(text.starts_with("unix:"));
                    }
                }
            }
        }
        Err(err) => {
            assert!(!err.reason.is_empty());
            assert!(input.contains(err.destination.as_str()));
            assert!(err.to_string().starts_with("bad destination \""));
        }
    }
}

#[test]
fn random_inputs_never_panic() {
    const TOKENS: &[&str] = &[
        "unix:",
        "inet:",
        "[",
        "]",
        "ipv6:",
        "IPv6:",
        ":",
        ",",
        " ",
        "\t",
        "\n",
        "1.2.3.4",
        "::1",
        "2001:db8::",
        "a",
        "b.test",
        "-",
        ".",
        "_",
        "smtp",
        "submission",
        "myrelay",
        "65536",
        "0",
        "25",
        "99999",
        "\0",
        "é",
        "例",
        "/",
        "/tmp/s",
        "%",
        "\u{a0}",
        "x",
        "..",
        "]:",
        "]:25",
    ];
    let mut rng = Lcg(0x5eed_1234_abcd_0042);
    let mut accepted = 0usize;
    for round in 0..6000 {
        let input = if round % 3 == 0 {
            let len = if rng.below(50) == 0 {
                rng.below(6000)
            } else {
                rng.below(48)
            };
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        (rng.next() & 0xff) as u8
                    } else {
                        b"[]:,. \tab01239-_/unix:inet:ipv6"[rng.below(31)]
                    }
                })
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let count = rng.below(12);
            (0..count)
                .map(|_| TOKENS[rng.below(TOKENS.len())])
                .collect::<String>()
        };
        for (protocol, default) in [(Protocol::Smtp, 25), (Protocol::Lmtp, 24)] {
            let result = parse_nexthop(&input, protocol, default, &FakeServices);
            accepted += usize::from(result.is_ok());
            check_invariants(&input, &result, protocol);
            let _ = parse_destination(&input, protocol, default, &FakeServices);
        }
        let _ = parse_port(&input, &FakeServices);
        let _ = parse_services(&input, "smtp");
    }
    // The generator must exercise the success paths too.
    assert!(accepted > 100, "only {accepted} inputs accepted");
}

#[test]
fn recipient_domains_are_names_or_address_literals() {
    for good in [
        "example.com",
        "example.com.",
        "EXAMPLE.com",
        "a",
        "mx_1.example-2.test",
        "1.2.3.a",
        "b\u{fc}cher.test",
        "[192.0.2.5]",
        "[127.0.0.1]",
        "[0.0.0.0]",
        "[IPv6:2001:db8::1]",
        "[ipv6:::1]",
        "[IPV6:::ffff:192.0.2.1]",
    ] {
        assert_eq!(check_recipient_domain(good), Ok(()), "{good:?}");
    }
    let invalid = "malformed host or domain name: invalid character";
    for (bad, reason) in [
        ("", "empty domain"),
        (".", "malformed host or domain name: empty label"),
        ("a.test..", "malformed host or domain name: empty label"),
        ("[127.0.0.1]:6379", "garbage after \"]\""),
        ("[127.0.0.1]:smtp", "garbage after \"]\""),
        ("host:22", invalid),
        ("host:smtp", invalid),
        ("a.test,[192.0.2.5]", invalid),
        ("a.test [192.0.2.5]", invalid),
        ("a.test\r\nb", invalid),
        ("unix:/tmp/s", invalid),
        ("inet:a.test", invalid),
        ("2001:db8::1", invalid),
        ("192.0.2.5", "malformed host or domain name: numeric name"),
        ("-a.test", "malformed host or domain name: misplaced hyphen"),
        ("[127.0.0.1", "missing \"]\""),
        ("[127.0.0.1]]", "garbage after \"]\""),
        ("[]", "malformed IPv4 address"),
        ("[a.test]", "malformed IPv4 address"),
        ("[1.2.3]", "malformed IPv4 address"),
        ("[1.2.3.256]", "malformed IPv4 address"),
        ("[010.0.0.1]", "malformed IPv4 address"),
        ("[0.1.2.3]", "bad initial octet value"),
        ("[2001:db8::1]", "IPv6 address without IPv6: prefix"),
        ("[IPv6:192.0.2.1]", "malformed IPv6 address"),
        ("[IPv6:2001:db8::1%eth0]", "malformed IPv6 address"),
    ] {
        assert_eq!(
            check_recipient_domain(bad),
            Err(reason.to_string()),
            "{bad:?}"
        );
    }
    assert!(check_recipient_domain(&"a".repeat(MAX_NEXTHOP_LEN + 1)).is_err());
    assert!(check_recipient_domain(&format!("{}.test", label(64))).is_err());
}

#[test]
fn control_characters_are_refused_in_every_form() {
    for (protocol, text) in [
        (Protocol::Smtp, "a.test\r\nb.test"),
        (Protocol::Smtp, "a.test\n"),
        (Protocol::Smtp, "[127.0.0.1]:25\r"),
        (Protocol::Smtp, "a.test\u{7f}"),
        (Protocol::Smtp, "a.test,\u{85}b.test"),
        (Protocol::Lmtp, "inet:a.test\nb.test"),
        (Protocol::Lmtp, "a.test, unix:/tmp/s\x1b"),
    ] {
        let err = parse_nexthop(text, protocol, 25, &FakeServices).unwrap_err();
        assert_eq!(
            err.reason, "control character in destination list",
            "{text:?}"
        );
        assert!(!err.to_string().contains(['\r', '\n']), "{err}");
    }
    for text in [
        "unix:/tmp/s\r\nforged: x",
        "unix:/tmp/s\t",
        "unix:/tmp/\u{7f}",
    ] {
        let err = lmtp(text).unwrap_err();
        assert_eq!(
            err.reason, "unix-domain name contains a control character",
            "{text:?}"
        );
        assert!(!err.to_string().contains(['\r', '\n', '\t']), "{err}");
    }
    // A tab still separates list elements, as in Postfix.
    assert_eq!(smtp("a.test\tb.test").map(|l| l.len()), Ok(2));
}
