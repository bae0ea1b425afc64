//! `halt` on a foreach stage (SPEC 3.4, GNU parallel `--halt`): stop starting items
//! (`soon`) or stop the running ones too (`now`) once N, or N % of the items, failed
//! or succeeded.
//!
//! With `halt`, the stage's items do not each act on the pipeline: an item that fails
//! is counted, and the stage decides, as a whole, what the failures mean:
//! - the `fail` threshold is reached: the stage halts and *fails*: the run's exit code
//!   is the first failed item's (as for any failure: its exit code, 128+N, 124), and
//!   `on_failure` applies to the stage: `stop` stops the pipeline — with `soon` once
//!   the stage's running items have finished, with `now` at once;
//! - the `success` threshold is reached: the stage halts and *succeeds*: failures of
//!   its items before that are forgiven (GNU parallel exits 0), items stopped by `now`
//!   are `stopped` (not failures), and dependents see the stage as succeeded;
//! - neither is reached and the source is exhausted: the stage fails if any item
//!   failed (exit code of the first), once its last item ended, and `on_failure`
//!   applies then.
//!
//! Counting: `fail` counts items whose end is a failure (`failed`, `killed`, `timed
//! out`, `could not start`; never with `on_failure: ignore`), after their restarts;
//! `success` counts items that succeeded in this run (not resumed ones). A percentage
//! is of the stage's items in all when their number is known (`items`, `range`,
//! `matrix`, a `lines` file once counted, a glob once walked): N % of T is reached at
//! ceil(N × T / 100) items (at least 1). While the number is not known (a queue, a
//! glob being walked), it is of the items ended so far, once at least ceil(100 / N)
//! have ended (the smallest sample in which one item is N %).
//!
//! When the stage halts: records held from a queue become `skipped` instances, items
//! created but not started (waiting for a semaphore, a restart pending) end `skipped`
//! (or with their last run's end), and the rest of the source is counted as not
//! started.

use super::Supervisor;
use super::instance::{Life, StopWhy};
use crate::event::{BatchEnd, InstanceId, Level, ShutdownCause};
use crate::plan::{Halt, HaltWhen, OnFailure, Threshold};

/// Why a halt fired.
#[derive(Debug, Clone)]
struct Fired {
    success: bool,
    /// `3 items failed (halt: fail 3)`.
    reason: String,
}

/// A stage's `halt`, and whether it fired.
#[derive(Debug, Clone)]
pub(super) struct HaltState {
    spec: Halt,
    /// Reached, not acted on yet (acted on at the next pass, outside `end`).
    pending: Option<Fired>,
    fired: Option<Fired>,
    /// The stage's failure reached the pipeline (its exit code and `on_failure`).
    settled: bool,
}

impl HaltState {
    pub(super) fn new(spec: Halt) -> HaltState {
        HaltState {
            spec,
            pending: None,
            fired: None,
            settled: false,
        }
    }

    /// The stage halted on its `success` threshold.
    pub(super) fn succeeded(&self) -> bool {
        self.fired.as_ref().is_some_and(|f| f.success)
    }
}

/// Whether `count` items out of `ended` (of `total`, when known) reach `t`.
fn reached(t: Threshold, count: u64, ended: u64, total: Option<u64>) -> bool {
    match t {
        Threshold::Count(n) => count >= n.max(1),
        Threshold::Percent(p) => match total {
            Some(total) => count >= ((p * total as f64 / 100.0).ceil() as u64).max(1),
            None => {
                let sample = (100.0 / p).ceil() as u64;
                ended >= sample && count as f64 * 100.0 >= p * ended as f64
            }
        },
    }
}

fn describe(t: Threshold) -> String {
    match t {
        Threshold::Count(n) => n.to_string(),
        Threshold::Percent(p) => format!("{p}%"),
    }
}

impl Supervisor {
    /// An item of stage `st` ended (counted in its tally): has its `halt` been reached?
    pub(super) fn check_halt(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        let total = b.total();
        let t = b.tally.clone();
        let Some(h) = b.halt.as_mut() else { return };
        if h.pending.is_some() || h.fired.is_some() {
            return;
        }
        let ran = t.ended - t.resumed;
        let when = match h.spec.when {
            HaltWhen::Soon => "soon",
            HaltWhen::Now => "now",
        };
        let of = total.map_or_else(|| format!("{ran} ended"), |n| n.to_string());
        let fired = |success: bool, count: u64, th: Threshold| {
            let (word, key) = if success {
                ("succeeded", "success")
            } else {
                ("failed", "fail")
            };
            Fired {
                success,
                reason: format!(
                    "{count} of {of} items {word} (halt: {when}, {key}: {})",
                    describe(th)
                ),
            }
        };
        if let Some(th) = h.spec.fail
            && reached(th, t.failed, ran, total)
        {
            h.pending = Some(fired(false, t.failed, th));
        } else if let Some(th) = h.spec.success
            && reached(th, t.succeeded, ran, total)
        {
            h.pending = Some(fired(true, t.succeeded, th));
        }
    }

    /// True when the failure of instance `id` is the business of its stage's `halt`
    /// (a foreach item of a stage with `halt`), not of `on_failure` item by item.
    pub(super) fn halt_holds_failure(&self, id: InstanceId) -> bool {
        let info = &self.insts[id].info;
        info.item.is_some()
            && self.batches[info.stage]
                .as_ref()
                .is_some_and(|b| b.halt.is_some())
    }

    /// Act on a halt that was reached, and settle a stage's held failure once it is
    /// over. Called at the start of each pass (never from inside `end`).
    pub(super) fn apply_halt(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        let Some(h) = b.halt.as_mut() else { return };
        if let Some(fired) = h.pending.take() {
            let when = h.spec.when;
            h.fired = Some(fired.clone());
            self.fire_halt(st, when, &fired);
        }
        self.settle_halt(st);
    }

    fn fire_halt(&mut self, st: usize, when: HaltWhen, fired: &Fired) {
        let name = self.plan.stages[st].name.clone();
        self.skip_taken(st, "halted");
        self.close_batch(st, BatchEnd::Halted(fired.reason.clone()));
        let live: Vec<InstanceId> = self.batches[st]
            .as_ref()
            .map(|b| b.live_items().to_vec())
            .unwrap_or_default();
        let mut running = 0;
        for id in live {
            let Some(inst) = self.insts.get(id) else {
                continue;
            };
            match &inst.life {
                Life::Running(_) => {
                    running += 1;
                    if when == HaltWhen::Now {
                        self.begin_stop(id, StopWhy::Shutdown);
                    }
                }
                Life::Waiting { .. } | Life::Starting { .. } => {
                    self.cancel_unstarted(id, "halted");
                }
                Life::Judging { .. } | Life::Ended(_) => {}
            }
        }
        let next = match (when, running) {
            (_, 0) => String::new(),
            (HaltWhen::Now, n) => format!("; stopping {n} running"),
            (HaltWhen::Soon, n) => format!("; {n} running finish"),
        };
        let level = if fired.success {
            Level::Info
        } else {
            Level::Error
        };
        self.notice(
            level,
            format!("{name}: halted: {}; no new item starts{next}", fired.reason),
        );
    }

    /// A stage with `halt` whose failure has not reached the pipeline yet: it does
    /// once the halt fired on `fail` (at once with `now`, when its items are over with
    /// `soon`), or when the stage is over with a failed item and no `success` halt.
    fn settle_halt(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        let over = !b.is_open() && b.running() == 0;
        let held = b.held_failure;
        let Some(h) = b.halt.as_mut() else { return };
        if h.settled {
            return;
        }
        let due = match &h.fired {
            // Forgiven: nothing reaches the pipeline.
            Some(f) if f.success => true,
            Some(_) => h.spec.when == HaltWhen::Now || over,
            None => over,
        };
        if !due {
            return;
        }
        h.settled = true;
        if h.succeeded() {
            return;
        }
        let Some(code) = held else { return };
        let on_failure = self.plan.stages[st].on_failure;
        if on_failure == OnFailure::Ignore {
            return;
        }
        if self.first_failure.is_none() {
            self.first_failure = Some(code);
        }
        if on_failure == OnFailure::Stop && self.shutdown.is_none() {
            self.begin_shutdown(ShutdownCause::Failure);
        }
    }

    /// At the end of the run: a held failure not settled yet (the pipeline stopped for
    /// another reason first) still counts, unless a `success` halt forgave it.
    pub(super) fn settle_halts_at_end(&mut self) {
        for st in 0..self.batches.len() {
            let Some(b) = self.batches[st].as_ref() else {
                continue;
            };
            let Some(h) = &b.halt else { continue };
            if h.settled || h.succeeded() {
                continue;
            }
            if let Some(code) = b.held_failure
                && self.plan.stages[st].on_failure != OnFailure::Ignore
                && self.first_failure.is_none()
            {
                self.first_failure = Some(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let c = Threshold::Count;
        let p = Threshold::Percent;
        assert!(!reached(c(3), 2, 10, Some(10)));
        assert!(reached(c(3), 3, 10, Some(10)));
        // 10 % of 20 items is 2.
        assert!(!reached(p(10.0), 1, 5, Some(20)));
        assert!(reached(p(10.0), 2, 5, Some(20)));
        // 50 % of 3 is 1.5: 2 items.
        assert!(!reached(p(50.0), 1, 3, Some(3)));
        assert!(reached(p(50.0), 2, 3, Some(3)));
        // A tiny share of a few items is still one item.
        assert!(reached(p(1.0), 1, 1, Some(5)));
        assert!(!reached(p(1.0), 0, 5, Some(5)));
        // Unknown total: of the items ended so far, once there are enough of them.
        assert!(!reached(p(10.0), 1, 9, None), "fewer than 10 ended");
        assert!(reached(p(10.0), 1, 10, None));
        assert!(!reached(p(10.0), 1, 11, None), "1 of 11 is under 10 %");
        assert!(reached(p(100.0), 1, 1, None));
    }
}
