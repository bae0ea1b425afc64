//! A remote instance as a local process: the engine client (`ssh` over the host's shared
//! connection, or `srun`) running the wrapper ([`crate::remote`]), as a [`SpawnSpec`] the
//! runtime spawns like any other command, plus the pump that takes the wrapper's reports
//! out of the client's stderr on its way to the instance's real stderr destination.
//!
//! Engine clients get `PR_SET_PDEATHSIG` (SIGKILL for ssh: the remote wrapper sees its
//! connection go and ends the remote group; SIGTERM for srun: it cancels its step), so
//! they die with prun even when nothing else could kill them.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;
use std::time::Duration;

use super::super::spawn::{self, ChildFd, SpawnSpec};
use crate::plan::HostId;
use crate::remote::place::{Hosts, Target};
use crate::remote::{
    self as wire, Demux, Ended, EngineLines, Group, Report, RunSpec, Seen, Started,
};

/// One remote instance, rendered (`${run.dir}` as [`crate::remote::RUN_DIR_MARK`]).
#[derive(Debug, Clone)]
pub struct RemoteInstance {
    pub host: HostId,
    /// The instance's name (`crunch.3`), for Slurm's job name.
    pub name: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The stage's `cwd` as rendered: absolute, or relative to the host's `cwd` (or to
    /// the remote login directory).
    pub cwd: Option<String>,
    /// The stop signal's name without `SIG` (`TERM`).
    pub stop_signal: String,
    /// Give the instance `prun ctl` (SSH hosts): this local control socket is forwarded
    /// to a remote one named in the instance's `PRUN_CTL`, and the client is put on its
    /// PATH. Ignored for Slurm (the engine cannot carry it).
    pub ctl_forward: Option<std::path::PathBuf>,
    /// Between the stop signal and SIGKILL when the wrapper ends an instance whose
    /// prun or connection is gone (the stage's `stop.timeout`, at most 5 s).
    pub grace: Duration,
}

/// The engine client to spawn, and the pump to start right after.
pub struct Launch {
    pub spec: SpawnSpec,
    pub nonce: String,
    pub pump: Pump,
}

/// What the pump tells the runtime.
#[derive(Debug)]
pub enum PumpMsg {
    /// The wrapper's start line (the remote group, node, Slurm job).
    Started(Started),
    /// The wrapper's end line: how the instance ended.
    Ended(Ended),
    /// The client's stderr ended: everything the demux saw.
    Done(Seen),
}

/// Reads the engine client's stderr: reports out, everything else to `dest`.
pub struct Pump {
    read: OwnedFd,
    dest: ChildFd,
    nonce: String,
    engine: EngineLines,
}

impl Pump {
    /// Start the pump thread (after the spawn, so the client's end of the pipe is
    /// closed in prun and the pump sees EOF when the client ends).
    pub fn start(
        self,
        thread_name: String,
        mut tell: impl FnMut(PumpMsg) + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        let Pump {
            read,
            dest,
            nonce,
            engine,
        } = self;
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut input = File::from(read);
                let mut out: Box<dyn io::Write> = match dest {
                    ChildFd::Fd(fd) => Box::new(File::from(fd)),
                    ChildFd::Null => Box::new(io::sink()),
                    // prun's own stderr, through a duplicate
                    ChildFd::Inherit => match nix::unistd::dup(std::io::stderr()) {
                        Ok(fd) => Box::new(File::from(fd)),
                        Err(_) => Box::new(io::sink()),
                    },
                };
                let seen = Demux::filtering(&nonce, engine).run(&mut input, &mut out, |r| {
                    match r {
                        Report::Started(s) => tell(PumpMsg::Started(s.clone())),
                        Report::Ended(e) => tell(PumpMsg::Ended(e.clone())),
                        // Comes with `Done`, in the demux's view.
                        Report::Dir(_) => {}
                    }
                });
                drop(out);
                tell(PumpMsg::Done(seen));
            })
    }
}

/// Longest grace the wrapper gives a remote instance whose prun is gone.
pub const MAX_DEATH_GRACE: Duration = Duration::from_secs(5);

fn engine_spec(argv: Vec<String>, pdeathsig: i32) -> SpawnSpec {
    let mut spec = SpawnSpec::new(argv.into_iter().map(Into::into).collect());
    spec.pdeathsig = Some(pdeathsig);
    spec
}

/// The engine client for `inst` on its host, with the instance's stdin and stdout (a
/// pipe, a file, null) and its stderr destination behind the pump.
pub fn launch(
    hosts: &Hosts,
    run_id: &str,
    inst: &RemoteInstance,
    stdin: ChildFd,
    stdout: ChildFd,
    stderr: ChildFd,
) -> io::Result<Launch> {
    let host = hosts.plan(inst.host);
    let cwd = match (&host.cwd, &inst.cwd) {
        (_, Some(c)) if c.starts_with('/') => c.clone(),
        (Some(base), Some(c)) => format!("{}/{c}", base.trim_end_matches('/')),
        (Some(base), None) => base.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => String::new(),
    };
    let nonce = wire::random_token();
    let target = hosts.target(inst.host);
    let run = RunSpec {
        nonce: nonce.clone(),
        run_id: run_id.to_string(),
        group: match target {
            Target::Ssh(_) => Group::Own,
            Target::Slurm(_) => Group::Same,
        },
        death_signal: inst.stop_signal.clone(),
        grace_ms: inst.grace.min(MAX_DEATH_GRACE).as_millis() as u64,
        cwd,
        ctl_client: matches!(target, Target::Ssh(_)) && inst.ctl_forward.is_some(),
        env: inst.env.clone(),
        argv: inst.argv.clone(),
    };
    let mut run = run;
    let forward = match (target, &inst.ctl_forward) {
        (Target::Ssh(_), Some(local)) => {
            let remote = wire::remote_ctl_socket(&nonce);
            run.env.retain(|(k, _)| k != "PRUN_CTL");
            run.env.push(("PRUN_CTL".into(), remote.clone()));
            Some((remote, local.clone()))
        }
        _ => None,
    };
    let mut spec = match target {
        Target::Ssh(t) => {
            let line = wire::shell_line(&run.words());
            let argv = match &forward {
                Some((remote, local)) => t.session_forwarding_argv(line, remote, local),
                None => t.session_argv(line),
            };
            engine_spec(argv, libc::SIGKILL)
        }
        Target::Slurm(t) => engine_spec(
            t.srun_argv(
                &wire::slurm::job_name(run_id, &inst.name),
                wire::argv(&run.words()),
            ),
            libc::SIGTERM,
        ),
    };
    let (read, write) = spawn::pipe()?;
    spec.stdin = stdin;
    spec.stdout = stdout;
    spec.stderr = ChildFd::Fd(write);
    Ok(Launch {
        spec,
        nonce: nonce.clone(),
        pump: Pump {
            read,
            dest: stderr,
            nonce,
            engine: match target {
                Target::Ssh(_) => EngineLines::Keep,
                Target::Slurm(_) => EngineLines::Slurm,
            },
        },
    })
}

/// The command that sends `signal` (a name without `SIG`) to a started remote instance.
pub fn signal_spec(hosts: &Hosts, h: HostId, started: &Started, signal: &str) -> SpawnSpec {
    let argv = match hosts.target(h) {
        Target::Ssh(t) => t.session_argv(wire::shell_line(&wire::stop_words(
            started.pgid,
            started.start,
            signal,
        ))),
        Target::Slurm(t) => t.signal_argv(
            started.job.as_deref().unwrap_or("0"),
            started.step.as_deref(),
            signal,
        ),
    };
    engine_spec(argv, libc::SIGKILL)
}

/// The Slurm sweeper (see [`crate::remote::slurm`]): spawn it without the guardian and without
/// PDEATHSIG — it must outlive prun — and keep the returned write end open for the
/// whole run; closing it (or prun's death) starts the sweep.
pub fn sweeper_spec(run_id: &str, allocation: Option<&str>) -> io::Result<(SpawnSpec, OwnedFd)> {
    let (read, write) = spawn::pipe()?;
    let mut spec = SpawnSpec::new(vec![
        "/bin/sh".into(),
        "-c".into(),
        wire::slurm::sweep_script(run_id, allocation).into(),
    ]);
    spec.stdin = ChildFd::Fd(read);
    Ok((spec, write))
}

/// An engine-side helper command (master, cleanup, master exit) with its stderr
/// captured in a pipe for the failure message.
pub fn helper_spec(argv: Vec<String>) -> io::Result<(SpawnSpec, File)> {
    let (read, write) = spawn::pipe()?;
    let mut spec = engine_spec(argv, libc::SIGKILL);
    spec.stderr = ChildFd::Fd(write);
    Ok((spec, File::from(read)))
}
