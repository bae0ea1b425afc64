//! The last log lines of every instance, in bounded rings: shown with a failure under
//! `--quiet`, written into the JUnit report, and served to `prun logs`.
//!
//! Memory stays bounded on long runs: each ring keeps [`RING_LINES`] lines of at most
//! [`LINE_BYTES`] bytes, and rings of ended instances are dropped oldest first beyond
//! [`ENDED_KEPT`] (failed ones beyond [`FAILED_KEPT`]), so a foreach of a million items
//! keeps the lines of the running ones and the last ones that ended.

use std::collections::{HashMap, VecDeque};

use crate::event::InstanceId;

/// Lines kept per instance.
pub const RING_LINES: usize = 200;
/// A longer line is kept cut to this many bytes (the terminal and `--log-dir` get it
/// whole).
pub const LINE_BYTES: usize = 4096;
/// Rings of instances that ended without failing, kept after their end.
pub const ENDED_KEPT: usize = 256;
/// Rings of failed instances, kept after their end.
pub const FAILED_KEPT: usize = 1024;

#[derive(Debug, Default)]
pub struct LineStore {
    rings: HashMap<InstanceId, VecDeque<Vec<u8>>>,
    ended: VecDeque<InstanceId>,
    failed: VecDeque<InstanceId>,
    /// Every line ever added (a follower's position).
    pub total: u64,
}

impl LineStore {
    pub fn push(&mut self, id: InstanceId, line: &[u8]) {
        let ring = self.rings.entry(id).or_default();
        if ring.len() == RING_LINES {
            ring.pop_front();
        }
        ring.push_back(line[..line.len().min(LINE_BYTES)].to_vec());
        self.total += 1;
    }

    /// The last `n` lines of an instance, oldest first.
    pub fn tail(&self, id: InstanceId, n: usize) -> Vec<&[u8]> {
        match self.rings.get(&id) {
            Some(r) => r
                .iter()
                .skip(r.len().saturating_sub(n))
                .map(|l| &l[..])
                .collect(),
            None => Vec::new(),
        }
    }

    /// The instance ended (for good): its ring is kept a while, then dropped.
    pub fn ended(&mut self, id: InstanceId, failed: bool) {
        if !self.rings.contains_key(&id) {
            return;
        }
        let (list, cap) = if failed {
            (&mut self.failed, FAILED_KEPT)
        } else {
            (&mut self.ended, ENDED_KEPT)
        };
        list.push_back(id);
        if list.len() > cap
            && let Some(old) = list.pop_front()
        {
            self.rings.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded() {
        let mut s = LineStore::default();
        for i in 0..RING_LINES + 5 {
            s.push(1, format!("line {i}").as_bytes());
        }
        let t = s.tail(1, 2);
        assert_eq!(t, vec![&b"line 203"[..], &b"line 204"[..]]);
        assert_eq!(s.tail(1, 1000).len(), RING_LINES);
        s.push(2, &vec![b'x'; LINE_BYTES * 2]);
        assert_eq!(s.tail(2, 1)[0].len(), LINE_BYTES);
        for id in 10..10 + ENDED_KEPT + 1 {
            s.push(id, b"x");
            s.ended(id, false);
        }
        assert!(s.tail(10, 1).is_empty(), "the oldest ended ring is dropped");
        assert_eq!(s.tail(11, 1).len(), 1);
    }
}
