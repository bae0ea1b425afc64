//! Composition (SPEC 1): `include:` and `env_file:`, through the real binary. Every
//! diagnostic points into the file that holds the offending text; included stages and
//! env-file variables reach the running processes.

use std::path::Path;
use std::process::{Command, Output};

fn prun(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn json_diags(dir: &Path, file: &str) -> Vec<serde_json::Value> {
    let out = prun(dir, &["validate", "--format", "json", file]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v.as_array().unwrap().clone()
}

fn find<'a>(diags: &'a [serde_json::Value], code: &str) -> &'a serde_json::Value {
    diags
        .iter()
        .find(|d| d["code"] == format!("prun::{code}"))
        .unwrap_or_else(|| panic!("no {code} in {diags:#?}"))
}

#[test]
fn included_stages_and_env_files_run() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "lib/common.yaml",
                "params:\n  greeting: hello\nqueues:\n  words: {}\nstages:\n  speak:\n    sh: 'echo \"${params.greeting} $NAME $LEVEL\"'\n    stdout: words\n    env_file: speak.env\n",
            ),
            ("lib/speak.env", "LEVEL=from-stage-file\n"),
            (
                ".env",
                "# dotenv\nexport NAME=\"big world\"\nLEVEL=from-top\n",
            ),
            (
                "p.yaml",
                "version: 1\ninclude: lib/common.yaml\nenv_file: [.env, {path: .env.local, required: false}]\nstages:\n  listen:\n    cmd: [cat]\n    stdin: words\n    stdout: inherit\n",
            ),
        ],
    );
    let out = prun(dir.path(), &["p.yaml", "--progress", "never"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello big world from-stage-file\n"
    );
}

#[test]
fn env_precedence_is_file_then_env_then_stage() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (".env", "A=file\nB=file\nC=file\nD=file\n"),
            ("s.env", "C=stage-file\nD=stage-file\n"),
            (
                "p.yaml",
                "version: 1\nenv_file: .env\nenv:\n  B: env\n  D: env\nstages:\n  show:\n    sh: 'echo $A $B $C $D $E'\n    env_file: s.env\n    env:\n      D: stage-env\n      E: '${env.B}'\n    stdout: inherit\n",
            ),
        ],
    );
    let out = prun(dir.path(), &["p.yaml", "--progress", "never"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "file env stage-file stage-env env\n"
    );
}

#[test]
fn diagnostics_point_into_the_file_that_holds_the_text() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "inc/a.yaml",
                "stages:\n  listen:\n    cmd: [cat]\n    stdin: wordz\n",
            ),
            ("bad.env", "A=1\nB=\"unclosed\n"),
            (
                "p.yaml",
                "version: 1\ninclude: [inc/a.yaml]\nenv_file: bad.env\nqueues:\n  words: {}\nstages:\n  speak:\n    cmd: [echo]\n    stdout: words\n",
            ),
        ],
    );
    let diags = json_diags(dir.path(), "p.yaml");
    let q = find(&diags, "unknown-queue");
    assert_eq!(q["file"], "inc/a.yaml");
    assert_eq!(
        (q["line"].as_u64(), q["column"].as_u64()),
        (Some(4), Some(12))
    );
    assert_eq!(
        (q["end_line"].as_u64(), q["end_column"].as_u64()),
        (Some(4), Some(17))
    );
    let e = find(&diags, "env-file-syntax");
    assert_eq!(e["file"], "bad.env");
    assert_eq!(e["line"].as_u64(), Some(2));
}

#[test]
fn a_name_defined_in_two_files_shows_both_places() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("a.yaml", "stages:\n  job:\n    cmd: [\"true\"]\n"),
            (
                "p.yaml",
                "version: 1\ninclude: a.yaml\nstages:\n  job:\n    cmd: [\"false\"]\n",
            ),
        ],
    );
    let out = prun(dir.path(), &["validate", "--color", "never", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("stage `job` is defined twice"), "{text}");
    assert!(
        text.contains("[p.yaml:4:3]") && text.contains("[a.yaml:2:3]"),
        "{text}"
    );
}

#[test]
fn include_cycles_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("a.yaml", "include: b.yaml\n"),
            (
                "b.yaml",
                "include: [a.yaml]\nstages:\n  b: {cmd: [\"true\"]}\n",
            ),
            (
                "p.yaml",
                "version: 1\ninclude: [a.yaml, a.yaml, nope.yaml]\nenv_file: gone.env\nstages:\n  s: {cmd: [\"true\"]}\n",
            ),
        ],
    );
    let diags = json_diags(dir.path(), "p.yaml");
    let cycle = find(&diags, "include-cycle");
    assert_eq!(cycle["file"], "b.yaml");
    let missing = find(&diags, "include-error");
    assert_eq!(missing["file"], "p.yaml");
    assert_eq!(missing["column"].as_u64(), Some(27));
    let env = find(&diags, "env-file-error");
    assert_eq!(env["line"].as_u64(), Some(3));
    // a.yaml twice is read once: no duplicate stage `b`.
    assert!(
        diags.iter().all(|d| d["code"] != "prun::duplicate-name"),
        "{diags:#?}"
    );
}

#[test]
fn an_included_file_holds_only_mergeable_sections() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "a.yaml",
                "name: other\ndefaults: {timeout: 1s}\nstagez: {}\n",
            ),
            (
                "p.yaml",
                "version: 1\ninclude: a.yaml\nstages:\n  s: {cmd: [\"true\"]}\n",
            ),
        ],
    );
    let diags = json_diags(dir.path(), "p.yaml");
    let codes: Vec<&str> = diags.iter().map(|d| d["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "prun::not-in-include",
            "prun::not-in-include",
            "prun::unknown-key"
        ],
        "{diags:#?}"
    );
    assert!(diags.iter().all(|d| d["file"] == "a.yaml"));
    assert_eq!(diags[2]["help"], "did you mean `stages`?");
}

#[test]
fn plan_says_where_each_definition_came_from() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "lib/common.yaml",
                "params:\n  n: 1\nqueues:\n  q: {}\nstages:\n  w: {cmd: [echo], stdout: q}\n",
            ),
            (".env", "A=1\n"),
            (
                "p.yaml",
                "version: 1\ninclude: lib/common.yaml\nenv_file: .env\nenv:\n  B: two\nstages:\n  r: {cmd: [cat], stdin: q}\n",
            ),
        ],
    );
    let out = prun(dir.path(), &["plan", "p.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let section = &text[text.find("defined in:").expect("a defined-in section")..];
    assert!(section.contains("  p.yaml: env B; stages r\n"), "{section}");
    assert!(section.contains("  .env: env A\n"), "{section}");
    assert!(
        section.contains("  lib/common.yaml: params n; queues q; stages w\n"),
        "{section}"
    );
    // One file: nothing to say.
    write(
        dir.path(),
        &[("one.yaml", "version: 1\nstages:\n  a: {cmd: [echo]}\n")],
    );
    let out = prun(dir.path(), &["plan", "one.yaml"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("defined in:"));
}
