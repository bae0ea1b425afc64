//! Semaphores, events and deadlock explanations (SPEC 3.2, 6).
//!
//! CONTRACT (skeleton written by the lead; the coordination work fills in the bodies
//! and may add to, but not break, these signatures).
//!
//! Pure data, no threads and no I/O: the supervisor owns one `Coord` and calls it from
//! its loop, both for the `semaphore:`/`waits:`/`sets:` keys and for `prun ctl`
//! requests. Permits are acquired all at once and granted in FIFO order, so two
//! instances can never deadlock by each holding one of two semaphores.

use crate::plan::{EventId, EventPlan, SemId, SemaphorePlan};

/// Who holds or waits for permits: the supervisor assigns one id per instance
/// (a `prun ctl` request is made on behalf of the instance whose process asked).
pub type HolderId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordError {
    /// `release` of a semaphore the holder does not hold.
    NotHeld { semaphore: String },
}

pub struct Coord {
    _private: (),
}

impl Coord {
    pub fn new(semaphores: &[SemaphorePlan], events: &[EventPlan]) -> Coord {
        let _ = (semaphores, events);
        todo!("coord")
    }

    /// Ask for one permit of each of `sems`, all at once. Requests are served FIFO:
    /// returns true when granted now, else the request waits in line and is
    /// granted by a later `release*` (which returns it).
    pub fn request(&mut self, holder: HolderId, sems: &[SemId]) -> bool {
        let _ = (holder, sems);
        todo!("coord")
    }

    /// Withdraw a waiting request (the instance was skipped or the wait timed out).
    /// Returns requests granted as a consequence (a FIFO head may have moved).
    pub fn cancel(&mut self, holder: HolderId) -> Vec<HolderId> {
        let _ = holder;
        todo!("coord")
    }

    /// Release one permit of `sem` held by `holder` (`prun ctl sem release`).
    /// Returns the waiting holders whose requests are granted now, in FIFO order.
    pub fn release(&mut self, holder: HolderId, sem: SemId) -> Result<Vec<HolderId>, CoordError> {
        let _ = (holder, sem);
        todo!("coord")
    }

    /// Release everything `holder` holds and withdraw what it waits for (it ended).
    pub fn release_all(&mut self, holder: HolderId) -> Vec<HolderId> {
        let _ = holder;
        todo!("coord")
    }

    /// Set an event; returns true when it changed.
    pub fn set_event(&mut self, event: EventId) -> bool {
        let _ = event;
        todo!("coord")
    }

    pub fn clear_event(&mut self, event: EventId) -> bool {
        let _ = event;
        todo!("coord")
    }

    pub fn is_set(&self, event: EventId) -> bool {
        let _ = event;
        todo!("coord")
    }

    /// Permits currently held by `holder`, per semaphore.
    pub fn held_by(&self, holder: HolderId) -> Vec<(SemId, u32)> {
        let _ = holder;
        todo!("coord")
    }
}
