//! Dispatch: which reader gets which records. Shared delivery hands runs of whole
//! records to ready readers, least served first, within their windows, keeps each
//! writer's order per reader (also for records given back), and takes back the batches
//! of a reader stuck on a full pipe; broadcast appends every slice to every reader.

use std::time::{Duration, Instant};

use super::Engine;
use super::reader::FIRST_RECORDS;
use super::records::{NO_WRITER, Slice, count_delims};
use crate::plan::Delivery;

/// While at most this many records per ready reader wait, they are shared out exactly;
/// beyond, readers take whole blocks in turn.
pub(super) const EXACT_SHARE: u64 = 64;

/// A reader whose pipe stayed full this long loses its unwritten records to idle readers.
pub(super) const STEAL_AFTER: Duration = Duration::from_millis(20);

impl Engine {
    pub(super) fn dispatch(&mut self, now: Instant) {
        match self.cfg.delivery {
            Delivery::Broadcast => self.dispatch_broadcast(),
            Delivery::Shared => self.dispatch_shared(now),
        }
    }

    pub(super) fn dispatch_shared(&mut self, now: Instant) {
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
                    if let Some(t) = self.turns.as_mut() {
                        t.top_group = t.top_group.max(s.group);
                    }
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
    pub(super) fn next_for(&self, i: usize) -> Option<usize> {
        let r = &self.readers[i];
        self.queue.iter().position(|s| {
            r.in_order(s)
                || (self.awaited.is_empty()
                    && !self.readers.iter().any(|o| o.live() && o.in_order(s)))
        })
    }

    /// Take whole records from the front of the queue's slice `k`: at most `max_recs`
    /// and `max_bytes`, but at least one record when `at_least_one`.
    pub(super) fn cut_at(
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
            group: front.group,
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
    /// gets it next still sees the writer's order (with `order: writers`, also only one
    /// of the latest group handed out: nobody has a later writer's records).
    pub(super) fn steal(&mut self, now: Instant) {
        let idle = self
            .readers
            .iter()
            .any(|r| r.live() && r.pending.is_empty() && r.sink.is_some());
        if !idle {
            return;
        }
        let top_group = self.turns.as_ref().map(|t| t.top_group);
        for r in self.readers.iter_mut().filter(|r| r.live()) {
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
                if s.sentinel
                    || self.handed[s.writer] != s.seq + s.records
                    || top_group.is_some_and(|g| s.group != g)
                {
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
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::super::QueueConfig;
    use super::super::reader::{Reader, ReaderPhase, Sink};
    use super::super::sys;
    use super::*;
    use std::os::fd::OwnedFd;
    use std::sync::Arc;

    #[allow(dead_code)]
    fn slice(data: &[u8], records: u64) -> Slice {
        Slice {
            buf: Arc::new(data.to_vec()),
            start: 0,
            end: data.len(),
            records,
            sentinel: false,
            writer: 0,
            seq: 0,
            group: 0,
        }
    }

    fn engine(readers: usize) -> (Engine, Vec<OwnedFd>) {
        engine_with(readers, crate::plan::Order::Arrival)
    }

    fn engine_with(readers: usize, order: crate::plan::Order) -> (Engine, Vec<OwnedFd>) {
        let cfg = QueueConfig {
            queue: 0,
            name: "q".into(),
            capacity: 1024,
            delivery: Delivery::Shared,
            framing: crate::plan::Framing::Lines,
            sentinel: None,
            order,
        };
        let (etx, _) = crossbeam_channel::unbounded();
        let (_, crx) = crossbeam_channel::unbounded();
        let waker = Arc::new(sys::Waker::new().unwrap());
        let mut e = Engine::new(cfg, etx, crx, waker, Arc::default());
        let mut far = Vec::new();
        let (r, w) = sys::pipe().unwrap();
        e.add_writer(0, None, r);
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
        e.readers[0].phase = ReaderPhase::Gone;
        assert_eq!(
            e.next_for(1),
            Some(1),
            "reader 1 goes on with newer records"
        );
        assert_eq!(e.next_for(2), Some(0), "reader 2 takes the given-back ones");
        // With no reader left that could take them in order, they go anyway: order
        // gives way to not losing records.
        e.readers[2].phase = ReaderPhase::Gone;
        assert_eq!(e.next_for(1), Some(0));
        // Unless the dead reader may be restarted: then they wait for it, and the
        // restart (a new reader) takes them first when it joins.
        e.readers[0].phase = ReaderPhase::Live;
        e.handle_command(Command::MayRestart(0));
        e.reader_gone(0);
        assert_eq!(e.awaited, [0]);
        assert_eq!(e.next_for(1), Some(1), "they wait for the restart");
        let (r, _w) = sys::pipe().unwrap();
        e.add_reader(Reader::new(3, Sink::Pipe(r), 65536));
        assert_eq!(e.next_for(3), Some(0), "the restarted reader takes them");
        e.handle_command(Command::ReaderNotComing(0));
        assert!(e.awaited.is_empty());
        e.readers[3].phase = ReaderPhase::Gone;
        assert_eq!(
            e.next_for(1),
            Some(0),
            "withdrawn: delivered rather than held"
        );
    }

    #[test]
    fn with_order_writers_no_reader_gets_an_earlier_writers_records_after_a_later_ones() {
        let (mut e, _far) = engine_with(3, crate::plan::Order::Writers);
        // Writer 0 had the first turn (group 0), writer 1 has it now (group 1).
        let (r, _w) = sys::pipe().unwrap();
        e.add_writer(1, None, r);
        let later = Slice {
            writer: 1,
            group: 1,
            ..run_of(0, 10)
        };
        // Reader 1 already got some of writer 1's records.
        hand(&mut e, 1, later.clone());
        e.readers[1].pending.clear();
        e.turns.as_mut().unwrap().top_group = 1;
        // Reader 0 died holding writer 0's last records: they come back to the front.
        e.queue.push_back(run_of(0, 10));
        e.queue.push_back(Slice { seq: 10, ..later });
        e.readers[0].phase = ReaderPhase::Gone;
        assert_eq!(e.next_for(1), Some(1), "reader 1 goes on with writer 1");
        assert_eq!(e.next_for(2), Some(0), "reader 2 takes writer 0's first");
        // A stuck reader's batch of writer 0 is not taken back while writer 1's records
        // were handed out: whoever took it would get writer 0 after writer 1.
        e.queue.clear();
        hand(&mut e, 2, run_of(0, 10));
        let now = Instant::now();
        e.readers[2].blocked_since = Some(now - STEAL_AFTER * 2);
        e.readers[1].pending.clear();
        e.steal(now);
        assert_eq!(e.readers[2].pending.len(), 1, "kept by the stuck reader");
        // Of the latest group, it is.
        e.turns.as_mut().unwrap().top_group = 0;
        e.steal(now);
        assert!(e.readers[2].pending.is_empty(), "taken back");
    }
}
