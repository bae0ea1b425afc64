//! Integration tests of the queue router with real processes (`seq`, `cat`, `head`,
//! `python3`, `sh`) connected through real pipes, for every delivery mode, sentinels,
//! backpressure and readers that end early.

mod router_util;

use prun::plan::{Delivery, Framing};
use prun::runtime::router::RouterEvent;
use router_util::*;

fn numbers(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| l.parse().expect("a number per line"))
        .collect()
}

#[test]
fn shared_splits_seq_between_cat_readers_without_loss() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    let readers: Vec<_> = (0..3).map(|i| spawn_reader(&router, i, &["cat"])).collect();
    let mut w = spawn_writer(&router, 0, &["seq", "1", "200000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    let mut all = Vec::new();
    for r in readers {
        let got = numbers(&output(r));
        assert!(
            got.windows(2).all(|p| p[0] < p[1]),
            "per-writer order kept in each reader"
        );
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200000).collect::<Vec<_>>());
    let st = router.stats();
    assert_eq!(st.records, 200000);
    assert_eq!(st.per_reader.iter().map(|p| p.1).sum::<u64>(), 200000);
    assert_eq!(st.per_writer, vec![(0, 200000)]);
}

#[test]
fn broadcast_gives_every_reader_every_record_in_order() {
    let (router, rx) = start(config(Delivery::Broadcast, Framing::Lines, 64, None));
    let readers: Vec<_> = (0..3).map(|i| spawn_reader(&router, i, &["cat"])).collect();
    let mut w = spawn_writer(&router, 0, &["seq", "1", "50000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    for r in readers {
        assert_eq!(numbers(&output(r)), (1..=50000).collect::<Vec<_>>());
    }
    let st = router.stats();
    assert_eq!(st.records, 50000);
    assert!(
        st.per_reader.iter().all(|p| p.1 == 50000),
        "{:?}",
        st.per_reader
    );
}

#[test]
fn sentinel_then_eof_to_each_reader_and_last_record_gets_its_delimiter() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 16, Some("None")));
    let readers: Vec<_> = (0..2).map(|i| spawn_reader(&router, i, &["cat"])).collect();
    let mut w = spawn_writer(&router, 0, &["printf", "a\\nb\\nc"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    let mut data = Vec::new();
    for r in readers {
        let out = output(r);
        assert!(out.ends_with("None\n"), "sentinel last, then EOF: {out:?}");
        data.extend(out.lines().filter(|l| *l != "None").map(str::to_owned));
    }
    data.sort();
    assert_eq!(data, ["a", "b", "c"]);
    let st = router.stats();
    assert_eq!(st.sentinels_sent, 2);
    assert_eq!(st.records, 3);
}

#[test]
fn writer_emitted_sentinel_ends_its_stream_and_counts_the_rest() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 16, Some("None")));
    let reader = spawn_reader(&router, 0, &["cat"]);
    let mut w0 = spawn_writer(&router, 0, &["printf", "a\\nb\\nNone\\nc\\nd"]);
    let mut w1 = spawn_writer(&router, 1, &["printf", "x\\ny\\n"]);
    assert!(w0.wait().unwrap().success());
    assert!(w1.wait().unwrap().success());
    router.close_writers();
    let events = wait_drained(&rx, 20);
    assert!(events.contains(&RouterEvent::WriterDone {
        queue: 7,
        writer: 0
    }));
    assert!(events.contains(&RouterEvent::WriterDone {
        queue: 7,
        writer: 1
    }));
    let out = output(reader);
    let mut lines: Vec<_> = out.lines().collect();
    assert_eq!(
        lines.pop(),
        Some("None"),
        "the router's own sentinel comes last"
    );
    lines.sort();
    assert_eq!(lines, ["a", "b", "x", "y"]);
    let st = router.stats();
    assert_eq!(
        st.dropped_after_sentinel, 2,
        "c and d (without delimiter) dropped"
    );
    assert_eq!(st.sentinels_sent, 1);
    assert_eq!(st.per_writer, vec![(0, 2), (1, 2)]);
}

#[test]
fn nul_framing_through_python_reader() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Nul, 8, None));
    let reader = spawn_reader(
        &router,
        0,
        &[
            "python3",
            "-c",
            "import sys; d=sys.stdin.buffer.read(); print(d.count(b'\\0'), d.endswith(b'\\0'))",
        ],
    );
    let mut w = spawn_writer(&router, 0, &["printf", "one\\0two\\nlines\\0three"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    assert_eq!(output(reader).trim(), "3 True");
}

#[test]
fn slow_reader_fast_writer_stays_bounded_and_writer_blocks() {
    let cap = 100;
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, cap, None));
    // The reader only starts reading after 400 ms: the writer must block meanwhile.
    let reader = spawn_reader(&router, 0, &["sh", "-c", "sleep 0.4; exec wc -l"]);
    let mut w = spawn_writer(&router, 0, &["seq", "1", "3000000"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 25);
    assert_eq!(output(reader).trim(), "3000000");
    let st = router.stats();
    assert!(st.blocked_ms >= 200, "writer was held back: {st:?}");
    // Never more than `capacity` records, whatever the volume (20+ MB here).
    assert!(st.max_depth <= cap as u64, "bounded buffering: {st:?}");
}

#[test]
fn reader_that_never_reads_is_accounted_and_others_get_the_rest() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    // Holds its stdin without reading, then exits: what it was given is in flight.
    let sleeper = spawn_reader(&router, 0, &["sh", "-c", "sleep 0.5"]);
    let cat = spawn_reader(&router, 1, &["cat"]);
    let mut w = spawn_writer(&router, 0, &["seq", "1", "100000"]);
    let events = wait_for(&rx, 20, |e| {
        matches!(e, RouterEvent::ReaderGone { reader: 0, .. })
    });
    assert!(!events.is_empty());
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    output(sleeper);
    let got = numbers(&output(cat)).len() as u64;
    let st = router.stats();
    let given_to_sleeper = st
        .per_reader
        .iter()
        .find(|p| p.0 == 0)
        .map(|p| p.1)
        .unwrap();
    assert!(st.in_flight_at_failure > 0, "{st:?}");
    assert_eq!(
        st.in_flight_at_failure, given_to_sleeper,
        "everything it was given is stranded"
    );
    assert_eq!(
        got + st.in_flight_at_failure,
        100000,
        "no record silently lost"
    );
}

#[test]
fn head_reader_exits_early_and_remaining_reader_continues() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 256, None));
    let head = spawn_reader(&router, 0, &["head", "-n", "1"]);
    let cat = spawn_reader(&router, 1, &["cat"]);
    let mut w = spawn_writer(&router, 0, &["seq", "1", "300000"]);
    let h = numbers(&output(head));
    assert_eq!(h.len(), 1);
    router.reader_exited(0);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    let c = numbers(&output(cat));
    let st = router.stats();
    let to_head = st
        .per_reader
        .iter()
        .find(|p| p.0 == 0)
        .map(|p| p.1)
        .unwrap();
    let to_cat = st
        .per_reader
        .iter()
        .find(|p| p.0 == 1)
        .map(|p| p.1)
        .unwrap();
    assert_eq!(to_cat, c.len() as u64);
    assert_eq!(
        to_head + to_cat,
        300000,
        "every record handed to exactly one reader"
    );
    assert!(st.in_flight_at_failure <= to_head);
}

#[test]
fn last_reader_gone_closes_writers_pipes_like_a_shell() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 64, None));
    router.close_readers();
    let head = spawn_reader(&router, 0, &["head", "-n", "3"]);
    let mut w = spawn_writer(&router, 0, &["yes"]);
    assert_eq!(output(head), "y\ny\ny\n");
    // `yes` dies of SIGPIPE once the router closes its pipe.
    let status = w.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}");
    router.close_writers();
    wait_drained(&rx, 20);
}

#[test]
fn channel_reader_gets_records_without_delimiters_then_disconnects() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 4, Some("END")));
    let ch = router.add_channel_reader(0);
    let mut w = spawn_writer(&router, 0, &["seq", "1", "2000"]);
    let mut got = Vec::new();
    // Consume slowly at first: the router must hold back rather than grow.
    for rec in ch.iter() {
        got.push(String::from_utf8(rec).unwrap());
        if got.len() == 1000 {
            assert!(router.stats().max_depth <= 4 + 16 * 1024);
            router.close_writers();
        }
    }
    assert!(w.wait().unwrap().success());
    wait_drained(&rx, 20);
    assert_eq!(got, (1..=2000).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[test]
fn fan_in_of_long_lines_is_never_torn() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    let reader = spawn_reader(&router, 0, &["cat"]);
    let script =
        "import sys\nw=sys.argv[1]\nfor i in range(300):\n    sys.stdout.write(w*10000+'\\n')";
    let mut ws: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .enumerate()
        .map(|(i, tag)| spawn_writer(&router, i, &["python3", "-c", script, tag]))
        .collect();
    for w in &mut ws {
        assert!(w.wait().unwrap().success());
    }
    router.close_writers();
    wait_drained(&rx, 20);
    let out = output(reader);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 1200);
    for l in lines {
        assert_eq!(l.len(), 10000);
        let first = l.as_bytes()[0];
        assert!(l.bytes().all(|b| b == first), "torn line");
    }
}

#[test]
fn records_larger_than_any_pipe_cross_intact() {
    let (router, rx) = start(config(Delivery::Broadcast, Framing::Lines, 4, None));
    let readers: Vec<_> = (0..2)
        .map(|i| {
            spawn_reader(
                &router,
                i,
                &[
                    "python3",
                    "-c",
                    "import sys\nfor l in sys.stdin: print(len(l), len(set(l)))",
                ],
            )
        })
        .collect();
    // 3 MB records, the last without its delimiter.
    let script =
        "import sys\nfor c in 'xyz': sys.stdout.write(c*3000000 + ('\\n' if c != 'z' else ''))";
    let mut w = spawn_writer(&router, 0, &["python3", "-c", script]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    for r in readers {
        assert_eq!(output(r), "3000001 2\n3000001 2\n3000001 2\n");
    }
}

#[test]
fn fair_dispatch_to_slurping_python_readers() {
    let (router, rx) = start(config(Delivery::Shared, Framing::Lines, 1024, None));
    let slow = "import sys,time\nn=0\nfor l in sys.stdin:\n    time.sleep(0.02); n+=1\nprint(n)";
    let readers: Vec<_> = (0..4)
        .map(|i| spawn_reader(&router, i, &["python3", "-c", slow]))
        .collect();
    let mut w = spawn_writer(&router, 0, &["seq", "1", "40"]);
    assert!(w.wait().unwrap().success());
    router.close_writers();
    wait_drained(&rx, 20);
    let counts: Vec<u64> = readers
        .into_iter()
        .map(|r| output(r).trim().parse().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 40);
    assert!(
        counts.iter().all(|&c| (7..=13).contains(&c)),
        "no reader hoards: {counts:?}"
    );
}
