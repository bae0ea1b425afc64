//! Time for the supervisor: one heap of deadlines, and a clock that stops while the
//! pipeline is suspended (Ctrl-Z).
//!
//! Every deadline of an instance (a restart backoff, a timeout, a kill after the stop
//! grace, a readiness deadline or probe poll, a drain grace) is stored in its
//! [`Life`](super::instance::Life) *and* pushed here, so the loop sleeps exactly until
//! the earliest one and, when it fires, looks only at the instance concerned, never at
//! every instance. The few pipeline-wide deadlines (the shutdown step, the queue tick,
//! a deadlock confirmation, ctl wait expiries) are read directly by the loop.
//!
//! Entries are never removed early: when a deadline changes, the stale entry stays
//! and, when it fires, the check it triggers finds nothing due (an instance's checks
//! compare against the deadlines in its state). The heap is compacted when stale
//! entries of ended instances outnumber the live ones.
//!
//! [`Clock::now`] is the time prun's timers count in: real time minus the time the
//! pipeline spent suspended, so a `timeout: 10s` stage stopped with Ctrl-Z for a minute
//! is not timed out on `fg`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::event::InstanceId;

/// The supervisor's clock: monotonic time that does not advance while suspended.
#[derive(Debug)]
pub(super) struct Clock {
    /// Time spent suspended so far.
    paused: Duration,
    /// Since when it is suspended (None while running).
    since: Option<Instant>,
}

impl Clock {
    pub(super) fn new() -> Clock {
        Clock {
            paused: Duration::ZERO,
            since: None,
        }
    }

    /// Now, in timer time.
    pub(super) fn now(&self) -> Instant {
        let real = self.since.unwrap_or_else(Instant::now);
        real.checked_sub(self.paused).unwrap_or(real)
    }

    /// The pipeline is suspended: timer time stands still.
    pub(super) fn pause(&mut self) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    /// The pipeline resumed: the time suspended is not counted.
    pub(super) fn resume(&mut self) {
        if let Some(t) = self.since.take() {
            self.paused += t.elapsed();
        }
    }

    pub(super) fn is_paused(&self) -> bool {
        self.since.is_some()
    }
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, InstanceId)>>,
}

impl Timers {
    /// Look at instance `id` at `when`.
    pub(super) fn at(&mut self, when: Instant, id: InstanceId) {
        self.heap.push(Reverse((when, id)));
    }

    /// The earliest deadline, if any.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Take every instance due at `now` (each once).
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<InstanceId> {
        let mut due = Vec::new();
        while let Some(Reverse((t, d))) = self.heap.peek() {
            if *t > now {
                break;
            }
            let d = *d;
            self.heap.pop();
            if !due.contains(&d) {
                due.push(d);
            }
        }
        due
    }

    /// Drop the entries of instances `ended` says are over, when they are most of the
    /// heap (stale deadlines of a large foreach).
    pub(super) fn compact(&mut self, live: usize, ended: impl Fn(InstanceId) -> bool) {
        if self.heap.len() <= 1024 + 2 * live {
            return;
        }
        let kept: Vec<_> = std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .filter(|Reverse((_, id))| !ended(*id))
            .collect();
        self.heap = BinaryHeap::from(kept);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_time_order_once() {
        let mut t = Timers::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        t.at(t0 + ms(30), 2);
        t.at(t0 + ms(10), 1);
        t.at(t0 + ms(20), 1);
        t.at(t0 + ms(50), 3);
        assert_eq!(t.next(), Some(t0 + ms(10)));
        assert_eq!(t.take_due(t0 + ms(25)), vec![1]);
        assert_eq!(t.next(), Some(t0 + ms(30)));
        assert_eq!(t.take_due(t0 + ms(60)), vec![2, 3]);
        assert!(t.next().is_none());
    }

    #[test]
    fn compaction_drops_only_ended_instances() {
        let mut t = Timers::default();
        let t0 = Instant::now();
        for i in 0..3000 {
            t.at(t0, i);
        }
        t.compact(10, |id| id >= 5);
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn the_clock_stands_still_while_paused() {
        let mut c = Clock::new();
        c.pause();
        let a = c.now();
        assert!(c.is_paused());
        // The clock is frozen: any later reading equals the first.
        std::thread::yield_now();
        assert_eq!(c.now(), a);
        c.resume();
        assert!(!c.is_paused());
        assert!(c.now() >= a);
    }
}
