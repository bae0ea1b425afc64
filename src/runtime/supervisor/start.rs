//! When an instance starts (SPEC 3.2): every `after` condition met, every `waits:`
//! event set, and a permit of each of its semaphores (requested all at once, FIFO, only
//! once the rest holds, so a waiting instance never sits on permits). An instance
//! whose dependency can no longer meet its condition is `skipped`.
//!
//! A stage `on:` hosts also needs a free slot on one of them (SPEC 3.5), checked before
//! its permits are asked for and taken with them, so an instance never sits on permits
//! while it waits for a host (see `remote`).
//!
//! Also here: `sets:` triggers and giving permits back, the other half of the
//! semaphore and event bookkeeping.

use super::Supervisor;
use super::instance::{Life, Permit};
use crate::event::{InstanceId, State};
use crate::plan::{Condition, OnFailure, Trigger};

/// Whether a waiting instance may start.
pub(super) enum Check {
    Go,
    Wait,
    Skip(String),
}

/// Whether one dependency meets one `after` condition.
pub(super) enum Cond {
    Met,
    Pending,
    Never,
}

impl Supervisor {
    /// Start every waiting instance whose conditions hold; skip those that never can.
    pub(super) fn schedule(&mut self) {
        if self.shutdown.is_some() || self.clock.is_paused() {
            return;
        }
        // Readers before writers (reverse drain order): a queue's readers are attached to
        // its router before the first record arrives, so a fair split starts at once
        // instead of handing everything to the one reader that happened to be first.
        let plan = &self.plan;
        let rank: Vec<usize> = (0..plan.stages.len())
            .map(|stage| {
                plan.stop_order
                    .iter()
                    .position(|step| step.contains(&stage))
                    .unwrap_or(0)
            })
            .collect();
        loop {
            let mut changed = self.feed_batches();
            if self.shutdown.is_some() {
                return;
            }
            // Only instances that wait are ordered (a big foreach has many ended ones).
            let mut order: Vec<InstanceId> = self
                .live
                .iter()
                .copied()
                .filter(|&id| self.insts[id].startable())
                .collect();
            order.sort_by_key(|&id| std::cmp::Reverse(rank[self.insts[id].info.stage]));
            for id in order {
                if !self.insts[id].startable() {
                    continue;
                }
                match self.start_check(id) {
                    Check::Wait => {}
                    Check::Skip(reason) => {
                        self.release_permits(id);
                        self.end(id, State::Skipped { reason });
                        changed = true;
                    }
                    Check::Go => {
                        self.start_instance(id);
                        changed = true;
                    }
                }
                if self.shutdown.is_some() {
                    return;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// SPEC 3.2: after conditions, then events, then permits.
    fn start_check(&mut self, id: InstanceId) -> Check {
        let stage_id = self.insts[id].info.stage;
        match self.after_check(stage_id) {
            Check::Go => {}
            other => return other,
        }
        let stage = &self.plan.stages[stage_id];
        if !stage.waits.iter().all(|&e| self.coord.is_set(e)) {
            // An event was cleared while it waited for permits: do not sit on them.
            if self.insts[id].permit() != Permit::None {
                self.release_permits(id);
            }
            return Check::Wait;
        }
        let Some(host) = self.host_check(id) else {
            return Check::Wait;
        };
        let stage = &self.plan.stages[stage_id];
        if !stage.semaphores.is_empty() {
            match self.insts[id].permit() {
                Permit::Held => {}
                Permit::Requested => return Check::Wait,
                Permit::None => {
                    let sems = stage.semaphores.clone();
                    if self.coord.request(id as u64, &sems) {
                        self.insts[id].set_permit(Permit::Held);
                    } else {
                        self.insts[id].set_permit(Permit::Requested);
                        return Check::Wait;
                    }
                }
            }
        }
        if let Some(h) = host {
            self.place_instance(id, h);
        }
        Check::Go
    }

    /// The `after` conditions of a stage (SPEC 3.2), for all instances of each
    /// dependency (a foreach dependency's folded items through its counters); a
    /// foreach dependency whose items are not all created is pending. A foreach
    /// dependency that halted on its `success` threshold meets every condition once
    /// its items are over.
    pub(super) fn after_check(&self, stage_id: usize) -> Check {
        let stage = &self.plan.stages[stage_id];
        for &(dep, cond) in &stage.after {
            // A stage with `halt` is judged as a whole, once its items are over.
            if self.batch_judged_whole(dep) && (self.batch_open(dep) || self.batch_running(dep)) {
                return Check::Wait;
            }
            let halted_ok = self.batch_halted_success(dep);
            if let Some(why) = self.batch_unmet(dep, cond) {
                return Check::Skip(why.to_string());
            }
            for &d in &self.by_stage[dep] {
                match self.condition(d, cond) {
                    Cond::Met => {}
                    Cond::Pending => return Check::Wait,
                    Cond::Never if halted_ok => {}
                    Cond::Never => return Check::Skip(self.unmet_reason(d)),
                }
            }
            if self.batch_open(dep) {
                return Check::Wait;
            }
        }
        Check::Go
    }

    /// Why an ended instance does not meet a condition: `build.3 failed (exit 2)`.
    pub(super) fn unmet_reason(&self, d: InstanceId) -> String {
        let what = match &self.insts[d].shown {
            State::Skipped { .. } => "was skipped".to_string(),
            State::CouldNotStart { .. } => "could not start".to_string(),
            s @ (State::Failed { .. }
            | State::Killed { .. }
            | State::TimedOut { .. }
            | State::Stopped { .. }
            | State::Succeeded(_)) => s.describe(),
            _ => "did not meet its condition".to_string(),
        };
        format!("{} {what}", self.insts[d].info.name)
    }

    pub(super) fn condition(&self, d: InstanceId, cond: Condition) -> Cond {
        let inst = &self.insts[d];
        let Life::Ended(state) = &inst.life else {
            let met = match cond {
                Condition::Started => inst.ever_started,
                Condition::Ready => inst.ever_ready,
                _ => false,
            };
            return if met { Cond::Met } else { Cond::Pending };
        };
        let on_failure = self.plan.stages[inst.info.stage].on_failure;
        let success = matches!(state, State::Succeeded(_))
            || inst.info.resumed
            || (on_failure == OnFailure::Ignore
                && super::reap::failure_code(state, inst.start_error_code).is_some());
        let skipped = matches!(state, State::Skipped { .. }) && !inst.info.resumed;
        let met = match cond {
            Condition::Started => inst.ever_started,
            Condition::Ready => inst.ever_ready || success,
            Condition::Succeeded => success,
            Condition::Completed => !skipped,
        };
        if met { Cond::Met } else { Cond::Never }
    }

    /// The instance's process ended (or it will never start): give back every
    /// permit it holds, `semaphore:` and `prun ctl` alike, and withdraw its waits.
    /// Decision: permits are released at every end, also before a restart (a crashed
    /// holder never keeps a lock through its backoff); a restart asks again.
    pub(super) fn release_permits(&mut self, id: InstanceId) {
        self.insts[id].set_permit(Permit::None);
        let out = self.broker.on_instance_end(&mut self.coord, id as u64);
        self.apply_outcome(out);
    }

    /// `sets:` trigger fired: set the event and answer ctl waiters.
    pub(super) fn coord_set_event(&mut self, event: usize) {
        if self.coord.set_event(event) {
            let out = self.broker.pump(&mut self.coord);
            self.apply_outcome(out);
        }
    }

    pub(super) fn fire_sets(&mut self, id: InstanceId, which: impl Fn(&Trigger) -> bool) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let events: Vec<usize> = stage
            .sets
            .iter()
            .filter(|(_, t)| which(t))
            .map(|(e, _)| *e)
            .collect();
        for e in events {
            self.coord_set_event(e);
        }
    }
}
