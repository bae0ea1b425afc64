//! Wiring one start: the descriptors a new process gets.
//!
//! - `log` streams: one pipe for stdout and stderr when both are `log` (keeps their
//!   relative order), read by a drain thread;
//! - files (`{file: path}` for stdin, stdout or stderr): opened *off the loop* (see
//!   [`crate::runtime::opener`]); the instance is `Starting` meanwhile;
//! - queues: the child's end of a direct pipe (made once per queue), or a new pipe to
//!   the queue's router (its other end is handed to the router once the process runs).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::Supervisor;
use super::instance::RouterPort;
use crate::event::InstanceId;
use crate::plan::{FdDirection, Input, Output, QueueId, Wiring};
use crate::runtime::opener::{FileOpens, OpenedFiles};
use crate::runtime::spawn::{self, ChildFd, SpawnSpec};

impl Supervisor {
    /// The files instance `id` needs opened before it can start.
    pub(super) fn files_to_open(&self, id: InstanceId) -> FileOpens {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let vars = self.vars(id);
        let mut opens = FileOpens::default();
        if let Input::File(t) = &stage.stdin {
            opens.stdin = Some(self.resolve_path(&t.render(&vars)));
        }
        let out = |o: &Output| match o {
            Output::File { path, append } => {
                Some((self.resolve_path(&path.render(&vars)), *append))
            }
            _ => None,
        };
        opens.stdout = out(&stage.stdout);
        opens.stderr = out(&stage.stderr);
        opens
    }

    /// Fill the descriptors of `spec` for instance `id`: the opened files, queue ends
    /// (new router pipes are collected in `router_ends`), and the log pipe (its read end
    /// in `log_read`).
    pub(super) fn wire(
        &mut self,
        id: InstanceId,
        mut files: OpenedFiles,
        spec: &mut SpawnSpec,
        router_ends: &mut Vec<(RouterPort, OwnedFd)>,
        log_read: &mut Option<OwnedFd>,
        out_read: &mut Option<OwnedFd>,
    ) -> io::Result<()> {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let (stdin, stdout, stderr, fds) = (
            stage.stdin.clone(),
            stage.stdout.clone(),
            stage.stderr.clone(),
            stage.fds.clone(),
        );
        let mut log_write: Option<OwnedFd> = None;
        if stdout == Output::Log || stderr == Output::Log {
            // One pipe for both streams keeps their relative order.
            let (r, w) = spawn::pipe()?;
            *log_read = Some(r);
            log_write = Some(w);
        }
        spec.stdin = match &stdin {
            // `foreach: {queue, batch}`: the item's block of records.
            _ if self.insts[id].block.is_some() => match &self.insts[id].block {
                Some(b) => ChildFd::Fd(b.stdin()?),
                None => ChildFd::Null,
            },
            Input::Null => ChildFd::Null,
            Input::Inherit => ChildFd::Inherit,
            Input::File(_) => files.stdin.take().map_or(ChildFd::Null, ChildFd::Fd),
            Input::Queue(q) => ChildFd::Fd(self.queue_end(*q, false, router_ends)?),
        };
        spec.stdout = if stdout == Output::Inherit && self.pass_stdout && stdin != Input::Inherit {
            // prun's stdout is a terminal: pass the output through (see `Sinks`). An
            // interactive stage (`stdin: inherit`) keeps the terminal itself.
            let (r, w) = spawn::pipe()?;
            *out_read = Some(r);
            ChildFd::Fd(w)
        } else {
            self.output_fd(
                &stdout,
                files.stdout.take(),
                log_write.as_ref(),
                router_ends,
            )?
        };
        spec.stderr = self.output_fd(
            &stderr,
            files.stderr.take(),
            log_write.as_ref(),
            router_ends,
        )?;
        for b in &fds {
            let fd = self.queue_end(b.queue, b.direction == FdDirection::Write, router_ends)?;
            spec.extra_fds.push((b.fd, fd));
        }
        Ok(())
    }

    fn output_fd(
        &mut self,
        out: &Output,
        file: Option<OwnedFd>,
        log: Option<&OwnedFd>,
        router_ends: &mut Vec<(RouterPort, OwnedFd)>,
    ) -> io::Result<ChildFd> {
        Ok(match out {
            Output::Null => ChildFd::Null,
            Output::Inherit => ChildFd::Inherit,
            Output::Log => match log {
                Some(fd) => ChildFd::Fd(fd.try_clone()?),
                None => ChildFd::Null,
            },
            Output::File { .. } => file.map_or(ChildFd::Null, ChildFd::Fd),
            Output::Queue(q) => ChildFd::Fd(self.queue_end(*q, true, router_ends)?),
        })
    }

    /// The child's end of queue `q`: a direct pipe end or a new pipe to the router.
    fn queue_end(
        &mut self,
        q: QueueId,
        writer: bool,
        router_ends: &mut Vec<(RouterPort, OwnedFd)>,
    ) -> io::Result<OwnedFd> {
        if self.plan.queues[q].wiring == Wiring::Routed {
            let (r, w) = spawn::pipe()?;
            let port = RouterPort {
                queue: q,
                writer,
                id: self.next_port,
            };
            self.next_port += 1;
            return Ok(if writer {
                router_ends.push((port, r));
                w
            } else {
                router_ends.push((port, w));
                r
            });
        }
        let qr = &mut self.queues[q];
        if !qr.direct_made {
            let (r, w) = spawn::pipe()?;
            // Best effort: a pipe stays at the kernel's default when the user's pipe
            // budget is spent.
            crate::runtime::router::sys::grow_pipe(
                w.as_raw_fd(),
                crate::runtime::router::DIRECT_PIPE,
            );
            qr.direct_read = Some(r);
            qr.direct_write = Some(w);
            qr.direct_made = true;
        }
        let slot = if writer {
            &mut qr.direct_write
        } else {
            &mut qr.direct_read
        };
        // The same instance may name one direct queue on two ports (stdout and stderr):
        // later ports of the same spawn get a duplicate, taken below.
        match slot.take() {
            Some(fd) => {
                let dup = fd.try_clone()?;
                // Keep one copy while this spawn is being built, for a second port.
                *slot = Some(dup);
                Ok(fd)
            }
            None => {
                // The end was already used up (a second run of a direct endpoint): give a
                // pipe whose other side is closed, so the child sees EOF / EPIPE.
                let (r, w) = spawn::pipe()?;
                Ok(if writer { w } else { r })
            }
        }
    }
}
