//! `prun validate` on bad input: every file in tests/invalid/ is a case whose rendered
//! diagnostics are pinned with an insta snapshot; the JSON and GitHub formats and the
//! exit codes are checked too.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid")
}

fn prun() -> Command {
    let mut c = Command::cargo_bin("prun").unwrap();
    c.env_remove("NO_COLOR")
        .env("PATH", std::env::var("PATH").unwrap());
    c
}

fn cases() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(invalid_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    names
}

fn extra_args(name: &str) -> Vec<&'static str> {
    if name == "unknown-set.yaml" {
        vec!["--set", "nope=1"]
    } else {
        vec![]
    }
}

#[test]
fn every_invalid_case_is_reported_and_pinned() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/invalid");
    settings.set_prepend_module_to_snapshot(false);
    for name in cases() {
        let out = prun()
            .current_dir(invalid_dir())
            .args(["validate", "--color", "never", &name])
            .args(extra_args(&name))
            .output()
            .unwrap();
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{name} panicked:\n{stderr}");
        let expect_valid = name == "warnings.yaml";
        assert_eq!(
            code,
            Some(if expect_valid { 0 } else { 1 }),
            "{name}:\n{stderr}"
        );
        settings.bind(|| {
            insta::assert_snapshot!(
                name.trim_end_matches(".yaml").to_string(),
                format!("exit: {code:?}\n{stderr}")
            );
        });
    }
}

#[test]
fn json_format_has_the_documented_fields() {
    let out = prun()
        .current_dir(invalid_dir())
        .args([
            "validate",
            "--format",
            "json",
            "unknown-references.yaml",
            "warnings.yaml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert!(items.len() >= 6, "{v:#}");
    for d in items {
        for key in [
            "file", "severity", "code", "message", "line", "column", "help",
        ] {
            assert!(d.get(key).is_some(), "missing {key} in {d}");
        }
    }
    let bun = items
        .iter()
        .find(|d| d["message"] == "unknown queue `bun`")
        .expect("unknown queue reported");
    assert_eq!(bun["file"], "unknown-references.yaml");
    assert_eq!(bun["code"], "prun::unknown-queue");
    assert_eq!(bun["severity"], "error");
    assert_eq!(
        (bun["line"].as_u64(), bun["column"].as_u64()),
        (Some(13), Some(12))
    );
    assert_eq!(bun["help"], "did you mean `buns`?");
    assert!(
        items
            .iter()
            .any(|d| d["severity"] == "warning" && d["file"] == "warnings.yaml")
    );
}

#[test]
fn github_format_emits_workflow_commands() {
    let out = prun()
        .current_dir(invalid_dir())
        .args(["validate", "--format", "github", "unknown-references.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("::error file=unknown-references.yaml,line=13,col=12,")
                && l.contains("unknown queue `bun`")
        ),
        "{text}"
    );
}

#[test]
fn strict_turns_warnings_into_errors() {
    let ok = prun()
        .current_dir(invalid_dir())
        .args(["validate", "warnings.yaml"])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    let strict = prun()
        .current_dir(invalid_dir())
        .args(["validate", "--strict", "warnings.yaml"])
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    prun().args(["validate"]).assert().code(2);
    prun()
        .args(["validate", "--format", "xml", "x.yaml"])
        .assert()
        .code(2);
    prun().args(["frobnicate", "--nope"]).assert().code(2);
}

#[test]
fn missing_file_and_directory_are_diagnostics() {
    let out = prun()
        .args(["validate", "/definitely/not/here.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = prun()
        .args(["validate", invalid_dir().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
}

#[test]
fn run_of_an_invalid_file_exits_2_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nstages:\n  a:\n    cmd: [touch, {m}]\n  b:\n    sh: touch {m}\n    stdin: nope\n",
            m = marker.display()
        ),
    )
    .unwrap();
    let out = prun().arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown queue `nope`"));
    assert!(!marker.exists(), "a stage was started");
}
