//! `order: writers` (SPEC 4.2) through the router API on real pipes and threads: the
//! earliest unfinished writer streams straight through while later writers' records wait
//! (within capacity, then their writers block), and a property test of writers that
//! attach in any order, restart (keeping their rank), end with a torn record, or are
//! foreach items announced as they are created. Checks: no loss, no duplication, each
//! writer's order, the writers' order (group by group), the capacity bound, with shared
//! (one or several readers) and broadcast delivery.

mod router_util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prun::plan::{Delivery, Framing, Order};
use prun::runtime::router::{QueueConfig, QueueRouter, WriterRank};
use router_util::*;

fn ordered(delivery: Delivery, capacity: usize) -> QueueConfig {
    QueueConfig {
        order: Order::Writers,
        ..config(delivery, Framing::Lines, capacity, None)
    }
}

/// Record `seq` of pipe `p` of writer `w`: `w.p.seq:` then filler.
fn record(w: usize, p: usize, seq: usize, filler: usize) -> Vec<u8> {
    let mut r = format!("{w}.{p}.{seq}:").into_bytes();
    r.extend(std::iter::repeat_n(b'a' + ((w + seq) % 26) as u8, filler));
    r.push(b'\n');
    r
}

type Key = (usize, usize, usize);

/// The keys of the records in `out`, each checked whole (a trailing partial record is
/// an error: readers here read to EOF).
fn keys(out: &[u8]) -> Vec<Key> {
    assert!(
        out.is_empty() || out.ends_with(b"\n"),
        "a reader got a torn record"
    );
    whole_keys(out)
}

/// The keys of the whole records in `out` (a reader that died may have read part of
/// its last one).
fn whole_keys(out: &[u8]) -> Vec<Key> {
    let out = &out[..out.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1)];
    out.split(|&b| b == b'\n')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let s = std::str::from_utf8(r).expect("utf8");
            let (key, filler) = s.split_once(':').expect("tag");
            let mut it = key.split('.').map(|n| n.parse::<usize>().expect("number"));
            let k = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let c = b'a' + ((k.0 + k.2) % 26) as u8;
            assert!(
                filler.bytes().all(|b| b == c),
                "record {k:?} corrupted: {:?}",
                String::from_utf8_lossy(&r[..r.len().min(200)])
            );
            k
        })
        .collect()
}

fn read_all(r: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(r);
        let mut out = Vec::new();
        let _ = f.read_to_end(&mut out);
        out
    })
}

/// Wait until `cond` holds (panics after `secs`).
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_earliest_writer_streams_through_while_later_ones_wait() {
    let (router, rx) = start(ordered(Delivery::Shared, 1024));
    let (rr, rw) = pipe();
    router.add_reader(0, rw);
    let (first, second) = (WriterRank::new(0, 0), WriterRank::new(1, 0));
    router.expect_writer(first);
    router.expect_writer(second);
    // The later writer starts first and ends at once.
    let (r1, w1) = pipe();
    router.add_ranked_writer(1, second, r1);
    let mut f1 = std::fs::File::from(w1);
    f1.write_all(b"later 1\nlater 2\n").unwrap();
    drop(f1);
    router.writer_ended(1, true);
    router.writer_rank_ended(second);
    let (r0, w0) = pipe();
    router.add_ranked_writer(0, first, r0);
    let mut f0 = std::fs::File::from(w0);
    f0.write_all(b"first 1\nfirst 2\n").unwrap();
    // Its records reach the reader while it still runs; the later ones wait in prun.
    let mut reader = std::fs::File::from(rr);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 16 {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "EOF too early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"first 1\nfirst 2\n");
    wait_until(30, "the later writer's records counted", || {
        router.stats().records == 4
    });
    assert_eq!(
        router.stats().depth,
        2,
        "the later records wait inside prun"
    );
    f0.write_all(b"first 3\n").unwrap();
    drop(f0);
    router.writer_ended(0, true);
    router.writer_rank_ended(first);
    router.close_writers();
    reader.read_to_end(&mut got).unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "first 1\nfirst 2\nfirst 3\nlater 1\nlater 2\n"
    );
    wait_drained(&rx, 30);
}

#[test]
fn a_later_writer_blocks_past_capacity_without_deadlock_and_loses_nothing() {
    let capacity = 6;
    let (router, rx) = start(ordered(Delivery::Shared, capacity));
    let (rr, rw) = pipe();
    router.add_reader(0, rw);
    let out = read_all(rr);
    let (first, second) = (WriterRank::new(0, 0), WriterRank::new(0, 1));
    router.expect_writer(first);
    router.expect_writer(second);
    let (r1, w1) = pipe();
    router.add_ranked_writer(1, second, r1);
    // Far more than prun may hold plus what the pipe takes: it must block.
    let n1 = 400_000;
    let data: Vec<u8> = (0..n1).flat_map(|i| record(1, 0, i, 3)).collect();
    let later = std::thread::spawn(move || {
        let mut f = std::fs::File::from(w1);
        f.write_all(&data).unwrap();
    });
    // Its records take their share of capacity, then it blocks.
    wait_until(30, "the later writer's share", || {
        router.stats().depth == (capacity / 2) as u64
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!later.is_finished(), "the later writer is blocked");
    let st = router.stats();
    assert_eq!(st.depth, (capacity / 2) as u64, "{st:?}");
    // The first writer still has room and streams through.
    let (r0, w0) = pipe();
    router.add_ranked_writer(0, first, r0);
    let n0 = 50_000;
    let data: Vec<u8> = (0..n0).flat_map(|i| record(0, 0, i, 5)).collect();
    std::fs::File::from(w0).write_all(&data).unwrap();
    router.writer_ended(0, true);
    router.writer_rank_ended(first);
    later.join().unwrap();
    router.writer_ended(1, true);
    router.writer_rank_ended(second);
    router.close_writers();
    wait_drained(&rx, 60);
    let got = keys(&out.join().unwrap());
    let want: Vec<Key> = (0..n0)
        .map(|i| (0, 0, i))
        .chain((0..n1).map(|i| (1, 0, i)))
        .collect();
    assert!(got == want, "every record once, writer 0's first");
    let st = router.stats();
    assert!(st.max_depth <= capacity as u64, "{st:?}");
    assert_eq!(st.discarded + st.in_flight_at_failure, 0, "{st:?}");
}

// ---- property test --------------------------------------------------------------------

#[derive(Debug, Clone)]
enum End {
    /// Its last record is whole.
    Clean,
    /// Its last record is cut short and it fails: dropped, counted `partial_records`.
    TornFails,
    /// Its last record lacks the delimiter and it succeeds: delivered, delimiter added.
    TornSucceeds,
}

#[derive(Debug, Clone)]
struct Writer {
    /// Attaches after this many milliseconds.
    delay_ms: u64,
    /// Records per run: one run, or more when it restarts (each a new pipe, same rank).
    runs: Vec<Vec<usize>>,
    end: End,
    /// Bytes per write.
    chunk: usize,
}

#[derive(Debug, Clone)]
struct Case {
    capacity: usize,
    delivery: Delivery,
    readers: usize,
    /// Shared: reader 0 dies after reading about this many bytes and is restarted (its
    /// unread records are lost in its pipe and counted in flight; those it was given but
    /// not written wait for a reader that keeps the writers' order, its restart first).
    dies: Option<usize>,
    /// The first writers are foreach items of one stage, announced as they are created
    /// (their number is not known in advance); the rest are announced at the start.
    items: usize,
    writers: Vec<Writer>,
}

fn case() -> impl Strategy<Value = Case> {
    let end =
        prop_oneof![4 => Just(End::Clean), 1 => Just(End::TornFails), 1 => Just(End::TornSucceeds)];
    let run = prop::collection::vec(prop_oneof![8 => 0usize..40, 1 => 40usize..5000], 0..120);
    let writer = (
        prop_oneof![2 => Just(0u64), 1 => 1u64..40],
        prop::collection::vec(run, 1..3),
        end,
        prop_oneof![Just(1usize), 2usize..300, Just(65536usize)],
    )
        .prop_map(|(delay_ms, runs, end, chunk)| Writer {
            delay_ms,
            runs,
            end,
            chunk,
        });
    (
        prop_oneof![Just(1usize), 2usize..30, Just(1024usize)],
        prop_oneof![2 => Just(Delivery::Shared), 1 => Just(Delivery::Broadcast)],
        1usize..4,
        prop::collection::vec(writer, 1..6),
        0usize..4,
        prop_oneof![2 => Just(None), 1 => (1usize..60_000).prop_map(Some)],
    )
        .prop_map(|(capacity, delivery, readers, writers, items, dies)| Case {
            capacity,
            delivery,
            readers,
            dies: dies.filter(|_| delivery == Delivery::Shared),
            items: items.min(writers.len()),
            writers,
        })
}

/// Writer `w`'s rank: the first `items` are items 0.. of stage 0; the others, stages
/// 1.. (two replicas each), so rank order is index order.
fn rank(c: &Case, w: usize) -> WriterRank {
    if w < c.items {
        WriterRank::new(0, w as u64)
    } else {
        let k = w - c.items;
        WriterRank::new(1 + k / 2, (k % 2) as u64)
    }
}

/// One writer instance's life: its runs, each a pipe of the same rank, then the end of
/// its rank. Returns the keys that must be delivered.
fn writer_life(router: Arc<QueueRouter>, c: Case, w: usize) -> Vec<Key> {
    let spec = &c.writers[w];
    std::thread::sleep(Duration::from_millis(spec.delay_ms));
    let rank = rank(&c, w);
    let mut want = Vec::new();
    let runs = spec.runs.len();
    for (p, fillers) in spec.runs.iter().enumerate() {
        let id = w * 10 + p;
        let (r, wr) = pipe();
        router.add_ranked_writer(id, rank, r);
        let mut data: Vec<u8> = Vec::new();
        for (i, &f) in fillers.iter().enumerate() {
            data.extend(record(w, p, i, f));
            want.push((w, p, i));
        }
        let last_run = p + 1 == runs;
        let mut ok = true;
        if last_run {
            match spec.end {
                End::Clean => {}
                End::TornFails => {
                    data.extend(format!("{w}.{p}.{}:aaa", fillers.len()).bytes());
                    ok = false;
                }
                End::TornSucceeds => {
                    let mut rec = record(w, p, fillers.len(), 7);
                    rec.pop();
                    data.extend(rec);
                    want.push((w, p, fillers.len()));
                }
            }
        }
        let mut f = std::fs::File::from(wr);
        for chunk in data.chunks(spec.chunk) {
            f.write_all(chunk).expect("write");
        }
        drop(f);
        router.writer_ended(id, ok);
    }
    router.writer_rank_ended(rank);
    want
}

fn run_case(c: &Case) {
    let (router, rx) = start(ordered(c.delivery, c.capacity));
    // As the supervisor does: torn last records wait for their writer's outcome.
    router.await_writer_outcomes();
    let router = Arc::new(router);
    // Set once the dying reader's exit was reported (and its restart attached).
    let (died_tx, died_rx) = crossbeam_channel::bounded::<()>(1);
    let mut outs: Vec<_> = (0..c.readers)
        .map(|i| {
            let (r, w) = pipe();
            router.add_reader(i, w);
            if i == 0
                && let Some(limit) = c.dies
            {
                router.reader_may_restart(0);
                let router = router.clone();
                let died_tx = died_tx.clone();
                return std::thread::spawn(move || {
                    // As the supervisor does: the exit, the restart, then the old one
                    // is no longer awaited.
                    let mut f = std::fs::File::from(r);
                    let mut first = vec![0u8; limit];
                    let mut got = 0;
                    while got < limit {
                        match f.read(&mut first[got..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                    first.truncate(got);
                    drop(f);
                    router.reader_exited(0);
                    let (r, w) = pipe();
                    router.add_reader(100, w);
                    router.reader_not_coming(0);
                    let _ = died_tx.send(());
                    let mut rest = Vec::new();
                    let _ = std::fs::File::from(r).read_to_end(&mut rest);
                    (first, rest)
                });
            }
            std::thread::spawn(move || {
                let mut out = Vec::new();
                let _ = std::fs::File::from(r).read_to_end(&mut out);
                (Vec::new(), out)
            })
        })
        .collect();
    // Replicas are known at the start; the items' stage announces its later items.
    if c.items > 0 {
        router.expect_writer(WriterRank::later_items(0));
    }
    for w in c.items..c.writers.len() {
        router.expect_writer(rank(c, w));
    }
    let mut lives = Vec::new();
    for w in c.items..c.writers.len() {
        let (router, c) = (router.clone(), c.clone());
        lives.push((w, std::thread::spawn(move || writer_life(router, c, w))));
    }
    // Items are created one after the other, each announced before it starts.
    for w in 0..c.items {
        std::thread::sleep(Duration::from_millis(2));
        router.expect_writer(rank(c, w));
        let (router, c) = (router.clone(), c.clone());
        lives.push((w, std::thread::spawn(move || writer_life(router, c, w))));
    }
    if c.items > 0 {
        router.writer_rank_ended(WriterRank::later_items(0));
    }
    lives.sort_by_key(|(w, _)| *w);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lives.iter().all(|(_, l)| l.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "writers blocked for good (deadlock): {c:?} {:?}",
            router.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let want: Vec<Key> = lives
        .into_iter()
        .flat_map(|(_, l)| l.join().unwrap())
        .collect();
    router.close_writers();
    // As the supervisor does: readers are closed once no restart can come (the dying
    // reader's exit was reported and its restart attached).
    if c.dies.is_some() {
        died_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the dying reader ends");
    }
    router.close_readers();
    wait_drained(&rx, 60);
    // Every record was written and every reader got EOF (a restart that joined after
    // the end gets its EOF now).
    router.join();
    let mut got: Vec<Vec<Key>> = Vec::new();
    for o in outs.drain(..) {
        let (died, out) = o.join().unwrap();
        if c.dies.is_some() && got.is_empty() {
            got.push(whole_keys(&died));
        }
        got.push(keys(&out));
    }
    match c.delivery {
        Delivery::Broadcast => {
            for (i, g) in got.iter().enumerate() {
                assert!(*g == want, "reader {i} gets every record, in writer order");
            }
        }
        Delivery::Shared => {
            for (i, g) in got.iter().enumerate() {
                // Keys sort by writer rank, then run, then record: strictly increasing
                // means each writer's order and the writers' order, with no duplicate.
                assert!(
                    g.windows(2).all(|p| p[0] < p[1]),
                    "reader {i}: records out of writer order"
                );
            }
            let all: BTreeSet<Key> = got.iter().flatten().copied().collect();
            let total: usize = got.iter().map(Vec::len).sum();
            assert_eq!(total, all.len(), "no record delivered twice");
            let wanted: BTreeSet<Key> = want.iter().copied().collect();
            let st = router.stats();
            let missing: Vec<&Key> = wanted.difference(&all).collect();
            let unexpected: Vec<&Key> = all.difference(&wanted).collect();
            assert!(
                unexpected.is_empty(),
                "records never written: {unexpected:?}"
            );
            // Only records lost unread in the dead reader's pipe may be missing, and
            // they are counted.
            assert_eq!(
                missing.len() as u64,
                st.in_flight_at_failure,
                "every record delivered or counted in flight: missing {:?} {st:?}",
                &missing[..missing.len().min(10)]
            );
            if c.readers == 1 && c.dies.is_none() {
                assert!(got[0] == want);
            }
        }
    }
    let st = router.stats();
    let torn = c
        .writers
        .iter()
        .filter(|w| matches!(w.end, End::TornFails))
        .count() as u64;
    assert_eq!(st.partial_records, torn, "{st:?}");
    assert_eq!(st.records as usize, want.len(), "{st:?}");
    assert_eq!(st.discarded, 0, "{st:?}");
    if c.dies.is_none() {
        assert_eq!(st.in_flight_at_failure, 0, "{st:?}");
    }
    assert!(
        st.max_depth <= c.capacity as u64,
        "capacity {} exceeded: {st:?}",
        c.capacity
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn ordered_writers_deliver_every_record_once_group_by_group(c in case()) {
        run_case(&c);
    }
}
