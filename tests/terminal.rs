//! The terminal (SPEC 5.3), on a real pseudo-terminal: a stage with `stdin: inherit`
//! reads what is typed; Ctrl-Z suspends every stage and prun's timers; `fg` (SIGCONT)
//! resumes all of it.

mod pty_util;

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pty_util::{Pty, state_of};

const DEADLINE: Duration = Duration::from_secs(20);

fn dir_with(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
    dir
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids of prun's descendants (its stages; not its guardian, a copy of prun), from
/// /proc.
fn stage_pids(prun: i32) -> Vec<i32> {
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    prun::procfs::descendants(prun)
        .into_iter()
        .filter(|s| s.state != 'Z' && s.pgrp != prun && comm(s.pid).trim() != "prun")
        .map(|s| s.pid)
        .collect()
}

#[test]
fn a_stage_reading_the_terminal_gets_what_is_typed() {
    let dir = dir_with(
        r#"
version: 1
stages:
  ask:
    sh: 'printf "name? " >&2; read name; echo "hello, $name"'
    stdin: inherit
    stdout: inherit
    stderr: inherit
"#,
    );
    let mut pty = Pty::spawn(dir.path(), &["p.yaml", "--progress", "never"]);
    pty.expect("name? ", DEADLINE);
    pty.type_in(b"world\n");
    let code = pty.wait(DEADLINE);
    assert_eq!(code, 0, "{}", pty.text());
    assert!(pty.text().contains("hello, world"), "{}", pty.text());
}

#[test]
fn ctrl_z_suspends_every_stage_and_the_timers_and_fg_resumes_them() {
    // The stage needs ~1.5 s of work and has a 3 s timeout; suspended for longer than
    // that, it must still succeed: time suspended is not counted.
    let dir = dir_with(
        r#"
version: 1
stages:
  tick:
    sh: 'i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo $i > count; sleep 0.05; done; echo done'
    timeout: 3s
  other:
    sh: 'sleep 1.2'
"#,
    );
    let mut pty = Pty::spawn(dir.path(), &["p.yaml", "--progress", "never"]);
    let count = dir.path().join("count");
    let read = || {
        std::fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    wait_until("the stage to make progress", || read() >= 3);
    pty.type_in(b"\x1a"); // Ctrl-Z
    let prun = pty.pid();
    wait_until("prun to stop", || state_of(prun) == Some('T'));
    let stages = stage_pids(prun);
    assert!(!stages.is_empty());
    wait_until("every stage to be stopped", || {
        stage_pids(prun).iter().all(|&p| state_of(p) == Some('T'))
    });
    let at_stop = read();
    // Deliberately let time pass while suspended: longer than the stage's timeout.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(read(), at_stop, "no progress while suspended");
    // `fg`: the shell continues the job's process group.
    kill(Pid::from_raw(-prun), Signal::SIGCONT).unwrap();
    let code = pty.wait(DEADLINE);
    assert_eq!(code, 0, "{}", pty.text());
    assert_eq!(read(), 30);
    assert!(!pty.text().contains("timed out"), "{}", pty.text());
}

#[test]
fn ctrl_z_while_a_stage_holds_the_terminal_suspends_the_pipeline_too() {
    let dir = dir_with(
        r#"
version: 1
stages:
  ask:
    sh: 'printf "name? " >&2; read name; echo "hello, $name"'
    stdin: inherit
    stdout: inherit
    stderr: inherit
  beat:
    sh: 'while :; do date +%s%N > beat; sleep 0.05; done'
    daemon: true
"#,
    );
    let mut pty = Pty::spawn(dir.path(), &["p.yaml", "--progress", "never"]);
    pty.expect("name? ", DEADLINE);
    pty.type_in(b"\x1a"); // Ctrl-Z reaches the stage's group, the terminal's foreground
    let prun = pty.pid();
    wait_until("prun to stop", || state_of(prun) == Some('T'));
    wait_until("every stage to be stopped", || {
        stage_pids(prun).iter().all(|&p| state_of(p) == Some('T'))
    });
    kill(Pid::from_raw(-prun), Signal::SIGCONT).unwrap();
    wait_until("prun to run again", || state_of(prun) != Some('T'));
    // The stage has the terminal again: what is typed reaches it.
    pty.type_in(b"again\n");
    let code = pty.wait(DEADLINE);
    assert_eq!(code, 0, "{}", pty.text());
    assert!(pty.text().contains("hello, again"), "{}", pty.text());
}
