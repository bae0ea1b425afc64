//! The poll loop: the router thread of one queue, which owns every descriptor and every
//! buffered record of the queue (see the design notes in the parent module). Each round
//! takes the supervisor's commands, reads writers ([`super::writer`]), dispatches
//! records ([`super::dispatch`]), writes readers ([`super::deliver`]), checks for the
//! end of the stream, publishes the counters and waits in `poll`.
//!
//! Data path: writer pipe → `read` (shared delivery: `tee` + read of the copy) into a
//! block → cut at the last delimiter → the complete part becomes a shared [`Slice`] in
//! the queue → dispatch assigns slices (or record-exact sub-slices) to readers' `pending`
//! lists → `writev` into reader pipes, or `splice` from the writer's pipe for bytes still
//! at its head (a [`super::blocks::Shadow`]). A slice always starts and ends on record
//! boundaries, and once a reader was given a slice it is the only one that ever gets
//! those bytes, so partial pipe writes (or splices) can never tear a record. The direct
//! path ([`super::direct`]) skips the queue while nothing waits in it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use memchr::memmem;

use super::blocks::{BlockPool, USE_SPLICE, peek_pipes};
use super::broadcast::Stream;
use super::order::Turns;
use super::reader::push_sentinel;
use super::reader::{MemberKey, READER_PIPE, Reader, ReaderPhase, Sink};
use super::records::Slice;
use super::sys;
use super::writer::{WRITER_PIPE, Writer, WriterPhase};
use super::{
    Command, EAGER_ROUNDS, Engine, MAX_HELD_BYTES, QueueConfig, QueueStats, ReaderId, RouterEvent,
    Slot, TICK_MS, WriterId, WriterRank,
};
use crate::plan::{Delivery, Order};

impl Engine {
    pub(super) fn new(
        cfg: QueueConfig,
        events: Sender<RouterEvent>,
        cmds: Receiver<Command>,
        waker: Arc<sys::Waker>,
        shared_stats: Arc<Mutex<QueueStats>>,
    ) -> Engine {
        let delim = cfg.framing.delimiter();
        let cfg_order = cfg.order;
        let sentinel_record = cfg.sentinel.as_ref().map(|s| {
            let mut v = s.clone();
            v.extend(delim);
            Arc::new(v)
        });
        // A writer-emitted sentinel is only recognisable between delimiters.
        let sentinel_finder = match (&cfg.sentinel, delim) {
            (Some(s), Some(d)) => {
                let mut pat = vec![d];
                pat.extend_from_slice(s);
                pat.push(d);
                Some(memmem::Finder::new(&pat).into_owned())
            }
            _ => None,
        };
        let (peek, null) = if cfg.delivery == Delivery::Shared && USE_SPLICE {
            peek_pipes()
        } else {
            (None, None)
        };
        Engine {
            cfg,
            delim,
            sentinel_record,
            sentinel_finder,
            events,
            cmds,
            waker,
            shared_stats,
            stats: QueueStats::default(),
            writers: Vec::new(),
            readers: Vec::new(),
            queue: VecDeque::new(),
            queued_records: 0,
            queued_bytes: 0,
            writers_closed: false,
            readers_final: false,
            finishing: false,
            rr: 0,
            handed_back: false,
            handed: Vec::new(),
            awaited: Vec::new(),
            retired_writers: 0,
            retired_readers: 0,
            writer_outcomes: false,
            turns: (cfg_order == Order::Writers).then(Turns::default),
            waiting_records: 0,
            waiting_bytes: 0,
            next_serial: 0,
            stream: Stream::default(),
            blocked_since: None,
            scratch: Vec::new(),
            pool: BlockPool::default(),
            peek,
            null,
            pollfds: Vec::new(),
            woken: true,
        }
    }

    pub(super) fn run(mut self) {
        let mut eager = 0;
        let mut drained = false;
        loop {
            if !self.handle_commands() {
                break;
            }
            if drained {
                // After `Drained`: only to count what readers that got EOF leave unread
                // when they exit (`reader_exited`), until none is left or `abort`.
                // Broadcast: also until the supervisor says no reader instance can come
                // any more (`close_readers`): one announced now (a foreach item started
                // late) has what it missed counted (`expect_member`) and gets its
                // sentinel and EOF.
                let broadcast = self.cfg.delivery == Delivery::Broadcast;
                if broadcast {
                    self.broadcast_end();
                }
                if !self.readers.iter().any(|r| r.watched()) && (!broadcast || self.readers_final) {
                    break;
                }
                self.publish();
                if self.wait().is_err() {
                    break;
                }
                continue;
            }
            let now = Instant::now();
            self.advance_turn();
            self.read_writers();
            self.advance_turn();
            self.dispatch(now);
            self.write_readers(now);
            if std::mem::take(&mut self.handed_back) {
                // Records handed back by a reader that vanished during the writes.
                self.dispatch(now);
                self.write_readers(now);
            }
            self.track_blocked(now);
            self.forget_ended_readers();
            if self.check_end() {
                drained = true;
                continue;
            }
            self.publish();
            if eager < EAGER_ROUNDS && self.more_to_read() {
                // poll would return at once: the writer has more and there is room.
                eager += 1;
                continue;
            }
            eager = 0;
            if self.wait().is_err() {
                // poll itself failed (should not happen): stop rather than spin.
                self.abort();
                break;
            }
        }
        self.publish();
    }

    pub(super) fn emit(&self, ev: RouterEvent) {
        // The supervisor may have stopped listening; nothing to do about it here.
        let _ = self.events.send(ev);
    }

    /// Records prun holds for the queue: queued, pending at readers (broadcast: the
    /// most some member has not taken), and waiting for their writer's turn.
    pub(super) fn depth(&self) -> u64 {
        let stream = match self.cfg.delivery {
            Delivery::Shared => {
                self.queued_records + self.held_by_readers(|r| r.pending_records as usize) as u64
            }
            Delivery::Broadcast => self.broadcast_depth(),
        };
        stream + self.waiting_records
    }

    /// What open readers hold between them: the sum (shared), or the largest (with
    /// broadcast every reader holds the same records).
    pub(super) fn held_by_readers(&self, held: impl Fn(&Reader) -> usize) -> usize {
        let each = self.readers.iter().filter(|r| r.is_open()).map(held);
        match self.cfg.delivery {
            Delivery::Shared => each.sum(),
            Delivery::Broadcast => each.max().unwrap_or(0),
        }
    }

    /// Bytes of the records held for readers: queued, or pending at a reader (with
    /// broadcast every reader holds the same blocks, so the largest share counts).
    pub(super) fn held_bytes(&self) -> usize {
        debug_assert_eq!(
            self.queued_bytes,
            self.queue.iter().map(Slice::len).sum::<usize>(),
            "queued bytes"
        );
        debug_assert!(
            self.readers
                .iter()
                .all(|r| r.pending_bytes == r.pending.iter().map(Slice::len).sum::<usize>()),
            "pending bytes"
        );
        self.queued_bytes + self.held_by_readers(|r| r.pending_bytes) + self.waiting_bytes
    }

    /// No more records may be taken from writers: `capacity` records are held, or
    /// [`MAX_HELD_BYTES`] of them.
    pub(super) fn full(&self) -> bool {
        self.depth() >= self.capacity() || self.held_bytes() >= MAX_HELD_BYTES
    }

    /// A writer's last read filled its request and the queue has room: the next round
    /// would read again at once, so polling first would only cost a system call.
    pub(super) fn more_to_read(&self) -> bool {
        !self.full()
            && self.writers.iter().enumerate().any(|(i, w)| {
                w.fd.is_some() && w.readable && w.full_read && !w.backlog() && self.may_read(i)
            })
    }

    pub(super) fn capacity(&self) -> u64 {
        self.cfg.capacity.max(1) as u64
    }

    // ---- commands -------------------------------------------------------------------

    /// Returns false when the router must stop (abort).
    pub(super) fn handle_commands(&mut self) -> bool {
        if std::mem::take(&mut self.woken) {
            self.waker.drain();
        }
        while let Ok(cmd) = self.cmds.try_recv() {
            if !self.handle_command(cmd) {
                return false;
            }
        }
        true
    }

    /// Returns false when the router must stop (abort).
    pub(super) fn handle_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::AddWriter(id, rank, fd) => self.add_writer(id, rank, fd),
            Command::ExpectWriter(rank) => self.expect_writer(rank),
            Command::RankEnded(rank) => self.rank_ended(rank),
            Command::AddReader(id, fd) => {
                let raw = fd.as_raw_fd();
                let _ = sys::set_nonblocking(raw);
                let cap = sys::set_pipe_size(raw, READER_PIPE);
                self.add_reader(Reader::new(id, Sink::Pipe(fd), cap));
            }
            Command::AddChannelReader(id, tx) => {
                self.add_reader(Reader::new(id, Sink::Channel(tx), 64 * 1024))
            }
            Command::AddMemberReader(id, member, fd) => {
                let raw = fd.as_raw_fd();
                let _ = sys::set_nonblocking(raw);
                let cap = sys::set_pipe_size(raw, READER_PIPE);
                let mut r = Reader::new(id, Sink::Pipe(fd), cap);
                r.member = Some(MemberKey::Instance(member));
                self.add_reader(r);
            }
            Command::ExpectReader(member) => {
                if self.cfg.delivery == Delivery::Broadcast {
                    self.expect_member(MemberKey::Instance(member));
                }
            }
            Command::MemberNotComing(member) => {
                if self.cfg.delivery == Delivery::Broadcast {
                    self.member_not_coming(MemberKey::Instance(member));
                }
            }
            Command::ReaderExited(id) => {
                // An open one, or one that got EOF and is watched (see `watch`).
                let idx = self
                    .readers
                    .iter()
                    .position(|r| r.id == id && (r.is_open() || r.watched()));
                if let Some(i) = idx {
                    self.reader_gone(i);
                }
            }
            Command::CloseWriters => {
                self.writers_closed = true;
                self.all_ranks_ended();
            }
            Command::CloseReaders => {
                self.readers_final = true;
                self.strand_if_no_reader();
            }
            Command::MayRestart(id) => {
                if let Some(r) = self.readers.iter_mut().find(|r| r.id == id) {
                    r.may_restart = true;
                }
            }
            Command::ReaderNotComing(id) => {
                self.awaited.retain(|&a| a != id);
                if self.cfg.delivery == Delivery::Broadcast {
                    self.broadcast_not_coming(id);
                }
            }
            Command::WriterEnded(id, succeeded) => self.writer_ended(id, succeeded),
            Command::AwaitOutcomes => self.writer_outcomes = true,
            Command::Cut => self.cut_stream(),
            Command::Abort => {
                self.abort();
                return false;
            }
        }
        true
    }

    pub(super) fn add_writer(&mut self, id: WriterId, rank: Option<WriterRank>, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let _ = sys::set_nonblocking(raw);
        sys::grow_pipe(raw, WRITER_PIPE);
        let no_reader = self.readers_final && !self.readers.iter().any(|r| r.is_open());
        let mut w = Writer::new(id, fd, self.peek.is_some());
        w.serial = self.next_serial;
        self.next_serial += 1;
        self.rank_pipe(w.serial, rank);
        if no_reader {
            // Like a shell pipeline whose reader is gone: the writer sees EPIPE.
            w.fd = None;
            w.phase = WriterPhase::Done;
            self.emit(RouterEvent::WriterDone {
                queue: self.cfg.queue,
                writer: id,
            });
        }
        match self.free_writer_slot() {
            Some(wi) => {
                // The slot's writer ended and none of its records are held any more:
                // its count moves to the published totals, its order marks are reset.
                let old = std::mem::replace(&mut self.writers[wi], w);
                self.retire_count(Some((old.id, old.records)), None);
                self.handed[wi] = 0;
                for r in &mut self.readers {
                    if let Some(h) = r.high.get_mut(wi) {
                        *h = 0;
                    }
                }
            }
            None => {
                self.writers.push(w);
                self.handed.push(0);
            }
        }
    }

    /// A writer slot that can be reused: its writer is done and none of its records is
    /// held (queued or pending at a reader), so nothing refers to its index any more.
    /// This is what keeps the router's memory flat over any number of writer restarts.
    fn free_writer_slot(&self) -> Option<usize> {
        let free = |wi: usize| {
            let w = &self.writers[wi];
            w.phase == WriterPhase::Done && w.waiting.is_empty() && self.turn_slot() != Some(wi)
        };
        if !(0..self.writers.len()).any(free) {
            return None;
        }
        let mut held = vec![false; self.writers.len()];
        let pending = self.readers.iter().flat_map(|r| r.pending.iter());
        for s in self.queue.iter().chain(pending) {
            if let Some(h) = held.get_mut(s.writer) {
                *h = true;
            }
        }
        (0..self.writers.len()).find(|&wi| free(wi) && !held[wi])
    }

    /// Forget readers that ended (`ReaderGone` sent, or EOF given and nothing left to
    /// count): a restarting reader stage adds one per restart.
    pub(super) fn forget_ended_readers(&mut self) {
        if !self.readers.iter().any(Reader::ended) {
            return;
        }
        let mut k = 0;
        while k < self.readers.len() {
            if self.readers[k].ended() {
                let r = self.readers.remove(k);
                self.retire_count(None, Some((r.id, r.delivered)));
                if self.rr > k {
                    self.rr -= 1;
                }
            } else {
                k += 1;
            }
        }
        if self.rr >= self.readers.len() {
            self.rr = 0;
        }
    }

    /// Move a forgotten writer's or reader's count into the published totals.
    fn retire_count(&mut self, writer: Option<(WriterId, u64)>, reader: Option<(ReaderId, u64)>) {
        if let Ok(mut g) = self.shared_stats.lock() {
            if let Some(e) = writer {
                g.per_writer.truncate(self.retired_writers);
                g.per_writer.push(e);
                self.retired_writers += 1;
            }
            if let Some(e) = reader {
                g.per_reader.truncate(self.retired_readers);
                g.per_reader.push(e);
                self.retired_readers += 1;
            }
        }
    }

    pub(super) fn add_reader(&mut self, mut r: Reader) {
        r.served = self
            .readers
            .iter()
            .filter(|o| o.live())
            .map(|o| o.served)
            .min()
            .unwrap_or(0);
        if self.cfg.delivery == Delivery::Broadcast {
            // Its place in the stream is its member's (see `broadcast`).
            let key = r.member.unwrap_or(MemberKey::Reader(r.id));
            self.join_member(&mut r, key);
        } else if self.finishing {
            // Joined after the end of stream: only the sentinel, then EOF.
            r.phase = ReaderPhase::Finishing;
            push_sentinel(self.sentinel_record.as_ref(), &mut r);
        }
        self.readers.push(r);
    }

    // ---- end of stream --------------------------------------------------------------

    /// Returns true when the queue is drained and the thread may end.
    pub(super) fn check_end(&mut self) -> bool {
        if !self.writers_closed || !self.writers.iter().all(Writer::finished) {
            return false;
        }
        if self.cfg.delivery == Delivery::Broadcast {
            if !self.queue.is_empty()
                && self.readers_final
                && !self.readers.iter().any(Reader::is_open)
                && !self.members_expected()
            {
                self.strand_if_no_reader();
            }
            if !self.broadcast_end() {
                return false;
            }
            self.publish();
            self.emit(RouterEvent::Drained {
                queue: self.cfg.queue,
            });
            return true;
        }
        let any_open = self.readers.iter().any(|r| r.is_open());
        if !self.queue.is_empty() {
            if any_open {
                return false;
            }
            // Nobody to deliver to; only a reader added later could take them.
            if !self.readers_final {
                return false;
            }
            self.strand_if_no_reader();
        }
        if !self.finishing {
            if self
                .readers
                .iter()
                .any(|r| r.live() && r.pending_records > 0)
            {
                // Records are still pending (maybe one partly written): a reader that
                // dies now hands them back, and the others must still be open to take
                // them (SPEC 4.5). Sentinels and EOF only once every record is written.
                return false;
            }
            self.finishing = true;
            let sentinel = self.sentinel_record.clone();
            for r in self.readers.iter_mut().filter(|r| r.live()) {
                r.phase = ReaderPhase::Finishing;
                push_sentinel(sentinel.as_ref(), r);
            }
            let now = Instant::now();
            self.write_readers(now);
        }
        // Publish before any reader sees EOF: once the readers exit, the supervisor may
        // end the run and read the statistics (the sentinels just written included).
        self.publish();
        for r in self.readers.iter_mut() {
            if matches!(r.phase, ReaderPhase::Finishing) && r.pending.is_empty() {
                r.give_eof();
            }
        }
        if self.readers.iter().any(|r| r.is_open()) {
            return false;
        }
        self.publish();
        self.emit(RouterEvent::Drained {
            queue: self.cfg.queue,
        });
        true
    }

    // ---- waiting and bookkeeping ----------------------------------------------------

    pub(super) fn track_blocked(&mut self, now: Instant) {
        let writers_open = self
            .writers
            .iter()
            .any(|w| w.fd.is_some() && !w.discarding());
        let full = writers_open && self.full();
        match (full, self.blocked_since) {
            (true, None) => self.blocked_since = Some(now),
            (false, Some(t)) => {
                self.stats.blocked_ms += now.duration_since(t).as_millis() as u64;
                self.blocked_since = None;
            }
            _ => {}
        }
    }

    /// Copy the counters where [`super::QueueRouter::stats`] reads them: the totals, and
    /// the counts of live writers and readers after those of forgotten ones.
    pub(super) fn publish(&mut self) {
        let mut blocked_ms = self.stats.blocked_ms;
        if let Some(t) = self.blocked_since {
            blocked_ms += t.elapsed().as_millis() as u64;
        }
        let Ok(mut g) = self.shared_stats.lock() else {
            return;
        };
        let mut per_writer = std::mem::take(&mut g.per_writer);
        let mut per_reader = std::mem::take(&mut g.per_reader);
        per_writer.truncate(self.retired_writers);
        per_writer.extend(self.writers.iter().map(|w| (w.id, w.records)));
        per_reader.truncate(self.retired_readers);
        per_reader.extend(self.readers.iter().map(|r| (r.id, r.delivered)));
        *g = QueueStats {
            blocked_ms,
            depth: self.depth(),
            per_writer,
            per_reader,
            ..self.stats.clone()
        };
    }

    pub(super) fn wait(&mut self) -> io::Result<()> {
        let mut slots = Vec::with_capacity(1 + self.writers.len() + self.readers.len());
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: self.waker.raw(),
            events: libc::POLLIN,
            revents: 0,
        });
        slots.push(Slot::Waker);
        let read_more = !self.full();
        for (i, w) in self.writers.iter().enumerate() {
            if let Some(fd) = &w.fd
                && ((read_more && self.may_read(i)) || w.discarding())
            {
                self.pollfds.push(libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                slots.push(Slot::Writer(i));
            }
        }
        let mut tick = false;
        let records_wait = !self.queue.is_empty();
        for (i, r) in self.readers.iter().enumerate() {
            if !r.is_open() {
                continue;
            }
            match &r.sink {
                Some(Sink::Pipe(fd)) => {
                    // POLLERR arrives whatever `events` says: the reader closed its end.
                    let events = if r.wants_pollout(records_wait) {
                        libc::POLLOUT
                    } else {
                        0
                    };
                    self.pollfds.push(libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events,
                        revents: 0,
                    });
                    slots.push(Slot::Reader(i));
                }
                Some(Sink::Channel(_)) if !r.pending.is_empty() => tick = true,
                _ => {}
            }
        }
        if read_more
            && (0..self.writers.len()).any(|i| self.writers[i].backlog() && self.may_read(i))
        {
            // Room freed since the backlog was set: cut it in at the next round.
            tick = true;
        }
        let any_live = self.readers.iter().any(|r| r.live());
        if any_live && !self.queue.is_empty() {
            // Records wait for a reader to drain its pipe, which poll cannot report.
            tick = true;
        }
        if any_live && self.readers.iter().any(|r| r.blocked_since.is_some()) {
            tick = true;
        }
        let timeout = if tick { TICK_MS } else { -1 };
        sys::poll(&mut self.pollfds, timeout)?;
        let mut gone = Vec::new();
        for (pfd, slot) in self.pollfds.iter().zip(slots) {
            let re = pfd.revents;
            if re == 0 {
                continue;
            }
            match slot {
                Slot::Waker => self.woken = true,
                Slot::Writer(i) => self.writers[i].readable = true,
                Slot::Reader(i) => {
                    if re & libc::POLLERR != 0 {
                        gone.push(i);
                    } else if re & libc::POLLOUT != 0 {
                        self.readers[i].writable = true;
                    }
                }
            }
        }
        for i in gone {
            self.reader_gone(i);
        }
        Ok(())
    }
}
