//! Keys of the format the runtime does not run yet (order: writers): `validate` and
//! `plan` accept them and show them; `run` refuses them before anything starts, one
//! `not-yet-supported` per feature. (foreach `matrix`, `batch` and `halt` run:
//! tests/run_batch.rs.)

use std::path::Path;
use std::process::{Command, Output};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn prun(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn validate_accepts_them() {
    let out = prun(
        manifest(),
        &["validate", "--strict", "tests/valid/new-keys.yaml"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plan_shows_hosts_placement_order_and_the_new_foreach_forms() {
    let out = prun(manifest(), &["plan", "tests/valid/new-keys.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/valid");
    settings.bind(|| insta::assert_snapshot!("new-keys-plan", text));
}

#[test]
fn run_refuses_them_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nhosts:\n  h: {ssh: h}\nqueues:\n  q: {order: writers}\nstages:\n  w:\n    sh: 'touch started'\n    on: h\n    stdout: q\n  r:\n    foreach: {queue: q, batch: 2}\n    halt: {fail: 1}\n    sh: 'touch started'\n  m:\n    foreach: {matrix: {a: [1, 2]}}\n    sh: 'touch started'\n";
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = prun(dir.path(), &["validate", "--format", "json", "p.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = prun(dir.path(), &["run", "p.yaml", "--color", "never"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.matches("prun::not-yet-supported").count(), 1, "{text}");
    assert!(
        text.contains("`prun run` does not run `order: writers`"),
        "{text}"
    );
    assert!(!dir.path().join("started").exists());
    // `--dry-run` is `plan`: accepted.
    let out = prun(dir.path(), &["run", "p.yaml", "--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
