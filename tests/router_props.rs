//! Property tests of the queue router over real pipes and threads: random writers,
//! readers, record sizes, write chunkings, framings, deliveries and capacities. Checks:
//! no loss, no duplication, no corruption (every record arrives whole), per-writer order
//! within each reader, and (broadcast) identical sequences for every reader.

mod router_util;

use std::io::{Read, Write};
use std::time::Duration;

use proptest::prelude::*;
use prun::plan::{Delivery, Framing};
use router_util::*;

#[derive(Debug, Clone)]
struct Case {
    framing: Framing,
    delivery: Delivery,
    capacity: usize,
    readers: usize,
    /// Per writer: record filler lengths.
    writers: Vec<Vec<usize>>,
    /// Sizes of the write(2) calls the writers make (cycled).
    chunks: Vec<usize>,
    /// Readers read this many bytes per read(2) (cycled), some very small.
    read_sizes: Vec<usize>,
    /// Whether each writer ends without a final delimiter.
    no_final_delim: Vec<bool>,
    /// How reader 0 reads.
    pace: Pace,
}

/// Bytes a `Pace::Stalling` reader reads between two stalls.
const STALL_EVERY: usize = 64 * 1024;
/// Bytes a writer writes between two pauses when the reader stalls.
const PAUSE_EVERY: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pace {
    Fast,
    /// A 1 ms nap every 32 reads.
    Slow,
    /// A 25 ms stall every [`STALL_EVERY`] bytes, while the writers pause now and then: the queue
    /// runs dry with the stalled reader's pipe full, so the router takes its batches
    /// back for the idle readers (the order of what it takes back is checked too).
    Stalling,
}

fn record_len() -> impl Strategy<Value = usize> {
    prop_oneof![20 => 0usize..200, 4 => 200usize..5000, 1 => 70_000usize..300_000]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Framing::Lines),
            Just(Framing::Nul),
            Just(Framing::Bytes)
        ],
        prop_oneof![Just(Delivery::Shared), Just(Delivery::Broadcast)],
        prop_oneof![Just(1usize), 2usize..50, Just(1024usize)],
        1usize..5,
        prop::collection::vec(prop::collection::vec(record_len(), 0..60), 1..5),
        prop::collection::vec(1usize..70_000, 1..5),
        prop::collection::vec(prop_oneof![1 => 1usize..64, 4 => 4096usize..200_000], 1..4),
        prop::collection::vec(any::<bool>(), 4),
        prop_oneof![2 => Just(Pace::Fast), 1 => Just(Pace::Slow), 1 => Just(Pace::Stalling)],
    )
        .prop_map(
            |(
                framing,
                delivery,
                capacity,
                readers,
                mut writers,
                chunks,
                read_sizes,
                no_final_delim,
                pace,
            )| {
                let mut readers = readers;
                if framing == Framing::Bytes {
                    // SPEC 2: bytes only with one writer, and shared only with one reader.
                    writers.truncate(1);
                    if delivery == Delivery::Shared {
                        readers = 1;
                    }
                }
                Case {
                    framing,
                    delivery,
                    capacity,
                    readers,
                    writers,
                    chunks,
                    read_sizes,
                    no_final_delim,
                    pace,
                }
            },
        )
}

/// Record `i` of writer `w`: a tag that identifies it, then filler bytes.
fn record(w: usize, i: usize, filler: usize) -> Vec<u8> {
    let mut r = format!("<{w}:{i}:{filler}>").into_bytes();
    r.extend((0..filler).map(|k| b'a' + ((w * 7 + i * 3 + k) % 26) as u8));
    r
}

fn parse(rec: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(rec).expect("utf8 record");
    let end = s.find('>').expect("tag");
    let mut it = s[1..end]
        .split(':')
        .map(|x| x.parse::<usize>().expect("number"));
    let (w, i, filler) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert_eq!(
        s.len(),
        end + 1 + filler,
        "record corrupted or torn: {:.80}",
        s
    );
    assert_eq!(
        rec[end + 1..],
        record(w, i, filler)[end + 1..],
        "record content corrupted"
    );
    (w, i)
}

fn run_case(c: &Case) {
    let delim = c.framing.delimiter();
    let (router, rx) = start(config(c.delivery, c.framing, c.capacity, None));
    let mut reader_threads = Vec::new();
    for id in 0..c.readers {
        let (r, w) = pipe();
        router.add_reader(id, w);
        let sizes = c.read_sizes.clone();
        let pace = if id == 0 { c.pace } else { Pace::Fast };
        reader_threads.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut all = Vec::new();
            let mut buf = vec![0u8; 200_000];
            let mut k = 0;
            loop {
                let want = sizes[k % sizes.len()];
                k += 1;
                let n = f.read(&mut buf[..want]).unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                match pace {
                    Pace::Slow if k % 32 == 0 => std::thread::sleep(Duration::from_millis(1)),
                    // By bytes, not reads: with 1-byte reads a stall every few reads
                    // would take minutes.
                    Pace::Stalling if all.len() / STALL_EVERY > (all.len() - n) / STALL_EVERY => {
                        std::thread::sleep(Duration::from_millis(25))
                    }
                    _ => {}
                }
            }
            all
        }));
    }
    let mut expected: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut writer_threads = Vec::new();
    for (wid, lens) in c.writers.iter().enumerate() {
        let recs: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &f)| record(wid, i, f))
            .collect();
        let mut stream = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            stream.extend_from_slice(r);
            let last = i + 1 == recs.len();
            if let Some(d) = delim
                && !(last && c.no_final_delim[wid % 4])
            {
                stream.push(d);
            }
        }
        expected.push(recs);
        let (r, w) = pipe();
        router.add_writer(wid, r);
        let chunks = c.chunks.clone();
        let pauses = c.pace == Pace::Stalling;
        writer_threads.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(w);
            let mut pos = 0;
            let mut k = 0;
            while pos < stream.len() {
                let n = chunks[k % chunks.len()].min(stream.len() - pos);
                k += 1;
                f.write_all(&stream[pos..pos + n]).unwrap();
                pos += n;
                // A pause every PAUSE_EVERY bytes (by bytes: writes may be 1 byte each).
                if pauses && pos / PAUSE_EVERY > (pos - n) / PAUSE_EVERY {
                    std::thread::sleep(Duration::from_millis(25));
                }
            }
        }));
    }
    for t in writer_threads {
        t.join().unwrap();
    }
    router.close_writers();
    wait_drained(&rx, 60);
    let outputs: Vec<Vec<u8>> = reader_threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();

    if c.framing == Framing::Bytes {
        // One writer: each reader's byte stream is the writer's stream (or, shared, the
        // single reader's).
        let want: Vec<u8> = expected[0].concat();
        for out in &outputs {
            assert_eq!(out.len(), want.len());
            assert!(out == &want, "bytes stream differs");
        }
        return;
    }
    let d = delim.unwrap();
    let per_reader: Vec<Vec<(usize, usize)>> = outputs
        .iter()
        .map(|out| {
            assert!(
                out.is_empty() || *out.last().unwrap() == d,
                "stream ends on a delimiter"
            );
            let body = if out.is_empty() {
                &out[..]
            } else {
                &out[..out.len() - 1]
            };
            if out.is_empty() {
                Vec::new()
            } else {
                body.split(|b| *b == d).map(parse).collect()
            }
        })
        .collect();
    for recs in &per_reader {
        for w in 0..c.writers.len() {
            let idx: Vec<usize> = recs.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
            assert!(
                idx.windows(2).all(|p| p[0] < p[1]),
                "per-writer order broken: {idx:?}"
            );
        }
    }
    let total: usize = expected.iter().map(Vec::len).sum();
    match c.delivery {
        Delivery::Shared => {
            let mut all: Vec<(usize, usize)> = per_reader.concat();
            all.sort_unstable();
            let mut want: Vec<(usize, usize)> = expected
                .iter()
                .enumerate()
                .flat_map(|(w, rs)| (0..rs.len()).map(move |i| (w, i)))
                .collect();
            want.sort_unstable();
            assert_eq!(all.len(), total, "loss or duplication");
            assert_eq!(all, want);
        }
        Delivery::Broadcast => {
            for recs in &per_reader {
                assert_eq!(recs.len(), total, "every reader gets every record");
                assert_eq!(recs, &per_reader[0], "same order for every reader");
            }
        }
    }
    let st = router.stats();
    assert_eq!(st.records as usize, total);
    assert!(
        st.max_depth <= c.capacity as u64,
        "capacity {} exceeded: {st:?}",
        c.capacity
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn router_delivers_every_record_whole_once_in_order(c in case()) {
        run_case(&c);
    }
}
