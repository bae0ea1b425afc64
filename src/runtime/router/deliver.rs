//! Delivery to readers: writing what a reader has pending into its pipe (`writev`, or
//! `splice` from a writer's pipe for bytes still at its head) or onto its channel, and a
//! reader that goes away (exit, EPIPE): what it left unread is counted in flight, what
//! it was given but not written goes back to the queue (shared) or is counted.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::TrySendError;

use super::Engine;
use super::RouterEvent;
use super::reader::{Reader, ReaderPhase, Sink};
use super::records::{Slice, count_delims, records_in_tail};
use super::sys;
use crate::plan::Delivery;

pub(super) const MAX_IOV: usize = 64;

impl Engine {
    pub(super) fn write_readers(&mut self, now: Instant) {
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
    pub(super) fn at_pipe_head(&self, i: usize) -> bool {
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

    pub(super) fn write_reader(&mut self, i: usize, now: Instant) {
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
    pub(super) fn write_pipe(&mut self, i: usize, now: Instant) -> bool {
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

    pub(super) fn write_channel(&mut self, i: usize, now: Instant) -> bool {
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
    pub(super) fn reader_gone(&mut self, i: usize) {
        let delim = self.delim;
        let shared = self.cfg.delivery == Delivery::Shared;
        let r = &mut self.readers[i];
        if !r.is_open() {
            // It got EOF from us: count what it left unread in its pipe.
            if let ReaderPhase::Closed { watch } = &mut r.phase
                && let Some(watch) = watch.take()
            {
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
        r.phase = ReaderPhase::Gone;
        if r.may_restart && !self.awaited.contains(&r.id) {
            self.awaited.push(r.id);
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
            let id = r.id;
            self.emit(RouterEvent::ReaderGone {
                queue: self.cfg.queue,
                reader: id,
            });
        } else {
            // Broadcast: the other readers have their own copies, so these were on their
            // way to this reader's member only (see `broadcast`).
            let id = r.id;
            self.broadcast_reader_gone(i, back);
            self.emit(RouterEvent::ReaderGone {
                queue: self.cfg.queue,
                reader: id,
            });
        }
        self.strand_if_no_reader();
    }
}

/// `n` bytes of what `r` has pending were written to its pipe.
pub(super) fn advance(r: &mut Reader, mut n: usize, sentinels: &mut u64) {
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
