//! Shared helpers for the router tests: real pipes, real processes, and waiting on
//! router events with generous deadlines (never bare sleeps).
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use prun::plan::{Delivery, Framing, Order};
use prun::runtime::router::{QueueConfig, QueueRouter, RouterEvent};

/// (read end, write end), both close-on-exec so children only get what we give them.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors into a valid array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2 failed");
    // SAFETY: both descriptors are fresh and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub fn config(
    delivery: Delivery,
    framing: Framing,
    capacity: usize,
    sentinel: Option<&str>,
) -> QueueConfig {
    QueueConfig {
        queue: 7,
        name: "q".into(),
        capacity,
        delivery,
        framing,
        sentinel: sentinel.map(|s| s.as_bytes().to_vec()),
        order: Order::Arrival,
    }
}

pub fn start(cfg: QueueConfig) -> (QueueRouter, Receiver<RouterEvent>) {
    let (tx, rx): (Sender<RouterEvent>, Receiver<RouterEvent>) = crossbeam_channel::unbounded();
    (QueueRouter::start(cfg, tx), rx)
}

/// Collect events until `Drained` (panics after `secs`).
pub fn wait_drained(rx: &Receiver<RouterEvent>, secs: u64) -> Vec<RouterEvent> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => {
                let done = matches!(ev, RouterEvent::Drained { .. });
                seen.push(ev);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("router did not drain within {secs}s; events so far: {seen:?}"),
        }
    }
}

/// Wait for an event matching `pred` (panics after `secs`).
pub fn wait_for(
    rx: &Receiver<RouterEvent>,
    secs: u64,
    pred: impl Fn(&RouterEvent) -> bool,
) -> Vec<RouterEvent> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) => {
                let hit = pred(&ev);
                seen.push(ev);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("expected event not seen within {secs}s; events so far: {seen:?}"),
        }
    }
}

/// A writer process: its stdout is a pipe whose read end goes to the router.
pub fn spawn_writer(router: &QueueRouter, id: usize, argv: &[&str]) -> Child {
    let (r, w) = pipe();
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .spawn()
        .expect("spawn writer");
    router.add_writer(id, r);
    child
}

/// A reader process whose stdout is collected by a thread as it runs.
pub struct ReaderProc {
    pub child: Child,
    out: Option<std::thread::JoinHandle<String>>,
}

/// A reader process: its stdin is a pipe whose write end goes to the router; its stdout
/// is captured concurrently (so it never blocks on a full stdout pipe).
pub fn spawn_reader(router: &QueueRouter, id: usize, argv: &[&str]) -> ReaderProc {
    let (r, w) = pipe();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(r))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn reader");
    router.add_reader(id, w);
    let mut stdout = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    ReaderProc {
        child,
        out: Some(out),
    }
}

/// Wait for a reader and return its captured stdout.
pub fn output(mut p: ReaderProc) -> String {
    let s = p
        .out
        .take()
        .map(|h| h.join().expect("output thread"))
        .unwrap_or_default();
    p.child.wait().expect("wait child");
    s
}
