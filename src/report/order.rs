//! Ordering of prun's own lines against the stages' output (SPEC 7): an instance's
//! remaining output always comes before prun's notice of its end.
//!
//! The supervisor's events and the log lines travel on two channels, so the end of an
//! instance can arrive before its last lines. Each run of an instance with a log pipe
//! ends its log with `LogClosed`; the reporter counts runs started (`Running`) and logs
//! closed, and holds prun's lines about an instance whose log is still open. They are
//! released when the log closes, or after a short grace while no line is waiting (a
//! background child that keeps the pipe open must not hide the notice for long).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::{InstanceId, Level};

/// How long a notice waits for a log that does not close while nothing else arrives.
pub const GRACE: Duration = Duration::from_millis(300);

/// A line held back until the instance's log closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Notice(Level, String),
    /// `--quiet`: the instance's last lines, shown with its failure.
    Tail(InstanceId),
}

#[derive(Debug)]
struct Deferred {
    /// Logs closed needed before release (runs started when it ended).
    need: u32,
    since: Instant,
    items: Vec<Held>,
}

#[derive(Debug, Default)]
pub struct Order {
    /// Instance → (runs started with a log pipe, logs closed), while they differ.
    open: HashMap<InstanceId, (u32, u32)>,
    deferred: HashMap<InstanceId, Deferred>,
}

impl Order {
    /// A run of an instance whose stage logs started.
    pub fn started(&mut self, id: InstanceId) {
        self.open.entry(id).or_default().0 += 1;
        self.tidy(id);
    }

    /// An instance's log closed: the lines to show now, if it released some.
    pub fn closed(&mut self, id: InstanceId) -> Vec<Held> {
        let entry = self.open.entry(id).or_default();
        entry.1 += 1;
        let closed = entry.1;
        let released = match self.deferred.get(&id) {
            Some(d) if closed >= d.need => self.deferred.remove(&id).map(|d| d.items),
            _ => None,
        };
        self.tidy(id);
        released.unwrap_or_default()
    }

    /// An instance reached an end state: hold its lines while its log is open.
    pub fn ended(&mut self, id: InstanceId, now: Instant) {
        let (started, closed) = self.open.get(&id).copied().unwrap_or_default();
        if started > closed {
            let d = self.deferred.entry(id).or_insert(Deferred {
                need: started,
                since: now,
                items: Vec::new(),
            });
            d.need = started;
        }
    }

    /// Hold `item` if the instance's lines are held; otherwise give it back.
    pub fn hold(&mut self, id: InstanceId, item: Held) -> Option<Held> {
        match self.deferred.get_mut(&id) {
            Some(d) => {
                d.items.push(item);
                None
            }
            None => Some(item),
        }
    }

    /// Lines whose grace ran out (call only while no log line is waiting).
    pub fn expired(&mut self, now: Instant) -> Vec<Held> {
        let mut ids: Vec<(Instant, InstanceId)> = self
            .deferred
            .iter()
            .filter(|(_, d)| now.saturating_duration_since(d.since) >= GRACE)
            .map(|(id, d)| (d.since, *id))
            .collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|(_, id)| self.deferred.remove(&id))
            .flat_map(|d| d.items)
            .collect()
    }

    /// When the next grace runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.deferred.values().map(|d| d.since + GRACE).min()
    }

    /// Everything still held, oldest first (at the end of the run).
    pub fn take_all(&mut self) -> Vec<Held> {
        let mut all: Vec<(Instant, InstanceId, Deferred)> = self
            .deferred
            .drain()
            .map(|(id, d)| (d.since, id, d))
            .collect();
        all.sort_by_key(|(since, id, _)| (*since, *id));
        all.into_iter().flat_map(|(_, _, d)| d.items).collect()
    }

    fn tidy(&mut self, id: InstanceId) {
        if let Some((s, c)) = self.open.get(&id)
            && s == c
            && !self.deferred.contains_key(&id)
        {
            self.open.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(s: &str) -> Held {
        Held::Notice(Level::Info, s.into())
    }

    #[test]
    fn end_waits_for_the_log_to_close() {
        let mut o = Order::default();
        let t = Instant::now();
        o.started(1);
        o.ended(1, t);
        assert_eq!(o.hold(1, note("a failed")), None);
        assert_eq!(o.hold(2, note("b")), Some(note("b")));
        assert_eq!(o.closed(1), vec![note("a failed")]);
        assert_eq!(o.hold(1, note("later")), Some(note("later")));
        assert!(o.open.is_empty() && o.deferred.is_empty());
    }

    #[test]
    fn a_log_closed_before_its_start_was_seen_holds_nothing() {
        let mut o = Order::default();
        o.closed(3);
        o.started(3);
        o.ended(3, Instant::now());
        assert_eq!(o.hold(3, note("x")), Some(note("x")));
    }

    #[test]
    fn restarts_count_runs_and_grace_releases() {
        let mut o = Order::default();
        let t = Instant::now();
        o.started(1);
        o.started(1);
        o.closed(1);
        o.ended(1, t);
        assert_eq!(o.hold(1, note("end")), None);
        assert!(o.expired(t + GRACE / 2).is_empty());
        assert_eq!(o.next_expiry(), Some(t + GRACE));
        assert_eq!(o.expired(t + GRACE), vec![note("end")]);
    }
}
