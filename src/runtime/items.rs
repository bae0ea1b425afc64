//! foreach items, produced lazily (SPEC 3.4): a source is never expanded whole.
//!
//! [`Items::open`] turns a source into a cursor. `items`, `range` and `matrix` are
//! computed as they are taken (a range of ten million items costs nothing up front,
//! a matrix item is decoded from its position). `lines` and `glob` read the
//! filesystem, which may block (a FIFO, a slow network mount), so a feed thread reads
//! them and hands items over in chunks on a small bounded channel: the supervisor only
//! ever `try_recv`s, and waits on the channel in its `select` when it has a free slot
//! and no item ([`Items::receiver`]). The channel's bound is the backpressure: the
//! thread reads ahead by at most a few chunks, so memory stays flat however big the
//! file or the tree.
//!
//! Totals (for the progress bar, ETA and `halt` percentages): `items`, `range` and
//! `matrix` know theirs at once. For a `lines` file that is a regular file, a second
//! thread counts its items (a `memchr` pass, about a second per GB) and sends the total
//! as soon as it has it, while the items are already running; a FIFO's or a glob's total
//! is known when the feed reaches its end.
//!
//! Decisions, written down:
//! - `range` follows Python's `range(from, to, step)`: `to` is excluded, `step` may be
//!   negative, never 0. There is no item limit: items are produced one at a time.
//! - `lines`: one item per line; `\r\n` endings are accepted; empty lines are skipped.
//!   A line that is not UTF-8 becomes an item that cannot start (as a queue record).
//! - A feed that fails midway (a directory that cannot be listed, a read error) ends
//!   the source; the items it gave first still run, and the failure is reported.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::string::FromUtf8Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

use crate::plan::{ForeachSource, InstanceVars};

/// Items a feed thread sends per chunk at most.
const CHUNK: usize = 1024;
/// Chunks a feed thread may read ahead.
const AHEAD: usize = 4;
/// Read size of a `lines` feed.
const READ: usize = 64 * 1024;

/// What a feed thread sends.
#[derive(Debug)]
pub enum Chunk {
    /// The next items, as bytes (a line or a path need not be UTF-8).
    Items(Vec<Vec<u8>>),
    /// The number of items the source has in all.
    Total(u64),
    /// The source failed; no item follows.
    Failed(String),
}

/// What taking the next item gave.
#[derive(Debug)]
pub enum Next {
    /// An item (or bytes that are not UTF-8: an item that cannot start).
    Item(Result<String, FromUtf8Error>),
    /// A feed has nothing yet: wait on [`Items::receiver`].
    Pending,
    /// The source is exhausted.
    End,
    /// The source failed; nothing follows.
    Failed(String),
}

enum Cursor {
    List(Vec<String>),
    Range { from: i128, step: i128 },
    Matrix(Vec<(String, Vec<String>)>),
    Feed(Feed),
}

struct Feed {
    rx: Option<Receiver<Chunk>>,
    buf: VecDeque<Vec<u8>>,
    failed: Option<String>,
    /// Shared with the feed's threads.
    shared: Arc<Shared>,
}

/// What a feed's threads and its cursor share.
#[derive(Default)]
struct Shared {
    /// Set when nobody takes items any more: the threads stop at their next look
    /// (the feed at its next send, the counter at its next block).
    gone: AtomicBool,
    /// The total counted beside the feed (`u64::MAX`: not yet). Not sent on the
    /// channel, where it would wait behind the chunks read ahead.
    counted: AtomicU64,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.shared.gone.store(true, Ordering::Release);
    }
}

/// A cursor over one foreach source.
pub struct Items {
    cursor: Cursor,
    /// Items taken so far (the next item's index).
    taken: u64,
    total: Option<u64>,
}

impl Items {
    /// Open `source` (not `queue`: its records come from its router). `vars` renders
    /// the glob pattern or `lines` path; relative paths start at `base_dir`.
    pub fn open(
        source: &ForeachSource,
        vars: &InstanceVars<'_>,
        base_dir: &Path,
    ) -> Result<Items, String> {
        let (cursor, total) = match source {
            ForeachSource::Items(items) => (Cursor::List(items.clone()), Some(items.len() as u64)),
            ForeachSource::Range { from, to, step } => {
                let count = range_count(*from, *to, *step)?;
                (
                    Cursor::Range {
                        from: *from as i128,
                        step: *step as i128,
                    },
                    Some(count),
                )
            }
            ForeachSource::Matrix(dims) => {
                let count = matrix_count(dims)?;
                (Cursor::Matrix(dims.clone()), Some(count))
            }
            ForeachSource::Glob(pattern) => {
                let glob = super::glob::Glob::new(&pattern.render(vars))?;
                let base = base_dir.to_path_buf();
                let feed = Feed::spawn("prun-glob", move |tx, _| glob_feed(&glob, &base, tx))?;
                (Cursor::Feed(feed), None)
            }
            ForeachSource::Lines(path) => {
                // Opened by the feed thread: opening a FIFO waits for its writer.
                let full = base_dir.join(path.render(vars));
                let feed = Feed::spawn("prun-lines", move |tx, gone| lines_feed(&full, tx, gone))?;
                (Cursor::Feed(feed), None)
            }
            ForeachSource::Queue(_) => {
                return Err(
                    "a `foreach: {queue}` source is fed by its queue, it has no items to open"
                        .into(),
                );
            }
        };
        Ok(Items {
            cursor,
            taken: 0,
            total,
        })
    }

    /// The number of items in all, once known.
    pub fn total(&self) -> Option<u64> {
        self.total.or_else(|| match &self.cursor {
            Cursor::Feed(f) => {
                let n = f.shared.counted.load(Ordering::Acquire);
                (n != u64::MAX).then_some(n)
            }
            _ => None,
        })
    }

    /// Items taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Take the next item.
    pub fn take(&mut self) -> Next {
        let i = self.taken;
        let item = match &mut self.cursor {
            Cursor::List(items) => match items.get(i as usize) {
                Some(s) => Ok(s.clone()),
                None => return Next::End,
            },
            Cursor::Range { from, step } => {
                if self.total.is_some_and(|t| i >= t) {
                    return Next::End;
                }
                Ok((*from + i as i128 * *step).to_string())
            }
            Cursor::Matrix(dims) => {
                if self.total.is_some_and(|t| i >= t) {
                    return Next::End;
                }
                Ok(matrix_parts(dims, i).join(" "))
            }
            Cursor::Feed(feed) => {
                if feed.buf.is_empty() {
                    feed.pull(&mut self.total);
                }
                match feed.buf.pop_front() {
                    Some(bytes) => {
                        self.taken += 1;
                        return Next::Item(String::from_utf8(bytes));
                    }
                    None if feed.rx.is_some() => return Next::Pending,
                    None => {
                        if self.total.is_none() {
                            self.total = Some(self.taken);
                        }
                        return match feed.failed.take() {
                            Some(e) => Next::Failed(e),
                            None => Next::End,
                        };
                    }
                }
            }
        };
        self.taken += 1;
        Next::Item(item)
    }

    /// Take no more items: a feed thread is let go (it ends at its next send).
    pub fn stop(&mut self) {
        if let Cursor::Feed(f) = &mut self.cursor {
            f.rx = None;
            f.buf.clear();
            f.failed = None;
            f.shared.gone.store(true, Ordering::Release);
        }
    }

    /// The channel to wait on when [`Items::take`] said `Pending`.
    pub fn receiver(&self) -> Option<Receiver<Chunk>> {
        match &self.cursor {
            Cursor::Feed(f) if f.buf.is_empty() => f.rx.clone(),
            _ => None,
        }
    }

    /// A chunk received while waiting on [`Items::receiver`] (None: the feed ended).
    pub fn received(&mut self, chunk: Option<Chunk>) {
        if let Cursor::Feed(f) = &mut self.cursor {
            match chunk {
                Some(c) => f.take(c, &mut self.total),
                None => f.rx = None,
            }
        }
    }
}

impl Feed {
    fn spawn(
        name: &str,
        body: impl FnOnce(&Sender<Chunk>, Arc<Shared>) + Send + 'static,
    ) -> Result<Feed, String> {
        let (tx, rx) = bounded(AHEAD);
        let shared = Arc::new(Shared {
            gone: AtomicBool::new(false),
            counted: AtomicU64::new(u64::MAX),
        });
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&tx, theirs))
            .map_err(|e| format!("cannot start a thread to read the foreach source: {e}"))?;
        Ok(Feed {
            rx: Some(rx),
            buf: VecDeque::new(),
            failed: None,
            shared,
        })
    }

    fn pull(&mut self, total: &mut Option<u64>) {
        while self.buf.is_empty() {
            let Some(rx) = &self.rx else { return };
            match rx.try_recv() {
                Ok(c) => self.take(c, total),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => self.rx = None,
            }
        }
    }

    fn take(&mut self, chunk: Chunk, total: &mut Option<u64>) {
        match chunk {
            Chunk::Items(items) => self.buf.extend(items),
            Chunk::Total(n) => *total = Some(n),
            Chunk::Failed(e) => {
                self.failed = Some(e);
                self.rx = None;
            }
        }
    }
}

/// Python's `range(from, to, step)`: how many items.
pub fn range_count(from: i64, to: i64, step: i64) -> Result<u64, String> {
    if step == 0 {
        return Err("foreach range: `step` must not be 0".into());
    }
    let (from, to, step) = (from as i128, to as i128, step as i128);
    let span = if step > 0 { to - from } else { from - to };
    let count = if span <= 0 {
        0
    } else {
        (span + step.abs() - 1) / step.abs()
    };
    u64::try_from(count).map_err(|_| "foreach range: too many items".to_string())
}

/// How many items a matrix has (the product of its dimensions' sizes).
pub fn matrix_count(dims: &[(String, Vec<String>)]) -> Result<u64, String> {
    dims.iter().try_fold(1u64, |n, (name, values)| {
        n.checked_mul(values.len() as u64)
            .ok_or_else(|| format!("foreach matrix: too many combinations (at `{name}`)"))
    })
}

/// The parts of matrix item `index`: the first dimension varies slowest (GNU parallel
/// `::: a b ::: c d`).
pub fn matrix_parts(dims: &[(String, Vec<String>)], index: u64) -> Vec<&str> {
    let mut parts = vec![""; dims.len()];
    let mut rest = index;
    for (d, (_, values)) in dims.iter().enumerate().rev() {
        let n = values.len() as u64;
        if n == 0 {
            return Vec::new();
        }
        parts[d] = values[(rest % n) as usize].as_str();
        rest /= n;
    }
    parts
}

/// The feed thread of a glob: matches in chunks, then the total.
fn glob_feed(glob: &super::glob::Glob, base: &Path, tx: &Sender<Chunk>) {
    let mut chunk = Vec::new();
    let mut count = 0u64;
    let mut gone = false;
    let result = glob.walk(base, &mut |path| {
        chunk.push(path);
        count += 1;
        if chunk.len() >= CHUNK && tx.send(Chunk::Items(std::mem::take(&mut chunk))).is_err() {
            gone = true;
            return false;
        }
        true
    });
    if gone {
        return;
    }
    if !chunk.is_empty() && tx.send(Chunk::Items(chunk)).is_err() {
        return;
    }
    let _ = tx.send(match result {
        Ok(()) => Chunk::Total(count),
        Err(e) => Chunk::Failed(e),
    });
}

/// The feed thread of a `lines` file: non-empty lines, `\r\n` accepted; a chunk per
/// read, so a slowly written FIFO's lines start as they come. A regular file's total
/// is counted by another thread meanwhile.
fn lines_feed(full: &Path, tx: &Sender<Chunk>, shared: Arc<Shared>) {
    let mut file = match std::fs::File::open(full) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(Chunk::Failed(format!(
                "foreach lines: cannot read {}: {e}",
                full.display()
            )));
            return;
        }
    };
    if file.metadata().is_ok_and(|m| m.is_file()) {
        // Best effort: the feed's own count at its end is exact.
        let path = full.to_path_buf();
        let _ = std::thread::Builder::new()
            .name("prun-count".into())
            .spawn(move || {
                if let Some(n) = count_lines_until(&path, &shared.gone) {
                    shared.counted.store(n, Ordering::Release);
                }
            });
    }
    let mut buf = vec![0u8; READ];
    let mut partial: Vec<u8> = Vec::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut count = 0u64;
    let mut push = |line: &[u8], chunk: &mut Vec<Vec<u8>>| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            chunk.push(line.to_vec());
            count += 1;
        }
    };
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Chunk::Items(chunk));
                let _ = tx.send(Chunk::Failed(format!(
                    "foreach lines: cannot read {}: {e}",
                    full.display()
                )));
                return;
            }
        };
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
            if partial.is_empty() {
                push(&buf[start..nl], &mut chunk);
            } else {
                partial.extend_from_slice(&buf[start..nl]);
                let line = std::mem::take(&mut partial);
                push(&line, &mut chunk);
            }
            start = nl + 1;
            if chunk.len() >= CHUNK && tx.send(Chunk::Items(std::mem::take(&mut chunk))).is_err() {
                return;
            }
        }
        partial.extend_from_slice(&buf[start..n]);
        if !chunk.is_empty() && tx.send(Chunk::Items(std::mem::take(&mut chunk))).is_err() {
            return;
        }
    }
    if !partial.is_empty() {
        push(&partial, &mut chunk);
    }
    if !chunk.is_empty() && tx.send(Chunk::Items(chunk)).is_err() {
        return;
    }
    let _ = tx.send(Chunk::Total(count));
}

/// The number of items of a `lines` file: lines not empty once a `\r` before the `\n`
/// is removed. None if it cannot be read.
pub fn count_lines(path: &Path) -> Option<u64> {
    count_lines_until(path, &AtomicBool::new(false))
}

/// [`count_lines`], given up (None) once `gone` is set.
fn count_lines_until(path: &Path, gone: &AtomicBool) -> Option<u64> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut count = 0u64;
    // The current line's length so far and its last byte.
    let (mut len, mut last) = (0usize, 0u8);
    loop {
        if gone.load(Ordering::Acquire) {
            return None;
        }
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[..n]) {
            if nl > start {
                len += nl - start;
                last = buf[nl - 1];
            }
            if len > usize::from(last == b'\r') {
                count += 1;
            }
            len = 0;
            last = 0;
            start = nl + 1;
        }
        if n > start {
            len += n - start;
            last = buf[n - 1];
        }
    }
    if len > usize::from(last == b'\r') {
        count += 1;
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Template;
    use std::time::Duration;

    fn vars() -> InstanceVars<'static> {
        InstanceVars {
            stage: "s",
            run_dir: "/run",
            ..Default::default()
        }
    }

    /// Every item of a source, waiting on feeds.
    fn all(source: &ForeachSource, dir: &Path) -> (Vec<String>, Option<u64>, Option<String>) {
        let mut items = Items::open(source, &vars(), dir).unwrap();
        let mut out = Vec::new();
        loop {
            match items.take() {
                Next::Item(i) => out
                    .push(i.unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
                Next::Pending => {
                    let rx = items.receiver().unwrap();
                    let got = rx.recv_timeout(Duration::from_secs(10));
                    items.received(got.ok());
                }
                Next::End => return (out, items.total(), None),
                Next::Failed(e) => return (out, items.total(), Some(e)),
            }
        }
    }

    #[test]
    fn items_ranges_and_matrices() {
        let d = Path::new("/");
        let src = ForeachSource::Items(vec!["a b".into(), "".into()]);
        assert_eq!(all(&src, d).0, ["a b", ""]);
        let r = |from, to, step| all(&ForeachSource::Range { from, to, step }, d).0;
        assert_eq!(r(0, 5, 1), ["0", "1", "2", "3", "4"]);
        assert_eq!(r(0, 10, 3), ["0", "3", "6", "9"]);
        assert_eq!(r(5, 0, -2), ["5", "3", "1"]);
        assert!(r(3, 3, 1).is_empty());
        assert!(r(5, 0, 1).is_empty());
        assert!(range_count(0, 1, 0).is_err());
        assert_eq!(
            range_count(i64::MIN, i64::MAX, 1).unwrap(),
            u64::MAX,
            "no item limit: a range is produced one item at a time"
        );
        assert_eq!(r(i64::MAX - 1, i64::MAX, 5), [(i64::MAX - 1).to_string()]);
        let huge = Items::open(
            &ForeachSource::Range {
                from: 0,
                to: 10_000_000,
                step: 1,
            },
            &vars(),
            d,
        )
        .unwrap();
        assert_eq!(huge.total(), Some(10_000_000));
        let m = ForeachSource::Matrix(vec![
            ("size".into(), vec!["s".into(), "m".into()]),
            ("region".into(), vec!["eu".into(), "us".into(), "ap".into()]),
        ]);
        let (items, total, _) = all(&m, d);
        assert_eq!(items, ["s eu", "s us", "s ap", "m eu", "m us", "m ap"]);
        assert_eq!(total, Some(6));
        assert_eq!(
            items,
            crate::plan::matrix_items(match &m {
                ForeachSource::Matrix(d) => d,
                _ => unreachable!(),
            })
        );
        if let ForeachSource::Matrix(dims) = &m {
            assert_eq!(matrix_parts(dims, 4), ["m", "us"]);
        }
        assert!(Items::open(&ForeachSource::Queue(0), &vars(), d).is_err());
    }

    #[test]
    fn lines_skip_empty_accept_crlf_and_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("l.txt"), "one\r\ntwo words\n\n\r\nthree").unwrap();
        let src = ForeachSource::Lines(Template::literal("l.txt"));
        let (items, total, failed) = all(&src, dir.path());
        assert_eq!(items, ["one", "two words", "three"]);
        assert_eq!(total, Some(3));
        assert!(failed.is_none());
        assert_eq!(count_lines(&dir.path().join("l.txt")), Some(3));
        std::fs::write(dir.path().join("bad.txt"), b"ok\n\xff\n").unwrap();
        let (items, _, _) = all(
            &ForeachSource::Lines(Template::literal("bad.txt")),
            dir.path(),
        );
        assert_eq!(
            items,
            ["ok", "\u{fffd}"],
            "a line that is not UTF-8 is still an item"
        );
        let (items, total, failed) = all(
            &ForeachSource::Lines(Template::literal("missing.txt")),
            dir.path(),
        );
        assert!(items.is_empty());
        assert_eq!(total, Some(0));
        let e = failed.unwrap();
        assert!(e.contains("missing.txt"), "{e}");
        // Lines longer than a read, and many chunks.
        let long = "x".repeat(READ * 2 + 7);
        let mut text = format!("{long}\n");
        for i in 0..5000 {
            text.push_str(&format!("{i}\n"));
        }
        std::fs::write(dir.path().join("big.txt"), &text).unwrap();
        let (items, total, _) = all(
            &ForeachSource::Lines(Template::literal("big.txt")),
            dir.path(),
        );
        assert_eq!(items.len(), 5001);
        assert_eq!(items[0], long);
        assert_eq!(items[5000], "4999");
        assert_eq!(total, Some(5001));
        assert_eq!(count_lines(&dir.path().join("big.txt")), Some(5001));
    }

    #[test]
    fn globs_are_fed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..2500 {
            let p = dir.path().join(format!("d/{:05}.log", i));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let (items, total, failed) = all(
            &ForeachSource::Glob(Template::literal("d/*.log")),
            dir.path(),
        );
        assert_eq!(items.len(), 2500);
        assert_eq!(items[0], "d/00000.log");
        assert_eq!(items[2499], "d/02499.log");
        assert_eq!(total, Some(2500));
        assert!(failed.is_none());
        assert!(
            Items::open(
                &ForeachSource::Glob(Template::literal("a**")),
                &vars(),
                dir.path()
            )
            .is_err()
        );
    }
}
