use super::*;
use AddressUtf8::{Ascii, Domain, LocalPart};
use Plan::{Plain, Refuse, Smtputf8};

fn facts_of(requested: bool, envelope: AddressUtf8, header: bool) -> Facts {
    Facts {
        enable: true,
        requested,
        envelope,
        header,
        domains_convert: true,
        a_labels: true,
    }
}

/// Every combination: requested × where the envelope has UTF-8 × header
/// UTF-8 × server offers SMTPUTF8, with Postfix's answer and mailhop's.
/// They differ in one case only: requested, UTF-8 in domains alone, no
/// UTF-8 header, no SMTPUTF8 — Postfix bounces (5.6.7), mailhop sends the
/// domains as A-labels.
#[test]
fn postfix_table() {
    #[rustfmt::skip]
    let table: &[(bool, AddressUtf8, bool, bool, Plan, Plan)] = &[
        // requested, envelope, header, offered, Postfix, mailhop
        (false, Ascii,     false, false, Plain,    Plain),
        (false, Ascii,     false, true,  Plain,    Plain),
        (false, Ascii,     true,  false, Plain,    Plain),
        (false, Ascii,     true,  true,  Plain,    Plain),
        (false, Domain,    false, false, Plain,    Plain),
        (false, Domain,    false, true,  Plain,    Plain),
        (false, Domain,    true,  false, Plain,    Plain),
        (false, Domain,    true,  true,  Plain,    Plain),
        (false, LocalPart, false, false, Plain,    Plain),
        (false, LocalPart, false, true,  Plain,    Plain),
        (false, LocalPart, true,  false, Plain,    Plain),
        (false, LocalPart, true,  true,  Plain,    Plain),
        (true,  Ascii,     false, false, Plain,    Plain),
        (true,  Ascii,     false, true,  Smtputf8, Smtputf8),
        (true,  Ascii,     true,  false, Refuse,   Refuse),
        (true,  Ascii,     true,  true,  Smtputf8, Smtputf8),
        (true,  Domain,    false, false, Refuse,   Plain),
        (true,  Domain,    false, true,  Smtputf8, Smtputf8),
        (true,  Domain,    true,  false, Refuse,   Refuse),
        (true,  Domain,    true,  true,  Smtputf8, Smtputf8),
        (true,  LocalPart, false, false, Refuse,   Refuse),
        (true,  LocalPart, false, true,  Smtputf8, Smtputf8),
        (true,  LocalPart, true,  false, Refuse,   Refuse),
        (true,  LocalPart, true,  true,  Smtputf8, Smtputf8),
    ];
    for &(requested, envelope, header, offered, postfix, mailhop) in table {
        let facts = facts_of(requested, envelope, header);
        let row = format!(
            "requested={requested} envelope={envelope:?} header={header} offered={offered}"
        );
        assert_eq!(facts.plan(offered), mailhop, "{row}");
        // Postfix's rule itself: requested AND derived, no A-labels.
        let postfix_rule = if requested && offered {
            Smtputf8
        } else if requested && (header || envelope != Ascii) {
            Refuse
        } else {
            Plain
        };
        assert_eq!(postfix_rule, postfix, "{row}");
        // smtputf8_a_labels = false is Postfix's behaviour in every row.
        let without = Facts {
            a_labels: false,
            ..facts
        };
        assert_eq!(without.plan(offered), postfix, "{row} (a_labels off)");
        assert_eq!(
            facts.required(),
            postfix == Refuse || (requested && offered && (header || envelope != Ascii)),
            "{row}"
        );
    }
}

#[test]
fn disabled_never_requests_nor_requires() {
    for envelope in [Ascii, Domain, LocalPart] {
        for header in [false, true] {
            for offered in [false, true] {
                let facts = Facts {
                    enable: false,
                    ..facts_of(true, envelope, header)
                };
                assert_eq!(facts.plan(offered), Plain);
                assert!(!facts.required());
            }
        }
    }
}

#[test]
fn a_domain_without_a_label_form_keeps_the_5_6_7() {
    let facts = Facts {
        domains_convert: false,
        ..facts_of(true, Domain, false)
    };
    assert_eq!(facts.plan(false), Refuse);
    assert_eq!(facts.plan(true), Smtputf8);
    // Not requested: it goes as it is.
    let facts = Facts {
        domains_convert: false,
        ..facts_of(false, Domain, false)
    };
    assert_eq!(facts.plan(false), Plain);
}

#[test]
fn addresses_are_classified_by_where_the_utf8_is() {
    assert_eq!(classify(""), Ascii);
    assert_eq!(classify("user@example.com"), Ascii);
    assert_eq!(classify("user@bücher.example"), Domain);
    assert_eq!(classify("jörg@example.com"), LocalPart);
    assert_eq!(classify("jörg@bücher.example"), LocalPart);
    // A quoted local part with an '@': the domain is after the last one.
    assert_eq!(classify("\"a@b\"@bücher.example"), Domain);
    assert_eq!(classify("postmaster"), Ascii);
    assert_eq!(classify("pöstmaster"), LocalPart);
}

#[test]
fn facts_take_the_worst_address_and_the_header() {
    let f = facts(
        true,
        true,
        "a@example.com",
        ["b@bücher.example", "c@example.com"],
        false,
    );
    assert_eq!(f.envelope, Domain);
    assert!(f.domains_convert);
    let f = facts(true, true, "jörg@example.com", ["b@bücher.example"], false);
    assert_eq!(f.envelope, LocalPart);
    let f = facts(true, true, "", ["b@example.com"], true);
    assert_eq!(f.envelope, Ascii);
    assert!(f.header);
    assert!(f.required());
    // A recipient whose domain has no A-label form.
    let f = facts(
        true,
        true,
        "a@example.com",
        ["b@bü--cher-.example", "x@bücher.example"],
        false,
    );
    assert!(!f.domains_convert);
    assert_eq!(f.plan(false), Refuse);
}

#[test]
fn a_labels_as_postfix_midna_makes_them() {
    assert_eq!(domain_to_ascii("example.com").as_deref(), Ok("example.com"));
    assert_eq!(
        domain_to_ascii("bücher.example").as_deref(),
        Ok("xn--bcher-kva.example")
    );
    // UTS #46 mapping: upper case folds, non-transitional: ß stays ß.
    assert_eq!(
        domain_to_ascii("BÜCHER.example").as_deref(),
        Ok("xn--bcher-kva.example")
    );
    assert_eq!(domain_to_ascii("faß.de").as_deref(), Ok("xn--fa-hia.de"));
    assert_eq!(
        domain_to_ascii("例え.テスト").as_deref(),
        Ok("xn--r8jz45g.xn--zckzah")
    );
    // Invalid: a label ending in '-', a disallowed character, too long.
    for bad in ["bücher-.example", "bü cher.example", "bü_cher.example"] {
        let err = domain_to_ascii(bad).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Problem translating domain \"{bad}\" to ASCII form: "
            )),
            "{err}"
        );
    }
    let long = format!("{}ü.example", "a".repeat(70));
    assert!(domain_to_ascii(&long).is_err());
}

#[test]
fn wire_addresses_change_the_domain_only() {
    assert_eq!(
        wire_address("user@bücher.example"),
        "user@xn--bcher-kva.example"
    );
    assert_eq!(
        wire_address("User.Name@Bücher.example"),
        "User.Name@xn--bcher-kva.example"
    );
    assert_eq!(wire_address("user@example.com"), "user@example.com");
    assert_eq!(wire_address(""), "");
    // No ASCII form for a UTF-8 local part: unchanged.
    assert_eq!(wire_address("jörg@bücher.example"), "jörg@bücher.example");
    // A domain that does not convert: unchanged.
    assert_eq!(wire_address("a@bücher-.example"), "a@bücher-.example");
}
