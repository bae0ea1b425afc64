//! Instances on other hosts (SPEC 3.5), as the loop sees them. The mechanics (command
//! lines, the wrapper, classifying an end) are [`Places`](crate::runtime::place::Places)';
//! this room keeps the run's bookkeeping and never waits:
//!
//! - placement: a stage `on:` hosts needs a free slot on one of them (the most free
//!   slots, the first listed on a tie); the slot is taken with its permits and given
//!   back when the run ends;
//! - connections: an instance alone on an SSH host connects on its own (as fast as a
//!   plain `ssh host cmd`); when an instance finds others running there, the host's
//!   shared connection (`ssh -M`) is spawned and a thread watches it (its control
//!   socket appearing → `HostUp`; its stderr closing → `HostDown` with what it
//!   wrote). Instances wait for it in `Starting`; if it fails they end `could not
//!   start` with ssh's message, and the next instance tries again;
//! - reports: each engine client's pump sends the wrapper's start line (the remote
//!   group, the Slurm node), its end line, and `Done` when the client's stderr ends.
//!   The client's exit is judged once `Done` came (or [`PUMP_GRACE`] after the exit,
//!   with what came), so the exact remote status is never raced by the reap;
//! - signals: a stop signal reaches a started remote instance by a command over its
//!   engine; if that command fails, the local client is signalled instead (ending it
//!   ends the remote side: the wrapper sees its connection go);
//! - `ready: {cmd}` and `stop: {cmd}` of a remote stage run on its host too;
//! - `prun ctl` on SSH hosts: each instance gets its own control socket in the run
//!   directory, forwarded by ssh to the host; requests on it speak for the instance
//!   (the peer is ssh, so credentials cannot tell);
//! - Slurm: one sweeper per run (started with the first Slurm instance) cancels what
//!   is left of the run's jobs when prun ends, however it ends;
//! - the end of the run: the hosts' run directories removed, the sweep, the shared
//!   connections closed (bounded waits, after the loop).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::instance::Life;
use super::{Owner, Supervisor};
use crate::event::{Event, InstanceId, Level, ProcessEnd, State};
use crate::plan::HostId;
use crate::remote::DirEnd;
use crate::remote::place::{Conn, Connect};
use crate::runtime::msg::Msg;
use crate::runtime::opener::{FileOpens, OpenedFiles};
use crate::runtime::place::{
    Place, Places, Pump, PumpMsg, RemoteOpts, group_alive, remote::MAX_DEATH_GRACE, signal_group,
};
use crate::runtime::spawn::{self, SpawnSpec};

/// How long a remote instance's end waits, after its engine client exited, for the
/// client's stderr to end (the wrapper's end line is the last thing in it).
pub(super) const PUMP_GRACE: Duration = Duration::from_secs(2);

/// Pipeline exit code of an instance whose engine failed (ssh's own code).
const ENGINE_FAILED: i32 = 255;

/// An instance whose start waits for its host's connection.
#[derive(Debug)]
struct Parked {
    host: HostId,
    token: u64,
    files: OpenedFiles,
}

#[derive(Debug, Default)]
pub(super) struct RemoteRt {
    /// Instances holding a slot on a host: from their start check to the end of the
    /// run.
    placed: HashMap<InstanceId, HostId>,
    parked: HashMap<InstanceId, Parked>,
    /// Engine clients that exited before their pump's last word: (pid, end, until).
    exits: HashMap<InstanceId, (i32, ProcessEnd, Instant)>,
    /// The Slurm sweeper and the pipe whose end starts its sweep.
    sweeper: Option<(i32, OwnedFd)>,
    sweeper_failed: bool,
    /// Instances that have their own control socket.
    ctl_sockets: HashSet<InstanceId>,
}

impl Supervisor {
    /// The host slot of a start check: `Some(None)` for a stage on this machine,
    /// `Some(Some(h))` when host `h` has a free slot, `None` when every listed host
    /// is full (wait).
    pub(super) fn host_check(&self, id: InstanceId) -> Option<Option<HostId>> {
        let on = &self.plan.stages[self.insts[id].info.stage].on;
        if on.is_empty() {
            return Some(None);
        }
        self.places.hosts().choose(on).map(Some)
    }

    /// The start check passed: the instance takes its slot on `h`.
    pub(super) fn place_instance(&mut self, id: InstanceId, h: HostId) {
        self.unplace(id);
        self.places.hosts_mut().take(h);
        self.remote.placed.insert(id, h);
    }

    /// The run is over (or never began): its slot is free again, and its own control
    /// socket goes (a restart makes a new one; a foreach of many items must not keep
    /// one per item).
    pub(super) fn unplace(&mut self, id: InstanceId) {
        if let Some(h) = self.remote.placed.remove(&id) {
            self.places.hosts_mut().release(h);
        }
        if self.remote.ctl_sockets.remove(&id)
            && let Some(server) = self.ctl.as_mut()
        {
            server.close_own(id as u64);
        }
    }

    /// Where the instance's next (or current) run goes.
    pub(super) fn place_of(&self, id: InstanceId) -> Place {
        if let Some(run) = self.insts[id].run() {
            return run.place;
        }
        match self.remote.placed.get(&id) {
            Some(&h) => self.places.on(h),
            None => Place::Local,
        }
    }

    /// What a remote launch needs beyond its command: on an SSH host, the instance's
    /// own control socket (made once per instance), which ssh forwards to the host.
    pub(super) fn remote_opts(&mut self, id: InstanceId) -> RemoteOpts {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let mut opts = RemoteOpts {
            name: self.insts[id].info.name.clone(),
            stop_signal: stage.stop.signal,
            grace: stage.stop.timeout.min(MAX_DEATH_GRACE),
            ctl_forward: None,
        };
        if let Place::Ssh(_) = self.place_of(id) {
            opts.ctl_forward = self.instance_ctl_socket(id);
        }
        opts
    }

    /// `<run dir>/ctl-<id>.sock`: requests on it speak for instance `id`.
    fn instance_ctl_socket(&mut self, id: InstanceId) -> Option<PathBuf> {
        let path = self.run_dir.join(format!("ctl-{id}.sock"));
        if self.remote.ctl_sockets.contains(&id) {
            return Some(path);
        }
        let server = self.ctl.as_mut()?;
        match server.listen_for(&path, id as u64) {
            Ok(()) => {
                self.remote.ctl_sockets.insert(id);
                Some(path)
            }
            Err(e) => {
                self.warn(format!(
                    "{}: `prun ctl` will not reach prun from its host ({e})",
                    self.insts[id].info.name
                ));
                None
            }
        }
    }

    /// The host's engine, ready for instance `id`? Returns its files when it can
    /// launch now; otherwise the instance waits for the connection (`Starting`) or has
    /// ended (`could not start`).
    pub(super) fn connect_for(
        &mut self,
        id: InstanceId,
        h: HostId,
        files: OpenedFiles,
    ) -> Option<OpenedFiles> {
        if matches!(self.places.on(h), Place::Slurm(_)) {
            self.ensure_sweeper();
            return Some(files);
        }
        // An instance alone on its host needs no shared connection: its client
        // connects on its own, as fast as a plain `ssh host cmd`. The shared connection
        // comes when instances meet there (stops and the cleanup go over it when it
        // is up, on a connection of their own when not).
        if matches!(self.places.hosts().conn(h), Conn::Idle) && self.places.hosts().running(h) <= 1
        {
            return Some(files);
        }
        let connect = self
            .places
            .hosts_mut()
            .connect(h, |p: &std::path::Path| p.exists());
        let failed = match connect {
            Connect::Ready => return Some(files),
            Connect::Wait => None,
            Connect::Failed(m) => Some(m),
            Connect::Spawn(argv) => {
                self.spawn_master(h, argv);
                match self.places.hosts().conn(h) {
                    Conn::Failed(m) => Some(m.clone()),
                    _ => None,
                }
            }
        };
        match failed {
            Some(error) => {
                self.places.hosts_mut().retry(h);
                self.engine_failed(id, error);
            }
            None => {
                self.next_token += 1;
                let token = self.next_token;
                self.remote.parked.insert(
                    id,
                    Parked {
                        host: h,
                        token,
                        files,
                    },
                );
                self.insts[id].life = Life::Starting {
                    token,
                    opens: FileOpens::default(),
                };
            }
        }
        None
    }

    fn engine_failed(&mut self, id: InstanceId, error: String) {
        self.release_terminal(id);
        self.insts[id].start_error_code = ENGINE_FAILED;
        self.finish_run(id, State::CouldNotStart { error });
    }

    /// Spawn host `h`'s shared connection and the thread that watches it.
    fn spawn_master(&mut self, h: HostId, argv: Vec<String>) {
        let name = self.places.hosts().name(h).to_string();
        let spawned = Places::master_spec(argv)
            .and_then(|(spec, stderr)| spawn::spawn(spec, self.guardian_fd()).map(|p| (p, stderr)));
        match spawned {
            Ok((pid, stderr)) => {
                self.owners.insert(pid, Owner::Master);
                self.places.hosts_mut().master_spawned(h, Ok(pid));
                let socket = self.places.hosts().control_path(h).unwrap_or_default();
                let tx = self.msg_tx.clone();
                let watcher = std::thread::Builder::new()
                    .name(format!("prun-ssh-{name}"))
                    .spawn(move || watch_master(h, pid, stderr, socket, tx));
                if let Err(e) = watcher {
                    // Nobody would say when it is up: end it, and say why.
                    signal_group(pid, libc::SIGKILL);
                    self.places
                        .hosts_mut()
                        .master_exited(pid, &format!("ssh to {name}: {e}"));
                }
            }
            Err(e) => self
                .places
                .hosts_mut()
                .master_spawned(h, Err(format!("ssh to {name}: cannot run ssh: {e}"))),
        }
    }

    /// Host `h`'s master `pid` is connected: start what waited for it.
    pub(super) fn on_host_up(&mut self, h: HostId, pid: i32) {
        if !matches!(self.places.hosts().conn(h), Conn::Connecting { pid: p } if *p == pid) {
            return;
        }
        self.places
            .hosts_mut()
            .connect(h, |_: &std::path::Path| true);
        for (id, parked) in self.take_parked(h) {
            self.launch(id, parked.files);
        }
    }

    /// Host `h`'s master `pid` ended: what waited for it could not start; the next
    /// instance tries again. (Instances running over it end with their clients.)
    pub(super) fn on_host_down(&mut self, h: HostId, pid: i32, message: String) {
        let Some((_, was_up)) = self.places.hosts_mut().master_exited(pid, &message) else {
            return;
        };
        let error = match self.places.hosts().conn(h) {
            Conn::Failed(m) => m.clone(),
            _ => format!(
                "ssh to {}: the connection ended",
                self.places.hosts().name(h)
            ),
        };
        if was_up && self.shutdown.is_none() {
            self.notice(
                Level::Warning,
                format!(
                    "the connection to {} ended: {error}",
                    self.places.hosts().name(h)
                ),
            );
        }
        for (id, _) in self.take_parked(h) {
            self.engine_failed(id, error.clone());
        }
        self.places.hosts_mut().retry(h);
    }

    /// The instances parked for host `h` whose start is still the one that parked.
    fn take_parked(&mut self, h: HostId) -> Vec<(InstanceId, Parked)> {
        let ids: Vec<InstanceId> = self
            .remote
            .parked
            .iter()
            .filter(|(_, p)| p.host == h)
            .map(|(&id, _)| id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(p) = self.remote.parked.remove(&id) else {
                continue;
            };
            // (An instance that ended meanwhile may have been folded: `get`.)
            if matches!(self.insts.get(id).map(|i| &i.life), Some(Life::Starting { token, .. }) if *token == p.token)
            {
                out.push((id, p));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Start the pump of a new remote run and say where it runs.
    pub(super) fn start_pump(
        &mut self,
        id: InstanceId,
        generation: u64,
        pid: i32,
        pump: Pump,
        place: Place,
    ) {
        let tx = self.msg_tx.clone();
        let started = pump.start(format!("prun-pump-{id}"), move |msg| {
            let _ = tx.send(Msg::Pump {
                id,
                generation,
                msg,
            });
        });
        if let Err(e) = started {
            // A client nobody reads would block: end it.
            self.warn(format!(
                "{}: cannot read its engine's output ({e})",
                self.insts[id].info.name
            ));
            signal_group(pid, libc::SIGKILL);
        }
        if let Some(host) = self.places.host_name(place) {
            self.emit(Event::Placed {
                id,
                host: host.to_string(),
                node: None,
            });
        }
    }

    /// A run on an SSH host ended: did its wrapper leave files in the host's run
    /// directory (then the end of the run removes it)?
    pub(super) fn note_remote_end(&mut self, run: &super::instance::Run) {
        let Place::Ssh(h) = run.place else {
            return;
        };
        let cleaned = run
            .launched
            .remote
            .as_ref()
            .and_then(|r| r.seen.as_ref())
            .and_then(|s| s.run_dir)
            .is_some_and(|d| matches!(d, DirEnd::Gone | DirEnd::Shared));
        if !cleaned {
            self.places.hosts_mut().left_files(h);
        }
    }

    /// A pump reported.
    pub(super) fn on_pump(&mut self, id: InstanceId, generation: u64, msg: PumpMsg) {
        // News about a run that ended (its instance may be folded already).
        if self
            .insts
            .get(id)
            .is_none_or(|i| i.generation != generation)
        {
            return;
        }
        let Some(run) = self.insts[id].run_mut() else {
            return;
        };
        let place = run.place;
        let Some(r) = run.launched.remote.as_mut() else {
            return;
        };
        match msg {
            PumpMsg::Started(s) => {
                let node = s.node.clone();
                r.started = Some(s);
                if let (Place::Slurm(_), Some(host)) = (place, self.places.host_name(place)) {
                    let host = host.to_string();
                    self.emit(Event::Placed {
                        id,
                        host,
                        node: Some(node),
                    });
                }
            }
            PumpMsg::Ended(e) => r.ended = Some(e),
            PumpMsg::Done(seen) => {
                r.seen = Some(seen);
                if let Some((pid, end, _)) = self.remote.exits.remove(&id) {
                    self.on_exit(id, pid, end);
                }
            }
        }
    }

    /// A remote instance's engine client exited before its pump said all it will:
    /// hold the exit until it has (or [`PUMP_GRACE`]). True when held.
    pub(super) fn defer_remote_exit(&mut self, id: InstanceId, pid: i32, end: ProcessEnd) -> bool {
        let Some(run) = self.insts[id].run() else {
            return false;
        };
        match &run.launched.remote {
            Some(r) if r.seen.is_none() && run.launched.pid == pid => {}
            _ => return false,
        }
        let until = self.clock.now() + PUMP_GRACE;
        self.remote.exits.insert(id, (pid, end, until));
        self.timers.at(until, id);
        true
    }

    /// A held exit whose grace passed: judge it with what the pump said so far.
    pub(super) fn remote_exit_due(&mut self, id: InstanceId, now: Instant) -> bool {
        match self.remote.exits.get(&id) {
            Some(&(_, _, until)) if until <= now => {}
            _ => return false,
        }
        let Some((pid, end, _)) = self.remote.exits.remove(&id) else {
            return false;
        };
        if let Some(r) = self.insts[id]
            .run_mut()
            .and_then(|r| r.launched.remote.as_mut())
        {
            r.seen = Some(r.view());
        }
        self.on_exit(id, pid, end);
        true
    }

    /// The remote side of this run reported its start.
    pub(super) fn remote_started(&self, run: &super::instance::Run) -> bool {
        run.launched
            .remote
            .as_ref()
            .is_some_and(|r| r.started.is_some())
    }

    /// Spawn the command that signals a remote instance.
    pub(super) fn spawn_remote_signal(
        &mut self,
        id: InstanceId,
        client: i32,
        sig: i32,
        spec: SpawnSpec,
    ) {
        match spawn::spawn(spec, self.guardian_fd()) {
            Ok(pid) => {
                self.owners
                    .insert(pid, Owner::RemoteSignal { id, client, sig });
            }
            Err(_) => signal_group(client, sig),
        }
    }

    /// The command that signalled a remote instance ended: if it could not deliver
    /// the signal (connection down, the engine refused), signal the local client.
    pub(super) fn on_remote_signal_exit(
        &mut self,
        id: InstanceId,
        client: i32,
        sig: i32,
        end: ProcessEnd,
    ) {
        if end != ProcessEnd::Exited(0) && self.insts[id].pid() == Some(client) {
            signal_group(client, sig);
        }
    }

    /// Run a helper command of instance `id` (`ready: {cmd}`, `stop: {cmd}`) where the
    /// instance runs; returns the local process to reap.
    pub(super) fn launch_aux(
        &mut self,
        id: InstanceId,
        spec: SpawnSpec,
        what: &str,
    ) -> std::io::Result<i32> {
        let place = self.insts[id].run().map_or(Place::Local, |r| r.place);
        let opts = match place.host() {
            Some(_) => Some(RemoteOpts {
                name: format!("{}-{what}", self.insts[id].info.name),
                ..self.remote_opts(id)
            }),
            None => None,
        };
        match place {
            Place::Slurm(_) => self.ensure_sweeper(),
            // Its end is not followed: the host's run directory is removed at the end.
            Place::Ssh(h) => self.places.hosts_mut().left_files(h),
            Place::Local => {}
        }
        let (launched, pump) = self.places.launch(place, spec, self.guardian_fd(), opts)?;
        if let Some(pump) = pump
            && pump
                .start(format!("prun-pump-{id}-{what}"), |_| {})
                .is_err()
        {
            signal_group(launched.pid, libc::SIGKILL);
        }
        Ok(launched.pid)
    }

    /// The process group a `stop: {cmd}` is told about (`PRUN_PID`): the remote one
    /// for an instance on another host (once known), else the local one.
    pub(super) fn group_id(&self, id: InstanceId, local: i32) -> i32 {
        self.insts[id]
            .run()
            .and_then(|r| r.launched.remote.as_ref())
            .and_then(|r| r.started.as_ref())
            .map_or(local, |s| s.pgid)
    }

    /// The run's Slurm sweeper, started once.
    fn ensure_sweeper(&mut self) {
        if self.remote.sweeper.is_some() || self.remote.sweeper_failed {
            return;
        }
        match self
            .places
            .sweeper()
            .and_then(|(spec, fd)| spawn::spawn(spec, None).map(|pid| (pid, fd)))
        {
            Ok((pid, fd)) => {
                self.owners.insert(pid, Owner::Sweeper);
                self.remote.sweeper = Some((pid, fd));
            }
            Err(e) => {
                self.remote.sweeper_failed = true;
                self.warn(format!(
                    "cannot start the Slurm sweeper ({e}): if prun is killed, its jobs may stay queued"
                ));
            }
        }
    }

    /// The end of the run (after the loop, every instance ended): remove the run
    /// directory on each connected SSH host, let the Slurm sweeper sweep, close the
    /// shared connections. Bounded waits; what is left is killed by the final sweep.
    pub(super) fn finish_remote(&mut self) {
        if self.places.hosts().is_empty() {
            return;
        }
        let mut pids: Vec<i32> = Vec::new();
        for spec in self.places.cleanup_specs() {
            if let Ok(pid) = spawn::spawn(spec, self.guardian_fd()) {
                self.owners.insert(pid, Owner::RemoteCleanup);
                pids.push(pid);
            }
        }
        if let Some((pid, fd)) = self.remote.sweeper.take() {
            drop(fd);
            pids.push(pid);
        }
        self.wait_pids(&mut pids, Duration::from_secs(5));
        let masters: Vec<i32> = self
            .places
            .hosts()
            .masters()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        for &pid in &masters {
            signal_group(pid, libc::SIGTERM);
        }
        let mut masters = masters;
        self.wait_pids(&mut masters, Duration::from_secs(2));
        for pid in masters.into_iter().chain(pids) {
            if group_alive(pid) {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }

    /// Reap these children, waiting at most `within` for them.
    fn wait_pids(&mut self, pids: &mut Vec<i32>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            pids.retain(
                |&p| match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => true,
                    _ => {
                        self.owners.remove(&p);
                        false
                    }
                },
            );
            if pids.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Watch one master: `HostUp` when its control socket appears, `HostDown` with its
/// stderr when that closes (it exited).
fn watch_master(h: HostId, pid: i32, stderr: File, socket: PathBuf, tx: Sender<Msg>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut up = false;
    let mut text: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut stderr = stderr;
    loop {
        if !up && socket.exists() {
            up = true;
            let _ = tx.send(Msg::HostUp { host: h, pid });
        }
        let timeout = if up {
            PollTimeout::NONE
        } else {
            PollTimeout::from(20u16)
        };
        let ready = {
            let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, timeout)
        };
        match ready {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if text.len() < 4096 {
                    text.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = tx.send(Msg::HostDown {
        host: h,
        pid,
        message: String::from_utf8_lossy(&text).into_owned(),
    });
}
