//! The direct path of shared delivery ([`Engine::try_direct`]): while nothing is
//! queued, a writer's pipe is peeked up to the room of the least served *streaming*
//! reader and its whole records are spliced straight into that reader's pipe, skipping
//! the queue. A splice cut short leaves one record half delivered: its rest becomes that
//! reader's pending slice (still at the writer pipe's head, so it follows by splice),
//! and the records after it stay in the writer's pipe for the next peek.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use super::blocks::{READ_BLOCK, Shadow, read_peeked};
use super::reader::{PAGE, Sink};
use super::records::{Slice, count_delims};
use super::sys;
use super::writer::WriterPhase;
use crate::plan::Delivery;

impl Engine {
    /// The direct path of shared delivery: when nothing is queued and writer `wi` has
    /// nothing carried over, peek its pipe up to the room of the least served streaming
    /// reader and splice the whole records straight into that reader's pipe. They are
    /// never buffered in prun (only copied once to find and count them), so the queue's
    /// capacity does not cap the batch: a batch is as large as the reader can take, which
    /// is what makes this path cheaper than the queue (fewer, larger system calls).
    /// Returns false when the path does not apply; the caller then reads as usual.
    pub(super) fn try_direct(&mut self, wi: usize, now: Instant) -> bool {
        let Some(d) = self.delim else { return false };
        let w = &self.writers[wi];
        if self.cfg.delivery != Delivery::Shared
            || !self.queue.is_empty()
            || !self.has_turn(wi)
            || !w.tee
            || w.phase != WriterPhase::Streaming
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
        let group = w.group;
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
        r.high_group = r.high_group.max(group);
        if let Some(t) = self.turns.as_mut() {
            t.top_group = t.top_group.max(group);
        }
        if whole_end > 0 {
            r.log_written(Slice {
                buf: buf.clone(),
                start: 0,
                end: whole_end,
                records: whole,
                sentinel: false,
                writer: wi,
                seq,
                group,
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
                group,
            });
            r.head_off = m - whole_end;
        }
        let depth = self.depth();
        self.stats.max_depth = self.stats.max_depth.max(depth);
        true
    }
}
