//! A throwaway test PKI, generated at test time with the `openssl` crate and
//! written as PEM files into a private temporary directory (removed on
//! drop):
//!
//! - `ca.pem` / `ca.key`: the test CA ("mailhop test CA"), the trust anchor
//!   a test names in `[tls] ca_file`;
//! - `other-ca.pem` / `other-ca.key`: a second CA that signed nothing the
//!   servers present (an untrusted anchor for the server certificates);
//! - `server.pem` / `server.key`: `CN=mx.tls.test`, subjectAltName
//!   `DNS:mx.tls.test`, signed by the CA (serverAuth);
//! - `wrong.pem` / `wrong.key`: `CN=wrong.tls.test`, subjectAltName
//!   `DNS:wrong.tls.test`, also signed by the CA: a trusted certificate for
//!   the wrong name.
//!
//! Keys are ECDSA P-256 (fast to generate, so every test can have its own
//! PKI). Certificates are valid from a day ago for 30 days. [`Pki::server_fingerprint`]
//! is the SHA-256 of the server certificate's DER as "AB:CD:...", the form
//! of `[tls] fingerprint_cert_match` and of Postfix's
//! `smtp_tls_fingerprint_cert_match`.
//!
//! For DANE, [`Pki::issue`] signs a further server certificate for any
//! host name (an MX host of the DNSSEC lab) with the same CA and returns an
//! [`Issued`]: its files (`<name>.pem`, `<name>.key`, and for Postfix's
//! `smtpd_tls_chain_files` `<name>.chain.pem` = key, leaf, CA and
//! `<name>.leaf-only.pem` = key, leaf) and the TLSA association data as
//! lowercase hex: `3 1 1` (SHA-256 of the leaf's SubjectPublicKeyInfo DER),
//! `3 0 1` (SHA-256 of the leaf DER) and `2 0 1` (SHA-256 of the CA DER).
//!
//! Contract: [`Pki::generate`] either returns a complete PKI or panics with
//! OpenSSL's error; it never touches the network or system files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Name, X509NameBuilder};

/// The name in the server certificate.
pub const SERVER_NAME: &str = "mx.tls.test";
/// The name in the wrong-name certificate.
pub const WRONG_NAME: &str = "wrong.tls.test";

/// The generated PKI; its directory is removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
    /// SHA-256 of the server certificate DER, "AB:CD:...".
    pub server_fingerprint: String,
    /// SHA-256 of the server certificate's SubjectPublicKeyInfo DER,
    /// "AB:CD:..." (Postfix's public-key fingerprint).
    pub server_pkey_fingerprint: String,
    /// SHA-256 of the wrong-name certificate DER, "AB:CD:...".
    pub wrong_fingerprint: String,
}

impl Pki {
    /// Generates the CAs and certificates and writes them (mode 0644, keys
    /// 0600, directory 0755 so that Postfix daemons can read the
    /// certificates after dropping privileges).
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mailhop-pki-")
            .tempdir_in("/tmp")
            .expect("create the PKI directory");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the PKI directory");
        let build = || -> Result<(String, String, String), ErrorStack> {
            let (ca, ca_key) = new_ca("mailhop test CA")?;
            let (other_ca, other_ca_key) = new_ca("mailhop untrusted test CA")?;
            let (server, server_key) = leaf(SERVER_NAME, &ca, &ca_key)?;
            let (wrong, wrong_key) = leaf(WRONG_NAME, &ca, &ca_key)?;
            let files: [(&str, Vec<u8>, u32); 8] = [
                ("ca.pem", ca.to_pem()?, 0o644),
                ("ca.key", ca_key.private_key_to_pem_pkcs8()?, 0o600),
                ("other-ca.pem", other_ca.to_pem()?, 0o644),
                (
                    "other-ca.key",
                    other_ca_key.private_key_to_pem_pkcs8()?,
                    0o600,
                ),
                ("server.pem", server.to_pem()?, 0o644),
                ("server.key", server_key.private_key_to_pem_pkcs8()?, 0o600),
                ("wrong.pem", wrong.to_pem()?, 0o644),
                ("wrong.key", wrong_key.private_key_to_pem_pkcs8()?, 0o600),
            ];
            for (name, pem, mode) in files {
                let path = dir.path().join(name);
                fs::write(&path, pem).expect("write a PEM file");
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .expect("chmod a PEM file");
            }
            Ok((
                fingerprint(&server)?,
                pkey_fingerprint(&server)?,
                fingerprint(&wrong)?,
            ))
        };
        let (server_fingerprint, server_pkey_fingerprint, wrong_fingerprint) =
            build().unwrap_or_else(|e| panic!("generate the test PKI: {e}"));
        Pki {
            dir,
            server_fingerprint,
            server_pkey_fingerprint,
            wrong_fingerprint,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The trusted test CA certificate.
    pub fn ca_pem(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// The second CA, which signed none of the server certificates.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    /// The certificate for [`SERVER_NAME`].
    pub fn server_pem(&self) -> PathBuf {
        self.file("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.file("server.key")
    }

    /// The certificate for [`WRONG_NAME`] (signed by the trusted CA).
    pub fn wrong_pem(&self) -> PathBuf {
        self.file("wrong.pem")
    }

    pub fn wrong_key(&self) -> PathBuf {
        self.file("wrong.key")
    }

    /// Signs a server certificate for `dns_name` (CN and subjectAltName)
    /// with the test CA and writes its files; panics with OpenSSL's error.
    pub fn issue(&self, dns_name: &str) -> Issued {
        let build = || -> Result<Issued, ErrorStack> {
            let ca = X509::from_pem(&fs::read(self.ca_pem()).expect("read ca.pem"))?;
            let ca_key =
                PKey::private_key_from_pem(&fs::read(self.file("ca.key")).expect("read ca.key"))?;
            let (cert, key) = leaf(dns_name, &ca, &ca_key)?;
            let key_pem = key.private_key_to_pem_pkcs8()?;
            let (cert_pem, ca_pem) = (cert.to_pem()?, ca.to_pem()?);
            let issued = Issued {
                name: dns_name.to_string(),
                cert: self.file(&format!("{dns_name}.pem")),
                key: self.file(&format!("{dns_name}.key")),
                chain: self.file(&format!("{dns_name}.chain.pem")),
                leaf_only: self.file(&format!("{dns_name}.leaf-only.pem")),
                spki_sha256: hex(&sha256(&cert.public_key()?.public_key_to_der()?)?),
                cert_sha256: hex(&cert.digest(MessageDigest::sha256())?),
                ca_sha256: hex(&ca.digest(MessageDigest::sha256())?),
            };
            let files: [(&Path, Vec<u8>, u32); 4] = [
                (&issued.cert, cert_pem.clone(), 0o644),
                (&issued.key, key_pem.clone(), 0o600),
                (
                    &issued.chain,
                    [key_pem.as_slice(), &cert_pem, &ca_pem].concat(),
                    0o600,
                ),
                (
                    &issued.leaf_only,
                    [key_pem.as_slice(), &cert_pem].concat(),
                    0o600,
                ),
            ];
            for (path, pem, mode) in files {
                fs::write(path, pem).expect("write a PEM file");
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .expect("chmod a PEM file");
            }
            Ok(issued)
        };
        build().unwrap_or_else(|e| panic!("issue a certificate for {dns_name}: {e}"))
    }
}

/// A server certificate from [`Pki::issue`], its files and its TLSA data.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The host name in the certificate.
    pub name: String,
    /// The leaf certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Key, leaf and CA in one file, in that order (`smtpd_tls_chain_files`):
    /// the server presents the CA too (needed for DANE-TA).
    pub chain: PathBuf,
    /// Key and leaf only: the server presents no issuer.
    pub leaf_only: PathBuf,
    /// TLSA `3 1 1` data: SHA-256 of the leaf's SubjectPublicKeyInfo DER.
    pub spki_sha256: String,
    /// TLSA `3 0 1` data: SHA-256 of the leaf certificate DER.
    pub cert_sha256: String,
    /// TLSA `2 0 1` data: SHA-256 of the issuing CA certificate DER.
    pub ca_sha256: String,
}

fn sha256(data: &[u8]) -> Result<Vec<u8>, ErrorStack> {
    Ok(openssl::hash::hash(MessageDigest::sha256(), data)?.to_vec())
}

/// Lowercase hex, as TLSA presentation format writes association data.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// "AB:CD:..." of the certificate DER's SHA-256.
pub fn fingerprint(cert: &X509) -> Result<String, ErrorStack> {
    Ok(colon_hex(&cert.digest(MessageDigest::sha256())?))
}

/// "AB:CD:..." of the SHA-256 of the certificate's public key
/// (SubjectPublicKeyInfo DER).
pub fn pkey_fingerprint(cert: &X509) -> Result<String, ErrorStack> {
    let der = cert.public_key()?.public_key_to_der()?;
    Ok(colon_hex(&openssl::hash::hash(
        MessageDigest::sha256(),
        &der,
    )?))
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

fn name(common_name: &str) -> Result<X509Name, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "mailhop tests")?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    Ok(name.build())
}

fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(120, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

/// A certificate builder with the common fields; valid from a day ago for
/// 30 days.
fn builder(
    subject: &X509Name,
    key: &PKey<Private>,
) -> Result<openssl::x509::X509Builder, ErrorStack> {
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_pubkey(key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let not_before = Asn1Time::from_unix(now - 86_400)?;
    let not_after = Asn1Time::days_from_now(30)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

/// A self-signed CA.
fn new_ca(common_name: &str) -> Result<(X509, PKey<Private>), ErrorStack> {
    let key = new_key()?;
    let subject = name(common_name)?;
    let mut b = builder(&subject, &key)?;
    b.set_issuer_name(&subject)?;
    b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}

/// A server certificate for `dns_name` signed by `ca`.
fn leaf(
    dns_name: &str,
    ca: &X509,
    ca_key: &PKey<Private>,
) -> Result<(X509, PKey<Private>), ErrorStack> {
    let key = new_key()?;
    let subject = name(dns_name)?;
    let mut b = builder(&subject, &key)?;
    b.set_issuer_name(ca.subject_name())?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let san = SubjectAlternativeName::new()
        .dns(dns_name)
        .build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(san)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(aki)?;
    b.sign(ca_key, MessageDigest::sha256())?;
    Ok((b.build(), key))
}
