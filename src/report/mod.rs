//! Final report and terminal output (SPEC 7): consumes runtime events only.
//!
//! [`render`] runs on its own thread for the whole run. It turns the event stream
//! into prefixed log lines on stderr (and `--log-dir` files), notices, the live
//! status board, the final table, and the `--report` JSON file. Nothing here knows
//! about processes: a test can feed it events.
//!
//! Files: `term` (lines and notices, batching), `order` (a stage's last lines before
//! prun's notice of its end), `sanitize` (control bytes), `board` (the live board),
//! `screen` (the one thread that writes to the terminal), `table` (the final table),
//! `json` (the report's shape), `lines` (the last lines of each instance), `logdir`.
//!
//! The reporter never blocks on the terminal: when the terminal does not keep up, it
//! stops taking log lines (the stages that log then wait, as in a shell) but keeps
//! taking the supervisor's events; after an interrupt it takes the log lines again and
//! counts those it cannot show. At the end the report file is written first, then the
//! terminal gets a bounded time.

mod batches;
mod board;
mod end_state;
mod journal;
mod json;
mod junit;
mod lines;
mod live;
mod logdir;
mod order;
mod retire;
mod sanitize;
mod screen;
mod table;
mod term;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select};

pub use journal::{Journal, RESUME_CAP, read_resume};
pub use json::{
    EndState, InstanceReport, QueueReport, Report, ReportBuilder, ReportStatus, report_schema,
};
pub use live::{FollowLine, Live, LiveState};
pub use logdir::check_dir as check_log_dir;
pub use sanitize::clean_line;
pub use table::format_table;
pub use term::{Terminal, TerminalOptions};

use crate::event::{Event, Level, ShutdownCause, State};
use logdir::LogDir;
use retire::Retire;
use screen::Screen;

/// Bytes queued for the terminal beyond which no more log lines are taken.
const BACKLOG: usize = 1 << 20;
/// At the end, the terminal gets this long without progress, and this long in all.
const EXIT_STALL: Duration = Duration::from_millis(60);
const EXIT_CAP: Duration = Duration::from_secs(2);

/// What the reporter was asked to do (from `prun run`'s options).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub report: Option<std::path::PathBuf>,
    pub log_dir: Option<std::path::PathBuf>,
    pub quiet: bool,
    /// `never`, `auto`, `always`
    pub progress: Option<String>,
    /// `auto`, `always`, `never`
    pub color: Option<String>,
    /// `--junit FILE`: a JUnit XML report at the end.
    pub junit: Option<std::path::PathBuf>,
    /// By stage id: the pipes prun reads per run of an instance (its log, a passed
    /// through stdout), each ended with `LogClosed`.
    pub log_pipes: Vec<u32>,
    /// Routed queues' capacities (for `prun status`).
    pub capacities: Vec<(String, u64)>,
}

/// How the reporter ended: `write_failed` when a log or report file could not be
/// written (already reported on the terminal; the run fails, see
/// [`crate::exit::with_write_failure`]).
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    pub write_failed: bool,
}

struct Reporter {
    live: Live,
    terminal: Terminal,
    screen: Screen,
    log_dir: Option<LogDir>,
    /// Routed queues' capacities, and when each was last counted.
    capacities: std::collections::HashMap<String, u64>,
    queue_seen: std::collections::HashMap<String, Instant>,
    journal: Option<Journal>,
    junit: Option<std::path::PathBuf>,
    /// Foreach items not forgotten yet (see `retire`).
    retire: Retire,
    /// By stage id: the pipes prun reads per run (each ends with `LogClosed`).
    log_pipes: Vec<u32>,
    write_failed: bool,
    /// prun was interrupted: log lines are taken even when the terminal stalls.
    interrupted: bool,
}

impl Reporter {
    fn apply(&mut self, event: &Event, now: Instant) {
        let live = self.live.clone();
        let mut st = live.lock();
        match event {
            Event::Log { id, line } => {
                st.line(*id, line);
                if let Some(dir) = &mut self.log_dir {
                    let name = st.builder.name_of(*id).unwrap_or("unknown");
                    if let Some(e) = dir.write(*id, name, line) {
                        self.write_error(e);
                    }
                }
                let show = !(self.interrupted && self.screen.pending() > BACKLOG);
                self.terminal.log_line(*id, line, show);
                return;
            }
            Event::LogClosed { id } => {
                if let Some(dir) = &mut self.log_dir {
                    dir.close(*id);
                }
                if self.retire.closed(*id) {
                    // After the terminal saw the close (it releases held notices).
                    self.terminal.on_event(event, &st.builder, &st.lines, now);
                    st.builder.forget(*id);
                    self.terminal.forget(*id);
                    return;
                }
            }
            Event::InstanceAdded(info) if info.item.is_some() => {
                let pipes = self.log_pipes.get(info.stage).copied().unwrap_or(0);
                self.retire.added(info.id, pipes);
            }
            Event::StateChanged {
                id,
                state: State::Running,
                ..
            } => self.retire.started(*id),
            Event::ShutdownStarted {
                cause: ShutdownCause::Signal(_),
            } => self.interrupted = true,
            Event::PipelineStarted { .. } => st.started = Some(now),
            Event::QueueProgress {
                name,
                records,
                depth,
                ..
            } => {
                let capacity = self.capacities.get(name).copied();
                let (last, rate, _, _) = st.queues.get(name).copied().unwrap_or_default();
                let secs = now
                    .saturating_duration_since(
                        self.queue_seen.insert(name.clone(), now).unwrap_or(now),
                    )
                    .as_secs_f64();
                let rate = if secs > 0.0 {
                    records.saturating_sub(last) as f64 / secs
                } else {
                    rate
                };
                st.queues
                    .insert(name.clone(), (*records, rate, *depth, capacity));
            }
            _ => {}
        }
        st.builder.apply(event);
        if let Event::StateChanged { id, state, .. } = event
            && state.is_end()
        {
            if let Some(j) = &mut self.journal
                && let Some(entry) = st.builder.instance_report(*id)
                && let Err(e) = j.append(&entry)
            {
                let path = j.path().display().to_string();
                self.write_error(format!("cannot write the report journal {path}: {e}"));
            }
            let failed = matches!(
                state,
                State::Failed { .. }
                    | State::Killed { .. }
                    | State::TimedOut { .. }
                    | State::CouldNotStart { .. }
            );
            st.lines.ended(*id, failed);
        }
        let st = &mut *st;
        self.terminal.on_event(event, &st.builder, &st.lines, now);
        if let Event::InstanceFinal { id } = event
            && self.retire.ended(*id)
        {
            // A foreach item ended and its logs closed: nothing here needs it any more.
            st.builder.forget(*id);
            self.terminal.forget(*id);
        }
    }

    fn write_error(&mut self, message: String) {
        self.write_failed = true;
        self.terminal.prun_line(Level::Error, &message);
    }
}

/// Consume events until the run's `Finished` event (or the channels close), render
/// them, and write the JSON report if asked (`journal`, made by [`Journal::create`]
/// before the run starts). `events` carries the supervisor's events, `logs` the
/// stages' log lines (see `runtime::Sinks`).
pub fn render(
    events: Receiver<Event>,
    logs: Receiver<Event>,
    opts: &Options,
    journal: Option<Journal>,
    live: Live,
) -> Rendered {
    let screen = Screen::start();
    let mut r = Reporter {
        live,
        terminal: Terminal::new(
            TerminalOptions::from_run_options(opts),
            screen.clone(),
            opts.log_pipes.clone(),
            opts.capacities.iter().cloned().collect(),
        ),
        screen: screen.clone(),
        log_dir: opts.log_dir.clone().map(LogDir::new),
        capacities: opts.capacities.iter().cloned().collect(),
        queue_seen: Default::default(),
        journal,
        junit: opts.junit.clone(),
        retire: Retire::default(),
        log_pipes: opts.log_pipes.clone(),
        write_failed: false,
        interrupted: false,
    };
    let mut logs_open = true;
    let mut events_open = true;
    let mut next_tick = Instant::now();
    while events_open {
        let now = Instant::now();
        let backed_up = screen.pending() > BACKLOG;
        let take_logs = logs_open && (!backed_up || r.interrupted);
        // Held notices are released only while no log line waits for us.
        if !backed_up && logs.is_empty() {
            let live = r.live.clone();
            r.terminal.release_expired(&live.lock().lines, now);
        }
        if r.terminal.has_board() && !backed_up && now >= next_tick {
            r.terminal.tick();
            next_tick = now + Duration::from_millis(100);
        }
        r.terminal
            .flush(now, events.is_empty() && (!take_logs || logs.is_empty()));
        let mut wake = r.terminal.next_wakeup(now);
        if backed_up {
            let poll = now + Duration::from_millis(10);
            wake = Some(wake.map_or(poll, |w| w.min(poll)));
        }
        // The supervisor's events first: an instance is announced on `events` before
        // its process can write a line on `logs`, so its name is known by then.
        let next = match events.try_recv() {
            Ok(e) => Some(e),
            Err(crossbeam_channel::TryRecvError::Empty) => {
                let mut sel = Select::new();
                let ev = sel.recv(&events);
                let lg = take_logs.then(|| sel.recv(&logs));
                let oper = match wake {
                    Some(at) => match sel.select_deadline(at) {
                        Ok(op) => op,
                        Err(_) => continue,
                    },
                    None => sel.select(),
                };
                let index = oper.index();
                if index == ev {
                    oper.recv(&events).ok()
                } else if Some(index) == lg {
                    match oper.recv(&logs) {
                        Ok(e) => r.apply(&e, now),
                        Err(_) => logs_open = false,
                    }
                    continue;
                } else {
                    continue;
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => None,
        };
        match next {
            Some(finished @ Event::Finished { .. }) => {
                // Every drain sent its last line before the supervisor finished: pass
                // on what is still queued, then the end.
                let now = Instant::now();
                while let Ok(e) = logs.try_recv() {
                    r.apply(&e, now);
                }
                r.apply(&finished, now);
                break;
            }
            Some(e) => r.apply(&e, now),
            None => events_open = false,
        }
    }
    finish(r)
}

/// The report file first, then the table, then a bounded time for the terminal.
fn finish(mut r: Reporter) -> Rendered {
    let live = r.live.clone();
    let mut st = live.lock();
    if r.write_failed {
        st.builder.fail_with_write_error();
    }
    let mut report = st.builder.report();
    if let Some(path) = &r.junit {
        let ids = st.builder.ordered_ids();
        let lines = &st.lines;
        let tail = |n: usize| {
            ids.get(n)
                .map(|&id| {
                    lines
                        .tail(id, junit::FAILURE_LINES)
                        .into_iter()
                        .map(<[u8]>::to_vec)
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Err(e) = junit::write(path, &report, tail) {
            let msg = format!("cannot write the JUnit report {}: {e}", path.display());
            r.write_error(msg);
            report.exit_code = crate::exit::with_write_failure(report.exit_code);
            if report.status == ReportStatus::Succeeded {
                report.status = ReportStatus::Failed;
            }
        }
    }
    if let Some(journal) = r.journal.take() {
        let path = journal.path().to_path_buf();
        // Succeeded foreach items are summarized, not listed: the journal, which lists
        // them, stays beside the report.
        if st.builder.folded_any() {
            match journal.keep() {
                Ok(name) => report.journal = name,
                Err(e) => r.write_error(format!(
                    "cannot keep the report journal beside {}: {e}",
                    path.display()
                )),
            }
        }
        if let Err(e) = journal.finish(&report) {
            r.write_error(format!("cannot write the report {}: {e}", path.display()));
            report.exit_code = crate::exit::with_write_failure(report.exit_code);
            if report.status == ReportStatus::Succeeded {
                report.status = ReportStatus::Failed;
            }
        }
    }
    r.terminal.finish(&report, &st.lines);
    st.finish();
    drop(st);
    r.screen.finish(EXIT_STALL, EXIT_CAP);
    Rendered {
        write_failed: r.write_failed,
    }
}

/// The report's JSON Schema as pretty-printed text (`prun schema report`).
pub fn report_schema_json() -> String {
    serde_json::to_string_pretty(&report_schema()).unwrap_or_default()
}
