//! The supervisor: the single owner of every child process and every wait.
//!
//! One thread runs [`Supervisor::run`]. It alone spawns stage instances (and probe and
//! stop commands), alone calls `waitpid(-1)` (prun is a child subreaper, so orphaned
//! descendants are reaped here too and no exit status is ever stolen), and alone
//! decides state transitions. Everything else feeds it messages: signals (via
//! signal-hook), log-line matches and probe results from helper threads, router events,
//! `prun ctl` requests. It reports by sending [`Event`]s on a channel nobody can make it
//! wait on; it never prints and never blocks (a FIFO or a slow filesystem is opened off
//! the loop; /proc is scanned off the loop).
//!
//! Each pass of the loop: reap → instances whose deadlines are due → ctl wait expiries,
//! queue tick, escape scan → start what may start (`start`) → close queues (`queues`)
//! → advance the shutdown (`shutdown`) → look for a deadlock (`coordinate`) → sleep
//! until the next message or deadline.
//!
//! The rooms: `instance` (an instance's lifecycle, one enum), `timers` (the deadline
//! heap and a clock that stops while suspended), `start` (start checks: after, events,
//! permits), `launch` (one start: render, wire, spawn), `wiring` (descriptors: pipes,
//! files, queue ends), `render` (templates, environment), `reap` (wait statuses →
//! end states, restarts), `readiness` (probes), `queues` (routers and direct pipes), `ranks` (writer order for `order: writers`),
//! `due` (an instance's deadlines), `shutdown` (drain order, stop steps), `orphans` (escaped descendants, the guardian),
//! `terminal` (Ctrl-Z and `fg`), `cleanup` (the end of the run), `batch` (foreach, with `halt`,
//! `block` for `{queue, batch}` and `batch_close`), `insts` (the instances held, folded foreach items
//! dropped), `coordinate` (`prun ctl`,
//! deadlocks), `remote` (instances on other hosts: slots, shared connections, the
//! engine clients' reports). Where an instance runs is [`Places`](super::place::Places)'s
//! business.
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
//!   run with a message naming who waits for what and who holds what (see
//!   `coordinate`).
//! - Every stage gets the directory of the running prun first on its PATH and
//!   `PRUN_EXE`, so `prun ctl` works in stages when prun is not installed.
//! - `PRUN_INSTANCE` is the index (like `${instance}`); `PRUN_INSTANCE_NAME` is added.
//! - When stdout and stderr are both `log`, they share one pipe so their relative
//!   order is kept.

mod batch;
mod batch_close;
mod block;
mod cleanup;
mod coordinate;
mod due;
mod halt;
mod instance;
mod insts;
mod launch;
mod orphans;
mod queues;
mod ranks;
mod readiness;
mod reap;
mod remote;
mod render;
mod shutdown;
mod stall;
mod start;
mod steer;
mod terminal;
mod timers;
mod wiring;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::guardian::Guardian;
use super::msg::{LineAction, Msg};
use super::place::Places;
use super::router::{QueueConfig, QueueRouter, RouterEvent};
use crate::coord::Coord;
use crate::ctl::{CtlBroker, CtlRequest, CtlServer};
use crate::event::{Event, InstanceId, InstanceInfo, Level, ShutdownCause, State};
use crate::plan::{Instances, Plan, Wiring};
use crate::runtime::items::Chunk;
use batch::{Batch, FeedRx};
use instance::Inst;
use insts::Insts;
use queues::QueueRt;
use shutdown::Shutdown;
use timers::{Clock, Timers};

pub use orphans::children_of;

/// Longest sleep of the loop, a safety net only (SIGCHLD wakes it).
const MAX_WAIT: Duration = Duration::from_millis(250);

/// A foreach item that was folded but is listed in the report (it did not succeed):
/// what the final record counts need.
struct Listed {
    id: InstanceId,
    stage: usize,
    /// Records of its block (`foreach: {queue, batch}`).
    block: Option<u64>,
}

/// Who a pid belongs to.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Instance(InstanceId),
    Probe(InstanceId, u64),
    StopCmd(InstanceId),
    Guardian,
    /// A host's shared connection (`ssh -M`); its end is told by its watcher.
    Master,
    /// A stop signal sent to a remote instance over its engine (`client`: the
    /// instance's engine client, ended instead if the signal cannot be delivered).
    RemoteSignal {
        id: InstanceId,
        client: i32,
        sig: i32,
    },
    /// The Slurm sweeper (not registered with the guardian: it must outlive prun).
    Sweeper,
    /// A command that ends the run on a host (its run directory removed).
    RemoteCleanup,
}

pub struct Supervisor {
    plan: Plan,
    events: Sender<Event>,
    /// Events of the current pass, sent before the loop sleeps (see `emit`).
    pending_events: std::cell::RefCell<Vec<Event>>,
    /// Events are gathered per pass (off once the loop is over).
    batch_events: bool,
    logs: Sender<Event>,
    /// Stages on `stdout: inherit` write into a pipe prun passes through (`Sinks`).
    pass_stdout: bool,
    msg_tx: Sender<Msg>,
    msg_rx: Receiver<Msg>,
    router_tx: Sender<RouterEvent>,
    router_rx: Receiver<RouterEvent>,
    /// When the run started (real time, for the `at` of events).
    start: Instant,
    clock: Clock,
    timers: Timers,
    run_dir: PathBuf,
    /// Every instance held: replicas, unfinished foreach items (ended ones are folded
    /// into their stage's counters, see `insts`).
    insts: Insts,
    /// Per stage, the ids of its instances held.
    by_stage: Vec<Vec<InstanceId>>,
    /// Instances not ended yet: what every pass looks at.
    live: BTreeSet<InstanceId>,
    owners: HashMap<i32, Owner>,
    /// Where instances can run: this machine and the hosts of `hosts:`.
    places: Places,
    /// Instances on other hosts as the loop tracks them.
    remote: remote::RemoteRt,
    guardian: Option<Guardian>,
    coord: Coord,
    broker: CtlBroker,
    ctl: Option<CtlServer>,
    /// Per stage: the foreach state (None for replica stages).
    batches: Vec<Option<Batch>>,
    /// A foreach stage has more items to look at than one pass takes: do not sleep.
    more_work: bool,
    /// Folded items the report lists (failed, skipped, …): counted at the end.
    folded_listed: Vec<Listed>,
    /// The foreach items (stage, position, value) that succeeded in the `--resume`
    /// report.
    resume: crate::resume::Resume,
    /// A deadlock seen by the last check: who, and since when (confirmed after a grace).
    deadlock_seen: Option<(Vec<u64>, Instant)>,
    next_deadlock_check: Instant,
    /// A full broadcast queue that seemed unable to drain at the last check: who was
    /// stuck, and since when (`stall.rs`).
    stall_seen: Option<(Vec<u64>, Instant)>,
    next_stall_check: Instant,
    /// Next `QueueProgress` report (routed queues only).
    next_queue_tick: Option<Instant>,
    /// Reads prun's process tree off the loop (escaped descendants).
    scanner: Option<crate::runtime::scanner::Scanner>,
    /// Groups that left their instance and processes that joined prun's own group,
    /// handed to the guardian so far.
    adopted: HashSet<i32>,
    adopted_pids: HashSet<i32>,
    /// Descendants in prun's own group at the last scan.
    in_own_group: HashSet<i32>,
    /// `PRUN_EXE` and the directory put first on every stage's PATH.
    exe: Option<PathBuf>,
    routers: Vec<Option<QueueRouter>>,
    queues: Vec<QueueRt>,
    shutdown: Option<Shutdown>,
    first_failure: Option<i32>,
    /// The log drains running (they tell the loop when they end only at the end).
    drains: crate::runtime::drain::Running,
    next_port: usize,
    /// Matches an opener thread's answer to the start it was for.
    next_token: u64,
    tty: terminal::Tty,
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
        let mut insts = Insts::default();
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
                let name = if named {
                    format!("{}.{index}", stage.name)
                } else {
                    stage.name.clone()
                };
                let id = insts.add(|id| InstanceInfo {
                    id,
                    name,
                    stage: sid,
                    stage_name: stage.name.clone(),
                    index,
                    item: None,
                    daemon: stage.daemon,
                    resumed: false,
                });
                ids.push(id);
            }
            by_stage.push(ids);
        }
        let live = insts.ids().into_iter().collect();
        let coord = Coord::new(&plan.semaphores, &plan.events);
        let batches = plan.stages.iter().map(Batch::for_stage).collect();
        let queues = plan.queues.iter().map(|_| QueueRt::default()).collect();
        let routers = plan.queues.iter().map(|_| None).collect();
        let now = Instant::now();
        let places = Places::new(&plan.hosts, &crate::remote::random_token(), &run_dir);
        Supervisor {
            plan,
            events: sinks.events,
            pending_events: Default::default(),
            batch_events: true,
            logs: sinks.logs,
            pass_stdout: sinks.pass_stdout,
            msg_tx,
            msg_rx,
            router_tx,
            router_rx,
            start: now,
            clock: Clock::new(),
            timers: Timers::default(),
            run_dir,
            insts,
            by_stage,
            live,
            owners: HashMap::new(),
            places,
            remote: remote::RemoteRt::default(),
            guardian: None,
            coord,
            broker: CtlBroker::new(),
            ctl: None,
            batches,
            more_work: false,
            folded_listed: Vec::new(),
            resume: crate::resume::Resume::new(),
            deadlock_seen: None,
            next_deadlock_check: now,
            stall_seen: None,
            next_stall_check: now,
            next_queue_tick: None,
            scanner: None,
            adopted: HashSet::new(),
            adopted_pids: HashSet::new(),
            in_own_group: HashSet::new(),
            exe: std::env::current_exe().ok(),
            routers,
            queues,
            shutdown: None,
            first_failure: None,
            drains: Default::default(),
            next_port: 0,
            next_token: 0,
            tty: terminal::Tty::default(),
            self_pid: std::process::id() as i32,
        }
    }

    /// Use the items of a `--resume` report: those items are not run.
    pub fn with_resume(mut self, resume: crate::resume::Resume) -> Supervisor {
        self.resume = resume;
        self
    }

    /// Report `e`. Events are gathered and sent together before the loop sleeps and
    /// before a process is launched (so the reporter knows an instance before any line
    /// it logs): the reporter is woken a couple of times per pass, not once per event
    /// (a `true` foreach item makes five events; each wake-up is a context switch on a
    /// busy machine).
    fn emit(&self, e: Event) {
        match self.pending_events.try_borrow_mut() {
            Ok(mut pending) if self.batch_events => pending.push(e),
            // Unbounded: never waits. The reporter may be gone at the very end.
            _ => {
                let _ = self.events.send(e);
            }
        }
    }

    /// Send the events of this pass, in order.
    fn flush_events(&self) {
        let pending = std::mem::take(&mut *self.pending_events.borrow_mut());
        for e in pending {
            let _ = self.events.send(e);
        }
    }

    fn notice(&self, level: Level, message: String) {
        self.emit(Event::Notice { level, message });
    }

    /// Real time since the run started, for events.
    fn since_start(&self) -> Duration {
        self.start.elapsed()
    }

    /// Run to the end; returns prun's exit code.
    pub fn run(mut self) -> i32 {
        self.start = Instant::now();
        self.emit(Event::PipelineStarted {
            pipeline: self.plan.name.clone(),
            instances: self.insts.iter().map(|i| i.info.clone()).collect(),
            queues: self.plan.queues.iter().map(|q| q.name.clone()).collect(),
        });
        self.start_guardian();
        self.start_scanner();
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
                    order: qp.order,
                };
                let router = QueueRouter::start(cfg, self.router_tx.clone());
                // Torn last records wait for their writer's outcome (`writer_ended`).
                router.await_writer_outcomes();
                self.routers[q] = Some(router);
            }
        }
        // Broadcast: every reader instance known now is announced, so copies are held
        // for it from the first record however late it starts (foreach items are
        // announced as they are created, `expect_broadcast_reader`).
        for id in self.insts.ids() {
            self.expect_broadcast_reader(id);
        }
        // `order: writers`: every writer rank is announced before any writer starts.
        self.announce_writer_ranks();
        self.start_ctl();
        self.attach_batch_queues();
        if self.routers.iter().any(|r| r.is_some()) {
            self.next_queue_tick = Some(self.clock.now() + queues::QUEUE_TICK);
        }

        loop {
            self.reap();
            let now = self.clock.now();
            self.fire_due(now);
            self.expire_ctl(now);
            self.queue_tick(now);
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
            if self.shutdown.is_none() {
                self.check_stall(now);
            }
            if self.shutdown.is_some() && self.live.is_empty() {
                break;
            }
            self.wait();
        }
        self.finish()
    }

    /// True when every instance (except those `ignore` selects) reached an end state.
    fn all_done(&self, ignore: impl Fn(&Inst) -> bool) -> bool {
        self.live.iter().all(|&id| ignore(&self.insts[id]))
    }

    /// Look at every instance whose deadline passed.
    fn fire_due(&mut self, now: Instant) {
        for id in self.timers.take_due(now) {
            // A folded instance's stale deadline finds nothing.
            if self.insts.get(id).is_some() {
                self.instance_due(id, now);
            }
        }
        self.judge_pending();
        let insts = &self.insts;
        self.timers.compact(self.live.len(), |id| {
            insts.get(id).is_none_or(|i| i.is_final())
        });
    }

    /// The earliest pipeline-wide deadline (instances' own are in `timers`).
    fn next_global_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.broker.next_deadline());
        consider(self.next_queue_tick);
        consider(self.next_cut_deadline());
        if self.deadlock_seen.is_some() {
            consider(Some(self.next_deadlock_check));
        }
        consider(self.next_stall_deadline());
        consider(self.next_shutdown_deadline());
        next
    }

    /// Sleep until a message, a router event, a ctl request, a queue record
    /// (`foreach: {queue}`) or the next deadline; then handle what came.
    fn wait(&mut self) {
        self.flush_events();
        let now = self.clock.now();
        let deadline = [self.timers.next(), self.next_global_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + MAX_WAIT)
            .min(now + MAX_WAIT);
        // While suspended, timer time stands still: only messages wake the loop.
        let timeout = if self.clock.is_paused() {
            MAX_WAIT
        } else if std::mem::take(&mut self.more_work) {
            Duration::ZERO
        } else {
            deadline.saturating_duration_since(now)
        };
        let msg_rx = self.msg_rx.clone();
        let router_rx = self.router_rx.clone();
        let ctl_rx = self.ctl.as_ref().map(|c| c.requests().clone());
        // foreach stages with a free slot and no item at hand: a record of their queue,
        // or a chunk of their feed, may start an instance.
        let feeds = self.feeds();
        enum Got {
            Msg(Msg),
            Router(RouterEvent),
            Ctl(CtlRequest),
            Record(usize, Option<Vec<u8>>),
            Chunk(usize, Option<Chunk>),
            Nothing,
        }
        let got = {
            let mut sel = crossbeam_channel::Select::new();
            let i_msg = sel.recv(&msg_rx);
            let i_router = sel.recv(&router_rx);
            let i_ctl = ctl_rx.as_ref().map(|r| sel.recv(r));
            let i_feeds: Vec<usize> = feeds
                .iter()
                .map(|(_, f)| match f {
                    FeedRx::Records(r) => sel.recv(r),
                    FeedRx::Items(r) => sel.recv(r),
                })
                .collect();
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
                            Some(k) => match &feeds[k].1 {
                                FeedRx::Records(r) => Got::Record(feeds[k].0, op.recv(r).ok()),
                                FeedRx::Items(r) => Got::Chunk(feeds[k].0, op.recv(r).ok()),
                            },
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
            Got::Chunk(stage, chunk) => self.on_chunk(stage, chunk),
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

    fn handle(&mut self, msg: Msg) {
        match msg {
            // Reaping happens at the top of every pass.
            Msg::Child => {}
            // Counted by `drains` itself; the message only wakes the loop.
            Msg::DrainDone => {}
            Msg::Descendants(table) => self.on_descendants(table),
            Msg::Signal(sig) => self.on_signal(sig),
            Msg::Steer(req) => self.steer(req),
            Msg::Line {
                id,
                generation,
                action,
            } => {
                // A line read after its instance was folded, or of an earlier run.
                if self
                    .insts
                    .get(id)
                    .is_none_or(|i| i.generation != generation)
                {
                    return;
                }
                match action {
                    LineAction::Ready => {
                        if self.insts[id].pid().is_some() {
                            self.mark_ready(id);
                        }
                    }
                    LineAction::SetEvent(e) => self.coord_set_event(e),
                }
            }
            Msg::Opened { id, token, files } => self.opened(id, Some(token), files),
            Msg::ProbeOk { id, generation } => {
                if self
                    .insts
                    .get(id)
                    .is_some_and(|i| i.generation == generation && i.pid().is_some())
                {
                    self.mark_ready(id);
                }
            }
            Msg::Pump {
                id,
                generation,
                msg,
            } => self.on_pump(id, generation, msg),
            Msg::HostUp { host, pid } => self.on_host_up(host, pid),
            Msg::HostDown { host, pid, message } => self.on_host_down(host, pid, message),
        }
    }

    /// Report a state change (the one place that does).
    fn show(&mut self, id: InstanceId, state: State) {
        let at = self.since_start();
        let inst = &mut self.insts[id];
        inst.shown = state.clone();
        let pid = inst.pid().or(inst.last_pid).map(|p| p as u32);
        let restarts = inst.restarts;
        self.emit(Event::StateChanged {
            id,
            state,
            pid,
            at,
            restarts,
        });
    }

    /// The instance is over for good: its end state, reported.
    fn end(&mut self, id: InstanceId, state: State) {
        if self.insts[id].is_final() {
            return;
        }
        self.insts[id].life = instance::Life::Ended(state.clone());
        self.live.remove(&id);
        // Broadcast queues it reads stop holding copies for it (skipped, resumed, could
        // not start, or ended after its last run).
        self.broadcast_reader_done(id);
        // Ordered queues it writes pass the turn on once its streams are over.
        self.ordered_writer_ended(id);
        self.show(id, state.clone());
        self.emit(Event::InstanceFinal { id });
        self.item_ended(id, &state);
    }
}
