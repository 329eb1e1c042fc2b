use super::*;
use crate::config::Config;

#[test]
fn listen_takes_off_an_address_or_a_unix_path() {
    assert_eq!(parse_metrics_listen(""), Ok(MetricsListen::Off));
    assert_eq!(
        parse_metrics_listen("127.0.0.1:9325"),
        Ok(MetricsListen::Tcp("127.0.0.1:9325".parse().unwrap()))
    );
    assert_eq!(
        parse_metrics_listen("[::1]:9325"),
        Ok(MetricsListen::Tcp("[::1]:9325".parse().unwrap()))
    );
    assert_eq!(
        parse_metrics_listen("unix:/run/mailhop/metrics.sock"),
        Ok(MetricsListen::Unix("/run/mailhop/metrics.sock".into()))
    );
    for bad in [
        "localhost:9325",
        "127.0.0.1",
        "9325",
        "unix:relative.sock",
        "unix:",
        "http://127.0.0.1:9325",
    ] {
        assert!(parse_metrics_listen(bad).is_err(), "{bad}");
    }
    let long = format!("unix:/{}", "a".repeat(107));
    assert!(parse_metrics_listen(&long).is_err());
}

#[test]
fn the_metrics_table_defaults_off_and_checks_its_keys() {
    let config = Config::default();
    assert_eq!(config.metrics.listen, "");
    assert_eq!(config.metrics.listen_addr(), MetricsListen::Off);
    assert_eq!(config.metrics.destination_label_limit, 20);
    let config = Config::from_toml_str(
        "[metrics]\nlisten = \"127.0.0.1:9325\"\ndestination_label_limit = 0\n",
    )
    .unwrap();
    assert_eq!(
        config.metrics.listen_addr(),
        MetricsListen::Tcp("127.0.0.1:9325".parse().unwrap())
    );
    let e = Config::from_toml_str("[metrics]\nlisten = \"localhost:9325\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("metrics.listen"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    let e = Config::from_toml_str("[metrics]\ndestination_label_limit = 1001\n").unwrap_err();
    assert_eq!(
        e.key.as_deref(),
        Some("metrics.destination_label_limit"),
        "{e}"
    );
    assert!(Config::from_toml_str("[metrics]\nport = 1\n").is_err());
}
