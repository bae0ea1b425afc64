//! What `/proc` says about processes (Linux): the one place that parses it.
//!
//! Several parts of prun look at processes they did not necessarily spawn: the
//! supervisor (descendants that escaped their group), the control socket (which
//! instance a peer belongs to), the tests (nothing left behind).
//!
//! Which instance does a process belong to? The control socket learns the peer's pid
//! from `SO_PEERCRED`; every instance is a group leader, so a peer belongs to an
//! instance when it, or one of its ancestors, is in that instance's group ([`owner_of`]):
//! the group check covers ordinary children (and orphans reparented to prun, which
//! keep their group); the ancestry walk covers descendants that moved to a group of
//! their own.

use std::collections::HashSet;

/// The fields of `/proc/<pid>/stat` prun uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Every pid currently listed in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The stat of `pid`, or None when it does not exist (any more).
pub fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and ')'.
    let after = &text[text.rfind(')')? + 1..];
    let mut it = after.split_ascii_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    let pgrp = it.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// The stat of every live process.
pub fn table() -> Vec<Stat> {
    pids().into_iter().filter_map(stat).collect()
}

/// Children of `pid`, from `/proc/<pid>/task/*/children` (one small file per thread:
/// the cost follows prun's own tree, not the number of processes on the machine).
/// None when the kernel lacks that file (CONFIG_PROC_CHILDREN) or `pid` is gone.
pub fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        let mut path = task.path();
        path.push("children");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        any = true;
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    any.then_some(out)
}

/// The stat of every live descendant of `root` (not `root` itself). Walks the tree down
/// through [`children`]; where that file is missing, filters [`table`] by ancestry.
pub fn descendants(root: i32) -> Vec<Stat> {
    let mut out = Vec::new();
    let mut todo = match children(root) {
        Some(c) => c,
        None => return descendants_from_table(root),
    };
    // Bounded: a pid recycled during the walk must not make it loop.
    while let Some(pid) = todo.pop() {
        if out.len() >= 1 << 16 {
            break;
        }
        if let Some(s) = stat(pid) {
            out.push(s);
            todo.extend(children(pid).unwrap_or_default());
        }
    }
    out
}

fn descendants_from_table(root: i32) -> Vec<Stat> {
    let all = table();
    let parent = |pid: i32| all.iter().find(|s| s.pid == pid).map(|s| s.ppid);
    let descends = |s: &Stat| {
        let mut p = s.ppid;
        for _ in 0..128 {
            if p == root {
                return true;
            }
            match parent(p) {
                Some(pp) if pp > 1 && pp != p => p = pp,
                _ => return false,
            }
        }
        false
    };
    all.iter().filter(|s| descends(s)).copied().collect()
}

// ---- which instance a process belongs to -----------------------------------------

/// (state, ppid, pgrp) of `pid`.
fn stat_fields(pid: i32) -> Option<(char, i32, i32)> {
    stat(pid).map(|s| (s.state, s.ppid, s.pgrp))
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
    for Stat {
        pid, state, pgrp, ..
    } in table()
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

/// A pipe a sleeping process is blocked on, by inode (`pipe:[N]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeBlock {
    Read(u64),
    Write(u64),
}

/// The pipe `pid` is blocked reading or writing: it sleeps (`S`) inside `read`,
/// `readv`, `pread64`, `write`, `writev` or `pwrite64` on a pipe descriptor, as
/// `/proc/<pid>/syscall` says. None for anything else (running, another call, not a
/// pipe, gone, or the file unreadable).
pub fn blocked_on_pipe(pid: i32) -> Option<PipeBlock> {
    if stat(pid)?.state != 'S' {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let mut it = text.split_ascii_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    let fd = i64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    let ino = pipe_inode(pid, fd)?;
    if [libc::SYS_read, libc::SYS_readv, libc::SYS_pread64].contains(&nr) {
        Some(PipeBlock::Read(ino))
    } else if [libc::SYS_write, libc::SYS_writev, libc::SYS_pwrite64].contains(&nr) {
        Some(PipeBlock::Write(ino))
    } else {
        None
    }
}

/// True when `pid` sleeps waiting for a child (kernel wait channel `do_wait`, or
/// `sigsuspend` for dash's `wait`).
pub fn waits_for_child(pid: i32) -> bool {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    stat(pid).is_some_and(|s| s.state == 'S')
        && (wchan.starts_with("do_wait") || wchan.starts_with("sigsuspend"))
}

/// The inode of the pipe open as descriptor `fd` of `pid`.
pub fn pipe_inode(pid: i32, fd: i64) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

/// The pipes `pid` holds open: inode and whether that descriptor is a write end.
pub fn pipe_ends(pid: i32) -> Vec<(u64, bool)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Some(ino) = pipe_inode(pid, fd) else {
            continue;
        };
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| i64::from_str_radix(f.trim(), 8).ok())
            .unwrap_or(0);
        let write = flags & i64::from(libc::O_ACCMODE) != i64::from(libc::O_RDONLY);
        out.push((ino, write));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_stat() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(table().iter().any(|s| s.pid == me));
        assert_eq!(stat(-1), None);
    }

    #[test]
    fn descendants_include_grandchildren_and_match_the_full_scan() {
        use std::process::{Command, Stdio};
        let me = std::process::id() as i32;
        // sh runs sleep as a grandchild of this test process.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let sh = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let grandchild = loop {
            let d = descendants(me);
            if let Some(g) = d.iter().find(|s| s.ppid == sh) {
                break g.pid;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild seen");
            std::thread::yield_now();
        };
        assert!(children(me).unwrap().contains(&sh));
        assert!(children(sh).unwrap().contains(&grandchild));
        let walked: Vec<i32> = descendants(me).iter().map(|s| s.pid).collect();
        let scanned: Vec<i32> = descendants_from_table(me).iter().map(|s| s.pid).collect();
        for pid in [sh, grandchild] {
            assert!(walked.contains(&pid) && scanned.contains(&pid));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.wait().unwrap();
    }

    // ---- ownership

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
