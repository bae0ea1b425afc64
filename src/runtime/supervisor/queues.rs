//! The supervisor's side of queues: direct pipes it creates and lets go, routers it
//! tells when writers are done or readers are gone, and the questions the rest of the
//! loop asks (are a queue's writers done? its readers? is everything drained?).
//!
//! A direct pipe (one writer and one reader instance) is made once; prun keeps its
//! ends only until both partners started, then each belongs to its process alone. A
//! routed queue has a router thread ([`crate::runtime::router`]); the supervisor only
//! sends it commands and reads its events.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::Supervisor;
use super::instance::RouterPort;
use crate::event::{Event, InstanceId};
use crate::plan::{FdDirection, Input, Output, Port, QueueId, StagePlan, Wiring};
use crate::runtime::router::RouterEvent;

/// Period of the `QueueProgress` events (records/s on the status board).
pub(super) const QUEUE_TICK: Duration = Duration::from_secs(1);
/// After a queue is cut short during a stop, how long its readers get to take the rest
/// of the record each is in the middle of (and so see EOF) before the stop signal.
pub(super) const CUT_GRACE: Duration = Duration::from_millis(500);

#[derive(Default)]
pub(super) struct QueueRt {
    pub direct_made: bool,
    pub direct_read: Option<OwnedFd>,
    pub direct_write: Option<OwnedFd>,
    pub writers_closed: bool,
    /// `close_readers` sent (broadcast: no reader instance can come any more).
    pub readers_closed: bool,
    pub drained: bool,
    pub aborted: bool,
    /// When the queue was cut short during a stop (`QueueRouter::cut`).
    pub cut_at: Option<Instant>,
    /// Router port id → instance.
    pub port_owner: HashMap<usize, InstanceId>,
}

impl Supervisor {
    pub(super) fn handle_router(&mut self, ev: RouterEvent) {
        match ev {
            RouterEvent::Drained { queue } => {
                if let Some(q) = self.queues.get_mut(queue) {
                    q.drained = true;
                }
            }
            RouterEvent::WriterDone { .. } | RouterEvent::ReaderGone { .. } => {}
        }
    }

    pub(super) fn queue_writers(&self, q: QueueId) -> Vec<InstanceId> {
        let mut v = Vec::new();
        for ep in &self.plan.queues[q].writers {
            v.extend(self.by_stage[ep.stage].iter().copied());
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    pub(super) fn queue_readers(&self, q: QueueId) -> Vec<InstanceId> {
        let mut v = Vec::new();
        for ep in &self.plan.queues[q].readers {
            if ep.port != Port::Foreach {
                v.extend(self.by_stage[ep.stage].iter().copied());
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every writer instance of `q` ended for good, and no foreach writer stage will
    /// create more.
    pub(super) fn writers_done(&self, q: QueueId) -> bool {
        self.plan.queues[q]
            .writers
            .iter()
            .all(|ep| !self.batch_open(ep.stage))
            && self
                .queue_writers(q)
                .iter()
                .all(|&w| self.insts[w].is_final())
    }

    /// SPEC 5.1: the pipeline ends once every queue is drained too. A routed queue whose
    /// writers are done counts once prun has handed all its records to readers
    /// (`Drained`), or when it was aborted or has no reader left; a queue whose writers
    /// are daemons is never closed before the stop, so it does not hold the end back.
    pub(super) fn queues_settled(&self) -> bool {
        (0..self.plan.queues.len()).all(|q| {
            let qr = &self.queues[q];
            self.routers[q].is_none()
                || qr.drained
                || qr.aborted
                || !self.writers_done(q)
                || self.readers_done(q)
        })
    }

    /// Every reader instance of `q` ended for good, no foreach reader stage will create
    /// more, and no `foreach: {queue}` stage still takes records from it.
    pub(super) fn readers_done(&self, q: QueueId) -> bool {
        self.plan.queues[q]
            .readers
            .iter()
            .all(|ep| !self.batch_open(ep.stage))
            && self
                .queue_readers(q)
                .iter()
                .all(|&r| self.insts[r].is_final())
    }

    /// Close queue ends that nobody can use any more (EOF for readers, EPIPE for writers).
    pub(super) fn check_queues(&mut self) {
        for q in 0..self.plan.queues.len() {
            let writers_done = self.writers_done(q);
            let readers_done = self.readers_done(q);
            // A direct end the parent still holds: its partner never started, or has
            // started and this copy is only kept for a second port of the same spawn.
            let writer_running = self
                .queue_writers(q)
                .iter()
                .any(|&w| self.insts[w].pid().is_some());
            let reader_running = self
                .queue_readers(q)
                .iter()
                .any(|&r| self.insts[r].pid().is_some());
            let qr = &mut self.queues[q];
            if writers_done || writer_running {
                qr.direct_write = None;
            }
            if readers_done || reader_running {
                qr.direct_read = None;
            }
            if let Some(router) = &self.routers[q] {
                if writers_done && !qr.writers_closed {
                    qr.writers_closed = true;
                    router.close_writers();
                }
                // A drained broadcast router waits for readers announced late (their
                // missed copies are counted) until no reader instance can come.
                if readers_done
                    && !qr.readers_closed
                    && self.plan.queues[q].delivery == crate::plan::Delivery::Broadcast
                {
                    qr.readers_closed = true;
                    router.close_readers();
                }
                // Writers still running must see a closed pipe, as in a shell.
                if readers_done && !writers_done && !qr.aborted {
                    qr.aborted = true;
                    router.abort();
                }
            }
        }
    }

    /// Every queue this instance reads is closed (its writers ended and, when routed,
    /// drained): it has seen, or is about to see, EOF.
    pub(super) fn inputs_closed(&self, id: InstanceId) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        input_queues(stage).iter().all(|&q| {
            let writers_done = self.writers_done(q);
            let qr = &self.queues[q];
            writers_done
                && (self.plan.queues[q].wiring == Wiring::Direct || qr.drained || qr.aborted)
        })
    }

    /// Queue counters for the status board, about once a second.
    pub(super) fn queue_tick(&mut self, now: Instant) {
        if self.next_queue_tick.is_none_or(|t| t > now) {
            return;
        }
        self.next_queue_tick = Some(now + QUEUE_TICK);
        for q in 0..self.routers.len() {
            if let Some(r) = &self.routers[q] {
                let stats = r.stats();
                self.emit(Event::QueueProgress {
                    queue: q,
                    name: self.plan.queues[q].name.clone(),
                    records: stats.records,
                    depth: stats.depth,
                });
            }
        }
    }

    /// When the grace of a queue cut short at shutdown ends, if one is pending.
    pub(super) fn next_cut_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|qr| !qr.drained && !qr.aborted)
            .filter_map(|qr| qr.cut_at.map(|t| t + CUT_GRACE))
            .min()
    }
}

impl Supervisor {
    /// Announce instance `id` to the routers of the broadcast queues its stage reads
    /// (see `QueueRouter::expect_reader`).
    pub(super) fn expect_broadcast_reader(&mut self, id: InstanceId) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        for q in input_queues(stage) {
            if self.plan.queues[q].delivery == crate::plan::Delivery::Broadcast
                && let Some(r) = &self.routers[q]
            {
                r.expect_reader(id);
            }
        }
    }

    /// Instance `id` ended for good (no restart will come): the broadcast queues it reads
    /// stop holding copies for it (those it never took are counted).
    pub(super) fn broadcast_reader_done(&mut self, id: InstanceId) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        for q in input_queues(stage) {
            if let Some(r) = &self.routers[q] {
                r.member_not_coming(id);
            }
        }
    }

    /// Tell the routers of the queues instance `id` writes how its process ended, so a
    /// last record cut short is delivered only if it succeeded (SPEC 4.1).
    pub(super) fn report_writer_outcome(&mut self, ports: &[RouterPort], succeeded: bool) {
        for port in ports.iter().filter(|p| p.writer) {
            if let Some(r) = &self.routers[port.queue] {
                r.writer_ended(port.id, succeeded);
            }
        }
    }
}

/// The queues a stage reads (stdin and `fds` read bindings; not `foreach: {queue}`).
pub(super) fn input_queues(stage: &StagePlan) -> Vec<QueueId> {
    let mut v = Vec::new();
    if let Input::Queue(q) = stage.stdin {
        v.push(q);
    }
    v.extend(
        stage
            .fds
            .iter()
            .filter(|b| b.direction == FdDirection::Read)
            .map(|b| b.queue),
    );
    v
}

/// The queues a stage writes (stdout, stderr, `fds` write bindings).
pub(super) fn output_queues(stage: &StagePlan) -> Vec<QueueId> {
    let mut v = Vec::new();
    for out in [&stage.stdout, &stage.stderr] {
        if let Output::Queue(q) = out {
            v.push(*q);
        }
    }
    v.extend(
        stage
            .fds
            .iter()
            .filter(|b| b.direction == FdDirection::Write)
            .map(|b| b.queue),
    );
    v
}
