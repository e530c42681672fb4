//! The layers of docs/ARCHITECTURE.md, checked against the code: each top-level module of the
//! library may name only the modules below it, whether in a `use` or in a path written inline
//! (`crate::run::conclude(..)`), so a driver can never become something the run depends on.
//! (`scripts/cycles` finds cycles between files within a layer.)

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
