use super::*;

fn line(late: bool) -> Line<'static> {
    Line {
        service: Service::Smtp,
        id: "J1",
        address: "a@y.test",
        relay: Some("h[127.0.0.1]:25"),
        delay: Duration::from_millis(1500),
        delays: [
            Duration::ZERO,
            Duration::from_millis(100),
            Duration::ZERO,
            Duration::from_secs(2),
        ],
        dsn: StatusCode::new(2, 0, 0),
        status: Status::Sent,
        diagnostic: "250 2.0.0 Ok",
        tls: None,
        tls_policy: None,
        source: None,
        late,
    }
}

#[test]
fn every_json_line_has_one_shape_and_late_results_no_status() {
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let (now, late) = (json_object(&line(false)), json_object(&line(true)));
    assert_eq!(keys(&now), keys(&late));
    assert_eq!(keys(&now).len(), 12);
    assert_eq!(
        (&now["status"], &now["late_status"]),
        (&"sent".into(), &serde_json::Value::Null)
    );
    assert_eq!(
        (&late["status"], &late["late_status"]),
        (&serde_json::Value::Null, &"sent".into())
    );
}

#[test]
fn text_lines_read_like_postfix() {
    assert_eq!(
        text(&line(false)),
        "J1: to=<a@y.test>, relay=h[127.0.0.1]:25, delay=1.5, delays=0/0.1/0/2, dsn=2.0.0, status=sent (250 2.0.0 Ok)"
    );
    assert_eq!(
        text(&line(true)),
        "J1: to=<a@y.test>, relay=h[127.0.0.1]:25, dsn=2.0.0, late result (information only; the job was already answered): sent (250 2.0.0 Ok)"
    );
}
