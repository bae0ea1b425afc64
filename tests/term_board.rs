//! The live status board on a pseudo-terminal (SPEC 7), its bytes replayed through a
//! terminal emulator (vt100) to check the screen a user sees: `stdout: inherit` output
//! passed through above the board, at most a third of the height with the rest summed
//! up, synchronized updates, nothing stale after Ctrl-C.

mod run_util;
mod term_util;

use std::process::Command;
use std::time::Duration;

use run_util::{DEADLINE, prun_exe};
use term_util::{Pty, escape, find};

fn prun_in(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(prun_exe());
    cmd.current_dir(dir)
        .args(args)
        .env("TERM", "xterm-256color")
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

fn screen(bytes: &[u8], rows: u16, cols: u16) -> Vec<String> {
    let mut p = vt100::Parser::new(rows, cols, 0);
    p.process(bytes);
    p.screen().rows(0, cols).collect()
}

#[test]
fn inherit_output_is_passed_through_above_the_board() {
    let dir = write_pipeline(
        r#"version: 1
name: copy
stages:
  copy:
    foreach: {items: [a, b, c, d, e, f]}
    parallel: 2
    cmd: [sleep, "0.4"]
  summary:
    after: {copy: completed}
    sh: 'echo "RESULT: 6 files copied"; printf "no newline"'
    stdout: inherit
"#,
    );
    let pty = Pty::spawn(
        prun_in(dir.path(), &["p.yaml", "--color", "never"]),
        30,
        100,
    );
    pty.wait_for("the progress bar", DEADLINE, |t| t.contains("/6"));
    let (code, out) = pty.finish(DEADLINE);
    assert_eq!(code, Some(0), "{}", escape(&out));
    assert!(
        find(&out, b"\x1b[?2026h").is_some(),
        "synchronized updates:\n{}",
        escape(&out)
    );
    assert!(find(&out, b"ETA 0s").is_none(), "{}", escape(&out));
    let rows = screen(&out, 30, 100);
    let result = rows
        .iter()
        .position(|r| r == "RESULT: 6 files copied")
        .unwrap_or_else(|| panic!("the stage's output is on the screen:\n{}", rows.join("\n")));
    assert!(
        rows.iter().any(|r| r == "no newline"),
        "{}",
        rows.join("\n")
    );
    let table = rows.iter().position(|r| r.starts_with("instance")).unwrap();
    assert!(result < table, "{}", rows.join("\n"));
    // Nothing of the board is left on the screen at the end.
    assert!(
        !rows.iter().any(|r| r.contains("/6")),
        "{}",
        rows.join("\n")
    );
}

#[test]
fn the_board_takes_at_most_a_third_of_the_terminal_and_leaves_nothing_after_ctrl_c() {
    let mut yaml = String::from("version: 1\nname: many\nstages:\n");
    for i in 0..30 {
        yaml.push_str(&format!("  stage{i:02}: {{cmd: [sleep, '30']}}\n"));
    }
    yaml.push_str("  talker: {sh: 'echo hello from the talker; sleep 30'}\n");
    let dir = write_pipeline(&yaml);
    let (rows, cols) = (21u16, 100u16);
    let pty = Pty::spawn(
        prun_in(dir.path(), &["p.yaml", "--color", "never"]),
        rows,
        cols,
    );
    pty.wait_for("the summary line", DEADLINE, |t| t.contains("more stages"));
    pty.wait_for("the talker's line", DEADLINE, |t| {
        t.contains("hello from the talker")
    });
    std::thread::sleep(Duration::from_millis(300));
    let live = screen(&pty.output(), rows, cols);
    let board: Vec<&String> = live
        .iter()
        .filter(|r| r.contains("running") || r.contains("more stages"))
        .collect();
    assert!(
        board.len() <= (rows / 3) as usize,
        "the board takes {} rows of {rows}:\n{}",
        board.len(),
        live.join("\n")
    );
    assert!(
        live.iter()
            .any(|r| r.starts_with("… ") && r.contains("more stages")),
        "{}",
        live.join("\n")
    );
    assert!(
        live.iter().any(|r| r.contains("hello from the talker")),
        "{}",
        live.join("\n")
    );
    pty.write(b"\x03");
    let (code, out) = pty.finish(DEADLINE);
    assert_eq!(code, Some(130), "{}", escape(&out));
    let end = screen(&out, rows, cols);
    assert!(
        !end.iter()
            .any(|r| r.contains("more stages") || r.contains(" running")),
        "a stale board line is left:\n{}",
        end.join("\n")
    );
    assert!(
        end.iter().any(|r| r.contains("many: interrupted")),
        "{}",
        end.join("\n")
    );
}

/// Log lines are written above the board in batches, each batch one synchronized
/// update: far fewer board redraws than lines (the board once redrew itself per line).
#[test]
fn chatty_stages_do_not_redraw_the_board_per_line() {
    let dir = write_pipeline(
        r#"version: 1
name: chatty
stages:
  talk:
    sh: 'i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; sleep 0.3'
  wait:
    cmd: [sleep, "1"]
"#,
    );
    let pty = Pty::spawn(
        prun_in(dir.path(), &["p.yaml", "--color", "never"]),
        40,
        100,
    );
    let (code, out) = pty.finish(DEADLINE);
    assert_eq!(code, Some(0), "{}", escape(&out));
    let frames = out.windows(8).filter(|w| w == b"\x1b[?2026h").count();
    let ends = out.windows(8).filter(|w| w == b"\x1b[?2026l").count();
    assert_eq!(frames, ends, "every update is closed");
    assert!(frames > 0, "{}", escape(&out));
    assert!(frames < 300, "{frames} redraws for 3000 lines");
    let rows = screen(&out, 40, 100);
    assert!(
        rows.iter().any(|r| r == "talk │ line 2999"),
        "{}",
        rows.join("\n")
    );
}
