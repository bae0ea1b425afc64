//! One instance's lifecycle as one explicit state ([`Life`]), and what it remembers
//! across runs ([`Inst`]).
//!
//! ```text
//!  Waiting ──start──▶ (Starting: files opened off the loop) ──▶ Running(Probing)
//!     ▲                                                 ──ready──▶ Running(Ready)
//!     ▲                  │    stop: No → Draining → Asked(why) → (SIGKILL sent)
//!     │ restart          ▼
//!     └──(backoff)── exit ──▶ Judging (SIGPIPE, until its readers' exits are known)
//!                         └──▶ Ended(State)
//! ```
//!
//! Every deadline of an instance lives in its `Life` (a backoff, a timeout, a
//! readiness deadline, a probe's next poll, the drain grace, the SIGKILL after the stop
//! grace) and is also pushed onto the loop's timer heap; when it fires, the loop runs
//! [`Supervisor::instance_due`](super::Supervisor) for that instance only.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::event::{InstanceInfo, ProcessEnd, State};
use crate::plan::QueueId;
use crate::runtime::opener::FileOpens;
use crate::runtime::place::{Launched, Place};

/// A queue endpoint attached to a router for the current process of an instance.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouterPort {
    pub queue: QueueId,
    pub writer: bool,
    pub id: usize,
}

/// Where an instance stands with the permits of its `semaphore:` stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Permit {
    None,
    Requested,
    Held,
}

/// How a running instance is being found ready (SPEC 1.1 `ready`).
#[derive(Debug)]
pub(super) enum Probe {
    /// A drain thread watches its log lines (`ready: {line}`).
    Line,
    /// Ready at this time (`ready: {delay}`).
    Delay { at: Instant },
    /// `ready: {cmd}`: next run, and the probe command running now.
    Poll {
        next: Option<Instant>,
        running: Option<i32>,
    },
    /// A thread off the loop watches (`ready: {tcp}` connects, `ready: {file}` looks
    /// for the file: a slow filesystem never stalls the loop); set the flag to stop it.
    Watcher { cancel: Arc<AtomicBool> },
}

#[derive(Debug)]
pub(super) enum Readiness {
    /// Not ready yet; failed if still so at `deadline`.
    Probing {
        probe: Probe,
        deadline: Option<Instant>,
    },
    Ready,
}

/// Why prun asked an instance to stop; decides its end state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopWhy {
    /// Shutdown or the end of a daemon: `stopped`.
    Shutdown,
    /// It ran past its `timeout`: `timed out`.
    TimedOut,
    /// Its readiness probe failed or timed out: `failed (not ready within …)`.
    NotReady,
}

/// Where a running instance is in being stopped by prun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Not asked to stop.
    No,
    /// Shutdown: its inputs are closed and it may finish on its own until `until`.
    Draining { until: Instant },
    /// Sent its stop command or signal; SIGKILL to its group at `kill_at` (None once
    /// sent).
    Asked {
        why: StopWhy,
        kill_at: Option<Instant>,
    },
}

/// A process of the instance that is running.
#[derive(Debug)]
pub(super) struct Run {
    /// Where it runs and what that place needs to reach it: `launched.pid` leads the
    /// local process group (the stage itself, or the client of the engine that runs it
    /// elsewhere).
    pub place: Place,
    pub launched: Launched,
    pub readiness: Readiness,
    pub timeout_at: Option<Instant>,
    pub stop: Stop,
}

/// The lifecycle of one instance.
#[derive(Debug)]
pub(super) enum Life {
    /// Not started: its conditions, events or permits are pending, or (`backoff`) a
    /// restart waits for its delay.
    Waiting {
        permit: Permit,
        backoff: Option<Instant>,
    },
    /// Passed its start checks (it holds its permits); its files are being opened off
    /// the loop (a FIFO waits for its other end). `token` matches the opener's answer.
    Starting {
        token: u64,
        opens: FileOpens,
    },
    Running(Run),
    /// Died of SIGPIPE (or, on another host, lost its engine client, which is how a
    /// closed reader shows there: `lost` is then the message if it was not that);
    /// judged once its readers are known to have ended (or `until`).
    Judging {
        end: ProcessEnd,
        why: Option<StopWhy>,
        until: Instant,
        lost: Option<String>,
    },
    /// Over for good.
    Ended(State),
}

pub(super) struct Inst {
    pub info: InstanceInfo,
    pub life: Life,
    /// The state last reported (what `after` conditions and the report see).
    pub shown: State,
    pub last_pid: Option<i32>,
    /// Every process group this instance has had, for the final sweep.
    pub pgids: Vec<i32>,
    /// Counts the runs: log lines and probe results of an earlier run are ignored.
    pub generation: u64,
    pub restarts: u32,
    /// What the last run ended as, while a restart is pending.
    pub last_end: Option<State>,
    /// Facts about its history, for `after: started|ready`.
    pub ever_started: bool,
    pub ever_ready: bool,
    /// Pipeline exit code when it could not start (127 not found, 126 otherwise).
    pub start_error_code: i32,
    pub ports: Vec<RouterPort>,
    /// Every router port any run of it had (`port_owner` entries, dropped when the
    /// instance is folded).
    pub ports_used: Vec<(QueueId, usize)>,
    /// `foreach: {queue, batch}`: the block of records on its stdin.
    pub block: Option<super::block::BlockInput>,
    /// Reader ports (queue, port id) of this instance's last run, which its routers
    /// were told may be restarted (`reader_may_restart`): records they gave back wait
    /// for the restart rather than reach another reader out of order. Released with
    /// `reader_not_coming` once the restart joins, or when none will come.
    pub expected_by: Vec<(QueueId, usize)>,
    /// `prun stop` or `prun restart` asked for this instance's current run.
    pub asked: Option<Asked>,
}

/// What `prun stop|restart` asked of a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    /// Stopped for good (no restart, whatever the policy).
    Stop,
    /// Started again as soon as it ended.
    Restart,
}

impl Run {
    pub(super) fn launched(&self) -> Launched {
        self.launched.clone()
    }
}

impl Inst {
    pub(super) fn new(info: InstanceInfo) -> Inst {
        Inst {
            info,
            life: Life::Waiting {
                permit: Permit::None,
                backoff: None,
            },
            shown: State::Waiting,
            last_pid: None,
            pgids: Vec::new(),
            generation: 0,
            restarts: 0,
            last_end: None,
            ever_started: false,
            ever_ready: false,
            start_error_code: 1,
            ports: Vec::new(),
            ports_used: Vec::new(),
            block: None,
            expected_by: Vec::new(),
            asked: None,
        }
    }

    /// Ended for good: no process, no restart or judgement pending.
    pub(super) fn is_final(&self) -> bool {
        matches!(self.life, Life::Ended(_))
    }

    /// The running process, if any.
    pub(super) fn run(&self) -> Option<&Run> {
        match &self.life {
            Life::Running(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn run_mut(&mut self) -> Option<&mut Run> {
        match &mut self.life {
            Life::Running(r) => Some(r),
            _ => None,
        }
    }

    pub(super) fn pid(&self) -> Option<i32> {
        self.run().map(|r| r.launched.pid)
    }

    /// Waiting to start now (not in a restart backoff).
    pub(super) fn startable(&self) -> bool {
        matches!(self.life, Life::Waiting { backoff: None, .. })
    }

    pub(super) fn permit(&self) -> Permit {
        match self.life {
            Life::Waiting { permit, .. } => permit,
            Life::Starting { .. } | Life::Running(_) => Permit::Held,
            _ => Permit::None,
        }
    }

    pub(super) fn set_permit(&mut self, p: Permit) {
        if let Life::Waiting { permit, .. } = &mut self.life {
            *permit = p;
        }
    }

    /// A restart backoff or a SIGPIPE judgement is pending: it will act again.
    pub(super) fn pending(&self) -> bool {
        matches!(
            self.life,
            Life::Waiting {
                backoff: Some(_),
                ..
            } | Life::Judging { .. }
        )
    }
}
