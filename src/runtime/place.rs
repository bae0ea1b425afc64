//! Where an instance runs: the one seam between *what* to run (a [`SpawnSpec`], pure
//! data) and *which machine* runs it.
//!
//! The supervisor always starts, owns and reaps a local process: the stage itself when
//! it runs here, or the client of the engine that runs it elsewhere. Everything that
//! differs between places goes through [`Place`]: how a command is launched, how a
//! signal reaches the instance's whole process group, and how the local process's end
//! translates into the instance's end (an engine client's own failure is not the
//! stage's). Nothing else in the supervisor asks where an instance runs.

use std::io;
use std::os::fd::RawFd;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::spawn::{self, SpawnSpec};
use crate::event::ProcessEnd;

/// A place instances can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// This machine.
    Local,
}

/// A launched instance: the local process prun reaps, and what the place needs to
/// reach the instance later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// The local process (its own process group leader: pid = pgid).
    pub pid: i32,
}

/// How an instance's run ended, as the place sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance's own process ended like this.
    Ended(ProcessEnd),
    /// The engine could not run it (host unreachable, authentication, no such
    /// partition): the message says why.
    EngineFailed(String),
}

impl Place {
    /// Start `spec` there. The local process leads its own process group; when
    /// `guardian` is given, that group is registered with it before exec.
    pub fn launch(&self, spec: SpawnSpec, guardian: Option<RawFd>) -> io::Result<Launched> {
        match self {
            Place::Local => spawn::spawn(spec, guardian).map(|pid| Launched { pid }),
        }
    }

    /// Send `sig` to every process of the instance (its whole process group).
    pub fn signal(&self, launched: &Launched, sig: i32) {
        match self {
            Place::Local => signal_group(launched.pid, sig),
        }
    }

    /// What the end of the local process means for the instance.
    pub fn outcome(&self, _launched: &Launched, end: ProcessEnd) -> Outcome {
        match self {
            Place::Local => Outcome::Ended(end),
        }
    }

    /// The host name under `hosts:` (None for this machine), for the report.
    pub fn host(&self) -> Option<&str> {
        match self {
            Place::Local => None,
        }
    }
}

/// Signal a whole local process group; it may already be gone.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    let Ok(sig) = Signal::try_from(sig) else {
        return;
    };
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// True while at least one process is in the local group (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}
