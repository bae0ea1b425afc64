//! The only writer of prun's terminal output: a thread that writes queued bytes to
//! stderr (and stdout), so the reporter never blocks on a terminal or a pipe.
//!
//! A stalled terminal (`prun p.yaml 2>&1 | slow`, a paused `less`, a terminal nobody
//! reads) blocks only this thread. The reporter sees the backlog grow
//! ([`Screen::pending`]) and stops taking log lines, so the stages that log then block
//! on their own output, as in a shell; the supervisor's events, the journal and the
//! report are never held back. At the end, [`Screen::finish`] gives the terminal a
//! bounded time and returns: a blocked write is left to the process exit. Writes are
//! plain blocking `write(2)` on the descriptors (never `O_NONBLOCK`, which would change
//! the shell's open file description too), and never take std's stderr lock.
//!
//! [`BoardTerm`] is indicatif's terminal (`TermLike`): the board's drawing goes through
//! the same queue, so board frames and log lines reach the terminal in order, and each
//! frame is wrapped in a synchronized update (DEC mode 2026) so it does not flicker.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<(Stream, Vec<u8>)>,
    /// Bytes queued and not yet written.
    pending: usize,
    /// A chunk taken by the writer and not yet fully written.
    writing: bool,
    /// When the writer last finished a chunk.
    progress: Option<Instant>,
    /// A stream whose writes failed (EPIPE, EIO): its later chunks are dropped.
    broken: [bool; 2],
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A handle on the writer thread (cheap to clone).
#[derive(Debug, Clone)]
pub struct Screen {
    shared: Arc<Shared>,
}

impl Screen {
    /// Start the writer thread.
    pub fn start() -> Screen {
        let shared = Arc::new(Shared::default());
        let writer = shared.clone();
        let started = std::thread::Builder::new()
            .name("prun-terminal".into())
            .spawn(move || write_loop(&writer));
        if started.is_err() {
            // No thread: nothing can be shown, and nothing must wait for it.
            shared.lock().broken = [true, true];
        }
        Screen { shared }
    }

    /// Queue bytes for a stream (never blocks).
    pub fn push(&self, stream: Stream, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let mut q = self.shared.lock();
        if q.broken[stream as usize] || q.closed {
            return;
        }
        q.pending += bytes.len();
        q.chunks.push_back((stream, bytes));
        drop(q);
        self.shared.cv.notify_all();
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending
    }

    /// True when a write to `stream` failed (the reader went away): nothing more is
    /// shown there.
    pub fn broken(&self, stream: Stream) -> bool {
        self.shared.lock().broken[stream as usize]
    }

    /// Wait until everything queued is written, as long as the terminal keeps taking
    /// bytes: give up after `stall` without progress, or after `cap` in all.
    pub fn finish(&self, stall: Duration, cap: Duration) {
        let start = Instant::now();
        let mut q = self.shared.lock();
        q.closed = true;
        self.shared.cv.notify_all();
        let mut seen = q.progress;
        let mut since = Instant::now();
        while q.pending > 0 || q.writing {
            let now = Instant::now();
            if q.progress != seen {
                seen = q.progress;
                since = now;
            }
            let left = (since + stall)
                .min(start + cap)
                .saturating_duration_since(now);
            if left.is_zero() {
                return;
            }
            q = self
                .shared
                .cv
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn write_loop(shared: &Shared) {
    loop {
        let mut q = shared.lock();
        let (stream, bytes) = loop {
            if let Some(c) = q.chunks.pop_front() {
                break c;
            }
            if q.closed {
                return;
            }
            q = shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        };
        q.writing = true;
        drop(q);
        let ok = write_all(stream, &bytes).is_ok();
        let mut q = shared.lock();
        q.writing = false;
        q.pending = q.pending.saturating_sub(bytes.len());
        q.progress = Some(Instant::now());
        if !ok {
            q.broken[stream as usize] = true;
            let mut dropped = 0;
            q.chunks.retain(|(s, b)| {
                let keep = *s != stream;
                if !keep {
                    dropped += b.len();
                }
                keep
            });
            q.pending = q.pending.saturating_sub(dropped);
        }
        drop(q);
        shared.cv.notify_all();
    }
}

fn write_all(stream: Stream, mut bytes: &[u8]) -> io::Result<()> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let fd = match stream {
        Stream::Stdout => stdout.as_fd(),
        Stream::Stderr => stderr.as_fd(),
    };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Begin and end of a synchronized update (DEC private mode 2026): a terminal that
/// knows it shows the frame at once; others ignore it.
const SYNC_BEGIN: &[u8] = b"\x1b[?2026h";
const SYNC_END: &[u8] = b"\x1b[?2026l";

/// indicatif's terminal: collects a frame and hands it to the [`Screen`] on `flush`,
/// wrapped in a synchronized update. While held ([`BoardTerm::hold`]), frames and the
/// log lines written between them are collected into one update.
#[derive(Debug, Clone)]
pub struct BoardTerm {
    inner: Arc<BoardInner>,
}

#[derive(Debug)]
struct BoardInner {
    screen: Screen,
    /// The frame being drawn, and whether it is held.
    frame: Mutex<(Vec<u8>, bool)>,
    width: AtomicU16,
    height: AtomicU16,
}

impl BoardTerm {
    pub fn new(screen: Screen, width: u16, height: u16) -> BoardTerm {
        BoardTerm {
            inner: Arc::new(BoardInner {
                screen,
                frame: Mutex::new((Vec::new(), false)),
                width: AtomicU16::new(width.max(10)),
                height: AtomicU16::new(height.max(1)),
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut (Vec<u8>, bool)) -> R) -> R {
        f(&mut self.inner.frame.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hold (`true`) or release (`false`, which flushes) the frame.
    pub fn hold(&self, on: bool) {
        self.with(|f| f.1 = on);
        if !on {
            let _ = indicatif::TermLike::flush(self);
        }
    }

    /// Bytes written between board frames (log lines), inside the held update.
    pub fn append(&self, bytes: &[u8]) {
        self.with(|f| f.0.extend_from_slice(bytes));
    }

    pub fn set_size(&self, width: u16, height: u16) {
        self.inner.width.store(width.max(10), Ordering::Relaxed);
        self.inner.height.store(height.max(1), Ordering::Relaxed);
    }

    fn put(&self, s: &str) -> io::Result<()> {
        self.with(|f| f.0.extend_from_slice(s.as_bytes()));
        Ok(())
    }
}

impl indicatif::TermLike for BoardTerm {
    fn width(&self) -> u16 {
        self.inner.width.load(Ordering::Relaxed)
    }

    fn height(&self) -> u16 {
        self.inner.height.load(Ordering::Relaxed)
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.put(s)?;
        self.put("\n")
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.put(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.put("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        let frame = self.with(|f| {
            if f.1 || f.0.is_empty() {
                None
            } else {
                Some(std::mem::take(&mut f.0))
            }
        });
        if let Some(body) = frame {
            let mut chunk = Vec::with_capacity(body.len() + 16);
            chunk.extend_from_slice(SYNC_BEGIN);
            chunk.extend_from_slice(&body);
            chunk.extend_from_slice(SYNC_END);
            self.inner.screen.push(Stream::Stderr, chunk);
        }
        Ok(())
    }
}

/// The terminal size of stderr (columns, rows), when it is a terminal.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass; fd 2 is only read.
    let ok = unsafe { get_winsize(2, &mut ws) }.is_ok();
    (ok && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::TermLike;

    #[test]
    fn frames_are_synchronized_updates() {
        let screen = Screen {
            shared: Arc::new(Shared::default()),
        };
        let term = BoardTerm::new(screen.clone(), 80, 10);
        term.hold(true);
        term.clear_line().unwrap();
        term.flush().unwrap();
        term.append(b"a | line\n");
        term.write_str("board").unwrap();
        term.flush().unwrap();
        assert_eq!(screen.pending(), 0, "held frames wait");
        term.hold(false);
        let q = screen.shared.lock();
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(
            q.chunks[0].1,
            b"\x1b[?2026h\r\x1b[2Ka | line\nboard\x1b[?2026l".to_vec()
        );
    }
}
