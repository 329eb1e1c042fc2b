//! The ingress spool: the files of the messages received over LMTP, in
//! `[daemon] spool_directory`. A connection holds one file, written for
//! each of its messages in turn and read by their deliveries until every
//! recipient is answered; the file is removed when its guard drops (the
//! connection ends, or a delivery that was cancelled may still read it).
//! Files left by a crash are removed at start (their MTA got no reply and
//! still has the message).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next: AtomicU64,
}

/// A spool file, removed when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("cannot remove spool file {}: {e}", self.path.display());
        }
    }
}

/// Spool file names: `<pid>.<n>.lmtp`.
const SUFFIX: &str = ".lmtp";

impl Spool {
    /// Makes the directory (mode 0700) if it is missing, and removes the
    /// spool files a previous run left. `owner`: the uid and gid the
    /// daemon will run as, given the directory when it is created here.
    pub fn prepare(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<Spool> {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            }
        }
        let mut removed = 0usize;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(SUFFIX)
                && entry.file_type().is_ok_and(|t| t.is_file())
                && fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            log::info!(
                "spool {}: removed {removed} files left by an earlier run (their MTA still has the messages)",
                dir.display()
            );
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A spool file open for writing, empty: `reuse` (a connection's
    /// file from its previous message, truncated), else a new one (mode
    /// 0600). Reusing a connection's file spares the file system an inode
    /// allocation and a removal per message: with 20 connections creating
    /// and removing files in one ext4 directory, that was 40 % of the
    /// daemon's CPU (measured with perf: the inode allocator's scan for
    /// recently deleted inodes, and the directory lock).
    pub fn open(&self, reuse: Option<SpoolFile>) -> io::Result<(SpoolFile, File)> {
        if let Some(spool_file) = reuse {
            let reopened = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&spool_file.path);
            match reopened {
                Ok(file) => return Ok((spool_file, file)),
                Err(e) => log::warn!(
                    "cannot reuse spool file {}: {e}; taking a new one",
                    spool_file.path.display()
                ),
            }
        }
        self.create()
    }

    /// A new, empty spool file (mode 0600), open for writing.
    pub fn create(&self) -> io::Result<(SpoolFile, File)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}.{n}{SUFFIX}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        // The umask cannot have widened it, but a directory default ACL
        // could have: make sure.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok((SpoolFile { path }, file))
    }
}
