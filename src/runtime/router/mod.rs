//! Queue routing (SPEC 4): the data plane for queues that are not a direct pipe.
//!
//! One [`QueueRouter`] per routed queue. The supervisor creates one pipe per writer
//! instance (the child gets the write end, the router the read end) and one pipe per
//! reader instance (the child gets the read end, the router the write end), and hands
//! the router its ends. The router cuts writer streams into records by framing and
//! delivers whole records; it reports progress on the event channel and never blocks
//! the supervisor. Attach a queue's readers before its writers: data only flows once a
//! writer is attached, so every broadcast reader sees the stream from its first record
//! (a reader attached later, e.g. a restart, gets records from the point it joins).
//!
//! # Design
//!
//! **One thread per queue, one `poll` loop** ([`engine`]). Every decision that matters —
//! which reader gets the next batch, when to stop reading writers, when the stream has
//! ended — needs the whole queue's state at once; a single owner needs no locks on the
//! hot path, and the loop is the only place that touches the descriptors, so no record
//! can be torn by two threads writing one pipe. poll over a few dozen descriptors is
//! cheap, and one core moves well over 1 GB/s with read/writev of large blocks, which is
//! more than the processes at both ends of a pipe can produce and consume. Threads per
//! writer would need a shared queue with a lock and a condition variable per record
//! batch, and still a single dispatcher for fairness.
//!
//! **Blocks, not records.** Writers' pipes (enlarged to 1 MiB) are read up to 256 KiB at
//! a time; the bytes up to the last delimiter (memrchr) become one shared, immutable
//! block, the tail waits for the next read. Readers are given runs of whole records
//! (slices of blocks, cut with memchr/memrchr) and written with `writev`; a run given to
//! a reader is only ever written to that reader, so a partial write to a full pipe just
//! continues later and never interleaves with another record. Records larger than any
//! pipe simply accumulate in the writer's buffer until their delimiter arrives.
//!
//! **CPU per byte.** The router's thread competes for the CPUs with the stages at both
//! ends, so its cost per byte shows in wall time. Blocks are not copied in user space: a
//! read goes into a 256 KiB block that is handed to the queue whole, and blocks come from
//! a small pool that reuses one once no slice of it is held any more (fresh blocks cost
//! page faults and allocator `madvise`/`munmap` at every block). Records are counted with
//! memchr's vectorised counter, in one pass that stops at the capacity cut.
//!
//! *Peek and splice (`shared`).* A writer's pipe is not read but peeked: `tee` duplicates
//! its head into a private pipe (page references, no copy), which is read into the block
//! to find and count records. The bytes stay at the head of the writer's pipe; a run of
//! records that is handed to a reader while it is still there (the common case: a block
//! goes whole to the least served reader) is moved with `splice` from the writer's pipe to
//! the reader's, by page reference: no copy into the reader's pipe, no page allocated for
//! it. Everything else (runs handed out later, or after other pending runs) is written
//! from the block as before, and what is left of the peek is dropped from the writer's
//! pipe (`splice` to /dev/null) before the next peek, so the pipe's head always matches
//! what the engine knows ([`engine`]'s `Shadow`). The incomplete last record of a peek
//! is left in the pipe, so the next block starts at its head. While nothing is queued,
//! a streaming reader (one measured fast, see below) is fed *directly*: the writer's pipe
//! is peeked up to that reader's room and its whole records are spliced at once, without
//! entering the queue. Records that never wait in prun are not bounded by `capacity`
//! (what `capacity` bounds is what prun holds), so these batches are up to a reader
//! pipe's worth instead of `capacity` records: about 3× fewer system calls per byte at the
//! default capacity of 1024 short lines. Broadcast reads plainly
//! (one splice cannot feed several readers). `vmsplice` of our blocks is ruled out: a
//! reader that splices its stdin onward would keep references to pages that we reuse.
//!
//! System calls per block are about one `tee`, `read`, `splice` and `FIONREAD`: poll is
//! skipped while a writer's last read filled its request (a few rounds at most), the
//! waker's eventfd is only reset when poll reported it, and a reader's pipe is measured
//! only when records are left for it.
//!
//! **Fair dispatch (`shared`).** Records stay in the queue until a reader is ready for
//! them, and are handed over only as they can be written, so what a reader holds is
//! what sits unread in its pipe (`FIONREAD` on our write end) plus at most one partly
//! written batch. Each pipe reader has a *window*, the most it may hold:
//! - a reader of unknown speed gets at most 16 records (and 4 KiB), and nothing more
//!   until its pipe is empty — so a slow reader is caught holding only a few records;
//! - a reader that empties its pipe within 20 ms of a batch doubles its window;
//! - a reader still busy 100 ms after a batch has its speed measured (bytes consumed /
//!   time) and may hold what it consumes in 50 ms: equal readers get equal windows, a
//!   slow one holds a few records;
//! - the window never exceeds the reader pipe, which is set to 256 KiB: the most a
//!   reader that suddenly stalls can keep from the others.
//!
//! A reader is *ready* when it has worked through half its window (one of unknown speed:
//! all of it). Ready readers are served least-served first (bytes given since they
//! joined; a newcomer starts level with the least served, so it claims no catch-up), each
//! up to the room left in its window. While only a few records wait (at most 64 per
//! ready reader) they are shared out exactly, so every ready reader gets some at once:
//! readers that slurp their input look ready, and splitting is what keeps one of them
//! from taking everything. Many records go by whole blocks (one `writev` each), the
//! readers taking turns block by block. So readers of equal speed split evenly whether
//! the writer sets the pace (turns) or the readers do (each gets records as fast as it
//! frees room); a faster reader gets more only because it is ready more often. (CPU-bound
//! readers on a busy machine are not of equal speed: the split then follows the CPU each
//! one gets, and both finish together.)
//!
//! A reader whose window is a whole pipe *streams*: it is topped up whenever a page of
//! its pipe is free, which poll reports (POLLOUT), so a fast reader runs at pipe speed
//! with no timer. Emptiness of a pipe is not pollable, so while records wait for a
//! smaller-window reader the loop re-checks every 2 ms. A batch stuck unwritten for 20
//! ms (full pipe) while another reader idles goes back to the queue, but only a batch that
//! holds its writer's newest records handed out (so nobody has later ones). Limits: a reader
//! that slurps its stdin into a user-space buffer (Python, stdio) looks drained while it
//! still holds records; sharing out a few waiting records exactly is what keeps it from
//! hoarding in that case (with many, its window bounds what it takes).
//!
//! **`broadcast`.** Each block is appended to every live reader's pending list (shared,
//! not copied); every reader therefore writes the same sequence. The slowest reader sets
//! the pace through backpressure. `tee(2)` would save the copy into prun, but records
//! must be seen anyway to frame them, so plain writes of the shared block are used.
//!
//! **Backpressure.** Depth = records queued + records given to readers but not yet
//! written (broadcast: the largest such backlog), + records waiting for their writer's
//! turn (`order: writers`). While depth ≥ `capacity`, writers are
//! not polled nor read, their pipes fill and they block. Reads are sized from the room
//! left and the average record size (at least 16 KiB, for throughput); when a read holds
//! more records than there is room for, only `room` records enter the queue and the rest
//! wait in that writer's buffer (`backlog`), which is cut in before the writer is read
//! again. So depth never exceeds `capacity`. Besides, writers are not read while 16 MiB
//! of records are held (`MAX_HELD_BYTES`), so memory is bounded by that, plus one read
//! and the incomplete record per writer (a record is held whole until its delimiter),
//! plus a pipe's worth of written slices per reader (kept to count in-flight records),
//! plus at most four idle blocks in the pool (1 MiB).
//!
//! **Per-writer order.** Every slice carries its writer and the number of its first
//! record; each reader remembers, per writer, the number after the last record it got.
//! Records given back (a reader died) go to a reader that has no later ones of their
//! writer while the others go on with the rest of the queue, or for the dead reader's
//! restart when the supervisor said it may come (`reader_may_restart`); only if no open reader
//! qualifies and none is awaited are they delivered out of order, rather than lost.
//!
//! **Readers that end early.** `reader_exited`, `EPIPE`, or `POLLERR` on the write end
//! (the reader closed its side) remove the reader. Its unwritten batches go back to the
//! front of the queue for the other readers (a record it got only partly goes back
//! whole). `FIONREAD` on the write end (Linux answers it on either end, even after the
//! reader closed) tells how many bytes it never read; the records whose delimiter lies
//! in that tail of what was written are counted in `in_flight_at_failure`. We keep only
//! the write end, so a vanished reader is seen at once as `POLLERR`/`EPIPE` (keeping the
//! read end too would hide that and keep stranded bytes alive). SIGPIPE is ignored (set
//! on start if it still has its default action) so a dead reader shows up as `EPIPE`.
//!
//! **End of stream.** After `close_writers` and EOF (or sentinel) on every writer, the
//! buffered records are delivered, then the sentinel record (if configured), then the
//! write ends are closed (EOF), then [`RouterEvent::Drained`]. A writer that emits the
//! sentinel record itself ends its stream there: `WriterDone` is sent, the rest of its
//! output is read and counted in `dropped_after_sentinel`. Writer-emitted sentinels are
//! recognised with `lines`/`nul` framing only (a `bytes` stream has no record edges).
//! Channel readers (`add_channel_reader`) get no sentinel: the channel disconnecting is
//! their EOF. When the router closes a reader's pipe it keeps a read end of it (opened
//! through `/proc/self/fd`; nothing is written any more, so this hides no dead reader),
//! and after `Drained` the thread lives on only to count, at each `reader_exited`, what
//! that reader left unread (`in_flight_at_failure`); [`QueueRouter::join`] ends it.
//!
//! **Memory over time.** A writer's slot is reused by a later writer once the writer is
//! done and none of its records are held (queued or pending); a reader is forgotten once
//! it is gone or got EOF and its exit was counted. Their counts move to the published
//! `per_writer`/`per_reader` lists, which are not rewritten each round. The log of what
//! was written to a reader (kept to count in-flight records) copies small slices into
//! chunks instead of holding a 256 KiB block per slice. So a writer restarted 10,000
//! times leaves only its count (16 bytes) behind (`tests/router_memory.rs`).
//!
//! **Rooms.** `engine` is the poll loop and the commands; `writer` reads and frames the
//! writers' streams (a phase per writer: streaming, backlog, torn, discarding,
//! done); `direct` is the shared path that bypasses the queue; `dispatch` decides who
//! gets which records; `reader` holds a reader's state and window (its phase: live,
//! finishing, closed, gone); `deliver` writes readers and handles those that go away;
//! `ending` is the early ends (no reader, cut, abort); `order` is `order: writers` (whose
//! turn it is; the other writers' records wait outside the queue); `records` and
//! `blocks` are the data (slices, counting, the block pool, peeked bytes); `sys` the
//! system calls.
//!
//! **`order: writers`** ([`order`]). Only the writer whose turn it is puts records into
//! the queue; the others' records wait in their writer, counted in the depth and capped
//! at half of `capacity`, and enter the queue when their turn comes. So the queue holds
//! the writers' records group by group, and dispatch, broadcast, the direct path and
//! the end of stream work on it unchanged. The supervisor gives each writer pipe its
//! instance's [`WriterRank`] and says when a rank is over.
//!
//! **Cut.** During a stop whose readers could not drain the queue in time, `cut` ends the
//! stream early: what is queued and what the writers left in their pipes is counted as
//! `discarded`, a reader in the middle of a record gets the rest of it, then sentinel,
//! EOF and `Drained` as usual, so EOF still precedes the stop signal.

/// Direct pipes (one writer instance, one reader instance) are enlarged to this size.
/// With the kernel's 64 KiB default, a writer and a reader on different CPUs wake each
/// other every page or so; 256 KiB lets each side move large runs per wake-up. Measured
/// on 2 CPUs, `cat` of 170 MB into `wc -l`: 113 ms through a 64 KiB pipe (the bash
/// pipe), 60 ms through 256 KiB, 59 ms through 1 MiB (docs/performance.md).
pub const DIRECT_PIPE: usize = 256 * 1024;

mod blocks;
mod broadcast;
mod deliver;
mod direct;
mod dispatch;
mod ending;
mod engine;
mod order;
mod reader;
mod records;
pub(crate) mod sys;
mod writer;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::os::fd::OwnedFd;

use crossbeam_channel::{Receiver, Sender};

use crate::plan::{Delivery, Framing, Order};

use std::collections::VecDeque;
use std::time::Instant;

use memchr::memmem;

use blocks::BlockPool;
use broadcast::Stream;
use order::Turns;
use reader::Reader;
use records::Slice;
use writer::Writer;

// The router thread's state (its loop is `engine.rs`; each room adds to `impl Engine`).

/// Besides `capacity` records, prun holds at most about this many bytes of records for a
/// queue's readers (plus one read, and the record being read), so that large records
/// cannot make `capacity` records a lot of memory: 1024 records of 1 MB would be 1 GB.
const MAX_HELD_BYTES: usize = 16 << 20;

/// Re-check interval while records wait for a reader to drain (drain is not pollable).
const TICK_MS: i32 = 2;

/// Rounds in a row that may skip `poll` because a writer has more to read; then poll
/// anyway, so readers' pipes (room, errors) and the waker are looked at regularly.
const EAGER_ROUNDS: u32 = 4;

enum Command {
    AddWriter(WriterId, Option<WriterRank>, OwnedFd),
    ExpectWriter(WriterRank),
    RankEnded(WriterRank),
    AddReader(ReaderId, OwnedFd),
    AddChannelReader(ReaderId, Sender<Vec<u8>>),
    ReaderExited(ReaderId),
    CloseWriters,
    CloseReaders,
    MayRestart(ReaderId),
    ReaderNotComing(ReaderId),
    WriterEnded(WriterId, bool),
    AddMemberReader(ReaderId, usize, OwnedFd),
    ExpectReader(usize),
    MemberNotComing(usize),
    AwaitOutcomes,
    Cut,
    Abort,
}

struct Engine {
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
    /// Dead readers whose restart is awaited (they may restart, see
    /// [`Command::MayRestart`]): records given back wait for a restart when no open
    /// reader can take them in order.
    awaited: Vec<ReaderId>,
    /// Entries at the front of the published `per_writer` / `per_reader` counts that
    /// belong to forgotten writers and readers (they are not rewritten each round).
    retired_writers: usize,
    retired_readers: usize,
    /// The supervisor reports writers' outcomes (`QueueRouter::await_writer_outcomes`).
    writer_outcomes: bool,
    /// Broadcast: the stream's numbering and its members (see `broadcast`).
    stream: Stream,
    /// `order: writers`: whose records enter the queue now (see `order`).
    turns: Option<Turns>,
    /// Records (and their bytes) of writers without the turn, waiting outside the queue.
    waiting_records: u64,
    waiting_bytes: usize,
    /// Attach serial of the next writer pipe.
    next_serial: u64,
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

/// Ids are chosen by the supervisor (one per instance); they only need to be unique
/// within one queue.
pub type WriterId = usize;
pub type ReaderId = usize;

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Index of the queue in `Plan::queues`, echoed back in events.
    pub queue: usize,
    pub name: String,
    pub capacity: usize,
    pub delivery: Delivery,
    pub framing: Framing,
    /// Sentinel record without its delimiter.
    pub sentinel: Option<Vec<u8>>,
    /// `writers`: records are delivered grouped by writer, in [`WriterRank`] order.
    pub order: Order,
}

/// `order: writers`: where a writer instance's records go in the queue's order — its
/// stage in file order, then its instance index (replicas) or foreach item position.
/// Compared as a pair, stage first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriterRank {
    pub stage: usize,
    pub index: u64,
}

impl WriterRank {
    pub fn new(stage: usize, index: u64) -> WriterRank {
        WriterRank { stage, index }
    }

    /// The items of foreach stage `stage` that are not created yet: announced while the
    /// stage may still create items, ended when it stops, so that later stages' records
    /// wait for them.
    pub fn later_items(stage: usize) -> WriterRank {
        WriterRank::new(stage, u64::MAX)
    }
}

/// What the router tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterEvent {
    /// A writer's pipe reached EOF (its process and every holder of the pipe ended),
    /// or it emitted the sentinel (the rest of its stream is dropped and counted).
    WriterDone { queue: usize, writer: WriterId },
    /// The router could not write to a reader (EPIPE) or was told it exited.
    ReaderGone { queue: usize, reader: ReaderId },
    /// Every writer is done and closed, every record was delivered, every reader got its
    /// sentinel and EOF: readers may now be stopped (drain order).
    Drained { queue: usize },
}

pub use crate::event::QueueStats;

/// A running router for one queue. Cheap to call from the supervisor thread: every
/// method only sends a command to the queue's thread and wakes it.
pub struct QueueRouter {
    queue: usize,
    cmds: Sender<Command>,
    waker: Option<Arc<sys::Waker>>,
    stats: Arc<Mutex<QueueStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl QueueRouter {
    /// Start routing; events go to `events`.
    pub fn start(config: QueueConfig, events: Sender<RouterEvent>) -> QueueRouter {
        sys::ignore_sigpipe();
        let (tx, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(Mutex::new(QueueStats::default()));
        let queue = config.queue;
        let name = format!("prun-q-{}", config.name);
        let waker = match sys::Waker::new() {
            Ok(w) => Arc::new(w),
            Err(_) => {
                // Out of descriptors: a router that cannot run closes whatever it is given
                // (writers see EPIPE, readers EOF) instead of panicking.
                return QueueRouter {
                    queue,
                    cmds: tx,
                    waker: None,
                    stats,
                    thread: Mutex::new(None),
                };
            }
        };
        let engine = Engine::new(config, events, rx, waker.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || engine.run())
            .ok();
        QueueRouter {
            queue,
            cmds: tx,
            waker: Some(waker),
            stats,
            thread: Mutex::new(thread),
        }
    }

    fn send(&self, cmd: Command) {
        if self.cmds.send(cmd).is_ok()
            && let Some(w) = &self.waker
        {
            w.wake();
        }
    }

    /// Index of the queue in `Plan::queues`.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Attach a writer: `fd` is the read end of the pipe whose write end the writer holds.
    /// With `order: writers` it ranks after every ranked writer, in attach order.
    pub fn add_writer(&self, id: WriterId, fd: OwnedFd) {
        self.send(Command::AddWriter(id, None, fd));
    }

    /// `order: writers`: attach a pipe of writer instance `rank` (see
    /// [`Self::add_writer`]). Its records come after those of the rank's earlier pipes
    /// (a restart's after the run before it).
    pub fn add_ranked_writer(&self, id: WriterId, rank: WriterRank, fd: OwnedFd) {
        self.send(Command::AddWriter(id, Some(rank), fd));
    }

    /// `order: writers`: writer instance `rank` will write this queue. Records of later
    /// ranks wait for its own until [`Self::writer_rank_ended`]. Announce every rank
    /// known before the first writer is attached, and a foreach stage's items as they
    /// are created (with [`WriterRank::later_items`] until the stage stops creating
    /// them). Ignored with `order: arrival`.
    pub fn expect_writer(&self, rank: WriterRank) {
        self.send(Command::ExpectWriter(rank));
    }

    /// `order: writers`: no pipe of writer instance `rank` will be attached any more (it
    /// ended for good, or will never start). Once the streams of its pipes are over, the
    /// turn passes to the next rank.
    pub fn writer_rank_ended(&self, rank: WriterRank) {
        self.send(Command::RankEnded(rank));
    }

    /// Attach a reader: `fd` is the write end of the pipe whose read end the reader holds.
    /// The supervisor must not keep a copy of the read end, or a dead reader stays
    /// invisible until `reader_exited`.
    pub fn add_reader(&self, id: ReaderId, fd: OwnedFd) {
        self.send(Command::AddReader(id, fd));
    }

    /// Broadcast: reader instance `member` (a key the supervisor chooses, e.g. the
    /// instance id) will read this queue. Copies of every record are held for it from
    /// the start (counted against `capacity`) until a process of it joins
    /// ([`Self::add_member_reader`]), however late, or [`Self::member_not_coming`].
    /// Announce every reader instance before the first writer is attached. Ignored for
    /// shared delivery.
    pub fn expect_reader(&self, member: usize) {
        self.send(Command::ExpectReader(member));
    }

    /// Attach a reader process of instance `member` (see [`Self::add_reader`]). With
    /// broadcast it takes over the member's place in the stream: a first process starts
    /// at the first record, a restart where the dead one stopped.
    pub fn add_member_reader(&self, id: ReaderId, member: usize, fd: OwnedFd) {
        self.send(Command::AddMemberReader(id, member, fd));
    }

    /// Broadcast: reader instance `member` will not read (any more): it ended for good,
    /// or can no longer start. The copies held for it are counted in `discarded`. A
    /// process of it that is still reading is not affected.
    pub fn member_not_coming(&self, member: usize) {
        self.send(Command::MemberNotComing(member));
    }

    /// Attach prun itself as a reader (`foreach: {queue}`): whole records (without the
    /// delimiter) arrive on the returned channel, with the same backpressure. The channel
    /// disconnects at end of stream (no sentinel record is sent on it).
    pub fn add_channel_reader(&self, id: ReaderId) -> Receiver<Vec<u8>> {
        let (tx, rx) = crossbeam_channel::bounded(reader::CHANNEL_CAP);
        self.send(Command::AddChannelReader(id, tx));
        rx
    }

    /// The reader's process ended. Records not yet handed to it go to the other (or a
    /// restarted) reader; bytes left unread in its pipe are counted as in flight.
    pub fn reader_exited(&self, id: ReaderId) {
        self.send(Command::ReaderExited(id));
    }

    /// The supervisor will report how every writer process ends ([`Self::writer_ended`]):
    /// from now on a last record without its delimiter waits for that outcome. Without
    /// it (a router driven without a supervisor) such a record is delivered as whole at
    /// the writer's EOF.
    pub fn await_writer_outcomes(&self) {
        self.send(Command::AwaitOutcomes);
    }

    /// Writer `id`'s process ended (`succeeded`: by the stage's success rule). After
    /// [`Self::await_writer_outcomes`], an incomplete last record of its stream is
    /// delivered (delimiter added) only if it succeeded; otherwise it is dropped and
    /// counted in `partial_records` (SPEC 4.1). Send it before `close_writers`.
    pub fn writer_ended(&self, id: WriterId, succeeded: bool) {
        self.send(Command::WriterEnded(id, succeeded));
    }

    /// No writer will be added any more (all writer instances ended, no restart
    /// pending). Once current writers are done, deliver what is buffered, then the
    /// sentinel and EOF to every reader, then report `Drained`.
    pub fn close_writers(&self) {
        self.send(Command::CloseWriters);
    }

    /// No reader will be added any more (no restart pending). From then on, when no
    /// reader is left, the writers' pipes are closed (they get EPIPE/SIGPIPE, as in a
    /// shell pipeline) and buffered records are counted as `discarded`.
    pub fn close_readers(&self) {
        self.send(Command::CloseReaders);
    }

    /// Reader `id` may be restarted if it ends (its stage has a restart policy): records
    /// it gives back when it dies then wait for a reader that can take them in order,
    /// its restart included, instead of going out of order to the others at once.
    /// Known before the death, since the router may see it (EPIPE) before the
    /// supervisor does.
    pub fn reader_may_restart(&self, id: ReaderId) {
        self.send(Command::MayRestart(id));
    }

    /// Reader `id`, which ended, will not come back, or has come back as another reader:
    /// stop holding records for it.
    pub fn reader_not_coming(&self, id: ReaderId) {
        self.send(Command::ReaderNotComing(id));
    }

    /// End the stream early (a stop is under way and the readers did not drain the queue
    /// in time): records still queued, and what the writers left in their pipes, are
    /// counted as `discarded`; a reader in the middle of a record gets the rest of it;
    /// then the sentinel, EOF and `Drained`, as at a normal end.
    pub fn cut(&self) {
        self.send(Command::Cut);
    }

    /// Stop at once (second SIGINT, or every reader gone): close every descriptor.
    /// Records still buffered are counted as `discarded`.
    pub fn abort(&self) {
        self.send(Command::Abort);
    }

    /// A snapshot of the counters (updated by the router after every step).
    pub fn stats(&self) -> QueueStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// End the router thread and wait for it. Once the queue has drained, the thread
    /// only waits for `reader_exited` of readers that got EOF, to count what they left
    /// unread; this ends that wait (before the queue drained, it is `abort`).
    pub fn join(&self) {
        self.send(Command::Abort);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Drop for QueueRouter {
    /// Dropping a router that is still running aborts it, so no descriptor leaks.
    fn drop(&mut self) {
        self.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::time::Duration;

    fn blocking_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors into a valid array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Records of `tag`, of varied lengths (some longer than a pipe page, a few longer
    /// than a read), written in chunks that cut records anywhere.
    fn stream(tag: char, n: usize, seed: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let len = match (i * 7 + seed) % 5000 {
                0 => 300_000,
                1..=50 => 5_000,
                k => k % (40 * seed),
            };
            out.extend(format!("{tag}{i}:").bytes());
            out.extend(std::iter::repeat_n(b'x', len));
            out.push(b'\n');
        }
        out
    }

    /// Several writers into one shared queue with a few readers, through the peek and
    /// splice path: every record arrives once, whole, and in its writer's order.
    fn route_through(capacity: usize, readers: usize) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let router = QueueRouter::start(
            QueueConfig {
                queue: 0,
                name: "t".into(),
                capacity,
                delivery: Delivery::Shared,
                framing: Framing::Lines,
                sentinel: None,
                order: Order::Arrival,
            },
            tx,
        );
        let mut outs = Vec::new();
        for id in 0..readers {
            let (r, w) = blocking_pipe();
            router.add_reader(id, w);
            outs.push(std::thread::spawn(move || {
                // Small reads, so that records wait for it and pile up in its batches.
                let mut f = std::fs::File::from(r);
                let mut v = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => return Ok(v),
                        Ok(n) => v.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(e),
                    }
                }
            }));
        }
        let inputs = [
            stream('a', 60_000, 2),
            stream('b', 60_000, 1),
            stream('c', 5_000, 3),
        ];
        let mut writers = Vec::new();
        for (id, data) in inputs.iter().enumerate() {
            let (r, w) = blocking_pipe();
            router.add_writer(id, r);
            let data = data.clone();
            writers.push(std::thread::spawn(move || {
                let mut f = std::fs::File::from(w);
                // Like `cat` (128 KiB writes), `seq` (4 KiB) and an irregular writer.
                let mut at = 0;
                let mut k = id;
                while at < data.len() {
                    k = (k * 31 + 7) % 1_000_003;
                    let size = [128 * 1024, 4096, 1 + k % 9_000][id % 3];
                    let end = (at + size).min(data.len());
                    f.write_all(&data[at..end]).expect("write");
                    at = end;
                }
            }));
        }
        for w in writers {
            w.join().expect("writer thread");
        }
        router.close_writers();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(RouterEvent::Drained { .. }) => break,
                Ok(_) => {}
                Err(e) => panic!("no progress: {e}"),
            }
        }
        let mut seen = std::collections::HashMap::new();
        for out in outs {
            let got = out.join().expect("reader thread").expect("read");
            assert_eq!(got.last().copied().unwrap_or(b'\n'), b'\n');
            let mut last: std::collections::HashMap<u8, usize> = Default::default();
            for rec in got.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
                let colon = rec.iter().position(|&b| b == b':').expect("torn record");
                let tag = rec[0];
                let i: usize = std::str::from_utf8(&rec[1..colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("torn record");
                let body = &rec[colon + 1..];
                assert!(body.iter().all(|&b| b == b'x'), "torn record {}", i);
                if let Some(&p) = last.get(&tag) {
                    assert!(i > p, "writer order broken: {} after {}", i, p);
                }
                last.insert(tag, i);
                assert!(seen.insert((tag, i), body.len()).is_none(), "duplicate");
            }
        }
        let total: usize = inputs
            .iter()
            .map(|d| d.iter().filter(|&&b| b == b'\n').count())
            .sum();
        assert_eq!(seen.len(), total, "records lost");
        router.join();
    }

    #[test]
    fn shared_many_writers_one_reader() {
        route_through(1024, 1);
    }

    #[test]
    fn shared_many_writers_many_readers() {
        route_through(1024, 3);
    }

    #[test]
    fn shared_many_writers_small_capacity() {
        route_through(5, 2);
    }
}
