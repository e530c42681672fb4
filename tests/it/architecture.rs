//! The layers of docs/ARCHITECTURE.md, checked against the code: each top-level module of the
//! library may name only the modules below it, whether in a `use` or in a path written inline
//! (`crate::run::conclude(..)`), so a driver can never become something the run depends on; and
//! no files import each other in a cycle, inline paths and `super::` included. (cargo-cycles,
//! run by `scripts/cycles`, reads `use` lines only: an inline path once hid a cycle of fifteen
//! files from it.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may name, bottom layer first.
const LAYERS: &[(&str, &[&str])] = &[
    ("protocol", &[]),
    ("ai_model", &[]),
    ("measure", &[]),
    ("config", &["protocol", "ai_model", "measure"]),
    ("scenarios", &["protocol", "ai_model", "measure", "config"]),
    ("run", &["protocol", "ai_model", "measure", "config", "scenarios"]),
    (
        "analysis",
        &["protocol", "ai_model", "measure", "config", "scenarios", "run"],
    ),
    ("webui", &["measure", "config", "run", "analysis"]),
    (
        "gaggle",
        &[
            "protocol",
            "measure",
            "config",
            "scenarios",
            "run",
            "analysis",
            "webui",
        ],
    ),
    (
        "cli",
        &[
            "config",
            "measure",
            "run",
            "analysis",
            "webui",
            "gaggle",
            "simulator",
        ],
    ),
    // A stand-in for a real agent: it shares the wire formats and nothing else.
    ("simulator", &["protocol", "ai_model"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules `text` names through `crate::`, in paths and in grouped imports
/// (`use crate::{config, measure::Snapshot}`).
fn named_modules(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(|item| ident(item.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

/// Which module a file belongs to: `src/run/goose.rs` and `src/run.rs` are both `run`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_names_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = top_module(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer: add it to LAYERS here and to docs/ARCHITECTURE.md",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for named in named_modules(&text) {
            if named != module && !may.contains(&named.as_str()) {
                wrong.push(format!("{}: `{module}` names `crate::{named}`", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or across the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_inline_paths_and_grouped_imports() {
    let text = "use crate::{config::plan, measure};\nfn f() { crate::run::conclude(); }";
    let named: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(named, ["config", "measure", "run"]);
}

/// A module's path from the crate root: `src/run/goose.rs` is `["run", "goose"]`, a `mod.rs` its
/// folder's path, `lib.rs` the root.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The paths `text` names through `crate::` and `super::`, resolved against `module` (the
/// module the text belongs to), as module paths with their item names still on the end.
fn named_paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        for (at, _) in text.match_indices(start) {
            if text[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue; // the tail of a longer path (`super::super::`), read from its head
            }
            let mut base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            };
            let mut rest = &text[at + start.len()..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            let mut path = base.clone();
            loop {
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for item in group.split(',') {
                        let mut p = path.clone();
                        p.extend(
                            item.trim()
                                .split("::")
                                .map(|s| s.chars().take_while(|c| is_ident(*c)).collect::<String>()),
                        );
                        out.push(p);
                    }
                    break;
                }
                let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                if ident.is_empty() {
                    break;
                }
                rest = &rest[ident.len()..];
                path.push(ident);
                match rest.strip_prefix("::") {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            out.push(path);
        }
    }
    out
}

/// The source a file's imports are read from: comments and its unit tests left out.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// File-level import edges: a file names a module (the longest module path that is a prefix of
/// what it names), neither itself nor one of its ancestors (a folder's `mod.rs` is where its
/// files meet).
fn file_edges() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files.iter().map(|f| (module_path(f), f.clone())).collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains_key(p))
    };
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let text = code_of(&std::fs::read_to_string(file).unwrap());
        let targets: BTreeSet<Vec<String>> = named_paths(&text, module)
            .iter()
            .filter_map(|p| resolve(p))
            .filter(|t| t != module && !module.starts_with(t))
            .collect();
        edges.insert(module.clone(), targets);
    }
    edges
}

/// One cycle in `edges`, if there is any.
fn a_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<Vec<String>>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&Vec<String>, Mark> = edges.keys().map(|k| (k, Mark::New)).collect();
    for root in edges.keys() {
        if mark[root] != Mark::New {
            continue;
        }
        // Depth-first, with the path kept: an edge back into it closes a cycle.
        let mut stack: Vec<(&Vec<String>, Vec<&Vec<String>>)> = vec![(root, edges[root].iter().collect())];
        mark.insert(root, Mark::Open);
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            match next.pop() {
                None => {
                    mark.insert(node, Mark::Done);
                    stack.pop();
                }
                Some(to) => match mark.get(to).copied().unwrap_or(Mark::Done) {
                    Mark::Open => {
                        let from = stack.iter().position(|(n, _)| *n == to).unwrap();
                        return Some(stack[from..].iter().map(|(n, _)| (*n).clone()).collect());
                    }
                    Mark::New => {
                        mark.insert(to, Mark::Open);
                        stack.push((to, edges[to].iter().collect()));
                    }
                    Mark::Done => {}
                },
            }
        }
    }
    None
}

#[test]
fn no_two_files_import_each_other_in_a_cycle() {
    let edges = file_edges();
    assert!(edges.len() > 50, "too few modules read: {}", edges.len());
    if let Some(cycle) = a_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
        panic!(
            "module import cycle: {} -> (back to the first)",
            names.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle_through_inline_paths() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let here = m("analysis::results");
    let named = named_paths(
        "fn f() { super::verdicts::judge(); crate::run::{record::X, goose}; }",
        &here,
    );
    assert!(named.contains(&m("analysis::verdicts::judge")), "{named:?}");
    assert!(
        named.contains(&m("run::record::X")) && named.contains(&m("run::goose")),
        "{named:?}"
    );
    let edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = [
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
        (m("d"), BTreeSet::new()),
    ]
    .into_iter()
    .collect();
    assert_eq!(a_cycle(&edges).map(|c| c.len()), Some(3));
    let acyclic: BTreeMap<_, _> = edges.into_iter().filter(|(k, _)| k != &m("c")).collect();
    assert_eq!(a_cycle(&acyclic), None);
}
