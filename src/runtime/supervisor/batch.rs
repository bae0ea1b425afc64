//! foreach stages (SPEC 3.4): one instance per item, at most `parallel` at once.
//!
//! A foreach stage has no instances until it *starts*: when its `after` conditions
//! hold, its source is expanded ([`crate::runtime::foreach::expand`]; a glob or a
//! `lines` file is read then, so an earlier stage may produce them) or, for
//! `foreach: {queue}`, prun takes records from its channel reader on the queue's
//! router. Instances are created lazily, one per item, only while fewer than
//! `parallel` of the stage's instances are unfinished: the supervisor never holds
//! thousands of waiting instances, and a queue source is read only as fast as items
//! can start, so the router's backpressure reaches the queue's writers.
//!
//! Decisions:
//! - Instances are named `stage.INDEX` (like replicas), `INDEX` being the item's
//!   position in the source (0-based; records of a queue are numbered as they
//!   arrive); the report's `item` is the item string, `index` its index.
//!   `${item}`, `${index}` and `PRUN_ITEM` come from the instance.
//! - A record that is not valid UTF-8 becomes an item with U+FFFD replacements.
//! - `--resume REPORT`: an item that succeeded in that report (same stage name, same
//!   item string) gets an instance in state `skipped` with `resumed: true` in the
//!   report, without running; it counts as succeeded for `after` conditions and for
//!   a later `--resume` of this run's report.
//! - The stage is *open* until its source is exhausted (every item has an instance,
//!   or the queue reached end of stream); a dependent's `after` condition, the
//!   closing of queues it writes and the end of the pipeline wait for that.
//! - If the stage can never start (a dependency failed) or the pipeline stops first,
//!   one placeholder instance named after the stage is reported `skipped`; items not
//!   started when the pipeline stops are reported `skipped` one by one.
//! - A source that cannot be expanded (a missing `lines` file, a bad glob) makes the
//!   placeholder instance `could not start` with the reason (exit code 1, `on_failure`
//!   applies). A glob that matches nothing gives a warning and no instance.

use std::collections::VecDeque;

use crossbeam_channel::{Receiver, TryRecvError};

use super::Supervisor;
use super::instance::Inst;
use crate::event::{Event, InstanceId, InstanceInfo, Level, State};
use crate::plan::{ForeachSource, Instances, StagePlan};

/// The run-time state of one foreach stage.
pub(super) struct Batch {
    source: ForeachSource,
    parallel: usize,
    /// The source was expanded (or the queue opened for this stage).
    started: bool,
    /// No instance will be created any more.
    closed: bool,
    /// Items not yet turned into instances: (index, item).
    items: VecDeque<(usize, String)>,
    /// `foreach: {queue}`: records arrive here until end of stream.
    records: Option<Receiver<Vec<u8>>>,
    /// Records received while no slot was free (rare: see `record_feeds`).
    held: VecDeque<Vec<u8>>,
    next_index: usize,
    /// Created and not final yet (at most `parallel`).
    live: Vec<InstanceId>,
}

impl Batch {
    pub(super) fn for_stage(stage: &StagePlan) -> Option<Batch> {
        match &stage.instances {
            Instances::Foreach { source, parallel } => Some(Batch {
                source: source.clone(),
                parallel: (*parallel).max(1),
                started: false,
                closed: false,
                items: VecDeque::new(),
                records: None,
                held: VecDeque::new(),
                next_index: 0,
                live: Vec::new(),
            }),
            Instances::Replicas { .. } => None,
        }
    }
}

impl Supervisor {
    /// True while a foreach stage may still create instances.
    pub(super) fn batch_open(&self, stage: usize) -> bool {
        self.batches[stage].as_ref().is_some_and(|b| !b.closed)
    }

    pub(super) fn any_batch_open(&self) -> bool {
        (0..self.batches.len()).any(|s| self.batch_open(s))
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
            }
        }
    }

    /// Channels worth waiting on: started queue stages with a free slot.
    pub(super) fn record_feeds(&mut self) -> Vec<(usize, Receiver<Vec<u8>>)> {
        if self.shutdown.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for st in 0..self.batches.len() {
            self.prune_live(st);
            if let Some(b) = &self.batches[st]
                && b.started
                && !b.closed
                && b.held.is_empty()
                && b.live.len() < b.parallel
                && let Some(rx) = &b.records
            {
                out.push((st, rx.clone()));
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

    fn prune_live(&mut self, st: usize) {
        let insts = &self.insts;
        if let Some(b) = self.batches[st].as_mut() {
            b.live.retain(|&id| !insts[id].is_final());
        }
    }

    /// Start foreach stages whose `after` conditions hold and create instances for
    /// free slots. Returns true when something changed.
    pub(super) fn feed_batches(&mut self) -> bool {
        let mut changed = false;
        for st in 0..self.batches.len() {
            if self.shutdown.is_some() {
                break;
            }
            if !self.batch_open(st) {
                continue;
            }
            if !self.batches[st].as_ref().is_some_and(|b| b.started) {
                match self.after_check(st) {
                    super::start::Check::Wait => continue,
                    super::start::Check::Skip(reason) => {
                        self.abandon_batch(st, State::Skipped { reason });
                        changed = true;
                        continue;
                    }
                    super::start::Check::Go => {
                        self.start_batch(st);
                        changed = true;
                        if !self.batch_open(st) {
                            continue;
                        }
                    }
                }
            }
            changed |= self.fill_slots(st);
        }
        changed
    }

    /// Expand the source (or open the queue) and announce the stage.
    fn start_batch(&mut self, st: usize) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        b.started = true;
        let source = b.source.clone();
        let name = self.plan.stages[st].name.clone();
        if let ForeachSource::Queue(_) = source {
            self.emit(Event::BatchStarted {
                stage: st,
                stage_name: name,
                total: None,
                resumed: 0,
            });
            return;
        }
        let run_dir = self.run_dir.to_string_lossy().into_owned();
        let vars = crate::plan::InstanceVars {
            stage: &name,
            index: 0,
            replicas: 0,
            item: None,
            run_dir: &run_dir,
        };
        let expanded = crate::runtime::foreach::expand(&source, &vars, &self.plan.start_dir);
        let items = match expanded {
            Ok(items) => items,
            Err(error) => {
                self.abandon_batch(st, State::CouldNotStart { error });
                return;
            }
        };
        if items.is_empty() && matches!(source, ForeachSource::Glob(_)) {
            self.notice(
                Level::Warning,
                format!("{name}: the foreach glob matched nothing; no instance runs"),
            );
        }
        let total = items.len();
        let mut resumed = 0;
        let mut queue = VecDeque::with_capacity(total);
        for (index, item) in items.into_iter().enumerate() {
            if self.resume.contains(&(name.clone(), item.clone())) {
                resumed += 1;
                self.add_item_instance(st, index, item, true);
            } else {
                queue.push_back((index, item));
            }
        }
        if let Some(b) = self.batches[st].as_mut() {
            b.items = queue;
            b.next_index = total;
        }
        self.emit(Event::BatchStarted {
            stage: st,
            stage_name: name,
            total: Some(total),
            resumed,
        });
        if resumed > 0 {
            self.notice(
                Level::Info,
                format!(
                    "{}: {resumed} of {total} items succeeded in the resumed report; not run again",
                    self.plan.stages[st].name
                ),
            );
        }
    }

    /// Create instances while slots are free; close the stage when its source is
    /// exhausted.
    fn fill_slots(&mut self, st: usize) -> bool {
        self.prune_live(st);
        let mut changed = false;
        loop {
            let Some(b) = self.batches[st].as_mut() else {
                return changed;
            };
            if b.live.len() >= b.parallel {
                break;
            }
            let next = if let Some((i, item)) = b.items.pop_front() {
                Some((i, Ok(item)))
            } else if let Some(rec) = b.held.pop_front() {
                let i = b.next_index;
                b.next_index += 1;
                Some((i, String::from_utf8(rec)))
            } else if let Some(rx) = &b.records {
                match rx.try_recv() {
                    Ok(rec) => {
                        let i = b.next_index;
                        b.next_index += 1;
                        Some((i, String::from_utf8(rec)))
                    }
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => {
                        b.records = None;
                        None
                    }
                }
            } else {
                None
            };
            let Some((index, item)) = next else { break };
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    // Items are text (argv, `${item}`, the report): a record that is not
                    // UTF-8 is reported as an item that could not start, never run with
                    // altered bytes.
                    let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
                    let id = self.add_item_instance(st, index, shown, false);
                    self.insts[id].start_error_code = 126;
                    let at = e.utf8_error().valid_up_to();
                    let error = format!("item is not valid UTF-8 (byte {at}); items are text");
                    self.finish_run(id, State::CouldNotStart { error });
                    changed = true;
                    continue;
                }
            };
            let name = &self.plan.stages[st].name;
            let resumed = matches!(
                self.batches[st].as_ref().map(|b| &b.source),
                Some(ForeachSource::Queue(_))
            ) && self.resume.contains(&(name.clone(), item.clone()));
            let id = self.add_item_instance(st, index, item, resumed);
            if !resumed && let Some(b) = self.batches[st].as_mut() {
                b.live.push(id);
            }
            changed = true;
        }
        if let Some(b) = self.batches[st].as_mut()
            && b.items.is_empty()
            && b.held.is_empty()
            && b.records.is_none()
        {
            b.closed = true;
            changed = true;
        }
        changed
    }

    /// A new instance for one item: waiting to start, or skipped when resumed.
    fn add_item_instance(
        &mut self,
        st: usize,
        index: usize,
        item: String,
        resumed: bool,
    ) -> InstanceId {
        let stage = &self.plan.stages[st];
        let id = self.insts.len();
        let info = InstanceInfo {
            id,
            name: format!("{}.{index}", stage.name),
            stage: st,
            stage_name: stage.name.clone(),
            index,
            item: Some(item),
            daemon: stage.daemon,
            resumed,
        };
        self.insts.push(Inst::new(info.clone()));
        self.live.insert(id);
        self.by_stage[st].push(id);
        self.emit(Event::InstanceAdded(info));
        self.expect_broadcast_reader(id);
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

    /// The stage will never run an item: report one placeholder instance named
    /// after the stage with `state` (skipped, or could not start).
    fn abandon_batch(&mut self, st: usize, state: State) {
        if let Some(b) = self.batches[st].as_mut() {
            b.closed = true;
            b.records = None;
            b.items.clear();
            b.held.clear();
        }
        let stage = &self.plan.stages[st];
        let id = self.insts.len();
        let info = InstanceInfo {
            id,
            name: stage.name.clone(),
            stage: st,
            stage_name: stage.name.clone(),
            index: 0,
            item: None,
            daemon: stage.daemon,
            resumed: false,
        };
        self.insts.push(Inst::new(info.clone()));
        self.live.insert(id);
        self.by_stage[st].push(id);
        self.emit(Event::InstanceAdded(info));
        match state {
            State::CouldNotStart { .. } => {
                self.insts[id].start_error_code = 1;
                self.finish_run(id, state);
            }
            other => self.end(id, other),
        }
    }

    /// The pipeline stops: no new item starts. Items not started are reported
    /// skipped; a queue source is let go (its router discards what is left).
    pub(super) fn close_batches(&mut self, reason: &str) {
        for st in 0..self.batches.len() {
            if !self.batch_open(st) {
                continue;
            }
            let started = self.batches[st].as_ref().is_some_and(|b| b.started);
            if !started {
                self.abandon_batch(
                    st,
                    State::Skipped {
                        reason: reason.to_string(),
                    },
                );
                continue;
            }
            let (items, held, mut next) = match self.batches[st].as_mut() {
                Some(b) => {
                    b.closed = true;
                    b.records = None;
                    (
                        std::mem::take(&mut b.items),
                        std::mem::take(&mut b.held),
                        b.next_index,
                    )
                }
                None => continue,
            };
            let mut rest: Vec<(usize, String)> = items.into_iter().collect();
            for rec in held {
                rest.push((next, String::from_utf8_lossy(&rec).into_owned()));
                next += 1;
            }
            for (index, item) in rest {
                let id = self.add_item_instance(st, index, item, false);
                self.end(
                    id,
                    State::Skipped {
                        reason: reason.to_string(),
                    },
                );
            }
        }
    }
}
