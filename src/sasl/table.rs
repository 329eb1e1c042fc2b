//! The SASL password table (Postfix's `smtp_sasl_password_maps`), read
//! from a file in the source format of a Postfix `hash:` table:
//!
//! ```text
//! # comment
//! [mail.isp.example]:587   username:password
//! mx.example.net           other:secret
//! ```
//!
//! One `key value` entry per line: the key is the first word, the value
//! the rest of the line; a line starting with white space continues the
//! previous one; blank lines and lines whose first non-blank character is
//! `#` are ignored. Keys are compared without case; the first entry of a
//! key wins (a later one is logged). The value is split at its first `:`
//! into user name and password (Postfix's
//! `smtp_sasl_password_result_delimiter`); without one, the password is
//! empty.
//!
//! Lookup ([`PasswordTable::lookup`]) as Postfix's
//! `smtp_sasl_passwd_lookup`: the remote host name (the MX host, or the
//! address of an `[address]` destination), then the next-hop destination
//! exactly as written in the job (`example.com`, `[mail.isp.example]:587`).
//!
//! The file must be a regular file owned by the daemon's (effective) user
//! and not readable or writable by group or other: otherwise
//! [`PasswordTable::load`] refuses it ([`TableError::Permissions`]), and
//! the daemon refuses to start or to reload. Passwords never appear in a
//! `Debug` form, a log line or an error.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest password file read (a bound, not a format limit).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A user name and password for one server.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Why the password file was refused.
#[derive(Debug)]
pub enum TableError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not a regular file, not ours, or open to group/other.
    Permissions {
        path: PathBuf,
        detail: String,
    },
    TooLarge {
        path: PathBuf,
    },
    /// A line that is not `key value` (no password is quoted).
    Syntax {
        path: PathBuf,
        line: usize,
        detail: &'static str,
    },
}

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TableError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            TableError::Permissions { path, detail } => write!(
                f,
                "{}: {detail}: the SASL password table must be a regular file owned by the \
                 daemon's user and not accessible by group or other (chmod 600)",
                path.display()
            ),
            TableError::TooLarge { path } => {
                write!(f, "{}: larger than {MAX_FILE_BYTES} bytes", path.display())
            }
            TableError::Syntax { path, line, detail } => {
                write!(f, "{}: line {line}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for TableError {}

/// The parsed table.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PasswordTable {
    entries: HashMap<String, Credential>,
}

impl std::fmt::Debug for PasswordTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordTable({} entries)", self.entries.len())
    }
}

impl PasswordTable {
    /// Reads the file at `path`, checking that the effective user `uid`
    /// owns it and that group and other have no access.
    pub fn load(path: &Path, uid: u32) -> Result<PasswordTable, TableError> {
        let io = |error| TableError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::PermissionDenied {
                TableError::Permissions {
                    path: path.to_path_buf(),
                    detail: format!("permission denied to the daemon's uid {uid}"),
                }
            } else {
                io(error)
            }
        })?;
        // The checks are made on the opened file, not the name.
        let meta = file.metadata().map_err(io)?;
        let refuse = |detail: String| TableError::Permissions {
            path: path.to_path_buf(),
            detail,
        };
        if !meta.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        if meta.uid() != uid {
            return Err(refuse(format!(
                "owned by uid {}, not by the daemon's uid {uid}",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(refuse(format!("mode {:04o}", meta.mode() & 0o7777)));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(TableError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        PasswordTable::parse(&text).map_err(|(line, detail)| TableError::Syntax {
            path: path.to_path_buf(),
            line,
            detail,
        })
    }

    /// Parses the table's text. Err: the 1-based line and what is wrong.
    pub fn parse(text: &str) -> Result<PasswordTable, (usize, &'static str)> {
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match logical.last_mut() {
                    Some((_, entry)) => {
                        entry.push(' ');
                        entry.push_str(trimmed);
                        continue;
                    }
                    None => return Err((number, "continuation line without an entry")),
                }
            }
            logical.push((number, trimmed.to_string()));
        }
        let mut entries = HashMap::new();
        for (number, entry) in logical {
            let Some((key, value)) = entry.split_once([' ', '\t']) else {
                return Err((number, "an entry needs a key and a user:password value"));
            };
            let value = value.trim();
            let (username, password) = value.split_once(':').unwrap_or((value, ""));
            let key = key.to_ascii_lowercase();
            if entries.contains_key(&key) {
                log::warn!("SASL password table: line {number}: duplicate entry \"{key}\" ignored");
                continue;
            }
            entries.insert(
                key,
                Credential {
                    username: username.to_string(),
                    password: password.to_string(),
                },
            );
        }
        Ok(PasswordTable { entries })
    }

    /// The credential for a server: by its host name, then by the next-hop
    /// destination as written.
    pub fn lookup(&self, host: &str, destination: &str) -> Option<&Credential> {
        self.entries
            .get(&host.to_ascii_lowercase())
            .or_else(|| self.entries.get(&destination.to_ascii_lowercase()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
