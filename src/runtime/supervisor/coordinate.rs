//! The supervisor's side of coordination: the `prun ctl` socket and deadlocks.
//!
//! The loop owns the [`Coord`](crate::coord::Coord) (semaphores, events) and
//! the [`CtlBroker`](crate::ctl::CtlBroker) (parked `prun ctl` waits); nothing else
//! touches them, so no lock is needed. This file:
//! - starts the [`CtlServer`] in the private run directory (`PRUN_CTL` is exported
//!   to every instance) and answers its requests: the peer pid (from `SO_PEERCRED`)
//!   is mapped to an instance through the live instances' process groups and their
//!   ancestry ([`crate::procfs::owner_of`]); any other process is refused;
//! - finds deadlocks: when instances wait (to start, or parked in a `prun ctl` wait
//!   without a timeout) for events or permits that nothing still able to act can
//!   give, the run fails with a message naming who waits for what and who holds
//!   what ([`Coord::find_deadlock`](crate::coord::Coord::find_deadlock)).
//!
//! Deadlock decisions: a running instance counts as blocked only when every process
//! of its group is parked in a ctl wait, a zombie, or waiting for a child
//! ([`crate::procfs::group_is_parked`]); the verdict must hold for [`DEADLOCK_GRACE`]
//! (checked every [`DEADLOCK_PERIOD`]) before the run is failed, so a wait that is
//! being answered, or a record in transit, is never mistaken for a deadlock. Then
//! the stuck instances that never started are `skipped (deadlock)`, the message is
//! sent as [`Event::Deadlock`], and the pipeline stops in drain order with exit
//! code 1 (parked instances end `stopped`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Supervisor;
use super::instance::{Life, Permit};
use crate::coord::{Party, Wait};
use crate::ctl::{BrokerOutcome, CtlCommand, CtlRequest, CtlServer};
use crate::event::State;
use crate::event::{Event, InstanceId, Level, ShutdownCause};

/// How long a deadlock must persist before the run is failed.
pub(super) const DEADLOCK_GRACE: Duration = Duration::from_secs(1);
/// How often a suspected deadlock is checked again.
pub(super) const DEADLOCK_PERIOD: Duration = Duration::from_millis(250);

impl Supervisor {
    /// Bind `<run dir>/ctl.sock`. Without it stages still run; `prun ctl` then fails
    /// with "cannot reach prun" (exit 5), and prun says why.
    pub(super) fn start_ctl(&mut self) {
        match CtlServer::start(&self.run_dir) {
            Ok(server) => self.ctl = Some(server),
            Err(e) => self.notice(
                Level::Warning,
                format!("the control socket is not available (`prun ctl` will fail): {e}"),
            ),
        }
    }

    /// Answer one `prun ctl` request (or park it in the broker).
    pub(super) fn handle_ctl(&mut self, req: CtlRequest) {
        let holder = if matches!(req.command, CtlCommand::Hangup { .. }) {
            None
        } else if let Some(via) = req.via {
            // A remote instance's own socket: it speaks for that instance while it runs.
            let id = via as usize;
            self.insts
                .get(id)
                .is_some_and(|i| i.pid().is_some())
                .then_some(via)
        } else {
            self.owner_of_pid(req.peer_pid).map(|id| id as u64)
        };
        let out = self
            .broker
            .handle(&mut self.coord, req, holder, Instant::now());
        self.apply_outcome(out);
    }

    /// The instance a process belongs to: a live instance whose process group holds
    /// the process or one of its ancestors — its own group, or the group of a
    /// `ready: {cmd}` probe or `stop: {cmd}` prun runs for it (those are processes of
    /// the pipeline too, SPEC 6).
    fn owner_of_pid(&self, pid: i32) -> Option<InstanceId> {
        let groups: HashMap<i32, InstanceId> = self
            .live
            .iter()
            .filter_map(|&id| self.insts[id].pid().map(|p| (p, id)))
            .chain(self.owners.iter().filter_map(|(&p, o)| match o {
                super::Owner::Probe(id, _) | super::Owner::StopCmd(id) => Some((p, *id)),
                _ => None,
            }))
            .collect();
        if groups.is_empty() {
            return None;
        }
        crate::procfs::owner_of(pid, |pgid| groups.get(&pgid).copied())
    }

    /// Answer `TIMEOUT` to ctl waits whose deadline passed.
    pub(super) fn expire_ctl(&mut self, now: Instant) {
        if self.broker.next_deadline().is_some_and(|d| d <= now) {
            let out = self.broker.expire(&mut self.coord, now);
            self.apply_outcome(out);
        }
    }

    /// Start requests granted as a side effect of a Coord change: those instances
    /// now hold their permits (the next `schedule` pass starts them).
    pub(super) fn apply_outcome(&mut self, out: BrokerOutcome) {
        for holder in out.start {
            if let Some(i) = self.insts.get_mut(holder as usize)
                && i.permit() == Permit::Requested
            {
                i.set_permit(Permit::Held);
            }
        }
        // Events set or cleared through ctl need nothing here: `schedule` checks the
        // `waits:` of waiting instances on every pass.
    }

    /// What every unfinished instance waits for. `verify` decides, for a running
    /// instance with parked ctl waits, whether it is really blocked (a /proc scan);
    /// without it, such instances are assumed blocked (an optimistic first pass:
    /// if nothing is stuck even then, nothing is).
    fn parties(&self, verify: bool) -> Vec<Party> {
        let mut parties = Vec::new();
        for &id in &self.live {
            let inst = &self.insts[id];
            let holder = id as u64;
            let name = inst.info.name.clone();
            if let Some(pgid) = inst.pid() {
                let parked = self.broker.parked_pids(holder);
                // On another host prun cannot see the instance's processes (another
                // of them may answer its wait): it never counts as blocked.
                let blocked = !parked.is_empty()
                    && !self.is_remote(id)
                    && (!verify || crate::procfs::group_is_parked(pgid, &parked));
                parties.push(Party {
                    holder,
                    name,
                    active: !blocked,
                    waits: if blocked {
                        self.broker.waits_of(holder)
                    } else {
                        Vec::new()
                    },
                });
                continue;
            }
            if inst.pending() || matches!(inst.life, Life::Starting { .. }) {
                parties.push(Party {
                    holder,
                    name,
                    active: true,
                    waits: Vec::new(),
                });
                continue;
            }
            // Waiting to start: unset events of `waits:`, unmet `after` conditions;
            // its permit request is in Coord's queue already.
            let stage = &self.plan.stages[inst.info.stage];
            let mut waits: Vec<Wait> = stage
                .waits
                .iter()
                .filter(|&&e| !self.coord.is_set(e))
                .map(|&e| Wait::Event(e))
                .collect();
            for &(dep, cond) in &stage.after {
                for &d in &self.by_stage[dep] {
                    if matches!(self.condition(d, cond), super::start::Cond::Pending) {
                        waits.push(Wait::Instance(d as u64));
                    }
                }
            }
            parties.push(Party {
                holder,
                name,
                active: false,
                waits,
            });
        }
        parties
    }

    /// Look for a deadlock (module doc); fail the run when one persists.
    pub(super) fn check_deadlock(&mut self, now: Instant) {
        let waiting = self.live.iter().any(|&id| self.insts[id].startable());
        if !waiting && self.broker.parked() == 0 {
            self.deadlock_seen = None;
            return;
        }
        if now < self.next_deadlock_check {
            return;
        }
        self.next_deadlock_check = now + DEADLOCK_PERIOD;
        let found = self
            .coord
            .find_deadlock(&self.parties(false))
            .and_then(|_| self.coord.find_deadlock(&self.parties(true)));
        let stuck_ids: Vec<u64>;
        let message: String;
        match found {
            Some(d) => {
                stuck_ids = d.stuck;
                message = d.message;
            }
            None => {
                // Belt and braces: nothing runs, nothing is scheduled, nothing can
                // create an instance, yet instances wait. Never hang.
                let active = self.live.iter().any(|&id| {
                    let i = &self.insts[id];
                    !i.startable() && !i.is_final()
                });
                let stuck: Vec<InstanceId> = self
                    .live
                    .iter()
                    .copied()
                    .filter(|&id| self.insts[id].startable())
                    .collect();
                if active || stuck.is_empty() || self.any_batch_open() {
                    self.deadlock_seen = None;
                    return;
                }
                let names: Vec<&str> = stuck
                    .iter()
                    .map(|&i| self.insts[i].info.name.as_str())
                    .collect();
                message = format!(
                    "deadlock: {} wait{} for events or permits that nothing can provide",
                    names.join(", "),
                    if names.len() == 1 { "s" } else { "" }
                );
                stuck_ids = stuck.iter().map(|&i| i as u64).collect();
            }
        }
        match &self.deadlock_seen {
            Some((ids, since)) if *ids == stuck_ids => {
                if now.saturating_duration_since(*since) < DEADLOCK_GRACE {
                    return;
                }
            }
            _ => {
                self.deadlock_seen = Some((stuck_ids, now));
                return;
            }
        }
        self.deadlock_seen = None;
        self.fail_on_deadlock(message, stuck_ids);
    }

    /// A deadlock's verdict (here, or a broadcast stall): the report's words, the stuck
    /// instances that never started skipped, the run failing with exit 70.
    pub(super) fn fail_on_deadlock(&mut self, message: String, stuck: Vec<u64>) {
        self.emit(Event::Deadlock { message });
        for h in stuck {
            let id = h as usize;
            if self.insts.get(id).is_some_and(|i| i.startable()) {
                self.release_permits(id);
                self.end(
                    id,
                    State::Skipped {
                        reason: "deadlock".into(),
                    },
                );
            }
        }
        self.first_failure.get_or_insert(crate::exit::DEADLOCK);
        self.begin_shutdown(ShutdownCause::Deadlock);
    }
}
