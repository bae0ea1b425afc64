//! `--resume` knows a foreach item by stage, position and value (SPEC 3.4): repeated
//! values are distinct items, an item whose value at its position changed runs again,
//! and this holds for the journal a SIGKILLed run left.

mod run_util;

use std::collections::BTreeSet;
use std::time::Duration;

use run_util::{DEADLINE, Test, wait_until};

fn pipeline(items: &str) -> String {
    format!(
        "version: 1\nname: ident\nstages:\n  job:\n    foreach: {{items: {items}}}\n    parallel: 2\n    sh: 'echo ${{index}}=${{item}} >> ran.txt'\n"
    )
}

fn ran(t: &Test) -> BTreeSet<String> {
    t.read("ran.txt").lines().map(str::to_string).collect()
}

#[test]
fn repeated_values_are_distinct_items() {
    let t = Test::new(&pipeline("[1, 2, 3, 0]"));
    t.run_with("r1.json", &[]).assert_code(0);
    assert_eq!(ran(&t).len(), 4);

    // Two more `0` items: they are new items (positions 4 and 5), not the one at 3.
    std::fs::write(t.path("pipeline.yaml"), pipeline("[1, 2, 3, 0, 0, 0]")).unwrap();
    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let second = t.run_with("r2.json", &["--resume", "r1.json"]);
    second.assert_code(0);
    let expected: BTreeSet<String> = ["4=0", "5=0"].iter().map(|s| s.to_string()).collect();
    assert_eq!(ran(&t), expected, "{}", second.context());
    let f = second.foreach("job");
    assert_eq!(f["resumed"], 4, "{}", second.context());
    assert_eq!(f["succeeded"], 2, "{}", second.context());
    let items = second.items_of("job");
    let resumed: Vec<u64> = items
        .iter()
        .filter(|i| i["resumed"] == true)
        .map(|i| i["index"].as_u64().unwrap())
        .collect();
    assert_eq!(resumed, [0, 1, 2, 3], "{}", second.context());

    // A value changed at a known position runs again; the rest are resumed (from the
    // second run's report, which lists its resumed items in its kept journal).
    std::fs::write(t.path("pipeline.yaml"), pipeline("[1, 7, 3, 0, 0, 0]")).unwrap();
    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let third = t.run_with("r3.json", &["--resume", "r2.json"]);
    third.assert_code(0);
    let expected: BTreeSet<String> = ["1=7".to_string()].into();
    assert_eq!(ran(&t), expected, "{}", third.context());
    assert_eq!(third.foreach("job")["resumed"], 5, "{}", third.context());
}

#[test]
fn a_killed_run_of_identical_items_resumes_by_position() {
    // Forty items with one value: after a SIGKILL, exactly the positions that did not
    // succeed run, each once.
    let items = vec!["same"; 40].join(", ");
    let yaml = format!(
        "version: 1\nname: same40\nstages:\n  job:\n    foreach: {{items: [{items}]}}\n    parallel: 4\n    sh: 'sleep 0.1; echo ${{index}} >> ran.txt'\n"
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
    let first_ran = ran(&t);
    assert!(first_ran.len() < 40, "the run was cut short: {first_ran:?}");
    let done: BTreeSet<String> = t
        .read("r.json")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["instance"]["state"] == "succeeded")
        .map(|v| v["instance"]["index"].to_string())
        .collect();
    assert!(done.len() >= 8, "ended items are in the journal");
    assert!(done.is_subset(&first_ran), "{done:?} vs {first_ran:?}");

    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let second = t.run_with("r2.json", &["--resume", "r.json"]);
    second.assert_code(0);
    let lines: Vec<String> = t.read("ran.txt").lines().map(str::to_string).collect();
    let second_ran: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(
        lines.len(),
        second_ran.len(),
        "an item ran twice: {lines:?}"
    );
    assert!(second_ran.is_disjoint(&done), "{}", second.context());
    let all: BTreeSet<String> = (0..40).map(|i| i.to_string()).collect();
    let covered: BTreeSet<String> = done.union(&second_ran).cloned().collect();
    assert_eq!(covered, all, "{}", second.context());
    assert_eq!(
        second.foreach("job")["resumed"],
        done.len() as u64,
        "{}",
        second.context()
    );
}
