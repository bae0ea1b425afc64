//! Readiness (SPEC 1.1 `ready`): when a running instance counts as ready.
//!
//! `{line}` is matched by the instance's log drain thread; `{delay}` is a deadline;
//! `{cmd}` runs a probe command (a process of the pipeline, reaped by the loop) every
//! `interval` until it exits 0; `{tcp}` and `{file}` are watched by a thread off the
//! loop, so a slow filesystem or a slow connect never stalls it. The optional
//! `timeout` is a deadline: not ready by then, the instance is stopped and ends
//! `failed (not ready within …)`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::instance::{Life, Probe, Readiness};
use super::{Owner, Supervisor};
use crate::event::{InstanceId, State};
use crate::plan::{ProbeKind, ReadyProbe, Trigger};
use crate::runtime::msg::Msg;
use crate::runtime::spawn::SpawnSpec;

/// Poll period of `ready: {file}` and of a TCP probe that could not connect.
const WATCH_PERIOD: Duration = Duration::from_millis(50);

impl Supervisor {
    /// The probe a new run starts with.
    pub(super) fn first_probe(
        &mut self,
        id: InstanceId,
        probe: &ReadyProbe,
        now: Instant,
    ) -> Readiness {
        let generation = self.insts[id].generation;
        let probe = match &probe.kind {
            ProbeKind::Line(_) => Probe::Line,
            ProbeKind::Delay(d) => Probe::Delay { at: now + *d },
            ProbeKind::Cmd { .. } => Probe::Poll {
                next: Some(now),
                running: None,
            },
            ProbeKind::Tcp(addr) => {
                let cancel = Arc::new(AtomicBool::new(false));
                let target = Watch::Tcp(addr.clone());
                watch(target, id, generation, cancel.clone(), self.msg_tx.clone());
                Probe::Watcher { cancel }
            }
            ProbeKind::File(t) => {
                let cancel = Arc::new(AtomicBool::new(false));
                let path = self.resolve_path(&t.render(&self.vars(id)));
                watch(
                    Watch::File(path),
                    id,
                    generation,
                    cancel.clone(),
                    self.msg_tx.clone(),
                );
                Probe::Watcher { cancel }
            }
        };
        Readiness::Probing {
            probe,
            deadline: self.plan.stages[self.insts[id].info.stage]
                .ready
                .as_ref()
                .and_then(|r| r.timeout)
                .map(|t| now + t),
        }
    }

    /// Run the `ready: {cmd}` probe command once.
    pub(super) fn run_probe(&mut self, id: InstanceId, now: Instant) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let Some(ProbeKind::Cmd { argv, interval }) = stage.ready.as_ref().map(|r| &r.kind) else {
            return;
        };
        let vars = self.vars(id);
        let argv: Vec<OsString> = argv.iter().map(|t| t.render(&vars).into()).collect();
        let interval = *interval;
        let mut spec = SpawnSpec::new(argv);
        spec.env = self.instance_env(id);
        spec.cwd = self.instance_cwd(id);
        match self.launch_aux(id, spec, "ready") {
            Ok(pid) => {
                let generation = self.insts[id].generation;
                self.owners.insert(pid, Owner::Probe(id, generation));
                self.insts[id].pgids.push(pid);
                if let Some(run) = self.insts[id].run_mut()
                    && let Readiness::Probing {
                        probe: Probe::Poll { running, .. },
                        ..
                    } = &mut run.readiness
                {
                    *running = Some(pid);
                }
            }
            Err(e) => {
                self.warn(format!(
                    "{}: readiness command could not start: {e}",
                    self.insts[id].info.name
                ));
                if let Some(run) = self.insts[id].run_mut()
                    && let Readiness::Probing {
                        probe: Probe::Poll { next, .. },
                        ..
                    } = &mut run.readiness
                {
                    *next = Some(now + interval);
                }
                self.timers.at(now + interval, id);
            }
        }
    }

    /// The instance passed its readiness probe (or has none).
    pub(super) fn mark_ready(&mut self, id: InstanceId) {
        let inst = &mut self.insts[id];
        let Life::Running(run) = &mut inst.life else {
            return;
        };
        let Readiness::Probing { probe, .. } = &run.readiness else {
            return;
        };
        if let Probe::Watcher { cancel } = probe {
            cancel.store(true, Ordering::Relaxed);
        }
        run.readiness = Readiness::Ready;
        inst.ever_ready = true;
        self.show(id, State::Ready);
        self.fire_sets(id, |t| matches!(t, Trigger::Ready));
    }
}

/// What a watcher thread waits for.
enum Watch {
    Tcp(String),
    File(PathBuf),
}

/// Watch `target` off the loop until it is there (then tell the loop) or `cancel`.
fn watch(target: Watch, id: InstanceId, generation: u64, cancel: Arc<AtomicBool>, tx: Sender<Msg>) {
    let _ = std::thread::Builder::new()
        .name(format!("prun-probe-{id}"))
        .spawn(move || {
            use std::net::{TcpStream, ToSocketAddrs};
            while !cancel.load(Ordering::Relaxed) {
                let ok = match &target {
                    Watch::Tcp(addr) => addr.to_socket_addrs().is_ok_and(|mut addrs| {
                        addrs.any(|a| {
                            TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok()
                        })
                    }),
                    Watch::File(path) => path.exists(),
                };
                if ok {
                    let _ = tx.send(Msg::ProbeOk { id, generation });
                    return;
                }
                // Polling period of the probe (not a synchronisation wait).
                std::thread::sleep(WATCH_PERIOD);
            }
        });
}
