//! The supervisor never waits on anything that can block (SPEC 5.4): a FIFO whose
//! other end never comes, or prun's own stderr into a pipe nobody reads, slow nothing
//! but themselves; SIGINT still ends the run promptly and leaves no process behind.

mod testkit;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use testkit::{processes_with_arg, unique_sleep_arg};

const DEADLINE: Duration = Duration::from_secs(20);

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Names of prun's threads.
fn threads(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGINT prun; how long until it exited, and its exit code.
fn interrupt(child: &mut std::process::Child) -> (Duration, Option<i32>) {
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (t0.elapsed(), status.code());
        }
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("prun did not end within {DEADLINE:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn sigint_ends_a_run_waiting_to_open_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let marker = unique_sleep_arg();
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "version: 1\nstages:\n  reader: {{cmd: [cat], stdin: {{file: in.fifo}}}}\n  other: {{cmd: [sleep, \"{marker}\"]}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir.path())
        .args(["p.yaml", "--progress", "never"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_until("prun to wait on the FIFO", || {
        threads(pid).iter().any(|t| t.starts_with("prun-open"))
            && !processes_with_arg(&marker).is_empty()
    });
    let (took, code) = interrupt(&mut child);
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(processes_with_arg(&marker).is_empty());
}

#[test]
fn sigint_ends_a_run_whose_stderr_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    let marker = unique_sleep_arg();
    // A chatty stage fills prun's stderr pipe, which nobody reads.
    std::fs::write(
        dir.path().join("p.yaml"),
        format!(
            "version: 1\nstages:\n  chatty: {{sh: 'while :; do echo lots of log output to fill the pipe; done'}}\n  other: {{cmd: [sleep, \"{marker}\"]}}\n"
        ),
    )
    .unwrap();
    let (stalled_read, stalled_write) = nix::unistd::pipe().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prun"))
        .current_dir(dir.path())
        .args(["p.yaml", "--progress", "never"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(stalled_write))
        .process_group(0)
        .spawn()
        .unwrap();
    // The pipe is full (64 KiB, less what whole lines leave unused in its pages):
    // prun's writes to its stderr block from here on.
    wait_until("prun's stderr to be full", || {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD into a c_int on our own pipe.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&stalled_read),
                libc::FIONREAD,
                &mut n,
            )
        };
        n >= 60_000 && !processes_with_arg(&marker).is_empty()
    });
    let (took, code) = interrupt(&mut child);
    assert_eq!(code, Some(130));
    assert!(took < Duration::from_secs(2), "{took:?}");
    wait_until("no stage left", || processes_with_arg(&marker).is_empty());
    drop(stalled_read);
}
