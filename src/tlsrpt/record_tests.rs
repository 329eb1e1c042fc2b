use super::*;

fn texts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_rfc_examples_parse() {
    let record = parse("v=TLSRPTv1;rua=mailto:reports@example.com").unwrap();
    assert_eq!(record.rua, vec![Rua::Mailto("reports@example.com".into())]);
    let record = parse("v=TLSRPTv1; rua=https://reporting.example.com/v1/tlsrpt").unwrap();
    assert_eq!(
        record.rua,
        vec![Rua::Https("https://reporting.example.com/v1/tlsrpt".into())]
    );
}

#[test]
fn several_uris_extensions_and_a_trailing_delimiter() {
    let record =
        parse("v=TLSRPTv1 ; ext=1; rua=mailto:a@b.example , https://r.example/x,ftp://x.example;")
            .unwrap();
    assert_eq!(
        record.rua,
        vec![
            Rua::Mailto("a@b.example".into()),
            Rua::Https("https://r.example/x".into())
        ]
    );
}

#[test]
fn mailto_is_decoded_and_loses_its_headers() {
    let record = parse("v=TLSRPTv1; rua=MAILTO:tls%2Brpt@example.com?subject=x").unwrap();
    assert_eq!(record.rua, vec![Rua::Mailto("tls+rpt@example.com".into())]);
}

#[test]
fn bad_records_are_refused() {
    for bad in [
        "v=TLSRPTv1",
        "v=TLSRPTv1;",
        "v=TLSRPTv1; rua=",
        "v=TLSRPTv1; rua=ftp://x.example",
        "v=TLSRPTv1; rua=mailto:nobody",
        "v=TLSRPTv1; rua",
        "v=TLSRPTv1;; rua=mailto:a@b.example",
        "v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@d.example",
        "v=TLSRPTv10; rua=mailto:a@b.example",
        "v=tlsrptv1; rua=mailto:a@b.example",
        "v=spf1 -all",
        // Control characters, raw or escaped, never reach a message.
        "v=TLSRPTv1; rua=mailto:a@b.ex\u{0}ample",
        "v=TLSRPTv1; rua=mailto:a@b.example%0D%0ABcc:x@y.example",
        "v=TLSRPTv1; rua=mailto:a%09b@c.example",
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn exactly_one_tlsrpt_record_must_remain() {
    let one = "v=TLSRPTv1; rua=mailto:a@b.example";
    assert!(select(&texts(&["v=spf1 -all", one])).is_ok());
    assert!(select(&texts(&[])).is_err());
    assert!(select(&texts(&["v=spf1 -all"])).is_err());
    let two = select(&texts(&[one, "v=TLSRPTv1; rua=mailto:c@d.example"]));
    assert_eq!(two, Err("more than one TLSRPT record".into()));
    // An invalid second record still makes two.
    assert!(select(&texts(&[one, "v=TLSRPTv1; bogus"])).is_err());
}

#[test]
fn the_record_name() {
    assert_eq!(record_name("example.com."), "_smtp._tls.example.com");
}
