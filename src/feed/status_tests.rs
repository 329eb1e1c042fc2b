use redis::Value;

use super::*;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn a_field_of_an_xinfo_reply_is_found_by_name() {
    let pairs = vec![
        bulk("name"),
        bulk("mailhop"),
        bulk("lag"),
        Value::Int(7),
        bulk("pending"),
        Value::Nil,
    ];
    assert_eq!(show(field(&pairs, "name")), "mailhop");
    assert_eq!(show(field(&pairs, "lag")), "7");
    assert_eq!(show(field(&pairs, "pending")), "-");
    assert_eq!(show(field(&pairs, "missing")), "-");
    let map = Value::Map(vec![(bulk("lag"), Value::Int(3))]);
    assert_eq!(show(field(&map_items(&map), "lag")), "3");
}

#[test]
fn group_lines_name_only_the_configured_group_in_both_forms() {
    let resp2 = Value::Array(vec![
        Value::Array(vec![
            bulk("name"),
            bulk("other"),
            bulk("lag"),
            Value::Int(9),
        ]),
        Value::Array(vec![
            bulk("name"),
            bulk("mailhop"),
            bulk("lag"),
            Value::Int(0),
            bulk("pending"),
            Value::Int(3),
            bulk("last-delivered-id"),
            bulk("5-0"),
        ]),
    ]);
    assert_eq!(
        group_lines(&resp2, "mailhop"),
        "  group mailhop: lag 0, pending 3, last delivered 5-0\n"
    );
    let resp3 = Value::Array(vec![Value::Map(vec![
        (bulk("name"), bulk("mailhop")),
        (bulk("lag"), Value::Nil),
    ])]);
    assert_eq!(
        group_lines(&resp3, "mailhop"),
        "  group mailhop: lag -, pending -, last delivered -\n"
    );
    assert_eq!(group_lines(&Value::Int(1), "mailhop"), "");
}

#[test]
fn consumer_lines_read_the_xpending_summary() {
    let summary = Value::Array(vec![
        Value::Int(3),
        bulk("1-0"),
        bulk("3-0"),
        Value::Array(vec![
            Value::Array(vec![bulk("node-a"), bulk("2")]),
            Value::Array(vec![bulk("odd")]),
            Value::Array(vec![bulk("node-b"), bulk("1")]),
        ]),
    ]);
    assert_eq!(
        consumer_lines(&summary),
        "  consumer node-a: pending 2\n  consumer node-b: pending 1\n"
    );
    let none = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
    assert_eq!(consumer_lines(&none), "");
}

#[test]
fn names_from_redis_have_their_control_characters_escaped() {
    // Found by the feed_replies fuzz target: a consumer name with a
    // control character went raw to the terminal.
    assert_eq!(
        show(Some(&bulk("node-\u{1a}\n\u{1b}[31m"))),
        "node-\\u{1a}\\n\\u{1b}[31m"
    );
    assert_eq!(show(Some(&Value::SimpleString("a\tb".into()))), "a\\tb");
    // And one inside a value shown by its Debug form (a server error).
    let error = redis::parse_redis_value(b"-1\r0-0\r\n").unwrap();
    assert!(!show(Some(&error)).chars().any(char::is_control));
    assert_eq!(printable("node-é"), "node-é");
}

#[test]
fn results_streams_follow_the_stream_template() {
    let mut config = FeedConfig {
        streams: vec!["{s0}:jobs".into(), "{s1}:jobs".into()],
        results_stream: "$stream:results".into(),
        ..FeedConfig::default()
    };
    assert_eq!(
        results_streams(&config),
        vec![
            "{s0}:jobs:results".to_string(),
            "{s1}:jobs:results".to_string()
        ]
    );
    config.results_stream = "mailhop:results".into();
    assert_eq!(
        results_streams(&config),
        vec!["mailhop:results".to_string()]
    );
    config.streams.clear();
    assert_eq!(
        results_streams(&config),
        vec!["mailhop:results".to_string()]
    );
}
