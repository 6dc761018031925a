//! No module cycle inside any crate (issue #12): every `crates/*/src` tree and the binary's.
//!
//! Each source file is a node; `use` trees and inline paths (`crate::a::b`, `super::x`,
//! `self::y`, a child module's name) are its edges, resolved through `pub use` re-exports to the
//! file that defines the item, as a reader following the names would. Test code is left out
//! (`tests.rs` files and `#[cfg(test)]` modules): tests may reach anywhere. The scan reads text,
//! not the compiler's resolution: a path inside a string could add an edge, so a failure names
//! the files and the names that tie them, for a person to check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path from the crate root (`[]` is `lib.rs`/`main.rs`).
type ModPath = Vec<String>;

struct Module {
    /// Code with comments and test modules removed.
    code: String,
    /// `pub use` re-exports: name here → absolute path of what it names.
    reexports: BTreeMap<String, ModPath>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    let root = parts.is_empty() && matches!(stem, "lib" | "main");
    if stem != "mod" && !root {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "tests" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().unwrap() != "tests.rs"
        {
            out.push(path);
        }
    }
}

/// Drops comments and every `#[cfg(test)]` item (by brace matching), and blanks string
/// literals, so neither adds edges.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if text[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if text[i..].starts_with("/*") {
            i += text[i..].find("*/").map_or(b.len() - i, |e| e + 2);
        } else if b[i] == b'"' {
            // A string literal (raw strings with `#` are rare in our code and hold no paths).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\\' (lifetimes do not close with a quote).
            let end = text[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e);
            i = end + 1;
            out.push_str("' '");
        } else if text[i..].starts_with("#[cfg(test)]") {
            // Skip the attribute and the item it gates: up to its `;` or its balanced braces.
            i += "#[cfg(test)]".len();
            let mut depth = 0;
            while i < b.len() {
                match b[i] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        i += 1;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Expands a `use` tree (`a::{b, c::{d as e}, f::*}`) into paths, with the name each binds.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<(ModPath, Option<String>)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let base: Vec<String> = prefix.iter().cloned().chain(head).collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
        None => (tree, None),
    };
    let segs: Vec<String> = prefix
        .iter()
        .cloned()
        .chain(path.split("::").map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .collect();
    let name = alias.or_else(|| segs.last().cloned());
    out.push((segs, name.filter(|n| n != "*" && n != "self")));
}

/// Every `use` statement of `code`: (is it `pub`, the tree).
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        let word_start = before.chars().last().is_none_or(|c| !is_ident(c));
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e);
        if word_start {
            let line_start = before.rfind(['\n', ';', '{', '}']).map_or(0, |p| p + 1);
            let public = before[line_start..].trim_start().starts_with("pub");
            out.push((public, rest[at + 4..end].to_string()));
        }
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out
}

/// Makes `path` (as written in module `at`) absolute, or `None` for another crate's path.
fn absolute(path: &[String], at: &ModPath, modules: &BTreeMap<ModPath, Module>) -> Option<ModPath> {
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => at.clone(),
        "super" => {
            let mut p = at.clone();
            p.pop();
            let mut rest = rest;
            while rest.first().is_some_and(|s| s == "super") {
                p.pop();
                rest = &rest[1..];
            }
            return Some(p.into_iter().chain(rest.iter().cloned()).collect());
        }
        _ => {
            // A child module of this one, named without `self::`.
            let mut child = at.clone();
            child.push(first.clone());
            if !modules.contains_key(&child) {
                return None;
            }
            return Some(child.into_iter().chain(rest.iter().cloned()).collect());
        }
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module file `path` leads to: the longest module prefix, following re-exports.
fn resolve(mut path: ModPath, modules: &BTreeMap<ModPath, Module>) -> Option<ModPath> {
    for _ in 0..16 {
        let module = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))?;
        let Some(next) = path.get(module.len()) else {
            return Some(module);
        };
        match modules[&module].reexports.get(next) {
            Some(target) if *target != path[..=module.len()] => {
                path = target
                    .iter()
                    .cloned()
                    .chain(path[module.len() + 1..].iter().cloned())
                    .collect();
            }
            _ => return Some(module),
        }
    }
    None
}

/// Inline paths such as `crate::a::b::f(..)` or `child::T`, outside `use` statements.
fn inline_paths(code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1]) && chars[i - 1] != ':') {
            let mut segs = Vec::new();
            let mut j = i;
            loop {
                let s = j;
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                segs.push(chars[s..j].iter().collect::<String>());
                if j + 2 < chars.len()
                    && chars[j] == ':'
                    && chars[j + 1] == ':'
                    && is_ident(chars[j + 2])
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segs.len() > 1 {
                out.push(segs);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Edges of one crate: file → (file, names that tie them).
fn graph(src: &Path) -> BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules: BTreeMap<ModPath, Module> = files
        .into_iter()
        .map(|f| {
            let code = strip(&std::fs::read_to_string(&f).unwrap());
            (
                module_path(src, &f),
                Module {
                    code,
                    reexports: BTreeMap::new(),
                },
            )
        })
        .collect();
    let keys: Vec<ModPath> = modules.keys().cloned().collect();
    for at in &keys {
        let mut found = Vec::new();
        for (public, tree) in use_statements(&modules[at].code) {
            if public {
                expand(&tree, &[], &mut found);
            }
        }
        let reexports = found
            .into_iter()
            .filter_map(|(p, name)| Some((name?, absolute(&p, at, &modules)?)))
            .collect();
        modules.get_mut(at).unwrap().reexports = reexports;
    }
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> = BTreeMap::new();
    for at in &keys {
        let code = &modules[at].code;
        let mut paths = Vec::new();
        for (_, tree) in use_statements(code) {
            expand(&tree, &[], &mut paths);
        }
        let mut all: Vec<ModPath> = paths.into_iter().map(|(p, _)| p).collect();
        all.extend(inline_paths(code));
        for p in all {
            let Some(abs) = absolute(&p, at, &modules) else {
                continue;
            };
            let Some(target) = resolve(abs.clone(), &modules) else {
                continue;
            };
            // The root declares every module; ancestors naming descendants is how Rust works.
            if target.is_empty() || target == *at {
                continue;
            }
            let name = abs.last().cloned().unwrap_or_default();
            edges
                .entry(at.clone())
                .or_default()
                .entry(target)
                .or_default()
                .insert(name);
        }
    }
    edges
}

/// Strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(edges: &BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>) -> Vec<Vec<ModPath>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &ModPath) {
            let n = self.index.len();
            self.index.insert(v.clone(), n);
            self.low.insert(v.clone(), n);
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            let targets: Vec<ModPath> = self
                .edges
                .get(v)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            for w in targets {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let lw = self.low[&w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(&w) {
                    let iw = self.index[&w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(&w);
                    let done = w == *v;
                    scc.push(w);
                    if done {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}

fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out = vec![root.join("trustmesh/src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            out.push(src);
        }
    }
    out.sort();
    out
}

fn describe(
    src: &Path,
    scc: &[ModPath],
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>,
) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let krate = src.parent().unwrap();
    let krate = krate.strip_prefix(root).unwrap_or(krate);
    let name = |m: &ModPath| format!("{}::{}", krate.display(), m.join("::"));
    let mut text = format!(
        "cycle: {}\n",
        scc.iter().map(name).collect::<Vec<_>>().join(", ")
    );
    for from in scc {
        for (to, names) in edges.get(from).into_iter().flatten() {
            if scc.contains(to) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                text += &format!("  {} -> {}: {}\n", name(from), name(to), names.join(", "));
            }
        }
    }
    text
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut report = String::new();
    for src in crate_sources() {
        let edges = graph(&src);
        for scc in cycles(&edges) {
            report += &describe(&src, &scc, &edges);
        }
    }
    assert!(report.is_empty(), "module cycles (issue #12):\n{report}");
}

/// The layers of `crates/proxy` (docs/ARCHITECTURE.md), bottom first. A module may use its own
/// layer and those below, never one above: policy never imports a listener.
const PROXY_LAYERS: &[(&str, &[&str])] = &[
    (
        "L0 leaves",
        &[
            "adminstats",
            "clock",
            "config",
            "conn",
            "dialslot",
            "extauthz",
            "fastmap",
            "h1list",
            "h2io",
            "h2settings",
            "hex",
            "jwt",
            "loglevel",
            "metrics",
            "normalize",
            "originate",
            "peers",
            "rbacstats",
            "relay",
            "reqbody",
            "response",
            "sessions",
            "slots",
            "splice",
            "telemetry",
            "tls",
            "tunnel",
            "upgrade",
            "upstream",
            "workers",
        ],
    ),
    (
        "L1 decisions and records",
        &["accesslog", "authn", "authz", "outcome"],
    ),
    ("L2 the loaded world", &["mesh", "snapshot", "state"]),
    (
        "L3 request paths",
        &[
            "apppool", "custom", "forward", "http", "meshconn", "names", "route", "tcp",
        ],
    ),
    (
        "L4 listeners",
        &["admin", "captured", "hbone", "inbound", "outbound"],
    ),
    ("L5 lifecycle", &["reload", "run", "xds"]),
];

#[test]
fn proxy_edges_point_down_its_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let edges = graph(&root.join("crates/proxy/src"));
    let layer = |m: &ModPath| {
        let top = m.first().map(String::as_str).unwrap_or_default();
        PROXY_LAYERS
            .iter()
            .position(|(_, mods)| mods.contains(&top))
            .unwrap_or_else(|| panic!("crates/proxy module {top} is in no layer: add it to PROXY_LAYERS and docs/ARCHITECTURE.md"))
    };
    let mut up = Vec::new();
    // The crate root only declares and re-exports.
    for (from, targets) in edges.iter().filter(|(from, _)| !from.is_empty()) {
        for (to, names) in targets {
            if layer(to) > layer(from) {
                up.push(format!(
                    "{} ({}) -> {} ({}): {}",
                    from.join("::"),
                    PROXY_LAYERS[layer(from)].0,
                    to.join("::"),
                    PROXY_LAYERS[layer(to)].0,
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        up.is_empty(),
        "imports that run up the proxy's layers:\n{}",
        up.join("\n")
    );
    // Every module is placed (a new one must be given a layer).
    for m in edges.keys().filter(|m| !m.is_empty()) {
        layer(m);
    }
}

#[test]
fn the_scan_sees_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use a::Thing;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::{helper, other::More};\npub struct Thing;\n// crate::c::not_an_edge\n",
    )
    .unwrap();
    std::fs::write(src.join("b/mod.rs"), "pub mod other;\npub fn helper() {}\n").unwrap();
    std::fs::write(
        src.join("b/other.rs"),
        "pub struct More;\nfn f() -> crate::Thing { crate::Thing }\n#[cfg(test)]\nmod tests { use super::super::a; }\n",
    )
    .unwrap();
    let edges = graph(&src);
    let found = cycles(&edges);
    assert_eq!(
        found,
        vec![vec![
            vec!["a".to_string()],
            vec!["b".to_string(), "other".to_string()]
        ]],
        "{edges:?}"
    );
    // Take the inline path away and the cycle is gone (the test module does not count).
    std::fs::write(
        src.join("b/other.rs"),
        "pub struct More;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .unwrap();
    assert!(cycles(&graph(&src)).is_empty());
}
