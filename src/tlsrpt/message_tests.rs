use std::io::Read;

use super::*;

fn parts<'a>(json: &'a str) -> Parts<'a> {
    Parts {
        from: "postmaster@mx.sender.example",
        to: "tlsrpt@company-y.example",
        policy_domain: "company-y.example",
        submitter: "mx.sender.example",
        report_id: "2016-04-01_company-y.example_ab12",
        file_name: "mx.sender.example!company-y.example!1459468800!1459555199!ab12.json.gz",
        json,
        date: 1_459_555_200 + 3 * 3600 + 4 * 60 + 5,
        unique: "ab12",
    }
}

#[test]
fn dates_are_rfc_5322() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_459_555_200 + 11_045),
        "Sat, 02 Apr 2016 03:04:05 +0000"
    );
}

#[test]
fn the_message_is_rfc_8460_section_5_3() {
    let json = "{\"report-id\":\"x\"}";
    let message = String::from_utf8(build(&parts(json)).unwrap()).unwrap();
    let (head, body) = message.split_once("\r\n\r\n").unwrap();
    for expected in [
        "From: <postmaster@mx.sender.example>",
        "To: <tlsrpt@company-y.example>",
        "Date: Sat, 02 Apr 2016 03:04:05 +0000",
        "Subject: Report Domain: company-y.example Submitter: mx.sender.example Report-ID: <2016-04-01_company-y.example_ab12>",
        "TLS-Report-Domain: company-y.example",
        "TLS-Report-Submitter: mx.sender.example",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"----=_tlsrpt_ab12\"",
    ] {
        assert!(head.contains(expected), "{expected:?} missing in\n{head}");
    }
    assert!(message.is_ascii());
    assert!(!message.replace("\r\n", "").contains('\n'), "bare LF");
    assert!(body.contains("------=_tlsrpt_ab12\r\nContent-Type: text/plain"));
    assert!(body.contains(
        "Content-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment;\r\n\tfilename=\"mx.sender.example!company-y.example!1459468800!1459555199!ab12.json.gz\"\r\n\r\n"
    ));
    assert!(body.ends_with("------=_tlsrpt_ab12--\r\n"));
    // The attachment decodes and gunzips to the JSON.
    let encoded = body
        .split("ab12.json.gz\"\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n--")
        .next()
        .unwrap()
        .replace("\r\n", "");
    let gz = openssl::base64::decode_block(&encoded).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, json);
}

#[test]
fn base64_lines_are_at_most_76_characters() {
    let long = "x".repeat(5000);
    let lines = base64_lines(long.as_bytes());
    assert!(lines.split("\r\n").all(|l| l.len() <= 76));
}
