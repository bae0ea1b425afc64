//! Queues through the real binary (SPEC 4): every delivery mode, sentinels (from prun
//! and from a writer), readers that end early, `fds`, and the queue statistics in the
//! JSON report.

mod run_util;

use run_util::Test;

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn shared_gives_each_record_to_exactly_one_reader() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w:
    cmd: [seq, 1, 5000]
    replicas: 2
    stdout: q
  r:
    sh: 'while read -r l; do echo "$l"; done > out.$PRUN_INSTANCE'
    replicas: 3
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let mut all = Vec::new();
    for i in 0..3 {
        let text = std::fs::read_to_string(t.path(&format!("out.{i}"))).unwrap();
        all.extend(text.lines().map(str::to_string));
        assert_eq!(
            run.instance(&format!("r.{i}"))["records_in"],
            text.lines().count()
        );
    }
    all.sort();
    let mut expected: Vec<String> = (1..=5000)
        .flat_map(|n| [n.to_string(), n.to_string()])
        .collect();
    expected.sort();
    assert_eq!(all, expected, "every record exactly once");
    assert_eq!(run.queue("q")["records"], 10000);
}

#[test]
fn broadcast_gives_every_reader_every_record_in_the_same_order() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {delivery: broadcast}
stages:
  w1:
    sh: 'for i in $(seq 1 300); do echo "a$i"; done'
    stdout: q
  w2:
    sh: 'for i in $(seq 1 300); do echo "b$i"; done'
    stdout: q
  r:
    sh: 'cat > out.$PRUN_INSTANCE'
    replicas: 3
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let outs: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(t.path(&format!("out.{i}"))).unwrap())
        .collect();
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[1], outs[2]);
    assert_eq!(outs[0].lines().count(), 600);
    // Per-writer order is kept.
    let a: Vec<&str> = outs[0].lines().filter(|l| l.starts_with('a')).collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("a{i}")).collect();
    assert_eq!(a, expected);
}

#[test]
fn sentinel_reaches_every_reader_once() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {sentinel: "None"}
stages:
  w:
    cmd: [seq, 1, 10]
    replicas: 2
    stdout: q
  r:
    sh: 'cat > out.$PRUN_INSTANCE'
    replicas: 2
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    for i in 0..2 {
        let text = std::fs::read_to_string(t.path(&format!("out.{i}"))).unwrap();
        assert_eq!(text.lines().filter(|l| *l == "None").count(), 1, "{text}");
        assert_eq!(text.lines().last(), Some("None"));
    }
    assert_eq!(run.queue("q")["sentinels_sent"], 2);
    assert_eq!(run.queue("q")["records"], 20);
}

#[test]
fn a_writer_emitted_sentinel_ends_that_writer_and_counts_what_it_dropped() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {sentinel: STOP}
stages:
  w:
    sh: 'echo one; echo two; echo STOP; echo lost1; echo lost2'
    stdout: q
  other:
    sh: 'echo three'
    stdout: q
  r:
    sh: 'cat > out'
    stdin: q
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let text = std::fs::read_to_string(t.path("out")).unwrap();
    assert_eq!(sorted_lines(&text), vec!["STOP", "one", "three", "two"]);
    assert_eq!(run.queue("q")["dropped_after_sentinel"], 2);
}

#[test]
fn a_last_record_without_delimiter_gets_one() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w1: {sh: 'printf "no-newline"', stdout: q}
  w2: {sh: 'printf "x\ny"', stdout: q}
  r: {sh: 'cat > out', stdin: q}
"#,
    );
    t.run().assert_code(0);
    let text = std::fs::read_to_string(t.path("out")).unwrap();
    assert!(text.ends_with('\n'));
    assert_eq!(sorted_lines(&text), vec!["no-newline", "x", "y"]);
}

#[test]
fn nul_framing_keeps_records_with_newlines_whole() {
    let t = Test::new(
        r#"
version: 1
queues:
  q: {framing: nul}
stages:
  w1: {sh: 'printf "a\nb\0c\0"', stdout: q}
  w2: {sh: 'printf "d\0"', stdout: q}
  r: {sh: 'cat > out', stdin: q}
"#,
    );
    t.run().assert_code(0);
    let bytes = std::fs::read(t.path("out")).unwrap();
    let mut recs: Vec<&[u8]> = bytes.split(|b| *b == 0).filter(|r| !r.is_empty()).collect();
    recs.sort();
    assert_eq!(recs, vec![&b"a\nb"[..], b"c", b"d"]);
}

#[test]
fn early_closing_reader_is_like_a_shell_pipeline() {
    // `yes` never ends by itself: the pipeline ends because its only reader stops.
    let run = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: ["yes"], stdout: q, replicas: 2}
  r: {sh: 'head -n 3 > /dev/null', stdin: q}
"#,
    )
    .run();
    run.assert_code(0);
    assert_eq!(run.instance("r")["state"], "succeeded");
    for w in ["w.0", "w.1"] {
        assert_eq!(
            run.instance(w)["state"],
            "succeeded",
            "{:#}",
            run.instance(w)
        );
    }
}

#[test]
fn records_stranded_in_a_dead_readers_pipe_are_counted() {
    // r.0 reads one record and exits; whatever it was given but never read is counted
    // as in flight, and the other reader still gets every record nobody read.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {capacity: 100000}
stages:
  w: {cmd: [seq, 1, 20000], stdout: q}
  r:
    sh: 'if [ "$PRUN_INSTANCE" = 0 ]; then read -r l; echo "$l" > out.0; else sleep 0.3; cat > out.1; fi'
    replicas: 2
    stdin: q
    on_failure: continue
"#,
    );
    let run = t.run();
    let q = run.queue("q");
    let got0 = std::fs::read_to_string(t.path("out.0"))
        .unwrap()
        .lines()
        .count() as u64;
    let got1 = std::fs::read_to_string(t.path("out.1"))
        .unwrap()
        .lines()
        .count() as u64;
    let in_flight = q["in_flight_at_failure"].as_u64().unwrap();
    let given0 = run.instance("r.0")["records_in"].as_u64().unwrap();
    let given1 = run.instance("r.1")["records_in"].as_u64().unwrap();
    assert_eq!(got0, 1);
    // prun lost nothing: every record was handed to exactly one reader ...
    assert_eq!(given0 + given1, 20000, "{q:#}");
    // ... the survivor read all it was given ...
    assert_eq!(got1, given1);
    // ... and what the dead reader never took out of its pipe is counted (sh's `read`
    // takes exactly one line out of a pipe).
    assert_eq!(in_flight, given0 - 1, "{q:#}");
}

#[test]
fn backpressure_blocks_the_writer_and_bounds_the_queue() {
    let run = Test::new(
        r#"
version: 1
queues:
  q: {capacity: 10}
stages:
  w: {cmd: [seq, 1, 300000], stdout: q, replicas: 2}
  r:
    sh: 'sleep 0.5; wc -l > /dev/null'
    stdin: q
    replicas: 2
"#,
    )
    .run();
    run.assert_code(0);
    let q = run.queue("q");
    assert_eq!(q["records"], 600000);
    assert!(q["blocked_ms"].as_u64().unwrap() > 100, "{q:#}");
    // A bounded buffer: never more than `capacity` records inside prun.
    assert!(q["max_depth"].as_u64().unwrap() <= 10, "{q:#}");
}

#[test]
fn fds_join_two_queues() {
    let run = Test::new(
        r#"
version: 1
queues:
  left: {}
  right: {}
stages:
  a: {cmd: [seq, 1, 3], stdout: left}
  b: {cmd: [seq, 11, 13], stdout: right}
  join:
    cmd: [paste, -d, " ", "${fd.3}", "${fd.4}"]
    fds: {3: {read: left}, 4: {read: right}}
    stdout: inherit
"#,
    )
    .run();
    run.assert_code(0);
    assert_eq!(run.stdout, "1 11\n2 12\n3 13\n");
}

#[test]
fn direct_pipe_carries_everything_and_stdout_stays_clean() {
    let run = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [seq, 1, 100000], stdout: q}
  r: {cmd: [wc, -l], stdin: q, stdout: inherit}
"#,
    )
    .run();
    run.assert_code(0);
    assert_eq!(run.stdout.trim(), "100000");
}

#[test]
fn direct_pipe_is_enlarged_to_cut_wakeups() {
    // F_GETPIPE_SZ is 1032 on Linux; the reader prints the size of the pipe it reads.
    let run = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [seq, 1, 10], stdout: q}
  r:
    cmd: [python3, -c, "import fcntl, sys; sys.stdin.read(); print(fcntl.fcntl(0, 1032))"]
    stdin: q
    stdout: inherit
"#,
    )
    .run();
    run.assert_code(0);
    let size: usize = run.stdout.trim().parse().expect("a pipe size");
    assert!(size >= 256 * 1024, "direct pipe is {size} bytes");
}

#[test]
fn a_dead_broadcast_readers_undelivered_records_are_counted() {
    // r.0 waits until the writer has ended, reads one record and exits. Every record
    // handed to it but not read (in its pipe, or held by prun behind its full pipe) was
    // on its way to r.0 only: counted as in flight.
    let t = Test::new(
        r#"
version: 1
events:
  written: {}
queues:
  q: {delivery: broadcast, capacity: 1000000}
stages:
  w: {cmd: [seq, 1, 200000], stdout: q, sets: {written: exited}}
  r:
    sh: 'if [ "$PRUN_INSTANCE" = 0 ]; then prun ctl event wait written; read -r l; echo "$l" > out.0; else wc -l > out.1; fi'
    replicas: 2
    stdin: q
    on_failure: continue
"#,
    );
    let run = t.run();
    let q = run.queue("q");
    assert_eq!(std::fs::read_to_string(t.path("out.0")).unwrap(), "1\n");
    assert_eq!(
        std::fs::read_to_string(t.path("out.1")).unwrap().trim(),
        "200000"
    );
    // Usually every record but the one read (199,999). Exactly how many depends on how
    // much of the writer's last pipe load prun had read when r.0 exited; but the writer
    // could only end after prun took at least 1.38 MB − 1 MiB (its pipe) of its 1.38 MB,
    // ~50,000 records, all handed to r.0: more than r.0's 256 KiB pipe holds (~37,000),
    // so the copies prun held for it are counted too.
    let in_flight = q["in_flight_at_failure"].as_u64().unwrap();
    assert!((50_000..=199_999).contains(&in_flight), "{q:#}");
}

#[test]
fn large_records_are_held_by_bytes_too_not_only_by_capacity() {
    // 100 records of 1 MiB into two slow readers with the default capacity (1024
    // records): prun holds about 16 MiB of them, so the writer blocks after ~16 records
    // instead of prun taking all 100 MiB in.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w:
    cmd: [python3, -c, "import sys\nfor i in range(100): sys.stdout.write(str(i) + 'x' * (1 << 20) + '\\n')"]
    stdout: q
  r:
    cmd: [python3, -c, "import sys, time\nn = 0\nfor l in sys.stdin:\n    n += 1; time.sleep(0.005)\nopen('out.' + __import__('os').environ['PRUN_INSTANCE'], 'w').write(str(n))"]
    stdin: q
    replicas: 2
"#,
    );
    let run = t.run();
    run.assert_code(0);
    let q = run.queue("q");
    let got: u64 = (0..2)
        .map(|i| {
            std::fs::read_to_string(t.path(&format!("out.{i}")))
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(got, 100);
    assert_eq!(q["records"].as_u64(), Some(100), "{q:#}");
    let depth = q["max_depth"].as_u64().unwrap();
    assert!(depth <= 24, "held {depth} records of 1 MiB: {q:#}");
}

#[test]
fn records_left_when_every_reader_ended_are_counted_as_discarded() {
    // Both readers stop after one line; what prun had read from the writers by then
    // can reach nobody: every record is read, in flight, or discarded, never silently
    // gone.
    let run = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [seq, 1, 1000], replicas: 2, stdout: q}
  h: {cmd: [head, -n, "1"], replicas: 2, stdin: q}
"#,
    )
    .run();
    run.assert_code(0);
    let q = run.queue("q");
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let given = n(&run.instance("h.0")["records_in"]) + n(&run.instance("h.1")["records_in"]);
    let written = n(&run.instance("w.0")["records_out"]) + n(&run.instance("w.1")["records_out"]);
    assert_eq!(n(&q["records"]), written, "{q:#}");
    assert!(n(&q["discarded"]) > 0, "{q:#}");
    // (records_in counts what was written into a reader's pipe, read or not.)
    assert_eq!(given + n(&q["discarded"]), written, "{q:#}");
}

/// A writer for the stop tests: `w.py NAME SIZE [COUNT]` writes records of SIZE bytes
/// (COUNT of them, or until SIGTERM; `armed.NAME` says it can no longer miss it) and
/// then records in `wrote.NAME` exactly how many
/// it wrote: SIGTERM stays blocked and is only looked at before a record is started (a
/// record once started is finished), and stdout is non-blocking, so waiting for room
/// never hides the signal.
const COUNTING_WRITER: &str = "\
import fcntl, os, select, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
name, size = sys.argv[1], int(sys.argv[2])
open('armed.' + name, 'w')
count = int(sys.argv[3]) if len(sys.argv) > 3 else -1
fcntl.fcntl(1, fcntl.F_SETFL, fcntl.fcntl(1, fcntl.F_GETFL) | os.O_NONBLOCK)
n = 0
while n != count:
    rec = (b'%d ' % n).ljust(size - 1, b'x') + b'\\n'
    started = False
    while rec:
        if not started and signal.SIGTERM in signal.sigpending():
            break
        if select.select([], [1], [], 0.05)[1]:
            try:
                rec = rec[os.write(1, rec):]
                started = True
            except BlockingIOError:
                pass
    if rec:
        break
    n += 1
open('wrote.' + name, 'w').write(str(n))
";

/// A reader for the stop tests: `r.py NAME [DELAY]` counts the records it reads (taking
/// DELAY seconds over each, reading them one by one), touches `started.NAME` at the tenth, and writes `eof N` to
/// `read.NAME` at EOF, or `signal N` if SIGTERM comes first. With BLOCK_TERM set it
/// blocks SIGTERM and reads to EOF regardless (a well-behaved daemon).
const COUNTING_READER: &str = "\
import os, signal, sys, time
name = sys.argv[1]
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0
n = 0
def stopped(*_):
    open('read.' + name, 'w').write('signal %d' % n)
    os._exit(0)
if os.environ.get('BLOCK_TERM'):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
else:
    signal.signal(signal.SIGTERM, stopped)
# A slow reader takes records one by one from the pipe (no read-ahead), so prun sees
# how far it really is.
lines = iter(sys.stdin.buffer.raw.readline, b'') if delay else sys.stdin.buffer
for line in lines:
    n += 1
    if n == 10:
        open('started.' + name, 'w')
    if delay:
        time.sleep(delay)
open('read.' + name, 'w').write('eof %d' % n)
";

/// Run `yaml` with the counting writer and reader; once every writer in `writers` is
/// armed and every reader in `started` has read ten records, send prun SIGINT (when
/// `interrupt`).
fn run_counting(
    yaml: &str,
    writers: &[&str],
    started: &[&str],
    interrupt: bool,
) -> (Test, run_util::Outcome) {
    let t = Test::new(yaml)
        .file("w.py", COUNTING_WRITER)
        .file("r.py", COUNTING_READER);
    let child = t
        .command("report.json", &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("prun starts");
    if interrupt {
        run_util::wait_until(
            "readers at work",
            std::time::Duration::from_secs(20),
            || {
                writers
                    .iter()
                    .all(|w| t.path(&format!("armed.{w}")).exists())
                    && started
                        .iter()
                        .all(|r| t.path(&format!("started.{r}")).exists())
            },
        );
        // SAFETY: signalling the prun we started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    }
    let run = t.finish(child, "report.json");
    (t, run)
}

/// Sum of the counts the writers (`wrote.*`) or readers (`read.*`) left; for readers,
/// also checks that each one saw EOF (not the stop signal first).
fn counted(t: &Test, prefix: &str, names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| {
            let text = t.read(&format!("{prefix}.{n}"));
            let num = text.rsplit(' ').next().unwrap_or_default();
            if prefix == "read" {
                assert!(
                    text.starts_with("eof "),
                    "reader {n} was signalled before EOF: {text}"
                );
            }
            num.parse::<u64>()
                .unwrap_or_else(|_| panic!("{prefix}.{n}: {text:?}"))
        })
        .sum()
}

#[test]
fn interrupt_with_a_backlog_cuts_the_queue_readers_get_eof_and_every_record_is_counted() {
    // Two writers write until stopped; two slow readers cannot drain the backlog within
    // stop.timeout. On SIGINT the writers stop first; when the readers' turn times out,
    // the queue is cut short: each reader still gets EOF before any stop signal, and
    // every record written is read, or counted as discarded.
    let (t, run) = run_counting(
        r#"
version: 1
shutdown: {timeout: 1s}
queues:
  q: {capacity: 4}
stages:
  w: {cmd: [python3, w.py, "${instance}", "8"], replicas: 2, stdout: q}
  r: {cmd: [python3, r.py, "${instance}", "0.001"], replicas: 2, stdin: q}
"#,
        &["0", "1"],
        &["0", "1"],
        true,
    );
    run.assert_code(130);
    let q = run.queue("q");
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let wrote = counted(&t, "wrote", &["0", "1"]);
    let read = counted(&t, "read", &["0", "1"]);
    let given = n(&run.instance("r.0")["records_in"]) + n(&run.instance("r.1")["records_in"]);
    assert_eq!(n(&q["records"]), wrote, "{q:#}");
    assert_eq!(given, read, "the readers read all they were given: {q:#}");
    assert!(n(&q["discarded"]) > 0, "{q:#}");
    assert_eq!(read + n(&q["discarded"]), wrote, "{q:#}");
}

#[test]
fn a_reader_stuck_mid_record_does_not_keep_the_others_from_eof() {
    // Records larger than a reader pipe: `z` never reads and is left holding the rest
    // of one when the queue is cut. `r` must still get its EOF (and exit on its own)
    // before the stop signal.
    let (t, run) = run_counting(
        r#"
version: 1
shutdown: {timeout: 1s}
queues:
  q: {}
stages:
  w: {cmd: [python3, w.py, "w", "300000"], stdout: q}
  r: {cmd: [python3, r.py, "r"], stdin: q}
  z: {cmd: [sleep, "100"], stdin: q}
"#,
        &["w"],
        &["r"],
        true,
    );
    run.assert_code(130);
    let q = run.queue("q");
    let wrote = counted(&t, "wrote", &["w"]);
    let read = counted(&t, "read", &["r"]);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&q["records"]), wrote, "{q:#}");
    assert_eq!(
        read + n(&q["in_flight_at_failure"]) + n(&q["discarded"]),
        wrote,
        "{q:#}"
    );
}

#[test]
fn broadcast_interrupted_with_a_backlog_counts_every_record_written() {
    // Broadcast reads writers plainly: records read but not yet queued (a full queue)
    // were once dropped from `records` when the queue was cut.
    let (t, run) = run_counting(
        r#"
version: 1
shutdown: {timeout: 1s}
queues:
  q: {capacity: 4, delivery: broadcast}
stages:
  w: {cmd: [python3, w.py, "w", "50"], stdout: q}
  r: {cmd: [python3, r.py, "${instance}", "0.005"], replicas: 2, stdin: q}
"#,
        &["w"],
        &["0", "1"],
        true,
    );
    run.assert_code(130);
    let q = run.queue("q");
    // (The readers are not checked for EOF: with broadcast a slow reader's pipe is full,
    // more than it can read within the finish time after the cut.)
    let wrote = counted(&t, "wrote", &["w"]);
    assert_eq!(q["records"].as_u64(), Some(wrote), "{q:#}");
    // The backlog was cut: copies still queued in prun (discarded) or already in a
    // reader's pipe (in flight); which of the two depends on how far the readers'
    // enlarged pipes took them.
    let cut = q["discarded"].as_u64().unwrap() + q["in_flight_at_failure"].as_u64().unwrap();
    assert!(cut > 0, "{q:#}");
}

#[test]
fn the_run_ends_only_once_a_queue_read_by_daemons_is_drained() {
    // SPEC 5.1: daemon readers that block SIGTERM and read to EOF get every record,
    // however slow, before they are stopped; nothing is discarded at a normal end.
    let (t, run) = run_counting(
        r#"
version: 1
shutdown: {timeout: 1s}
queues:
  q: {capacity: 8}
stages:
  w: {cmd: [python3, w.py, "${instance}", "20", "1000"], replicas: 2, stdout: q}
  r:
    cmd: [python3, r.py, "${instance}", "0.002"]
    replicas: 2
    daemon: true
    stdin: q
    env: {BLOCK_TERM: "1"}
"#,
        &[],
        &[],
        false,
    );
    run.assert_code(0);
    let q = run.queue("q");
    // (The readers need about 2 s for the 2000 records, twice stop.timeout: cutting
    // the queue once the writers ended, as an interrupt would, discarded about half.)
    assert_eq!(counted(&t, "wrote", &["0", "1"]), 2000);
    assert_eq!(counted(&t, "read", &["0", "1"]), 2000, "{q:#}");
    assert_eq!(q["discarded"].as_u64(), Some(0), "{q:#}");
}

#[test]
fn records_a_stopped_reader_never_read_are_counted_as_in_flight() {
    // `d` takes records and never reads them; it is a daemon, so at the end it gets EOF
    // and then its stop signal. What sits unread in its pipe is counted.
    let run = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [seq, 1, 1000], stdout: q}
  r: {cmd: [wc, -l], stdin: q}
  d: {cmd: [sleep, "1000"], stdin: q, daemon: true}
"#,
    )
    .run();
    run.assert_code(0);
    let q = run.queue("q");
    let given_d = run.instance("d")["records_in"].as_u64().unwrap();
    assert!(given_d > 0, "the idle reader was given records: {q:#}");
    assert_eq!(q["in_flight_at_failure"].as_u64(), Some(given_d), "{q:#}");
}

#[test]
fn a_reader_that_crashes_and_restarts_keeps_order_and_accounting() {
    // r.0 reads ~2000 records, stalls (its pipe fills), then crashes once and is
    // restarted; r.1 reads on. Each reader's output (r.0's two runs append to one file)
    // stays in the writer's order, and every record is read, or counted as in flight
    // (left in the crashed run's pipe). Records it was given but never got wait for it
    // or go to r.1 in order (unit tests in the router pin that choice).
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w: {cmd: [seq, 1, 300000], stdout: q}
  r:
    cmd: [python3, r.py]
    replicas: 2
    stdin: q
    restart: {policy: on-failure, max: 1, backoff: 50ms}
"#,
    )
    .file(
        "r.py",
        // The crashing run reads with os.read and writes out every whole line it read,
        // so it holds nothing: its partial last line is still counted by prun (its
        // delimiter is in the pipe).
        "import os, sys, time\ni = os.environ['PRUN_INSTANCE']\nout = open('out.' + i, 'a')\n\
         if i == '0' and not os.path.exists('crashed'):\n    buf = b''\n    n = 0\n    while n < 2000:\n\
         \x20       c = os.read(0, 4096)\n        if not c:\n            break\n        buf += c\n\
         \x20       k = buf.rfind(b'\\n') + 1\n        out.write(buf[:k].decode()); n += buf[:k].count(b'\\n'); buf = buf[k:]\n\
         \x20   out.flush(); time.sleep(0.2)\n    open('crashed', 'w'); os._exit(1)\nfor line in sys.stdin:\n    out.write(line)\n",
    );
    let run = t.run();
    run.assert_code(0);
    let q = run.queue("q");
    assert!(t.path("crashed").exists());
    assert_eq!(run.instance("r.0")["restarts"].as_u64(), Some(1));
    let mut seen = 0u64;
    for i in 0..2 {
        let nums: Vec<u64> = t
            .read(&format!("out.{i}"))
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let bad: Vec<(usize, u64, u64)> = nums
            .windows(2)
            .enumerate()
            .filter(|(_, p)| p[0] >= p[1])
            .map(|(k, p)| (k, p[0], p[1]))
            .take(5)
            .collect();
        assert!(
            bad.is_empty(),
            "reader {i} got the writer's records out of order at {bad:?} of {}\n{}",
            nums.len(),
            run.context()
        );
        seen += nums.len() as u64;
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&q["records"]), 300_000, "{q:#}");
    assert_eq!(seen + n(&q["in_flight_at_failure"]), 300_000, "{q:#}");
}
