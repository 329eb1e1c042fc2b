use super::*;

#[test]
fn feedback_forms() {
    assert_eq!(parse_feedback("1/concurrency"), Ok(Feedback::PerWindow));
    assert_eq!(parse_feedback(" 1 / concurrency "), Ok(Feedback::PerWindow));
    assert_eq!(
        parse_feedback("1/sqrt_concurrency"),
        Ok(Feedback::PerSqrtWindow)
    );
    assert_eq!(parse_feedback("0.25"), Ok(Feedback::Fixed(0.25)));
    assert_eq!(parse_feedback("1/8"), Ok(Feedback::Fixed(0.125)));
    assert!(parse_feedback("2").is_err());
    assert!(parse_feedback("1/0").is_err());
    assert!(parse_feedback("fast").is_err());
    assert!((Feedback::PerWindow.value(4.0) - 0.25).abs() < 1e-9);
    assert!((Feedback::PerSqrtWindow.value(4.0) - 0.5).abs() < 1e-9);
}

#[test]
fn rate_forms() {
    let per_second = Rate {
        count: 200,
        per: Duration::from_secs(1),
    };
    assert_eq!(parse_rate("200/s"), Ok(Some(per_second)));
    assert_eq!(parse_rate(" 200 / sec "), Ok(Some(per_second)));
    assert_eq!(per_second.interval(), Duration::from_millis(5));
    assert_eq!(per_second.to_string(), "200/s");
    assert_eq!(
        parse_rate("3000/min").map(|r| r.map(|r| r.interval())),
        Ok(Some(Duration::from_millis(20)))
    );
    assert_eq!(parse_rate(""), Ok(None));
    for bad in ["0/s", "200", "200/d", "-1/s", "x/s"] {
        assert!(parse_rate(bad).is_err(), "{bad}");
    }
}

#[test]
fn throttle_rules_need_a_part_and_a_4xx_code() {
    let entry = |code: &str, dsn: &str, text: &str| ThrottleRuleEntry {
        reply_code: code.into(),
        dsn: dsn.into(),
        text: text.into(),
    };
    assert!(ThrottleRule::of(&entry("421", "", "")).is_ok());
    assert!(ThrottleRule::of(&entry("", "4.7.", "")).is_ok());
    assert_eq!(
        ThrottleRule::of(&entry("", "", "Slow Down")).map(|r| r.text),
        Ok("slow down".to_string())
    );
    assert!(ThrottleRule::of(&entry("", "", "")).is_err());
    assert!(ThrottleRule::of(&entry("550", "", "")).is_err());
    assert!(ThrottleRule::of(&entry("", "5.7.1", "")).is_err());
}

#[test]
fn destination_patterns() {
    let shape = |pattern: &str| DestinationShape {
        pattern: pattern.into(),
        concurrency_limit: None,
        initial_concurrency: None,
        rate: None,
        rate_delay: None,
    };
    assert!(shape("example.com").matches("example.com"));
    assert!(!shape("example.com").matches("a.example.com"));
    assert!(shape(".example.com").matches("a.example.com"));
    assert!(!shape(".example.com").matches("example.com"));
    assert!(!shape(".example.com").matches("badexample.com"));
    assert!(shape("*").matches("[127.0.0.1]:25"));
}

#[test]
fn defaults_are_postfix_defaults() {
    let settings = ShapingSettings::default();
    assert!(settings.enabled);
    assert_eq!(settings.concurrency_limit, 20);
    assert_eq!(settings.initial_concurrency, 5);
    assert_eq!(settings.positive_feedback, Feedback::PerWindow);
    assert_eq!(settings.failed_cohort_limit, 1);
    assert_eq!(settings.dead_time, Duration::from_secs(300));
    assert_eq!(settings.rate_delay, Duration::ZERO);
    assert_eq!(settings.rate, None);
    assert!(!settings.throttle_rules.is_empty());
}

#[test]
fn a_bad_value_is_a_config_error_naming_the_key() {
    let err = crate::config::Config::from_toml_str("[shaping]\ndestination_rate = \"fast\"\n")
        .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("shaping.destination_rate"));
    let err =
        crate::config::Config::from_toml_str("[[shaping.throttle_rule]]\nreply_code = \"550\"\n")
            .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("shaping.throttle_rule"));
    let ok = crate::config::Config::from_toml_str(
        "[[shaping.destination]]\npattern = \".yahoo.com\"\nconcurrency_limit = 4\nrate = \"10/s\"\nrate_delay = \"1s\"\n",
    )
    .unwrap();
    let shapes = &ok.settings().shaping.destinations;
    assert_eq!(shapes.len(), 1);
    assert_eq!(shapes[0].rate_delay, Some(Duration::from_secs(1)));
}
