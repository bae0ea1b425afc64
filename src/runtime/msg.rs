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

/// Steering from another terminal (`prun stop|restart|signal`, SPEC 6.1): the ops
/// server turns a request into this message; the loop acts and answers on `reply`
/// (the server waits for the answer, never the loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steer {
    /// The whole pipeline, as if prun got SIGINT (drain order, exit 130).
    StopAll,
    /// Stop the instances of these stages (drain steps; no restart).
    Stop(Vec<String>),
    /// Stop the running instances of these stages and start them again at once.
    Restart(Vec<String>),
    /// Send a signal to the process groups of these stages' running instances.
    Signal(i32, Vec<String>),
}

#[derive(Debug)]
pub struct SteerRequest {
    pub steer: Steer,
    /// What was done (a line for the user), or why nothing was.
    pub reply: crossbeam_channel::Sender<Result<String, String>>,
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
    /// A request from `prun stop|restart|signal`.
    Steer(SteerRequest),
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
