use super::*;
use std::net::TcpListener;

#[test]
fn refused_connect_reports_postfix_text() {
    // Bind then drop a listener to get a port with nothing behind it.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let options = ConnectOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let err = connect_tcp(addr, &options, "127.0.0.1[127.0.0.1]").expect_err("refused");
    assert_eq!(err.code.to_string(), "4.4.1");
    assert_eq!(
        err.text,
        format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused")
    );
}

#[test]
fn connects_and_binds_source() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let options = ConnectOptions {
        timeout: Duration::from_secs(2),
        bind_address: Some(Ipv4Addr::new(127, 0, 0, 2)),
        ..Default::default()
    };
    let stream = connect_tcp(addr, &options, "x").expect("connect");
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    drop(stream);
}

#[test]
fn bind_failure_is_fatal_only_when_enforced() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    // 192.0.2.1 (TEST-NET-1) is not ours: bind fails with EADDRNOTAVAIL.
    let mut options = ConnectOptions {
        timeout: Duration::from_secs(2),
        bind_address: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..Default::default()
    };
    assert!(connect_tcp(addr, &options, "x").is_ok());
    options.bind_address_enforce = true;
    let err = connect_tcp(addr, &options, "x").expect_err("enforced");
    assert_eq!(err.to_string(), "4.4.0 server configuration error");
}

#[test]
fn implicit_source_failure_is_only_a_warning() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = listener.local_addr().expect("addr");
    let options = ConnectOptions {
        timeout: Duration::from_secs(2),
        bind_address_enforce: true,
        implicit_source: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..Default::default()
    };
    assert!(connect_tcp(addr, &options, "x").is_ok());
    let _first = listener.accept().expect("accept");
    let options = ConnectOptions {
        timeout: Duration::from_secs(2),
        implicit_source: Some(Ipv4Addr::new(127, 0, 0, 3)),
        ..Default::default()
    };
    let _stream = connect_tcp(addr, &options, "x").expect("connect");
    let (_, peer) = listener.accept().expect("accept");
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
}

#[test]
fn unix_path_too_long_is_a_configuration_error() {
    let path = PathBuf::from(format!("/tmp/{}", "x".repeat(200)));
    let err = connect_unix(&path, Duration::ZERO, "h[/p]").expect_err("too long");
    assert_eq!(err.code.to_string(), "4.3.5");
}

#[test]
fn unix_connect_failure_is_4_4_1() {
    let err = connect_unix(
        Path::new("/nonexistent/mailhop.sock"),
        Duration::ZERO,
        "h[/nonexistent/mailhop.sock]",
    )
    .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "4.4.1 connect to h[/nonexistent/mailhop.sock]: No such file or directory"
    );
}
