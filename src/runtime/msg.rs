//! Messages into the supervisor loop from the threads around it (signals, log drains,
//! probes, file openers, remote instances' pumps, hosts' connections). A leaf module:
//! the helpers that send and the loop that receives both depend on it, and on nothing
//! of each other.

use super::opener::OpenedFiles;
use super::place::PumpMsg;
use crate::event::InstanceId;
use crate::plan::HostId;

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
    /// The pump of a remote instance's engine client (run `generation`) reported.
    Pump {
        id: InstanceId,
        generation: u64,
        msg: PumpMsg,
    },
    /// A host's shared connection (master `pid`) is up: its control socket appeared.
    HostUp { host: HostId, pid: i32 },
    /// A host's master `pid` ended (its stderr closed), with what it wrote.
    HostDown {
        host: HostId,
        pid: i32,
        message: String,
    },
}
