//! Reaping: `waitpid(-1)` → who ended → how ([`ProcessEnd`]) → the instance's end state,
//! or a restart.
//!
//! prun is a child subreaper, so this also reaps descendants that were re-parented to
//! it (nothing else to do for those). A stage's exit is classified once, into one
//! [`State`] that keeps the real exit code or signal: `success_codes: [0, 3]` and exit
//! 3 is `succeeded` with exit code 3. A death by SIGPIPE is judged a little later
//! ([`Life::Judging`]): it is `succeeded (downstream closed)` when every reader of its
//! queues had ended, which the reader's own exit (reaped in any order) tells.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::instance::{Asked, Life, Permit, Probe, Readiness, StopWhy};
use super::{Owner, Supervisor};
use crate::event::{Event, InstanceId, Level, ProcessEnd, State, Success};
use crate::plan::{OnFailure, Output, ProbeKind, RestartPolicy, Trigger};
use crate::runtime::place::{Outcome, group_alive, signal_group};

/// How long a SIGPIPE death waits for its readers' exits to be reaped before it is
/// judged (the reader's exit and the writer's death can be reaped in either order).
const SIGPIPE_GRACE: Duration = Duration::from_millis(300);

/// The wait status of a reaped process, as prun needs it.
fn process_end(status: WaitStatus) -> Option<(i32, ProcessEnd)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), ProcessEnd::Exited(code))),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), ProcessEnd::Signaled(sig as i32))),
        _ => None,
    }
}

impl Supervisor {
    /// Collect every exited child without blocking.
    pub(super) fn reap(&mut self) {
        loop {
            let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED;
            let status = match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
                Ok(s) => s,
            };
            if let WaitStatus::Stopped(pid, sig) = status {
                self.on_stopped(pid.as_raw(), sig as i32);
                continue;
            }
            let Some((pid, end)) = process_end(status) else {
                continue;
            };
            match self.owners.remove(&pid) {
                Some(Owner::Instance(id)) => self.on_exit(id, pid, end),
                Some(Owner::Probe(id, generation)) => self.on_probe_exit(id, generation, pid, end),
                Some(Owner::StopCmd(_)) => self.forget_group_if_empty(pid),
                Some(Owner::Guardian) => self.on_guardian_exit(pid),
                Some(Owner::RemoteSignal { id, client, sig }) => {
                    self.forget_group_if_empty(pid);
                    self.on_remote_signal_exit(id, client, sig, end);
                }
                Some(Owner::Master | Owner::Sweeper | Owner::RemoteCleanup) => {
                    // A master's end comes with its message (`Msg::HostDown`).
                    self.forget_group_if_empty(pid);
                }
                // A re-parented descendant (prun is a subreaper): reaped, nothing else.
                None => {}
            }
        }
    }

    fn on_probe_exit(&mut self, id: InstanceId, generation: u64, pid: i32, end: ProcessEnd) {
        self.forget_group_if_empty(pid);
        // The probe of an item that was folded meanwhile.
        if self.insts.get(id).is_none() {
            return;
        }
        let interval = match self.plan.stages[self.insts[id].info.stage]
            .ready
            .as_ref()
            .map(|r| &r.kind)
        {
            Some(ProbeKind::Cmd { interval, .. }) => *interval,
            _ => Duration::from_secs(1),
        };
        let now = self.clock.now();
        let current = self.insts[id].generation == generation;
        let mut passed = false;
        let mut next_poll = None;
        if let Some(run) = self.insts[id].run_mut()
            && let Readiness::Probing {
                probe: Probe::Poll { running, next },
                ..
            } = &mut run.readiness
            && *running == Some(pid)
        {
            *running = None;
            if current {
                if end == ProcessEnd::Exited(0) {
                    passed = true;
                } else {
                    *next = Some(now + interval);
                    next_poll = *next;
                }
            }
        }
        if passed {
            self.mark_ready(id);
        } else if let Some(t) = next_poll {
            self.timers.at(t, id);
        }
    }

    pub(super) fn forget_group_if_empty(&mut self, pgid: i32) {
        if !group_alive(pgid)
            && let Some(g) = self.guardian.as_mut()
        {
            g.forget(pgid);
        }
    }

    /// The local process of instance `id` ended (for an instance on another host: its
    /// engine client, judged once its pump has said all it will).
    pub(super) fn on_exit(&mut self, id: InstanceId, pid: i32, end: ProcessEnd) {
        if self.defer_remote_exit(id, pid, end) {
            return;
        }
        self.forget_group_if_empty(pid);
        self.release_terminal(id);
        // Keep only groups that still have members: an empty group's id may be
        // recycled by an unrelated process, which the final sweep must not hit.
        self.insts[id].pgids.retain(|&g| group_alive(g));
        let Life::Running(run) = std::mem::replace(
            &mut self.insts[id].life,
            Life::Waiting {
                permit: Permit::None,
                backoff: None,
            },
        ) else {
            return;
        };
        self.note_remote_end(&run);
        if let Readiness::Probing { probe, .. } = &run.readiness {
            match probe {
                Probe::Watcher { cancel } => {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed)
                }
                Probe::Poll {
                    running: Some(p), ..
                } => signal_group(*p, libc::SIGKILL),
                _ => {}
            }
        }
        let why = match run.stop {
            super::instance::Stop::Asked { why, .. } => Some(why),
            _ => None,
        };
        let ports = std::mem::take(&mut self.insts[id].ports);
        // Readers announced as restartable are awaited by their routers until the
        // restart joins or `finish_run` says none comes (see `expected_by`).
        let restartable =
            self.plan.stages[self.insts[id].info.stage].restart.policy != RestartPolicy::Never;
        for port in &ports {
            if !port.writer && restartable && self.routers[port.queue].is_some() {
                self.insts[id].expected_by.push((port.queue, port.id));
            }
        }
        for port in &ports {
            if !port.writer
                && let Some(r) = &self.routers[port.queue]
            {
                r.reader_exited(port.id);
            }
        }
        let stopped_early = run
            .launched
            .remote
            .as_ref()
            .is_some_and(|r| r.stopped_early);
        let (end, lost) = match self.places.outcome(run.place, &run.launched(), end) {
            Outcome::Ended(end) => (end, None),
            // Asked to stop before the remote side said how it ended: the reason
            // stands (an engine that failed on its own, unasked, could not start).
            Outcome::EngineFailed { .. } | Outcome::Lost(_)
                if why.is_some() && (stopped_early || self.remote_started(&run)) =>
            {
                self.report_writer_outcome(&ports, false);
                let state = self.stopped_state(id, why, None);
                self.finish_run(id, state);
                return;
            }
            Outcome::EngineFailed { error, code } => {
                self.report_writer_outcome(&ports, false);
                self.insts[id].start_error_code = code;
                self.finish_run(id, State::CouldNotStart { error });
                return;
            }
            // An engine client ends when the local reader of the remote writer's
            // stdout is gone (ssh exits 255): judged like a local SIGPIPE.
            Outcome::Lost(m)
                if !super::queues::output_queues(&self.plan.stages[self.insts[id].info.stage])
                    .is_empty() =>
            {
                (ProcessEnd::Signaled(libc::SIGPIPE), Some(m))
            }
            Outcome::Lost(reason) => {
                self.report_writer_outcome(&ports, false);
                self.finish_run(
                    id,
                    State::Failed {
                        end: None,
                        reason: Some(reason),
                    },
                );
                return;
            }
        };
        if end == ProcessEnd::Signaled(libc::SIGPIPE) && why.is_none() {
            // Judged once the readers' exits are known (`judge`).
            self.report_writer_outcome(&ports, false);
            let until = self.clock.now() + SIGPIPE_GRACE;
            self.insts[id].life = Life::Judging {
                end,
                why,
                until,
                lost,
            };
            self.timers.at(until, id);
            return;
        }
        let state = self.classify(id, end, why);
        self.report_writer_outcome(&ports, matches!(state, State::Succeeded(_)));
        self.finish_run(id, state);
    }

    /// A SIGPIPE death is judged as soon as its readers are known to be gone.
    pub(super) fn judge(&mut self, id: InstanceId, force: bool) {
        let Life::Judging {
            end, why, ref lost, ..
        } = self.insts[id].life
        else {
            return;
        };
        let closed = self.downstream_closed(id);
        if force || closed {
            let state = match lost.clone() {
                // Not a closed reader after all: the connection was lost.
                Some(reason) if !closed => State::Failed {
                    end: None,
                    reason: Some(reason),
                },
                _ => self.classify(id, end, why),
            };
            self.finish_run(id, state);
        }
    }

    /// The end state of a run prun asked to stop, when how it ended is not known.
    fn stopped_state(
        &self,
        id: InstanceId,
        why: Option<StopWhy>,
        end: Option<ProcessEnd>,
    ) -> State {
        match why {
            Some(StopWhy::TimedOut) => State::TimedOut { end },
            Some(StopWhy::NotReady) => State::Failed {
                end,
                reason: Some(self.not_ready_reason(id)),
            },
            _ => State::Stopped { end },
        }
    }

    fn not_ready_reason(&self, id: InstanceId) -> String {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let t = stage
            .ready
            .as_ref()
            .and_then(|r| r.timeout)
            .unwrap_or_default();
        format!("not ready within {}", humantime::format_duration(t))
    }

    /// The end state of a run that ended with `end`.
    fn classify(&self, id: InstanceId, end: ProcessEnd, why: Option<StopWhy>) -> State {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        match why {
            Some(StopWhy::TimedOut) => return State::TimedOut { end: Some(end) },
            Some(StopWhy::NotReady) => {
                return State::Failed {
                    end: Some(end),
                    reason: Some(self.not_ready_reason(id)),
                };
            }
            Some(StopWhy::Shutdown) => return State::Stopped { end: Some(end) },
            None => {}
        }
        match end {
            ProcessEnd::Exited(c) if stage.success_codes.contains(&c) => {
                State::Succeeded(Success::Exited(c))
            }
            ProcessEnd::Exited(_) => State::Failed {
                end: Some(end),
                reason: None,
            },
            ProcessEnd::Signaled(libc::SIGPIPE) if self.downstream_closed(id) => {
                State::Succeeded(Success::DownstreamClosed)
            }
            ProcessEnd::Signaled(s) => State::Killed { signal: s },
        }
    }

    /// Every reader of every queue this instance writes has ended, or it writes to
    /// prun's own stdout or stderr (`inherit`) and nobody reads that any more
    /// (`prun p.yaml | head -1`), as in a shell.
    fn downstream_closed(&self, id: InstanceId) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        if (stage.stdout == Output::Inherit && reader_gone(std::io::stdout().as_fd()))
            || (stage.stderr == Output::Inherit && reader_gone(std::io::stderr().as_fd()))
        {
            return true;
        }
        let outs = super::queues::output_queues(stage);
        !outs.is_empty()
            && outs
                .iter()
                .all(|&q| self.queues[q].aborted || self.readers_done(q))
    }

    /// An instance's process (or its attempt to start) is over: restart or end.
    pub(super) fn finish_run(&mut self, id: InstanceId, state: State) {
        // Its host slot (if it had one) is free again, before anything else starts.
        self.unplace(id);
        let now = self.clock.now();
        let stage_id = self.insts[id].info.stage;
        let restart_spec = self.plan.stages[stage_id].restart.clone();
        let on_failure = self.plan.stages[stage_id].on_failure;
        let failure = failure_code(&state, self.insts[id].start_error_code);
        // A foreach item of a stage with `halt`: its stage decides (`halt`).
        let halt_holds = self.halt_holds_failure(id);
        self.fire_sets(id, |t| match t {
            Trigger::Exited => {
                !matches!(state, State::Skipped { .. } | State::CouldNotStart { .. })
            }
            Trigger::Succeeded => matches!(state, State::Succeeded(_)),
            Trigger::Failed => failure.is_some(),
            _ => false,
        });
        let asked = self.insts[id].asked.take();
        let restart = self.shutdown.is_none()
            && !matches!(state, State::Skipped { .. } | State::CouldNotStart { .. })
            && asked != Some(Asked::Stop)
            && (asked == Some(Asked::Restart)
                || (match restart_spec.policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::OnFailure => failure.is_some(),
                    RestartPolicy::Always => true,
                } && restart_spec.max.is_none_or(|m| self.insts[id].restarts < m)));
        self.release_permits(id);
        if !restart {
            self.withdraw_expected(id);
            self.end(id, state);
        } else {
            let attempt = self.insts[id].restarts + 1;
            let delay = if asked == Some(Asked::Restart) {
                Duration::ZERO
            } else {
                restart_spec.delay(attempt)
            };
            self.show(id, state.clone());
            let until = now + delay;
            let inst = &mut self.insts[id];
            inst.last_end = Some(state);
            inst.restarts = attempt;
            inst.life = Life::Waiting {
                permit: Permit::None,
                backoff: Some(until),
            };
            self.timers.at(until, id);
            self.emit(Event::Restarting { id, attempt, delay });
            self.show(id, State::Waiting);
            return;
        }
        if let Some(code) = failure.filter(|_| !halt_holds) {
            if on_failure != OnFailure::Ignore && self.first_failure.is_none() {
                self.first_failure = Some(code);
            }
            if on_failure == OnFailure::Stop && self.shutdown.is_none() {
                self.begin_shutdown(crate::event::ShutdownCause::Failure);
            }
        }
    }

    /// The readers of `expected_by` will not come back (or have, as new readers).
    pub(super) fn withdraw_expected(&mut self, id: InstanceId) {
        for (q, port) in std::mem::take(&mut self.insts[id].expected_by) {
            if let Some(r) = &self.routers[q] {
                r.reader_not_coming(port);
            }
        }
    }

    /// The guardian died: replace it before anything else starts (see `orphans`).
    fn on_guardian_exit(&mut self, pid: i32) {
        if self.guardian.as_ref().is_some_and(|g| g.pid() == pid) {
            self.guardian = None;
            self.replace_guardian();
        }
    }

    pub(super) fn warn(&self, message: String) {
        self.notice(Level::Warning, message);
    }
}

/// Pipeline exit code an end state contributes, if it is a failure.
pub(super) fn failure_code(state: &State, start_error_code: i32) -> Option<i32> {
    match state {
        // Not ready: how the process ended after prun stopped it says nothing; the
        // code says what happened without reading as a signal (`crate::exit`).
        State::Failed {
            reason: Some(_), ..
        } => Some(crate::exit::READY_FAILED),
        State::Failed {
            end: Some(ProcessEnd::Exited(c)),
            ..
        } => Some(*c),
        State::Failed {
            end: Some(ProcessEnd::Signaled(s)),
            ..
        } => Some(128 + s),
        State::Failed { end: None, .. } => Some(1),
        State::Killed { signal } => Some(128 + signal),
        State::TimedOut { .. } => Some(crate::exit::TIMED_OUT),
        State::CouldNotStart { .. } => Some(start_error_code),
        _ => None,
    }
}

/// The read end of this pipe (or socket) is closed: writing would raise SIGPIPE. A
/// zero-timeout poll, so it never blocks.
fn reader_gone(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}
