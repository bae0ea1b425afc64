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
