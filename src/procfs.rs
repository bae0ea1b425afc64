//! What `/proc` says about processes (Linux): the one place that parses it.
//!
//! Several parts of prun look at processes they did not necessarily spawn: the
//! supervisor (descendants that escaped their group), the control socket (which
//! instance a peer belongs to), the tests (nothing left behind).

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
        unsafe { libc::kill(grandchild, libc::SIGKILL) };
        child.wait().unwrap();
    }
}
