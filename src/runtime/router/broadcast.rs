//! Broadcast delivery (SPEC 4.2): every reader instance gets every record, in the same
//! order, including readers that join later.
//!
//! The queue is the stream itself: slices stay in it until every *member* has taken
//! them. A member is a reader instance as the supervisor announces it
//! ([`super::QueueRouter::expect_reader`]): it exists before its first process joins
//! (a stage held by `after`, a foreach item not started yet), between a death and the
//! restart, and while a process of it reads. Each member has a cursor (the next slice
//! and record to hand over); a process that joins takes over its member's cursor, so a
//! late reader starts at the first record and a restarted one goes on where the dead
//! one stopped (what it was given but never wrote comes first, the record it was cut in
//! whole). The copies held for a member count against `capacity`: depth is the largest
//! number of records some member has not taken yet, and writers block while it is full.
//! A member gets its sentinel and EOF as soon as it has every record and the writers are
//! done, whatever the others do. A member that can no longer come has its held copies
//! counted in `discarded`, never dropped silently.
//!
//! A reader attached without a member ([`super::QueueRouter::add_reader`]) is a member
//! of its own that joins now: it gets the records from the oldest one still held.

use std::collections::{HashMap, VecDeque};

use super::Engine;
use super::ReaderId;
use super::reader::{MemberKey, Reader, ReaderPhase, push_sentinel};
use super::records::Slice;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum MemberPhase {
    /// No process reads for it now; one is coming (announced, or a restart).
    Expected,
    /// Reader process `id` reads for it.
    Attached(ReaderId),
    /// It got every record, the sentinel and EOF: a later process of it (a restart)
    /// gets only the sentinel and EOF.
    Finished,
}

pub(super) struct Member {
    pub(super) phase: MemberPhase,
    /// Absolute number of the next slice of the stream to hand over, and of the first
    /// record in it.
    pub(super) next_slice: u64,
    pub(super) next_record: u64,
    /// Records a dead process of this member was given but never wrote: its next
    /// process gets them first.
    pub(super) carry: VecDeque<Slice>,
    pub(super) carry_records: u64,
    /// The last reader process of it, once one joined.
    pub(super) last: Option<ReaderId>,
}

impl Member {
    fn at(slice: u64, record: u64) -> Member {
        Member {
            phase: MemberPhase::Expected,
            next_slice: slice,
            next_record: record,
            carry: VecDeque::new(),
            carry_records: 0,
            last: None,
        }
    }
}

/// The stream's bookkeeping: absolute numbers of the queue's front and end.
#[derive(Default)]
pub(super) struct Stream {
    /// Absolute number of the queue's front slice and of the first record in it.
    pub(super) front_slice: u64,
    pub(super) front_record: u64,
    /// Records that entered the stream (the end's absolute record number).
    pub(super) end_record: u64,
    pub(super) members: HashMap<MemberKey, Member>,
}

impl Stream {
    /// Records member `m` has not taken yet (not handed over, or handed over and not
    /// written by its process, or left by a dead process for the next).
    fn held(&self, m: &Member, pending: u64) -> u64 {
        self.end_record - m.next_record + m.carry_records + pending
    }
}

impl Engine {
    /// Announce member `key` (broadcast): copies are held for it from the oldest record
    /// still in the stream (the first one, when announced before any record was
    /// trimmed) until a process of it joins, or [`Engine::member_not_coming`].
    pub(super) fn expect_member(&mut self, key: MemberKey) {
        let st = &mut self.stream;
        if st.members.contains_key(&key) {
            return;
        }
        // Records trimmed before it was announced can never reach it.
        self.stats.discarded += st.front_record;
        st.members
            .insert(key, Member::at(st.front_slice, st.front_record));
    }

    /// A process of member `key` joins as reader `r`: it takes over the member's place
    /// in the stream (what a dead process left first).
    pub(super) fn join_member(&mut self, r: &mut Reader, key: MemberKey) {
        let st = &mut self.stream;
        let m = st
            .members
            .entry(key)
            .or_insert_with(|| Member::at(st.front_slice, st.front_record));
        r.member = Some(key);
        m.last = Some(r.id);
        if m.phase == MemberPhase::Finished {
            // It had every record already (a restart after EOF): sentinel and EOF.
            r.phase = ReaderPhase::Finishing;
            push_sentinel(self.sentinel_record.as_ref(), r);
            return;
        }
        if let MemberPhase::Attached(old) = m.phase {
            // A second process for one member: the first one is done with it.
            if let Some(o) = self.readers.iter_mut().find(|o| o.id == old) {
                o.member = None;
            }
        }
        m.phase = MemberPhase::Attached(r.id);
        for s in m.carry.drain(..) {
            r.push_pending(s);
        }
        m.carry_records = 0;
    }

    /// Member `key` will not read any more (its instance ended or can no longer start):
    /// the copies held for it are counted in `discarded`. A process of it still reading
    /// finishes first (its end is counted then).
    pub(super) fn member_not_coming(&mut self, key: MemberKey) {
        let Some(m) = self.stream.members.get(&key) else {
            return;
        };
        if m.phase != MemberPhase::Expected {
            return;
        }
        let m = self.stream.members.remove(&key).expect("present");
        self.stats.discarded += self.stream.held(&m, 0);
        self.after_member_left();
        self.strand_if_no_reader();
    }

    /// A member left and what it held was counted: drop what nobody else holds. When it
    /// was the last member, the whole queue goes (counted with it), so that what is
    /// kept from now on for readers still to come is counted only once.
    fn after_member_left(&mut self) {
        if self.stream.members.is_empty() {
            self.clear_queue();
        } else {
            self.trim_stream();
        }
    }

    /// A broadcast member waits for a process of it to join.
    pub(super) fn members_expected(&self) -> bool {
        self.stream
            .members
            .values()
            .any(|m| m.phase == MemberPhase::Expected)
    }

    /// Broadcast depth: the most records some member has not taken yet.
    pub(super) fn broadcast_depth(&self) -> u64 {
        let st = &self.stream;
        st.members
            .iter()
            .filter_map(|(key, m)| {
                let pending = match m.phase {
                    MemberPhase::Attached(id) => self
                        .readers
                        .iter()
                        .find(|r| r.id == id && r.member == Some(*key))
                        .map_or(0, |r| r.pending_records),
                    MemberPhase::Expected => 0,
                    MemberPhase::Finished => return None,
                };
                Some(st.held(m, pending))
            })
            .max()
            .unwrap_or(self.queued_records)
    }

    /// Hand every live reader the slices it has not got yet, then drop the slices every
    /// member has.
    pub(super) fn dispatch_broadcast(&mut self) {
        let st = &mut self.stream;
        for r in self.readers.iter_mut().filter(|r| r.live()) {
            let Some(m) = r.member.and_then(|k| st.members.get_mut(&k)) else {
                continue;
            };
            let from = (m.next_slice - st.front_slice) as usize;
            for s in self.queue.iter().skip(from) {
                r.push_pending(s.clone());
                m.next_record += s.records;
            }
            m.next_slice = st.front_slice + self.queue.len() as u64;
        }
        self.trim_stream();
    }

    /// Drop the front slices that every member has taken (with no member at all, the
    /// stream is kept for readers to come, until `close_readers`).
    pub(super) fn trim_stream(&mut self) {
        let st = &mut self.stream;
        let Some(oldest) = st
            .members
            .values()
            .filter(|m| m.phase != MemberPhase::Finished)
            .map(|m| m.next_slice)
            .min()
        else {
            if st.members.is_empty() {
                return;
            }
            // Every member finished: it all was taken.
            self.stream.front_slice += self.queue.len() as u64;
            self.stream.front_record += self.queued_records;
            self.queue.clear();
            self.queued_records = 0;
            self.queued_bytes = 0;
            return;
        };
        while st.front_slice < oldest {
            let Some(s) = self.queue.pop_front() else {
                break;
            };
            st.front_slice += 1;
            st.front_record += s.records;
            self.queued_records -= s.records;
            self.queued_bytes = self.queued_bytes.saturating_sub(s.len());
        }
    }

    /// Reader `i` (broadcast) went away with `back` unwritten (the head already cut to
    /// a record boundary). If its member may restart, these wait for the restart, with
    /// the member's place in the stream; otherwise the member ends and what it held is
    /// counted as never delivered (`in_flight_at_failure`).
    pub(super) fn broadcast_reader_gone(&mut self, i: usize, back: Vec<Slice>) {
        let r = &mut self.readers[i];
        let key = r.member.take();
        let restarts = r.may_restart;
        let records: u64 = back.iter().filter(|s| !s.sentinel).map(|s| s.records).sum();
        let Some(key) = key else {
            self.stats.in_flight_at_failure += records;
            return;
        };
        let Some(m) = self.stream.members.get_mut(&key) else {
            return;
        };
        if restarts {
            m.phase = MemberPhase::Expected;
            m.carry = back.into_iter().filter(|s| !s.sentinel).collect();
            m.carry_records = records;
            return;
        }
        let m = self.stream.members.remove(&key).expect("present");
        self.stats.in_flight_at_failure += records + self.stream.held(&m, 0);
        self.after_member_left();
    }

    /// The restart awaited for dead reader `id` will not come: its member ends.
    pub(super) fn broadcast_not_coming(&mut self, id: ReaderId) {
        let key = self.stream.members.iter().find_map(|(k, m)| {
            (m.phase == MemberPhase::Expected && m.last == Some(id)).then_some(*k)
        });
        if let Some(k) = key {
            self.member_not_coming(k);
        }
    }

    /// End of stream (writers done) for broadcast: each live reader whose member has
    /// every record gets the sentinel and EOF at once, whatever the others do. True
    /// once no reader is open and no member is expected: the queue is drained.
    pub(super) fn broadcast_end(&mut self) -> bool {
        self.finishing = true;
        let sentinel = self.sentinel_record.clone();
        let st = &self.stream;
        let end_slice = st.front_slice + self.queue.len() as u64;
        for r in self.readers.iter_mut().filter(|r| r.live()) {
            let done = r
                .member
                .and_then(|k| st.members.get(&k))
                .is_none_or(|m| m.next_slice >= end_slice);
            if done {
                r.phase = ReaderPhase::Finishing;
                push_sentinel(sentinel.as_ref(), r);
            }
        }
        let now = std::time::Instant::now();
        self.write_readers(now);
        // Publish before any reader sees EOF (see `check_end`).
        self.publish();
        let mut ended = Vec::new();
        for r in self.readers.iter_mut() {
            if matches!(r.phase, ReaderPhase::Finishing) && r.pending.is_empty() {
                r.give_eof();
                if let Some(k) = r.member.take() {
                    ended.push(k);
                }
            }
        }
        for k in ended {
            if let Some(m) = self.stream.members.get_mut(&k) {
                m.phase = MemberPhase::Finished;
            }
        }
        self.trim_stream();
        !self.members_expected() && !self.readers.iter().any(Reader::is_open)
    }

    /// The stream is abandoned (cut, abort, no reader left): empty the queue, keeping the
    /// absolute numbering, and drop what dead processes left for their restarts.
    /// Returns the records dropped from the queue and from those carries.
    pub(super) fn clear_queue(&mut self) -> u64 {
        let st = &mut self.stream;
        st.front_slice += self.queue.len() as u64;
        st.front_record += self.queued_records;
        let mut dropped = self.queued_records;
        for m in st.members.values_mut() {
            dropped += m.carry_records;
            m.carry.clear();
            m.carry_records = 0;
            m.next_slice = m.next_slice.max(st.front_slice);
            m.next_record = m.next_record.max(st.front_record);
        }
        self.queue.clear();
        self.queued_records = 0;
        self.queued_bytes = 0;
        dropped
    }
}
