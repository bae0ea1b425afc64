//! A foreach stage that stops creating instances (SPEC 3.4): its source exhausted,
//! the pipeline stopped, its `halt` fired, or its source failed. What never got an
//! instance is counted (`BatchClosed`); records already taken from a queue each become
//! a `skipped` instance, and the queue's router counts what it handed prun after
//! (`reader_exited`), so no record vanishes. Also the stage-level placeholder instance
//! (a stage that never ran an item, or whose source failed).

use super::Supervisor;
use super::batch::Phase;
use super::block::Block;
use crate::event::{BatchEnd, Event, InstanceId, InstanceInfo, Level, State};
use crate::plan::ForeachSource;

impl Supervisor {
    /// No item will be created any more: announce it (with the items of the source
    /// that never got an instance) and drop the source.
    pub(super) fn close_batch(&mut self, st: usize, why: BatchEnd) {
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        if b.phase == Phase::Closed {
            return;
        }
        b.phase = Phase::Closed;
        self.later_items_ended(st);
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        let total = b.total();
        let not_started = total.map(|t| t.saturating_sub(b.taken()));
        let taken = b.taken();
        let resumed = b.tally.resumed;
        if let Some(items) = b.items.as_mut() {
            items.stop();
        }
        // A queue left before its end: the router stops handing prun records and
        // counts those it handed but prun never took (the channel is kept until then).
        if let Some(rx) = b.records.take() {
            b.left_records = Some(rx);
            if let Some((q, port)) = b.record_port
                && let Some(r) = self.routers.get(q).and_then(|r| r.as_ref())
            {
                r.reader_exited(port);
            }
        }
        let Some(b) = self.batches[st].as_mut() else {
            return;
        };
        let name = self.plan.stages[st].name.clone();
        let glob = matches!(b.source, ForeachSource::Glob(_));
        if let Some(total) = total {
            self.emit(Event::BatchTotal { stage: st, total });
        }
        self.emit(Event::BatchClosed {
            stage: st,
            not_started,
            why: why.clone(),
        });
        if why == BatchEnd::Exhausted && taken == 0 && glob {
            self.notice(
                Level::Warning,
                format!("{name}: the foreach glob matched nothing; no instance runs"),
            );
        }
        if resumed > 0 {
            self.notice(
                Level::Info,
                format!(
                    "{name}: {resumed} of {taken} items succeeded in the resumed report; not run again"
                ),
            );
        }
    }

    /// The source failed midway: one instance named after the stage reports it.
    pub(super) fn source_failed(&mut self, st: usize, error: String) {
        let id = self.placeholder(st);
        self.insts[id].start_error_code = 1;
        self.finish_run(id, State::CouldNotStart { error });
    }

    /// One instance named after the stage (not an item), for what happened to it.
    fn placeholder(&mut self, st: usize) -> InstanceId {
        let stage = &self.plan.stages[st];
        let (name, daemon) = (stage.name.clone(), stage.daemon);
        let id = self.insts.add(|id| InstanceInfo {
            id,
            name: name.clone(),
            stage: st,
            stage_name: name,
            index: 0,
            item: None,
            daemon,
            resumed: false,
        });
        self.live.insert(id);
        self.by_stage[st].push(id);
        self.emit(Event::InstanceAdded(self.insts[id].info.clone()));
        id
    }

    /// The stage will never run an item: report one placeholder instance named
    /// after the stage with `state` (skipped, or could not start).
    pub(super) fn abandon_batch(&mut self, st: usize, state: State) {
        let why = match &state {
            State::CouldNotStart { error } => BatchEnd::SourceFailed(error.clone()),
            _ => BatchEnd::Stopped,
        };
        self.close_batch(st, why);
        let id = self.placeholder(st);
        match state {
            State::CouldNotStart { .. } => {
                self.insts[id].start_error_code = 1;
                self.finish_run(id, state);
            }
            other => self.end(id, other),
        }
    }

    /// The pipeline stops: no new item starts. Items not taken from their source are
    /// counted; records already taken from a queue (held, or in a block being
    /// filled) each become a `skipped` instance, so none vanishes.
    pub(super) fn close_batches(&mut self, reason: &str) {
        for st in 0..self.batches.len() {
            let Some(phase) = self.batches[st].as_ref().map(|b| b.phase) else {
                continue;
            };
            match phase {
                Phase::Closed => {}
                Phase::Waiting => self.abandon_batch(
                    st,
                    State::Skipped {
                        reason: reason.to_string(),
                    },
                ),
                Phase::Open => {
                    self.skip_taken(st, reason);
                    self.close_batch(st, BatchEnd::Stopped);
                }
            }
        }
    }

    /// Records taken from the queue but not started yet: each a `skipped` instance.
    pub(super) fn skip_taken(&mut self, st: usize, reason: &str) {
        let mut rest: Vec<(u64, String)> = Vec::new();
        let delim = self.block_delim(st);
        if let Some(b) = self.batches[st].as_mut() {
            // Records already in prun's channel were taken from the queue: they join
            // the held ones (at most the channel's bound).
            if let Some(rx) = &b.records {
                while let Ok(r) = rx.try_recv() {
                    b.held.push_back(r);
                }
            }
            let held = std::mem::take(&mut b.held);
            if b.batch.is_some() {
                // Held records join the block being filled; a partial block is one
                // skipped instance.
                for r in held {
                    Block::push(&mut b.block, b.records_taken, &r, delim);
                    b.records_taken += 1;
                }
                if let Some(block) = b.block.take() {
                    let i = b.next_index;
                    b.next_index += 1;
                    rest.push((i, block.item()));
                }
            } else {
                for r in held {
                    let i = b.next_index;
                    b.next_index += 1;
                    b.records_taken += 1;
                    rest.push((i, String::from_utf8_lossy(&r).into_owned()));
                }
            }
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
