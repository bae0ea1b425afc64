//! The supervisor loop: the single owner of every child process and every wait.
//!
//! One thread runs [`Supervisor::run`]. It alone spawns stage instances (and probe and
//! stop commands), alone calls `waitpid(-1)` (prun is a child subreaper, so orphaned
//! descendants are reaped here too and no exit status is ever stolen), and alone
//! decides state transitions. Everything else feeds it messages on one channel:
//! signals (via signal-hook), log-line matches and probe results from helper threads,
//! and router events. It reports by sending [`Event`]s; it never prints.
//!
//! Each pass of the loop: reap → fire due timers and ctl wait deadlines → create
//! foreach instances for free slots and start what may start (after conditions,
//! events and permits, skipping what never can) → close queues → advance the shutdown
//! → look for a deadlock → wait for the next message, ctl request, queue record
//! (`foreach: {queue}`) or deadline.
//!
//! Submodules: `batch` (foreach stages, `--resume`) and `coordinate` (the control
//! socket, deadlock detection); semaphores and events live in one
//! [`Coord`](super::coord::Coord) owned by this loop, `prun ctl` waits in one
//! [`CtlBroker`](crate::ctl::CtlBroker).
//!
//! Decisions where the SPEC is silent:
//! - `on_failure: ignore` makes a failure count as success for `after` conditions too.
//! - `could not start` is never restarted (it would fail the same way); its pipeline
//!   exit code is 127 (not found) or 126 (other exec errors), as in a shell.
//! - A readiness timeout ends the instance as `failed (not ready within …)`.
//! - Whatever ends after prun asked it to stop is `stopped`, whatever its exit status
//!   (a timeout stays `timed out`). A restart pending at shutdown is cancelled and the
//!   last run's end state stands.
//! - Interrupt/failure shutdown: a reader whose input is closed gets `stop.timeout` to
//!   finish on its own, then its stop signal, then SIGKILL after another
//!   `stop.timeout`. At a normal end, daemon readers get the stop signal right after EOF.
//! - Group members left after their leader exits are SIGKILLed at the end of the run;
//!   processes that left their group (`setsid`) are found as re-parented children of
//!   prun and killed with their own group.
//! - Semaphores (`semaphore:`): an instance asks for its permits (all at once, FIFO)
//!   only once its `after` conditions and `waits:` events hold, holds them while its
//!   process runs, and gives them back — with any permit taken through `prun ctl` —
//!   whenever its process ends, also before a restart (the restart asks again).
//! - `waits:` are checked when the instance starts; clearing the event later does not
//!   stop it. An event cleared while the instance waited for permits makes it give
//!   them back until the event is set again.
//! - `sets:` triggers: `started` when the process is spawned, `ready` when it is
//!   ready, `succeeded`/`failed`/`exited` at every end of a run (so a restart can set
//!   them again), `{line}` on the first matching log line of each run.
//! - Deadlocks (nothing able to act can give what waiting instances need) fail the
//!   run with exit code 1 and a message naming who waits for what and who holds what
//!   (see `coordinate`).
//! - Every stage gets the directory of the running prun first on its PATH and
//!   `PRUN_EXE`, so `prun ctl` works in stages when prun is not installed.
//! - `PRUN_INSTANCE` is the index (like `${instance}`); `PRUN_INSTANCE_NAME` is added.
//! - When stdout and stderr are both `log`, they share one pipe so their relative
//!   order is kept.

mod batch;
mod coordinate;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::plan::{
    CommandTemplate, Condition, FdDirection, Input, InstanceVars, Instances, OnFailure, Output,
    Plan, ProbeKind, QueueId, RestartPolicy, Trigger, Wiring,
};

use super::coord::Coord;
use super::drain::{self, LineAction, LineMatcher};
use super::guardian::Guardian;
use super::router::{QueueConfig, QueueRouter, RouterEvent};
use super::spawn::{self, ChildFd, SpawnSpec};
use crate::ctl::{CtlBroker, CtlRequest, CtlServer};
use crate::event::{Event, InstanceId, InstanceInfo, Level, RunStatus, ShutdownCause, State};
use batch::Batch;

/// How long a SIGPIPE death waits for its readers' exits to be reaped before it is
/// judged (the reader's exit and the writer's death can be reaped in either order).
const SIGPIPE_GRACE: Duration = Duration::from_millis(300);
/// Longest sleep of the loop, a safety net only (SIGCHLD wakes it).
const MAX_WAIT: Duration = Duration::from_millis(250);
/// Period of the `QueueProgress` events (records/s on the status board).
const QUEUE_TICK: Duration = Duration::from_secs(1);
/// How often prun looks for descendants that left their process group (`setsid`), so
/// the guardian can kill them too if prun is SIGKILLed.
const ESCAPE_SCAN: Duration = Duration::from_millis(250);
/// After a queue is cut short during a stop, how long its readers get to take the rest
/// of the record each is in the middle of (and so see EOF) before the stop signal.
const CUT_GRACE: Duration = Duration::from_millis(500);
/// Poll period of `ready: {file}`.
const FILE_PROBE_PERIOD: Duration = Duration::from_millis(50);

/// Messages into the loop.
#[derive(Debug)]
pub enum Msg {
    /// SIGINT, SIGTERM or SIGHUP received by prun.
    Signal(i32),
    /// SIGCHLD: some child may be waitable.
    Child,
    /// A log line matched a probe or trigger of this run (`generation`) of an instance.
    Line {
        id: InstanceId,
        generation: u64,
        action: LineAction,
    },
    /// A TCP probe connected.
    ProbeOk { id: InstanceId, generation: u64 },
    /// A log drain thread ended.
    DrainDone,
}

/// How a process ended, from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            Exit {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            Exit {
                code: None,
                signal: None,
            }
        }
    }
}

/// Who a pid belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Instance(InstanceId),
    Probe(InstanceId, u64),
    StopCmd,
    Guardian,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Permit {
    None,
    Requested,
    Held,
}

/// A queue endpoint attached to a router for the current process of an instance.
#[derive(Debug, Clone, Copy)]
struct RouterPort {
    queue: QueueId,
    writer: bool,
    id: usize,
}

struct Inst {
    info: InstanceInfo,
    state: State,
    /// Leader pid (= process group id) of the current process.
    pid: Option<i32>,
    last_pid: Option<i32>,
    /// Every process group this instance has had, for the final sweep.
    pgids: Vec<i32>,
    generation: u64,
    restarts: u32,
    /// End state of the last run, kept while a restart is pending.
    last_end: Option<State>,
    restart_at: Option<Instant>,
    ever_started: bool,
    ever_ready: bool,
    timeout_at: Option<Instant>,
    timed_out: bool,
    ready_deadline: Option<Instant>,
    ready_failed: bool,
    ready_at: Option<Instant>,
    probe_next: Option<Instant>,
    probe_pid: Option<i32>,
    tcp_cancel: Option<Arc<AtomicBool>>,
    /// prun asked it to stop (shutdown or daemon end).
    stopping: bool,
    kill_at: Option<Instant>,
    /// Shutdown: its input is closed; it may finish on its own until then.
    eof_grace_at: Option<Instant>,
    permit: Permit,
    /// Died of SIGPIPE; judged once its readers are known to have ended.
    pending_pipe: Option<(Exit, Instant)>,
    /// Exit code used for the pipeline when it could not start.
    start_error_code: i32,
    ports: Vec<RouterPort>,
    /// Reader ports (queue, port id) of this instance's last run, which its routers
    /// were told may be restarted (`reader_may_restart`): records they gave back wait
    /// for the restart rather than reach another reader out of order. Released with
    /// `reader_not_coming` once the restart joins, or when none will come.
    expected_by: Vec<(QueueId, usize)>,
}

#[derive(Default)]
struct QueueRt {
    direct_made: bool,
    direct_read: Option<OwnedFd>,
    direct_write: Option<OwnedFd>,
    writers_closed: bool,
    drained: bool,
    aborted: bool,
    /// When the queue was cut short during a stop (`QueueRouter::cut`).
    cut_at: Option<Instant>,
    /// Router port id → instance.
    port_owner: HashMap<usize, InstanceId>,
}

struct Shutdown {
    cause: ShutdownCause,
    step: usize,
    step_since: Instant,
    next_notice: Instant,
    signals: u32,
}

pub struct Supervisor {
    plan: Plan,
    events: Sender<Event>,
    logs: Sender<Event>,
    msg_tx: Sender<Msg>,
    msg_rx: Receiver<Msg>,
    router_tx: Sender<RouterEvent>,
    router_rx: Receiver<RouterEvent>,
    start: Instant,
    run_dir: PathBuf,
    insts: Vec<Inst>,
    by_stage: Vec<Vec<InstanceId>>,
    owners: HashMap<i32, Owner>,
    guardian: Option<Guardian>,
    coord: Coord,
    broker: CtlBroker,
    ctl: Option<CtlServer>,
    /// Per stage: the foreach state (None for replica stages).
    batches: Vec<Option<Batch>>,
    /// `(stage, item)` pairs that succeeded in the `--resume` report.
    resume: HashSet<(String, String)>,
    /// A deadlock seen by the last check: who, and since when (confirmed after a grace).
    deadlock_seen: Option<(Vec<u64>, Instant)>,
    next_deadlock_check: Instant,
    /// Next `QueueProgress` report (routed queues only).
    next_queue_tick: Option<Instant>,
    /// Next look for escaped descendants, and the groups handed to the guardian so far.
    next_escape_scan: Instant,
    adopted: HashSet<i32>,
    /// `PRUN_EXE` and the directory put first on every stage's PATH.
    exe: Option<PathBuf>,
    routers: Vec<Option<QueueRouter>>,
    queues: Vec<QueueRt>,
    shutdown: Option<Shutdown>,
    first_failure: Option<i32>,
    drains: usize,
    next_port: usize,
    self_pid: i32,
}

impl Supervisor {
    pub fn new(
        plan: Plan,
        sinks: super::Sinks,
        msg_tx: Sender<Msg>,
        msg_rx: Receiver<Msg>,
        run_dir: PathBuf,
    ) -> Supervisor {
        let (router_tx, router_rx) = crossbeam_channel::unbounded();
        let mut insts = Vec::new();
        let mut by_stage = Vec::new();
        for (sid, stage) in plan.stages.iter().enumerate() {
            let mut ids = Vec::new();
            let (count, named) = match &stage.instances {
                Instances::Replicas {
                    count,
                    named_by_index,
                } => (*count, *named_by_index),
                // foreach instances are created when the stage starts (`batch`).
                Instances::Foreach { .. } => (0, false),
            };
            for index in 0..count {
                let id = insts.len();
                let name = if named {
                    format!("{}.{index}", stage.name)
                } else {
                    stage.name.clone()
                };
                let info = InstanceInfo {
                    id,
                    name,
                    stage: sid,
                    stage_name: stage.name.clone(),
                    index,
                    item: None,
                    daemon: stage.daemon,
                    resumed: false,
                };
                insts.push(Inst::new(info));
                ids.push(id);
            }
            by_stage.push(ids);
        }
        let coord = Coord::new(&plan.semaphores, &plan.events);
        let batches = plan.stages.iter().map(Batch::for_stage).collect();
        let queues = plan.queues.iter().map(|_| QueueRt::default()).collect();
        let routers = plan.queues.iter().map(|_| None).collect();
        Supervisor {
            plan,
            events: sinks.events,
            logs: sinks.logs,
            msg_tx,
            msg_rx,
            router_tx,
            router_rx,
            start: Instant::now(),
            run_dir,
            insts,
            by_stage,
            owners: HashMap::new(),
            guardian: None,
            coord,
            broker: CtlBroker::new(),
            ctl: None,
            batches,
            resume: HashSet::new(),
            deadlock_seen: None,
            next_deadlock_check: Instant::now(),
            next_queue_tick: None,
            next_escape_scan: Instant::now() + ESCAPE_SCAN,
            adopted: HashSet::new(),
            exe: std::env::current_exe().ok(),
            routers,
            queues,
            shutdown: None,
            first_failure: None,
            drains: 0,
            next_port: 0,
            self_pid: std::process::id() as i32,
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    fn notice(&self, level: Level, message: String) {
        self.emit(Event::Notice { level, message });
    }

    fn since_start(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    /// Run to the end; returns prun's exit code.
    pub fn run(mut self) -> i32 {
        self.start = Instant::now();
        self.emit(Event::PipelineStarted {
            pipeline: self.plan.name.clone(),
            instances: self.insts.iter().map(|i| i.info.clone()).collect(),
            queues: self.plan.queues.iter().map(|q| q.name.clone()).collect(),
        });
        match Guardian::start() {
            Ok(g) => {
                self.owners.insert(g.pid(), Owner::Guardian);
                self.guardian = Some(g);
            }
            Err(e) => self.notice(
                Level::Warning,
                format!("could not start the guardian process ({e}); a SIGKILL of prun may leave stages behind"),
            ),
        }
        for q in 0..self.plan.queues.len() {
            if self.plan.queues[q].wiring == Wiring::Routed {
                let qp = &self.plan.queues[q];
                let cfg = QueueConfig {
                    queue: q,
                    name: qp.name.clone(),
                    capacity: qp.capacity,
                    delivery: qp.delivery,
                    framing: qp.framing,
                    sentinel: qp.sentinel.clone(),
                };
                self.routers[q] = Some(QueueRouter::start(cfg, self.router_tx.clone()));
            }
        }
        self.start_ctl();
        self.attach_batch_queues();
        if self.routers.iter().any(|r| r.is_some()) {
            self.next_queue_tick = Some(Instant::now() + QUEUE_TICK);
        }

        loop {
            self.reap();
            let now = Instant::now();
            self.fire_timers(now);
            self.expire_ctl(now);
            self.queue_tick(now);
            self.escape_scan(now);
            self.schedule();
            self.check_queues();
            self.advance_shutdown();
            if self.shutdown.is_none()
                && !self.any_batch_open()
                && self.all_done(|i| i.info.daemon)
                && self.queues_settled()
            {
                self.begin_shutdown(ShutdownCause::Finished);
                self.advance_shutdown();
            }
            if self.shutdown.is_none() {
                self.check_deadlock(now);
            }
            if self.shutdown.is_some() && self.all_done(|_| false) {
                break;
            }
            self.wait(now);
        }
        self.finish()
    }

    /// Use the `(stage, item)` pairs of a `--resume` report: those items are not run.
    pub fn with_resume(mut self, resume: HashSet<(String, String)>) -> Supervisor {
        self.resume = resume;
        self
    }

    /// True when every instance (except those `ignore` selects) reached an end state.
    fn all_done(&self, ignore: impl Fn(&Inst) -> bool) -> bool {
        self.insts.iter().all(|i| ignore(i) || i.is_final())
    }

    fn wait(&mut self, now: Instant) {
        let deadline = self
            .next_deadline()
            .unwrap_or(now + MAX_WAIT)
            .min(now + MAX_WAIT);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let msg_rx = self.msg_rx.clone();
        let router_rx = self.router_rx.clone();
        let ctl_rx = self.ctl.as_ref().map(|c| c.requests().clone());
        // foreach-over-queue stages with a free slot: a record may start an instance.
        let feeds = self.record_feeds();
        enum Got {
            Msg(Msg),
            Router(RouterEvent),
            Ctl(CtlRequest),
            Record(usize, Option<Vec<u8>>),
            Nothing,
        }
        let got = {
            let mut sel = crossbeam_channel::Select::new();
            let i_msg = sel.recv(&msg_rx);
            let i_router = sel.recv(&router_rx);
            let i_ctl = ctl_rx.as_ref().map(|r| sel.recv(r));
            let i_feeds: Vec<usize> = feeds.iter().map(|(_, r)| sel.recv(r)).collect();
            match sel.select_timeout(timeout) {
                Err(_) => Got::Nothing,
                Ok(op) => {
                    let i = op.index();
                    if i == i_msg {
                        op.recv(&msg_rx).map_or(Got::Nothing, Got::Msg)
                    } else if i == i_router {
                        op.recv(&router_rx).map_or(Got::Nothing, Got::Router)
                    } else if Some(i) == i_ctl {
                        match &ctl_rx {
                            Some(r) => op.recv(r).map_or(Got::Nothing, Got::Ctl),
                            None => Got::Nothing,
                        }
                    } else {
                        match i_feeds.iter().position(|&f| f == i) {
                            Some(k) => Got::Record(feeds[k].0, op.recv(&feeds[k].1).ok()),
                            None => Got::Nothing,
                        }
                    }
                }
            }
        };
        match got {
            Got::Msg(m) => self.handle(m),
            Got::Router(ev) => self.handle_router(ev),
            Got::Ctl(req) => self.handle_ctl(req),
            Got::Record(stage, rec) => self.on_record(stage, rec),
            Got::Nothing => {}
        }
        // Drain whatever else is already queued without sleeping again.
        while let Ok(msg) = self.msg_rx.try_recv() {
            self.handle(msg);
        }
        while let Ok(ev) = self.router_rx.try_recv() {
            self.handle_router(ev);
        }
        if let Some(r) = &ctl_rx {
            while let Ok(req) = r.try_recv() {
                self.handle_ctl(req);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for i in &self.insts {
            consider(i.restart_at);
            consider(i.timeout_at);
            consider(i.kill_at);
            consider(i.ready_deadline);
            consider(i.ready_at);
            consider(i.probe_next);
            consider(i.eof_grace_at);
            consider(i.pending_pipe.map(|(_, t)| t));
        }
        consider(self.broker.next_deadline());
        consider(self.next_queue_tick);
        for qr in &self.queues {
            if !qr.drained && !qr.aborted {
                consider(qr.cut_at.map(|t| t + CUT_GRACE));
            }
        }
        if self.insts.iter().any(|i| i.pid.is_some()) {
            consider(Some(self.next_escape_scan));
        }
        if self.deadlock_seen.is_some() {
            consider(Some(self.next_deadlock_check));
        }
        if let Some(s) = &self.shutdown {
            consider(Some(s.next_notice));
            if let Some(step) = self.plan.stop_order.get(s.step) {
                let grace = step
                    .iter()
                    .map(|&st| self.plan.stages[st].stop.timeout)
                    .max()
                    .unwrap_or_default();
                let step_end = s.step_since + grace;
                // Once passed, the step deadline has done its job (no busy loop).
                if step_end > Instant::now() {
                    consider(Some(step_end));
                }
            }
        }
        next
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            // Reaping happens at the top of every pass.
            Msg::Child => {}
            Msg::DrainDone => self.drains = self.drains.saturating_sub(1),
            Msg::Signal(sig) => self.on_signal(sig),
            Msg::Line {
                id,
                generation,
                action,
            } => {
                if self.insts[id].generation != generation {
                    return;
                }
                match action {
                    LineAction::Ready => {
                        if self.insts[id].pid.is_some() {
                            self.mark_ready(id);
                        }
                    }
                    LineAction::SetEvent(e) => self.coord_set_event(e),
                }
            }
            Msg::ProbeOk { id, generation } => {
                if self.insts[id].generation == generation && self.insts[id].pid.is_some() {
                    self.mark_ready(id);
                }
            }
        }
    }

    fn handle_router(&mut self, ev: RouterEvent) {
        match ev {
            RouterEvent::Drained { queue } => {
                if let Some(q) = self.queues.get_mut(queue) {
                    q.drained = true;
                }
            }
            RouterEvent::WriterDone { .. } | RouterEvent::ReaderGone { .. } => {}
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match &mut self.shutdown {
            Some(s) if s.signals > 0 => {
                s.signals += 1;
                self.notice(
                    Level::Warning,
                    "second signal: killing every process group".into(),
                );
                self.kill_all();
            }
            Some(s) => {
                s.signals = 1;
                s.cause = ShutdownCause::Signal(sig);
                self.emit(Event::ShutdownStarted {
                    cause: ShutdownCause::Signal(sig),
                });
            }
            None => self.begin_shutdown(ShutdownCause::Signal(sig)),
        }
    }

    // ---------------------------------------------------------------- reaping

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid; this loop is the only waiter of the process.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            let exit = Exit::from_status(status);
            match self.owners.remove(&pid) {
                Some(Owner::Instance(id)) => self.on_exit(id, pid, exit),
                Some(Owner::Probe(id, generation)) => {
                    self.forget_group_if_empty(pid);
                    let inst = &mut self.insts[id];
                    if inst.probe_pid == Some(pid) {
                        inst.probe_pid = None;
                    }
                    if inst.generation == generation && inst.pid.is_some() && !inst.is_ready() {
                        if exit.code == Some(0) {
                            self.mark_ready(id);
                        } else if let Some(ProbeKind::Cmd { interval, .. }) = self.plan.stages
                            [inst.info.stage]
                            .ready
                            .as_ref()
                            .map(|r| &r.kind)
                        {
                            inst.probe_next = Some(Instant::now() + *interval);
                        }
                    }
                }
                Some(Owner::StopCmd) => self.forget_group_if_empty(pid),
                Some(Owner::Guardian) if self.guardian.as_ref().is_some_and(|g| g.pid() == pid) => {
                    self.notice(Level::Warning, "the guardian process ended early".into());
                    self.guardian = None;
                }
                Some(Owner::Guardian) => {}
                // A re-parented descendant (prun is a subreaper): reaped, nothing else.
                None => {}
            }
        }
    }

    fn forget_group_if_empty(&mut self, pgid: i32) {
        if !group_alive(pgid)
            && let Some(g) = self.guardian.as_mut()
        {
            g.forget(pgid);
        }
    }

    fn on_exit(&mut self, id: InstanceId, pid: i32, exit: Exit) {
        self.forget_group_if_empty(pid);
        // Keep only groups that still have members: an empty group's id may be
        // recycled by an unrelated process, which the final sweep must not hit.
        self.insts[id].pgids.retain(|&g| group_alive(g));
        let now = Instant::now();
        {
            let inst = &mut self.insts[id];
            inst.pid = None;
            inst.timeout_at = None;
            inst.kill_at = None;
            inst.ready_deadline = None;
            inst.ready_at = None;
            inst.probe_next = None;
            inst.eof_grace_at = None;
            if let Some(c) = inst.tcp_cancel.take() {
                c.store(true, Ordering::Relaxed);
            }
            if let Some(p) = inst.probe_pid.take() {
                kill_group(p, libc::SIGKILL);
            }
        }
        let ports = std::mem::take(&mut self.insts[id].ports);
        // Readers announced as restartable are awaited by their routers until the
        // restart joins or `finish_run` says none comes (see `expected_by`).
        let restartable =
            self.plan.stages[self.insts[id].info.stage].restart.policy != RestartPolicy::Never;
        for port in &ports {
            if !port.writer && restartable && self.routers[port.queue].is_some() {
                self.insts[id].expected_by.push((port.queue, port.id));
            }
        }
        for port in ports {
            if !port.writer
                && let Some(r) = &self.routers[port.queue]
            {
                r.reader_exited(port.id);
            }
        }
        if exit.signal == Some(libc::SIGPIPE) && !self.insts[id].stopping {
            // Judged in `fire_timers` once the readers' exits are known.
            self.insts[id].pending_pipe = Some((exit, now + SIGPIPE_GRACE));
            return;
        }
        let state = self.classify(id, exit);
        self.finish_run(id, state);
    }

    fn classify(&self, id: InstanceId, exit: Exit) -> State {
        let inst = &self.insts[id];
        let stage = &self.plan.stages[inst.info.stage];
        if inst.timed_out {
            return State::TimedOut {
                exit_code: exit.code,
                signal: exit.signal,
            };
        }
        if inst.ready_failed {
            let t = stage
                .ready
                .as_ref()
                .and_then(|r| r.timeout)
                .unwrap_or_default();
            return State::Failed {
                exit_code: exit.code,
                signal: exit.signal,
                reason: Some(format!(
                    "not ready within {}",
                    humantime::format_duration(t)
                )),
            };
        }
        if inst.stopping {
            return State::Stopped {
                exit_code: exit.code,
                signal: exit.signal,
            };
        }
        match (exit.code, exit.signal) {
            (Some(c), _) if stage.success_codes.contains(&c) => State::Succeeded {
                downstream_closed: false,
            },
            (Some(c), _) => State::Failed {
                exit_code: Some(c),
                signal: None,
                reason: None,
            },
            (None, Some(libc::SIGPIPE)) if self.downstream_closed(id) => State::Succeeded {
                downstream_closed: true,
            },
            (None, Some(s)) => State::Killed { signal: s },
            (None, None) => State::Failed {
                exit_code: None,
                signal: None,
                reason: None,
            },
        }
    }

    /// Every reader of every queue this instance writes has ended.
    fn downstream_closed(&self, id: InstanceId) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let outs = output_queues(stage);
        !outs.is_empty()
            && outs
                .iter()
                .all(|&q| self.queues[q].aborted || self.readers_done(q))
    }

    /// An instance's process (or its attempt to start) is over: restart or end.
    fn finish_run(&mut self, id: InstanceId, state: State) {
        let now = Instant::now();
        let stage_id = self.insts[id].info.stage;
        let restart_spec = self.plan.stages[stage_id].restart.clone();
        let on_failure = self.plan.stages[stage_id].on_failure;
        let failure = failure_code(&state, self.insts[id].start_error_code);
        self.fire_sets(id, |t| match t {
            Trigger::Exited => {
                !matches!(state, State::Skipped { .. } | State::CouldNotStart { .. })
            }
            Trigger::Succeeded => matches!(state, State::Succeeded { .. }),
            Trigger::Failed => failure.is_some(),
            _ => false,
        });
        let restart = self.shutdown.is_none()
            && !matches!(state, State::Skipped { .. } | State::CouldNotStart { .. })
            && match restart_spec.policy {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => failure.is_some(),
                RestartPolicy::Always => true,
            }
            && restart_spec.max.is_none_or(|m| self.insts[id].restarts < m);
        self.release_permits(id);
        if !restart {
            self.withdraw_expected(id);
        }
        if restart {
            let attempt = self.insts[id].restarts + 1;
            let delay = restart_spec.delay(attempt);
            self.set_state(id, state.clone());
            let inst = &mut self.insts[id];
            inst.last_end = Some(state);
            inst.restarts = attempt;
            inst.restart_at = Some(now + delay);
            inst.state = State::Waiting;
            self.emit(Event::Restarting { id, attempt, delay });
            self.set_state(id, State::Waiting);
            return;
        }
        self.set_state(id, state);
        if let Some(code) = failure {
            if on_failure != OnFailure::Ignore && self.first_failure.is_none() {
                self.first_failure = Some(code);
            }
            if on_failure == OnFailure::Stop && self.shutdown.is_none() {
                self.begin_shutdown(ShutdownCause::Failure);
            }
        }
    }

    /// The readers of `expected_by` will not come back (or have, as new readers).
    fn withdraw_expected(&mut self, id: InstanceId) {
        for (q, port) in std::mem::take(&mut self.insts[id].expected_by) {
            if let Some(r) = &self.routers[q] {
                r.reader_not_coming(port);
            }
        }
    }

    fn set_state(&mut self, id: InstanceId, state: State) {
        let now = Instant::now();
        let inst = &mut self.insts[id];
        inst.state = state.clone();
        let pid = inst.pid.or(inst.last_pid).map(|p| p as u32);
        let restarts = inst.restarts;
        let at = self.since_start(now);
        self.emit(Event::StateChanged {
            id,
            state,
            pid,
            at,
            restarts,
        });
    }

    // ---------------------------------------------------------------- timers

    fn fire_timers(&mut self, now: Instant) {
        for id in 0..self.insts.len() {
            let inst = &mut self.insts[id];
            if inst.restart_at.is_some_and(|t| t <= now) {
                inst.restart_at = None;
            }
            if let Some((exit, until)) = inst.pending_pipe {
                if self.downstream_closed(id) || until <= now {
                    self.insts[id].pending_pipe = None;
                    let state = self.classify(id, exit);
                    self.finish_run(id, state);
                }
                continue;
            }
            let inst = &mut self.insts[id];
            let Some(pid) = inst.pid else { continue };
            if inst.kill_at.is_some_and(|t| t <= now) {
                inst.kill_at = None;
                kill_group(pid, libc::SIGKILL);
            }
            if inst.timeout_at.is_some_and(|t| t <= now) {
                inst.timeout_at = None;
                inst.timed_out = true;
                self.begin_stop(id);
                continue;
            }
            let inst = &mut self.insts[id];
            if inst.ready_deadline.is_some_and(|t| t <= now) {
                inst.ready_deadline = None;
                inst.ready_failed = true;
                self.begin_stop(id);
                continue;
            }
            let inst = &mut self.insts[id];
            if inst.eof_grace_at.is_some_and(|t| t <= now) {
                inst.eof_grace_at = None;
                self.begin_stop(id);
                continue;
            }
            let inst = &mut self.insts[id];
            if inst.ready_at.is_some_and(|t| t <= now) {
                inst.ready_at = None;
                self.mark_ready(id);
                continue;
            }
            let inst = &mut self.insts[id];
            if inst.probe_next.is_some_and(|t| t <= now) && inst.probe_pid.is_none() {
                inst.probe_next = None;
                self.run_probe(id, now);
            }
        }
        if let Some(s) = &mut self.shutdown
            && s.next_notice <= now
        {
            {
                s.next_notice = now + Duration::from_secs(2);
                let names: Vec<String> = self
                    .insts
                    .iter()
                    .filter(|i| !i.is_final())
                    .map(|i| i.info.name.clone())
                    .collect();
                if !names.is_empty() {
                    self.emit(Event::StillWaiting { names });
                }
            }
        }
    }

    /// Hand every process group that descends from prun but is not an instance's own
    /// group (a `setsid` escapee) to the guardian, so a SIGKILL of prun still kills it;
    /// forget adopted groups that are gone, so a recycled id is never killed. At the end
    /// of a normal run, `sweep_descendants` kills escapees anyway.
    fn escape_scan(&mut self, now: Instant) {
        if now < self.next_escape_scan || self.guardian.is_none() {
            return;
        }
        self.next_escape_scan = now + ESCAPE_SCAN;
        if !self.insts.iter().any(|i| i.pid.is_some()) {
            return;
        }
        let table = process_table(self.self_pid);
        // SAFETY: getpgrp cannot fail.
        let own_group = unsafe { libc::getpgrp() };
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

    /// Queue counters for the status board, about once a second.
    fn queue_tick(&mut self, now: Instant) {
        if self.next_queue_tick.is_none_or(|t| t > now) {
            return;
        }
        self.next_queue_tick = Some(now + QUEUE_TICK);
        for q in 0..self.routers.len() {
            if let Some(r) = &self.routers[q] {
                let records = r.stats().records;
                self.emit(Event::QueueProgress {
                    queue: q,
                    name: self.plan.queues[q].name.clone(),
                    records,
                });
            }
        }
    }

    fn run_probe(&mut self, id: InstanceId, now: Instant) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let Some(probe) = &stage.ready else { return };
        match &probe.kind {
            ProbeKind::File(t) => {
                let path = self.resolve_path(&t.render(&self.vars(id)));
                if path.exists() {
                    self.mark_ready(id);
                } else {
                    self.insts[id].probe_next = Some(now + FILE_PROBE_PERIOD);
                }
            }
            ProbeKind::Cmd { argv, interval } => {
                let vars = self.vars(id);
                let argv: Vec<OsString> = argv.iter().map(|t| t.render(&vars).into()).collect();
                let interval = *interval;
                let mut spec = SpawnSpec::new(argv);
                spec.env = self.instance_env(id);
                spec.cwd = self.instance_cwd(id);
                match spawn::spawn(spec, self.guardian_fd()) {
                    Ok(pid) => {
                        let generation = self.insts[id].generation;
                        self.owners.insert(pid, Owner::Probe(id, generation));
                        self.insts[id].probe_pid = Some(pid);
                    }
                    Err(e) => {
                        self.notice(
                            Level::Warning,
                            format!(
                                "{}: readiness command could not start: {e}",
                                self.insts[id].info.name
                            ),
                        );
                        self.insts[id].probe_next = Some(now + interval);
                    }
                }
            }
            _ => {}
        }
    }

    fn mark_ready(&mut self, id: InstanceId) {
        let inst = &mut self.insts[id];
        if inst.state != State::Running {
            return;
        }
        inst.ever_ready = true;
        inst.ready_deadline = None;
        inst.ready_at = None;
        inst.probe_next = None;
        if let Some(c) = inst.tcp_cancel.take() {
            c.store(true, Ordering::Relaxed);
        }
        self.set_state(id, State::Ready);
        self.fire_sets(id, |t| matches!(t, Trigger::Ready));
    }

    // ---------------------------------------------------------------- starting

    /// Start every waiting instance whose conditions hold; skip those that never can.
    fn schedule(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        // Readers before writers (reverse drain order): a queue's readers are attached to
        // its router before the first record arrives, so a fair split starts at once
        // instead of handing everything to the one reader that happened to be first.
        let plan = &self.plan;
        let rank: Vec<usize> = (0..plan.stages.len())
            .map(|stage| {
                plan.stop_order
                    .iter()
                    .position(|step| step.contains(&stage))
                    .unwrap_or(0)
            })
            .collect();
        loop {
            let mut changed = self.feed_batches();
            if self.shutdown.is_some() {
                return;
            }
            // Only instances that wait are ordered (a big foreach has many ended ones).
            let mut order: Vec<InstanceId> = (0..self.insts.len())
                .filter(|&id| self.insts[id].state == State::Waiting)
                .collect();
            order.sort_by_key(|&id| std::cmp::Reverse(rank[self.insts[id].info.stage]));
            for id in order {
                let inst = &self.insts[id];
                if inst.state != State::Waiting
                    || inst.restart_at.is_some()
                    || inst.pending_pipe.is_some()
                {
                    continue;
                }
                match self.start_check(id) {
                    Check::Wait => {}
                    Check::Skip(reason) => {
                        self.release_permits(id);
                        self.set_state(id, State::Skipped { reason });
                        changed = true;
                    }
                    Check::Go => {
                        self.start_instance(id);
                        changed = true;
                    }
                }
                if self.shutdown.is_some() {
                    return;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// SPEC 3.2: after conditions, then events, then permits (requested all at once,
    /// only once the rest holds, so a waiting instance never sits on permits).
    fn start_check(&mut self, id: InstanceId) -> Check {
        let stage_id = self.insts[id].info.stage;
        match self.after_check(stage_id) {
            Check::Go => {}
            other => return other,
        }
        let stage = &self.plan.stages[stage_id];
        if !stage.waits.iter().all(|&e| self.coord.is_set(e)) {
            // An event was cleared while it waited for permits: do not sit on them.
            if self.insts[id].permit != Permit::None {
                self.release_permits(id);
            }
            return Check::Wait;
        }
        if !stage.semaphores.is_empty() {
            match self.insts[id].permit {
                Permit::Held => {}
                Permit::Requested => return Check::Wait,
                Permit::None => {
                    let sems = stage.semaphores.clone();
                    let coord = &mut self.coord;
                    if coord.request(id as u64, &sems) {
                        self.insts[id].permit = Permit::Held;
                    } else {
                        self.insts[id].permit = Permit::Requested;
                        return Check::Wait;
                    }
                }
            }
        }
        Check::Go
    }

    /// The `after` conditions of a stage (SPEC 3.2), for all instances of each
    /// dependency; a foreach dependency whose items are not all created is pending.
    fn after_check(&self, stage_id: usize) -> Check {
        let stage = &self.plan.stages[stage_id];
        for &(dep, cond) in &stage.after {
            for &d in &self.by_stage[dep] {
                match self.condition(d, cond) {
                    Cond::Met => {}
                    Cond::Pending => return Check::Wait,
                    Cond::Never => {
                        let what = match &self.insts[d].state {
                            State::Skipped { .. } => "was skipped".to_string(),
                            State::CouldNotStart { .. } => "could not start".to_string(),
                            s @ (State::Failed { .. }
                            | State::Killed { .. }
                            | State::TimedOut { .. }
                            | State::Stopped { .. }
                            | State::Succeeded { .. }) => s.describe(),
                            _ => "did not meet its condition".to_string(),
                        };
                        return Check::Skip(format!("{} {what}", self.insts[d].info.name));
                    }
                }
            }
            if self.batch_open(dep) {
                return Check::Wait;
            }
        }
        Check::Go
    }

    fn condition(&self, d: InstanceId, cond: Condition) -> Cond {
        let inst = &self.insts[d];
        let on_failure = self.plan.stages[inst.info.stage].on_failure;
        let success = matches!(inst.state, State::Succeeded { .. })
            || inst.info.resumed
            || (on_failure == OnFailure::Ignore
                && failure_code(&inst.state, inst.start_error_code).is_some());
        let fin = inst.is_final();
        let skipped = matches!(inst.state, State::Skipped { .. }) && !inst.info.resumed;
        let met = match cond {
            Condition::Started => inst.ever_started,
            Condition::Ready => inst.ever_ready || (fin && success),
            Condition::Succeeded => fin && success,
            Condition::Completed => fin && !skipped,
        };
        if met {
            Cond::Met
        } else if fin {
            Cond::Never
        } else {
            Cond::Pending
        }
    }

    /// The instance's process ended (or it will never start): give back every
    /// permit it holds, `semaphore:` and `prun ctl` alike, and withdraw its waits.
    /// Decision: permits are released at every end, also before a restart (a crashed
    /// holder never keeps a lock through its backoff); a restart asks again.
    fn release_permits(&mut self, id: InstanceId) {
        self.insts[id].permit = Permit::None;
        let out = self.broker.on_instance_end(&mut self.coord, id as u64);
        self.apply_outcome(out);
    }

    /// `sets:` trigger fired: set the event and answer ctl waiters.
    fn coord_set_event(&mut self, event: usize) {
        if self.coord.set_event(event) {
            let out = self.broker.pump(&mut self.coord);
            self.apply_outcome(out);
        }
    }

    fn fire_sets(&mut self, id: InstanceId, which: impl Fn(&Trigger) -> bool) {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let events: Vec<usize> = stage
            .sets
            .iter()
            .filter(|(_, t)| which(t))
            .map(|(e, _)| *e)
            .collect();
        for e in events {
            self.coord_set_event(e);
        }
    }

    fn vars(&self, id: InstanceId) -> InstanceVars<'_> {
        let info = &self.insts[id].info;
        let replicas = self.by_stage[info.stage].len();
        InstanceVars {
            stage: &info.stage_name,
            index: info.index,
            replicas,
            item: info.item.as_deref(),
            run_dir: self.run_dir.to_str().unwrap_or(""),
        }
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_relative() && !self.plan.start_dir.as_os_str().is_empty() {
            self.plan.start_dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    fn instance_cwd(&self, id: InstanceId) -> Option<PathBuf> {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        stage
            .cwd
            .as_ref()
            .map(|t| self.resolve_path(&t.render(&self.vars(id))))
    }

    fn instance_env(&self, id: InstanceId) -> Vec<(OsString, OsString)> {
        let info = &self.insts[id].info;
        let stage = &self.plan.stages[info.stage];
        let vars = self.vars(id);
        let mut env: Vec<(OsString, OsString)> = stage
            .env
            .iter()
            .map(|(k, t)| (k.into(), t.render(&vars).into()))
            .collect();
        let mut set = |k: &str, v: String| env.push((k.into(), v.into()));
        set("PRUN_PIPELINE", self.plan.name.clone());
        set("PRUN_STAGE", info.stage_name.clone());
        set("PRUN_INSTANCE", info.index.to_string());
        set("PRUN_INSTANCE_NAME", info.name.clone());
        set("PRUN_REPLICAS", vars.replicas.to_string());
        if let Some(item) = &info.item {
            set("PRUN_ITEM", item.clone());
        }
        set("PRUN_RUN_DIR", self.run_dir.display().to_string());
        set(
            "PRUN_CTL",
            self.run_dir.join("ctl.sock").display().to_string(),
        );
        // `prun ctl` must work in stages even when prun is not installed: the
        // directory of the running prun goes first on PATH (after the stage's own
        // `env`, which may set PATH), and PRUN_EXE names the binary itself.
        if let Some(exe) = &self.exe {
            env.push(("PRUN_EXE".into(), exe.clone().into_os_string()));
            if let Some(dir) = exe.parent() {
                let base = env
                    .iter()
                    .rev()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.clone())
                    .or_else(|| std::env::var_os("PATH"))
                    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
                let mut paths = vec![dir.to_path_buf()];
                paths.extend(std::env::split_paths(&base).filter(|p| p != dir));
                if let Ok(joined) = std::env::join_paths(paths) {
                    env.push(("PATH".into(), joined));
                }
            }
        }
        env
    }

    fn guardian_fd(&self) -> Option<i32> {
        self.guardian.as_ref().and_then(|g| g.fd())
    }

    fn render_argv(&self, id: InstanceId, cmd: &CommandTemplate) -> Vec<OsString> {
        let vars = self.vars(id);
        match cmd {
            CommandTemplate::Argv(ts) => ts.iter().map(|t| t.render(&vars).into()).collect(),
            CommandTemplate::Shell(t) => {
                vec!["/bin/sh".into(), "-c".into(), t.render_shell(&vars).into()]
            }
        }
    }

    fn start_instance(&mut self, id: InstanceId) {
        let stage_id = self.insts[id].info.stage;
        let stage = self.plan.stages[stage_id].clone();
        self.insts[id].generation += 1;
        let generation = self.insts[id].generation;
        let mut spec = SpawnSpec::new(self.render_argv(id, &stage.command));
        spec.cwd = self.instance_cwd(id);
        spec.env = self.instance_env(id);
        let mut router_ends: Vec<(RouterPort, OwnedFd)> = Vec::new();
        let mut log_read: Option<OwnedFd> = None;
        let built = (|| -> std::io::Result<()> {
            let mut log_write: Option<OwnedFd> = None;
            if stage.stdout == Output::Log || stage.stderr == Output::Log {
                // One pipe for both streams keeps their relative order.
                let (r, w) = spawn::pipe()?;
                log_read = Some(r);
                log_write = Some(w);
            }
            spec.stdin = match &stage.stdin {
                Input::Null => ChildFd::Null,
                Input::Inherit => ChildFd::Inherit,
                Input::File(t) => {
                    let path = self.resolve_path(&t.render(&self.vars(id)));
                    let f = std::fs::File::open(&path).map_err(|e| with_path(e, &path))?;
                    ChildFd::Fd(f.into())
                }
                Input::Queue(q) => ChildFd::Fd(self.queue_end(*q, false, &mut router_ends)?),
            };
            spec.stdout =
                self.output_fd(id, &stage.stdout, log_write.as_ref(), &mut router_ends)?;
            spec.stderr =
                self.output_fd(id, &stage.stderr, log_write.as_ref(), &mut router_ends)?;
            for b in &stage.fds {
                let fd =
                    self.queue_end(b.queue, b.direction == FdDirection::Write, &mut router_ends)?;
                spec.extra_fds.push((b.fd, fd));
            }
            Ok(())
        })();
        let result = built.and_then(|()| spawn::spawn(spec, self.guardian_fd()));
        let pid = match result {
            Ok(pid) => pid,
            Err(e) => {
                let argv0 = self
                    .render_argv(id, &stage.command)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                self.insts[id].start_error_code = spawn::exec_error_code(&e);
                let error = format!("{}: {e}", argv0.to_string_lossy());
                self.finish_run(id, State::CouldNotStart { error });
                return;
            }
        };
        let now = Instant::now();
        self.owners.insert(pid, Owner::Instance(id));
        let restartable =
            self.plan.stages[self.insts[id].info.stage].restart.policy != RestartPolicy::Never;
        for (port, fd) in router_ends {
            if let Some(r) = &self.routers[port.queue] {
                if port.writer {
                    r.add_writer(port.id, fd)
                } else {
                    r.add_reader(port.id, fd);
                    if restartable {
                        r.reader_may_restart(port.id);
                    }
                }
            }
            self.queues[port.queue].port_owner.insert(port.id, id);
            self.insts[id].ports.push(port);
        }
        // The restarted readers joined (after them in the routers' command order): the
        // previous run's readers are no longer awaited.
        self.withdraw_expected(id);
        {
            let inst = &mut self.insts[id];
            inst.pid = Some(pid);
            inst.last_pid = Some(pid);
            inst.pgids.push(pid);
            inst.ever_started = true;
            inst.stopping = false;
            inst.timed_out = false;
            inst.ready_failed = false;
            inst.timeout_at = stage.timeout.map(|t| now + t);
        }
        if let Some(r) = log_read {
            let mut matchers = Vec::new();
            if let Some(probe) = &stage.ready
                && let ProbeKind::Line(re) = &probe.kind
            {
                matchers.push(LineMatcher {
                    regex: re.0.clone(),
                    action: LineAction::Ready,
                });
            }
            for (e, t) in &stage.sets {
                if let Trigger::Line(re) = t {
                    matchers.push(LineMatcher {
                        regex: re.0.clone(),
                        action: LineAction::SetEvent(*e),
                    });
                }
            }
            match drain::start(
                r,
                id,
                generation,
                matchers,
                self.logs.clone(),
                self.msg_tx.clone(),
            ) {
                Ok(()) => self.drains += 1,
                Err(e) => self.notice(
                    Level::Error,
                    format!("cannot drain the log of {}: {e}", self.insts[id].info.name),
                ),
            }
        }
        self.set_state(id, State::Running);
        self.fire_sets(id, |t| matches!(t, Trigger::Started));
        match &stage.ready {
            None => self.mark_ready(id),
            Some(probe) => {
                let inst = &mut self.insts[id];
                inst.ready_deadline = probe.timeout.map(|t| now + t);
                match &probe.kind {
                    ProbeKind::Line(_) => {}
                    ProbeKind::Delay(d) => inst.ready_at = Some(now + *d),
                    ProbeKind::File(_) | ProbeKind::Cmd { .. } => inst.probe_next = Some(now),
                    ProbeKind::Tcp(addr) => {
                        let cancel = Arc::new(AtomicBool::new(false));
                        inst.tcp_cancel = Some(cancel.clone());
                        start_tcp_probe(addr.clone(), id, generation, cancel, self.msg_tx.clone());
                    }
                }
            }
        }
    }

    fn output_fd(
        &mut self,
        id: InstanceId,
        out: &Output,
        log: Option<&OwnedFd>,
        router_ends: &mut Vec<(RouterPort, OwnedFd)>,
    ) -> std::io::Result<ChildFd> {
        Ok(match out {
            Output::Null => ChildFd::Null,
            Output::Inherit => ChildFd::Inherit,
            Output::Log => match log {
                Some(fd) => ChildFd::Fd(fd.try_clone()?),
                None => ChildFd::Null,
            },
            Output::File { path, append } => {
                let path = self.resolve_path(&path.render(&self.vars(id)));
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(&path)
                    .map_err(|e| with_path(e, &path))?;
                ChildFd::Fd(f.into())
            }
            Output::Queue(q) => ChildFd::Fd(self.queue_end(*q, true, router_ends)?),
        })
    }

    /// The child's end of queue `q`: a direct pipe end or a new pipe to the router.
    fn queue_end(
        &mut self,
        q: QueueId,
        writer: bool,
        router_ends: &mut Vec<(RouterPort, OwnedFd)>,
    ) -> std::io::Result<OwnedFd> {
        if self.plan.queues[q].wiring == Wiring::Routed {
            let (r, w) = spawn::pipe()?;
            let port = RouterPort {
                queue: q,
                writer,
                id: self.next_port,
            };
            self.next_port += 1;
            return Ok(if writer {
                router_ends.push((port, r));
                w
            } else {
                router_ends.push((port, w));
                r
            });
        }
        let qr = &mut self.queues[q];
        if !qr.direct_made {
            let (r, w) = spawn::pipe()?;
            // Best effort: a pipe stays at the kernel's default when the user's pipe
            // budget is spent.
            super::router::sys::grow_pipe(w.as_raw_fd(), super::router::DIRECT_PIPE);
            qr.direct_read = Some(r);
            qr.direct_write = Some(w);
            qr.direct_made = true;
        }
        let slot = if writer {
            &mut qr.direct_write
        } else {
            &mut qr.direct_read
        };
        // The same instance may name one direct queue on two ports (stdout and stderr):
        // later ports of the same spawn get a duplicate, taken below.
        match slot.take() {
            Some(fd) => {
                let dup = fd.try_clone()?;
                // Keep one copy while this spawn is being built, for a second port.
                *slot = Some(dup);
                Ok(fd)
            }
            None => {
                // The end was already used up (a second run of a direct endpoint): give a
                // pipe whose other side is closed, so the child sees EOF / EPIPE.
                let (r, w) = spawn::pipe()?;
                Ok(if writer { w } else { r })
            }
        }
    }

    // ---------------------------------------------------------------- queues

    fn queue_writers(&self, q: QueueId) -> Vec<InstanceId> {
        let mut v = Vec::new();
        for ep in &self.plan.queues[q].writers {
            v.extend(self.by_stage[ep.stage].iter().copied());
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    fn queue_readers(&self, q: QueueId) -> Vec<InstanceId> {
        let mut v = Vec::new();
        for ep in &self.plan.queues[q].readers {
            if ep.port != crate::plan::Port::Foreach {
                v.extend(self.by_stage[ep.stage].iter().copied());
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every writer instance of `q` ended for good, and no foreach writer stage will
    /// create more.
    fn writers_done(&self, q: QueueId) -> bool {
        self.plan.queues[q]
            .writers
            .iter()
            .all(|ep| !self.batch_open(ep.stage))
            && self
                .queue_writers(q)
                .iter()
                .all(|&w| self.insts[w].is_final())
    }

    /// SPEC 5.1: the pipeline ends once every queue is drained too. A routed queue whose
    /// writers are done counts once prun has handed all its records to readers
    /// (`Drained`), or when it was aborted or has no reader left; a queue whose writers
    /// are daemons is never closed before the stop, so it does not hold the end back.
    fn queues_settled(&self) -> bool {
        (0..self.plan.queues.len()).all(|q| {
            let qr = &self.queues[q];
            self.routers[q].is_none()
                || qr.drained
                || qr.aborted
                || !self.writers_done(q)
                || self.readers_done(q)
        })
    }

    /// Every reader instance of `q` ended for good, no foreach reader stage will create
    /// more, and no `foreach: {queue}` stage still takes records from it.
    fn readers_done(&self, q: QueueId) -> bool {
        self.plan.queues[q]
            .readers
            .iter()
            .all(|ep| !self.batch_open(ep.stage))
            && self
                .queue_readers(q)
                .iter()
                .all(|&r| self.insts[r].is_final())
    }

    /// Close queue ends that nobody can use any more (EOF for readers, EPIPE for writers).
    fn check_queues(&mut self) {
        for q in 0..self.plan.queues.len() {
            let writers_done = self.writers_done(q);
            let readers_done = self.readers_done(q);
            // A direct end the parent still holds: its partner never started, or has
            // started and this copy is only kept for a second port of the same spawn.
            let writer_running = self
                .queue_writers(q)
                .iter()
                .any(|&w| self.insts[w].pid.is_some());
            let reader_running = self
                .queue_readers(q)
                .iter()
                .any(|&r| self.insts[r].pid.is_some());
            let qr = &mut self.queues[q];
            if writers_done || writer_running {
                qr.direct_write = None;
            }
            if readers_done || reader_running {
                qr.direct_read = None;
            }
            if let Some(router) = &self.routers[q] {
                if writers_done && !qr.writers_closed {
                    qr.writers_closed = true;
                    router.close_writers();
                }
                // Writers still running must see a closed pipe, as in a shell.
                if readers_done && !writers_done && !qr.aborted {
                    qr.aborted = true;
                    router.abort();
                }
            }
        }
    }

    /// Every queue this instance reads is closed (its writers ended and, when routed,
    /// drained): it has seen, or is about to see, EOF.
    fn inputs_closed(&self, id: InstanceId) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        input_queues(stage).iter().all(|&q| {
            let writers_done = self.writers_done(q);
            let qr = &self.queues[q];
            writers_done
                && (self.plan.queues[q].wiring == Wiring::Direct || qr.drained || qr.aborted)
        })
    }

    // ---------------------------------------------------------------- stopping

    fn begin_shutdown(&mut self, cause: ShutdownCause) {
        let now = Instant::now();
        let signals = u32::from(matches!(cause, ShutdownCause::Signal(_)));
        self.shutdown = Some(Shutdown {
            cause,
            step: 0,
            step_since: now,
            next_notice: now + Duration::from_secs(1),
            signals,
        });
        self.emit(Event::ShutdownStarted { cause });
        for id in 0..self.insts.len() {
            let inst = &mut self.insts[id];
            if inst.state != State::Waiting {
                continue;
            }
            self.release_permits(id);
            if self.insts[id].restart_at.take().is_some() {
                self.withdraw_expected(id);
                // The restart is cancelled: the last run's end state is final.
                let last = self.insts[id].last_end.clone().unwrap_or(State::Stopped {
                    exit_code: None,
                    signal: None,
                });
                self.set_state(id, last);
            } else {
                self.set_state(
                    id,
                    State::Skipped {
                        reason: "pipeline stopped".into(),
                    },
                );
            }
        }
        self.close_batches("pipeline stopped");
    }

    /// Walk `Plan::stop_order`: each step starts once every earlier step has ended.
    fn advance_shutdown(&mut self) {
        let Some(sh) = &self.shutdown else { return };
        let cause = sh.cause;
        let now = Instant::now();
        loop {
            let Some(sh) = &self.shutdown else { return };
            let (step, since) = (sh.step, sh.step_since);
            let stages: Vec<usize> = match self.plan.stop_order.get(step) {
                Some(s) => s.clone(),
                // Stages missing from the stop order (should not happen) go last.
                None => (0..self.plan.stages.len()).collect(),
            };
            let mut all_final = true;
            for &st in &stages {
                for id in self.by_stage[st].clone() {
                    let inst = &self.insts[id];
                    if inst.is_final() {
                        continue;
                    }
                    all_final = false;
                    if inst.pid.is_none() || inst.stopping || inst.eof_grace_at.is_some() {
                        continue;
                    }
                    let stage = &self.plan.stages[st];
                    let reads = !input_queues(stage).is_empty();
                    if !reads {
                        self.begin_stop(id);
                    } else if self.inputs_closed(id) {
                        if cause == ShutdownCause::Finished {
                            self.begin_stop(id);
                        } else {
                            // It gets EOF and may finish its work (SPEC 5.2).
                            self.insts[id].eof_grace_at = Some(now + stage.stop.timeout);
                        }
                    } else if now.saturating_duration_since(since) >= stage.stop.timeout {
                        // Its input did not drain in time (a backlog bigger than the
                        // readers get through in `stop.timeout`), or never closed (a
                        // writer's stray child holds the pipe, or a data cycle): stop it
                        // anyway, after closing its routed queues, so it still gets EOF
                        // before the signal (what they held is counted as discarded).
                        if !self.cut_inputs(id, now) {
                            self.begin_stop(id);
                        }
                    }
                }
            }
            if !all_final || step >= self.plan.stop_order.len() {
                return;
            }
            if let Some(sh) = self.shutdown.as_mut() {
                sh.step += 1;
                sh.step_since = now;
            }
        }
    }

    /// End the routed queues instance `id` reads that have not drained (see
    /// [`QueueRouter::cut`]): it gets EOF (and the sentinel) once the records already on
    /// their way are written, and the stop signal comes after that, or after
    /// [`CUT_GRACE`] if it does not read them. Returns true while that is pending.
    fn cut_inputs(&mut self, id: InstanceId, now: Instant) -> bool {
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let mut waiting = false;
        for q in input_queues(stage) {
            let qr = &mut self.queues[q];
            let Some(router) = &self.routers[q] else {
                continue;
            };
            if qr.drained || qr.aborted {
                continue;
            }
            match qr.cut_at {
                None => {
                    qr.cut_at = Some(now);
                    router.cut();
                    waiting = true;
                }
                Some(t) => waiting |= now.saturating_duration_since(t) < CUT_GRACE,
            }
        }
        waiting
    }

    /// `stop.cmd` if set, else `stop.signal` to the group; SIGKILL after `stop.timeout`.
    fn begin_stop(&mut self, id: InstanceId) {
        let Some(pid) = self.insts[id].pid else {
            return;
        };
        let stage = &self.plan.stages[self.insts[id].info.stage];
        let stop = stage.stop.clone();
        let inst = &mut self.insts[id];
        if !inst.timed_out && !inst.ready_failed {
            inst.stopping = true;
        }
        inst.eof_grace_at = None;
        if inst.kill_at.is_some() {
            return;
        }
        inst.kill_at = Some(Instant::now() + stop.timeout);
        let mut signalled = false;
        if let Some(cmd) = &stop.cmd {
            let vars = self.vars(id);
            let argv: Vec<OsString> = cmd.iter().map(|t| t.render(&vars).into()).collect();
            let mut spec = SpawnSpec::new(argv);
            spec.env = self.instance_env(id);
            spec.env.push(("PRUN_PID".into(), pid.to_string().into()));
            spec.cwd = self.instance_cwd(id);
            match spawn::spawn(spec, self.guardian_fd()) {
                Ok(p) => {
                    self.owners.insert(p, Owner::StopCmd);
                    self.insts[id].pgids.push(p);
                    signalled = true;
                }
                Err(e) => self.notice(
                    Level::Warning,
                    format!(
                        "{}: stop command could not start ({e}); sending the stop signal",
                        self.insts[id].info.name
                    ),
                ),
            }
        }
        if !signalled {
            kill_group(pid, stop.signal);
            // A stopped process would never see the signal.
            kill_group(pid, libc::SIGCONT);
        }
    }

    /// Second signal: SIGKILL every group now.
    fn kill_all(&mut self) {
        for id in 0..self.insts.len() {
            let inst = &mut self.insts[id];
            if let Some(pid) = inst.pid {
                if !inst.timed_out && !inst.ready_failed {
                    inst.stopping = true;
                }
                inst.eof_grace_at = None;
                kill_group(pid, libc::SIGKILL);
            }
            if let Some(p) = inst.probe_pid {
                kill_group(p, libc::SIGKILL);
            }
        }
        for q in 0..self.routers.len() {
            if let Some(r) = &self.routers[q]
                && !self.queues[q].aborted
            {
                self.queues[q].aborted = true;
                r.abort();
            }
        }
    }

    // ---------------------------------------------------------------- the end

    fn finish(mut self) -> i32 {
        // Stray group members (a leader ended, its background children did not), stop
        // commands, and probes.
        let mut groups: Vec<i32> = self
            .insts
            .iter()
            .flat_map(|i| i.pgids.iter().copied())
            .collect();
        groups.extend(
            self.owners
                .iter()
                .filter(|(_, o)| !matches!(o, Owner::Guardian))
                .map(|(p, _)| *p),
        );
        groups.sort_unstable();
        groups.dedup();
        // The /proc walk is only needed when a group is still alive (rare at a normal end).
        let alive: Vec<i32> = groups.iter().copied().filter(|&g| group_alive(g)).collect();
        if !alive.is_empty() {
            let table = process_table(self.self_pid);
            for &g in &alive {
                if group_is_ours(&table, g, self.self_pid) {
                    kill_group(g, libc::SIGKILL);
                }
            }
        }
        self.sweep_descendants();
        for &g in &groups {
            if !group_alive(g)
                && let Some(gd) = self.guardian.as_mut()
            {
                gd.forget(g);
            }
        }
        // Closing its pipe ends the guardian; it is reaped last, so that its exit (the
        // teardown of a forked copy of prun) overlaps the end of the run.
        let guardian = self.guardian.take().map(|mut g| g.finish());
        // Let the log threads flush their last lines before the final event.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.drains > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.msg_rx.recv_timeout(left) {
                Ok(Msg::DrainDone) => self.drains -= 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.report_queues();
        let cause = self.shutdown.as_ref().map(|s| s.cause);
        let (status, code) = match cause {
            Some(ShutdownCause::Signal(s)) => (RunStatus::Interrupted, 128 + s),
            _ => match self.first_failure {
                Some(c) => (RunStatus::Failed, c),
                None => (RunStatus::Succeeded, 0),
            },
        };
        let duration = self.start.elapsed();
        self.emit(Event::Finished {
            status,
            exit_code: code,
            duration,
        });
        if let Some(pid) = guardian {
            let mut status = 0;
            // SAFETY: waiting for our own guardian, which exits on EOF.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        code
    }

    /// Kill and reap every remaining descendant: processes that left their group
    /// (`setsid`) end up re-parented to prun (a subreaper) once their parents die.
    /// Repeats because killing one can re-parent its own children to prun.
    fn sweep_descendants(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        let guardian = self.guardian.as_ref().map(|g| g.pid());
        loop {
            self.reap_quietly();
            let children: Vec<i32> = children_of(self.self_pid)
                .into_iter()
                .filter(|&p| Some(p) != guardian)
                .collect();
            if children.is_empty() || Instant::now() >= deadline {
                return;
            }
            let own_group = unsafe { libc::getpgrp() };
            for pid in children {
                // SAFETY: signalling a child of ours.
                unsafe {
                    let pg = libc::getpgid(pid);
                    if pg > 0 && pg != own_group {
                        libc::kill(-pg, libc::SIGKILL);
                    }
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            if let Ok(Msg::DrainDone) = self.msg_rx.recv_timeout(Duration::from_millis(20)) {
                self.drains = self.drains.saturating_sub(1);
            }
        }
    }

    /// Reap at the end: no more state changes, only collect exits.
    fn reap_quietly(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if matches!(self.owners.get(&pid), Some(Owner::Guardian)) {
                self.guardian = None;
            }
            self.owners.remove(&pid);
        }
    }

    fn report_queues(&mut self) {
        let mut records_in: HashMap<InstanceId, u64> = HashMap::new();
        let mut records_out: HashMap<InstanceId, u64> = HashMap::new();
        for q in 0..self.plan.queues.len() {
            let name = self.plan.queues[q].name.clone();
            match &self.routers[q] {
                Some(r) => {
                    // Every process has ended. Joining ends the router (after the
                    // `reader_exited` already sent, so what readers left unread is
                    // counted; one still routing counts what it holds as discarded)
                    // and makes its last counters the ones reported.
                    r.join();
                    let stats = r.stats();
                    let owners = &self.queues[q].port_owner;
                    for (port, n) in &stats.per_writer {
                        if let Some(&i) = owners.get(port) {
                            *records_out.entry(i).or_default() += n;
                        }
                    }
                    for (port, n) in &stats.per_reader {
                        if let Some(&i) = owners.get(port) {
                            *records_in.entry(i).or_default() += n;
                        }
                    }
                    self.emit(Event::QueueFinished {
                        queue: q,
                        name,
                        direct: false,
                        stats,
                    });
                }
                None => self.emit(Event::QueueFinished {
                    queue: q,
                    name,
                    direct: true,
                    stats: Default::default(),
                }),
            }
        }
        for id in 0..self.insts.len() {
            let stage = &self.plan.stages[self.insts[id].info.stage];
            let count = |queues: Vec<QueueId>, map: &HashMap<InstanceId, u64>| {
                if queues.is_empty() {
                    Some(0)
                } else if queues
                    .iter()
                    .any(|&q| self.plan.queues[q].wiring == Wiring::Direct)
                {
                    None
                } else {
                    Some(map.get(&id).copied().unwrap_or(0))
                }
            };
            let records_in = count(input_queues(stage), &records_in);
            let records_out = count(output_queues(stage), &records_out);
            self.emit(Event::Records {
                id,
                records_in,
                records_out,
            });
        }
    }
}

enum Check {
    Go,
    Wait,
    Skip(String),
}

enum Cond {
    Met,
    Pending,
    Never,
}

impl Inst {
    fn new(info: InstanceInfo) -> Inst {
        Inst {
            info,
            state: State::Waiting,
            pid: None,
            last_pid: None,
            pgids: Vec::new(),
            generation: 0,
            restarts: 0,
            last_end: None,
            restart_at: None,
            ever_started: false,
            ever_ready: false,
            timeout_at: None,
            timed_out: false,
            ready_deadline: None,
            ready_failed: false,
            ready_at: None,
            probe_next: None,
            probe_pid: None,
            tcp_cancel: None,
            stopping: false,
            kill_at: None,
            eof_grace_at: None,
            permit: Permit::None,
            pending_pipe: None,
            start_error_code: 1,
            ports: Vec::new(),
            expected_by: Vec::new(),
        }
    }

    /// Ended for good: an end state and no restart or judgement pending.
    fn is_final(&self) -> bool {
        self.state.is_end() && self.restart_at.is_none() && self.pending_pipe.is_none()
    }

    fn is_ready(&self) -> bool {
        self.state == State::Ready
    }
}

/// Pipeline exit code an end state contributes, if it is a failure.
fn failure_code(state: &State, start_error_code: i32) -> Option<i32> {
    match state {
        State::Failed {
            exit_code: Some(c), ..
        } => Some(*c),
        State::Failed {
            signal: Some(s), ..
        } => Some(128 + s),
        State::Failed { .. } => Some(1),
        State::Killed { signal } => Some(128 + signal),
        State::TimedOut { .. } => Some(124),
        State::CouldNotStart { .. } => Some(start_error_code),
        _ => None,
    }
}

fn input_queues(stage: &crate::plan::StagePlan) -> Vec<QueueId> {
    let mut v = Vec::new();
    if let Input::Queue(q) = stage.stdin {
        v.push(q);
    }
    v.extend(
        stage
            .fds
            .iter()
            .filter(|b| b.direction == FdDirection::Read)
            .map(|b| b.queue),
    );
    v
}

fn output_queues(stage: &crate::plan::StagePlan) -> Vec<QueueId> {
    let mut v = Vec::new();
    for out in [&stage.stdout, &stage.stderr] {
        if let Output::Queue(q) = out {
            v.push(*q);
        }
    }
    v.extend(
        stage
            .fds
            .iter()
            .filter(|b| b.direction == FdDirection::Write)
            .map(|b| b.queue),
    );
    v
}

fn with_path(e: std::io::Error, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Signal a whole process group; it may already be gone.
fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the group.
        unsafe { libc::kill(-pgid, sig) };
    }
}

/// True while at least one process is in the group (zombies included).
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks existence and permission.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// (pid, parent pid, process group) of every live descendant of `root`, from /proc.
/// Only prun's own tree is read (escapees are re-parented to prun, a subreaper, so they
/// stay in it): the cost does not grow with the number of processes on the machine.
fn process_table(root: i32) -> Vec<(i32, i32, i32)> {
    crate::procfs::descendants(root)
        .into_iter()
        .map(|s| (s.pid, s.ppid, s.pgrp))
        .collect()
}

/// The group has a member that descends from prun (so its id was not recycled).
fn group_is_ours(table: &[(i32, i32, i32)], pgid: i32, me: i32) -> bool {
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

fn start_tcp_probe(
    addr: String,
    id: InstanceId,
    generation: u64,
    cancel: Arc<AtomicBool>,
    tx: Sender<Msg>,
) {
    let _ = std::thread::Builder::new()
        .name(format!("prun-tcp-{id}"))
        .spawn(move || {
            use std::net::{TcpStream, ToSocketAddrs};
            while !cancel.load(Ordering::Relaxed) {
                if let Ok(addrs) = addr.to_socket_addrs() {
                    for a in addrs {
                        if TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok() {
                            let _ = tx.send(Msg::ProbeOk { id, generation });
                            return;
                        }
                    }
                }
                // Polling period of the probe (not a synchronisation wait).
                std::thread::sleep(Duration::from_millis(100));
            }
        });
}
