//! Batch jobs at GNU parallel's level (SPEC 3.4), through `prun run` with real
//! processes: `matrix` items, `foreach: {queue, batch}` blocks on stdin (nothing lost
//! when stopped mid-run), `halt` in each mode, lazy sources (a range of ten million
//! items, a `lines` FIFO read as it is written, a source that never comes does not
//! hold SIGINT), and succeeded items counted in the report while the journal lists
//! every item.

mod run_util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use run_util::{DEADLINE, Test, wait_until};
use serde_json::Value;

fn sigint(child: &std::process::Child) {
    // SAFETY: interrupting the prun this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
}

/// Process `pid` has a thread named `name`.
fn has_thread(pid: u32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
        })
        .unwrap_or(false)
}

fn spawn_quiet(t: &Test, report: &str) -> std::process::Child {
    t.command(report, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prun starts")
}

#[test]
fn matrix_items_name_their_parts() {
    let yaml = r#"
version: 1
name: sweep
stages:
  sim:
    foreach: {matrix: {size: [s, m], region: [eu, "us west"]}}
    parallel: 2
    cmd: [sh, -c, 'printf "%s|%s|%s|%s|%s\n" "$1" "$2" "$3" "$4" "$PRUN_ITEM" >> argv.txt', x, "${item.size}", "${item.region}", "${item}", "${index}"]
  quoted:
    foreach: {matrix: {a: ["it's", "$(touch PWNED)"], b: [1]}}
    sh: 'echo ${item.a}/${item.b} >> sh.txt'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    let got: BTreeSet<String> = t.read("argv.txt").lines().map(String::from).collect();
    let want: BTreeSet<String> = [
        "s|eu|s eu|0|s eu",
        "s|us west|s us west|1|s us west",
        "m|eu|m eu|2|m eu",
        "m|us west|m us west|3|m us west",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want, "{}", out.context());
    let sh: BTreeSet<String> = t.read("sh.txt").lines().map(String::from).collect();
    assert_eq!(
        sh,
        ["it's/1".to_string(), "$(touch PWNED)/1".to_string()].into(),
        "{}",
        out.context()
    );
    assert!(!t.path("PWNED").exists());
    let sim = out.foreach("sim");
    assert_eq!(
        (sim["items"].as_u64(), sim["succeeded"].as_u64()),
        (Some(4), Some(4))
    );
    let items: Vec<String> = out
        .items_of("sim")
        .iter()
        .map(|i| i["item"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(items, ["s eu", "s us west", "m eu", "m us west"]);
}

#[test]
fn queue_batches_feed_blocks_of_records_on_stdin() {
    let yaml = r#"
version: 1
name: blocks
queues:
  lines: {}
stages:
  gen:
    sh: 'seq 1 10'
    stdout: lines
  pack:
    foreach: {queue: lines, batch: 3}
    parallel: 2
    sh: 'tr "\n" " " > block.${index}; echo "${item}" > item.${index}'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    let blocks: Vec<String> = (0..4).map(|i| t.read(&format!("block.{i}"))).collect();
    assert_eq!(
        blocks,
        ["1 2 3 ", "4 5 6 ", "7 8 9 ", "10 "],
        "{}",
        out.context()
    );
    let items: Vec<String> = (0..4)
        .map(|i| t.read(&format!("item.{i}")).trim().to_string())
        .collect();
    assert_eq!(items, ["0-2", "3-5", "6-8", "9-9"]);
    assert!(!t.path("block.4").exists());
    let pack = out.foreach("pack");
    assert_eq!(pack["items"], 4, "{}", out.context());
    assert_eq!(pack["succeeded"], 4);
}

#[test]
fn a_failed_block_reports_its_records_and_a_restart_reads_it_again() {
    let yaml = r#"
version: 1
name: retry
queues:
  q: {}
stages:
  gen:
    sh: 'seq 1 5'
    stdout: q
  pack:
    foreach: {queue: q, batch: 2}
    parallel: 1
    restart: {policy: on-failure, max: 1, backoff: 10ms}
    on_failure: continue
    sh: 'cat >> seen.${index}; test ${index} != 1'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(1);
    assert_eq!(
        t.read("seen.1"),
        "3\n4\n3\n4\n",
        "read twice, from the start"
    );
    let failed = out.instance("pack.1");
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["item"], "2-3");
    assert_eq!(failed["records_in"], 2, "{}", out.context());
    assert_eq!(failed["restarts"], 1);
}

#[test]
fn a_batch_stopped_mid_run_loses_and_duplicates_no_record() {
    // The writer offers far more than gets done; each block's instance records what it
    // read. Whatever prun took from the queue is in a started block or in a skipped
    // one, each record once.
    let yaml = r#"
version: 1
name: cut
queues:
  q: {capacity: 16}
stages:
  gen:
    sh: 'seq 0 99999'
    stdout: q
  pack:
    foreach: {queue: q, batch: 7}
    parallel: 2
    sh: 'cat > got.${index}; sleep 0.05'
"#;
    let t = Test::new(yaml);
    let child = spawn_quiet(&t, "r.json");
    wait_until("a few blocks done", DEADLINE, || t.path("got.6").exists());
    sigint(&child);
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    // Every block prun made (started, or skipped at the stop) names its records: they
    // cover what was taken exactly once, in order. A block that ran to its end read
    // exactly those records.
    let mut seen: Vec<u64> = Vec::new();
    let mut finished = 0;
    for inst in out.items_of("pack") {
        let (a, b) = inst["item"].as_str().unwrap().split_once('-').unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        seen.extend(a..=b);
        let got = t.path(&format!("got.{}", inst["index"]));
        match inst["state"].as_str().unwrap() {
            "succeeded" => {
                finished += 1;
                let read: Vec<u64> = t
                    .read(&format!("got.{}", inst["index"]))
                    .lines()
                    .map(|l| l.parse().unwrap())
                    .collect();
                assert_eq!(read, (a..=b).collect::<Vec<u64>>(), "{inst}");
            }
            "skipped" => assert!(!got.exists(), "a skipped block never ran: {inst}"),
            // Stopped while it worked: it started with its block on stdin.
            state => assert_eq!(state, "stopped", "{inst}"),
        }
    }
    seen.sort_unstable();
    let n = seen.len() as u64;
    assert!(finished >= 5, "{}", out.context());
    assert_eq!(
        seen,
        (0..n).collect::<Vec<u64>>(),
        "every record taken once, in order, none missing\n{}",
        out.context()
    );
}

#[test]
fn halt_soon_on_failures_lets_the_running_items_finish() {
    let yaml = r#"
version: 1
name: soon
stages:
  job:
    foreach: {range: {from: 0, to: 40}}
    parallel: 3
    halt: {when: soon, fail: 2}
    sh: 'echo ${item} >> started; if test ${item} = 1 || test ${item} = 4; then exit 7; fi; sleep 0.2; echo ${item} >> finished'
  after:
    after: {job: succeeded}
    sh: 'touch ran'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(7);
    let started: BTreeSet<u64> = t
        .read("started")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let finished: BTreeSet<u64> = t
        .read("finished")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let ok: BTreeSet<u64> = started
        .iter()
        .copied()
        .filter(|i| *i != 1 && *i != 4)
        .collect();
    assert_eq!(
        finished,
        ok,
        "soon: every running item finished\n{}",
        out.context()
    );
    assert!(
        started.len() < 12,
        "no new item after the halt: {started:?}"
    );
    let job = out.foreach("job");
    assert_eq!(job["failed"], 2, "{}", out.context());
    assert_eq!(
        job["not_started"].as_u64().unwrap() + started.len() as u64,
        40,
        "{}",
        out.context()
    );
    assert!(
        job["stopped_early"].as_str().unwrap().contains("halted"),
        "{}",
        out.context()
    );
    assert!(out.stderr.contains("halted"), "{}", out.context());
    assert!(!t.path("ran").exists(), "a failed halt fails the stage");
}

#[test]
fn halt_now_stops_the_running_items() {
    let yaml = r#"
version: 1
name: now
stages:
  job:
    foreach: {range: {from: 0, to: 20}}
    parallel: 4
    halt: {when: now, fail: 1}
    on_failure: continue
    sh: 'if test ${item} = 2; then sleep 0.3; exit 3; fi; sleep 30'
  other:
    sh: 'sleep 1; touch other-finished'
"#;
    let t = Test::new(yaml);
    let start = Instant::now();
    let out = t.run();
    out.assert_code(3);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the sleeping items were stopped\n{}",
        out.context()
    );
    let job = out.foreach("job");
    assert_eq!(job["failed"], 1, "{}", out.context());
    assert_eq!(job["stopped"], 3, "{}", out.context());
    assert_eq!(job["not_started"], 16);
    // on_failure: continue: the rest of the pipeline went on.
    assert!(t.path("other-finished").exists(), "{}", out.context());
}

#[test]
fn halt_on_success_forgives_earlier_failures_and_counts_as_success() {
    let yaml = r#"
version: 1
name: first-mirror
stages:
  probe:
    foreach: {items: [bad1, bad2, good, other]}
    parallel: 1
    halt: {when: now, success: 1}
    sh: 'case ${item} in bad*) exit 1;; esac; echo ${item} > winner'
  fetch:
    after: {probe: succeeded}
    sh: 'cat winner > fetched'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(t.read("fetched"), "good\n", "{}", out.context());
    let probe = out.foreach("probe");
    assert_eq!(probe["failed"], 2);
    assert_eq!(probe["succeeded"], 1);
    assert_eq!(probe["not_started"], 1);
    assert_eq!(out.report["status"], "succeeded");
}

#[test]
fn a_halted_queue_stage_accounts_for_every_record() {
    // The total is unknown (a queue): 20 % of the items ended so far, once 5 ended.
    // Every record the writer wrote is an item (run, or skipped: it was taken), or
    // counted by the queue as discarded or in flight.
    let yaml = r#"
version: 1
name: halted-queue
queues:
  q: {}
semaphores: {one: 1}
stages:
  gen:
    sh: 'seq 1 20000'
    stdout: q
  work:
    foreach: {queue: q}
    parallel: 4
    semaphore: one
    halt: {when: now, fail: "20%"}
    on_failure: continue
    sh: 'test ${item} -gt 3'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(1);
    let work = out.foreach("work");
    let n = |v: &Value| v.as_u64().unwrap();
    assert!(
        work["stopped_early"]
            .as_str()
            .unwrap()
            .contains("ended items failed"),
        "{}",
        out.context()
    );
    assert_eq!(n(&work["failed"]), 3, "{}", out.context());
    let q = out.queue("q");
    assert_eq!(n(&q["records"]), 20000, "{}", out.context());
    assert_eq!(
        n(&work["items"]) + n(&q["discarded"]) + n(&q["in_flight_at_failure"]),
        20000,
        "every record is an item or counted\n{}",
        out.context()
    );
    assert_eq!(
        n(&work["items"]),
        n(&work["succeeded"]) + n(&work["failed"]) + n(&work["skipped"]),
        "{}",
        out.context()
    );
}

#[test]
fn halt_with_a_percentage_of_the_items() {
    // 25 % of 20 items is 5 failures: items 0..4 fail.
    let yaml = r#"
version: 1
name: pct
stages:
  job:
    foreach: {range: {from: 0, to: 20}}
    parallel: 1
    halt: {fail: "25%"}
    sh: 'test ${item} -ge 5'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(1);
    let job = out.foreach("job");
    assert_eq!(job["failed"], 5, "{}", out.context());
    assert_eq!(job["succeeded"], 0);
    assert_eq!(job["not_started"], 15);
    // Below the threshold, the failures are tolerated and the stage fails at its end.
    let yaml = r#"
version: 1
name: pct
stages:
  job:
    foreach: {range: {from: 0, to: 20}}
    parallel: 1
    halt: {fail: "25%"}
    sh: 'test ${item} -ge 4'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(1);
    let job = out.foreach("job");
    assert_eq!(job["failed"], 4, "{}", out.context());
    assert_eq!(job["succeeded"], 16);
    assert_eq!(job["not_started"], 0);
}

#[test]
fn a_range_of_ten_million_items_starts_at_once() {
    let yaml = r#"
version: 1
name: huge
stages:
  job:
    foreach: {range: {from: 0, to: 10000000}}
    parallel: 2
    sh: 'echo ${item} >> started; sleep 30'
"#;
    let t = Test::new(yaml);
    let child = spawn_quiet(&t, "r.json");
    wait_until("the first items", DEADLINE, || {
        t.read("started").lines().count() >= 2
    });
    sigint(&child);
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    let job = out.foreach("job");
    assert_eq!(job["items"], 10_000_000);
    assert_eq!(job["not_started"], 10_000_000 - 2, "{}", out.context());
    assert_eq!(job["stopped"], 2);
    assert!(
        out.instances().len() < 10,
        "items never started are counted, not listed"
    );
}

#[test]
fn succeeded_items_are_counted_and_the_journal_lists_every_item() {
    let yaml = r#"
version: 1
name: many
stages:
  job:
    foreach: {range: {from: 0, to: 300}}
    parallel: 8
    on_failure: continue
    sh: 'test ${item} != 123'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(1);
    let listed = out.of_stage("job");
    assert_eq!(listed.len(), 1, "only the failed item is listed");
    assert_eq!(listed[0]["item"], "123");
    let job = out.foreach("job");
    assert_eq!(
        (job["succeeded"].as_u64(), job["failed"].as_u64()),
        (Some(299), Some(1))
    );
    assert_eq!(out.report["journal"], "report.json.journal");
    let all = out.items_of("job");
    assert_eq!(all.len(), 300, "every item is in the journal");
    assert!(all.iter().enumerate().all(|(i, v)| v["index"] == i as u64));
    // The table sums them up.
    assert!(out.stderr.contains("job.*"), "{}", out.context());
    assert!(
        out.stderr.contains("299 items succeeded"),
        "{}",
        out.context()
    );
}

#[test]
fn a_lines_fifo_starts_items_as_its_lines_come() {
    let t = Test::new(
        r#"
version: 1
name: fifo
stages:
  feeder:
    sh: 'for i in 1 2 3; do echo $i; sleep 0.4; done > items.fifo'
  each:
    foreach: {lines: items.fifo}
    sh: 'date +%s%N > at.${item}'
"#,
    );
    nix::unistd::mkfifo(
        &t.path("items.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = t.run();
    out.assert_code(0);
    let at = |i: u32| -> u128 { t.read(&format!("at.{i}")).trim().parse().unwrap() };
    assert!(
        at(3) - at(1) > 500_000_000,
        "item 1 ran as soon as its line came, before the writer was done\n{}",
        out.context()
    );
    assert_eq!(out.foreach("each")["items"], 3);
}

#[test]
fn a_big_lines_file_is_counted_while_its_first_items_run() {
    // The items hold their slots: the feed is read only a little ahead, but the
    // number of items is known from a count beside it (1.2 MB: a millisecond).
    let lines: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    let t = Test::new(
        r#"
version: 1
name: counted
stages:
  each:
    foreach: {lines: big.txt}
    parallel: 2
    sh: 'echo ${item} >> started; exec sleep 30'
"#,
    )
    .file("big.txt", &lines);
    let child = spawn_quiet(&t, "r.json");
    wait_until("the first items", DEADLINE, || {
        t.read("started").lines().count() >= 2
    });
    // The counting thread (started before the first item) is done once it is gone.
    let pid = child.id();
    wait_until("the count", DEADLINE, || !has_thread(pid, "prun-count"));
    sigint(&child);
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    let each = out.foreach("each");
    assert_eq!(each["items"], 200_000, "{}", out.context());
    assert_eq!(each["not_started"], 200_000 - 2, "{}", out.context());
}

#[test]
fn a_source_that_never_comes_does_not_hold_sigint() {
    // Nobody ever opens the FIFO for writing: reading it waits forever, off the loop.
    let t = Test::new(
        r#"
version: 1
name: stuck
stages:
  each:
    foreach: {lines: never.fifo}
    sh: 'true'
"#,
    );
    nix::unistd::mkfifo(
        &t.path("never.fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let child = spawn_quiet(&t, "r.json");
    let pid = child.id();
    wait_until("the thread reading the source", DEADLINE, || {
        has_thread(pid, "prun-lines")
    });
    let sent = Instant::now();
    sigint(&child);
    let out = t.finish(child, "r.json");
    out.assert_code(130);
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}\n{}",
        sent.elapsed(),
        out.context()
    );
    assert_eq!(out.foreach("each")["items"], Value::Null, "never read");
}
