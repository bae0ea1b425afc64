//! Deadlock detection: which waiting instances can never proceed, and why (who waits
//! for what, who holds what). Part of [`Coord`]: it reads the semaphores' holders and
//! queue, never changes them.

use std::collections::BTreeSet;

use super::{Coord, HolderId};
use std::fmt::Write as _;

use crate::plan::EventId;

/// What a non-ended instance waits for, besides the permits Coord already knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// An event that must be set (`waits:` before start, or `prun ctl event wait`).
    Event(EventId),
    /// Another instance must make progress first (an `after:` condition).
    Instance(HolderId),
}

/// One non-ended instance, as the supervisor sees it, for [`Coord::find_deadlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub holder: HolderId,
    /// Instance name used in the message (`eater.1`).
    pub name: String,
    /// Running and not known to be blocked: it may still act (end, release its
    /// permits, set any event through `prun ctl`). Instances waiting to start, and
    /// running instances all of whose processes are parked in `prun ctl` waits
    /// without a timeout, are not active.
    pub active: bool,
    /// Events and instances it waits for. Its waiting permit requests are taken from
    /// the Coord queue, do not list them.
    pub waits: Vec<Wait>,
}

/// Instances that can never proceed, with a human explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadlock {
    /// Stuck holders, in the order they were given.
    pub stuck: Vec<HolderId>,
    pub message: String,
}

impl Coord {
    /// Which of `parties` can never proceed? `None` when every one can (or may).
    ///
    /// Progress is a fixpoint: active parties progress; a waiting party progresses
    /// when each of its waits can be met by parties that progress: an event is set or
    /// someone progressing may still set it (any running instance can, through
    /// `prun ctl`); an instance it waits for progresses; each permit it waits for is
    /// free or held by someone progressing, beyond what stuck requests ahead of it
    /// reserve. Holders Coord knows but `parties` omits count as progressing, so an
    /// incomplete list can only hide a deadlock, never invent one.
    pub fn find_deadlock(&self, parties: &[Party]) -> Option<Deadlock> {
        let listed: BTreeSet<HolderId> = parties.iter().map(|p| p.holder).collect();
        let mut progress: BTreeSet<HolderId> = parties
            .iter()
            .filter(|p| p.active)
            .map(|p| p.holder)
            .collect();
        for h in self.held.keys().chain(self.queue.iter().map(|p| &p.holder)) {
            if !listed.contains(h) {
                progress.insert(*h);
            }
        }
        loop {
            let mut changed = false;
            for p in parties {
                if !progress.contains(&p.holder) && self.can_progress(p, &progress, &listed) {
                    progress.insert(p.holder);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let stuck: Vec<&Party> = parties
            .iter()
            .filter(|p| !progress.contains(&p.holder))
            .collect();
        if stuck.is_empty() {
            return None;
        }
        let name_of = |h: HolderId| {
            parties
                .iter()
                .find(|p| p.holder == h)
                .map_or_else(|| format!("instance #{h}"), |p| p.name.clone())
        };
        let mut msg = format!(
            "deadlock: {} instance{} can never proceed",
            stuck.len(),
            if stuck.len() == 1 { "" } else { "s" }
        );
        for p in &stuck {
            let mut waits: Vec<String> = Vec::new();
            for w in &p.waits {
                match *w {
                    Wait::Event(e) if !self.is_set(e) => waits.push(format!(
                        "event `{}` (clear, and nothing still running or able to start can set it)",
                        self.event_name(e).unwrap_or("?")
                    )),
                    Wait::Event(_) => {}
                    Wait::Instance(h) => waits.push(format!("instance `{}`", name_of(h))),
                }
            }
            for req in self.queue.iter().filter(|q| q.holder == p.holder) {
                for &(s, n) in &req.needs {
                    let holders: Vec<String> = self
                        .held
                        .iter()
                        .filter_map(|(h, m)| m.get(&s).map(|k| format!("{} ×{k}", name_of(*h))))
                        .collect();
                    let count = self.sem_count(s);
                    let plural = if n == 1 { "" } else { "s" };
                    let mut line = format!(
                        "{n} permit{plural} of semaphore `{}` (count {count}, {} free",
                        self.sem_name(s).unwrap_or("?"),
                        self.available(s)
                    );
                    if !holders.is_empty() {
                        let _ = write!(line, "; held by {}", holders.join(", "));
                    }
                    line.push(')');
                    waits.push(line);
                }
            }
            let holds: Vec<String> = self
                .held_by(p.holder)
                .into_iter()
                .map(|(s, n)| format!("`{}` ×{n}", self.sem_name(s).unwrap_or("?")))
                .collect();
            let _ = write!(
                msg,
                "\n  {} waits for {}",
                p.name,
                if waits.is_empty() {
                    "nothing known".to_string()
                } else {
                    waits.join(" and ")
                }
            );
            if !holds.is_empty() {
                let _ = write!(msg, "; holds {}", holds.join(", "));
            }
        }
        Some(Deadlock {
            stuck: stuck.iter().map(|p| p.holder).collect(),
            message: msg,
        })
    }

    /// The deadlock message, or an empty string when nothing is stuck.
    pub fn explain_deadlock(&self, parties: &[Party]) -> String {
        self.find_deadlock(parties)
            .map(|d| d.message)
            .unwrap_or_default()
    }

    fn can_progress(
        &self,
        p: &Party,
        progress: &BTreeSet<HolderId>,
        listed: &BTreeSet<HolderId>,
    ) -> bool {
        let waits_ok = p.waits.iter().all(|w| match *w {
            // `p` is not in `progress`, so anyone in it is someone else.
            Wait::Event(e) => self.is_set(e) || !progress.is_empty(),
            Wait::Instance(h) => progress.contains(&h) || !listed.contains(&h),
        });
        if !waits_ok {
            return false;
        }
        for (pos, req) in self.queue.iter().enumerate() {
            if req.holder != p.holder {
                continue;
            }
            for &(s, n) in &req.needs {
                let releasable: u32 = self
                    .held
                    .iter()
                    .filter(|(h, _)| **h != p.holder && progress.contains(h))
                    .filter_map(|(_, m)| m.get(&s))
                    .sum();
                let reserved_by_stuck: u32 = self
                    .queue
                    .iter()
                    .take(pos)
                    .filter(|q| !progress.contains(&q.holder))
                    .flat_map(|q| q.needs.iter())
                    .filter(|(qs, _)| *qs == s)
                    .map(|(_, k)| *k)
                    .sum();
                let free = self.available(s) + releasable;
                if free.saturating_sub(reserved_by_stuck) < n {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::{Acquire, Ticket, tally};
    use crate::plan::{EventPlan, SemId, SemaphorePlan};
    use proptest::prelude::*;

    fn coord(counts: &[u32], events: &[bool]) -> Coord {
        let sems: Vec<SemaphorePlan> = counts
            .iter()
            .enumerate()
            .map(|(i, &count)| SemaphorePlan {
                name: format!("s{i}"),
                count,
            })
            .collect();
        let evs: Vec<EventPlan> = events
            .iter()
            .enumerate()
            .map(|(i, &initially_set)| EventPlan {
                name: format!("e{i}"),
                initially_set,
            })
            .collect();
        Coord::new(&sems, &evs)
    }

    fn party(holder: HolderId, name: &str, active: bool, waits: Vec<Wait>) -> Party {
        Party {
            holder,
            name: name.into(),
            active,
            waits,
        }
    }

    #[test]
    fn no_deadlock_while_someone_can_act() {
        let mut c = coord(&[1], &[false]);
        assert!(c.request(1, &[0]));
        assert!(!c.request(2, &[0]));
        let parties = [
            party(1, "a", true, vec![]),
            party(2, "b", false, vec![]),
            party(3, "c", false, vec![Wait::Event(0)]),
        ];
        assert_eq!(c.find_deadlock(&parties), None);
        assert_eq!(c.explain_deadlock(&parties), "");
    }

    #[test]
    fn event_nobody_can_set_is_a_deadlock() {
        let c = coord(&[], &[false]);
        let parties = [party(1, "late", false, vec![Wait::Event(0)])];
        let d = c.find_deadlock(&parties).expect("deadlock");
        assert_eq!(d.stuck, vec![1]);
        assert!(
            d.message.contains("late waits for event `e0`"),
            "{}",
            d.message
        );
    }

    #[test]
    fn crossed_ctl_locks_are_a_deadlock_even_while_others_run() {
        // a holds s0 and waits (ctl) for s1; b holds s1 and waits for s0; c runs.
        let mut c = coord(&[1, 1], &[]);
        assert!(c.request(1, &[0]));
        assert!(c.request(2, &[1]));
        assert!(matches!(c.request_ctl(1, 1), Acquire::Waiting(_)));
        assert!(matches!(c.request_ctl(2, 0), Acquire::Waiting(_)));
        let parties = [
            party(1, "a", false, vec![]),
            party(2, "b", false, vec![]),
            party(3, "c", true, vec![]),
        ];
        let d = c.find_deadlock(&parties).expect("deadlock");
        assert_eq!(d.stuck, vec![1, 2]);
        assert!(
            d.message.contains("a waits for 1 permit of semaphore `s1`"),
            "{}",
            d.message
        );
        assert!(d.message.contains("held by b ×1"), "{}", d.message);
        assert!(d.message.contains("holds `s0` ×1"), "{}", d.message);
    }

    #[test]
    fn waiting_behind_a_stuck_instance_is_stuck() {
        let c = coord(&[], &[false]);
        let parties = [
            party(1, "setter", false, vec![Wait::Event(0)]),
            party(2, "after-setter", false, vec![Wait::Instance(1)]),
        ];
        let d = c.find_deadlock(&parties).expect("deadlock");
        assert_eq!(d.stuck, vec![1, 2]);
        assert!(
            d.message
                .contains("after-setter waits for instance `setter`")
        );
    }

    #[test]
    fn unlisted_holders_count_as_progressing() {
        let mut c = coord(&[1], &[]);
        assert!(c.request(7, &[0]));
        assert!(!c.request(2, &[0]));
        assert_eq!(c.find_deadlock(&[party(2, "b", false, vec![])]), None);
    }

    // ---- property tests ----------------------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        Request(HolderId, Vec<SemId>),
        Ctl(HolderId, SemId),
        Release(HolderId, SemId),
        ReleaseAll(HolderId),
        Cancel(HolderId),
    }

    fn op(nsems: usize) -> impl Strategy<Value = Op> {
        let h = 0u64..6;
        let s = 0..nsems;
        prop_oneof![
            3 => (h.clone(), prop::collection::vec(s.clone(), 1..4)).prop_map(|(h, v)| Op::Request(h, v)),
            2 => (h.clone(), s.clone()).prop_map(|(h, s)| Op::Ctl(h, s)),
            2 => (h.clone(), s).prop_map(|(h, s)| Op::Release(h, s)),
            2 => h.clone().prop_map(Op::ReleaseAll),
            1 => h.prop_map(Op::Cancel),
        ]
    }

    /// Checked after every operation: permits are conserved and never exceed counts,
    /// and the queue is settled (its walk grants nothing more).
    fn check_invariants(c: &Coord) {
        for (s, sem) in c.sems.iter().enumerate() {
            let held: u32 = c.held.values().filter_map(|m| m.get(&s)).sum();
            assert_eq!(
                held + sem.available,
                sem.count,
                "semaphore {s} leaks permits"
            );
            assert!(held <= sem.count);
        }
        let mut settled = c.clone();
        assert!(settled.grant_waiting().is_empty());
        assert!(settled.ctl_outbox.len() == c.ctl_outbox.len());
    }

    /// A waiting request as seen from outside: (ticket, holder, needs).
    type Snapshot = (Ticket, HolderId, Vec<(SemId, u32)>);

    proptest! {
        #[test]
        fn concurrency_never_exceeds_counts_and_later_requests_only_take_surplus(
            counts in prop::collection::vec(1u32..4, 1..4),
            ops in prop::collection::vec(op(3), 1..60),
        ) {
            let nsems = counts.len();
            let mut c = coord(&counts, &[]);
            for o in ops {
                // Queue snapshot: (ticket, holder, needs) in arrival order.
                let before: Vec<Snapshot> =
                    c.queue.iter().map(|p| (p.ticket, p.holder, p.needs.clone())).collect();
                // Requests of this holder may leave the queue by withdrawal, not grant.
                let withdrawn = match o {
                    Op::ReleaseAll(h) | Op::Cancel(h) => Some(h),
                    _ => None,
                };
                match o {
                    Op::Request(h, v) => {
                        let v: Vec<SemId> = v.into_iter().map(|s| s % nsems).collect();
                        let total: u32 = tally(&v).iter().map(|&(_, n)| n).sum();
                        // Never ask for more than exists (it would wait forever, by design).
                        if tally(&v).iter().all(|&(s, n)| n <= counts[s]) && total > 0 {
                            c.request(h, &v);
                        }
                    }
                    Op::Ctl(h, s) => { c.request_ctl(h, s % nsems); }
                    Op::Release(h, s) => { let _ = c.release(h, s % nsems); }
                    Op::ReleaseAll(h) => { c.release_all(h); }
                    Op::Cancel(h) => { c.cancel(h); }
                }
                check_invariants(&c);
                // Requests granted by this operation were in the old queue and are gone.
                let still: BTreeSet<Ticket> = c.queue.iter().map(|p| p.ticket).collect();
                let granted: Vec<usize> = before
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, h, _))| !still.contains(t) && Some(*h) != withdrawn)
                    .map(|(i, _)| i)
                    .collect();
                for &gi in &granted {
                    for &(s, _) in &before[gi].2 {
                        // Every earlier request still waiting keeps what it needs of s free.
                        let owed: u32 = before[..gi]
                            .iter()
                            .filter(|(t, _, _)| still.contains(t))
                            .flat_map(|(_, _, needs)| needs.iter())
                            .filter(|(qs, _)| *qs == s)
                            .map(|(_, n)| *n)
                            .sum();
                        prop_assert!(
                            c.available(s) >= owed || owed == 0,
                            "a later request took permits of {} owed to earlier waiters", s
                        );
                    }
                }
                c.take_ctl_grants();
            }
            // Liveness: once every holder releases, everyone waiting is served.
            let mut rounds = 0;
            while !c.queue.is_empty() {
                let holders: Vec<HolderId> = c.held.keys().copied().collect();
                prop_assert!(!holders.is_empty(), "waiters but no holders: starvation");
                for h in holders {
                    // Release held permits but keep the holder's own queued requests.
                    let mine = c.held.remove(&h).unwrap_or_default();
                    for (s, n) in mine { c.sems[s].available += n; }
                }
                c.grant_waiting();
                rounds += 1;
                prop_assert!(rounds < 100);
            }
        }

        #[test]
        fn single_semaphore_grants_in_arrival_order(
            count in 1u32..4,
            needs in prop::collection::vec(1u32..4, 1..20),
            release_order in prop::collection::vec(0usize..20, 0..40),
        ) {
            let mut c = coord(&[count], &[]);
            let mut order: Vec<HolderId> = Vec::new();
            for (h, &n) in needs.iter().enumerate() {
                let n = n.min(count);
                if c.request(h as HolderId, &vec![0; n as usize]) {
                    order.push(h as HolderId);
                }
            }
            let mut ri = release_order.into_iter();
            loop {
                let holders: Vec<HolderId> = c.held.keys().copied().collect();
                if holders.is_empty() { break; }
                let pick = ri.next().unwrap_or(0) % holders.len();
                order.extend(c.release_all(holders[pick]));
                check_invariants(&c);
            }
            let expected: Vec<HolderId> = (0..needs.len() as HolderId).collect();
            prop_assert_eq!(order, expected);
        }
    }
}
