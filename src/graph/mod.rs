//! The pipeline as a graph (SPEC 2): stages, queues, events and semaphores as nodes.
//!
//! petgraph gives cycle detection (strongly connected components) for the rules that
//! are about the shape of the whole pipeline, and the same graph is drawn by
//! `prun graph` as Graphviz dot or Mermaid.

mod order;
pub mod plan;
pub mod render;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::Diagnostic;
use crate::model::Model;
use crate::plan::{Condition, Trigger};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Stage(usize),
    Queue(usize),
    Event(usize),
    Semaphore(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// stage → queue
    Writes(String),
    /// queue → stage
    Reads(String),
    /// dependency → dependent (drawn in the direction things happen)
    After(Condition),
    /// stage → event
    Sets(String),
    /// event → stage
    Waits,
    /// stage — semaphore
    Uses,
}

pub struct Graph {
    pub g: DiGraph<Node, Edge>,
    pub stages: Vec<NodeIndex>,
    pub queues: Vec<NodeIndex>,
    pub events: Vec<NodeIndex>,
    pub semaphores: Vec<NodeIndex>,
}

impl Graph {
    pub fn build(m: &Model) -> Graph {
        let mut g = DiGraph::new();
        let stages: Vec<_> = (0..m.stages.len())
            .map(|i| g.add_node(Node::Stage(i)))
            .collect();
        let queues: Vec<_> = (0..m.queues.len())
            .map(|i| g.add_node(Node::Queue(i)))
            .collect();
        let events: Vec<_> = (0..m.events.len())
            .map(|i| g.add_node(Node::Event(i)))
            .collect();
        let semaphores: Vec<_> = (0..m.semaphores.len())
            .map(|i| g.add_node(Node::Semaphore(i)))
            .collect();
        for (si, s) in m.stages.iter().enumerate() {
            for (q, port) in s.queue_ports() {
                if q >= queues.len() {
                    continue;
                }
                let label = port_label(port);
                if s.port_reads(port) {
                    g.add_edge(queues[q], stages[si], Edge::Reads(label));
                } else {
                    g.add_edge(stages[si], queues[q], Edge::Writes(label));
                }
            }
            for (dep, cond) in &s.after {
                g.add_edge(stages[*dep], stages[si], Edge::After(*cond));
            }
            for (e, trig) in &s.sets {
                g.add_edge(stages[si], events[*e], Edge::Sets(trigger_label(trig)));
            }
            for e in &s.waits {
                g.add_edge(events[*e], stages[si], Edge::Waits);
            }
            for sem in &s.semaphores {
                g.add_edge(stages[si], semaphores[*sem], Edge::Uses);
            }
        }
        Graph {
            g,
            stages,
            queues,
            events,
            semaphores,
        }
    }
}

fn port_label(p: crate::plan::Port) -> String {
    match p {
        crate::plan::Port::Stdin => "stdin".into(),
        crate::plan::Port::Stdout => "stdout".into(),
        crate::plan::Port::Stderr => "stderr".into(),
        crate::plan::Port::Fd(n) => format!("fd {n}"),
        crate::plan::Port::Foreach => "foreach".into(),
    }
}

fn trigger_label(t: &Trigger) -> String {
    match t {
        Trigger::Started => "started".into(),
        Trigger::Ready => "ready".into(),
        Trigger::Succeeded => "succeeded".into(),
        Trigger::Failed => "failed".into(),
        Trigger::Exited => "exited".into(),
        Trigger::Line(r) => format!("line /{}/", r.0.as_str()),
    }
}

/// Cycle rules (and the `order: writers` wait rule, [`order`]): `after`/`waits`/`sets`
/// cycles are errors; data cycles through queues
/// are warnings (they only deadlock when buffers fill).
pub fn check(m: &Model, diags: &mut Vec<Diagnostic>) {
    order::check(m, diags);
    let graph = Graph::build(m);
    let name_of = |n: &Node| match n {
        Node::Stage(i) => format!("stage `{}`", m.stages[*i].name),
        Node::Event(i) => format!("event `{}`", m.events[*i].name),
        Node::Queue(i) => format!("queue `{}`", m.queues[*i].name),
        Node::Semaphore(i) => format!("semaphore `{}`", m.semaphores[*i].name),
    };

    // Control cycles: after, sets, waits edges only.
    let control = graph.g.filter_map(
        |_, n| Some(n.clone()),
        |_, e| matches!(e, Edge::After(_) | Edge::Sets(_) | Edge::Waits).then(|| e.clone()),
    );
    for scc in tarjan_scc(&control) {
        if scc.len() < 2 {
            continue;
        }
        let mut members: Vec<&Node> = scc.iter().map(|i| &control[*i]).collect();
        members.sort_by_key(|n| match n {
            Node::Stage(i) => (0, *i),
            Node::Event(i) => (1, *i),
            Node::Queue(i) => (2, *i),
            Node::Semaphore(i) => (3, *i),
        });
        let names: Vec<String> = members.iter().map(|n| name_of(n)).collect();
        let first_stage = members.iter().find_map(|n| match n {
            Node::Stage(i) => Some(*i),
            _ => None,
        });
        let Some(first) = first_stage else { continue };
        let mut d = Diagnostic::error(
            "dependency-cycle",
            format!("dependency cycle: {} wait for each other", names.join(", ")),
        )
        .at(m.stage_spans[first].name, "part of the cycle")
        .help("no member of a cycle can ever start; remove one of the `after`, `waits` or `sets` links between them");
        for n in members.iter().skip(1) {
            match n {
                Node::Stage(i) => d = d.related(m.stage_spans[*i].name, "part of the cycle"),
                Node::Event(i) => d = d.related(m.event_spans[*i], "part of the cycle"),
                _ => {}
            }
        }
        diags.push(d);
    }

    // Data cycles: writes/reads edges only.
    let data = graph.g.filter_map(
        |_, n| Some(n.clone()),
        |_, e| matches!(e, Edge::Writes(_) | Edge::Reads(_)).then(|| e.clone()),
    );
    for scc in tarjan_scc(&data) {
        let self_loop = scc.len() == 1 && data.contains_edge(scc[0], scc[0]);
        if scc.len() < 2 && !self_loop {
            continue;
        }
        let mut queues: Vec<usize> = scc
            .iter()
            .filter_map(|i| match data[*i] {
                Node::Queue(q) => Some(q),
                _ => None,
            })
            .collect();
        queues.sort();
        let Some(&first) = queues.first() else {
            continue;
        };
        let mut stages: Vec<usize> = scc
            .iter()
            .filter_map(|i| match data[*i] {
                Node::Stage(s) => Some(s),
                _ => None,
            })
            .collect();
        stages.sort();
        let names: Vec<String> = queues
            .iter()
            .map(|q| format!("queue `{}`", m.queues[*q].name))
            .chain(
                stages
                    .iter()
                    .map(|s| format!("stage `{}`", m.stages[*s].name)),
            )
            .collect();
        let mut d = Diagnostic::warning("data-cycle", format!("data cycle: {}", names.join(", ")))
            .at(m.queue_spans[first], "records flow back into this queue")
            .help("a loop of queues can deadlock once every buffer is full; make sure some stage in it stops writing");
        for q in queues.iter().skip(1) {
            d = d.related(m.queue_spans[*q], "part of the cycle");
        }
        diags.push(d);
    }
}
