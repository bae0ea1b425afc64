//! The reader side's state: one [`Reader`] per reader process (a pipe) or per channel
//! (`foreach: {queue}`), its phase, and its *window*, the most it may hold, adapted to
//! how fast it drains its pipe (see "Fair dispatch" in the parent module).

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::ReaderId;
use super::records::{NO_WRITER, Slice};
use super::sys;

/// Reader pipes are set to this size. It is also the most a reader may hold (unread in
/// its pipe plus not yet written): the bound on what a reader that stalls keeps from the
/// others. Smaller pipes cost throughput (more wake-ups of fast readers): on 2 CPUs,
/// shared 1→2 through 64 KiB pipes took ~30 % longer than through 256 KiB ones.
pub(super) const READER_PIPE: usize = 256 * 1024;

/// A reader of unknown speed gets at most this many records and bytes, until it shows
/// how fast it drains them: a slow reader then holds only a few records, a fast one
/// doubles its window at every visit.
pub(super) const FIRST_WINDOW: usize = 4 * 1024;

pub(super) const FIRST_RECORDS: u64 = 16;

/// A reader that empties its pipe this soon after a batch was handed over earns a window
/// twice as large.
pub(super) const FAST_DRAIN: Duration = Duration::from_millis(20);

/// A reader still busy this long after a batch was handed over has its speed measured:
/// its window becomes what it consumes in [`HORIZON`].
pub(super) const SLOW_DRAIN: Duration = Duration::from_millis(100);

/// How much of its own work a reader may hold in advance, as time.
pub(super) const HORIZON: Duration = Duration::from_millis(50);

/// A pipe's unit of space: a streaming reader is topped up once this much room is free
/// (POLLOUT reports a free page).
pub(super) const PAGE: usize = 4096;

/// Written slices up to this size that are a small part of their block are copied
/// into log chunks of at least [`LOG_CHUNK`] bytes (see [`Reader::log_written`]);
/// larger ones keep their block (a pipe's worth of them is only a few blocks).
const LOG_COPY: usize = 8 * 1024;
const LOG_CHUNK: usize = 16 * 1024;

/// Records waiting on a channel reader before prun stops handing it more.
pub(super) const CHANNEL_CAP: usize = 256;

pub(super) enum Sink {
    Pipe(OwnedFd),
    Channel(Sender<Vec<u8>>),
}

/// Where a reader is. `sink` is set while it is `Live` or `Finishing`, gone after.
pub(super) enum ReaderPhase {
    /// Takes records.
    Live,
    /// End of stream: gets what is pending (and the sentinel), then EOF.
    Finishing,
    /// Got EOF from us. `watch` is a read end of its pipe, opened as we closed ours: at
    /// its exit, what it left unread is still measurable. Forgotten once that is
    /// counted (or there is nothing to watch).
    Closed { watch: Option<OwnedFd> },
    /// Exited or EPIPE (`ReaderGone` was sent). Forgotten at the end of the round.
    Gone,
}

pub(super) struct Reader {
    pub(super) id: ReaderId,
    pub(super) sink: Option<Sink>,
    pub(super) phase: ReaderPhase,
    pub(super) pending: VecDeque<Slice>,
    /// Bytes (pipe) or record bytes (channel) of `pending[0]` already handed over.
    pub(super) head_off: usize,
    pub(super) pending_records: u64,
    pub(super) pending_bytes: usize,
    /// False after a write hit a full pipe, until poll reports room.
    pub(super) writable: bool,
    /// Most bytes this reader may hold: unread in its pipe plus pending. Grows while it
    /// empties its pipe quickly, follows its measured speed while it is busy.
    pub(super) window: usize,
    pub(super) pipe_cap: usize,
    /// Bytes written into its pipe so far; minus what is unread, what it consumed.
    pub(super) written: u64,
    /// Bytes given to it (shared delivery), counted from the least served live reader's
    /// count when it joined, so a newcomer does not claim a catch-up.
    pub(super) served: u64,
    /// Start of the current speed measurement: when a batch was handed over to a reader
    /// that had none under measurement, and what it had consumed then.
    pub(super) period: Option<(Instant, u64)>,
    /// Its speed was judged at least once (until then, batches are of FIRST_RECORDS).
    pub(super) measured: bool,
    /// Recently written slices, at least a pipe's worth, to count in-flight records.
    pub(super) log: VecDeque<Slice>,
    pub(super) log_bytes: usize,
    pub(super) delivered: u64,
    pub(super) blocked_since: Option<Instant>,
    /// Per writer index: the number after the last record of that writer handed to this
    /// reader. A record numbered below it would reach the reader out of order.
    pub(super) high: Vec<u64>,
    /// `order: writers`: the highest [`Slice::group`] handed to it. A record of a lower
    /// group would reach it after a later writer's records.
    pub(super) high_group: u64,
    /// Its stage restarts readers: if it dies, its restart is awaited (see
    /// `Engine::awaited`), until the supervisor says it is not coming.
    pub(super) may_restart: bool,
    /// Broadcast: the member (reader instance) it reads for (see `broadcast`).
    pub(super) member: Option<MemberKey>,
}

impl Reader {
    pub(super) fn new(id: ReaderId, sink: Sink, pipe_cap: usize) -> Reader {
        Reader {
            id,
            // A channel reader has its own bound (the channel's capacity).
            measured: matches!(sink, Sink::Channel(_)),
            sink: Some(sink),
            phase: ReaderPhase::Live,
            pending: VecDeque::new(),
            head_off: 0,
            pending_records: 0,
            pending_bytes: 0,
            writable: true,
            window: FIRST_WINDOW.min(pipe_cap),
            pipe_cap,
            written: 0,
            served: 0,
            period: None,
            log: VecDeque::new(),
            log_bytes: 0,
            delivered: 0,
            blocked_since: None,
            high: Vec::new(),
            high_group: 0,
            may_restart: false,
            member: None,
        }
    }

    /// End of stream for this reader: close our end of its pipe (it sees EOF once it read
    /// the rest). A read end is kept (see `watch`); holding it cannot hide a dead
    /// reader, as nothing is written to the pipe any more.
    pub(super) fn give_eof(&mut self) {
        let watch = match &self.sink {
            Some(Sink::Pipe(fd)) => sys::reopen_for_reading(fd.as_raw_fd()),
            _ => None,
        };
        self.sink = None;
        self.phase = ReaderPhase::Closed { watch };
    }

    pub(super) fn live(&self) -> bool {
        matches!(self.phase, ReaderPhase::Live)
    }

    /// It got EOF and its exit is awaited to count what it left unread.
    pub(super) fn watched(&self) -> bool {
        matches!(self.phase, ReaderPhase::Closed { watch: Some(_) })
    }

    /// Nothing more will happen to it: it can be forgotten.
    pub(super) fn ended(&self) -> bool {
        matches!(
            self.phase,
            ReaderPhase::Gone | ReaderPhase::Closed { watch: None }
        )
    }

    /// Handing `s` to this reader keeps each writer's records in order for it (and,
    /// with `order: writers`, the writers' order).
    pub(super) fn in_order(&self, s: &Slice) -> bool {
        s.writer == NO_WRITER
            || (s.group >= self.high_group && self.high.get(s.writer).is_none_or(|&h| h <= s.seq))
    }

    /// Record that this reader got writer `w`'s records up to (not including) `end`.
    pub(super) fn note_handed(&mut self, w: usize, end: u64) {
        if w == NO_WRITER {
            return;
        }
        if self.high.len() <= w {
            self.high.resize(w + 1, 0);
        }
        self.high[w] = self.high[w].max(end);
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.phase, ReaderPhase::Live | ReaderPhase::Finishing)
    }

    /// A streaming reader has earned a whole pipe: it is topped up whenever a page of
    /// its pipe is free, and poll's POLLOUT says when that is.
    pub(super) fn streaming(&self) -> bool {
        self.window >= self.pipe_cap
    }

    /// Bytes unread in its pipe (0 for a channel reader or a closed one).
    pub(super) fn unread(&self) -> usize {
        match &self.sink {
            Some(Sink::Pipe(fd)) => sys::unread_bytes(fd.as_raw_fd()),
            _ => 0,
        }
    }

    /// Adapt the window from what the reader did since its measurement started.
    pub(super) fn observe(&mut self, now: Instant, unread: usize) {
        let Some((since, consumed_then)) = self.period else {
            return;
        };
        let elapsed = now.duration_since(since);
        if unread == 0 {
            // Emptied its pipe: at least as fast as it was fed. If that was quick, a
            // larger window keeps it busy between our visits.
            if elapsed <= FAST_DRAIN {
                self.window = (self.window * 2).min(self.pipe_cap);
            }
            self.period = None;
            self.measured = true;
        } else if elapsed >= SLOW_DRAIN {
            // Busy the whole time (it still has unread bytes): its speed is known. It may
            // hold what it consumes in HORIZON, so a slow reader holds little and equal
            // readers hold alike.
            let consumed = self
                .written
                .saturating_sub(unread as u64)
                .saturating_sub(consumed_then);
            let w = u128::from(consumed) * HORIZON.as_micros() / elapsed.as_micros().max(1);
            self.window = (w.min(self.pipe_cap as u128) as usize).max(1);
            self.period = None;
            self.measured = true;
        }
    }

    /// Room for a new batch, if this reader may be given one now (adapting its window on
    /// the way). A reader gets more only once it has worked through half of its window
    /// (a streaming one: a page; one of unknown speed: all of it), and only up to its
    /// window.
    pub(super) fn room(&mut self, now: Instant) -> Option<(usize, usize)> {
        if !self.live() || !self.pending.is_empty() {
            return None;
        }
        match &self.sink {
            Some(Sink::Pipe(_)) => {
                let unread = self.unread();
                self.observe(now, unread);
                let room = self.window.saturating_sub(unread);
                let ready = if !self.measured {
                    // Unknown speed: nothing more until it emptied its pipe.
                    unread == 0
                } else if self.streaming() {
                    room >= PAGE.min(self.window)
                } else {
                    unread <= self.window / 2
                };
                ready.then_some((unread, room))
            }
            Some(Sink::Channel(tx)) => tx.is_empty().then_some((0, 64 * 1024)),
            None => None,
        }
    }

    /// Whether [`Reader::room`] may say yes (without looking at its pipe).
    pub(super) fn may_take(&self) -> bool {
        self.live() && self.pending.is_empty() && self.sink.is_some()
    }

    /// A batch is handed over while `unread` bytes wait in its pipe.
    pub(super) fn given(&mut self, now: Instant, unread: usize) {
        if self.period.is_none() {
            self.period = Some((now, self.written.saturating_sub(unread as u64)));
        }
    }

    /// Wake on POLLOUT: to finish writing what is pending, or, while records wait, to
    /// top up a streaming reader whose pipe is full (poll cannot report "pipe empty",
    /// only "a page free").
    pub(super) fn wants_pollout(&self, records_wait: bool) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        records_wait
            && self.live()
            && self.streaming()
            && self.window.saturating_sub(self.unread()) < PAGE.min(self.window)
    }

    pub(super) fn push_pending(&mut self, s: Slice) {
        self.note_handed(s.writer, s.seq + s.records);
        if s.writer != NO_WRITER {
            self.high_group = self.high_group.max(s.group);
        }
        self.pending_records += s.records;
        self.pending_bytes += s.len();
        self.pending.push_back(s);
    }

    /// Remember a slice just written into its pipe (only the last pipe's worth is
    /// kept). A slice that is a small part of its block is copied into a log chunk
    /// instead of holding the block: a reader fed one short record per writer (a writer
    /// restarted thousands of times) would otherwise keep a 256 KiB block alive per
    /// record.
    pub(super) fn log_written(&mut self, mut s: Slice) {
        if s.len() > self.pipe_cap {
            // Only the last pipe's worth can still be unread: keep a copy of that, not
            // the whole (large) record's block.
            let tail = s.bytes()[s.len() - self.pipe_cap..].to_vec();
            s = Slice {
                start: 0,
                end: tail.len(),
                buf: Arc::new(tail),
                ..s
            };
        } else if !s.sentinel && s.len() <= LOG_COPY && s.len() * 2 <= s.buf.capacity() {
            let n = s.len();
            self.log_bytes += n;
            let appended = self.log.back_mut().is_some_and(|last| {
                let end = last.end;
                match Arc::get_mut(&mut last.buf) {
                    Some(chunk)
                        if !last.sentinel
                            && end == chunk.len()
                            && chunk.len() + n <= chunk.capacity() =>
                    {
                        chunk.extend_from_slice(s.bytes());
                        last.end += n;
                        last.records += s.records;
                        true
                    }
                    _ => false,
                }
            });
            if !appended {
                let mut chunk = Vec::with_capacity(n.max(LOG_CHUNK));
                chunk.extend_from_slice(s.bytes());
                self.log.push_back(Slice {
                    start: 0,
                    end: n,
                    buf: Arc::new(chunk),
                    ..s
                });
            }
            self.trim_log();
            return;
        }
        self.log_bytes += s.len();
        self.log.push_back(s);
        self.trim_log();
    }

    fn trim_log(&mut self) {
        while let Some(front) = self.log.front() {
            if self.log_bytes - front.len() >= self.pipe_cap {
                self.log_bytes -= front.len();
                self.log.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Who a broadcast reader reads for: an announced instance, or a reader process that
/// joined unannounced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberKey {
    Instance(usize),
    Reader(ReaderId),
}

/// Queue the sentinel record (if the queue has one) behind what a pipe reader still has
/// pending; channel readers get none (the channel closing is their end of stream).
pub(super) fn push_sentinel(sentinel: Option<&Arc<Vec<u8>>>, r: &mut Reader) {
    if let (Some(s), Some(Sink::Pipe(_))) = (sentinel, &r.sink) {
        r.push_pending(Slice {
            buf: s.clone(),
            start: 0,
            end: s.len(),
            records: 0,
            sentinel: true,
            writer: NO_WRITER,
            seq: 0,
            group: 0,
        });
    }
}
