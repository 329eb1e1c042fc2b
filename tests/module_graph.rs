//! The module graph of `src/` has no cycle: data flows one way between the
//! top-level modules (issue 13: "no import cycle among src modules").
//!
//! Reads every `src/**/*.rs` except `*_tests.rs`, `main.rs` and `lib.rs`,
//! drops comments, string and character literals and `#[cfg(test)]` items,
//! and collects the references `crate::m` (including `use crate::{a, b}`
//! groups) and `super::…::m` (resolved against the file's module path) that
//! name another top-level module. Then Tarjan's strongly connected
//! components: every component of more than one module is a cycle, reported
//! with its edges. A reference inside an inline non-test `mod` block is
//! resolved as if it were at file level (none of `src/` has one that uses
//! `super::`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges of cycles that another lane of issue 13 cuts (none left: the
/// plan lane cut deliver -> session -> progress -> deliver).
const ALLOWED_EDGES: &[(&str, &str)] = &[];

type Graph = BTreeMap<String, BTreeSet<String>>;

#[test]
fn src_modules_have_no_import_cycle() {
    let graph = src_graph();
    assert!(
        graph.len() > 10,
        "too few modules found under src/: {:?}",
        graph.keys()
    );
    let stale: Vec<String> = ALLOWED_EDGES
        .iter()
        .filter(|(from, to)| !graph.get(*from).is_some_and(|deps| deps.contains(*to)))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED_EDGES lists edges that no longer exist; remove them: {stale:?}"
    );
    let mut checked = graph.clone();
    for (from, to) in ALLOWED_EDGES {
        if let Some(deps) = checked.get_mut(*from) {
            deps.remove(*to);
        }
    }
    let cycles = cycles(&checked);
    assert!(
        cycles.is_empty(),
        "import cycles among src modules (each line: module -> its dependencies \
         in the same cycle):\n{}",
        cycles.join("\n\n")
    );
}

/// The graph of `src/`: top-level module -> the top-level modules it names.
fn src_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = Graph::new();
    let mut sources = Vec::new();
    for file in files {
        let Ok(relative) = file.strip_prefix(&src) else {
            continue;
        };
        let Some(path) = module_path(relative) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        graph.entry(path[0].clone()).or_default();
        sources.push((path, text));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for (path, text) in sources {
        let code = strip_test_items(&strip_comments_and_literals(&text));
        let deps = references(&code, &path);
        let top = &path[0];
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(
            deps.into_iter()
                .filter(|dep| dep != top && modules.contains(dep)),
        );
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `smtp/client.rs` -> [smtp, client]; `dns/mod.rs` -> [dns]; None for
/// the crate root and for sibling test files.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.last()?.clone();
    if last.ends_with("_tests") || (parts.len() == 1 && (last == "main" || last == "lib")) {
        return None;
    }
    if last == "mod" {
        parts.pop();
    }
    (!parts.is_empty()).then_some(parts)
}

/// The source with comments removed and the contents of string and
/// character literals blanked (`""`, `' '`), so that neither can hide or
/// fake a reference or a brace.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (at(i + 1) == '"' || at(i + 1) == '#')
            && (i == 0
                || !ident(chars[i - 1])
                || (chars[i - 1] == 'b' && (i < 2 || !ident(chars[i - 2]))))
        {
            // Raw string r"…", r#"…"#, br#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), else a lifetime.
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code without `#[cfg(test)]` items: the attribute, any further
/// attributes, and the item up to its `;` or its balanced `{…}` block.
fn strip_test_items(code: &str) -> String {
    const MARK: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(start) = rest.find(MARK) {
        out.push_str(&rest[..start]);
        let item = &rest[start + MARK.len()..];
        let mut depth = 0usize;
        let mut end = item.len();
        let mut brackets = 0usize;
        for (i, c) in item.char_indices() {
            match c {
                '[' => brackets += 1,
                ']' => brackets = brackets.saturating_sub(1),
                ';' if depth == 0 && brackets == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules `code` (of the module at `path`) refers to.
fn references(code: &str, path: &[String]) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ident_at = |from: usize| -> &str {
        let len = bytes[from..].iter().take_while(|&&b| ident_byte(b)).count();
        &code[from..from + len]
    };
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !ident_byte(bytes[i - 1]);
        if starts_word && code[i..].starts_with("crate::") {
            let after = i + "crate::".len();
            if bytes.get(after) == Some(&b'{') {
                deps.extend(group_heads(code, after));
            } else {
                let name = ident_at(after);
                if !name.is_empty() {
                    deps.insert(name.to_string());
                }
            }
            i = after;
        } else if starts_word && code[i..].starts_with("super::") {
            // super:: is the parent of this file's module; each further
            // super:: goes one level up.
            let mut module = path.to_vec();
            let mut j = i;
            while code[j..].starts_with("super::") {
                module.pop();
                j += "super::".len();
            }
            match module.first() {
                Some(top) => {
                    deps.insert(top.clone());
                }
                None if bytes.get(j) == Some(&b'{') => deps.extend(group_heads(code, j)),
                None => {
                    let name = ident_at(j);
                    if !name.is_empty() {
                        deps.insert(name.to_string());
                    }
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    deps
}

/// The first name of every element of the `{a, b::c, d::{e, f}}` group
/// that opens at byte `open`.
fn group_heads(code: &str, open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    let mut current = String::new();
    for c in code[open..].chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    expecting = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                if !current.is_empty() {
                    heads.push(std::mem::take(&mut current));
                }
                expecting = true;
            }
            c if depth == 1 && expecting && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ if depth == 1 && expecting && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                expecting = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// Every strongly connected component of more than one module (Tarjan),
/// each as lines `module -> [dependencies in the component]`.
fn cycles(graph: &Graph) -> Vec<String> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        components: Vec<Vec<&'g str>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.graph.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort_unstable();
                    self.components.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan
        .components
        .iter()
        .map(|component| {
            component
                .iter()
                .map(|m| {
                    let inside: Vec<&str> = graph[*m]
                        .iter()
                        .map(String::as_str)
                        .filter(|d| component.contains(d))
                        .collect();
                    format!("{m} -> {inside:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

// The checker's own parts, on small inputs.

fn graph_of(edges: &[(&str, &str)]) -> Graph {
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string());
        graph.entry(to.to_string()).or_default();
    }
    graph
}

#[test]
fn tarjan_reports_every_cycle_and_nothing_else() {
    let graph = graph_of(&[
        ("a", "b"),
        ("b", "a"),
        ("b", "c"),
        ("c", "d"),
        ("d", "e"),
        ("e", "c"),
        ("e", "f"),
    ]);
    assert_eq!(
        cycles(&graph),
        vec![
            "c -> [\"d\"]\nd -> [\"e\"]\ne -> [\"c\"]".to_string(),
            "a -> [\"b\"]\nb -> [\"a\"]".to_string(),
        ]
    );
    assert!(cycles(&graph_of(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
}

#[test]
fn references_count_paths_groups_and_super_but_not_comments_strings_or_tests() {
    let source = r##"
//! Uses crate::doc_comment in prose only.
use crate::dsn::{self, Dsn};
use crate::{alpha, beta::Thing, gamma::{x, y}};
/* crate::block_comment /* nested crate::nested */ */
fn f() -> &'static str {
    let _c = '"';
    let _s = "crate::in_string \" crate::escaped";
    let _r = r#"crate::in_raw "quoted""#;
    let _p = crate::delta::run();
    "x"
}
pub(crate) fn g<'a>(x: &'a str) -> &'a str { super::epsilon::h(x) }
#[cfg(test)]
#[path = "m_tests.rs"]
mod tests;
#[cfg(test)]
mod more {
    use crate::test_only;
    fn t() { let _ = "}"; }
}
fn after() { crate::zeta::z(); }
"##;
    let code = strip_test_items(&strip_comments_and_literals(source));
    let top: Vec<String> = vec!["m".into()];
    let found: Vec<String> = references(&code, &top).into_iter().collect();
    assert_eq!(
        found,
        ["alpha", "beta", "delta", "dsn", "epsilon", "gamma", "zeta"]
    );
    // In a submodule file, super:: is its parent: the same top-level module.
    let nested: Vec<String> = vec!["smtp".into(), "client".into()];
    let found: Vec<String> = references("use super::reply::Reply;", &nested)
        .into_iter()
        .collect();
    assert_eq!(found, ["smtp"]);
    let found: Vec<String> = references("use super::super::dsn::Dsn;", &nested)
        .into_iter()
        .collect();
    assert_eq!(found, ["dsn"]);
}

#[test]
fn module_paths_skip_roots_and_sibling_tests() {
    let path = |p: &str| module_path(Path::new(p));
    assert_eq!(path("deliver.rs"), Some(vec!["deliver".to_string()]));
    assert_eq!(path("dns/mod.rs"), Some(vec!["dns".to_string()]));
    assert_eq!(
        path("smtp/client.rs"),
        Some(vec!["smtp".to_string(), "client".to_string()])
    );
    assert_eq!(path("deliver_tests.rs"), None);
    assert_eq!(path("lib.rs"), None);
    assert_eq!(path("main.rs"), None);
}
