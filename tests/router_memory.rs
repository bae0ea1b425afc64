//! The router's memory over time, through the real binary: a writer stage restarted
//! 10,000 times into a routed queue must not make prun grow (issue 11: ended writers
//! and readers stayed in the router's lists, ~4.4 KB per restart). prun's resident set
//! is read from /proc while it runs; the assertion is on growth, never on timing.

mod run_util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use run_util::Test;

/// Resident set of `pid` in KiB (None once it is gone).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn router_memory_is_flat_across_ten_thousand_writer_restarts() {
    // Two readers make the queue routed; the writer ends at once, 10,000 times.
    let t = Test::new(
        r#"
version: 1
queues:
  q: {}
stages:
  w:
    cmd: [echo, hello]
    restart: {policy: always, max: 10000, backoff: 0s}
    stdout: q
  r:
    cmd: [wc, -l]
    replicas: 2
    stdin: q
"#,
    );
    let mut child = t
        .command("report.json", &["--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prun starts");
    let pid = child.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    while let Some(kib) = rss_kib(pid) {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        samples.push(kib);
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "prun did not end; RSS samples (KiB): {samples:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("prun ends");
    assert!(out.status.success(), "prun failed: {:?}", out.status);
    let report: serde_json::Value = serde_json::from_str(&t.read("report.json")).expect("report");
    let w = report["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["stage"] == "w"))
        .expect("writer instance");
    assert_eq!(w["restarts"], 10000, "{report:#}");
    let got: u64 = report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["stage"] == "r")
        .map(|i| i["records_in"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(got, 10001, "every record delivered: {report:#}");
    // Baseline: the largest sample of the first quarter of the run (after start-up);
    // the run then makes about 7,500 more restarts. The old router grew ~4.4 KB for
    // each (33 MB here); allow a few MiB for allocator noise.
    assert!(samples.len() >= 8, "too few samples: {samples:?}");
    let quarter = samples.len() / 4;
    let base = samples[2..quarter.max(3)].iter().copied().max().unwrap();
    let peak = samples.iter().copied().max().unwrap();
    assert!(
        peak <= base + 4 * 1024,
        "prun grew from {base} KiB to {peak} KiB over the restarts; samples: {samples:?}"
    );
}
