//! The pipeline as a shell job (SPEC 5.3): the terminal handed to the stage that reads
//! it, Ctrl-Z suspending every stage and prun's timers, `fg` resuming all of it.
//!
//! Stages run in process groups of their own, so a shell's terminal signals reach
//! prun's group only. A stage with `stdin: inherit` needs more: reading a terminal from
//! a background group stops the reader (SIGTTIN). So when prun's group is the
//! terminal's foreground group, that stage's group is made the foreground group as it
//! starts (by the child itself, before exec, see `spawn`), and prun takes the terminal
//! back when it ends. One stage at a time: a second `stdin: inherit` stage running at
//! the same time stays in the background, as a second job of a shell would.
//!
//! Ctrl-Z: the terminal sends SIGTSTP to its foreground group — prun's, or the
//! interactive stage's (which stops; prun sees it stopped). Either way prun takes the
//! terminal back, stops every stage group (SIGSTOP: a stage cannot refuse, as it cannot
//! refuse a shell's Ctrl-Z of a pipeline), stops its clock, and stops itself, so the
//! shell sees the job stopped. `fg` sends SIGCONT to prun's group: prun gives the
//! terminal back to the interactive stage, continues every stage group, and its clock
//! runs again: the time suspended counts against no `timeout`, stop grace or probe.

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask, raise};
use nix::unistd::{Pid, getpgrp, isatty, tcgetpgrp, tcsetpgrp};

use super::{Owner, Supervisor};
use crate::event::InstanceId;
use crate::runtime::place::signal_group;

/// prun's terminal (its standard input) and which instance holds it.
#[derive(Debug, Default)]
pub(super) struct Tty {
    /// The instance whose group is the terminal's foreground group.
    pub owner: Option<InstanceId>,
}

/// Standard input, when it is a terminal whose foreground group is prun's.
fn foreground_terminal() -> Option<RawFd> {
    // SAFETY: fd 0 stays open for prun's whole life; borrowed for this call only.
    let fd = unsafe { BorrowedFd::borrow_raw(0) };
    if !isatty(fd).unwrap_or(false) {
        return None;
    }
    (tcgetpgrp(fd).ok()? == getpgrp()).then_some(0)
}

/// Make `pgid` the terminal's foreground group, from prun (possibly in the background
/// itself): SIGTTOU is blocked in this thread meanwhile, so prun is not stopped.
fn give_terminal(pgid: Pid) {
    // SAFETY: fd 0 stays open for prun's whole life; borrowed for this call only.
    let fd = unsafe { BorrowedFd::borrow_raw(0) };
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_err() {
        return;
    }
    let _ = tcsetpgrp(fd, pgid);
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
}

impl Supervisor {
    /// The terminal for a new process of instance `id` (`stdin: inherit`), if prun
    /// can give it: prun holds it and no other instance does.
    pub(super) fn terminal_for(&mut self, id: InstanceId) -> Option<RawFd> {
        if self
            .tty
            .owner
            .is_some_and(|o| o != id && self.insts[o].pid().is_some())
        {
            return None;
        }
        let fd = foreground_terminal()?;
        self.tty.owner = Some(id);
        Some(fd)
    }

    /// Instance `id`'s process ended (or never started): if it held the terminal, prun
    /// takes it back.
    pub(super) fn release_terminal(&mut self, id: InstanceId) {
        if self.tty.owner == Some(id) {
            self.tty.owner = None;
            give_terminal(getpgrp());
        }
    }

    /// Every local process group of the pipeline that may be running.
    fn running_groups(&self) -> Vec<i32> {
        let mut groups: Vec<i32> = self
            .live
            .iter()
            .filter_map(|&id| self.insts[id].pid())
            .collect();
        groups.extend(
            self.owners
                .iter()
                .filter(|(_, o)| matches!(o, Owner::Probe(..) | Owner::StopCmd(_)))
                .map(|(p, _)| *p),
        );
        groups.extend(self.adopted.iter().copied());
        groups
    }

    /// A stage group was stopped by a terminal signal (Ctrl-Z while it held the
    /// terminal, SIGTTIN/SIGTTOU): the whole pipeline is suspended, as for a Ctrl-Z
    /// aimed at prun.
    pub(super) fn on_stopped(&mut self, pid: i32, sig: i32) {
        let by_terminal = matches!(
            Signal::try_from(sig),
            Ok(Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)
        );
        let holds_terminal = self.tty.owner.and_then(|o| self.insts[o].pid()) == Some(pid);
        if by_terminal && holds_terminal && !self.clock.is_paused() {
            self.suspend();
        }
    }

    /// SIGTSTP: take the terminal back, stop every stage group and the clock, then
    /// prun itself.
    pub(super) fn suspend(&mut self) {
        if self.tty.owner.is_some() {
            give_terminal(getpgrp());
        }
        for g in self.running_groups() {
            signal_group(g, libc::SIGSTOP);
        }
        self.clock.pause();
        // Stop prun as the shell expects of a job; SIGCONT resumes it here.
        let _ = raise(Signal::SIGSTOP);
    }

    /// SIGCONT: the terminal back to the stage that held it, every stage group
    /// continues, and the clock runs again.
    pub(super) fn resume(&mut self) {
        if !self.clock.is_paused() {
            return;
        }
        if let Some(pid) = self.tty.owner.and_then(|o| self.insts[o].pid())
            && foreground_terminal().is_some()
        {
            give_terminal(Pid::from_raw(pid));
        }
        for g in self.running_groups() {
            signal_group(g, libc::SIGCONT);
        }
        self.clock.resume();
    }
}
