//! The writer side: reading (or peeking) each writer's pipe, cutting its stream into
//! records by the framing, and putting whole records into the queue within `capacity`
//! (the rest waits in the writer's pipe or its backlog); writer-emitted sentinels, and a
//! writer's end of stream.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use super::blocks::{READ_BLOCK, Shadow, read_peeked};
use super::records::{Slice, count_delims, count_upto};
use super::sys;
use super::{QueueStats, RouterEvent, WriterId};

/// A cut of at least this many bytes hands the writer's block itself to the queue; a
/// smaller one is copied out, so a few bytes do not pin a whole block.
pub(super) const HANDOVER: usize = 8 * 1024;

/// Smallest read, even when capacity is almost reached: records that do not fit stay in
/// the writer's pipe when it was peeked, or wait in the writer's backlog (a plain read),
/// so this bounds memory, not the queue's depth.
pub(super) const MIN_READ: usize = 16 * 1024;

/// Writer pipes are enlarged so a fast writer wakes the router less often.
pub(super) const WRITER_PIPE: usize = 1 << 20;

/// Where a writer's stream is. `fd` is open in `Streaming`, `Backlog { eof: false }`
/// and `Discarding`, closed in the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriterPhase {
    /// Its pipe is read (or peeked); complete records go into the queue.
    Streaming,
    /// `carry` starts with complete records: the queue was full when they were read.
    /// They are cut into the queue as room frees, before anything more is read, so the
    /// queue never holds more than `capacity` records. (Records that were only peeked
    /// are left in the writer's pipe instead: no backlog.) `eof`: its pipe already
    /// ended; `WriterDone` follows once the backlog is in the queue.
    Backlog { eof: bool },
    /// Its pipe ended in the middle of a record (`carry` holds the incomplete last
    /// record): delivered with the delimiter added if the writer process succeeded,
    /// dropped and counted in `partial_records` if not, once the supervisor says which
    /// ([`super::QueueRouter::writer_ended`]).
    Torn,
    /// It emitted the sentinel: the rest of its stream is read and counted in
    /// `dropped_after_sentinel`, not delivered (`WriterDone` was sent). `partial`: the
    /// last bytes read end inside a record (one more dropped record at EOF).
    Discarding { partial: bool },
    /// Its stream is over and `WriterDone` was sent. The slot is reused for a new writer
    /// once none of its records are held any more (see `Engine::add_writer`).
    Done,
}

/// How the writer's process ended, as told by the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Not known yet.
    Unknown,
    Succeeded,
    Failed,
}

pub(super) struct Writer {
    pub(super) id: WriterId,
    pub(super) fd: Option<OwnedFd>,
    pub(super) phase: WriterPhase,
    pub(super) outcome: Outcome,
    /// Bytes after the last delimiter seen (an incomplete record), and, in
    /// `Backlog`, complete records the full queue could not take yet.
    pub(super) carry: Vec<u8>,
    /// Set until poll says otherwise, so a new writer is read at once.
    pub(super) readable: bool,
    /// The last read filled the whole request: the pipe likely holds more.
    pub(super) full_read: bool,
    /// Read with tee (peek) + splice; false once tee failed on this descriptor.
    pub(super) tee: bool,
    /// Bytes at the head of its pipe that were peeked (copied into our memory with
    /// tee + read, not consumed): they are consumed, spliced to a reader or dropped,
    /// before the pipe is peeked again.
    pub(super) peeked: usize,
    /// Where the peeked bytes are in a queued block: those can be spliced.
    pub(super) shadow: Option<Shadow>,
    pub(super) records: u64,
    /// Attach order among the queue's writer pipes (never reused, unlike the slot).
    pub(super) serial: u64,
    /// `order: writers`: its complete records that wait for its turn (see `order`), and
    /// their number; its turn's group number once it got the turn.
    pub(super) waiting: VecDeque<Slice>,
    pub(super) waiting_records: u64,
    pub(super) group: u64,
}

impl Writer {
    pub(super) fn new(id: WriterId, fd: OwnedFd, tee: bool) -> Writer {
        Writer {
            id,
            fd: Some(fd),
            phase: WriterPhase::Streaming,
            outcome: Outcome::Unknown,
            carry: Vec::new(),
            readable: true,
            full_read: false,
            tee,
            peeked: 0,
            shadow: None,
            records: 0,
            serial: 0,
            waiting: VecDeque::new(),
            waiting_records: 0,
            group: 0,
        }
    }

    pub(super) fn backlog(&self) -> bool {
        matches!(self.phase, WriterPhase::Backlog { .. })
    }

    pub(super) fn discarding(&self) -> bool {
        matches!(self.phase, WriterPhase::Discarding { .. })
    }

    /// `WriterDone` was sent for it.
    pub(super) fn reported(&self) -> bool {
        matches!(
            self.phase,
            WriterPhase::Discarding { .. } | WriterPhase::Done
        )
    }

    /// Its stream is over, and nothing of it waits to enter the queue.
    pub(super) fn finished(&self) -> bool {
        self.fd.is_none()
            && !self.backlog()
            && self.phase != WriterPhase::Torn
            && self.waiting.is_empty()
    }
}

impl Engine {
    pub(super) fn read_writers(&mut self) {
        let n = self.writers.len();
        for wi in 0..n {
            if let WriterPhase::Backlog { eof } = self.writers[wi].phase
                && self.may_read(wi)
            {
                self.writers[wi].phase = WriterPhase::Streaming;
                self.cut(wi, 0, None);
                let w = &mut self.writers[wi];
                match w.phase {
                    WriterPhase::Backlog { .. } => w.phase = WriterPhase::Backlog { eof },
                    WriterPhase::Streaming if eof => self.finish_writer(wi),
                    _ => {}
                }
            }
            let w = &self.writers[wi];
            if w.fd.is_none() || !w.readable || w.backlog() {
                continue;
            }
            if !w.discarding() && !self.may_read(wi) {
                continue;
            }
            self.read_writer(wi);
        }
    }

    pub(super) fn read_size(&self, wi: usize) -> usize {
        let room = self.room_for(wi) as usize;
        // Before the first record its size is unknown: start with the minimum read.
        let avg = self
            .stats
            .bytes
            .checked_div(self.stats.records)
            .map_or(1, |a| a.max(1) as usize);
        room.saturating_mul(avg).clamp(MIN_READ, READ_BLOCK)
    }

    pub(super) fn read_writer(&mut self, wi: usize) {
        let size = self.read_size(wi);
        if !self.consume_peeked(wi) {
            return;
        }
        let w = &mut self.writers[wi];
        let Some(fd) = &w.fd else { return };
        let raw = fd.as_raw_fd();
        if w.discarding() {
            self.scratch.resize(READ_BLOCK, 0);
            match sys::read_some(raw, &mut self.scratch) {
                Ok(0) => self.writer_eof(wi),
                Ok(n) => {
                    let data = &self.scratch[..n];
                    let dropped = match self.delim {
                        Some(d) => count_delims(d, data),
                        None => 1,
                    };
                    self.stats.dropped_after_sentinel += dropped;
                    let partial = self.delim.is_some_and(|d| data[n - 1] != d);
                    self.writers[wi].phase = WriterPhase::Discarding { partial };
                }
                Err(e) => self.writer_read_error(wi, e),
            }
            return;
        }
        if self.try_direct(wi, Instant::now()) {
            return;
        }
        // Records that will wait for their writer's turn are read plainly: peeking only
        // pays when they can go on by splice.
        let turn = self.has_turn(wi);
        let w = &mut self.writers[wi];
        let old = w.carry.len();
        let got = match &self.peek {
            Some((pr, pw)) if w.tee && turn => match sys::tee(raw, pw.as_raw_fd(), size) {
                Ok(n) if n > 0 => {
                    // Copy the peeked bytes out of the private pipe; they stay at the
                    // head of the writer's pipe until consumed.
                    let got = read_peeked(pr.as_raw_fd(), &mut w.carry, n);
                    w.peeked = got;
                    Ok(got)
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Not a pipe: read it plainly from now on.
                    w.tee = false;
                    sys::read_into(raw, &mut w.carry, size)
                }
                other => other,
            },
            _ => sys::read_into(raw, &mut w.carry, size),
        };
        let w = &mut self.writers[wi];
        w.full_read = matches!(got, Ok(n) if n == size);
        let peeked = (w.peeked > 0).then_some(old);
        match got {
            Ok(0) => self.writer_eof(wi),
            Ok(_) => self.cut(wi, old, peeked),
            Err(e) => self.writer_read_error(wi, e),
        }
    }
    /// Consume what was peeked from writer `wi`'s pipe and not spliced (drop it: it is in
    /// our memory), so the pipe can be peeked again. False if that failed (the stream is
    /// then ended like on a read error: peeking again would duplicate records).
    pub(super) fn consume_peeked(&mut self, wi: usize) -> bool {
        let w = &mut self.writers[wi];
        w.shadow = None;
        let Some(fd) = &w.fd else {
            w.peeked = 0;
            return true;
        };
        let raw = fd.as_raw_fd();
        while w.peeked > 0 {
            let dropped = match &self.null {
                Some(null) => sys::splice(raw, null.as_raw_fd(), w.peeked),
                None => Err(io::Error::from(io::ErrorKind::Unsupported)),
            };
            let dropped = match dropped {
                Ok(n) if n > 0 => Ok(n),
                // Interrupted: try again (not an end of stream).
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                _ => {
                    let want = w.peeked.min(READ_BLOCK);
                    self.scratch.resize(want, 0);
                    sys::read_some(raw, &mut self.scratch[..want])
                }
            };
            match dropped {
                Ok(n) if n > 0 => w.peeked -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => {
                    w.peeked = 0;
                    self.writer_eof(wi);
                    return false;
                }
            }
        }
        true
    }

    pub(super) fn writer_read_error(&mut self, wi: usize, e: io::Error) {
        match e.kind() {
            io::ErrorKind::WouldBlock => self.writers[wi].readable = false,
            io::ErrorKind::Interrupted => {}
            // Any other error ends this writer's stream as EOF would.
            _ => self.writer_eof(wi),
        }
    }

    pub(super) fn writer_eof(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        w.fd = None;
        w.peeked = 0;
        w.shadow = None;
        match w.phase {
            WriterPhase::Discarding { partial } => {
                self.stats.dropped_after_sentinel += u64::from(partial);
                w.carry = Vec::new();
                self.report_writer_done(wi);
            }
            WriterPhase::Backlog { .. } => {
                // Records still wait for room in the queue: done once they are in (an
                // incomplete last record behind them stays in `carry` until then).
                w.phase = WriterPhase::Backlog { eof: true };
            }
            _ => self.finish_writer(wi),
        }
    }

    /// Writer `wi`'s pipe ended and nothing of it waits for room in the queue: an
    /// incomplete last record is settled (see [`Engine::settle_torn`]), then it is done.
    fn finish_writer(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        if !w.carry.is_empty() && self.delim.is_some() {
            w.phase = WriterPhase::Torn;
            self.settle_torn(wi);
        } else {
            w.carry = Vec::new();
            self.report_writer_done(wi);
        }
    }

    /// Writer `wi`'s pipe ended inside a record: once its outcome is known, deliver
    /// that record with the delimiter added (it succeeded) or drop it and count it in
    /// `partial_records` (it failed or was killed). Without outcomes (a router whose
    /// supervisor does not report them), the record counts as whole.
    pub(super) fn settle_torn(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        if w.phase != WriterPhase::Torn {
            return;
        }
        let succeeded = match w.outcome {
            Outcome::Succeeded => true,
            Outcome::Failed => false,
            Outcome::Unknown if !self.writer_outcomes => true,
            Outcome::Unknown => return,
        };
        if succeeded {
            w.phase = WriterPhase::Streaming;
            if let Some(d) = self.delim {
                w.carry.push(d);
            }
            let old = w.carry.len() - 1;
            self.cut(wi, old, None);
            let w = &mut self.writers[wi];
            if w.backlog() {
                w.phase = WriterPhase::Backlog { eof: true };
                return;
            }
        } else {
            self.stats.partial_records += 1;
        }
        self.writers[wi].carry = Vec::new();
        self.report_writer_done(wi);
    }

    /// The supervisor told how writer `id`'s process ended.
    pub(super) fn writer_ended(&mut self, id: WriterId, succeeded: bool) {
        let Some(wi) = self
            .writers
            .iter()
            .position(|w| w.id == id && w.phase != WriterPhase::Done)
        else {
            return;
        };
        self.writers[wi].outcome = if succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        self.settle_torn(wi);
    }

    /// Writer `wi`'s stream is over: send `WriterDone` (unless it was sent when the
    /// writer emitted the sentinel).
    pub(super) fn report_writer_done(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        let reported = w.reported();
        w.phase = WriterPhase::Done;
        if !reported {
            let id = w.id;
            self.emit(RouterEvent::WriterDone {
                queue: self.cfg.queue,
                writer: id,
            });
        }
    }

    /// Move the complete records of writer `wi`'s buffer into the queue. `scan_from`:
    /// bytes before it hold no delimiter (they were scanned already). `peeked`: the
    /// bytes from there on are still at the head of the writer's pipe.
    pub(super) fn cut(&mut self, wi: usize, scan_from: usize, peeked: Option<usize>) {
        let room = self.room_for(wi) as usize;
        let discarding = self.writers[wi].discarding();
        let w = &mut self.writers[wi];
        let mut split = match self.delim {
            None => w.carry.len(),
            Some(d) => match memchr::memrchr(d, &w.carry[scan_from..]) {
                Some(p) => scan_from + p + 1,
                None => return,
            },
        };
        // Records in carry[..split], when counted here (so `accept` need not recount).
        let mut records = None;
        if !discarding && split > 0 {
            if room == 0 {
                w.phase = WriterPhase::Backlog { eof: false };
                return;
            }
            // Every record has at least its delimiter: more bytes than room is the only
            // way to hold more records than room, so only then count them.
            if let Some(d) = self.delim
                && split > room
            {
                match count_upto(d, &w.carry[..split], room as u64) {
                    Ok(n) => records = Some(n),
                    Err(p) => {
                        split = p + 1;
                        records = Some(room as u64);
                        w.phase = WriterPhase::Backlog { eof: false };
                    }
                }
            }
        }
        let chunk = if split >= HANDOVER || split * 2 >= w.carry.capacity() {
            // A block's worth: hand the buffer itself over (no copy), go on in a block
            // from the pool with the incomplete tail.
            let mut next = self.pool.take(READ_BLOCK.max(w.carry.len() - split));
            next.extend_from_slice(&w.carry[split..]);
            w.carry.truncate(split);
            std::mem::replace(&mut w.carry, next)
        } else {
            // Small read: copy it out so a big buffer is not pinned by a few bytes.
            let chunk = w.carry[..split].to_vec();
            w.carry.drain(..split);
            chunk
        };
        self.accept(wi, chunk, records, peeked);
        let w = &mut self.writers[wi];
        if peeked.is_some() && !w.discarding() && !w.carry.is_empty() && w.carry.len() <= w.peeked {
            // What is left was peeked: the incomplete last record, or whole records the
            // full queue could not take. Leave it in the pipe (it is the start of the
            // next peek) rather than carry it: the next block begins at the pipe's head
            // and can go whole by splice, possibly by the direct path, and prun holds no
            // backlog. Only after a cut, so a record longer than a read still makes
            // progress (it is carried).
            w.peeked -= w.carry.len();
            w.carry.clear();
            if w.backlog() {
                w.phase = WriterPhase::Streaming;
            }
        }
    }

    /// Put a chunk of whole records into the queue; `records` is their number when the
    /// caller counted them already.
    pub(super) fn accept(
        &mut self,
        wi: usize,
        mut chunk: Vec<u8>,
        records: Option<u64>,
        peeked: Option<usize>,
    ) {
        let mut records = records;
        let mut peeked = peeked;
        if let (Some(finder), Some(sentinel), Some(d)) =
            (&self.sentinel_finder, &self.cfg.sentinel, self.delim)
        {
            let at_start = chunk.len() > sentinel.len()
                && chunk.starts_with(sentinel)
                && chunk[sentinel.len()] == d;
            let found = if at_start {
                Some(0)
            } else {
                finder.find(&chunk).map(|p| p + 1)
            };
            if let Some(s) = found {
                records = None;
                peeked = None;
                let after = s + sentinel.len() + 1;
                let dropped = count_delims(d, &chunk[after..]);
                chunk.truncate(s);
                let w = &mut self.writers[wi];
                // Complete records waiting behind the sentinel are dropped too.
                let waiting = if w.backlog() {
                    count_delims(d, &w.carry)
                } else {
                    0
                };
                let partial = if w.backlog() {
                    w.carry.last() != Some(&d)
                } else {
                    !w.carry.is_empty()
                };
                self.stats.dropped_after_sentinel += dropped + waiting;
                w.carry = Vec::new();
                if w.fd.is_some() {
                    let reported = w.reported();
                    w.phase = WriterPhase::Discarding { partial };
                    if !reported {
                        let id = w.id;
                        self.emit(RouterEvent::WriterDone {
                            queue: self.cfg.queue,
                            writer: id,
                        });
                    }
                } else {
                    // Its pipe ended already (the sentinel was in its backlog).
                    self.stats.dropped_after_sentinel += u64::from(partial);
                    self.report_writer_done(wi);
                }
            }
        }
        if chunk.is_empty() {
            return;
        }
        let records = match (records, self.delim) {
            (Some(n), _) => n,
            (None, Some(d)) => count_delims(d, &chunk),
            (None, None) => 1,
        };
        self.stats.records += records;
        self.stats.bytes += chunk.len() as u64;
        let seq = self.writers[wi].records;
        self.writers[wi].records += records;
        let end = chunk.len();
        let buf = Arc::new(chunk);
        self.pool.keep(&buf);
        self.writers[wi].shadow = peeked.filter(|&p| p < end).map(|pos| Shadow {
            buf: buf.clone(),
            pos,
            len: end - pos,
        });
        let s = Slice {
            buf,
            start: 0,
            end,
            records,
            sentinel: false,
            writer: wi,
            seq,
            group: self.writers[wi].group,
        };
        if self.has_turn(wi) {
            self.enqueue(s);
        } else {
            self.hold(wi, s);
        }
        let depth = self.depth();
        self.stats.max_depth = self.stats.max_depth.max(depth);
    }

    /// Whole records enter the queue (the stream, for broadcast).
    pub(super) fn enqueue(&mut self, s: Slice) {
        self.stream.end_record += s.records;
        self.queued_records += s.records;
        self.queued_bytes += s.len();
        self.queue.push_back(s);
    }
}

/// The complete records waiting in a writer's backlog (read, but not yet in the queue
/// because it was full) will never be delivered: count them as read and discarded.
pub(super) fn discard_backlog(w: &mut Writer, delim: Option<u8>, stats: &mut QueueStats) {
    let (true, Some(d)) = (w.backlog(), delim) else {
        return;
    };
    let Some(last) = memchr::memrchr(d, &w.carry) else {
        return;
    };
    let n = count_delims(d, &w.carry[..=last]);
    stats.discarded += n;
    stats.records += n;
    stats.bytes += (last + 1) as u64;
    w.records += n;
}
