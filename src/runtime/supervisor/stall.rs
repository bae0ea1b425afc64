//! A broadcast queue that is full and can never drain (SPEC 4.2): the run fails as a
//! deadlock, with a report that names the queue, the writers waiting to write, and the
//! reader that will never read the copies held for it.
//!
//! The shapes: a reader held by `after` on another reader of the same queue (which
//! needs the queue's end to finish), or a reader that first waits for another reader's
//! output (dgsh's spell-highlight) with a `capacity` below the records carried. Nothing
//! is parked in `prun ctl`, so the semaphore and event check ([`super::coordinate`])
//! sees running instances and no deadlock; the processes are blocked in pipes.
//!
//! Only while some broadcast queue is full (its router's depth reached `capacity`),
//! at most every [`DEADLOCK_PERIOD`], the loop describes each unfinished instance from
//! `/proc` (prun's own descendants only) (each process of its group blocked reading or writing a pipe, by inode;
//! the inodes of its routed queues from its group leader's bound descriptors; the
//! other end of a direct pipe from the pipes the other instances hold) and hands the
//! picture to [`find_stall`]. The verdict must hold, with the same instances, for
//! [`STALL_GRACE`] before the run fails (exit 70, like any deadlock) and the queues
//! that can never drain are cut at once (their readers get EOF): a queue that is
//! full for a moment while a reader catches up is never mistaken for one. Anything
//! prun cannot see (a remote instance, a process running or sleeping elsewhere, a
//! pipe whose other end it cannot find) counts as able to go on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Supervisor;
use super::coordinate::DEADLOCK_PERIOD;
use super::instance::Permit;
use crate::coord::stall::{Node, NodeState, PipeWait, QueueView, find_stall};
use crate::event::InstanceId;
use crate::plan::{Delivery, Input, Output, QueueId, Wiring};
use crate::procfs::{self, PipeBlock};

/// How long a stall must persist, with the same instances, before the run fails.
pub(super) const STALL_GRACE: Duration = Duration::from_secs(2);

impl Supervisor {
    /// Look for a full broadcast queue that can never drain; fail the run when one
    /// persists (module doc).
    pub(super) fn check_stall(&mut self, now: Instant) {
        let views = self.full_broadcast_queues();
        if !views.iter().any(|v| v.full) {
            self.stall_seen = None;
            return;
        }
        if now < self.next_stall_check {
            return;
        }
        self.next_stall_check = now + DEADLOCK_PERIOD;
        let Some(stall) = find_stall(&self.stall_nodes(), &views) else {
            self.stall_seen = None;
            return;
        };
        match &self.stall_seen {
            Some((ids, since)) if *ids == stall.stuck => {
                if now.saturating_duration_since(*since) < STALL_GRACE {
                    return;
                }
            }
            _ => {
                self.stall_seen = Some((stall.stuck, now));
                return;
            }
        }
        self.stall_seen = None;
        self.fail_on_deadlock(stall.message, stall.stuck);
        // Those queues can never drain: cut them now (what they hold is counted as
        // discarded), so their readers get EOF at once instead of after `stop.timeout`.
        for q in stall.queues {
            if let (Some(router), qr) = (&self.routers[q], &mut self.queues[q])
                && qr.cut_at.is_none()
                && !qr.drained
                && !qr.aborted
            {
                qr.cut_at = Some(now);
                router.cut();
            }
        }
    }

    /// When the next stall check is due, while one is suspected.
    pub(super) fn next_stall_deadline(&self) -> Option<Instant> {
        self.stall_seen.as_ref().map(|_| self.next_stall_check)
    }

    /// The broadcast queues with a router, as their routers last published them.
    fn full_broadcast_queues(&self) -> Vec<QueueView> {
        let mut views = Vec::new();
        for (q, plan) in self.plan.queues.iter().enumerate() {
            if plan.delivery != Delivery::Broadcast {
                continue;
            }
            let Some(router) = &self.routers[q] else {
                continue;
            };
            let depth = router.stats().depth;
            let capacity = plan.capacity as u64;
            let unfinished = |v: Vec<InstanceId>| -> Vec<u64> {
                v.into_iter()
                    .filter(|&i| !self.insts[i].is_final())
                    .map(|i| i as u64)
                    .collect()
            };
            views.push(QueueView {
                id: q,
                name: plan.name.clone(),
                full: depth >= capacity,
                depth,
                capacity,
                writers: unfinished(self.queue_writers(q)),
                readers: unfinished(self.queue_readers(q)),
            });
        }
        views
    }

    /// Every unfinished instance as [`find_stall`] sees it.
    fn stall_nodes(&self) -> Vec<Node> {
        let mut groups: HashMap<i32, Vec<i32>> = HashMap::new();
        for s in procfs::descendants(self.self_pid) {
            if s.state != 'Z' {
                groups.entry(s.pgrp).or_default().push(s.pid);
            }
        }
        // Who holds each pipe, and which pipes are the routed queues' ends.
        let mut holders: HashMap<u64, Vec<(InstanceId, bool)>> = HashMap::new();
        let mut routed: HashMap<u64, QueueId> = HashMap::new();
        let running: Vec<(InstanceId, i32)> = self
            .live
            .iter()
            .filter(|&&id| !self.is_remote(id))
            .filter_map(|&id| self.insts[id].pid().map(|p| (id, p)))
            .collect();
        for &(id, pgid) in &running {
            for &pid in groups.get(&pgid).into_iter().flatten() {
                for (ino, write) in procfs::pipe_ends(pid) {
                    holders.entry(ino).or_default().push((id, write));
                }
            }
            for (fd, q) in self.bound_queue_fds(id) {
                if self.plan.queues[q].wiring != Wiring::Direct
                    && let Some(ino) = procfs::pipe_inode(pgid, fd)
                {
                    routed.insert(ino, q);
                }
            }
        }
        let mut nodes = Vec::new();
        for &id in &self.live {
            let inst = &self.insts[id];
            let state = match inst.pid() {
                Some(pgid) if !self.is_remote(id) => {
                    let parked = self.broker.parked_pids(id as u64);
                    let procs = groups.get(&pgid).map(Vec::as_slice).unwrap_or(&[]);
                    blocked_state(id, procs, &parked, &routed, &holders)
                }
                Some(_) => NodeState::Active,
                None if inst.startable() => self.after_state(id),
                None => NodeState::Active,
            };
            nodes.push(Node {
                holder: id as u64,
                name: inst.info.name.clone(),
                state,
            });
        }
        nodes
    }

    /// A waiting instance: held only by `after` conditions (events it waits for and
    /// permits it lacks are the other check's: it counts as able to go on).
    fn after_state(&self, id: InstanceId) -> NodeState {
        let inst = &self.insts[id];
        let stage = &self.plan.stages[inst.info.stage];
        let events_unset = stage.waits.iter().any(|&e| !self.coord.is_set(e));
        let needs_permit = !stage.semaphores.is_empty() && inst.permit() != Permit::Held;
        if events_unset || needs_permit {
            return NodeState::Active;
        }
        let mut deps = Vec::new();
        for &(dep, cond) in &stage.after {
            for &d in &self.by_stage[dep] {
                if matches!(self.condition(d, cond), super::start::Cond::Pending) {
                    deps.push(d as u64);
                }
            }
        }
        if deps.is_empty() {
            NodeState::Active
        } else {
            NodeState::After(deps)
        }
    }

    /// The descriptors instance `id` gets for its queues, with the queue.
    fn bound_queue_fds(&self, id: InstanceId) -> Vec<(i64, QueueId)> {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let mut v = Vec::new();
        if let Input::Queue(q) = stage.stdin {
            v.push((0, q));
        }
        if let Output::Queue(q) = stage.stdout {
            v.push((1, q));
        }
        if let Output::Queue(q) = stage.stderr {
            v.push((2, q));
        }
        for f in &stage.fds {
            v.push((i64::from(f.fd), f.queue));
        }
        v
    }
}

/// A running instance: blocked when every process of its group is blocked on a pipe
/// whose other end prun knows, or waits for a child (and one at least is blocked).
fn blocked_state(
    id: InstanceId,
    procs: &[i32],
    parked: &std::collections::HashSet<i32>,
    routed: &HashMap<u64, QueueId>,
    holders: &HashMap<u64, Vec<(InstanceId, bool)>>,
) -> NodeState {
    let mut waits = Vec::new();
    for &pid in procs {
        if parked.contains(&pid) {
            // A `prun ctl` wait: the other check judges it.
            return NodeState::Active;
        }
        let block = procfs::blocked_on_pipe(pid);
        let wait = match block {
            Some(PipeBlock::Read(ino)) => match routed.get(&ino) {
                Some(&q) => Some(vec![PipeWait::ReadQueue(q)]),
                None => peers(id, ino, true, holders).map(|hs| {
                    hs.into_iter()
                        .map(|h| PipeWait::ReadFrom(h as u64))
                        .collect()
                }),
            },
            Some(PipeBlock::Write(ino)) => match routed.get(&ino) {
                Some(&q) => Some(vec![PipeWait::WriteQueue(q)]),
                None => peers(id, ino, false, holders).map(|hs| {
                    hs.into_iter()
                        .map(|h| PipeWait::WriteTo(h as u64))
                        .collect()
                }),
            },
            None if procfs::waits_for_child(pid) => Some(Vec::new()),
            None => None,
        };
        match wait {
            Some(w) => waits.extend(w),
            None => return NodeState::Active,
        }
    }
    if waits.is_empty() {
        NodeState::Active
    } else {
        NodeState::Blocked(waits)
    }
}

/// The other instances holding the far end of pipe `ino` (its write end when `id`
/// reads it); None when there is none prun knows of (prun itself, or a process
/// outside the pipeline).
fn peers(
    id: InstanceId,
    ino: u64,
    reading: bool,
    holders: &HashMap<u64, Vec<(InstanceId, bool)>>,
) -> Option<Vec<InstanceId>> {
    let mut v: Vec<InstanceId> = holders
        .get(&ino)?
        .iter()
        .filter(|&&(h, write)| h != id && write == reading)
        .map(|&(h, _)| h)
        .collect();
    v.sort_unstable();
    v.dedup();
    (!v.is_empty()).then_some(v)
}
