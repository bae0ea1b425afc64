//! A full broadcast queue that can never drain (SPEC 4.2: "if the wait would never end,
//! the deadlock report names it"): pure data in, a verdict out.
//!
//! The supervisor describes every unfinished instance ([`Node`]): active (it may still
//! act), waiting to start on `after` conditions of other instances, or blocked on pipes
//! — reading or writing a routed queue, or reading or writing a direct pipe whose other
//! end another instance holds. It also describes the broadcast queues ([`QueueView`]):
//! full (writers held back) or not. [`find_stall`] then computes who can progress, as a
//! fixpoint:
//! - an active instance progresses;
//! - a waiting one progresses when every instance it waits for does;
//! - a blocked one progresses when one of its waits can end: a read of a queue that is
//!   not full ends when a writer of it progresses (or none is left); a write to a queue
//!   that is not full ends at once; a read or write of a full queue ends when the queue
//!   drains; a direct pipe ends when the instance at its other end progresses;
//! - a full queue drains when one of its readers that is not itself waiting for it (the
//!   copies are held for that one) progresses.
//!
//! Only a verdict involving a full queue is reported here (other waits are the
//! semaphores' and events' deadlock check): the queue, its writers waiting to write,
//! its readers waiting for more, and the readers that will never read what is held for
//! them, with what each of those waits for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::HolderId;
use crate::plan::QueueId;

/// What one blocked process of an instance waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeWait {
    ReadQueue(QueueId),
    WriteQueue(QueueId),
    /// Reading from a direct pipe that this instance writes.
    ReadFrom(HolderId),
    /// Writing to a direct pipe that this instance reads.
    WriteTo(HolderId),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// May still act (running and not seen blocked, or waiting on something this
    /// check does not judge).
    Active,
    /// Waiting to start until each of these instances meets its `after` condition.
    After(Vec<HolderId>),
    /// Every process blocked on a pipe (or waiting for a child): one of these must end.
    Blocked(Vec<PipeWait>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub holder: HolderId,
    pub name: String,
    pub state: NodeState,
}

/// A broadcast queue as the router last published it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub id: QueueId,
    pub name: String,
    /// Copies held reached `capacity`: writers are held back.
    pub full: bool,
    pub depth: u64,
    pub capacity: u64,
    /// Unfinished writer and reader instances.
    pub writers: Vec<HolderId>,
    pub readers: Vec<HolderId>,
}

/// The verdict: who can never proceed, and the message naming the queue and them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub stuck: Vec<HolderId>,
    /// The full queues that can never drain.
    pub queues: Vec<QueueId>,
    pub message: String,
}

/// Which instances can never proceed because a full queue can never drain (module doc);
/// None when every one can, or when no full queue is involved.
pub fn find_stall(nodes: &[Node], queues: &[QueueView]) -> Option<Stall> {
    let by_holder: BTreeMap<HolderId, &Node> = nodes.iter().map(|n| (n.holder, n)).collect();
    let queue = |q: QueueId| queues.iter().find(|v| v.id == q);
    let mut progress: BTreeSet<HolderId> = nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .map(|n| n.holder)
        .collect();
    // Instances not described count as progressing: a partial picture can only hide
    // a stall, never invent one.
    let goes = |h: HolderId, progress: &BTreeSet<HolderId>| {
        progress.contains(&h) || !by_holder.contains_key(&h)
    };
    let waits_for_queue = |h: HolderId, q: QueueId| {
        by_holder.get(&h).is_some_and(|n| match &n.state {
            NodeState::Blocked(ws) => ws.contains(&PipeWait::ReadQueue(q)),
            _ => false,
        })
    };
    let drains = |v: &QueueView, progress: &BTreeSet<HolderId>| {
        v.readers
            .iter()
            .any(|&r| !waits_for_queue(r, v.id) && goes(r, progress))
    };
    loop {
        let mut changed = false;
        for n in nodes {
            if progress.contains(&n.holder) {
                continue;
            }
            let ok = match &n.state {
                NodeState::Active => true,
                NodeState::After(deps) => deps.iter().all(|&d| goes(d, &progress)),
                NodeState::Blocked(ws) => ws.iter().any(|w| match *w {
                    PipeWait::ReadQueue(q) => match queue(q) {
                        Some(v) if v.full => drains(v, &progress),
                        Some(v) => {
                            v.writers.is_empty() || v.writers.iter().any(|&w| goes(w, &progress))
                        }
                        None => true,
                    },
                    PipeWait::WriteQueue(q) => match queue(q) {
                        Some(v) if v.full => drains(v, &progress),
                        _ => true,
                    },
                    PipeWait::ReadFrom(h) | PipeWait::WriteTo(h) => goes(h, &progress),
                }),
            };
            if ok {
                progress.insert(n.holder);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let stuck: Vec<&Node> = nodes
        .iter()
        .filter(|n| !progress.contains(&n.holder))
        .collect();
    let full: Vec<&QueueView> = queues
        .iter()
        .filter(|v| v.full && !drains(v, &progress))
        .filter(|v| {
            v.writers
                .iter()
                .chain(&v.readers)
                .any(|h| stuck.iter().any(|n| n.holder == *h))
        })
        .collect();
    if stuck.is_empty() || full.is_empty() {
        return None;
    }
    let name = |h: HolderId| {
        by_holder
            .get(&h)
            .map_or_else(|| format!("instance #{h}"), |n| n.name.clone())
    };
    let queue_name = |q: QueueId| queue(q).map_or_else(|| format!("#{q}"), |v| v.name.clone());
    let mut msg = String::new();
    for v in &full {
        let _ = write!(
            msg,
            "deadlock: broadcast queue `{}` is full ({} of {} records held) and can never drain",
            v.name, v.depth, v.capacity
        );
        let list = |hs: Vec<HolderId>| hs.into_iter().map(name).collect::<Vec<_>>().join(", ");
        let writers: Vec<HolderId> = v
            .writers
            .iter()
            .copied()
            .filter(|w| !goes(*w, &progress))
            .collect();
        if !writers.is_empty() {
            let _ = write!(msg, "\n  waiting to write to it: {}", list(writers));
        }
        let (waiting, never): (Vec<HolderId>, Vec<HolderId>) = v
            .readers
            .iter()
            .copied()
            .filter(|r| !goes(*r, &progress))
            .partition(|&r| waits_for_queue(r, v.id));
        if !waiting.is_empty() {
            let _ = write!(
                msg,
                "\n  waiting for more of it (they took every record held): {}",
                list(waiting)
            );
        }
        for r in never {
            let why = match by_holder.get(&r).map(|n| &n.state) {
                Some(NodeState::After(deps)) => format!(
                    "it waits to start until {} ends (`after`)",
                    deps.iter()
                        .map(|&d| format!("`{}`", name(d)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some(NodeState::Blocked(ws)) => {
                    let parts: Vec<String> = ws
                        .iter()
                        .map(|w| match *w {
                            PipeWait::ReadQueue(q) => format!("reading queue `{}`", queue_name(q)),
                            PipeWait::WriteQueue(q) => {
                                format!("writing to queue `{}`", queue_name(q))
                            }
                            PipeWait::ReadFrom(h) => format!("reading the output of `{}`", name(h)),
                            PipeWait::WriteTo(h) => format!("writing to `{}`", name(h)),
                        })
                        .collect();
                    format!("it is blocked {}", parts.join(" and "))
                }
                _ => "it cannot proceed".into(),
            };
            let _ = write!(
                msg,
                "\n  `{}` will never read the copies held for it: {why}",
                name(r)
            );
        }
        msg.push('\n');
    }
    let _ = write!(
        msg,
        "  give the queue a `capacity` above the records it carries, or let that reader start with the others"
    );
    Some(Stall {
        stuck: stuck.iter().map(|n| n.holder).collect(),
        queues: full.iter().map(|v| v.id).collect(),
        message: msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(holder: HolderId, name: &str, state: NodeState) -> Node {
        Node {
            holder,
            name: name.into(),
            state,
        }
    }

    fn q(full: bool) -> QueueView {
        QueueView {
            id: 0,
            name: "q".into(),
            full,
            depth: 10,
            capacity: 10,
            writers: vec![0],
            readers: vec![1, 2],
        }
    }

    #[test]
    fn a_reader_held_by_after_on_another_reader_of_a_full_queue() {
        let nodes = [
            node(0, "src", NodeState::Blocked(vec![PipeWait::WriteQueue(0)])),
            node(1, "a", NodeState::Blocked(vec![PipeWait::ReadQueue(0)])),
            node(2, "b", NodeState::After(vec![1])),
        ];
        let s = find_stall(&nodes, &[q(true)]).expect("stuck");
        assert_eq!(s.stuck, [0, 1, 2]);
        assert!(s.message.contains("queue `q` is full"), "{}", s.message);
        assert!(
            s.message.contains("waiting to write to it: src"),
            "{}",
            s.message
        );
        assert!(s.message.contains("`b` will never read"), "{}", s.message);
        assert!(s.message.contains("until `a` ends"), "{}", s.message);
        // Not full: the writer goes on, so everyone does.
        assert_eq!(find_stall(&nodes, &[q(false)]), None);
    }

    #[test]
    fn a_reader_waiting_on_another_readers_output() {
        let nodes = [
            node(0, "src", NodeState::Blocked(vec![PipeWait::WriteQueue(0)])),
            node(1, "a", NodeState::Blocked(vec![PipeWait::ReadQueue(0)])),
            node(2, "b", NodeState::Blocked(vec![PipeWait::ReadFrom(1)])),
        ];
        let s = find_stall(&nodes, &[q(true)]).expect("stuck");
        assert!(
            s.message.contains("reading the output of `a`"),
            "{}",
            s.message
        );
        // b busy (active): it will take its copies.
        let mut busy = nodes.clone();
        busy[2].state = NodeState::Active;
        assert_eq!(find_stall(&busy, &[q(true)]), None);
        // Someone not described (or active) makes no verdict either.
        assert_eq!(find_stall(&nodes[..2], &[q(true)]), None);
    }
}
