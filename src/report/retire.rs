//! When the reporter may forget a foreach item (SPEC 3.4: memory does not grow with
//! the number of items): once it ended for good ([`Event::InstanceFinal`]) *and* every
//! run's log closed, since its last lines (and `--log-dir` writes, and a notice held
//! until its log closes) come on the log channel, which may lag behind the events.
//!
//! [`Event::InstanceFinal`]: crate::event::Event::InstanceFinal

use std::collections::HashMap;

use crate::event::InstanceId;

#[derive(Debug, Default)]
struct Runs {
    /// Pipes each run has (each ends with a `LogClosed`), the closes expected from the
    /// runs started so far, and those seen.
    pipes: u32,
    expected: u32,
    closed: u32,
    ended: bool,
}

/// The foreach items not forgotten yet.
#[derive(Debug, Default)]
pub struct Retire {
    items: HashMap<InstanceId, Runs>,
}

impl Retire {
    /// A foreach item was made; each of its runs has `pipes` pipes prun reads.
    pub fn added(&mut self, id: InstanceId, pipes: u32) {
        self.items.entry(id).or_default().pipes = pipes;
    }

    /// One of its runs started.
    pub fn started(&mut self, id: InstanceId) {
        if let Some(r) = self.items.get_mut(&id) {
            r.expected += r.pipes;
        }
    }

    /// One of its logs closed (may come before the events about the run): true when
    /// it may be forgotten now.
    pub fn closed(&mut self, id: InstanceId) -> bool {
        // A log closed before the item's announcement was read: counted all the same.
        self.items.entry(id).or_default().closed += 1;
        self.ready(id)
    }

    /// It ended for good: true when it may be forgotten now.
    pub fn ended(&mut self, id: InstanceId) -> bool {
        match self.items.get_mut(&id) {
            Some(r) => {
                r.ended = true;
                self.ready(id)
            }
            None => false,
        }
    }

    fn ready(&mut self, id: InstanceId) -> bool {
        let ready = self
            .items
            .get(&id)
            .is_some_and(|r| r.ended && r.closed >= r.expected);
        if ready {
            self.items.remove(&id);
        }
        ready
    }

    /// Items held (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_after_the_end_and_the_last_log() {
        let mut r = Retire::default();
        r.added(1, 1);
        r.started(1);
        assert!(!r.ended(1), "its log is still open");
        assert!(r.closed(1));
        assert_eq!(r.len(), 0);
        // The log closed before the start was read.
        assert!(!r.closed(2));
        r.added(2, 1);
        r.started(2);
        assert!(r.ended(2));
        // No log pipe: at its end.
        r.added(3, 0);
        r.started(3);
        assert!(r.ended(3));
        // Two pipes (a log, a passed through stdout): both must close.
        r.added(5, 2);
        r.started(5);
        assert!(!r.closed(5));
        assert!(!r.ended(5));
        assert!(r.closed(5));
        // Two runs (a restart): both logs must close.
        r.added(4, 1);
        r.started(4);
        r.started(4);
        assert!(!r.closed(4));
        assert!(!r.ended(4));
        assert!(r.closed(4));
        assert_eq!(r.len(), 0);
        assert!(!r.ended(99), "not an item");
    }
}
