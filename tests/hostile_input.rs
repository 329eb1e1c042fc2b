//! Hostile input from a job or a server (issue 12): recipient domains that
//! try to choose the destination, control characters on their way to the
//! logs, and servers that trickle bytes to hold a worker.
//!
//! Every server here is a one-connection scripted server on loopback with
//! read timeouts, joined by its test; every `mailhop` run is time-bounded.

mod common;

use std::ffi::OsString;

use common::daemon::Daemon;
use common::{Tripwire, Workdir, run_mailhop};

/// `mailhop send --direct` without a next hop: each recipient's domain is
/// the destination.
fn send_without_nexthop(work: &Workdir, config: &str, to: &[&str]) -> common::Run {
    let config = work.file("mailhop.toml", config.as_bytes());
    let message = work.file("message", common::SMALL_MESSAGE);
    let mut args: Vec<OsString> = vec![
        "send".into(),
        "--config".into(),
        config.into(),
        "--direct".into(),
        "--from".into(),
        "a@x.test".into(),
    ];
    for rcpt in to {
        args.push("--to".into());
        args.push((*rcpt).into());
    }
    args.push(message.into());
    run_mailhop(work, &args, None)
}

#[test]
fn recipient_domain_with_a_port_is_bounced_and_never_connected_to() {
    let tripwire = Tripwire::new();
    let port = tripwire.port;
    let work = Workdir::new();
    let literal = format!("u@[127.0.0.1]:{port}");
    let list = format!("u@a.test,[127.0.0.1]:{port}");
    let run = send_without_nexthop(
        &work,
        "[smtp]\nconnect_timeout = \"2s\"\nhelo_timeout = \"2s\"\n",
        &[&literal, &list],
    );
    assert_eq!(run.code, 69, "{run:#?}");
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run:#?}");
    for line in &lines {
        assert_eq!(
            (line.status.as_str(), line.dsn.as_str(), line.relay.as_str()),
            ("bounced", "5.1.3", "none"),
            "{run:#?}"
        );
        assert!(line.diagnostic.starts_with("bad address syntax: domain \""));
    }
    tripwire.assert_untouched("mailhop connected to the port a recipient domain named");
}

/// The log (standard error) of a run has no raw control character: every
/// line ends at its own newline.
fn assert_printable_log(run: &common::Run, expect: &str) {
    assert!(
        run.stderr.contains(expect),
        "{expect:?} not logged: {run:#?}"
    );
    for line in run.stderr.split_terminator('\n') {
        assert!(
            !line.contains(char::is_control),
            "raw control character in log line {line:?}"
        );
    }
}

fn config_with_log_format(format: &str) -> String {
    format!(
        "[smtp]\nconnect_timeout = \"5s\"\nhelo_timeout = \"5s\"\nmail_timeout = \"5s\"\n\
         rcpt_timeout = \"5s\"\ndata_init_timeout = \"5s\"\ndata_xfer_timeout = \"5s\"\n\
         data_done_timeout = \"5s\"\n\n[lmtp]\nconnect_timeout = \"5s\"\n\n\
         [log]\nformat = \"{format}\"\n"
    )
}

#[test]
fn control_characters_never_reach_the_logs_raw() {
    for format in ["text", "json"] {
        let config = config_with_log_format(format);
        // A next hop with CR/LF is refused as an invalid job (exit 65)
        // before anything is delivered or logged.
        let run = common::Delivery::to("unix:/tmp/mailhop-none\r\nforged: status=sent")
            .lmtp()
            .rcpt("b@y.test")
            .raw_config(&config)
            .run();
        assert_eq!(run.code, 65, "{run:#?}");
        assert!(
            run.stderr
                .contains("invalid job: nexthop contains a control character"),
            "{run:#?}"
        );
        assert!(!run.stderr.contains("\r\nforged"), "{run:#?}");
        // Control characters in a recipient and in a server's reply.
        let server = common::smtp_server(common::Behaviour {
            rcpt: vec!["550 5.1.1 \x1b[31mno\x7f such\x0b user\x07".into()],
            ..common::Behaviour::default()
        });
        let run = common::Delivery::to(&server.nexthop())
            .rcpts(&["c@y.test", "d@y.test\r\nforged@z.test", "e\x1b@y.test"])
            .raw_config(&config)
            .run();
        assert_eq!(run.code, 69, "{run:#?}");
        drop(server);
        assert_printable_log(&run, "5.1.1");
        // Control characters in the sender.
        let closed = common::ClosedPort::new();
        let run = common::Delivery::to(&closed.nexthop())
            .from("a\r\n@x.test")
            .rcpt("b@y.test")
            .raw_config(&config)
            .run();
        assert_eq!(run.code, 69, "{run:#?}");
        assert_printable_log(&run, "5.1.7");
    }
}

/// A server that answers MAIL FROM one byte every 300 ms (about 4 s for
/// the whole reply) and is otherwise ordinary (no PIPELINING).
fn trickling_server() -> common::Server<()> {
    common::Server::start(|peer| {
        peer.reply("220 scripted.test ESMTP");
        for _ in 0..100 {
            let Ok(line) = peer.read_line() else {
                return;
            };
            match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "EHLO" => peer.reply("250 scripted.test"),
                "MAIL" => {
                    for byte in b"250 2.1.0 Ok\r\n" {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        peer.send(&[*byte]);
                    }
                }
                "RCPT" => peer.reply("250 2.1.5 Ok"),
                "DATA" => {
                    peer.reply("354 go ahead");
                    for _ in 0..1000 {
                        match peer.read_line() {
                            Ok(line) if line == "." => break,
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                    peer.reply("250 2.0.0 Ok: queued");
                }
                "QUIT" => {
                    peer.reply("221 2.0.0 Bye");
                    return;
                }
                _ => peer.reply("502 5.5.2 Error: command not recognized"),
            }
        }
    })
}

#[test]
fn per_request_deadline_ends_a_trickled_reply_at_the_command_timeout() {
    let server = trickling_server();
    let run = common::Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .smtp_setting("mail_timeout", "\"1s\"")
        .run();
    drop(server);
    let lines = run.lines();
    assert_eq!(run.code, 75, "{run:#?}");
    assert_eq!(
        (lines[0].status.as_str(), lines[0].dsn.as_str()),
        ("deferred", "4.4.2"),
        "{run:#?}"
    );
    assert!(
        lines[0]
            .diagnostic
            .ends_with("timed out while sending MAIL FROM"),
        "{run:#?}"
    );
    assert!(
        run.elapsed < std::time::Duration::from_millis(3000),
        "{run:#?}"
    );
}

#[test]
fn without_per_request_deadline_a_trickled_reply_is_read_to_its_end() {
    let server = trickling_server();
    let run = common::Delivery::to(&server.nexthop())
        .rcpt("b@y.test")
        .smtp_setting("mail_timeout", "\"1s\"")
        .smtp_setting("per_request_deadline", "false")
        .run();
    drop(server);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.lines()[0].status, "sent", "{run:#?}");
    assert!(
        run.elapsed > std::time::Duration::from_millis(3500),
        "{run:#?}"
    );
}

/// A `mailhop daemon` (the harness's guard) on a socket in its own 0777
/// directory (a daemon started as root may run as another user), stderr in
/// a file; killed and reaped on drop.
fn start_daemon(log_format: &str) -> Daemon {
    let work = Workdir::with_prefix("mailhop-hi-");
    let text = format!(
        "{}\n[daemon]\nsocket = {:?}\nworkers = 2\nqueue_capacity = 8\n",
        config_with_log_format(log_format),
        work.path().join("m.sock").display().to_string()
    );
    Daemon::start_text(&work, &text, std::time::Duration::from_secs(20)).owning(work)
}

#[test]
fn daemon_refuses_hostile_domains_and_logs_no_control_characters() {
    let tripwire = Tripwire::new();
    let port = tripwire.port;
    let data = serde_json::json!({"data": "Subject: x\n\nhi\n"});
    for format in ["text", "json"] {
        let daemon = start_daemon(format);
        let answers = daemon.submit(&[
            // No next hop: the domains would choose the port.
            serde_json::json!({"id": "P1", "sender": "a@x.test", "message": data,
                "recipients": [{"address": format!("u@[127.0.0.1]:{port}")},
                               {"address": format!("v@a.test,[127.0.0.1]:{port}")}]}),
            // Control characters in every field a log line shows.
            serde_json::json!({"id": "C1", "transport": "lmtp", "sender": "a@x.test",
                "nexthop": "unix:/tmp/mailhop-none\r\nforged: status=sent",
                "message": data, "recipients": [{"address": "b@y.test"}]}),
            serde_json::json!({"id": "C2", "sender": "a\r\n@x.test", "message": data,
                "nexthop": "[127.0.0.1]:9", "recipients": [{"address": "b@y.test\r\nx"}]}),
            serde_json::json!({"id": "C3\r\nforged", "sender": "a@x.test", "message": data,
                "nexthop": "[127.0.0.1]:9", "recipients": [{"address": "b@y.test"}]}),
        ]);
        for (answer, want) in [
            (&answers[0]["recipients"][0], "5.1.3"),
            (&answers[0]["recipients"][1], "5.1.3"),
            (&answers[2]["recipients"][0], "5.1.7"),
        ] {
            assert_eq!(answer["dsn"], want, "{answers:#?}");
        }
        // A next hop with CR/LF is no job at all.
        assert_eq!(
            answers[1]["error"], "invalid job: nexthop contains a control character",
            "{answers:#?}"
        );
        assert!(answers[3]["error"].is_string(), "{answers:#?}");
        // The delivery lines are written when each job ends.
        let started = std::time::Instant::now();
        while !daemon.log().contains("C2") && started.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let log = daemon.log();
        assert!(log.contains("P1") && log.contains("C2"), "{log}");
        for line in log.split_terminator('\n') {
            assert!(
                !line.contains(char::is_control),
                "raw control character in {line:?}"
            );
        }
    }
    tripwire.assert_untouched("the daemon connected to the port a recipient domain named");
}
