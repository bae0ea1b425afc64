//! Framing and records: a [`Slice`] is a run of whole records inside a shared block,
//! tagged with its writer and the number of its first record (per-writer order); the
//! counting helpers find and count delimiters (memchr's vectorised counter), and
//! [`records_in_tail`] counts the records a reader left unread in its pipe.

use std::collections::VecDeque;
use std::sync::Arc;

/// A run of whole records inside a shared block.
#[derive(Clone)]
pub(super) struct Slice {
    pub(super) buf: Arc<Vec<u8>>,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) records: u64,
    pub(super) sentinel: bool,
    /// Index of the writer the records came from ([`NO_WRITER`] for the sentinel).
    pub(super) writer: usize,
    /// Number of the first record in that writer's stream: with it, per-writer order is
    /// kept when records are given back (a reader died, or was stuck and its batch was
    /// taken back) and handed out again.
    pub(super) seq: u64,
    /// `order: writers`: the turn number of its writer (writers get the turn one after
    /// the other, numbered from 0, so the queue's slices never go down in it); 0 for
    /// `order: arrival`. With it, a reader never gets an earlier writer's records after
    /// a later one's (see [`super::order`]).
    pub(super) group: u64,
}

/// [`Slice::writer`] of a record prun made itself (the sentinel).
pub(super) const NO_WRITER: usize = usize::MAX;

impl Slice {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Number of delimiters in `data` (memchr's counter is vectorised: far cheaper than
/// visiting every record).
pub(super) fn count_delims(d: u8, data: &[u8]) -> u64 {
    memchr::memchr_iter(d, data).count() as u64
}

/// Delimiters in `data` if there are at most `limit` of them (`Ok`), else the offset of
/// the `limit`-th (`Err`, 1-based; `limit` ≥ 1). One pass that stops where the limit is
/// passed: whole 4 KiB blocks are counted with the vectorised counter, records are
/// visited one by one only around the cut.
pub(super) fn count_upto(d: u8, data: &[u8], limit: u64) -> Result<u64, usize> {
    pub(super) const BLOCK: usize = 4096;
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
pub(super) fn records_in_tail(
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
            group: 0,
        }
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
