//! The writers' ranks of `order: writers` queues (SPEC 4.2): the supervisor tells each
//! such queue's router which writer instances will write it and in what order (stage
//! in file order, then instance index or foreach item position), attaches each writer
//! pipe with its instance's rank, and says when a rank is over (the instance ended for
//! good; a foreach stage stopped creating items). A restarted instance keeps its rank,
//! so its records stay in one group with those of the runs before it. See
//! [`crate::runtime::router`]'s `order` room for what the router does with them.

use super::Supervisor;
use super::queues::output_queues;
use crate::event::InstanceId;
use crate::plan::{Order, QueueId};
use crate::runtime::router::{QueueRouter, WriterRank};

impl Supervisor {
    /// Where instance `id`'s records go in an ordered queue; none for the stand-in
    /// instance of a foreach stage that never runs an item.
    pub(super) fn writer_rank(&self, id: InstanceId) -> Option<WriterRank> {
        let info = &self.insts.get(id)?.info;
        if self.batches[info.stage].is_some() && info.item.is_none() {
            return None;
        }
        Some(WriterRank::new(info.stage, info.index as u64))
    }

    /// The routers of the `order: writers` queues stage `st` writes.
    fn ordered_outputs(&self, st: usize) -> Vec<(QueueId, &QueueRouter)> {
        output_queues(&self.plan.stages[st])
            .into_iter()
            .filter(|&q| self.plan.queues[q].order == Order::Writers)
            .filter_map(|q| self.routers[q].as_ref().map(|r| (q, r)))
            .collect()
    }

    /// Instance `id` exists: the ordered queues it writes hold later writers' records
    /// for its own.
    pub(super) fn expect_ordered_writer(&self, id: InstanceId) {
        let Some(rank) = self.writer_rank(id) else {
            return;
        };
        for (_, r) in self.ordered_outputs(self.insts[id].info.stage) {
            r.expect_writer(rank);
        }
    }

    /// Instance `id` ended for good: once its streams are over, the ordered queues it
    /// writes pass the turn on.
    pub(super) fn ordered_writer_ended(&self, id: InstanceId) {
        let Some(rank) = self.writer_rank(id) else {
            return;
        };
        for (_, r) in self.ordered_outputs(self.insts[id].info.stage) {
            r.writer_rank_ended(rank);
        }
    }

    /// At the start: every writer instance known now, and the items still to come of
    /// every foreach stage (they rank before the stages after it).
    pub(super) fn announce_writer_ranks(&self) {
        for id in self.insts.ids() {
            self.expect_ordered_writer(id);
        }
        for st in 0..self.batches.len() {
            if self.batch_open(st) {
                for (_, r) in self.ordered_outputs(st) {
                    r.expect_writer(WriterRank::later_items(st));
                }
            }
        }
    }

    /// Foreach stage `st` creates no more items.
    pub(super) fn later_items_ended(&self, st: usize) {
        for (_, r) in self.ordered_outputs(st) {
            r.writer_rank_ended(WriterRank::later_items(st));
        }
    }

    /// Attach writer pipe `port` of instance `id` to queue `q`'s router, with its rank
    /// when the queue is ordered.
    pub(super) fn attach_writer(
        &self,
        q: QueueId,
        port: usize,
        id: InstanceId,
        fd: std::os::fd::OwnedFd,
    ) {
        let Some(r) = &self.routers[q] else {
            return;
        };
        match self.writer_rank(id) {
            Some(rank) if self.plan.queues[q].order == Order::Writers => {
                r.add_ranked_writer(port, rank, fd)
            }
            _ => r.add_writer(port, fd),
        }
    }
}
