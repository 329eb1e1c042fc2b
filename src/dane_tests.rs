use super::*;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509, X509NameBuilder};

/// A certificate for `cn` signed by `issuer` (or self-signed), its key.
fn cert(cn: &str, issuer: Option<&(X509, PKey<Private>)>, ca: bool) -> (X509, PKey<Private>) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    let signer = issuer.map_or(&key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    (b.build(), key)
}

fn der(cert: &X509) -> Vec<u8> {
    cert.to_der().unwrap()
}

fn spki(cert: &X509) -> Vec<u8> {
    cert.public_key().unwrap().public_key_to_der().unwrap()
}

fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data,
    }
}

#[test]
fn rdata_is_read_and_truncated_records_are_errors() {
    let tlsa = Tlsa::from_rdata(&[3, 1, 1, 0xab, 0xcd]).unwrap();
    assert_eq!(tlsa, record(3, 1, 1, vec![0xab, 0xcd]));
    assert_eq!(tlsa.presentation(), "3 1 1 abcd");
    assert_eq!(Tlsa::from_rdata(&[3, 1]), Err(TlsaError::Truncated(2)));
    assert_eq!(Tlsa::from_rdata(&[]), Err(TlsaError::Truncated(0)));
    assert_eq!(Tlsa::from_rdata(&[3, 1, 1]), Err(TlsaError::Empty));
}

#[test]
fn only_dane_ta_and_dane_ee_with_known_parameters_are_usable() {
    let sha256 = vec![7; 32];
    let sha512 = vec![7; 64];
    assert!(record(DANE_EE, SELECTOR_SPKI, MATCH_SHA256, sha256.clone()).usable());
    assert!(record(DANE_TA, SELECTOR_CERT, MATCH_SHA512, sha512.clone()).usable());
    assert!(record(DANE_EE, SELECTOR_CERT, MATCH_FULL, vec![1, 2, 3]).usable());
    // PKIX usages are unusable for SMTP (RFC 7672 section 3.1.3).
    assert!(!record(PKIX_TA, SELECTOR_SPKI, MATCH_SHA256, sha256.clone()).usable());
    assert!(!record(PKIX_EE, SELECTOR_SPKI, MATCH_SHA256, sha256.clone()).usable());
    // Unknown selector or matching type, wrong digest length.
    assert!(!record(DANE_EE, 2, MATCH_SHA256, sha256.clone()).usable());
    assert!(!record(DANE_EE, SELECTOR_SPKI, 3, sha256.clone()).usable());
    assert!(!record(DANE_EE, SELECTOR_SPKI, MATCH_SHA256, sha512).usable());
    assert!(!record(DANE_EE, SELECTOR_SPKI, MATCH_SHA512, sha256).usable());
}

#[test]
fn dane_ee_matches_the_leaf_by_certificate_or_public_key() {
    let (leaf, _) = cert("mx.example.test", None, false);
    let chain = vec![der(&leaf)];
    for (selector, selected) in [(SELECTOR_CERT, der(&leaf)), (SELECTOR_SPKI, spki(&leaf))] {
        for (matching, data) in [
            (MATCH_FULL, selected.clone()),
            (MATCH_SHA256, openssl::sha::sha256(&selected).to_vec()),
            (MATCH_SHA512, openssl::sha::sha512(&selected).to_vec()),
        ] {
            let r = record(DANE_EE, selector, matching, data);
            assert_eq!(
                verify_chain(std::slice::from_ref(&r), &chain),
                Verdict::Matched(Matched::EndEntity),
                "{}",
                r.presentation()
            );
        }
    }
    let (other, _) = cert("other.example.test", None, false);
    let wrong = record(
        DANE_EE,
        SELECTOR_SPKI,
        MATCH_SHA256,
        openssl::sha::sha256(&spki(&other)).to_vec(),
    );
    assert_eq!(verify_chain(&[wrong], &chain), Verdict::NoMatch);
}

#[test]
fn dane_ta_matches_a_presented_issuer_never_the_leaf() {
    let ca = cert("Test CA", None, true);
    let (leaf, _) = cert("mx.example.test", Some(&ca), false);
    let chain = vec![der(&leaf), der(&ca.0)];
    let ta = record(
        DANE_TA,
        SELECTOR_SPKI,
        MATCH_SHA256,
        openssl::sha::sha256(&spki(&ca.0)).to_vec(),
    );
    assert_eq!(
        verify_chain(std::slice::from_ref(&ta), &chain),
        Verdict::Matched(Matched::TrustAnchor { depth: 1 })
    );
    // The same digest of the leaf as a DANE-TA record matches nothing.
    let leaf_as_ta = record(
        DANE_TA,
        SELECTOR_SPKI,
        MATCH_SHA256,
        openssl::sha::sha256(&spki(&leaf)).to_vec(),
    );
    assert_eq!(verify_chain(&[leaf_as_ta], &chain), Verdict::NoMatch);
    // A server that does not present its trust anchor fails DANE-TA.
    assert_eq!(verify_chain(&[ta], &chain[..1]), Verdict::NoMatch);
}

#[test]
fn unusable_records_are_ignored_and_alone_mean_no_dane() {
    let (leaf, _) = cert("mx.example.test", None, false);
    let chain = vec![der(&leaf)];
    let digest = openssl::sha::sha256(&spki(&leaf)).to_vec();
    let pkix = record(PKIX_EE, SELECTOR_SPKI, MATCH_SHA256, digest.clone());
    assert_eq!(
        verify_chain(std::slice::from_ref(&pkix), &chain),
        Verdict::NoUsableRecords
    );
    let good = record(DANE_EE, SELECTOR_SPKI, MATCH_SHA256, digest);
    assert_eq!(
        verify_chain(&[pkix, good], &chain),
        Verdict::Matched(Matched::EndEntity)
    );
    // Garbage instead of a certificate matches nothing, without a panic.
    let garbage = vec![vec![0x30, 0x03, 0x02, 0x01]];
    let spki_record = record(DANE_EE, SELECTOR_SPKI, MATCH_SHA256, vec![0; 32]);
    assert_eq!(verify_chain(&[spki_record], &garbage), Verdict::NoMatch);
    assert_eq!(verify_chain(&[], &chain), Verdict::NoUsableRecords);
}
