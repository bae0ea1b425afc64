//! One `prun run`: wires the runtime to the reporter.
//!
//! The supervisor ([`crate::runtime`]) sends events on a channel; the reporter
//! ([`crate::report`]) renders them on its own thread. Neither knows the other: this
//! module, called by the CLI, connects them and turns their outcomes into prun's exit
//! code.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::plan::Plan;

/// How `prun run` was asked to behave (CLI options that reach the runtime).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub report: Option<PathBuf>,
    /// `--junit FILE` (`PRUN_JUNIT`): a JUnit XML report, one test case per instance.
    pub junit: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub quiet: bool,
    /// `never`, `auto`, `always`
    pub progress: Option<String>,
    /// `auto`, `always`, `never`
    pub color: Option<String>,
    pub resume: Option<PathBuf>,
}

impl RunOptions {
    /// The part of the options the reporter needs.
    pub fn report_options(&self) -> crate::report::Options {
        crate::report::Options {
            report: self.report.clone(),
            log_dir: self.log_dir.clone(),
            quiet: self.quiet,
            progress: self.progress.clone(),
            color: self.color.clone(),
        }
    }
}

/// Run the plan to the end and return prun's exit code (SPEC 7): the supervisor on
/// this thread, the terminal output and report on another.
pub fn run(plan: Plan, opts: &RunOptions) -> i32 {
    // `--resume REPORT.json`: a report that cannot be read is a usage error, found
    // before anything starts.
    let resume = match &opts.resume {
        Some(path) => match crate::runtime::foreach::load_resume(path) {
            Ok(done) => done,
            Err(e) => {
                eprintln!("prun: --resume: {e}");
                return 2;
            }
        },
        None => HashSet::new(),
    };
    // Log lines are bounded, so a stalled terminal holds back only the stages that log
    // (as in a shell); not larger, because the channel's slots are allocated and touched
    // up front (8192 slots of an event cost ~300 page faults, a third of a short run's
    // start-up). The supervisor's own events are never waited on.
    let (log_tx, log_rx) = crossbeam_channel::bounded(1024);
    let (tx, rx) = crossbeam_channel::unbounded();
    let report_opts = opts.clone();
    let reporter = std::thread::Builder::new()
        .name("prun-report".into())
        .spawn(move || crate::report::render(rx, log_rx, &report_opts.report_options()));
    let sinks = crate::runtime::Sinks {
        events: tx,
        logs: log_tx,
    };
    let code = crate::runtime::supervise_resuming(plan, sinks, resume);
    match reporter {
        Ok(handle) => match handle.join() {
            Ok(Ok(())) => code,
            Ok(Err(e)) => {
                eprintln!("prun: cannot write the report: {e}");
                if code == 0 { 1 } else { code }
            }
            Err(_) => code,
        },
        Err(_) => code,
    }
}
