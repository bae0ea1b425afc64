//! foreach stages (SPEC 3.4): one instance per item, at most `parallel` at once, with
//! flat memory whatever the number of items.
//!
//! A foreach stage has no instances until it *starts*: when its `after` conditions
//! hold, its source is opened as a lazy cursor ([`Items`]: ranges and matrices are
//! computed item by item, `lines` and `glob` are read by a feed thread off the loop)
//! or, for `foreach: {queue}`, prun takes records from its channel reader on the
//! queue's router. Instances are created only while fewer than `parallel` of the
//! stage's items are unfinished, so a queue source is read only as fast as items can
//! start (the router's backpressure reaches the writers) and a range of ten million
//! items starts its first one at once.
//!
//! An item that ended for good is *folded*: its end is counted in the stage's
//! [`Tally`] (what `after` conditions, `halt` and the final notices need), and its
//! instance is dropped from the supervisor ([`super::insts`]). The reporter folds it
//! too, on [`Event::InstanceFinal`].
//!
//! Decisions:
//! - Instances are named `stage.INDEX` (like replicas), `INDEX` being the item's
//!   position in the source (0-based; records of a queue are numbered as they
//!   arrive); the report's `item` is the item string, `index` its index.
//!   `${item}`, `${index}` and `PRUN_ITEM` come from the instance; in a matrix stage
//!   `${item.NAME}` is one part, decoded from the index.
//! - A record or a `lines` line that is not valid UTF-8 becomes an item that could
//!   not start (exit code 126), never run with altered bytes.
//! - `--resume REPORT`: an item that succeeded in that report (same stage name, same
//!   position, same item string: [`crate::resume`]) gets an instance in state `skipped` with `resumed: true`, without
//!   running and without taking a slot; it counts as succeeded for `after` conditions
//!   and for a later `--resume` of this run's report.
//! - The stage is *open* until its source is exhausted (every item has an instance,
//!   or the queue reached end of stream), the pipeline stops, or its `halt` fires; a
//!   dependent's `after` condition, the closing of queues it writes and the end of the
//!   pipeline wait for that.
//! - If the stage can never start (a dependency failed) or the pipeline stops first,
//!   one placeholder instance named after the stage is reported `skipped`. When the
//!   pipeline stops (or `halt` fires) while items remain, the items of a range, list,
//!   matrix, file or glob that never got an instance are *counted* as not started
//!   (`BatchClosed`), not listed one by one; records already taken from a queue each
//!   become a `skipped` instance, so none vanishes.
//! - A source that cannot be opened (a missing `lines` file, a bad glob) makes the
//!   placeholder instance `could not start` with the reason (exit code 1,
//!   `on_failure` applies). A source that fails midway ends the stage's items there
//!   and is reported the same way. A glob that matches nothing gives a warning and no
//!   instance.
//! - Work per loop pass is bounded: resumed items do not take slots, so at most
//!   [`FILL_BUDGET`] items are looked at per pass and the loop comes back at once for
//!   the rest, staying responsive to signals.

use std::collections::VecDeque;
use std::string::FromUtf8Error;

use crossbeam_channel::{Receiver, TryRecvError};

use super::Supervisor;
use super::block::Block;
use super::halt::HaltState;
use crate::event::{BatchEnd, Event, InstanceId, InstanceInfo, State};
use crate::plan::{Condition, ForeachSource, Instances, StagePlan};
use crate::runtime::items::{Chunk, Items, Next};

/// Items looked at per stage and loop pass at most.
pub(super) const FILL_BUDGET: usize = 4096;

/// Where a foreach stage is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Its `after` conditions do not hold yet: no source is open.
    Waiting,
    /// Creating instances as slots free up.
    Open,
    /// No instance will be created any more.
    Closed,
}

/// The ended items of a stage, counted.
#[derive(Debug, Default, Clone)]
pub(super) struct Tally {
    pub ended: u64,
    pub succeeded: u64,
    /// Ends that count as failures (`on_failure: ignore` ones do not).
    pub failed: u64,
    pub resumed: u64,
    /// For each `after` condition (started, ready, succeeded, completed), why the
    /// first ended item that does not meet it does not.
    unmet: [Option<String>; 4],
}

fn cond_slot(c: Condition) -> usize {
    match c {
        Condition::Started => 0,
        Condition::Ready => 1,
        Condition::Succeeded => 2,
        Condition::Completed => 3,
    }
}

/// A channel a foreach stage waits on for its next item.
pub(super) enum FeedRx {
    /// Records of its queue (`None` received: end of stream).
    Records(Receiver<Vec<u8>>),
    /// Chunks of a `lines` or `glob` feed.
    Items(Receiver<Chunk>),
}

/// The run-time state of one foreach stage.
pub(super) struct Batch {
    pub(super) source: ForeachSource,
    pub(super) parallel: usize,
    pub(super) phase: Phase,
    /// The source's cursor (not for `queue`).
    pub(super) items: Option<Items>,
    /// `foreach: {queue}`: records arrive here until end of stream.
    pub(super) records: Option<Receiver<Vec<u8>>>,
    /// The number of items last told to the reporter.
    pub(super) announced_total: Option<u64>,
    /// The channel reader's queue and port (`foreach: {queue}`).
    pub(super) record_port: Option<(usize, usize)>,
    /// The channel, kept (unread) once the stage closed early: what the router put in
    /// it after prun stopped taking records is counted by the router
    /// (`in_flight_at_failure`) when it handles `reader_exited`.
    pub(super) left_records: Option<Receiver<Vec<u8>>>,
    /// Records received while no slot was free (rare: see `feeds`).
    pub(super) held: VecDeque<Vec<u8>>,
    /// `foreach: {queue, batch: N}`: the block being filled, and N.
    pub(super) block: Option<Block>,
    pub(super) batch: Option<usize>,
    /// Records taken from the queue so far (their numbers).
    pub(super) records_taken: u64,
    /// Instances created for blocks or records so far (their indexes).
    pub(super) next_index: u64,
    /// Created and not ended yet (at most `parallel`).
    pub(super) live: Vec<InstanceId>,
    /// Ended for good, not folded yet.
    pub(super) ended: Vec<InstanceId>,
    pub(super) tally: Tally,
    pub(super) halt: Option<HaltState>,
    /// The exit code of the first failed item, while `halt` decides what it means.
    pub(super) held_failure: Option<i32>,
}

impl Batch {
    pub(super) fn for_stage(stage: &StagePlan) -> Option<Batch> {
        match &stage.instances {
            Instances::Foreach { source, parallel } => Some(Batch {
                source: source.clone(),
                parallel: (*parallel).max(1),
                phase: Phase::Waiting,
                items: None,
                records: None,
                record_port: None,
                left_records: None,
                announced_total: None,
                held: VecDeque::new(),
                block: None,
                batch: stage.batch,
                records_taken: 0,
                next_index: 0,
                live: Vec::new(),
                ended: Vec::new(),
                tally: Tally::default(),
                halt: stage.halt.clone().map(HaltState::new),
                held_failure: None,
            }),
            Instances::Replicas { .. } => None,
        }
    }

    /// The number of items, once known.
    pub(super) fn total(&self) -> Option<u64> {
        match &self.items {
            Some(items) => items.total(),
            // A queue's items are known once the stage is closed.
            None if self.phase == Phase::Closed => Some(self.next_index),
            None => None,
        }
    }

    /// Items created so far.
    pub(super) fn taken(&self) -> u64 {
        match &self.items {
            Some(items) => items.taken(),
            None => self.next_index,
        }
    }

    /// Unfinished items.
    pub(super) fn running(&self) -> usize {
        self.live.len()
    }

    /// The unfinished items' instances.
    pub(super) fn live_items(&self) -> &[InstanceId] {
        &self.live
    }

    pub(super) fn is_open(&self) -> bool {
        self.phase != Phase::Closed
    }
}

impl Supervisor {
    /// True while a foreach stage may still create instances.
    pub(super) fn batch_open(&self, stage: usize) -> bool {
        self.batches[stage].as_ref().is_some_and(|b| b.is_open())
    }

    pub(super) fn any_batch_open(&self) -> bool {
        (0..self.batches.len()).any(|s| self.batch_open(s))
    }

    /// `${replicas}` of a foreach stage: its number of items, once known (else 0).
    pub(super) fn batch_total(&self, stage: usize) -> Option<u64> {
        self.batches[stage].as_ref().and_then(|b| b.total())
    }

    /// Attach prun as a reader of every `foreach: {queue}` source, before any writer
    /// starts (the router's rule: readers first). Records wait in the queue, with
    /// backpressure, until the stage starts.
    pub(super) fn attach_batch_queues(&mut self) {
        for st in 0..self.batches.len() {
            let Some(ForeachSource::Queue(q)) = self.batches[st].as_ref().map(|b| &b.source) else {
                continue;
            };
            let q = *q;
            let port = self.next_port;
            self.next_port += 1;
            let rx = self
                .routers
                .get(q)
                .and_then(|r| r.as_ref())
                .map(|r| r.add_channel_reader(port));
            if let Some(b) = self.batches[st].as_mut() {
                b.records = rx;
                b.record_port = Some((q, port));
            }
        }
    }

    /// Channels worth waiting on: open stages with a free slot and nothing to start.
    pub(super) fn feeds(&mut self) -> Vec<(usize, FeedRx)> {
        if self.shutdown.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for st in 0..self.batches.len() {
            let Some(b) = &self.batches[st] else { continue };
            if b.phase != Phase::Open || !b.held.is_empty() || b.live.len() >= b.parallel {
                continue;
            }
            if let Some(rx) = &b.records {
                out.push((st, FeedRx::Records(rx.clone())));
            } else if let Some(rx) = b.items.as_ref().and_then(|i| i.receiver()) {
                out.push((st, FeedRx::Items(rx)));
            }
        }
        out
    }

    /// A record arrived (Some) or the queue reached end of stream (None).
    pub(super) fn on_record(&mut self, stage: usize, record: Option<Vec<u8>>) {
        if let Some(b) = self.batches[stage].as_mut() {
            match record {
                Some(r) => b.held.push_back(r),
                None => b.records = None,
            }
        }
    }

    /// A chunk of a feed arrived (Some) or the feed ended (None).
    pub(super) fn on_chunk(&mut self, stage: usize, chunk: Option<Chunk>) {
        if let Some(items) = self.batches[stage].as_mut().and_then(|b| b.items.as_mut()) {
            items.received(chunk);
        }
        self.announce_total(stage);
    }

    /// Tell the reporter the number of items once it is known (a `lines` file is
    /// counted beside its feed; a glob's is known at its end).
    fn announce_total(&mut self, stage: usize) {
        let Some(b) = self.batches[stage].as_mut() else {
            return;
        };
        let total = b.total();
        if total.is_some() && total != b.announced_total {
            b.announced_total = total;
            if let Some(total) = total {
                self.emit(Event::BatchTotal { stage, total });
            }
        }
    }

    /// Start foreach stages whose `after` conditions hold and create instances for
    /// free slots. Returns true when something changed.
    pub(super) fn feed_batches(&mut self) -> bool {
        let mut changed = false;
        for st in 0..self.batches.len() {
            self.apply_halt(st);
            self.fold_ended(st);
            if self.shutdown.is_some() {
                break;
            }
            let Some(phase) = self.batches[st].as_ref().map(|b| b.phase) else {
                continue;
            };
            match phase {
                Phase::Closed => continue,
                Phase::Waiting => match self.after_check(st) {
                    super::start::Check::Wait => continue,
                    super::start::Check::Skip(reason) => {
                        self.abandon_batch(st, State::Skipped { reason });
                        changed = true;
                        continue;
                    }
                    super::start::Check::Go => {
                        self.start_batch(st);
                        changed = true;
                    }
                },
                Phase::Open => {}
            }
            changed |= self.fill_slots(st);
            self.announce_total(st);
        }
        changed
    }

    /// Open the source (or start taking the queue's records) and announce the stage.
    fn start_batch(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        b.phase = Phase::Open;
        let source = b.source.clone();
        let name = self.plan.stages[st].name.clone();
        if !matches!(source, ForeachSource::Queue(_)) {
            let run_dir = self.run_dir.to_string_lossy().into_owned();
            let vars = crate::plan::InstanceVars {
                stage: &name,
                run_dir: &run_dir,
                ..Default::default()
            };
            match Items::open(&source, &vars, &self.plan.start_dir) {
                Ok(items) => {
                    if let Some(b) = self.batches[st].as_mut() {
                        b.items = Some(items);
                    }
                }
                Err(error) => {
                    self.abandon_batch(st, State::CouldNotStart { error });
                    return;
                }
            }
        }
        let total = self
            .batch_total(st)
            .filter(|_| !matches!(source, ForeachSource::Queue(_)));
        if let Some(b) = self.batches[st].as_mut() {
            b.announced_total = total;
        }
        self.emit(Event::BatchStarted {
            stage: st,
            stage_name: name,
            total: total.map(|t| t as usize),
            resumed: 0,
        });
    }

    /// Create instances while slots are free; close the stage when its source is
    /// exhausted. True when an instance that may start was created, or the stage
    /// closed.
    fn fill_slots(&mut self, st: usize) -> bool {
        let mut changed = false;
        for _ in 0..FILL_BUDGET {
            let Some(b) = self.batches[st].as_mut() else {
                return changed;
            };
            if b.phase != Phase::Open || b.live.len() >= b.parallel {
                return changed;
            }
            if b.batch.is_some() {
                // `batch: N`: records go into blocks; a full (or last) block is an item.
                if self.fill_block(st) {
                    changed = true;
                    continue;
                }
                return changed | !self.batch_open(st);
            }
            let next: Option<(u64, Result<String, FromUtf8Error>)> =
                if let Some(rec) = b.held.pop_front() {
                    b.records_taken += 1;
                    let i = b.next_index;
                    b.next_index += 1;
                    Some((i, String::from_utf8(rec)))
                } else if let Some(items) = b.items.as_mut() {
                    let index = items.taken();
                    match items.take() {
                        Next::Item(item) => Some((index, item)),
                        Next::Pending => return changed,
                        Next::End => {
                            self.close_batch(st, BatchEnd::Exhausted);
                            return true;
                        }
                        Next::Failed(error) => {
                            self.close_batch(st, BatchEnd::SourceFailed(error.clone()));
                            self.source_failed(st, error);
                            return true;
                        }
                    }
                } else if let Some(rx) = &b.records {
                    match rx.try_recv() {
                        Ok(rec) => {
                            b.records_taken += 1;
                            let i = b.next_index;
                            b.next_index += 1;
                            Some((i, String::from_utf8(rec)))
                        }
                        Err(TryRecvError::Empty) => return changed,
                        Err(TryRecvError::Disconnected) => {
                            b.records = None;
                            continue;
                        }
                    }
                } else {
                    self.close_batch(st, BatchEnd::Exhausted);
                    return true;
                };
            let Some((index, item)) = next else {
                return changed;
            };
            changed |= self.new_item(st, index, item);
        }
        // The budget ran out: come back at once for the rest.
        self.more_work = true;
        changed
    }

    /// One item of the source: an instance waiting to start (true), or one that ends
    /// at once (resumed, not UTF-8).
    fn new_item(&mut self, st: usize, index: u64, item: Result<String, FromUtf8Error>) -> bool {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                // Items are text (argv, `${item}`, the report): bytes that are not UTF-8
                // make an item that could not start, never one run with altered bytes.
                let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                let id = self.add_item_instance(st, index, shown, false);
                self.insts[id].start_error_code = 126;
                let at = e.utf8_error().valid_up_to();
                let error = format!("item is not valid UTF-8 (byte {at}); items are text");
                self.finish_run(id, State::CouldNotStart { error });
                return true;
            }
        };
        let resumed = self
            .resume
            .contains(&self.plan.stages[st].name, index, &item);
        self.add_item_instance(st, index, item, resumed);
        !resumed
    }

    /// A new instance for one item: waiting to start, or skipped when resumed.
    pub(super) fn add_item_instance(
        &mut self,
        st: usize,
        index: u64,
        item: String,
        resumed: bool,
    ) -> InstanceId {
        let stage = &self.plan.stages[st];
        let (name, stage_name, daemon) = (
            format!("{}.{index}", stage.name),
            stage.name.clone(),
            stage.daemon,
        );
        let id = self.insts.add(|id| InstanceInfo {
            id,
            name,
            stage: st,
            stage_name,
            index: index as usize,
            item: Some(item),
            daemon,
            resumed,
        });
        self.live.insert(id);
        self.by_stage[st].push(id);
        if let Some(b) = self.batches[st].as_mut() {
            b.live.push(id);
        }
        self.emit(Event::InstanceAdded(self.insts[id].info.clone()));
        self.expect_broadcast_reader(id);
        self.expect_ordered_writer(id);
        if resumed {
            self.end(
                id,
                State::Skipped {
                    reason: "resumed: succeeded in the earlier report".into(),
                },
            );
        }
        id
    }

    /// An instance ended for good (from `end`): a foreach item is counted, frees its
    /// slot, and is folded at the next pass.
    pub(super) fn item_ended(&mut self, id: InstanceId, state: &State) {
        let info = &self.insts[id].info;
        let st = info.stage;
        if info.item.is_none() || self.batches[st].is_none() {
            return;
        }
        let resumed = info.resumed;
        let on_failure = self.plan.stages[st].on_failure;
        let failure = super::reap::failure_code(state, self.insts[id].start_error_code)
            .filter(|_| on_failure != crate::plan::OnFailure::Ignore);
        // Why it does not meet each `after` condition, if it does not.
        let mut unmet: [Option<String>; 4] = Default::default();
        for c in [
            Condition::Started,
            Condition::Ready,
            Condition::Succeeded,
            Condition::Completed,
        ] {
            if matches!(self.condition(id, c), super::start::Cond::Never) {
                unmet[cond_slot(c)] = Some(self.unmet_reason(id));
            }
        }
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        b.live.retain(|&x| x != id);
        b.ended.push(id);
        let t = &mut b.tally;
        t.ended += 1;
        if resumed {
            t.resumed += 1;
        } else if matches!(state, State::Succeeded(_)) {
            t.succeeded += 1;
        }
        if failure.is_some() {
            t.failed += 1;
        }
        for (slot, why) in t.unmet.iter_mut().zip(unmet) {
            if slot.is_none() {
                *slot = why;
            }
        }
        if let Some(code) = failure
            && b.halt.is_some()
            && b.held_failure.is_none()
        {
            b.held_failure = Some(code);
        }
        self.check_halt(st);
    }

    /// Why dependents of a foreach stage cannot meet `cond` because of an item that
    /// was folded, if one did not meet it.
    pub(super) fn batch_unmet(&self, stage: usize, cond: Condition) -> Option<&str> {
        let b = self.batches[stage].as_ref()?;
        if b.halt.as_ref().is_some_and(|h| h.succeeded()) {
            return None;
        }
        b.tally.unmet[cond_slot(cond)].as_deref()
    }

    /// A foreach stage with `halt`: its items' ends are judged together.
    pub(super) fn batch_judged_whole(&self, stage: usize) -> bool {
        self.batches[stage]
            .as_ref()
            .is_some_and(|b| b.halt.is_some())
    }

    /// Items of a foreach stage not ended yet.
    pub(super) fn batch_running(&self, stage: usize) -> bool {
        self.batches[stage]
            .as_ref()
            .is_some_and(|b| b.running() > 0)
    }

    /// The stage halted on its `success` threshold.
    pub(super) fn batch_halted_success(&self, stage: usize) -> bool {
        self.batches[stage]
            .as_ref()
            .and_then(|b| b.halt.as_ref())
            .is_some_and(|h| h.succeeded())
    }

    /// Drop the instances of items that ended, keeping only what the counters need.
    /// An instance whose process group still has members (a stray background child)
    /// is kept, so the final sweep finds its group.
    pub(super) fn fold_ended(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        if b.ended.is_empty() {
            return;
        }
        let ended = std::mem::take(&mut b.ended);
        let mut kept = Vec::new();
        for id in ended {
            let Some(inst) = self.insts.get(id) else {
                continue;
            };
            if !inst.is_final() || !inst.pgids.is_empty() || !inst.expected_by.is_empty() {
                kept.push(id);
                continue;
            }
            if let Some(inst) = self.insts.remove(id) {
                let succeeded =
                    matches!(inst.life, super::instance::Life::Ended(State::Succeeded(_)))
                        || inst.info.resumed;
                if succeeded {
                    for (q, port) in inst.ports_used {
                        self.queues[q].port_owner.remove(&port);
                    }
                } else {
                    // Listed in the report: its records are counted at the end.
                    self.folded_listed.push(super::Listed {
                        id,
                        stage: st,
                        block: inst.block.as_ref().map(|b| b.records),
                    });
                }
            }
            self.by_stage[st].retain(|&x| x != id);
        }
        // Instances whose group still has members stay held (the final sweep needs
        // their groups); they are few.
        drop(kept);
    }
}
