//! No orphans (SPEC 5.4): the guardian that outlives a SIGKILLed prun, and the
//! descendants that left their instance's process group.
//!
//! Every instance leads its own process group, registered with the guardian before it
//! execs (see `spawn`). A descendant may leave that group: into a group or session of
//! its own (`setsid`), or into prun's own group (`setpgid`). A thread reads prun's
//! process tree off the loop ([`crate::runtime::scanner`]); the loop finds such
//! processes in it (prun is a subreaper, so orphans stay in its tree) and hands them to
//! the guardian too: a foreign group as a group, a member of prun's own group as a
//! single process (the guardian must not kill prun's group). If the guardian dies, it
//! is replaced before anything else starts and told everything again.

use std::collections::HashSet;
use std::os::fd::RawFd;

use super::{Owner, Supervisor};
use crate::event::Level;
use crate::runtime::guardian::Guardian;
use crate::runtime::msg::Msg;
use crate::runtime::place::group_alive;
use crate::runtime::scanner::{Entry, Scanner};

impl Supervisor {
    pub(super) fn guardian_fd(&self) -> Option<RawFd> {
        self.guardian.as_ref().and_then(|g| g.fd())
    }

    /// Fork the guardian (at the start, and again if it dies).
    pub(super) fn start_guardian(&mut self) -> bool {
        match Guardian::start(Some(&self.run_dir)) {
            Ok(g) => {
                self.owners.insert(g.pid(), Owner::Guardian);
                self.guardian = Some(g);
                true
            }
            Err(e) => {
                self.notice(
                    Level::Warning,
                    format!("could not start the guardian process ({e}); a SIGKILL of prun may leave stages behind"),
                );
                false
            }
        }
    }

    /// Start reading prun's process tree off the loop.
    pub(super) fn start_scanner(&mut self) {
        let tx = self.msg_tx.clone();
        self.scanner = Some(Scanner::start(self.self_pid, move |table| {
            tx.send(Msg::Descendants(table)).is_ok()
        }));
    }

    /// The guardian died (it should not): start a new one and register every group
    /// and process prun knows, before anything else starts.
    pub(super) fn replace_guardian(&mut self) {
        if !self.start_guardian() {
            return;
        }
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
        if let Some(g) = self.guardian.as_mut() {
            for pgid in groups {
                if group_alive(pgid) {
                    g.adopt(pgid);
                }
            }
            for &pid in &self.adopted_pids {
                g.adopt_process(pid);
            }
        }
        self.notice(
            Level::Warning,
            "the guardian process ended early; prun started a new one".into(),
        );
    }

    /// A new table of prun's descendants: hand every group that is not an instance's
    /// own (a `setsid` escapee), and every process that joined prun's own group, to the
    /// guardian, so a SIGKILL of prun still kills them; forget those that are gone, so a
    /// recycled id is never killed. At the end of a run, `cleanup` kills them anyway.
    pub(super) fn on_descendants(&mut self, table: Vec<Entry>) {
        if self.guardian.is_none() {
            return;
        }
        let own_group = nix::unistd::getpgrp().as_raw();
        let guardian = self.guardian.as_ref().map(|g| g.pid());
        let live_groups: HashSet<i32> = table.iter().map(|e| e.2).collect();
        let live_pids: HashSet<i32> = table.iter().map(|e| e.0).collect();
        let gone: Vec<i32> = self
            .adopted
            .iter()
            .copied()
            .filter(|g| !live_groups.contains(g))
            .collect();
        let gone_pids: Vec<i32> = self
            .adopted_pids
            .iter()
            .copied()
            .filter(|p| !live_pids.contains(p))
            .collect();
        if let Some(g) = self.guardian.as_mut() {
            for pgid in gone {
                self.adopted.remove(&pgid);
                g.forget(pgid);
            }
            for pid in gone_pids {
                self.adopted_pids.remove(&pid);
                g.forget_process(pid);
            }
        }
        let known: HashSet<i32> = self
            .insts
            .iter()
            .flat_map(|i| i.pgids.iter().copied())
            .chain(self.owners.keys().copied())
            .collect();
        let mut found = Vec::new();
        // A child is in prun's group for a moment while it is being spawned (before its
        // own `setpgid`): only a process seen there in two scans in a row joined it.
        let previous = std::mem::take(&mut self.in_own_group);
        for &(pid, _, pgrp) in &table {
            if pgrp == own_group {
                if pid == self.self_pid || Some(pid) == guardian {
                    continue;
                }
                self.in_own_group.insert(pid);
                if previous.contains(&pid) && self.adopted_pids.insert(pid) {
                    if let Some(g) = self.guardian.as_mut() {
                        g.adopt_process(pid);
                    }
                    found.push(format!(
                        "pid {pid} joined prun's own process group; prun will still stop it"
                    ));
                }
                continue;
            }
            if pgrp <= 1
                || self.adopted.contains(&pgrp)
                || known.contains(&pgrp)
                || !group_is_ours(&table, pgrp, self.self_pid)
            {
                continue;
            }
            self.adopted.insert(pgrp);
            if let Some(g) = self.guardian.as_mut() {
                g.adopt(pgrp);
            }
            found.push(format!(
                "pid {pid} left its process group (setsid); prun will still stop it"
            ));
        }
        for message in found {
            self.notice(Level::Info, message);
        }
    }
}

/// The group has a member that descends from prun (so its id was not recycled).
pub(super) fn group_is_ours(table: &[Entry], pgid: i32, me: i32) -> bool {
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
