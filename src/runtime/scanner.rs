//! Reading prun's process tree off the supervisor loop.
//!
//! The escape scan (descendants that left their instance's process group) needs the
//! whole tree of prun's descendants from /proc, a few hundred small reads: a thread
//! does them every [`PERIOD`] and sends the table to the loop, which only compares it
//! with what it knows. The thread ends when the loop drops the [`Scanner`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the tree is read.
pub const PERIOD: Duration = Duration::from_millis(250);

/// One live descendant: (pid, parent pid, process group).
pub type Entry = (i32, i32, i32);

pub struct Scanner {
    stop: Arc<AtomicBool>,
}

impl Scanner {
    /// Scan the descendants of `root` every [`PERIOD`], handing each table to `send`
    /// (which returns false once nobody listens).
    pub fn start(root: i32, send: impl Fn(Vec<Entry>) -> bool + Send + 'static) -> Scanner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let _ = std::thread::Builder::new()
            .name("prun-scan".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    // The scan period (not a synchronisation wait).
                    std::thread::sleep(PERIOD);
                    let table = table(root);
                    if flag.load(Ordering::Relaxed) || !send(table) {
                        return;
                    }
                }
            });
        Scanner { stop }
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (pid, parent pid, process group) of every live descendant of `root`, from /proc.
/// Only prun's own tree is read (escapees are re-parented to prun, a subreaper, so they
/// stay in it): the cost does not grow with the number of processes on the machine.
pub fn table(root: i32) -> Vec<Entry> {
    crate::procfs::descendants(root)
        .into_iter()
        .map(|s| (s.pid, s.ppid, s.pgrp))
        .collect()
}
