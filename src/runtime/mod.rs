//! The runtime: one supervisor that owns every child process.
//!
//! It takes a [`Plan`](crate::plan::Plan), spawns instances, routes queues,
//! supervises and stops them, and emits [`Event`]s. It never prints: the `report`
//! module renders the events.
//!
//! Layout: `spawn` (a command as data → a process), `place` (where an instance runs),
//! `opener` (files opened off the loop), `guardian` (kills every group if prun is
//! SIGKILLed), `drain` (log pipes → lines), `msg` (what threads tell the loop),
//! `supervisor` (the one loop that owns all children and waits, in rooms), `router`
//! (queues), `items` and `glob` (foreach sources, read lazily off the loop); the items
//! `--resume` skips are [`crate::resume`]. The vocabulary it reports in is [`crate::event`]; semaphores and
//! events as data are [`crate::coord`].

mod drain;
mod glob;
mod guardian;
pub mod items;
mod msg;
pub mod opener;
pub mod place;
pub mod router;
mod scanner;
pub mod spawn;
mod supervisor;

use std::sync::{Mutex, MutexGuard};

use crossbeam_channel::Sender;

pub use crate::event::{Event, InstanceId, InstanceInfo, Level, RunStatus, ShutdownCause, State};
pub use msg::{Steer, SteerRequest};
pub use supervisor::children_of;

use crate::plan::Plan;
use msg::Msg;
use supervisor::Supervisor;

static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Process-wide lock held by a run.
///
/// A run makes the process a child subreaper, reaps with `waitpid(-1)` and kills
/// leftover children of the process at its end: it owns *every* child of the
/// process. Two runs at once (or a run and unrelated `Command`s, as in tests) would
/// steal each other's exit statuses, so they take turns.
pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a run's events go: the supervisor's own on `events`, which is never waited on
/// (an unbounded channel: the loop must not block on a stalled terminal), and the
/// stages' log lines on `logs`, which may be bounded: a drain thread that cannot hand a
/// line on stops reading, and only that stage blocks on its own output, as in a shell.
/// Each log pipe ends with [`Event::LogClosed`] on `logs`, after its last line.
///
/// `pass_stdout`: prun's stdout is a terminal, and the stages on `stdout: inherit` (but
/// not `stdin: inherit`: an interactive stage keeps the terminal) write
/// into a pipe that prun reads ([`Event::Output`] on `logs`, then `LogClosed`), so
/// their output is passed through above the status board and never splits a line;
/// otherwise they get prun's stdout itself (zero copy: `prun p.yaml > out`).
#[derive(Clone)]
pub struct Sinks {
    pub events: Sender<Event>,
    pub logs: Sender<Event>,
    pub pass_stdout: bool,
    /// Requests from `prun stop|restart|signal` (forwarded into the loop).
    pub steer: Option<crossbeam_channel::Receiver<SteerRequest>>,
}

/// Run the plan, sending every [`Event`] (log lines too) to `events`; returns prun's
/// exit code. Handles SIGINT, SIGTERM and SIGHUP for the duration of the run.
pub fn supervise(plan: Plan, events: Sender<Event>) -> i32 {
    let sinks = Sinks {
        pass_stdout: false,
        steer: None,
        logs: events.clone(),
        events,
    };
    supervise_resuming(plan, sinks, crate::resume::Resume::new())
}

/// [`supervise`] with separate sinks, skipping the foreach items in `resume` (the items
/// that succeeded in an earlier report, by stage, position and value).
pub fn supervise_resuming(plan: Plan, sinks: Sinks, resume: crate::resume::Resume) -> i32 {
    let events = sinks.events.clone();
    let _lock = exclusive();
    // prun reaps every orphaned descendant (SPEC 5.4).
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let (msg_tx, msg_rx) = crossbeam_channel::unbounded();
    if let Some(steer) = sinks.steer.clone() {
        let tx = msg_tx.clone();
        // Ends when the run drops its sender of `msg` (the loop is gone) or the ops
        // server its sender of `steer`.
        let _ = std::thread::Builder::new()
            .name("prun-steer".into())
            .spawn(move || {
                for req in steer {
                    if tx.send(msg::Msg::Steer(req)).is_err() {
                        break;
                    }
                }
            });
    }

    let run_dir = match crate::rundir::create() {
        Ok(d) => d,
        Err(e) => {
            let _ = events.send(Event::Notice {
                level: Level::Error,
                message: format!("cannot create the run directory: {e}"),
            });
            let _ = events.send(Event::Finished {
                status: RunStatus::Failed,
                exit_code: 1,
                duration: Default::default(),
            });
            return 1;
        }
    };

    use signal_hook::consts::{SIGCHLD, SIGCONT, SIGHUP, SIGINT, SIGTERM, SIGTSTP};
    let signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGTSTP, SIGCONT]);
    let (signal_handle, signal_thread) = match signals {
        Ok(mut signals) => {
            let handle = signals.handle();
            let tx = msg_tx.clone();
            let thread = std::thread::Builder::new()
                .name("prun-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        let msg = if sig == SIGCHLD {
                            Msg::Child
                        } else {
                            Msg::Signal(sig)
                        };
                        if tx.send(msg).is_err() {
                            break;
                        }
                    }
                });
            (Some(handle), thread.ok())
        }
        Err(e) => {
            let _ = events.send(Event::Notice {
                level: Level::Warning,
                message: format!("cannot handle signals: {e}"),
            });
            (None, None)
        }
    };

    let sup = Supervisor::new(plan, sinks, msg_tx, msg_rx, run_dir.clone()).with_resume(resume);
    let code = sup.run();

    if let Some(h) = signal_handle {
        h.close();
    }
    if let Some(t) = signal_thread {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    code
}
