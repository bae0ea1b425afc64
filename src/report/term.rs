//! Terminal rendering: prefixed log lines, prun's notices, the live status board and
//! the final table, all on stderr (stdout stays for `stdout: inherit`).
//!
//! Every line is written with one `write_all` on a locked stderr, so lines of
//! different instances never interleave mid-line, whatever their length.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::json::{Report, ReportBuilder};
use crate::runtime::event::signal_name;
use crate::runtime::{Event, InstanceId, Level, RunOptions, ShutdownCause, State};

const PALETTE: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

#[derive(Debug, Clone, Default)]
pub struct TerminalOptions {
    pub color: bool,
    pub quiet: bool,
    pub progress: bool,
    pub log_dir: Option<PathBuf>,
}

impl TerminalOptions {
    /// Resolve `--color`, `NO_COLOR`, `--progress` and TTY detection.
    pub fn from_run_options(opts: &RunOptions) -> TerminalOptions {
        let tty = io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = match opts.color.as_deref() {
            Some("always") => true,
            Some("never") => false,
            _ => tty && !no_color,
        };
        let progress = match opts.progress.as_deref() {
            Some("always") => true,
            Some("never") => false,
            _ => tty && !opts.quiet,
        };
        TerminalOptions {
            color,
            quiet: opts.quiet,
            progress,
            log_dir: opts.log_dir.clone(),
        }
    }
}

pub struct Terminal {
    opts: TerminalOptions,
    names: HashMap<InstanceId, (String, usize)>,
    width: usize,
    logs: HashMap<InstanceId, Option<File>>,
    board: Option<Board>,
}

struct Board {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar)>,
}

impl Terminal {
    pub fn new(opts: TerminalOptions) -> Terminal {
        Terminal {
            opts,
            names: HashMap::new(),
            width: 4,
            logs: HashMap::new(),
            board: None,
        }
    }

    pub fn on_event(&mut self, event: &Event, state: &ReportBuilder) {
        match event {
            Event::PipelineStarted { instances, .. } => {
                for i in instances {
                    self.names.insert(i.id, (i.name.clone(), i.stage));
                    self.width = self.width.max(i.name.chars().count());
                }
                if let Some(dir) = &self.opts.log_dir
                    && let Err(e) = std::fs::create_dir_all(dir)
                {
                    self.prun_line(Level::Error, &format!("--log-dir {}: {e}", dir.display()));
                    self.opts.log_dir = None;
                }
                if self.opts.progress {
                    self.board = Some(Board::new(state));
                }
            }
            Event::InstanceAdded(i) => {
                self.names.insert(i.id, (i.name.clone(), i.stage));
                self.width = self.width.max(i.name.chars().count());
            }
            Event::Log { id, line } => self.log_line(*id, line),
            Event::StateChanged { id, state: s, .. } => {
                let name = self.name(*id);
                match s {
                    State::Failed { .. }
                    | State::Killed { .. }
                    | State::TimedOut { .. }
                    | State::CouldNotStart { .. } => {
                        self.prun_line(Level::Error, &format!("{name} {}", s.describe()))
                    }
                    State::Succeeded { .. } | State::Stopped { .. } | State::Skipped { .. } => {
                        self.prun_line(Level::Info, &format!("{name} {}", s.describe()))
                    }
                    _ => {}
                }
                if let Some(b) = &self.board {
                    b.update(state);
                }
            }
            Event::Restarting { id, attempt, delay } => {
                let name = self.name(*id);
                let msg = format!(
                    "{name} restarting in {} (restart {attempt})",
                    humantime::format_duration(*delay)
                );
                self.prun_line(Level::Info, &msg);
            }
            Event::Notice { level, message } => self.prun_line(*level, message),
            Event::ShutdownStarted { cause } => {
                let msg = match cause {
                    ShutdownCause::Finished => "all stages ended; stopping daemons".to_string(),
                    ShutdownCause::Signal(s) => {
                        format!("{} received: stopping in drain order", signal_name(*s))
                    }
                    ShutdownCause::Failure => "a stage failed: stopping in drain order".to_string(),
                };
                let running = state.instance_names().any(|(_, s)| !s.is_end());
                if running || !matches!(cause, ShutdownCause::Finished) {
                    self.prun_line(Level::Info, &msg);
                }
            }
            Event::StillWaiting { names } => self.prun_line(
                Level::Warning,
                &format!("still waiting for: {}", names.join(", ")),
            ),
            _ => {}
        }
    }

    fn name(&self, id: InstanceId) -> String {
        self.names
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("#{id}"))
    }

    fn log_line(&mut self, id: InstanceId, line: &[u8]) {
        if let Some(dir) = &self.opts.log_dir {
            let name = self.name(id);
            let file = self.logs.entry(id).or_insert_with(|| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{name}.log")))
                    .ok()
            });
            if let Some(f) = file {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                let _ = f.write_all(&buf);
            }
        }
        if self.opts.quiet {
            return;
        }
        let (name, stage) = self
            .names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (format!("#{id}"), 0));
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let mut out = String::with_capacity(text.len() + self.width + 16);
        if self.opts.color {
            let c = PALETTE[stage % PALETTE.len()];
            let _ = write!(out, "\x1b[{c}m{name:<w$} │\x1b[0m ", w = self.width);
        } else {
            let _ = write!(out, "{name:<w$} │ ", w = self.width);
        }
        out.push_str(text);
        out.push('\n');
        self.write_stderr(out.as_bytes());
    }

    fn prun_line(&self, level: Level, message: &str) {
        if self.opts.quiet && level == Level::Info {
            return;
        }
        let tag = match level {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
        };
        let line = if self.opts.color {
            let c = match level {
                Level::Info => "2",
                Level::Warning => "33",
                Level::Error => "31",
            };
            format!(
                "\x1b[1m{:<w$} │\x1b[0m \x1b[{c}m{tag}{message}\x1b[0m\n",
                "prun",
                w = self.width
            )
        } else {
            format!("{:<w$} │ {tag}{message}\n", "prun", w = self.width)
        };
        self.write_stderr(line.as_bytes());
    }

    fn write_stderr(&self, bytes: &[u8]) {
        let write = || {
            let mut err = io::stderr().lock();
            let _ = err.write_all(bytes);
        };
        match &self.board {
            Some(b) => b.multi.suspend(write),
            None => write(),
        }
    }

    /// After the last event: clear the board, print the table.
    pub fn finish(&mut self, report: &Report) {
        if let Some(b) = self.board.take() {
            for (_, bar) in &b.bars {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
        let table = format_table(report, self.opts.color);
        let mut err = io::stderr().lock();
        let _ = err.write_all(table.as_bytes());
    }
}

impl Board {
    fn new(state: &ReportBuilder) -> Board {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut stages: Vec<String> = Vec::new();
        for (info, _) in state.instance_names() {
            if !stages.contains(&info.stage_name) {
                stages.push(info.stage_name.clone());
            }
        }
        let bars = stages
            .into_iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(s.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                (s, bar)
            })
            .collect();
        let board = Board { multi, bars };
        board.update(state);
        board
    }

    fn update(&self, state: &ReportBuilder) {
        for (stage, bar) in &self.bars {
            let mut counts: Vec<(&'static str, usize)> = Vec::new();
            for (info, s) in state.instance_names() {
                if &info.stage_name != stage {
                    continue;
                }
                let n = s.name();
                match counts.iter_mut().find(|(k, _)| *k == n) {
                    Some((_, c)) => *c += 1,
                    None => counts.push((n, 1)),
                }
            }
            let msg: Vec<String> = counts
                .iter()
                .map(|(k, c)| format!("{c} {}", k.replace('_', " ")))
                .collect();
            bar.set_message(msg.join(" · "));
        }
    }
}

/// The final table: instance, pid, end state, exit code or signal, duration,
/// records in/out, restarts.
pub fn format_table(report: &Report, color: bool) -> String {
    let header = [
        "instance", "pid", "state", "exit", "duration", "in", "out", "restarts",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 8]> = report
        .instances
        .iter()
        .map(|i| {
            [
                i.name.clone(),
                i.pid.map_or_else(dash, |p| p.to_string()),
                i.detail.clone(),
                match (&i.exit_code, &i.signal) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(s)) => s.clone(),
                    _ => dash(),
                },
                i.duration_ms.map_or_else(dash, format_ms),
                i.records_in.map_or_else(dash, |n| n.to_string()),
                i.records_out.map_or_else(dash, |n| n.to_string()),
                i.restarts.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{cell:<w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    if color {
        out.push_str("\x1b[1m");
        line(&mut out, &head);
        out.insert_str(out.len() - 1, "\x1b[0m");
    } else {
        line(&mut out, &head);
    }
    for r in &rows {
        line(&mut out, r);
    }
    let status = match report.status {
        super::ReportStatus::Succeeded => "succeeded",
        super::ReportStatus::Failed => "failed",
        super::ReportStatus::Interrupted => "interrupted",
    };
    let _ = writeln!(
        out,
        "{}: {status} in {} (exit {})",
        report.pipeline,
        format_ms(report.duration_ms),
        report.exit_code
    );
    out
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EndState, InstanceReport, ReportStatus};
    use super::*;

    #[test]
    fn table_lists_every_instance() {
        let report = Report {
            pipeline: "baozi".into(),
            status: ReportStatus::Failed,
            exit_code: 3,
            duration_ms: 1500,
            instances: vec![InstanceReport {
                name: "eater.1".into(),
                stage: "eater".into(),
                index: 1,
                item: None,
                pid: Some(42),
                state: EndState::Failed,
                exit_code: Some(3),
                signal: None,
                restarts: 0,
                started_ms: Some(1),
                duration_ms: Some(900),
                records_in: None,
                records_out: Some(0),
                detail: "failed (exit 3)".into(),
                downstream_closed: false,
            }],
            queues: vec![],
        };
        let t = format_table(&report, false);
        assert!(t.starts_with("instance  pid  state"), "{t}");
        assert!(
            t.contains("eater.1   42   failed (exit 3)  3     900ms"),
            "{t}"
        );
        assert!(t.ends_with("baozi: failed in 1.5s (exit 3)\n"), "{t}");
    }
}
