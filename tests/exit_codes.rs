//! Every exit code of `prun run` (SPEC 7, docs/cli.md), through the binary, and the exit
//! paths around them: output paths checked before anything starts, write failures
//! during the run, `--quiet` showing why an instance failed, a closed stdout.

mod run_util;

use std::process::{Command, Stdio};

use run_util::{DEADLINE, Test, prun_exe};

/// A stage that leaves a trace if it ever starts.
const TOUCH: &str = "version: 1\nname: t\nstages:\n  a: {cmd: [touch, started]}\n";

#[test]
fn success_failure_signal_and_timeout_codes() {
    Test::new(TOUCH).run().assert_code(0);
    Test::new("version: 1\nstages:\n  a: {cmd: [sh, -c, 'exit 7']}\n")
        .run()
        .assert_code(7);
    Test::new("version: 1\nstages:\n  a: {cmd: [sh, -c, 'kill -USR1 $$']}\n")
        .run()
        .assert_code(128 + libc::SIGUSR1);
    Test::new("version: 1\nstages:\n  a: {cmd: [sleep, '30'], timeout: 100ms}\n")
        .run()
        .assert_code(124);
    Test::new("version: 1\nstages:\n  a: {cmd: [/nonexistent/prog]}\n")
        .run()
        .assert_code(127);
}

#[test]
fn invalid_pipeline_and_bad_usage_exit_2_before_anything_starts() {
    let t = Test::new("version: 1\nstages:\n  a: {cmd: [touch, started], bogus: 1}\n");
    t.run().assert_code(2);
    assert!(!t.path("started").exists());
    let t = Test::new(TOUCH);
    t.run_with("report.json", &["--no-such-option"])
        .assert_code(2);
    assert!(!t.path("started").exists());
}

#[test]
fn unusable_report_or_log_dir_is_a_usage_error_before_anything_starts() {
    let t = Test::new(TOUCH).dir_entry("a-dir").file("plain-file", "x");
    for (report, extra) in [
        ("no-such-dir/r.json", vec![]),
        ("a-dir", vec![]),
        ("report.json", vec!["--log-dir", "plain-file/logs"]),
        ("report.json", vec!["--log-dir", "plain-file"]),
    ] {
        let out = t.run_with(report, &extra);
        out.assert_code(2);
        assert!(
            out.stderr.contains("--report") || out.stderr.contains("--log-dir"),
            "{}",
            out.context()
        );
        assert!(!t.path("started").exists(), "{}", out.context());
    }
}

#[test]
fn a_readiness_probe_that_fails_has_its_own_code() {
    let out = Test::new(
        "version: 1\nstages:\n  db:\n    cmd: [sleep, '30']\n    ready: {line: 'never', timeout: 200ms}\n    stop: {timeout: 1s}\n",
    )
    .run();
    out.assert_code(prun::exit::READY_FAILED);
    assert_eq!(out.report["exit_code"], prun::exit::READY_FAILED);
    assert!(out.stderr.contains("not ready within"), "{}", out.context());
}

#[test]
fn a_deadlock_has_its_own_code() {
    let out = Test::new(
        "version: 1\nevents: [never]\nstages:\n  a: {cmd: [sh, -c, 'prun ctl event wait never']}\n",
    )
    .run();
    out.assert_code(prun::exit::DEADLOCK);
    assert!(out.report["deadlock"].is_string(), "{}", out.context());
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run() {
    let t = Test::new(TOUCH);
    let out = Command::new(prun_exe())
        .current_dir(t.dir.path())
        .args(["run", "pipeline.yaml", "--progress", "never"])
        .args(["--report", "/dev/full"])
        .stdin(Stdio::null())
        .output()
        .expect("prun runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(prun::exit::WRITE_FAILED),
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

/// A disk that fills during the run (a 16 KiB tmpfs in a private mount namespace):
/// reported, and the run fails; never a silent loss with exit 0.
#[test]
fn a_full_log_dir_is_reported_and_fails_the_run() {
    let t = Test::new(
        "version: 1\nname: full\nstages:\n  chatty: {cmd: [sh, -c, 'i=0; while [ $i -lt 2000 ]; do echo \"line $i of a log that fills the disk\"; i=$((i+1)); done']}\n",
    )
    .dir_entry("logs");
    let out = Command::new("unshare")
        .current_dir(t.dir.path())
        .args(["-m", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=16k tmpfs logs && exec "$0" run pipeline.yaml --progress never --color never --log-dir logs --report report.json"#)
        .arg(prun_exe())
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs (tests run as root)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(prun::exit::WRITE_FAILED),
        "{stderr}"
    );
    assert!(stderr.contains("cannot write"), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&t.read("report.json")).expect("the report is written");
    assert_eq!(report["status"], "failed");
    assert_eq!(report["exit_code"], prun::exit::WRITE_FAILED);
}

#[test]
fn quiet_shows_the_last_lines_of_a_failed_instance() {
    let out = Test::new(
        "version: 1\nstages:\n  bad: {cmd: [sh, -c, 'for i in $(seq 1 30); do echo \"step $i\"; done; echo \"fatal: config missing\"; exit 7']}\n  good: {cmd: [echo, quiet please]}\n",
    )
    .arg("-q")
    .run();
    out.assert_code(7);
    let lines = out.log_of("bad");
    assert_eq!(lines.len(), 20, "{}", out.context());
    assert_eq!(lines[0], "step 12");
    assert_eq!(lines[19], "fatal: config missing");
    assert!(out.log_of("good").is_empty(), "{}", out.context());
    let tail = out.stderr.find("fatal: config missing").unwrap();
    let notice = out.stderr.find("error: bad failed (exit 7)").unwrap();
    assert!(tail < notice, "{}", out.context());
}

/// `prun p.yaml | head -1` with a stage on `stdout: inherit`: the stage dies of SIGPIPE
/// because prun's own stdout closed: downstream closed, exit 0, as in a shell.
#[test]
fn a_closed_stdout_is_downstream_closed() {
    let t = Test::new(
        "version: 1\nname: head\nstages:\n  gen: {cmd: [yes, a line], stdout: inherit}\n",
    );
    let mut child = t
        .command("report.json", &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prun starts");
    let mut first = [0u8; 7];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = t.finish(child, "report.json");
    out.assert_code(0);
    assert_eq!(&first, b"a line\n");
    assert!(
        out.stderr.contains("downstream closed"),
        "{}",
        out.context()
    );
    assert!(out.elapsed < DEADLINE);
}
