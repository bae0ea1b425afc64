//! End-to-end runs of every example pipeline in `pipelines/`.
//!
//! Each test starts the real `prun` binary from the repository root, exactly as the
//! README tells a new user to, with real stage processes, and checks what a user
//! would look at: the exit code, prun's stdout (only `stdout: inherit` stages write
//! there), the prefixed stage logs on stderr, the `--report` JSON, and for the
//! copier the files on disk. The stage programs print deterministic summary lines
//! for this purpose; scheduling-dependent details (which eater ate which bun) are
//! checked as sets, never as an order.
//!
//! `tickets` and `traffic` call `prun ctl` from inside their stages, so the
//! directory of the binary under test is put first on PATH.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

/// Generous: every pipeline finishes in a few seconds on an idle machine.
const DEADLINE: Duration = Duration::from_secs(90);

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `prun` started from the repository root, without colors, with itself on PATH.
fn prun() -> Command {
    let mut cmd = Command::cargo_bin("prun").expect("the prun binary is built");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_prun"))
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    let old_path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(&old_path)))
            .expect("PATH entries are joinable");
    cmd.current_dir(repo_root())
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .timeout(DEADLINE);
    cmd
}

/// What one `prun run` left behind.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
}

impl Outcome {
    /// Stage log lines from stderr as (instance, text). prun writes them as
    /// `instance │ text`; padding around the name is allowed, other lines (the
    /// report table, prun's own messages) are left out.
    fn logs(&self) -> Vec<(String, String)> {
        let instance = regex::Regex::new(r"^[a-z][a-z0-9_-]*(\.[0-9]+)?$").unwrap();
        self.stderr
            .lines()
            .filter_map(|line| {
                let (name, text) = line.split_once('│')?;
                let name = name.trim();
                instance.is_match(name).then(|| {
                    let text = text.strip_prefix(' ').unwrap_or(text);
                    (name.to_string(), text.to_string())
                })
            })
            .collect()
    }

    /// Texts logged by one instance, in order.
    fn log_of(&self, instance: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|(name, _)| name == instance)
            .map(|(_, text)| text)
            .collect()
    }

    fn context(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn instances(&self) -> Vec<&Value> {
        self.report["instances"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    fn instance(&self, name: &str) -> &Value {
        self.instances()
            .into_iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no instance {name} in the report\n{}", self.context()))
    }

    fn queue(&self, name: &str) -> &Value {
        self.report["queues"]
            .as_array()
            .and_then(|qs| qs.iter().find(|q| q["name"] == name))
            .unwrap_or_else(|| panic!("no queue {name} in the report\n{}", self.context()))
    }

    /// A foreach stage's counts: succeeded items are counted there, not listed.
    fn foreach(&self, stage: &str) -> &Value {
        self.report["foreach"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["stage"] == stage))
            .unwrap_or_else(|| panic!("no foreach stage {stage} in the report\n{}", self.context()))
    }

    fn assert_code(&self, expected: i32) {
        assert_eq!(self.code, Some(expected), "{}", self.context());
    }

    /// Every instance of `stage` ended in `state`; returns how many there were.
    fn assert_stage_state(&self, stage: &str, state: &str) -> usize {
        let of_stage: Vec<_> = self
            .instances()
            .into_iter()
            .filter(|i| i["stage"] == stage)
            .collect();
        assert!(
            !of_stage.is_empty(),
            "no instance of {stage}\n{}",
            self.context()
        );
        for i in &of_stage {
            assert_eq!(
                i["state"],
                state,
                "{}: {}\n{}",
                i["name"],
                i,
                self.context()
            );
        }
        of_stage.len()
    }
}

/// `prun <args...> PIPELINE --report R [extra...]`, from the repository root.
fn run_with(prefix: &[&str], pipeline: &str, extra: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let report_path = dir.path().join("report.json");
    let output = prun()
        .args(prefix)
        .arg(pipeline)
        .args(["--progress", "never", "--color", "never", "--report"])
        .arg(&report_path)
        .args(extra)
        .output()
        .expect("prun can be started");
    let mut outcome = Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report: Value::Null,
    };
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        panic!(
            "no report at {}: {e}\n{}",
            report_path.display(),
            outcome.context()
        )
    });
    outcome.report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("report is not JSON: {e}\n{text}\n{}", outcome.context()));
    outcome
}

fn run(pipeline: &str, extra: &[&str]) -> Outcome {
    run_with(&["run"], pipeline, extra)
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("pipelines"))
        .expect("pipelines/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates_strictly() {
    let files = example_files();
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "baozi",
        "joinable",
        "copy",
        "logstats",
        "crawler",
        "tickets",
        "traffic",
        "sum",
        "singdance",
        "keeporder",
    ] {
        assert!(
            names.contains(expected),
            "pipelines/{expected}.yaml is missing"
        );
    }
    let output = prun()
        .args(["validate", "--strict", "--format", "json"])
        .args(&files)
        .output()
        .expect("prun can be started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let diagnostics: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(diagnostics, Value::Array(vec![]), "{stdout}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn baozi_eats_every_bun_once() {
    // The README's command: `prun FILE` without `run`.
    let out = run_with(&[], "pipelines/baozi.yaml", &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "chef.0: 5 buns eaten\nchef.1: 5 buns eaten\nchef.2: 5 buns eaten\ntotal buns eaten: 15\n",
        "{}",
        out.context()
    );
    // Both eaters ate (shared queue, fair dispatch) and each stopped at its sentinel.
    let mut eaten = 0;
    for eater in ["eater.0", "eater.1"] {
        let log = out.log_of(eater);
        let ate = log
            .iter()
            .filter(|t| t.starts_with("ate bun chef."))
            .count();
        assert!(ate > 0, "{eater} ate nothing\n{}", out.context());
        eaten += ate;
        assert!(
            log.iter()
                .any(|t| t == "got the sentinel 'None': no more buns"),
            "{eater} did not stop at the sentinel\n{}",
            out.context()
        );
    }
    assert_eq!(eaten, 15, "{}", out.context());
    assert!(
        out.log_of("chef.2").iter().any(|t| t == "done: 5 buns"),
        "{}",
        out.context()
    );

    assert_eq!(out.report["pipeline"], "baozi");
    assert_eq!(out.report["status"], "succeeded");
    assert_eq!(out.report["exit_code"], 0);
    assert_eq!(out.assert_stage_state("chef", "succeeded"), 3);
    assert_eq!(out.assert_stage_state("eater", "succeeded"), 2);
    let counter = out.instance("counter");
    assert_eq!(counter["state"], "succeeded", "{counter}");
    assert_eq!(counter["exit_code"], 0, "{counter}");
    assert_eq!(counter["signal"], Value::Null, "{counter}");
    let buns = out.queue("buns");
    assert_eq!(buns["sentinels_sent"], 2, "{buns}");
    assert_eq!(buns["dropped_after_sentinel"], 0, "{buns}");
    assert_eq!(buns["in_flight_at_failure"], 0, "{buns}");
}

#[test]
fn baozi_buns_param_is_overridable() {
    let out = run("pipelines/baozi.yaml", &["--set", "buns=2"]);
    out.assert_code(0);
    assert!(
        out.stdout.ends_with("total buns eaten: 6\n"),
        "{}",
        out.context()
    );
}

#[test]
fn baozi_with_a_typo_is_rejected_before_anything_starts() {
    // The tutorial's "break it on purpose" step: `stdin: buns` → `stdin: bun`.
    let dir = tempfile::tempdir().expect("temp dir");
    let original = std::fs::read_to_string(repo_root().join("pipelines/baozi.yaml")).unwrap();
    assert_eq!(original.matches("stdin: buns").count(), 1);
    let broken = original.replace("stdin: buns", "stdin: bun");
    let typo_line = broken
        .lines()
        .position(|l| l.contains("stdin: bun"))
        .map(|i| i as u64 + 1)
        .unwrap();
    let typo_column = broken
        .lines()
        .nth(typo_line as usize - 1)
        .unwrap()
        .find("bun")
        .unwrap() as u64
        + 1;
    let file = dir.path().join("baozi.yaml");
    std::fs::write(&file, &broken).unwrap();

    let output = prun()
        .args(["validate", "--format", "json"])
        .arg(&file)
        .output()
        .expect("prun can be started");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let diagnostics: Value = serde_json::from_slice(&output.stdout).expect("JSON diagnostics");
    // Other errors may follow from the same typo (the queue `buns` now has no
    // reader); the one that matters points at the typo and suggests the fix.
    let error = diagnostics
        .as_array()
        .expect("an array")
        .iter()
        .find(|d| d["severity"] == "error" && d["line"] == typo_line)
        .unwrap_or_else(|| panic!("no error on line {typo_line}: {diagnostics:#}"));
    assert_eq!(error["column"], typo_column, "{error:#}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("bun"),
        "{error:#}"
    );
    assert!(
        error["help"].as_str().unwrap_or("").contains("buns"),
        "did-you-mean: {error:#}"
    );

    // `prun run` refuses it with exit code 2 and starts nothing.
    let output = prun()
        .arg("run")
        .arg(&file)
        .output()
        .expect("prun can be started");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("steamed bun"), "a stage ran: {stderr}");
}

#[test]
fn joinable_consumes_every_job_then_stops_the_daemons() {
    let out = run("pipelines/joinable.yaml", &[]);
    out.assert_code(0);
    let mut handled: BTreeMap<String, usize> = BTreeMap::new();
    let mut reported = 0;
    for consumer in ["consumer.0", "consumer.1"] {
        let log = out.log_of(consumer);
        for text in &log {
            if let Some(job) = text.strip_prefix("handled job ") {
                *handled.entry(job.to_string()).or_default() += 1;
            }
        }
        let count = log
            .iter()
            .find_map(|text| text.strip_prefix("stopped by SIGTERM: handled "))
            .and_then(|rest| rest.strip_suffix(" jobs"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{consumer} was not stopped cleanly\n{}", out.context()));
        reported += count;
    }
    let expected: BTreeMap<String, usize> = (0..3)
        .flat_map(|p| (1..=4).map(move |j| (format!("producer.{p}:{j}"), 1)))
        .collect();
    assert_eq!(
        handled,
        expected,
        "every job handled exactly once\n{}",
        out.context()
    );
    assert_eq!(reported, 12, "{}", out.context());

    assert_eq!(out.report["status"], "succeeded");
    assert_eq!(out.assert_stage_state("producer", "succeeded"), 3);
    assert_eq!(out.assert_stage_state("consumer", "stopped"), 2);
    assert_eq!(out.queue("jobs")["in_flight_at_failure"], 0);
}

fn copy_sources() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("examples/copy/src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn copy_reports_the_failed_item_and_copies_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dest = dir.path().join("out");
    let set_dest = format!("dest={}", dest.display());
    let out = run("pipelines/copy.yaml", &["--set", &set_dest]);

    // on_failure: continue → the others are copied, the pipeline fails with the
    // failed item's exit status.
    out.assert_code(1);
    assert_eq!(
        out.stdout,
        "not copied: archive\ncopied 5 of 6 entries\n",
        "{}",
        out.context()
    );
    assert!(
        out.logs()
            .iter()
            .any(|(_, t)| t == "cannot copy archive: Is a directory"),
        "{}",
        out.context()
    );

    let mut copied: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    copied.sort();
    let expected: Vec<String> = copy_sources()
        .into_iter()
        .filter(|n| n != "archive")
        .collect();
    assert_eq!(copied, expected);
    for name in &copied {
        let source = std::fs::read(repo_root().join("examples/copy/src").join(name)).unwrap();
        assert_eq!(std::fs::read(dest.join(name)).unwrap(), source, "{name}");
    }

    assert_eq!(out.report["status"], "failed");
    assert_eq!(out.report["exit_code"], 1);
    // The failed entry is listed; the five copied ones are counted.
    let copies: Vec<&Value> = out
        .instances()
        .into_iter()
        .filter(|i| i["stage"] == "copy")
        .collect();
    assert_eq!(copies.len(), 1, "the failed entry\n{}", out.context());
    assert!(
        copies[0]["item"]
            .as_str()
            .unwrap_or_default()
            .ends_with("archive")
    );
    assert_eq!(copies[0]["state"], "failed");
    assert_eq!(copies[0]["exit_code"], 1);
    let copy = out.foreach("copy");
    assert_eq!(copy["items"], 6, "{}", out.context());
    assert_eq!(copy["succeeded"], 5);
    assert_eq!(copy["failed"], 1);
    out.assert_stage_state("summary", "succeeded");
}

#[test]
fn copy_defaults_to_the_run_directory() {
    let out = run("pipelines/copy.yaml", &[]);
    out.assert_code(1);
    assert_eq!(
        out.stdout,
        "not copied: archive\ncopied 5 of 6 entries\n",
        "{}",
        out.context()
    );
}

#[test]
fn logstats_prints_one_table() {
    let out = run("pipelines/logstats.yaml", &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "\
file       requests  clients  errors
web-1.log        20        6       3
web-2.log        15        5       2
web-3.log        12        4       1
total            47       11       6
3 files, 1 malformed line(s) skipped
",
        "{}",
        out.context()
    );
    let count = out.foreach("count");
    assert_eq!(
        (&count["items"], &count["succeeded"]),
        (&Value::from(3), &Value::from(3))
    );
    assert_eq!(out.queue("stats")["records"], 3);
}

#[test]
fn keeporder_prints_the_jobs_in_item_order() {
    // The later jobs finish first; their output still comes in item order.
    let out = run("pipelines/keeporder.yaml", &[]);
    out.assert_code(0);
    let want: String = (1..=12)
        .map(|i| format!("job {i}: {i} squared is {}\njob {i}: done\n", i * i))
        .collect();
    assert_eq!(out.stdout, want, "{}", out.context());
    assert_eq!(out.queue("results")["records"], 24);
}

#[test]
fn sweep_runs_every_combination_of_the_matrix() {
    let out = run("pipelines/sweep.yaml", &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "\
noise  degree  seed    rmse
  0.0       1     1   0.985
  0.0       1     2   0.985
  0.0       2     1   0.000
  0.0       2     2   0.000
  0.0       3     1   0.000
  0.0       3     2   0.000
  0.2       1     1   0.911
  0.2       1     2   0.913
  0.2       2     1   0.169
  0.2       2     2   0.188
  0.2       3     1   0.155
  0.2       3     2   0.186
noise 0.0: best degree 2 (mean rmse 0.000)
noise 0.2: best degree 3 (mean rmse 0.170)
12 runs
",
        "{}",
        out.context()
    );
    let fit = out.foreach("fit");
    assert_eq!(
        (&fit["items"], &fit["succeeded"]),
        (&Value::from(12), &Value::from(12))
    );
}

#[test]
fn sweep_halts_once_a_quarter_of_its_runs_failed() {
    // With 3 points, every degree-3 cell fails (exit 2); the third failure (of 12 runs:
    // 25 %) halts the sweep: no new fit starts, the running one finishes.
    let out = run("pipelines/sweep.yaml", &["--set", "points=3"]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("fit: halted: 3 of 12 items failed (halt: soon, fail: 25%)"),
        "{}",
        out.context()
    );
    let fit = out.foreach("fit");
    assert_eq!(fit["failed"], 3, "{}", out.context());
    let not_started = fit["not_started"].as_u64().unwrap();
    let succeeded = fit["succeeded"].as_u64().unwrap();
    assert!((1..=3).contains(&not_started), "{}", out.context());
    assert_eq!(succeeded + 3 + not_started, 12, "{}", out.context());
    // `best` still tabulates what finished, and no degree-3 cell is in it.
    let last = out.stdout.lines().last().unwrap_or_default();
    assert_eq!(last, format!("{succeeded} runs"), "{}", out.context());
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("3")),
        "{}",
        out.context()
    );
}

/// A port that was free a moment ago, so that parallel runs do not collide.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

#[test]
fn crawler_downloads_through_a_pool_from_a_local_server() {
    let port = free_port();
    let set_port = format!("port={port}");
    let out = run("pipelines/crawler.yaml", &["--set", &set_port]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "\
200   202 /pages/cabbage.html
200   202 /pages/custard.html
200   204 /pages/mushroom.html
200   196 /pages/pork.html
200   204 /pages/red-bean.html
404     0 /pages/sold-out.html
downloaded 5 of 6 pages (1008 bytes), 1 failed
",
        "{}",
        out.context()
    );
    assert!(
        out.log_of("scraper")
            .iter()
            .any(|t| t == "found 6 links on the seed page; sent the sentinel"),
        "{}",
        out.context()
    );
    assert!(
        out.log_of("server")
            .iter()
            .any(|t| t.starts_with("serving ") && t.contains(&format!(":{port}/"))),
        "{}",
        out.context()
    );

    assert_eq!(out.report["status"], "succeeded");
    out.assert_stage_state("server", "stopped");
    out.assert_stage_state("scraper", "succeeded");
    assert_eq!(out.assert_stage_state("downloader", "succeeded"), 3);
    let urls = out.queue("urls");
    assert_eq!(urls["sentinels_sent"], 3, "one per downloader: {urls}");
    assert_eq!(urls["dropped_after_sentinel"], 0, "{urls}");
}

#[test]
fn tickets_never_sells_a_seat_twice() {
    let out = run("pipelines/tickets.yaml", &[]);
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", out.context());
    let sale = regex::Regex::new(r"^seat-([1-3]) -> buyer\.([0-9])$").unwrap();
    let seats: BTreeSet<&str> = lines[..3]
        .iter()
        .map(|l| {
            sale.captures(l)
                .unwrap_or_else(|| panic!("{l}"))
                .get(1)
                .unwrap()
                .as_str()
        })
        .collect();
    assert_eq!(seats, BTreeSet::from(["1", "2", "3"]), "{}", out.context());
    assert_eq!(lines[3], "sold 3 of 3 tickets to 3 different buyers");
    assert_eq!(lines[4], "no ticket sold twice");

    let logs = out.logs();
    let bought = logs
        .iter()
        .filter(|(n, t)| n.starts_with("buyer.") && t.starts_with("bought seat-"))
        .count();
    let home = logs
        .iter()
        .filter(|(n, t)| n.starts_with("buyer.") && t == "sold out, goes home")
        .count();
    assert_eq!((bought, home), (3, 7), "{}", out.context());
    assert_eq!(out.assert_stage_state("buyer", "succeeded"), 10);
}

#[test]
fn traffic_lets_every_car_pass_on_green() {
    let out = run("pipelines/traffic.yaml", &[]);
    out.assert_code(0);
    assert_eq!(
        out.log_of("light"),
        [
            "GREEN (1/2)",
            "RED (1/2)",
            "GREEN (2/2)",
            "RED (2/2)",
            "off duty: left on green"
        ],
        "{}",
        out.context()
    );
    for car in 0..6 {
        let log = out.log_of(&format!("car.{car}"));
        assert_eq!(
            log.last().map(String::as_str),
            Some("passes the light"),
            "car.{car}\n{}",
            out.context()
        );
        assert!(
            log[0] == "arrives on green" || log[0] == "arrives on red, waits",
            "car.{car}\n{}",
            out.context()
        );
    }
    assert_eq!(out.assert_stage_state("car", "succeeded"), 6);
}

#[test]
fn sum_matches_the_single_process_sum() {
    let out = run("pipelines/sum.yaml", &[]);
    out.assert_code(0);
    assert_eq!(
        out.stdout,
        "\
4 partial sums: 50000005000000
one process: 50000005000000; closed form n(n+1)/2: 50000005000000
sum of 1..10000000 = 50000005000000: OK
",
        "{}",
        out.context()
    );
    assert_eq!(out.assert_stage_state("worker", "succeeded"), 4);

    let small = run("pipelines/sum.yaml", &["--set", "n=1000"]);
    small.assert_code(0);
    assert!(
        small.stdout.ends_with("sum of 1..1000 = 500500: OK\n"),
        "{}",
        small.context()
    );
}

#[test]
fn singdance_prefixes_each_stage() {
    let out = run("pipelines/singdance.yaml", &[]);
    out.assert_code(0);
    assert_eq!(out.stdout, "", "stage logs go to stderr\n{}", out.context());
    assert_eq!(
        out.log_of("sing"),
        [
            "singing (1/3)",
            "singing (2/3)",
            "singing (3/3)",
            "done singing"
        ],
        "{}",
        out.context()
    );
    assert_eq!(
        out.log_of("dance"),
        [
            "dancing (1/3)",
            "dancing (2/3)",
            "dancing (3/3)",
            "done dancing"
        ],
        "{}",
        out.context()
    );
}
