//! The foreach items an earlier run finished (`--resume REPORT`, SPEC 3.4), by identity.
//!
//! An item is identified by its stage, its position in the source (the report's
//! `index`, 0-based) and its value (the report's `item`): repeated values are distinct
//! items (`[1, 2, 3, 0]` then `[1, 2, 3, 0, 0, 0]` runs the two new `0`s), and an item
//! whose value at a position changed (a file added before it in a glob, a line edited)
//! runs again. The report reader ([`crate::report::read_resume`]) fills a [`Resume`]; the
//! supervisor asks it about each item as the item is created.
//!
//! Memory: per stage, a sorted vector of `(position, fingerprint of the value)`, 16
//! bytes per item (a million succeeded items hold 16 MB, not the values themselves).
//! The fingerprint is a 64-bit hash made in this process both when the report is read
//! and when an item is looked up, so it never needs to be stable across builds; two
//! different values at one position of one stage collide with odds of 2^-64.
//!
//! A leaf: it uses nothing of prun, so the reporter (which reads reports) and the
//! runtime (which skips items) share it without depending on each other.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// The `(stage, position, value)` identities of foreach items that succeeded earlier.
#[derive(Debug, Default, Clone)]
pub struct Resume {
    /// Stage name → `(position, fingerprint)` pairs; sorted and deduplicated once
    /// [`Resume::seal`] ran.
    stages: HashMap<String, Vec<(u64, u64)>>,
    sealed: bool,
}

fn fingerprint(value: &str) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

impl Resume {
    pub fn new() -> Resume {
        Resume::default()
    }

    /// Item `value` at `position` of `stage` succeeded (or was itself resumed).
    pub fn insert(&mut self, stage: &str, position: u64, value: &str) {
        let entry = (position, fingerprint(value));
        match self.stages.get_mut(stage) {
            Some(v) => v.push(entry),
            None => {
                self.stages.insert(stage.to_string(), vec![entry]);
            }
        }
        self.sealed = false;
    }

    /// Everything of `other` too (a report and its kept journal).
    pub fn extend(&mut self, other: Resume) {
        for (stage, mut v) in other.stages {
            self.stages.entry(stage).or_default().append(&mut v);
        }
        self.sealed = false;
    }

    /// Sort for lookups, drop duplicates (an item both in a report and its journal)
    /// and the spare capacity. Lookups before this are a bug.
    pub fn seal(&mut self) {
        for v in self.stages.values_mut() {
            v.sort_unstable();
            v.dedup();
            v.shrink_to_fit();
        }
        self.sealed = true;
    }

    /// Did item `value` at `position` of `stage` succeed earlier?
    pub fn contains(&self, stage: &str, position: u64, value: &str) -> bool {
        debug_assert!(self.sealed || self.stages.is_empty(), "Resume::seal first");
        let Some(v) = self.stages.get(stage) else {
            return false;
        };
        v.binary_search(&(position, fingerprint(value))).is_ok()
    }

    /// Items known, over all stages.
    pub fn len(&self) -> usize {
        self.stages.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.stages.values().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stage_position_and_value() {
        let mut r = Resume::new();
        for (i, v) in ["1", "2", "3", "0"].iter().enumerate() {
            r.insert("job", i as u64, v);
        }
        r.insert("job", 0, "1"); // again, from a kept journal
        r.seal();
        assert_eq!(r.len(), 4);
        assert!(r.contains("job", 3, "0"));
        // The same value at a new position is a new item.
        assert!(!r.contains("job", 4, "0"));
        assert!(!r.contains("job", 5, "0"));
        // A changed value at a known position runs again.
        assert!(!r.contains("job", 1, "20"));
        // Another stage with the same items is another identity.
        assert!(!r.contains("other", 0, "1"));
        let mut more = Resume::new();
        more.insert("other", 0, "1");
        r.extend(more);
        r.seal();
        assert!(r.contains("other", 0, "1") && r.contains("job", 0, "1"));
        assert!(Resume::new().is_empty() && !r.is_empty());
    }
}
