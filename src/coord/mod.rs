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
//! # Deadlocks (`deadlock`)
//!
//! [`Coord::find_deadlock`] takes what each non-ended instance waits for and computes,
//! as a fixpoint, which instances can still make progress; the rest are stuck, and the
//! message names who waits for what and who holds what.

mod deadlock;
pub mod stall;

pub use deadlock::{Deadlock, Party, Wait};

use std::collections::{BTreeMap, VecDeque};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
