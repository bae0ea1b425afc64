//! No orphans, made total (SPEC 5.4), through the real binary: after a SIGKILL of
//! prun nothing it started is left — also when its guardian was killed first, also a
//! descendant that moved into prun's own process group — and its run directory is gone.

mod testkit;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{processes_with_arg, unique_sleep_arg};

const DEADLINE: Duration = Duration::from_secs(20);

struct Running {
    child: Child,
    stderr: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

impl Running {
    /// `prun run p.yaml` in its own process group (as a shell starts a job), its
    /// stderr collected as it comes.
    fn start(yaml: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_prun"))
            .current_dir(dir.path())
            .args(["run", "p.yaml", "--progress", "never", "--color", "never"])
            .env_remove("PRUN_CTL")
            .env_remove("PRUN_RUN_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stderr, dir }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait_for_stderr(&self, needle: &str) {
        wait_until(&format!("{needle:?} on prun's stderr"), || {
            self.stderr.lock().unwrap().contains(needle)
        });
    }

    fn sigkill(&mut self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGKILL).unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// prun's guardian: its child that is a copy of prun.
fn guardian_of(prun: i32) -> Option<i32> {
    prun::procfs::children(prun)?.into_iter().find(|&p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "prun")
    })
}

#[test]
fn a_killed_guardian_is_replaced_so_a_later_sigkill_of_prun_leaves_nothing() {
    let marker = unique_sleep_arg();
    let mut run = Running::start(&format!(
        "version: 1\nstages:\n  s: {{cmd: [sleep, \"{marker}\"]}}\n"
    ));
    wait_until("the stage to run", || {
        !processes_with_arg(&marker).is_empty()
    });
    let first = guardian_of(run.pid()).expect("a guardian");
    kill(Pid::from_raw(first), Signal::SIGKILL).unwrap();
    run.wait_for_stderr("started a new one");
    wait_until("a new guardian", || {
        guardian_of(run.pid()).is_some_and(|g| g != first)
    });
    run.sigkill();
    let t0 = Instant::now();
    wait_until("the stage to be killed", || {
        processes_with_arg(&marker).is_empty()
    });
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn a_descendant_that_joins_prun_s_own_group_is_killed_with_prun() {
    let marker = unique_sleep_arg();
    // The stage's child moves into prun's own process group ($PPID is prun).
    let mut run = Running::start(&format!(
        r#"version: 1
stages:
  s:
    sh: 'python3 -c "import os,sys; os.setpgid(0, int(sys.argv[1])); os.execvp(\"sleep\", [\"sleep\", \"{marker}\"])" $PPID & wait'
"#
    ));
    run.wait_for_stderr("joined prun's own process group");
    let pids = processes_with_arg(&marker);
    assert_eq!(pids.len(), 1);
    assert_eq!(
        prun::procfs::stat(pids[0]).map(|s| s.pgrp),
        Some(run.pid()),
        "the descendant is in prun's group"
    );
    run.sigkill();
    wait_until("the descendant to be killed", || {
        processes_with_arg(&marker).is_empty()
    });
}

#[test]
fn a_sigkilled_prun_leaves_no_run_directory() {
    let marker = unique_sleep_arg();
    let mut run = Running::start(&format!(
        "version: 1\nstages:\n  s: {{sh: 'echo $PRUN_RUN_DIR > rundir; touch $PRUN_RUN_DIR/scratch; exec sleep {marker}'}}\n"
    ));
    let file = run.dir.path().join("rundir");
    wait_until("the stage to say where the run directory is", || {
        std::fs::read_to_string(&file).is_ok_and(|s| s.ends_with('\n'))
    });
    let dir = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(std::path::Path::new(&dir).join("ctl.sock").exists());
    wait_until("the scratch file", || {
        std::path::Path::new(&dir).join("scratch").exists()
    });
    run.sigkill();
    wait_until("the run directory to be removed", || {
        !std::path::Path::new(&dir).exists()
    });
    wait_until("the stage to be killed", || {
        processes_with_arg(&marker).is_empty()
    });
}
