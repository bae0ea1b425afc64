//! Log draining: one thread per `log` pipe turns a child's output into whole lines.
//!
//! A chatty child must never block on a full pipe because prun is busy, so each log
//! pipe has its own reader thread. Lines are cut only at `\n`: a line longer than the
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

/// Start draining `fd` (the read end of the instance's log pipe).
pub fn start(
    fd: OwnedFd,
    id: InstanceId,
    generation: u64,
    matchers: Vec<LineMatcher>,
    events: Sender<Event>,
    sup: Sender<Msg>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("prun-log-{id}"))
        .spawn(move || {
            let mut drain = Drain {
                id,
                generation,
                matchers,
                events,
                sup: sup.clone(),
            };
            drain.run(std::fs::File::from(fd));
            let _ = drain.events.send(Event::LogClosed { id });
            let _ = sup.send(Msg::DrainDone);
        })
        .map(|_| ())
}

/// Start passing through `fd` (the read end of a `stdout: inherit` stage's pipe).
pub fn start_passthrough(
    fd: OwnedFd,
    id: InstanceId,
    events: Sender<Event>,
    sup: Sender<Msg>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
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
            let _ = sup.send(Msg::DrainDone);
        })
        .map(|_| ())
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
