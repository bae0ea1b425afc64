//! No module cycles (issue 11): the top-level modules of `src/` must form a DAG, so
//! each phase can be read, tested and changed without the ones after it. This reads
//! every `crate::MODULE` path of the sources (comments excluded) and fails on any
//! cycle, naming its members.

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
