//! No module cycles (issue 11): the top-level modules of `src/` must form a DAG, so
//! each phase can be read, tested and changed without the ones after it. This reads
//! every `crate::MODULE` path of the sources (comments excluded) and fails on any
//! cycle, naming its members; within each folder, no file imports a sibling that
//! imports it back; and no source file is over 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles known on main and owned by work in progress; each must still exist (so
/// the list shrinks as they are fixed). Empty is the goal.
const KNOWN: &[&[&str]] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let path_re = regex::Regex::new(r"crate::([a-z_][a-z0-9_]*)").unwrap();
    let group_re = regex::Regex::new(r"crate::\{([^}]*)\}").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for c in path_re.captures_iter(code) {
                deps.insert(c[1].to_string());
            }
            for c in group_re.captures_iter(code) {
                for part in c[1].split(',') {
                    let name = part.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() && name != "self" {
                        deps.insert(name.to_string());
                    }
                }
            }
        }
        deps.remove(&module);
    }
    graph
}

/// Strongly connected components with more than one member (Tarjan's algorithm,
/// via petgraph).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut g = petgraph::graph::DiGraph::<String, ()>::new();
    let mut idx = BTreeMap::new();
    for name in graph.keys().chain(graph.values().flatten()) {
        idx.entry(name.clone())
            .or_insert_with(|| g.add_node(name.clone()));
    }
    for (from, tos) in graph {
        for to in tos {
            g.add_edge(idx[from], idx[to], ());
        }
    }
    let mut out: Vec<Vec<String>> = petgraph::algo::tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.iter().map(|i| g[*i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    assert!(
        graph.contains_key("syntax") && graph.contains_key("plan"),
        "{graph:?}"
    );
    let found = cycles(&graph);
    let known: Vec<Vec<String>> = KNOWN
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: Vec<&Vec<String>> = found.iter().filter(|c| !known.contains(c)).collect();
    assert!(new.is_empty(), "module cycles: {new:?}\nedges: {graph:#?}");
    for k in &known {
        assert!(
            found.contains(k),
            "the cycle {k:?} is gone: remove it from KNOWN in tests/modules.rs"
        );
    }
}

#[test]
fn the_static_half_depends_only_forward() {
    // syntax → model → graph → plan; vocab and diag are leaves of shared words.
    let graph = module_graph();
    let allowed: &[(&str, &[&str])] = &[
        ("vocab", &[]),
        ("diag", &[]),
        ("syntax", &["diag", "vocab"]),
        ("plan", &["vocab"]),
        ("model", &["diag", "plan", "syntax", "vocab"]),
        ("graph", &["diag", "model", "plan", "vocab"]),
    ];
    for (module, deps) in allowed {
        let got = graph.get(*module).cloned().unwrap_or_default();
        let extra: Vec<&String> = got.iter().filter(|d| !deps.contains(&d.as_str())).collect();
        assert!(
            extra.is_empty(),
            "`{module}` depends on {extra:?}, only {deps:?} allowed"
        );
    }
}

/// Within each folder of `src/`: sibling file → the sibling files it names through
/// `super::NAME` (the folder's `mod.rs` is the parent every room may use, not a
/// sibling). A room that imports a room that imports it back is one concern in two
/// files: split by types (leaves) and behaviour instead.
fn sibling_graphs() -> Vec<(PathBuf, BTreeMap<String, BTreeSet<String>>)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let path_re = regex::Regex::new(r"\bsuper::([a-z_][a-z0-9_]*)").unwrap();
    let group_re = regex::Regex::new(r"\bsuper::\{([^}]*)\}").unwrap();
    let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        by_dir
            .entry(f.parent().unwrap().to_path_buf())
            .or_default()
            .push(f);
    }
    let mut out = Vec::new();
    for (dir, files) in by_dir {
        let module_of = |f: &Path| f.file_stem().unwrap().to_string_lossy().to_string();
        let mut siblings: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().join("mod.rs").is_file() {
                siblings.insert(e.file_name().to_string_lossy().to_string());
            }
        }
        siblings.remove("mod");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let module = module_of(f);
            if module == "mod" {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            let deps = graph.entry(module.clone()).or_default();
            // Only the file's own code: a `mod tests` inside it uses `super` for the file.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut names: Vec<String> = path_re
                    .captures_iter(code)
                    .map(|c| c[1].to_string())
                    .collect();
                for c in group_re.captures_iter(code) {
                    for part in c[1].split(',') {
                        names.push(
                            part.trim()
                                .split("::")
                                .next()
                                .unwrap_or("")
                                .trim()
                                .to_string(),
                        );
                    }
                }
                deps.extend(names.into_iter().filter(|n| siblings.contains(n)));
            }
            deps.remove(&module);
        }
        out.push((dir, graph));
    }
    out
}

#[test]
fn no_room_imports_a_room_that_imports_it() {
    let graphs = sibling_graphs();
    assert!(
        graphs
            .iter()
            .any(|(d, g)| d.ends_with("runtime/router") && !g.is_empty()),
        "the router's rooms are read"
    );
    let mut found = Vec::new();
    for (dir, graph) in &graphs {
        for c in cycles(graph) {
            found.push(format!("{}: {c:?}", dir.display()));
        }
    }
    assert!(found.is_empty(), "file cycles within a folder: {found:#?}");
}

#[test]
fn a_cycle_is_found() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

/// Files that are still bigger than a room should be, each owned by work in progress;
/// each must still be over the limit (so the list shrinks). Empty is the goal.
const OVERSIZE: &[&str] = &[];

/// Most lines a source file may have: a file owns one concern (ARCHITECTURE.md).
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_holds_more_than_one_room() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut big: Vec<(String, usize)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (rel, lines)
        })
        .filter(|(_, n)| *n > MAX_LINES)
        .collect();
    big.sort();
    let new: Vec<&(String, usize)> = big
        .iter()
        .filter(|(f, _)| !OVERSIZE.contains(&f.as_str()))
        .collect();
    assert!(
        new.is_empty(),
        "files over {MAX_LINES} lines (split them by concern): {new:?}"
    );
    for known in OVERSIZE {
        assert!(
            big.iter().any(|(f, _)| f == known),
            "{known} is now at most {MAX_LINES} lines: remove it from OVERSIZE in tests/modules.rs"
        );
    }
}
