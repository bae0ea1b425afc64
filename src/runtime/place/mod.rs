//! Where an instance runs: the one seam between *what* to run (a [`SpawnSpec`], pure
//! data) and *which machine* runs it.
//!
//! The supervisor always starts, owns and reaps a local process: the stage itself when
//! it runs here, or the client of the engine that runs it elsewhere (`ssh` over the
//! host's shared connection, `srun`; see [`remote`]). Everything that differs between
//! places goes through [`Places`]: how a command is launched, how a signal reaches the
//! instance's whole process group (a local `killpg`, or a stop command sent over the
//! engine), and how the local process's end translates into the instance's end (an
//! engine client's own failure is not the stage's). Nothing else in the supervisor asks
//! where an instance runs.
//!
//! The hosts themselves (free slots, each SSH host's shared connection) are
//! [`crate::remote::place::Hosts`], pure bookkeeping that this seam drives.

pub mod remote;

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::spawn::{self, ChildFd, SpawnSpec};
use crate::event::{ProcessEnd, signal_name};
use crate::plan::{HostId, HostPlan};
use crate::remote::place::{Hosts, Target};
use crate::remote::{self as wire, ClientExit, Ended, Seen, Started};
pub use remote::{Pump, PumpMsg};

/// A place instances can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// This machine.
    Local,
    /// A host of `hosts:` reached through the OpenSSH client.
    Ssh(HostId),
    /// A host of `hosts:` that is a Slurm cluster: one `srun` step per instance.
    Slurm(HostId),
}

impl Place {
    /// The host under `hosts:`, None for this machine.
    pub fn host(self) -> Option<HostId> {
        match self {
            Place::Local => None,
            Place::Ssh(h) | Place::Slurm(h) => Some(h),
        }
    }
}

/// A launched instance: the local process prun reaps, and what the place needs to
/// reach the instance later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launched {
    /// The local process (its own process group leader: pid = pgid): the stage, or
    /// the engine client.
    pub pid: i32,
    /// What the remote wrapper told so far (None for a local instance).
    pub remote: Option<Box<RemoteRun>>,
}

/// A remote instance as its pump reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRun {
    /// The wrapper's start line: the remote group (for a stop), the node.
    pub started: Option<Started>,
    /// The wrapper's end line.
    pub ended: Option<Ended>,
    /// Everything the pump saw, once the client's stderr ended.
    pub seen: Option<Seen>,
    /// prun signalled the local client before the remote side started (a stop while
    /// the engine connected or the job was queued): its end is prun's doing, not the
    /// engine's failure.
    pub stopped_early: bool,
}

impl RemoteRun {
    /// What is known, for [`wire::classify`]: the pump's final view, or (when the
    /// client's stderr never ended) the reports that came.
    pub fn view(&self) -> Seen {
        self.seen.clone().unwrap_or_else(|| Seen {
            started: self.started.clone(),
            ended: self.ended.clone(),
            ..Seen::default()
        })
    }
}

/// How an instance's run ended, as the place sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The instance's own process ended like this.
    Ended(ProcessEnd),
    /// The engine could not run it (host unreachable, authentication, no such
    /// partition, the command not found there): the message says why; `code` is the
    /// pipeline exit code it stands for (the client's: ssh 255, the wrapper's 127 for
    /// a command not found).
    EngineFailed { error: String, code: i32 },
    /// It ran, then the engine lost it (connection dropped, node lost): the message
    /// names the host.
    Lost(String),
}

/// What a remote launch needs beyond the [`SpawnSpec`].
#[derive(Debug, Clone)]
pub struct RemoteOpts {
    /// The instance's name (`crunch.3`), for Slurm's job name.
    pub name: String,
    /// The stop signal, sent by the wrapper when prun or the connection is gone.
    pub stop_signal: i32,
    /// Between that signal and SIGKILL (the stage's `stop.timeout`, at most 5 s).
    pub grace: Duration,
    /// SSH: forward this local control socket to the instance's `PRUN_CTL`.
    pub ctl_forward: Option<PathBuf>,
}

/// Every place of one run: this machine and the hosts of `hosts:`.
#[derive(Debug)]
pub struct Places {
    hosts: Hosts,
}

impl Places {
    /// `control_dir`: prun's private run directory (the shared connections' sockets).
    /// Inside a Slurm allocation (`SLURM_JOB_ID`), steps run in it.
    pub fn new(plan: &[HostPlan], run_id: &str, control_dir: &Path) -> Places {
        let allocation = std::env::var("SLURM_JOB_ID").ok().filter(|j| !j.is_empty());
        Places {
            hosts: Hosts::new(plan, run_id, control_dir, allocation),
        }
    }

    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    pub fn hosts_mut(&mut self) -> &mut Hosts {
        &mut self.hosts
    }

    /// The place of an instance on host `h`.
    pub fn on(&self, h: HostId) -> Place {
        match self.hosts.target(h) {
            Target::Ssh(_) => Place::Ssh(h),
            Target::Slurm(_) => Place::Slurm(h),
        }
    }

    /// The host's name under `hosts:` (None for this machine), for the report.
    pub fn host_name(&self, place: Place) -> Option<&str> {
        place.host().map(|h| self.hosts.name(h))
    }

    /// How messages name the engine and host: `ssh to h2`, `srun on hpc`.
    fn engine(&self, place: Place) -> String {
        match place {
            Place::Local => "this machine".into(),
            Place::Ssh(h) => format!("ssh to {}", self.hosts.name(h)),
            Place::Slurm(h) => format!("srun on {}", self.hosts.name(h)),
        }
    }

    /// Start `spec` there. The local process leads its own process group; when
    /// `guardian` is given, that group is registered with it before exec. A remote
    /// instance also returns its pump, to start right away (it reads the client's
    /// stderr: the client blocks when nobody does).
    pub fn launch(
        &self,
        place: Place,
        spec: SpawnSpec,
        guardian: Option<RawFd>,
        opts: Option<RemoteOpts>,
    ) -> io::Result<(Launched, Option<Pump>)> {
        let Some(h) = place.host() else {
            let pid = spawn::spawn(spec, guardian)?;
            return Ok((Launched { pid, remote: None }, None));
        };
        if !spec.extra_fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "extra descriptors (`fds`) are not carried to other hosts",
            ));
        }
        let opts = opts.unwrap_or(RemoteOpts {
            name: String::new(),
            stop_signal: libc::SIGTERM,
            grace: remote::MAX_DEATH_GRACE,
            ctl_forward: None,
        });
        let lossy = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
        let mut argv = vec![lossy(&spec.program)];
        argv.extend(spec.args.iter().map(|a| lossy(a)));
        let inst = remote::RemoteInstance {
            host: h,
            name: opts.name,
            argv,
            env: spec.env.iter().map(|(k, v)| (lossy(k), lossy(v))).collect(),
            cwd: spec.cwd.as_deref().map(|c| lossy(c.as_os_str())),
            stop_signal: bare_signal_name(opts.stop_signal),
            ctl_forward: opts.ctl_forward,
            grace: opts.grace,
        };
        let foreground = spec.foreground;
        let mut l = remote::launch(
            &self.hosts,
            self.hosts.run_id(),
            &inst,
            spec.stdin,
            spec.stdout,
            spec.stderr,
        )?;
        l.spec.foreground = foreground;
        let pid = spawn::spawn(l.spec, guardian)?;
        Ok((
            Launched {
                pid,
                remote: Some(Box::default()),
            },
            Some(l.pump),
        ))
    }

    /// Send `sig` to every process of the instance (its whole process group). A
    /// remote instance that has started is reached by a command over its engine (the
    /// stop command of the wrapper, `scancel`): that command is returned, for the
    /// caller to spawn. Before the remote side started (or for SIGCONT, which only a
    /// suspended local client needs), the local client's group gets the signal: a
    /// client that ends takes the remote instance with it (the wrapper sees its
    /// connection go and stops it).
    pub fn signal(&self, place: Place, launched: &Launched, sig: i32) -> Option<SpawnSpec> {
        let Some(h) = place.host() else {
            signal_group(launched.pid, sig);
            return None;
        };
        let started = launched.remote.as_ref().and_then(|r| r.started.as_ref());
        match started {
            Some(s) if sig != libc::SIGCONT && (s.pgid > 1 || s.job.is_some()) => Some(
                remote::signal_spec(&self.hosts, h, s, &bare_signal_name(sig)),
            ),
            _ => {
                signal_group(launched.pid, sig);
                None
            }
        }
    }

    /// What the end of the local process means for the instance.
    pub fn outcome(&self, place: Place, launched: &Launched, end: ProcessEnd) -> Outcome {
        if place == Place::Local {
            return Outcome::Ended(end);
        }
        let seen = launched
            .remote
            .as_ref()
            .map(|r| r.view())
            .unwrap_or_default();
        let client = ClientExit {
            code: end.code(),
            signal: end.signal(),
        };
        let engine = self.engine(place);
        match wire::classify(&seen, client, &engine) {
            wire::Outcome::Exited(c) => Outcome::Ended(ProcessEnd::Exited(c)),
            wire::Outcome::Signaled { name, .. } => match signal_number(&name) {
                Some(n) => Outcome::Ended(ProcessEnd::Signaled(n)),
                None => Outcome::Lost(format!(
                    "{engine}: killed by signal {name}, which this machine does not know"
                )),
            },
            wire::Outcome::CouldNotStart(error) => Outcome::EngineFailed {
                error,
                code: match end.code() {
                    Some(c) if c != 0 => c,
                    _ => 1,
                },
            },
            wire::Outcome::Lost(m) => Outcome::Lost(m),
        }
    }

    /// The Slurm sweeper of this run: spawn it without the guardian and without
    /// PDEATHSIG (it must outlive a SIGKILLed prun) and keep the returned descriptor
    /// for the whole run; closing it (or prun's death) starts the sweep.
    pub fn sweeper(&self) -> io::Result<(SpawnSpec, std::os::fd::OwnedFd)> {
        let allocation = self.hosts.allocation();
        remote::sweeper_spec(self.hosts.run_id(), allocation.as_deref())
    }

    /// A host's shared connection: the master's command, its stderr captured.
    pub fn master_spec(argv: Vec<String>) -> io::Result<(SpawnSpec, std::fs::File)> {
        remote::helper_spec(argv)
    }

    /// The commands that end the run on the hosts (remove the run directories), each
    /// with its stderr discarded.
    pub fn cleanup_specs(&self) -> Vec<SpawnSpec> {
        self.hosts
            .cleanup_commands()
            .into_iter()
            .map(|argv| {
                let mut s = SpawnSpec::new(argv.into_iter().map(Into::into).collect());
                s.pdeathsig = Some(libc::SIGKILL);
                s.stderr = ChildFd::Null;
                s
            })
            .collect()
    }
}

/// `TERM` for SIGTERM (the remote side's names have no `SIG`).
fn bare_signal_name(sig: i32) -> String {
    let name = signal_name(sig);
    name.strip_prefix("SIG").unwrap_or(&name).to_string()
}

/// The local number of a signal the remote side names (`TERM`, `KILL`).
fn signal_number(name: &str) -> Option<i32> {
    format!("SIG{name}")
        .parse::<Signal>()
        .ok()
        .map(|s| s as i32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_cross_both_ways() {
        assert_eq!(bare_signal_name(libc::SIGTERM), "TERM");
        assert_eq!(signal_number("KILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("USR1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("NOPE"), None);
    }

    #[test]
    fn a_remote_end_is_the_wrappers_report_not_the_clients_exit() {
        let places = Places::new(
            &[HostPlan {
                name: "h2".into(),
                engine: crate::plan::Engine::Ssh {
                    destination: "h2".into(),
                    port: None,
                    options: vec![],
                },
                slots: Some(1),
                cwd: None,
            }],
            "r",
            Path::new("/tmp/x"),
        );
        let place = places.on(0);
        assert_eq!(place, Place::Ssh(0));
        let mut l = Launched {
            pid: 42,
            remote: Some(Box::default()),
        };
        // no start line, ssh exit 255: the engine's failure
        assert!(matches!(
            places.outcome(place, &l, ProcessEnd::Exited(255)),
            Outcome::EngineFailed { code: 255, .. }
        ));
        let r = l.remote.as_mut().unwrap();
        r.started = Some(Started {
            pgid: 7,
            ..Started::default()
        });
        // started, no end line: lost, and the message names the host
        assert!(matches!(
            places.outcome(place, &l, ProcessEnd::Exited(255)),
            Outcome::Lost(m) if m.contains("ssh to h2")
        ));
        l.remote.as_mut().unwrap().ended = Some(Ended::Signal {
            name: "TERM".into(),
            core: false,
        });
        assert_eq!(
            places.outcome(place, &l, ProcessEnd::Exited(255)),
            Outcome::Ended(ProcessEnd::Signaled(libc::SIGTERM))
        );
        l.remote.as_mut().unwrap().ended = Some(Ended::Exit(255));
        assert_eq!(
            places.outcome(place, &l, ProcessEnd::Exited(255)),
            Outcome::Ended(ProcessEnd::Exited(255))
        );
    }
}
