//! The router thread of one queue: a single `poll` loop that owns every descriptor and
//! every buffered record of the queue (see the design notes in the parent module).
//!
//! Data path: writer pipe → `read` (shared delivery: `tee` + read of the copy) into a
//! block → cut at the last delimiter → the complete part becomes a shared [`Slice`] in
//! the queue → dispatch assigns slices (or record-exact sub-slices) to readers' `pending`
//! lists → `writev` into reader pipes, or `splice` from the writer's pipe for bytes still
//! at its head (a [`Shadow`]). A slice always starts and ends on record boundaries, and
//! once a reader was given a slice it is the only one that ever gets those bytes, so
//! partial pipe writes (or splices) can never tear a record.
//!
//! Direct path (shared delivery, [`Engine::try_direct`]): while nothing is queued, a
//! writer's pipe is peeked up to the room of the least served *streaming* reader and its
//! whole records are spliced straight into that reader's pipe, skipping the queue. A
//! splice cut short leaves one record half delivered: its rest becomes that reader's
//! pending slice (still at the writer pipe's head, so it follows by splice), and the
//! records after it stay in the writer's pipe for the next peek.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use memchr::memmem;

use super::sys;
use super::{QueueConfig, QueueStats, ReaderId, RouterEvent, WriterId};
use crate::plan::Delivery;

/// Largest single read from a writer pipe, and the size of a block.
pub(super) const READ_BLOCK: usize = 256 * 1024;
/// A cut of at least this many bytes hands the writer's block itself to the queue; a
/// smaller one is copied out, so a few bytes do not pin a whole block.
const HANDOVER: usize = 8 * 1024;
/// Blocks handed to the queue that the pool follows, to reuse them once nobody holds
/// them any more, and how many such idle blocks it keeps (the memory it adds).
const POOL_BLOCKS: usize = 32;
const POOL_IDLE: usize = 4;
/// Smallest read, even when capacity is almost reached: records that do not fit stay in
/// the writer's pipe when it was peeked, or wait in the writer's backlog (a plain read),
/// so this bounds memory, not the queue's depth.
const MIN_READ: usize = 16 * 1024;
/// Writer pipes are enlarged so a fast writer wakes the router less often.
const WRITER_PIPE: usize = 1 << 20;
/// Reader pipes are set to this size. It is also the most a reader may hold (unread in
/// its pipe plus not yet written): the bound on what a reader that stalls keeps from the
/// others. Smaller pipes cost throughput (more wake-ups of fast readers): on 2 CPUs,
/// shared 1→2 through 64 KiB pipes took ~30 % longer than through 256 KiB ones.
pub(super) const READER_PIPE: usize = 256 * 1024;
/// A reader of unknown speed gets at most this many records and bytes, until it shows
/// how fast it drains them: a slow reader then holds only a few records, a fast one
/// doubles its window at every visit.
const FIRST_WINDOW: usize = 4 * 1024;
const FIRST_RECORDS: u64 = 16;
/// A reader that empties its pipe this soon after a batch was handed over earns a window
/// twice as large.
const FAST_DRAIN: Duration = Duration::from_millis(20);
/// A reader still busy this long after a batch was handed over has its speed measured:
/// its window becomes what it consumes in [`HORIZON`].
const SLOW_DRAIN: Duration = Duration::from_millis(100);
/// How much of its own work a reader may hold in advance, as time.
const HORIZON: Duration = Duration::from_millis(50);
/// A pipe's unit of space: a streaming reader is topped up once this much room is free
/// (POLLOUT reports a free page).
const PAGE: usize = 4096;
/// While at most this many records per ready reader wait, they are shared out exactly;
/// beyond, readers take whole blocks in turn.
const EXACT_SHARE: u64 = 64;
/// Besides `capacity` records, prun holds at most about this many bytes of records for a
/// queue's readers (plus one read, and the record being read), so that large records
/// cannot make `capacity` records a lot of memory: 1024 records of 1 MB would be 1 GB.
const MAX_HELD_BYTES: usize = 16 << 20;
/// A reader whose pipe stayed full this long loses its unwritten records to idle readers.
const STEAL_AFTER: Duration = Duration::from_millis(20);
/// Re-check interval while records wait for a reader to drain (drain is not pollable).
const TICK_MS: i32 = 2;
const MAX_IOV: usize = 64;
/// Rounds in a row that may skip `poll` because a writer has more to read; then poll
/// anyway, so readers' pipes (room, errors) and the waker are looked at regularly.
const EAGER_ROUNDS: u32 = 4;
/// Records waiting on a channel reader before prun stops handing it more.
pub(super) const CHANNEL_CAP: usize = 256;

pub(super) enum Command {
    AddWriter(WriterId, OwnedFd),
    AddReader(ReaderId, OwnedFd),
    AddChannelReader(ReaderId, Sender<Vec<u8>>),
    ReaderExited(ReaderId),
    CloseWriters,
    CloseReaders,
    MayRestart(ReaderId),
    ReaderNotComing(ReaderId),
    Cut,
    Abort,
}

/// A run of whole records inside a shared block.
#[derive(Clone)]
struct Slice {
    buf: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    records: u64,
    sentinel: bool,
    /// Index of the writer the records came from ([`NO_WRITER`] for the sentinel).
    writer: usize,
    /// Number of the first record in that writer's stream: with it, per-writer order is
    /// kept when records are given back (a reader died, or was stuck and its batch was
    /// taken back) and handed out again.
    seq: u64,
}

/// [`Slice::writer`] of a record prun made itself (the sentinel).
const NO_WRITER: usize = usize::MAX;

impl Slice {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn len(&self) -> usize {
        self.end - self.start
    }
}

struct Writer {
    id: WriterId,
    fd: Option<OwnedFd>,
    /// Bytes after the last delimiter seen (an incomplete record), and, while
    /// `backlog` is set, complete records the full queue could not take yet.
    carry: Vec<u8>,
    /// `carry` starts with complete records: the queue was full when they were read.
    /// They are cut into the queue as room frees, before anything more is read, so the
    /// queue never holds more than `capacity` records. (Records that were only peeked
    /// are left in the writer's pipe instead: no backlog.)
    backlog: bool,
    /// The writer's pipe reached EOF while `backlog` was set: `WriterDone` is sent once
    /// the backlog is in the queue.
    eof_pending: bool,
    /// Set until poll says otherwise, so a new writer is read at once.
    readable: bool,
    /// The last read filled the whole request: the pipe likely holds more.
    full_read: bool,
    /// Read with tee (peek) + splice; false once tee failed on this descriptor.
    tee: bool,
    /// Bytes at the head of its pipe that were peeked (copied into our memory with
    /// tee + read, not consumed): they are consumed, spliced to a reader or dropped,
    /// before the pipe is peeked again.
    peeked: usize,
    /// Where the peeked bytes are in a queued block: those can be spliced.
    shadow: Option<Shadow>,
    records: u64,
    /// The writer emitted the sentinel: read and count the rest, deliver nothing.
    discarding: bool,
    discard_partial: bool,
    done_reported: bool,
}

/// `len` bytes from `pos` in block `buf` are also the next bytes of a writer's pipe
/// (peeked, not consumed): written to a reader with `splice` from that pipe, they move
/// by page reference, with no copy and no page allocated for the reader's pipe.
struct Shadow {
    buf: Arc<Vec<u8>>,
    pos: usize,
    len: usize,
}

enum Sink {
    Pipe(OwnedFd),
    Channel(Sender<Vec<u8>>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReaderState {
    Live,
    /// End of stream: gets what is pending (and the sentinel), then EOF.
    Finishing,
    /// Got EOF from us.
    Closed,
    /// Exited or EPIPE.
    Gone,
}

struct Reader {
    id: ReaderId,
    sink: Option<Sink>,
    state: ReaderState,
    pending: VecDeque<Slice>,
    /// Bytes (pipe) or record bytes (channel) of `pending[0]` already handed over.
    head_off: usize,
    pending_records: u64,
    pending_bytes: usize,
    /// False after a write hit a full pipe, until poll reports room.
    writable: bool,
    /// Most bytes this reader may hold: unread in its pipe plus pending. Grows while it
    /// empties its pipe quickly, follows its measured speed while it is busy.
    window: usize,
    pipe_cap: usize,
    /// Bytes written into its pipe so far; minus what is unread, what it consumed.
    written: u64,
    /// Bytes given to it (shared delivery), counted from the least served live reader's
    /// count when it joined, so a newcomer does not claim a catch-up.
    served: u64,
    /// Start of the current speed measurement: when a batch was handed over to a reader
    /// that had none under measurement, and what it had consumed then.
    period: Option<(Instant, u64)>,
    /// Its speed was judged at least once (until then, batches are of FIRST_RECORDS).
    measured: bool,
    /// Recently written slices, at least a pipe's worth, to count in-flight records.
    log: VecDeque<Slice>,
    log_bytes: usize,
    delivered: u64,
    blocked_since: Option<Instant>,
    gone_reported: bool,
    /// Per writer index: the number after the last record of that writer handed to this
    /// reader. A record numbered below it would reach the reader out of order.
    high: Vec<u64>,
    /// A read end of its pipe, opened when it got EOF from us: at its exit, what it left
    /// unread is still measurable (our write end is gone by then).
    watch: Option<OwnedFd>,
    /// Its stage restarts readers: if it dies, its restart is awaited (see
    /// `Engine::expected_readers`), until the supervisor says it is not coming.
    may_restart: bool,
    awaited: bool,
}

impl Reader {
    fn new(id: ReaderId, sink: Sink, pipe_cap: usize) -> Reader {
        Reader {
            id,
            // A channel reader has its own bound (the channel's capacity).
            measured: matches!(sink, Sink::Channel(_)),
            sink: Some(sink),
            state: ReaderState::Live,
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
            gone_reported: false,
            high: Vec::new(),
            watch: None,
            may_restart: false,
            awaited: false,
        }
    }

    /// End of stream for this reader: close our end of its pipe (it sees EOF once it read
    /// the rest). A read end is kept (see `watch`); holding it cannot hide a dead
    /// reader, as nothing is written to the pipe any more.
    fn give_eof(&mut self) {
        if let Some(Sink::Pipe(fd)) = &self.sink {
            self.watch = sys::reopen_for_reading(fd.as_raw_fd());
        }
        self.sink = None;
        self.state = ReaderState::Closed;
    }

    /// Handing `s` to this reader keeps each writer's records in order for it.
    fn in_order(&self, s: &Slice) -> bool {
        s.writer == NO_WRITER || self.high.get(s.writer).is_none_or(|&h| h <= s.seq)
    }

    /// Record that this reader got writer `w`'s records up to (not including) `end`.
    fn note_handed(&mut self, w: usize, end: u64) {
        if w == NO_WRITER {
            return;
        }
        if self.high.len() <= w {
            self.high.resize(w + 1, 0);
        }
        self.high[w] = self.high[w].max(end);
    }

    fn is_open(&self) -> bool {
        matches!(self.state, ReaderState::Live | ReaderState::Finishing)
    }

    /// A streaming reader has earned a whole pipe: it is topped up whenever a page of
    /// its pipe is free, and poll's POLLOUT says when that is.
    fn streaming(&self) -> bool {
        self.window >= self.pipe_cap
    }

    /// Bytes unread in its pipe (0 for a channel reader or a closed one).
    fn unread(&self) -> usize {
        match &self.sink {
            Some(Sink::Pipe(fd)) => sys::unread_bytes(fd.as_raw_fd()),
            _ => 0,
        }
    }

    /// Adapt the window from what the reader did since its measurement started.
    fn observe(&mut self, now: Instant, unread: usize) {
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
    fn room(&mut self, now: Instant) -> Option<(usize, usize)> {
        if self.state != ReaderState::Live || !self.pending.is_empty() {
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
    fn may_take(&self) -> bool {
        self.state == ReaderState::Live && self.pending.is_empty() && self.sink.is_some()
    }

    /// A batch is handed over while `unread` bytes wait in its pipe.
    fn given(&mut self, now: Instant, unread: usize) {
        if self.period.is_none() {
            self.period = Some((now, self.written.saturating_sub(unread as u64)));
        }
    }

    /// Wake on POLLOUT: to finish writing what is pending, or, while records wait, to
    /// top up a streaming reader whose pipe is full (poll cannot report "pipe empty",
    /// only "a page free").
    fn wants_pollout(&self, records_wait: bool) -> bool {
        if !self.pending.is_empty() {
            return true;
        }
        records_wait
            && self.state == ReaderState::Live
            && self.streaming()
            && self.window.saturating_sub(self.unread()) < PAGE.min(self.window)
    }

    fn push_pending(&mut self, s: Slice) {
        self.note_handed(s.writer, s.seq + s.records);
        self.pending_records += s.records;
        self.pending_bytes += s.len();
        self.pending.push_back(s);
    }

    fn log_written(&mut self, mut s: Slice) {
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
        }
        self.log_bytes += s.len();
        self.log.push_back(s);
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

/// Writers' pipes are peeked (tee) and spliced to readers (see [`Shadow`]).
const USE_SPLICE: bool = true;

/// The private pipe for peeking and /dev/null for dropping; none when either fails (then
/// writers' pipes are read plainly).
fn peek_pipes() -> (Option<(OwnedFd, OwnedFd)>, Option<OwnedFd>) {
    let Ok((r, w)) = sys::pipe() else {
        return (None, None);
    };
    // Room for a whole read in page-sized buffers.
    sys::set_pipe_size(w.as_raw_fd(), READ_BLOCK);
    match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => (Some((r, w)), Some(OwnedFd::from(f))),
        Err(_) => (None, None),
    }
}

/// Recycles blocks: a block given to the queue is also remembered here, and once every
/// slice of it was written and left the readers' logs, only the pool holds it and the
/// next read goes into it. Allocating a fresh 256 KiB block per read instead costs page
/// faults and `madvise`/`munmap` churn in the allocator at every block. Bounded: it
/// follows at most [`POOL_BLOCKS`] blocks (the rest are plain allocations, freed as
/// before) and keeps at most [`POOL_IDLE`] idle ones, so it adds little to memory.
#[derive(Default)]
struct BlockPool {
    blocks: Vec<Arc<Vec<u8>>>,
}

impl BlockPool {
    /// An empty buffer of at least `min_cap` bytes, reused when one is idle.
    fn take(&mut self, min_cap: usize) -> Vec<u8> {
        let mut found = None;
        let mut k = 0;
        let mut idle = 0;
        while k < self.blocks.len() {
            // Slices live on this thread only: a count of 1 means only the pool holds it.
            if Arc::strong_count(&self.blocks[k]) == 1 {
                if found.is_none() {
                    found = Arc::try_unwrap(self.blocks.swap_remove(k)).ok();
                    continue;
                }
                idle += 1;
                if idle > POOL_IDLE {
                    self.blocks.swap_remove(k);
                    continue;
                }
            }
            k += 1;
        }
        match found {
            Some(mut b) => {
                b.clear();
                b.reserve(min_cap);
                b
            }
            None => Vec::with_capacity(min_cap),
        }
    }

    /// Follow a block just given to the queue. Blocks grown for a record larger than a
    /// read are not kept: idle, they would hold that record's size for nothing.
    fn keep(&mut self, block: &Arc<Vec<u8>>) {
        if self.blocks.len() < POOL_BLOCKS
            && (READ_BLOCK..=2 * READ_BLOCK).contains(&block.capacity())
        {
            self.blocks.push(block.clone());
        }
    }
}

/// Append the `n` bytes waiting in the private peek pipe to `buf`; returns how many
/// were appended (all of them: they are in the pipe). Anything left over is drained so
/// the next peek starts clean (those bytes are then simply peeked again).
fn read_peeked(fd: RawFd, buf: &mut Vec<u8>, n: usize) -> usize {
    let mut got = 0;
    while got < n {
        match sys::read_into(fd, buf, n - got) {
            Ok(k) if k > 0 => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => break,
        }
    }
    if got < n {
        let mut junk = [0u8; 4096];
        while matches!(sys::read_some(fd, &mut junk), Ok(k) if k > 0) {}
    }
    got
}

/// Number of delimiters in `data` (memchr's counter is vectorised: far cheaper than
/// visiting every record).
fn count_delims(d: u8, data: &[u8]) -> u64 {
    memchr::memchr_iter(d, data).count() as u64
}

/// Delimiters in `data` if there are at most `limit` of them (`Ok`), else the offset of
/// the `limit`-th (`Err`, 1-based; `limit` ≥ 1). One pass that stops where the limit is
/// passed: whole 4 KiB blocks are counted with the vectorised counter, records are
/// visited one by one only around the cut.
fn count_upto(d: u8, data: &[u8], limit: u64) -> Result<u64, usize> {
    const BLOCK: usize = 4096;
    let mut seen = 0u64;
    let mut base = 0usize;
    for block in data.chunks(BLOCK) {
        let c = count_delims(d, block);
        if seen + c > limit {
            // This block holds the (limit+1)-th delimiter; the limit-th is in it too,
            // or it is the last one before it.
            let pos = if seen < limit {
                memchr::memchr_iter(d, block)
                    .nth((limit - seen - 1) as usize)
                    .map(|p| base + p)
            } else {
                memchr::memrchr(d, &data[..base])
            };
            // Unreachable fallback (the counts say it exists): cut nothing extra.
            return Err(pos.unwrap_or(0));
        }
        seen += c;
        base += block.len();
    }
    Ok(seen)
}

/// Records in the last `unread` bytes written to a reader: each record whose delimiter
/// is still in the pipe was never fully read.
fn records_in_tail(
    log: &VecDeque<Slice>,
    partial_head: Option<&[u8]>,
    unread: usize,
    delim: Option<u8>,
) -> u64 {
    let mut remaining = unread;
    let mut count = 0u64;
    let head = partial_head.map(|b| (b, false, delim.is_none()));
    let logged = log.iter().rev().map(|s| (s.bytes(), s.sentinel, false));
    for (part, is_sentinel, skip) in head.into_iter().chain(logged) {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(part.len());
        remaining -= take;
        if is_sentinel || skip {
            continue;
        }
        let tail = &part[part.len() - take..];
        count += match delim {
            Some(d) => count_delims(d, tail),
            None => 1,
        };
    }
    count
}

pub(super) struct Engine {
    cfg: QueueConfig,
    delim: Option<u8>,
    sentinel_record: Option<Arc<Vec<u8>>>,
    sentinel_finder: Option<memmem::Finder<'static>>,
    events: Sender<RouterEvent>,
    cmds: Receiver<Command>,
    waker: Arc<sys::Waker>,
    shared_stats: Arc<Mutex<QueueStats>>,
    stats: QueueStats,
    writers: Vec<Writer>,
    readers: Vec<Reader>,
    queue: VecDeque<Slice>,
    queued_records: u64,
    /// Bytes of the queued records (see `held_bytes`).
    queued_bytes: usize,
    writers_closed: bool,
    readers_final: bool,
    finishing: bool,
    rr: usize,
    /// A reader that vanished gave records back to the queue since the last dispatch.
    handed_back: bool,
    /// Per writer index: the number after its last record handed to any reader (shared
    /// delivery). A reader's pending batch may be taken back only while it holds its
    /// writer's latest records: no other reader has later ones yet.
    handed: Vec<u64>,
    /// Readers announced to come back (restarts): records given back wait for them when
    /// no open reader can take them in order.
    expected_readers: usize,
    blocked_since: Option<Instant>,
    scratch: Vec<u8>,
    pool: BlockPool,
    /// Private pipe (read end, write end) that writers' pipes are peeked into with tee
    /// (shared delivery), and /dev/null to drop peeked bytes that were not spliced.
    peek: Option<(OwnedFd, OwnedFd)>,
    null: Option<OwnedFd>,
    pollfds: Vec<libc::pollfd>,
    /// The waker's eventfd may be signalled (poll said so, or we have not polled yet):
    /// only then is it worth a `read` to reset it. Commands are looked for at every
    /// round regardless, so a command that arrives after a poll is not missed, and its
    /// wake-up makes the next poll return at once.
    woken: bool,
}

enum Slot {
    Waker,
    Writer(usize),
    Reader(usize),
}

impl Engine {
    pub(super) fn new(
        cfg: QueueConfig,
        events: Sender<RouterEvent>,
        cmds: Receiver<Command>,
        waker: Arc<sys::Waker>,
        shared_stats: Arc<Mutex<QueueStats>>,
    ) -> Engine {
        let delim = cfg.framing.delimiter();
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
            expected_readers: 0,
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
                if !self.readers.iter().any(|r| r.watch.is_some()) {
                    break;
                }
                self.publish();
                if self.wait().is_err() {
                    break;
                }
                continue;
            }
            let now = Instant::now();
            self.read_writers();
            self.dispatch(now);
            self.write_readers(now);
            if std::mem::take(&mut self.handed_back) {
                // Records handed back by a reader that vanished during the writes.
                self.dispatch(now);
                self.write_readers(now);
            }
            self.track_blocked(now);
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

    fn emit(&self, ev: RouterEvent) {
        // The supervisor may have stopped listening; nothing to do about it here.
        let _ = self.events.send(ev);
    }

    fn depth(&self) -> u64 {
        self.queued_records + self.held_by_readers(|r| r.pending_records as usize) as u64
    }

    /// What open readers hold between them: the sum (shared), or the largest (with
    /// broadcast every reader holds the same records).
    fn held_by_readers(&self, held: impl Fn(&Reader) -> usize) -> usize {
        let each = self.readers.iter().filter(|r| r.is_open()).map(held);
        match self.cfg.delivery {
            Delivery::Shared => each.sum(),
            Delivery::Broadcast => each.max().unwrap_or(0),
        }
    }

    /// Bytes of the records held for readers: queued, or pending at a reader (with
    /// broadcast every reader holds the same blocks, so the largest share counts).
    fn held_bytes(&self) -> usize {
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
        self.queued_bytes + self.held_by_readers(|r| r.pending_bytes)
    }

    /// No more records may be taken from writers: `capacity` records are held, or
    /// [`MAX_HELD_BYTES`] of them.
    fn full(&self) -> bool {
        self.depth() >= self.capacity() || self.held_bytes() >= MAX_HELD_BYTES
    }

    /// A writer's last read filled its request and the queue has room: the next round
    /// would read again at once, so polling first would only cost a system call.
    fn more_to_read(&self) -> bool {
        !self.full()
            && self
                .writers
                .iter()
                .any(|w| w.fd.is_some() && w.readable && w.full_read && !w.backlog)
    }

    fn capacity(&self) -> u64 {
        self.cfg.capacity.max(1) as u64
    }

    // ---- commands -------------------------------------------------------------------

    /// Returns false when the router must stop (abort).
    fn handle_commands(&mut self) -> bool {
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
    fn handle_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::AddWriter(id, fd) => self.add_writer(id, fd),
            Command::AddReader(id, fd) => {
                let raw = fd.as_raw_fd();
                let _ = sys::set_nonblocking(raw);
                let cap = sys::set_pipe_size(raw, READER_PIPE);
                self.add_reader(Reader::new(id, Sink::Pipe(fd), cap));
            }
            Command::AddChannelReader(id, tx) => {
                self.add_reader(Reader::new(id, Sink::Channel(tx), 64 * 1024))
            }
            Command::ReaderExited(id) => {
                // An open one, or one that got EOF and is watched (see `watch`).
                let idx = self
                    .readers
                    .iter()
                    .position(|r| r.id == id && (r.is_open() || r.watch.is_some()));
                if let Some(i) = idx {
                    self.reader_gone(i);
                }
            }
            Command::CloseWriters => self.writers_closed = true,
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
                if let Some(r) = self.readers.iter_mut().find(|r| r.id == id && r.awaited) {
                    r.awaited = false;
                    self.expected_readers = self.expected_readers.saturating_sub(1);
                }
            }
            Command::Cut => self.cut_stream(),
            Command::Abort => {
                self.abort();
                return false;
            }
        }
        true
    }

    fn add_writer(&mut self, id: WriterId, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let _ = sys::set_nonblocking(raw);
        sys::grow_pipe(raw, WRITER_PIPE);
        let no_reader = self.readers_final && !self.readers.iter().any(|r| r.is_open());
        let mut w = Writer {
            id,
            fd: Some(fd),
            carry: Vec::new(),
            backlog: false,
            eof_pending: false,
            readable: true,
            full_read: false,
            tee: self.peek.is_some(),
            peeked: 0,
            shadow: None,
            records: 0,
            discarding: false,
            discard_partial: false,
            done_reported: false,
        };
        if no_reader {
            // Like a shell pipeline whose reader is gone: the writer sees EPIPE.
            w.fd = None;
            w.done_reported = true;
            self.emit(RouterEvent::WriterDone {
                queue: self.cfg.queue,
                writer: id,
            });
        }
        self.writers.push(w);
        self.handed.push(0);
    }

    fn add_reader(&mut self, mut r: Reader) {
        r.served = self
            .readers
            .iter()
            .filter(|o| o.state == ReaderState::Live)
            .map(|o| o.served)
            .min()
            .unwrap_or(0);
        if self.finishing {
            // Joined after the end of stream: only the sentinel, then EOF.
            r.state = ReaderState::Finishing;
            push_sentinel(self.sentinel_record.as_ref(), &mut r);
        }
        self.readers.push(r);
    }

    // ---- writers --------------------------------------------------------------------

    fn read_writers(&mut self) {
        let n = self.writers.len();
        for wi in 0..n {
            if self.writers[wi].backlog && !self.full() {
                self.writers[wi].backlog = false;
                self.cut(wi, 0, None);
                let w = &mut self.writers[wi];
                if !w.backlog && w.eof_pending {
                    w.eof_pending = false;
                    w.carry = Vec::new();
                    self.report_writer_done(wi);
                }
            }
            let w = &self.writers[wi];
            if w.fd.is_none() || !w.readable || w.backlog {
                continue;
            }
            if !w.discarding && self.full() {
                continue;
            }
            self.read_writer(wi);
        }
    }

    fn read_size(&self) -> usize {
        let room = self.capacity().saturating_sub(self.depth()) as usize;
        // Before the first record its size is unknown: start with the minimum read.
        let avg = self
            .stats
            .bytes
            .checked_div(self.stats.records)
            .map_or(1, |a| a.max(1) as usize);
        room.saturating_mul(avg).clamp(MIN_READ, READ_BLOCK)
    }

    fn read_writer(&mut self, wi: usize) {
        let size = self.read_size();
        if !self.consume_peeked(wi) {
            return;
        }
        let w = &mut self.writers[wi];
        let Some(fd) = &w.fd else { return };
        let raw = fd.as_raw_fd();
        if w.discarding {
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
                    let w = &mut self.writers[wi];
                    w.discard_partial = self.delim.is_some_and(|d| data[n - 1] != d);
                }
                Err(e) => self.writer_read_error(wi, e),
            }
            return;
        }
        if self.try_direct(wi, Instant::now()) {
            return;
        }
        let w = &mut self.writers[wi];
        let old = w.carry.len();
        let got = match &self.peek {
            Some((pr, pw)) if w.tee => match sys::tee(raw, pw.as_raw_fd(), size) {
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

    /// The direct path of shared delivery: when nothing is queued and writer `wi` has
    /// nothing carried over, peek its pipe up to the room of the least served streaming
    /// reader and splice the whole records straight into that reader's pipe. They are
    /// never buffered in prun (only copied once to find and count them), so the queue's
    /// capacity does not cap the batch: a batch is as large as the reader can take, which
    /// is what makes this path cheaper than the queue (fewer, larger system calls).
    /// Returns false when the path does not apply; the caller then reads as usual.
    fn try_direct(&mut self, wi: usize, now: Instant) -> bool {
        let Some(d) = self.delim else { return false };
        let w = &self.writers[wi];
        if self.cfg.delivery != Delivery::Shared
            || !self.queue.is_empty()
            || !w.tee
            || w.discarding
            || w.backlog
            || w.peeked > 0
            || !w.carry.is_empty()
        {
            return false;
        }
        let (Some(wfd), Some((pr, pw))) = (&w.fd, &self.peek) else {
            return false;
        };
        let (wfd, pr, pw) = (wfd.as_raw_fd(), pr.as_raw_fd(), pw.as_raw_fd());
        // The least served streaming reader (a measured, fast one): slow or new readers
        // are served through the queue, whose dispatch keeps them from hoarding.
        let Some(ri) = (0..self.readers.len())
            .filter(|&i| {
                let r = &self.readers[i];
                r.may_take()
                    && r.writable
                    && r.measured
                    && r.streaming()
                    && matches!(r.sink, Some(Sink::Pipe(_)))
            })
            .min_by_key(|&i| self.readers[i].served)
        else {
            return false;
        };
        let Some((unread, room)) = self.readers[ri].room(now) else {
            return false;
        };
        let size = room.min(READ_BLOCK);
        if size < PAGE {
            return false;
        }
        let n = match sys::tee(wfd, pw, size) {
            Ok(0) => {
                self.writer_eof(wi);
                return true;
            }
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.writers[wi].tee = false;
                return false;
            }
            Err(e) => {
                self.writer_read_error(wi, e);
                return true;
            }
        };
        let mut block = self.pool.take(READ_BLOCK);
        let got = read_peeked(pr, &mut block, n);
        self.writers[wi].full_read = got == size;
        let cut = memchr::memrchr(d, &block[..got]).map(|p| p + 1);
        let sentinel = self.sentinel_finder.as_ref().is_some_and(|f| {
            let sent = self.cfg.sentinel.as_deref().unwrap_or_default();
            f.find(&block[..got]).is_some()
                || (block[..got].starts_with(sent) && block.get(sent.len()) == Some(&d))
        });
        let Some(cut) = cut.filter(|_| !sentinel) else {
            // No whole record yet, or the writer's sentinel is in there: the queue's path
            // handles it, with these bytes as if just peeked by it.
            let w = &mut self.writers[wi];
            w.carry = block;
            w.peeked = got;
            self.cut(wi, 0, Some(0));
            return true;
        };
        let Some(Sink::Pipe(rfd)) = &self.readers[ri].sink else {
            return false;
        };
        let moved = loop {
            match sys::splice(wfd, rfd.as_raw_fd(), cut) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let m = match moved {
            Ok(m) if m > 0 => m,
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Its pipe is full after all: the bytes stay in the writer's pipe.
                let r = &mut self.readers[ri];
                r.writable = false;
                r.blocked_since.get_or_insert(now);
                return true;
            }
            Err(_) => {
                // The reader is gone; nothing left the writer's pipe.
                self.reader_gone(ri);
                return true;
            }
        };
        // Records wholly delivered, and the one cut short (its rest is pending for this
        // reader and still at the head of the writer's pipe: it goes there by splice).
        let whole_end = if m == cut {
            cut
        } else {
            memchr::memrchr(d, &block[..m]).map_or(0, |p| p + 1)
        };
        let rest_end = if whole_end == m {
            m
        } else {
            m + memchr::memchr(d, &block[m..cut]).map_or(cut - m, |p| p + 1)
        };
        let whole = count_delims(d, &block[..whole_end]);
        let accepted = whole + u64::from(rest_end > whole_end);
        let buf = Arc::new(block);
        self.pool.keep(&buf);
        self.stats.records += accepted;
        self.stats.bytes += rest_end as u64;
        let w = &mut self.writers[wi];
        let seq = w.records;
        w.records += accepted;
        self.handed[wi] = self.handed[wi].max(seq + accepted);
        if rest_end > m {
            w.peeked = rest_end - m;
            w.shadow = Some(Shadow {
                buf: buf.clone(),
                pos: m,
                len: rest_end - m,
            });
        }
        let r = &mut self.readers[ri];
        // As in dispatch: the measurement period starts before the bytes are counted.
        r.given(now, unread);
        r.blocked_since = None;
        r.written += m as u64;
        r.served += rest_end as u64;
        r.delivered += whole;
        r.note_handed(wi, seq + whole);
        if whole_end > 0 {
            r.log_written(Slice {
                buf: buf.clone(),
                start: 0,
                end: whole_end,
                records: whole,
                sentinel: false,
                writer: wi,
                seq,
            });
        }
        if rest_end > whole_end {
            r.push_pending(Slice {
                buf,
                start: whole_end,
                end: rest_end,
                records: 1,
                sentinel: false,
                writer: wi,
                seq: seq + whole,
            });
            r.head_off = m - whole_end;
        }
        let depth = self.depth();
        self.stats.max_depth = self.stats.max_depth.max(depth);
        true
    }

    /// Consume what was peeked from writer `wi`'s pipe and not spliced (drop it: it is in
    /// our memory), so the pipe can be peeked again. False if that failed (the stream is
    /// then ended like on a read error: peeking again would duplicate records).
    fn consume_peeked(&mut self, wi: usize) -> bool {
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

    fn writer_read_error(&mut self, wi: usize, e: io::Error) {
        match e.kind() {
            io::ErrorKind::WouldBlock => self.writers[wi].readable = false,
            io::ErrorKind::Interrupted => {}
            // Any other error ends this writer's stream as EOF would.
            _ => self.writer_eof(wi),
        }
    }

    fn writer_eof(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        if w.discarding {
            if w.discard_partial {
                self.stats.dropped_after_sentinel += 1;
            }
        } else if !w.carry.is_empty() {
            // The last record lacks its delimiter: add it.
            if let Some(d) = self.delim {
                w.carry.push(d);
            }
            let old = w.carry.len() - 1;
            self.cut(wi, old, None);
        }
        let w = &mut self.writers[wi];
        w.fd = None;
        w.peeked = 0;
        w.shadow = None;
        if w.backlog {
            // Records still wait for room in the queue: done once they are in.
            w.eof_pending = true;
            return;
        }
        w.carry = Vec::new();
        self.report_writer_done(wi);
    }

    fn report_writer_done(&mut self, wi: usize) {
        let w = &mut self.writers[wi];
        if !w.done_reported {
            w.done_reported = true;
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
    fn cut(&mut self, wi: usize, scan_from: usize, peeked: Option<usize>) {
        let room = self.capacity().saturating_sub(self.depth()) as usize;
        let discarding = self.writers[wi].discarding;
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
                w.backlog = true;
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
                        w.backlog = true;
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
        if peeked.is_some() && !w.discarding && !w.carry.is_empty() && w.carry.len() <= w.peeked {
            // What is left was peeked: the incomplete last record, or whole records the
            // full queue could not take. Leave it in the pipe (it is the start of the
            // next peek) rather than carry it: the next block begins at the pipe's head
            // and can go whole by splice, possibly by the direct path, and prun holds no
            // backlog. Only after a cut, so a record longer than a read still makes
            // progress (it is carried).
            w.peeked -= w.carry.len();
            w.carry.clear();
            w.backlog = false;
        }
    }

    /// Put a chunk of whole records into the queue; `records` is their number when the
    /// caller counted them already.
    fn accept(
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
                let waiting = if w.backlog {
                    count_delims(d, &w.carry)
                } else {
                    0
                };
                w.discard_partial = if w.backlog {
                    w.carry.last() != Some(&d)
                } else {
                    !w.carry.is_empty()
                };
                w.backlog = false;
                w.eof_pending = false;
                self.stats.dropped_after_sentinel += dropped + waiting;
                w.discarding = true;
                w.carry = Vec::new();
                if !w.done_reported {
                    w.done_reported = true;
                    let id = w.id;
                    self.emit(RouterEvent::WriterDone {
                        queue: self.cfg.queue,
                        writer: id,
                    });
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
        self.queue.push_back(Slice {
            buf,
            start: 0,
            end,
            records,
            sentinel: false,
            writer: wi,
            seq,
        });
        self.queued_records += records;
        self.queued_bytes += end;
        let depth = self.depth();
        self.stats.max_depth = self.stats.max_depth.max(depth);
    }

    // ---- dispatch -------------------------------------------------------------------

    fn dispatch(&mut self, now: Instant) {
        match self.cfg.delivery {
            Delivery::Broadcast => self.dispatch_broadcast(),
            Delivery::Shared => self.dispatch_shared(now),
        }
    }

    fn dispatch_broadcast(&mut self) {
        if !self.readers.iter().any(|r| r.state == ReaderState::Live) {
            return;
        }
        while let Some(s) = self.queue.pop_front() {
            self.queued_records -= s.records;
            self.queued_bytes = self.queued_bytes.saturating_sub(s.len());
            for r in self
                .readers
                .iter_mut()
                .filter(|r| r.state == ReaderState::Live)
            {
                r.push_pending(s.clone());
            }
        }
    }

    fn dispatch_shared(&mut self, now: Instant) {
        if self.queue.is_empty() {
            self.steal(now);
        }
        if self.queue.is_empty() {
            return;
        }
        // Who may take records now, and how much: only readers that worked through what
        // they were given (see `Reader::room`). The least served first (ties take turns:
        // the rotation starts after the reader served first last time), so ready readers
        // share alike.
        let n = self.readers.len();
        let mut order: Vec<usize> = (0..n)
            .map(|k| (self.rr + k) % n)
            .filter(|&i| self.readers[i].may_take())
            .collect();
        if order.is_empty() {
            return;
        }
        order.sort_by_key(|&i| self.readers[i].served);
        // A few records waiting are shared out exactly, so that each ready reader gets
        // some now (slow readers that slurp their input look ready: splitting is what
        // keeps one of them from taking it all). Many records go by whole blocks up to
        // each reader's room: one write per block, and readers take turns block by
        // block. With too many records to share exactly even among every candidate, a
        // reader's pipe is only measured (FIONREAD) once records are left for it.
        let many = self.queued_records.div_ceil(order.len() as u64) > EXACT_SHARE;
        let mut known = vec![None; order.len()];
        let (exact, share) = if many {
            (false, u64::MAX)
        } else {
            for (k, &i) in order.iter().enumerate() {
                known[k] = self.readers[i].room(now);
            }
            let ready = known.iter().flatten().count() as u64;
            if ready == 0 {
                return;
            }
            let share = self.queued_records.div_ceil(ready).max(1);
            (share <= EXACT_SHARE, share)
        };
        let mut first = true;
        for (k, &i) in order.iter().enumerate() {
            if self.queue.is_empty() {
                break;
            }
            let ready = if many {
                self.readers[i].room(now)
            } else {
                known[k]
            };
            let Some((unread, room)) = ready else {
                continue;
            };
            if std::mem::take(&mut first) {
                self.rr = (i + 1) % n;
            }
            let mut max_recs = if exact { share } else { u64::MAX };
            if !self.readers[i].measured {
                max_recs = max_recs.min(FIRST_RECORDS);
            }
            let max_bytes = room;
            // A reader with an empty pipe gets at least one record, however large.
            let drained = unread == 0;
            let mut recs = 0u64;
            let mut bytes = 0usize;
            while recs < max_recs && bytes < max_bytes {
                let Some(k) = self.next_for(i) else { break };
                let first = recs == 0 && drained;
                let Some(s) = self.cut_at(k, max_recs - recs, max_bytes - bytes, first) else {
                    break;
                };
                recs += s.records;
                bytes += s.len();
                self.queued_records -= s.records;
                self.queued_bytes = self.queued_bytes.saturating_sub(s.len());
                if s.writer != NO_WRITER {
                    let h = &mut self.handed[s.writer];
                    *h = (*h).max(s.seq + s.records);
                }
                self.readers[i].served += s.len() as u64;
                self.readers[i].push_pending(s);
            }
            if recs > 0 {
                self.readers[i].given(now, unread);
            }
        }
    }

    /// Where in the queue reader `i` takes records from: the front, unless the front
    /// holds records given back that are older than some this reader already got from
    /// the same writer. Those wait for a reader that has none of that writer's later
    /// records (the others go on with the rest of the queue), or for a reader that is
    /// to be restarted; if none qualifies and none is expected, delivering them out of
    /// order beats losing them. Only given-back slices can fail the test, so this is
    /// one check in the common case.
    fn next_for(&self, i: usize) -> Option<usize> {
        let r = &self.readers[i];
        self.queue.iter().position(|s| {
            r.in_order(s)
                || (self.expected_readers == 0
                    && !self
                        .readers
                        .iter()
                        .any(|o| o.state == ReaderState::Live && o.in_order(s)))
        })
    }

    /// Take whole records from the front of the queue's slice `k`: at most `max_recs`
    /// and `max_bytes`, but at least one record when `at_least_one`.
    fn cut_at(
        &mut self,
        k: usize,
        max_recs: u64,
        max_bytes: usize,
        at_least_one: bool,
    ) -> Option<Slice> {
        let front = self.queue.get_mut(k)?;
        if front.records <= max_recs && front.len() <= max_bytes {
            return self.queue.remove(k);
        }
        let Some(d) = self.delim else {
            // Bytes framing: a slice is one record, indivisible.
            return if at_least_one {
                self.queue.remove(k)
            } else {
                None
            };
        };
        let data = front.bytes();
        let (cut, n) = if front.records <= max_recs {
            // Only the byte budget binds: cut at the last delimiter inside it.
            match memchr::memrchr(d, &data[..max_bytes.min(data.len())]) {
                Some(p) => {
                    // The slice's count is known: count whichever side is shorter.
                    let cut = p + 1;
                    let n = if cut * 2 <= data.len() {
                        count_delims(d, &data[..cut])
                    } else {
                        front.records.saturating_sub(count_delims(d, &data[cut..]))
                    };
                    (cut, n)
                }
                None if at_least_one => {
                    let p = memchr::memchr(d, data)?;
                    (p + 1, 1)
                }
                None => return None,
            }
        } else {
            let mut cut = 0;
            let mut n = 0u64;
            for p in memchr::memchr_iter(d, data) {
                let e = p + 1;
                if e > max_bytes && !(n == 0 && at_least_one) {
                    break;
                }
                cut = e;
                n += 1;
                if n == max_recs || e >= max_bytes {
                    break;
                }
            }
            (cut, n)
        };
        if n == 0 {
            return None;
        }
        if n == front.records {
            return self.queue.remove(k);
        }
        let taken = Slice {
            buf: front.buf.clone(),
            start: front.start,
            end: front.start + cut,
            records: n,
            sentinel: false,
            writer: front.writer,
            seq: front.seq,
        };
        front.start += cut;
        front.records -= n;
        front.seq += n;
        Some(taken)
    }

    /// An idle reader while another's pipe stays full: take back the records not yet
    /// written to the stuck one (they were never handed over) and shrink its window.
    /// Only a batch that holds its writer's latest records handed out is taken back
    /// (from the newest down): no reader has later records of that writer, so whoever
    /// gets it next still sees the writer's order.
    fn steal(&mut self, now: Instant) {
        let idle = self
            .readers
            .iter()
            .any(|r| r.state == ReaderState::Live && r.pending.is_empty() && r.sink.is_some());
        if !idle {
            return;
        }
        for r in self
            .readers
            .iter_mut()
            .filter(|r| r.state == ReaderState::Live)
        {
            let stuck = r
                .blocked_since
                .is_some_and(|t| now.duration_since(t) >= STEAL_AFTER);
            let keep = usize::from(r.head_off > 0);
            if !stuck || r.pending.len() <= keep {
                continue;
            }
            let mut took = false;
            while r.pending.len() > keep {
                let s = r.pending.back().expect("pending is longer than keep");
                if s.sentinel || self.handed[s.writer] != s.seq + s.records {
                    break;
                }
                let s = r.pending.pop_back().expect("checked above");
                self.handed[s.writer] = s.seq;
                r.high[s.writer] = s.seq;
                r.pending_records -= s.records;
                r.pending_bytes = r.pending_bytes.saturating_sub(s.len());
                self.queued_records += s.records;
                self.queued_bytes += s.len();
                self.queue.push_front(s);
                took = true;
            }
            if took {
                r.window = (r.window / 2).max(1);
            }
        }
    }

    // ---- readers --------------------------------------------------------------------

    fn write_readers(&mut self, now: Instant) {
        let n = self.readers.len();
        let mut done = vec![false; n];
        if self.writers.iter().any(|w| w.shadow.is_some()) {
            // Readers whose next bytes are at the head of a writer's pipe go first: once
            // one has spliced its part of a block, the next part is at the head, maybe
            // for another reader, which then splices it instead of writing it.
            while let Some(i) = (0..n).find(|&i| !done[i] && self.at_pipe_head(i)) {
                done[i] = true;
                self.write_reader(i, now);
            }
        }
        for (i, done) in done.into_iter().enumerate() {
            if !done {
                self.write_reader(i, now);
            }
        }
    }

    /// Reader `i` can be written and what it has pending next is at the head of a
    /// writer's pipe (see [`Shadow`]).
    fn at_pipe_head(&self, i: usize) -> bool {
        let r = &self.readers[i];
        let Some(front) = r.pending.front() else {
            return false;
        };
        let pos = front.start + r.head_off;
        r.is_open()
            && r.writable
            && matches!(r.sink, Some(Sink::Pipe(_)))
            && self.writers.iter().any(|w| {
                w.shadow.as_ref().is_some_and(|sh| {
                    sh.len > 0 && sh.pos == pos && Arc::ptr_eq(&sh.buf, &front.buf)
                })
            })
    }

    fn write_reader(&mut self, i: usize, now: Instant) {
        let r = &self.readers[i];
        if !r.is_open() || r.pending.is_empty() {
            return;
        }
        let ok = match &r.sink {
            Some(Sink::Pipe(_)) if r.writable => self.write_pipe(i, now),
            Some(Sink::Channel(_)) => self.write_channel(i, now),
            _ => true,
        };
        if !ok {
            self.reader_gone(i);
        }
    }

    /// Returns false when the reader is gone (EPIPE or another write error).
    fn write_pipe(&mut self, i: usize, now: Instant) -> bool {
        let writers = &mut self.writers;
        let sentinels = &mut self.stats.sentinels_sent;
        let r = &mut self.readers[i];
        let Some(Sink::Pipe(fd)) = &r.sink else {
            return true;
        };
        let raw = fd.as_raw_fd();
        while let Some(front) = r.pending.front() {
            // Bytes that are still at the head of a writer's pipe go by splice; the
            // writev stops where they start, so that the reader's bytes stay in order.
            let pos = front.start + r.head_off;
            let mut source = None;
            let mut front_max = usize::MAX;
            let mut slices = r.pending.len().min(MAX_IOV);
            for (wi, w) in writers.iter().enumerate() {
                let Some(sh) = w.shadow.as_ref().filter(|sh| sh.len > 0) else {
                    continue;
                };
                for (k, s) in r.pending.iter().take(slices).enumerate() {
                    let from = if k == 0 { pos } else { s.start };
                    if !Arc::ptr_eq(&s.buf, &sh.buf) || sh.pos < from || sh.pos >= s.end {
                        continue;
                    }
                    if k > 0 {
                        slices = k;
                    } else if sh.pos == pos {
                        source = Some(wi);
                    } else {
                        // Write up to there, and nothing after it in this call.
                        front_max = sh.pos - pos;
                        slices = 1;
                    }
                    break;
                }
            }
            let wrote = if let Some(wi) = source {
                let w = &mut writers[wi];
                let (Some(wfd), Some(sh)) = (&w.fd, &mut w.shadow) else {
                    w.shadow = None;
                    continue;
                };
                let want = sh.len.min(front.end - pos);
                match sys::splice(wfd.as_raw_fd(), raw, want) {
                    Ok(n) if n > 0 => {
                        sh.pos += n;
                        sh.len -= n;
                        w.peeked = w.peeked.saturating_sub(n);
                        Ok(n)
                    }
                    // A full reader pipe, unless the writer's pipe lacks the bytes (it
                    // cannot, by construction; if it ever did, writing from memory
                    // keeps the reader from waiting forever on a splice).
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            && sys::unread_bytes(wfd.as_raw_fd()) >= want =>
                    {
                        Err(e)
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::BrokenPipe
                        ) =>
                    {
                        Err(e)
                    }
                    _ => {
                        // Nothing moved for another reason: write these bytes from
                        // memory instead (the peeked ones are dropped before the next
                        // peek).
                        w.shadow = None;
                        continue;
                    }
                }
            } else {
                let iov: Vec<IoSlice<'_>> = r
                    .pending
                    .iter()
                    .take(slices)
                    .enumerate()
                    .map(|(k, s)| {
                        IoSlice::new(if k == 0 {
                            let rest = &s.bytes()[r.head_off..];
                            &rest[..rest.len().min(front_max)]
                        } else {
                            s.bytes()
                        })
                    })
                    .collect();
                sys::writev(raw, &iov)
            };
            match wrote {
                Ok(n) => advance(r, n, sentinels),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    r.writable = false;
                    r.blocked_since.get_or_insert(now);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    fn write_channel(&mut self, i: usize, now: Instant) -> bool {
        let delim = self.delim;
        let r = &mut self.readers[i];
        let Some(Sink::Channel(tx)) = &r.sink else {
            return true;
        };
        while let Some(front) = r.pending.front() {
            let data = &front.bytes()[r.head_off..];
            if data.is_empty() || front.sentinel {
                if let Some(s) = r.pending.pop_front() {
                    r.pending_records -= s.records;
                    r.pending_bytes = r.pending_bytes.saturating_sub(s.len());
                }
                r.head_off = 0;
                continue;
            }
            let (record, used) = match delim {
                Some(d) => match memchr::memchr(d, data) {
                    Some(p) => (&data[..p], p + 1),
                    None => (data, data.len()),
                },
                None => (data, data.len()),
            };
            match tx.try_send(record.to_vec()) {
                Ok(()) => {
                    r.head_off += used;
                    r.delivered += 1;
                    r.blocked_since = None;
                    if r.head_off >= front.len() {
                        if let Some(s) = r.pending.pop_front() {
                            r.pending_records -= s.records;
                            r.pending_bytes = r.pending_bytes.saturating_sub(s.len());
                        }
                        r.head_off = 0;
                    }
                }
                Err(TrySendError::Full(_)) => {
                    r.blocked_since.get_or_insert(now);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        true
    }

    /// A reader exited (told by the supervisor) or could not be written to.
    fn reader_gone(&mut self, i: usize) {
        let delim = self.delim;
        let shared = self.cfg.delivery == Delivery::Shared;
        let r = &mut self.readers[i];
        if !r.is_open() {
            // It got EOF from us: count what it left unread in its pipe.
            if let Some(watch) = r.watch.take() {
                let unread = sys::unread_bytes(watch.as_raw_fd());
                self.stats.in_flight_at_failure += records_in_tail(&r.log, None, unread, delim);
                r.log.clear();
                r.log_bytes = 0;
            }
            return;
        }
        // What it never read: records whose end is still in its pipe (or channel).
        let in_flight = match &r.sink {
            Some(Sink::Pipe(fd)) => {
                let unread = sys::unread_bytes(fd.as_raw_fd());
                let head = r
                    .pending
                    .front()
                    .filter(|_| r.head_off > 0)
                    .map(|s| &s.bytes()[..r.head_off]);
                records_in_tail(&r.log, head, unread, delim)
            }
            Some(Sink::Channel(tx)) => tx.len() as u64,
            None => 0,
        };
        r.sink = None;
        r.state = ReaderState::Gone;
        if r.may_restart && !r.awaited {
            r.awaited = true;
            self.expected_readers += 1;
        }
        r.log.clear();
        r.log_bytes = 0;
        self.stats.in_flight_at_failure += in_flight;
        let mut back: Vec<Slice> = r.pending.drain(..).collect();
        r.pending_records = 0;
        r.pending_bytes = 0;
        if r.head_off > 0 {
            // The head slice was partly handed over: its complete records count as
            // delivered; the torn record and the rest go back whole.
            if let Some(first) = back.first_mut() {
                let written = &first.bytes()[..r.head_off];
                let boundary = match delim {
                    Some(d) => memchr::memrchr(d, written).map_or(0, |p| p + 1),
                    None => 0,
                };
                let done = match delim {
                    Some(d) => count_delims(d, &written[..boundary]),
                    None => 0,
                };
                r.delivered += done;
                first.start += boundary;
                first.records -= done;
                first.seq += done;
            }
            r.head_off = 0;
        }
        if shared {
            for s in back.into_iter().rev() {
                if s.sentinel || s.records == 0 {
                    continue;
                }
                self.queued_records += s.records;
                self.queued_bytes += s.len();
                self.queue.push_front(s);
                self.handed_back = true;
            }
        } else {
            // Broadcast: the other readers have their own copies, so these were on their
            // way to this reader only, and it will never get them.
            self.stats.in_flight_at_failure += back
                .iter()
                .filter(|s| !s.sentinel)
                .map(|s| s.records)
                .sum::<u64>();
        }
        if !r.gone_reported {
            r.gone_reported = true;
            let id = r.id;
            self.emit(RouterEvent::ReaderGone {
                queue: self.cfg.queue,
                reader: id,
            });
        }
        self.strand_if_no_reader();
    }

    /// No reader left and none will come: writers must see a closed pipe, like in a
    /// shell pipeline, and what is buffered can never be delivered.
    fn strand_if_no_reader(&mut self) {
        if !self.readers_final || self.readers.iter().any(|r| r.is_open()) {
            return;
        }
        for w in &mut self.writers {
            w.peeked = 0;
            w.shadow = None;
            if (w.fd.take().is_some() || w.backlog) && !w.done_reported {
                w.done_reported = true;
                let _ = self.events.send(RouterEvent::WriterDone {
                    queue: self.cfg.queue,
                    writer: w.id,
                });
            }
            discard_backlog(w, self.delim, &mut self.stats);
            w.backlog = false;
            w.eof_pending = false;
            w.carry = Vec::new();
        }
        self.stats.discarded += self.queued_records;
        self.queue.clear();
        self.queued_records = 0;
        self.queued_bytes = 0;
    }

    fn abort(&mut self) {
        self.stats.discarded += self.depth();
        for wi in 0..self.writers.len() {
            self.discard_writer(wi);
        }
        for r in &mut self.readers {
            if r.is_open() {
                r.give_eof();
            }
            r.pending.clear();
            r.pending_records = 0;
            r.pending_bytes = 0;
        }
        self.queue.clear();
        self.queued_records = 0;
        self.queued_bytes = 0;
    }

    /// End the stream now (the run is being stopped and the readers did not drain the
    /// queue in time): what is queued and what the writers left in their pipes is
    /// counted as discarded; a reader in the middle of a record gets the rest of that
    /// record; then every reader gets the sentinel and EOF as at a normal end, and
    /// `Drained` follows.
    fn cut_stream(&mut self) {
        self.stats.discarded += self.queued_records;
        self.queue.clear();
        self.queued_records = 0;
        self.queued_bytes = 0;
        for wi in 0..self.writers.len() {
            self.discard_writer(wi);
            let w = &mut self.writers[wi];
            if !w.done_reported {
                w.done_reported = true;
                let _ = self.events.send(RouterEvent::WriterDone {
                    queue: self.cfg.queue,
                    writer: w.id,
                });
            }
        }
        self.writers_closed = true;
        let delim = self.delim;
        for r in self.readers.iter_mut().filter(|r| r.is_open()) {
            // Keep only the rest of a record partly written to it (a record is never
            // torn); the sentinel is queued again below.
            let mut keep = None;
            if r.head_off > 0
                && let Some(mut head) = r.pending.pop_front()
            {
                let rest = &head.bytes()[r.head_off..];
                let end = match delim {
                    Some(d) => memchr::memchr(d, rest).map_or(rest.len(), |p| p + 1),
                    None => rest.len(),
                };
                let after = &rest[end..];
                let dropped = match delim {
                    Some(d) => count_delims(d, after),
                    None => 0,
                };
                self.stats.discarded += dropped;
                head.end = head.start + r.head_off + end;
                head.records = head.records.saturating_sub(dropped).max(1);
                keep = Some(head);
            }
            self.stats.discarded += r
                .pending
                .iter()
                .filter(|s| !s.sentinel)
                .map(|s| s.records)
                .sum::<u64>();
            r.pending.clear();
            r.pending_records = 0;
            r.pending_bytes = 0;
            if let Some(head) = keep {
                r.pending_records = head.records;
                r.pending_bytes = head.len();
                r.pending.push_back(head);
            } else {
                r.head_off = 0;
            }
            // End of stream for each reader on its own: one that does not take the rest
            // of its record must not keep the others from their EOF.
            r.state = ReaderState::Finishing;
            push_sentinel(self.sentinel_record.as_ref(), r);
        }
        self.finishing = true;
    }

    /// Stop reading writer `wi` for good: what it wrote and nobody will get (its backlog,
    /// what is left in its pipe) is counted as read and discarded, and its pipe closed.
    fn discard_writer(&mut self, wi: usize) {
        self.discard_unread(wi);
        let w = &mut self.writers[wi];
        discard_backlog(w, self.delim, &mut self.stats);
        w.fd = None;
        w.peeked = 0;
        w.shadow = None;
        w.backlog = false;
        w.eof_pending = false;
        w.carry = Vec::new();
    }

    /// At abort: read what writer `wi` left in its pipe (a pipe's worth or so: a writer
    /// still running sees EPIPE next), and its incomplete last record, and count those
    /// records as read and discarded, so the report accounts for every record written.
    fn discard_unread(&mut self, wi: usize) {
        let delim = self.delim;
        let w = &mut self.writers[wi];
        if w.discarding {
            return;
        }
        // The record being read when the stream was cut (complete records of a backlog
        // are counted by the caller).
        let partial: &[u8] = match (delim, w.backlog) {
            (Some(d), true) => {
                memchr::memrchr(d, &w.carry).map_or(&w.carry[..], |p| &w.carry[p + 1..])
            }
            _ => &w.carry[..],
        };
        let mut bytes = partial.len() as u64;
        let mut last = partial.last().copied();
        let mut records = 0u64;
        if let Some(fd) = &w.fd {
            let raw = fd.as_raw_fd();
            // Bytes peeked are already in the queue, counted there.
            let mut skip = w.peeked;
            let mut budget = 2 * WRITER_PIPE + skip;
            let mut buf = vec![0u8; 64 * 1024];
            while budget > 0 {
                let want = buf.len().min(budget);
                let n = match sys::read_some(raw, &mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                budget -= n;
                let fresh = &buf[skip.min(n)..n];
                skip -= skip.min(n);
                if fresh.is_empty() {
                    continue;
                }
                bytes += fresh.len() as u64;
                last = fresh.last().copied();
                match delim {
                    Some(d) => records += count_delims(d, fresh),
                    None => records += 1,
                }
            }
        }
        // An incomplete last record is a record too (it would have been delivered with
        // its delimiter added).
        let unfinished = match delim {
            Some(_) => bytes > 0 && last != delim,
            None => !partial.is_empty(),
        };
        records += u64::from(unfinished);
        w.records += records;
        self.stats.records += records;
        self.stats.bytes += bytes;
        self.stats.discarded += records;
    }

    // ---- end of stream --------------------------------------------------------------

    /// Returns true when the queue is drained and the thread may end.
    fn check_end(&mut self) -> bool {
        if !self.writers_closed || self.writers.iter().any(|w| w.fd.is_some() || w.backlog) {
            return false;
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
                .any(|r| r.state == ReaderState::Live && r.pending_records > 0)
            {
                // Records are still pending (maybe one partly written): a reader that
                // dies now hands them back, and the others must still be open to take
                // them (SPEC 4.5). Sentinels and EOF only once every record is written.
                return false;
            }
            self.finishing = true;
            let sentinel = self.sentinel_record.clone();
            for r in self
                .readers
                .iter_mut()
                .filter(|r| r.state == ReaderState::Live)
            {
                r.state = ReaderState::Finishing;
                push_sentinel(sentinel.as_ref(), r);
            }
            let now = Instant::now();
            self.write_readers(now);
        }
        // Publish before any reader sees EOF: once the readers exit, the supervisor may
        // end the run and read the statistics (the sentinels just written included).
        self.publish();
        for r in self.readers.iter_mut() {
            if r.state == ReaderState::Finishing && r.pending.is_empty() {
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

    fn track_blocked(&mut self, now: Instant) {
        let writers_open = self.writers.iter().any(|w| w.fd.is_some() && !w.discarding);
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

    fn publish(&mut self) {
        let mut s = self.stats.clone();
        if let Some(t) = self.blocked_since {
            s.blocked_ms += t.elapsed().as_millis() as u64;
        }
        s.per_writer = self.writers.iter().map(|w| (w.id, w.records)).collect();
        s.per_reader = self.readers.iter().map(|r| (r.id, r.delivered)).collect();
        if let Ok(mut g) = self.shared_stats.lock() {
            *g = s;
        }
    }

    fn wait(&mut self) -> io::Result<()> {
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
                && (read_more || w.discarding)
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
        if read_more && self.writers.iter().any(|w| w.backlog) {
            // Room freed since the backlog was set: cut it in at the next round.
            tick = true;
        }
        let any_live = self.readers.iter().any(|r| r.state == ReaderState::Live);
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

/// The complete records waiting in a writer's backlog (read, but not yet in the queue
/// because it was full) will never be delivered: count them as read and discarded.
fn discard_backlog(w: &mut Writer, delim: Option<u8>, stats: &mut QueueStats) {
    let (true, Some(d)) = (w.backlog, delim) else {
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

/// `n` bytes of what `r` has pending were written to its pipe.
fn advance(r: &mut Reader, mut n: usize, sentinels: &mut u64) {
    r.blocked_since = None;
    r.written += n as u64;
    while n > 0 {
        let Some(front) = r.pending.front() else {
            break;
        };
        let left = front.len() - r.head_off;
        if n >= left {
            n -= left;
            r.head_off = 0;
            if let Some(s) = r.pending.pop_front() {
                r.pending_records -= s.records;
                r.pending_bytes = r.pending_bytes.saturating_sub(s.len());
                r.delivered += s.records;
                if s.sentinel {
                    *sentinels += 1;
                }
                r.log_written(s);
            }
        } else {
            r.head_off += n;
            n = 0;
        }
    }
}

/// Queue the sentinel record (if the queue has one) behind what a pipe reader still has
/// pending; channel readers get none (the channel closing is their end of stream).
fn push_sentinel(sentinel: Option<&Arc<Vec<u8>>>, r: &mut Reader) {
    if let (Some(s), Some(Sink::Pipe(_))) = (sentinel, &r.sink) {
        r.push_pending(Slice {
            buf: s.clone(),
            start: 0,
            end: s.len(),
            records: 0,
            sentinel: true,
            writer: NO_WRITER,
            seq: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(data: &[u8], records: u64) -> Slice {
        Slice {
            buf: Arc::new(data.to_vec()),
            start: 0,
            end: data.len(),
            records,
            sentinel: false,
            writer: 0,
            seq: 0,
        }
    }

    /// An engine with one writer (index 0) and `readers` pipe readers, all on real pipes
    /// (the far ends are returned so they stay open).
    fn engine(readers: usize) -> (Engine, Vec<OwnedFd>) {
        let cfg = QueueConfig {
            queue: 0,
            name: "q".into(),
            capacity: 1024,
            delivery: Delivery::Shared,
            framing: crate::plan::Framing::Lines,
            sentinel: None,
        };
        let (etx, _) = crossbeam_channel::unbounded();
        let (_, crx) = crossbeam_channel::unbounded();
        let waker = Arc::new(sys::Waker::new().unwrap());
        let mut e = Engine::new(cfg, etx, crx, waker, Arc::default());
        let mut far = Vec::new();
        let (r, w) = sys::pipe().unwrap();
        e.add_writer(0, r);
        far.push(w);
        for id in 0..readers {
            let (r, w) = sys::pipe().unwrap();
            e.add_reader(Reader::new(id, Sink::Pipe(w), 65536));
            far.push(r);
        }
        (e, far)
    }

    /// Records `from..from + n` of writer 0, as one slice.
    fn run_of(from: u64, n: u64) -> Slice {
        let data: Vec<u8> = (from..from + n)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        Slice {
            seq: from,
            ..slice(&data, n)
        }
    }

    /// Hand `s` to reader `i` as dispatch does.
    fn hand(e: &mut Engine, i: usize, s: Slice) {
        e.handed[s.writer] = e.handed[s.writer].max(s.seq + s.records);
        e.readers[i].push_pending(s);
    }

    #[test]
    fn a_stuck_readers_latest_batches_are_taken_back_in_order() {
        let (mut e, _far) = engine(2);
        let now = Instant::now();
        hand(&mut e, 0, run_of(0, 10));
        hand(&mut e, 0, run_of(10, 10));
        e.readers[0].blocked_since = Some(now - STEAL_AFTER * 2);
        e.steal(now);
        assert!(e.readers[0].pending.is_empty());
        let back: Vec<(u64, u64)> = e.queue.iter().map(|s| (s.seq, s.records)).collect();
        assert_eq!(back, [(0, 10), (10, 10)]);
        assert_eq!(e.handed[0], 0);
        assert_eq!(e.queued_records, 20);
        // Whoever takes them now gets them in the writer's order.
        assert_eq!(e.next_for(1), Some(0));
        assert_eq!(e.next_for(0), Some(0));
    }

    #[test]
    fn a_batch_older_than_what_another_reader_got_is_not_taken_back() {
        let (mut e, _far) = engine(2);
        let now = Instant::now();
        hand(&mut e, 0, run_of(0, 10));
        // Reader 1 got later records of the same writer and already wrote them out.
        hand(&mut e, 1, run_of(10, 10));
        e.readers[1].pending.clear();
        e.readers[0].blocked_since = Some(now - STEAL_AFTER * 2);
        e.steal(now);
        assert_eq!(e.readers[0].pending.len(), 1, "kept by the stuck reader");
        assert!(e.queue.is_empty());
    }

    #[test]
    fn given_back_records_wait_for_a_reader_that_keeps_order() {
        let (mut e, _far) = engine(3);
        // Reader 0 died holding records 0..10 (given back to the queue, in front of the
        // newer 20..30); reader 1 already has 10..20; reader 2 has nothing of this writer.
        e.readers[1].note_handed(0, 20);
        e.queue.push_back(run_of(0, 10));
        e.queue.push_back(run_of(20, 10));
        e.readers[0].state = ReaderState::Gone;
        assert_eq!(
            e.next_for(1),
            Some(1),
            "reader 1 goes on with newer records"
        );
        assert_eq!(e.next_for(2), Some(0), "reader 2 takes the given-back ones");
        // With no reader left that could take them in order, they go anyway: order
        // gives way to not losing records.
        e.readers[2].state = ReaderState::Gone;
        assert_eq!(e.next_for(1), Some(0));
        // Unless the dead reader may be restarted: then they wait for it, and the
        // restart (a new reader) takes them first when it joins.
        e.readers[0].state = ReaderState::Live;
        e.handle_command(Command::MayRestart(0));
        e.reader_gone(0);
        assert_eq!(e.expected_readers, 1);
        assert_eq!(e.next_for(1), Some(1), "they wait for the restart");
        let (r, _w) = sys::pipe().unwrap();
        e.add_reader(Reader::new(3, Sink::Pipe(r), 65536));
        assert_eq!(e.next_for(3), Some(0), "the restarted reader takes them");
        e.handle_command(Command::ReaderNotComing(0));
        assert_eq!(e.expected_readers, 0);
        e.readers[3].state = ReaderState::Gone;
        assert_eq!(
            e.next_for(1),
            Some(0),
            "withdrawn: delivered rather than held"
        );
    }

    #[test]
    fn tail_counts_records_whose_delimiter_is_unread() {
        let mut log = VecDeque::new();
        log.push_back(slice(b"aa\nbb\n", 2));
        log.push_back(slice(b"cc\ndd\n", 2));
        assert_eq!(records_in_tail(&log, None, 0, Some(b'\n')), 0);
        assert_eq!(records_in_tail(&log, None, 1, Some(b'\n')), 1);
        // "d\n" + "cc\nd": two delimiters.
        assert_eq!(records_in_tail(&log, None, 5, Some(b'\n')), 2);
        assert_eq!(records_in_tail(&log, None, 8, Some(b'\n')), 3);
        // A partly written head: only its complete records count.
        assert_eq!(records_in_tail(&log, Some(b"ee\nf"), 4, Some(b'\n')), 1);
    }

    #[test]
    fn tail_in_bytes_framing_counts_chunks() {
        let mut log = VecDeque::new();
        log.push_back(slice(b"abc", 1));
        log.push_back(slice(b"defg", 1));
        assert_eq!(records_in_tail(&log, None, 5, None), 2);
        assert_eq!(records_in_tail(&log, None, 2, None), 1);
    }

    #[test]
    fn count_upto_agrees_with_a_plain_scan() {
        // Records of varied lengths spanning many 4 KiB blocks, incl. empty ones.
        let mut data = Vec::new();
        for i in 0..5000usize {
            data.extend(std::iter::repeat_n(b'x', (i * 7) % 23));
            data.push(b'\n');
        }
        let plain: Vec<usize> = memchr::memchr_iter(b'\n', &data).collect();
        assert_eq!(count_delims(b'\n', &data), plain.len() as u64);
        for n in [1u64, 2, 63, 64, 1000, 2047, 4999] {
            assert_eq!(
                count_upto(b'\n', &data, n),
                Err(plain[n as usize - 1]),
                "n={n}"
            );
        }
        assert_eq!(count_upto(b'\n', &data, 5000), Ok(5000));
        assert_eq!(count_upto(b'\n', &data, 9999), Ok(5000));
        assert_eq!(count_upto(b'\n', b"", 1), Ok(0));
        // The limit-th delimiter ends a 4 KiB block exactly.
        let mut edge = vec![b'x'; 4095];
        edge.push(b'\n');
        edge.extend_from_slice(b"y\n");
        assert_eq!(count_upto(b'\n', &edge, 1), Err(4095));
        assert_eq!(count_upto(b'\n', &edge, 2), Ok(2));
    }
}
