//! A foreach stage reading a broadcast queue (SPEC 4.2): it runs all its items at once
//! unless `parallel` says otherwise; `validate` and `run` refuse a `parallel` below an
//! item count known before the run; with a count known only at run time, items that
//! start late get what the queue still holds and the copies they missed are counted
//! in `discarded`, never silently missing.

mod run_util;

use run_util::Test;

const FAN: &str = "version: 1\nname: fan\nqueues:\n  q: {delivery: broadcast}\nstages:\n  src:\n    cmd: [seq, '3000']\n    stdout: q\n";

#[test]
fn a_parallel_below_the_known_item_count_is_refused_before_anything_starts() {
    for foreach in [
        "{items: [a, b, c, d, e]}",
        "{range: {from: 0, to: 10, step: 3}}",
        "{matrix: {x: [1, 2], y: [1, 2]}}",
    ] {
        let yaml = format!(
            "{FAN}  each:\n    foreach: {foreach}\n    parallel: 3\n    sh: 'wc -l > out.$PRUN_INSTANCE'\n    stdin: q\n"
        );
        let t = Test::new(&yaml);
        let out = t.run();
        out.assert_code(2);
        assert!(
            out.stderr.contains("broadcast-foreach-parallel")
                && out.stderr.contains("runs only 3 of its")
                && out.stderr.contains("parallel: 3"),
            "{foreach}: {}",
            out.context()
        );
        assert!(!t.path("out.0").exists(), "nothing started");
    }
    // As many at once as there are items is fine.
    let yaml = format!(
        "{FAN}  each:\n    foreach: {{items: [a, b, c]}}\n    parallel: 3\n    sh: 'wc -l > out.$PRUN_INSTANCE'\n    stdin: q\n"
    );
    let t = Test::new(&yaml);
    t.run().assert_code(0);
    for i in 0..3 {
        assert_eq!(t.read(&format!("out.{i}")).trim(), "3000");
    }
}

#[test]
fn without_parallel_every_item_runs_at_once_and_gets_every_record() {
    // Eight items on a machine with fewer CPUs: the default `parallel` (the CPU count)
    // would start the later items after the first ones had taken the records.
    let yaml = format!(
        "{FAN}  each:\n    foreach: {{range: {{from: 0, to: 8}}}}\n    sh: 'wc -l > out.${{item}}'\n    stdin: q\n"
    );
    let t = Test::new(&yaml);
    let plan = std::process::Command::new(run_util::prun_exe())
        .current_dir(t.dir.path())
        .args(["plan", "pipeline.yaml"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(shown.contains("(parallel 8)"), "{shown}");
    let out = t.run();
    out.assert_code(0);
    for i in 0..8 {
        assert_eq!(
            t.read(&format!("out.{i}")).trim(),
            "3000",
            "item {i}\n{}",
            out.context()
        );
    }
    assert_eq!(out.queue("q")["discarded"], 0, "{}", out.context());
}

#[test]
fn late_items_of_a_count_known_only_at_run_time_are_counted() {
    // `lines` with `parallel: 1`: item 0 reads the three records and its EOF, so every
    // later item is created after the queue handed them out; each misses all three,
    // and the report counts them (3 records × 3 late items), with a warning up front.
    let yaml = "version: 1\nname: late\nqueues:\n  q: {delivery: broadcast}\nstages:\n  src:\n    cmd: [seq, '3']\n    stdout: q\n  each:\n    foreach: {lines: list.txt}\n    parallel: 1\n    sh: 'wc -l > out.${item}'\n    stdin: q\n";
    let t = Test::new(yaml).file("list.txt", "a\nb\nc\nd\n");
    let out = t.run();
    out.assert_code(0);
    assert!(
        out.stderr.contains("broadcast-foreach-late-items"),
        "{}",
        out.context()
    );
    let got: Vec<u64> = ["a", "b", "c", "d"]
        .iter()
        .map(|i| t.read(&format!("out.{i}")).trim().parse().unwrap())
        .collect();
    assert_eq!(&got[1..], [0, 0, 0], "{}", out.context());
    let discarded = out.queue("q")["discarded"].as_u64().unwrap();
    // Nothing vanishes: every copy was read or counted.
    assert_eq!(
        got.iter().sum::<u64>() + discarded,
        4 * 3,
        "{}",
        out.context()
    );
    assert!(discarded >= 9, "{}", out.context());
}
