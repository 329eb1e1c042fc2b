use super::*;
use std::time::Duration;

#[test]
fn syslog_timestamps() {
    assert_eq!(syslog_time(UNIX_EPOCH), "Jan  1 00:00:00");
    // 2026-11-23 13:20:01 UTC
    let t = UNIX_EPOCH + Duration::from_secs(1795440001);
    assert_eq!(syslog_time(t), "Nov 23 13:20:01");
    // 2024-02-29 23:59:59 UTC (leap day)
    let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
    assert_eq!(syslog_time(t), "Feb 29 23:59:59");
}

fn logged(format: std::fmt::Arguments<'_>, target: &str) -> String {
    let logger = LineLogger {
        filter: env_logger::Builder::new().build(),
        max_level: log::LevelFilter::Info,
        pid: 42,
        journal: None,
        host: Some("host".into()),
    };
    let mut line = String::new();
    logger.write_line(
        &mut line,
        &log::Record::builder()
            .args(format)
            .target(target)
            .level(log::Level::Info)
            .build(),
    );
    line
}

#[test]
fn log_lines_carry_no_control_characters() {
    let hostile = "J\r\n1: to=<x@y>\x1b[31m\x7f\u{85}\t\0";
    for target in ["mailhop/smtp", "mailhop"] {
        let line = logged(format_args!("{hostile}: from=<{hostile}>"), target);
        let (text, end) = line.split_at(line.len() - 1);
        assert_eq!(end, "\n");
        assert!(!text.contains(char::is_control), "{line:?}");
        assert!(text.ends_with("J??1: to=<x@y>?[31m????: from=<J??1: to=<x@y>?[31m????>"));
    }
    // JSON lines: serde escapes C0, the logger the rest; still JSON.
    let json = serde_json::json!({"to": hostile}).to_string();
    let line = logged(format_args!("{json}"), "mailhop/smtp");
    assert!(!line.trim_end_matches('\n').contains(char::is_control));
    let (_, object) = line.split_once("]: ").expect("prefix");
    let value: serde_json::Value = serde_json::from_str(object).expect("still JSON");
    assert_eq!(value["to"], "J\r\n1: to=<x@y>\u{1b}[31m??\t\0");
    // Plain text passes unchanged (no copy).
    assert!(logged(format_args!("{}", "ok: é"), "mailhop").ends_with("ok: é\n"));
}
