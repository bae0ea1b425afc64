//! What happens when one of an instance's deadlines passes: the end of a restart
//! backoff, a SIGPIPE judgement, the SIGKILL after a stop grace, a `timeout`, a
//! readiness deadline, the end of a shutdown drain grace, a readiness delay or poll.
//!
//! The loop calls [`Supervisor::instance_due`] only for instances the timer heap says
//! are due; the deadlines themselves live in the instance's [`Life`].

use std::time::Instant;

use super::Supervisor;
use super::instance::{Life, Probe, Readiness, Stop, StopWhy};
use crate::event::InstanceId;

impl Supervisor {
    pub(super) fn instance_due(&mut self, id: InstanceId, now: Instant) {
        if self.remote_exit_due(id, now) {
            return;
        }
        enum Act {
            Nothing,
            Judge,
            Kill,
            Stop(StopWhy),
            Ready,
            Poll,
        }
        let inst = &mut self.insts[id];
        let act = match &mut inst.life {
            Life::Waiting { backoff, .. } => {
                if backoff.is_some_and(|t| t <= now) {
                    *backoff = None;
                }
                Act::Nothing
            }
            Life::Judging { until, .. } if *until <= now => Act::Judge,
            Life::Running(run) => {
                let mut act = Act::Nothing;
                if let Stop::Asked { kill_at, .. } = &mut run.stop
                    && kill_at.is_some_and(|t| t <= now)
                {
                    *kill_at = None;
                    act = Act::Kill;
                } else if run.timeout_at.is_some_and(|t| t <= now) {
                    run.timeout_at = None;
                    act = Act::Stop(StopWhy::TimedOut);
                } else if let Readiness::Probing { deadline, probe } = &mut run.readiness {
                    if deadline.is_some_and(|t| t <= now) {
                        *deadline = None;
                        act = Act::Stop(StopWhy::NotReady);
                    } else {
                        match probe {
                            Probe::Delay { at } if *at <= now => act = Act::Ready,
                            Probe::Poll {
                                next,
                                running: None,
                            } if next.is_some_and(|t| t <= now) => {
                                *next = None;
                                act = Act::Poll;
                            }
                            _ => {}
                        }
                    }
                }
                if matches!(act, Act::Nothing)
                    && let Stop::Draining { until } = run.stop
                    && until <= now
                {
                    act = Act::Stop(StopWhy::Shutdown);
                }
                act
            }
            _ => Act::Nothing,
        };
        match act {
            Act::Nothing => {}
            Act::Judge => self.judge(id, true),
            Act::Kill => self.signal_instance(id, libc::SIGKILL),
            Act::Stop(why) => self.begin_stop(id, why),
            Act::Ready => self.mark_ready(id),
            Act::Poll => self.run_probe(id, now),
        }
        // More than one deadline may be due at once (a kill and a timeout): look again
        // until nothing changes.
        if !matches!(act, Act::Nothing) && self.insts[id].pid().is_some() {
            self.arm(id);
        }
    }

    /// Push every deadline of instance `id` onto the timer heap (after its state
    /// changed; stale entries are harmless).
    pub(super) fn arm(&mut self, id: InstanceId) {
        let mut times: Vec<Instant> = Vec::new();
        match &self.insts[id].life {
            Life::Waiting {
                backoff: Some(t), ..
            } => times.push(*t),
            Life::Judging { until, .. } => times.push(*until),
            Life::Running(run) => {
                times.extend(run.timeout_at);
                if let Stop::Asked {
                    kill_at: Some(t), ..
                } = run.stop
                {
                    times.push(t);
                }
                if let Stop::Draining { until } = run.stop {
                    times.push(until);
                }
                if let Readiness::Probing { deadline, probe } = &run.readiness {
                    times.extend(*deadline);
                    match probe {
                        Probe::Delay { at } => times.push(*at),
                        Probe::Poll {
                            next: Some(t),
                            running: None,
                        } => times.push(*t),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        for t in times {
            self.timers.at(t, id);
        }
    }

    /// SIGPIPE deaths waiting for their readers: judge those whose readers ended.
    pub(super) fn judge_pending(&mut self) {
        let judging: Vec<InstanceId> = self
            .live
            .iter()
            .copied()
            .filter(|&id| matches!(self.insts[id].life, Life::Judging { .. }))
            .collect();
        for id in judging {
            self.judge(id, false);
        }
    }

    /// Send `sig` to the instance's whole process group, wherever it runs (on another
    /// host: by a command over its engine, spawned here and reaped like any child).
    pub(super) fn signal_instance(&mut self, id: InstanceId, sig: i32) {
        let Some(run) = self.insts[id].run() else {
            return;
        };
        let client = run.launched.pid;
        match self.places.signal(run.place, &run.launched, sig) {
            Some(spec) => self.spawn_remote_signal(id, client, sig, spec),
            None => {
                if sig != libc::SIGCONT
                    && let Some(r) = self.insts[id]
                        .run_mut()
                        .and_then(|r| r.launched.remote.as_mut())
                {
                    r.stopped_early = true;
                }
            }
        }
    }
}
