//! Keys added to the format later (hosts, `order: writers`, the newer foreach forms):
//! `validate` accepts them, `plan` shows them, and `run` runs `order: writers` (it was
//! refused as `not-yet-supported` before the runtime ran it; foreach `matrix`, `batch`
//! and `halt`: tests/run_batch.rs, `order: writers`: tests/run_order.rs).

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
fn run_runs_order_writers() {
    // It was refused as `not-yet-supported` until the runtime ran it.
    let dir = tempfile::tempdir().unwrap();
    let yaml = "version: 1\nqueues:\n  q: {order: writers}\nstages:\n  w:\n    sh: 'echo ${instance}'\n    replicas: 2\n    stdout: q\n  r:\n    sh: 'cat > got'\n    stdin: q\n";
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    let out = prun(dir.path(), &["run", "p.yaml", "--color", "never"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("not-yet-supported"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("got")).unwrap(),
        "0\n1\n"
    );
}
