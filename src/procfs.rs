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
}
