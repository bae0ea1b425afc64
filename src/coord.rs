//! Semaphores, events and deadlock explanations (SPEC 3.2, 6).
//!
//! Pure data, no threads and no I/O: the supervisor owns one `Coord` and calls it from
//! its loop, both for the `semaphore:`/`waits:`/`sets:` keys and for `prun ctl`
//! requests (through [`crate::ctl::CtlBroker`]).
//!
//! # Semaphores: all at once, FIFO per semaphore
//!
//! A request asks for one permit of each listed semaphore (a semaphore listed twice
//! asks for two). It is granted only when every permit is free at the same time, so
//! a waiting request never holds anything: two instances that start with
//! `semaphore: [a, b]` and `semaphore: [b, a]` cannot deadlock.
//!
//! Waiting requests form one queue in arrival order. Each time permits may have
//! become free, the queue is walked from the head with a scratch copy of the free
//! counts: a request that fits is granted; a request that does not fit *reserves*
//! whatever is still free of the semaphores it needs (up to what it needs), so no
//! later request can take those permits. Consequences:
//! - a later request is granted before an earlier one only if it uses permits the
//!   earlier one does not need (requests for unrelated semaphores do not wait for
//!   each other, and with a single semaphore grants are in strict arrival order);
//! - a big request at the head cannot starve: the permits it needs accumulate as
//!   holders release them and nobody behind it can take them.
//!
//! Permits belong to a holder (one per instance, see [`HolderId`]); a holder may hold
//! permits of several semaphores and several permits of one (through `prun ctl`).
//! `prun ctl sem acquire` requests are tagged: their grants are not returned by the
//! contract methods (which return instances that may now *start*) but kept in an
//! outbox that [`Coord::take_ctl_grants`] drains (the broker answers the client).
//!
//! # Events
//!
//! A flag per event plus a generation counter bumped on every clear→set change, so a
//! waiter that registered at generation g can tell it was set even if it was cleared
//! again before anyone looked (a pulse wakes waiters, as with Python's `Event`).
//!
//! # Deadlocks
//!
//! [`Coord::find_deadlock`] takes what each non-ended instance waits for and computes,
//! as a fixpoint, which instances can still make progress; the rest are stuck, and the
//! message names who waits for what and who holds what.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use crate::plan::{EventId, EventPlan, SemId, SemaphorePlan};

/// Who holds or waits for permits: the supervisor assigns one id per instance
/// (a `prun ctl` request is made on behalf of the instance whose process asked).
pub type HolderId = u64;

/// Identifies one waiting request (several may be waiting for one holder through ctl).
pub type Ticket = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordError {
    /// `release` of a semaphore the holder does not hold.
    NotHeld { semaphore: String },
}

impl std::fmt::Display for CoordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoordError::NotHeld { semaphore } => {
                write!(
                    f,
                    "this instance holds no permit of semaphore `{semaphore}`"
                )
            }
        }
    }
}

impl std::error::Error for CoordError {}

/// A `prun ctl` acquisition granted from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub holder: HolderId,
    pub ticket: Ticket,
    /// The semaphore of the permit (a ctl request asks for exactly one).
    pub sem: SemId,
}

/// Outcome of [`Coord::request_ctl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Granted,
    Waiting(Ticket),
}

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

#[derive(Debug, Clone)]
struct Sem {
    name: String,
    count: u32,
    available: u32,
}

#[derive(Debug, Clone)]
struct Event {
    name: String,
    set: bool,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Pending {
    ticket: Ticket,
    holder: HolderId,
    /// (semaphore, permits), one entry per distinct semaphore.
    needs: Vec<(SemId, u32)>,
    via_ctl: bool,
}

#[derive(Debug, Clone)]
pub struct Coord {
    sems: Vec<Sem>,
    events: Vec<Event>,
    held: BTreeMap<HolderId, BTreeMap<SemId, u32>>,
    queue: VecDeque<Pending>,
    next_ticket: Ticket,
    ctl_outbox: Vec<Grant>,
}

/// Turn a list of semaphores (duplicates allowed) into (semaphore, permits) pairs.
fn tally(sems: &[SemId]) -> Vec<(SemId, u32)> {
    let mut map: BTreeMap<SemId, u32> = BTreeMap::new();
    for &s in sems {
        *map.entry(s).or_insert(0) += 1;
    }
    map.into_iter().collect()
}

impl Coord {
    pub fn new(semaphores: &[SemaphorePlan], events: &[EventPlan]) -> Coord {
        Coord {
            sems: semaphores
                .iter()
                .map(|s| Sem {
                    name: s.name.clone(),
                    count: s.count,
                    available: s.count,
                })
                .collect(),
            events: events
                .iter()
                .map(|e| Event {
                    name: e.name.clone(),
                    set: e.initially_set,
                    generation: 0,
                })
                .collect(),
            held: BTreeMap::new(),
            queue: VecDeque::new(),
            next_ticket: 1,
            ctl_outbox: Vec::new(),
        }
    }

    /// Ask for one permit of each of `sems`, all at once. Requests are served FIFO:
    /// returns true when granted now, else the request waits in line and is
    /// granted by a later `release*` (which returns it).
    pub fn request(&mut self, holder: HolderId, sems: &[SemId]) -> bool {
        if sems.is_empty() {
            return true;
        }
        let ticket = self.enqueue(holder, tally(sems), false);
        // Appending at the tail frees nothing, so only this request can be granted.
        let granted = self.grant_waiting();
        granted.contains(&holder) && !self.queue.iter().any(|p| p.ticket == ticket)
    }

    /// A `prun ctl sem acquire`: one permit of `sem`, in the same FIFO queue as the
    /// start requests. When it waits, its later grant goes to the ctl outbox.
    pub fn request_ctl(&mut self, holder: HolderId, sem: SemId) -> Acquire {
        let ticket = self.enqueue(holder, vec![(sem, 1)], true);
        self.grant_waiting();
        if self.queue.iter().any(|p| p.ticket == ticket) {
            Acquire::Waiting(ticket)
        } else {
            // Granted on the spot: it is not a queued grant, take it out of the outbox.
            self.ctl_outbox.retain(|g| g.ticket != ticket);
            Acquire::Granted
        }
    }

    /// Drain the `prun ctl` requests granted since the last call, in grant order.
    pub fn take_ctl_grants(&mut self) -> Vec<Grant> {
        std::mem::take(&mut self.ctl_outbox)
    }

    /// Withdraw one waiting ctl request (its wait timed out, or its client left).
    /// Returns instances whose start requests are granted as a consequence.
    pub fn cancel_ticket(&mut self, ticket: Ticket) -> Vec<HolderId> {
        let before = self.queue.len();
        self.queue.retain(|p| p.ticket != ticket);
        if self.queue.len() == before {
            return Vec::new();
        }
        self.grant_waiting()
    }

    /// True while `ticket` waits in the queue.
    pub fn is_pending(&self, ticket: Ticket) -> bool {
        self.queue.iter().any(|p| p.ticket == ticket)
    }

    /// Withdraw a waiting request (the instance was skipped or the wait timed out).
    /// Returns requests granted as a consequence (a FIFO head may have moved).
    /// Only start requests are withdrawn; ctl requests go with `cancel_ticket` or
    /// `release_all`.
    pub fn cancel(&mut self, holder: HolderId) -> Vec<HolderId> {
        let before = self.queue.len();
        self.queue.retain(|p| p.holder != holder || p.via_ctl);
        if self.queue.len() == before {
            return Vec::new();
        }
        self.grant_waiting()
    }

    /// Release one permit of `sem` held by `holder` (`prun ctl sem release`).
    /// Returns the waiting holders whose requests are granted now, in FIFO order.
    pub fn release(&mut self, holder: HolderId, sem: SemId) -> Result<Vec<HolderId>, CoordError> {
        let semaphore = self.sem_name(sem).unwrap_or("?").to_string();
        let Some(mine) = self.held.get_mut(&holder) else {
            return Err(CoordError::NotHeld { semaphore });
        };
        let Some(n) = mine.get_mut(&sem) else {
            return Err(CoordError::NotHeld { semaphore });
        };
        *n -= 1;
        if *n == 0 {
            mine.remove(&sem);
        }
        if mine.is_empty() {
            self.held.remove(&holder);
        }
        if let Some(s) = self.sems.get_mut(sem) {
            s.available += 1;
        }
        Ok(self.grant_waiting())
    }

    /// Release everything `holder` holds and withdraw what it waits for (it ended).
    pub fn release_all(&mut self, holder: HolderId) -> Vec<HolderId> {
        self.queue.retain(|p| p.holder != holder);
        if let Some(mine) = self.held.remove(&holder) {
            for (sem, n) in mine {
                if let Some(s) = self.sems.get_mut(sem) {
                    s.available += n;
                }
            }
        }
        self.grant_waiting()
    }

    /// Set an event; returns true when it changed.
    pub fn set_event(&mut self, event: EventId) -> bool {
        match self.events.get_mut(event) {
            Some(e) if !e.set => {
                e.set = true;
                e.generation += 1;
                true
            }
            _ => false,
        }
    }

    pub fn clear_event(&mut self, event: EventId) -> bool {
        match self.events.get_mut(event) {
            Some(e) if e.set => {
                e.set = false;
                true
            }
            _ => false,
        }
    }

    pub fn is_set(&self, event: EventId) -> bool {
        self.events.get(event).is_some_and(|e| e.set)
    }

    /// Number of clear→set changes so far: a waiter that saw generation g is woken
    /// when the generation differs, even if the event was cleared again meanwhile.
    pub fn event_generation(&self, event: EventId) -> u64 {
        self.events.get(event).map_or(0, |e| e.generation)
    }

    /// Permits currently held by `holder`, per semaphore.
    pub fn held_by(&self, holder: HolderId) -> Vec<(SemId, u32)> {
        self.held
            .get(&holder)
            .map(|m| m.iter().map(|(&s, &n)| (s, n)).collect())
            .unwrap_or_default()
    }

    /// Free permits of `sem` (0 for an unknown id).
    pub fn available(&self, sem: SemId) -> u32 {
        self.sems.get(sem).map_or(0, |s| s.available)
    }

    pub fn sem_count(&self, sem: SemId) -> u32 {
        self.sems.get(sem).map_or(0, |s| s.count)
    }

    pub fn sem_name(&self, sem: SemId) -> Option<&str> {
        self.sems.get(sem).map(|s| s.name.as_str())
    }

    pub fn event_name(&self, event: EventId) -> Option<&str> {
        self.events.get(event).map(|e| e.name.as_str())
    }

    pub fn sem_id(&self, name: &str) -> Option<SemId> {
        self.sems.iter().position(|s| s.name == name)
    }

    pub fn event_id(&self, name: &str) -> Option<EventId> {
        self.events.iter().position(|e| e.name == name)
    }

    pub fn sem_names(&self) -> impl Iterator<Item = &str> {
        self.sems.iter().map(|s| s.name.as_str())
    }

    pub fn event_names(&self) -> impl Iterator<Item = &str> {
        self.events.iter().map(|e| e.name.as_str())
    }

    /// Holders with a waiting request (start or ctl), in queue order, with what
    /// each request needs.
    pub fn waiting(&self) -> Vec<(HolderId, Vec<(SemId, u32)>)> {
        self.queue
            .iter()
            .map(|p| (p.holder, p.needs.clone()))
            .collect()
    }

    fn enqueue(&mut self, holder: HolderId, needs: Vec<(SemId, u32)>, via_ctl: bool) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.queue.push_back(Pending {
            ticket,
            holder,
            needs,
            via_ctl,
        });
        ticket
    }

    /// Walk the queue in order, granting what fits and reserving free permits for
    /// requests that do not (module doc). Start grants are returned, ctl grants go
    /// to the outbox.
    fn grant_waiting(&mut self) -> Vec<HolderId> {
        let mut scratch: Vec<u32> = self.sems.iter().map(|s| s.available).collect();
        let mut granted = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let fits = self.queue[i]
                .needs
                .iter()
                .all(|&(s, n)| scratch.get(s).is_some_and(|&free| free >= n));
            if fits {
                let Some(p) = self.queue.remove(i) else { break };
                let mine = self.held.entry(p.holder).or_default();
                for &(s, n) in &p.needs {
                    scratch[s] -= n;
                    self.sems[s].available -= n;
                    *mine.entry(s).or_insert(0) += n;
                }
                if p.via_ctl {
                    let sem = p.needs.first().map_or(0, |&(s, _)| s);
                    self.ctl_outbox.push(Grant {
                        holder: p.holder,
                        ticket: p.ticket,
                        sem,
                    });
                } else {
                    granted.push(p.holder);
                }
            } else {
                for &(s, n) in &self.queue[i].needs {
                    if let Some(free) = scratch.get_mut(s) {
                        *free = free.saturating_sub(n);
                    }
                }
                i += 1;
            }
        }
        granted
    }

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

    #[test]
    fn grants_up_to_count_then_fifo() {
        let mut c = coord(&[2], &[]);
        assert!(c.request(1, &[0]));
        assert!(c.request(2, &[0]));
        assert!(!c.request(3, &[0]));
        assert!(!c.request(4, &[0]));
        assert_eq!(c.available(0), 0);
        assert_eq!(c.release_all(2), vec![3]);
        assert_eq!(c.release(1, 0), Ok(vec![4]));
        assert_eq!(c.held_by(3), vec![(0, 1)]);
        assert!(c.held_by(1).is_empty());
    }

    #[test]
    fn empty_request_is_granted() {
        let mut c = coord(&[1], &[]);
        assert!(c.request(1, &[]));
        assert!(c.held_by(1).is_empty());
    }

    #[test]
    fn all_at_once_prevents_the_two_lock_deadlock() {
        // a:[0,1] holds both; b:[1,0] waits holding nothing; c:[0] waits behind b? no:
        // c needs only s0, which b reserves, so c waits too, then b, then c.
        let mut c = coord(&[1, 1], &[]);
        assert!(c.request(1, &[0, 1]));
        assert!(!c.request(2, &[1, 0]));
        assert!(c.held_by(2).is_empty());
        assert!(!c.request(3, &[0]));
        assert_eq!(c.release_all(1), vec![2]);
        assert_eq!(c.release_all(2), vec![3]);
    }

    #[test]
    fn big_request_at_head_is_not_starved() {
        let mut c = coord(&[3], &[]);
        assert!(c.request(1, &[0]));
        assert!(c.request(2, &[0]));
        // Wants all three permits.
        assert!(!c.request(3, &[0, 0, 0]));
        // One permit is free, but it is reserved for the head.
        assert!(!c.request(4, &[0]));
        assert!(c.release_all(1).is_empty());
        assert_eq!(c.release_all(2), vec![3]);
        assert_eq!(c.held_by(3), vec![(0, 3)]);
        assert_eq!(c.release_all(3), vec![4]);
    }

    #[test]
    fn unrelated_requests_do_not_wait_behind_each_other() {
        let mut c = coord(&[1, 1], &[]);
        assert!(c.request(1, &[0]));
        assert!(!c.request(2, &[0]));
        assert!(c.request(3, &[1]));
    }

    #[test]
    fn cancel_moves_the_head() {
        let mut c = coord(&[2], &[]);
        assert!(c.request(1, &[0]));
        assert!(!c.request(2, &[0, 0]));
        assert!(!c.request(3, &[0]));
        assert_eq!(c.cancel(2), vec![3]);
        assert!(c.cancel(42).is_empty());
    }

    #[test]
    fn release_of_unheld_is_an_error() {
        let mut c = coord(&[1], &[]);
        assert_eq!(
            c.release(1, 0),
            Err(CoordError::NotHeld {
                semaphore: "s0".into()
            })
        );
        assert!(c.request(1, &[0]));
        assert!(c.release(2, 0).is_err());
        assert!(c.release(1, 0).is_ok());
        assert!(c.release(1, 0).is_err());
        assert_eq!(c.available(0), 1);
    }

    #[test]
    fn unknown_ids_never_panic() {
        let mut c = coord(&[1], &[false]);
        assert!(!c.request(1, &[7]));
        assert!(c.release(1, 7).is_err());
        assert!(!c.set_event(9));
        assert!(!c.is_set(9));
        assert!(c.release_all(1).is_empty());
    }

    #[test]
    fn ctl_grants_go_to_the_outbox() {
        let mut c = coord(&[1], &[]);
        assert_eq!(c.request_ctl(1, 0), Acquire::Granted);
        assert!(c.take_ctl_grants().is_empty());
        let Acquire::Waiting(t2) = c.request_ctl(2, 0) else {
            panic!("should wait")
        };
        assert!(!c.request(3, &[0]));
        assert!(c.is_pending(t2));
        // The ctl request is first in line; its grant is not a start grant.
        assert_eq!(c.release(1, 0), Ok(Vec::<HolderId>::new()));
        assert_eq!(
            c.take_ctl_grants(),
            vec![Grant {
                holder: 2,
                ticket: t2,
                sem: 0
            }]
        );
        assert!(!c.is_pending(t2));
        assert_eq!(c.release(2, 0), Ok(vec![3]));
    }

    #[test]
    fn one_holder_may_hold_several_permits_of_one_semaphore() {
        let mut c = coord(&[2], &[]);
        assert!(c.request(1, &[0]));
        assert_eq!(c.request_ctl(1, 0), Acquire::Granted);
        assert_eq!(c.held_by(1), vec![(0, 2)]);
        let Acquire::Waiting(t) = c.request_ctl(1, 0) else {
            panic!("should wait")
        };
        assert!(c.cancel_ticket(t).is_empty());
        assert!(!c.is_pending(t));
        assert!(c.release_all(1).is_empty());
        assert_eq!(c.available(0), 2);
    }

    #[test]
    fn cancel_withdraws_only_start_requests() {
        let mut c = coord(&[1], &[]);
        assert!(c.request(9, &[0]));
        let Acquire::Waiting(t) = c.request_ctl(1, 0) else {
            panic!("should wait")
        };
        assert!(c.cancel(1).is_empty());
        assert!(c.is_pending(t));
        c.release_all(1);
        assert!(!c.is_pending(t));
    }

    #[test]
    fn events_set_clear_and_pulse_generation() {
        let mut c = coord(&[], &[false, true]);
        assert!(!c.is_set(0));
        assert!(c.is_set(1));
        let g = c.event_generation(0);
        assert!(c.set_event(0));
        assert!(!c.set_event(0));
        assert!(c.clear_event(0));
        assert!(!c.clear_event(0));
        assert!(!c.is_set(0));
        assert_ne!(c.event_generation(0), g);
        assert_eq!(c.event_id("e1"), Some(1));
        assert_eq!(c.event_name(0), Some("e0"));
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
