//! Terminal rendering: prefixed log lines, prun's notices, the live board and the final
//! table, all on stderr (stdout stays for `stdout: inherit`), all through the
//! [`Screen`] writer so nothing here ever blocks on the terminal.
//!
//! Lines are whole (the drains cut only at `\n`) and cleaned ([`sanitize`]); prun's
//! lines about an instance wait for its log to close ([`Order`]), so a stage's last
//! words come before prun's notice of its end. Output is batched: with a board, log
//! lines are written above it at most every [`BOARD_BATCH`] in one synchronized update
//! instead of one redraw per line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, IsTerminal};
use std::time::{Duration, Instant};

use super::Options;
use super::board::Board;
use super::json::{Report, ReportBuilder};
use super::lines::LineStore;
use super::order::{Held, Order};
use super::sanitize::clean_line;
use super::screen::{Screen, Stream};
use super::table::format_table;
use crate::event::{Event, InstanceId, Level, ShutdownCause, State, signal_name};

const PALETTE: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// With a board, log lines are written above it at most this often.
const BOARD_BATCH: Duration = Duration::from_millis(40);
/// Bytes batched before they are handed on whatever the time.
const BATCH_BYTES: usize = 64 * 1024;
/// Lines of a failed instance shown with its failure under `--quiet`.
pub const QUIET_TAIL: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct TerminalOptions {
    pub color: bool,
    pub quiet: bool,
    pub progress: bool,
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
        }
    }
}

struct Name {
    name: String,
    stage: usize,
    item: Option<String>,
}

pub struct Terminal {
    opts: TerminalOptions,
    screen: Screen,
    names: HashMap<InstanceId, Name>,
    /// By stage: pipes read per run (each ends with `LogClosed`).
    log_pipes: Vec<u32>,
    /// Routed queues' capacities (for the board).
    capacities: HashMap<String, u64>,
    width: usize,
    board: Option<Board>,
    /// stderr bytes not yet handed to the screen.
    out: Vec<u8>,
    last_flush: Instant,
    order: Order,
    /// Log lines not shown because the terminal stalled after an interrupt.
    pub hidden: u64,
    /// Passed-through `stdout: inherit` output: each instance's unfinished line.
    partial: HashMap<InstanceId, (Vec<u8>, Instant)>,
    /// stdout and stderr are the same terminal.
    same_tty: bool,
    /// The terminal's cursor is after a passed-through partial line.
    dangling: bool,
}

/// A passed-through partial line is shown after this long without its end (a prompt),
/// when there is no board to draw under it.
const PARTIAL_IDLE: Duration = Duration::from_millis(200);

/// stdout and stderr are the same terminal (one screen for both).
fn same_terminal() -> bool {
    use std::os::fd::AsFd;
    let rdev = |fd: std::os::fd::BorrowedFd<'_>| {
        nix::sys::stat::fstat(fd)
            .ok()
            .filter(|s| (s.st_mode & libc::S_IFMT) == libc::S_IFCHR)
            .map(|s| s.st_rdev)
    };
    let (out, err) = (io::stdout(), io::stderr());
    io::stdout().is_terminal()
        && io::stderr().is_terminal()
        && rdev(out.as_fd()).is_some()
        && rdev(out.as_fd()) == rdev(err.as_fd())
}

impl Terminal {
    pub fn new(
        opts: TerminalOptions,
        screen: Screen,
        log_pipes: Vec<u32>,
        capacities: HashMap<String, u64>,
    ) -> Terminal {
        Terminal {
            opts,
            screen,
            names: HashMap::new(),
            log_pipes,
            capacities,
            width: 4,
            board: None,
            out: Vec::new(),
            last_flush: Instant::now(),
            order: Order::default(),
            hidden: 0,
            partial: HashMap::new(),
            same_tty: same_terminal(),
            dangling: false,
        }
    }

    pub fn on_event(
        &mut self,
        event: &Event,
        state: &ReportBuilder,
        lines: &LineStore,
        now: Instant,
    ) {
        match event {
            Event::PipelineStarted { instances, .. } => {
                for i in instances {
                    self.add_name(i.id, &i.name, i.stage, i.item.clone());
                }
                if self.opts.progress {
                    let mut board = Board::new(
                        self.screen.clone(),
                        self.opts.color,
                        self.capacities.clone(),
                    );
                    for i in instances {
                        board.add_instance(i.id, i.stage, &i.stage_name);
                    }
                    self.board = Some(board);
                }
            }
            Event::InstanceAdded(i) => {
                self.add_name(i.id, &i.name, i.stage, i.item.clone());
                if let Some(b) = &mut self.board {
                    b.add_instance(i.id, i.stage, &i.stage_name);
                }
            }
            Event::BatchStarted {
                stage,
                stage_name,
                total,
                ..
            } => {
                if let Some(b) = &mut self.board {
                    b.batch_started(*stage, stage_name, *total);
                }
            }
            Event::BatchTotal { stage, total } => {
                if let Some(b) = &mut self.board {
                    b.batch_total(*stage, *total);
                }
            }
            Event::Deadlock { message } => self.prun_line(Level::Error, message),
            Event::QueueProgress {
                queue,
                name,
                records,
                depth,
            } => {
                if let Some(b) = &mut self.board {
                    b.queue_progress(*queue, name, *records, *depth, now);
                }
            }
            Event::Output { id, bytes } => self.output(*id, bytes, now),
            Event::LogClosed { id } => {
                self.output_end(*id);
                for held in self.order.closed(*id) {
                    self.render_held(held, lines);
                }
            }
            Event::StateChanged { id, state: s, .. } => self.state_changed(*id, s, lines, now),
            Event::Restarting { id, attempt, delay } => {
                let msg = format!(
                    "{} restarting in {} (restart {attempt})",
                    self.name(*id),
                    humantime::format_duration(*delay)
                );
                self.instance_line(*id, Held::Notice(Level::Info, msg), lines);
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

    /// A foreach item is over and its logs closed: forget it.
    pub fn forget(&mut self, id: InstanceId) {
        self.names.remove(&id);
        if let Some(b) = &mut self.board {
            b.forget(id);
        }
    }

    fn add_name(&mut self, id: InstanceId, name: &str, stage: usize, item: Option<String>) {
        self.width = self.width.max(name.chars().count());
        self.names.insert(
            id,
            Name {
                name: name.to_string(),
                stage,
                item,
            },
        );
    }

    fn state_changed(&mut self, id: InstanceId, s: &State, lines: &LineStore, now: Instant) {
        let (stage, item) = match self.names.get(&id) {
            Some(n) => (n.stage, n.item.clone()),
            None => (usize::MAX, None),
        };
        if *s == State::Running {
            for _ in 0..self.log_pipes.get(stage).copied().unwrap_or(0) {
                self.order.started(id);
            }
        }
        if let Some(b) = &mut self.board {
            b.state_changed(id, s.name(), item.as_deref(), now);
        }
        if !s.is_end() {
            return;
        }
        self.order.ended(id, now);
        let name = self.name(id);
        let failure = matches!(
            s,
            State::Failed { .. }
                | State::Killed { .. }
                | State::TimedOut { .. }
                | State::CouldNotStart { .. }
        );
        let level = if failure { Level::Error } else { Level::Info };
        if failure && self.opts.quiet {
            self.instance_line(id, Held::Tail(id), lines);
        }
        self.instance_line(
            id,
            Held::Notice(level, format!("{name} {}", s.describe())),
            lines,
        );
    }

    /// A line about an instance: now, or after its log closed.
    fn instance_line(&mut self, id: InstanceId, item: Held, lines: &LineStore) {
        if let Some(item) = self.order.hold(id, item) {
            self.render_held(item, lines);
        }
    }

    fn render_held(&mut self, held: Held, lines: &LineStore) {
        match held {
            Held::Notice(level, msg) => self.prun_line(level, &msg),
            Held::Tail(id) => {
                for line in lines.tail(id, QUIET_TAIL) {
                    self.format_log_line(id, line);
                }
            }
        }
    }

    /// Output of a stage on `stdout: inherit`, passed through: whole lines, above the
    /// board (cleaned like log lines) or as they are when there is none.
    fn output(&mut self, id: InstanceId, bytes: &[u8], now: Instant) {
        let (buf, at) = self.partial.entry(id).or_insert_with(|| (Vec::new(), now));
        buf.extend_from_slice(bytes);
        *at = now;
        if let Some(pos) = memchr::memrchr(b'\n', buf) {
            let whole: Vec<u8> = buf.drain(..=pos).collect();
            if buf.is_empty() {
                self.partial.remove(&id);
            }
            self.emit_stdout(&whole);
        }
    }

    /// The end of a passed-through stream: its unfinished line, as it is.
    fn output_end(&mut self, id: InstanceId) {
        if let Some((rest, _)) = self.partial.remove(&id)
            && !rest.is_empty()
        {
            self.emit_stdout(&rest);
        }
    }

    fn emit_stdout(&mut self, bytes: &[u8]) {
        if self.board.is_some() && self.same_tty {
            // One screen: the lines go above the board, in the same update as the log
            // lines; a line left unfinished is ended there (it cannot stay under the
            // board).
            for line in bytes.split_inclusive(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let text = clean_line(line, self.opts.color);
                self.out.extend_from_slice(text.as_bytes());
                self.out.push(b'\n');
            }
            return;
        }
        // Its own stream, in order with what prun wrote before it.
        if !self.out.is_empty() {
            self.screen
                .push(Stream::Stderr, std::mem::take(&mut self.out));
        }
        self.screen.push(Stream::Stdout, bytes.to_vec());
        if self.same_tty {
            self.dangling = !bytes.ends_with(b"\n");
        }
    }

    /// Before a line of prun's on the screen a passed-through partial line shares.
    fn new_line_if_dangling(&mut self) {
        if self.dangling {
            self.out.push(b'\n');
            self.dangling = false;
        }
    }

    /// Lines whose wait for a log ran out (only while no log line is waiting).
    pub fn release_expired(&mut self, lines: &LineStore, now: Instant) {
        if self.board.is_none() {
            let idle: Vec<InstanceId> = self
                .partial
                .iter()
                .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= PARTIAL_IDLE)
                .map(|(id, _)| *id)
                .collect();
            for id in idle {
                self.output_end(id);
            }
        }
        for held in self.order.expired(now) {
            self.render_held(held, lines);
        }
    }

    fn name(&self, id: InstanceId) -> String {
        self.names
            .get(&id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("#{id}"))
    }

    /// A stage's log line: shown unless `--quiet`, or unless `show` is false (the
    /// terminal stalled after an interrupt: counted instead).
    pub fn log_line(&mut self, id: InstanceId, line: &[u8], show: bool) {
        if self.opts.quiet {
            return;
        }
        if !show {
            self.hidden += 1;
            return;
        }
        self.format_log_line(id, line);
    }

    fn format_log_line(&mut self, id: InstanceId, line: &[u8]) {
        self.new_line_if_dangling();
        let (name, stage) = match self.names.get(&id) {
            Some(n) => (n.name.as_str(), n.stage),
            None => ("?", 0),
        };
        let text = clean_line(line, self.opts.color);
        let w = self.width;
        let mut out = String::with_capacity(text.len() + w + 16);
        if self.opts.color {
            let c = PALETTE[stage % PALETTE.len()];
            let _ = write!(out, "\x1b[{c}m{name:<w$} │\x1b[0m ");
        } else {
            let _ = write!(out, "{name:<w$} │ ");
        }
        out.push_str(&text);
        out.push('\n');
        self.out.extend_from_slice(out.as_bytes());
    }

    pub fn prun_line(&mut self, level: Level, message: &str) {
        if self.opts.quiet && level == Level::Info {
            return;
        }
        let tag = match level {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
        };
        let w = self.width;
        self.new_line_if_dangling();
        let line = if self.opts.color {
            let c = match level {
                Level::Info => "2",
                Level::Warning => "33",
                Level::Error => "31",
            };
            format!(
                "\x1b[1m{:<w$} │\x1b[0m \x1b[{c}m{tag}{message}\x1b[0m\n",
                "prun"
            )
        } else {
            format!("{:<w$} │ {tag}{message}\n", "prun")
        };
        self.out.extend_from_slice(line.as_bytes());
    }

    /// Hand batched lines to the screen: at once without a board (when nothing else is
    /// waiting: `idle`), above the board at most every [`BOARD_BATCH`].
    pub fn flush(&mut self, now: Instant, idle: bool) {
        if self.out.is_empty() {
            return;
        }
        let big = self.out.len() >= BATCH_BYTES;
        match &mut self.board {
            Some(b) => {
                if big || (idle && now.saturating_duration_since(self.last_flush) >= BOARD_BATCH) {
                    b.above(&std::mem::take(&mut self.out));
                    self.last_flush = now;
                }
            }
            None => {
                if big || idle {
                    self.screen
                        .push(Stream::Stderr, std::mem::take(&mut self.out));
                    self.last_flush = now;
                }
            }
        }
    }

    /// When the reporter must wake up for this terminal: a batch to write, a notice
    /// whose grace runs out, a board tick.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut next = self.order.next_expiry();
        if self.board.is_none()
            && let Some(at) = self
                .partial
                .values()
                .map(|(_, at)| *at + PARTIAL_IDLE)
                .min()
        {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if self.board.is_some() {
            let tick = now + Duration::from_millis(100);
            next = Some(next.map_or(tick, |n| n.min(tick)));
            if !self.out.is_empty() {
                let batch = self.last_flush + BOARD_BATCH;
                next = Some(next.map_or(batch, |n| n.min(batch)));
            }
        }
        next
    }

    pub fn has_board(&self) -> bool {
        self.board.is_some()
    }

    pub fn tick(&mut self) {
        if let Some(b) = &mut self.board {
            b.tick();
        }
    }

    /// After the last event: every held line, the board cleared, the table.
    pub fn finish(&mut self, report: &Report, lines: &LineStore) {
        let ids: Vec<InstanceId> = self.partial.keys().copied().collect();
        for id in ids {
            self.output_end(id);
        }
        for held in self.order.take_all() {
            self.render_held(held, lines);
        }
        if self.hidden > 0 {
            let n = self.hidden;
            self.prun_line(
                Level::Warning,
                &format!("{n} log lines not shown: the terminal did not keep up"),
            );
        }
        let out = std::mem::take(&mut self.out);
        if let Some(mut b) = self.board.take() {
            if !out.is_empty() {
                b.above(&out);
            }
            b.clear();
        } else {
            self.screen.push(Stream::Stderr, out);
        }
        let table = format_table(report, self.opts.color);
        self.screen.push(Stream::Stderr, table.into_bytes());
    }
}
