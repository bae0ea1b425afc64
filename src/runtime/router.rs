//! Queue routing (SPEC 4): the data plane for queues that are not a direct pipe.
//!
//! CONTRACT (skeleton written by the lead; the data-plane work fills in the bodies and
//! may add to, but not break, these signatures).
//!
//! One [`QueueRouter`] per routed queue. The supervisor creates one pipe per writer
//! instance (the child gets the write end, the router the read end) and one pipe per
//! reader instance (the child gets the read end, the router the write end), and hands
//! the router its ends. The router cuts writer streams into records by framing and
//! delivers whole records; it reports progress on the event channel and never blocks
//! the supervisor.

use std::os::fd::OwnedFd;

use crossbeam_channel::{Receiver, Sender};

use crate::plan::{Delivery, Framing};

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

/// Counters for the report (SPEC 7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub records: u64,
    pub bytes: u64,
    pub max_depth: u64,
    pub blocked_ms: u64,
    pub sentinels_sent: u64,
    pub dropped_after_sentinel: u64,
    pub in_flight_at_failure: u64,
    /// Records read from each writer (the writer instance's `records_out`).
    pub per_writer: Vec<(WriterId, u64)>,
    /// Records delivered to each reader (the reader instance's `records_in`).
    pub per_reader: Vec<(ReaderId, u64)>,
}

/// A running router for one queue. Cheap to call from the supervisor thread.
pub struct QueueRouter {
    _private: (),
}

impl QueueRouter {
    /// Start routing; events go to `events`.
    pub fn start(config: QueueConfig, events: Sender<RouterEvent>) -> QueueRouter {
        let _ = (config, events);
        todo!("router")
    }

    /// Attach a writer: `fd` is the read end of the pipe whose write end the writer holds.
    pub fn add_writer(&self, id: WriterId, fd: OwnedFd) {
        let _ = (id, fd);
        todo!("router")
    }

    /// Attach a reader: `fd` is the write end of the pipe whose read end the reader holds.
    pub fn add_reader(&self, id: ReaderId, fd: OwnedFd) {
        let _ = (id, fd);
        todo!("router")
    }

    /// Attach prun itself as a reader (`foreach: {queue}`): whole records (without the
    /// delimiter) arrive on the returned channel, with the same backpressure.
    pub fn add_channel_reader(&self, id: ReaderId) -> Receiver<Vec<u8>> {
        let _ = id;
        todo!("router")
    }

    /// The reader's process ended. Records not yet handed to it go to the other (or a
    /// restarted) reader; bytes left unread in its pipe are counted as in flight.
    pub fn reader_exited(&self, id: ReaderId) {
        let _ = id;
        todo!("router")
    }

    /// No writer will be added any more (all writer instances ended, no restart
    /// pending). Once current writers are done, deliver what is buffered, then the
    /// sentinel and EOF to every reader, then report `Drained`.
    pub fn close_writers(&self) {
        todo!("router")
    }

    /// Stop at once (second SIGINT, or every reader gone): close every descriptor.
    pub fn abort(&self) {
        todo!("router")
    }

    pub fn stats(&self) -> QueueStats {
        todo!("router")
    }
}
