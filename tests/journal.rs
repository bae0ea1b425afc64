//! The report as a journal (SPEC 7): every ended instance is on disk when it ends, so
//! `--resume` works after prun was SIGKILLed; `--resume` refuses what cannot be a
//! report instead of reading it until memory runs out.

mod run_util;

use std::collections::BTreeSet;
use std::time::Duration;

use run_util::{DEADLINE, Test, wait_until};

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_string).collect()
}

#[test]
fn resume_after_sigkill_runs_only_the_rest() {
    let items: Vec<String> = (1..=40).map(|i| format!("\"{i}\"")).collect();
    let yaml = format!(
        r#"version: 1
name: batch40
stages:
  job:
    foreach: {{items: [{}]}}
    parallel: 4
    sh: 'sleep 0.1; echo ${{item}} >> ran.txt'
"#,
        items.join(", ")
    );
    let t = Test::new(&yaml);
    let mut child = t
        .command("r.json", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prun starts");
    wait_until("a dozen items done", DEADLINE, || {
        t.read("ran.txt").lines().count() >= 12
    });
    child.kill().expect("SIGKILL prun");
    child.wait().expect("reap prun");
    // The guardian kills the stages; let the last ones go.
    std::thread::sleep(Duration::from_millis(300));
    let first_ran = lines(&t.read("ran.txt"));
    assert!(first_ran.len() < 40, "the run was cut short: {first_ran:?}");

    let journal = t.read("r.json");
    let done: BTreeSet<String> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["instance"]["state"] == "succeeded")
        .map(|v| v["instance"]["item"].as_str().unwrap().to_string())
        .collect();
    assert!(
        done.len() >= 8,
        "ended items are in the journal:\n{journal}"
    );
    assert!(done.is_subset(&first_ran), "{done:?} vs {first_ran:?}");

    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let second = t.run_with("r2.json", &["--resume", "r.json"]);
    second.assert_code(0);
    let second_ran = lines(&t.read("ran.txt"));
    assert!(
        second_ran.is_disjoint(&done),
        "items done before the kill ran again: {:?}",
        second_ran.intersection(&done).collect::<Vec<_>>()
    );
    let all: BTreeSet<String> = (1..=40).map(|i| i.to_string()).collect();
    let covered: BTreeSet<String> = done.union(&second_ran).cloned().collect();
    assert_eq!(covered, all, "{}", second.context());
    assert_eq!(second_ran.len(), 40 - done.len());
    // The finished run's report counts the resumed items; its journal, kept beside
    // it, lists them (marked).
    assert_eq!(
        second.foreach("job")["resumed"],
        done.len() as u64,
        "{}",
        second.context()
    );
    let resumed = second
        .items_of("job")
        .iter()
        .filter(|i| i["resumed"] == true)
        .count();
    assert_eq!(resumed, done.len(), "{}", second.context());
}

#[test]
fn the_report_file_is_a_journal_while_the_run_goes_on() {
    let t = Test::new(
        "version: 1\nname: j\nstages:\n  quick: {cmd: [true]}\n  slow: {cmd: [sleep, '30'], after: {quick: succeeded}}\n",
    );
    let child = t
        .command("r.json", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prun starts");
    wait_until("quick's line in the journal", DEADLINE, || {
        t.read("r.json").contains("\"name\":\"quick\"")
    });
    let text = t.read("r.json");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["prun_journal"], 1, "{text}");
    assert_eq!(first["pipeline"], "j");
    // SAFETY: interrupting the prun we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    assert_eq!(
        out.report["status"], "interrupted",
        "the whole report replaced the journal"
    );
    assert_eq!(out.instance("quick")["state"], "succeeded");
}

#[test]
fn resume_refuses_what_cannot_be_a_report() {
    let t = Test::new("version: 1\nstages:\n  job: {foreach: {items: [a]}, sh: 'touch ran'}\n");
    let out = t.run_with("r.json", &["--resume", "/dev/zero"]);
    out.assert_code(2);
    assert!(out.stderr.contains("not a file"), "{}", out.context());
    assert!(out.elapsed < Duration::from_secs(10));
    let huge = std::fs::File::create(t.path("huge.json")).unwrap();
    huge.set_len(prun::report::RESUME_CAP + 1).unwrap();
    let out = t.run_with("r.json", &["--resume", "huge.json"]);
    out.assert_code(2);
    assert!(out.stderr.contains("larger than"), "{}", out.context());
    assert!(!t.path("ran").exists());
}
