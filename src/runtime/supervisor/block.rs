//! `foreach: {queue: q, batch: N}` (SPEC 3.4, GNU parallel `--pipe -N`): one instance
//! per block of N records of the queue, fed to its stdin.
//!
//! Records taken from the queue's channel reader are appended, each with the queue's
//! delimiter, to the block being filled; a full block (or the last, shorter one at end
//! of stream) becomes an item. The block's bytes live in an anonymous memory file
//! (`memfd_create`), not in prun's heap: the instance reads it as an ordinary file on
//! its stdin, and a restart reads it again from the start. The block is filled only
//! while the stage has a free slot, so the queue's backpressure reaches its writers.
//!
//! Decisions:
//! - The item of a block (`${item}`, the report's `item`) is the range of record
//!   numbers it holds, `FIRST-LAST` (0-based, inclusive, counted over the queue's
//!   records as prun took them); `${index}` is the block's number.
//! - A record of a `bytes` queue is whatever one read gave: blocks of a `bytes` queue
//!   are blocks of reads, not of lines.
//! - When the pipeline stops (or `halt` fires) with a block partly filled, that block
//!   is one `skipped` instance: every record taken is accounted for.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;

use nix::sys::memfd::{MFdFlags, memfd_create};

use super::Supervisor;
use crate::event::{BatchEnd, State};

/// Bytes gathered in memory before they are written to the block's memory file.
const BUF: usize = 256 * 1024;

/// A block being filled.
pub(super) struct Block {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    first: u64,
    count: u64,
    delim: Option<u8>,
}

/// A finished block, on an instance: its stdin.
#[derive(Debug)]
pub(super) struct BlockInput {
    fd: OwnedFd,
    pub records: u64,
}

impl BlockInput {
    /// A descriptor for a new process's stdin, reading the block from its start.
    pub(super) fn stdin(&self) -> std::io::Result<OwnedFd> {
        let mut f = std::fs::File::from(self.fd.try_clone()?);
        f.seek(SeekFrom::Start(0))?;
        Ok(OwnedFd::from(f))
    }
}

impl Block {
    /// Append record number `n` (a block is started if none is being filled).
    pub(super) fn push(slot: &mut Option<Block>, n: u64, record: &[u8], delim: Option<u8>) {
        let b = slot.get_or_insert_with(|| Block {
            file: None,
            buf: Vec::new(),
            first: n,
            count: 0,
            delim,
        });
        b.buf.extend_from_slice(record);
        if let Some(d) = b.delim {
            b.buf.push(d);
        }
        b.count += 1;
        if b.buf.len() >= BUF {
            // A failure is seen again, and reported, when the block is finished.
            let _ = b.spill();
        }
    }

    /// `FIRST-LAST`: the record numbers it holds.
    pub(super) fn item(&self) -> String {
        format!(
            "{}-{}",
            self.first,
            self.first + self.count.saturating_sub(1)
        )
    }

    fn spill(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let fd =
                memfd_create(c"prun-block", MFdFlags::MFD_CLOEXEC).map_err(std::io::Error::from)?;
            self.file = Some(std::fs::File::from(fd));
        }
        if let Some(f) = &mut self.file {
            f.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// The finished block, as an instance's stdin.
    pub(super) fn finish(mut self) -> std::io::Result<BlockInput> {
        self.spill()?;
        let file = self
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("no block"))?;
        Ok(BlockInput {
            fd: OwnedFd::from(file),
            records: self.count,
        })
    }
}

impl Supervisor {
    /// Take the records at hand into the stage's block; a block complete (N records,
    /// or the last one at end of stream) becomes an instance. True when an instance
    /// was made; false when the stage must wait for records (or has closed).
    pub(super) fn fill_block(&mut self, st: usize) -> bool {
        let delim = self.block_delim(st);
        let Some(b) = self.batches[st].as_mut() else {
            return false;
        };
        let Some(n) = b.batch else { return false };
        let n = n as u64;
        let last = loop {
            let rec = if let Some(r) = b.held.pop_front() {
                Some(r)
            } else if let Some(rx) = &b.records {
                match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(crossbeam_channel::TryRecvError::Empty) => return false,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        b.records = None;
                        None
                    }
                }
            } else {
                None
            };
            match rec {
                Some(r) => {
                    Block::push(&mut b.block, b.records_taken, &r, delim);
                    b.records_taken += 1;
                    if b.block.as_ref().is_some_and(|blk| blk.count >= n) {
                        break false;
                    }
                }
                None => break true,
            }
        };
        let Some(block) = b.block.take() else {
            // End of stream with no partial block: the stage is done.
            debug_assert!(last);
            self.close_batch(st, BatchEnd::Exhausted);
            return false;
        };
        let index = b.next_index;
        b.next_index += 1;
        let item = block.item();
        let resumed = self
            .resume
            .contains(&self.plan.stages[st].name, index, &item);
        let id = self.add_item_instance(st, index, item, resumed);
        if !resumed {
            match block.finish() {
                Ok(input) => self.insts[id].block = Some(input),
                Err(e) => {
                    self.insts[id].start_error_code = 1;
                    let error = format!("cannot hold the block of records: {e}");
                    self.finish_run(id, State::CouldNotStart { error });
                }
            }
        }
        true
    }

    /// The delimiter records of the stage's queue end with.
    pub(super) fn block_delim(&self, st: usize) -> Option<u8> {
        match self.batches[st].as_ref().map(|b| &b.source) {
            Some(crate::plan::ForeachSource::Queue(q)) => self.plan.queues[*q].framing.delimiter(),
            _ => Some(b'\n'),
        }
    }
}
