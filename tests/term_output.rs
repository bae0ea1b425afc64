//! What prun writes to a terminal (SPEC 7), read back from a pseudo-terminal: a stage's
//! last lines before prun's notice of its end, control bytes from stages made harmless,
//! and a stalled terminal that never keeps SIGINT from ending the run.

mod run_util;
mod term_util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use run_util::{DEADLINE, prun_exe, wait_until};
use term_util::{Pty, escape, find, processes_with};

fn prun_in(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(prun_exe());
    cmd.current_dir(dir)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("PRUN_CTL")
        .env_remove("PRUN_RUN_DIR");
    cmd
}

fn write_pipeline(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.yaml"), yaml).expect("write pipeline");
    dir
}

/// The failing stage's last line always comes before prun's notice of its end, over
/// many runs (the end event and the last lines travel on different channels).
#[test]
fn a_stage_last_words_come_before_the_notice_of_its_end() {
    let dir = write_pipeline(
        r#"version: 1
name: order
stages:
  a:
    cmd: [sh, -c, 'echo one; echo two; echo "fatal: config missing" >&2; exit 1']
    on_failure: continue
  b:
    replicas: 3
    cmd: [sh, -c, 'for i in 1 2 3 4 5; do echo "line $i"; done; printf "no newline at the end"']
"#,
    );
    for run in 0..25 {
        let pty = Pty::spawn(
            prun_in(
                dir.path(),
                &["p.yaml", "--progress", "never", "--color", "never"],
            ),
            40,
            120,
        );
        let (code, out) = pty.finish(DEADLINE);
        assert_eq!(code, Some(1), "run {run}:\n{}", escape(&out));
        let text = String::from_utf8_lossy(&out);
        let last = text
            .find("a    │ fatal: config missing")
            .unwrap_or_else(|| panic!("run {run}: the last line is missing:\n{}", escape(&out)));
        let notice = text
            .find("prun │ error: a failed (exit 1)")
            .unwrap_or_else(|| panic!("run {run}: no notice:\n{}", escape(&out)));
        assert!(
            last < notice,
            "run {run}: notice above the last line:\n{}",
            escape(&out)
        );
        for i in 0..3 {
            let tail = text
                .find(&format!("b.{i}  │ no newline at the end\r\n"))
                .unwrap_or_else(|| panic!("run {run}: b.{i}'s last line:\n{}", escape(&out)));
            let end = text
                .find(&format!("prun │ b.{i} succeeded"))
                .unwrap_or_else(|| panic!("run {run}: b.{i}'s end:\n{}", escape(&out)));
            assert!(
                tail < end,
                "run {run}: b.{i} ended above its last line:\n{}",
                escape(&out)
            );
        }
    }
}

/// Carriage-return progress shows its latest state; cursor moves and screen clears
/// from a stage never reach the terminal; colors do, and are reset.
#[test]
fn control_bytes_from_stages_cannot_drive_the_terminal() {
    let dir = write_pipeline(
        r#"version: 1
name: bytes
stages:
  a:
    cmd: [sh, -c, 'printf "10%%\r50%%\r100%%\n"; printf "\033[2J\033[Hwiped\n"; printf "up\033[5Aand\033[10;10Haway\033]0;title\007\n"; printf "\033[31mred\n"; printf "bell\007back\010\n"']
"#,
    );
    let pty = Pty::spawn(
        prun_in(
            dir.path(),
            &["p.yaml", "--progress", "never", "--color", "always"],
        ),
        40,
        120,
    );
    let (code, out) = pty.finish(DEADLINE);
    assert_eq!(code, Some(0), "{}", escape(&out));
    let shown = escape(&out);
    for bad in [
        &b"\x1b[2J"[..],
        b"\x1b[H",
        b"\x1b[5A",
        b"\x1b[10;10H",
        b"\x1b]0;",
        b"\x07",
        b"\x08",
        b"10%\r",
    ] {
        assert!(
            find(&out, bad).is_none(),
            "{:?} reached the terminal:\n{shown}",
            escape(bad)
        );
    }
    for good in [
        &b" 100%\r\n"[..],
        b" wiped",
        b" upandaway",
        b" \x1b[31mred\x1b[0m",
        b" bellback",
    ] {
        assert!(
            find(&out, good).is_some(),
            "{:?} missing:\n{shown}",
            escape(good)
        );
    }
}

/// prun's stderr is a pipe that nobody reads (`prun p.yaml 2>&1 | (sleep 1000)`), the
/// stages log more than the pipe holds: SIGINT still ends the run at once, the report
/// is written, and no stage is left.
#[test]
fn a_stalled_stderr_never_keeps_sigint_from_ending_the_run() {
    let marker = format!("stall-marker-{}", std::process::id());
    let dir = write_pipeline(&format!(
        r#"version: 1
name: stall
stages:
  chatty:
    replicas: 2
    cmd: [sh, -c, 'yes "a line of logging that fills the pipe nobody reads"', {marker}]
  quiet:
    cmd: [sh, -c, "sleep 300", {marker}]
"#
    ));
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let mut child = prun_in(dir.path(), &["p.yaml", "--report", "r.json"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end.try_clone().expect("dup")))
        .stderr(Stdio::from(write_end))
        .spawn()
        .expect("prun starts");
    // The pipe (64 KiB) and prun's own backlog fill up; then the stages block.
    let size = || -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes an int: the bytes waiting in our pipe.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&read_end),
                libc::FIONREAD,
                &mut n,
            )
        };
        n as usize
    };
    wait_until("the pipe to fill", DEADLINE, || size() >= 60_000);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    // SAFETY: signalling the prun we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if sent.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("prun did not end after SIGINT with a stalled stderr");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = sent.elapsed();
    let report = std::fs::read_to_string(dir.path().join("r.json")).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "exit status {status:?}\n{report}");
    assert!(took < Duration::from_secs(2), "SIGINT took {took:?}");
    assert!(report.contains("\"status\": \"interrupted\""), "{report}");
    wait_until("no stage left", Duration::from_secs(5), || {
        processes_with(&marker).is_empty()
    });
    drop(read_end);
}
