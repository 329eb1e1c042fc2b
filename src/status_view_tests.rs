use super::*;
use crate::stats::{CacheCounters, DoneCounters, IngressCounters, QueueCounters, WorkerCounters};

fn report(destinations: Vec<DestinationState>) -> StatusReport {
    StatusReport {
        command: "status".into(),
        accepted: 12,
        in_flight: 2,
        done: DoneCounters {
            jobs: 10,
            sent: 20,
            deferred: 1,
            bounced: 3,
        },
        errors: 1,
        workers: WorkerCounters { total: 4, busy: 1 },
        queue: QueueCounters {
            depth: 0,
            capacity: 16,
        },
        uptime: 3723,
        cache: CacheCounters {
            hits: 3,
            misses: 9,
            stored: 2,
            idle: 2,
            chained: 0,
        },
        paused: destinations
            .iter()
            .filter(|d| d.paused_for.is_some())
            .count() as u64,
        destinations,
        ingress: None,
        tls: None,
    }
}

#[test]
fn the_summary_has_every_counter() {
    let text = render(&report(Vec::new()));
    assert_eq!(
        text,
        "mailhop daemon: up 1h 02m 03s; workers 1 of 4 busy; queue 0 of 16\n\
         jobs: 12 accepted, 2 in flight, 10 answered, 1 errors; recipients: 20 sent, 1 deferred, 3 bounced\n\
         cache: 3 hits, 9 misses, 2 stored, 0 chained, 2 idle\n\
         destinations: none known (0 paused)\n"
    );
}

#[test]
fn the_ingress_line_shows_when_its_listeners_run() {
    let mut with = report(Vec::new());
    with.ingress = Some(IngressCounters {
        connections: 3,
        messages: 40,
        replied_2xx: 50,
        replied_4xx: 6,
        replied_5xx: 2,
        cancelled: 1,
    });
    let text = render(&with);
    assert!(
        text.contains(
            "ingress: 3 LMTP connections, 40 messages; replies 50 2xx, 6 4xx, 2 5xx; 1 jobs cancelled\n"
        ),
        "{text}"
    );
    let json = serde_json::to_string(&with).unwrap();
    assert!(
        json.contains(r#""ingress":{"connections":3,"messages":40"#),
        "{json}"
    );
    let without = serde_json::to_string(&report(Vec::new())).unwrap();
    assert!(!without.contains("ingress"), "{without}");
}

#[test]
fn the_table_has_one_aligned_row_per_destination() {
    let fast = DestinationState {
        name: "example.com".into(),
        transport: "smtp".into(),
        active: 3,
        window: 5,
        limit: 20,
        waiting: 0,
        rate: Some("200/s".into()),
        ..DestinationState::default()
    };
    let throttled = DestinationState {
        name: "[127.0.0.1]:2525".into(),
        transport: "smtp".into(),
        active: 0,
        window: 1,
        limit: 0,
        waiting: 12,
        paused_for: Some(8.25),
        last_throttle: Some("421 4.7.0 Try again later".into()),
        throttled: 2,
        ..DestinationState::default()
    };
    let dead = DestinationState {
        name: "dead.test".into(),
        transport: "lmtp".into(),
        window: 5,
        limit: 20,
        paused_for: Some(250.0),
        dead: true,
        ..DestinationState::default()
    };
    let text = render(&report(vec![fast, throttled, dead]));
    let expected = "\
destinations: 3 known, 2 paused

DESTINATION       TRANSPORT  ACTIVE/WINDOW/LIMIT  WAITING  RATE   PAUSED FOR    LAST THROTTLE
example.com       smtp       3/5/20               0        200/s  -             -
[127.0.0.1]:2525  smtp       0/1/-                12       -      8.2s          421 4.7.0 Try again later
dead.test         lmtp       0/5/20               0        -      dead, 4m 10s  -
";
    assert!(text.ends_with(expected), "{text}");
}

#[test]
fn outside_text_is_made_printable_and_cut_to_its_column() {
    let hostile = DestinationState {
        name: format!("evil\x1b[2J{}", "x".repeat(100)),
        transport: "smtp".into(),
        last_throttle: Some(format!("421 \x1b]0;owned\x07 {}", "y".repeat(100))),
        paused_for: Some(f64::NAN),
        ..DestinationState::default()
    };
    let text = table(&[hostile]);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    let row = text.lines().nth(1).unwrap();
    assert!(row.starts_with("evil?[2Jxxx"), "{row}");
    let name = row.split_whitespace().next().unwrap();
    assert_eq!(name.chars().count(), NAME_MAX, "{name}");
    assert!(name.ends_with('~'), "{name}");
    let reply = row.split("421 ").nth(1).unwrap();
    assert_eq!(reply.chars().count() + 4, REPLY_MAX, "{row}");
    assert!(row.contains("  -  "), "a NaN pause shows as -: {row}");
}

#[test]
fn uptime_and_pauses_read_naturally() {
    assert_eq!(uptime(42), "42s");
    assert_eq!(uptime(125), "2m 05s");
    assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 5 * 60), "3d 4h 05m");
    assert_eq!(seconds(0.04), "0.0s");
    assert_eq!(seconds(59.94), "59.9s");
    assert_eq!(seconds(61.0), "1m 01s");
    assert_eq!(seconds(-1.0), "-");
    assert_eq!(seconds(f64::INFINITY), "-");
}
