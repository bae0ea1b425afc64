//! Loading valid files: every key of the format is accepted, and the plan derived from
//! it (roles, wiring, waves, drain order) is pinned; plus a property test that feeds
//! mutated pipeline files to the loader and requires a diagnostic, never a panic.

use std::path::Path;

use assert_cmd::Command;
use proptest::prelude::*;

use prun::load::{LoadOptions, load_source};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_key_validates_without_problems() {
    let out = Command::cargo_bin("prun")
        .unwrap()
        .current_dir(manifest())
        .args(["validate", "--strict", "tests/valid/every-key.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_key_plan_is_pinned() {
    let out = Command::cargo_bin("prun")
        .unwrap()
        .current_dir(manifest())
        .args(["plan", "tests/valid/every-key.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(manifest().to_str().unwrap(), "[REPO]");
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/valid");
    settings.bind(|| insta::assert_snapshot!("every-key-plan", text));
}

#[test]
fn graph_formats() {
    for (format, needle) in [("dot", "digraph"), ("mermaid", "flowchart LR")] {
        let out = Command::cargo_bin("prun")
            .unwrap()
            .current_dir(manifest())
            .args(["graph", "--format", format, "tests/valid/every-key.yaml"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(needle), "{text}");
        assert!(text.contains("producer ×2"), "{text}");
    }
}

#[test]
fn set_overrides_a_param() {
    let out = Command::cargo_bin("prun")
        .unwrap()
        .current_dir(manifest())
        .args(["plan", "tests/valid/every-key.yaml", "--set", "count=7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

fn seeds() -> Vec<String> {
    let mut out =
        vec![std::fs::read_to_string(manifest().join("tests/valid/every-key.yaml")).unwrap()];
    for dir in ["pipelines", "tests/invalid"] {
        if let Ok(rd) = std::fs::read_dir(manifest().join(dir)) {
            for e in rd.flatten() {
                if let Ok(s) = std::fs::read_to_string(e.path()) {
                    out.push(s);
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    DeleteRange(usize, usize),
    Insert(usize, String),
    Duplicate(usize, usize),
    ReplaceByte(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let fragments = prop::sample::select(vec![
        "\t",
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        "&a ",
        "*a",
        "<<: ",
        "\n  ",
        "\n",
        "#",
        "${",
        "}",
        "${params.",
        "${item}",
        "null",
        "~",
        "99999999999999999999999",
        "-1",
        "1e999",
        "é",
        "包",
        "\u{0}",
        "stdin: q",
        "after: [",
        "x-",
        "? ",
        "!!binary ",
        "|\n",
        ">\n",
        "---\n",
        "...\n",
    ]);
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::DeleteRange(a, n)),
        (any::<usize>(), fragments).prop_map(|(a, f)| Mutation::Insert(a, f.to_string())),
        (any::<usize>(), 0usize..80).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::ReplaceByte(a, b)),
    ]
}

fn apply(src: &str, muts: &[Mutation]) -> String {
    let mut bytes = src.as_bytes().to_vec();
    for m in muts {
        let len = bytes.len().max(1);
        match m {
            Mutation::Truncate(a) => bytes.truncate(a % len),
            Mutation::DeleteRange(a, n) => {
                let start = a % len;
                let end = (start + n).min(bytes.len());
                if start < end {
                    bytes.drain(start..end);
                }
            }
            Mutation::Insert(a, f) => {
                let at = (a % len).min(bytes.len());
                bytes.splice(at..at, f.bytes());
            }
            Mutation::Duplicate(a, n) => {
                let start = (a % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                let chunk = bytes[start..end].to_vec();
                bytes.splice(end..end, chunk);
            }
            Mutation::ReplaceByte(a, b) => {
                if !bytes.is_empty() {
                    let i = a % bytes.len();
                    bytes[i] = *b;
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Mutated pipeline files never panic the loader; an invalid result always carries
    /// at least one error with a code.
    #[test]
    fn mutated_files_never_panic(seed in 0usize..1000, muts in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let src = apply(&seeds[seed % seeds.len()], &muts);
        let dir = manifest().join("tests/valid");
        let loaded = load_source("fuzz.yaml", &dir.join("fuzz.yaml"), src, &LoadOptions::default());
        if loaded.model.is_none() {
            prop_assert!(loaded.file.diagnostics.iter().any(|d| d.severity == prun::diag::Severity::Error));
        }
        for d in &loaded.file.diagnostics {
            prop_assert!(!d.code.is_empty());
            let _ = loaded.file.render_human(d, false);
        }
        let _ = loaded.file.to_json();
        if let Some(model) = loaded.model {
            let plan = prun::load::plan(model);
            let _ = prun::plan::show::render(&plan);
        }
    }
}
