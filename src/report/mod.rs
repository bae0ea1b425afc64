//! Final report and terminal output (SPEC 7): consumes runtime events only.
//!
//! [`render`] runs on its own thread for the whole run. It turns the event stream
//! into prefixed log lines on stderr (and `--log-dir` files), notices, the live
//! status board, the final table, and the `--report` JSON file. Nothing here knows
//! about processes: a test can feed it events.

mod json;
mod term;

use std::io;

use crossbeam_channel::Receiver;

pub use json::{
    EndState, InstanceReport, QueueReport, Report, ReportBuilder, ReportStatus, report_schema,
};
pub use term::{Terminal, TerminalOptions, format_table};

use crate::event::Event;

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
}

/// Consume events until the run's `Finished` event (or the channels close), render
/// them, and write the JSON report if asked. `events` carries the supervisor's events,
/// `logs` the stages' log lines (see `runtime::Sinks`).
pub fn render(events: Receiver<Event>, logs: Receiver<Event>, opts: &Options) -> io::Result<()> {
    let mut builder = ReportBuilder::new();
    let mut terminal = Terminal::new(TerminalOptions::from_run_options(opts));
    let mut logs = Some(logs);
    loop {
        let event = match &logs {
            Some(l) => crossbeam_channel::select! {
                recv(events) -> e => match e { Ok(e) => e, Err(_) => break },
                recv(l) -> e => match e {
                    Ok(e) => e,
                    Err(_) => { logs = None; continue; }
                },
            },
            None => match events.recv() {
                Ok(e) => e,
                Err(_) => break,
            },
        };
        if matches!(event, Event::Finished { .. }) {
            // Every drain thread sent its last line before the supervisor finished: pass
            // on what is still queued, then the end.
            if let Some(l) = &logs {
                while let Ok(line) = l.try_recv() {
                    builder.apply(&line);
                    terminal.on_event(&line, &builder);
                }
            }
            builder.apply(&event);
            terminal.on_event(&event, &builder);
            break;
        }
        builder.apply(&event);
        terminal.on_event(&event, &builder);
    }
    let report = builder.report();
    terminal.finish(&report);
    if let Some(path) = &opts.report {
        let mut text = serde_json::to_string_pretty(&report).map_err(io::Error::other)?;
        text.push('\n');
        std::fs::write(path, text)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The report's JSON Schema as pretty-printed text (`prun schema report`).
pub fn report_schema_json() -> String {
    serde_json::to_string_pretty(&report_schema()).unwrap_or_default()
}
