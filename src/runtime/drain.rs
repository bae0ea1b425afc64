//! Log draining: one thread per `log` pipe turns a child's output into whole lines.
//!
//! A chatty child must never block on a full pipe because prun is busy, so each log
//! pipe has its own reader thread. Threads are reused ([`Pool`]): a drain whose pipe
//! ended waits a while for the next pipe instead of exiting, so a foreach of a
//! million short items does not create and tear down a million threads (a spawn, a
//! stack mapped and unmapped, per item: about a tenth of prun's work per `true` item). Lines are cut only at `\n`: a line longer than the
//! read buffer is accumulated until its end (up to [`MAX_LINE`], beyond which it is
//! passed on in pieces so memory stays bounded). The thread also matches lines against
//! the instance's `ready: {line}` probe and `sets: {line}` triggers and tells the
//! supervisor, which decides what a match means.
//!
//! [`start_passthrough`] drains the stdout of a stage on `stdout: inherit` when prun's
//! stdout is a terminal: raw chunks, not lines (the reporter passes them on as they
//! are, above the board), ended with `LogClosed` like a log.

use std::io::Read;
use std::os::fd::OwnedFd;

use crossbeam_channel::Sender;

pub use super::msg::LineAction;
use super::msg::Msg;
use crate::event::{Event, InstanceId};

/// A line longer than this is passed on in pieces of this size.
pub const MAX_LINE: usize = 16 << 20;

pub struct LineMatcher {
    pub regex: regex::Regex,
    pub action: LineAction,
}

/// The drains running. The supervisor needs to know only at the end of the run (it
/// lets them pass on their last lines before the final event), so a drain that ends
/// wakes the loop ([`Msg::DrainDone`]) only once it asked for that
/// ([`Running::notify`]): a short foreach item costs no extra pass of the loop.
#[derive(Clone, Default)]
pub struct Running {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    notify: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Running {
    fn begin(&self) {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn end(&self, sup: &Sender<Msg>) {
        self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        if self.notify.load(std::sync::atomic::Ordering::Acquire) {
            let _ = sup.send(Msg::DrainDone);
        }
    }

    /// Drains not ended yet.
    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// From now on, each drain that ends sends [`Msg::DrainDone`].
    pub fn notify(&self) {
        self.notify
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Start draining `fd` (the read end of the instance's log pipe).
pub fn start(
    fd: OwnedFd,
    id: InstanceId,
    generation: u64,
    matchers: Vec<LineMatcher>,
    events: Sender<Event>,
    sup: Sender<Msg>,
    running: &Running,
) -> std::io::Result<()> {
    let running = running.clone();
    running.begin();
    let ended = running.clone();
    let result = POOL.run(Box::new(move || {
        let mut drain = Drain {
            id,
            generation,
            matchers,
            events,
            sup: sup.clone(),
        };
        drain.run(std::fs::File::from(fd));
        let _ = drain.events.send(Event::LogClosed { id });
        running.end(&sup);
    }));
    if result.is_err() {
        ended
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
    result
}

/// A drain's work, run on a pool thread.
type Job = Box<dyn FnOnce() + Send>;

/// How long an idle drain thread waits for a new pipe before it ends.
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// Drain threads, reused. `idle` counts the threads waiting for a job and not claimed
/// yet: a job goes to the channel only after claiming one of them (so it is taken at
/// once), else to a new thread; a waiting thread that times out ends only if it can
/// claim itself (else a job is on its way to it).
struct Pool {
    jobs: std::sync::OnceLock<(Sender<Job>, crossbeam_channel::Receiver<Job>)>,
    idle: std::sync::atomic::AtomicUsize,
}

static POOL: Pool = Pool {
    jobs: std::sync::OnceLock::new(),
    idle: std::sync::atomic::AtomicUsize::new(0),
};

impl Pool {
    fn channel(&self) -> &(Sender<Job>, crossbeam_channel::Receiver<Job>) {
        self.jobs.get_or_init(crossbeam_channel::unbounded)
    }

    /// Claim one waiting thread, if any.
    fn claim(&self) -> bool {
        use std::sync::atomic::Ordering::AcqRel;
        self.idle
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |n| {
                n.checked_sub(1)
            })
            .is_ok()
    }

    fn run(&'static self, job: Job) -> std::io::Result<()> {
        if self.claim() {
            if let Err(e) = self.channel().0.send(job) {
                // Cannot happen (the pool holds a receiver); run it on a new thread.
                return self.spawn(e.into_inner());
            }
            return Ok(());
        }
        self.spawn(job)
    }

    fn spawn(&'static self, job: Job) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("prun-log".into())
            .spawn(move || {
                let rx = self.channel().1.clone();
                let mut job = Some(job);
                while let Some(j) = job.take() {
                    j();
                    self.idle.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    job = match rx.recv_timeout(IDLE) {
                        Ok(j) => Some(j),
                        // Ends only if no job claimed it meanwhile.
                        Err(_) if self.claim() => None,
                        Err(_) => rx.recv().ok(),
                    };
                }
            })
            .map(|_| ())
    }
}

/// Start passing through `fd` (the read end of a `stdout: inherit` stage's pipe).
pub fn start_passthrough(
    fd: OwnedFd,
    id: InstanceId,
    events: Sender<Event>,
    sup: Sender<Msg>,
    running: &Running,
) -> std::io::Result<()> {
    let running = running.clone();
    running.begin();
    let ended = running.clone();
    let result = std::thread::Builder::new()
        .name(format!("prun-out-{id}"))
        .spawn(move || {
            let mut file = std::fs::File::from(fd);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let bytes = buf[..n].to_vec();
                        if events.send(Event::Output { id, bytes }).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = events.send(Event::LogClosed { id });
            running.end(&sup);
        })
        .map(|_| ());
    if result.is_err() {
        ended
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
    result
}

struct Drain {
    id: InstanceId,
    generation: u64,
    matchers: Vec<LineMatcher>,
    events: Sender<Event>,
    sup: Sender<Msg>,
}

impl Drain {
    fn run(&mut self, mut file: std::fs::File) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut line: Vec<u8> = Vec::new();
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let mut rest = &buf[..n];
            while let Some(pos) = memchr::memchr(b'\n', rest) {
                if line.is_empty() {
                    self.emit(rest[..pos].to_vec());
                } else {
                    line.extend_from_slice(&rest[..pos]);
                    self.emit(std::mem::take(&mut line));
                }
                rest = &rest[pos + 1..];
            }
            line.extend_from_slice(rest);
            if line.len() >= MAX_LINE {
                self.emit(std::mem::take(&mut line));
            }
        }
        if !line.is_empty() {
            self.emit(line);
        }
    }

    fn emit(&mut self, line: Vec<u8>) {
        if !self.matchers.is_empty() {
            let text = String::from_utf8_lossy(&line);
            let mut fired = Vec::new();
            self.matchers.retain(|m| {
                if m.regex.is_match(&text) {
                    fired.push(m.action);
                    false
                } else {
                    true
                }
            });
            for action in fired {
                let _ = self.sup.send(Msg::Line {
                    id: self.id,
                    generation: self.generation,
                    action,
                });
            }
        }
        // The report thread may be gone at the very end; losing the line then is moot.
        let _ = self.events.send(Event::Log { id: self.id, line });
    }
}
