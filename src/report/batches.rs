//! foreach stages in the report, counted (SPEC 3.4 and 7): the report lists every item
//! that did not succeed in `instances` and *summarizes* the succeeded ones here, so its
//! size (and the reporter's memory) does not grow with the number of items that
//! succeeded. Every item, succeeded or not, is in the journal (`journal.rs`).
//!
//! An item is counted when it ended for good ([`Event::InstanceFinal`]); items of the
//! source that never got an instance (the pipeline stopped, `halt` fired) are counted as
//! `not_started`.
//!
//! [`Event::InstanceFinal`]: crate::event::Event::InstanceFinal

use schemars::JsonSchema;
use serde::Serialize;

use super::end_state::EndState;
use crate::event::BatchEnd;

/// One foreach stage's items, counted. Succeeded (and resumed) items are counted here
/// only; every other item is also listed in `instances`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ForeachReport {
    /// The stage.
    pub stage: String,
    /// Items of its source in all (null when not known: a queue, or a source that was
    /// not read to its end).
    pub items: Option<u64>,
    /// Items that succeeded (counted here, not listed in `instances`).
    pub succeeded: u64,
    /// Items that failed (each listed in `instances`).
    pub failed: u64,
    /// Items killed by a signal prun did not send (each listed).
    pub killed: u64,
    /// Items that ran past their `timeout` (each listed).
    pub timed_out: u64,
    /// Items stopped by prun: the pipeline stopped, or `halt` with `when: now` (each
    /// listed).
    pub stopped: u64,
    /// Instances skipped (the pipeline stopped or `halt` fired after they were made;
    /// records taken from a queue); each listed.
    pub skipped: u64,
    /// Items that could not start (each listed).
    pub could_not_start: u64,
    /// Not run: they succeeded in the `--resume` report.
    pub resumed: u64,
    /// Items of the source that never got an instance because the pipeline stopped or
    /// `halt` fired first (null when their number is not known).
    pub not_started: Option<u64>,
    /// Why the stage stopped starting items early: `halt: …` or `pipeline stopped`
    /// (null when every item of its source got an instance).
    pub stopped_early: Option<String>,
    /// The sum of the succeeded items' durations.
    pub succeeded_ms: u64,
    /// Restarts of the succeeded items.
    pub succeeded_restarts: u64,
}

impl ForeachReport {
    fn new(stage: &str) -> ForeachReport {
        ForeachReport {
            stage: stage.to_string(),
            items: None,
            succeeded: 0,
            failed: 0,
            killed: 0,
            timed_out: 0,
            stopped: 0,
            skipped: 0,
            could_not_start: 0,
            resumed: 0,
            not_started: None,
            stopped_early: None,
            succeeded_ms: 0,
            succeeded_restarts: 0,
        }
    }
}

/// The foreach stages of a run, by stage id.
#[derive(Debug, Clone, Default)]
pub struct Batches {
    stages: Vec<Option<ForeachReport>>,
}

impl Batches {
    fn slot(&mut self, stage: usize, name: &str) -> &mut ForeachReport {
        if self.stages.len() <= stage {
            self.stages.resize(stage + 1, None);
        }
        self.stages[stage].get_or_insert_with(|| ForeachReport::new(name))
    }

    pub fn started(&mut self, stage: usize, name: &str, total: Option<u64>) {
        let s = self.slot(stage, name);
        if total.is_some() {
            s.items = total;
        }
    }

    pub fn total(&mut self, stage: usize, total: u64) {
        if let Some(Some(s)) = self.stages.get_mut(stage) {
            s.items = Some(total);
        }
    }

    pub fn closed(&mut self, stage: usize, not_started: Option<u64>, why: &BatchEnd) {
        let Some(Some(s)) = self.stages.get_mut(stage) else {
            return;
        };
        s.not_started = match (why, not_started) {
            (BatchEnd::Exhausted, _) => Some(0),
            (_, n) => n,
        };
        s.stopped_early = match why {
            BatchEnd::Exhausted => None,
            BatchEnd::Stopped => Some("pipeline stopped".into()),
            BatchEnd::Halted(reason) => Some(format!("halted: {reason}")),
            BatchEnd::SourceFailed(e) => Some(format!("source failed: {e}")),
        };
    }

    /// An item ended for good: count it. True when it is counted only (succeeded or
    /// resumed), not listed.
    pub fn count(
        &mut self,
        stage: usize,
        name: &str,
        state: EndState,
        resumed: bool,
        duration_ms: Option<u64>,
        restarts: u32,
    ) -> bool {
        let s = self.slot(stage, name);
        if resumed {
            s.resumed += 1;
            return true;
        }
        match state {
            EndState::Succeeded => {
                s.succeeded += 1;
                s.succeeded_ms += duration_ms.unwrap_or(0);
                s.succeeded_restarts += u64::from(restarts);
                return true;
            }
            EndState::Failed => s.failed += 1,
            EndState::Killed => s.killed += 1,
            EndState::TimedOut => s.timed_out += 1,
            EndState::Stopped => s.stopped += 1,
            EndState::Skipped => s.skipped += 1,
            EndState::CouldNotStart => s.could_not_start += 1,
        }
        false
    }

    /// The stages, in file order.
    pub fn report(&self) -> Vec<ForeachReport> {
        self.stages.iter().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_closes() {
        let mut b = Batches::default();
        b.started(2, "job", Some(10));
        assert!(b.count(2, "job", EndState::Succeeded, false, Some(5), 1));
        assert!(b.count(2, "job", EndState::Succeeded, false, Some(7), 0));
        assert!(!b.count(2, "job", EndState::Failed, false, Some(1), 0));
        assert!(b.count(2, "job", EndState::Skipped, true, None, 0));
        b.closed(2, Some(6), &BatchEnd::Halted("1 of 10 items failed".into()));
        let r = b.report();
        assert_eq!(r.len(), 1);
        let j = &r[0];
        assert_eq!((j.succeeded, j.failed, j.resumed), (2, 1, 1));
        assert_eq!((j.succeeded_ms, j.succeeded_restarts), (12, 1));
        assert_eq!(j.not_started, Some(6));
        assert_eq!(j.items, Some(10));
        assert_eq!(
            j.stopped_early.as_deref(),
            Some("halted: 1 of 10 items failed")
        );
    }
}
