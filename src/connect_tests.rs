use super::*;
use std::net::TcpListener;
use std::time::Instant;

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

/// A listener that drops SYNs: its accept queue (backlog 0) is filled
/// with connections nobody accepts. The sockets live as long as the value.
struct Blackhole {
    addr: SocketAddr,
    _sockets: Vec<Socket>,
}

fn blackhole(ip: &str) -> Blackhole {
    let ip: IpAddr = ip.parse().unwrap();
    let listener = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        Type::STREAM,
        None,
    )
    .unwrap();
    listener
        .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut sockets = vec![listener];
    for _ in 0..16 {
        let filler = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        if filler
            .connect_timeout(&SockAddr::from(addr), Duration::from_millis(200))
            .is_err()
        {
            return Blackhole {
                addr,
                _sockets: sockets,
            };
        }
        sockets.push(filler);
    }
    panic!("{addr}: the accept queue never filled up");
}

fn race_of(targets: &[(Endpoint, &str)], timeout: Duration, delay: Duration) -> Race {
    let targets: Vec<RaceTarget<'_>> = targets
        .iter()
        .map(|(endpoint, display)| RaceTarget { endpoint, display })
        .collect();
    let options = ConnectOptions {
        timeout,
        ..Default::default()
    };
    SocketConnector.race(&targets, &options, delay)
}

#[test]
fn race_takes_the_second_address_while_the_first_is_pending() {
    let hole = blackhole("::1");
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let targets = [
        (Endpoint::Inet(hole.addr), "h[::1]"),
        (Endpoint::Inet(live.local_addr().unwrap()), "h[127.0.0.1]"),
    ];
    let started = Instant::now();
    let race = race_of(&targets, Duration::from_secs(5), Duration::from_millis(250));
    let elapsed = started.elapsed();
    assert_eq!(race.winner.as_ref().map(|w| w.0), Some(1));
    assert_eq!(race.started, 2);
    assert_eq!(race.abandoned(), vec![0]);
    assert_eq!(race.attempts.len(), 1);
    assert!(
        elapsed >= Duration::from_millis(240) && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    // The winner is a usable blocking stream.
    let (_, mut stream) = race.winner.unwrap();
    let (mut peer, _) = live.accept().unwrap();
    stream.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
}

#[test]
fn race_starts_the_next_address_at_once_after_a_refusal() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let targets = [
        (Endpoint::Inet(closed), "h[127.0.0.1]"),
        (Endpoint::Inet(live.local_addr().unwrap()), "h[127.0.0.1]"),
    ];
    let started = Instant::now();
    let race = race_of(&targets, Duration::from_secs(5), Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(race.winner.as_ref().map(|w| w.0), Some(1));
    let [refused, won] = race.attempts.as_slice() else {
        panic!("{:?}", race.attempts);
    };
    assert_eq!(refused.index, 0);
    let failure = refused.result.as_ref().unwrap_err();
    assert!(failure.address_fault);
    assert_eq!(
        failure.dsn.text,
        format!(
            "connect to h[127.0.0.1]:{}: Connection refused",
            closed.port()
        )
    );
    assert_eq!((won.index, won.result.is_ok()), (1, true));
    assert!(race.abandoned().is_empty());
}

#[test]
fn race_without_a_winner_times_out_every_attempt() {
    let holes = [blackhole("::1"), blackhole("127.0.0.1")];
    let targets = [
        (Endpoint::Inet(holes[0].addr), "h[::1]"),
        (Endpoint::Inet(holes[1].addr), "h[127.0.0.1]"),
    ];
    let started = Instant::now();
    let race = race_of(
        &targets,
        Duration::from_millis(500),
        Duration::from_millis(100),
    );
    let elapsed = started.elapsed();
    assert!(race.winner.is_none());
    assert!(
        elapsed >= Duration::from_millis(590) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    let ended: Vec<(usize, String, bool)> = race
        .attempts
        .iter()
        .map(|a| {
            let f = a.result.as_ref().unwrap_err();
            (a.index, f.dsn.text.clone(), f.address_fault)
        })
        .collect();
    assert_eq!(
        ended,
        vec![
            (
                0,
                format!(
                    "connect to h[::1]:{}: Connection timed out",
                    holes[0].addr.port()
                ),
                true
            ),
            (
                1,
                format!(
                    "connect to h[127.0.0.1]:{}: Connection timed out",
                    holes[1].addr.port()
                ),
                true
            ),
        ]
    );
}

#[test]
fn race_with_a_quick_first_address_starts_no_other() {
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = blackhole("::1");
    let targets = [
        (Endpoint::Inet(live.local_addr().unwrap()), "h[127.0.0.1]"),
        (Endpoint::Inet(hole.addr), "h[::1]"),
    ];
    let race = race_of(&targets, Duration::from_secs(5), Duration::from_millis(250));
    assert_eq!(race.winner.as_ref().map(|w| w.0), Some(0));
    assert_eq!(race.started, 1);
}

#[test]
fn a_bind_failure_is_not_the_address_s_fault() {
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let options = ConnectOptions {
        timeout: Duration::from_secs(2),
        bind_address: Some(Ipv4Addr::new(192, 0, 2, 1)),
        bind_address_enforce: true,
        ..Default::default()
    };
    let failure = SocketConnector
        .connect_attempt(&Endpoint::Inet(live.local_addr().unwrap()), "x", &options)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(failure.dsn.code.to_string(), "4.4.0");
    assert!(!failure.address_fault);
}
