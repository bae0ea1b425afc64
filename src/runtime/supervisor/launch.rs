//! One start of an instance: its files opened (off the loop when it has any), its
//! host's connection ready (on another host), its descriptors wired, its command
//! launched at its place, then the bookkeeping of a new run: router ports, the log
//! drain, the remote pump, `sets: started`, the readiness probe, the timeout.

use std::os::fd::OwnedFd;

use super::instance::{Life, Readiness, RouterPort, Run, Stop};
use super::{Owner, Supervisor};
use crate::event::{InstanceId, Level, State};
use crate::plan::{ProbeKind, RestartPolicy, Trigger};
use crate::runtime::drain::{self, LineMatcher};
use crate::runtime::msg::{LineAction, Msg};
use crate::runtime::opener::{self, OpenedFiles};
use crate::runtime::spawn::{self, SpawnSpec};

impl Supervisor {
    /// Start instance `id` (its start checks passed).
    pub(super) fn start_instance(&mut self, id: InstanceId) {
        let opens = self.files_to_open(id);
        if opens.is_empty() {
            self.launch(id, OpenedFiles::default());
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        let tx = self.msg_tx.clone();
        let started = opener::start(id, opens.clone(), move |files| {
            let _ = tx.send(Msg::Opened { id, token, files });
        });
        if started {
            self.insts[id].life = Life::Starting { token, opens };
        } else {
            // No thread: open here rather than not at all.
            let files = opener::open_files(&opens);
            self.opened(id, None, files);
        }
    }

    /// The files of a start are open (or could not be): launch, or `could not start`.
    /// `token` is None for files opened on the loop itself.
    pub(super) fn opened(
        &mut self,
        id: InstanceId,
        token: Option<u64>,
        files: std::io::Result<OpenedFiles>,
    ) {
        if let Some(t) = token {
            match self.insts.get(id).map(|i| &i.life) {
                Some(Life::Starting { token, .. }) if *token == t => {}
                // Cancelled meanwhile (the pipeline stopped, or the item halted and
                // was folded): drop the files.
                _ => return,
            }
        }
        match files {
            Ok(files) => self.launch(id, files),
            Err(e) => {
                self.insts[id].start_error_code = 1;
                self.finish_run(
                    id,
                    State::CouldNotStart {
                        error: e.to_string(),
                    },
                );
            }
        }
    }

    /// Wire and launch the process; on success the instance is `Running`. On another
    /// host it may first wait for the host's shared connection (`Starting`).
    pub(super) fn launch(&mut self, id: InstanceId, files: OpenedFiles) {
        let place = self.place_of(id);
        let files = match place.host() {
            Some(h) => match self.connect_for(id, h, files) {
                Some(files) => files,
                None => return,
            },
            None => files,
        };
        let stage_id = self.insts[id].info.stage;
        let stage = self.plan.stages[stage_id].clone();
        self.insts[id].generation += 1;
        let generation = self.insts[id].generation;
        let mut spec = SpawnSpec::new(self.render_argv(id, &stage.command));
        spec.cwd = self.instance_cwd(id);
        spec.env = self.instance_env(id);
        if stage.stdin == crate::plan::Input::Inherit {
            spec.foreground = self.terminal_for(id);
        }
        let mut router_ends: Vec<(RouterPort, OwnedFd)> = Vec::new();
        let mut log_read: Option<OwnedFd> = None;
        let mut out_read: Option<OwnedFd> = None;
        let opts = place.host().map(|_| self.remote_opts(id));
        // The reporter learns of the instance (its name) before any line it logs.
        self.flush_events();
        let result = self
            .wire(
                id,
                files,
                &mut spec,
                &mut router_ends,
                &mut log_read,
                &mut out_read,
            )
            .and_then(|()| self.places.launch(place, spec, self.guardian_fd(), opts));
        let (launched, pump) = match result {
            Ok(l) => l,
            Err(e) => {
                let what = match self.places.host_name(place) {
                    Some(host) => format!("on {host}"),
                    None => self
                        .render_argv(id, &stage.command)
                        .into_iter()
                        .next()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                };
                self.release_terminal(id);
                self.insts[id].start_error_code = spawn::exec_error_code(&e);
                let error = format!("{what}: {e}");
                self.finish_run(id, State::CouldNotStart { error });
                return;
            }
        };
        let pid = launched.pid;
        if let Some(pump) = pump {
            self.start_pump(id, generation, pid, pump, place);
        }
        let now = self.clock.now();
        self.owners.insert(pid, Owner::Instance(id));
        let restartable = stage.restart.policy != RestartPolicy::Never;
        for (port, fd) in router_ends {
            if port.writer {
                self.attach_writer(port.queue, port.id, id, fd);
            } else if let Some(r) = &self.routers[port.queue] {
                r.add_member_reader(port.id, id, fd);
                if restartable {
                    r.reader_may_restart(port.id);
                }
            }
            self.queues[port.queue].port_owner.insert(port.id, id);
            self.insts[id].ports_used.push((port.queue, port.id));
            self.insts[id].ports.push(port);
        }
        // The restarted readers joined (after them in the routers' command order): the
        // previous run's readers are no longer awaited.
        self.withdraw_expected(id);
        {
            let inst = &mut self.insts[id];
            inst.last_pid = Some(pid);
            inst.pgids.push(pid);
            inst.ever_started = true;
            inst.life = Life::Running(Run {
                place,
                launched,
                readiness: Readiness::Ready,
                timeout_at: stage.timeout.map(|t| now + t),
                stop: Stop::No,
            });
        }
        if let Some(r) = log_read {
            self.start_drain(id, generation, r);
        }
        if let Some(r) = out_read {
            match drain::start_passthrough(
                r,
                id,
                self.logs.clone(),
                self.msg_tx.clone(),
                &self.drains,
            ) {
                Ok(()) => {}
                Err(e) => self.notice(
                    Level::Error,
                    format!(
                        "cannot pass on the output of {}: {e}",
                        self.insts[id].info.name
                    ),
                ),
            }
        }
        self.show(id, State::Running);
        self.fire_sets(id, |t| matches!(t, Trigger::Started));
        match &stage.ready {
            None => {
                // Ready as soon as it runs: `Running` then `Ready`, as before.
                if let Some(run) = self.insts[id].run_mut() {
                    run.readiness = Readiness::Probing {
                        probe: super::instance::Probe::Line,
                        deadline: None,
                    };
                }
                self.mark_ready(id);
            }
            Some(probe) => {
                let readiness = self.first_probe(id, probe, now);
                if let Some(run) = self.insts[id].run_mut() {
                    run.readiness = readiness;
                }
            }
        }
        self.arm(id);
    }

    /// Start the thread that turns the log pipe into lines (and matches them).
    fn start_drain(&mut self, id: InstanceId, generation: u64, read: OwnedFd) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let mut matchers = Vec::new();
        if let Some(probe) = &stage.ready
            && let ProbeKind::Line(re) = &probe.kind
        {
            matchers.push(LineMatcher {
                regex: re.0.clone(),
                action: LineAction::Ready,
            });
        }
        for (e, t) in &stage.sets {
            if let Trigger::Line(re) = t {
                matchers.push(LineMatcher {
                    regex: re.0.clone(),
                    action: LineAction::SetEvent(*e),
                });
            }
        }
        match drain::start(
            read,
            id,
            generation,
            matchers,
            self.logs.clone(),
            self.msg_tx.clone(),
            &self.drains,
        ) {
            Ok(()) => {}
            Err(e) => self.notice(
                Level::Error,
                format!("cannot drain the log of {}: {e}", self.insts[id].info.name),
            ),
        }
    }
}
