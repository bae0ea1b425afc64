//! What the supervisor tells the outside world.
//!
//! The supervisor never prints: every observable fact (a state change, a log line,
//! a shutdown notice, queue counters, the end of the run) is an [`Event`] sent on a
//! channel. `report` turns events into terminal output and the JSON report, so the
//! runtime can be tested by reading events and the output can be tested without
//! processes.

use std::time::Duration;

/// Index of a stage in the plan (`Plan::stages`).
pub type StageId = usize;

/// Index of an instance in the run (stable for the whole run).
pub type InstanceId = usize;

/// Static facts about one instance, announced once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub id: InstanceId,
    /// `eater.1`, or `eater` for a single instance.
    pub name: String,
    pub stage: StageId,
    pub stage_name: String,
    pub index: usize,
    pub item: Option<String>,
    pub daemon: bool,
    /// A foreach item not run because it succeeded in the `--resume` report (its
    /// state is `skipped`; it counts as a success for `after` and for the next resume).
    pub resumed: bool,
}

/// How a process ended, from its wait status: exactly one of the two, so a real exit
/// code is never confused with a signal (or lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// `exit(N)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ProcessEnd {
    /// From a raw `waitpid` status; None for a status that is neither (stopped,
    /// continued).
    pub fn from_wait_status(status: i32) -> Option<ProcessEnd> {
        if libc::WIFEXITED(status) {
            Some(ProcessEnd::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ProcessEnd::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    pub fn code(self) -> Option<i32> {
        match self {
            ProcessEnd::Exited(c) => Some(c),
            ProcessEnd::Signaled(_) => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            ProcessEnd::Signaled(s) => Some(s),
            ProcessEnd::Exited(_) => None,
        }
    }
}

/// Why an instance counts as succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Success {
    /// Exited with a code in `success_codes` (kept: `success_codes: [0, 3]` and exit 3
    /// is reported as exit 3).
    Exited(i32),
    /// Killed by SIGPIPE after every reader of its queues had ended, as in a shell.
    DownstreamClosed,
}

/// The lifecycle of one instance (SPEC 3.1), as reported. The last seven are end
/// states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started yet (conditions, permits, or a restart backoff pending).
    Waiting,
    Running,
    Ready,
    Succeeded(Success),
    /// Exited with a code outside `success_codes` (`end`), or failed for `reason` (its
    /// readiness probe; `end` is then how the process ended after prun stopped it).
    Failed {
        end: Option<ProcessEnd>,
        reason: Option<String>,
    },
    /// Died from a signal prun did not send.
    Killed {
        signal: i32,
    },
    /// Ran longer than its `timeout`.
    TimedOut {
        end: Option<ProcessEnd>,
    },
    /// Stopped by prun (shutdown, or end of a daemon).
    Stopped {
        end: Option<ProcessEnd>,
    },
    /// Never started: a dependency cannot meet its condition, or the pipeline stopped.
    Skipped {
        reason: String,
    },
    /// exec (or opening one of its files) failed.
    CouldNotStart {
        error: String,
    },
}

impl State {
    pub fn is_end(&self) -> bool {
        !matches!(self, State::Waiting | State::Running | State::Ready)
    }

    /// Stable snake_case name, as in the JSON report.
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Running => "running",
            State::Ready => "ready",
            State::Succeeded(_) => "succeeded",
            State::Failed { .. } => "failed",
            State::Killed { .. } => "killed",
            State::TimedOut { .. } => "timed_out",
            State::Stopped { .. } => "stopped",
            State::Skipped { .. } => "skipped",
            State::CouldNotStart { .. } => "could_not_start",
        }
    }

    /// How the process ended, when it did.
    pub fn end(&self) -> Option<ProcessEnd> {
        match self {
            State::Failed { end, .. } | State::TimedOut { end } | State::Stopped { end } => *end,
            State::Succeeded(Success::Exited(c)) => Some(ProcessEnd::Exited(*c)),
            State::Succeeded(Success::DownstreamClosed) => {
                Some(ProcessEnd::Signaled(libc::SIGPIPE))
            }
            State::Killed { signal } => Some(ProcessEnd::Signaled(*signal)),
            _ => None,
        }
    }

    /// Exit code of the process, when it exited normally.
    pub fn exit_code(&self) -> Option<i32> {
        self.end().and_then(ProcessEnd::code)
    }

    /// Signal that ended the process, if any.
    pub fn signal(&self) -> Option<i32> {
        self.end().and_then(ProcessEnd::signal)
    }

    /// Human text for the table and log notices: `failed (exit 3)`, `killed (SIGKILL)`.
    pub fn describe(&self) -> String {
        match self {
            State::Succeeded(Success::DownstreamClosed) => "succeeded (downstream closed)".into(),
            State::Succeeded(Success::Exited(c)) if *c != 0 => format!("succeeded (exit {c})"),
            State::Failed {
                reason: Some(r), ..
            } => format!("failed ({r})"),
            State::Failed {
                end: Some(ProcessEnd::Exited(c)),
                ..
            } => format!("failed (exit {c})"),
            State::Failed {
                end: Some(ProcessEnd::Signaled(s)),
                ..
            } => format!("failed ({})", signal_name(*s)),
            State::Killed { signal } => format!("killed ({})", signal_name(*signal)),
            State::TimedOut { .. } => "timed out".into(),
            State::Stopped { .. } => "stopped".into(),
            State::Skipped { reason } => format!("skipped ({reason})"),
            State::CouldNotStart { error } => format!("could not start ({error})"),
            other => other.name().replace('_', " "),
        }
    }
}

/// Why a foreach stage stopped creating instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every item of its source has an instance (a queue reached its end).
    Exhausted,
    /// The pipeline stopped first (or the stage could never start).
    Stopped,
    /// Its `halt` fired: why (`3 of 40 items failed (halt: soon, fail: 3)`).
    Halted(String),
    /// Its source could not be read (to the end).
    SourceFailed(String),
}

/// Why the pipeline is being shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownCause {
    /// Every non-daemon instance ended: daemons are stopped (SPEC 5.1).
    Finished,
    /// prun received this signal.
    Signal(i32),
    /// An instance failed with `on_failure: stop`.
    Failure,
    /// Instances wait for events or permits that nothing can give any more.
    Deadlock,
}

/// Overall outcome, as in the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// First event of a run.
    PipelineStarted {
        pipeline: String,
        instances: Vec<InstanceInfo>,
        queues: Vec<String>,
    },
    /// An instance created while running (foreach).
    InstanceAdded(InstanceInfo),
    /// A foreach stage started: its items are known (`total`), or it takes one item
    /// per record of a queue (`total` is None). `resumed` items are already done.
    BatchStarted {
        stage: StageId,
        stage_name: String,
        total: Option<usize>,
        resumed: usize,
    },
    /// The number of items of a foreach stage, known after it started (a `lines` file
    /// counted, a glob walked to its end, a queue at its end) or final at its close.
    BatchTotal {
        stage: StageId,
        total: u64,
    },
    /// A foreach stage will create no more instances. `not_started`: items of its
    /// source that never got one (the pipeline stopped or `halt` fired first; None
    /// when the rest of the source was never read, so their number is unknown).
    BatchClosed {
        stage: StageId,
        not_started: Option<u64>,
        why: BatchEnd,
    },
    /// An instance reached its end state for good (sent right after that
    /// `StateChanged`): no restart follows. A foreach item is then forgotten by the
    /// runtime (folded into its stage's counters).
    InstanceFinal {
        id: InstanceId,
    },
    /// A deadlock was found: `message` names who waits for what and who holds what.
    /// The run fails and stops in drain order.
    Deadlock {
        message: String,
    },
    /// An instance changed state. `at` is relative to the pipeline start.
    StateChanged {
        id: InstanceId,
        state: State,
        pid: Option<u32>,
        at: Duration,
        restarts: u32,
    },
    /// An instance runs on a host of `hosts:` (sent at each launch there), and, for a
    /// Slurm step, on which `node` (sent again once the step reports it).
    Placed {
        id: InstanceId,
        host: String,
        node: Option<String>,
    },
    /// An instance ended and will be started again after `delay`.
    Restarting {
        id: InstanceId,
        attempt: u32,
        delay: Duration,
    },
    /// One whole line of an instance's log output (without the newline).
    Log {
        id: InstanceId,
        line: Vec<u8>,
    },
    /// Bytes a stage on `stdout: inherit` wrote, passed through because prun's stdout
    /// is a terminal (on the log channel, ended by [`Event::LogClosed`] like a log).
    Output {
        id: InstanceId,
        bytes: Vec<u8>,
    },
    /// An instance's log pipe reached its end (sent after its last [`Event::Log`] line,
    /// once per run of the instance that had a log pipe): whatever it printed has been
    /// passed on.
    LogClosed {
        id: InstanceId,
    },
    /// A message from prun itself.
    Notice {
        level: Level,
        message: String,
    },
    ShutdownStarted {
        cause: ShutdownCause,
    },
    /// During shutdown: the instances prun still waits for.
    StillWaiting {
        names: Vec<String>,
    },
    /// Queue counters at the end (routed queues; direct pipes are not counted).
    QueueFinished {
        queue: usize,
        name: String,
        direct: bool,
        stats: QueueStats,
    },
    /// Records routed so far through a routed queue (about once a second, for the
    /// status board's records/s).
    QueueProgress {
        queue: usize,
        name: String,
        records: u64,
        /// Records waiting in prun for a reader now.
        depth: u64,
    },
    /// Records counted for an instance by the routers (None: direct pipe only).
    Records {
        id: InstanceId,
        records_in: Option<u64>,
        records_out: Option<u64>,
    },
    /// Last event of a run.
    Finished {
        status: RunStatus,
        exit_code: i32,
        duration: Duration,
    },
}

/// Counters for the report (SPEC 7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub records: u64,
    /// Records waiting in prun for a reader at the last count (the board, `prun status`).
    pub depth: u64,
    pub bytes: u64,
    pub max_depth: u64,
    pub blocked_ms: u64,
    pub sentinels_sent: u64,
    pub dropped_after_sentinel: u64,
    pub in_flight_at_failure: u64,
    /// Records read from each writer (the writer instance's `records_out`).
    pub per_writer: Vec<(usize, u64)>,
    /// Records delivered to each reader (the reader instance's `records_in`).
    pub per_reader: Vec<(usize, u64)>,
    /// Records buffered in prun that could never be delivered: `abort`, or no reader
    /// left after `close_readers`.
    pub discarded: u64,
    /// Last records cut short (no delimiter) by a writer that failed or was killed:
    /// dropped, never delivered as if whole (SPEC 4.1).
    pub partial_records: u64,
}

/// `SIGTERM` for 15, `SIG42` when unknown.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("SIG{sig}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_and_codes() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        let s = State::Succeeded(Success::DownstreamClosed);
        assert!(s.is_end());
        assert_eq!(s.signal(), Some(libc::SIGPIPE));
        assert_eq!(s.describe(), "succeeded (downstream closed)");
        assert!(!State::Ready.is_end());
        assert_eq!(
            State::TimedOut {
                end: Some(ProcessEnd::Signaled(15))
            }
            .name(),
            "timed_out"
        );
        let f = State::Failed {
            end: Some(ProcessEnd::Exited(3)),
            reason: None,
        };
        assert_eq!(f.describe(), "failed (exit 3)");
        let ok3 = State::Succeeded(Success::Exited(3));
        assert_eq!(ok3.exit_code(), Some(3));
        assert_eq!(ok3.describe(), "succeeded (exit 3)");
    }
}
