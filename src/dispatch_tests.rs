use super::*;

/// A small inline message.
fn hi() -> MessageRef {
    MessageRef::Data {
        data: "Subject: x\n\nhi\n".into(),
    }
}

mod delay_tests {
    use super::*;

    #[test]
    fn delays_read_like_postfix() {
        for (ms, text) in [
            (0, "0"),
            (4, "0"),
            (30, "0.03"),
            (100, "0.1"),
            (1_500, "1.5"),
            (2_000, "2"),
            (9_999, "10"),
            (9_994, "9.99"),
            (1_005, "1.01"),
            (1_050, "1.05"),
            (10_000, "10"),
            (12_400, "12"),
            (123_600, "124"),
            (86_400_000, "86400"),
        ] {
            assert_eq!(
                seconds(Duration::from_millis(ms)).to_string(),
                text,
                "{ms} ms"
            );
        }
    }
}

mod follower_tests {
    use super::*;
    use crate::job::JobRecipient;

    /// [`super::follower`] of a job that must pass its check first.
    fn follower(job: &Job, message: &Message) -> Option<Follower> {
        let job = job.clone().into_checked().ok()?;
        let settings = crate::config::Config::default().settings();
        let plan = Plan::of(&job, &settings, &crate::nexthop::SystemServices);
        super::follower(&job, &plan, message)
    }

    fn job(sender: &str, rcpt: &str) -> Job {
        Job {
            nexthop: Some("[127.0.0.1]:2525".into()),
            ..Job::new("F1", sender, [JobRecipient::new(rcpt)], hi())
        }
    }

    #[test]
    fn only_clean_envelopes_ride_behind_another_job() {
        let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
        let good = follower(&job("a@x.test", "b@y.test"), &message).expect("a follower");
        assert_eq!(good.envelope.recipients.len(), 1);
        assert_eq!(good.key.as_str(), "[127.0.0.1]:2525");
        // Control characters would smuggle commands into the other session.
        assert!(
            follower(
                &job("a@x.test", "b@y.test>\r\nRCPT TO:<evil@z.test"),
                &message
            )
            .is_none()
        );
        assert!(follower(&job("a@x.test\r\nRSET", "b@y.test"), &message).is_none());
        // No explicit next hop, or a message not in memory: not chained.
        let mut no_nexthop = job("a@x.test", "b@y.test");
        no_nexthop.nexthop = None;
        assert!(follower(&no_nexthop, &message).is_none());
        let on_disk = Message::File("/nonexistent".into());
        assert!(follower(&job("a@x.test", "b@y.test"), &on_disk).is_none());
    }
}

mod domain_tests {
    use super::*;
    use crate::config::Config;
    use crate::job::JobRecipient;

    #[test]
    fn a_recipient_domain_never_chooses_a_port_or_a_list() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let addresses = [
            format!("u@[127.0.0.1]:{port}"),
            "nodomain".to_string(),
            format!("u@localhost:{port}"),
            format!("u@a.test,[127.0.0.1]:{port}"),
            format!("u@a.test [127.0.0.1]:{port}"),
            format!("u@[IPv6:::1]:{port}"),
        ];
        let job = Job::new(
            "D1",
            "a@x.test",
            addresses.iter().map(JobRecipient::new),
            hi(),
        );
        // Short limits: before the fix the session waited for a greeting.
        let mut config = Config::default();
        config.smtp.connect_timeout = Duration::from_secs(1);
        config.smtp.helo_timeout = Duration::from_secs(1);
        let deliverer =
            Deliverer::new(config).with_resolver(Box::new(crate::resolve::LiteralResolver));
        let result = execute(&deliverer, &job, false).expect("a result");
        let got: Vec<(&str, &str, &str)> = result
            .recipients
            .iter()
            .map(|r| (r.address.as_str(), r.status.as_str(), r.dsn.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (addresses[0].as_str(), "bounced", "5.1.3"),
                ("nodomain", "deferred", "4.3.5"),
                (addresses[2].as_str(), "bounced", "5.1.3"),
                (addresses[3].as_str(), "bounced", "5.1.3"),
                (addresses[4].as_str(), "bounced", "5.1.3"),
                (addresses[5].as_str(), "bounced", "5.1.3"),
            ]
        );
        assert_eq!(
            result.recipients[0].diagnostic,
            format!("bad address syntax: domain \"[127.0.0.1]:{port}\": garbage after \"]\"")
        );
        assert!(result.recipients.iter().all(|r| r.relay.is_none()));
        // Nobody connected to the port the domains named.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            listener.accept().map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
    }
}

mod reload_tests {
    use super::*;
    use crate::config::Config;
    use crate::job::JobRecipient;

    /// A job queued before a reload (SIGHUP) is delivered with the new
    /// configuration: its plan, made at submission with the old default
    /// port, is made again.
    #[test]
    fn a_plan_made_before_a_reload_is_remade_with_the_new_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("address").port();
        let job = Job {
            nexthop: Some("[127.0.0.1]".into()),
            ..Job::new("R1", "a@x.test", [JobRecipient::new("u@y.test")], hi())
        }
        .into_checked()
        .expect("a valid job");
        let mut before = Config::default();
        before.smtp.port = 9;
        let stale = Plan::of(&job, &before.settings(), &crate::nexthop::SystemServices);
        let mut after = Config::default();
        after.smtp.port = port;
        after.smtp.connect_timeout = Duration::from_secs(1);
        after.smtp.helo_timeout = Duration::from_secs(1);
        let deliverer =
            Deliverer::new(after).with_resolver(Box::new(crate::resolve::LiteralResolver));
        let message = Message::Inline(b"Subject: x\n\nhi\n".to_vec());
        let result = execute_with(
            &deliverer,
            &job,
            &stale,
            &message,
            false,
            Instant::now(),
            None,
        )
        .expect("a result");
        assert_eq!(result.recipients[0].status.as_str(), "deferred");
        // The delivery connected to the new port.
        assert!(listener.accept().is_ok());
    }
}
