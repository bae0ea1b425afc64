//! A small builder for end-to-end runs of the real `prun` binary on a YAML file in a
//! temporary directory (shared by the `run_*` integration tests).
//!
//! `Test::new(yaml).file(name, text).run()` writes the pipeline and its files, runs
//! `prun run pipeline.yaml --report report.json` from that directory, and returns what
//! a user would look at: exit code, stdout, stderr, the JSON report. The binary's
//! directory is deliberately *not* put on PATH: stages that call `prun ctl` rely on
//! prun putting its own directory first on every stage's PATH.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Far above what any test needs: a hang fails the test instead of blocking CI.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test: this build's, or `PRUN_TEST_EXE` (to check that a new test
/// fails on an older build).
pub fn prun_exe() -> PathBuf {
    std::env::var_os("PRUN_TEST_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_prun")))
}

pub struct Test {
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Test {
    pub fn new(yaml: &str) -> Test {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write pipeline");
        Test {
            dir,
            args: Vec::new(),
        }
    }

    /// A file next to the pipeline (parent directories are created).
    pub fn file(self, name: &str, text: &str) -> Test {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write file");
        self
    }

    pub fn dir_entry(self, name: &str) -> Test {
        std::fs::create_dir_all(self.dir.path().join(name)).expect("mkdir");
        self
    }

    pub fn arg(mut self, a: &str) -> Test {
        self.args.push(a.to_string());
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The command `run` executes, with the report written to `report`.
    pub fn command(&self, report: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(prun_exe());
        cmd.current_dir(self.dir.path())
            .args([
                "run",
                "pipeline.yaml",
                "--progress",
                "never",
                "--color",
                "never",
            ])
            .arg("--report")
            .arg(self.path(report))
            .args(&self.args)
            .args(extra)
            .env("NO_COLOR", "1")
            .env_remove("PRUN_CTL")
            .env_remove("PRUN_RUN_DIR");
        cmd
    }

    pub fn run(&self) -> Outcome {
        self.run_with("report.json", &[])
    }

    /// Run with extra arguments, the report written to `report` (in the test dir).
    pub fn run_with(&self, report: &str, extra: &[&str]) -> Outcome {
        let child = self
            .command(report, extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("prun starts");
        self.finish(child, report)
    }

    /// Wait for a spawned prun (with piped output) to end, within [`DEADLINE`].
    pub fn finish(&self, child: Child, report: &str) -> Outcome {
        let started = Instant::now();
        let pid = child.id() as i32;
        let waiter = std::thread::spawn(move || child.wait_with_output());
        while !waiter.is_finished() {
            if started.elapsed() > DEADLINE {
                // SAFETY: killing the prun we started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let out = waiter.join().expect("join").expect("output");
                panic!(
                    "prun did not end within {DEADLINE:?}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = waiter.join().expect("join").expect("output");
        let text = std::fs::read_to_string(self.path(report)).unwrap_or_default();
        let report: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // The journal kept beside the report lists the items it only counts.
        let journal = report["journal"]
            .as_str()
            .and_then(|name| std::fs::read_to_string(self.path(name)).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| v.get("instance").cloned())
                    .collect()
            })
            .unwrap_or_default();
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
            journal,
            elapsed: started.elapsed(),
        }
    }
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub report: Value,
    /// The instances of the journal kept beside the report (every ended instance,
    /// succeeded foreach items included), when the report has one.
    pub journal: Vec<Value>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn context(&self) -> String {
        format!(
            "exit code {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- report ---\n{:#}",
            self.code, self.elapsed, self.stdout, self.stderr, self.report
        )
    }

    pub fn assert_code(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "{}", self.context());
        self
    }

    pub fn instances(&self) -> Vec<&Value> {
        self.report["instances"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    pub fn of_stage(&self, stage: &str) -> Vec<&Value> {
        self.instances()
            .into_iter()
            .filter(|i| i["stage"] == stage)
            .collect()
    }

    /// Every item of a stage that ended, in index order: the report's listed ones and
    /// the journal's (a restarted item's last line only).
    pub fn items_of(&self, stage: &str) -> Vec<Value> {
        let mut by_index: std::collections::BTreeMap<u64, Value> = Default::default();
        for i in self.journal.iter().chain(self.instances()) {
            if i["stage"] == stage && !i["item"].is_null() {
                by_index.insert(i["index"].as_u64().unwrap_or(0), i.clone());
            }
        }
        by_index.into_values().collect()
    }

    /// A foreach stage's counts in the report.
    pub fn foreach(&self, stage: &str) -> &Value {
        self.report["foreach"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["stage"] == stage))
            .unwrap_or_else(|| panic!("no foreach stage {stage}\n{}", self.context()))
    }

    pub fn instance(&self, name: &str) -> &Value {
        self.instances()
            .into_iter()
            .find(|i| i["name"] == name)
            .unwrap_or_else(|| panic!("no instance {name}\n{}", self.context()))
    }

    pub fn queue(&self, name: &str) -> &Value {
        self.report["queues"]
            .as_array()
            .and_then(|a| a.iter().find(|q| q["name"] == name))
            .unwrap_or_else(|| panic!("no queue {name}\n{}", self.context()))
    }

    /// Text lines an instance logged (prun writes them as `name │ text`).
    pub fn log_of(&self, name: &str) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| {
                let (n, t) = l.split_once('│')?;
                (n.trim() == name).then(|| t.strip_prefix(' ').unwrap_or(t).to_string())
            })
            .collect()
    }
}

/// Wait until `cond` holds, or panic with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Most instances running at once, from a log of `S <ns>` / `E <ns>` lines written
/// by the stages themselves (inside their lifetime, so this never overestimates).
pub fn max_overlap(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .filter_map(|l| {
            let (kind, t) = l.split_once(' ')?;
            let t: u128 = t.trim().parse().ok()?;
            Some((t, if kind == "S" { 1 } else { -1 }))
        })
        .collect();
    // At equal times, count ends first: touching intervals do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}

/// A shell snippet for a stage: record start, sleep `secs`, record end in `file`.
pub fn timed(file: &Path, secs: &str) -> String {
    let f = file.display();
    format!("echo \"S $(date +%s%N)\" >> {f}; sleep {secs}; echo \"E $(date +%s%N)\" >> {f}")
}
