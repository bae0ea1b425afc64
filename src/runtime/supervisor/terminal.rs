//! The pipeline as a shell job (SPEC 5.3): Ctrl-Z suspends every stage and prun's
//! timers, `fg` resumes all of it.
//!
//! Stages run in process groups of their own, so the terminal's SIGTSTP reaches prun
//! only. prun then stops every stage group (SIGSTOP: a stage cannot refuse, as it
//! cannot refuse a shell's Ctrl-Z of a pipeline), stops its clock, and stops itself,
//! so the shell sees the job stopped. `fg` sends SIGCONT to prun's group: prun
//! continues every stage group and its clock runs again, with the time suspended not
//! counted against any `timeout`, stop grace or probe deadline.

use super::{Owner, Supervisor};
use crate::runtime::place::signal_group;

impl Supervisor {
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

    /// SIGTSTP: stop every stage group and the clock, then prun itself.
    pub(super) fn suspend(&mut self) {
        for g in self.running_groups() {
            signal_group(g, libc::SIGSTOP);
        }
        self.clock.pause();
        // Stop prun as the shell expects of a job; SIGCONT resumes it here.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT: every stage group continues, and the clock runs again.
    pub(super) fn resume(&mut self) {
        if !self.clock.is_paused() {
            return;
        }
        for g in self.running_groups() {
            signal_group(g, libc::SIGCONT);
        }
        self.clock.resume();
    }
}
