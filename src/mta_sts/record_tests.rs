use super::*;

fn id(texts: &[&str]) -> Result<String, MtaStsError> {
    policy_id(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>())
}

#[test]
fn one_valid_record_gives_its_id() {
    for (text, want) in [
        ("v=STSv1; id=20160831085700Z;", "20160831085700Z"),
        ("v=STSv1; id=20160831085700Z", "20160831085700Z"),
        ("v=STSv1;id=abc", "abc"),
        ("v=STSv1 ;\tid=abc ;", "abc"),
        ("v=STSv1; id=abc; ext_1=value.x", "abc"),
        ("v=STSv1; foo-bar=x; id=A1", "A1"),
    ] {
        assert_eq!(id(&[text]).as_deref(), Ok(want), "{text:?}");
    }
}

#[test]
fn other_txt_records_are_ignored() {
    assert_eq!(
        id(&["google-site-verification=x", "v=STSv1; id=1", "v=spf1 -all"]).as_deref(),
        Ok("1")
    );
}

#[test]
fn none_or_several_records_is_no_policy() {
    for texts in [
        &[][..],
        &["v=spf1 -all"][..],
        &["v=STSv1; id=1", "v=STSv1; id=2"][..],
        &["v=STSv1; id=1", "v=STSv1; id=1"][..],
    ] {
        assert!(
            matches!(id(texts), Err(MtaStsError::Record(_))),
            "{texts:?}"
        );
    }
}

#[test]
fn malformed_records_are_no_policy() {
    for text in [
        "v=STSv1",
        "v=STSv1;",
        "v=STSv1; id=",
        "v=STSv1; id=abc-def",
        "v=STSv1; id=123456789012345678901234567890123",
        "v=STSv1 id=abc",
        "v=STSv1;; id=abc",
        "v=STSv1; id=a; id=b",
        "v=STSv1; id=a; novalue",
        "v=STSv1; id=a; x=",
        "v=STSv1; id=a; _x=1",
        "v=STSv1x; id=a",
    ] {
        assert!(
            matches!(id(&[text]), Err(MtaStsError::Record(_))),
            "{text:?}"
        );
    }
}

#[test]
fn v_stsv10_is_not_an_sts_record() {
    assert!(id(&["v=STSv10; id=1"]).is_err());
    assert_eq!(id(&["v=STSv10; id=1", "v=STSv1; id=2"]).as_deref(), Ok("2"));
}
