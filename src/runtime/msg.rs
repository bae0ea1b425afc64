//! Messages into the supervisor loop from the threads around it (signals, log drains,
//! probes, file openers). A leaf module: the helpers that send and the loop that receives both
//! depend on it, and on nothing of each other.

use super::opener::OpenedFiles;
use crate::event::InstanceId;

/// What a matching log line means to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineAction {
    Ready,
    SetEvent(usize),
}

/// Messages into the loop.
#[derive(Debug)]
pub enum Msg {
    /// SIGINT, SIGTERM, SIGHUP, SIGTSTP or SIGCONT received by prun.
    Signal(i32),
    /// SIGCHLD: some child may be waitable.
    Child,
    /// A log line matched a probe or trigger of this run (`generation`) of an instance.
    Line {
        id: InstanceId,
        generation: u64,
        action: LineAction,
    },
    /// A readiness probe run off the loop (TCP connect, file exists) passed.
    ProbeOk { id: InstanceId, generation: u64 },
    /// A log drain thread ended.
    DrainDone,
    /// prun's descendants, read off the loop (`scanner`): (pid, parent, group).
    Descendants(Vec<(i32, i32, i32)>),
    /// The files of a start (`token`) were opened off the loop, or could not be.
    Opened {
        id: InstanceId,
        token: u64,
        files: std::io::Result<OpenedFiles>,
    },
}
