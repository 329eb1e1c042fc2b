use super::*;
use crate::job::JobRecipient;
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

fn peer(uid: u32, gids: &[u32]) -> PeerIdentity {
    PeerIdentity {
        uid,
        gids: gids.to_vec(),
        privileged: false,
    }
}

#[test]
fn permission_bits() {
    let p = peer(1000, &[100, 200]);
    assert!(p.may(1000, 0, 0o400, 4));
    assert!(
        !p.may(1000, 100, 0o040, 4),
        "owner bits decide for the owner"
    );
    assert!(p.may(5, 200, 0o040, 4));
    assert!(!p.may(5, 300, 0o040, 4));
    assert!(p.may(5, 300, 0o004, 4));
    assert!(p.may(5, 300, 0o001, 1));
    assert!(peer(0, &[]).may(5, 5, 0, 4));
}

#[test]
fn open_checks() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = dir.path().join("m");
    fs::write(&file, b"x").unwrap_or_else(|e| panic!("write: {e}"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let stranger = peer(54321, &[54321]);
    let err = open_for_peer(&file, &stranger)
        .err()
        .unwrap_or_default()
        .text;
    assert!(err.starts_with("permission denied: uid 54321"), "{err}");
    let privileged = PeerIdentity {
        privileged: true,
        ..stranger.clone()
    };
    assert!(open_for_peer(&file, &privileged).is_ok());
    let missing = dir.path().join("none");
    let err = open_for_peer(&missing, &privileged)
        .err()
        .unwrap_or_default()
        .text;
    assert!(err.contains("No such file or directory"), "{err}");
    let err = open_for_peer(Path::new("rel/x"), &privileged)
        .err()
        .unwrap_or_default()
        .text;
    assert!(err.contains("not absolute"), "{err}");
    let err = open_for_peer(dir.path(), &privileged)
        .err()
        .unwrap_or_default()
        .text;
    assert!(err.contains("not a regular file"), "{err}");
}

/// Out of descriptors or memory opening a message: retryable (exit
/// 75 for `send`), anything else not.
#[test]
fn running_out_of_descriptors_is_retryable() {
    use nix::errno::Errno;
    for errno in [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM] {
        let e = OpenError::from_errno("cannot read message /m".into(), errno);
        let job = e.into_job_error(Some("j".into()));
        assert!(job.retryable, "{errno}");
        assert!(job.error.ends_with("try again later"), "{}", job.error);
    }
    let e = OpenError::from_errno("cannot read message /m".into(), Errno::ENOENT);
    assert!(!e.into_job_error(None).retryable);
}

/// A FIFO, a device, a directory and a final symbolic link are
/// refused by kind, and never opened: a writer blocked on the FIFO
/// stays blocked (opening it for reading would release it).
#[test]
fn special_files_are_refused_without_being_opened() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
        .unwrap_or_else(|e| panic!("mkfifo: {e}"));
    let released = Arc::new(AtomicBool::new(false));
    let (fifo2, released2) = (fifo.clone(), Arc::clone(&released));
    let writer = thread::spawn(move || {
        let opened = fs::OpenOptions::new().write(true).open(&fifo2);
        released2.store(true, Ordering::SeqCst);
        drop(opened);
    });
    thread::sleep(Duration::from_millis(100));
    let me = PeerIdentity {
        uid: 0,
        gids: vec![0],
        privileged: true,
    };
    let text = |path: &Path| open_for_peer(path, &me).err().unwrap_or_default().text;
    assert!(
        text(&fifo).ends_with("not a regular file (a FIFO)"),
        "{}",
        text(&fifo)
    );
    let dev = Path::new("/dev/null");
    assert!(text(dev).ends_with("(a character device)"), "{}", text(dev));
    assert!(text(dir.path()).ends_with("(a directory)"));
    let file = dir.path().join("m");
    fs::write(&file, b"x").unwrap_or_else(|e| panic!("write: {e}"));
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap_or_else(|e| panic!("symlink: {e}"));
    assert!(text(&link).contains("a symbolic link"), "{}", text(&link));
    thread::sleep(Duration::from_millis(200));
    assert!(
        !released.load(Ordering::SeqCst),
        "the FIFO was opened for reading"
    );
    let _release = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo);
    let _ = writer.join();
}

/// Directories reached through a symbolic link are checked where they
/// really are: a peer that may not search the real directory is
/// refused even when the link's own directory is open to it.
#[test]
fn linked_directories_are_checked_with_the_peers_rights() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let closed = dir.path().join("closed");
    fs::create_dir(&closed).unwrap_or_else(|e| panic!("mkdir: {e}"));
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let file = closed.join("m");
    fs::write(&file, b"hello").unwrap_or_else(|e| panic!("write: {e}"));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod: {e}"));
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&closed, &alias).unwrap_or_else(|e| panic!("symlink: {e}"));
    let owner = nix::unistd::geteuid().as_raw();
    let stranger = peer(owner.wrapping_add(4242), &[54_000]);
    let err = open_for_peer(&alias.join("m"), &stranger)
        .err()
        .unwrap_or_default()
        .text;
    assert!(err.starts_with("permission denied"), "{err}");
    let owner_peer = peer(owner, &[]);
    let opened = open_for_peer(&alias.join("m"), &owner_peer).map(|(_, len)| len);
    assert_eq!(opened, Ok(5));
    // "..", "." and relative links resolve as the kernel would.
    let dotted = dir.path().join("closed/../alias/./m");
    assert_eq!(
        open_for_peer(&dotted, &owner_peer).map(|(_, len)| len),
        Ok(5)
    );
}

#[test]
fn shutdown_defers_everyone() {
    let job = Job::new(
        "j",
        "a@x",
        ["b@y", "c@y"].map(JobRecipient::new),
        MessageRef::Data { data: "x".into() },
    );
    let result = shutdown_result(&job);
    assert_eq!(result.recipients.len(), 2);
    assert!(
        result
            .recipients
            .iter()
            .all(|r| r.status == Status::Deferred
                && r.dsn == "4.3.0"
                && r.diagnostic == SHUTDOWN_DIAGNOSTIC)
    );
    assert_eq!(result.exit_code(), 75);
}
