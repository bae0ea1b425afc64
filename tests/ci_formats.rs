//! CI formats of `prun validate` (SPEC 7, issue 14): end positions in JSON and GitHub
//! annotations, root causes before their knock-on errors, what does not fit in GitHub's
//! ten annotations summarized, SARIF 2.1.0. And `validate` never panics: a closed
//! stdout or stderr, an error past column 65,535.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn prun(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .unwrap()
}

/// `stdout: bun` where `buns` was meant: the root cause (unknown queue) is written
/// after its knock-on effect (queue `buns` has no writer) in the file.
const TYPO: &str = "version: 1\nqueues:\n  buns: {}\nstages:\n  chef:\n    cmd: [echo]\n    stdout: bun\n  eater:\n    cmd: [cat]\n    stdin: buns\n";

#[test]
fn json_and_github_carry_end_positions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), TYPO).unwrap();
    let out = prun(dir.path(), &["validate", "--format", "json", "p.yaml"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bun = v
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "prun::unknown-queue")
        .unwrap();
    assert_eq!(
        (
            &bun["line"],
            &bun["column"],
            &bun["end_line"],
            &bun["end_column"]
        ),
        (&7.into(), &13.into(), &7.into(), &16.into())
    );
    let out = prun(dir.path(), &["validate", "--format", "github", "p.yaml"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("::error file=p.yaml,line=7,col=13,endLine=7,endColumn=16,title=prun%3A%3Aunknown-queue::"),
        "{text}"
    );
}

#[test]
fn github_puts_root_causes_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), TYPO).unwrap();
    let out = prun(dir.path(), &["validate", "--format", "github", "p.yaml"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("unknown-queue"), "{text}");
    assert!(lines[1].contains("queue-without-writer"), "{text}");
    // JSON keeps file order.
    let out = prun(dir.path(), &["validate", "--format", "json", "p.yaml"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["code"], "prun::queue-without-writer");
}

#[test]
fn github_summarizes_what_does_not_fit_in_ten() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("version: 1\nstages:\n  a:\n    cmd: [echo]\n");
    for i in 0..14 {
        yaml.push_str(&format!("    nope{i}: 1\n"));
    }
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = prun(dir.path(), &["validate", "--format", "github", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 10, "{text}");
    assert!(
        lines[..9]
            .iter()
            .all(|l| l.starts_with("::error file=p.yaml"))
    );
    assert!(
        lines[9].starts_with("::error title=prun%3A%3Amore-errors::5 more errors not annotated"),
        "{}",
        lines[9]
    );
    assert!(lines[9].contains("prun::unknown-key"));
    // The rest is in the step's log.
    let log = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("error: unknown key"))
            .count(),
        5,
        "{log}"
    );
}

#[test]
fn sarif_2_1_0_with_rules_regions_and_related_locations() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), TYPO).unwrap();
    std::fs::write(
        dir.path().join("dup.yaml"),
        "version: 1\nstages:\n  a: {cmd: [echo]}\n  a: {cmd: [echo]}\n",
    )
    .unwrap();
    let out = prun(
        dir.path(),
        &["validate", "--format", "sarif", "p.yaml", "dup.yaml"],
    );
    assert_eq!(out.status.code(), Some(1));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(log["version"], "2.1.0");
    assert_eq!(
        log["$schema"],
        "https://json.schemastore.org/sarif-2.1.0.json"
    );
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "prun");
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let results = run["results"].as_array().unwrap();
    assert!(results.len() >= 3);
    for r in results {
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx], r["ruleId"], "ruleIndex points at the rule");
        assert!(matches!(r["level"].as_str(), Some("error" | "warning")));
        let region = &r["locations"][0]["physicalLocation"]["region"];
        for k in ["startLine", "startColumn", "endLine", "endColumn"] {
            assert!(region[k].as_u64().unwrap() >= 1, "{k}: {r}");
        }
    }
    let bun = results
        .iter()
        .find(|r| r["ruleId"] == "prun::unknown-queue")
        .unwrap();
    assert_eq!(
        bun["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "p.yaml"
    );
    assert_eq!(
        bun["locations"][0]["physicalLocation"]["region"]["startLine"],
        7
    );
    let dup = results
        .iter()
        .find(|r| r["ruleId"] == "prun::duplicate-key")
        .unwrap();
    assert_eq!(
        dup["relatedLocations"][0]["physicalLocation"]["region"]["startLine"],
        3
    );
}

#[test]
fn a_closed_stdout_or_stderr_ends_validate_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("version: 1\nstages:\n  a:\n    cmd: [echo]\n");
    for i in 0..2000 {
        yaml.push_str(&format!("    nope{i}: 1\n"));
    }
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    for format in ["human", "json", "github", "sarif"] {
        // Both streams into a pipe whose reader is gone (`2>&1 | head -c 20`).
        let mut child = Command::new(env!("CARGO_BIN_EXE_prun"))
            .current_dir(dir.path())
            .args(["validate", "--format", format, "p.yaml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{format}: {status:?}");
    }
}

#[test]
fn an_error_past_column_65535_is_reported_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let args: String = "x, ".repeat(34_000);
    let yaml = format!("version: 1\nstages:\n  a: {{cmd: [echo, {args}y], stdout: bun}}\n");
    std::fs::write(dir.path().join("wide.yaml"), yaml).unwrap();
    for format in ["human", "json", "github", "sarif"] {
        let out = prun(
            dir.path(),
            &[
                "validate",
                "--color",
                "never",
                "--format",
                format,
                "wide.yaml",
            ],
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{format}: {all}");
        assert!(!all.contains("panicked"), "{format}: {all}");
        assert!(
            all.contains("102031") || all.contains("102,031"),
            "{format}: the column is given: {}",
            &all[..all.len().min(600)]
        );
    }
}
