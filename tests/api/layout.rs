//! The source layout's rule (docs/architecture.md): no import cycles between
//! the files of `src/core` or of `src/edge`. Every `crate::…`, `super::…`,
//! `self::…` and child path outside comments and `#[cfg(test)]` code is
//! resolved to the file it names; a child may use its parents. Any
//! strongly connected group of two or more files fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Module = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The code of a file without comments and without its `#[cfg(test)]`
/// items (each skipped to its closing brace, or its `;`).
fn code(text: &str) -> String {
    let mut plain = String::new();
    for line in text.lines() {
        plain.push_str(line.split("//").next().unwrap_or_default());
        plain.push('\n');
    }
    let mut out = String::new();
    let mut rest = plain.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let (brace, semi) = (item.find('{'), item.find(';'));
        let end = match (brace, semi) {
            (Some(b), Some(s)) if s < b => s + 1,
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Paths like `a::b::c` in `code`, as segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i <= bytes.len() {
        let c = bytes.get(i).copied().unwrap_or(' ');
        if c.is_alphanumeric() || c == '_' || (c == ':' && bytes.get(i + 1) == Some(&':')) {
            if c == ':' {
                cur.push_str("::");
                i += 2;
                continue;
            }
            cur.push(c);
        } else {
            if cur.contains("::") {
                out.push(cur.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
            }
            cur.clear();
        }
        i += 1;
    }
    out
}

fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut cur, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (vec![], &path[1..]),
        Some("super") => (from[..from.len().saturating_sub(1)].to_vec(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_string());
            if !modules.contains(&child) {
                return None;
            }
            (from.clone(), path)
        }
        None => return None,
    };
    let mut rest = rest;
    while rest.first().is_some_and(|s| s == "super") {
        cur.pop();
        rest = &rest[1..];
    }
    let mut best = modules.contains(&cur).then(|| cur.clone());
    for seg in rest {
        cur.push(seg.clone());
        if modules.contains(&cur) {
            best = Some(cur.clone());
        } else {
            break;
        }
    }
    best
}

#[test]
fn no_import_cycles_in_core_or_edge() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut list = Vec::new();
    files(&src, &mut list);
    let modules: BTreeSet<Module> = list.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &list {
        let m = module_of(&src, f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        let targets = edges.entry(m.clone()).or_default();
        for p in paths(&text) {
            if let Some(t) = resolve(&m, &p, &modules) {
                // Not itself, and not its own parents: a child may use what
                // its parent holds for all its children.
                if t != m && !m.starts_with(&t) {
                    targets.insert(t);
                }
            }
        }
    }
    // Strongly connected groups (Tarjan).
    struct Walk<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        groups: Vec<Vec<Module>>,
    }
    fn visit(w: &mut Walk<'_>, v: &Module) {
        let n = w.index.len();
        w.index.insert(v.clone(), n);
        w.low.insert(v.clone(), n);
        w.stack.push(v.clone());
        for t in w.edges.get(v).cloned().unwrap_or_default() {
            if !w.index.contains_key(&t) {
                visit(w, &t);
                let l = w.low[&t].min(w.low[v]);
                w.low.insert(v.clone(), l);
            } else if w.stack.contains(&t) {
                let l = w.index[&t].min(w.low[v]);
                w.low.insert(v.clone(), l);
            }
        }
        if w.low[v] == w.index[v] {
            let mut group = Vec::new();
            while let Some(t) = w.stack.pop() {
                let done = &t == v;
                group.push(t);
                if done {
                    break;
                }
            }
            if group.len() > 1 {
                w.groups.push(group);
            }
        }
    }
    let mut w = Walk { edges: &edges, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], groups: vec![] };
    for m in &modules {
        if !w.index.contains_key(m) {
            visit(&mut w, m);
        }
    }
    let cycles: Vec<String> = w
        .groups
        .iter()
        .filter(|g| g.iter().any(|m| matches!(m.first().map(String::as_str), Some("core" | "edge"))))
        .map(|g| g.iter().map(|m| m.join("::")).collect::<Vec<_>>().join(" <-> "))
        .collect();
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 300, "the paths were read");
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}
