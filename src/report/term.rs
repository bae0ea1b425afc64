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
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::json::{EndState, InstanceReport, Report, ReportBuilder};

/// foreach stages with more items than this show their succeeded items as one row.
const COLLAPSE_ABOVE: usize = 20;
use super::Options;
use crate::event::signal_name;
use crate::event::{Event, InstanceId, Level, ShutdownCause, State};

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
    pub fn from_run_options(opts: &Options) -> TerminalOptions {
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

/// The live status board: one line per stage (a spinner with state counts, or a
/// progress bar with done/total, failures and ETA for a foreach stage whose items are
/// known). Counts are kept incrementally, so a foreach of thousands of items costs
/// O(1) per state change.
struct Board {
    multi: MultiProgress,
    bars: Vec<StageBar>,
    /// Instance → (bar index, its current state name).
    last: HashMap<InstanceId, (usize, &'static str)>,
    /// Queue name → (its line, last count, when it was seen).
    queues: HashMap<String, (ProgressBar, u64, Instant)>,
}

struct StageBar {
    stage: String,
    bar: ProgressBar,
    /// Known number of items (foreach), for a progress bar.
    total: Option<u64>,
    counts: Vec<(&'static str, usize)>,
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
                if let Some(b) = &mut self.board {
                    b.add_instance(i.id, &i.stage_name);
                }
            }
            Event::BatchStarted {
                stage_name, total, ..
            } => {
                if let Some(b) = &mut self.board {
                    b.batch_started(stage_name, *total);
                }
            }
            Event::Deadlock { message } => self.prun_line(Level::Error, message),
            Event::QueueProgress { name, records, .. } => {
                if let Some(b) = &mut self.board {
                    b.queue_progress(name, *records);
                }
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
                if let Some(b) = &mut self.board {
                    b.state_changed(*id, s.name());
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
                    ShutdownCause::Deadlock => "deadlock: stopping in drain order".to_string(),
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
            for sb in &b.bars {
                sb.bar.finish_and_clear();
            }
            for (bar, _, _) in b.queues.values() {
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
        let mut board = Board {
            multi,
            bars: Vec::new(),
            last: HashMap::new(),
            queues: HashMap::new(),
        };
        for (info, _) in state.instance_names() {
            board.add_instance(info.id, &info.stage_name);
        }
        board
    }

    fn bar_of(&mut self, stage: &str) -> usize {
        if let Some(i) = self.bars.iter().position(|b| b.stage == stage) {
            return i;
        }
        let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
        bar.set_prefix(stage.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.push(StageBar {
            stage: stage.to_string(),
            bar,
            total: None,
            counts: Vec::new(),
        });
        self.bars.len() - 1
    }

    fn add_instance(&mut self, id: InstanceId, stage: &str) {
        let b = self.bar_of(stage);
        self.last.insert(id, (b, "waiting"));
        bump(&mut self.bars[b].counts, "waiting", 1);
        self.redraw(b);
    }

    /// A foreach stage with a known total becomes a progress bar.
    fn batch_started(&mut self, stage: &str, total: Option<usize>) {
        let b = self.bar_of(stage);
        if let Some(n) = total {
            let sb = &mut self.bars[b];
            sb.total = Some(n as u64);
            let style = ProgressStyle::with_template(
                "{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {msg} · ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            sb.bar.set_style(style);
            sb.bar.set_length(n as u64);
            sb.bar.reset_eta();
        }
        self.redraw(b);
    }

    fn state_changed(&mut self, id: InstanceId, state: &'static str) {
        let Some((b, old)) = self.last.get(&id).copied() else {
            return;
        };
        bump(&mut self.bars[b].counts, old, -1);
        bump(&mut self.bars[b].counts, state, 1);
        self.last.insert(id, (b, state));
        self.redraw(b);
    }

    /// A line per routed queue: records so far and records/s since the last sample.
    fn queue_progress(&mut self, name: &str, records: u64) {
        let now = Instant::now();
        let multi = &self.multi;
        let (bar, last, at) = self.queues.entry(name.to_string()).or_insert_with(|| {
            let style = ProgressStyle::with_template("  queue {prefix:.bold} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let bar = multi.add(ProgressBar::new_spinner().with_style(style));
            bar.set_prefix(name.to_string());
            (bar, 0, now)
        });
        let secs = now.saturating_duration_since(*at).as_secs_f64();
        let rate = if secs > 0.0 {
            (records.saturating_sub(*last)) as f64 / secs
        } else {
            0.0
        };
        bar.set_message(format!("{records} records · {rate:.0}/s"));
        *last = records;
        *at = now;
    }

    fn redraw(&self, b: usize) {
        let sb = &self.bars[b];
        let count = |k: &str| {
            sb.counts
                .iter()
                .find(|(n, _)| *n == k)
                .map_or(0, |(_, c)| *c)
        };
        if sb.total.is_some() {
            let done: usize = sb
                .counts
                .iter()
                .filter(|(n, _)| !matches!(*n, "waiting" | "running" | "ready"))
                .map(|(_, c)| c)
                .sum();
            sb.bar.set_position(done as u64);
            let failed: usize = ["failed", "killed", "timed_out", "could_not_start"]
                .iter()
                .map(|k| count(k))
                .sum();
            let running = count("running") + count("ready");
            sb.bar
                .set_message(format!("{running} running · {failed} failed"));
        } else {
            let msg: Vec<String> = sb
                .counts
                .iter()
                .filter(|(_, c)| *c > 0)
                .map(|(k, c)| format!("{c} {}", k.replace('_', " ")))
                .collect();
            sb.bar.set_message(msg.join(" · "));
        }
    }
}

fn bump(counts: &mut Vec<(&'static str, usize)>, key: &'static str, delta: isize) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c = c.saturating_add_signed(delta),
        None if delta > 0 => counts.push((key, delta as usize)),
        None => {}
    }
}

/// The final table: instance, pid, end state, exit code or signal, duration,
/// records in/out, restarts.
pub fn format_table(report: &Report, color: bool) -> String {
    let header = [
        "instance", "pid", "state", "exit", "duration", "in", "out", "restarts",
    ];
    let dash = || "-".to_string();
    // A big foreach stage would bury the interesting rows: its succeeded (and
    // resumed) items are summed up in one row; every other item keeps its own.
    let mut batch_size: HashMap<&str, usize> = HashMap::new();
    for i in &report.instances {
        if i.item.is_some() {
            *batch_size.entry(i.stage.as_str()).or_default() += 1;
        }
    }
    let collapsed = |i: &InstanceReport| {
        i.item.is_some()
            && batch_size.get(i.stage.as_str()).copied().unwrap_or(0) > COLLAPSE_ABOVE
            && (i.state == EndState::Succeeded || i.resumed)
    };
    let mut summary_rows: Vec<(usize, [String; 8])> = Vec::new();
    let mut summarized: Vec<&str> = Vec::new();
    for (pos, i) in report.instances.iter().enumerate() {
        if !collapsed(i) || summarized.contains(&i.stage.as_str()) {
            continue;
        }
        summarized.push(i.stage.as_str());
        let same = || {
            report
                .instances
                .iter()
                .filter(|j| j.stage == i.stage && collapsed(j))
        };
        let ok = same().filter(|j| !j.resumed).count();
        let resumed = same().filter(|j| j.resumed).count();
        let mut state = format!("{ok} items succeeded");
        if resumed > 0 {
            let _ = write!(state, ", {resumed} resumed");
        }
        let total_ms: u64 = same().filter_map(|j| j.duration_ms).sum();
        let records_in: Option<u64> = same().map(|j| j.records_in).sum();
        let records_out: Option<u64> = same().map(|j| j.records_out).sum();
        let restarts: u32 = same().map(|j| j.restarts).sum();
        summary_rows.push((
            pos,
            [
                format!("{}.*", i.stage),
                dash(),
                state,
                dash(),
                format!("Σ {}", format_ms(total_ms)),
                records_in.map_or_else(dash, |n| n.to_string()),
                records_out.map_or_else(dash, |n| n.to_string()),
                restarts.to_string(),
            ],
        ));
    }
    let rows: Vec<[String; 8]> = report
        .instances
        .iter()
        .enumerate()
        .filter_map(|(pos, i)| {
            if collapsed(i) {
                return summary_rows
                    .iter()
                    .find(|(p, _)| *p == pos)
                    .map(|(_, r)| r.clone());
            }
            Some([
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
            ])
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
    use super::super::ReportStatus;
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
                resumed: false,
            }],
            queues: vec![],
            deadlock: None,
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
