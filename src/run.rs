//! One `prun run`: wires the runtime to the reporter.
//!
//! The supervisor ([`crate::runtime`]) sends events on a channel; the reporter
//! ([`crate::report`]) renders them on its own thread. Neither knows the other: this
//! module, called by the CLI, connects them and turns their outcomes into prun's exit
//! code.

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
    /// prun's stdout is a terminal: stages on `stdout: inherit` are passed through
    /// above the board (see `runtime::Sinks`).
    pub pass_stdout: bool,
    /// The pipeline file (shown by `prun ps`).
    pub file: Option<PathBuf>,
}

impl RunOptions {
    /// The part of the options the reporter needs, for this plan.
    pub fn report_options(&self, plan: &Plan) -> crate::report::Options {
        use crate::plan::Output;
        crate::report::Options {
            report: self.report.clone(),
            log_dir: self.log_dir.clone(),
            junit: self.junit.clone(),
            capacities: plan
                .queues
                .iter()
                .filter(|q| q.wiring == crate::plan::Wiring::Routed)
                .map(|q| (q.name.clone(), q.capacity as u64))
                .collect(),
            quiet: self.quiet,
            progress: self.progress.clone(),
            color: self.color.clone(),
            log_pipes: plan
                .stages
                .iter()
                .map(|s| {
                    u32::from(s.stdout == Output::Log || s.stderr == Output::Log)
                        + u32::from(
                            self.pass_stdout
                                && s.stdout == Output::Inherit
                                && s.stdin != crate::plan::Input::Inherit,
                        )
                })
                .collect(),
        }
    }

    /// The output paths, checked before anything starts (a usage error otherwise):
    /// `--log-dir` is created and must take a new file; `--report` must be a file
    /// prun can create or overwrite.
    pub fn check_outputs(&self) -> Result<(), String> {
        if let Some(dir) = &self.log_dir {
            crate::report::check_log_dir(dir)?;
        }
        if let Some(path) = &self.report {
            check_output_file(path).map_err(|e| format!("--report {}: {e}", path.display()))?;
        }
        if let Some(path) = &self.junit {
            check_output_file(path).map_err(|e| format!("--junit {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Run the plan to the end and return prun's exit code (SPEC 7): the supervisor on
/// this thread, the terminal output and report on another.
pub fn run(plan: Plan, opts: &RunOptions) -> i32 {
    // `--resume REPORT.json`: a report that cannot be read is a usage error, found
    // before anything starts.
    let resume = match &opts.resume {
        Some(path) => match crate::report::read_resume(path) {
            Ok(done) => done,
            Err(e) => {
                eprintln!("prun: --resume: {e}");
                return 2;
            }
        },
        None => crate::resume::Resume::new(),
    };
    // Log lines are bounded, so a stalled terminal holds back only the stages that log
    // (as in a shell); not larger, because the channel's slots are allocated and touched
    // up front (8192 slots of an event cost ~300 page faults, a third of a short run's
    // start-up). The supervisor's own events are never waited on.
    if let Err(e) = opts.check_outputs() {
        eprintln!("prun: {e}");
        return crate::exit::USAGE;
    }
    // The report is a journal from now on (read `--resume` above first: it may be the
    // same file).
    let journal = match &opts.report {
        Some(path) => match crate::report::Journal::create(path, &plan.name) {
            Ok(j) => Some(j),
            Err(e) => {
                eprintln!("prun: --report {}: {e}", path.display());
                return crate::exit::USAGE;
            }
        },
        None => None,
    };
    let (log_tx, log_rx) = crossbeam_channel::bounded(1024);
    let (tx, rx) = crossbeam_channel::unbounded();
    let report_opts = opts.report_options(&plan);
    let live = crate::report::Live::default();
    let view = live.clone();
    let reporter = std::thread::Builder::new()
        .name("prun-report".into())
        .spawn(move || crate::report::render(rx, log_rx, &report_opts, journal, live));
    // Control from another terminal (SPEC 6.1): the ops socket in the user's registry.
    let (steer_tx, steer_rx) = crossbeam_channel::unbounded();
    let entry = crate::ops::registry::Entry {
        name: plan.name.clone(),
        pid: std::process::id(),
        file: opts
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_default(),
        started_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let ops = match crate::ops::server::OpsServer::start(entry, view, steer_tx) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("prun: warning: `prun ps`/`status`/`stop` will not see this run: {e}");
            None
        }
    };
    let sinks = crate::runtime::Sinks {
        steer: Some(steer_rx),
        pass_stdout: opts.pass_stdout,
        events: tx,
        logs: log_tx,
    };
    let code = crate::runtime::supervise_resuming(plan, sinks, resume);
    if let Some(ops) = ops {
        ops.finish();
    }
    // The reporter wrote the report, then gave the terminal a bounded time: joining
    // it never waits on a stalled terminal.
    match reporter.map(|h| h.join()) {
        Ok(Ok(r)) if r.write_failed => crate::exit::with_write_failure(code),
        _ => code,
    }
}

/// A path prun can write a file to: not a directory, in an existing directory, and
/// writable (an existing file is opened for writing without truncating it).
fn check_output_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(Error::new(ErrorKind::IsADirectory, "is a directory")),
        Ok(_) => {
            std::fs::OpenOptions::new().append(true).open(path)?;
            return Ok(());
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no directory {}", parent.display()),
        ));
    }
    nix::unistd::access(
        parent,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| {
        let e = Error::from(e);
        Error::new(
            e.kind(),
            format!("cannot create a file in {}: {e}", parent.display()),
        )
    })
}
