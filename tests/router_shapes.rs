//! Data-plane shapes of real pipelines (issue 12), through the `prun` binary: the dgsh
//! spell-highlight shape (one broadcast reader waits for another's output), a broadcast
//! reader that starts late, a writer killed in the middle of a large record, and
//! `records_in` of a stage reading a routed queue beside a direct one.

mod run_util;

use run_util::Test;

#[test]
fn a_broadcast_reader_waiting_on_another_readers_output_runs_to_the_end() {
    // `b` reads `r` (written by `a`) before it reads `q` on fd 3: `a` must get its EOF
    // on `q` while `b` has not read its copies yet.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {delivery: broadcast, capacity: 1000000}
  r: {}
stages:
  src: {cmd: [seq, 200000], stdout: q}
  a: {cmd: [wc, -l], stdin: q, stdout: r}
  b:
    cmd: [sh, -c, 'cat; wc -l <${fd.3}']
    stdin: r
    fds: {3: {read: q}}
    stdout: inherit
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.split_whitespace().collect();
    assert_eq!(lines, ["200000", "200000"], "{}", run.context());
}

#[test]
fn a_broadcast_reader_that_starts_after_the_writer_ended_gets_every_record() {
    // `late` starts once `early` has read the whole stream (after its EOF).
    let t = Test::new(
        r#"
version: 1
queues:
  q: {delivery: broadcast}
stages:
  src: {cmd: [seq, 500], stdout: q}
  early: {cmd: [wc, -l], stdin: q, stdout: inherit}
  late:
    cmd: [wc, -l]
    after: {early: succeeded}
    stdin: q
    stdout: inherit
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let lines: Vec<&str> = run.stdout.split_whitespace().collect();
    assert_eq!(lines, ["500", "500"], "{}", run.context());
    assert_eq!(run.instance("late")["records_in"], 500, "{}", run.context());
    assert_eq!(run.queue("q")["discarded"], 0, "{}", run.context());
}

#[test]
fn a_writer_killed_in_the_middle_of_a_record_delivers_nothing_of_it() {
    // 102,400 bytes of a 200,005-byte record, then SIGKILL: the partial record is
    // counted in `partial_records`, and no reader gets it as if it were whole.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w:
    cmd: [sh, -c, 'head -c 102400 /dev/zero | tr "\0" x; kill -9 $$']
    stdout: q
    on_failure: ignore
  r:
    cmd: [sh, -c, 'wc -c >out.${instance}']
    replicas: 2
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let q = run.queue("q");
    assert_eq!(q["partial_records"], 1, "{}", run.context());
    assert_eq!(q["records"], 0, "{}", run.context());
    for i in 0..2 {
        assert_eq!(t.read(&format!("out.{i}")).trim(), "0", "{}", run.context());
    }
}

#[test]
fn a_writer_that_succeeds_without_a_last_delimiter_delivers_its_last_record() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [printf, 'a\nb'], stdout: q}
  r: {cmd: [cat], replicas: 2, stdin: q, stdout: inherit}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut got: Vec<&str> = run.stdout.lines().collect();
    got.sort();
    assert_eq!(got, ["a", "b"], "{}", run.context());
    assert_eq!(run.queue("q")["partial_records"], 0, "{}", run.context());
}

#[test]
fn records_in_counts_a_routed_queue_read_beside_a_direct_one() {
    let t = Test::new(
        r#"
version: 1
queues:
  routed: {}
  direct: {}
stages:
  w1: {cmd: [seq, 10], stdout: routed}
  w2: {cmd: [seq, 5], stdout: routed}
  d: {cmd: [seq, 3], stdout: direct}
  r:
    cmd: [sh, -c, 'cat >/dev/null; wc -l <${fd.3} >/dev/null']
    stdin: direct
    fds: {3: {read: routed}}
"#,
    );
    let run = t.run();
    run.assert_code(0);
    assert_eq!(run.instance("r")["records_in"], 15, "{}", run.context());
}

#[test]
fn a_broadcast_reader_that_never_starts_has_its_copies_counted_and_the_run_ends() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {delivery: broadcast}
stages:
  bad: {cmd: [sh, -c, 'sleep 0.5; exit 3'], on_failure: continue}
  src: {cmd: [seq, 10], stdout: q}
  a: {cmd: [wc, -l], stdin: q, stdout: inherit}
  b: {cmd: [wc, -l], after: {bad: succeeded}, stdin: q}
"#,
    );
    let run = t.run();
    assert_eq!(run.stdout.trim(), "10", "{}", run.context());
    assert_eq!(run.instance("b")["state"], "skipped", "{}", run.context());
    assert_eq!(run.instance("a")["state"], "succeeded", "{}", run.context());
    assert_eq!(run.queue("q")["discarded"], 10, "{}", run.context());
}
