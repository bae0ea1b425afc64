//! No orphans (SPEC 5.4): the guardian that outlives a SIGKILLed prun, and the
//! descendants that left their instance's process group.
//!
//! Every instance leads its own process group, registered with the guardian before it
//! execs (see `spawn`). A descendant may leave that group (`setsid`, or `setpgid` into
//! a group of its own): the escape scan finds such groups among prun's descendants
//! (prun is a subreaper, so orphans stay in its tree) and hands them to the guardian
//! too. If the guardian dies, it is replaced before anything else starts and told
//! every group again.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{Owner, Supervisor};
use crate::event::Level;
use crate::runtime::guardian::Guardian;

/// How often prun looks for descendants that left their process group (`setsid`), so
/// the guardian can kill them too if prun is SIGKILLed.
pub(super) const ESCAPE_SCAN: Duration = Duration::from_millis(250);

impl Supervisor {
    pub(super) fn guardian_fd(&self) -> Option<RawFd> {
        self.guardian.as_ref().and_then(|g| g.fd())
    }

    /// The guardian died (it should not): start a new one and register every group
    /// prun knows, before anything else starts.
    pub(super) fn replace_guardian(&mut self) {
        match Guardian::start() {
            Ok(mut g) => {
                self.owners.insert(g.pid(), Owner::Guardian);
                let groups: HashSet<i32> = self
                    .insts
                    .iter()
                    .flat_map(|i| i.pgids.iter().copied())
                    .chain(self.adopted.iter().copied())
                    .chain(
                        self.owners
                            .iter()
                            // The Slurm sweeper must outlive a SIGKILLed prun.
                            .filter(|(_, o)| !matches!(o, Owner::Guardian | Owner::Sweeper))
                            .map(|(p, _)| *p),
                    )
                    .collect();
                for pgid in groups {
                    if crate::runtime::place::group_alive(pgid) {
                        g.adopt(pgid);
                    }
                }
                self.notice(
                    Level::Warning,
                    "the guardian process ended early; prun started a new one".into(),
                );
                self.guardian = Some(g);
            }
            Err(e) => self.notice(
                Level::Warning,
                format!("the guardian process ended early and cannot be replaced ({e}); a SIGKILL of prun may leave stages behind"),
            ),
        }
    }

    /// Hand every process group that descends from prun but is not an instance's own
    /// group (a `setsid` escapee) to the guardian, so a SIGKILL of prun still kills it;
    /// forget adopted groups that are gone, so a recycled id is never killed. At the end
    /// of a normal run, `sweep_descendants` kills escapees anyway.
    pub(super) fn escape_scan(&mut self, now: Instant) {
        if now < self.next_escape_scan || self.guardian.is_none() {
            return;
        }
        self.next_escape_scan = now + ESCAPE_SCAN;
        if !self.live.iter().any(|&id| self.insts[id].pid().is_some()) {
            return;
        }
        let table = process_table(self.self_pid);
        let own_group = nix::unistd::getpgrp().as_raw();
        let live: HashSet<i32> = table.iter().map(|e| e.2).collect();
        let gone: Vec<i32> = self
            .adopted
            .iter()
            .copied()
            .filter(|g| !live.contains(g))
            .collect();
        for g in gone {
            self.adopted.remove(&g);
            if let Some(guardian) = self.guardian.as_mut() {
                guardian.forget(g);
            }
        }
        let known: HashSet<i32> = self
            .insts
            .iter()
            .flat_map(|i| i.pgids.iter().copied())
            .chain(self.owners.keys().copied())
            .collect();
        let mut found = Vec::new();
        for &(pid, _, pgrp) in &table {
            if pgrp == own_group
                || pgrp <= 1
                || self.adopted.contains(&pgrp)
                || known.contains(&pgrp)
                || !group_is_ours(&table, pgrp, self.self_pid)
            {
                continue;
            }
            self.adopted.insert(pgrp);
            found.push((pid, pgrp));
        }
        for (pid, pgrp) in found {
            if let Some(guardian) = self.guardian.as_mut() {
                guardian.adopt(pgrp);
            }
            self.notice(
                Level::Info,
                format!("pid {pid} left its process group (setsid); prun will still stop it"),
            );
        }
    }
}

/// (pid, parent pid, process group) of every live descendant of `root`, from /proc.
/// Only prun's own tree is read (escapees are re-parented to prun, a subreaper, so they
/// stay in it): the cost does not grow with the number of processes on the machine.
pub(super) fn process_table(root: i32) -> Vec<(i32, i32, i32)> {
    crate::procfs::descendants(root)
        .into_iter()
        .map(|s| (s.pid, s.ppid, s.pgrp))
        .collect()
}

/// The group has a member that descends from prun (so its id was not recycled).
pub(super) fn group_is_ours(table: &[(i32, i32, i32)], pgid: i32, me: i32) -> bool {
    let parent = |pid: i32| table.iter().find(|e| e.0 == pid).map(|e| e.1);
    table.iter().filter(|e| e.2 == pgid).any(|&(pid, _, _)| {
        let mut p = pid;
        for _ in 0..64 {
            match parent(p) {
                Some(pp) if pp == me => return true,
                Some(pp) if pp > 1 => p = pp,
                _ => return false,
            }
        }
        false
    })
}

/// Live (not zombie) children of `ppid`, from /proc.
pub fn children_of(ppid: i32) -> Vec<i32> {
    match crate::procfs::children(ppid) {
        Some(pids) => pids
            .into_iter()
            .filter(|&p| crate::procfs::stat(p).is_some_and(|s| s.state != 'Z'))
            .collect(),
        None => crate::procfs::table()
            .into_iter()
            .filter(|s| s.ppid == ppid && s.state != 'Z')
            .map(|s| s.pid)
            .collect(),
    }
}
