//! Steering from another terminal (SPEC 6.1): `prun stop`, `restart` and `signal` reach
//! the loop as a message ([`SteerRequest`]); the loop acts with the steps it uses anyway
//! (the shutdown, a stop step, a group signal) and answers at once.

use super::Supervisor;
use super::instance::{Asked, StopWhy};
use crate::event::{InstanceId, Level, State, signal_name};
use crate::runtime::msg::{Steer, SteerRequest};

impl Supervisor {
    pub(super) fn steer(&mut self, req: SteerRequest) {
        let answer = self.steer_now(req.steer);
        let _ = req.reply.send(answer);
    }

    fn steer_now(&mut self, steer: Steer) -> Result<String, String> {
        match steer {
            Steer::StopAll => {
                self.notice(Level::Info, "prun stop: stopping in drain order".into());
                self.on_signal(libc::SIGINT);
                Ok("stopping in drain order".into())
            }
            Steer::Stop(stages) => {
                let ids = self.ids_of(&stages)?;
                let (mut running, mut waiting) = (0, 0);
                for id in ids {
                    if self.insts[id].pid().is_some() {
                        self.insts[id].asked = Some(Asked::Stop);
                        self.begin_stop(id, StopWhy::Shutdown);
                        running += 1;
                    } else if self.insts[id].startable() {
                        self.release_permits(id);
                        self.end(
                            id,
                            State::Skipped {
                                reason: "stopped by `prun stop`".into(),
                            },
                        );
                        waiting += 1;
                    }
                }
                Ok(format!(
                    "stopping {running} running, {waiting} waiting instances"
                ))
            }
            Steer::Restart(stages) => {
                let ids = self.ids_of(&stages)?;
                let mut n = 0;
                for id in ids {
                    if self.insts[id].pid().is_some() {
                        self.insts[id].asked = Some(Asked::Restart);
                        self.begin_stop(id, StopWhy::Shutdown);
                        n += 1;
                    }
                }
                if self.shutdown.is_some() {
                    return Err("the pipeline is shutting down: nothing restarts".into());
                }
                Ok(format!("restarting {n} instances"))
            }
            Steer::Signal(sig, stages) => {
                let ids = self.ids_of(&stages)?;
                let mut n = 0;
                for id in ids {
                    if self.insts[id].pid().is_some() {
                        // Wherever it runs (on a host: over its engine).
                        self.signal_instance(id, sig);
                        n += 1;
                    }
                }
                Ok(format!("sent {} to {n} instances", signal_name(sig)))
            }
        }
    }

    /// The instances of the named stages, or instances by name (`eater.1`).
    fn ids_of(&self, names: &[String]) -> Result<Vec<InstanceId>, String> {
        let mut ids = Vec::new();
        for name in names {
            // Instances held: ended foreach items are folded and cannot be steered.
            let found: Vec<InstanceId> = self
                .insts
                .ids()
                .into_iter()
                .filter(|&id| {
                    let info = &self.insts[id].info;
                    info.stage_name == *name || info.name == *name
                })
                .collect();
            if found.is_empty() {
                return Err(format!("no stage or instance named `{name}`"));
            }
            ids.extend(found);
        }
        Ok(ids)
    }
}
