//! The committed JSON Schemas are exactly what `prun schema` prints (no drift), and every
//! pipeline file in `pipelines/` points editors at the schema.

use std::path::Path;

use assert_cmd::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_output(kind: &str) -> String {
    let out = Command::cargo_bin("prun")
        .unwrap()
        .args(["schema", kind])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_schemas_match_the_code() {
    for kind in ["pipeline", "report"] {
        let path = manifest().join(format!("schemas/{kind}.schema.json"));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = schema_output(kind);
        assert!(
            committed == generated,
            "schemas/{kind}.schema.json is out of date: run `cargo run -- schema {kind} > schemas/{kind}.schema.json`"
        );
        let v: serde_json::Value = serde_json::from_str(&generated).unwrap();
        assert!(
            v.get("$schema").is_some() || v.get("type").is_some(),
            "{kind}: not a schema"
        );
    }
}

#[test]
fn every_pipeline_carries_the_schema_line() {
    let mut count = 0;
    for e in std::fs::read_dir(manifest().join("pipelines"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap();
        let first = text.lines().next().unwrap_or("");
        assert_eq!(
            first,
            "# yaml-language-server: $schema=../schemas/pipeline.schema.json",
            "{}",
            e.path().display()
        );
        count += 1;
    }
    assert!(count >= 9);
}

#[test]
fn every_diagnostic_code_is_documented() {
    let docs = std::fs::read_to_string(manifest().join("docs/diagnostics.md")).unwrap();
    let re = regex::Regex::new(r#"Diagnostic::(?:error|warning)\(\s*"([a-z-]+)""#).unwrap();
    let mut codes: Vec<String> = [
        "unknown-queue",
        "unknown-stage",
        "unknown-event",
        "unknown-semaphore",
        "replicas-range",
        "parallel-range",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut stack = vec![manifest().join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                codes.extend(re.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    assert!(codes.len() > 30);
    for code in codes {
        assert!(
            docs.contains(&format!("`prun::{code}`")),
            "docs/diagnostics.md lacks prun::{code}"
        );
    }
}

/// Editors validate files with the committed schema: it must accept every shipped
/// pipeline and reject the invalid cases that are about shape (unknown keys, bad words).
#[test]
fn committed_pipeline_schema_accepts_the_examples_and_rejects_bad_shapes() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(manifest().join("schemas/pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema itself is valid");
    let as_json = |path: &Path| -> serde_json::Value {
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut files: Vec<_> = std::fs::read_dir(manifest().join("pipelines"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.push(manifest().join("tests/valid/every-key.yaml"));
    for f in &files {
        let doc = as_json(f);
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
    for bad in [
        "unknown-key",
        "invalid-value",
        "ranges",
        "invalid-signal",
        "invalid-name",
    ] {
        let doc = as_json(&manifest().join(format!("tests/invalid/{bad}.yaml")));
        assert!(
            !validator.is_valid(&doc),
            "{bad} should be rejected by the schema"
        );
    }
}
