//! Stopping (SPEC 5.1, 5.2): the shutdown in drain order, and stopping one instance.
//!
//! A shutdown walks [`Plan::stop_order`](crate::plan::Plan): each step starts once
//! every earlier step has ended. In a step, an instance that reads no queue is asked to
//! stop at once; a reader whose inputs are closed gets EOF and (interrupt or failure)
//! `stop.timeout` to finish on its own (`Stop::Draining`), or (normal end: daemons) its
//! stop at once; a reader whose input does not drain in time has its routed queues cut
//! (it still gets EOF before the signal). Asking to stop = `stop.cmd` if set, else
//! `stop.signal` to the whole group, then SIGKILL after `stop.timeout`. A second
//! signal to prun kills every group at once.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use super::instance::{Life, Stop, StopWhy};
use super::queues::{CUT_GRACE, input_queues};
use super::{Owner, Supervisor};
use crate::event::{Event, InstanceId, Level, ShutdownCause, State};
use crate::runtime::spawn::SpawnSpec;

/// Period of the "still waiting for …" notices during a shutdown.
const NOTICE_PERIOD: Duration = Duration::from_secs(2);

pub(super) struct Shutdown {
    pub cause: ShutdownCause,
    pub step: usize,
    pub step_since: Instant,
    pub next_notice: Instant,
    pub signals: u32,
}

impl Supervisor {
    pub(super) fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGTSTP => return self.suspend(),
            libc::SIGCONT => return self.resume(),
            _ => {}
        }
        match &mut self.shutdown {
            Some(s) if s.signals > 0 => {
                s.signals += 1;
                self.notice(
                    Level::Warning,
                    "second signal: killing every process group".into(),
                );
                self.kill_all();
            }
            Some(s) => {
                s.signals = 1;
                s.cause = ShutdownCause::Signal(sig);
                self.emit(Event::ShutdownStarted {
                    cause: ShutdownCause::Signal(sig),
                });
            }
            None => self.begin_shutdown(ShutdownCause::Signal(sig)),
        }
    }

    pub(super) fn begin_shutdown(&mut self, cause: ShutdownCause) {
        let now = self.clock.now();
        let signals = u32::from(matches!(cause, ShutdownCause::Signal(_)));
        self.shutdown = Some(Shutdown {
            cause,
            step: 0,
            step_since: now,
            next_notice: now + Duration::from_secs(1),
            signals,
        });
        self.emit(Event::ShutdownStarted { cause });
        let waiting: Vec<InstanceId> = self
            .live
            .iter()
            .copied()
            .filter(|&id| {
                matches!(
                    self.insts[id].life,
                    Life::Waiting { .. } | Life::Starting { .. }
                )
            })
            .collect();
        for id in waiting {
            self.cancel_unstarted(id, "pipeline stopped");
        }
        self.close_batches("pipeline stopped");
    }

    /// An instance that has not started (waiting, starting, or waiting to restart) will
    /// not: its permits and pending opens are released; a cancelled restart keeps its
    /// last run's end, anything else is skipped for `reason`.
    pub(super) fn cancel_unstarted(&mut self, id: InstanceId, reason: &str) {
        self.release_permits(id);
        let inst = &self.insts[id];
        if let Life::Starting { opens, .. } = &inst.life {
            crate::runtime::opener::cancel_opens(opens);
        }
        if matches!(
            inst.life,
            Life::Waiting {
                backoff: Some(_),
                ..
            }
        ) {
            self.withdraw_expected(id);
            // The restart is cancelled: the last run's end state is final.
            let last = self.insts[id]
                .last_end
                .clone()
                .unwrap_or(State::Stopped { end: None });
            self.end(id, last);
        } else {
            self.end(
                id,
                State::Skipped {
                    reason: reason.into(),
                },
            );
        }
    }

    /// Walk `Plan::stop_order`: each step starts once every earlier step has ended.
    pub(super) fn advance_shutdown(&mut self) {
        let Some(sh) = &self.shutdown else { return };
        let cause = sh.cause;
        let now = self.clock.now();
        self.still_waiting_notice(now);
        loop {
            let Some(sh) = &self.shutdown else { return };
            let (step, since) = (sh.step, sh.step_since);
            let stages: Vec<usize> = match self.plan.stop_order.get(step) {
                Some(s) => s.clone(),
                // Stages missing from the stop order (should not happen) go last.
                None => (0..self.plan.stages.len()).collect(),
            };
            let mut all_final = true;
            for &st in &stages {
                for id in self.by_stage[st].clone() {
                    let inst = &self.insts[id];
                    if inst.is_final() {
                        continue;
                    }
                    all_final = false;
                    let Some(run) = inst.run() else { continue };
                    if run.stop != Stop::No {
                        continue;
                    }
                    let stage = &self.plan.stages[st];
                    let reads = !input_queues(stage).is_empty();
                    if !reads {
                        self.begin_stop(id, StopWhy::Shutdown);
                    } else if self.inputs_closed(id) {
                        if cause == ShutdownCause::Finished {
                            self.begin_stop(id, StopWhy::Shutdown);
                        } else {
                            // It gets EOF and may finish its work (SPEC 5.2).
                            let until = now + stage.stop.timeout;
                            if let Some(run) = self.insts[id].run_mut() {
                                run.stop = Stop::Draining { until };
                            }
                            self.timers.at(until, id);
                        }
                    } else if now.saturating_duration_since(since) >= stage.stop.timeout {
                        // Its input did not drain in time (a backlog bigger than the
                        // readers get through in `stop.timeout`), or never closed (a
                        // writer's stray child holds the pipe, or a data cycle): stop it
                        // anyway, after closing its routed queues, so it still gets EOF
                        // before the signal (what they held is counted as discarded).
                        if !self.cut_inputs(id, now) {
                            self.begin_stop(id, StopWhy::Shutdown);
                        }
                    }
                }
            }
            if !all_final || step >= self.plan.stop_order.len() {
                return;
            }
            if let Some(sh) = self.shutdown.as_mut() {
                sh.step += 1;
                sh.step_since = now;
            }
        }
    }

    /// Every couple of seconds of a shutdown: which instances prun still waits for.
    fn still_waiting_notice(&mut self, now: Instant) {
        let Some(s) = &mut self.shutdown else { return };
        if s.next_notice > now {
            return;
        }
        s.next_notice = now + NOTICE_PERIOD;
        let names: Vec<String> = self
            .live
            .iter()
            .map(|&id| self.insts[id].info.name.clone())
            .collect();
        if !names.is_empty() {
            self.emit(Event::StillWaiting { names });
        }
    }

    /// The shutdown's next deadlines: its notice, and the end of the current step's
    /// grace (once passed, it has done its job: no busy loop).
    pub(super) fn next_shutdown_deadline(&self) -> Option<Instant> {
        let s = self.shutdown.as_ref()?;
        let mut next = s.next_notice;
        if let Some(step) = self.plan.stop_order.get(s.step) {
            let grace = step
                .iter()
                .map(|&st| self.plan.stages[st].stop.timeout)
                .max()
                .unwrap_or_default();
            let step_end = s.step_since + grace;
            if step_end > self.clock.now() {
                next = next.min(step_end);
            }
        }
        Some(next)
    }

    /// End the routed queues instance `id` reads that have not drained (see
    /// [`QueueRouter::cut`](crate::runtime::router::QueueRouter::cut)): it gets EOF
    /// (and the sentinel) once the records already on their way are written, and the
    /// stop signal comes after that, or after [`CUT_GRACE`] if it does not read them.
    /// Returns true while that is pending.
    fn cut_inputs(&mut self, id: InstanceId, now: Instant) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let mut waiting = false;
        for q in input_queues(stage) {
            let qr = &mut self.queues[q];
            let Some(router) = &self.routers[q] else {
                continue;
            };
            if qr.drained || qr.aborted {
                continue;
            }
            match qr.cut_at {
                None => {
                    qr.cut_at = Some(now);
                    router.cut();
                    waiting = true;
                }
                Some(t) => waiting |= now.saturating_duration_since(t) < CUT_GRACE,
            }
        }
        waiting
    }

    /// Ask instance `id` to stop (`why` decides its end state): `stop.cmd` if set, else
    /// `stop.signal` to the group; SIGKILL after `stop.timeout`. Asking again changes
    /// nothing (the first reason stands: a timed-out instance stays `timed out`).
    pub(super) fn begin_stop(&mut self, id: InstanceId, why: StopWhy) {
        let now = self.clock.now();
        let stop = self.plan.stages[self.insts[id].info.stage].stop.clone();
        let kill_at = now + stop.timeout;
        let Some(run) = self.insts[id].run_mut() else {
            return;
        };
        if matches!(run.stop, Stop::Asked { .. }) {
            return;
        }
        run.stop = Stop::Asked {
            why,
            kill_at: Some(kill_at),
        };
        let pid = run.launched.pid;
        self.timers.at(kill_at, id);
        let mut signalled = false;
        if let Some(cmd) = &stop.cmd {
            let vars = self.vars(id);
            let argv: Vec<OsString> = cmd.iter().map(|t| t.render(&vars).into()).collect();
            let mut spec = SpawnSpec::new(argv);
            spec.env = self.instance_env(id);
            spec.env
                .push(("PRUN_PID".into(), self.group_id(id, pid).to_string().into()));
            spec.cwd = self.instance_cwd(id);
            match self.launch_aux(id, spec, "stop") {
                Ok(pid) => {
                    self.owners.insert(pid, Owner::StopCmd(id));
                    self.insts[id].pgids.push(pid);
                    signalled = true;
                }
                Err(e) => self.warn(format!(
                    "{}: stop command could not start ({e}); sending the stop signal",
                    self.insts[id].info.name
                )),
            }
        }
        if !signalled {
            self.signal_instance(id, stop.signal);
            // A stopped process would never see the signal.
            self.signal_instance(id, libc::SIGCONT);
        }
    }

    /// Second signal: SIGKILL every group now.
    pub(super) fn kill_all(&mut self) {
        let running: Vec<InstanceId> = self.live.iter().copied().collect();
        for id in running {
            if let Some(run) = self.insts[id].run_mut() {
                if matches!(run.stop, Stop::No | Stop::Draining { .. }) {
                    run.stop = Stop::Asked {
                        why: StopWhy::Shutdown,
                        kill_at: None,
                    };
                }
                self.signal_instance(id, libc::SIGKILL);
            }
        }
        for (&pid, owner) in &self.owners {
            if matches!(owner, Owner::Probe(..) | Owner::StopCmd(_)) {
                crate::runtime::place::signal_group(pid, libc::SIGKILL);
            }
        }
        for q in 0..self.routers.len() {
            if let Some(r) = &self.routers[q]
                && !self.queues[q].aborted
            {
                self.queues[q].aborted = true;
                r.abort();
            }
        }
    }
}
