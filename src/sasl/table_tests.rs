use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

const TEXT: &str = "\
# credentials
[mail.isp.example]:587   alice:s3cret:with:colons
MX.Example.NET           bob:pw
  # a comment between
continued
   carol:pw2
nopassword  dave
mx.example.net  eve:later
";

#[test]
fn parse_and_look_up_as_postfix() {
    let table = PasswordTable::parse(TEXT).unwrap();
    assert_eq!(table.len(), 4);
    let alice = table
        .lookup("mail.isp.example", "[mail.isp.example]:587")
        .unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.password, "s3cret:with:colons");
    // Host name first, without case; the first entry of a key wins.
    let bob = table
        .lookup("mx.example.net", "[mail.isp.example]:587")
        .unwrap();
    assert_eq!(bob.username, "bob");
    assert_eq!(table.lookup("continued", "x").unwrap().username, "carol");
    assert_eq!(table.lookup("x", "nopassword").unwrap().password, "");
    assert!(table.lookup("other.example", "other.example").is_none());
}

#[test]
fn syntax_errors_name_the_line_not_the_password() {
    assert_eq!(
        PasswordTable::parse("  lead user:pw\n"),
        Err((1, "continuation line without an entry"))
    );
    let err = PasswordTable::parse("ok a:b\nlonely\n").unwrap_err();
    assert_eq!(err.0, 2);
}

#[test]
fn debug_hides_passwords() {
    let table = PasswordTable::parse(TEXT).unwrap();
    let cred = table.lookup("x", "nopassword").unwrap();
    assert!(!format!("{cred:?} {table:?}").contains("pw"));
}

fn write_table(mode: u32) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"relay.example user:topsecret\n").unwrap();
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    file
}

#[test]
fn load_checks_owner_and_mode() {
    let uid = nix::unistd::geteuid().as_raw();
    let good = write_table(0o600);
    let table = PasswordTable::load(good.path(), uid).unwrap();
    assert_eq!(table.lookup("relay.example", "").unwrap().username, "user");
    let open = write_table(0o640);
    let err = PasswordTable::load(open.path(), uid)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mode 0640") && !err.contains("topsecret"),
        "{err}"
    );
    let err = PasswordTable::load(good.path(), uid.wrapping_add(1)).unwrap_err();
    assert!(err.to_string().contains("not by the daemon's uid"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = PasswordTable::load(dir.path(), uid).unwrap_err();
    assert!(matches!(err, TableError::Permissions { .. }), "{err}");
    let err = PasswordTable::load(&dir.path().join("missing"), uid).unwrap_err();
    assert!(matches!(err, TableError::Io { .. }), "{err}");
}
