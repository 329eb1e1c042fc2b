use super::*;

fn pattern(text: &str) -> MxPattern {
    MxPattern::parse(text).unwrap()
}

#[test]
fn rfc_example_parses_with_lf_and_crlf() {
    let lf = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";
    let crlf = lf.replace('\n', "\r\n");
    for text in [lf.to_string(), crlf, lf.trim_end().to_string()] {
        let policy = parse_policy(text.as_bytes()).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.max_age, 604_800);
        let mx: Vec<&str> = policy.mx.iter().map(MxPattern::as_str).collect();
        assert_eq!(
            mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
    }
}

#[test]
fn unknown_keys_blank_lines_and_whitespace_are_tolerated() {
    let text =
        "version:STSv1\n\nfoo: bar\nmode:\ttesting \r\nmx:  MX.Example.COM.\nmax_age: 86400\n";
    let policy = parse_policy(text.as_bytes()).unwrap();
    assert_eq!(policy.mode, Mode::Testing);
    assert_eq!(policy.mx, vec![pattern("mx.example.com")]);
}

#[test]
fn first_value_of_a_repeated_key_wins() {
    let text =
        "version: STSv1\nmode: testing\nmode: enforce\nmx: a.example\nmax_age: 5\nmax_age: 9\n";
    let policy = parse_policy(text.as_bytes()).unwrap();
    assert_eq!((policy.mode, policy.max_age), (Mode::Testing, 5));
}

#[test]
fn max_age_is_capped_at_a_year() {
    let text = "version: STSv1\nmode: none\nmax_age: 9999999999\n";
    assert_eq!(
        parse_policy(text.as_bytes()).unwrap().max_age,
        MAX_AGE_LIMIT
    );
}

#[test]
fn mode_none_needs_no_mx() {
    let text = "version: STSv1\nmode: none\nmax_age: 86400\n";
    let policy = parse_policy(text.as_bytes()).unwrap();
    assert_eq!((policy.mode, policy.mx.len()), (Mode::None, 0));
}

#[test]
fn invalid_policies_are_refused() {
    for text in [
        "",
        "mode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n",
        "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\ngarbage\n",
        "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: com\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n",
    ] {
        assert!(
            matches!(parse_policy(text.as_bytes()), Err(MtaStsError::Policy(_))),
            "{text:?}"
        );
    }
    assert!(parse_policy(b"version: STSv1\xff\n").is_err());
}

#[test]
fn exact_patterns_match_ignoring_case_and_trailing_dots() {
    let p = pattern("mail.example.com");
    assert!(p.matches("mail.example.com"));
    assert!(p.matches("MAIL.Example.com."));
    assert!(!p.matches("mail.example.com.evil"));
    assert!(!p.matches("x.mail.example.com"));
    assert!(!p.matches("example.com"));
}

#[test]
fn wildcard_matches_exactly_one_leftmost_label() {
    let p = pattern("*.example.com");
    assert!(p.matches("mx1.example.com"));
    assert!(p.matches("MX1.EXAMPLE.COM."));
    assert!(!p.matches("example.com"));
    assert!(!p.matches(".example.com"));
    assert!(!p.matches("a.b.example.com"));
    assert!(!p.matches("mx1.example.org"));
    assert!(!p.matches("mx1example.com"));
}

#[test]
fn patterns_round_trip_through_json() {
    let policy =
        parse_policy(b"version: STSv1\nmode: enforce\nmx: *.a.example\nmax_age: 60\n").unwrap();
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(serde_json::from_str::<StsPolicy>(&json).unwrap(), policy);
    assert!(serde_json::from_str::<MxPattern>("\"not a pattern\"").is_err());
}
