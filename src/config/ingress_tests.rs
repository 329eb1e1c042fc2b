use super::*;
use crate::config::Config;

#[test]
fn entries_parse_with_defaults() {
    let config = Config::from_toml_str(
        "[[ingress]]\nlisten = \"unix:/run/mailhop/lmtp.sock\"\n\n[[ingress]]\nlisten = \"inet:127.0.0.1:2003\"\nnexthop = \"[smarthost.example]:587\"\ndeadline = \"60s\"\n",
    )
    .unwrap();
    let listeners = config.ingress_listeners();
    assert_eq!(listeners.len(), 2);
    assert_eq!(
        listeners[0].listen,
        IngressListen::Unix("/run/mailhop/lmtp.sock".into())
    );
    assert_eq!(listeners[0].nexthop, None);
    assert_eq!(listeners[0].transport, IngressTransport::Smtp);
    assert_eq!(listeners[0].deadline, DEFAULT_DEADLINE);
    assert_eq!(listeners[0].max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(
        listeners[1].nexthop.as_deref(),
        Some("[smarthost.example]:587")
    );
    assert_eq!(listeners[1].deadline, Duration::from_secs(60));
    assert_eq!(config.daemon.spool_directory, "/var/lib/mailhop/spool");
}

#[test]
fn bad_entries_name_the_key() {
    for (text, needle) in [
        ("listen = \"tcp:1.2.3.4:5\"", "expected \"unix:/path\""),
        ("listen = \"unix:relative.sock\"", "absolute"),
        ("listen = \"inet:192.0.2.1:2003\"", "not a loopback address"),
        ("listen = \"inet:127.0.0.1:0\"", "port 0"),
        (
            "listen = \"inet:127.0.0.1:2003\"\ntransport = \"uucp\"",
            "transport",
        ),
        (
            "listen = \"inet:127.0.0.1:2003\"\ntransport = \"lmtp\"",
            "needs a nexthop",
        ),
        (
            "listen = \"inet:127.0.0.1:2003\"\ndeadline = \"0s\"",
            "deadline",
        ),
    ] {
        let e = Config::from_toml_str(&format!("[[ingress]]\n{text}\n")).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("ingress"), "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
    let e = Config::from_toml_str("[[ingress]]\nnexthop = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("listen"), "{e}");
    let twice = "[[ingress]]\nlisten = \"inet:127.0.0.1:2003\"\n[[ingress]]\nlisten = \"inet:127.0.0.1:2003\"\n";
    let e = Config::from_toml_str(twice).unwrap_err();
    assert!(e.message.contains("another [[ingress]]"), "{e}");
    let remote = "[[ingress]]\nlisten = \"inet:192.0.2.1:2003\"\nallow_non_loopback = true\n";
    assert!(Config::from_toml_str(remote).is_ok());
    let e = Config::from_toml_str("[daemon]\nspool_directory = \"spool\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("daemon.spool_directory"));
}

#[test]
fn the_commented_entry_of_the_defaults_is_the_default_listener() {
    let text = Config::defaults_toml();
    let start = text.find("#[[ingress]]").unwrap();
    let entry: String = text[start..]
        .lines()
        .map(|line| line.trim_start_matches('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_toml_str(&entry).unwrap();
    let entry = &config.ingress[0];
    assert_eq!(entry.deadline, DEFAULT_DEADLINE);
    assert_eq!(entry.end_of_data_grace, DEFAULT_END_OF_DATA_GRACE);
    assert_eq!(entry.max_message_size, DEFAULT_MAX_MESSAGE_SIZE);
    assert_eq!(entry.transport, "smtp");
    assert!(!entry.allow_non_loopback);
}
