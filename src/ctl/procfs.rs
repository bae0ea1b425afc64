//! Which instance does a process belong to? Answers from `/proc` (Linux).
//!
//! The control socket learns the peer's pid from `SO_PEERCRED`; the supervisor knows
//! each instance's process group (every instance is a group leader, so pgid = pid of
//! the instance's first process). A peer belongs to an instance when it, or one of
//! its ancestors, is in that instance's group: the group check covers ordinary
//! children (and orphans reparented to prun, the subreaper, which keep their group);
//! the ancestry walk covers descendants that moved to a group of their own.

use std::collections::HashSet;

/// (state, ppid, pgrp) of `pid`.
fn stat_fields(pid: i32) -> Option<(char, i32, i32)> {
    crate::procfs::stat(pid).map(|s| (s.state, s.ppid, s.pgrp))
}

/// Process group of `pid`, or None when it does not exist (any more).
pub fn process_group_of(pid: i32) -> Option<i32> {
    stat_fields(pid).map(|(_, _, pgrp)| pgrp)
}

/// Parent of `pid`, or None when it does not exist (any more).
pub fn parent_of(pid: i32) -> Option<i32> {
    stat_fields(pid).map(|(_, ppid, _)| ppid)
}

/// Find the owner of `pid`: `lookup` is asked for the process group of `pid`, then of
/// each ancestor in turn (up to, not including, init), and the first answer wins.
pub fn owner_of<T>(pid: i32, mut lookup: impl FnMut(i32) -> Option<T>) -> Option<T> {
    let mut current = pid;
    // Bounded: pid trees are shallow, and a pid recycled mid-walk must not loop us.
    for _ in 0..128 {
        if current <= 1 {
            return None;
        }
        let (_, ppid, pgrp) = stat_fields(current)?;
        if let Some(found) = lookup(pgrp) {
            return Some(found);
        }
        current = ppid;
    }
    None
}

/// True when every process of group `pgid` is passive: parked in a `prun ctl` wait
/// (its pid is in `parked`), a zombie, or sleeping in `wait()` for a child (typically
/// the shell that runs `prun ctl`; kernel wait channel `do_wait` or `sigsuspend`). Used to confirm that an instance with parked ctl
/// waits is really blocked before calling it deadlocked. Errs on the side of "not
/// parked": false when the group is empty or `/proc/<pid>/wchan` says nothing.
pub fn group_is_parked(pgid: i32, parked: &HashSet<i32>) -> bool {
    let mut members = 0;
    for crate::procfs::Stat {
        pid, state, pgrp, ..
    } in crate::procfs::table()
    {
        if pgrp != pgid {
            continue;
        }
        members += 1;
        if parked.contains(&pid) || state == 'Z' {
            continue;
        }
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        // `do_wait`: in wait4(); `sigsuspend`: dash's `wait` builtin.
        let waiting_for_child = wchan.starts_with("do_wait") || wchan.starts_with("sigsuspend");
        if state == 'S' && waiting_for_child {
            continue;
        }
        return false;
    }
    members > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::{Duration, Instant};

    #[test]
    fn own_group_and_parent() {
        let me = std::process::id() as i32;
        assert_eq!(process_group_of(me), Some(nix::unistd::getpgrp().as_raw()));
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
        assert_eq!(process_group_of(-5), None);
        assert_eq!(process_group_of(i32::MAX), None);
    }

    fn group_members(pgid: i32) -> HashSet<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| process_group_of(p) == Some(pgid))
            .collect()
    }

    #[test]
    fn owner_found_through_group_then_ancestry() {
        // A shell in its own group that waits for a background child.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let leader = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        let inner = loop {
            let kids: Vec<i32> = group_members(leader)
                .into_iter()
                .filter(|&p| p != leader)
                .collect();
            if let Some(&k) = kids.first() {
                break k;
            }
            assert!(Instant::now() < deadline, "inner process never appeared");
            std::thread::sleep(Duration::from_millis(10));
        };
        // By group.
        assert_eq!(
            owner_of(inner, |g| (g == leader).then_some("inst")),
            Some("inst")
        );
        // By ancestry: inner -> leader -> this test process, whose group matches.
        let ours = nix::unistd::getpgrp().as_raw();
        assert_eq!(
            owner_of(inner, |g| (g == ours).then_some("test")),
            Some("test")
        );
        assert_eq!(owner_of(inner, |_| None::<()>), None);
        // This process is not part of the instance.
        assert_eq!(
            owner_of(std::process::id() as i32, |g| (g == leader).then_some(1)),
            None
        );

        // `sleep` is busy (not parked); once it counts as parked, the leader shell
        // sleeping in wait() does not keep the group busy.
        assert!(!group_is_parked(leader, &HashSet::new()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let parked: HashSet<i32> = [inner].into();
        while !group_is_parked(leader, &parked) {
            assert!(
                Instant::now() < deadline,
                "leader shell never seen in wait()"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(leader),
            nix::sys::signal::SIGKILL,
        )
        .ok();
        child.wait().ok();
        // The killed `sleep` may linger as a zombie until its new parent reaps it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_is_parked(leader, &parked) {
            assert!(
                Instant::now() < deadline,
                "an empty group must not count as parked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
