//! Answers `prun ctl` requests against the supervisor's [`Coord`], parking waiters.
//!
//! The supervisor owns one `CtlBroker` next to its `Coord` and, from its loop:
//! - resolves each [`CtlRequest`]'s peer to an instance (see [`super::procfs`]) and
//!   calls [`CtlBroker::handle`] (with `None` for an outsider: it is refused);
//! - calls [`CtlBroker::expire`] when [`CtlBroker::next_deadline`] passes;
//! - calls [`CtlBroker::on_instance_end`] when an instance ends (releases its permits,
//!   withdraws and answers its parked waits) instead of `Coord::release_all`;
//! - calls [`CtlBroker::pump`] after it changes `Coord` itself (`set_event` for a
//!   `sets:` trigger, `cancel`, `release_all`), so parked ctl waiters are answered.
//!
//! Every call returns a [`BrokerOutcome`]: instances whose *start* requests were
//! granted as a side effect (start them) and events changed through ctl (re-check
//! `waits:` of waiting instances).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::coord::{Acquire, Coord, HolderId, Ticket, Wait};
use crate::plan::{EventId, SemId};

use super::{CtlCommand, CtlReply, CtlRequest};

/// What the supervisor must act on after a broker call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BrokerOutcome {
    /// Instances whose start requests (`semaphore:` key) are now granted.
    pub start: Vec<HolderId>,
    /// Events set through ctl (they were clear).
    pub events_set: Vec<EventId>,
    /// Events cleared through ctl (they were set).
    pub events_cleared: Vec<EventId>,
}

impl BrokerOutcome {
    fn merge(&mut self, other: BrokerOutcome) {
        self.start.extend(other.start);
        self.events_set.extend(other.events_set);
        self.events_cleared.extend(other.events_cleared);
    }
}

#[derive(Debug)]
struct SemWaiter {
    ticket: Ticket,
    holder: HolderId,
    /// `SEM HOLD`: the permit will belong to the connection.
    scoped: bool,
    conn: u64,
    peer_pid: i32,
    deadline: Option<Instant>,
    reply: crossbeam_channel::Sender<CtlReply>,
}

#[derive(Debug)]
struct EventWaiter {
    event: EventId,
    generation: u64,
    holder: HolderId,
    conn: u64,
    peer_pid: i32,
    deadline: Option<Instant>,
    reply: crossbeam_channel::Sender<CtlReply>,
}

/// Parked `SEM ACQUIRE` and `EVENT WAIT` requests.
#[derive(Debug, Default)]
pub struct CtlBroker {
    sems: Vec<SemWaiter>,
    events: Vec<EventWaiter>,
    /// Last permit granted on each connection, to give back if the server reports
    /// the `OK` could not be delivered. Dropped when the connection or its instance
    /// ends.
    last_grant: HashMap<u64, (HolderId, SemId)>,
    /// `SEM HOLD` permits, per connection: given back when it closes.
    held: HashMap<u64, Vec<(HolderId, SemId)>>,
}

/// "unknown semaphore `lokc` (did you mean `lock`?)"
fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a str>) -> CtlReply {
    let known: Vec<&str> = known.collect();
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(name, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let hint = match best {
        Some((_, k)) => format!(" (did you mean `{k}`?)"),
        None if known.is_empty() => format!(" (this pipeline declares no {kind}s)"),
        None => format!(" (declared: {})", known.join(", ")),
    };
    CtlReply::Err(format!("unknown {kind} `{name}`{hint}"))
}

impl CtlBroker {
    pub fn new() -> CtlBroker {
        CtlBroker::default()
    }

    /// Answer `req` now or park it. `holder` is the instance the peer belongs to,
    /// `None` when it is not a process of this pipeline.
    pub fn handle(
        &mut self,
        coord: &mut Coord,
        req: CtlRequest,
        holder: Option<HolderId>,
        now: Instant,
    ) -> BrokerOutcome {
        let mut out = BrokerOutcome::default();
        if let CtlCommand::Hangup { lost } = req.command {
            return self.on_hangup(coord, req.conn, lost);
        }
        let Some(holder) = holder else {
            let _ = req.reply.send(CtlReply::Refused(format!(
                "process {} is not part of this pipeline",
                req.peer_pid
            )));
            return out;
        };
        let deadline = |t: Option<std::time::Duration>| t.map(|d| now + d);
        let reply = match req.command {
            CtlCommand::Hangup { .. } => return out,
            CtlCommand::EventSet(ref name) | CtlCommand::EventClear(ref name) => {
                match coord.event_id(name) {
                    None => unknown("event", name, coord.event_names()),
                    Some(e) => {
                        if matches!(req.command, CtlCommand::EventSet(_)) {
                            if coord.set_event(e) {
                                out.events_set.push(e);
                            }
                        } else if coord.clear_event(e) {
                            out.events_cleared.push(e);
                        }
                        CtlReply::Ok
                    }
                }
            }
            CtlCommand::EventIsSet(ref name) => match coord.event_id(name) {
                None => unknown("event", name, coord.event_names()),
                Some(e) if coord.is_set(e) => CtlReply::True,
                Some(_) => CtlReply::False,
            },
            CtlCommand::EventWait { ref name, timeout } => match coord.event_id(name) {
                None => unknown("event", name, coord.event_names()),
                Some(e) if coord.is_set(e) => CtlReply::Ok,
                Some(_) if timeout.is_some_and(|t| t.is_zero()) => CtlReply::Timeout,
                Some(e) => {
                    self.events.push(EventWaiter {
                        event: e,
                        generation: coord.event_generation(e),
                        holder,
                        conn: req.conn,
                        peer_pid: req.peer_pid,
                        deadline: deadline(timeout),
                        reply: req.reply,
                    });
                    return out;
                }
            },
            CtlCommand::SemAcquire { ref name, timeout }
            | CtlCommand::SemHold { ref name, timeout } => match coord.sem_id(name) {
                None => unknown("semaphore", name, coord.sem_names()),
                Some(s) => match coord.request_ctl(holder, s) {
                    Acquire::Granted => {
                        self.last_grant.insert(req.conn, (holder, s));
                        if matches!(req.command, CtlCommand::SemHold { .. }) {
                            self.held.entry(req.conn).or_default().push((holder, s));
                        }
                        CtlReply::Ok
                    }
                    Acquire::Waiting(ticket) if timeout.is_some_and(|t| t.is_zero()) => {
                        out.start.extend(coord.cancel_ticket(ticket));
                        CtlReply::Timeout
                    }
                    Acquire::Waiting(ticket) => {
                        self.sems.push(SemWaiter {
                            ticket,
                            holder,
                            scoped: matches!(req.command, CtlCommand::SemHold { .. }),
                            conn: req.conn,
                            peer_pid: req.peer_pid,
                            deadline: deadline(timeout),
                            reply: req.reply,
                        });
                        return out;
                    }
                },
            },
            CtlCommand::SemRelease(ref name) => match coord.sem_id(name) {
                None => unknown("semaphore", name, coord.sem_names()),
                Some(s) => match coord.release(holder, s) {
                    Ok(started) => {
                        out.start.extend(started);
                        // A permit this connection held is given back by this release.
                        if let Some(h) = self.held.get_mut(&req.conn)
                            && let Some(i) = h.iter().position(|&(_, hs)| hs == s)
                        {
                            h.swap_remove(i);
                        }
                        CtlReply::Ok
                    }
                    Err(e) => CtlReply::Err(e.to_string()),
                },
            },
        };
        // A reply that cannot be delivered changes nothing: the client is gone, and
        // a permit it took belongs to its instance anyway.
        let _ = req.reply.send(reply);
        out.merge(self.pump(coord));
        out
    }

    /// Answer parked waiters that `coord` now satisfies: ctl grants (a grant whose
    /// client has gone is released again) and events set since they parked.
    pub fn pump(&mut self, coord: &mut Coord) -> BrokerOutcome {
        let mut out = BrokerOutcome::default();
        loop {
            let grants = coord.take_ctl_grants();
            if grants.is_empty() {
                break;
            }
            for g in grants {
                let waiter = self
                    .sems
                    .iter()
                    .position(|w| w.ticket == g.ticket)
                    .map(|i| self.sems.remove(i));
                let delivered = waiter
                    .as_ref()
                    .is_some_and(|w| w.reply.send(CtlReply::Ok).is_ok());
                // Nobody will ever know about an undelivered permit: give it back.
                if delivered {
                    if let Some(w) = waiter {
                        self.last_grant.insert(w.conn, (g.holder, g.sem));
                        if w.scoped {
                            self.held.entry(w.conn).or_default().push((g.holder, g.sem));
                        }
                    }
                } else if let Ok(started) = coord.release(g.holder, g.sem) {
                    out.start.extend(started);
                }
            }
        }
        // Parked requests withdrawn behind our back (`Coord::release_all`).
        self.sems.retain(|w| {
            let alive = coord.is_pending(w.ticket);
            if !alive {
                let _ = w
                    .reply
                    .send(CtlReply::Err("this instance has ended".into()));
            }
            alive
        });
        self.events.retain(|w| {
            let fired = coord.is_set(w.event) || coord.event_generation(w.event) != w.generation;
            if fired {
                let _ = w.reply.send(CtlReply::Ok);
            }
            !fired
        });
        out
    }

    /// Answer `TIMEOUT` to waiters whose deadline is at or before `now`.
    pub fn expire(&mut self, coord: &mut Coord, now: Instant) -> BrokerOutcome {
        let mut out = BrokerOutcome::default();
        let due = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        let (expired, kept): (Vec<SemWaiter>, Vec<SemWaiter>) = std::mem::take(&mut self.sems)
            .into_iter()
            .partition(|w| due(w.deadline));
        self.sems = kept;
        for w in expired {
            out.start.extend(coord.cancel_ticket(w.ticket));
            let _ = w.reply.send(CtlReply::Timeout);
        }
        self.events.retain(|w| {
            if due(w.deadline) {
                let _ = w.reply.send(CtlReply::Timeout);
                false
            } else {
                true
            }
        });
        out.merge(self.pump(coord));
        out
    }

    /// Earliest deadline among parked waiters.
    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.sems.iter().filter_map(|w| w.deadline);
        let e = self.events.iter().filter_map(|w| w.deadline);
        s.chain(e).min()
    }

    /// The instance ended: release all it holds, withdraw its waits (answered
    /// `ERR`), and serve whoever was waiting behind it.
    pub fn on_instance_end(&mut self, coord: &mut Coord, holder: HolderId) -> BrokerOutcome {
        let mut out = BrokerOutcome {
            start: coord.release_all(holder),
            ..Default::default()
        };
        // Nothing of an ended instance is kept (its permits were all released above).
        self.last_grant.retain(|_, (h, _)| *h != holder);
        self.held.retain(|_, permits| {
            permits.retain(|(h, _)| *h != holder);
            !permits.is_empty()
        });
        self.events.retain(|w| {
            if w.holder == holder {
                let _ = w
                    .reply
                    .send(CtlReply::Err("this instance has ended".into()));
            }
            w.holder != holder
        });
        // Its parked sem waits are no longer pending: `pump` answers them.
        out.merge(self.pump(coord));
        out
    }

    fn on_hangup(&mut self, coord: &mut Coord, conn: u64, lost: Option<CtlReply>) -> BrokerOutcome {
        let mut out = BrokerOutcome::default();
        let last = self.last_grant.remove(&conn);
        let mut held = self.held.remove(&conn).unwrap_or_default();
        if lost == Some(CtlReply::Ok)
            && let Some((holder, sem)) = last
        {
            // The undelivered grant is given back once, whether or not it was held.
            if let Some(i) = held.iter().position(|&p| p == (holder, sem)) {
                held.swap_remove(i);
            }
            if let Ok(started) = coord.release(holder, sem) {
                out.start.extend(started);
            }
        }
        // `SEM HOLD` permits die with their connection (the process that held them).
        for (holder, sem) in held {
            if let Ok(started) = coord.release(holder, sem) {
                out.start.extend(started);
            }
        }
        let (gone, kept): (Vec<SemWaiter>, Vec<SemWaiter>) = std::mem::take(&mut self.sems)
            .into_iter()
            .partition(|w| w.conn == conn);
        self.sems = kept;
        for w in gone {
            out.start.extend(coord.cancel_ticket(w.ticket));
        }
        self.events.retain(|w| w.conn != conn);
        out.merge(self.pump(coord));
        out
    }

    /// Waits of `holder` parked without a deadline, for [`Coord::find_deadlock`]
    /// (permit waits are in the Coord queue already; these are its event waits).
    pub fn waits_of(&self, holder: HolderId) -> Vec<Wait> {
        self.events
            .iter()
            .filter(|w| w.holder == holder && w.deadline.is_none())
            .map(|w| Wait::Event(w.event))
            .collect()
    }

    /// Pids of `holder`'s processes parked in a wait without a deadline (for
    /// [`crate::procfs::group_is_parked`]): an instance is blocked only if it has some and
    /// everything else in its group is passive.
    pub fn parked_pids(&self, holder: HolderId) -> HashSet<i32> {
        let s = self
            .sems
            .iter()
            .filter(|w| w.holder == holder && w.deadline.is_none())
            .map(|w| w.peer_pid);
        let e = self
            .events
            .iter()
            .filter(|w| w.holder == holder && w.deadline.is_none())
            .map(|w| w.peer_pid);
        s.chain(e).collect()
    }

    /// Number of parked waiters (for status output and tests).
    pub fn parked(&self) -> usize {
        self.sems.len() + self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{EventPlan, SemaphorePlan};
    use crossbeam_channel::Receiver;
    use std::time::Duration;

    fn coord() -> Coord {
        Coord::new(
            &[SemaphorePlan {
                name: "lock".into(),
                count: 1,
            }],
            &[EventPlan {
                name: "go".into(),
                initially_set: false,
            }],
        )
    }

    fn req(conn: u64, command: CtlCommand) -> (CtlRequest, Receiver<CtlReply>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (
            CtlRequest {
                conn,
                via: None,
                peer_pid: 4242,
                peer_uid: 0,
                command,
                reply: tx,
            },
            rx,
        )
    }

    fn wait_go(timeout: Option<Duration>) -> CtlCommand {
        CtlCommand::EventWait {
            name: "go".into(),
            timeout,
        }
    }

    fn acquire(timeout: Option<u64>) -> CtlCommand {
        CtlCommand::SemAcquire {
            name: "lock".into(),
            timeout: timeout.map(Duration::from_millis),
        }
    }

    #[test]
    fn outsiders_are_refused() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let (r, rx) = req(1, CtlCommand::EventSet("go".into()));
        b.handle(&mut c, r, None, Instant::now());
        assert!(matches!(rx.try_recv(), Ok(CtlReply::Refused(_))));
        assert!(!c.is_set(0));
    }

    #[test]
    fn acquire_waits_fifo_and_release_serves_the_next() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r1, rx1) = req(1, acquire(None));
        let (r2, rx2) = req(2, acquire(None));
        b.handle(&mut c, r1, Some(10), now);
        assert_eq!(rx1.try_recv(), Ok(CtlReply::Ok));
        b.handle(&mut c, r2, Some(20), now);
        assert!(rx2.try_recv().is_err(), "must wait");
        assert_eq!(b.parked_pids(20), HashSet::from([4242]));
        // Releasing from the wrong instance is an error.
        let (r, rx) = req(3, CtlCommand::SemRelease("lock".into()));
        b.handle(&mut c, r, Some(20), now);
        assert!(matches!(rx.try_recv(), Ok(CtlReply::Err(_))));
        let (r, rx) = req(3, CtlCommand::SemRelease("lock".into()));
        b.handle(&mut c, r, Some(10), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
        assert_eq!(rx2.try_recv(), Ok(CtlReply::Ok));
        assert_eq!(c.held_by(20), vec![(0, 1)]);
        assert_eq!(b.parked(), 0);
    }

    #[test]
    fn timeouts_expire_and_zero_means_try() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, _rx) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        let (r, rx) = req(2, acquire(Some(0)));
        b.handle(&mut c, r, Some(20), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Timeout));
        let (r, rx) = req(3, acquire(Some(500)));
        b.handle(&mut c, r, Some(20), now);
        assert_eq!(b.next_deadline(), Some(now + Duration::from_millis(500)));
        b.expire(&mut c, now + Duration::from_millis(499));
        assert!(rx.try_recv().is_err());
        b.expire(&mut c, now + Duration::from_millis(500));
        assert_eq!(rx.try_recv(), Ok(CtlReply::Timeout));
        assert!(
            c.waiting().is_empty(),
            "the timed-out request left the queue"
        );
        let (r, rx) = req(4, wait_go(Some(Duration::ZERO)));
        b.handle(&mut c, r, Some(20), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Timeout));
    }

    #[test]
    fn instance_end_releases_and_answers_its_waiters() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, _) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        // A start request queued behind a ctl waiter of the same (ending) instance.
        let (r, rx_own) = req(2, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        assert!(!c.request(30, &[0]));
        let (r, rx_ev) = req(3, wait_go(None));
        b.handle(&mut c, r, Some(10), now);
        assert_eq!(b.waits_of(10), vec![Wait::Event(0)]);
        let out = b.on_instance_end(&mut c, 10);
        assert_eq!(out.start, vec![30]);
        assert!(matches!(rx_own.try_recv(), Ok(CtlReply::Err(_))));
        assert!(matches!(rx_ev.try_recv(), Ok(CtlReply::Err(_))));
        assert_eq!(b.parked(), 0);
    }

    #[test]
    fn events_wake_waiters_even_on_a_pulse() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, rx) = req(1, wait_go(None));
        b.handle(&mut c, r, Some(10), now);
        assert!(rx.try_recv().is_err());
        // The supervisor sets and clears it (a `sets:` trigger and a ctl clear) before pumping.
        c.set_event(0);
        c.clear_event(0);
        b.pump(&mut c);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
        let (r, rx) = req(2, CtlCommand::EventSet("go".into()));
        let out = b.handle(&mut c, r, Some(10), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
        assert_eq!(out.events_set, vec![0]);
        let (r, rx) = req(3, CtlCommand::EventIsSet("go".into()));
        b.handle(&mut c, r, Some(10), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::True));
        let (r, rx) = req(4, CtlCommand::EventClear("go".into()));
        assert_eq!(b.handle(&mut c, r, Some(10), now).events_cleared, vec![0]);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
    }

    #[test]
    fn a_grant_to_a_client_that_hung_up_is_given_back() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, _rx1) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        let (r, rx2) = req(2, acquire(None));
        b.handle(&mut c, r, Some(20), now);
        assert!(!c.request(30, &[0]));
        drop(rx2); // client 2 gone, its hangup not yet processed
        let (r, _) = req(9, CtlCommand::SemRelease("lock".into()));
        let out = b.handle(&mut c, r, Some(10), now);
        assert!(c.held_by(20).is_empty());
        assert_eq!(out.start, vec![30]);
    }

    #[test]
    fn hangup_withdraws_the_parked_request() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, _rx1) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        let (r, _rx2) = req(2, acquire(None));
        b.handle(&mut c, r, Some(20), now);
        let (r, _) = req(2, CtlCommand::Hangup { lost: None });
        b.handle(&mut c, r, None, now);
        assert_eq!(b.parked(), 0);
        assert!(c.waiting().is_empty());
    }

    #[test]
    fn a_lost_ok_gives_the_permit_back() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        // Granted at once on connection 1, but the client left before reading it.
        let (r, _rx) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        assert!(!c.request(30, &[0]));
        let (r, _) = req(
            1,
            CtlCommand::Hangup {
                lost: Some(CtlReply::Ok),
            },
        );
        assert_eq!(b.handle(&mut c, r, None, now).start, vec![30]);
        assert!(c.held_by(10).is_empty());
        // A queued grant on connection 2 is tracked the same way.
        let (r, rx) = req(2, acquire(None));
        b.handle(&mut c, r, Some(20), now);
        b.on_instance_end(&mut c, 30);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
        let (r, _) = req(
            2,
            CtlCommand::Hangup {
                lost: Some(CtlReply::Ok),
            },
        );
        b.handle(&mut c, r, None, now);
        assert!(c.held_by(20).is_empty());
        // A lost reply that was not a grant releases nothing.
        let (r, _) = req(3, acquire(None));
        b.handle(&mut c, r, Some(40), now);
        let (r, _) = req(
            3,
            CtlCommand::Hangup {
                lost: Some(CtlReply::Timeout),
            },
        );
        b.handle(&mut c, r, None, now);
        assert_eq!(c.held_by(40), vec![(0, 1)]);
    }

    #[test]
    fn a_held_permit_goes_back_when_its_connection_closes() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let hold = CtlCommand::SemHold {
            name: "lock".into(),
            timeout: None,
        };
        let (r, rx) = req(1, hold.clone());
        b.handle(&mut c, r, Some(10), now);
        assert_eq!(rx.try_recv(), Ok(CtlReply::Ok));
        // A second holder waits; the first connection closes (its process died)
        // while its instance goes on: the permit goes to the waiter at once.
        let (r, rx2) = req(2, hold);
        b.handle(&mut c, r, Some(20), now);
        let (r, _) = req(1, CtlCommand::Hangup { lost: None });
        b.handle(&mut c, r, None, now);
        assert!(c.held_by(10).is_empty());
        assert_eq!(rx2.try_recv(), Ok(CtlReply::Ok));
        // Released on its own connection: nothing is held any more, nothing kept.
        let (r, _) = req(2, CtlCommand::SemRelease("lock".into()));
        b.handle(&mut c, r, Some(20), now);
        let (r, _) = req(2, CtlCommand::Hangup { lost: None });
        b.handle(&mut c, r, None, now);
        assert!(c.held_by(20).is_empty());
        assert!(b.held.is_empty() && b.last_grant.is_empty());
    }

    #[test]
    fn nothing_of_an_ended_instance_is_kept() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let now = Instant::now();
        let (r, _rx) = req(1, acquire(None));
        b.handle(&mut c, r, Some(10), now);
        assert_eq!(b.last_grant.len(), 1);
        b.on_instance_end(&mut c, 10);
        assert!(b.last_grant.is_empty() && b.held.is_empty());
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let (mut c, mut b) = (coord(), CtlBroker::new());
        let (r, rx) = req(
            1,
            CtlCommand::SemAcquire {
                name: "lokc".into(),
                timeout: None,
            },
        );
        b.handle(&mut c, r, Some(1), Instant::now());
        match rx.try_recv() {
            Ok(CtlReply::Err(m)) => assert!(m.contains("did you mean `lock`"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
