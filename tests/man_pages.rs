//! The manual pages under docs/man render without warnings: each page is
//! formatted with `man -l` (man-db, groff's warnings on), else `groff -man`,
//! else `mandoc -Tlint`, whichever exists.  Without any of them the test is
//! skipped with a message, and fails when CI=true (install man-db and
//! groff-base: scripts/install-test-deps.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The roff pages in docs/man: files whose extension is a section digit.
fn man_pages() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    let mut pages: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| ext.len() == 1 && ext.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    pages.sort();
    pages
}

/// A program in PATH, if any.
fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The formatter command for `page`, with warnings enabled.
fn formatter(page: &Path) -> Option<Command> {
    if let Some(man) = in_path("man") {
        let mut command = Command::new(man);
        command
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("MAN_DISABLE_SECCOMP", "1")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat");
        return Some(command);
    }
    if let Some(groff) = in_path("groff") {
        let mut command = Command::new(groff);
        command.args(["-man", "-Tutf8", "-ww", "-z"]).arg(page);
        return Some(command);
    }
    if let Some(mandoc) = in_path("mandoc") {
        let mut command = Command::new(mandoc);
        command.args(["-Tlint", "-Wwarning"]).arg(page);
        return Some(command);
    }
    None
}

#[test]
fn man_pages_render_without_warnings() {
    let pages = man_pages();
    assert!(
        pages.iter().any(|page| page.ends_with("mailhop.toml.5")),
        "docs/man/mailhop.toml.5 is missing: target/debug/mailhop config man > docs/man/mailhop.toml.5"
    );
    for page in &pages {
        let Some(mut command) = formatter(page) else {
            let message = "man_pages_render_without_warnings: SKIPPED: none of man, groff, \
                           mandoc is installed (Debian: man-db, groff-base; see \
                           scripts/install-test-deps.sh)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}");
            }
            eprintln!("{message}");
            return;
        };
        let output = match command.output() {
            Ok(output) => output,
            Err(e) => panic!("running {command:?}: {e}"),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{command:?} failed ({}): {stderr}",
            output.status
        );
        assert!(
            stderr.trim().is_empty(),
            "{} renders with warnings:\n{stderr}",
            page.display()
        );
        // `groff -z` and `mandoc -Tlint` print nothing; man prints the page.
        let stdout = String::from_utf8_lossy(&output.stdout);
        if command.get_program().to_string_lossy().ends_with("man") {
            assert!(
                stdout.contains("NAME"),
                "{} rendered without NAME",
                page.display()
            );
        }
    }
}
