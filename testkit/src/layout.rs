//! Source-layout checks: the modules of a crate import each other in one direction only, and no
//! file grows past [`MAX_LINES`] without saying why at its top.
//!
//! The import graph is read from the source text: every `crate::a::b` and `super::x` path
//! outside comments, resolved to the longest module prefix that exists. Two levels are checked:
//! the crate's top-level modules, and the children of each module among themselves (a child's
//! use of its parent's shared types, and a parent's re-exports of its children, are the shape
//! of a module, not a circle). Method calls across `impl` blocks in sibling files are not
//! imports and are not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a source file may have without a reason written at its top.
pub const MAX_LINES: usize = 600;

/// The marker a longer file's module doc carries, followed by its reason.
pub const LONG_FILE_MARKER: &str = "Longer than 600 lines because";

/// A crate's modules (`a::b`), each with the modules it imports.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Imports by module; the crate root is `""`.
    pub imports: BTreeMap<String, BTreeSet<String>>,
}

impl ModuleGraph {
    /// Reads every `.rs` file under `src` except binaries (`src/bin/`, `main.rs`).
    pub fn read(src: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        collect(src, &mut files)?;
        let mut modules: BTreeMap<String, String> = BTreeMap::new();
        for file in &files {
            let rel = file.strip_prefix(src).unwrap_or(file);
            if rel.starts_with("bin") || rel == Path::new("main.rs") {
                continue;
            }
            modules.insert(module_of(rel), std::fs::read_to_string(file)?);
        }
        let known: BTreeSet<String> = modules.keys().cloned().collect();
        let mut graph = ModuleGraph::default();
        for (module, text) in &modules {
            let mut targets = BTreeSet::new();
            for path in paths(&strip_comments(text)) {
                let absolute = match path.strip_prefix("crate::") {
                    Some(rest) => rest.to_owned(),
                    None => match resolve_super(module, &path) {
                        Some(p) => p,
                        None => continue,
                    },
                };
                if let Some(target) = longest_module(&known, &absolute)
                    && target != *module
                {
                    targets.insert(target);
                }
            }
            graph.imports.insert(module.clone(), targets);
        }
        Ok(graph)
    }

    /// Import circles: among the top-level modules, and among the children of each module.
    /// Each circle is listed as its modules in order.
    pub fn circles(&self) -> Vec<Vec<String>> {
        let mut groups: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for (from, targets) in &self.imports {
            for to in targets {
                // The pair's common parent, and the child of it on each side.
                let (parent, a, b) = split_common(from, to);
                if let (Some(a), Some(b)) = (a, b) {
                    groups
                        .entry(parent)
                        .or_default()
                        .entry(a)
                        .or_default()
                        .insert(b);
                }
            }
        }
        let mut found = Vec::new();
        for (parent, edges) in groups {
            for circle in find_circles(&edges) {
                found.push(
                    circle
                        .into_iter()
                        .map(|m| join(&parent, &m))
                        .collect::<Vec<_>>(),
                );
            }
        }
        found
    }
}

/// Files under `src` longer than [`MAX_LINES`] whose first lines do not give a reason.
pub fn long_files(src: &Path) -> std::io::Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let lines = text.lines().count();
        let head: String = text.lines().take(30).collect::<Vec<_>>().join("\n");
        if lines > MAX_LINES && !head.contains(LONG_FILE_MARKER) {
            long.push((file, lines));
        }
    }
    Ok(long)
}

/// Panics with every circle and every unexplained long file under `src`.
pub fn assert_layout(src: &Path) {
    let graph = ModuleGraph::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let circles = graph.circles();
    let long = long_files(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    assert!(
        circles.is_empty() && long.is_empty(),
        "{}: import circles {circles:?}; files over {MAX_LINES} lines without \"{LONG_FILE_MARKER}\" at their top: {long:?}",
        src.display()
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` is the root, `""`.
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The text without `//` comments (line and doc comments) and without string contents
/// (good enough for paths: Chorus has no block comments in code).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = '\0';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every `crate::…` and `super::…` path, with `{a, b::c}` groups expanded one level.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for start in ["crate::", "super::"] {
        let mut at = 0;
        while let Some(i) = code[at..].find(start) {
            let begin = at + i;
            at = begin + start.len();
            let before = code[..begin].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[begin..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(':').to_owned();
            if rest[end..].starts_with('{')
                && let Some(close) = rest[end..].find('}')
            {
                for item in rest[end + 1..end + close].split(',') {
                    let item = item.split_whitespace().next().unwrap_or("");
                    if !item.is_empty() {
                        found.push(format!("{path}::{}", item.trim_start_matches("self")));
                    }
                }
            }
            found.push(path);
        }
    }
    found
}

/// `super::x` inside `module` as a path from the crate root.
fn resolve_super(module: &str, path: &str) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut rest = path;
    while let Some(r) = rest.strip_prefix("super::") {
        base.pop()?;
        rest = r;
    }
    if rest == "super" {
        base.pop()?;
        rest = "";
    }
    let mut parts: Vec<&str> = base;
    parts.extend(rest.split("::").filter(|p| !p.is_empty()));
    Some(parts.join("::"))
}

/// The longest prefix of `path` that is a module (the root `""` when none is).
fn longest_module(known: &BTreeSet<String>, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
    (0..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|candidate| known.contains(candidate))
}

/// The common parent of two modules and the child of it that each lies in (`None`: the
/// module is the parent itself).
fn split_common(a: &str, b: &str) -> (String, Option<String>, Option<String>) {
    let pa: Vec<&str> = a.split("::").filter(|p| !p.is_empty()).collect();
    let pb: Vec<&str> = b.split("::").filter(|p| !p.is_empty()).collect();
    let common = pa.iter().zip(&pb).take_while(|(x, y)| x == y).count();
    (
        pa[..common].join("::"),
        pa.get(common).map(|s| (*s).to_owned()),
        pb.get(common).map(|s| (*s).to_owned()),
    )
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// The circles of a small directed graph, each once, from a depth-first search.
fn find_circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut circles: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in edges.get(&node).into_iter().flatten() {
                if next == start {
                    // Rotated to its smallest member so that each circle is listed once.
                    let min = path
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, m)| *m)
                        .map_or(0, |(i, _)| i);
                    let mut circle = path[min..].to_vec();
                    circle.extend_from_slice(&path[..min]);
                    circles.insert(circle);
                } else if !path.contains(next) && path.len() < 12 {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    circles.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> ModuleGraph {
        let mut g = ModuleGraph::default();
        for (a, b) in edges {
            g.imports
                .entry((*a).to_owned())
                .or_default()
                .insert((*b).to_owned());
        }
        g
    }

    #[test]
    fn a_circle_between_top_level_modules_is_found_through_their_children() {
        let g = graph(&[("hub::fanout", "node"), ("node", "hub")]);
        assert_eq!(g.circles(), vec![vec!["hub".to_owned(), "node".to_owned()]]);
    }

    #[test]
    fn a_child_using_its_parent_is_not_a_circle() {
        let g = graph(&[("chat::members", "chat"), ("chat", "chat::members")]);
        assert!(g.circles().is_empty());
    }

    #[test]
    fn siblings_importing_each_other_are_a_circle() {
        let g = graph(&[
            ("chat::a", "chat::b"),
            ("chat::b", "chat::c"),
            ("chat::c", "chat::a"),
        ]);
        assert_eq!(
            g.circles(),
            vec![vec![
                "chat::a".to_owned(),
                "chat::b".to_owned(),
                "chat::c".to_owned()
            ]]
        );
    }

    #[test]
    fn paths_are_read_from_code_not_comments_or_strings() {
        let code = strip_comments(
            "use crate::hub::{Hub, fanout::Fanout};\n// crate::node\nlet s = \"crate::chat\";\nsuper::x::y();\n",
        );
        let found = paths(&code);
        assert!(found.contains(&"crate::hub::Hub".to_owned()));
        assert!(found.contains(&"crate::hub::fanout::Fanout".to_owned()));
        assert!(found.contains(&"super::x::y".to_owned()));
        assert!(
            !found
                .iter()
                .any(|p| p.contains("node") || p.contains("chat"))
        );
    }

    #[test]
    fn super_resolves_from_the_module() {
        assert_eq!(
            resolve_super("chat::members", "super::access::role_rank").unwrap(),
            "chat::access::role_rank"
        );
        assert_eq!(resolve_super("a::b::c", "super::super::x").unwrap(), "a::x");
        assert_eq!(module_of(Path::new("chat/mod.rs")), "chat");
        assert_eq!(module_of(Path::new("chat/members.rs")), "chat::members");
        assert_eq!(module_of(Path::new("lib.rs")), "");
    }
}
