//! The manual pages in docs/man: every page renders without a groff
//! warning, and mailhop(8) names every subcommand and long option that
//! `mailhop --help` lists, so the page cannot silently fall behind the
//! command line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::require_tool;

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/man")
}

/// groff, or `None` (skipped loudly; a failure under `CI=true`).
fn groff() -> Option<PathBuf> {
    require_tool("groff", "groff-base")
}

#[test]
fn man_pages_render_without_warnings() {
    let Some(groff) = groff() else {
        return;
    };
    let mut pages: Vec<PathBuf> = fs::read_dir(man_dir())
        .expect("docs/man")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|ext| {
                ext.len() == 1 && ext.to_string_lossy().chars().all(|c| c.is_ascii_digit())
            })
        })
        .collect();
    pages.sort();
    assert!(
        pages.iter().any(|p| p.ends_with("mailhop.8")),
        "docs/man/mailhop.8 is missing: {pages:?}"
    );
    assert!(
        pages.iter().any(|p| p.ends_with("mailhop.toml.5")),
        "docs/man/mailhop.toml.5 is missing: generate it with \
         `cargo build && target/debug/mailhop config man > docs/man/mailhop.toml.5`"
    );
    for page in &pages {
        let output = Command::new(&groff)
            .args(["-man", "-ww", "-z"])
            .arg(page)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("run groff");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "{}: groff -man -ww: {}{stderr}",
            page.display(),
            output.status
        );
    }
}

/// The subcommands and `--long` options of `mailhop [SUBCOMMAND] --help`.
fn help_words(args: &[&str]) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_mailhop"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run mailhop --help");
    assert!(output.status.success(), "mailhop {args:?} --help");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = Vec::new();
    for line in text.lines() {
        for word in line.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(name) = word.strip_prefix("--")
                && !name.is_empty()
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                words.push(format!("--{name}"));
            }
        }
    }
    words.sort();
    words.dedup();
    words
}

/// The words of a roff source line, with `\-` read as `-` and quotes and
/// font-macro punctuation dropped.
fn roff_words(line: &str) -> Vec<String> {
    line.replace("\\-", "-")
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn mailhop_8_names_every_option_of_the_command_line() {
    let page = fs::read_to_string(man_dir().join("mailhop.8")).expect("docs/man/mailhop.8");
    let lines: Vec<&str> = page.lines().collect();
    // The tags of the OPTIONS section's .TP entries.
    let mut documented = Vec::new();
    for pair in lines.windows(2) {
        if pair[0] == ".TP" {
            documented.extend(roff_words(pair[1]));
        }
    }
    // The words of one SYNOPSIS block: `.SY mailhop\ send` up to `.YS`.
    let synopsis = |command: &str| -> Vec<String> {
        let head = format!(".SY mailhop\\ {command}");
        let at = lines
            .iter()
            .position(|l| l.replace("\\-", "-") == head)
            .unwrap_or_else(|| panic!("mailhop.8: no SYNOPSIS line `{head}`"));
        lines[at..]
            .iter()
            .take_while(|l| **l != ".YS")
            .flat_map(|l| roff_words(l))
            .collect()
    };
    for command in ["send", "daemon", "status", "tlsrpt-flush"] {
        let words = synopsis(command);
        for option in help_words(&[command]) {
            assert!(
                documented.contains(&option),
                "mailhop.8 OPTIONS does not describe {option} (mailhop {command} --help lists it)"
            );
            if option != "--help" {
                assert!(
                    words.contains(&option),
                    "mailhop.8 SYNOPSIS of `mailhop {command}` lacks {option}"
                );
            }
        }
    }
    for option in help_words(&[]) {
        assert!(
            documented.contains(&option),
            "mailhop.8 does not describe {option}"
        );
    }
    synopsis("config\\ defaults");
    synopsis("config\\ check");
}
