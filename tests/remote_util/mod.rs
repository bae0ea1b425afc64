//! The test hosts of `scripts/testhosts.sh` (two sshd hosts in their own PID
//! namespaces, a one-node Slurm cluster), as the remote tests see them.
//!
//! [`hosts`] finds them through `$PRUN_TESTHOSTS` (default `/tmp/prun-testhosts`). When
//! they are not up, a remote test FAILS with a one-line hint naming the script; it is
//! skipped only when the remote tests are turned off explicitly with
//! `PRUN_REMOTE_TESTS=off`, and then it says so on stderr.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Hosts {
    pub dir: PathBuf,
}

/// The test hosts, or `None` when the remote tests are turned off.
pub fn hosts() -> Option<Hosts> {
    if std::env::var("PRUN_REMOTE_TESTS").is_ok_and(|v| v == "off") {
        eprintln!("remote tests turned off (PRUN_REMOTE_TESTS=off): not run");
        return None;
    }
    let dir = std::env::var_os("PRUN_TESTHOSTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/prun-testhosts"));
    let up = dir.join("ssh_config").is_file()
        && dir.join("slurm/slurm.conf").is_file()
        && dir.join("pids").is_file();
    assert!(
        up,
        "the test hosts are not up ({}): run `scripts/testhosts.sh up` as root, or set PRUN_REMOTE_TESTS=off to turn the remote tests off",
        dir.display()
    );
    Some(Hosts { dir })
}

impl Hosts {
    pub fn ssh_config(&self) -> PathBuf {
        self.dir.join("ssh_config")
    }

    pub fn slurm_conf(&self) -> PathBuf {
        self.dir.join("slurm/slurm.conf")
    }

    /// `-F <ssh_config>` as ssh options (key, known_hosts, BatchMode for h2 and h3).
    pub fn ssh_options(&self) -> Vec<String> {
        vec!["-F".into(), self.ssh_config().display().to_string()]
    }

    /// The outer PID of the init of `host`'s PID namespace (`h2`, `h3`, `slurmd`).
    fn ns_init(&self, host: &str) -> i32 {
        let name = if host == "slurmd" {
            "slurmd".to_string()
        } else {
            format!("sshd-{host}")
        };
        let pids = std::fs::read_to_string(self.dir.join("pids")).expect("pids file");
        pids.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(&name)).then(|| f.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {name} in the test hosts' pids file"))
    }

    /// Processes in `host`'s PID namespace (outer pid, command line), without its init
    /// and the daemon's listener.
    pub fn processes(&self, host: &str) -> Vec<(i32, String)> {
        let init = self.ns_init(host);
        let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).expect("ns of the init");
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == init || std::fs::read_link(e.path().join("ns/pid")).ok() != Some(ns.clone()) {
                continue;
            }
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("[listener]") || cmd.is_empty() || cmd.starts_with("slurmd ") {
                continue;
            }
            out.push((pid, cmd));
        }
        out
    }

    /// Processes in `host`'s namespace whose environment holds `mark` (set by a test in
    /// the remote command's environment, inherited by all it starts).
    pub fn marked(&self, host: &str, mark: &str) -> Vec<(i32, String)> {
        self.processes(host)
            .into_iter()
            .filter(|(pid, _)| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|&b| b == 0).any(|kv| kv == mark.as_bytes()))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Wait until `host` has no process marked `mark`; panics with what is left.
    pub fn wait_none_marked(&self, host: &str, mark: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.marked(host, mark);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "processes left on {host} after {within:?}: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `squeue` lines (job id and name) of jobs whose name starts with `prefix`.
    pub fn slurm_jobs(&self, prefix: &str) -> Vec<String> {
        let out = std::process::Command::new("squeue")
            .args(["-h", "-o", "%i %j %T"])
            .env("SLURM_CONF", self.slurm_conf())
            .output()
            .expect("squeue");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .map(str::to_string)
            .collect()
    }

    pub fn wait_no_jobs(&self, prefix: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.slurm_jobs(prefix);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Slurm jobs left after {within:?}: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A unique marker (`PRUN_TEST_MARK=<random>`) for one test's remote processes.
pub fn mark() -> String {
    format!("PRUN_TEST_MARK={}", prun::remote::random_token())
}

pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
