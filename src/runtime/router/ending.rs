//! Ending early: no reader left (writers see a closed pipe), `abort` (close everything),
//! and `cut` (a stop under way: end the stream now, count what nobody will get as
//! discarded, and still give every reader its sentinel and EOF).

use std::io;
use std::os::fd::AsRawFd;

use super::Engine;
use super::RouterEvent;
use super::reader::ReaderPhase;
use super::reader::push_sentinel;
use super::records::count_delims;
use super::sys;
use super::writer::{WRITER_PIPE, WriterPhase, discard_backlog};

impl Engine {
    /// No reader left and none will come: writers must see a closed pipe, like in a
    /// shell pipeline, and what is buffered can never be delivered.
    pub(super) fn strand_if_no_reader(&mut self) {
        if !self.readers_final
            || self.readers.iter().any(|r| r.is_open())
            || self.members_expected()
        {
            return;
        }
        for wi in 0..self.writers.len() {
            if self.writers[wi].phase == WriterPhase::Done {
                continue;
            }
            // What it left in its pipe is lost with the pipe: count it (discarded).
            if self.writers[wi].phase != WriterPhase::Torn {
                self.discard_unread(wi);
            }
            let w = &mut self.writers[wi];
            w.peeked = 0;
            w.shadow = None;
            w.fd = None;
            if !w.reported() {
                let _ = self.events.send(RouterEvent::WriterDone {
                    queue: self.cfg.queue,
                    writer: w.id,
                });
            }
            discard_backlog(w, self.delim, &mut self.stats);
            if w.phase == WriterPhase::Torn {
                // Its incomplete last record, whatever the writer's outcome, has nobody
                // to go to.
                self.stats.records += 1;
                self.stats.bytes += w.carry.len() as u64;
                self.stats.discarded += 1;
                w.records += 1;
            }
            w.phase = WriterPhase::Done;
            w.carry = Vec::new();
        }
        self.stats.discarded += self.clear_queue() + self.drop_waiting();
    }

    pub(super) fn abort(&mut self) {
        // Waiting records are part of the depth.
        self.stats.discarded += self.depth();
        self.drop_waiting();
        for wi in 0..self.writers.len() {
            self.discard_writer(wi, false);
        }
        for r in &mut self.readers {
            if r.is_open() {
                r.give_eof();
            }
            r.pending.clear();
            r.pending_records = 0;
            r.pending_bytes = 0;
        }
        self.clear_queue();
    }

    /// End the stream now (the run is being stopped and the readers did not drain the
    /// queue in time): what is queued and what the writers left in their pipes is
    /// counted as discarded; a reader in the middle of a record gets the rest of that
    /// record; then every reader gets the sentinel and EOF as at a normal end, and
    /// `Drained` follows.
    pub(super) fn cut_stream(&mut self) {
        self.stats.discarded += self.clear_queue() + self.drop_waiting();
        // Nothing waits for a turn any more, and nothing will: a writer that still
        // comes is read as under `order: arrival` (its records are cut like the rest).
        self.turns = None;
        for wi in 0..self.writers.len() {
            self.discard_writer(wi, true);
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
            r.phase = ReaderPhase::Finishing;
            push_sentinel(self.sentinel_record.as_ref(), r);
        }
        self.finishing = true;
    }

    /// Stop reading writer `wi` for good: what it wrote and nobody will get (its backlog,
    /// what is left in its pipe) is counted as read and discarded, and its pipe closed.
    /// `report`: send `WriterDone` if it was not sent yet.
    pub(super) fn discard_writer(&mut self, wi: usize, report: bool) {
        if self.writers[wi].phase == WriterPhase::Done {
            return;
        }
        self.discard_unread(wi);
        let w = &mut self.writers[wi];
        discard_backlog(w, self.delim, &mut self.stats);
        w.fd = None;
        w.peeked = 0;
        w.shadow = None;
        w.carry = Vec::new();
        let reported = w.reported();
        w.phase = WriterPhase::Done;
        if report && !reported {
            let id = w.id;
            self.emit(RouterEvent::WriterDone {
                queue: self.cfg.queue,
                writer: id,
            });
        }
    }

    /// At abort: read what writer `wi` left in its pipe (a pipe's worth or so: a writer
    /// still running sees EPIPE next), and its incomplete last record, and count those
    /// records as read and discarded, so the report accounts for every record written.
    pub(super) fn discard_unread(&mut self, wi: usize) {
        let delim = self.delim;
        let w = &mut self.writers[wi];
        if w.discarding() {
            return;
        }
        // The record being read when the stream was cut (complete records of a backlog
        // are counted by the caller).
        let partial: &[u8] = match (delim, w.backlog()) {
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
}
