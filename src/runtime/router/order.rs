//! `order: writers` (SPEC 4.2): a queue's records are delivered grouped by writer, in
//! writer order, like `cat <(a) <(b)`, while the writers still run in parallel.
//!
//! **Ranks.** Every writer pipe belongs to a [`WriterRank`]: the writer instance's stage
//! in file order, then its instance index or foreach item position. The supervisor
//! announces each rank before any pipe is attached ([`Engine::expect_writer`]), a
//! foreach stage whose items are still to come as [`WriterRank::later_items`], and says
//! when a rank is over for good ([`Engine::rank_ended`]: the instance ended and no
//! restart is pending, or it can no longer start; the stage created its last item).
//! A restarted instance keeps its rank: the pipes of one rank take turns in the order
//! they were attached (stdout before stderr before `fds`, a restart after the run
//! before it). A pipe attached without a rank (a router driven without a supervisor)
//! ranks after every ranked one, in attach order, and its rank ends with its stream.
//!
//! **The turn.** The turn is the first pipe (by rank, then attach order) whose stream is
//! not over, unless a rank before it is still open without an open pipe (announced, not
//! started yet, or awaiting a restart): then nobody has the turn. The writer with the
//! turn puts its records into the queue as under `order: arrival` (and may use the
//! direct path); every other writer's records *wait*, in that writer's `waiting` list,
//! outside the queue. When a stream ends (EOF, sentinel, torn record settled, any way
//! its process ended), the turn passes on and the next writer's waiting records enter
//! the queue at once, in their order, before anything it writes later. So the queue
//! holds the writers' records group by group, and every reader takes them in the
//! queue's order. Each writer that gets the turn gets the next *group* number, carried
//! by its slices: a reader is never handed a record of a lower group than one it
//! already has (records given back by a dead reader included, see `Reader::in_order`).
//!
//! **Capacity.** Waiting records count in the queue's depth, so `capacity` bounds
//! everything prun holds for the queue. Waiting records may take at most half of it
//! (and half of `MAX_HELD_BYTES`): the writer with the turn always has room, so later
//! writers filling prun can never stall the earlier one. Past that share, later writers
//! are no longer read and block on their full pipes, like any writer of a full queue.

use std::collections::{BTreeMap, VecDeque};

use super::WriterRank;
use super::records::Slice;
use super::{Engine, MAX_HELD_BYTES};

/// The writers' turns of an `order: writers` queue.
#[derive(Default)]
pub(super) struct Turns {
    /// Ranks not over yet, in order, each with its pipes (by attach serial).
    ranks: BTreeMap<WriterRank, Rank>,
    /// Ranks given to pipes attached without one.
    unranked: u64,
    /// The writer slot that has the turn.
    pub(super) turn: Option<usize>,
    /// The group number the next writer to get the turn gets.
    next_group: u64,
    /// The highest group handed to a reader: only slices of it can be taken back from a
    /// stuck reader without another reader having later records.
    pub(super) top_group: u64,
    /// Ranks or pipes changed since the turn was last looked for.
    dirty: bool,
}

#[derive(Default)]
struct Rank {
    /// No pipe will be attached for it any more.
    ended: bool,
    /// Its pipes' attach serials ([`super::writer::Writer::serial`]), oldest first.
    pipes: VecDeque<u64>,
}

impl Engine {
    /// Records of writers without the turn may take at most this share of `capacity`.
    fn waiting_cap(&self) -> u64 {
        self.capacity() / 2
    }

    /// Writer `wi` puts its records into the queue now (always, under `order: arrival`).
    pub(super) fn has_turn(&self, wi: usize) -> bool {
        self.turns.as_ref().is_none_or(|t| t.turn == Some(wi))
    }

    /// Records writer `wi` may still put into prun now: the queue's room, and for a
    /// writer without the turn, what is left of the waiting share.
    pub(super) fn room_for(&self, wi: usize) -> u64 {
        let room = self.capacity().saturating_sub(self.depth());
        if self.has_turn(wi) {
            return room;
        }
        if self.waiting_bytes >= MAX_HELD_BYTES / 2 {
            return 0;
        }
        room.min(self.waiting_cap().saturating_sub(self.waiting_records))
    }

    /// Writer `wi` may be read now (there is room for what it writes).
    pub(super) fn may_read(&self, wi: usize) -> bool {
        !self.full() && self.room_for(wi) > 0
    }

    /// A rank is announced: its records come after those of every lower rank.
    pub(super) fn expect_writer(&mut self, rank: WriterRank) {
        if let Some(t) = self.turns.as_mut() {
            t.ranks.entry(rank).or_default();
            t.dirty = true;
        }
    }

    /// No pipe will be attached for `rank` any more: once its pipes' streams are over,
    /// the turn passes on.
    pub(super) fn rank_ended(&mut self, rank: WriterRank) {
        if let Some(t) = self.turns.as_mut()
            && let Some(r) = t.ranks.get_mut(&rank)
        {
            r.ended = true;
            t.dirty = true;
        }
    }

    /// No writer will be attached any more (`close_writers`): every rank is ended.
    pub(super) fn all_ranks_ended(&mut self) {
        if let Some(t) = self.turns.as_mut() {
            for r in t.ranks.values_mut() {
                r.ended = true;
            }
            t.dirty = true;
        }
    }

    /// A pipe with attach serial `serial` joins `rank` (none: after every ranked one).
    pub(super) fn rank_pipe(&mut self, serial: u64, rank: Option<WriterRank>) {
        let Some(t) = self.turns.as_mut() else {
            return;
        };
        let (rank, ended) = match rank {
            Some(r) => (r, false),
            None => {
                t.unranked += 1;
                (WriterRank::new(usize::MAX, t.unranked - 1), true)
            }
        };
        let r = t.ranks.entry(rank).or_default();
        r.ended |= ended;
        r.pipes.push_back(serial);
        t.dirty = true;
    }

    /// Writer `wi` has no turn: its slice waits.
    pub(super) fn hold(&mut self, wi: usize, s: Slice) {
        self.waiting_records += s.records;
        self.waiting_bytes += s.len();
        let w = &mut self.writers[wi];
        w.waiting_records += s.records;
        w.waiting.push_back(s);
    }

    /// Pass the turn on if its writer's stream is over, or ranks and pipes changed:
    /// the next writer's waiting records enter the queue.
    pub(super) fn advance_turn(&mut self) {
        let Some(t) = self.turns.as_mut() else {
            return;
        };
        let over = t.turn.is_some_and(|wi| self.writers[wi].reported());
        if !std::mem::take(&mut t.dirty) && !over {
            return;
        }
        loop {
            let Some(t) = self.turns.as_mut() else {
                return;
            };
            let Some(mut first) = t.ranks.first_entry() else {
                t.turn = None;
                return;
            };
            let Some(&serial) = first.get().pipes.front() else {
                if first.get().ended {
                    first.remove();
                    continue;
                }
                t.turn = None;
                return;
            };
            let Some(wi) = self.writers.iter().position(|w| w.serial == serial) else {
                // Its slot went to a later writer: its stream was over, nothing waits.
                first.get_mut().pipes.pop_front();
                continue;
            };
            if t.turn != Some(wi) {
                t.turn = Some(wi);
                let group = t.next_group;
                t.next_group += 1;
                let w = &mut self.writers[wi];
                w.group = group;
                let waiting = std::mem::take(&mut w.waiting);
                self.waiting_records -= std::mem::take(&mut w.waiting_records);
                for mut s in waiting {
                    self.waiting_bytes -= s.len();
                    s.group = group;
                    self.enqueue(s);
                }
            }
            if !self.writers[wi].reported() {
                return;
            }
            if let Some(t) = self.turns.as_mut()
                && let Some(mut first) = t.ranks.first_entry()
            {
                first.get_mut().pipes.pop_front();
            }
        }
    }

    /// The stream is abandoned (cut, abort, no reader left): drop every waiting record;
    /// returns how many, for the caller to count.
    pub(super) fn drop_waiting(&mut self) -> u64 {
        for w in &mut self.writers {
            w.waiting.clear();
            w.waiting_records = 0;
        }
        self.waiting_bytes = 0;
        std::mem::take(&mut self.waiting_records)
    }

    /// The writer slot with the turn (not reused for a new writer while it has it).
    pub(super) fn turn_slot(&self) -> Option<usize> {
        self.turns.as_ref().and_then(|t| t.turn)
    }
}
