//! A broadcast wait that can never end is a deadlock, named (SPEC 4.2): a full
//! broadcast queue whose laggard reader will never read ends the run with the deadlock
//! exit code (70) and a message that names the queue, the writers waiting to write and
//! the reader that will never read. (Before, such a run hung.)

mod run_util;

use run_util::Test;

#[test]
fn a_reader_held_by_after_on_another_reader_is_named() {
    let t = Test::new(
        "version: 1\nname: held\nqueues:\n  q: {delivery: broadcast, capacity: 100}\nstages:\n  src: {cmd: [seq, '1000000'], stdout: q}\n  a: {cmd: [wc, -l], stdin: q}\n  b: {cmd: [wc, -l], stdin: q, after: {a: succeeded}}\n",
    );
    let out = t.run();
    out.assert_code(70);
    let msg = out.report["deadlock"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("broadcast queue `q` is full (100 of 100 records held)"),
        "{}",
        out.context()
    );
    assert!(
        msg.contains("waiting to write to it: src"),
        "{}",
        out.context()
    );
    assert!(
        msg.contains(
            "`b` will never read the copies held for it: it waits to start until `a` ends"
        ),
        "{}",
        out.context()
    );
    assert!(
        out.stderr.contains("deadlock: broadcast queue `q`"),
        "{}",
        out.context()
    );
    assert_eq!(out.instance("b")["state"], "skipped", "{}", out.context());
}

#[test]
fn spell_highlight_with_a_small_capacity_is_named() {
    // dgsh's spell-highlight shape, with a capacity below the records carried: `b` reads
    // `a`'s output before its own copies, `a` needs the queue's end, the queue is full
    // of copies held for `b`.
    let t = Test::new(
        "version: 1\nname: spell\ndefaults:\n  stop: {timeout: 60s}\nqueues:\n  q: {delivery: broadcast, capacity: 1000}\n  r: {}\nstages:\n  src: {cmd: [seq, '2000000'], stdout: q}\n  a: {cmd: [wc, -l], stdin: q, stdout: r}\n  b:\n    cmd: [sh, -c, 'cat; wc -l <${fd.3}']\n    stdin: r\n    fds: {3: {read: q}}\n",
    );
    let out = t.run();
    out.assert_code(70);
    let msg = out.report["deadlock"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("broadcast queue `q` is full"),
        "{}",
        out.context()
    );
    assert!(
        msg.contains("waiting to write to it: src"),
        "{}",
        out.context()
    );
    assert!(
        msg.contains(
            "`b` will never read the copies held for it: it is blocked reading the output of `a`"
        ),
        "{}",
        out.context()
    );
    // The queue that can never drain is cut at the verdict: its readers get EOF at
    // once (what it held is counted), rather than after their 60 s `stop.timeout`.
    assert!(
        out.elapsed < std::time::Duration::from_secs(30),
        "{}",
        out.context()
    );
    assert!(
        out.queue("q")["discarded"].as_u64().unwrap() > 0,
        "{}",
        out.context()
    );
}

#[test]
fn a_full_queue_whose_reader_is_slow_is_not_a_deadlock() {
    // The laggard reads, slowly: the queue is full for seconds at a time, and that is
    // backpressure, not a deadlock.
    let t = Test::new(
        "version: 1\nname: slow\nqueues:\n  q: {delivery: broadcast, capacity: 10}\nstages:\n  src: {cmd: [seq, '40'], stdout: q}\n  a: {cmd: [wc, -l], stdin: q}\n  b: {sh: 'while read x; do sleep 0.1; done; echo done', stdin: q}\n",
    );
    let out = t.run();
    out.assert_code(0);
    assert_eq!(
        out.report["deadlock"],
        serde_json::Value::Null,
        "{}",
        out.context()
    );
}
