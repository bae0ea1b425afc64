//! A small builder for integration tests that run the real `prun` binary on a pipeline
//! written into a fresh temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;

pub struct Test {
    pub dir: tempfile::TempDir,
    yaml: String,
    args: Vec<String>,
}

pub struct Run {
    pub output: Output,
    pub report: serde_json::Value,
}

impl Test {
    pub fn new(yaml: &str) -> Test {
        Test {
            dir: tempfile::tempdir().unwrap(),
            yaml: yaml.to_string(),
            args: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(self, name: &str, contents: &str) -> Test {
        std::fs::write(self.dir.path().join(name), contents).unwrap();
        self
    }

    pub fn arg(mut self, a: &str) -> Test {
        self.args.push(a.to_string());
        self
    }

    pub fn run(&self) -> Run {
        let file: PathBuf = self.dir.path().join("p.yaml");
        std::fs::write(&file, &self.yaml).unwrap();
        let report = self.dir.path().join("report.json");
        let output = Command::cargo_bin("prun")
            .unwrap()
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .args([
                "run",
                "p.yaml",
                "--progress",
                "never",
                "--color",
                "never",
                "--report",
            ])
            .arg(&report)
            .args(&self.args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&report)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        Run { output, report }
    }
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn instance(&self, name: &str) -> &serde_json::Value {
        self.report["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .unwrap_or_else(|| panic!("no instance {name} in {:#}", self.report))
    }

    pub fn queue(&self, name: &str) -> &serde_json::Value {
        self.report["queues"]
            .as_array()
            .and_then(|a| a.iter().find(|q| q["name"] == name))
            .unwrap_or_else(|| panic!("no queue {name} in {:#}", self.report))
    }

    /// Assert the exit code, showing stderr when it differs.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code(), Some(code), "stderr:\n{}", self.stderr());
        self
    }
}
