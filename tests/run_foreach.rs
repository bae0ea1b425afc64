//! foreach (batch jobs) through `prun run`, with real processes: every source kind,
//! `parallel` and semaphores, `${item}`/`${index}`/`PRUN_ITEM`, failed items in the
//! JSON report, and `--resume`.

mod run_util;

use std::collections::BTreeSet;
use std::path::Path;

use run_util::{Test, max_overlap, timed};
use serde_json::Value;

fn lines_set(text: &str) -> BTreeSet<String> {
    text.lines().map(String::from).collect()
}

#[test]
fn items_are_single_arguments_and_shell_quoted_in_sh() {
    let yaml = r#"
version: 1
name: items
stages:
  argv:
    foreach: {items: ["a b", "it's", "$HOME", "x"]}
    cmd: [sh, -c, 'printf "%s|%s|%s\n" "$0" "$1" "$PRUN_ITEM" >> argv.txt', "${item}", "${index}"]
  shell:
    foreach: {items: ["a b", "it's", "$HOME;", "*"]}
    sh: 'printf "%s|%s\n" ${item} ${index} >> shell.txt'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(
        lines_set(&t.read("argv.txt")),
        lines_set("a b|0|a b\nit's|1|it's\n$HOME|2|$HOME\nx|3|x\n"),
        "{}",
        out.context()
    );
    assert_eq!(
        lines_set(&t.read("shell.txt")),
        lines_set("a b|0\nit's|1\n$HOME;|2\n*|3\n"),
        "{}",
        out.context()
    );
    let argv = out.items_of("argv");
    assert_eq!(argv.len(), 4);
    for (i, inst) in argv.iter().enumerate() {
        assert_eq!(inst["name"], format!("argv.{i}"));
        assert_eq!(inst["index"], i as u64);
        assert_eq!(inst["state"], "succeeded");
    }
    assert_eq!(argv[1]["item"], "it's");
}

#[test]
fn parallel_bounds_concurrency_and_semaphores_still_apply() {
    let yaml = format!(
        r#"
version: 1
name: par
semaphores: {{pair: 2}}
stages:
  wide:
    foreach: {{range: {{from: 0, to: 8}}}}
    parallel: 3
    sh: '{wide}'
  narrow:
    foreach: {{range: {{from: 0, to: 6}}}}
    parallel: 5
    semaphore: pair
    sh: '{narrow}'
"#,
        wide = timed(Path::new("wide.txt"), "0.15"),
        narrow = timed(Path::new("narrow.txt"), "0.15"),
    );
    let t = Test::new(&yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(out.items_of("wide").len(), 8);
    assert_eq!(
        max_overlap(&t.read("wide.txt")),
        3,
        "{}",
        t.read("wide.txt")
    );
    assert_eq!(
        max_overlap(&t.read("narrow.txt")),
        2,
        "{}",
        t.read("narrow.txt")
    );
}

#[test]
fn range_glob_and_lines_sources() {
    let yaml = r#"
version: 1
name: sources
stages:
  range:
    foreach: {range: {from: 0, to: 10, step: 3}}
    sh: 'echo ${item} >> range.txt'
  glob:
    foreach: {glob: "data/*"}
    cmd: [sh, -c, 'echo "$PRUN_ITEM" >> glob.txt']
  lines:
    foreach: {lines: list.txt}
    sh: 'echo ${item} >> lines.txt'
"#;
    let t = Test::new(yaml)
        .file("data/a.txt", "1")
        .file("data/b.txt", "2")
        .dir_entry("data/sub.d")
        .file("data/.hidden", "")
        .file("list.txt", "one\ntwo words\n\nthree\n");
    let out = t.run();
    out.assert_code(0);
    assert_eq!(lines_set(&t.read("range.txt")), lines_set("0\n3\n6\n9\n"));
    // Like sh: directories match too, hidden files do not.
    assert_eq!(
        lines_set(&t.read("glob.txt")),
        lines_set("data/a.txt\ndata/b.txt\ndata/sub.d\n")
    );
    assert_eq!(
        lines_set(&t.read("lines.txt")),
        lines_set("one\ntwo words\nthree\n")
    );
    let glob = out.items_of("glob");
    let items: Vec<&Value> = glob.iter().map(|i| &i["item"]).collect();
    assert_eq!(items, ["data/a.txt", "data/b.txt", "data/sub.d"]);
}

#[test]
fn a_glob_sees_files_made_by_an_earlier_stage() {
    let yaml = r#"
version: 1
name: late-glob
stages:
  make:
    sh: 'mkdir -p out && touch out/1.part out/2.part'
  each:
    after: [make]
    foreach: {glob: "out/*.part"}
    sh: 'echo ${item} >> seen.txt'
  summary:
    after: {each: completed}
    sh: 'wc -l < seen.txt | tr -d " "'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(out.log_of("summary"), ["2"], "{}", out.context());
}

#[test]
fn one_instance_per_queue_record_as_records_arrive() {
    let yaml = format!(
        r#"
version: 1
name: queue
queues:
  jobs: {{}}
stages:
  producer:
    sh: 'for i in $(seq 1 12); do echo "job $i"; done'
    stdout: jobs
  worker:
    foreach: {{queue: jobs}}
    parallel: 3
    sh: '{timed}; echo ${{item}} >> done.txt'
  after_all:
    after: {{worker: completed}}
    sh: 'wc -l < done.txt | tr -d " "'
"#,
        timed = timed(Path::new("times.txt"), "0.05")
    );
    let t = Test::new(&yaml);
    let out = t.run();
    out.assert_code(0);
    let expected: BTreeSet<String> = (1..=12).map(|i| format!("job {i}")).collect();
    assert_eq!(
        lines_set(&t.read("done.txt")),
        expected,
        "{}",
        out.context()
    );
    let workers = out.items_of("worker");
    assert_eq!(workers.len(), 12, "{}", out.context());
    let items: BTreeSet<String> = workers
        .iter()
        .map(|w| w["item"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(items, expected);
    assert!(max_overlap(&t.read("times.txt")) <= 3);
    assert_eq!(out.log_of("after_all"), ["12"], "{}", out.context());
}

#[test]
fn an_empty_queue_ends_the_foreach_stage() {
    let yaml = r#"
version: 1
name: empty-queue
queues:
  jobs: {}
stages:
  producer:
    sh: 'true'
    stdout: jobs
  worker:
    foreach: {queue: jobs}
    sh: 'echo ${item}'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(0);
    assert!(out.items_of("worker").is_empty(), "{}", out.context());
}

#[test]
fn failed_items_are_listed_and_resume_runs_only_them() {
    // Items 2 and 4 fail until `fixed` exists; every run logs what it ran.
    let yaml = r#"
version: 1
name: batch
stages:
  job:
    foreach: {items: ["1", "2", "3", "4", "5"]}
    parallel: 1
    sh: 'echo ${item} >> ran.txt; case ${item} in 2|4) test -e fixed || exit $((${item} + 10));; esac'
    on_failure: continue
"#;
    let t = Test::new(yaml);
    let first = t.run_with("r1.json", &[]);
    // One at a time, so "the first failure" is item 2's (with two at once, item 4 can
    // end before item 2 on a loaded machine).
    first.assert_code(12);
    assert_eq!(first.report["status"], "failed");
    let failed: Vec<(String, i64)> = first
        .items_of("job")
        .iter()
        .filter(|i| i["state"] == "failed")
        .map(|i| {
            (
                i["item"].as_str().unwrap().to_string(),
                i["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        failed,
        [("2".to_string(), 12), ("4".to_string(), 14)],
        "{}",
        first.context()
    );
    assert_eq!(lines_set(&t.read("ran.txt")).len(), 5);

    std::fs::write(t.path("fixed"), "").unwrap();
    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let second = t.run_with("r2.json", &["--resume", "r1.json"]);
    second.assert_code(0);
    assert_eq!(
        lines_set(&t.read("ran.txt")),
        lines_set("2\n4\n"),
        "{}",
        second.context()
    );
    let jobs = second.items_of("job");
    assert_eq!(jobs.len(), 5, "every item is reported");
    for j in jobs {
        let item = j["item"].as_str().unwrap();
        if item == "2" || item == "4" {
            assert_eq!(j["state"], "succeeded", "{j}");
            assert_eq!(j["resumed"], false, "{j}");
        } else {
            assert_eq!(j["state"], "skipped", "{j}");
            assert_eq!(j["resumed"], true, "{j}");
        }
    }

    // Resuming the resumed run's report runs nothing.
    std::fs::remove_file(t.path("ran.txt")).unwrap();
    let third = t.run_with("r3.json", &["--resume", "r2.json"]);
    third.assert_code(0);
    assert_eq!(t.read("ran.txt"), "", "{}", third.context());
}

#[test]
fn a_bad_resume_report_is_a_usage_error() {
    let yaml = r#"
version: 1
name: bad-resume
stages:
  job:
    foreach: {items: [a]}
    sh: 'touch ran'
"#;
    let t = Test::new(yaml).file("bad.json", "{not json");
    let out = t.run_with("r.json", &["--resume", "bad.json"]);
    out.assert_code(2);
    assert!(!t.path("ran").exists());
    assert!(out.stderr.contains("--resume"), "{}", out.context());
}

#[test]
fn a_failed_item_with_on_failure_stop_skips_the_rest() {
    let yaml = r#"
version: 1
name: stop
stages:
  job:
    foreach: {range: {from: 0, to: 6}}
    parallel: 1
    sh: 'test ${item} != 2'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(1);
    let states: Vec<String> = out
        .items_of("job")
        .iter()
        .map(|i| i["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states,
        ["succeeded", "succeeded", "failed"],
        "{}",
        out.context()
    );
    // The items never started are counted, not listed one by one.
    let job = out.foreach("job");
    assert_eq!(job["items"], 6, "{}", out.context());
    assert_eq!(job["succeeded"], 2);
    assert_eq!(job["failed"], 1);
    assert_eq!(job["not_started"], 3, "{}", out.context());
    assert_eq!(job["stopped_early"], "pipeline stopped");
}

#[test]
fn a_missing_lines_file_cannot_start_the_stage() {
    let yaml = r#"
version: 1
name: missing
stages:
  job:
    foreach: {lines: nope.txt}
    sh: 'echo ${item}'
"#;
    let out = Test::new(yaml).run();
    out.assert_code(1);
    let job = out.instance("job");
    assert_eq!(job["state"], "could_not_start", "{}", out.context());
    assert!(
        job["detail"].as_str().unwrap().contains("nope.txt"),
        "{job}"
    );
}

#[test]
fn restarted_items_keep_their_item() {
    let yaml = r#"
version: 1
name: restart
stages:
  job:
    foreach: {items: [a, b]}
    sh: 'echo x >> count.${item}; test $(wc -l < count.${item}) -ge 2'
    restart: {policy: on-failure, max: 3, backoff: 10ms}
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    for item in ["a", "b"] {
        assert_eq!(t.read(&format!("count.{item}")).lines().count(), 2);
    }
    for j in out.items_of("job") {
        assert_eq!(j["restarts"], 1, "{j}");
    }
}

/// `after: {batch: started}` holds once every item started; an event set by the
/// stage fires with the first item (docs/guarantees.md). Here the first item can only
/// end once the watcher ran, so waiting for every item instead would never end (the
/// per-stage timeout turns that into a failure rather than a hang).
#[test]
fn an_event_set_on_start_fires_with_the_first_item() {
    let yaml = r#"
version: 1
name: first
events: [batch_running]
stages:
  batch:
    foreach: {items: [a, b, c]}
    parallel: 1
    timeout: 20s
    sets: {batch_running: started}
    sh: 'while [ ! -f go ]; do sleep 0.01; done; echo ${item} >> done.txt'
  watcher:
    waits: [batch_running]
    sh: 'touch go'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(0);
    assert_eq!(
        lines_set(&t.read("done.txt")),
        lines_set("a\nb\nc\n"),
        "{}",
        out.context()
    );
}

/// A queue record that is not UTF-8 cannot be an item (items are text): it is reported
/// as an item that could not start, and the other records still run.
#[test]
fn a_record_that_is_not_utf8_is_an_item_that_could_not_start() {
    let yaml = r#"
version: 1
name: bytes
queues:
  jobs: {}
stages:
  producer:
    sh: 'printf "ok\n\377bad\nfine\n"'
    stdout: jobs
  worker:
    foreach: {queue: jobs}
    on_failure: continue
    sh: 'echo ${item} >> ran.txt'
"#;
    let t = Test::new(yaml);
    let out = t.run();
    out.assert_code(126);
    assert_eq!(
        lines_set(&t.read("ran.txt")),
        lines_set("ok\nfine\n"),
        "{}",
        out.context()
    );
    let worker = out.items_of("worker");
    assert_eq!(worker.len(), 3, "{}", out.context());
    assert_eq!(worker[1]["state"], "could_not_start", "{}", out.context());
    assert_eq!(worker[1]["item"], "\u{fffd}bad");
    let detail = worker[1]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("not valid UTF-8"), "{}", out.context());
}
