//! Buffers and blocks: the pool that recycles 256 KiB read blocks, the private pipe
//! that writers' pipes are peeked into (`tee`), and [`Shadow`], the bytes of a queued
//! block that are still at the head of a writer's pipe (so they can move by `splice`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::sys;

/// Largest single read from a writer pipe, and the size of a block.
pub(super) const READ_BLOCK: usize = 256 * 1024;

/// Blocks handed to the queue that the pool follows, to reuse them once nobody holds
/// them any more, and how many such idle blocks it keeps (the memory it adds).
pub(super) const POOL_BLOCKS: usize = 32;

pub(super) const POOL_IDLE: usize = 4;

/// `len` bytes from `pos` in block `buf` are also the next bytes of a writer's pipe
/// (peeked, not consumed): written to a reader with `splice` from that pipe, they move
/// by page reference, with no copy and no page allocated for the reader's pipe.
pub(super) struct Shadow {
    pub(super) buf: Arc<Vec<u8>>,
    pub(super) pos: usize,
    pub(super) len: usize,
}

/// Writers' pipes are peeked (tee) and spliced to readers (see [`Shadow`]).
pub(super) const USE_SPLICE: bool = true;

/// The private pipe for peeking and /dev/null for dropping; none when either fails (then
/// writers' pipes are read plainly).
pub(super) fn peek_pipes() -> (Option<(OwnedFd, OwnedFd)>, Option<OwnedFd>) {
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
pub(super) struct BlockPool {
    pub(super) blocks: Vec<Arc<Vec<u8>>>,
}

impl BlockPool {
    /// An empty buffer of at least `min_cap` bytes, reused when one is idle.
    pub(super) fn take(&mut self, min_cap: usize) -> Vec<u8> {
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
    pub(super) fn keep(&mut self, block: &Arc<Vec<u8>>) {
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
pub(super) fn read_peeked(fd: RawFd, buf: &mut Vec<u8>, n: usize) -> usize {
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
