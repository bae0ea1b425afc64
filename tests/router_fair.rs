//! Fairness of `delivery: shared` (SPEC 4.2) with real processes: readers of equal speed
//! get about equal shares (whether the writer or the readers set the pace), a slow reader
//! only ever holds a few records while another reader could take them, and a reader that
//! stalls holds at most a bounded number of bytes. Through the router API and through the
//! `prun` binary.
//!
//! Readers of "equal speed" are paced by sleeping, not by CPU work: on a loaded machine
//! two CPU-bound readers really do get unequal CPU, and a work queue that keeps both busy
//! then rightly gives the faster one more.

mod router_util;
mod run_util;

use std::time::{Duration, Instant};

use prun::plan::{Delivery, Framing};
use router_util::*;

/// Reads stdin in 8 KiB chunks with a 2 ms pause after each (at most ~4 MB/s, almost no
/// CPU), then prints how many lines it saw. With an argument, it first creates that file
/// (it is ready: Python's start-up can take a second on a loaded machine, and a reader
/// still starting up rightly gets nothing meanwhile).
const PACED: &str = r"
import os, sys, time
if len(sys.argv) > 1:
    open(sys.argv[1], 'w').close()
n = 0
while True:
    b = os.read(0, 8192)
    if not b:
        break
    n += b.count(b'\n')
    time.sleep(0.002)
print(n)
";

fn assert_even(counts: &[u64], total: u64) {
    eprintln!("split {counts:?} of {total}");
    assert_eq!(
        counts.iter().sum::<u64>(),
        total,
        "no record lost: {counts:?}"
    );
    let n = counts.len() as f64;
    for &c in counts {
        let part = c as f64 / total as f64;
        assert!(
            (0.8 / n..=1.2 / n).contains(&part),
            "each of {n} equal readers gets within ±20% of an equal share: {counts:?}"
        );
    }
}

fn per_reader(router: &prun::runtime::router::QueueRouter) -> Vec<u64> {
    let mut v = router.stats().per_reader;
    v.sort();
    v.into_iter().map(|p| p.1).collect()
}

#[test]
fn equal_paced_readers_split_evenly_when_readers_set_the_pace() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    let dir = tempfile::tempdir().unwrap();
    let ready: Vec<String> = (0..2)
        .map(|i| dir.path().join(format!("ready.{i}")).display().to_string())
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|i| spawn_reader(&router, i, &["python3", "-c", PACED, &ready[i]]))
        .collect();
    run_util::wait_until("both readers started", Duration::from_secs(60), || {
        ready.iter().all(|f| std::path::Path::new(f).exists())
    });
    let mut w = spawn_writer(&router, 0, &["seq", "1", "300000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 60);
    let seen: Vec<u64> = readers
        .into_iter()
        .map(|r| output(r).trim().parse().unwrap())
        .collect();
    assert_eq!(
        seen,
        per_reader(&router),
        "records_in is what each reader read"
    );
    assert_even(&seen, 300000);
}

#[test]
fn equal_fast_readers_split_evenly_when_the_writer_sets_the_pace() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    let readers: Vec<_> = (0..2)
        .map(|i| spawn_reader(&router, i, &["wc", "-l"]))
        .collect();
    let mut w = spawn_writer(&router, 0, &["seq", "1", "2000000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 60);
    let seen: Vec<u64> = readers
        .into_iter()
        .map(|r| output(r).trim().parse().unwrap())
        .collect();
    assert_eq!(seen, per_reader(&router));
    assert_even(&seen, 2000000);
}

#[test]
fn slow_reader_gets_a_few_records_while_a_fast_one_takes_the_rest() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    // ~10 ms of work per record, reading one record at a time (the shell's `read`
    // reads byte by byte, so what it has not processed stays in the pipe).
    let slow = spawn_reader(
        &router,
        0,
        &[
            "sh",
            "-c",
            "n=0; while read -r l; do sleep 0.01; n=$((n+1)); done; echo $n",
        ],
    );
    let fast = spawn_reader(&router, 1, &["wc", "-l"]);
    let mut w = spawn_writer(&router, 0, &["seq", "1", "50000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    let t = Instant::now();
    wait_drained(&rx, 60);
    let slow_n: u64 = output(slow).trim().parse().unwrap();
    let fast_n: u64 = output(fast).trim().parse().unwrap();
    assert_eq!(slow_n + fast_n, 50000);
    eprintln!("slow reader {slow_n}, fast reader {fast_n}");
    // Before it shows its speed a reader gets at most 16 records; afterwards about
    // 50 ms of its work at a time. Hoarding would leave it hundreds of records (4 KiB of
    // these is ~800) to chew on alone.
    assert!(
        slow_n <= 64,
        "the slow reader got {slow_n} records while the fast one idled"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn stalled_reader_holds_a_bounded_backlog_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    // Reads 200 kB fast (so it earns a large window), then stalls until told to go on.
    let stall = r"
import os, sys, time
n = 0
got = 0
while got < 200000:
    b = os.read(0, 65536)
    if not b:
        break
    got += len(b)
    n += b.count(b'\n')
give_up = time.time() + 60
while not os.path.exists(sys.argv[1]) and time.time() < give_up:
    time.sleep(0.01)
while True:
    b = os.read(0, 65536)
    if not b:
        break
    n += b.count(b'\n')
print(n)
";
    let stalled = spawn_reader(&router, 0, &["python3", "-c", stall, go.to_str().unwrap()]);
    let fast = spawn_reader(&router, 1, &["wc", "-l"]);
    // 1M records of exactly 8 bytes.
    let mut w = spawn_writer(&router, 0, &["seq", "-w", "1000000", "1999999"]);
    assert!(w.wait().unwrap().success());
    // Wait until every record sits in a reader's pipe: the fast reader took all it could.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = router.stats();
        if st.records == 1000000 && st.per_reader.iter().map(|p| p.1).sum::<u64>() == 1000000 {
            break;
        }
        if Instant::now() > deadline {
            // Let the stalled reader finish before failing, so no process outlives us.
            std::fs::write(&go, b"").unwrap();
            panic!("records never left prun: {st:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = per_reader(&router)[0] * 8;
    std::fs::write(&go, b"").unwrap();
    router.close_writers();
    wait_drained(&rx, 60);
    let stalled_n: u64 = output(stalled).trim().parse().unwrap();
    let fast_n: u64 = output(fast).trim().parse().unwrap();
    assert_eq!(stalled_n + fast_n, 1000000);
    assert_eq!(stalled_n * 8, held);
    // What it was given beyond what it read before stalling: at most one reader pipe
    // (256 KiB), plus the rest of the chunk it was reading when it stalled.
    let backlog = held.saturating_sub(200000);
    eprintln!("stalled reader's backlog: {backlog} bytes");
    assert!(
        backlog <= 256 * 1024 + 65536,
        "a stalled reader held {backlog} bytes while the other took the rest"
    );
}

/// The same through the binary and the supervisor (replicas of one stage).
#[test]
fn prun_splits_between_equal_replicas() {
    let t = run_util::Test::new(&format!(
        r#"
version: 1
queues:
  fast: {{}}
  paced: {{}}
stages:
  w1: {{cmd: [seq, 1, 2000000], stdout: fast}}
  r1: {{cmd: [wc, -l], stdin: fast, replicas: 2}}
  w2: {{cmd: [seq, 1, 300000], stdout: paced}}
  r2: {{cmd: [python3, -c, {PACED:?}], stdin: paced, replicas: 2, stdout: null}}
"#
    ));
    let run = t.run();
    run.assert_code(0);
    for (stage, total) in [("r1", 2000000u64), ("r2", 300000)] {
        let counts: Vec<u64> = (0..2)
            .map(|i| {
                run.instance(&format!("{stage}.{i}"))["records_in"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_even(&counts, total);
    }
}
