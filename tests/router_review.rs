//! Review tests of the router's peek, splice and direct paths: many writers and readers with
//! varied chunk and read sizes, readers that stall or die mid-record, writer-emitted
//! sentinels, and exact statistics, through the library API with real pipes.
mod router_util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use prun::plan::{Delivery, Framing};
use prun::runtime::router::RouterEvent;
use router_util::*;

fn rec(w: usize, i: usize, len: usize) -> Vec<u8> {
    let mut r = format!("<{w}:{i}:{len}>").into_bytes();
    r.extend((0..len).map(|k| b'a' + ((w * 7 + i * 3 + k) % 26) as u8));
    r
}

fn parse(r: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(r).unwrap_or_else(|_| panic!("utf8 {:?}", &r[..r.len().min(80)]));
    let end = s.find('>').unwrap_or_else(|| panic!("torn: {:.80}", s));
    let v: Vec<usize> = s[1..end]
        .split(':')
        .map(|x| x.parse().expect("torn num"))
        .collect();
    assert_eq!(rec(v[0], v[1], v[2]), r, "torn/corrupt record {:.80}", s);
    (v[0], v[1])
}

#[derive(Clone)]
struct ReaderSpec {
    read_size: usize,
    /// Close after reading this many bytes.
    die_after: Option<usize>,
    sleep_every: Option<(usize, u64)>,
    stall_before_close: u64,
}

impl ReaderSpec {
    /// A reader that reads `read_size` bytes at a time, never pauses and never dies.
    fn reading(read_size: usize) -> ReaderSpec {
        ReaderSpec {
            read_size,
            die_after: None,
            sleep_every: None,
            stall_before_close: 0,
        }
    }
}

struct Out {
    bytes0: usize,
    per_reader: Vec<Vec<(usize, usize)>>,
    stats: prun::runtime::router::QueueStats,
    #[allow(dead_code)]
    events: Vec<RouterEvent>,
}

fn run(
    framing: Framing,
    capacity: usize,
    sentinel: Option<&str>,
    writers: Vec<Vec<u8>>,
    chunk: Vec<usize>,
    readers: Vec<ReaderSpec>,
) -> Out {
    let d = framing.delimiter().unwrap();
    let (router, rx) = start(config(Delivery::Shared, framing, capacity, sentinel));
    let mut rts = Vec::new();
    for (id, spec) in readers.into_iter().enumerate() {
        let (r, w) = pipe();
        router.add_reader(id, w);
        rts.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut all = Vec::new();
            let mut buf = vec![0u8; spec.read_size];
            let mut k = 0usize;
            loop {
                let want = match spec.die_after {
                    Some(n) => spec.read_size.min(n - all.len()),
                    None => spec.read_size,
                };
                if want == 0 {
                    break;
                }
                let n = f.read(&mut buf[..want]).unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                k += 1;
                if let Some((every, ms)) = spec.sleep_every
                    && k.is_multiple_of(every)
                {
                    std::thread::sleep(Duration::from_millis(ms));
                }
            }
            if spec.die_after.is_some() {
                std::thread::sleep(Duration::from_millis(spec.stall_before_close));
            }
            (all, spec.die_after.is_some())
        }));
    }
    let mut wts = Vec::new();
    for (wid, stream) in writers.into_iter().enumerate() {
        let (r, w) = pipe();
        router.add_writer(wid, r);
        let chunk = chunk.clone();
        wts.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            let mut pos = 0;
            let mut k = wid;
            while pos < stream.len() {
                let n = chunk[k % chunk.len()].min(stream.len() - pos);
                k += 1;
                if n == 0 {
                    // A 0 in `chunk` is a pause: the queue runs dry meanwhile.
                    std::thread::sleep(Duration::from_millis(30));
                    continue;
                }
                if f.write_all(&stream[pos..pos + n]).is_err() {
                    return;
                }
                pos += n;
            }
        }));
    }
    for t in wts {
        t.join().unwrap();
    }
    router.close_writers();
    let events = wait_drained(&rx, 60);
    let mut per_reader = Vec::new();
    let mut bytes0 = 0;
    for (ri, t) in rts.into_iter().enumerate() {
        let (out, died) = t.join().unwrap();
        if ri == 0 {
            bytes0 = out.len();
        }
        let mut v = Vec::new();
        let body: &[u8] = if died {
            // Only complete records count.
            match out.iter().rposition(|&b| b == d) {
                Some(p) => &out[..p],
                None => &[],
            }
        } else {
            assert!(out.is_empty() || *out.last().unwrap() == d);
            if out.is_empty() {
                &out[..]
            } else {
                &out[..out.len() - 1]
            }
        };
        if !body.is_empty() || (!died && !out.is_empty()) {
            for r in body.split(|&b| b == d) {
                if Some(r) == sentinel.map(|s| s.as_bytes()) {
                    v.push((usize::MAX, 0));
                } else {
                    v.push(parse(r));
                }
            }
        }
        per_reader.push(v);
    }
    let stats = router.stats();
    router.join();
    Out {
        bytes0,
        per_reader,
        stats,
        events,
    }
}

fn stream(w: usize, lens: &[usize], d: u8) -> Vec<u8> {
    let mut s = Vec::new();
    for (i, &l) in lens.iter().enumerate() {
        s.extend(rec(w, i, l));
        s.push(d);
    }
    s
}

fn lens(n: usize, seed: usize) -> Vec<usize> {
    (0..n)
        .map(|i| match (i * 7919 + seed * 31) % 1000 {
            0 => 200_000,
            1..=20 => 5000,
            k => k % 90,
        })
        .collect()
}

fn check_order_and_dups(o: &Out) -> HashMap<(usize, usize), usize> {
    check(o, true)
}

fn check(o: &Out, order: bool) -> HashMap<(usize, usize), usize> {
    let mut seen = HashMap::new();
    for (ri, recs) in o.per_reader.iter().enumerate() {
        let mut last: HashMap<usize, usize> = HashMap::new();
        for &(w, i) in recs {
            if w == usize::MAX {
                continue;
            }
            if let Some(&p) = last.get(&w)
                && order
            {
                assert!(i > p, "reader {ri}: writer {w} order broken: {i} after {p}");
            }
            last.insert(w, i);
            assert!(seen.insert((w, i), ri).is_none(), "duplicate {w}:{i}");
        }
    }
    seen
}

#[test]
fn many_records_fast_readers_no_loss() {
    for round in 0..3 {
        let ws: Vec<Vec<u8>> = (0..3)
            .map(|w| stream(w, &lens(80_000, w + round), b'\n'))
            .collect();
        let total: usize = 240_000;
        let readers = vec![ReaderSpec::reading(65536), ReaderSpec::reading(1 << 20)];
        let o = run(
            Framing::Lines,
            1024,
            None,
            ws,
            vec![4096, 131072, 777],
            readers,
        );
        // No reader dies: per-writer order holds even when batches are taken back from
        // a reader whose pipe stayed full (`steal`).
        let seen = check_order_and_dups(&o);
        assert_eq!(seen.len(), total, "lost");
        assert_eq!(o.stats.records as usize, total);
        assert!(o.stats.max_depth <= 1024);
        let pr: u64 = o.stats.per_reader.iter().map(|x| x.1).sum();
        assert_eq!(pr as usize, total, "per_reader {:?}", o.stats.per_reader);
        for (w, n) in &o.stats.per_writer {
            assert_eq!(*n, 80_000, "per_writer {w}");
        }
    }
}

#[test]
fn reader_dies_mid_stream_accounting() {
    for round in 0..6 {
        let n = 60_000;
        let ws: Vec<Vec<u8>> = (0..2)
            .map(|w| stream(w, &lens(n, w + round), b'\n'))
            .collect();
        let readers = vec![
            ReaderSpec {
                die_after: Some(1_000_000 + round * 377_777),
                ..ReaderSpec::reading(65536)
            },
            ReaderSpec {
                sleep_every: Some((64, 1)),
                ..ReaderSpec::reading(65536)
            },
        ];
        let o = run(
            Framing::Lines,
            1024,
            None,
            ws,
            vec![4096, 131072, 777],
            readers,
        );
        // Order not checked: a reader dying with a partly written record breaks it (see
        // reader_stalls_then_dies_order).
        let seen = check(&o, false);
        let dead = o.per_reader[0].len() as u64;
        let alive = o.per_reader[1].len() as u64;
        let st = &o.stats;
        let given0 = st.per_reader.iter().find(|x| x.0 == 0).unwrap().1;
        let given1 = st.per_reader.iter().find(|x| x.0 == 1).unwrap().1;
        eprintln!(
            "round {round}: dead read {dead}, given0 {given0}, in_flight {}, alive {alive} given1 {given1}",
            st.in_flight_at_failure
        );
        assert_eq!(given1, alive, "survivor got what it was given");
        assert_eq!(
            given0 - st.in_flight_at_failure,
            dead,
            "dead reader accounting {st:?}"
        );
        assert_eq!(given0 + given1, 2 * n as u64, "{st:?}");
        assert_eq!(seen.len() as u64 + st.in_flight_at_failure, 2 * n as u64);
        assert_eq!(st.records, 2 * n as u64);
    }
}

#[test]
fn writer_sentinel_mid_stream() {
    for round in 0..8 {
        let n = 40_000;
        let k = 5_000 + round * 4_111;
        let mut l0 = lens(n, round);
        l0[k] = 0;
        let mut s0 = Vec::new();
        for (i, &l) in l0.iter().enumerate() {
            if i == k {
                s0.extend_from_slice(b"STOP");
            } else {
                s0.extend(rec(0, i, l));
            }
            s0.push(b'\n');
        }
        let ws = vec![s0, stream(1, &lens(n, 7 + round), b'\n')];
        let readers = vec![ReaderSpec::reading(1 << 20), ReaderSpec::reading(65536)];
        let o = run(
            Framing::Lines,
            [1024, 7, 100_000][round % 3],
            Some("STOP"),
            ws,
            vec![4096, 131072, 777],
            readers,
        );
        let seen = check_order_and_dups(&o);
        let from0 = seen.keys().filter(|x| x.0 == 0).count();
        let from1 = seen.keys().filter(|x| x.0 == 1).count();
        let sentinels: usize = o
            .per_reader
            .iter()
            .map(|v| v.iter().filter(|x| x.0 == usize::MAX).count())
            .sum();
        let st = &o.stats;
        eprintln!("round {round}: {from0} {from1} {sentinels} {st:?}");
        assert_eq!(from1, n);
        assert_eq!(from0, k, "records before the sentinel");
        assert_eq!(st.dropped_after_sentinel as usize, n - k - 1);
        assert_eq!(sentinels, 2);
        assert_eq!(st.records as usize, n + k);
    }
}

#[test]
fn mixed_configs() {
    let cfgs: Vec<(Framing, usize, Vec<usize>, usize)> = vec![
        (Framing::Nul, 1, vec![1, 7, 100, 4096], 3),
        (Framing::Lines, 2, vec![65536], 2),
        (Framing::Nul, 1024, vec![13, 333, 8191], 4),
        (Framing::Lines, 100_000, vec![1 << 20], 1),
        (Framing::Lines, 3, vec![100_000, 3], 3),
    ];
    for (round, (framing, cap, chunk, nw)) in cfgs.into_iter().enumerate() {
        let d = framing.delimiter().unwrap();
        let n = 20_000;
        let ws: Vec<Vec<u8>> = (0..nw)
            .map(|w| stream(w, &lens(n, w + round * 5), d))
            .collect();
        let total_bytes: usize = ws.iter().map(Vec::len).sum();
        let readers = vec![
            ReaderSpec::reading(1 << 20),
            ReaderSpec {
                sleep_every: Some((16, 1)),
                ..ReaderSpec::reading(4096)
            },
            ReaderSpec {
                die_after: Some(300_000 + round * 99_999),
                ..ReaderSpec::reading(100_000)
            },
        ];
        let o = run(framing, cap, None, ws, chunk, readers);
        // Reader 2 dies mid-stream: what it was given goes back to the others. When
        // both survivors already have later records of that writer, it reaches one of
        // them out of order (not losing it comes first), so order is not asserted here;
        // loss, duplication and the accounting are.
        let seen = check(&o, false);
        let st = &o.stats;
        let given: u64 = st.per_reader.iter().map(|x| x.1).sum();
        let dead_read = o.per_reader[2].len() as u64;
        let given2 = st.per_reader.iter().find(|x| x.0 == 2).unwrap().1;
        eprintln!("round {round}: {st:?}");
        assert_eq!(given, (nw * n) as u64, "given");
        assert_eq!(given2 - st.in_flight_at_failure, dead_read);
        assert_eq!(seen.len() as u64 + st.in_flight_at_failure, (nw * n) as u64);
        assert_eq!(st.records, (nw * n) as u64);
        assert_eq!(st.bytes, total_bytes as u64, "bytes stat");
        assert!(st.max_depth <= cap as u64);
    }
}

/// Readers that stall now and then while an idle one waits: the stalled ones' batches
/// are taken back and handed to others (`steal`), which must keep each writer's records
/// in order within every reader (before the fix, a batch taken back could reach a reader
/// that already had later records of the same writer).
#[test]
fn stalling_readers_keep_each_writers_order() {
    for round in 0..3usize {
        let n = 30_000;
        let ws: Vec<Vec<u8>> = (0..3)
            .map(|w| stream(w, &lens(n, w + round * 3), b'\n'))
            .collect();
        let readers = vec![
            ReaderSpec::reading(1 << 20),
            ReaderSpec {
                sleep_every: Some((8, 30)),
                ..ReaderSpec::reading(4096)
            },
            ReaderSpec {
                sleep_every: Some((32, 25)),
                ..ReaderSpec::reading(16384)
            },
        ];
        let cap = [64, 7, 1024][round];
        // Bursts with pauses: the queue runs dry, so idle readers take back what the
        // stalled ones were given.
        let o = run(
            Framing::Lines,
            cap,
            None,
            ws,
            vec![65536, 131072, 0],
            readers,
        );
        let seen = check_order_and_dups(&o);
        let st = &o.stats;
        eprintln!("round {round}: {st:?}");
        assert_eq!(seen.len(), 3 * n);
        assert_eq!(st.records, 3 * n as u64);
        assert_eq!(st.discarded + st.in_flight_at_failure, 0);
    }
}

/// A reader that stops reading with a record partly written to it, and dies after the
/// writers ended: the record goes back to the queue, and the other reader (still open,
/// SPEC 4.5) gets it. Before the fix the other reader had already got its EOF, the
/// record was stuck in the queue and the router never drained.
fn stalls_then_dies() {
    for round in 0..6 {
        let n = 60_000;
        let ws: Vec<Vec<u8>> = (0..1)
            .map(|w| stream(w, &lens(n, w + round), b'\n'))
            .collect();
        let readers = vec![
            ReaderSpec {
                die_after: Some(2_000_000 + round * 377_777),
                stall_before_close: 300,
                ..ReaderSpec::reading(65536)
            },
            ReaderSpec::reading(1 << 20),
        ];
        let o = run(Framing::Lines, 1024, None, ws, vec![131072], readers);
        // Order is not checked: the only other reader already has later records of the
        // writer, so the record given back reaches it out of order rather than being
        // lost (docs/guarantees.md).
        let seen = check(&o, false);
        eprintln!(
            "round {round}: bytes0 {} dead read {} alive {} {:?}",
            o.bytes0,
            o.per_reader[0].len(),
            o.per_reader[1].len(),
            o.stats
        );
        let st = &o.stats;
        assert_eq!(st.discarded, 0);
        // (The dying reader may also have got its EOF before it stopped reading: then
        // the router cannot see what it left unread, so only the survivor is checked.)
        let given: Vec<u64> = (0..2)
            .map(|i| st.per_reader.iter().find(|x| x.0 == i).unwrap().1)
            .collect();
        assert_eq!(given[1], o.per_reader[1].len() as u64, "{st:?}");
        assert_eq!(given[0] + given[1], n as u64, "{st:?}");
        assert!(seen.len() as u64 + st.in_flight_at_failure <= n as u64);
    }
}

#[test]
fn reader_stalls_then_dies() {
    stalls_then_dies();
}
