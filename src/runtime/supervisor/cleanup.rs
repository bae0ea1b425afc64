//! The end of a run: nothing left behind, the last counters, the final event.
//!
//! Every instance has ended; what may remain are stray members of their groups (a
//! leader exited, its background children did not), stop and probe commands, and
//! descendants that left their groups. They are SIGKILLed (only groups that still hold
//! a descendant of prun: an empty group's id may have been recycled) and reaped. Then
//! the routers are joined (their counters become final), the log threads get a moment
//! to pass on their last lines, and `Finished` carries prun's exit code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp};

use super::orphans::{children_of, group_is_ours};
use super::queues::{input_queues, output_queues};
use super::{Owner, Supervisor};
use crate::event::{Event, InstanceId, RunStatus, ShutdownCause};
use crate::plan::{QueueId, Wiring};
use crate::runtime::msg::Msg;
use crate::runtime::place::{group_alive, signal_group};
use crate::runtime::scanner;

impl Supervisor {
    pub(super) fn finish(mut self) -> i32 {
        self.scanner = None;
        // Other hosts first: their run directories, the Slurm sweep, the connections.
        self.finish_remote();
        // Stray group members (a leader ended, its background children did not), stop
        // commands, and probes.
        let mut groups: Vec<i32> = self
            .insts
            .iter()
            .flat_map(|i| i.pgids.iter().copied())
            .collect();
        groups.extend(
            self.owners
                .iter()
                .filter(|(_, o)| !matches!(o, Owner::Guardian))
                .map(|(p, _)| *p),
        );
        groups.sort_unstable();
        groups.dedup();
        // The /proc walk is only needed when a group is still alive (rare at a normal end).
        let alive: Vec<i32> = groups.iter().copied().filter(|&g| group_alive(g)).collect();
        if !alive.is_empty() || !self.adopted_pids.is_empty() {
            let table = scanner::table(self.self_pid);
            for &g in &alive {
                if group_is_ours(&table, g, self.self_pid) {
                    signal_group(g, libc::SIGKILL);
                }
            }
            // Descendants that joined prun's own group: one by one (still prun's
            // descendants, so not a recycled pid).
            for &(pid, _, pgrp) in &table {
                if pgrp == getpgrp().as_raw() && self.adopted_pids.contains(&pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        self.sweep_descendants();
        for &g in &groups {
            if !group_alive(g)
                && let Some(gd) = self.guardian.as_mut()
            {
                gd.forget(g);
            }
        }
        // Closing its pipe ends the guardian; it is reaped last, so that its exit (the
        // teardown of a forked copy of prun) overlaps the end of the run.
        let guardian = self.guardian.take().map(|mut g| g.finish());
        // Let the log threads flush their last lines before the final event.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.drains > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.msg_rx.recv_timeout(left) {
                Ok(Msg::DrainDone) => self.drains -= 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.report_queues();
        self.settle_halts_at_end();
        let cause = self.shutdown.as_ref().map(|s| s.cause);
        let (status, code) = match cause {
            Some(ShutdownCause::Signal(s)) => (RunStatus::Interrupted, 128 + s),
            _ => match self.first_failure {
                Some(c) => (RunStatus::Failed, c),
                None => (RunStatus::Succeeded, 0),
            },
        };
        let duration = self.start.elapsed();
        self.emit(Event::Finished {
            status,
            exit_code: code,
            duration,
        });
        if let Some(pid) = guardian {
            // Our own guardian, which exits on EOF.
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        code
    }

    /// Kill and reap every remaining descendant: processes that left their group
    /// (`setsid`) end up re-parented to prun (a subreaper) once their parents die.
    /// Repeats because killing one can re-parent its own children to prun.
    fn sweep_descendants(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let guardian = self.guardian.as_ref().map(|g| g.pid());
        let own_group = getpgrp();
        loop {
            self.reap_quietly();
            let children: Vec<i32> = children_of(self.self_pid)
                .into_iter()
                .filter(|&p| Some(p) != guardian)
                .collect();
            if children.is_empty() || Instant::now() >= deadline {
                return;
            }
            for pid in children {
                let pid = Pid::from_raw(pid);
                if let Ok(pg) = getpgid(Some(pid))
                    && pg.as_raw() > 1
                    && pg != own_group
                {
                    let _ = killpg(pg, Signal::SIGKILL);
                }
                let _ = kill(pid, Signal::SIGKILL);
            }
            if let Ok(Msg::DrainDone) = self.msg_rx.recv_timeout(Duration::from_millis(20)) {
                self.drains = self.drains.saturating_sub(1);
            }
        }
    }

    /// Reap at the end: no more state changes, only collect exits.
    fn reap_quietly(&mut self) {
        loop {
            let pid = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => match s.pid() {
                    Some(p) => p.as_raw(),
                    None => return,
                },
            };
            if matches!(self.owners.get(&pid), Some(Owner::Guardian)) {
                self.guardian = None;
            }
            self.owners.remove(&pid);
        }
    }

    fn report_queues(&mut self) {
        let mut records_in: HashMap<InstanceId, u64> = HashMap::new();
        let mut records_out: HashMap<InstanceId, u64> = HashMap::new();
        for q in 0..self.plan.queues.len() {
            let name = self.plan.queues[q].name.clone();
            match &self.routers[q] {
                Some(r) => {
                    // Every process has ended. Joining ends the router (after the
                    // `reader_exited` already sent, so what readers left unread is
                    // counted; one still routing counts what it holds as discarded)
                    // and makes its last counters the ones reported.
                    r.join();
                    let stats = r.stats();
                    let owners = &self.queues[q].port_owner;
                    for (port, n) in &stats.per_writer {
                        if let Some(&i) = owners.get(port) {
                            *records_out.entry(i).or_default() += n;
                        }
                    }
                    for (port, n) in &stats.per_reader {
                        if let Some(&i) = owners.get(port) {
                            *records_in.entry(i).or_default() += n;
                        }
                    }
                    self.emit(Event::QueueFinished {
                        queue: q,
                        name,
                        direct: false,
                        stats,
                    });
                }
                None => self.emit(Event::QueueFinished {
                    queue: q,
                    name,
                    direct: true,
                    stats: Default::default(),
                }),
            }
        }
        let held = self.insts.ids().into_iter().map(|id| {
            let inst = &self.insts[id];
            (id, inst.info.stage, inst.block.as_ref().map(|b| b.records))
        });
        let folded = self.folded_listed.iter().map(|l| (l.id, l.stage, l.block));
        let all: Vec<(InstanceId, usize, Option<u64>)> = held.chain(folded).collect();
        for (id, stage, block) in all {
            let stage = &self.plan.stages[stage];
            // A block of records (`foreach: {queue, batch}`) on its stdin.
            let count = |queues: Vec<QueueId>, map: &HashMap<InstanceId, u64>| {
                // Records of routed queues are counted, whatever the descriptor; direct
                // pipes are not (prun does not see them): null only when every queue of
                // the instance is a direct pipe.
                if queues.is_empty() {
                    Some(0)
                } else if queues
                    .iter()
                    .all(|&q| self.plan.queues[q].wiring == Wiring::Direct)
                {
                    None
                } else {
                    Some(map.get(&id).copied().unwrap_or(0))
                }
            };
            let records_in = block.or_else(|| count(input_queues(stage), &records_in));
            let records_out = count(output_queues(stage), &records_out);
            self.emit(Event::Records {
                id,
                records_in,
                records_out,
            });
        }
    }
}
